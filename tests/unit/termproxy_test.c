#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto/termproxy.h"

static int check(const char *s, struct rs_tp_msg *m)
{
	return rs_termproxy_check((const uint8_t *)s, strlen(s), m);
}

static void test_valid(void **st)
{
	struct rs_tp_msg m;

	(void)st;
	assert_int_equal(check("2", &m), 0);
	assert_int_equal(m.type, RS_TP_PING);
	assert_int_equal(check("0:3:ls\r", &m), 0);
	assert_int_equal(m.type, RS_TP_DATA);
	assert_int_equal(m.len, 3);
	assert_memory_equal(m.data, "ls\r", 3);
	assert_int_equal(check("1:120:40:", &m), 0);
	assert_int_equal(m.type, RS_TP_RESIZE);
	assert_int_equal(m.cols, 120);
	assert_int_equal(m.rows, 40);
	/* N counts UTF-8 bytes, and the payload may hold anything, colons too. */
	assert_int_equal(check("0:4:\xc3\xa9:2", &m), 0);
	assert_int_equal(m.len, 4);
	assert_int_equal(check("0:11:0:5:abc\n1:9", &m), 0);
	assert_int_equal(check("1:1:1:", &m), 0);
	assert_int_equal(check("1:1000:1000:", &m), 0);
}

static void test_invalid(void **st)
{
	static const char *const bad[] = {
	    "",		 "3",	      "22",	   "0",		"0:",	     "0:3:ab",
	    "0:3:abcd",	 "0:0:",      "0:03:abc",  "0::abc",	"0:-1:a",    "0:+1:a",
	    "0:1a:a",	 "0:1",	      "0:1:",	   "1:80:24",	"1:80:24:x", "1:0:24:",
	    "1:80:0:",	 "1:1001:5:", "1:5:1001:", "1:080:24:", "1::24:",    "1:80::",
	    "1:-80:24:", "1:80:24::", "4:1:a",	   "x",		"0;1:a",     "0:1234567890:a",
	};
	struct rs_tp_msg m;

	(void)st;
	for (size_t i = 0; i < RS_ARRAY_SIZE(bad); i++)
		if (check(bad[i], &m) != RS_PARSE_ERROR)
			fail_msg("accepted '%s'", bad[i]);
}

static void test_big_data(void **st)
{
	char buf[70000];
	struct rs_tp_msg m;
	int n = snprintf(buf, sizeof(buf), "0:%d:", 65536);

	(void)st;
	memset(buf + n, 'x', 65536);
	assert_int_equal(rs_termproxy_check((uint8_t *)buf, (size_t)n + 65536, &m), 0);
	assert_int_equal(m.len, 65536);
	assert_int_equal(rs_termproxy_check((uint8_t *)buf, (size_t)n + 65535, &m), RS_PARSE_ERROR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_big_data),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
