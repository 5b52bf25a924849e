#include "core/common.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <strings.h>
#include <pthread.h>
#include <time.h>

#include <jansson.h>

#include "admin/api.h"
#include "admin/fleet.h"
#include "core/addr.h"
#include "admin/app.h"
#include "admin/audit.h"
#include "core/log.h"
#include "core/token.h"

/* What one key has in use; <usage> is what specs point to. */
struct rs_key_state {
	struct rs_key_usage usage;
	pthread_mutex_t lock; /* the rate bucket: control plane, one API request at a time */
	double tokens;
	uint64_t last_ms;
};

/* Failed authentications per client address: 64 sets of 4 ways, so a flood
 * from many addresses evicts the least-failing entry of one set, never grows
 * the table, and a single address is always remembered while it fails. */
#define THROTTLE_SETS 64
#define THROTTLE_WAYS 4
struct throttle_entry {
	uint64_t addr[2];
	uint64_t window_start_ms;
	unsigned failures;
};

struct rs_auth_throttle {
	pthread_mutex_t lock;
	struct throttle_entry e[THROTTLE_SETS][THROTTLE_WAYS];
};

/* Counted here and shown by /api/v1/stats. */
static _Atomic uint64_t auth_failures, auth_throttled, key_pending_refused, targets_refused,
    scope_refused;

static struct rs_key_state *state_new(void)
{
	struct rs_key_state *st = rs_xcalloc(1, sizeof(*st));

	pthread_mutex_init(&st->lock, NULL);
	st->tokens = -1; /* full on first use */
	return st;
}

static struct rs_cidr *parse_cidrs(char **list, size_t n)
{
	struct rs_cidr *c = rs_xcalloc(n + 1, sizeof(*c));

	for (size_t i = 0; i < n; i++)
		rs_parse_cidr(list[i], &c[i]); /* validated by the config */
	return c;
}

struct rs_keyset *rs_keyset_new(const struct rs_config *cfg, const struct rs_keyset *prev)
{
	struct rs_keyset *ks = rs_xcalloc(1, sizeof(*ks));

	ks->keys = rs_xcalloc(cfg->n_api_keys + 1, sizeof(*ks->keys));
	ks->n = cfg->n_api_keys;
	for (size_t i = 0; i < ks->n; i++) {
		const struct rs_api_key *c = &cfg->api_keys[i];
		struct rs_keyset_key *k = &ks->keys[i];

		k->name = rs_xstrdup(c->name);
		k->key = rs_xstrdup(c->key);
		k->max_pending = c->max_pending_set ? c->max_pending : cfg->api_max_pending_per_key;
		k->max_consoles =
		    c->max_consoles_set ? c->max_consoles : cfg->api_max_consoles_per_key;
		k->admin = c->admin;
		k->own_allowed = c->allowed_targets_set;
		k->allowed = k->own_allowed ? parse_cidrs(c->allowed_targets, c->n_allowed_targets)
					    : parse_cidrs(cfg->allowed_targets, cfg->n_allowed_targets);
		k->n_allowed = k->own_allowed ? c->n_allowed_targets : cfg->n_allowed_targets;
		k->clusters = rs_xcalloc(c->n_clusters + 1, sizeof(char *));
		for (size_t j = 0; j < c->n_clusters; j++)
			k->clusters[j] = rs_xstrdup(c->clusters[j]);
		k->n_clusters = c->n_clusters;
		k->clusters_set = c->clusters_set;
		k->kinds = c->kinds;
		k->max_ttl_s = c->max_ttl_s;
		k->view_only_only = c->view_only_only;
		if (!k->n_allowed)
			rs_info("api",
				"API key '%s' has no allowed_targets: its plain VNC targets and "
				"inline Proxmox hosts are refused (configured clusters are not)",
				k->name);
		for (size_t j = 0; prev && j < prev->n && !k->state; j++)
			if (!strcmp(prev->keys[j].name, k->name))
				k->state = prev->keys[j].state;
		if (!k->state) {
			k->state = state_new();
			k->owns_state = true;
		}
	}
	if (prev) {
		ks->throttle = prev->throttle;
	} else {
		ks->throttle = rs_xcalloc(1, sizeof(*ks->throttle));
		pthread_mutex_init(&ks->throttle->lock, NULL);
		ks->owns_throttle = true;
	}
	return ks;
}

void rs_keyset_free(struct rs_keyset *ks)
{
	while (ks) {
		struct rs_keyset *next = ks->retired;

		for (size_t i = 0; i < ks->n; i++) {
			struct rs_keyset_key *k = &ks->keys[i];

			explicit_bzero(k->key, strlen(k->key));
			free(k->key);
			free(k->name);
			free(k->allowed);
			for (size_t j = 0; j < k->n_clusters; j++)
				free(k->clusters[j]);
			free(k->clusters);
			if (k->owns_state) {
				pthread_mutex_destroy(&k->state->lock);
				free(k->state);
			}
		}
		free(ks->keys);
		if (ks->owns_throttle) {
			pthread_mutex_destroy(&ks->throttle->lock);
			free(ks->throttle);
		}
		free(ks);
		ks = next;
	}
}

