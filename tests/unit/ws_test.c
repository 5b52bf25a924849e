/* tests/unit/ws_test.c — RFC 6455 codec: examples, chunking equivalence, every
 * protocol rule with its close code, UTF-8, writers and the handshake. */
#include "core/common.h"

#include <limits.h>
#include <sys/mman.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto/ws.h"

/* --- helpers --- */

static uint32_t rng_next(uint32_t *s)
{
	/* xorshift32: deterministic, so a failure reproduces */
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* A copy of <in> that ends right in front of an inaccessible page, so any
 * read past the end faults (picohttpparser's guard-page trick). */
struct guarded {
	uint8_t *base, *p;
	size_t maplen;
};

static uint8_t *guard_copy(struct guarded *g, const uint8_t *in, size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t body = (len + pg - 1) / pg * pg;

	if (!body)
		body = pg;
	g->maplen = body + pg;
	g->base = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g->base != MAP_FAILED);
	assert_int_equal(mprotect(g->base + body, pg, PROT_NONE), 0);
	g->p = g->base + body - len;
	if (len)
		memcpy(g->p, in, len);
	return g->p;
}

static void guard_free(struct guarded *g)
{
	munmap(g->base, g->maplen);
}

/* A transcript: one record per whole message or control event, so that runs
 * with different chunking can be compared byte for byte. */
struct tr {
	uint8_t *out;
	size_t len, cap;
	uint8_t *msg; /* the data message being reassembled */
	size_t msg_len, msg_cap;
	int msg_op;
	bool stopped;
	enum rs_ws_ev_type stop_type;
	uint16_t stop_code;
	const char *stop_error;
	size_t consumed; /* bytes consumed when it stopped */
	int n_events;
};

static struct tr *tr_new(size_t cap)
{
	struct tr *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->out = malloc(cap);
	t->msg = malloc(cap);
	assert_non_null(t->out);
	assert_non_null(t->msg);
	t->cap = cap;
	t->msg_cap = cap;
	return t;
}

static void tr_free(struct tr *t)
{
	free(t->out);
	free(t->msg);
	free(t);
}

static void tr_reset(struct tr *t)
{
	t->len = 0;
	t->msg_len = 0;
	t->msg_op = 0;
	t->stopped = false;
	t->stop_type = RS_WS_EV_NONE;
	t->stop_code = 0;
	t->stop_error = NULL;
	t->consumed = 0;
	t->n_events = 0;
}

static void tr_put(struct tr *t, const void *p, size_t n)
{
	assert_true(t->len + n <= t->cap);
	if (n)
		memcpy(t->out + t->len, p, n);
	t->len += n;
}

static void tr_record(struct tr *t, char kind, uint32_t code, const void *p, size_t n)
{
	uint32_t n32 = (uint32_t)n;

	tr_put(t, &kind, 1);
	tr_put(t, &code, sizeof(code));
	tr_put(t, &n32, sizeof(n32));
	tr_put(t, p, n);
}

/* Apply one event: reassemble data, record the rest. */
static void tr_event(struct tr *t, const struct rs_ws_event *ev)
{
	t->n_events++;
	switch (ev->type) {
	case RS_WS_EV_DATA:
		assert_true(ev->opcode == RS_WS_OP_TEXT || ev->opcode == RS_WS_OP_BINARY);
		if (t->msg_op)
			assert_int_equal(ev->opcode, t->msg_op);
		t->msg_op = ev->opcode;
		assert_true(t->msg_len + ev->len <= t->msg_cap);
		if (ev->len)
			memcpy(t->msg + t->msg_len, ev->data, ev->len);
		t->msg_len += ev->len;
		if (ev->fin) {
			tr_record(t, ev->opcode == RS_WS_OP_TEXT ? 'T' : 'B', 0, t->msg,
				  t->msg_len);
			t->msg_len = 0;
			t->msg_op = 0;
		}
		break;
	case RS_WS_EV_PING:
	case RS_WS_EV_PONG:
		assert_true(ev->len <= 125);
		tr_record(t, ev->type == RS_WS_EV_PING ? 'P' : 'O', 0, ev->data, ev->len);
		break;
	case RS_WS_EV_CLOSE:
		assert_non_null(ev->reason);
		assert_int_equal(strlen(ev->reason) <= ev->reason_len, 1);
		tr_record(t, 'C', ev->close_code, ev->reason, ev->reason_len);
		break;
	case RS_WS_EV_ERROR:
		assert_non_null(ev->error);
		assert_true(ev->close_code == 1002 || ev->close_code == 1007 ||
			    ev->close_code == 1009);
		tr_record(t, 'E', ev->close_code, NULL, 0);
		break;
	default:
		fail_msg("unexpected event type %d", ev->type);
	}
}

/* Chunk sizes: 0 = everything at once, > 0 = fixed, < 0 = random sizes from
 * the seed -mode. */
static size_t next_chunk(long mode, uint32_t *rng, size_t left)
{
	size_t n;

	if (mode == 0)
		return left;
	if (mode > 0)
		n = (size_t)mode;
	else
		n = 1 + rng_next(rng) % (rng_next(rng) & 1 ? 9 : 3000);
	return RS_MIN(n, left);
}

/* Feed <in> to <p> in chunks, checking every call's contract, and write the
 * transcript to <t>. After a stop, check that the parser refuses more. */
static void run(struct rs_ws_parser *p, const uint8_t *in, size_t len, long mode, struct tr *t)
{
	struct guarded g;
	uint8_t *buf = guard_copy(&g, in, len);
	uint32_t rng = mode < 0 ? (uint32_t)-mode : 1;
	size_t off = 0;
	struct rs_ws_event ev;

	tr_reset(t);
	while (off < len && !t->stopped) {
		size_t n = next_chunk(mode, &rng, len - off), used = 0;

		while (used < n) {
			uint8_t *at = buf + off + used;
			int r = rs_ws_parse(p, at, n - used, &ev);

			assert_true(r >= 0);
			assert_true((size_t)r <= n - used);
			if (ev.type == RS_WS_EV_DATA) {
				/* zero copy: the chunk is inside what this call consumed */
				assert_true(ev.data >= at && ev.data + ev.len <= at + r);
				assert_true(ev.len > 0 || ev.fin);
			}
			used += (size_t)r;
			if (ev.type == RS_WS_EV_NONE) {
				assert_int_equal(used, n);
				break;
			}
			tr_event(t, &ev);
			if (ev.type == RS_WS_EV_CLOSE || ev.type == RS_WS_EV_ERROR) {
				t->stopped = true;
				t->stop_type = ev.type;
				t->stop_code = ev.close_code;
				t->stop_error = ev.error;
				t->consumed = off + used;
				break;
			}
		}
		off += n;
	}
	if (t->stopped) {
		uint8_t more[1] = {0x81};
		uint8_t *rest = t->consumed < len ? buf + t->consumed : more;
		size_t rest_len = t->consumed < len ? len - t->consumed : 1;

		assert_int_equal(rs_ws_parse(p, rest, 0, &ev), 0);
		assert_int_equal(ev.type, RS_WS_EV_NONE);
		assert_int_equal(rs_ws_parse(p, rest, rest_len, &ev), RS_PARSE_ERROR);
		assert_int_equal(ev.type, RS_WS_EV_ERROR);
		if (t->stop_type == RS_WS_EV_ERROR) {
			assert_int_equal(ev.close_code, t->stop_code);
			assert_ptr_equal(ev.error, t->stop_error);
		} else {
			assert_int_equal(ev.close_code, 1002);
		}
	}
	guard_free(&g);
}

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Build a frame by hand (not with the writer under test): first byte <b0>,
 * minimal length encoding, masked with <key> when it is not NULL. */
static size_t put_frame(uint8_t *out, uint8_t b0, const void *payload, size_t len,
			const uint8_t *key)
{
	size_t n = 0;

	out[n++] = b0;
	if (len < 126) {
		out[n++] = (uint8_t)len;
	} else if (len < 65536) {
		out[n++] = 126;
		out[n++] = (uint8_t)(len >> 8);
		out[n++] = (uint8_t)len;
	} else {
		out[n++] = 127;
		for (int i = 7; i >= 0; i--)
			out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
	}
	if (key) {
		out[1] |= 0x80;
		memcpy(out + n, key, 4);
		n += 4;
	}
	if (len)
		memcpy(out + n, payload, len);
	if (key) {
		for (size_t i = 0; i < len; i++)
			out[n + i] ^= key[i % 4];
	}
	return n + len;
}

/* Frame for a server-mode parser (masked). */
static size_t mf(uint8_t *out, uint8_t b0, const void *payload, size_t len)
{
	return put_frame(out, b0, payload, len, KEY);
}

#define FIN 0x80

/* --- RFC 6455 section 5.7 examples --- */

static void test_rfc_single_frame_unmasked(void **state)
{
	uint8_t b[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
	struct rs_ws_parser p;
	struct rs_ws_event ev;

	(void)state;
	rs_ws_parser_init(&p, false, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, b, sizeof(b), &ev), 7);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_int_equal(ev.opcode, RS_WS_OP_TEXT);
	assert_true(ev.fin);
	assert_ptr_equal(ev.data, b + 2);
	assert_int_equal(ev.len, 5);
	assert_memory_equal(ev.data, "Hello", 5);
}

static void test_rfc_single_frame_masked_in_place(void **state)
{
	static const uint8_t wire[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
				       0x7f, 0x9f, 0x4d, 0x51, 0x58};
	struct tr *t = tr_new(4096);
	struct rs_ws_parser p;
	struct rs_ws_event ev;
	uint8_t b[sizeof(wire)];

	(void)state;
	memcpy(b, wire, sizeof(b));
	rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, b, sizeof(b), &ev), 11);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_ptr_equal(ev.data, b + 6);
	assert_int_equal(ev.len, 5);
	assert_true(ev.fin);
	/* unmasked where it lies: no copy */
	assert_memory_equal(b + 6, "Hello", 5);

	/* every split into two chunks, and one byte at a time */
	for (size_t cut = 1; cut < sizeof(wire); cut++) {
		size_t used;
		size_t got = 0;
		uint8_t text[5];

		memcpy(b, wire, sizeof(b));
		rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
		used = (size_t)rs_ws_parse(&p, b, cut, &ev);
		assert_int_equal(used, cut);
		if (ev.type == RS_WS_EV_DATA) {
			assert_false(ev.fin);
			memcpy(text, ev.data, ev.len);
			got = ev.len;
		} else {
			assert_int_equal(ev.type, RS_WS_EV_NONE);
		}
		assert_int_equal(rs_ws_parse(&p, b + cut, sizeof(b) - cut, &ev),
				 (int)(sizeof(b) - cut));
		assert_int_equal(ev.type, RS_WS_EV_DATA);
		assert_true(ev.fin);
		memcpy(text + got, ev.data, ev.len);
		assert_int_equal(got + ev.len, 5);
		assert_memory_equal(text, "Hello", 5);
	}
	rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
	run(&p, wire, sizeof(wire), 1, t);
	assert_false(t->stopped);
	assert_int_equal(t->n_events, 5);
	tr_free(t);
}

