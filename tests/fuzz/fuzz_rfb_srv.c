/* The target→browser RFB boundary parser fed arbitrary bytes in arbitrary
 * chunks: it must never read outside its input, always make progress, and
 * find the same boundaries whatever the chunking. */
#include "core/common.h"

#include <stdlib.h>

#include "proto/rfb_srv.h"

static size_t run(const uint8_t *data, size_t size, size_t chunk, size_t *ends, size_t max)
{
	static struct rs_rfb_srv p;
	size_t off = 0, n = 0;

	rs_rfb_srv_init(&p);
	while (off < size) {
		bool at_end;
		int r = rs_rfb_srv_feed(&p, data + off, RS_MIN(chunk, size - off), &at_end);

		if (r <= 0)
			break;
		off += (size_t)r;
		if (at_end && n < max)
			ends[n++] = off;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static size_t a[4096], b[4096];
	size_t na, nb;

	if (size < 1)
		return 0;
	na = run(data + 1, size - 1, 1 + data[0] % 32, a, RS_ARRAY_SIZE(a));
	nb = run(data + 1, size - 1, size, b, RS_ARRAY_SIZE(b));
	if (na != nb || memcmp(a, b, na * sizeof(a[0])))
		abort();
	return 0;
}
