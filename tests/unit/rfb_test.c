#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include <openssl/des.h>

#include "proto/rfb.h"

/* Feed in chunks; accumulate output. Returns total consumed or error. */
static int srv_feed(struct rs_rfb_server *s, const char *in, size_t len, size_t chunk,
		    struct rs_rfb_out *out)
{
	size_t off = 0;

	while (off < len) {
		int n = rs_rfb_server_feed(s, (const uint8_t *)in + off, RS_MIN(chunk, len - off), out);

		if (n < 0)
			return n;
		if (!n)
			break;
		off += (size_t)n;
	}
	return (int)off;
}

static void test_server_versions(void **st)
{
	(void)st;
	for (size_t chunk = 1; chunk <= 12; chunk += 11) {
		struct rs_rfb_server s;
		struct rs_rfb_out o = {0};

		/* 3.8: list, choice, SecurityResult 0 */
		rs_rfb_server_init(&s);
		rs_rfb_server_start(&s, &o);
		assert_memory_equal(o.buf, "RFB 003.008\n", 12);
		o.len = 0;
		assert_int_equal(srv_feed(&s, "RFB 003.008\n", 12, chunk, &o), 12);
		assert_true(rs_rfb_server_waiting(&s));
		assert_int_equal(o.len, 0); /* nothing before the upstream verdict */
		rs_rfb_server_accept(&s, &o);
		assert_memory_equal(o.buf, "\x01\x01", 2);
		assert_int_equal(srv_feed(&s, "\x01" "C", 2, chunk, &o), 1); /* ClientInit not consumed */
		assert_true(rs_rfb_server_done(&s));
		assert_memory_equal(o.buf + 2, "\0\0\0\0", 4);
		/* 3.7: no SecurityResult for None */
		rs_rfb_server_init(&s);
		o.len = 0;
		srv_feed(&s, "RFB 003.007\n", 12, chunk, &o);
		rs_rfb_server_accept(&s, &o);
		srv_feed(&s, "\x01", 1, chunk, &o);
		assert_true(rs_rfb_server_done(&s));
		assert_int_equal(o.len, 2);
		/* 3.3: server dictates type 1 */
		rs_rfb_server_init(&s);
		o.len = 0;
		srv_feed(&s, "RFB 003.003\n", 12, chunk, &o);
		rs_rfb_server_accept(&s, &o);
		assert_true(rs_rfb_server_done(&s));
		assert_memory_equal(o.buf, "\0\0\0\x01", 4);
	}
}

static void test_server_apple_and_unknown_minor(void **st)
{
	struct rs_rfb_server s;
	struct rs_rfb_out o = {0};

	(void)st;
	rs_rfb_server_init(&s);
	srv_feed(&s, "RFB 003.889\n", 12, 12, &o);
	assert_int_equal(s.minor, 8);
	rs_rfb_server_init(&s);
	srv_feed(&s, "RFB 003.005\n", 12, 12, &o);
	assert_int_equal(s.minor, 3);
}

static void test_server_failures(void **st)
{
	struct rs_rfb_server s;
	struct rs_rfb_out o = {0};

	(void)st;
	rs_rfb_server_init(&s);
	assert_int_equal(srv_feed(&s, "HTTP/1.1 200", 12, 12, &o), RS_PARSE_ERROR);
	/* 3.8 failure: count 0, length, reason */
	rs_rfb_server_init(&s);
	srv_feed(&s, "RFB 003.008\n", 12, 12, &o);
	rs_rfb_server_fail(&s, "no", &o);
	assert_int_equal(o.len, 7);
	assert_memory_equal(o.buf, "\0\0\0\0\x02no", 7);
	/* 3.3 failure: type 0, length, reason */
	rs_rfb_server_init(&s);
	o.len = 0;
	srv_feed(&s, "RFB 003.003\n", 12, 12, &o);
	rs_rfb_server_fail(&s, "no", &o);
	assert_memory_equal(o.buf, "\0\0\0\0\0\0\0\x02no", 10);
	/* a choice other than None */
	rs_rfb_server_init(&s);
	o.len = 0;
	srv_feed(&s, "RFB 003.008\n", 12, 12, &o);
	rs_rfb_server_accept(&s, &o);
	assert_int_equal(srv_feed(&s, "\x02", 1, 1, &o), RS_PARSE_ERROR);
	/* an overlong reason is cut to fit, never overflows */
	{
		char big[2000];

		memset(big, 'r', sizeof(big) - 1);
		big[sizeof(big) - 1] = 0;
		rs_rfb_server_init(&s);
		o.len = 0;
		srv_feed(&s, "RFB 003.008\n", 12, 12, &o);
		rs_rfb_server_fail(&s, big, &o);
		assert_true(o.len <= sizeof(o.buf));
	}
}