bool rs_api_rate_ok(struct rs_app *app, const struct rs_keyset *ks, int key)
{
	struct rs_key_state *b = ks->keys[key].state;
	unsigned rate = app->cfg->api_rate_per_s, burst = app->cfg->api_rate_burst;
	uint64_t now = rs_now_ms();
	bool ok;

	if (!rate)
		return true;
	pthread_mutex_lock(&b->lock);
	if (b->tokens < 0)
		b->tokens = burst;
	else
		b->tokens += (double)(now - b->last_ms) * rate / 1000.0;
	if (b->tokens > burst)
		b->tokens = burst;
	b->last_ms = now;
	ok = b->tokens >= 1.0;
	if (ok)
		b->tokens -= 1.0;
	pthread_mutex_unlock(&b->lock);
	return ok;
}

unsigned rs_api_key_pending(const struct rs_keyset *ks, int key)
{
	return atomic_load(&ks->keys[key].state->usage.pending);
}

/* An address as two words, IPv4 mapped into IPv6 (one client, one entry). */
static void addr_words(const struct sockaddr_storage *ss, uint64_t w[2])
{
	uint8_t b[16] = {0};

	if (ss->ss_family == AF_INET) {
		b[10] = b[11] = 0xff;
		memcpy(b + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		memcpy(b, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	}
	memcpy(w, b, 16);
}

/* The entry of <w> in its set, or (with <create>) a new one in place of an
 * expired or the least-failing entry. Called with the lock held. */
static struct throttle_entry *throttle_find(struct rs_auth_throttle *t, const uint64_t w[2],
					    uint64_t now, uint64_t window_ms, bool create)
{
	uint64_t h = (w[0] ^ w[1]) * 0x9e3779b97f4a7c15ull;
	struct throttle_entry *set = t->e[h >> 58], *victim = &set[0];

	for (unsigned i = 0; i < THROTTLE_WAYS; i++) {
		struct throttle_entry *e = &set[i];

		if (e->failures && now - e->window_start_ms >= window_ms)
			e->failures = 0; /* the window passed: forget */
		if (e->failures && e->addr[0] == w[0] && e->addr[1] == w[1])
			return e;
		if (e->failures < victim->failures)
			victim = e;
	}
	if (!create)
		return NULL;
	victim->addr[0] = w[0];
	victim->addr[1] = w[1];
	victim->window_start_ms = now;
	victim->failures = 0;
	return victim;
}

int rs_api_auth(struct rs_app *app, const struct rs_keyset *ks, struct rs_http_conn *hc,
		const struct rs_http_req *req, bool raw, unsigned *retry_s)
{
	unsigned limit = app->cfg->api_auth_fail_limit;
	uint64_t window_ms = (uint64_t)app->cfg->api_auth_fail_window_s * 1000, now, w[2];
	struct sockaddr_storage client;
	struct throttle_entry *e;
	int key;

	*retry_s = 0;
	if (!limit)
		goto check;
	rs_http_client_addr(hc, req, &client);
	addr_words(&client, w);
	now = rs_now_ms();
	pthread_mutex_lock(&ks->throttle->lock);
	e = throttle_find(ks->throttle, w, now, window_ms, false);
	if (e && e->failures >= limit) {
		*retry_s = (unsigned)((e->window_start_ms + window_ms - now + 999) / 1000);
		pthread_mutex_unlock(&ks->throttle->lock);
		atomic_fetch_add(&auth_throttled, 1);
		return RS_AUTH_THROTTLED;
	}
	pthread_mutex_unlock(&ks->throttle->lock);
check:
	key = rs_api_authenticate(ks, req, raw);
	if (key >= 0)
		return key;
	atomic_fetch_add(&auth_failures, 1);
	if (limit) {
		pthread_mutex_lock(&ks->throttle->lock);
		e = throttle_find(ks->throttle, w, now, window_ms, true);
		e->failures++;
		pthread_mutex_unlock(&ks->throttle->lock);
	}
	return RS_AUTH_FAILED;
}

static int fail(struct rs_api_error *e, int status, const char *code, const char *fmt, ...)
	RS_PRINTF(4, 5);
static int fail(struct rs_api_error *e, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool printable(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || n >= max)
			return false;
	return true;
}

/* Targets are IP literals (or "localhost"): resolving names would block a
 * worker, and a console API names machines by address anyway. */
static bool valid_host(const char *h)
{
	struct sockaddr_storage ss;

	return !strcmp(h, "localhost") || !rs_parse_ip(h, strlen(h), &ss);
}

static bool valid_node(const char *n)
{
	size_t len = strlen(n);

	return len && len <= 63 && strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					     "0123456789.-") == len;
}

/* {"cluster":"fra1","node":"pve2","vmid":100,"type":"qemu","console":"vnc"} */
static int parse_pve(const struct rs_config *cfg, json_t *root, struct rs_console_spec *s,
		     struct rs_api_error *e)
{
	json_t *v = json_object_get(root, "cluster");
	const char *type = "qemu", *console = "vnc";

	if (json_object_get(root, "host") || json_object_get(root, "port") ||
	    json_object_get(root, "password"))
		return fail(e, 400, "invalid_field",
			    "a Proxmox console takes cluster, vmid, node, type and console, not "
			    "host, port or password");
	if (!json_is_string(v) || !rs_config_cluster(cfg, json_string_value(v)))
		return fail(e, 400, "invalid_field", "'cluster' must name a configured cluster");
	s->cluster = strdup(json_string_value(v));
	v = json_object_get(root, "vmid");
	if (!json_is_integer(v) || json_integer_value(v) < 100 ||
	    json_integer_value(v) > 999999999)
		return fail(e, 400, "invalid_field", "'vmid' must be an integer from 100 to 999999999");
	s->vmid = (uint32_t)json_integer_value(v);
	v = json_object_get(root, "node");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v) || !valid_node(json_string_value(v)))
			return fail(e, 400, "invalid_field",
				    "'node' must be a node name (letters, digits, '.', '-')");
		s->node = strdup(json_string_value(v));
	}
	v = json_object_get(root, "type");
	if (v) {
		if (!json_is_string(v) || (strcmp(json_string_value(v), "qemu") &&
					   strcmp(json_string_value(v), "lxc")))
			return fail(e, 400, "invalid_field", "'type' must be \"qemu\" or \"lxc\"");
		type = json_string_value(v);
	}
	v = json_object_get(root, "console");
	if (v) {
		if (!json_is_string(v) || (strcmp(json_string_value(v), "vnc") &&
					   strcmp(json_string_value(v), "term")))
			return fail(e, 400, "invalid_field", "'console' must be \"vnc\" or \"term\"");
		console = json_string_value(v);
	}
	v = json_object_get(root, "kind");
	if (v && (!json_is_string(v) || strcmp(json_string_value(v), "pve")))
		return fail(e, 400, "invalid_field", "'kind' must be \"pve\" (or absent) with 'cluster'");
	s->kind = strcmp(console, "term") ? RS_CONSOLE_PVE_VNC : RS_CONSOLE_PVE_TERM;
	s->pve_type = strdup(type);
	if (!s->cluster || !s->pve_type || (json_object_get(root, "node") && !s->node &&
					    !json_is_null(json_object_get(root, "node"))))
		return fail(e, 503, "no_memory", "out of memory");
	return 0;
}

