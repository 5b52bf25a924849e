#include "core/common.h"

#include "core/timer.h"

#define SLOT_MASK (RS_TIMER_SLOTS - 1)

void rs_timer_wheel_init(struct rs_timer_wheel *w, uint64_t now_ms)
{
	memset(w, 0, sizeof(*w));
	w->cur_tick = now_ms / RS_TIMER_TICK_MS;
	w->overflow_min = UINT64_MAX;
}

/* Lists are circular-free and doubly linked; _prev of the head points at a
 * sentinel-free marker: the owning list's head pointer, cast. Using a pointer
 * to the head slot as _prev of the first element lets unlink work without
 * knowing which list a timer is on. */
static void list_push(struct rs_timer **head, struct rs_timer *t)
{
	t->_next = *head;
	t->_prev = (struct rs_timer *)head;
	if (*head)
		(*head)->_prev = t;
	*head = t;
}

static bool is_head_marker(const struct rs_timer_wheel *w, const struct rs_timer *p)
{
	const void *v = p;

	return (v >= (const void *)&w->slots[0] && v < (const void *)&w->slots[RS_TIMER_SLOTS]) ||
	       v == (const void *)&w->overflow;
}

static void place(struct rs_timer_wheel *w, struct rs_timer *t)
{
	if (t->_tick - w->cur_tick < RS_TIMER_SLOTS) {
		size_t s = t->_tick & SLOT_MASK;

		list_push(&w->slots[s], t);
		w->bitmap[s / 64] |= 1ull << (s % 64);
	} else {
		list_push(&w->overflow, t);
		if (t->_tick < w->overflow_min)
			w->overflow_min = t->_tick;
	}
}

void rs_timer_unlink(struct rs_timer_wheel *w, struct rs_timer *t)
{
	if (!t->_prev)
		return;
	if (is_head_marker(w, t->_prev)) {
		struct rs_timer **head = (struct rs_timer **)t->_prev;

		*head = t->_next;
		if (!*head && head == &w->overflow)
			w->overflow_min = UINT64_MAX;
		else if (!*head) {
			size_t s = (size_t)(head - w->slots);

			w->bitmap[s / 64] &= ~(1ull << (s % 64));
		}
	} else {
		t->_prev->_next = t->_next;
	}
	if (t->_next)
		t->_next->_prev = t->_prev;
	t->_next = t->_prev = NULL;
	w->count--;
	/* overflow_min may now be stale-low: harmless, it only wakes us early. */
}

void rs_timer_link(struct rs_timer_wheel *w, struct rs_timer *t, uint64_t at_ms)
{
	uint64_t tick = (at_ms + RS_TIMER_TICK_MS - 1) / RS_TIMER_TICK_MS;

	rs_timer_unlink(w, t);
	if (tick <= w->cur_tick)
		tick = w->cur_tick + 1;
	t->_tick = tick;
	place(w, t);
	w->count++;
}

/* Tick of the first non-empty slot after cur_tick. Every slotted timer is
 * within one span of cur_tick, so a slot maps to exactly one tick. */
static uint64_t first_slot_tick(const struct rs_timer_wheel *w)
{
	const size_t nwords = RS_TIMER_SLOTS / 64;
	uint64_t start = w->cur_tick + 1;
	size_t pos = (size_t)(start & SLOT_MASK), word = pos / 64;
	uint64_t bits = w->bitmap[word] & (~0ull << (pos % 64));
	uint64_t base = start - pos % 64; /* tick of bit 0 of <word> in this lap */

	for (size_t i = 0; i <= nwords; i++) {
		if (bits)
			return base + (uint64_t)__builtin_ctzll(bits);
		base += 64;
		word = (word + 1) % nwords;
		bits = w->bitmap[word];
	}
	return UINT64_MAX;
}

uint64_t rs_timer_wheel_next(const struct rs_timer_wheel *w)
{
	uint64_t tick = UINT64_MAX;

	if (!w->count)
		return UINT64_MAX;
	tick = first_slot_tick(w);
	if (w->overflow_min < tick)
		tick = w->overflow_min;
	return tick == UINT64_MAX ? UINT64_MAX : tick * RS_TIMER_TICK_MS;
}

/* Move the overflow timers that now fall within the span into their slots.
 * This walks the whole overflow list, so it waits until the earliest of them
 * is half a span away: the ones left behind are then at least a whole span
 * out, and the next walk is half a span (16 s) later. Walking as soon as the
 * earliest entered the span re-walked everything at every wakeup while a wave
 * of deadlines came in (50,000 one-hour idle timers on a worker woken every
 * 10 ms for I/O: 18 % of a core). */
static void migrate_overflow(struct rs_timer_wheel *w)
{
	struct rs_timer *t = w->overflow, *next;

	if (w->overflow_min == UINT64_MAX || w->overflow_min - w->cur_tick >= RS_TIMER_SLOTS / 2)
		return;
	w->overflow = NULL;
	w->overflow_min = UINT64_MAX;
	for (; t; t = next) {
		next = t->_next;
		w->overflow_visits++;
		t->_next = t->_prev = NULL;
		if (t->_tick <= w->cur_tick)
			t->_tick = w->cur_tick + 1;
		place(w, t);
	}
}

size_t rs_timer_wheel_run(struct rs_timer_wheel *w, uint64_t now_ms)
{
	uint64_t target = now_ms / RS_TIMER_TICK_MS;
	size_t fired = 0;

	while (w->cur_tick < target) {
		uint64_t tick;
		size_t s;

		if (!w->count) {
			w->cur_tick = target;
			break;
		}
		tick = first_slot_tick(w);
		if (w->overflow_min < tick)
			tick = w->overflow_min;
		if (tick > target) {
			w->cur_tick = target;
			migrate_overflow(w);
			break;
		}
		/* Jump straight to the next due tick: idle stretches cost nothing. */
		w->cur_tick = tick;
		migrate_overflow(w);
		s = tick & SLOT_MASK;
		while (w->slots[s]) {
			struct rs_timer *t = w->slots[s];

			rs_timer_unlink(w, t);
			t->cb(t);
			fired++;
		}
	}
	return fired;
}
