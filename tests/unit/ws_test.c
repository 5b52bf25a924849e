#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto/ws.h"

/* RFC 6455 section 5.7 examples */
static const uint8_t MASKED_HELLO[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
static const uint8_t UNMASKED_HELLO[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};

struct collected {
	uint8_t data[200000];
	size_t len;
	int events[64];
	int nev;
	uint16_t close_code;
	int fins;
};

/* Feed <in> in chunks of <chunk>; collect events until an error or the end. */
static int run(struct rs_ws_parser *p, const uint8_t *in, size_t len, size_t chunk,
	       struct collected *c)
{
	uint8_t *copy = malloc(len + 1);
	size_t off = 0;

	memcpy(copy, in, len);
	memset(c, 0, sizeof(*c));
	while (off < len) {
		size_t n = RS_MIN(chunk, len - off), used = 0;

		while (used < n) {
			struct rs_ws_event ev;
			int r = rs_ws_parse(p, copy + off + used, n - used, &ev);

			used += (size_t)r;
			if (ev.type != RS_WS_EV_NONE && c->nev < 64)
				c->events[c->nev++] = ev.type;
			if (ev.type == RS_WS_EV_DATA) {
				memcpy(c->data + c->len, ev.data, ev.len);
				c->len += ev.len;
				c->fins += ev.fin;
			}
			if (ev.type == RS_WS_EV_CLOSE || ev.type == RS_WS_EV_ERROR) {
				c->close_code = ev.close_code;
				free(copy);
				return ev.type;
			}
			if (!r)
				break;
		}
		off += n;
	}
	free(copy);
	return 0;
}

static void test_rfc_examples_any_chunking(void **st)
{
	struct rs_ws_parser p;
	struct collected *c = malloc(sizeof(*c));

	(void)st;
	for (size_t chunk = 1; chunk <= sizeof(MASKED_HELLO); chunk++) {
		rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
		assert_int_equal(run(&p, MASKED_HELLO, sizeof(MASKED_HELLO), chunk, c), 0);
		assert_int_equal(c->len, 5);
		assert_memory_equal(c->data, "Hello", 5);
		assert_int_equal(c->fins, 1);
	}
	rs_ws_parser_init(&p, false, 1 << 20, 1 << 20);
	assert_int_equal(run(&p, UNMASKED_HELLO, sizeof(UNMASKED_HELLO), 3, c), 0);
	assert_memory_equal(c->data, "Hello", 5);
	/* the same unmasked frame is a protocol error for a server */
	rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
	assert_int_equal(run(&p, UNMASKED_HELLO, sizeof(UNMASKED_HELLO), 100, c), RS_WS_EV_ERROR);
	assert_int_equal(c->close_code, 1002);
	free(c);
}

static size_t frame(uint8_t *out, int op, bool fin, const void *payload, size_t len, int rsv)
{
	static const uint8_t key[4] = {1, 2, 3, 4};
	size_t h = rs_ws_frame_header(out, op, fin, len, key);

	out[0] |= (uint8_t)(rsv << 4);
	memcpy(out + h, payload, len);
	rs_ws_mask(out + h, len, key, 0);
	return h + len;
}

static void test_lengths_fragments_and_control_between(void **st)
{
	static uint8_t buf[300000], payload[70000];
	struct rs_ws_parser p;
	struct collected *c = malloc(sizeof(*c));
	size_t n = 0;

	(void)st;
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7);
	n += frame(buf + n, RS_WS_OP_BINARY, false, payload, 125, 0);
	n += frame(buf + n, RS_WS_OP_PING, true, "hi", 2, 0);
	n += frame(buf + n, RS_WS_OP_CONT, false, payload + 125, 256, 0);
	n += frame(buf + n, RS_WS_OP_CONT, true, payload + 381, 65536, 0);
	for (size_t chunk = 1; chunk < 20000; chunk = chunk * 3 + 1) {
		rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
		assert_int_equal(run(&p, buf, n, chunk, c), 0);
		assert_int_equal(c->len, 125 + 256 + 65536);
		assert_memory_equal(c->data, payload, c->len);
		assert_int_equal(c->fins, 1);
		assert_int_equal(c->events[1] == RS_WS_EV_PING || c->events[2] == RS_WS_EV_PING ||
					 c->events[3] == RS_WS_EV_PING || c->nev > 3,
				 1);
	}
	free(c);
}

