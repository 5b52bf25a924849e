#include "core/common.h"

#include <netinet/in.h>
#include <stdatomic.h>

#include "core/log.h"
#include "core/token.h"

/*
 * Slot life cycle, always by compare-and-swap on <word> (generation g):
 *
 *   EMPTY g --issue--> RESERVED g --issue--> LIVE g --take--> BUSY g --take--> EMPTY g+1
 *
 * Only the thread that moved a slot into RESERVED or BUSY writes its other
 * fields. LIVE g is reached once per generation, so a reader that sees the
 * same LIVE word before and after reading the fields has read one token's
 * fields, untorn (a seqlock whose sequence number is the word). The fields
 * are relaxed atomics so that those optimistic reads are not data races.
 */
enum slot_state { SLOT_EMPTY = 0, SLOT_RESERVED, SLOT_LIVE, SLOT_BUSY };

#define WORD_STATE(w) ((unsigned)((w)&0xff))
#define WORD_GEN(w) ((w) >> 8)
#define WORD(state, gen) (((uint64_t)(gen) << 8) | (uint64_t)(state)) /* gen wraps at 2^56 */

#define CACHE_LINE 64
/* At most half the slots are live, so a draw lands on a taken slot with
 * probability <= 1/2: 64 misses in a row mean a broken random source. */
#define MAX_DRAWS 64

struct slot {
	_Atomic uint64_t word;
	_Atomic uint64_t tok[2];
	_Atomic uint64_t expires_ms;
	_Atomic(struct rs_console_spec *) spec;
	_Atomic uint64_t ip[2]; /* bound client address, IPv4 mapped into IPv6 */
	_Atomic uint32_t kind;
	_Atomic uint32_t bound;
};
_Static_assert(sizeof(struct slot) == CACHE_LINE, "a lookup touches exactly one cache line");

struct rs_token_table {
	struct slot *slots; /* cache-line aligned inside <slots_mem> */
	void *slots_mem;
	size_t mask;
	unsigned capacity;
	uint64_t (*now)(void);
	void (*wake)(void *arg);
	void *wake_arg;
	/* Written by every issue and take: kept off the read-mostly line above. */
	_Alignas(CACHE_LINE) _Atomic int64_t live;
	/* No live token expires before this (a lower bound; UINT64_MAX: none). */
	_Atomic uint64_t next_expiry;
	_Alignas(CACHE_LINE) _Atomic uint64_t issued, consumed, expired, revoked, rejected, returned;
};

struct rs_token_table *rs_token_table_new(unsigned capacity)
{
	struct rs_token_table *t = aligned_alloc(CACHE_LINE, sizeof(*t));
	size_t n = 16;

	if (!t)
		goto out;
	memset(t, 0, sizeof(*t));
	while (n < 2 * (size_t)capacity)
		n *= 2;
	/* calloc, not aligned_alloc + memset: a big table's pages stay untouched
	 * (and cost no memory) until tokens land on them. */
	t->slots_mem = calloc(n + 1, sizeof(struct slot));
	if (!t->slots_mem)
		goto out_free_table;
	t->slots = (struct slot *)(((uintptr_t)t->slots_mem + CACHE_LINE - 1) &
				   ~(uintptr_t)(CACHE_LINE - 1));
	t->mask = n - 1;
	t->capacity = capacity;
	t->now = rs_now_ms;
	atomic_init(&t->live, 0);
	atomic_init(&t->next_expiry, UINT64_MAX);
	goto out;

out_free_table:
	free(t);
	t = NULL;
out:
	return t;
}

void rs_token_table_free(struct rs_token_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i <= t->mask; i++)
		rs_spec_free(atomic_load_explicit(&t->slots[i].spec, memory_order_relaxed));
	/* The slots still hold the tokens of unconsumed links. */
	explicit_bzero(t->slots, (t->mask + 1) * sizeof(struct slot));
	free(t->slots_mem);
	free(t);
}

void rs_token_table_set_clock(struct rs_token_table *t, uint64_t (*now_ms)(void))
{
	t->now = now_ms;
}

void rs_token_table_set_wake(struct rs_token_table *t, void (*fn)(void *arg), void *arg)
{
	t->wake = fn;
	t->wake_arg = arg;
}

uint64_t rs_token_next_expiry(struct rs_token_table *t)
{
	return atomic_load(&t->next_expiry);
}