int rs_api_parse_console(const struct rs_config *cfg, const uint8_t *body, size_t len,
			 struct rs_console_spec **out, struct rs_api_error *e)
{
	struct rs_console_spec *s = NULL;
	json_error_t jerr;
	json_t *root, *v;
	const char *key;
	int ret = -EINVAL;

	*out = NULL;
	root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return fail(e, 400, "invalid_json", "invalid JSON at line %d column %d: %s",
			    jerr.line, jerr.column, jerr.text);
	if (!json_is_object(root)) {
		fail(e, 400, "invalid_json", "the body must be a JSON object");
		goto out_free;
	}
	json_object_foreach(root, key, v)
	{
		static const char *const known[] = {"kind",  "host",  "port",	 "password",
						    "ttl",   "label", "client_ip", "cluster",
						    "node",  "vmid",  "type",	 "console",
						    "view_only"};
		bool ok = false;

		for (size_t i = 0; i < RS_ARRAY_SIZE(known); i++)
			ok |= !strcmp(key, known[i]);
		if (!ok) {
			fail(e, 400, "invalid_field", "unknown field '%.64s'", key);
			goto out_free;
		}
	}
	s = rs_spec_new();
	if (!s) {
		fail(e, 503, "no_memory", "out of memory");
		goto out_free;
	}
	if (json_object_get(root, "cluster")) {
		if (parse_pve(cfg, root, s, e))
			goto out_free;
		goto common;
	}
	v = json_object_get(root, "kind");
	if (!json_is_string(v)) {
		fail(e, 400, "invalid_field",
		     "'kind' (\"vnc\" with host and port) or 'cluster' (a Proxmox console) is required");
		goto out_free;
	}
	if (strcmp(json_string_value(v), "vnc")) {
		fail(e, 400, "invalid_field", "'kind': unsupported console kind (supported: vnc)");
		goto out_free;
	}
	s->kind = RS_CONSOLE_VNC;
	v = json_object_get(root, "host");
	if (!json_is_string(v) || !valid_host(json_string_value(v))) {
		fail(e, 400, "invalid_field", "'host' must be an IP address or \"localhost\"");
		goto out_free;
	}
	s->host = strdup(json_string_value(v));
	v = json_object_get(root, "port");
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
		fail(e, 400, "invalid_field", "'port' must be an integer between 1 and 65535");
		goto out_free;
	}
	s->port = (uint16_t)json_integer_value(v);
	v = json_object_get(root, "password");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v) || json_string_length(v) > 256) {
			fail(e, 400, "invalid_field", "'password' must be a string of at most 256 bytes");
			goto out_free;
		}
		s->password = strdup(json_string_value(v));
	}
