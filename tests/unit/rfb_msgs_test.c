/* The browser→target RFB message parser: every message type noVNC sends and
 * every bound, each split at every byte offset. */
#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto/rfb_msgs.h"

#define MAX_MSGS 64

static const struct rs_rfb_msgs_limits LIM = {.max_cut_text = 64, .max_encodings = 8};

/* What a stream parsed into: each message's kind and size, from its pieces. */
struct parsed {
	enum rs_rfb_msg_kind kind[MAX_MSGS];
	size_t size[MAX_MSGS];
	size_t n;
	size_t open; /* bytes of an unfinished message */
	bool error;
	char why[112];
};

/* Feed <in> split into pieces at every offset in <cuts> (ascending), check
 * the piece contract, and collect the messages. */
static void run(struct rs_rfb_msgs *p, const uint8_t *in, size_t len, const size_t *cuts,
		size_t ncuts, struct parsed *out)
{
	size_t from = 0;

	memset(out, 0, sizeof(*out));
	for (size_t c = 0; c <= ncuts && !out->error; c++) {
		size_t to = c < ncuts ? cuts[c] : len;

		while (from < to) {
			struct rs_rfb_msg_ev ev;
			int n = rs_rfb_msgs_feed(p, in + from, to - from, &ev);

			if (n < 0) {
				out->error = true;
				snprintf(out->why, sizeof(out->why), "%s", p->error);
				assert_true(p->error[0]);
				break;
			}
			assert_true(n > 0);
			assert_int_equal((size_t)n, ev.len);
			assert_true((size_t)n <= to - from);
			assert_true(ev.kind > RS_RFB_MSG_NONE && ev.kind < RS_RFB_MSG__COUNT);
			assert_int_equal(ev.first, out->open == 0);
			if (ev.first) {
				assert_true(out->n < MAX_MSGS);
				out->kind[out->n] = ev.kind;
			} else {
				assert_int_equal(ev.kind, out->kind[out->n]);
			}
			out->open += (size_t)n;
			if (ev.last) {
				out->size[out->n++] = out->open;
				out->open = 0;
			}
			from += (size_t)n;
		}
	}
}

static void parse_whole(const uint8_t *in, size_t len, struct parsed *out)
{
	struct rs_rfb_msgs p;

	rs_rfb_msgs_init(&p, &LIM);
	run(&p, in, len, NULL, 0, out);
}

static void assert_same(const struct parsed *a, const struct parsed *b)
{
	assert_int_equal(a->n, b->n);
	assert_int_equal(a->error, b->error);
	/* after an error, how much of the bad message was seen depends on the split */
	if (!a->error)
		assert_int_equal(a->open, b->open);
	assert_string_equal(a->why, b->why);
	for (size_t i = 0; i < a->n; i++) {
		assert_int_equal(a->kind[i], b->kind[i]);
		assert_int_equal(a->size[i], b->size[i]);
	}
}

/* The same outcome for the whole stream, for every split into two at every
 * offset, for every split into three around each offset, and byte by byte. */
static void check_splits(const uint8_t *in, size_t len, struct parsed *whole)
{
	struct rs_rfb_msgs p;
	struct parsed got;
	size_t cuts[4096];

	parse_whole(in, len, whole);
	for (size_t k = 1; k < len; k++) {
		rs_rfb_msgs_init(&p, &LIM);
		run(&p, in, len, &k, 1, &got);
		assert_same(whole, &got);
		if (k + 1 < len) {
			size_t two[2] = {k, k + 1};

			rs_rfb_msgs_init(&p, &LIM);
			run(&p, in, len, two, 2, &got);
			assert_same(whole, &got);
		}
	}
	assert_true(len <= sizeof(cuts) / sizeof(cuts[0]));
	for (size_t k = 1; k < len; k++)
		cuts[k - 1] = k;
	rs_rfb_msgs_init(&p, &LIM);
	run(&p, in, len, cuts, len ? len - 1 : 0, &got);
	assert_same(whole, &got);
}

/* A stream builder. */
struct sb {
	uint8_t b[4096];
	size_t n;
};

static void put(struct sb *s, const void *d, size_t n)
{
	assert_true(s->n + n <= sizeof(s->b));
	memcpy(s->b + s->n, d, n);
	s->n += n;
}

static void put8(struct sb *s, uint8_t v)
{
	put(s, &v, 1);
}

static void put16(struct sb *s, uint16_t v)
{
	put8(s, (uint8_t)(v >> 8));
	put8(s, (uint8_t)v);
}