static void test_rfc_fragmented_unmasked(void **state)
{
	uint8_t b[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
	struct rs_ws_parser p;
	struct rs_ws_event ev;

	(void)state;
	rs_ws_parser_init(&p, false, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, b, sizeof(b), &ev), 5);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_int_equal(ev.opcode, RS_WS_OP_TEXT);
	assert_false(ev.fin);
	assert_ptr_equal(ev.data, b + 2);
	assert_int_equal(ev.len, 3);
	assert_int_equal(rs_ws_parse(&p, b + 5, sizeof(b) - 5, &ev), 4);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	/* the continuation's chunk carries the message's opcode */
	assert_int_equal(ev.opcode, RS_WS_OP_TEXT);
	assert_true(ev.fin);
	assert_ptr_equal(ev.data, b + 7);
	assert_memory_equal(ev.data, "lo", 2);
}

static void test_rfc_ping_pong(void **state)
{
	uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
	uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
	struct rs_ws_parser p;
	struct rs_ws_event ev;

	(void)state;
	rs_ws_parser_init(&p, false, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, ping, sizeof(ping), &ev), 7);
	assert_int_equal(ev.type, RS_WS_EV_PING);
	assert_int_equal(ev.len, 5);
	assert_memory_equal(ev.data, "Hello", 5);
	rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, pong, sizeof(pong), &ev), 11);
	assert_int_equal(ev.type, RS_WS_EV_PONG);
	assert_int_equal(ev.len, 5);
	assert_memory_equal(ev.data, "Hello", 5);
	/* a control frame is delivered whole, even when it arrives in pieces */
	rs_ws_parser_init(&p, true, 1 << 20, 1 << 20);
	memcpy(pong, (uint8_t[]){0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
	       sizeof(pong));
	for (size_t i = 0; i + 1 < sizeof(pong); i++) {
		assert_int_equal(rs_ws_parse(&p, pong + i, 1, &ev), 1);
		assert_int_equal(ev.type, RS_WS_EV_NONE);
	}
	assert_int_equal(rs_ws_parse(&p, pong + 10, 1, &ev), 1);
	assert_int_equal(ev.type, RS_WS_EV_PONG);
	assert_memory_equal(ev.data, "Hello", 5);
}

static void test_rfc_length_forms(void **state)
{
	static uint8_t b[10 + 65536];
	struct rs_ws_parser p;
	struct rs_ws_event ev;

	(void)state;
	/* 256 bytes: 16-bit length */
	memset(b, 0xab, sizeof(b));
	b[0] = 0x82, b[1] = 0x7e, b[2] = 0x01, b[3] = 0x00;
	rs_ws_parser_init(&p, false, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, b, 4 + 256, &ev), 260);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_int_equal(ev.opcode, RS_WS_OP_BINARY);
	assert_ptr_equal(ev.data, b + 4);
	assert_int_equal(ev.len, 256);
	assert_true(ev.fin);
	/* 64 KiB: 64-bit length */
	memset(b, 0xcd, sizeof(b));
	memcpy(b, (uint8_t[]){0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}, 10);
	rs_ws_parser_init(&p, false, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, b, sizeof(b), &ev), (int)sizeof(b));
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_ptr_equal(ev.data, b + 10);
	assert_int_equal(ev.len, 65536);
	assert_true(ev.fin);
	/* the same frame in two pieces: two chunks, only the second is fin */
	rs_ws_parser_init(&p, false, 1 << 20, 1 << 20);
	assert_int_equal(rs_ws_parse(&p, b, 1000, &ev), 1000);
	assert_int_equal(ev.len, 990);
	assert_false(ev.fin);
	assert_int_equal(rs_ws_parse(&p, b + 1000, sizeof(b) - 1000, &ev), (int)(sizeof(b) - 1000));
	assert_int_equal(ev.len, 65536 - 990);
	assert_true(ev.fin);
}

/* --- chunking equivalence over a long random stream --- */

/* Random valid UTF-8 (1- to 4-byte characters, including the edges of each
 * range) of at least <len> bytes; returns the length written. */
static size_t gen_text(uint8_t *out, size_t len, uint32_t *rng)
{
	static const uint32_t edges[] = {0x0,	 0x7f,	 0x80,	 0x7ff,	  0x800,    0xd7ff,
					 0xe000, 0xfffd, 0xffff, 0x10000, 0x10ffff, 0x20ac};
	size_t n = 0;

	while (n < len) {
		uint32_t r = rng_next(rng), cp;

		switch (r % 8) {
		case 0:
			cp = edges[(r >> 8) % RS_ARRAY_SIZE(edges)];
			break;
		case 1:
			cp = 0x80 + (r >> 8) % 0x780;
			break;
		case 2:
			cp = 0x800 + (r >> 8) % (0xd800 - 0x800);
			break;
		case 3:
			cp = 0x10000 + (r >> 8) % 0x100000;
			break;
		default:
			cp = 0x20 + (r >> 8) % 0x5f;
		}
		if (cp < 0x80) {
			out[n++] = (uint8_t)cp;
		} else if (cp < 0x800) {
			out[n++] = (uint8_t)(0xc0 | cp >> 6);
			out[n++] = (uint8_t)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			out[n++] = (uint8_t)(0xe0 | cp >> 12);
			out[n++] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
			out[n++] = (uint8_t)(0x80 | (cp & 0x3f));
		} else {
			out[n++] = (uint8_t)(0xf0 | cp >> 18);
			out[n++] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
			out[n++] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
			out[n++] = (uint8_t)(0x80 | (cp & 0x3f));
		}
	}
	return n;
}

static size_t gen_frame(uint8_t *out, uint8_t b0, const uint8_t *payload, size_t len, bool masked,
			uint32_t *rng)
{
	uint8_t key[4];
	uint32_t r = rng_next(rng);

	memcpy(key, &r, 4);
	return put_frame(out, b0, payload, len, masked ? key : NULL);
}

/* Maybe put a ping or pong on the wire (and in the expected transcript). */
static size_t gen_control(uint8_t *out, bool masked, uint32_t *rng, struct tr *expect)
{
	uint8_t payload[125];
	uint32_t r = rng_next(rng);
	size_t len = r % 3 == 0 ? 125 : r % 3 == 1 ? 0 : (r >> 8) % 126;
	bool ping = r & 0x10000;

	if (rng_next(rng) % 3)
		return 0;
	for (size_t i = 0; i < len; i++)
		payload[i] = (uint8_t)rng_next(rng);
	tr_record(expect, ping ? 'P' : 'O', 0, payload, len);
	return gen_frame(out, FIN | (ping ? RS_WS_OP_PING : RS_WS_OP_PONG), payload, len, masked,
			 rng);
}