common:
	s->ttl_s = cfg->token_ttl_s;
	v = json_object_get(root, "ttl");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > cfg->token_max_ttl_s) {
			fail(e, 400, "invalid_field", "'ttl' must be an integer between 1 and %u",
			     cfg->token_max_ttl_s);
			goto out_free;
		}
		s->ttl_s = (uint32_t)json_integer_value(v);
		s->ttl_explicit = true;
	}
	v = json_object_get(root, "label");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v) || !printable(json_string_value(v), 256)) {
			fail(e, 400, "invalid_field",
			     "'label' must be a printable string of at most 256 bytes");
			goto out_free;
		}
		s->label = strdup(json_string_value(v));
	}
	v = json_object_get(root, "view_only");
	if (v && !json_is_null(v)) {
		if (!json_is_boolean(v)) {
			fail(e, 400, "invalid_field", "'view_only' must be true or false");
			goto out_free;
		}
		s->view_only = json_is_true(v);
	}
	/* Binding a link to the customer's address: the panel knows it, ringside
	 * only sees the panel. Required when the operator turned binding on. */
	v = json_object_get(root, "client_ip");
	if (v && !json_is_null(v)) {
		struct sockaddr_storage ip;

		if (!json_is_string(v) || rs_parse_ip(json_string_value(v), json_string_length(v), &ip)) {
			fail(e, 400, "invalid_field", "'client_ip' must be an IP address");
			goto out_free;
		}
		memcpy(&s->client_ip, &ip, sizeof(s->client_ip)); /* AF_INET or AF_INET6: it fits */
		s->bind_ip = true;
	} else if (cfg->token_bind_ip) {
		fail(e, 400, "invalid_field",
		     "'client_ip' is required: this appliance binds links to the browser's address");
		goto out_free;
	}
	if ((s->kind == RS_CONSOLE_VNC && !s->host) ||
	    (json_is_string(json_object_get(root, "password")) && !s->password) ||
	    (json_is_string(json_object_get(root, "label")) && !s->label)) {
		fail(e, 503, "no_memory", "out of memory");
		goto out_free;
	}
	*out = s;
	s = NULL;
	ret = 0;
out_free:
	rs_spec_free(s);
	/* The body held the VNC password: jansson's copy goes with the tree, and
	 * the string value is wiped first. */
	v = json_object_get(root, "password");
	if (json_is_string(v))
		explicit_bzero((char *)json_string_value(v), json_string_length(v));
	json_decref(root);
	return ret;
}

/* Returns the index of the matching key or -1. Every key is compared so the
 * time does not reveal which one (or whether any) matched. */
int rs_api_authenticate(const struct rs_keyset *ks, const struct rs_http_req *req, bool raw)
{
	const struct rs_http_header *h = rs_http_req_header(req, "Authorization");
	const char *tok;
	size_t toklen;
	int found = -1;

	if (!h)
		return -1;
	tok = h->value;
	toklen = h->value_len;
	if (toklen >= 7 && !strncasecmp(tok, "Bearer ", 7)) {
		tok += 7;
		toklen -= 7;
	} else if (!raw) {
		return -1;
	}
	for (size_t i = 0; i < ks->n; i++) {
		const char *k = ks->keys[i].key;

		if (rs_ct_equal(tok, toklen, k, strlen(k)) && found < 0)
			found = (int)i;
	}
	return found;
}

/* rs_api_auth answering 401 / 429 in this API's shape. */
static int auth_or_answer(struct rs_app *app, const struct rs_keyset *ks, struct rs_http_conn *hc,
			  const struct rs_http_req *req)
{
	unsigned retry;
	char hdr[48];
	int key = rs_api_auth(app, ks, hc, req, false, &retry);

	if (key == RS_AUTH_THROTTLED) {
		snprintf(hdr, sizeof(hdr), "Retry-After: %u\r\n", retry);
		rs_http_respond_error(hc, 429, "auth_throttled",
				      "too many failed authentications from this address; retry "
				      "later",
				      hdr);
	} else if (key < 0) {
		rs_http_respond_error(hc, 401, "unauthorized", "missing or invalid API key",
				      "WWW-Authenticate: Bearer\r\n");
	}
	return key;
}

/* The head of a request with a body, before the body is read (the HTTP
 * server's on_head): without a valid key the answer is 401 (or 429 while the
 * address is throttled) now, so an unauthenticated client cannot make
 * ringside buffer a body. */
void rs_api_check_head(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	(void)auth_or_answer(app, atomic_load(&app->keys), hc, req);
}

