/* ProxmoxVNC's /create parsers: the multipart/form-data field finder and the
 * params JSON. Input: the Content-Type header value up to the first '\n',
 * then the body. The params field found in the body (or, when there is none,
 * the whole body) goes through rs_pvnc_parse_params with inline details
 * enabled, so every branch down to the spec is reached. */
#include "core/common.h"

#include "admin/pvnc.h"
#include "core/config.h"
#include "core/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rs_config cfg;
	static bool init;
	const uint8_t *nl = memchr(data, '\n', size), *field, *body;
	struct rs_console_spec *spec = NULL;
	size_t ctlen, blen, flen;
	char msg[200], *ctype;
	int ret;

	if (!init) {
		char err[256];

		rs_config_init(&cfg);
		if (rs_config_load_string(&cfg, "{\"inline_upstreams\": {\"verify\": \"insecure\"}}",
					  err, sizeof(err)) ||
		    rs_config_validate(&cfg, err, sizeof(err)))
			abort();
		init = true;
	}
	ctlen = nl ? (size_t)(nl - data) : size;
	body = nl ? nl + 1 : data + size;
	blen = size - (size_t)(body - data);
	/* A copy of exactly ctlen bytes: an over-read of the header value
	 * trips ASan (the real value lies inside the request buffer). */
	ctype = malloc(ctlen ? ctlen : 1);
	if (!ctype)
		return 0;
	memcpy(ctype, data, ctlen);
	ret = rs_multipart_field(ctype, ctlen, body, blen, "params", &field, &flen);
	if (ret == 0) {
		if (field < body || field + flen > body + blen)
			abort(); /* the field must lie inside the body */
	} else if (ret != -ENOENT && ret != -EINVAL) {
		abort();
	} else {
		field = body;
		flen = blen;
	}
	if (!rs_pvnc_parse_params(&cfg, field, flen, &spec, msg, sizeof(msg))) {
		if (!spec || !spec->host || !spec->user || !spec->password || spec->vmid < 100)
			abort();
		rs_spec_free(spec);
	} else if (spec || !memchr(msg, 0, sizeof(msg))) {
		abort();
	}
	free(ctype);
	return 0;
}