/* A stream of <n_msgs> random messages, fragmented at random points (also
 * inside UTF-8 characters), with pings and pongs between fragments, ended by
 * a close frame. Writes the transcript a parser must produce to <expect>. */
static size_t gen_stream(uint8_t *out, size_t cap, bool masked, uint32_t seed, int n_msgs,
			 struct tr *expect)
{
	static const size_t sizes[] = {0, 1, 5, 125, 126, 127, 300, 65535, 65536, 70000};
	static uint8_t msg[80000];
	uint32_t rng = seed;
	size_t n = 0;

	tr_reset(expect);
	for (int m = 0; m < n_msgs; m++) {
		uint32_t r = rng_next(&rng);
		bool text = r & 1;
		size_t want =
		    (r >> 1) % 4 ? (r >> 4) % 400 : sizes[(r >> 4) % RS_ARRAY_SIZE(sizes)];
		size_t len, pos = 0;
		int frags = 1 + (int)(rng_next(&rng) % 4);

		if (text) {
			len = gen_text(msg, want, &rng);
		} else {
			len = want;
			for (size_t i = 0; i < len; i++)
				msg[i] = (uint8_t)rng_next(&rng);
		}
		assert_true(n + len + 64 * (size_t)frags + 1000 < cap);
		for (int f = 0; f < frags; f++) {
			bool last = f == frags - 1;
			size_t piece = last ? len - pos : rng_next(&rng) % (len - pos + 1);
			uint8_t op = f ? RS_WS_OP_CONT : text ? RS_WS_OP_TEXT : RS_WS_OP_BINARY;

			n += gen_frame(out + n, (uint8_t)((last ? FIN : 0) | op), msg + pos, piece,
				       masked, &rng);
			pos += piece;
			if (!last)
				n += gen_control(out + n, masked, &rng, expect);
		}
		tr_record(expect, text ? 'T' : 'B', 0, msg, len);
		n += gen_control(out + n, masked, &rng, expect);
	}
	{
		static const char reason[] = "\003\350bye \342\202\254";

		n += gen_frame(out + n, FIN | RS_WS_OP_CLOSE, (const uint8_t *)reason,
			       sizeof(reason) - 1, masked, &rng);
		tr_record(expect, 'C', 1000, reason + 2, sizeof(reason) - 3);
	}
	return n;
}

static void test_chunking_equivalence(void **state)
{
	static const long modes[] = {0, 1, 2, 3, 7, 13, 125, 4096, -1, -2, -3, -12345};
	size_t cap = 4 << 20;
	uint8_t *wire = malloc(cap);
	struct tr *expect = tr_new(cap), *t = tr_new(cap);

	(void)state;
	assert_non_null(wire);
	for (int server = 0; server <= 1; server++) {
		for (uint32_t seed = 1; seed <= 3; seed++) {
			size_t n = gen_stream(wire, cap, server, seed * 2654435761u, 60, expect);

			for (size_t m = 0; m < RS_ARRAY_SIZE(modes); m++) {
				struct rs_ws_parser p;

				rs_ws_parser_init(&p, server, UINT64_MAX, UINT64_MAX);
				run(&p, wire, n, modes[m], t);
				assert_true(t->stopped);
				assert_int_equal(t->stop_type, RS_WS_EV_CLOSE);
				assert_int_equal(t->consumed, n);
				assert_int_equal(t->len, expect->len);
				assert_memory_equal(t->out, expect->out, t->len);
			}
			/* the other mode refuses the same stream at its first frame */
			{
				struct rs_ws_parser p;

				rs_ws_parser_init(&p, !server, UINT64_MAX, UINT64_MAX);
				run(&p, wire, n, 1, t);
				assert_int_equal(t->stop_type, RS_WS_EV_ERROR);
				assert_int_equal(t->stop_code, 1002);
				assert_int_equal(t->consumed, 2);
			}
		}
	}
	free(wire);
	tr_free(expect);
	tr_free(t);
}

/* --- every rule, with its close code --- */

/* Parse <in> whole and byte by byte; both must stop with <code>. When <at>
 * is not 0, byte-by-byte feeding must stop after exactly <at> bytes (the
 * violation is reported as soon as it can be seen). */
static void expect_error_mode(const uint8_t *in, size_t len, bool server, uint64_t max_frame,
			      uint64_t max_message, uint16_t code, size_t at)
{
	static const long modes[] = {0, 1, 3, -7};
	struct tr *t = tr_new(1 << 20);

	for (size_t m = 0; m < RS_ARRAY_SIZE(modes); m++) {
		struct rs_ws_parser p;

		rs_ws_parser_init(&p, server, max_frame, max_message);
		run(&p, in, len, modes[m], t);
		if (!t->stopped || t->stop_type != RS_WS_EV_ERROR || t->stop_code != code)
			fail_msg("mode %ld: wanted error %u, got stop %d type %d code %u", modes[m],
				 code, t->stopped, t->stop_type, t->stop_code);
		if (modes[m] == 1 && at)
			assert_int_equal(t->consumed, at);
	}
	tr_free(t);
}

static void expect_error(const uint8_t *in, size_t len, uint16_t code, size_t at)
{
	expect_error_mode(in, len, true, 1000, 3000, code, at);
}

/* The stream parses cleanly (server mode) into <n_events> events. */
static void expect_ok(const uint8_t *in, size_t len, int n_events)
{
	struct tr *t = tr_new(1 << 20);
	struct rs_ws_parser p;

	rs_ws_parser_init(&p, true, 1000, 3000);
	run(&p, in, len, 0, t);
	if (t->stop_type == RS_WS_EV_ERROR)
		fail_msg("unexpected error %u: %s", t->stop_code, t->stop_error);
	if (n_events >= 0)
		assert_int_equal(t->n_events, n_events);
	tr_free(t);
}

static void test_reserved_bits_and_opcodes(void **state)
{
	uint8_t b[64];

	(void)state;
	expect_error(b, mf(b, FIN | 0x40 | RS_WS_OP_BINARY, "x", 1), 1002, 2);
	expect_error(b, mf(b, FIN | 0x20 | RS_WS_OP_TEXT, "x", 1), 1002, 2);
	expect_error(b, mf(b, FIN | 0x10 | RS_WS_OP_PING, "x", 1), 1002, 2);
	expect_error(b, mf(b, 0x70 | RS_WS_OP_CONT, "x", 1), 1002, 2);
	for (uint8_t op = 3; op <= 7; op++)
		expect_error(b, mf(b, FIN | op, "x", 1), 1002, 2);
	for (uint8_t op = 11; op <= 15; op++)
		expect_error(b, mf(b, FIN | op, "x", 1), 1002, 2);
}

static void test_control_frame_rules(void **state)
{
	uint8_t b[400], big[200];
	size_t n;

	(void)state;
	memset(big, 'c', sizeof(big));
	/* fragmented control frames */
	expect_error(b, mf(b, RS_WS_OP_PING, "x", 1), 1002, 2);
	expect_error(b, mf(b, RS_WS_OP_PONG, "x", 1), 1002, 2);
	expect_error(b, mf(b, RS_WS_OP_CLOSE, "\x03\xe8", 2), 1002, 2);
	/* longer than 125: refused from the length byte, before the rest */
	expect_error(b, mf(b, FIN | RS_WS_OP_PING, big, 126), 1002, 2);
	expect_error(b, mf(b, FIN | RS_WS_OP_PONG, big, 200), 1002, 2);
	{
		uint8_t l64[] = {
		    FIN | RS_WS_OP_CLOSE, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4};

		expect_error(l64, sizeof(l64), 1002, 2);
	}
	/* exactly 125 bytes is fine, and so is an empty one */
	n = mf(b, FIN | RS_WS_OP_PING, big, 125);
	n += mf(b + n, FIN | RS_WS_OP_PONG, "", 0);
	n += mf(b + n, FIN | RS_WS_OP_PING, "", 0);
	expect_ok(b, n, 3);
	/* controls between the fragments of a message */
	n = mf(b, RS_WS_OP_TEXT, "ab", 2);
	n += mf(b + n, FIN | RS_WS_OP_PING, "p", 1);
	n += mf(b + n, RS_WS_OP_CONT, "cd", 2);
	n += mf(b + n, FIN | RS_WS_OP_PONG, "q", 1);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "ef", 2);
	expect_ok(b, n, 5);
}