static void format_time(int64_t t, char out[32])
{
	struct tm tm;
	time_t tt = (time_t)t;

	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Plain VNC targets and inline Proxmox hosts are addresses the key holder
 * chose: they must fall in the key's target list, checked here at issue time
 * so a key holder learns nothing about a disallowed address (no connect is
 * ever tried, so refused, timed out and open all look the same: 403). */
static int check_target(const struct rs_keyset_key *k, const struct rs_console_spec *spec,
			struct rs_api_error *e)
{
	struct sockaddr_storage ss;
	const char *host = spec->host;

	if (spec->kind != RS_CONSOLE_VNC && spec->cluster)
		return 0; /* a configured cluster: the operator's own endpoints */
	if (!host || (strcmp(host, "localhost") ? rs_parse_ip(host, strlen(host), &ss)
						: rs_parse_ip("127.0.0.1", 9, &ss)))
		return fail(e, 400, "invalid_field", "the target must be an IP address");
	if (rs_addr_allowed(k->allowed, k->n_allowed, (struct sockaddr *)&ss))
		return 0;
	atomic_fetch_add(&targets_refused, 1);
	if (!k->n_allowed)
		return fail(e, 403, "target_not_allowed",
			    "API key '%s' may not open consoles on addresses: no allowed_targets "
			    "are configured%s",
			    k->name, k->own_allowed ? " for this key" : "");
	return fail(e, 403, "target_not_allowed",
		    "the target is outside the allowed_targets of API key '%s'", k->name);
}

static const char *const kind_names[] = {"vnc", "pve-vnc", "pve-term"};

int rs_api_check_scope(const struct rs_keyset_key *k, struct rs_console_spec *spec,
		       struct rs_api_error *e)
{
	bool listed = false;

	if (k->kinds && !(k->kinds & (1u << spec->kind))) {
		char allowed[40] = "";

		for (unsigned i = 0; i < RS_ARRAY_SIZE(kind_names); i++)
			if (k->kinds & (1u << i))
				snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed),
					 "%s%s", *allowed ? ", " : "", kind_names[i]);
		return fail(e, 403, "out_of_scope",
			    "API key '%s' may not open %s consoles (its kinds: %s)", k->name,
			    kind_names[spec->kind], allowed);
	}
	/* clusters scopes Proxmox consoles: plain VNC targets are the business
	 * of kinds and allowed_targets. */
	if (k->clusters_set && spec->kind != RS_CONSOLE_VNC) {
		for (size_t i = 0; spec->cluster && i < k->n_clusters; i++)
			listed |= !strcmp(spec->cluster, k->clusters[i]);
		if (!listed && spec->cluster)
			return fail(e, 403, "out_of_scope",
				    "API key '%s' may not open consoles on cluster '%s' (not in "
				    "its clusters)",
				    k->name, spec->cluster);
		if (!listed)
			return fail(e, 403, "out_of_scope",
				    "API key '%s' may open Proxmox consoles only on its clusters, "
				    "not on inline Proxmox hosts",
				    k->name);
	}
	if (k->max_ttl_s && spec->ttl_s > k->max_ttl_s) {
		if (spec->ttl_explicit)
			return fail(e, 403, "out_of_scope",
				    "'ttl' %u exceeds the max_ttl_s of API key '%s' (%u)",
				    spec->ttl_s, k->name, k->max_ttl_s);
		spec->ttl_s = k->max_ttl_s;
	}
	if (k->view_only_only && !spec->view_only)
		return fail(e, 403, "out_of_scope",
			    "API key '%s' may open view-only consoles only (view_only_only): "
			    "ask for \"view_only\": true",
			    k->name);
	return 0;
}

struct rs_key_usage *rs_api_key_usage(struct rs_app *app, const char *name)
{
	const struct rs_keyset *ks = atomic_load(&app->keys);

	for (size_t i = 0; ks && name && i < ks->n; i++)
		if (!strcmp(ks->keys[i].name, name))
			return &ks->keys[i].state->usage;
	return NULL;
}

/* What the log and the audit record of an issue say (no secret in here). */
struct issue_note {
	char key[80], target[300], label[260], client[48];
	const char *kind;
	uint32_t ttl;
	bool view_only;
};

static void log_issued(struct rs_app *app, const struct issue_note *n, const char *token)
{
	uint8_t raw[16];
	char hash[9];
	json_t *o;

	rs_token_parse(token, RS_TOKEN_TEXT, raw);
	rs_log_hash(raw, sizeof(raw), hash);
	explicit_bzero(raw, sizeof(raw));
	rs_info("api", "token.issued key=%s token=%s target=%s:%s ttl=%u label=%s%s", n->key, hash,
		n->kind, n->target, n->ttl, rs_log_q(n->label), n->view_only ? " view_only" : "");
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s}", "token", hash, "api_key", n->key,
		      "label", n->label, "kind", n->kind, "target", n->target, "ttl", (int)n->ttl,
		      "api_client", n->client);
	if (o && n->view_only)
		json_object_set_new(o, "view_only", json_true());
	rs_audit_emit(app->audit, "token.issued", o);
}

static void store_unavailable(struct rs_api_error *e)
{
	fail(e, 503, "store_unavailable",
	     "the link store (Redis) is unavailable; retry in a moment");
}

/* An issue waiting for the fleet store. */
struct pending_issue {
	struct rs_app *app;
	struct rs_http_conn *hc;
	rs_api_issue_done done;
	struct rs_store_op *op;
	struct issue_note note;
	char token[RS_TOKEN_TEXT + 1];
};

static void on_issued(void *arg, int err, struct rs_console_spec *spec, enum rs_console_kind kind)
{
	struct pending_issue *pi = arg;
	struct rs_http_conn *hc = pi->hc;
	struct rs_api_error e = {0};

	(void)spec;
	(void)kind;
	if (err) {
		store_unavailable(&e);
		pi->done(hc, NULL, pi->note.ttl, &e);
	} else {
		log_issued(pi->app, &pi->note, pi->token);
		pi->done(hc, pi->token, pi->note.ttl, NULL);
	}
	explicit_bzero(pi, sizeof(*pi));
	free(pi);
	rs_http_resume(hc);
}

static void issue_gone(void *arg)
{
	struct pending_issue *pi = arg;

	rs_store_cancel(pi->op);
	explicit_bzero(pi, sizeof(*pi));
	free(pi);
}

