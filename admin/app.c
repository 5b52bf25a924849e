#include "core/common.h"

#include <stdatomic.h>
#include <sys/resource.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "admin/api.h"
#include "admin/app.h"
#include "admin/audit.h"
#include "admin/metrics.h"
#include "admin/pvnc.h"
#include "core/addr.h"
#include "core/log.h"
#include "core/text.h"
#include "proto/assets.h"
#include "proto/console.h"
#include "proto/pve_up.h"
#include "tls/server.h"

static const char CACHE_STATIC[] = "Cache-Control: public, max-age=3600\r\n";

static void on_console_event(void *arg, const struct rs_console_event *ev)
{
	static const char *const names[] = {"console.opened", "console.closed", "token.rejected",
					    "console.resumed"};
	struct rs_app *app = arg;
	json_t *o = json_pack("{s:s, s:s, s:s}", "token", ev->token_hash, "client", ev->client,
			      "user_agent", ev->user_agent);

	if (!o)
		return;
	if (ev->type != RS_CEV_REJECTED) {
		char target[300];

		snprintf(target, sizeof(target), "%s:%u", ev->target_host, ev->target_port);
		json_object_set_new(o, "api_key", json_string(ev->api_key));
		json_object_set_new(o, "label", json_string(ev->label));
		json_object_set_new(o, "kind", json_string(ev->kind));
		json_object_set_new(o, "target", json_string(target));
		if (ev->view_only)
			json_object_set_new(o, "view_only", json_true());
	}
	if (ev->type == RS_CEV_REJECTED)
		json_object_set_new(o, "reason", json_string(ev->cause));
	if (ev->type == RS_CEV_RESUMED) {
		json_object_set_new(o, "outcome", json_string(ev->cause));
		json_object_set_new(o, "age_ms", json_integer((json_int_t)ev->duration_ms));
	}
	if (ev->type == RS_CEV_CLOSED) {
		json_object_set_new(o, "cause", json_string(ev->cause));
		json_object_set_new(o, "duration_ms", json_integer((json_int_t)ev->duration_ms));
		json_object_set_new(o, "bytes_to_target",
				    json_integer((json_int_t)ev->bytes_to_target));
		json_object_set_new(o, "bytes_to_browser",
				    json_integer((json_int_t)ev->bytes_to_browser));
	}
	rs_audit_emit(app->audit, names[ev->type], o);
}

/* Certificate files from the config; o->certs is malloc'd (strings borrowed). */
static void tls_opts(const struct rs_config *cfg, struct rs_tls_server_opts *o)
{
	struct rs_tls_cert_files *f = rs_xcalloc(cfg->n_tls_certs + 1, sizeof(*f));

	for (size_t i = 0; i < cfg->n_tls_certs; i++) {
		f[i].cert = cfg->tls_certs[i].cert;
		f[i].key = cfg->tls_certs[i].key;
	}
	o->certs = f;
	o->n_certs = cfg->n_tls_certs;
	o->state_dir = cfg->state_dir;
	o->ticket_rotation_s = cfg->tls_ticket_rotation_s;
}

/* limits.max_conns_per_client, 0 resolved: half of a worker's descriptor
 * table (what rs_engine_new sizes it to), so one address can never fill a
 * worker whichever way SO_REUSEPORT spreads its connections. */
static unsigned conns_per_client(const struct rs_config *cfg)
{
	struct rlimit rl;
	rlim_t table = cfg->max_conns;

	if (cfg->max_conns_per_client)
		return cfg->max_conns_per_client;
	if (!table) {
		if (getrlimit(RLIMIT_NOFILE, &rl))
			table = 1024;
		else if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1u << 20)
			table = 1u << 20;
		else
			table = rl.rlim_max > 512 ? rl.rlim_max - 256 : 256;
	}
	return table > 1 ? (unsigned)(table / 2) : 1;
}