static void test_fragmentation_rules(void **state)
{
	uint8_t b[64];
	size_t n;

	(void)state;
	/* a continuation with no message open */
	expect_error(b, mf(b, FIN | RS_WS_OP_CONT, "x", 1), 1002, 2);
	expect_error(b, mf(b, RS_WS_OP_CONT, "x", 1), 1002, 2);
	n = mf(b, FIN | RS_WS_OP_TEXT, "a", 1);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "b", 1);
	expect_error(b, n, 1002, 7 + 2);
	/* a new data frame while a fragmented message is open */
	n = mf(b, RS_WS_OP_TEXT, "a", 1);
	n += mf(b + n, FIN | RS_WS_OP_TEXT, "b", 1);
	expect_error(b, n, 1002, 7 + 2);
	n = mf(b, RS_WS_OP_BINARY, "a", 1);
	n += mf(b + n, FIN | RS_WS_OP_BINARY, "b", 1);
	expect_error(b, n, 1002, 7 + 2);
	n = mf(b, RS_WS_OP_BINARY, "a", 1);
	n += mf(b + n, FIN | RS_WS_OP_PING, "", 0);
	n += mf(b + n, RS_WS_OP_TEXT, "b", 1);
	expect_error(b, n, 1002, 7 + 6 + 2);
	/* and after the message ends, a new one may start */
	n = mf(b, RS_WS_OP_BINARY, "a", 1);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "b", 1);
	n += mf(b + n, FIN | RS_WS_OP_TEXT, "c", 1);
	expect_ok(b, n, 3);
}

static void test_masking_rules(void **state)
{
	uint8_t b[64];

	(void)state;
	/* server mode: a client frame must be masked */
	expect_error_mode(b, put_frame(b, FIN | RS_WS_OP_TEXT, "x", 1, NULL), true, 100, 100, 1002,
			  2);
	expect_error_mode(b, put_frame(b, FIN | RS_WS_OP_PING, "", 0, NULL), true, 100, 100, 1002,
			  2);
	/* client mode: a server frame must not be */
	expect_error_mode(b, put_frame(b, FIN | RS_WS_OP_TEXT, "x", 1, KEY), false, 100, 100, 1002,
			  2);
	expect_error_mode(b, put_frame(b, FIN | RS_WS_OP_CLOSE, "", 0, KEY), false, 100, 100, 1002,
			  2);
}

static void test_length_encoding_rules(void **state)
{
	(void)state;
	{
		/* 64-bit length with the most significant bit set */
		uint8_t m[] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 0};
		uint8_t u[] = {0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0};

		expect_error_mode(m, sizeof(m), true, UINT64_MAX, UINT64_MAX, 1002, 14);
		expect_error_mode(u, sizeof(u), false, UINT64_MAX, UINT64_MAX, 1002, 10);
	}
	{
		/* 16-bit form for lengths that fit in 7 bits */
		uint8_t a[] = {0x82, 0x80 | 126, 0x00, 125, 1, 2, 3, 4};
		uint8_t z[] = {0x82, 0x80 | 126, 0x00, 0x00, 1, 2, 3, 4};

		expect_error(a, sizeof(a), 1002, 8);
		expect_error(z, sizeof(z), 1002, 8);
	}
	{
		/* 64-bit form for lengths that fit in 16 bits */
		uint8_t a[] = {0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4};
		uint8_t b[] = {0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1, 'x'};

		expect_error_mode(a, sizeof(a), true, UINT64_MAX, UINT64_MAX, 1002, 14);
		expect_error_mode(b, sizeof(b), false, UINT64_MAX, UINT64_MAX, 1002, 10);
	}
	{
		/* the smallest length of each form is accepted */
		static uint8_t w[16 + 65536], zeros[65536];
		size_t n = put_frame(w, FIN | RS_WS_OP_BINARY, zeros, 126, NULL);
		struct rs_ws_parser p;
		struct rs_ws_event ev;

		assert_int_equal(n, 4 + 126);
		rs_ws_parser_init(&p, false, UINT64_MAX, UINT64_MAX);
		assert_int_equal(rs_ws_parse(&p, w, n, &ev), (int)n);
		assert_int_equal(ev.len, 126);
		n = put_frame(w, FIN | RS_WS_OP_BINARY, zeros, 65536, NULL);
		assert_int_equal(n, 10 + 65536);
		rs_ws_parser_init(&p, false, UINT64_MAX, UINT64_MAX);
		assert_int_equal(rs_ws_parse(&p, w, n, &ev), (int)n);
		assert_int_equal(ev.len, 65536);
	}
}

static void test_close_frames(void **state)
{
	static const uint16_t bad[] = {0,    1,	   999,	 1004, 1005, 1006, 1015,
				       1016, 1100, 2000, 2999, 5000, 6000, 65535};
	static const uint16_t good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
					1010, 1011, 1012, 1013, 1014, 3000, 4999};
	uint8_t b[200], pl[125];
	struct rs_ws_parser p;
	struct rs_ws_event ev;
	size_t n;

	(void)state;
	/* a 1-byte payload cannot hold a code: refused from the length byte */
	expect_error(b, mf(b, FIN | RS_WS_OP_CLOSE, "\x03", 1), 1002, 2);
	for (size_t i = 0; i < RS_ARRAY_SIZE(bad); i++) {
		pl[0] = (uint8_t)(bad[i] >> 8), pl[1] = (uint8_t)bad[i];
		n = mf(b, FIN | RS_WS_OP_CLOSE, pl, 2);
		expect_error(b, n, 1002, n);
	}
	for (size_t i = 0; i < RS_ARRAY_SIZE(good); i++) {
		pl[0] = (uint8_t)(good[i] >> 8), pl[1] = (uint8_t)good[i];
		n = mf(b, FIN | RS_WS_OP_CLOSE, pl, 2);
		rs_ws_parser_init(&p, true, 100, 100);
		assert_int_equal(rs_ws_parse(&p, b, n, &ev), (int)n);
		assert_int_equal(ev.type, RS_WS_EV_CLOSE);
		assert_int_equal(ev.close_code, good[i]);
		assert_string_equal(ev.reason, "");
		assert_int_equal(ev.reason_len, 0);
	}
	/* reason must be UTF-8: invalid, overlong, truncated */
	n = mf(b, FIN | RS_WS_OP_CLOSE, "\003\350ab\377", 5);
	expect_error(b, n, 1007, n);
	n = mf(b, FIN | RS_WS_OP_CLOSE, "\003\350\300\257", 4);
	expect_error(b, n, 1007, n);
	n = mf(b, FIN | RS_WS_OP_CLOSE, "\003\350a\342\202", 5);
	expect_error(b, n, 1007, n);
	/* code and reason, NUL-terminated, with its length */
	n = mf(b, FIN | RS_WS_OP_CLOSE, "\x03\xe9going \xe2\x82\xac", 11);
	rs_ws_parser_init(&p, true, 100, 100);
	assert_int_equal(rs_ws_parse(&p, b, n, &ev), (int)n);
	assert_int_equal(ev.type, RS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, 1001);
	assert_string_equal(ev.reason, "going \xe2\x82\xac");
	assert_int_equal(ev.reason_len, 9);
	assert_int_equal(ev.len, 11);
	assert_memory_equal(ev.data, "\x03\xe9", 2);
	/* nothing may follow a close frame */
	assert_int_equal(rs_ws_parse(&p, b, n, &ev), RS_PARSE_ERROR);
	assert_int_equal(ev.type, RS_WS_EV_ERROR);
	assert_int_equal(ev.close_code, 1002);
	/* U+0000 is valid UTF-8: reason_len tells the whole length */
	n = mf(b, FIN | RS_WS_OP_CLOSE, "\003\350a\0b", 5);
	rs_ws_parser_init(&p, true, 100, 100);
	assert_int_equal(rs_ws_parse(&p, b, n, &ev), (int)n);
	assert_int_equal(ev.reason_len, 3);
	assert_memory_equal(ev.reason, "a\0b", 4);
	/* empty: 1005 and "" */
	n = mf(b, FIN | RS_WS_OP_CLOSE, "", 0);
	rs_ws_parser_init(&p, true, 100, 100);
	assert_int_equal(rs_ws_parse(&p, b, n, &ev), (int)n);
	assert_int_equal(ev.type, RS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, 1005);
	assert_string_equal(ev.reason, "");
	assert_int_equal(ev.len, 0);
	/* the longest: 123 bytes of reason */
	memset(pl, 'r', sizeof(pl));
	pl[0] = 0x0f, pl[1] = 0xa0; /* 4000 */
	n = mf(b, FIN | RS_WS_OP_CLOSE, pl, 125);
	rs_ws_parser_init(&p, true, 100, 100);
	assert_int_equal(rs_ws_parse(&p, b, n, &ev), (int)n);
	assert_int_equal(ev.close_code, 4000);
	assert_int_equal(ev.reason_len, 123);
	assert_int_equal(strlen(ev.reason), 123);
	/* a close frame between fragments ends the stream there */
	n = mf(b, RS_WS_OP_TEXT, "a", 1);
	n += mf(b + n, FIN | RS_WS_OP_CLOSE, "\x03\xe8", 2);
	expect_ok(b, n, 2);
}