void rs_api_issue(struct rs_app *app, struct rs_http_conn *hc, const struct rs_keyset *ks,
		  int key, struct rs_console_spec *spec, rs_api_issue_done done)
{
	const struct rs_keyset_key *k = &ks->keys[key];
	struct rs_api_error e = {0};
	struct pending_issue *pi;
	struct issue_note *n;
	int ret;

	pi = calloc(1, sizeof(*pi));
	if (!pi) {
		fail(&e, 503, "no_memory", "out of memory");
		goto out_free;
	}
	n = &pi->note;
	ret = rs_api_check_scope(k, spec, &e);
	if (ret) {
		atomic_fetch_add(&scope_refused, 1);
		goto out_free;
	}
	ret = check_target(k, spec, &e);
	if (ret)
		goto out_free;
	if (!rs_usage_take(&k->state->usage.pending, k->max_pending)) {
		atomic_fetch_add(&key_pending_refused, 1);
		fail(&e, 429, "key_pending_limit",
		     "API key '%s' has %u pending console links (its max_pending); wait "
		     "until some are used or expire, or revoke some",
		     k->name, k->max_pending);
		goto out_free;
	}
	/* From here the spec holds one pending unit: the token table gives it
	 * back when the link leaves it; a failed issue gives it back below. */
	spec->usage = &k->state->usage;
	spec->max_consoles = k->max_consoles;
	spec->api_key_name = strdup(k->name);
	spec->created_s = rs_wall_s();
	spec->expires_s = spec->created_s + spec->ttl_s;
	if (spec->kind == RS_CONSOLE_VNC || !spec->cluster)
		snprintf(n->target, sizeof(n->target), "%s:%u%s%s", spec->host, spec->port,
			 spec->node ? "/" : "", spec->node ? spec->node : "");
	else
		snprintf(n->target, sizeof(n->target), "%s/%s/%u", spec->cluster,
			 spec->node ? spec->node : "-", spec->vmid);
	n->kind = kind_names[spec->kind];
	n->view_only = spec->view_only;
	snprintf(n->label, sizeof(n->label), "%s", spec->label ? spec->label : "");
	snprintf(n->key, sizeof(n->key), "%s", k->name);
	rs_conn_peer_str(rs_http_conn_conn(hc), n->client, sizeof(n->client));
	n->ttl = spec->ttl_s;
	ret = rs_store_issue(app->store, rs_conn_worker(rs_http_conn_conn(hc)), spec,
			     n->ttl * 1000u, pi->token, on_issued, pi, &pi->op);
	if (ret == RS_STORE_PENDING) {
		/* <spec> is the store's; the answer comes from on_issued. */
		pi->app = app;
		pi->hc = hc;
		pi->done = done;
		rs_http_defer(hc, issue_gone, pi);
		return;
	}
	if (ret) {
		atomic_fetch_sub(&k->state->usage.pending, 1);
		if (ret == -ENOSPC)
			fail(&e, 503, "token_table_full",
			     "too many pending console links; retry later");
		else if (ret == -EINVAL)
			fail(&e, 400, "invalid_request",
			     "the console request cannot be issued (invalid client address)");
		else if (ret == -EAGAIN)
			store_unavailable(&e);
		else
			fail(&e, 503, "issue_failed", "the link could not be issued (%s); retry",
			     strerror(-ret));
		goto out_free;
	}
	/* <spec> now belongs to the table: only the copies above are used. */
	log_issued(app, n, pi->token);
	done(hc, pi->token, n->ttl, NULL);
	explicit_bzero(pi, sizeof(*pi));
	free(pi);
	return;
out_free:
	spec->usage = NULL; /* rs_spec_free must not give back what was not taken */
	rs_spec_free(spec);
	free(pi);
	done(hc, NULL, 0, &e);
}

static void create_reply(struct rs_http_conn *hc, const char *token, uint32_t ttl,
			 const struct rs_api_error *e)
{
	struct rs_app *app = rs_http_conn_server(hc)->arg;
	char expires[32], body[512];
	int n;

	if (e)
		return rs_http_respond_error(hc, e->status, e->code, e->message,
					     e->status == 429 || e->status == 503
						     ? "Retry-After: 1\r\n"
						     : NULL);
	format_time(rs_wall_s() + ttl, expires);
	n = snprintf(body, sizeof(body),
		     "{\"token\":\"%s\",\"url\":\"%s/console/%s\",\"expires_at\":\"%s\","
		     "\"expires_in\":%u}\n",
		     token, app->cfg->public_url, token, expires, ttl);
	rs_http_respond(hc, 201, "application/json", body, (size_t)n, NULL);
	explicit_bzero(body, sizeof(body));
}

static void create_console(struct rs_app *app, struct rs_http_conn *hc,
			   const struct rs_http_req *req, const struct rs_keyset *ks, int key)
{
	const struct rs_http_header *ct = rs_http_req_header(req, "Content-Type");
	struct rs_console_spec *spec;
	struct rs_api_error e = {0};

	if (!ct || ct->value_len < 16 || strncasecmp(ct->value, "application/json", 16))
		return rs_http_respond_error(hc, 415, "unsupported_media_type",
					     "Content-Type must be application/json", NULL);
	if (atomic_load(&app->draining))
		return rs_http_respond_error(hc, 503, "draining",
					     "this appliance is draining; try another", NULL);
	if (rs_api_parse_console(app->cfg, req->body, req->body_len, &spec, &e))
		return rs_http_respond_error(hc, e.status, e.code, e.message, NULL);
	rs_api_issue(app, hc, ks, key, spec, create_reply);
}