static void on_head(struct rs_http_conn *hc, const struct rs_http_req *req, void *arg);
static int page_init(struct rs_app *app, char *err, size_t errlen);

static struct rs_key_usage *key_usage(void *arg, const char *key_name)
{
	return rs_api_key_usage(arg, key_name);
}

int rs_app_init(struct rs_app *app, struct rs_config *cfg, char *err, size_t errlen)
{
	memset(app, 0, sizeof(*app));
	app->cfg = cfg;
	app->audit = rs_audit_open(cfg->audit_log, err, errlen);
	if (!app->audit)
		return -EIO;
	app->tokens = rs_token_table_new(cfg->token_capacity);
	if (!app->tokens) {
		snprintf(err, errlen, "cannot allocate a token table of %u entries",
			 cfg->token_capacity);
		return -ENOMEM;
	}
	if (cfg->fleet.enabled) {
		const struct rs_fleet_conf *f = &cfg->fleet;
		struct rs_redis_opts ro = {
			.address = f->address,
			.sentinels = (const char *const *)f->sentinels,
			.n_sentinels = f->n_sentinels,
			.master = f->master,
			.username = f->username,
			.password = f->password,
			.db = f->db,
			.tls = f->tls,
			.tls_ca_file = f->tls_ca_file,
			.tls_insecure = f->tls_insecure,
			.timeout_ms = f->timeout_ms,
			.connect_timeout_ms = f->connect_timeout_ms,
			.max_pending = f->max_pending,
		};
		/* One client slot per possible worker (config caps workers at 256). */
		int ret = rs_redis_pool_new(&app->redis, &ro, 256, err, errlen);

		if (ret)
			return ret;
	}
	{
		struct rs_store_opts so = {
			.tokens = app->tokens,
			.redis = app->redis,
			.key_prefix = cfg->fleet.key_prefix,
			.consume_replicas = cfg->fleet.consume_replicas,
			.wait_timeout_ms = cfg->fleet.consume_wait_ms,
		};

		rs_store_new(&app->store, &so);
	}
	atomic_store(&app->keys, rs_keyset_new(cfg, NULL));
	app->trusted_proxies = rs_xcalloc(cfg->n_trusted_proxies + 1, sizeof(struct rs_cidr));
	for (size_t i = 0; i < cfg->n_trusted_proxies; i++)
		rs_parse_cidr(cfg->trusted_proxies[i], &app->trusted_proxies[i]); /* validated */
	app->http.trusted_proxies = app->trusted_proxies;
	app->http.n_trusted_proxies = cfg->n_trusted_proxies;
	if (cfg->n_clusters || cfg->inline_upstreams) {
		int ret = rs_pve_new(&app->pve, cfg, err, errlen);

		if (ret)
			return ret;
		app->console.pve = app->pve;
	}
	if (cfg->n_tls_listen) {
		struct rs_tls_server_opts o;
		int ret;

		tls_opts(cfg, &o);
		ret = rs_tls_server_new(&app->tls, &o, err, errlen);
		free((void *)o.certs);
		if (ret)
			return ret;
		app->http.tls = app->tls;
	}
	app->http.limits.max_request_line = cfg->max_request_line;
	app->http.limits.max_header_bytes = cfg->max_header_bytes;
	app->http.limits.max_headers = cfg->max_headers;
	app->http.limits.max_body = cfg->max_body;
	app->http.header_timeout_ms = cfg->header_timeout_ms;
	app->http.keepalive_timeout_ms = cfg->keepalive_timeout_ms;
	app->http.handler = rs_app_route;
	app->http.on_head = on_head;
	app->http.arg = app;
	app->http.clients = rs_http_clients_new();
	app->http.max_conns_per_client = conns_per_client(cfg);
	app->metrics_http = app->http;
	app->metrics_http.handler = rs_metrics_route;
	app->metrics_http.on_head = NULL;
	/* Its own counts: a busy API client does not lock its own scraper out. */
	app->metrics_http.clients = rs_http_clients_new();
	app->console.tokens = app->tokens;
	app->console.store = app->store;
	app->console.key_usage = key_usage;
	app->console.key_usage_arg = app;
	app->console.cfg = cfg;
	app->console.draining = &app->draining;
	app->console.on_event = on_console_event;
	app->console.event_arg = app;
	app->started_s = (uint64_t)rs_wall_s();
	return page_init(app, err, errlen);
}