static void put32(struct sb *s, uint32_t v)
{
	put16(s, (uint16_t)(v >> 16));
	put16(s, (uint16_t)v);
}

static void zeros(struct sb *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		put8(s, 0);
}

static void set_encodings(struct sb *s, const int32_t *e, size_t n)
{
	put8(s, 2);
	put8(s, 0);
	put16(s, (uint16_t)n);
	for (size_t i = 0; i < n; i++)
		put32(s, (uint32_t)e[i]);
}

static void cut_text(struct sb *s, int32_t len, size_t body)
{
	put8(s, 6);
	zeros(s, 3);
	put32(s, (uint32_t)len);
	for (size_t i = 0; i < body; i++)
		put8(s, (uint8_t)('a' + i % 26));
}

/* Every message noVNC sends, as noVNC's RFB.messages builds them. */
static void test_every_message_type(void **st)
{
	static const int32_t encs[] = {1, 7, -260, 0, -223, (int32_t)0xc0a1e5ce, -316};
	static const struct {
		enum rs_rfb_msg_kind kind;
		size_t size;
	} want[] = {
	    {RS_RFB_MSG_CLIENT_INIT, 1},
	    {RS_RFB_MSG_SET_PIXEL_FORMAT, 20},
	    {RS_RFB_MSG_SET_ENCODINGS, 4 + 28},
	    {RS_RFB_MSG_FB_UPDATE_REQUEST, 10},
	    {RS_RFB_MSG_KEY, 8},
	    {RS_RFB_MSG_POINTER, 6},
	    {RS_RFB_MSG_POINTER, 7},
	    {RS_RFB_MSG_CUT_TEXT, 8 + 5},
	    {RS_RFB_MSG_CUT_TEXT, 8 + 12},
	    {RS_RFB_MSG_CUT_TEXT, 8},
	    {RS_RFB_MSG_CONTINUOUS_UPDATES, 10},
	    {RS_RFB_MSG_FENCE, 9 + 3},
	    {RS_RFB_MSG_FENCE, 9},
	    {RS_RFB_MSG_XVP, 4},
	    {RS_RFB_MSG_SET_DESKTOP_SIZE, 8 + 16},
	    {RS_RFB_MSG_QEMU, 12},
	    {RS_RFB_MSG_QEMU, 4},
	    {RS_RFB_MSG_QEMU, 4},
	    {RS_RFB_MSG_QEMU, 10},
	    {RS_RFB_MSG_KEY, 8},
	};
	struct sb s = {0};
	struct parsed got;

	(void)st;
	put8(&s, 1); /* ClientInit, shared */
	/* SetPixelFormat: 32 bpp, depth 24, true colour */
	put8(&s, 0), zeros(&s, 3), put8(&s, 32), put8(&s, 24), put8(&s, 0), put8(&s, 1);
	put16(&s, 255), put16(&s, 255), put16(&s, 255), put8(&s, 0), put8(&s, 8), put8(&s, 16);
	zeros(&s, 3);
	set_encodings(&s, encs, 7);
	put8(&s, 3), put8(&s, 1), put16(&s, 0), put16(&s, 0), put16(&s, 1024), put16(&s, 768);
	put8(&s, 4), put8(&s, 1), put16(&s, 0), put32(&s, 0xff0d); /* KeyEvent Return */
	put8(&s, 5), put8(&s, 0x01), put16(&s, 10), put16(&s, 20); /* PointerEvent */
	/* extended PointerEvent: marker bit, then the high button bits */
	put8(&s, 5), put8(&s, 0x80), put16(&s, 10), put16(&s, 20), put8(&s, 0x03);
	cut_text(&s, 5, 5);
	cut_text(&s, -12, 12); /* extended clipboard */
	cut_text(&s, 0, 0);
	put8(&s, 150), put8(&s, 1), put16(&s, 0), put16(&s, 0), put16(&s, 800), put16(&s, 600);
	put8(&s, 248), zeros(&s, 3), put32(&s, 0x80000003), put8(&s, 3), put(&s, "abc", 3);
	put8(&s, 248), zeros(&s, 3), put32(&s, 0), put8(&s, 0);
	put8(&s, 250), put8(&s, 0), put8(&s, 1), put8(&s, 2); /* xvp reboot */
	put8(&s, 251), put8(&s, 0), put16(&s, 1280), put16(&s, 720), put8(&s, 1), put8(&s, 0);
	put32(&s, 0), put16(&s, 0), put16(&s, 0), put16(&s, 1280), put16(&s, 720), put32(&s, 0);
	put8(&s, 255), put8(&s, 0), put16(&s, 1), put32(&s, 0x61), put32(&s, 0x1e);
	put8(&s, 255), put8(&s, 1), put16(&s, 0); /* audio enable */
	put8(&s, 255), put8(&s, 1), put16(&s, 1); /* audio disable */
	put8(&s, 255), put8(&s, 1), put16(&s, 2), put8(&s, 3), put8(&s, 2), put32(&s, 44100);
	put8(&s, 4), put8(&s, 0), put16(&s, 0), put32(&s, 0xff0d);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	assert_int_equal(got.open, 0);
	assert_int_equal(got.n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < got.n; i++) {
		assert_int_equal(got.kind[i], want[i].kind);
		assert_int_equal(got.size[i], want[i].size);
	}
	/* an unfinished message is just open, not an error */
	parse_whole(s.b, s.n - 3, &got);
	assert_false(got.error);
	assert_int_equal(got.open, 5);
}