static void revoke_reply(struct rs_http_conn *hc, int ret)
{
	if (ret == -EAGAIN) {
		struct rs_api_error e = {0};

		store_unavailable(&e);
		return rs_http_respond_error(hc, e.status, e.code, e.message, "Retry-After: 1\r\n");
	}
	if (ret)
		return rs_http_respond_error(hc, 404, "not_found",
					     "no such pending console link", NULL);
	rs_http_respond(hc, 204, NULL, NULL, 0, NULL);
}

struct pending_revoke {
	struct rs_http_conn *hc;
	struct rs_store_op *op;
};

static void on_revoked(void *arg, int err, struct rs_console_spec *spec, enum rs_console_kind kind)
{
	struct pending_revoke *pr = arg;
	struct rs_http_conn *hc = pr->hc;

	(void)spec;
	(void)kind;
	free(pr);
	revoke_reply(hc, err);
	rs_http_resume(hc);
}

static void revoke_gone(void *arg)
{
	struct pending_revoke *pr = arg;

	rs_store_cancel(pr->op);
	free(pr);
}

static void revoke_console(struct rs_app *app, struct rs_http_conn *hc,
			   const struct rs_http_req *req)
{
	const char *tok = req->path + strlen("/api/v1/consoles/");
	size_t len = req->path_len - strlen("/api/v1/consoles/");
	struct pending_revoke *pr;
	uint8_t raw[16];
	int ret = rs_token_parse(tok, len, raw);

	if (ret) {
		explicit_bzero(raw, sizeof(raw));
		return revoke_reply(hc, -ENOENT);
	}
	pr = calloc(1, sizeof(*pr));
	if (!pr) {
		explicit_bzero(raw, sizeof(raw));
		return rs_http_respond_error(hc, 503, "no_memory", "out of memory", NULL);
	}
	ret = rs_store_revoke(app->store, rs_conn_worker(rs_http_conn_conn(hc)), raw, on_revoked,
			      pr, &pr->op);
	explicit_bzero(raw, sizeof(raw));
	if (ret == RS_STORE_PENDING) {
		pr->hc = hc;
		rs_http_defer(hc, revoke_gone, pr);
		return;
	}
	free(pr);
	revoke_reply(hc, ret);
}

static void append(char **p, size_t *left, const char *fmt, ...) RS_PRINTF(3, 4);
static void append(char **p, size_t *left, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(*p, *left, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= *left)
		n = (int)(*left ? *left - 1 : 0);
	*p += n;
	*left -= (size_t)n;
}

void rs_api_stats(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	struct rs_token_stats ts;
	struct rs_console_stats cs;
	struct rs_engine_stats es;
	char body[4096], *p = body;
	size_t left = sizeof(body);

	if (!(req->method == HTTP_GET || req->method == HTTP_HEAD))
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use GET",
					     "Allow: GET, HEAD\r\n");
	if (auth_or_answer(app, atomic_load(&app->keys), hc, req) < 0)
		return;
	rs_token_stats_get(app->tokens, &ts);
	rs_console_stats(app->engine, &cs);
	rs_engine_stats(app->engine, &es);
	append(&p, &left,
	       "{\"tokens\":{\"live\":%llu,\"issued\":%llu,\"consumed\":%llu,\"expired\":%llu,"
	       "\"revoked\":%llu,\"rejected\":%llu,\"returned\":%llu},",
	       (unsigned long long)ts.live, (unsigned long long)ts.issued,
	       (unsigned long long)ts.consumed, (unsigned long long)ts.expired,
	       (unsigned long long)ts.revoked, (unsigned long long)ts.rejected,
	       (unsigned long long)ts.returned);
	append(&p, &left,
	       "\"consoles\":{\"opened\":%llu,\"active\":%llu,\"bytes_to_target\":%llu,"
	       "\"bytes_to_browser\":%llu,\"ports_total\":%llu,\"ports_in_use\":%llu,\"causes\":{",
	       (unsigned long long)cs.opened, (unsigned long long)cs.active,
	       (unsigned long long)cs.bytes_to_target, (unsigned long long)cs.bytes_to_browser,
	       (unsigned long long)cs.ports_total, (unsigned long long)cs.ports_in_use);
	for (int i = 0; i < RS_CC__COUNT; i++)
		append(&p, &left, "%s\"%s\":%llu", i ? "," : "", rs_console_cause_names[i],
		       (unsigned long long)cs.causes[i]);
	append(&p, &left,
	       "}},\"heap_allocated_bytes\":%llu,"
	       "\"engine\":{\"workers\":%u,\"connections\":%llu,\"accepted\":%llu,"
	       "\"loops\":%llu,\"cqes\":%llu,\"enobufs\":%llu,\"cq_overflow\":%llu,"
	       "\"buffers_in_use\":%llu,\"buffers_total\":%llu},"
	       "\"api\":{\"auth_failures\":%llu,\"auth_throttled\":%llu,"
	       "\"key_pending_refused\":%llu,\"targets_refused\":%llu,\"scope_refused\":%llu},"
	       "\"draining\":%s}\n",
	       (unsigned long long)rs_mem_allocated(), rs_engine_workers(app->engine),
	       (unsigned long long)es.conns_live,
	       (unsigned long long)es.accepted, (unsigned long long)es.loops,
	       (unsigned long long)es.cqes, (unsigned long long)es.enobufs,
	       (unsigned long long)es.cq_overflow, (unsigned long long)es.bufs_out,
	       (unsigned long long)es.bufs_total, (unsigned long long)atomic_load(&auth_failures),
	       (unsigned long long)atomic_load(&auth_throttled),
	       (unsigned long long)atomic_load(&key_pending_refused),
	       (unsigned long long)atomic_load(&targets_refused),
	       (unsigned long long)atomic_load(&scope_refused),
	       atomic_load(&app->draining) ? "true" : "false");
	rs_http_respond(hc, 200, "application/json", body, (size_t)(p - body), NULL);
}

