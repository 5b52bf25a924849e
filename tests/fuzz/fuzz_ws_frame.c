/* tests/fuzz/fuzz_ws_frame.c — the WebSocket frame parser in both modes, fed
 * in random-sized chunks, with every contract of rs_ws_parse() checked; plus
 * the UTF-8 validator and the close-payload writer against a slow reference.
 *
 * Input: byte 0 picks the mode (bit 0: 1 = server, frames must be masked)
 * and the chunking (bits 1-7: 0 = everything at once, n = pseudo-random
 * chunk sizes from 1 to n, so 1 = byte at a time); the rest is the stream. */
#include "core/common.h"

#include "proto/ws.h"

#define MAX_FRAME   4096
#define MAX_MESSAGE 16384

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Slow, obviously correct UTF-8 check: decode each code point. */
static bool ref_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		uint32_t cp, min;
		size_t need;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			need = 1, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			need = 2, cp = c & 0x0f, min = 0x800;
		else if ((c & 0xf8) == 0xf0)
			need = 3, cp = c & 0x07, min = 0x10000;
		else
			return false;
		if (i + need >= n) /* cut short */
			return false;
		for (size_t k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += need + 1;
	}
	return true;
}

static uint32_t rng_next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static size_t chunk_size(unsigned max, uint32_t *rng, size_t left)
{
	size_t n;

	if (!max)
		return left;
	/* not inside RS_MIN, which evaluates its arguments twice */
	n = 1 + rng_next(rng) % max;
	return RS_MIN(n, left);
}

static void check_event(const struct rs_ws_event *ev, const uint8_t *at, int r, uint8_t *msg,
			size_t *msg_len, int *msg_op)
{
	switch (ev->type) {
	case RS_WS_EV_DATA:
		/* zero copy: the chunk lies in what this call consumed */
		CHECK(ev->data >= at && ev->data + ev->len <= at + r);
		CHECK(ev->len > 0 || ev->fin);
		CHECK(ev->opcode == RS_WS_OP_TEXT || ev->opcode == RS_WS_OP_BINARY);
		CHECK(!*msg_op || *msg_op == ev->opcode);
		CHECK(*msg_len + ev->len <= MAX_MESSAGE);
		*msg_op = ev->opcode;
		memcpy(msg + *msg_len, ev->data, ev->len);
		*msg_len += ev->len;
		if (ev->fin) {
			/* a text message is only ever delivered whole if it is UTF-8 */
			if (*msg_op == RS_WS_OP_TEXT)
				CHECK(ref_utf8_valid(msg, *msg_len));
			*msg_len = 0;
			*msg_op = 0;
		}
		break;
	case RS_WS_EV_PING:
	case RS_WS_EV_PONG:
		CHECK(ev->len <= RS_WS_MAX_CONTROL);
		CHECK(ev->data != NULL || ev->len == 0);
		break;
	case RS_WS_EV_CLOSE:
		CHECK(ev->len <= RS_WS_MAX_CONTROL && ev->len != 1);
		CHECK(ev->reason != NULL);
		if (ev->len == 0) {
			CHECK(ev->close_code == 1005 && ev->reason_len == 0);
		} else {
			CHECK(rs_ws_close_code_sendable(ev->close_code));
			CHECK(ev->reason_len == ev->len - 2);
			CHECK(ev->reason[ev->reason_len] == 0);
			CHECK(ref_utf8_valid((const uint8_t *)ev->reason, ev->reason_len));
		}
		break;
	case RS_WS_EV_ERROR:
		CHECK(ev->error != NULL);
		CHECK(ev->close_code == 1002 || ev->close_code == 1007 || ev->close_code == 1009);
		break;
	default:
		CHECK(0);
	}
}

static void fuzz_parser(const uint8_t *data, size_t size)
{
	static uint8_t msg[MAX_MESSAGE];
	bool server = data[0] & 1;
	unsigned max_chunk = data[0] >> 1;
	uint32_t rng = 0x9e3779b9u ^ data[0];
	struct rs_ws_parser p;
	struct rs_ws_event ev;
	size_t len = size - 1, off = 0, msg_len = 0;
	int msg_op = 0;
	bool stopped = false;
	uint8_t *buf = malloc(len ? len : 1);

	CHECK(buf);
	if (len)
		memcpy(buf, data + 1, len);
	rs_ws_parser_init(&p, server, MAX_FRAME, MAX_MESSAGE);
	while (off < len && !stopped) {
		size_t n = chunk_size(max_chunk, &rng, len - off), used = 0;

		while (used < n) {
			uint8_t *at = buf + off + used;
			int r = rs_ws_parse(&p, at, n - used, &ev);

			CHECK(r >= 0 && (size_t)r <= n - used);
			used += (size_t)r;
			if (ev.type == RS_WS_EV_NONE) {
				CHECK(used == n);
				break;
			}
			check_event(&ev, at, r, msg, &msg_len, &msg_op);
			if (ev.type == RS_WS_EV_ERROR || ev.type == RS_WS_EV_CLOSE) {
				stopped = true;
				/* and it stays stopped */
				if (used < n) {
					CHECK(rs_ws_parse(&p, at + r, n - used, &ev) ==
					      RS_PARSE_ERROR);
					CHECK(ev.type == RS_WS_EV_ERROR);
				}
				break;
			}
		}
		off += n;
	}
	/* a client-mode parser never writes to the buffer */
	if (!server && len)
		CHECK(!memcmp(buf, data + 1, len));
	free(buf);
}

/* The incremental validator agrees with the reference however it is split. */
static void fuzz_utf8(const uint8_t *data, size_t size)
{
	struct rs_utf8 u = {0};
	uint32_t rng = 0x12345u ^ (uint32_t)size;
	size_t off = 0;
	bool ok = true;

	while (off < size) {
		size_t n = chunk_size(1u + data[0] % 16, &rng, size - off);

		ok = rs_utf8_feed(&u, data + off, n);
		off += n;
		if (!ok)
			break;
	}
	CHECK((ok && rs_utf8_complete(&u)) == ref_utf8_valid(data, size));
}

/* Whatever text it is given, the close payload is one a peer accepts. */
static void fuzz_close_payload(const uint8_t *data, size_t size)
{
	char reason[200];
	uint8_t out[RS_WS_MAX_CONTROL];
	size_t rl = RS_MIN(size, sizeof(reason) - 1), n;
	uint16_t code = (uint16_t)(size > 1 ? data[0] << 8 | data[1] : 1000);

	memcpy(reason, data, rl);
	reason[rl] = 0;
	n = rs_ws_close_payload(out, code, reason);
	if (!rs_ws_close_code_sendable(code)) {
		CHECK(n == 0);
		return;
	}
	CHECK(n >= 2 && n <= RS_WS_MAX_CONTROL);
	CHECK(out[0] == code >> 8 && out[1] == (code & 0xff));
	CHECK(!memcmp(out + 2, reason, n - 2));
	CHECK(ref_utf8_valid(out + 2, n - 2));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	fuzz_parser(data, size);
	fuzz_utf8(data, size);
	fuzz_close_payload(data, size);
	return 0;
}
