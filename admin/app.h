/* admin/app.h — the process-wide application state and HTTP routing.
 *
 * One struct rs_app lives for the whole process. Workers read it; the fields
 * they share (token table, counters) are lock-free or atomic.
 */
#ifndef RS_APP_H
#define RS_APP_H

#include "core/common.h"
#include "core/config.h"
#include "core/engine.h"
#include "core/token.h"
#include "proto/console.h"
#include "proto/http_server.h"
#include "proto/store.h"

#include <stdatomic.h>

struct rs_asset;
struct rs_tls_server;
struct rs_cidr;
struct rs_fleet;

/* Routes of the console listener, for the per-route response counters. */
enum rs_app_route {
	RS_ROUTE_OTHER = 0,
	RS_ROUTE_HEALTHZ,
	RS_ROUTE_STATIC,
	RS_ROUTE_CONSOLE_PAGE,
	RS_ROUTE_WEBSOCKET,
	RS_ROUTE_API_CONSOLES,
	RS_ROUTE_API_STATS,
	RS_ROUTE_ROOT,
	RS_APP_ROUTES
};

struct rs_app {
	struct rs_config *cfg;
	struct rs_engine *engine;
	struct rs_token_table *tokens;
	/* Where links live: the table above, or the fleet's Redis (proto/store.h). */
	struct rs_store *store;
	struct rs_redis_pool *redis; /* NULL without a `fleet` section */
	struct rs_http_server http;
	struct rs_http_server metrics_http;
	struct rs_console_env console;
	const struct rs_asset *assets; /* NULL: embedded table */
	size_t n_assets;
	struct rs_keyset *_Atomic keys; /* see admin/api.h */
	struct rs_audit *audit;
	struct rs_tls_server *tls; /* NULL without tls_listen */
	struct rs_pve *pve;        /* NULL without clusters */
	struct rs_fleet *fleet;    /* NULL without a fleet (admin/fleet.h) */
	struct rs_cidr *trusted_proxies;
	/* The console page (console.* config), built at start, read-only after:
	 * its security headers, its settings as body attributes, the logo. */
	char *page_headers;
	char *page_attrs;
	unsigned char *logo;
	size_t logo_len;
	const char *logo_type;
	char logo_etag[20];
	_Atomic bool draining;
	_Atomic bool running; /* workers started: the admin socket may call into them */
	uint64_t started_s;
};

/* Build the application from a validated config. 0 or -errno (err filled). */
int rs_app_init(struct rs_app *app, struct rs_config *cfg, char *err, size_t errlen);
void rs_app_release(struct rs_app *app);

/* The HTTP request router (rs_http_handler). */
void rs_app_route(struct rs_http_conn *hc, const struct rs_http_req *req, void *arg);

/* Re-read the config file and apply what can change at run time (log level
 * and target, API keys, TLS certificates); report to <out> ("OK ..."/"ERR
 * ..."; NULL: log only). Without a config file only the certificates are
 * loaded again. 0 or -EINVAL. */
int rs_app_reload(struct rs_app *app, FILE *out, bool json);

/* The longest the main thread sleeps between housekeeping runs. */
#define RS_APP_TICK_MAX_MS 60000u

/* Housekeeping on the main thread: sweep expired tokens, rotate ticket keys.
 * Returns how many ms may pass before it is due again (between
 * RS_TOKEN_SWEEP_LATE_MS and RS_APP_TICK_MAX_MS); sooner when the token
 * table's wake callback fires. An idle appliance wakes once a minute. */
uint64_t rs_app_tick(struct rs_app *app);

#endif
