/* tests/fuzz/fuzz_rfb_client.c — the browser→target RFB message parser fed
 * in random-sized chunks, with every contract of rs_rfb_msgs_feed() checked,
 * and the outcome compared with the same stream fed whole and through
 * rs_rfb_msgs_check().
 *
 * Input: byte 0 picks the chunking (0 = everything at once, n = pseudo-random
 * chunk sizes from 1 to n, so 1 = byte at a time); byte 1 the limits (small
 * ones, so the bounds are reached); the rest is the stream, ClientInit first. */
#include "core/common.h"

#include "proto/rfb_msgs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

struct outcome {
	size_t msgs, accepted; /* whole messages and their bytes */
	bool error;
	char why[112];
};

/* Feed <in>, <chunk> 0 meaning all at once, else pseudo-random chunks. */
static void run(const struct rs_rfb_msgs_limits *lim, const uint8_t *in, size_t len, unsigned chunk,
		struct outcome *o)
{
	struct rs_rfb_msgs p;
	size_t off = 0, open = 0;
	uint32_t rnd = 0x9e3779b9u;
	enum rs_rfb_msg_kind kind = RS_RFB_MSG_NONE;

	memset(o, 0, sizeof(*o));
	rs_rfb_msgs_init(&p, lim);
	while (off < len) {
		size_t n = len - off;

		if (chunk) {
			rnd = rnd * 1103515245u + 12345u;
			n = RS_MIN(n, 1 + (rnd >> 16) % chunk);
		}
		while (n) {
			struct rs_rfb_msg_ev ev;
			int r = rs_rfb_msgs_feed(&p, in + off, n, &ev);

			if (r < 0) {
				CHECK(p.error[0]);
				o->error = true;
				snprintf(o->why, sizeof(o->why), "%s", p.error);
				/* stopped for good */
				CHECK(rs_rfb_msgs_feed(&p, in + off, n, &ev) == RS_PARSE_ERROR);
				return;
			}
			CHECK(r > 0 && (size_t)r <= n && (size_t)r == ev.len);
			CHECK(ev.kind > RS_RFB_MSG_NONE && ev.kind < RS_RFB_MSG__COUNT);
			CHECK(ev.first == (open == 0));
			if (!ev.first)
				CHECK(ev.kind == kind);
			kind = ev.kind;
			/* only ClientInit comes first, and only there */
			CHECK((ev.kind == RS_RFB_MSG_CLIENT_INIT) == (off == 0));
			open += (size_t)r;
			/* no message may be larger than the largest bound allows */
			CHECK(open <= RS_MAX(RS_MAX(8 + (size_t)lim->max_cut_text,
						    4 + 4 * (size_t)lim->max_encodings),
					     (size_t)(8 + 16 * RS_RFB_MAX_SCREENS)));
			if (ev.last) {
				o->msgs++;
				o->accepted += open;
				open = 0;
			}
			off += (size_t)r;
			n -= (size_t)r;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_rfb_msgs_limits lim;
	struct outcome whole, split;
	struct rs_rfb_msgs p;
	int r;

	if (size < 2)
		return 0;
	lim.max_cut_text = data[1] & 0x80 ? 1048576 : (data[1] & 0x7f) * 3u;
	lim.max_encodings = 1 + (data[1] & 0x1f);
	run(&lim, data + 2, size - 2, 0, &whole);
	run(&lim, data + 2, size - 2, data[0], &split);
	/* chunking changes nothing: the same messages, the same verdict */
	CHECK(whole.msgs == split.msgs && whole.accepted == split.accepted);
	CHECK(whole.error == split.error && !strcmp(whole.why, split.why));
	rs_rfb_msgs_init(&p, &lim);
	r = rs_rfb_msgs_check(&p, data + 2, size - 2);
	CHECK((r < 0) == whole.error);
	CHECK(!whole.error || !strcmp(p.error, whole.why));
	return 0;
}