static int cli_feed(struct rs_rfb_client *c, const void *in, size_t len, size_t chunk,
		    struct rs_rfb_out *out)
{
	size_t off = 0;

	while (off < len) {
		int n = rs_rfb_client_feed(c, (const uint8_t *)in + off, RS_MIN(chunk, len - off), out);

		if (n < 0)
			return n;
		if (!n)
			break;
		off += (size_t)n;
	}
	return (int)off;
}

/* Independent reference: bit-reverse each key byte, DES-ECB both blocks. */
static void reference_response(const char *pw, const uint8_t ch[16], uint8_t out[16])
{
	DES_cblock k = {0};
	DES_key_schedule ks;

	for (int i = 0; i < 8 && pw[i]; i++) {
		uint8_t b = (uint8_t)pw[i];

		b = (uint8_t)((b & 0xf0) >> 4 | (b & 0x0f) << 4);
		b = (uint8_t)((b & 0xcc) >> 2 | (b & 0x33) << 2);
		b = (uint8_t)((b & 0xaa) >> 1 | (b & 0x55) << 1);
		k.bytes[i] = b;
	}
	DES_set_key_unchecked(&k, &ks);
	DES_ecb_encrypt((const DES_cblock *)ch, (DES_cblock *)out, &ks, DES_ENCRYPT);
	DES_ecb_encrypt((const DES_cblock *)(ch + 8), (DES_cblock *)(out + 8), &ks, DES_ENCRYPT);
}

static void test_client_vnc_auth_38(void **st)
{
	uint8_t ch[16], want[16];

	(void)st;
	for (int i = 0; i < 16; i++)
		ch[i] = (uint8_t)(i * 17 + 3);
	reference_response("secret12", ch, want);
	for (size_t chunk = 1; chunk <= 32; chunk += 31) {
		struct rs_rfb_client c;
		struct rs_rfb_out o = {0};

		rs_rfb_client_init(&c, "secret12-and-more");
		assert_int_equal(cli_feed(&c, "RFB 003.008\n", 12, chunk, &o), 12);
		assert_memory_equal(o.buf, "RFB 003.008\n", 12);
		assert_int_equal(cli_feed(&c, "\x02\x01\x02", 3, chunk, &o), 3);
		assert_int_equal(o.buf[12], 2); /* VNC auth chosen over None when a password is set */
		assert_int_equal(cli_feed(&c, ch, 16, chunk, &o), 16);
		assert_memory_equal(o.buf + 13, want, 16); /* only the first 8 bytes count */
		assert_int_equal(cli_feed(&c, "\0\0\0\0", 4, chunk, &o), 4);
		assert_true(rs_rfb_client_done(&c));
		rs_rfb_client_release(&c);
		for (size_t i = 0; i < sizeof(c.password); i++)
			assert_int_equal(c.password[i], 0);
	}
}

