#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/timer.h"

struct probe {
	struct rs_timer t;
	uint64_t deadline, fired_at;
	int fired;
};

static uint64_t now;
static struct rs_timer_wheel W;

static void on_fire(struct rs_timer *t)
{
	struct probe *p = rs_container_of(t, struct probe, t);

	p->fired++;
	p->fired_at = now;
}

static void run_to(uint64_t t)
{
	/* advance in irregular steps, as an event loop would */
	while (now < t) {
		now += 1 + (now % 7);
		if (now > t)
			now = t;
		rs_timer_wheel_run(&W, now);
	}
}

static void test_fires_at_or_after_deadline_never_before(void **st)
{
	struct probe p[64];

	(void)st;
	now = 1000;
	rs_timer_wheel_init(&W, now);
	for (int i = 0; i < 64; i++) {
		rs_timer_init(&p[i].t, on_fire);
		p[i].fired = 0;
		p[i].deadline = now + (uint64_t)(i * 37 % 500);
		rs_timer_link(&W, &p[i].t, p[i].deadline);
	}
	run_to(now + 600);
	for (int i = 0; i < 64; i++) {
		assert_int_equal(p[i].fired, 1);
		assert_true(p[i].fired_at >= p[i].deadline);
		assert_true(p[i].fired_at <= p[i].deadline + 2 * RS_TIMER_TICK_MS + 8);
	}
	assert_int_equal(W.count, 0);
	assert_true(rs_timer_wheel_next(&W) == UINT64_MAX);
}

static void test_unlink_and_relink(void **st)
{
	struct probe a = {0}, b = {0};

	(void)st;
	now = 0;
	rs_timer_wheel_init(&W, now);
	rs_timer_init(&a.t, on_fire);
	rs_timer_init(&b.t, on_fire);
	rs_timer_link(&W, &a.t, 100);
	rs_timer_link(&W, &b.t, 200);
	rs_timer_unlink(&W, &a.t);
	rs_timer_unlink(&W, &a.t); /* harmless twice */
	assert_false(rs_timer_is_linked(&a.t));
	rs_timer_link(&W, &b.t, 50); /* relink moves it earlier */
	assert_true(rs_timer_wheel_next(&W) <= 50 + RS_TIMER_TICK_MS);
	run_to(60);
	assert_int_equal(b.fired, 1);
	run_to(300);
	assert_int_equal(a.fired, 0);
	assert_int_equal(b.fired, 1);
}

static void test_beyond_span_and_random_deadlines(void **st)
{
	enum { N = 10000 };
	struct probe *p = calloc(N, sizeof(*p));
	uint64_t x = 88172645463325252ull;

	(void)st;
	now = 5;
	rs_timer_wheel_init(&W, now);
	for (int i = 0; i < N; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p[i].deadline = now + x % 100000; /* up to 100 s: 3 wheel spans */
		rs_timer_init(&p[i].t, on_fire);
		rs_timer_link(&W, &p[i].t, p[i].deadline);
	}
	while (now < 101000) {
		uint64_t next = rs_timer_wheel_next(&W);

		/* the wheel never reports a wake-up later than a pending deadline */
		for (int i = 0; i < N && (i & 255) == 0; i++)
			if (!p[i].fired)
				assert_true(next <= p[i].deadline + RS_TIMER_TICK_MS);
		now += 97;
		rs_timer_wheel_run(&W, now);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(p[i].fired, 1);
		assert_true(p[i].fired_at >= p[i].deadline);
		assert_true(p[i].fired_at < p[i].deadline + 97 + RS_TIMER_TICK_MS);
	}
	free(p);
}

static struct probe self_relink;
static void on_relink(struct rs_timer *t)
{
	self_relink.fired++;
	if (self_relink.fired < 5)
		rs_timer_link(&W, t, now + 10);
}

static void test_callback_relinks_itself(void **st)
{
	(void)st;
	now = 0;
	rs_timer_wheel_init(&W, now);
	rs_timer_init(&self_relink.t, on_relink);
	rs_timer_link(&W, &self_relink.t, 10);
	run_to(1000);
	assert_int_equal(self_relink.fired, 5);
}

static void test_large_time_jump(void **st)
{
	struct probe a = {0};

	(void)st;
	now = 0;
	rs_timer_wheel_init(&W, now);
	rs_timer_init(&a.t, on_fire);
	rs_timer_link(&W, &a.t, 3600 * 1000);
	now = 10 * 3600 * 1000;
	assert_int_equal(rs_timer_wheel_run(&W, now), 1);
	assert_int_equal(a.fired, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fires_at_or_after_deadline_never_before),
		cmocka_unit_test(test_unlink_and_relink),
		cmocka_unit_test(test_beyond_span_and_random_deadlines),
		cmocka_unit_test(test_callback_relinks_itself),
		cmocka_unit_test(test_large_time_jump),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
