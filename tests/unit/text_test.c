/* tests/unit/text_test.c — untrusted text made safe: rs_text_sanitize (what a
 * person reads), rs_text_escape / rs_log_q (what goes into a log line), the
 * log's whole-line escaping, and a VNC server's hostile failure reason.
 */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <unistd.h>

#include "core/log.h"
#include "core/text.h"
#include "proto/rfb.h"

#define FFFD "\xef\xbf\xbd"

static const char *san(const char *in, size_t len)
{
	static char out[256];

	rs_text_sanitize(out, sizeof(out), in, len);
	return out;
}

static const char *esc(const char *in, size_t len, bool quote)
{
	static char out[256];

	rs_text_escape(out, sizeof(out), in, len, quote);
	return out;
}

#define S(lit) lit, sizeof(lit) - 1

static void test_sanitize(void **st)
{
	char small[8];

	(void)st;
	assert_string_equal(san(S("plain text: ok")), "plain text: ok");
	/* UTF-8 people write stays */
	assert_string_equal(san(S("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82")),
			    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82");
	/* C0, DEL, NUL */
	assert_string_equal(san(S("a\nb\x1b[31m\x7f\0z")), "a" FFFD "b" FFFD "[31m" FFFD FFFD "z");
	/* C1 CSI U+009B, NEL U+0085 */
	assert_string_equal(san(S("x\xc2\x9b" "2J\xc2\x85")), "x" FFFD "2J" FFFD);
	/* bidi: RLO U+202E, LRI U+2066, PDI U+2069, RLM U+200F, ALM U+061C; LS U+2028 */
	assert_string_equal(san(S("\xe2\x80\xae" "cod.exe\xe2\x81\xa6\xe2\x81\xa9\xe2\x80\x8f"
				  "\xd8\x9c\xe2\x80\xa8")),
			    FFFD "cod.exe" FFFD FFFD FFFD FFFD FFFD);
	/* invalid UTF-8: stray continuation, 0xff, overlong '/', surrogate,
	 * above U+10FFFF, a sequence cut at the end */
	assert_string_equal(san(S("\x80\xff")), FFFD FFFD);
	assert_string_equal(san(S("\xc0\xaf")), FFFD FFFD);
	assert_string_equal(san(S("\xed\xa0\x80")), FFFD FFFD FFFD);
	assert_string_equal(san(S("\xf4\x90\x80\x80")), FFFD FFFD FFFD FFFD);
	assert_string_equal(san(S("ok\xe6\x97")), "ok" FFFD FFFD);
	/* a cut never splits a sequence */
	rs_text_sanitize(small, sizeof(small), S("ab\xe6\x97\xa5\xe6\x9c\xac"));
	assert_string_equal(small, "ab\xe6\x97\xa5");
	rs_text_sanitize(small, 1, S("abc"));
	assert_string_equal(small, "");
}

static void test_escape_quoted(void **st)
{
	char small[12];

	(void)st;
	/* the field-forging label of the review */
	assert_string_equal(esc(S("x\" key=admin token=deadbeef"), true),
			    "\"x\\\" key=admin token=deadbeef\"");
	assert_string_equal(esc(S("back\\slash"), true), "\"back\\\\slash\"");
	assert_string_equal(esc(S("a\nb\r\tc\x1b\x7f"), true), "\"a\\nb\\r\\tc\\x1b\\x7f\"");
	assert_string_equal(esc(S("\xc2\x9b" "1m\xe2\x80\xae" "txt"), true),
			    "\"\\u009b1m\\u202etxt\"");
	assert_string_equal(esc(S("\xff\xc0\xaf"), true), "\"\\xff\\xc0\\xaf\"");
	assert_string_equal(esc(S("caf\xc3\xa9"), true), "\"caf\xc3\xa9\"");
	assert_string_equal(esc(S(""), true), "\"\"");
	/* cut: still one closed value, never inside an escape */
	rs_text_escape(small, sizeof(small), S("abcdefghijklmnop"), true);
	assert_string_equal(small, "\"abcdef...\"");
	rs_text_escape(small, sizeof(small), S("abcd\nefgh"), true);
	assert_string_equal(small, "\"abcd\\n...\"");
	rs_text_escape(small, sizeof(small), S("abcde\nfgh"), true);
	assert_string_equal(small, "\"abcde...\"");
	assert_string_equal(rs_log_q("a\"b"), "\"a\\\"b\"");
	assert_string_equal(rs_log_q(NULL), "\"\"");
}

static void test_escape_plain(void **st)
{
	(void)st;
	assert_string_equal(esc(S("say \"hi\" \\ ok"), false), "say \"hi\" \\ ok");
	assert_string_equal(esc(S("one\ntwo\xe2\x80\xae\xc2\x9b\xfe"), false),
			    "one\\ntwo\\u202e\\u009b\\xfe");
}

/* Whatever a caller formats, the log gets one line of printable UTF-8. */
static void test_log_line_is_one_clean_line(void **st)
{
	char path[] = "/tmp/rs-text-test-XXXXXX", buf[4096];
	int fd = mkstemp(path);
	ssize_t n;

	(void)st;
	assert_true(fd >= 0);
	assert_int_equal(rs_log_open(path), 0);
	rs_info("test", "reason: %s", "x\n2026-01-01T00:00:00Z error main: forged\xe2\x80\xae\xc2\x9b");
	rs_info("test", "label=%s", rs_log_q("a\" key=admin"));
	assert_int_equal(rs_log_open("stderr"), 0);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = 0;
	assert_non_null(strstr(buf, "reason: x\\n2026-01-01T00:00:00Z error main: forged\\u202e\\u009b\n"));
	assert_non_null(strstr(buf, "label=\"a\\\" key=admin\"\n"));
	/* two records, two lines */
	assert_ptr_equal(strchr(strchr(buf, '\n') + 1, '\n'), buf + n - 1);
	close(fd);
	unlink(path);
}

/* A hostile VNC server's failure reason reaches the browser and the log as
 * printable UTF-8: no C1 control, no bidi override, no invalid byte. */
static void test_rfb_reason_is_sanitised(void **st)
{
	static const uint8_t reason[] = "no\x1b[2J\xc2\x9b" "31m\xe2\x80\xae" "txt.exe\xff\xfe!";
	struct rs_rfb_client c;
	struct rs_rfb_out o = {0};
	uint8_t msg[64] = {0, 0, 0, 0};

	(void)st;
	msg[4] = (uint8_t)(sizeof(reason) - 1);
	memcpy(msg + 5, reason, sizeof(reason) - 1);
	rs_rfb_client_init(&c, "pw");
	assert_int_equal(rs_rfb_client_feed(&c, (const uint8_t *)"RFB 003.008\n", 12, &o), 12);
	assert_int_equal(rs_rfb_client_feed(&c, msg, 5 + sizeof(reason) - 1, &o), RS_PARSE_ERROR);
	assert_string_equal(c.error, "the VNC target refused the connection: no" FFFD "[2J" FFFD
				     "31m" FFFD "txt.exe" FFFD FFFD "!");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sanitize),
		cmocka_unit_test(test_escape_quoted),
		cmocka_unit_test(test_escape_plain),
		cmocka_unit_test(test_log_line_is_one_clean_line),
		cmocka_unit_test(test_rfb_reason_is_sanitised),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