/* admin/openapi.json, built in as it is (the Makefile makes api.o depend on
 * it): one file that the test validates and compares with live answers. */
__asm__(".section .rodata\n"
	".balign 16\n"
	"rs_openapi_json:\n"
	".incbin \"admin/openapi.json\"\n"
	"rs_openapi_json_end:\n"
	".previous\n");
extern const char rs_openapi_json[] __asm__("rs_openapi_json");
extern const char rs_openapi_json_end[] __asm__("rs_openapi_json_end");

void rs_api_openapi(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	(void)app;
	if (!(req->method == HTTP_GET || req->method == HTTP_HEAD))
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use GET",
					     "Allow: GET, HEAD\r\n");
	rs_http_respond_static(hc, 200, "application/json", rs_openapi_json,
			       (size_t)(rs_openapi_json_end - rs_openapi_json),
			       "Cache-Control: no-cache\r\n");
}

void rs_api_consoles(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	bool collection = req->path_len == strlen("/api/v1/consoles");
	/* One snapshot for the whole request: the key index means nothing in
	 * another set. */
	const struct rs_keyset *ks = atomic_load(&app->keys);
	int key;

	if (collection && req->method != HTTP_POST)
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use POST",
					     "Allow: POST\r\n");
	if (!collection && req->method != HTTP_DELETE)
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use DELETE",
					     "Allow: DELETE\r\n");
	key = auth_or_answer(app, ks, hc, req);
	if (key < 0)
		return;
	if (!rs_api_rate_ok(app, ks, key))
		return rs_http_respond_error(hc, 429, "rate_limited",
					     "too many requests for this API key", "Retry-After: 1\r\n");
	if (collection)
		create_console(app, hc, req, ks, key);
	else
		revoke_console(app, hc, req);
}

/* The caller's sessions (all of them for an admin key): this box's live
 * ones and, in a fleet, every other box's as of its last heartbeat. No
 * target or client address: the fleet view never carries one, and a box
 * answers the same whichever box the balancer picked. */
static json_t *session_json(const struct rs_console_info *i)
{
	return json_pack("{s:I, s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "id",
			 (json_int_t)i->id, "worker", (int)i->worker, "kind", i->kind, "state",
			 i->state, "token", i->token_hash, "api_key", i->api_key, "label", i->label,
			 "vmid", (json_int_t)i->vmid, "age_ms", (json_int_t)i->age_ms,
			 "bytes_to_target", (json_int_t)i->bytes_to_target, "bytes_to_browser",
			 (json_int_t)i->bytes_to_browser);
}

static json_t *session_list(struct rs_app *app, const struct rs_keyset_key *k)
{
	json_t *arr = json_array(), *others, *v;
	struct rs_console_info *items = malloc(4096 * sizeof(*items));
	size_t i;

	if (!arr || !items)
		goto out;
	for (unsigned wi = 0; wi < rs_engine_workers(app->engine); wi++) {
		size_t n = rs_console_list(rs_engine_worker(app->engine, wi), items, 4096);

		for (size_t j = 0; j < RS_MIN(n, (size_t)4096); j++)
			if (k->admin || !strcmp(items[j].api_key, k->name))
				json_array_append_new(arr, app->fleet ? rs_fleet_session_json(
									    app->fleet, &items[j])
								      : session_json(&items[j]));
	}
	if (!app->fleet)
		goto out;
	others = rs_fleet_others(app->fleet);
	json_array_foreach(others, i, v)
	{
		const char *key = json_string_value(json_object_get(v, "api_key"));

		if (k->admin || (key && !strcmp(key, k->name)))
			json_array_append(arr, v);
	}
	json_decref(others);
out:
	free(items);
	return arr;
}

void rs_api_sessions(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	const struct rs_keyset *ks = atomic_load(&app->keys);
	json_t *body;
	char *text;
	int key;

	if (!(req->method == HTTP_GET || req->method == HTTP_HEAD))
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use GET",
					     "Allow: GET, HEAD\r\n");
	key = auth_or_answer(app, ks, hc, req);
	if (key < 0)
		return;
	body = json_pack("{s:o, s:o}", "box",
			 app->fleet ? json_string(rs_fleet_node(app->fleet)) : json_null(),
			 "sessions", session_list(app, &ks->keys[key]));
	text = body ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(body);
	if (!text)
		return rs_http_respond_error(hc, 503, "no_memory", "out of memory", NULL);
	rs_http_respond(hc, 200, "application/json", text, strlen(text), NULL);
	free(text);
}
