/* proto/store.h — where console links live: the embedded token table, or a
 * fleet's Redis.
 *
 * Without a `fleet` section the store is the embedded table (core/token.h)
 * and every operation completes synchronously, exactly as before. With one,
 * links live in Redis (proto/redis.h) so any box honours a link minted on
 * any box, and the operations complete asynchronously on the caller's
 * worker:
 *
 *   issue    SET <prefix>tok:<hex SHA-256(token)> <sealed spec> PX <ttl> NX
 *            (+ SET <prefix>rev:<log hash> <hex SHA-256(token)> PX <ttl>,
 *            so `ctl revoke <hash>` works from the logs on any box)
 *   peek     GET  (the console page: never consumes)
 *   consume  GETDEL (the WebSocket upgrade: one atomic operation, so across
 *            the fleet exactly one upgrade wins), then, with
 *            consume_replicas N > 0, WAIT N <timeout> before the console
 *            opens
 *   revoke   DEL
 *
 * Sealing: the value is the console spec serialized and sealed with AEAD
 * (BoringSSL AES-256-GCM, a random 96-bit nonce, the key name as associated
 * data) under a key derived from the token itself (HKDF-SHA256, fixed info
 * string). Redis holds only hash(token) and ciphertext: a dump of Redis opens
 * nothing — no token, password, ticket, target address or node name.
 *
 * Return convention of the operations: 0 or -errno when finished at once
 * (embedded table; or a fleet refusal before anything was sent), or
 * RS_STORE_PENDING: <cb> then runs exactly once, later, on the same worker,
 * unless rs_store_cancel is called first. Errors: -ENOENT (unknown, expired,
 * used), -EACCES (bound to another address), -ENOSPC (table full), -EINVAL,
 * -EAGAIN: the store is unavailable (Redis unreachable, slow, queue full) —
 * the API answers 503 store_unavailable, an upgrade shows "console service
 * temporarily unavailable".
 */
#ifndef RS_STORE_H
#define RS_STORE_H

#include "core/common.h"
#include "core/engine.h"
#include "core/spec.h"
#include "core/token.h"
#include "proto/redis.h"

#define RS_STORE_PENDING 1

struct rs_store;
struct rs_store_op;

/* Outcome counters of a store (links by outcome, per box). */
enum rs_store_outcome {
	RS_SO_ISSUED = 0,
	RS_SO_PEEK_OK,
	RS_SO_PEEK_MISSING,
	RS_SO_CONSUMED,
	RS_SO_CONSUME_MISSING,
	RS_SO_CONSUME_BOUND, /* another client address: put back */
	RS_SO_REVOKED,
	RS_SO_UNAVAILABLE,    /* an operation failed because the store is unavailable */
	RS_SO_REPLICAS_SHORT, /* WAIT saw fewer than consume_replicas acknowledge */
	RS_SO_CORRUPT,	      /* a value that does not open with its token */
	RS_SO__COUNT
};
extern const char *const rs_store_outcome_names[RS_SO__COUNT];

struct rs_store_opts {
	struct rs_token_table *tokens; /* the embedded table (always there) */
	struct rs_redis_pool *redis;   /* NULL: embedded mode */
	const char *key_prefix;	       /* "rs:" */
	unsigned consume_replicas;     /* WAIT N after GETDEL; 0: none */
	unsigned wait_timeout_ms;      /* WAIT's timeout */
};

/* <err> of an issue / consume / peek / revoke. On consume success <spec> is
 * the caller's (free with rs_spec_free); otherwise NULL. On peek success
 * <kind> is the console kind. */
typedef void (*rs_store_cb)(void *arg, int err, struct rs_console_spec *spec,
			    enum rs_console_kind kind);

int rs_store_new(struct rs_store **out, const struct rs_store_opts *o);
void rs_store_free(struct rs_store *s);
bool rs_store_fleet(const struct rs_store *s);
struct rs_redis_pool *rs_store_redis(const struct rs_store *s);

/* Issue <spec> for <ttl_ms>; <out> receives the token text at once (it is
 * valid only if the operation ends with 0). Embedded: as rs_token_issue.
 * Fleet: the store takes <spec> whenever it returns RS_STORE_PENDING (sealed
 * and freed at once; the key's pending unit is given back at once, since a
 * fleet does not count pending links per key); on a synchronous error <spec>
 * is still the caller's. */
int rs_store_issue(struct rs_store *s, struct rs_worker *w, struct rs_console_spec *spec,
		   uint32_t ttl_ms, char out[RS_TOKEN_TEXT + 1], rs_store_cb cb, void *arg,
		   struct rs_store_op **op);

/* Is <tok> live? (never consumes) */
int rs_store_peek(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		  enum rs_console_kind *kind, rs_store_cb cb, void *arg, struct rs_store_op **op);

/* Spend <tok> (exactly one caller across the fleet succeeds). Synchronous
 * success sets *<out>. A link bound to another address stays live (put back
 * with its remaining TTL). */
int rs_store_consume(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		     const struct sockaddr *client, struct rs_console_spec **out, rs_store_cb cb,
		     void *arg, struct rs_store_op **op);

/* Put a just-consumed <spec> back under <tok> until its original expiry
 * (rs_token_return). Fleet: fire and forget (the spec is freed); returns 0
 * when the write was sent. */
int rs_store_return(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		    struct rs_console_spec *spec);

/* Revoke <tok>. */
int rs_store_revoke(struct rs_store *s, struct rs_worker *w, const uint8_t tok[RS_TOKEN_BYTES],
		    rs_store_cb cb, void *arg, struct rs_store_op **op);

/* Revoke by the hash the logs show (8 hex digits). Embedded: as
 * rs_token_revoke_hash. Fleet: from a control thread, runs the command on
 * worker 0 and waits for its answer (bounded). 0, -ENOENT, -EINVAL, -EAGAIN. */
int rs_store_revoke_hash(struct rs_store *s, struct rs_engine *e, const char *hash);

/* The caller goes away: <cb> will never run. A consume already sent may
 * still have spent the link. Valid only before <cb> ran. */
void rs_store_cancel(struct rs_store_op *op);

void rs_store_outcomes(const struct rs_store *s, uint64_t out[RS_SO__COUNT]);

/* --- sealing (pure; exposed for tests) --- */

/* "<prefix>tok:<64 hex digits of SHA-256(tok)>" into <out> (>= strlen(prefix) + 69). */
void rs_store_key(const char *prefix, const uint8_t tok[RS_TOKEN_BYTES], char *out, size_t len);

/* Seal <spec> under <tok>, bound to <key_name>: a malloc'd blob in *<blob>.
 * 0, -ENOMEM, -EINVAL (a string over 64 KiB). */
int rs_store_seal(const uint8_t tok[RS_TOKEN_BYTES], const char *key_name,
		  const struct rs_console_spec *spec, uint8_t **blob, size_t *len);

/* Open a blob sealed by rs_store_seal: a new spec in *<out> (no usage
 * record). 0, or -EBADMSG (wrong token, wrong key name, tampered, malformed),
 * -ENOMEM. */
int rs_store_open(const uint8_t tok[RS_TOKEN_BYTES], const char *key_name, const uint8_t *blob,
		  size_t len, struct rs_console_spec **out);

/* The serialized spec inside a sealed blob, once opened: a new spec in
 * *<out>, or -EBADMSG / -ENOMEM. Pure (exposed for fuzzing). */
int rs_store_decode_spec(const uint8_t *p, size_t len, struct rs_console_spec **out);

#endif