static void test_size_limits(void **state)
{
	static uint8_t b[8000], pl[3001];
	size_t n;

	(void)state;
	memset(pl, 'z', sizeof(pl));
	/* limits (1000 per frame, 3000 per message) are inclusive */
	expect_ok(b, mf(b, FIN | RS_WS_OP_BINARY, pl, 1000), 1);
	expect_error(b, mf(b, FIN | RS_WS_OP_BINARY, pl, 1001), 1009, 8);
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, pl, 1001), 1009, 8);
	expect_error(b, mf(b, RS_WS_OP_TEXT, pl, 3001), 1009, 8);
	{
		/* a 64-bit length is refused from the header, payload unsent */
		uint8_t h[] = {0x82, 0x80 | 127, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 2, 3, 4};

		expect_error(h, sizeof(h), 1009, 14);
	}
	/* a message over several frames, each small enough */
	n = mf(b, RS_WS_OP_BINARY, pl, 1000);
	n += mf(b + n, RS_WS_OP_CONT, pl, 1000);
	n += mf(b + n, FIN | RS_WS_OP_CONT, pl, 1000);
	expect_ok(b, n, 3);
	n = mf(b, RS_WS_OP_BINARY, pl, 1000);
	n += mf(b + n, RS_WS_OP_CONT, pl, 1000);
	n += mf(b + n, RS_WS_OP_CONT, pl, 1000);
	{
		size_t at = n + 2 + 4;

		n += mf(b + n, FIN | RS_WS_OP_CONT, pl, 1);
		expect_error(b, n, 1009, at);
	}
	/* the count starts again with each message */
	n = mf(b, RS_WS_OP_TEXT, pl, 1000);
	n += mf(b + n, RS_WS_OP_CONT, pl, 1000);
	n += mf(b + n, FIN | RS_WS_OP_CONT, pl, 1000);
	n += mf(b + n, FIN | RS_WS_OP_BINARY, pl, 1000);
	expect_ok(b, n, 4);
	/* control frames do not count toward the message */
	n = mf(b, RS_WS_OP_BINARY, pl, 1000);
	n += mf(b + n, FIN | RS_WS_OP_PING, pl, 125);
	n += mf(b + n, RS_WS_OP_CONT, pl, 1000);
	n += mf(b + n, FIN | RS_WS_OP_CONT, pl, 1000);
	expect_ok(b, n, 4);
}

static void test_text_utf8_in_frames(void **state)
{
	uint8_t b[256];
	size_t n;

	(void)state;
	/* the offending byte is where byte-by-byte parsing stops */
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, "\xc3\x28", 2), 1007, 6 + 2);
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, "ok\xc0\xaf", 4), 1007, 6 + 3);
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, "\xe0\x80\xaf", 3), 1007, 6 + 2);
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, "\xed\xa0\x80", 3), 1007, 6 + 2);
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, "\xf4\x90\x80\x80", 4), 1007, 6 + 2);
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, "abc\xff", 4), 1007, 6 + 4);
	expect_error(b, mf(b, FIN | RS_WS_OP_TEXT, "\x80", 1), 1007, 6 + 1);
	/* truncated at the end of the message */
	n = mf(b, FIN | RS_WS_OP_TEXT, "a\xe2\x82", 3);
	expect_error(b, n, 1007, n);
	/* ... also when the last frame is empty */
	n = mf(b, RS_WS_OP_TEXT, "a\xe2\x82", 3);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "", 0);
	expect_error(b, n, 1007, n);
	/* ... but a fragment may end mid-character */
	n = mf(b, RS_WS_OP_TEXT, "a\xe2", 2);
	n += mf(b + n, FIN | RS_WS_OP_PING, "", 0);
	n += mf(b + n, RS_WS_OP_CONT, "\x82", 1);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "\xac!", 2);
	expect_ok(b, n, 4);
	/* an invalid byte in a continuation frame */
	n = mf(b, RS_WS_OP_TEXT, "a\xe2", 2);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "\x28", 1);
	expect_error(b, n, 1007, n);
	/* the validator restarts with each text message */
	n = mf(b, FIN | RS_WS_OP_BINARY, "\xe2", 1);
	n += mf(b + n, FIN | RS_WS_OP_TEXT, "ok", 2);
	expect_ok(b, n, 2);
	/* binary messages are not text: anything goes */
	n = mf(b, RS_WS_OP_BINARY, "\xff\xfe\xc0", 3);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "\xed\xa0\x80\xe2", 4);
	expect_ok(b, n, 2);
}

static void test_utf8_split_events(void **state)
{
	uint8_t b[64];
	size_t n = mf(b, RS_WS_OP_TEXT, "\xe2", 1), off = 0;
	struct rs_ws_parser p;
	struct rs_ws_event ev;
	int r;

	(void)state;
	n += mf(b + n, FIN | RS_WS_OP_PING, "x", 1);
	n += mf(b + n, RS_WS_OP_CONT, "\x82", 1);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "\xac", 1);
	rs_ws_parser_init(&p, true, 100, 100);
	r = rs_ws_parse(&p, b, n, &ev);
	assert_int_equal(r, 7);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_int_equal(ev.opcode, RS_WS_OP_TEXT);
	assert_false(ev.fin);
	assert_int_equal(ev.data[0], 0xe2);
	off += (size_t)r;
	r = rs_ws_parse(&p, b + off, n - off, &ev);
	assert_int_equal(ev.type, RS_WS_EV_PING);
	assert_memory_equal(ev.data, "x", 1);
	off += (size_t)r;
	r = rs_ws_parse(&p, b + off, n - off, &ev);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_int_equal(ev.opcode, RS_WS_OP_TEXT);
	assert_false(ev.fin);
	assert_int_equal(ev.data[0], 0x82);
	off += (size_t)r;
	r = rs_ws_parse(&p, b + off, n - off, &ev);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_true(ev.fin);
	assert_int_equal(ev.data[0], 0xac);
	off += (size_t)r;
	assert_int_equal(off, n);
}

static void test_empty_messages(void **state)
{
	uint8_t b[64];
	size_t n;
	struct rs_ws_parser p;
	struct rs_ws_event ev;
	int r;

	(void)state;
	/* an empty message is still a message: one fin chunk of length 0 */
	n = mf(b, FIN | RS_WS_OP_TEXT, "", 0);
	rs_ws_parser_init(&p, true, 100, 100);
	assert_int_equal(rs_ws_parse(&p, b, n, &ev), (int)n);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_int_equal(ev.opcode, RS_WS_OP_TEXT);
	assert_true(ev.fin);
	assert_int_equal(ev.len, 0);
	/* empty fragments report nothing until the end of the message */
	n = mf(b, RS_WS_OP_BINARY, "", 0);
	n += mf(b + n, RS_WS_OP_CONT, "", 0);
	n += mf(b + n, FIN | RS_WS_OP_CONT, "", 0);
	rs_ws_parser_init(&p, true, 100, 100);
	r = rs_ws_parse(&p, b, n, &ev);
	assert_int_equal(r, (int)n);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_int_equal(ev.opcode, RS_WS_OP_BINARY);
	assert_true(ev.fin);
	assert_int_equal(ev.len, 0);
	/* a header split across calls: nothing until it is whole */
	rs_ws_parser_init(&p, true, 100, 100);
	assert_int_equal(rs_ws_parse(&p, b, 1, &ev), 1);
	assert_int_equal(ev.type, RS_WS_EV_NONE);
	assert_int_equal(rs_ws_parse(&p, b + 1, 5, &ev), 5);
	assert_int_equal(ev.type, RS_WS_EV_NONE);
	/* zero-length input is a no-op */
	assert_int_equal(rs_ws_parse(&p, b, 0, &ev), 0);
	assert_int_equal(ev.type, RS_WS_EV_NONE);
}

/* More than INT_MAX bytes at once: the parser looks at INT_MAX of them. */
static void test_huge_input_is_capped(void **state)
{
	size_t len = (size_t)INT_MAX + 4096;
	uint8_t *b;
	struct rs_ws_parser p;
	struct rs_ws_event ev;

	(void)state;
	b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		 0);
	if (b == MAP_FAILED)
		skip();
	/* client mode, binary: the payload pages are never touched */
	memcpy(b, (uint8_t[]){0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0}, 10);
	rs_ws_parser_init(&p, false, UINT64_MAX, UINT64_MAX);
	assert_int_equal(rs_ws_parse(&p, b, len, &ev), INT_MAX);
	assert_int_equal(ev.type, RS_WS_EV_DATA);
	assert_ptr_equal(ev.data, b + 10);
	assert_int_equal(ev.len, (size_t)INT_MAX - 10);
	assert_false(ev.fin);
	munmap(b, len);
}

/* --- UTF-8 validator --- */

/* Reference: decode code points the slow way. 0 invalid, 1 valid and
 * complete, 2 valid so far but ending inside a character that can still
 * be completed. */
