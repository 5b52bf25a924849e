#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "core/log.h"
#include "core/token.h"

static uint64_t fake_now = 1000000;
static uint64_t fake_clock(void)
{
	return fake_now;
}

static struct rs_console_spec *spec(const char *pw)
{
	struct rs_console_spec *s = rs_spec_new();

	s->host = strdup("127.0.0.1");
	s->port = 5900;
	s->password = pw ? strdup(pw) : NULL;
	return s;
}

static void test_issue_peek_consume_once(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	char text[RS_TOKEN_TEXT + 1];
	uint8_t raw[16];
	struct rs_console_spec *got;
	enum rs_console_kind kind;
	struct rs_token_stats s;

	(void)st;
	assert_int_equal(rs_token_issue(t, spec("pw"), 60000, text), 0);
	assert_int_equal(strlen(text), 22);
	assert_int_equal(rs_token_parse(text, 22, raw), 0);
	assert_int_equal(rs_token_peek(t, raw, &kind), 0);
	assert_int_equal(rs_token_peek(t, raw, &kind), 0); /* peeking never consumes */
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), 0);
	assert_string_equal(got->password, "pw");
	rs_spec_free(got);
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), -ENOENT);
	assert_int_equal(rs_token_peek(t, raw, &kind), -ENOENT);
	rs_token_stats_get(t, &s);
	assert_int_equal(s.issued, 1);
	assert_int_equal(s.consumed, 1);
	assert_int_equal(s.rejected, 1);
	assert_int_equal(s.live, 0);
	rs_token_table_free(t);
}

static void test_parse_rejects_bad_text(void **st)
{
	uint8_t raw[16];

	(void)st;
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAAA", 22, raw), 0);
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAAB", 22, raw), -EINVAL); /* non-canonical */
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAA", 21, raw), -EINVAL);
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAA+A", 22, raw), -EINVAL);
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAA=A", 22, raw), -EINVAL);
}

static void test_expiry_and_sweep(void **st)
{
	struct rs_token_table *t = rs_token_table_new(200000);
	char text[RS_TOKEN_TEXT + 1];
	uint8_t first[16];
	struct rs_console_spec *got;
	struct rs_token_stats s;

	(void)st;
	rs_token_table_set_clock(t, fake_clock);
	for (int i = 0; i < 100000; i++) {
		assert_int_equal(rs_token_issue(t, spec("secret"), 1000, text), 0);
		if (!i)
			rs_token_parse(text, 22, first);
	}
	rs_token_stats_get(t, &s);
	assert_int_equal(s.live, 100000);
	fake_now += 999;
	assert_int_equal(rs_token_sweep(t, fake_now), 0);
	fake_now += 1;
	/* expired tokens cannot be consumed even before a sweep */
	assert_int_equal(rs_token_consume(t, first, NULL, &got), -ENOENT);
	assert_int_equal(rs_token_sweep(t, fake_now), 99999);
	rs_token_stats_get(t, &s);
	assert_int_equal(s.live, 0);
	assert_int_equal(s.expired, 100000);
	rs_token_table_free(t);
}

static void test_full_then_space_again(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	char text[RS_TOKEN_TEXT + 1], keep[RS_TOKEN_TEXT + 1];
	uint8_t raw[16];
	struct rs_console_spec *extra = spec(NULL), *got;

	(void)st;
	for (int i = 0; i < 16; i++)
		assert_int_equal(rs_token_issue(t, spec(NULL), 60000, i ? text : keep), 0);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), -ENOSPC);
	rs_token_parse(keep, 22, raw);
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), 0);
	rs_spec_free(got);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), 0);
	rs_token_table_free(t);
}

static void test_revoke_and_revoke_by_hash(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	char text[RS_TOKEN_TEXT + 1], hash[9];
	uint8_t raw[16];
	struct rs_console_spec *got;

	(void)st;
	rs_token_issue(t, spec(NULL), 60000, text);
	rs_token_parse(text, 22, raw);
	assert_int_equal(rs_token_revoke(t, raw), 0);
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), -ENOENT);
	rs_token_issue(t, spec(NULL), 60000, text);
	rs_token_parse(text, 22, raw);
	rs_log_hash(raw, 16, hash);
	assert_int_equal(rs_token_revoke_hash(t, "00000000"), -ENOENT);
	assert_int_equal(rs_token_revoke_hash(t, hash), 0);
	assert_int_equal(rs_token_peek(t, raw, NULL), -ENOENT);
	rs_token_table_free(t);
}

