/* admin/pvnc.c — ProxmoxVNC's API (see admin/pvnc.h). */
#include "core/common.h"

#include <stdatomic.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "admin/api.h"
#include "admin/app.h"
#include "admin/fleet.h"
#include "admin/pvnc.h"
#include "core/addr.h"
#include "core/token.h"
#include "proto/console.h"

#define MAX_SESSIONS_LISTED 10000

static const uint8_t *find(const uint8_t *h, size_t hl, const char *n, size_t nl)
{
	return nl && hl >= nl ? memmem(h, hl, n, nl) : NULL;
}

int rs_multipart_field(const char *ctype, size_t ctype_len, const uint8_t *body, size_t len,
		       const char *name, const uint8_t **out, size_t *outlen)
{
	char delim[80], want[96];
	const char *b;
	size_t blen, dl, wl;
	const uint8_t *p = body, *end = body + len;

	if (ctype_len < 19 || strncasecmp(ctype, "multipart/form-data", 19))
		return -EINVAL;
	b = memmem(ctype, ctype_len, "boundary=", 9);
	if (!b)
		return -EINVAL;
	b += 9;
	blen = ctype_len - (size_t)(b - ctype);
	if (blen && *b == '"') {
		const char *q = memchr(b + 1, '"', blen - 1);

		if (!q)
			return -EINVAL;
		blen = (size_t)(q - b - 1);
		b++;
	} else {
		for (size_t i = 0; i < blen; i++)
			if (b[i] == ';' || b[i] == ' ') {
				blen = i;
				break;
			}
	}
	if (!blen || blen > 70)
		return -EINVAL;
	dl = (size_t)snprintf(delim, sizeof(delim), "--%.*s", (int)blen, b);
	wl = (size_t)snprintf(want, sizeof(want), "name=\"%s\"", name);
	p = find(p, (size_t)(end - p), delim, dl);
	while (p) {
		const uint8_t *head, *hend, *next;

		p += dl;
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			return -ENOENT; /* the closing delimiter */
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
			return -EINVAL;
		head = p + 2;
		hend = find(head, (size_t)(end - head), "\r\n\r\n", 4);
		if (!hend)
			return -EINVAL;
		next = find(hend + 4, (size_t)(end - hend - 4), delim, dl);
		if (!next || next < hend + 6 || next[-2] != '\r' || next[-1] != '\n')
			return -EINVAL;
		if (find(head, (size_t)(hend - head), want, wl)) {
			*out = hend + 4;
			*outlen = (size_t)(next - 2 - (hend + 4));
			return 0;
		}
		p = next;
	}
	return -EINVAL;
}

/* ProxmoxVNC sends every value as a string; numbers are accepted too. */
static bool get_uint(json_t *root, const char *key, unsigned long min, unsigned long max,
		     unsigned long *out)
{
	json_t *v = json_object_get(root, key);
	char *end;

	if (json_is_integer(v) && json_integer_value(v) >= (json_int_t)min &&
	    json_integer_value(v) <= (json_int_t)max) {
		*out = (unsigned long)json_integer_value(v);
		return true;
	}
	if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > 10)
		return false;
	*out = strtoul(json_string_value(v), &end, 10);
	return !*end && *out >= min && *out <= max && json_string_value(v)[0] != '-';
}

static const char *get_str(json_t *root, const char *key, size_t max)
{
	json_t *v = json_object_get(root, key);

	if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > max ||
	    strpbrk(json_string_value(v), "\r\n"))
		return NULL;
	return json_string_value(v);
}