/* <prefix> (ClientInit included) then <msg> must fail with <why> inside it,
 * however it is split. */
static void expect_bad(const struct sb *s, const char *why)
{
	struct parsed got;

	check_splits(s->b, s->n, &got);
	assert_true(got.error);
	if (!strstr(got.why, why))
		fail_msg("reason '%s' lacks '%s'", got.why, why);
}

static void test_unknown_types_refused(void **st)
{
	static const uint8_t types[] = {1, 7, 8, 100, 127, 128, 149, 151, 249, 252, 254};

	(void)st;
	for (size_t i = 0; i < sizeof(types); i++) {
		struct sb s = {0};

		put8(&s, 1), put8(&s, types[i]);
		zeros(&s, 30);
		expect_bad(&s, "unknown RFB client message type");
	}
}

static void test_cut_text_bounds(void **st)
{
	static const int32_t ext[] = {(int32_t)0xc0a1e5ce};
	struct sb s = {0};
	struct parsed got;

	(void)st;
	/* exactly the limit: fine */
	put8(&s, 1), cut_text(&s, 64, 64);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	assert_int_equal(got.size[1], 72);
	/* one more, and the 0xFFFFFFFF of the security report */
	s.n = 0, put8(&s, 1), cut_text(&s, 65, 0);
	expect_bad(&s, "ClientCutText of 65 bytes (limits.rfb_max_cut_text: 64)");
	s.n = 0, put8(&s, 1), cut_text(&s, 0x7fffffff, 0);
	expect_bad(&s, "rfb_max_cut_text");
	s.n = 0, put8(&s, 1), cut_text(&s, (int32_t)0xffffffff, 0);
	expect_bad(&s, "extended clipboard was not negotiated");
	/* negative lengths need the extended clipboard announced */
	s.n = 0, put8(&s, 1), set_encodings(&s, ext, 1), cut_text(&s, (int32_t)0xffffffff, 0);
	expect_bad(&s, "shorter than its flags");
	s.n = 0, put8(&s, 1), set_encodings(&s, ext, 1), cut_text(&s, -3, 0);
	expect_bad(&s, "shorter than its flags");
	s.n = 0, put8(&s, 1), set_encodings(&s, ext, 1), cut_text(&s, INT32_MIN, 0);
	expect_bad(&s, "ClientCutText of 2147483648 bytes");
	s.n = 0, put8(&s, 1), set_encodings(&s, ext, 1), cut_text(&s, -65, 0);
	expect_bad(&s, "ClientCutText of 65 bytes");
	s.n = 0, put8(&s, 1), set_encodings(&s, ext, 1), cut_text(&s, -64, 64);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	/* a later SetEncodings without it withdraws the announcement */
	s.n = 0, put8(&s, 1), set_encodings(&s, ext, 1), set_encodings(&s, NULL, 0);
	cut_text(&s, -4, 4);
	expect_bad(&s, "not negotiated");
}

static void test_encodings_bound(void **st)
{
	int32_t encs[9] = {0, 1, 2, 5, 6, 7, 16, -223, -224};
	struct sb s = {0};
	struct parsed got;

	(void)st;
	put8(&s, 1), set_encodings(&s, encs, 8);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	assert_int_equal(got.size[1], 4 + 32);
	s.n = 0, put8(&s, 1), set_encodings(&s, encs, 9);
	expect_bad(&s, "SetEncodings with 9 entries (limits.rfb_max_encodings: 8)");
	/* the 65,535 of the security report, announced with no list behind it */
	s.n = 0, put8(&s, 1), put8(&s, 2), put8(&s, 0), put16(&s, 65535);
	expect_bad(&s, "SetEncodings with 65535 entries");
	/* an empty list is allowed */
	s.n = 0, put8(&s, 1), set_encodings(&s, NULL, 0);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	assert_int_equal(got.size[1], 4);
}