/* ---- text form ---------------------------------------------------------- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The 64-byte table fits one cache line, so the lookups do not leak the
 * token through cache timing. */
static void encode(const uint8_t in[RS_TOKEN_BYTES], char out[RS_TOKEN_TEXT + 1])
{
	size_t o = 0;

	for (size_t i = 0; i < 15; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	out[o++] = b64url[in[15] >> 2];
	out[o++] = b64url[(in[15] & 3) << 4];
	out[o] = 0;
}

void rs_token_encode(const uint8_t in[RS_TOKEN_BYTES], char out[RS_TOKEN_TEXT + 1])
{
	encode(in, out);
}

/* Value of one base64url character, or -1; no branch or table depends on
 * <c>. Each term is (c - base) when lo <= c <= hi and 0 otherwise: the AND of
 * (lo - 1 - c) and (c - hi - 1) is negative exactly inside the range, and
 * its arithmetic shift is then all ones. */
static int b64url_value(unsigned char c)
{
	int x = c, v = -1;

	v += (((('A' - 1) - x) & (x - ('Z' + 1))) >> 8) & (x - 'A' + 1);
	v += (((('a' - 1) - x) & (x - ('z' + 1))) >> 8) & (x - 'a' + 27);
	v += (((('0' - 1) - x) & (x - ('9' + 1))) >> 8) & (x - '0' + 53);
	v += (((('-' - 1) - x) & (x - ('-' + 1))) >> 8) & 63;
	v += (((('_' - 1) - x) & (x - ('_' + 1))) >> 8) & 64;
	return v;
}

int rs_token_parse(const char *text, size_t len, uint8_t out[RS_TOKEN_BYTES])
{
	int v[RS_TOKEN_TEXT], bad = 0;

	if (!text || len != RS_TOKEN_TEXT)
		return -EINVAL;
	for (size_t i = 0; i < RS_TOKEN_TEXT; i++) {
		v[i] = b64url_value((unsigned char)text[i]);
		bad |= v[i];
	}
	/* The last character carries 2 bits; the other 4 must be zero, or two
	 * texts would name one token. */
	if ((bad < 0) | (v[21] & 15)) {
		explicit_bzero(v, sizeof(v));
		return -EINVAL;
	}
	for (size_t i = 0, o = 0; i < 20; i += 4) {
		uint32_t x = (uint32_t)v[i] << 18 | (uint32_t)v[i + 1] << 12 |
			     (uint32_t)v[i + 2] << 6 | (uint32_t)v[i + 3];

		out[o++] = (uint8_t)(x >> 16);
		out[o++] = (uint8_t)(x >> 8);
		out[o++] = (uint8_t)x;
	}
	out[15] = (uint8_t)(v[20] << 2 | v[21] >> 4);
	explicit_bzero(v, sizeof(v));
	return 0;
}

/* ---- slots -------------------------------------------------------------- */

static struct slot *home_slot(struct rs_token_table *t, const uint64_t tok[2])
{
	return &t->slots[tok[0] & t->mask];
}

/* <sa> as 16 bytes, IPv4 mapped into IPv6 so a dual-stack listener's
 * ::ffff:a.b.c.d peer equals a bound a.b.c.d. 0 or -EAFNOSUPPORT. */
static int addr_words(const struct sockaddr *sa, uint64_t w[2])
{
	uint8_t a[16] = {0};
	int ret = 0;

	if (sa && sa->sa_family == AF_INET6) {
		memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else if (sa && sa->sa_family == AF_INET) {
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else {
		ret = -EAFNOSUPPORT;
	}
	memcpy(w, a, 16);
	return ret;
}

/* Lower the sweep's next-expiry bound to <ms>. Always a read-modify-write,
 * even when the bound is already lower: every change of <next_expiry> is then
 * ordered against the sweep's exchange (see rs_token_sweep). */
static uint64_t note_expiry(struct rs_token_table *t, uint64_t ms)
{
	uint64_t cur = atomic_load_explicit(&t->next_expiry, memory_order_relaxed);

	while (!atomic_compare_exchange_weak(&t->next_expiry, &cur, RS_MIN(cur, ms)))
		;
	return cur;
}

/* Count one more live token unless the table is full. */
static bool live_get(struct rs_token_table *t)
{
	int64_t n = atomic_load_explicit(&t->live, memory_order_relaxed);

	do {
		if (n >= (int64_t)t->capacity)
			return false;
	} while (!atomic_compare_exchange_weak(&t->live, &n, n + 1));
	return true;
}

/* Fill the slot <s> this thread reserved (its word was <word>, now
 * RESERVED) with token <w> and publish it LIVE. */
static void slot_fill(struct rs_token_table *t, struct slot *s, uint64_t word, const uint64_t w[2],
		      struct rs_console_spec *spec, uint64_t expires, const uint64_t ip[2])
{
	uint64_t prev;

	/* Seqlock writer: the field stores below must not become visible to a
	 * reader that still sees the old word. */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&s->tok[0], w[0], memory_order_relaxed);
	atomic_store_explicit(&s->tok[1], w[1], memory_order_relaxed);
	atomic_store_explicit(&s->expires_ms, expires, memory_order_relaxed);
	atomic_store_explicit(&s->spec, spec, memory_order_relaxed);
	atomic_store_explicit(&s->kind, (uint32_t)spec->kind, memory_order_relaxed);
	atomic_store_explicit(&s->ip[0], ip[0], memory_order_relaxed);
	atomic_store_explicit(&s->ip[1], ip[1], memory_order_relaxed);
	atomic_store_explicit(&s->bound, spec->bind_ip, memory_order_relaxed);
	atomic_store_explicit(&s->word, WORD(SLOT_LIVE, WORD_GEN(word)), memory_order_release);
	/* After LIVE, so a sweep that resets the bound first sees this slot. */
	prev = note_expiry(t, expires);
	/* Tokens of one lifetime expire in issue order: this wakes the sweeper
	 * once per empty table, not once per token. */
	if (t->wake && expires < prev &&
	    (prev == UINT64_MAX || prev - expires > RS_TOKEN_SWEEP_LATE_MS))
		t->wake(t->wake_arg);
}

/* Reserve <s> when it is EMPTY: true with *<word> its old word. */
static bool slot_reserve(struct slot *s, uint64_t *word)
{
	*word = atomic_load_explicit(&s->word, memory_order_relaxed);
	return WORD_STATE(*word) == SLOT_EMPTY &&
	       atomic_compare_exchange_strong(&s->word, word, WORD(SLOT_RESERVED, WORD_GEN(*word)));
}

int rs_token_issue(struct rs_token_table *t, struct rs_console_spec *spec, uint32_t ttl_ms,
		   char out[RS_TOKEN_TEXT + 1])
{
	uint8_t raw[RS_TOKEN_BYTES];
	uint64_t w[2], ip[2] = {0, 0};
	int ret = -EINVAL;

	if (!spec)
		goto out;
	if (spec->bind_ip && addr_words((const struct sockaddr *)&spec->client_ip, ip))
		goto out;
	ret = -ENOSPC;
	if (!live_get(t))
		goto out;
	for (int draw = 0; draw < MAX_DRAWS; draw++) {
		uint64_t word;

		ret = rs_random(raw, sizeof(raw));
		if (ret)
			break;
		ret = -ENOSPC;
		memcpy(w, raw, sizeof(w));
		/* Taken: ringside chooses the token, so draw another, never probe. */
		if (!slot_reserve(home_slot(t, w), &word))
			continue;
		slot_fill(t, home_slot(t, w), word, w, spec, t->now() + ttl_ms, ip);
		encode(raw, out);
		atomic_fetch_add_explicit(&t->issued, 1, memory_order_relaxed);
		ret = 0;
		break;
	}
	if (ret)
		atomic_fetch_sub(&t->live, 1);
out:
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(w, sizeof(w));
	return ret;
}

int rs_token_return(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		    struct rs_console_spec *spec)
{
	int64_t left_s = spec->expires_s - rs_wall_s();
	uint64_t w[2], ip[2] = {0, 0}, word;
	int ret = -ENOENT;

	if (left_s <= 0)
		goto out;
	ret = -EINVAL;
	if (spec->bind_ip && addr_words((const struct sockaddr *)&spec->client_ip, ip))
		goto out;
	ret = -ENOSPC;
	if (!live_get(t))
		goto out;
	memcpy(w, tok, sizeof(w));
	ret = -EBUSY;
	if (!slot_reserve(home_slot(t, w), &word)) {
		atomic_fetch_sub(&t->live, 1);
		goto out;
	}
	/* Back in the table: the link holds its key's pending unit again. */
	if (spec->usage)
		atomic_fetch_add_explicit(&spec->usage->pending, 1, memory_order_relaxed);
	slot_fill(t, home_slot(t, w), word, w, spec, t->now() + (uint64_t)left_s * 1000, ip);
	atomic_fetch_add_explicit(&t->returned, 1, memory_order_relaxed);
	ret = 0;
out:
	explicit_bzero(w, sizeof(w));
	return ret;
}

struct snap {
	uint64_t word, tok[2], expires, ip[2];
	uint32_t kind, bound;
};

/* Seqlock read: copy a LIVE slot into <out>. False when the slot is not
 * LIVE or changed while it was read (then it no longer holds that token). */
static bool read_live(struct slot *s, struct snap *out)
{
	out->word = atomic_load_explicit(&s->word, memory_order_acquire);
	if (WORD_STATE(out->word) != SLOT_LIVE)
		return false;
	out->tok[0] = atomic_load_explicit(&s->tok[0], memory_order_relaxed);
	out->tok[1] = atomic_load_explicit(&s->tok[1], memory_order_relaxed);
	out->expires = atomic_load_explicit(&s->expires_ms, memory_order_relaxed);
	out->kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
	out->bound = atomic_load_explicit(&s->bound, memory_order_relaxed);
	out->ip[0] = atomic_load_explicit(&s->ip[0], memory_order_relaxed);
	out->ip[1] = atomic_load_explicit(&s->ip[1], memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&s->word, memory_order_relaxed) == out->word;
}

/* Find <tok> in its home slot: true and <out> filled when it is there and
 * LIVE (expired or not). The comparison is constant-time. */
static bool lookup(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES], struct slot **s,
		   struct snap *out)
{
	uint64_t w[2];
	bool found;

	memcpy(w, tok, sizeof(w));
	*s = home_slot(t, w);
	found = read_live(*s, out) && rs_ct_equal(out->tok, sizeof(out->tok), w, sizeof(w));
	explicit_bzero(w, sizeof(w));
	return found;
}

static void snap_wipe(struct snap *sn)
{
	explicit_bzero(sn->tok, sizeof(sn->tok));
}

/* Take the slot whose word was <word> (LIVE -> BUSY -> EMPTY, next
 * generation) and return its spec; NULL when another thread got there first
 * or the slot changed since <word> was read. */
static struct rs_console_spec *take(struct rs_token_table *t, struct slot *s, uint64_t word)
{
	struct rs_console_spec *spec;

	if (!atomic_compare_exchange_strong(&s->word, &word, WORD(SLOT_BUSY, WORD_GEN(word))))
		return NULL;
	atomic_thread_fence(memory_order_release); /* seqlock writer, as in issue */
	spec = atomic_load_explicit(&s->spec, memory_order_relaxed);
	atomic_store_explicit(&s->spec, NULL, memory_order_relaxed);
	/* The token is spent; do not leave it in memory. */
	atomic_store_explicit(&s->tok[0], 0, memory_order_relaxed);
	atomic_store_explicit(&s->tok[1], 0, memory_order_relaxed);
	atomic_store_explicit(&s->word, WORD(SLOT_EMPTY, WORD_GEN(word) + 1),
			      memory_order_release);
	atomic_fetch_sub(&t->live, 1);
	/* The link left the table (consumed, revoked or expired): its key may
	 * issue another. */
	if (spec && spec->usage)
		atomic_fetch_sub_explicit(&spec->usage->pending, 1, memory_order_relaxed);
	return spec;
}

int rs_token_peek(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		  enum rs_console_kind *kind)
{
	struct slot *s;
	struct snap sn;
	int ret = -ENOENT;

	if (lookup(t, tok, &s, &sn) && sn.expires > t->now()) {
		if (kind)
			*kind = (enum rs_console_kind)sn.kind;
		ret = 0;
	}
	snap_wipe(&sn);
	return ret;
}

int rs_token_consume(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		     const struct sockaddr *client, struct rs_console_spec **out)
{
	struct rs_console_spec *spec;
	struct slot *s;
	struct snap sn;
	uint64_t ip[2];
	int ret = -ENOENT;

	*out = NULL;
	if (!lookup(t, tok, &s, &sn))
		goto out_reject;
	if (sn.expires <= t->now()) {
		/* Reclaim it now rather than at the next sweep. */
		spec = take(t, s, sn.word);
		if (spec) {
			atomic_fetch_add(&t->expired, 1);
			rs_spec_free(spec);
		}
		goto out_reject;
	}
	if (sn.bound && (addr_words(client, ip) || ip[0] != sn.ip[0] || ip[1] != sn.ip[1])) {
		/* Someone else holds the link: leave it for its owner. */
		ret = -EACCES;
		goto out_reject;
	}
	/* The compare-and-swap on the generation-tagged word is the one place a
	 * token is spent: exactly one caller gets the spec. */
	spec = take(t, s, sn.word);
	if (!spec)
		goto out_reject;
	atomic_fetch_add(&t->consumed, 1);
	*out = spec;
	ret = 0;
	goto out;

out_reject:
	atomic_fetch_add(&t->rejected, 1);
out:
	snap_wipe(&sn);
	return ret;
}

int rs_token_revoke(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES])
{
	struct rs_console_spec *spec = NULL;
	struct slot *s;
	struct snap sn;

	if (lookup(t, tok, &s, &sn))
		spec = take(t, s, sn.word);
	snap_wipe(&sn);
	if (!spec)
		return -ENOENT;
	atomic_fetch_add(&t->revoked, 1);
	rs_spec_free(spec);
	return 0;
}