int rs_pvnc_parse_params(const struct rs_config *cfg, const uint8_t *json, size_t len,
			 struct rs_console_spec **out, char *msg, size_t msglen)
{
	struct rs_console_spec *s = NULL;
	json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, NULL);
	const char *host, *node, *user, *pw, *type;
	struct sockaddr_storage a;
	unsigned long port = 8006, vmid;
	bool view_only;
	json_t *v;
	int ret = -EINVAL;

	*out = NULL;
	if (!json_is_object(root)) {
		snprintf(msg, msglen, "params must be a JSON object");
		goto out_free;
	}
	host = get_str(root, "hostname", 255);
	node = get_str(root, "node", 63);
	user = get_str(root, "username", 128);
	pw = get_str(root, "password", 512);
	type = get_str(root, "type", 8);
	if (!host || rs_parse_ip(host, strlen(host), &a)) {
		snprintf(msg, msglen, "hostname must be the Proxmox server's IP address");
		goto out_free;
	}
	if (json_object_get(root, "port") && !get_uint(root, "port", 1, 65535, &port)) {
		snprintf(msg, msglen, "port must be a number from 1 to 65535");
		goto out_free;
	}
	if (!get_uint(root, "vmid", 100, 999999999, &vmid)) {
		snprintf(msg, msglen, "vmid must be a number from 100 to 999999999");
		goto out_free;
	}
	if (!user || !strchr(user, '@') || !pw) {
		snprintf(msg, msglen, "username (user@realm) and password are required");
		goto out_free;
	}
	if (node &&
	    strspn(node, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
		strlen(node)) {
		snprintf(msg, msglen, "node must be a node name");
		goto out_free;
	}
	if (type && strcmp(type, "qemu") && strcmp(type, "lxc")) {
		snprintf(msg, msglen, "type must be qemu or lxc");
		goto out_free;
	}
	/* ringside's own addition: ProxmoxVNC sends strings, so "1"/"true" too. */
	v = json_object_get(root, "view_only");
	if (v && !json_is_boolean(v) &&
	    !(json_is_string(v) && (!strcmp(json_string_value(v), "0") ||
				    !strcmp(json_string_value(v), "1") ||
				    !strcmp(json_string_value(v), "false") ||
				    !strcmp(json_string_value(v), "true")))) {
		snprintf(msg, msglen, "view_only must be true or false");
		goto out_free;
	}
	view_only = json_is_true(v) || (json_is_string(v) && (!strcmp(json_string_value(v), "1") ||
							      !strcmp(json_string_value(v), "true")));
	if (!cfg->inline_upstreams) {
		snprintf(msg, msglen,
			 "inline Proxmox details are disabled on this appliance "
			 "(configure inline_upstreams, or use clusters and /api/v1/consoles)");
		ret = -EPERM;
		goto out_free;
	}
	s = rs_spec_new();
	if (!s) {
		snprintf(msg, msglen, "out of memory");
		ret = -ENOMEM;
		goto out_free;
	}
	s->kind = RS_CONSOLE_PVE_VNC;
	s->host = strdup(host);
	s->port = (uint16_t)port;
	s->node = node ? strdup(node) : NULL;
	s->user = strdup(user);
	s->password = strdup(pw);
	s->pve_type = type ? strdup(type) : NULL;
	s->vmid = (uint32_t)vmid;
	s->view_only = view_only;
	s->ttl_s = 300; /* ProxmoxVNC's links last 5 minutes */
	if (s->ttl_s > cfg->token_max_ttl_s)
		s->ttl_s = cfg->token_max_ttl_s;
	if (!s->host || !s->user || !s->password || (node && !s->node) || (type && !s->pve_type)) {
		snprintf(msg, msglen, "out of memory");
		ret = -ENOMEM;
		goto out_free;
	}
	*out = s;
	s = NULL;
	ret = 0;
out_free:
	rs_spec_free(s);
	if (json_is_string(json_object_get(root, "password")))
		explicit_bzero((char *)json_string_value(json_object_get(root, "password")),
			       json_string_length(json_object_get(root, "password")));
	json_decref(root);
	return ret;
}

static void reply(struct rs_http_conn *hc, int status, json_t *obj)
{
	char *text = json_dumps(obj, JSON_COMPACT);

	json_decref(obj);
	if (!text) {
		rs_http_respond_error(hc, 503, "no_memory", "out of memory", NULL);
		return;
	}
	rs_http_respond(hc, status, "application/json", text, strlen(text), NULL);
	explicit_bzero(text, strlen(text));
	free(text);
}

static void error(struct rs_http_conn *hc, int status, const char *message)
{
	reply(hc, status, json_pack("{s:s, s:s}", "status", "error", "message", message));
}

