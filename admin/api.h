/* admin/api.h — the backend's console API.
 *
 *   POST   /api/v1/consoles          create a one-time console link
 *   DELETE /api/v1/consoles/<token>  revoke it
 *
 * Authorization: Bearer <key>, keys from config (compared in constant time),
 * per-key rate limits. Errors are JSON {"error":{"code","message"}} with the
 * stable codes listed in the README.
 */
#ifndef RS_API_H
#define RS_API_H

#include "core/common.h"
#include "core/config.h"
#include "core/spec.h"
#include "proto/http_server.h"

struct rs_app;

struct rs_api_error {
	int status;
	const char *code;
	char message[256];
};

/* Parse a POST /api/v1/consoles JSON body into a new console spec (owned by
 * the caller, free with rs_spec_free). Pure: no I/O, no global state.
 * 0, or -EINVAL with <e> naming the bad field. */
int rs_api_parse_console(const struct rs_config *cfg, const uint8_t *body, size_t len,
			 struct rs_console_spec **out, struct rs_api_error *e);

/* The API keys in force: immutable once published. A reload publishes a new
 * set with one atomic store; retired sets stay allocated until exit, so a
 * request that loaded the old pointer never reads freed memory. A request
 * loads the set ONCE and uses that snapshot from authentication to the
 * answer: an index into one set means nothing in another.
 *
 * What a key has in use (pending links, open consoles, its rate bucket) lives
 * in a record that a reload hands on to the new set when the key's name stays,
 * so a reload neither resets nor loses a key's counts. */
struct rs_key_state;
struct rs_auth_throttle;
struct rs_cidr;

struct rs_keyset_key {
	char *name, *key; /* copies; the key is wiped when the set is freed */
	unsigned max_pending, max_consoles; /* resolved from the defaults; 0: unlimited */
	bool admin;
	struct rs_cidr *allowed; /* the key's target list, or a copy of the global one */
	size_t n_allowed;
	bool own_allowed; /* the list is the key's own (for messages) */
	/* The key's scope (api_keys[].clusters, kinds, max_ttl_s,
	 * view_only_only; see struct rs_api_key): copies. */
	char **clusters;
	size_t n_clusters;
	bool clusters_set;
	unsigned kinds, max_ttl_s;
	bool view_only_only;
	struct rs_key_state *state;
	bool owns_state; /* allocated by this set (else inherited from an older one) */
};

struct rs_keyset {
	struct rs_keyset_key *keys;
	size_t n;
	struct rs_auth_throttle *throttle; /* failed authentications per client address */
	bool owns_throttle;
	struct rs_keyset *retired; /* older sets, freed at exit */
};

/* A set from <cfg>'s keys, limits and target lists. <prev> (NULL at start) is
 * the set in force: keys of the same name keep its usage records, and the
 * failure throttle carries over. Publish it with
 * new->retired = atomic_exchange(&slot, new). */
struct rs_keyset *rs_keyset_new(const struct rs_config *cfg, const struct rs_keyset *prev);
/* Free <ks> and every set retired behind it, wiping the keys. Only at exit,
 * when no spec points to a usage record any more. */
void rs_keyset_free(struct rs_keyset *ks);

/* Index of the API key in the Authorization header ("Bearer <key>", or with
 * <raw> the bare key as ProxmoxVNC sends it), compared in constant time
 * against every key; -1 when none matches. Pure (no throttling). */
int rs_api_authenticate(const struct rs_keyset *ks, const struct rs_http_req *req, bool raw);

/* rs_api_authenticate behind the per-address failure throttle
 * (api.auth_failures_per_window failures per api.auth_failure_window_s):
 * the key index; RS_AUTH_FAILED (answer 401); RS_AUTH_THROTTLED (answer 429
 * with Retry-After: *<retry_s>; the key is not even compared). */
#define RS_AUTH_FAILED (-1)
#define RS_AUTH_THROTTLED (-2)
int rs_api_auth(struct rs_app *app, const struct rs_keyset *ks, struct rs_http_conn *hc,
		const struct rs_http_req *req, bool raw, unsigned *retry_s);

/* Take one request from key <key>'s rate bucket (api.rate_limit_*). */
bool rs_api_rate_ok(struct rs_app *app, const struct rs_keyset *ks, int key);

/* Is <spec> inside the scope of key <k> (kinds, clusters, max_ttl_s,
 * view_only_only)? 0, or -EINVAL with <e> set to 403 out_of_scope and a
 * message naming the field. A default ttl above the key's max_ttl_s is
 * lowered to it (spec->ttl_s changes); an explicit one is refused. */
int rs_api_check_scope(const struct rs_keyset_key *k, struct rs_console_spec *spec,
		       struct rs_api_error *e);

/* The answer to an issue: <token> (valid during the call) when <e> is NULL,
 * else the error to answer in the API's own shape. */
typedef void (*rs_api_issue_done)(struct rs_http_conn *hc, const char *token, uint32_t ttl_s,
				  const struct rs_api_error *e);

/* Issue a token for <spec> (ownership passes; freed on failure) on behalf of
 * key <key> of <ks>: checks the key's target list and pending-link limit,
 * writes it to the store, logs and audits, then answers through <done> —
 * at once with the embedded table, or, with a fleet store, once Redis has
 * answered (the request is deferred meanwhile; <done> is not called if the
 * client has gone). A store that cannot be reached gives 503
 * store_unavailable. */
void rs_api_issue(struct rs_app *app, struct rs_http_conn *hc, const struct rs_keyset *ks,
		  int key, struct rs_console_spec *spec, rs_api_issue_done done);

/* The usage record of the API key named <name> in the set in force (NULL:
 * no such key now): a fleet's consumed link finds its key's open-console
 * count by name, since the record itself cannot travel through Redis. */
struct rs_key_usage *rs_api_key_usage(struct rs_app *app, const char *name);

/* For the HTTP server's on_head: answer 401 from the head of a request
 * whose body is not read yet when it carries no valid key; else nothing. */
void rs_api_check_head(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* Route handler for /api/v1/consoles[/<token>]. */
void rs_api_consoles(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* GET /api/v1/openapi.json: the OpenAPI 3.1 description of the API
 * (admin/openapi.json, built in), without authentication: it describes
 * routes and error codes and holds nothing secret. */
void rs_api_openapi(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* GET /api/v1/stats: counters as JSON (same API keys). */
void rs_api_stats(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* GET /api/v1/sessions: the caller's open consoles (every one for an admin
 * key), fleet-wide when a fleet is configured (other boxes as of their last
 * heartbeat); no target or client address. */
void rs_api_sessions(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* Per-key usage for ProxmoxVNC's /status: pending links of key <key>. */
unsigned rs_api_key_pending(const struct rs_keyset *ks, int key);

#endif
