/* core/token.h — the one-time console token table.
 *
 * Tokens are 128 random bits (getrandom), written as 22 base64url
 * characters. The table is a lock-free array of 2 x capacity slots; a token's
 * slot is derived from its bytes, and because ringside picks the token, an
 * insert simply draws again until it lands on a free slot — there is no
 * probing, and a lookup touches one slot. Each slot's state word carries a
 * generation, so consumption is one compare-and-swap: exactly one caller
 * wins, on any thread, and a slot reused in between can never be confused
 * with the token that was there. Specs are freed (secrets wiped) when a token
 * expires, is revoked, or its consumer frees them.
 */
#ifndef RS_TOKEN_H
#define RS_TOKEN_H

#include "core/common.h"

#include <sys/socket.h>

#include "core/spec.h"

#define RS_TOKEN_BYTES 16
#define RS_TOKEN_TEXT 22 /* base64url, no padding */

struct rs_token_table;

struct rs_token_stats {
	uint64_t issued, consumed, expired, revoked, rejected, live;
};

/* NULL when out of memory. <capacity> live tokens at most. */
struct rs_token_table *rs_token_table_new(unsigned capacity);
/* Frees remaining specs. No other thread may use the table any more. */
void rs_token_table_free(struct rs_token_table *t);
/* Tests: replace the clock (ms). */
void rs_token_table_set_clock(struct rs_token_table *t, uint64_t (*now_ms)(void));

/* Store <spec> under a new token valid for <ttl_ms>; on success the table
 * owns <spec> and <out> holds the NUL-terminated text form. 0 or -ENOSPC
 * (table full; <spec> still the caller's). */
int rs_token_issue(struct rs_token_table *t, struct rs_console_spec *spec, uint32_t ttl_ms,
		   char out[RS_TOKEN_TEXT + 1]);

/* Decode the text form. 0 or -EINVAL. */
int rs_token_parse(const char *text, size_t len, uint8_t out[RS_TOKEN_BYTES]);

/* Is the token live? Does not consume it (console pages). 0 or -ENOENT. */
int rs_token_peek(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		  enum rs_console_kind *kind);

/* Consume the token: on success the caller owns *out. -ENOENT (unknown,
 * expired or used) or -EACCES (bound to another client address; the token
 * stays live). */
int rs_token_consume(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES],
		     const struct sockaddr *client, struct rs_console_spec **out);

/* Revoke by token, or by its 8-hex-digit log hash (admin). 0 or -ENOENT. */
int rs_token_revoke(struct rs_token_table *t, const uint8_t tok[RS_TOKEN_BYTES]);
int rs_token_revoke_hash(struct rs_token_table *t, const char hash[9]);

/* Reclaim expired tokens; returns how many. Safe from any thread. */
size_t rs_token_sweep(struct rs_token_table *t, uint64_t now_ms);

void rs_token_stats_get(struct rs_token_table *t, struct rs_token_stats *out);

#endif