static void test_pointer_forms(void **st)
{
	static const int32_t mouse[] = {0, -316};
	struct sb s = {0};
	struct parsed got;

	(void)st;
	/* without -316 the marker bit is just button 8: 6 bytes */
	put8(&s, 1), put8(&s, 5), put8(&s, 0x80), put16(&s, 1), put16(&s, 2);
	put8(&s, 4), put8(&s, 1), put16(&s, 0), put32(&s, 0x61);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	assert_int_equal(got.n, 3);
	assert_int_equal(got.size[1], 6);
	assert_int_equal(got.kind[2], RS_RFB_MSG_KEY);
	/* with it: 7 bytes when the marker is set, 6 when not */
	s.n = 0, put8(&s, 1), set_encodings(&s, mouse, 2);
	put8(&s, 5), put8(&s, 0x81), put16(&s, 1), put16(&s, 2), put8(&s, 0x02);
	put8(&s, 5), put8(&s, 0x01), put16(&s, 1), put16(&s, 2);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	assert_int_equal(got.n, 4);
	assert_int_equal(got.size[2], 7);
	assert_int_equal(got.size[3], 6);
	/* reserved bits of the 7th byte */
	s.n = 0, put8(&s, 1), set_encodings(&s, mouse, 2);
	put8(&s, 5), put8(&s, 0x80), put16(&s, 1), put16(&s, 2), put8(&s, 0x04);
	expect_bad(&s, "reserved button bits");
}

static void test_fence_desktop_size_qemu_bounds(void **st)
{
	struct sb s = {0};
	struct parsed got;

	(void)st;
	put8(&s, 1), put8(&s, 248), zeros(&s, 3), put32(&s, 0), put8(&s, 64), zeros(&s, 64);
	check_splits(s.b, s.n, &got);
	assert_false(got.error);
	s.n = 0, put8(&s, 1), put8(&s, 248), zeros(&s, 3), put32(&s, 0), put8(&s, 65);
	expect_bad(&s, "ClientFence with 65 payload bytes");
	for (unsigned n = 0; n <= 17; n += 1) {
		s.n = 0, put8(&s, 1), put8(&s, 251), put8(&s, 0), put16(&s, 64), put16(&s, 48);
		put8(&s, (uint8_t)n), put8(&s, 0), zeros(&s, 16 * (size_t)n);
		if (n >= 1 && n <= RS_RFB_MAX_SCREENS) {
			parse_whole(s.b, s.n, &got);
			assert_false(got.error);
			assert_int_equal(got.size[1], 8 + 16 * (size_t)n);
		} else {
			expect_bad(&s, "SetDesktopSize with");
		}
	}
	s.n = 0, put8(&s, 1), put8(&s, 255), put8(&s, 2), zeros(&s, 10);
	expect_bad(&s, "QEMU message subtype 2");
	s.n = 0, put8(&s, 1), put8(&s, 255), put8(&s, 1), put16(&s, 3), zeros(&s, 6);
	expect_bad(&s, "QEMU audio operation 3");
}

static void test_stopped_after_error_and_check(void **st)
{
	struct rs_rfb_msgs p;
	struct rs_rfb_msg_ev ev;
	const uint8_t good[] = {1, 4, 1, 0, 0, 0, 0, 0, 0x61};
	const uint8_t badmsg[] = {7, 0, 0, 0};

	(void)st;
	rs_rfb_msgs_init(&p, &LIM);
	assert_int_equal(rs_rfb_msgs_check(&p, good, sizeof(good)), 0);
	assert_int_equal(rs_rfb_msgs_feed(&p, good, 0, &ev), 0);
	assert_int_equal(ev.kind, RS_RFB_MSG_NONE);
	assert_int_equal(rs_rfb_msgs_check(&p, badmsg, sizeof(badmsg)), RS_PARSE_ERROR);
	assert_string_equal(p.error, "unknown RFB client message type 7");
	/* stays stopped, even for good bytes */
	assert_int_equal(rs_rfb_msgs_feed(&p, good + 1, 8, &ev), RS_PARSE_ERROR);
	assert_int_equal(rs_rfb_msgs_check(&p, good + 1, 8), RS_PARSE_ERROR);
	/* ClientInit takes any first byte, then the stream is messages */
	rs_rfb_msgs_init(&p, &LIM);
	assert_int_equal(rs_rfb_msgs_feed(&p, (const uint8_t *)"\x07\x07", 2, &ev), 1);
	assert_int_equal(ev.kind, RS_RFB_MSG_CLIENT_INIT);
	assert_true(ev.first && ev.last);
	assert_int_equal(rs_rfb_msgs_feed(&p, (const uint8_t *)"\x07", 1, &ev), RS_PARSE_ERROR);
}

