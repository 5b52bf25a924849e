/* tests/unit/timer_test.c — the timer wheel against a fake clock.
 *
 * The wheel is driven as the worker drives it: rs_timer_wheel_run() with an
 * advancing now_ms. A timer's "right tick" is the first tick boundary at or
 * after its deadline, ceil(deadline / RS_TIMER_TICK_MS) * RS_TIMER_TICK_MS:
 * it must fire in the first run whose now_ms reaches that boundary, never in
 * an earlier run and never later.
 */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/timer.h"

struct probe {
	struct rs_timer t;
	uint64_t deadline;
	uint64_t fired_at;   /* now_ms of the run that fired it */
	uint64_t fired_prev; /* now_ms of the run before that one */
	unsigned seq;        /* firing order */
	int fired;
};

static uint64_t now, prev_now;
static unsigned seq;
static struct rs_timer_wheel W;

static uint64_t due_ms(uint64_t deadline)
{
	return (deadline + RS_TIMER_TICK_MS - 1) / RS_TIMER_TICK_MS * RS_TIMER_TICK_MS;
}

static void on_fire(struct rs_timer *t)
{
	struct probe *p = rs_container_of(t, struct probe, t);

	assert_false(rs_timer_is_linked(t)); /* unlinked before its callback */
	p->fired++;
	p->fired_at = now;
	p->fired_prev = prev_now;
	p->seq = seq++;
}

static size_t run_at(uint64_t t)
{
	prev_now = now;
	now = t;
	return rs_timer_wheel_run(&W, now);
}

static void reset(uint64_t start)
{
	now = prev_now = start;
	seq = 0;
	rs_timer_wheel_init(&W, now);
}

static void arm(struct probe *p, uint64_t deadline)
{
	memset(p, 0, sizeof(*p));
	rs_timer_init(&p->t, on_fire);
	p->deadline = deadline;
	rs_timer_link(&W, &p->t, deadline);
}

/* Fired in exactly the right run: the first whose now reaches the due tick. */
static void assert_right_run(const struct probe *p)
{
	uint64_t due = due_ms(p->deadline);

	assert_int_equal(p->fired, 1);
	assert_true(p->fired_at >= p->deadline);
	assert_true(p->fired_at >= due);
	assert_true(p->fired_prev < due);
}

static void test_fires_in_the_right_tick_never_before(void **st)
{
	struct probe p[64];

	(void)st;
	reset(1003); /* not on a tick boundary */
	for (int i = 0; i < 64; i++)
		arm(&p[i], now + 1 + (uint64_t)(i * 37 % 500));
	while (now < 1003 + 600) {
		run_at(now + 1);
		for (int i = 0; i < 64; i++)
			if (now < p[i].deadline)
				assert_int_equal(p[i].fired, 0);
	}
	for (int i = 0; i < 64; i++) {
		assert_right_run(&p[i]);
		assert_int_equal(p[i].fired_at, due_ms(p[i].deadline)); /* 1 ms steps: exact */
	}
	assert_int_equal(W.count, 0);
	assert_true(rs_timer_wheel_next(&W) == UINT64_MAX);
}

static void test_fires_in_deadline_order(void **st)
{
	struct probe p[200];

	(void)st;
	reset(0);
	/* linked in scrambled order, far apart, most beyond the span */
	for (int i = 0; i < 200; i++) {
		int k = (i * 73) % 200;

		arm(&p[k], 100 + (uint64_t)k * 200 * RS_TIMER_TICK_MS);
	}
	run_at(100 + 200ull * 200 * RS_TIMER_TICK_MS); /* one run covering them all */
	for (int k = 0; k < 200; k++) {
		assert_int_equal(p[k].fired, 1);
		assert_int_equal(p[k].seq, (unsigned)k);
	}
}

static void test_same_tick_all_fire_together(void **st)
{
	struct probe p[10];

	(void)st;
	reset(0);
	for (int i = 0; i < 10; i++)
		arm(&p[i], 81 + (uint64_t)(i % 7)); /* 81..87 share the tick ending at 88 */
	assert_int_equal(run_at(87), 0);
	assert_int_equal(run_at(88), 10);
	for (int i = 0; i < 10; i++)
		assert_int_equal(p[i].fired_at, 88);
}

