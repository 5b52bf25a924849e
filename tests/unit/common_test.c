/* tests/unit/common_test.c — rs_random (served from a per-thread block for
 * small requests) and rs_ct_equal.
 *
 * A block-serving bug would show as repeated output: the same bytes handed
 * out twice, or zeroes from a wiped block. 20,000 4-byte masking keys across
 * many refills must hold no duplicate 16-byte run, and no request may come
 * back all zero.
 */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int cmp16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static void test_small_requests_never_repeat(void **state)
{
	enum { N = 20000 };
	uint8_t *keys = malloc(N * 4);
	uint8_t(*runs)[16] = malloc(N / 4 * 16);

	(void)state;
	for (size_t i = 0; i < N; i++)
		assert_int_equal(rs_random(keys + 4 * i, 4), 0);
	/* Four consecutive keys form a run: a duplicate run means the block was
	 * served twice (2^-128 by chance). */
	memcpy(runs, keys, N * 4);
	qsort(runs, N / 4, 16, cmp16);
	for (size_t i = 1; i < N / 4; i++)
		assert_true(memcmp(runs[i - 1], runs[i], 16) != 0);
	free(keys);
	free(runs);
}

static void test_sizes_across_the_block(void **state)
{
	uint8_t a[200], b[200];

	(void)state;
	/* Every size from 1 to 200 (the block serves up to 64 bytes, larger
	 * requests read getrandom directly), in an order that leaves the block
	 * partly used at each step. */
	for (size_t n = 1; n <= sizeof(a); n++) {
		memset(a, 0, sizeof(a));
		memset(b, 0, sizeof(b));
		assert_int_equal(rs_random(a, n), 0);
		assert_int_equal(rs_random(b, n), 0);
		if (n >= 8) {
			assert_false(all_zero(a, n));
			assert_true(memcmp(a, b, n) != 0);
		}
		/* nothing written past the request */
		assert_true(all_zero(a + n, sizeof(a) - n));
	}
	assert_int_equal(rs_random(a, 0), 0);
}

static void *thread_keys(void *arg)
{
	uint8_t *out = arg;

	for (int i = 0; i < 64; i++)
		if (rs_random(out + 16 * i, 16))
			return (void *)1;
	return NULL;
}

static void test_threads_get_distinct_blocks(void **state)
{
	static uint8_t out[4][64 * 16];
	pthread_t t[4];
	uint8_t(*runs)[16] = (void *)out;

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, thread_keys, out[i]), 0);
	for (int i = 0; i < 4; i++) {
		void *r;

		assert_int_equal(pthread_join(t[i], &r), 0);
		assert_null(r);
	}
	qsort(runs, 4 * 64, 16, cmp16);
	for (size_t i = 1; i < 4 * 64; i++)
		assert_true(memcmp(runs[i - 1], runs[i], 16) != 0);
}

static void test_ct_equal(void **state)
{
	(void)state;
	assert_true(rs_ct_equal("secret", 6, "secret", 6));
	assert_false(rs_ct_equal("secret", 6, "secreT", 6));
	assert_false(rs_ct_equal("secre", 5, "secret", 6));
	assert_false(rs_ct_equal("secrets", 7, "secret", 6));
	assert_false(rs_ct_equal("", 0, "x", 1));
	assert_true(rs_ct_equal("", 0, "", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_small_requests_never_repeat),
	    cmocka_unit_test(test_sizes_across_the_block),
	    cmocka_unit_test(test_threads_get_distinct_blocks),
	    cmocka_unit_test(test_ct_equal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