static void expect_error(const uint8_t *in, size_t len, uint16_t code)
{
	struct rs_ws_parser p;
	struct collected *c = malloc(sizeof(*c));

	rs_ws_parser_init(&p, true, 4096, 8192);
	assert_int_equal(run(&p, in, len, 1, c), RS_WS_EV_ERROR);
	assert_int_equal(c->close_code, code);
	free(c);
}

static void test_every_violation_has_its_code(void **st)
{
	uint8_t b[9000];
	uint8_t cl[8];

	(void)st;
	expect_error(b, frame(b, RS_WS_OP_BINARY, true, "x", 1, 4), 1002);      /* RSV1 */
	expect_error(b, frame(b, 3, true, "x", 1, 0), 1002);                    /* opcode */
	expect_error(b, frame(b, RS_WS_OP_PING, false, "x", 1, 0), 1002);       /* fragmented ctl */
	{
		static uint8_t big[4097];

		memset(big, 'p', sizeof(big));
		expect_error(b, frame(b, RS_WS_OP_PING, true, big, 126, 0), 1002); /* ctl > 125 */
		expect_error(b, frame(b, RS_WS_OP_BINARY, true, big, 4097, 0), 1009);
	}
	expect_error(b, frame(b, RS_WS_OP_CONT, true, "x", 1, 0), 1002);        /* stray cont */
	{
		size_t n = frame(b, RS_WS_OP_TEXT, false, "a", 1, 0);

		n += frame(b + n, RS_WS_OP_BINARY, true, "b", 1, 0); /* new msg inside msg */
		expect_error(b, n, 1002);
	}
	expect_error(b, frame(b, RS_WS_OP_CLOSE, true, "\x03", 1, 0), 1002);
	cl[0] = 0x03, cl[1] = 0xed; /* 1005 must not be on the wire */
	expect_error(b, frame(b, RS_WS_OP_CLOSE, true, cl, 2, 0), 1002);
	cl[0] = 0x03, cl[1] = 0xe8, cl[2] = 0xff;
	expect_error(b, frame(b, RS_WS_OP_CLOSE, true, cl, 3, 0), 1007);
	expect_error(b, frame(b, RS_WS_OP_TEXT, true, "\xc3\x28", 2, 0), 1007);
	expect_error(b, frame(b, RS_WS_OP_TEXT, true, "\xed\xa0\x80", 3, 0), 1007); /* surrogate */
	expect_error(b, frame(b, RS_WS_OP_TEXT, true, "\xf4\x90\x80\x80", 4, 0), 1007); /* >10FFFF */
	expect_error(b, frame(b, RS_WS_OP_TEXT, true, "\xc0\xaf", 2, 0), 1007); /* overlong */
	expect_error(b, frame(b, RS_WS_OP_TEXT, true, "\xe2\x82", 2, 0), 1007); /* truncated */
	/* non-minimal 16-bit length */
	{
		uint8_t nm[] = {0x82, 0x80 | 126, 0x00, 0x05, 1, 2, 3, 4};

		expect_error(nm, sizeof(nm), 1002);
	}
	{
		uint8_t top[] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};

		expect_error(top, sizeof(top), 1002);
	}
}

static void test_utf8_split_across_fragments(void **st)
{
	uint8_t b[64];
	struct rs_ws_parser p;
	struct collected *c = malloc(sizeof(*c));
	size_t n = frame(b, RS_WS_OP_TEXT, false, "\xe2\x82", 2, 0);

	(void)st;
	n += frame(b + n, RS_WS_OP_CONT, true, "\xac!", 2, 0);
	rs_ws_parser_init(&p, true, 4096, 8192);
	assert_int_equal(run(&p, b, n, 1, c), 0);
	assert_memory_equal(c->data, "\xe2\x82\xac!", 4);
	free(c);
}