static void test_deadline_in_the_past_fires_next_tick(void **st)
{
	struct probe a, b;

	(void)st;
	reset(800);
	run_at(1000);
	arm(&a, 10);   /* long past */
	arm(&b, 1000); /* now */
	assert_true(rs_timer_wheel_next(&W) > 1000);
	assert_int_equal(run_at(1000), 0); /* not in the run that already happened */
	assert_int_equal(run_at(1000 + RS_TIMER_TICK_MS), 2);
}

static void test_unlink_and_relink(void **st)
{
	struct probe a, b, never;

	(void)st;
	reset(0);
	arm(&a, 100);
	arm(&b, 200);
	rs_timer_init(&never.t, on_fire);
	rs_timer_unlink(&W, &never.t); /* never linked: harmless */
	assert_int_equal(W.count, 2);
	rs_timer_unlink(&W, &a.t);
	rs_timer_unlink(&W, &a.t); /* twice: harmless */
	assert_false(rs_timer_is_linked(&a.t));
	assert_int_equal(W.count, 1);
	rs_timer_link(&W, &b.t, 50); /* relink moves it earlier */
	b.deadline = 50;
	assert_int_equal(W.count, 1);
	assert_int_equal(rs_timer_wheel_next(&W), due_ms(50));
	while (now < 300)
		run_at(now + 3);
	assert_right_run(&b);
	assert_int_equal(a.fired, 0);

	/* relink later, then fire again after a first firing */
	arm(&a, 400);
	rs_timer_link(&W, &a.t, 900);
	a.deadline = 900;
	while (now < 899)
		run_at(now + 1);
	assert_int_equal(a.fired, 0);
	run_at(now + RS_TIMER_TICK_MS);
	assert_right_run(&a);
	rs_timer_link(&W, &a.t, now + 50);
	run_at(now + 100);
	assert_int_equal(a.fired, 2);
	assert_int_equal(W.count, 0);
}

static void test_next_reports_earliest(void **st)
{
	struct probe a, b, c;

	(void)st;
	reset(5000);
	assert_true(rs_timer_wheel_next(&W) == UINT64_MAX);
	arm(&a, 9000);
	assert_int_equal(rs_timer_wheel_next(&W), due_ms(9000));
	arm(&b, 7001);
	assert_int_equal(rs_timer_wheel_next(&W), due_ms(7001));
	arm(&c, 5000 + 100000); /* overflow list */
	assert_int_equal(rs_timer_wheel_next(&W), due_ms(7001));
	rs_timer_unlink(&W, &b.t);
	assert_int_equal(rs_timer_wheel_next(&W), due_ms(9000));
	rs_timer_unlink(&W, &a.t);
	assert_int_equal(rs_timer_wheel_next(&W), due_ms(c.deadline));
	rs_timer_unlink(&W, &c.t);
	assert_true(rs_timer_wheel_next(&W) == UINT64_MAX);
}

static void test_overflow_min_stale_after_unlink_never_fires_early(void **st)
{
	struct probe far1, far2;

	(void)st;
	reset(0);
	arm(&far1, 50000); /* both beyond the 32.768 s span */
	arm(&far2, 90000);
	rs_timer_unlink(&W, &far1.t);
	/* next may be early (a stale minimum), never later than far2's tick */
	assert_true(rs_timer_wheel_next(&W) <= due_ms(far2.deadline));
	while (now < 95000) {
		uint64_t next = rs_timer_wheel_next(&W);

		if (!far2.fired)
			assert_true(next <= due_ms(far2.deadline));
		run_at(next <= now || next > now + 997 ? now + 997 : next);
	}
	assert_int_equal(far1.fired, 0);
	assert_right_run(&far2);
}