static void test_bound_ip(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	struct rs_console_spec *s = spec(NULL), *got;
	struct sockaddr_in a = {.sin_family = AF_INET}, b = a;
	char text[RS_TOKEN_TEXT + 1];
	uint8_t raw[16];

	(void)st;
	a.sin_addr.s_addr = htonl(0x7f000002);
	b.sin_addr.s_addr = htonl(0x7f000003);
	s->bind_ip = true;
	memcpy(&s->client_ip, &a, sizeof(a));
	rs_token_issue(t, s, 60000, text);
	rs_token_parse(text, 22, raw);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&b, &got), -EACCES);
	assert_int_equal(rs_token_peek(t, raw, NULL), 0); /* still live */
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&a, &got), 0);
	rs_spec_free(got);
	rs_token_table_free(t);
}

/* 64 threads race to consume one token, released together by a barrier. */
struct racer {
	struct rs_token_table *t;
	uint8_t raw[16];
	pthread_barrier_t *bar;
	_Atomic int *wins;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct rs_console_spec *got;

	pthread_barrier_wait(r->bar);
	if (!rs_token_consume(r->t, r->raw, NULL, &got)) {
		atomic_fetch_add(r->wins, 1);
		rs_spec_free(got);
	}
	return NULL;
}

static void test_race_exactly_one_winner(void **st)
{
	struct rs_token_table *t = rs_token_table_new(64);

	(void)st;
	for (int round = 0; round < 100; round++) {
		pthread_t th[64];
		struct racer r[64];
		pthread_barrier_t bar;
		_Atomic int wins = 0;
		char text[RS_TOKEN_TEXT + 1];
		uint8_t raw[16];

		assert_int_equal(rs_token_issue(t, spec("x"), 60000, text), 0);
		rs_token_parse(text, 22, raw);
		pthread_barrier_init(&bar, NULL, 64);
		for (int i = 0; i < 64; i++) {
			r[i].t = t;
			memcpy(r[i].raw, raw, 16);
			r[i].bar = &bar;
			r[i].wins = &wins;
			pthread_create(&th[i], NULL, race, &r[i]);
		}
		for (int i = 0; i < 64; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&bar);
		assert_int_equal(wins, 1);
	}
	rs_token_table_free(t);
}

/* issue / consume / sweep concurrently; counts must add up. */
static struct rs_token_table *stress_t;
static _Atomic int stop_flag;
static _Atomic long consumed_total, issued_total;

static void *stress_worker(void *arg)
{
	uint64_t x = (uint64_t)(uintptr_t)arg * 2654435761u + 1;

	while (!atomic_load(&stop_flag)) {
		char text[RS_TOKEN_TEXT + 1];
		uint8_t raw[16];
		struct rs_console_spec *got;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		if (!rs_token_issue(stress_t, spec(NULL), (uint32_t)(x % 3), text)) {
			atomic_fetch_add(&issued_total, 1);
			rs_token_parse(text, 22, raw);
			if (x & 1 && !rs_token_consume(stress_t, raw, NULL, &got)) {
				atomic_fetch_add(&consumed_total, 1);
				rs_spec_free(got);
			}
		}
		if (!(x % 97))
			rs_token_sweep(stress_t, rs_now_ms());
	}
	return NULL;
}

static void test_concurrent_stress(void **st)
{
	pthread_t th[4];
	struct rs_token_stats s;

	(void)st;
	stress_t = rs_token_table_new(4096);
	for (long i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, stress_worker, (void *)(i + 1));
	usleep(700000);
	atomic_store(&stop_flag, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	usleep(5000);
	rs_token_sweep(stress_t, rs_now_ms() + 10);
	rs_token_stats_get(stress_t, &s);
	assert_int_equal(s.issued, (uint64_t)issued_total);
	assert_int_equal(s.consumed, (uint64_t)consumed_total);
	assert_int_equal(s.live, 0);
	assert_int_equal(s.issued, s.consumed + s.expired);
	rs_token_table_free(stress_t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issue_peek_consume_once),
		cmocka_unit_test(test_parse_rejects_bad_text),
		cmocka_unit_test(test_expiry_and_sweep),
		cmocka_unit_test(test_full_then_space_again),
		cmocka_unit_test(test_revoke_and_revoke_by_hash),
		cmocka_unit_test(test_bound_ip),
		cmocka_unit_test(test_race_exactly_one_winner),
		cmocka_unit_test(test_concurrent_stress),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