void rs_app_release(struct rs_app *app)
{
	rs_store_free(app->store);
	app->store = NULL;
	rs_redis_pool_free(app->redis);
	app->redis = NULL;
	rs_token_table_free(app->tokens);
	app->tokens = NULL;
	rs_keyset_free(atomic_exchange(&app->keys, NULL));
	rs_audit_close(app->audit);
	app->audit = NULL;
	rs_tls_server_free(app->tls);
	app->tls = NULL;
	rs_pve_free(app->pve);
	app->pve = NULL;
	free(app->trusted_proxies);
	app->trusted_proxies = NULL;
	free(app->page_headers);
	free(app->page_attrs);
	free(app->logo);
	app->page_headers = app->page_attrs = NULL;
	app->logo = NULL;
	rs_http_clients_free(app->http.clients);
	rs_http_clients_free(app->metrics_http.clients);
	app->http.clients = app->metrics_http.clients = NULL;
}

uint64_t rs_app_tick(struct rs_app *app)
{
	uint64_t now = rs_now_ms(), next, rotate_s;

	/* A large expiry wave returns its memory instead of keeping it cached. */
	if (rs_token_sweep(app->tokens, now) >= 1000)
		rs_mem_release();
	next = rs_token_next_expiry(app->tokens);
	rotate_s = app->tls ? rs_tls_server_tick(app->tls, now / 1000) : UINT64_MAX;
	if (rotate_s != UINT64_MAX)
		next = RS_MIN(next, rotate_s * 1000);
	/* Sweeps scan the whole table: at most one per RS_TOKEN_SWEEP_LATE_MS
	 * however close the expiries. The cap only bounds what a bug could
	 * cost; issues that need a sooner sweep wake the caller. */
	if (next <= now + RS_TOKEN_SWEEP_LATE_MS)
		return RS_TOKEN_SWEEP_LATE_MS;
	return RS_MIN(next - now, (uint64_t)RS_APP_TICK_MAX_MS);
}

static bool path_is(const struct rs_http_req *r, const char *p)
{
	size_t n = strlen(p);

	return r->path_len == n && !memcmp(r->path, p, n);
}

static bool path_prefix(const struct rs_http_req *r, const char *p, const char **rest,
			size_t *rest_len)
{
	size_t n = strlen(p);

	if (r->path_len < n || memcmp(r->path, p, n))
		return false;
	*rest = r->path + n;
	*rest_len = r->path_len - n;
	return true;
}

/* Heads of requests with a body, before it is read: the authenticated
 * routes refuse a client without a valid key here, so it cannot make
 * ringside buffer a body first. */
static void on_head(struct rs_http_conn *hc, const struct rs_http_req *req, void *arg)
{
	struct rs_app *app = arg;
	const char *rest;
	size_t rest_len;

	if (path_is(req, "/api/v1/stats")) {
		rs_http_set_route(hc, RS_ROUTE_API_STATS);
		return rs_api_check_head(app, hc, req);
	}
	if (path_is(req, "/api/v1/consoles") ||
	    path_prefix(req, "/api/v1/consoles/", &rest, &rest_len)) {
		rs_http_set_route(hc, RS_ROUTE_API_CONSOLES);
		return rs_api_check_head(app, hc, req);
	}
	if (path_is(req, "/create")) {
		rs_http_set_route(hc, RS_ROUTE_API_CONSOLES);
		return rs_pvnc_check_head(app, hc, req);
	}
	if (path_is(req, "/status")) {
		rs_http_set_route(hc, RS_ROUTE_API_STATS);
		return rs_pvnc_check_head(app, hc, req);
	}
}