static void test_span_boundaries(void **st)
{
	const uint64_t span = (uint64_t)RS_TIMER_SLOTS * RS_TIMER_TICK_MS;
	const int64_t off[] = {-9, -8, -7, -1, 0, 1, 7, 8, 9};
	struct probe p[RS_ARRAY_SIZE(off) * 3];
	size_t n = 0;

	(void)st;
	reset(123456789); /* a monotonic clock is rarely near zero */
	for (size_t i = 0; i < RS_ARRAY_SIZE(off); i++)
		for (uint64_t lap = 1; lap <= 3; lap++)
			arm(&p[n++], (uint64_t)((int64_t)(now + lap * span) + off[i]));
	while (now < 123456789 + 3 * span + 100)
		run_at(now + 5);
	for (size_t i = 0; i < n; i++)
		assert_right_run(&p[i]);
	assert_int_equal(W.count, 0);
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void test_10k_random_deadlines_with_churn(void **st)
{
	enum { N = 10000 };
	struct probe *p = calloc(N, sizeof(*p));
	bool *live = calloc(N, sizeof(*live));
	uint64_t x = 88172645463325252ull, start = 777;

	(void)st;
	assert_non_null(p);
	assert_non_null(live);
	reset(start);
	for (int i = 0; i < N; i++) {
		arm(&p[i], now + 1 + xorshift(&x) % 100000); /* up to 100 s: 3 wheel spans */
		live[i] = true;
	}
	while (now < start + 101000) {
		uint64_t next = rs_timer_wheel_next(&W), earliest = UINT64_MAX;

		/* never a wake-up later than a pending timer's tick */
		for (int i = 0; i < N; i++)
			if (live[i] && !p[i].fired && due_ms(p[i].deadline) < earliest)
				earliest = due_ms(p[i].deadline);
		assert_true(next <= earliest);
		/* churn: some timers disarmed, some moved, as connections come and go */
		for (int k = 0; k < 20 && now < start + 50000; k++) {
			int i = (int)(xorshift(&x) % N);

			if (p[i].fired)
				continue;
			if (k & 1) {
				rs_timer_unlink(&W, &p[i].t);
				live[i] = false;
			} else {
				/* after <now>: a deadline at or before the last run is
				 * due at the next tick, which the run check cannot tell */
				p[i].deadline = now + 1 + xorshift(&x) % 50000;
				rs_timer_link(&W, &p[i].t, p[i].deadline);
				live[i] = true;
			}
		}
		run_at(now + 1 + xorshift(&x) % 150); /* irregular loop iterations */
	}
	for (int i = 0; i < N; i++) {
		if (live[i])
			assert_right_run(&p[i]);
		else
			assert_int_equal(p[i].fired, 0);
	}
	assert_int_equal(W.count, 0);
	free(live);
	free(p);
}

static struct probe self_relink;

static void on_relink(struct rs_timer *t)
{
	self_relink.fired++;
	self_relink.fired_at = now;
	if (self_relink.fired < 5)
		rs_timer_link(&W, t, now + 10);
}

static void test_callback_relinks_itself(void **st)
{
	uint64_t last = 0;

	(void)st;
	reset(0);
	rs_timer_init(&self_relink.t, on_relink);
	self_relink.fired = 0;
	rs_timer_link(&W, &self_relink.t, 10);
	while (now < 1000) {
		run_at(now + 1);
		if (self_relink.fired_at != last) {
			/* each re-arm waits its full 10 ms: no firing twice in one run */
			assert_true(last == 0 || self_relink.fired_at >= last + 10);
			last = self_relink.fired_at;
		}
	}
	assert_int_equal(self_relink.fired, 5);
	assert_false(rs_timer_is_linked(&self_relink.t));
}

static struct probe victims[3], killer;

static void on_kill(struct rs_timer *t)
{
	on_fire(t);
	/* a session teardown disarms its peers' timers, due now or later */
	rs_timer_unlink(&W, &victims[0].t);
	rs_timer_unlink(&W, &victims[1].t);
	rs_timer_link(&W, &victims[2].t, now + 40);
	victims[2].deadline = now + 40;
}

static void test_callback_unlinks_and_relinks_others(void **st)
{
	(void)st;
	reset(0);
	memset(&killer, 0, sizeof(killer));
	rs_timer_init(&killer.t, on_kill);
	rs_timer_link(&W, &killer.t, 96);
	arm(&victims[0], 100); /* a later tick of the same run */
	arm(&victims[1], 300);
	arm(&victims[2], 100); /* same, pushed back */
	assert_int_equal(run_at(100), 1);
	assert_int_equal(killer.fired, 1);
	assert_int_equal(W.count, 1);
	run_at(139);
	assert_int_equal(victims[2].fired, 0);
	run_at(1000);
	assert_int_equal(victims[0].fired, 0);
	assert_int_equal(victims[1].fired, 0);
	assert_int_equal(victims[2].fired, 1);
	assert_true(victims[2].fired_at >= 140);
	assert_int_equal(W.count, 0);
}

static struct probe pair[2];

static void on_pair(struct rs_timer *t)
{
	struct probe *p = rs_container_of(t, struct probe, t);

	on_fire(t);
	rs_timer_unlink(&W, &pair[p == &pair[0]].t);
}

static void test_callback_unlinks_its_slot_neighbour(void **st)
{
	(void)st;
	reset(0);
	/* two timers in one slot, each cancelling the other: the slot list is
	 * modified while it is drained, and exactly one of them fires */
	for (int i = 0; i < 2; i++) {
		memset(&pair[i], 0, sizeof(pair[i]));
		rs_timer_init(&pair[i].t, on_pair);
		rs_timer_link(&W, &pair[i].t, 50);
	}
	assert_int_equal(run_at(1000), 1);
	assert_int_equal(pair[0].fired + pair[1].fired, 1);
	assert_int_equal(W.count, 0);
}

static void test_large_time_jump(void **st)
{
	struct probe p[50];
	uint64_t x = 12345;

	(void)st;
	reset(0);
	for (int i = 0; i < 50; i++)
		arm(&p[i], 1 + xorshift(&x) % (5 * 3600 * 1000)); /* up to 5 h out */
	/* the machine slept ten hours: one run fires everything, in order */
	assert_int_equal(run_at(10ull * 3600 * 1000), 50);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(p[i].fired, 1);
		for (int j = 0; j < 50; j++)
			if (due_ms(p[i].deadline) < due_ms(p[j].deadline))
				assert_true(p[i].seq < p[j].seq);
	}
	assert_int_equal(W.count, 0);
	assert_true(rs_timer_wheel_next(&W) == UINT64_MAX);
	/* and the wheel keeps working from the new time */
	arm(&p[0], now + 20);
	assert_int_equal(run_at(now + 19), 0);
	assert_int_equal(run_at(now + 10), 1);
}