int rs_token_revoke_hash(struct rs_token_table *t, const char *hash)
{
	char want[9], h[9];
	int ret = -EINVAL;

	if (!hash || strnlen(hash, 9) != 8)
		goto out;
	for (int i = 0; i < 8; i++) {
		char c = hash[i] >= 'A' && hash[i] <= 'F' ? (char)(hash[i] - 'A' + 'a') : hash[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			goto out;
		want[i] = c;
	}
	want[8] = 0;
	ret = -ENOENT;
	for (size_t i = 0; i <= t->mask; i++) {
		struct slot *s = &t->slots[i];
		struct rs_console_spec *spec;
		struct snap sn;

		if (!read_live(s, &sn))
			continue;
		rs_log_hash(sn.tok, sizeof(sn.tok), h);
		snap_wipe(&sn);
		if (memcmp(h, want, 8))
			continue;
		spec = take(t, s, sn.word);
		if (!spec)
			continue;
		atomic_fetch_add(&t->revoked, 1);
		rs_spec_free(spec);
		ret = 0;
	}
out:
	return ret;
}

size_t rs_token_sweep(struct rs_token_table *t, uint64_t now_ms)
{
	uint64_t next = UINT64_MAX;
	size_t n = 0;

	if (now_ms < atomic_load(&t->next_expiry))
		return 0;
	/* Reset the bound before the scan. An issue whose note_expiry comes
	 * after this exchange lowers the bound again itself; one whose
	 * note_expiry came before synchronises with the exchange, so its slot
	 * is LIVE in the scan. Either way no expiry is lost; concurrent sweeps
	 * merely scan twice. With nothing live (every token consumed) the bound
	 * was stale: reset, it stops asking for sweeps, and the next issue
	 * sees none and wakes the sweeper. */
	atomic_exchange(&t->next_expiry, UINT64_MAX);
	if (!atomic_load(&t->live))
		return 0;
	for (size_t i = 0; i <= t->mask; i++) {
		struct slot *s = &t->slots[i];
		struct rs_console_spec *spec;
		struct snap sn;

		if (!read_live(s, &sn))
			continue;
		snap_wipe(&sn);
		if (sn.expires > now_ms) {
			next = RS_MIN(next, sn.expires);
			continue;
		}
		spec = take(t, s, sn.word);
		if (spec) {
			rs_spec_free(spec);
			n++;
		}
	}
	note_expiry(t, next);
	atomic_fetch_add(&t->expired, n);
	return n;
}

void rs_token_stats_get(struct rs_token_table *t, struct rs_token_stats *out)
{
	int64_t live = atomic_load(&t->live);

	out->issued = atomic_load(&t->issued);
	out->consumed = atomic_load(&t->consumed);
	out->returned = atomic_load(&t->returned);
	out->expired = atomic_load(&t->expired);
	out->revoked = atomic_load(&t->revoked);
	out->rejected = atomic_load(&t->rejected);
	out->live = live > 0 ? (uint64_t)live : 0;
}
