/* HTTP request codec: random bytes, random chunking, small limits. The
 * first byte picks the chunk size (low 6 bits), whether heads come out
 * before bodies (as the server asks) and whether an upgrade request is taken
 * (stop) or ignored (go on parsing the pipelined bytes). */
#include "core/common.h"

#include "proto/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct rs_http_limits lim = {256, 1024, 16, 2048};
	struct rs_http_parser p;
	size_t chunk, off = 0;
	bool heads, take_upgrade;

	if (!size)
		return 0;
	chunk = 1 + data[0] % 64;
	heads = data[0] & 64;
	take_upgrade = data[0] & 128;
	data++, size--;
	rs_http_parser_init(&p, &lim);
	rs_http_parser_want_heads(&p, heads);
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
			if (r->body_pending && r->body)
				abort(); /* a head carries no body */
			if (r->upgrade && !r->body_pending && take_upgrade) {
				const uint8_t *rest;
				size_t rest_len;

				rs_http_parser_upgrade_rest(&p, &rest, &rest_len);
				if (rest_len && rest[rest_len - 1] == 0xff && rest[0] == 0xff)
					sum++; /* read both ends of what an upgrade hands on */
				break;
			}
			rs_http_parser_next(&p);
			continue;
		}
		if (off >= size)
			break;
	}
	rs_http_parser_release(&p);
	return 0;
}