static bool is_get(const struct rs_http_req *r)
{
	return r->method == HTTP_GET || r->method == HTTP_HEAD;
}

static void method_not_allowed(struct rs_http_conn *hc, const char *allow)
{
	char extra[64];

	snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
	rs_http_respond_error(hc, 405, "method_not_allowed", "method not allowed", extra);
}

static void serve_asset(struct rs_http_conn *hc, const struct rs_http_req *req,
			const struct rs_asset *a, int status, const char *cache)
{
	const struct rs_http_header *inm = rs_http_req_header(req, "If-None-Match");
	char extra[256];

	snprintf(extra, sizeof(extra), "%sETag: %s\r\n", cache, a->etag);
	if (status == 200 && inm && inm->value_len == strlen(a->etag) &&
	    !memcmp(inm->value, a->etag, inm->value_len)) {
		rs_http_respond(hc, 304, NULL, NULL, 0, extra);
		return;
	}
	rs_http_respond_static(hc, status, a->type, a->data, a->len, extra);
}

static const struct rs_asset *find_asset(struct rs_app *app, const char *path, size_t len)
{
	(void)app;
	return rs_asset_find(path, len);
}

/* The page's settings as attributes: values are HTML-escaped here, the
 * title first made printable (no bidi overrides or controls). */
static void attr_append(char **buf, size_t *len, const char *name, const char *value)
{
	char clean[1024];
	size_t n = rs_text_sanitize(clean, sizeof(clean), value, strlen(value));
	size_t need = *len + strlen(name) + 6 * n + 8;
	char *grown = rs_xmalloc(need), *p; /* start-up memory: aborts when short */

	memcpy(grown, *buf, *len + 1);
	free(*buf);
	*buf = grown;
	p = *buf + *len;
	p += sprintf(p, " %s=\"", name);
	for (size_t i = 0; i < n; i++) {
		const char *e = clean[i] == '&'	   ? "&amp;"
				: clean[i] == '<'  ? "&lt;"
				: clean[i] == '>'  ? "&gt;"
				: clean[i] == '"'  ? "&quot;"
				: clean[i] == '\'' ? "&#39;"
						   : NULL;

		if (e)
			p += sprintf(p, "%s", e);
		else
			*p++ = clean[i];
	}
	*p++ = '"';
	*p = 0;
	*len = (size_t)(p - *buf);
}

/* Security headers for the console pages: no referrer (the URL carries the
 * token), scripts only from ourselves, and framing by nobody — or, with
 * console.frame_ancestors, by exactly those origins. X-Frame-Options cannot
 * name origins (ALLOW-FROM is obsolete and ignored), so it is left out then
 * and the CSP alone decides; browsers without CSP level 2 are long gone. */
