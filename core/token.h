/* core/token.h — the one-time console token table.
 *
 * Tokens are 128 random bits (getrandom), written as 22 base64url characters
 * without padding. The table is a lock-free array of 2 x capacity slots (a
 * power of two); a token's home slot is its first 8 bytes modulo the size.
 * Because ringside picks the token, an insert draws again until its home slot
 * is free: there is no probing, and a lookup touches one slot (one cache
 * line). Each slot has a 64-bit state word {state, 56-bit generation}; readers
 * copy a slot under a seqlock check on that word, and every change of owner is
 * one compare-and-swap on it, so consumption has exactly one winner on any
 * thread, and a slot reused in between is never confused with the token that
 * was there. Capacity is an atomic live count.
 *
 * Every function may be called from any thread at any time, except
 * rs_token_table_free and rs_token_table_set_clock. Tokens are secrets: none
 * of these functions logs one, and callers log rs_log_hash(token, 16) only.
 */
#ifndef RS_TOKEN_H
#define RS_TOKEN_H

#include "core/common.h"

#include <sys/socket.h>

#include "core/spec.h"

#define RS_TOKEN_BYTES 16
#define RS_TOKEN_TEXT 22 /* base64url, no padding */

struct rs_token_table;

/* A snapshot of the table's counters (each read atomically; the set is not
 * one instant). <rejected> counts failed consumptions of any cause. */
struct rs_token_stats {
	uint64_t issued, consumed, expired, revoked, rejected, live;
	uint64_t returned; /* consumed, then put back (rs_token_return) */
};

/* A table for at most <capacity> live tokens (2 x capacity slots of 64 bytes,
 * rounded up to a power of two; pages are touched only as slots are used).
 * NULL when out of memory. */
struct rs_token_table *rs_token_table_new(unsigned capacity);

/* Free the table and every spec still in it (wiped). No other thread may use
 * <t> any more. NULL is accepted. */
void rs_token_table_free(struct rs_token_table *t);

/* Tests: replace the monotonic clock (ms) used by issue, peek and consume.
 * Call before the table is shared. */
void rs_token_table_set_clock(struct rs_token_table *t, uint64_t (*now_ms)(void));

/* A sweeper may run this long after a token expired: issues wake it only
 * when they need a sweep sooner than that. */
#define RS_TOKEN_SWEEP_LATE_MS 500u

/* Call <fn>(<arg>), on the issuing thread, when an issue brings the earliest
 * expiry forward by more than RS_TOKEN_SWEEP_LATE_MS (or the table had no live
 * token): a sweeper sleeping until rs_token_next_expiry() must look again.
 * <fn> runs on the data path: it must be quick and take no lock. Call before
 * the table is shared. */
void rs_token_table_set_wake(struct rs_token_table *t, void (*fn)(void *arg), void *arg);

/* Earliest time (ms, rs_now_ms's clock) at which a live token may expire:
 * a lower bound; UINT64_MAX when none is live. */
uint64_t rs_token_next_expiry(struct rs_token_table *t);

/* Store <spec> under a new token that expires <ttl_ms> from now. On success
 * the table owns <spec> and <out> holds the NUL-terminated text form.
 * Returns 0; -ENOSPC when <capacity> tokens are live; -EINVAL when <spec> is
 * NULL or binds an address that is neither AF_INET nor AF_INET6; or the
 * error of getrandom. On failure <spec> is still the caller's. A spec with a
 * <usage> must hold one unit of usage->pending (the caller took it): the
 * table gives it back when the token is consumed, revoked or expires. */
int rs_token_issue(struct rs_token_table *t, struct rs_console_spec *spec, uint32_t ttl_ms,
		   char out[RS_TOKEN_TEXT + 1]);

/* The text form of <in> (the fleet store mints its tokens itself). */
void rs_token_encode(const uint8_t in[RS_TOKEN_BYTES], char out[RS_TOKEN_TEXT + 1]);

/* Decode the <len> bytes at <text> into <out>. 0, or -EINVAL unless they are
 * exactly 22 base64url characters in canonical form (the unused low bits of
 * the last one zero). No branch depends on the characters' values. */
int rs_token_parse(const char *text, size_t len, uint8_t out[RS_TOKEN_BYTES]);

/* Is <tok> live and unexpired? Does not consume it (console pages are
 * prefetched by chat apps). 0 and *<kind> set (when <kind> is not NULL), or
 * -ENOENT. */
int rs_token_peek(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		  enum rs_console_kind *kind);

/* Spend <tok>: exactly one caller ever succeeds, and then owns *<out>.
 * <client> (may be NULL) is the browser's address, checked when the spec is
 * bound to one (an IPv4-mapped IPv6 address equals its IPv4 form).
 * Returns 0; -ENOENT when unknown, expired (the entry is reclaimed) or already
 * used; -EACCES when bound to another address or <client> is NULL or of
 * another family — the token then stays live for its rightful owner.
 * *<out> is NULL on failure. */
int rs_token_consume(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		     const struct sockaddr *client, struct rs_console_spec **out);

/* Put <spec>, just consumed from <tok>, back under the same token: for a
 * consumer that may not use it now (the key's open-console limit), so the
 * link works again later, until its original expiry (spec->expires_s, wall
 * clock, to the second). A spec with a <usage> takes its pending unit back.
 * 0: the table owns <spec> again. -ENOENT (expired), -ENOSPC (table full),
 * -EBUSY (the token's home slot was taken meanwhile) or -EINVAL (bad bound
 * address): <spec> is still the caller's, the link is gone. */
int rs_token_return(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		    struct rs_console_spec *spec);

/* Revoke <tok> (its spec is freed). 0 or -ENOENT (unknown or already gone). */
int rs_token_revoke(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES]);

/* Revoke every live token whose rs_log_hash(token, 16) is <hash> (8 hex
 * digits, either case, NUL-terminated) — for ops who only have the logs.
 * A 32-bit tag can be shared by two live tokens; both are revoked so the one
 * meant surely is. 0, -ENOENT (none), or -EINVAL (not 8 hex digits).
 * Scans the whole table: for the admin socket, not the data path. */
int rs_token_revoke_hash(struct rs_token_table *t, const char *hash);

/* Reclaim tokens that expired at or before <now_ms> (same clock as
 * rs_now_ms); their specs are wiped and freed. Returns how many. Returns at
 * once when no token can have expired yet, otherwise scans the table. */
size_t rs_token_sweep(struct rs_token_table *t, uint64_t now_ms);

void rs_token_stats_get(struct rs_token_table *t, struct rs_token_stats *out);

#endif