static int ref_utf8(const uint8_t *s, size_t n)
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
			return 0;
		for (size_t k = 1; k <= need; k++) {
			if (i + k == n) {
				/* cut short: can any continuation still make it valid? */
				unsigned bits = 6 * (unsigned)(need - k + 1);
				uint32_t lo = cp << bits, hi = lo | ((1u << bits) - 1);

				lo = RS_MAX(lo, min);
				hi = RS_MIN(hi, 0x10ffffu);
				if (lo > hi)
					return 0;
				if (lo >= 0xd800 && hi <= 0xdfff)
					return 0;
				return 2;
			}
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += need + 1;
	}
	return 1;
}

static int dfa_utf8(const uint8_t *s, size_t n)
{
	struct rs_utf8 u = {0};

	if (!rs_utf8_feed(&u, s, n))
		return 0;
	return rs_utf8_complete(&u) ? 1 : 2;
}

static void check_utf8(const uint8_t *s, size_t n)
{
	int want = ref_utf8(s, n);

	if (dfa_utf8(s, n) != want)
		fail_msg("utf-8 %zu bytes %02x %02x %02x %02x: want %d got %d", n, s[0],
			 n > 1 ? s[1] : 0, n > 2 ? s[2] : 0, n > 3 ? s[3] : 0, want,
			 dfa_utf8(s, n));
}

static void test_utf8_exhaustive(void **state)
{
	static const uint8_t probe[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f,
					0xa0, 0xbf, 0xc0, 0xc2, 0xe0, 0xf0, 0xff};
	uint8_t s[4];

	(void)state;
	/* every sequence of 1 to 3 bytes */
	for (unsigned a = 0; a < 256; a++) {
		s[0] = (uint8_t)a;
		check_utf8(s, 1);
		for (unsigned b = 0; b < 256; b++) {
			s[1] = (uint8_t)b;
			check_utf8(s, 2);
			for (unsigned c = 0; c < 256; c++) {
				s[2] = (uint8_t)c;
				check_utf8(s, 3);
			}
		}
	}
	/* 4 bytes: every lead, with the bytes that sit on range edges after it */
	for (unsigned a = 0; a < 256; a++)
		for (size_t b = 0; b < sizeof(probe); b++)
			for (size_t c = 0; c < sizeof(probe); c++)
				for (size_t d = 0; d < sizeof(probe); d++) {
					s[0] = (uint8_t)a, s[1] = probe[b], s[2] = probe[c];
					s[3] = probe[d];
					check_utf8(s, 4);
				}
}

static void test_utf8_edges_and_splits(void **state)
{
	static const struct {
		const char *s;
		int want; /* as ref_utf8 */
	} cases[] = {
	    {"", 1},
	    {"plain ascii, long enough for the word-at-a-time path", 1},
	    {"\x7f", 1},
	    {"\xc2\x80", 1},	     /* U+0080 */
	    {"\xdf\xbf", 1},	     /* U+07FF */
	    {"\xe0\xa0\x80", 1},     /* U+0800 */
	    {"\xed\x9f\xbf", 1},     /* U+D7FF */
	    {"\xee\x80\x80", 1},     /* U+E000 */
	    {"\xef\xbf\xbf", 1},     /* U+FFFF */
	    {"\xf0\x90\x80\x80", 1}, /* U+10000 */
	    {"\xf4\x8f\xbf\xbf", 1}, /* U+10FFFF */
	    {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 1},
	    {"\xc0\x80", 0},		     /* overlong NUL */
	    {"\xc1\xbf", 0},		     /* overlong U+007F */
	    {"\xe0\x80\x80", 0},	     /* overlong 3-byte */
	    {"\xe0\x9f\xbf", 0},	     /* overlong U+07FF */
	    {"\xf0\x80\x80\x80", 0},	     /* overlong 4-byte */
	    {"\xf0\x8f\xbf\xbf", 0},	     /* overlong U+FFFF */
	    {"\xed\xa0\x80", 0},	     /* U+D800 */
	    {"\xed\xbf\xbf", 0},	     /* U+DFFF */
	    {"\xed\xa0\x80\xed\xb0\x80", 0}, /* surrogate pair in CESU-8 */
	    {"\xf4\x90\x80\x80", 0},	     /* U+110000 */
	    {"\xf5\x80\x80\x80", 0},
	    {"\xf8\x88\x80\x80\x80", 0}, /* 5-byte form */
	    {"\xfe", 0},
	    {"\xff", 0},
	    {"\x80", 0}, /* lone continuation */
	    {"\xbf", 0},
	    {"\xc3\x41", 0}, /* lead then ASCII */
	    {"\xe2\x82\x41", 0},
	    {"\xc3", 2}, /* truncated */
	    {"\xe2\x82", 2},
	    {"\xf0\x9f\x98", 2},
	    {"abcdefgh\xe2\x82", 2},
	    {"abcdefghijklmnop\xff", 0}, /* bad byte after whole words */
	};

	(void)state;
	for (size_t i = 0; i < RS_ARRAY_SIZE(cases); i++) {
		const uint8_t *s = (const uint8_t *)cases[i].s;
		size_t n = strlen(cases[i].s);

		assert_int_equal(ref_utf8(s, n), cases[i].want);
		assert_int_equal(dfa_utf8(s, n), cases[i].want);
		/* any split into two feeds, and byte by byte, agree */
		for (size_t cut = 0; cut <= n; cut++) {
			struct rs_utf8 u = {0};
			bool ok = rs_utf8_feed(&u, s, cut) && rs_utf8_feed(&u, s + cut, n - cut);

			assert_int_equal(ok ? rs_utf8_complete(&u) ? 1 : 2 : 0, cases[i].want);
		}
		{
			struct rs_utf8 u = {0};
			bool ok = true;

			for (size_t k = 0; k < n; k++)
				ok = rs_utf8_feed(&u, s + k, 1);
			assert_int_equal(ok ? rs_utf8_complete(&u) ? 1 : 2 : 0, cases[i].want);
		}
	}
	{
		/* once rejected, always rejected; complete is false then */
		struct rs_utf8 u = {0};

		assert_false(rs_utf8_feed(&u, (const uint8_t *)"\xff", 1));
		assert_false(rs_utf8_feed(&u, (const uint8_t *)"a", 1));
		assert_false(rs_utf8_feed(&u, (const uint8_t *)"", 0));
		assert_false(rs_utf8_complete(&u));
	}
	{
		/* a bad byte at every position and alignment of a long ASCII run */
		uint8_t buf[80];

		for (size_t pos = 0; pos < 64; pos++) {
			for (size_t align = 0; align < 8; align++) {
				memset(buf, 'a', sizeof(buf));
				buf[align + pos] = 0x80;
				assert_int_equal(dfa_utf8(buf + align, 64), 0);
				buf[align + pos] = 0xc3;
				buf[align + pos + 1] = 0xa9;
				assert_int_equal(dfa_utf8(buf + align, 66), 1);
				assert_int_equal(dfa_utf8(buf + align, pos + 1), 2);
			}
		}
	}
}

/* --- writers --- */

static void test_frame_header(void **state)
{
	static const uint64_t lens[] = {
	    0, 1, 125, 126, 127, 65535, 65536, 1ull << 32, (1ull << 63) - 1};
	static const int ops[] = {RS_WS_OP_CONT, RS_WS_OP_TEXT, RS_WS_OP_BINARY};
	uint8_t h[RS_WS_MAX_HEADER], want[16];

	(void)state;
	for (size_t i = 0; i < RS_ARRAY_SIZE(lens); i++) {
		for (size_t o = 0; o < RS_ARRAY_SIZE(ops); o++) {
			for (int fin = 0; fin <= 1; fin++) {
				for (int masked = 0; masked <= 1; masked++) {
					size_t wn = lens[i] < 126 ? 2 : lens[i] < 65536 ? 4 : 10;
					size_t n;

					want[0] = (uint8_t)((fin ? 0x80 : 0) | ops[o]);
					if (wn == 2) {
						want[1] = (uint8_t)lens[i];
					} else if (wn == 4) {
						want[1] = 126;
						want[2] = (uint8_t)(lens[i] >> 8);
						want[3] = (uint8_t)lens[i];
					} else {
						want[1] = 127;
						for (int k = 0; k < 8; k++)
							want[2 + k] =
							    (uint8_t)(lens[i] >> (56 - 8 * k));
					}
					if (masked) {
						want[1] |= 0x80;
						memcpy(want + wn, KEY, 4);
						wn += 4;
					}
					n = rs_ws_frame_header(h, ops[o], fin, lens[i],
							       masked ? KEY : NULL);
					assert_int_equal(n, wn);
					assert_memory_equal(h, want, n);
				}
			}
		}
	}
	assert_int_equal(rs_ws_frame_header(h, RS_WS_OP_CLOSE, true, 125, NULL), 2);
	assert_int_equal(rs_ws_frame_header(h, RS_WS_OP_PING, true, 0, KEY), 6);
	/* frames RFC 6455 forbids are not written */
	assert_int_equal(rs_ws_frame_header(h, RS_WS_OP_PING, true, 126, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, RS_WS_OP_PONG, false, 1, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, RS_WS_OP_CLOSE, false, 2, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, RS_WS_OP_BINARY, true, 1ull << 63, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, RS_WS_OP_BINARY, true, UINT64_MAX, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, 3, true, 1, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, 11, true, 1, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, 16 | RS_WS_OP_TEXT, true, 1, NULL), 0);
	assert_int_equal(rs_ws_frame_header(h, -1, true, 1, NULL), 0);
}