static int page_init(struct rs_app *app, char *err, size_t errlen)
{
	const struct rs_config *cfg = app->cfg;
	char head[1600], origins[1200] = "";
	size_t n = 0;
	FILE *f;

	for (size_t i = 0; i < cfg->n_console_frame_ancestors; i++)
		snprintf(origins + strlen(origins), sizeof(origins) - strlen(origins), "%s%s",
			 i ? " " : "", cfg->console_frame_ancestors[i]);
	snprintf(head, sizeof(head),
		 "Cache-Control: no-store\r\n"
		 "Referrer-Policy: no-referrer\r\n"
		 "%s"
		 "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; "
		 "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
		 "frame-ancestors %s\r\n",
		 *origins ? "" : "X-Frame-Options: DENY\r\n", *origins ? origins : "'none'");
	app->page_headers = rs_xstrdup(head);
	app->page_attrs = rs_xstrdup("");
	if (cfg->console_title)
		attr_append(&app->page_attrs, &n, "data-title", cfg->console_title);
	if (cfg->console_accent)
		attr_append(&app->page_attrs, &n, "data-accent", cfg->console_accent);
	if (cfg->console_support_url)
		attr_append(&app->page_attrs, &n, "data-support", cfg->console_support_url);
	if (*origins)
		attr_append(&app->page_attrs, &n, "data-origins", origins);
	if (!cfg->console_logo)
		return 0;
	/* Read once: the page never touches the disk while serving. */
	app->logo_type = rs_console_logo_type(cfg->console_logo);
	app->logo = malloc(RS_CONSOLE_LOGO_MAX + 1);
	f = fopen(cfg->console_logo, "rb");
	if (app->logo && f)
		app->logo_len = fread(app->logo, 1, RS_CONSOLE_LOGO_MAX + 1, f);
	if (f)
		fclose(f);
	if (!app->logo || !f || !app->logo_len || app->logo_len > RS_CONSOLE_LOGO_MAX) {
		snprintf(err, errlen,
			 "config: 'console.logo': cannot read '%s' (empty, unreadable "
			 "or larger than %d KiB)",
			 cfg->console_logo, RS_CONSOLE_LOGO_MAX / 1024);
		return -EINVAL;
	}
	{
		uint8_t d[SHA256_DIGEST_LENGTH];

		SHA256(app->logo, app->logo_len, d);
		app->logo_etag[0] = '"';
		for (int i = 0; i < 8; i++)
			snprintf(app->logo_etag + 1 + 2 * i, 3, "%02x", d[i]);
		app->logo_etag[17] = '"';
		app->logo_etag[18] = 0;
	}
	attr_append(&app->page_attrs, &n, "data-logo", "/brand/logo");
	return 0;
}

/* console.language, or for "auto" the browser's choice. */
static const char *page_language(const struct rs_app *app, const struct rs_http_req *req)
{
	const struct rs_http_header *h;

	if (strcmp(app->cfg->console_language, "auto"))
		return app->cfg->console_language;
	h = rs_http_req_header(req, "Accept-Language");
	return h ? rs_page_language(h->value, h->value_len) : "en";
}

/* The page with its settings as attributes of <body> (no inline script:
 * the CSP stays strict), copied per request: the language may differ. */
static void send_page(struct rs_app *app, struct rs_http_conn *hc, const char *language,
		      bool view_only, const struct rs_asset *page, int status)
{
	const char *body = memmem(page->data, page->len, "<body", 5);
	size_t at = body ? (size_t)(body - (const char *)page->data) + 5 : 0;
	size_t alen = strlen(app->page_attrs), n;
	char lang[48];
	char *out;

	if (!body)
		return rs_http_respond_static(hc, status, page->type, page->data, page->len,
					      app->page_headers);
	/* A view-only link's page shows no input controls (ringside drops
	 * the input anyway). */
	n = (size_t)snprintf(lang, sizeof(lang), " data-lang=\"%s\"%s", language,
			     view_only ? " data-view-only" : "");
	out = malloc(page->len + n + alen);
	if (!out)
		return rs_http_respond_error(hc, 503, "overloaded", "out of memory", NULL);
	memcpy(out, page->data, at);
	memcpy(out + at, lang, n);
	memcpy(out + at + n, app->page_attrs, alen);
	memcpy(out + at + n + alen, page->data + at, page->len - at);
	rs_http_respond(hc, status, page->type, out, page->len + n + alen, app->page_headers);
	free(out);
}

static void serve_logo(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	const struct rs_http_header *inm = rs_http_req_header(req, "If-None-Match");
	char extra[300];

	if (!app->logo)
		return rs_http_respond_error(hc, 404, "not_found", "not found", NULL);
	/* An SVG opened on its own must not run script in our origin. */
	snprintf(
	    extra, sizeof(extra),
	    "Cache-Control: public, max-age=300\r\nETag: %s\r\n"
	    "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; sandbox\r\n",
	    app->logo_etag);
	if (inm && inm->value_len == strlen(app->logo_etag) &&
	    !memcmp(inm->value, app->logo_etag, inm->value_len))
		return rs_http_respond(hc, 304, NULL, NULL, 0, extra);
	rs_http_respond_static(hc, 200, app->logo_type, app->logo, app->logo_len, extra);
}