static void test_client_versions_and_none(void **st)
{
	struct rs_rfb_client c;
	struct rs_rfb_out o = {0};

	(void)st;
	rs_rfb_client_init(&c, NULL);
	cli_feed(&c, "RFB 003.003\n", 12, 12, &o);
	assert_memory_equal(o.buf, "RFB 003.003\n", 12);
	cli_feed(&c, "\0\0\0\x01", 4, 1, &o);
	assert_true(rs_rfb_client_done(&c));
	rs_rfb_client_init(&c, NULL);
	o.len = 0;
	cli_feed(&c, "RFB 003.007\n", 12, 12, &o);
	cli_feed(&c, "\x01\x01", 2, 1, &o);
	assert_true(rs_rfb_client_done(&c)); /* 3.7: no SecurityResult for None */
	rs_rfb_client_init(&c, NULL);
	o.len = 0;
	cli_feed(&c, "RFB 004.001\n", 12, 12, &o);
	assert_memory_equal(o.buf, "RFB 003.008\n", 12);
}

static void test_client_failures(void **st)
{
	struct rs_rfb_client c;
	struct rs_rfb_out o = {0};
	uint8_t ch[16] = {0};

	(void)st;
	rs_rfb_client_init(&c, "pw");
	assert_int_equal(cli_feed(&c, "SSH-2.0-OpenSSH\n", 16, 16, &o), RS_PARSE_ERROR);
	assert_non_null(strstr(c.error, "not a VNC server"));

	rs_rfb_client_init(&c, "pw");
	cli_feed(&c, "RFB 003.008\n", 12, 12, &o);
	assert_int_equal(cli_feed(&c, "\0\0\0\0\x04" "busy", 9, 1, &o), RS_PARSE_ERROR);
	assert_non_null(strstr(c.error, "busy"));

	rs_rfb_client_init(&c, "pw");
	cli_feed(&c, "RFB 003.008\n", 12, 12, &o);
	assert_int_equal(cli_feed(&c, "\x02\x10\x13", 3, 3, &o), RS_PARSE_ERROR);
	assert_non_null(strstr(c.error, "16,19"));

	rs_rfb_client_init(&c, NULL);
	cli_feed(&c, "RFB 003.008\n", 12, 12, &o);
	assert_int_equal(cli_feed(&c, "\x01\x02", 2, 2, &o), RS_PARSE_ERROR);
	assert_non_null(strstr(c.error, "requires a password"));

	rs_rfb_client_init(&c, "pw");
	cli_feed(&c, "RFB 003.008\n", 12, 12, &o);
	cli_feed(&c, "\x01\x02", 2, 2, &o);
	cli_feed(&c, ch, 16, 16, &o);
	assert_int_equal(cli_feed(&c, "\0\0\0\x01\0\0\0\x05" "wrong", 13, 1, &o), RS_PARSE_ERROR);
	assert_true(rs_rfb_client_auth_failed(&c));
	assert_string_equal(c.error, "VNC authentication failed: wrong");

	rs_rfb_client_init(&c, "pw");
	cli_feed(&c, "RFB 003.007\n", 12, 12, &o);
	cli_feed(&c, "\x01\x02", 2, 2, &o);
	cli_feed(&c, ch, 16, 16, &o);
	assert_int_equal(cli_feed(&c, "\0\0\0\x01", 4, 4, &o), RS_PARSE_ERROR);
	assert_true(rs_rfb_client_auth_failed(&c));

	/* a 4 GB reason is read without being stored */
	rs_rfb_client_init(&c, "pw");
	cli_feed(&c, "RFB 003.008\n", 12, 12, &o);
	{
		static uint8_t junk[5000];

		memset(junk, 0x01, sizeof(junk)); /* control bytes are sanitised */
		assert_int_equal(cli_feed(&c, "\0\xff\xff\xff\xff", 5, 5, &o), 5);
		assert_int_equal(cli_feed(&c, junk, sizeof(junk), 1000, &o), (int)sizeof(junk));
		assert_false(rs_rfb_client_done(&c));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_versions),
		cmocka_unit_test(test_server_apple_and_unknown_minor),
		cmocka_unit_test(test_server_failures),
		cmocka_unit_test(test_client_vnc_auth_38),
		cmocka_unit_test(test_client_versions_and_none),
		cmocka_unit_test(test_client_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