static void test_far_future_deadline(void **st)
{
	struct probe a;

	(void)st;
	reset(1000);
	arm(&a, UINT64_MAX / 2); /* "practically never" */
	assert_int_equal(run_at(1000 + 365ull * 86400 * 1000), 0);
	assert_int_equal(a.fired, 0);
	assert_true(rs_timer_wheel_next(&W) >= UINT64_MAX / 2);
	rs_timer_unlink(&W, &a.t);
	assert_int_equal(W.count, 0);
}

/* A wave of far deadlines — 20,000 one-hour idle timers of consoles opened
 * over an hour — while the worker wakes every 10 ms for I/O: each timer must
 * fire in its run, and the overflow list must be walked once per half span,
 * not at every wakeup (that was 18 % of a core with 50,000 timers). */
static void test_deadline_wave_walks_overflow_rarely(void **st)
{
	enum { N = 20000 };
	struct probe *p = calloc(N, sizeof(*p));
	size_t fired = 0;

	(void)st;
	assert_non_null(p);
	reset(0);
	for (size_t i = 0; i < N; i++)
		arm(&p[i], 3600000 + i * 3600000 / N);
	for (uint64_t t = 10; t <= 3600000 + 3600000 + 10; t += 10)
		fired += run_at(t);
	assert_int_equal(fired, N);
	for (size_t i = 0; i < N; i++)
		assert_true(p[i].fired_at >= p[i].deadline && p[i].fired_at < p[i].deadline + 20);
	/* a walk at most every half span while the wave lasts, each visiting at
	 * most N: ~221 N; walking at every wakeup made it ~180,000 N */
	assert_true(W.overflow_visits <=
		    (3600000 / (RS_TIMER_SLOTS / 2 * RS_TIMER_TICK_MS) + 2) * N);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fires_in_the_right_tick_never_before),
		cmocka_unit_test(test_fires_in_deadline_order),
		cmocka_unit_test(test_same_tick_all_fire_together),
		cmocka_unit_test(test_deadline_in_the_past_fires_next_tick),
		cmocka_unit_test(test_unlink_and_relink),
		cmocka_unit_test(test_next_reports_earliest),
		cmocka_unit_test(test_overflow_min_stale_after_unlink_never_fires_early),
		cmocka_unit_test(test_span_boundaries),
		cmocka_unit_test(test_10k_random_deadlines_with_churn),
		cmocka_unit_test(test_callback_relinks_itself),
		cmocka_unit_test(test_callback_unlinks_and_relinks_others),
		cmocka_unit_test(test_callback_unlinks_its_slot_neighbour),
		cmocka_unit_test(test_large_time_jump),
		cmocka_unit_test(test_far_future_deadline),
		cmocka_unit_test(test_deadline_wave_walks_overflow_rarely),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
