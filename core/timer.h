/* core/timer.h — a per-worker timer wheel.
 *
 * Single-threaded: a wheel and its timers belong to one worker thread.
 * Resolution is RS_TIMER_TICK_MS; a timer fires at or after its deadline,
 * never before. Timers further out than the wheel's span wait on an overflow
 * list and are moved in as the wheel turns. rs_timer_wheel_next() tells the
 * event loop how long it may sleep, so an idle worker wakes only when a timer
 * is actually due — idle connections cause no wakeups.
 */
#ifndef RS_TIMER_H
#define RS_TIMER_H

#include "core/common.h"

#define RS_TIMER_TICK_MS 8u
#define RS_TIMER_SLOTS 4096u /* span: 32.768 s */

struct rs_timer;
typedef void (*rs_timer_cb)(struct rs_timer *t);

struct rs_timer {
	struct rs_timer *_next, *_prev; /* NULL when not linked */
	uint64_t _tick;
	rs_timer_cb cb;
};

struct rs_timer_wheel {
	uint64_t cur_tick; /* every tick <= cur_tick has run */
	struct rs_timer *slots[RS_TIMER_SLOTS];
	uint64_t bitmap[RS_TIMER_SLOTS / 64];
	struct rs_timer *overflow;
	uint64_t overflow_min; /* lowest tick on the overflow list, UINT64_MAX if empty */
	size_t count;
	uint64_t overflow_visits; /* timers walked when moving the overflow in: its cost */
};

void rs_timer_wheel_init(struct rs_timer_wheel *w, uint64_t now_ms);

static inline void rs_timer_init(struct rs_timer *t, rs_timer_cb cb)
{
	t->_next = t->_prev = NULL;
	t->_tick = 0;
	t->cb = cb;
}

static inline bool rs_timer_is_linked(const struct rs_timer *t)
{
	return t->_prev != NULL;
}

/* Arm <t> to fire at <at_ms> (relinks it if already armed). */
void rs_timer_link(struct rs_timer_wheel *w, struct rs_timer *t, uint64_t at_ms);

/* Disarm <t>; harmless when not armed. */
void rs_timer_unlink(struct rs_timer_wheel *w, struct rs_timer *t);

/* Earliest time (ms) at which a timer may be due, UINT64_MAX if none. */
uint64_t rs_timer_wheel_next(const struct rs_timer_wheel *w);

/* Fire every timer due at <now_ms>; callbacks may link and unlink timers.
 * Returns the number fired. */
size_t rs_timer_wheel_run(struct rs_timer_wheel *w, uint64_t now_ms);

#endif
