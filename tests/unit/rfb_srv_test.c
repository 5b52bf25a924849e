/* tests/unit/rfb_srv_test.c — target→browser RFB message boundaries. */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto/rfb_srv.h"

struct stream {
	uint8_t b[8192];
	size_t n;
	size_t ends[64]; /* offsets right after each message */
	size_t nends;
};

static void put(struct stream *s, const void *p, size_t n)
{
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static void u8(struct stream *s, unsigned v)
{
	uint8_t b = (uint8_t)v;

	put(s, &b, 1);
}

static void u16(struct stream *s, unsigned v)
{
	u8(s, v >> 8);
	u8(s, v);
}

static void u32(struct stream *s, uint32_t v)
{
	u16(s, v >> 16);
	u16(s, v & 0xffff);
}

static void fill(struct stream *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		u8(s, 0xa5);
}

static void end(struct stream *s)
{
	s->ends[s->nends++] = s->n;
}

static void rect(struct stream *s, unsigned w, unsigned h, int32_t enc)
{
	u16(s, 1), u16(s, 2), u16(s, w), u16(s, h), u32(s, (uint32_t)enc);
}

/* ServerInit (32 bpp) and one of every message this parser frames. */
static void build(struct stream *s)
{
	memset(s, 0, sizeof(*s));
	u16(s, 1024), u16(s, 768);
	u8(s, 32), u8(s, 24), u8(s, 0), u8(s, 1), fill(s, 12); /* pixel format */
	u32(s, 6), put(s, "VM 100", 6);
	end(s);
	/* FramebufferUpdate: Raw, CopyRect, RRE, Hextile, Cursor, XCursor,
	 * ExtendedDesktopSize, DesktopName, QEMU LED, DesktopSize */
	u8(s, 0), u8(s, 0), u16(s, 10);
	rect(s, 3, 2, 0), fill(s, 3 * 2 * 4);
	rect(s, 5, 5, 1), fill(s, 4);
	rect(s, 9, 9, 2), u32(s, 2), fill(s, 4 + 2 * (4 + 8));
	rect(s, 20, 18, 5); /* 2x2 tiles: 16x16, 4x16, 16x2, 4x2 */
	u8(s, 1), fill(s, 16 * 16 * 4);	    /* raw tile */
	u8(s, 2 | 4 | 8 | 16), fill(s, 8);   /* bg, fg, coloured subrects */
	u8(s, 2), fill(s, 2 * (4 + 2));
	u8(s, 8), u8(s, 3), fill(s, 3 * 2); /* plain subrects */
	u8(s, 0);			    /* nothing: background as before */
	rect(s, 7, 3, -239), fill(s, 7 * 3 * 4 + 1 * 3);
	rect(s, 9, 2, -240), fill(s, 6 + 2 * 2 * 2);
	rect(s, 0, 0, -308), u8(s, 2), fill(s, 3), fill(s, 32);
	rect(s, 0, 0, -307), u32(s, 3), put(s, "abc", 3);
	rect(s, 0, 0, -261), u8(s, 7);
	rect(s, 800, 600, -223);
	end(s);
	u8(s, 2); /* Bell */
	end(s);
	u8(s, 3), fill(s, 3), u32(s, 2), put(s, "hi", 2); /* ServerCutText */
	end(s);
	u8(s, 3), fill(s, 3), u32(s, (uint32_t)-8), fill(s, 8); /* extended clipboard */
	end(s);
	u8(s, 248), fill(s, 3), u32(s, 0x80000001), u8(s, 3), fill(s, 3); /* ServerFence */
	end(s);
	u8(s, 1), u8(s, 0), u16(s, 0), u16(s, 2), fill(s, 12); /* colour map */
	end(s);
	u8(s, 250), u8(s, 0), u8(s, 1), u8(s, 1); /* xvp */
	end(s);
	u8(s, 255), u8(s, 1), u16(s, 1); /* QEMU audio begin */
	end(s);
	u8(s, 255), u8(s, 1), u16(s, 2), u32(s, 5), fill(s, 5); /* QEMU audio data */
	end(s);
	u8(s, 150); /* EndOfContinuousUpdates */
	end(s);
	u8(s, 0), u8(s, 0), u16(s, 0xffff); /* LastRect ends an open-ended update */
	rect(s, 1, 1, 0), fill(s, 4);
	rect(s, 0, 0, -224);
	end(s);
	u8(s, 0), u8(s, 0), u16(s, 0); /* empty update */
	end(s);
}

/* Feed in chunks of <chunk> bytes; every boundary must be where built. */
static void check_chunks(size_t chunk)
{
	static struct stream s;
	struct rs_rfb_srv p;
	size_t off = 0, k = 0, len;
	const uint8_t *init;

	build(&s);
	rs_rfb_srv_init(&p);
	assert_null(rs_rfb_srv_server_init(&p, &len));
	while (off < s.n) {
		size_t n = RS_MIN(chunk, s.n - off);

		while (n) {
			bool at_end;
			int r = rs_rfb_srv_feed(&p, s.b + off, n, &at_end);

			assert_true(r > 0);
			off += (size_t)r;
			n -= (size_t)r;
			if (at_end) {
				assert_true(k < s.nends);
				assert_int_equal(off, s.ends[k]);
				k++;
			}
		}
	}
	assert_int_equal(k, s.nends);
	init = rs_rfb_srv_server_init(&p, &len);
	assert_non_null(init);
	assert_int_equal(len, 30);
	assert_memory_equal(init, s.b, 30);
}

static void test_boundaries_whatever_the_chunking(void **state)
{
	(void)state;
	check_chunks(1);
	check_chunks(3);
	check_chunks(7);
	check_chunks(64);
	check_chunks(100000);
}

static void test_pixel_format_changes_sizes(void **state)
{
	struct rs_rfb_srv p;
	static struct stream s;
	bool at_end;
	size_t off = 0;

	(void)state;
	memset(&s, 0, sizeof(s));
	u16(&s, 8), u16(&s, 8), u8(&s, 32), fill(&s, 15), u32(&s, 0);
	rs_rfb_srv_init(&p);
	assert_int_equal(rs_rfb_srv_feed(&p, s.b, s.n, &at_end), 24);
	assert_true(at_end);
	assert_true(rs_rfb_srv_set_bpp(&p, 16)); /* the browser's SetPixelFormat */
	s.n = 0;
	u8(&s, 0), u8(&s, 0), u16(&s, 1), rect(&s, 4, 4, 0), fill(&s, 4 * 4 * 2);
	u8(&s, 2);
	while (off < s.n) {
		int r = rs_rfb_srv_feed(&p, s.b + off, s.n - off, &at_end);

		assert_true(r > 0);
		off += (size_t)r;
		assert_true(at_end);
		assert_true(off == 4 + 12 + 32 || off == s.n);
	}
	assert_false(rs_rfb_srv_set_bpp(&p, 24));
}

static void test_stateful_encodings_and_unknown_types_stop(void **state)
{
	static const int32_t refused[] = {7 /* Tight */, 16 /* ZRLE */, 6 /* zlib */, 21 /* JPEG */,
					  -260 /* TightPNG */, 0x574d5664 /* VMware cursor */};
	struct rs_rfb_srv p;
	static struct stream s;
	bool at_end;

	(void)state;
	for (size_t i = 0; i < RS_ARRAY_SIZE(refused); i++) {
		assert_false(rs_rfb_srv_encoding_ok(refused[i]));
		build(&s);
		s.n = s.ends[0];
		u8(&s, 0), u8(&s, 0), u16(&s, 1), rect(&s, 4, 4, refused[i]);
		rs_rfb_srv_init(&p);
		assert_int_equal(rs_rfb_srv_feed(&p, s.b, s.ends[0], &at_end), (int)s.ends[0]);
		assert_int_equal(rs_rfb_srv_feed(&p, s.b + s.ends[0], s.n - s.ends[0], &at_end),
				 RS_PARSE_ERROR);
		assert_non_null(strstr(p.error, "encoding"));
		assert_int_equal(rs_rfb_srv_feed(&p, s.b, 1, &at_end), RS_PARSE_ERROR);
	}
	assert_true(rs_rfb_srv_encoding_ok(5));
	assert_true(rs_rfb_srv_encoding_ok(-239));
	assert_true(rs_rfb_srv_encoding_ok(-26)); /* a JPEG quality level: no data */
	build(&s);
	rs_rfb_srv_init(&p);
	assert_int_equal(rs_rfb_srv_feed(&p, s.b, s.ends[0], &at_end), (int)s.ends[0]);
	assert_int_equal(rs_rfb_srv_feed(&p, (const uint8_t *)"\x07", 1, &at_end), RS_PARSE_ERROR);
	assert_non_null(strstr(p.error, "type 7"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_boundaries_whatever_the_chunking),
	    cmocka_unit_test(test_pixel_format_changes_sizes),
	    cmocka_unit_test(test_stateful_encodings_and_unknown_types_stop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
