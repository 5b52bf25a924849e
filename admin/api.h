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

/* Index of the API key in the Authorization header ("Bearer <key>", or with
 * <raw> the bare key as ProxmoxVNC sends it), compared in constant time
 * against every key; -1 when none matches. */
struct rs_keyset;
int rs_api_authenticate(const struct rs_keyset *ks, const struct rs_http_req *req, bool raw);

/* Issue a token for <spec> (ownership passes; freed on failure), log and
 * audit it; <token> receives its text. 0, or -errno with the error already
 * answered on <hc>. */
int rs_api_issue(struct rs_app *app, struct rs_http_conn *hc, struct rs_console_spec *spec,
		 const char *key_name, char token[]);

/* For the HTTP server's on_head: answer 401 from the head of a request
 * whose body is not read yet when it carries no valid key; else nothing. */
void rs_api_check_head(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* Route handler for /api/v1/consoles[/<token>]. */
void rs_api_consoles(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* GET /api/v1/stats: counters as JSON (same API keys). */
void rs_api_stats(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

/* The API keys in force: immutable once published. A reload publishes a new
 * set with one atomic store; retired sets stay allocated until exit, so a
 * request that loaded the old pointer never reads freed memory. */
struct rs_api_limiter;
struct rs_keyset {
	struct rs_api_key *keys; /* copies; wiped when the set is freed */
	size_t n;
	struct rs_api_limiter *limiter; /* one token bucket per key */
	struct rs_keyset *retired;      /* older sets, freed at exit */
};

struct rs_keyset *rs_keyset_new(const struct rs_api_key *keys, size_t n);
/* Free <ks> and every set retired behind it, wiping the keys. */
void rs_keyset_free(struct rs_keyset *ks);

#endif