/* rs_api_auth answering in ProxmoxVNC's shape. */
static int auth(struct rs_app *app, const struct rs_keyset *ks, struct rs_http_conn *hc,
		const struct rs_http_req *req)
{
	unsigned retry;
	int key = rs_api_auth(app, ks, hc, req, true, &retry);

	if (key == RS_AUTH_THROTTLED) {
		char hdr[48], *text;
		json_t *o = json_pack("{s:s, s:s, s:s}", "status", "error", "code",
				      "auth_throttled", "message",
				      "too many failed authentications from this address");

		snprintf(hdr, sizeof(hdr), "Retry-After: %u\r\n", retry);
		text = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		if (text)
			rs_http_respond(hc, 429, "application/json", text, strlen(text), hdr);
		else
			rs_http_respond_error(hc, 503, "no_memory", "out of memory", NULL);
		free(text);
	} else if (key < 0) {
		error(hc, 401, "Unauthorized");
	}
	return key;
}

/* The head of /create or /status with a body not read yet: 401 now when
 * the key is missing or wrong (see rs_api_check_head). */
void rs_pvnc_check_head(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	(void)auth(app, atomic_load(&app->keys), hc, req);
}

/* ProxmoxVNC's answer shapes: {"status":"success","token":…} or an error. */
static void create_reply(struct rs_http_conn *hc, const char *token, uint32_t ttl_s,
			 const struct rs_api_error *e)
{
	(void)ttl_s;
	if (e)
		return reply(hc, e->status,
			     json_pack("{s:s, s:s, s:s}", "status", "error", "code", e->code,
				       "message", e->message));
	reply(hc, 200, json_pack("{s:s, s:s}", "status", "success", "token", token));
}

void rs_pvnc_create(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	const struct rs_http_header *ct = rs_http_req_header(req, "Content-Type");
	/* One snapshot from authentication to the answer: a reload in between
	 * must not turn the key index into one of another (shorter) set. */
	const struct rs_keyset *ks = atomic_load(&app->keys);
	struct rs_console_spec *spec;
	const uint8_t *params;
	size_t plen;
	char msg[200];
	int key, ret;

	if (req->method != HTTP_POST)
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use POST",
					     "Allow: POST\r\n");
	key = auth(app, ks, hc, req);
	if (key < 0)
		return;
	if (!rs_api_rate_ok(app, ks, key)) {
		static const char body[] = "{\"status\":\"error\",\"code\":\"rate_limited\","
					   "\"message\":\"too many requests for this API key\"}";

		return rs_http_respond(hc, 429, "application/json", body, sizeof(body) - 1,
				       "Retry-After: 1\r\n");
	}
	if (atomic_load(&app->draining))
		return error(hc, 503, "this appliance is draining; try another");
	ret = ct ? rs_multipart_field(ct->value, ct->value_len, req->body, req->body_len, "params",
				      &params, &plen)
		 : -EINVAL;
	if (ret)
		return error(hc, 400, "expected multipart/form-data with a params field");
	ret = rs_pvnc_parse_params(app->cfg, params, plen, &spec, msg, sizeof(msg));
	if (ret)
		return error(hc,
			     ret == -EPERM    ? 403
			     : ret == -ENOMEM ? 503
					      : 400,
			     msg);
	rs_api_issue(app, hc, ks, key, spec, create_reply);
}

