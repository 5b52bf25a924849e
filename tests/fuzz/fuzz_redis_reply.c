/* What the fleet store parses: Redis replies through hiredis' reader (as
 * proto/redis.c feeds it) and, behind the AEAD, the serialized console spec
 * (proto/store.c). The first byte picks the parser. Neither may crash, leak
 * or read out of bounds; a decoded spec seals and opens back to itself. */
#include "core/common.h"

#include "proto/redis.h"
#include "proto/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t tok[RS_TOKEN_BYTES] = {7};
	struct rs_console_spec *spec = NULL, *back = NULL;
	uint8_t *blob = NULL;
	size_t n, blen = 0;

	if (!size)
		return 0;
	if (data[0] & 1) {
		rs_redis_parse_count(data + 1, size - 1, &n);
		return 0;
	}
	if (rs_store_decode_spec(data + 1, size - 1, &spec))
		return 0;
	if (!rs_store_seal(tok, "k", spec, &blob, &blen)) {
		if (rs_store_open(tok, "k", blob, blen, &back) || back->kind != spec->kind ||
		    back->port != spec->port || back->vmid != spec->vmid ||
		    !back->host != !spec->host || (back->host && strcmp(back->host, spec->host)))
			abort();
		rs_spec_free(back);
		free(blob);
	}
	rs_spec_free(spec);
	return 0;
}