/* The page for a token whose state is known (<ret> 0: live, of <kind>). */
static void page_with(struct rs_app *app, struct rs_http_conn *hc, const char *language, int ret,
		      enum rs_console_kind kind, bool view_only)
{
	static const char unavailable[] =
		"<!doctype html><html><head><meta charset=\"utf-8\"><title>Console</title></head>"
		"<body><h1>Console service temporarily unavailable</h1><p>The console service "
		"cannot check this link right now. Try again in a moment; the link stays valid "
		"until it expires.</p></body></html>\n";
	const struct rs_asset *page = NULL;
	int status = 404;

	if (ret == -EAGAIN) {
		rs_http_respond_static(hc, 503, "text/html; charset=utf-8", unavailable,
				       sizeof(unavailable) - 1,
				       "Retry-After: 1\r\nCache-Control: no-store\r\n"
				       "Referrer-Policy: no-referrer\r\n");
		return;
	}
	if (!ret) {
		/* The terminal page exists once the xterm.js page is built in. */
		if (kind == RS_CONSOLE_PVE_TERM)
			page = find_asset(app, "/pages/console-term.html", 24);
		if (!page)
			page = find_asset(app, "/pages/console-vnc.html", 23);
		status = 200;
	}
	if (!page) {
		page = find_asset(app, "/pages/expired.html", 19);
		status = 404;
	}
	if (!page) {
		rs_http_respond_error(hc, 500, "internal", "console page missing from build", NULL);
		return;
	}
	send_page(app, hc, language, !ret && view_only, page, status);
}

struct pending_page {
	struct rs_app *app;
	const char *language; /* static or the config's: outlives the request */
	struct rs_http_conn *hc;
	struct rs_store_op *op;
};

static void on_page_peeked(void *arg, int err, struct rs_console_spec *spec,
			   enum rs_console_kind kind)
{
	struct pending_page *pp = arg;
	struct rs_http_conn *hc = pp->hc;

	page_with(pp->app, hc, pp->language, err, kind, spec && spec->view_only);
	free(pp);
	rs_http_resume(hc);
}

static void page_gone(void *arg)
{
	struct pending_page *pp = arg;

	rs_store_cancel(pp->op);
	free(pp);
}

static void serve_console_page(struct rs_app *app, struct rs_http_conn *hc,
			       const struct rs_http_req *req, const char *tok, size_t toklen)
{
	const char *language = page_language(app, req);
	enum rs_console_kind kind = RS_CONSOLE_VNC;
	bool view_only = false;
	struct pending_page *pp;
	uint8_t raw[16];
	int ret;

	/* Looking at the page never consumes the token: link previewers and
	 * chat apps fetch links before the person does. */
	ret = rs_token_parse(tok, toklen, raw);
	if (ret) {
		explicit_bzero(raw, sizeof(raw));
		return page_with(app, hc, language, -ENOENT, kind, false);
	}
	/* A spent token still shows its page while its console is resumable
	 * (on this box): a reload must find the page, the resume secret guards
	 * the upgrade. */
	if (!rs_console_resumable(raw, &kind, &view_only)) {
		explicit_bzero(raw, sizeof(raw));
		return page_with(app, hc, language, 0, kind, view_only);
	}
	pp = calloc(1, sizeof(*pp));
	if (!pp) {
		explicit_bzero(raw, sizeof(raw));
		return rs_http_respond_error(hc, 503, "no_memory", "out of memory", NULL);
	}
	ret = rs_store_peek(app->store, rs_conn_worker(rs_http_conn_conn(hc)), raw, &kind,
			    &view_only, on_page_peeked, pp, &pp->op);
	explicit_bzero(raw, sizeof(raw));
	if (ret == RS_STORE_PENDING) {
		pp->app = app;
		pp->language = language;
		pp->hc = hc;
		rs_http_defer(hc, page_gone, pp);
		return;
	}
	free(pp);
	page_with(app, hc, language, ret, kind, view_only);
}