static void iso_time(int64_t t, char out[32])
{
	struct tm tm;
	time_t tt = (time_t)t;

	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void duration(uint64_t ms, char out[32])
{
	uint64_t s = ms / 1000;

	if (s >= 3600)
		snprintf(out, 32, "%lluh%llum%llus", (unsigned long long)(s / 3600),
			 (unsigned long long)(s / 60 % 60), (unsigned long long)(s % 60));
	else if (s >= 60)
		snprintf(out, 32, "%llum%llus", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
	else
		snprintf(out, 32, "%llus", (unsigned long long)s);
}

/* A fleet: the other boxes' sessions as of their last heartbeat, each entry
 * with its "box" (another box's Proxmox node name is not published: ""). */
static void fleet_status(struct rs_app *app, const char *key, bool all, json_t *list,
			 size_t *total, size_t *active)
{
	json_t *others = rs_fleet_others(app->fleet), *v, *e;
	int64_t now = rs_wall_s();
	size_t i;

	json_array_foreach(list, i, e)
		json_object_set_new(e, "box", json_string(rs_fleet_node(app->fleet)));
	json_array_foreach(others, i, v)
	{
		const char *k = json_string_value(json_object_get(v, "api_key"));
		const char *state = json_string_value(json_object_get(v, "state"));
		int64_t created = json_integer_value(json_object_get(v, "created_s"));
		int64_t conn = json_integer_value(json_object_get(v, "connected_s"));
		char created_at[32], connected[32] = "", age[32], cdur[32] = "", vmid[16];
		bool live = state && !strcmp(state, "relay");

		if (!all && (!k || strcmp(k, key)))
			continue;
		(*total)++;
		*active += live;
		iso_time(created, created_at);
		if (conn) {
			iso_time(conn, connected);
			duration((uint64_t)(now - conn) * 1000, cdur);
		}
		duration((uint64_t)json_integer_value(json_object_get(v, "age_ms")), age);
		snprintf(vmid, sizeof(vmid), "%lld", json_integer_value(json_object_get(v, "vmid")));
		e = json_pack("{s:s?, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:s?}", "session_id",
			      json_string_value(json_object_get(v, "token")), "node", "", "vmid",
			      vmid, "created_at", created_at, "connected_at", connected,
			      "connected_duration", cdur, "status", live ? "active" : "connecting",
			      "age", age, "kind", json_string_value(json_object_get(v, "kind")),
			      "box", json_string_value(json_object_get(v, "box")));
		if (e)
			json_array_append_new(list, e);
	}
	json_decref(others);
}

void rs_pvnc_status(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req)
{
	const struct rs_keyset *ks = atomic_load(&app->keys);
	struct rs_console_info *info;
	struct rs_token_stats ts;
	json_t *root, *list;
	size_t active = 0, total = 0;
	int64_t now = rs_wall_s();
	uint64_t pending;
	bool all;
	int key;

	if (!(req->method == HTTP_GET || req->method == HTTP_HEAD))
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use GET",
					     "Allow: GET, HEAD\r\n");
	key = auth(app, ks, hc, req);
	if (key < 0)
		return;
	/* A key sees its own consoles; only an admin key sees every key's. */
	all = ks->keys[key].admin;
	info = calloc(MAX_SESSIONS_LISTED, sizeof(*info));
	list = json_array();
	if (!info || !list) {
		free(info);
		json_decref(list);
		return rs_http_respond_error(hc, 503, "no_memory", "out of memory", NULL);
	}
	for (unsigned w = 0; w < rs_engine_workers(app->engine); w++) {
		size_t n =
		    rs_console_list(rs_engine_worker(app->engine, w), info, MAX_SESSIONS_LISTED);

		for (size_t i = 0; i < RS_MIN(n, (size_t)MAX_SESSIONS_LISTED); i++) {
			char created[32], connected[32] = "", age[32], cdur[32] = "", vmid[16];
			bool live = !strcmp(info[i].state, "relay");

			if (!all && strcmp(info[i].api_key, ks->keys[key].name))
				continue;
			total++;
			active += live;
			iso_time(info[i].created_s, created);
			if (info[i].connected_s) {
				iso_time(info[i].connected_s, connected);
				duration((uint64_t)(now - info[i].connected_s) * 1000, cdur);
			}
			duration(info[i].age_ms, age);
			snprintf(vmid, sizeof(vmid), "%u", info[i].vmid);
			json_array_append_new(
			    list, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
					    "session_id", info[i].token_hash, "node", info[i].node,
					    "vmid", vmid, "created_at", created, "connected_at",
					    connected, "connected_duration", cdur, "status",
					    live ? "active" : "connecting", "age", age, "kind",
					    info[i].kind));
		}
		/* Sessions beyond the listing's bound are counted, not shown. */
		if (all && n > MAX_SESSIONS_LISTED)
			total += n - MAX_SESSIONS_LISTED;
	}
	free(info);
	if (app->fleet)
		fleet_status(app, ks->keys[key].name, all, list, &total, &active);
	rs_token_stats_get(app->tokens, &ts);
	pending = all ? ts.live : rs_api_key_pending(ks, key);
	root = json_pack("{s:I, s:I, s:I, s:I, s:o}", "total_sessions", (json_int_t)total,
			 "pending_tokens", (json_int_t)pending, "sessions_created",
			 (json_int_t)(total - active), "sessions_active", (json_int_t)active,
			 "sessions", list);
	reply(hc, 200, root);
}