static void test_input_kinds_and_names(void **st)
{
	(void)st;
	assert_true(rs_rfb_msg_is_input(RS_RFB_MSG_KEY));
	assert_true(rs_rfb_msg_is_input(RS_RFB_MSG_POINTER));
	assert_true(rs_rfb_msg_is_input(RS_RFB_MSG_CUT_TEXT));
	assert_true(rs_rfb_msg_is_input(RS_RFB_MSG_QEMU));
	assert_true(rs_rfb_msg_is_input(RS_RFB_MSG_XVP));
	assert_true(rs_rfb_msg_is_input(RS_RFB_MSG_SET_DESKTOP_SIZE));
	assert_false(rs_rfb_msg_is_input(RS_RFB_MSG_CLIENT_INIT));
	assert_false(rs_rfb_msg_is_input(RS_RFB_MSG_SET_PIXEL_FORMAT));
	assert_false(rs_rfb_msg_is_input(RS_RFB_MSG_SET_ENCODINGS));
	assert_false(rs_rfb_msg_is_input(RS_RFB_MSG_FB_UPDATE_REQUEST));
	assert_false(rs_rfb_msg_is_input(RS_RFB_MSG_FENCE));
	assert_false(rs_rfb_msg_is_input(RS_RFB_MSG_CONTINUOUS_UPDATES));
	for (int k = 0; k < RS_RFB_MSG__COUNT; k++)
		assert_non_null(rs_rfb_msg_name((enum rs_rfb_msg_kind)k));
	assert_string_equal(rs_rfb_msg_name(RS_RFB_MSG_CUT_TEXT), "ClientCutText");
	assert_string_equal(rs_rfb_msg_name(RS_RFB_MSG__COUNT), "unknown");
}

/* A view-only style filter over pieces: drop input, keep the rest, with the
 * stream split anywhere — what is kept is exactly the non-input messages. */
static void test_filter_by_pieces(void **st)
{
	struct sb s = {0}, want = {0};
	uint8_t kept[256];

	(void)st;
	put8(&s, 1), put8(&want, 1);
	put8(&s, 4), put8(&s, 1), put16(&s, 0), put32(&s, 0x61);
	put8(&s, 3), put8(&s, 1), put16(&s, 0), put16(&s, 0), put16(&s, 8), put16(&s, 8);
	put(&want, s.b + 9, 10);
	cut_text(&s, 3, 3);
	put8(&s, 248), zeros(&s, 3), put32(&s, 0), put8(&s, 1), put8(&s, 'x');
	put(&want, s.b + s.n - 10, 10);
	for (size_t k = 1; k < s.n; k++) {
		struct rs_rfb_msgs p;
		size_t nk = 0, from = 0;

		rs_rfb_msgs_init(&p, &LIM);
		while (from < s.n) {
			struct rs_rfb_msg_ev ev;
			size_t to = from < k ? k : s.n;
			int n = rs_rfb_msgs_feed(&p, s.b + from, to - from, &ev);

			assert_true(n > 0);
			if (!rs_rfb_msg_is_input(ev.kind)) {
				memcpy(kept + nk, s.b + from, (size_t)n);
				nk += (size_t)n;
			}
			from += (size_t)n;
		}
		assert_int_equal(nk, want.n);
		assert_memory_equal(kept, want.b, nk);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_message_type),
	    cmocka_unit_test(test_unknown_types_refused),
	    cmocka_unit_test(test_cut_text_bounds),
	    cmocka_unit_test(test_encodings_bound),
	    cmocka_unit_test(test_pointer_forms),
	    cmocka_unit_test(test_fence_desktop_size_qemu_bounds),
	    cmocka_unit_test(test_stopped_after_error_and_check),
	    cmocka_unit_test(test_input_kinds_and_names),
	    cmocka_unit_test(test_filter_by_pieces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