static void test_close_parsing(void **st)
{
	uint8_t b[64];
	struct rs_ws_parser p;
	struct rs_ws_event ev;
	size_t n = frame(b, RS_WS_OP_CLOSE, true, "\x03\xe9going", 7, 0);

	(void)st;
	rs_ws_parser_init(&p, true, 4096, 8192);
	assert_int_equal(rs_ws_parse(&p, b, n, &ev), (int)n);
	assert_int_equal(ev.type, RS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, 1001);
	assert_string_equal(ev.reason, "going");
	n = frame(b, RS_WS_OP_CLOSE, true, "", 0, 0);
	rs_ws_parser_init(&p, true, 4096, 8192);
	rs_ws_parse(&p, b, n, &ev);
	assert_int_equal(ev.close_code, 1005);
}

static void test_writers(void **st)
{
	uint8_t h[14], cl[125];
	char reason[200];

	(void)st;
	assert_int_equal(rs_ws_frame_header(h, 2, true, 125, NULL), 2);
	assert_int_equal(rs_ws_frame_header(h, 2, true, 126, NULL), 4);
	assert_int_equal(h[1], 126);
	assert_int_equal(rs_ws_frame_header(h, 2, true, 65536, NULL), 10);
	assert_int_equal(h[1], 127);
	assert_false(rs_ws_close_code_sendable(1005));
	assert_false(rs_ws_close_code_sendable(1006));
	assert_false(rs_ws_close_code_sendable(1015));
	assert_true(rs_ws_close_code_sendable(1000));
	assert_true(rs_ws_close_code_sendable(4000));
	memset(reason, 'a', sizeof(reason));
	strcpy(reason + 121, "\xe2\x82\xac tail");
	assert_true(rs_ws_close_payload(cl, 1000, reason) <= 123);
	assert_int_equal(rs_ws_close_payload(cl, 1000, reason), 2 + 121); /* not mid-character */
}

static void test_handshake(void **st)
{
	struct rs_ws_handshake_in in = {
		.method = "GET", .http_minor = 1, .upgrade = "WebSocket", .connection = "keep-alive, Upgrade",
		.key = "dGhlIHNhbXBsZSBub25jZQ==", .version = "13", .protocol = "chat, binary"};
	struct rs_ws_handshake_out out;
	const char *origins[] = {"https://panel.example"};

	(void)st;
	assert_int_equal(rs_ws_handshake_check(&in, &out), 0);
	assert_string_equal(out.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_true(out.echo_binary);
	in.protocol = "chat";
	rs_ws_handshake_check(&in, &out);
	assert_false(out.echo_binary);
	in.version = "8";
	assert_int_not_equal(rs_ws_handshake_check(&in, &out), 0);
	assert_int_equal(out.status, 426);
	in.version = "13";
	in.key = "short";
	assert_int_not_equal(rs_ws_handshake_check(&in, &out), 0);
	assert_int_equal(out.status, 400);
	in.key = "dGhlIHNhbXBsZSBub25jZQ==";
	in.upgrade = NULL;
	assert_int_not_equal(rs_ws_handshake_check(&in, &out), 0);
	in.upgrade = "websocket";
	in.connection = "close";
	assert_int_not_equal(rs_ws_handshake_check(&in, &out), 0);
	in.connection = "Upgrade";
	in.method = "POST";
	assert_int_not_equal(rs_ws_handshake_check(&in, &out), 0);
	in.method = "GET";
	in.allowed_origins = origins;
	in.n_allowed_origins = 1;
	in.origin = "https://evil.example";
	assert_int_not_equal(rs_ws_handshake_check(&in, &out), 0);
	assert_int_equal(out.status, 403);
	in.origin = "https://panel.example";
	assert_int_equal(rs_ws_handshake_check(&in, &out), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc_examples_any_chunking),
		cmocka_unit_test(test_lengths_fragments_and_control_between),
		cmocka_unit_test(test_every_violation_has_its_code),
		cmocka_unit_test(test_utf8_split_across_fragments),
		cmocka_unit_test(test_close_parsing),
		cmocka_unit_test(test_writers),
		cmocka_unit_test(test_handshake),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