void rs_app_route(struct rs_http_conn *hc, const struct rs_http_req *req, void *arg)
{
	struct rs_app *app = arg;
	const char *rest;
	size_t rest_len;

	if (path_is(req, "/healthz")) {
		rs_http_set_route(hc, RS_ROUTE_HEALTHZ);
		if (!is_get(req))
			return method_not_allowed(hc, "GET, HEAD");
		if (atomic_load(&app->draining))
			rs_http_respond(hc, 503, "text/plain; charset=utf-8", "draining\n", 9, NULL);
		else if (!atomic_load(&app->running)) /* workers up, the rest not yet */
			rs_http_respond(hc, 503, "text/plain; charset=utf-8", "starting\n", 9, NULL);
		else
			rs_http_respond(hc, 200, "text/plain; charset=utf-8", "ok\n", 3, NULL);
		return;
	}
	if (path_prefix(req, "/static/", &rest, &rest_len)) {
		const struct rs_asset *a;

		rs_http_set_route(hc, RS_ROUTE_STATIC);
		if (!is_get(req))
			return method_not_allowed(hc, "GET, HEAD");
		a = find_asset(app, req->path, req->path_len);
		if (!a)
			return rs_http_respond_error(hc, 404, "not_found", "not found", NULL);
		return serve_asset(hc, req, a, 200, CACHE_STATIC);
	}
	if (path_is(req, "/brand/logo")) {
		rs_http_set_route(hc, RS_ROUTE_STATIC);
		if (!is_get(req))
			return method_not_allowed(hc, "GET, HEAD");
		return serve_logo(app, hc, req);
	}
	/* ProxmoxVNC's link form /vnc/<token> is the same page. */
	if (path_prefix(req, "/console/", &rest, &rest_len) ||
	    path_prefix(req, "/vnc/", &rest, &rest_len)) {
		rs_http_set_route(hc, RS_ROUTE_CONSOLE_PAGE);
		if (!is_get(req))
			return method_not_allowed(hc, "GET, HEAD");
		return serve_console_page(app, hc, req, rest, rest_len);
	}
	if (path_prefix(req, "/ws/", &rest, &rest_len)) {
		rs_http_set_route(hc, RS_ROUTE_WEBSOCKET);
		if (req->method != HTTP_GET)
			return method_not_allowed(hc, "GET");
		return rs_console_upgrade(&app->console, hc, req, rest, rest_len);
	}
	if (path_is(req, "/api/v1/openapi.json")) {
		rs_http_set_route(hc, RS_ROUTE_STATIC); /* a document, the same for everyone */
		return rs_api_openapi(app, hc, req);
	}
	if (path_is(req, "/api/v1/stats")) {
		rs_http_set_route(hc, RS_ROUTE_API_STATS);
		return rs_api_stats(app, hc, req);
	}
	if (path_is(req, "/api/v1/sessions")) {
		rs_http_set_route(hc, RS_ROUTE_API_STATS);
		return rs_api_sessions(app, hc, req);
	}
	if (path_is(req, "/api/v1/consoles") ||
	    path_prefix(req, "/api/v1/consoles/", &rest, &rest_len)) {
		rs_http_set_route(hc, RS_ROUTE_API_CONSOLES);
		return rs_api_consoles(app, hc, req);
	}
	if (path_is(req, "/create")) {
		rs_http_set_route(hc, RS_ROUTE_API_CONSOLES);
		return rs_pvnc_create(app, hc, req);
	}
	if (path_is(req, "/status")) {
		rs_http_set_route(hc, RS_ROUTE_API_STATS);
		return rs_pvnc_status(app, hc, req);
	}
	if (path_is(req, "/")) {
		rs_http_set_route(hc, RS_ROUTE_ROOT);
		/* The root reveals nothing about what runs here. */
		rs_http_respond(hc, 401, "text/plain; charset=utf-8", "401 Unauthorized\n", 17,
				NULL);
		return;
	}
	rs_http_respond_error(hc, 404, "not_found", "not found", NULL);
}

