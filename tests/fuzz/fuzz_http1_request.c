/* HTTP request codec: random bytes, random chunking, small limits. */
#include "core/common.h"

#include "proto/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct rs_http_limits lim = {256, 1024, 16, 2048};
	struct rs_http_parser p;
	size_t chunk, off = 0;

	if (!size)
		return 0;
	chunk = 1 + data[0] % 64;
	data++, size--;
	rs_http_parser_init(&p, &lim);
	for (int guard = 0; guard < 100000; guard++) {
		struct rs_http_req *r;
		int status, n = rs_http_parser_feed(&p, data + off, RS_MIN(chunk, size - off), &r, &status);

		if (n < 0)
			break;
		off += (size_t)n;
		if (r) {
			/* touch everything the request exposes */
			size_t sum = r->path_len + r->body_len;

			for (size_t i = 0; i < r->n_headers; i++)
				sum += (size_t)r->headers[i].name[0] + r->headers[i].value_len;
			sum += rs_http_req_header(r, "host") != NULL;
			if (sum == (size_t)-1) /* keeps the reads: never true */
				abort();
			if (r->upgrade)
				break;
			rs_http_parser_next(&p);
			continue;
		}
		if (off >= size)
			break;
	}
	rs_http_parser_release(&p);
	return 0;
}
