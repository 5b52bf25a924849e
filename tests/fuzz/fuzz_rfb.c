/* Both RFB security-phase machines fed arbitrary bytes in arbitrary chunks. */
#include "core/common.h"

#include "proto/rfb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_rfb_server s;
	struct rs_rfb_client c;
	struct rs_rfb_out out = {0};
	size_t chunk, off;

	if (size < 2)
		return 0;
	chunk = 1 + data[0] % 32;
	rs_rfb_server_init(&s);
	rs_rfb_server_start(&s, &out);
	rs_rfb_client_init(&c, data[1] & 1 ? "password" : NULL);
	data += 2, size -= 2;
	for (off = 0; off < size;) {
		int n;

		out.len = 0;
		n = rs_rfb_server_feed(&s, data + off, RS_MIN(chunk, size - off), &out);
		if (n <= 0)
			break;
		off += (size_t)n;
		if (rs_rfb_server_waiting(&s)) {
			if (off & 1)
				rs_rfb_server_accept(&s, &out);
			else
				rs_rfb_server_fail(&s, "fuzz", &out);
		}
	}
	for (off = 0; off < size;) {
		int n;

		out.len = 0;
		n = rs_rfb_client_feed(&c, data + off, RS_MIN(chunk, size - off), &out);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	rs_rfb_client_release(&c);
	return 0;
}