static int reload_tls(struct rs_app *app, const struct rs_config *cfg, char *err, size_t errlen)
{
	struct rs_tls_server_opts o;
	char desc[1024];
	int ret;

	if (!app->tls)
		return 0;
	tls_opts(cfg, &o);
	ret = rs_tls_server_reload(app->tls, &o, err, errlen);
	free((void *)o.certs);
	if (ret)
		return ret;
	rs_tls_server_describe(app->tls, desc, sizeof(desc));
	rs_info("tls", "certificates reloaded: %s", desc);
	return 0;
}

#define say(out, ...)                              \
	do {                                       \
		if (out)                           \
			fprintf(out, __VA_ARGS__); \
	} while (0)

int rs_app_reload(struct rs_app *app, FILE *out, bool json)
{
	struct rs_config fresh;
	char err[512];
	enum rs_log_level l;
	int ret = 0;

	if (!app->cfg->config_path) {
		if (app->tls && reload_tls(app, app->cfg, err, sizeof(err))) {
			rs_error("tls", "%s (old certificates stay in use)", err);
			say(out, "ERR %s (old certificates stay in use)\n", err);
			return -EINVAL;
		}
		say(out, app->tls ? "OK\ncertificates reloaded; no config file to reload "
				    "(started without --config)\n"
				  : "ERR no config file to reload (started without --config)\n");
		return app->tls ? 0 : -EINVAL;
	}
	rs_config_init(&fresh);
	if (rs_config_load_file(&fresh, app->cfg->config_path, err, sizeof(err)) ||
	    rs_config_validate(&fresh, err, sizeof(err))) {
		rs_error("main", "reload: %s (nothing changed)", err);
		say(out, "ERR %s (nothing changed)\n", err);
		ret = -EINVAL;
		goto out_release;
	}
	/* Certificates first: if they do not load, nothing else changes either. */
	if (reload_tls(app, &fresh, err, sizeof(err))) {
		rs_error("tls", "reload: %s (nothing changed)", err);
		say(out, "ERR %s (nothing changed)\n", err);
		ret = -EINVAL;
		goto out_release;
	}
	/* Only what workers never read concurrently changes here; listeners,
	 * and limits need a restart (a drain plus a new process). */
	if (!rs_log_level_parse(fresh.log_level, &l))
		rs_log_set_level(l);
	{
		/* Keys kept by name keep their usage (pending links, open consoles). */
		struct rs_keyset *ks = rs_keyset_new(&fresh, atomic_load(&app->keys));

		/* Publish, then keep the old set behind the new one until exit. */
		ks->retired = atomic_exchange(&app->keys, ks);
		rs_info("ctl", "API keys reloaded: %zu key(s)", ks->n);
	}
	if (strcmp(fresh.log_target, app->cfg->log_target) == 0)
		rs_log_open(app->cfg->log_target);
	rs_audit_reopen(app->audit);
	rs_info("ctl", "configuration reloaded from %s", app->cfg->config_path);
	if (json)
		say(out, "OK\n{\"reloaded\":true,\"log_level\":\"%s\",\"api_keys\":%zu,"
			 "\"certificates\":%s,"
			 "\"restart_needed_for\":[\"listen\",\"limits\",\"workers\"]}\n",
		    fresh.log_level, fresh.n_api_keys, app->tls ? "true" : "false");
	else
		say(out, "OK\nreloaded: log level %s, %zu API key(s)%s; listeners, limits and "
			 "workers apply after a restart\n",
		    fresh.log_level, fresh.n_api_keys, app->tls ? ", TLS certificates" : "");
out_release:
	rs_config_release(&fresh);
	return ret;
}
