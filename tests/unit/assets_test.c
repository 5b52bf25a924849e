/* tests/unit/assets_test.c — the console page's language from the browser's
 * Accept-Language header (untrusted bytes). */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto/assets.h"

static const char *pick(const char *v)
{
	/* Exactly <len> bytes, as from a request buffer: no terminator to lean on. */
	size_t n = strlen(v);
	char *copy = malloc(n ? n : 1);
	const char *r;

	assert_non_null(copy);
	memcpy(copy, v, n);
	r = rs_page_language(copy, n);
	free(copy);
	return r;
}

static void test_page_language(void **st)
{
	(void)st;
	assert_string_equal(pick(""), "en");
	assert_string_equal(pick("de"), "de");
	assert_string_equal(pick("DE-ch"), "de");
	assert_string_equal(pick("de-DE,de;q=0.9,en;q=0.8"), "de");
	assert_string_equal(pick("fr-CH, fr;q=0.9, de;q=0.8, en;q=0.7"), "de");
	assert_string_equal(pick("de;q=0.5, en-GB;q=0.8"), "en");
	assert_string_equal(pick("en;q=0.5 , de ; q=0.5"), "en"); /* equal: the first */
	assert_string_equal(pick("de;q=0, fr"), "en");            /* q=0: not German */
	assert_string_equal(pick("fr, es;q=0.9"), "en");
	assert_string_equal(pick("dee, deu, d, *"), "en"); /* not a "de" subtag */
	assert_string_equal(pick("dee, de-AT;q=0.1"), "de");
	assert_string_equal(pick("de;q=abc, en;q=0.1"), "en"); /* malformed weight: skipped */
	assert_string_equal(pick("de;q=1.5, en;q=0.1"), "en");
	assert_string_equal(pick("de;q=0.0001"), "en"); /* four decimals: malformed */
	assert_string_equal(pick(",,;;,de"), "de");
	assert_string_equal(pick("en;q=0.001,de;q=0.002"), "de");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_language),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