static void test_writer_round_trip(void **state)
{
	static uint8_t b[2 * (14 + 70000)], payload[70000];
	static const size_t lens[] = {0, 1, 125, 126, 65535, 65536, 70000};
	struct rs_ws_parser p;
	struct rs_ws_event ev;

	(void)state;
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 31 + 7);
	for (int server_frames = 0; server_frames <= 1; server_frames++) {
		for (size_t i = 0; i < RS_ARRAY_SIZE(lens); i++) {
			/* a client writes masked frames: a server-mode parser reads them */
			const uint8_t *mask = server_frames ? NULL : KEY;
			size_t h = rs_ws_frame_header(b, RS_WS_OP_BINARY, true, lens[i], mask);

			memcpy(b + h, payload, lens[i]);
			if (mask)
				rs_ws_mask(b + h, lens[i], mask, 0);
			rs_ws_parser_init(&p, !server_frames, UINT64_MAX, UINT64_MAX);
			assert_int_equal(rs_ws_parse(&p, b, h + lens[i], &ev), (int)(h + lens[i]));
			assert_int_equal(ev.type, RS_WS_EV_DATA);
			assert_true(ev.fin);
			assert_int_equal(ev.len, lens[i]);
			assert_memory_equal(ev.data, payload, lens[i]);
		}
	}
}

static void test_mask(void **state)
{
	uint8_t buf[100], want[100], orig[100];

	(void)state;
	for (size_t i = 0; i < sizeof(orig); i++)
		orig[i] = (uint8_t)(i * 13 + 5);
	for (size_t align = 0; align < 8; align++) {
		for (size_t off = 0; off < 9; off++) {
			for (size_t len = 0; len <= 80; len++) {
				memcpy(buf, orig, sizeof(buf));
				memcpy(want, orig, sizeof(want));
				for (size_t i = 0; i < len; i++)
					want[align + i] ^= KEY[(off + i) % 4];
				rs_ws_mask(buf + align, len, KEY, off);
				/* exactly <len> bytes change, as the naive loop says */
				assert_memory_equal(buf, want, sizeof(buf));
				rs_ws_mask(buf + align, len, KEY, off);
				assert_memory_equal(buf, orig, sizeof(buf));
			}
		}
	}
	{
		/* masking in two pieces with the running offset equals one pass */
		uint8_t a[37], c[37];

		memcpy(a, orig, sizeof(a));
		memcpy(c, orig, sizeof(c));
		rs_ws_mask(a, sizeof(a), KEY, 0);
		rs_ws_mask(c, 11, KEY, 0);
		rs_ws_mask(c + 11, sizeof(c) - 11, KEY, 11);
		assert_memory_equal(a, c, sizeof(a));
	}
}

static void check_close_round_trip(const uint8_t *pl, size_t n, uint16_t code, const char *reason,
				   size_t reason_len)
{
	uint8_t b[200];
	size_t h = rs_ws_frame_header(b, RS_WS_OP_CLOSE, true, n, NULL);
	struct rs_ws_parser p;
	struct rs_ws_event ev;

	assert_int_not_equal(h, 0);
	memcpy(b + h, pl, n);
	rs_ws_parser_init(&p, false, 100, 100);
	assert_int_equal(rs_ws_parse(&p, b, h + n, &ev), (int)(h + n));
	assert_int_equal(ev.type, RS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, code);
	assert_int_equal(ev.reason_len, reason_len);
	assert_memory_equal(ev.reason, reason, reason_len);
}

static void test_close_payload(void **state)
{
	uint8_t out[RS_WS_MAX_CONTROL];
	char reason[300];
	size_t n;

	(void)state;
	n = rs_ws_close_payload(out, 1000, "bye");
	assert_int_equal(n, 5);
	assert_memory_equal(out, "\003\350bye", 5);
	check_close_round_trip(out, n, 1000, "bye", 3);
	n = rs_ws_close_payload(out, 4321, NULL);
	assert_int_equal(n, 2);
	assert_memory_equal(out, "\x10\xe1", 2);
	check_close_round_trip(out, n, 4321, "", 0);
	assert_int_equal(rs_ws_close_payload(out, 1000, ""), 2);
	/* codes that may not be sent give an empty payload */
	assert_int_equal(rs_ws_close_payload(out, 1005, "x"), 0);
	assert_int_equal(rs_ws_close_payload(out, 1006, "x"), 0);
	assert_int_equal(rs_ws_close_payload(out, 1015, "x"), 0);
	assert_int_equal(rs_ws_close_payload(out, 999, "x"), 0);
	assert_int_equal(rs_ws_close_payload(out, 5000, "x"), 0);
	/* too long: cut at 123 bytes */
	memset(reason, 'a', sizeof(reason));
	reason[299] = 0;
	n = rs_ws_close_payload(out, 1011, reason);
	assert_int_equal(n, 125);
	check_close_round_trip(out, n, 1011, reason, 123);
	/* never in the middle of a character */
	for (size_t pad = 115; pad <= 123; pad++) {
		static const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};

		for (size_t c = 0; c < RS_ARRAY_SIZE(chars); c++) {
			size_t cl = strlen(chars[c]);
			/* the character fits whole (and then some of the ASCII
			 * tail), or it is dropped whole */
			size_t fit = pad + cl <= 123 ? RS_MIN(pad + cl + 4, 123) : pad;

			memset(reason, 'a', pad);
			strcpy(reason + pad, chars[c]);
			strcat(reason, "tail");
			n = rs_ws_close_payload(out, 1000, reason);
			assert_int_equal(n, 2 + fit);
			check_close_round_trip(out, n, 1000, reason, fit);
		}
	}
	/* invalid UTF-8 in the text given: keep the valid part before it */
	assert_int_equal(rs_ws_close_payload(out, 1000, "ab\377cd"), 4);
	assert_int_equal(rs_ws_close_payload(out, 1000, "ab\xc0\xaf"), 4);
	assert_int_equal(rs_ws_close_payload(out, 1000, "ab\xed\xa0\x80"), 4);
	assert_int_equal(rs_ws_close_payload(out, 1000, "ab\xe2\x82"), 4);
	n = rs_ws_close_payload(out, 1000, "\xe2\x82\xac\xe2\x82");
	assert_int_equal(n, 5);
	check_close_round_trip(out, n, 1000, "\xe2\x82\xac", 3);
}

static void test_close_code_sendable(void **state)
{
	(void)state;
	for (unsigned c = 0; c <= 0xffff; c++) {
		bool want = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
			    (c >= 3000 && c <= 4999);

		assert_int_equal(rs_ws_close_code_sendable((uint16_t)c), want);
	}
	assert_false(rs_ws_close_code_sendable(1005));
	assert_false(rs_ws_close_code_sendable(1006));
	assert_false(rs_ws_close_code_sendable(1015));
	assert_true(rs_ws_close_code_sendable(1000));
	assert_true(rs_ws_close_code_sendable(1011));
	assert_true(rs_ws_close_code_sendable(4999));
}

/* --- handshake --- */

