/* WebSocket frame parser in both modes, random chunking. */
#include "core/common.h"

#include "proto/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_ws_parser p;
	uint8_t *buf;
	size_t chunk, off = 0;

	if (size < 1)
		return 0;
	chunk = 1 + (data[0] >> 1) % 128;
	rs_ws_parser_init(&p, data[0] & 1, 4096, 16384);
	buf = malloc(size);
	memcpy(buf, data, size);
	off = 1;
	while (off < size) {
		struct rs_ws_event ev;
		size_t n = RS_MIN(chunk, size - off);
		int used = rs_ws_parse(&p, buf + off, n, &ev);

		if (ev.type == RS_WS_EV_DATA && ev.len && ev.data[ev.len - 1] == 0xff && ev.data[0] == 0xfe &&
		    ev.len == (size_t)-1)
			abort(); /* touches the chunk's ends: ASan checks they are in bounds */
		if (ev.type == RS_WS_EV_ERROR || ev.type == RS_WS_EV_CLOSE)
			break;
		if (!used)
			break;
		off += (size_t)used;
	}
	free(buf);
	return 0;
}