static void test_accept_key(void **state)
{
	char out[29];

	(void)state;
	memset(out, 'x', sizeof(out));
	rs_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	/* a second pair, computed independently (Python hashlib) */
	rs_ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", out);
	assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static struct rs_ws_handshake_in good_in(void)
{
	struct rs_ws_handshake_in in = {
	    .method = "GET",
	    .http_minor = 1,
	    .upgrade = "websocket",
	    .connection = "Upgrade",
	    .key = "dGhlIHNhbXBsZSBub25jZQ==",
	    .version = "13",
	};
	return in;
}

static void expect_reject(const struct rs_ws_handshake_in *in, int status)
{
	struct rs_ws_handshake_out out;

	memset(&out, 0x55, sizeof(out));
	assert_int_equal(rs_ws_handshake_check(in, &out), -EINVAL);
	assert_int_equal(out.status, status);
	assert_non_null(out.error);
	assert_non_null(out.headers);
	assert_false(out.echo_binary);
	assert_int_equal(out.accept[0], 0);
	if (status == 426)
		assert_string_equal(out.headers, "Sec-WebSocket-Version: 13\r\n");
	else
		assert_string_equal(out.headers, "");
}

static void expect_accept(const struct rs_ws_handshake_in *in, bool binary)
{
	struct rs_ws_handshake_out out;

	memset(&out, 0x55, sizeof(out));
	assert_int_equal(rs_ws_handshake_check(in, &out), 0);
	assert_int_equal(out.status, 101);
	assert_null(out.error);
	assert_string_equal(out.headers, "");
	assert_string_equal(out.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_int_equal(out.echo_binary, binary);
}

static void test_handshake_accepts(void **state)
{
	const char *origins[] = {"https://panel.example", "https://other.example:8443"};
	struct rs_ws_handshake_in in = good_in();

	(void)state;
	expect_accept(&in, false);
	in.upgrade = "WebSocket";
	in.connection = "keep-alive, Upgrade";
	expect_accept(&in, false);
	in.upgrade = "h2c,  websocket\t";
	in.connection = "upgrade,keep-alive";
	expect_accept(&in, false);
	in.connection = " UPGRADE ";
	expect_accept(&in, false);
	/* subprotocols: echo "binary" only when offered */
	in.protocol = "binary";
	expect_accept(&in, true);
	in.protocol = "chat, binary";
	expect_accept(&in, true);
	in.protocol = "binary ,base64";
	expect_accept(&in, true);
	in.protocol = "base64";
	expect_accept(&in, false);
	in.protocol = "binaryx, xbinary";
	expect_accept(&in, false);
	/* a browser fails the connection unless the echo matches exactly */
	in.protocol = "BINARY";
	expect_accept(&in, false);
	in.protocol = "";
	expect_accept(&in, false);
	in.protocol = NULL;
	/* origins: any without an allow list, even none */
	in.origin = "https://anything.example";
	expect_accept(&in, false);
	in.allowed_origins = origins;
	in.n_allowed_origins = 2;
	in.origin = "https://panel.example";
	expect_accept(&in, false);
	in.origin = "HTTPS://OTHER.example:8443";
	expect_accept(&in, false);
	/* a later HTTP/1.x minor version is fine */
	in.http_minor = 2;
	expect_accept(&in, false);
}

static void test_handshake_rejects(void **state)
{
	const char *origins[] = {"https://panel.example"};
	static const char *bad_keys[] = {
	    "",
	    "short",
	    "dGhlIHNhbXBsZSBub25jZQ",	 /* no padding: 22 characters */
	    "dGhlIHNhbXBsZSBub25jZQ===", /* 25 */
	    "dGhlIHNhbXBsZSBub25jZQ=x",	 /* junk after padding */
	    "dGhlIHNhbXBsZSBub25jZ!==",	 /* not base64 */
	    "dGhlIHNhbXBsZSBub25jZXM=",	 /* 17 bytes */
	    "dGhlIHNhbXBsZSBub25jZXMx",	 /* 18 bytes */
	    " dGhlIHNhbXBsZSBub25jZQ==",
	    "dGhlIHNhbXBsZSBub25j ZQ==",
	};
	struct rs_ws_handshake_in in;

	(void)state;
	in = good_in(), in.method = NULL;
	expect_reject(&in, 400);
	in = good_in(), in.method = "POST";
	expect_reject(&in, 400);
	in = good_in(), in.method = "get";
	expect_reject(&in, 400);
	in = good_in(), in.http_minor = 0;
	expect_reject(&in, 400);
	in = good_in(), in.upgrade = NULL;
	expect_reject(&in, 400);
	in = good_in(), in.upgrade = "h2c";
	expect_reject(&in, 400);
	in = good_in(), in.upgrade = "websockets";
	expect_reject(&in, 400);
	in = good_in(), in.upgrade = "";
	expect_reject(&in, 400);
	in = good_in(), in.connection = NULL;
	expect_reject(&in, 400);
	in = good_in(), in.connection = "close";
	expect_reject(&in, 400);
	in = good_in(), in.connection = "keep-alive, upgrades";
	expect_reject(&in, 400);
	in = good_in(), in.version = NULL;
	expect_reject(&in, 426);
	in = good_in(), in.version = "8";
	expect_reject(&in, 426);
	in = good_in(), in.version = "130";
	expect_reject(&in, 426);
	in = good_in(), in.version = "13, 8";
	expect_reject(&in, 426);
	/* the version is judged before the key: old drafts send other keys */
	in = good_in(), in.version = "8", in.key = NULL;
	expect_reject(&in, 426);
	in = good_in(), in.key = NULL;
	expect_reject(&in, 400);
	for (size_t i = 0; i < RS_ARRAY_SIZE(bad_keys); i++) {
		in = good_in(), in.key = bad_keys[i];
		expect_reject(&in, 400);
	}
	in = good_in();
	in.allowed_origins = origins;
	in.n_allowed_origins = 1;
	in.origin = "https://evil.example";
	expect_reject(&in, 403);
	in.origin = "https://panel.example.evil";
	expect_reject(&in, 403);
	in.origin = "http://panel.example";
	expect_reject(&in, 403);
	in.origin = NULL;
	expect_reject(&in, 403);
}

/* The pong owed to a peer that does not read: only the latest ping's, as a
 * whole frame the peer's parser accepts, masked on a client leg. */
static void test_pending_pong(void **st)
{
	struct rs_ws_pong pp = {0};
	uint8_t frame[RS_WS_MAX_PONG_FRAME], big[RS_WS_MAX_CONTROL];
	const uint8_t key[4] = {1, 2, 3, 4};
	struct rs_ws_parser p;
	struct rs_ws_event ev;
	size_t n;

	(void)st;
	assert_int_equal(rs_ws_pong_take(&pp, frame, NULL), 0);
	rs_ws_pong_hold(&pp, (const uint8_t *)"first", 5);
	rs_ws_pong_hold(&pp, (const uint8_t *)"second", 6);
	n = rs_ws_pong_take(&pp, frame, NULL);
	assert_int_equal(n, 8);
	assert_memory_equal(frame, "\x8a\x06second", 8);
	assert_int_equal(rs_ws_pong_take(&pp, frame, NULL), 0); /* sent once */
	/* empty ping, empty pong */
	rs_ws_pong_hold(&pp, NULL, 0);
	assert_int_equal(rs_ws_pong_take(&pp, frame, NULL), 2);
	assert_memory_equal(frame, "\x8a\x00", 2);
	/* 125 bytes, masked (a client leg): a server parser reads it back */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	rs_ws_pong_hold(&pp, big, sizeof(big));
	n = rs_ws_pong_take(&pp, frame, key);
	assert_int_equal(n, 2 + 4 + 125);
	rs_ws_parser_init(&p, true, 1024, 1024);
	assert_int_equal(rs_ws_parse(&p, frame, n, &ev), (int)n);
	assert_int_equal(ev.type, RS_WS_EV_PONG);
	assert_int_equal(ev.len, 125);
	assert_memory_equal(ev.data, big, 125);
	/* longer than a control frame allows is cut, never overflows */
	{
		uint8_t huge[300] = {0};

		rs_ws_pong_hold(&pp, huge, sizeof(huge));
		assert_int_equal(rs_ws_pong_take(&pp, frame, NULL), 2 + 125);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc_single_frame_unmasked),
	    cmocka_unit_test(test_rfc_single_frame_masked_in_place),
	    cmocka_unit_test(test_rfc_fragmented_unmasked),
	    cmocka_unit_test(test_rfc_ping_pong),
	    cmocka_unit_test(test_rfc_length_forms),
	    cmocka_unit_test(test_chunking_equivalence),
	    cmocka_unit_test(test_reserved_bits_and_opcodes),
	    cmocka_unit_test(test_control_frame_rules),
	    cmocka_unit_test(test_fragmentation_rules),
	    cmocka_unit_test(test_masking_rules),
	    cmocka_unit_test(test_length_encoding_rules),
	    cmocka_unit_test(test_close_frames),
	    cmocka_unit_test(test_size_limits),
	    cmocka_unit_test(test_text_utf8_in_frames),
	    cmocka_unit_test(test_utf8_split_events),
	    cmocka_unit_test(test_empty_messages),
	    cmocka_unit_test(test_huge_input_is_capped),
	    cmocka_unit_test(test_utf8_exhaustive),
	    cmocka_unit_test(test_utf8_edges_and_splits),
	    cmocka_unit_test(test_frame_header),
	    cmocka_unit_test(test_writer_round_trip),
	    cmocka_unit_test(test_mask),
	    cmocka_unit_test(test_close_payload),
	    cmocka_unit_test(test_close_code_sendable),
	    cmocka_unit_test(test_accept_key),
	    cmocka_unit_test(test_handshake_accepts),
	    cmocka_unit_test(test_handshake_rejects),
	    cmocka_unit_test(test_pending_pong),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
