/* proto/pve_up.c — the upstream leg of a Proxmox VE console (see pve_up.h). */
#include "core/common.h"

#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include <jansson.h>
#include <llhttp.h>

#include "core/log.h"
#include "proto/pve_up.h"
#include "proto/ws.h"
#include "tls/boringssl.h"
#include "tls/client.h"

#define BODY_MAX (256 * 1024) /* vncproxy answers carry the cluster CA PEM */
#define WS_MAX 131072         /* pveproxy drops frames above 128 KiB */
#define TICKET_RENEW_MS (3600 * 1000) /* tickets live 2 h; renew at half */
#define LOCK_RETRY_MS 20
#define MAX_LOCKS 4096

struct endpoint {
	char host[256];
	uint16_t port;
	struct sockaddr_storage addr;
	socklen_t len;
};

struct cluster {
	char *name;
	struct endpoint *ep;
	size_t n_ep;
	char *token; /* "user@realm!id=secret" */
	char *user, *password;
	struct rs_tls_client *tls;
	bool own_tls;         /* false for inline upstreams (the shared client) */
	pthread_mutex_t lock; /* the login ticket below */
	char *ticket, *csrf;
	uint64_t ticket_ms;
};

/* VMs whose VNC authentication is in progress: every vncproxy call resets
 * the VM's VNC password, so a second console waits for the first. */
struct vmlock {
	const struct cluster *cl;
	uint32_t vmid;
};

struct rs_pve {
	struct cluster *cl;
	size_t n;
	struct rs_tls_client *inline_tls; /* NULL: inline details refused */
	struct rs_pve_counters ct;
	pthread_mutex_t locks_mu;
	struct vmlock locks[MAX_LOCKS];
	size_t n_locks;
};

enum step {
	S_CONNECT = 0,
	S_LOGIN,
	S_RESOURCES,
	S_STATUS,
	S_LOCK,
	S_PROXY,
	S_UPGRADE,
	S_TERM_OK,
	S_READY,
};

struct rs_pve_up {
	struct rs_pve *pve;
	struct cluster *cl;
	struct cluster *own; /* inline details: a cluster of one endpoint, ours */
	struct rs_worker *w;
	const struct rs_pve_up_ops *ops;
	void *arg;
	struct rs_conn *c;
	size_t ep;
	enum step step;
	bool term, lxc, type_known, locked, ended, have_login;
	uint32_t vmid;
	char node[64];
	/* Secrets of this console; wiped when freed. */
	char *ticket, *csrf;        /* login (user/password clusters) */
	char *vncticket, *vncpw, *vncuser;
	uint16_t vncport;
	/* The HTTP response being read. */
	llhttp_t ll;
	int status;
	char reason[160];
	char hname[32];
	size_t hname_len;
	bool in_value, want_accept, complete;
	char accept[40];
	uint8_t *body;
	size_t body_len;
	char ws_key[25];
	struct rs_ws_parser ws;
	uint8_t ok_seen;
	enum rs_console_cause last_cause;
	char last_reason[200];
	struct rs_timer timer;
	uint64_t deadline_ms;
};

/* --- clusters --- */

static int resolve(struct endpoint *e, const char *hostport, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	const char *colon = strrchr(hostport, ':');
	char port[8];
	size_t hl = (size_t)(colon - hostport);

	if (hostport[0] == '[' && hl >= 2 && hostport[hl - 1] == ']') {
		hostport++;
		hl -= 2;
	}
	snprintf(e->host, sizeof(e->host), "%.*s", (int)hl, hostport);
	snprintf(port, sizeof(port), "%s", colon + 1);
	e->port = (uint16_t)atoi(port);
	if (getaddrinfo(e->host, port, &hints, &ai) || !ai) {
		snprintf(err, errlen, "cannot resolve Proxmox endpoint '%s'", e->host);
		return -ENOENT;
	}
	memcpy(&e->addr, ai->ai_addr, ai->ai_addrlen);
	e->len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static void free_cluster(struct cluster *k)
{
	free(k->name);
	free(k->ep);
	if (k->own_tls)
		rs_tls_client_free(k->tls);
	if (k->token)
		explicit_bzero(k->token, strlen(k->token));
	if (k->password)
		explicit_bzero(k->password, strlen(k->password));
	if (k->ticket)
		explicit_bzero(k->ticket, strlen(k->ticket));
	if (k->csrf)
		explicit_bzero(k->csrf, strlen(k->csrf));
	free(k->token);
	free(k->user);
	free(k->password);
	free(k->ticket);
	free(k->csrf);
	pthread_mutex_destroy(&k->lock);
}

int rs_pve_new(struct rs_pve **out, const struct rs_config *cfg, char *err, size_t errlen)
{
	struct rs_pve *p = calloc(1, sizeof(*p));
	int ret = 0;

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->locks_mu, NULL);
	p->cl = rs_xcalloc(cfg->n_clusters + 1, sizeof(*p->cl));
	for (size_t i = 0; i < cfg->n_clusters && !ret; i++) {
		const struct rs_cluster_conf *cc = &cfg->clusters[i];
		struct cluster *k = &p->cl[i];
		struct rs_tls_client_opts o = {
			.name = cc->name,
			.ca_file = cc->ca_file,
			.pins = (const char *const *)cc->fingerprints,
			.n_pins = cc->n_fingerprints,
			.insecure = cc->insecure,
		};

		pthread_mutex_init(&k->lock, NULL);
		p->n = i + 1;
		k->name = rs_xstrdup(cc->name);
		k->token = cc->token ? rs_xstrdup(cc->token) : NULL;
		k->user = cc->user ? rs_xstrdup(cc->user) : NULL;
		k->password = cc->password ? rs_xstrdup(cc->password) : NULL;
		k->ep = rs_xcalloc(cc->n_endpoints, sizeof(*k->ep));
		for (size_t j = 0; j < cc->n_endpoints && !ret; j++) {
			ret = resolve(&k->ep[j], cc->endpoints[j], err, errlen);
			k->n_ep = j + 1;
		}
		if (!ret)
			ret = rs_tls_client_new(&k->tls, &o, err, errlen);
		k->own_tls = true;
	}
	if (!ret && cfg->inline_upstreams) {
		const struct rs_cluster_conf *cc = cfg->inline_upstreams;
		struct rs_tls_client_opts o = {
			.name = "inline",
			.ca_file = cc->ca_file,
			.pins = (const char *const *)cc->fingerprints,
			.n_pins = cc->n_fingerprints,
			.insecure = cc->insecure,
		};

		ret = rs_tls_client_new(&p->inline_tls, &o, err, errlen);
	}
	if (ret) {
		rs_pve_free(p);
		return ret;
	}
	*out = p;
	return 0;
}

void rs_pve_free(struct rs_pve *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++)
		free_cluster(&p->cl[i]);
	free(p->cl);
	rs_tls_client_free(p->inline_tls);
	pthread_mutex_destroy(&p->locks_mu);
	free(p);
}

static struct cluster *find_cluster(const struct rs_pve *p, const char *name)
{
	for (size_t i = 0; name && i < p->n; i++)
		if (!strcmp(p->cl[i].name, name))
			return &p->cl[i];
	return NULL;
}

bool rs_pve_has_cluster(const struct rs_pve *p, const char *name)
{
	return p && find_cluster(p, name);
}

const struct rs_pve_counters *rs_pve_counters(const struct rs_pve *p)
{
	return &p->ct;
}

static bool vm_lock(struct rs_pve *p, const struct cluster *cl, uint32_t vmid)
{
	bool ok = true;

	pthread_mutex_lock(&p->locks_mu);
	for (size_t i = 0; i < p->n_locks && ok; i++)
		ok = !(p->locks[i].cl == cl && p->locks[i].vmid == vmid);
	if (ok && p->n_locks < MAX_LOCKS)
		p->locks[p->n_locks++] = (struct vmlock){cl, vmid};
	pthread_mutex_unlock(&p->locks_mu);
	return ok;
}

static void vm_unlock(struct rs_pve *p, const struct cluster *cl, uint32_t vmid)
{
	pthread_mutex_lock(&p->locks_mu);
	for (size_t i = 0; i < p->n_locks; i++)
		if (p->locks[i].cl == cl && p->locks[i].vmid == vmid) {
			p->locks[i] = p->locks[--p->n_locks];
			break;
		}
	pthread_mutex_unlock(&p->locks_mu);
}

/* --- helpers --- */

static void wipe_str(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

/* Percent-encode everything but RFC 3986 unreserved characters: pveproxy
 * decodes '+' as a space, and tickets carry '+', '/', '=' and ':'. */
static size_t pct(char *out, size_t cap, const char *in)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *in && n + 4 < cap; in++) {
		unsigned char ch = (unsigned char)*in;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			out[n++] = (char)ch;
		} else {
			out[n++] = '%';
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		}
	}
	out[n] = 0;
	return n;
}

static void free_up(struct rs_pve_up *u)
{
	if (u->locked)
		vm_unlock(u->pve, u->cl, u->vmid);
	rs_timer_unlink(rs_worker_timers(u->w), &u->timer);
	wipe_str(&u->ticket);
	wipe_str(&u->csrf);
	wipe_str(&u->vncticket);
	wipe_str(&u->vncpw);
	wipe_str(&u->vncuser);
	free(u->body);
	if (u->own) {
		free_cluster(u->own);
		free(u->own);
	}
	explicit_bzero(u, sizeof(*u));
	free(u);
}

/* Report once and let go: the connection's close frees <u> (or we do when
 * there is no connection). */
static void end(struct rs_pve_up *u, enum rs_console_cause cause, const char *reason)
{
	if (u->ended)
		return;
	u->ended = true;
	if (u->locked) {
		vm_unlock(u->pve, u->cl, u->vmid);
		u->locked = false;
	}
	u->ops->on_end(u->arg, cause, reason);
	if (u->c)
		rs_conn_close(u->c, RS_CLOSE_NORMAL, 0);
	else
		free_up(u);
}

static void start_attempt(struct rs_pve_up *u);

/* This endpoint failed in a way another endpoint may not: try the next. */
static void failover(struct rs_pve_up *u, enum rs_console_cause cause, const char *why)
{
	struct endpoint *e = &u->cl->ep[u->ep];

	rs_warn("pve", "cluster %s endpoint %s:%u: %s", u->cl->name, e->host, e->port, why);
	u->last_cause = cause;
	snprintf(u->last_reason, sizeof(u->last_reason), "%s",
		 cause == RS_CC_UPSTREAM_TLS ? "the Proxmox server's certificate was not accepted"
					     : "the Proxmox cluster could not be reached");
	if (u->locked) {
		vm_unlock(u->pve, u->cl, u->vmid);
		u->locked = false;
	}
	if (u->c) {
		struct rs_conn *c = u->c;

		u->c = NULL;
		rs_conn_set_ops(c, NULL, NULL);
		rs_conn_close(c, RS_CLOSE_NORMAL, 0);
	}
	u->ep++;
	if (u->ep < u->cl->n_ep)
		atomic_fetch_add(&u->pve->ct.failovers, 1);
	start_attempt(u);
}

/* --- requests --- */

static void auth_headers(struct rs_pve_up *u, char *out, size_t cap, bool post)
{
	char enc[1200];

	if (u->cl->token) {
		snprintf(out, cap, "Authorization: PVEAPIToken=%s\r\n", u->cl->token);
		return;
	}
	pct(enc, sizeof(enc), u->ticket ? u->ticket : "");
	if (post)
		snprintf(out, cap, "Cookie: PVEAuthCookie=%s\r\nCSRFPreventionToken: %s\r\n", enc,
			 u->csrf ? u->csrf : "");
	else
		snprintf(out, cap, "Cookie: PVEAuthCookie=%s\r\n", enc);
	explicit_bzero(enc, sizeof(enc));
}

static void reset_response(struct rs_pve_up *u);

static int send_request(struct rs_pve_up *u, const char *method, const char *path,
			const char *body, const char *extra)
{
	struct endpoint *e = &u->cl->ep[u->ep];
	char auth[1400] = "", *req;
	int n, ret;

	if (u->step != S_LOGIN)
		auth_headers(u, auth, sizeof(auth), body != NULL);
	n = asprintf(&req,
		     "%s %s HTTP/1.1\r\nHost: %s:%u\r\nUser-Agent: ringside\r\n%s%s%s"
		     "%s%zu\r\n\r\n%s",
		     method, path, e->host, e->port, auth, extra ? extra : "",
		     body ? "Content-Type: application/x-www-form-urlencoded\r\n" : "",
		     body ? "Content-Length: " : "Content-Length: ", body ? strlen(body) : 0,
		     body ? body : "");
	explicit_bzero(auth, sizeof(auth));
	if (n < 0)
		return -ENOMEM;
	reset_response(u);
	ret = rs_conn_send(u->c, req, (size_t)n);
	explicit_bzero(req, (size_t)n);
	free(req);
	return ret;
}

static const char *type_of(const struct rs_pve_up *u)
{
	return u->lxc ? "lxc" : "qemu";
}

static void next_step(struct rs_pve_up *u);

static void on_lock_retry(struct rs_timer *t)
{
	struct rs_pve_up *u = rs_container_of(t, struct rs_pve_up, timer);

	if (rs_worker_now(u->w) >= u->deadline_ms) {
		end(u, RS_CC_HANDSHAKE_TIMEOUT, "the console did not open in time");
		return;
	}
	next_step(u);
}

static void on_deadline(struct rs_timer *t)
{
	struct rs_pve_up *u = rs_container_of(t, struct rs_pve_up, timer);

	end(u, RS_CC_HANDSHAKE_TIMEOUT, "the console did not open in time");
}

static void arm_deadline(struct rs_pve_up *u)
{
	u->timer.cb = on_deadline;
	rs_timer_link(rs_worker_timers(u->w), &u->timer, u->deadline_ms);
}

static void next_step(struct rs_pve_up *u)
{
	char path[400], body[2000], enc[1200];
	int ret = 0;

	if (u->cl->user && !u->have_login) {
		char user[600], *form;

		u->step = S_LOGIN;
		pct(user, sizeof(user), u->cl->user);
		pct(enc, sizeof(enc), u->cl->password);
		ret = asprintf(&form, "username=%s&password=%s", user, enc) < 0 ? -ENOMEM : 0;
		explicit_bzero(enc, sizeof(enc));
		if (!ret) {
			ret = send_request(u, "POST", "/api2/json/access/ticket", form, NULL);
			explicit_bzero(form, strlen(form));
			free(form);
		}
	} else if (!u->node[0] || !u->type_known) {
		u->step = S_RESOURCES;
		ret = send_request(u, "GET", "/api2/json/cluster/resources?type=vm", NULL, NULL);
	} else if (u->step < S_STATUS) {
		u->step = S_STATUS;
		snprintf(path, sizeof(path), "/api2/json/nodes/%s/%s/%u/status/current", u->node,
			 type_of(u), u->vmid);
		ret = send_request(u, "GET", path, NULL, NULL);
	} else if (u->step == S_STATUS || u->step == S_LOCK) {
		/* Serialise the VNC handshake per VM (vncproxy resets its password). */
		if (!u->term && !u->locked) {
			if (!vm_lock(u->pve, u->cl, u->vmid)) {
				u->step = S_LOCK;
				rs_timer_unlink(rs_worker_timers(u->w), &u->timer);
				u->timer.cb = on_lock_retry;
				rs_timer_link(rs_worker_timers(u->w), &u->timer,
					      rs_worker_now(u->w) + LOCK_RETRY_MS);
				return;
			}
			u->locked = true;
			rs_timer_unlink(rs_worker_timers(u->w), &u->timer);
			arm_deadline(u);
		}
		u->step = S_PROXY;
		snprintf(path, sizeof(path), "/api2/json/nodes/%s/%s/%u/%s", u->node, type_of(u),
			 u->vmid, u->term ? "termproxy" : "vncproxy");
		ret = send_request(u, "POST", path, u->term ? "" : "websocket=1", NULL);
	} else if (u->step == S_PROXY) {
		uint8_t key[16];
		char hdr[200];
		size_t n;

		u->step = S_UPGRADE;
		rs_random(key, sizeof(key));
		EVP_EncodeBlock((uint8_t *)u->ws_key, key, sizeof(key));
		n = pct(enc, sizeof(enc), u->vncticket);
		(void)n;
		snprintf(body, sizeof(body),
			 "/api2/json/nodes/%s/%s/%u/vncwebsocket?port=%u&vncticket=%s", u->node,
			 type_of(u), u->vmid, u->vncport, enc);
		explicit_bzero(enc, sizeof(enc));
		snprintf(hdr, sizeof(hdr),
			 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
			 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Protocol: binary\r\n",
			 u->ws_key);
		u->want_accept = true;
		ret = send_request(u, "GET", body, NULL, hdr);
		explicit_bzero(body, sizeof(body));
	}
	if (ret)
		end(u, RS_CC_NOMEM, "out of memory");
}

/* --- responses --- */

static int on_status(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_pve_up *u = ll->data;
	size_t have = strlen(u->reason);

	snprintf(u->reason + have, sizeof(u->reason) - have, "%.*s", (int)len, at);
	return 0;
}

static int on_hfield(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_pve_up *u = ll->data;

	if (u->in_value) {
		u->in_value = false;
		u->hname_len = 0;
	}
	if (u->hname_len + len < sizeof(u->hname)) {
		memcpy(u->hname + u->hname_len, at, len);
		u->hname_len += len;
	} else {
		u->hname_len = sizeof(u->hname); /* too long to be one we want */
	}
	return 0;
}

static int on_hvalue(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_pve_up *u = ll->data;
	size_t have;

	u->in_value = true;
	if (u->hname_len != 20 || strncasecmp(u->hname, "Sec-WebSocket-Accept", 20))
		return 0;
	have = strlen(u->accept);
	snprintf(u->accept + have, sizeof(u->accept) - have, "%.*s", (int)len, at);
	return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_pve_up *u = ll->data;
	uint8_t *p;

	if (u->body_len + len > BODY_MAX)
		return -1;
	p = realloc(u->body, u->body_len + len + 1);
	if (!p)
		return -1;
	u->body = p;
	memcpy(p + u->body_len, at, len);
	u->body_len += len;
	p[u->body_len] = 0;
	return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
	struct rs_pve_up *u = ll->data;

	u->status = ll->status_code;
	/* 101: the bytes after the head are WebSocket frames. */
	return u->status == 101 ? 2 : 0;
}

static int on_complete(llhttp_t *ll)
{
	struct rs_pve_up *u = ll->data;

	u->complete = true;
	return HPE_PAUSED;
}

static llhttp_settings_t resp_settings;
static pthread_once_t resp_once = PTHREAD_ONCE_INIT;

static void init_settings(void)
{
	llhttp_settings_init(&resp_settings);
	resp_settings.on_status = on_status;
	resp_settings.on_header_field = on_hfield;
	resp_settings.on_header_value = on_hvalue;
	resp_settings.on_body = on_body;
	resp_settings.on_headers_complete = on_headers_complete;
	resp_settings.on_message_complete = on_complete;
}

static void reset_response(struct rs_pve_up *u)
{
	pthread_once(&resp_once, init_settings);
	llhttp_init(&u->ll, HTTP_RESPONSE, &resp_settings);
	u->ll.data = u;
	u->status = 0;
	u->reason[0] = 0;
	u->accept[0] = 0;
	u->hname_len = 0;
	u->in_value = false;
	u->complete = false;
	free(u->body);
	u->body = NULL;
	u->body_len = 0;
}

static json_t *data_of(struct rs_pve_up *u, json_t **root)
{
	json_t *d;

	*root = json_loadb((const char *)(u->body ? u->body : (const uint8_t *)""), u->body_len, 0,
			   NULL);
	d = *root ? json_object_get(*root, "data") : NULL;
	return d;
}

static char *dup_field(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static void protocol_error(struct rs_pve_up *u, const char *what)
{
	rs_warn("pve", "cluster %s: unexpected answer to %s", u->cl->name, what);
	end(u, RS_CC_UPSTREAM_PROTOCOL, "Proxmox answered something unexpected");
}

/* Errors a console meets, each with a cause and a reason for the browser. */
static bool handle_error(struct rs_pve_up *u)
{
	char why[240];
	int st = u->status;

	if (st >= 200 && st < 300)
		return false;
	snprintf(why, sizeof(why), "HTTP %d %s", st, u->reason);
	if (st == 401) {
		if (u->have_login && u->cl->user) {
			/* A cached ticket may have been revoked: log in once more. */
			pthread_mutex_lock(&u->cl->lock);
			wipe_str(&u->cl->ticket);
			wipe_str(&u->cl->csrf);
			pthread_mutex_unlock(&u->cl->lock);
		}
		rs_warn("pve", "cluster %s: credentials refused (%s)", u->cl->name, why);
		end(u, RS_CC_UPSTREAM_AUTH, "the console service's Proxmox credentials were refused");
	} else if (st == 403) {
		rs_warn("pve", "cluster %s: VM %u: permission denied (%s)", u->cl->name, u->vmid, why);
		end(u, RS_CC_UPSTREAM_PERMISSION,
		    "the console service may not open this VM's console (VM.Console)");
	} else if (st == 500 && (strstr(u->reason, "does not exist") ||
				 (u->body && strstr((char *)u->body, "does not exist")))) {
		end(u, RS_CC_VM_NOT_FOUND, "this VM was not found where the console looked for it");
	} else if (st >= 500) {
		atomic_fetch_add(&u->pve->ct.api_errors, 1);
		failover(u, RS_CC_UPSTREAM_UNAVAILABLE, why);
	} else {
		rs_warn("pve", "cluster %s: VM %u: %s", u->cl->name, u->vmid, why);
		end(u, RS_CC_UPSTREAM_PROTOCOL, "Proxmox refused the console request");
	}
	return true;
}

static void handle_login(struct rs_pve_up *u, json_t *d)
{
	if (json_is_true(json_object_get(d, "NeedTFA")) ||
	    json_integer_value(json_object_get(d, "NeedTFA")) == 1) {
		rs_warn("pve", "cluster %s: account %s needs two-factor login: configure an API token "
			       "for ringside instead",
			u->cl->name, u->cl->user);
		end(u, RS_CC_UPSTREAM_AUTH,
		    "the console service's Proxmox account needs two-factor login");
		return;
	}
	u->ticket = dup_field(d, "ticket");
	u->csrf = dup_field(d, "CSRFPreventionToken");
	if (!u->ticket || !u->csrf) {
		protocol_error(u, "the login");
		return;
	}
	pthread_mutex_lock(&u->cl->lock);
	wipe_str(&u->cl->ticket);
	wipe_str(&u->cl->csrf);
	u->cl->ticket = strdup(u->ticket);
	u->cl->csrf = strdup(u->csrf);
	u->cl->ticket_ms = rs_now_ms();
	pthread_mutex_unlock(&u->cl->lock);
	atomic_fetch_add(&u->pve->ct.login_renewals, 1);
	u->have_login = true;
	next_step(u);
}

static void handle_resources(struct rs_pve_up *u, json_t *d)
{
	size_t i;
	json_t *r;

	json_array_foreach(d, i, r)
	{
		json_t *id = json_object_get(r, "vmid"), *node = json_object_get(r, "node"),
		       *type = json_object_get(r, "type");

		if (json_integer_value(id) != u->vmid || !json_is_string(node) || !json_is_string(type))
			continue;
		if (!u->type_known) {
			u->lxc = !strcmp(json_string_value(type), "lxc");
			u->type_known = true;
		}
		if (strcmp(json_string_value(type), type_of(u)) ||
		    (u->node[0] && strcmp(u->node, json_string_value(node)))) {
			end(u, RS_CC_VM_NOT_FOUND, "this console type does not match the guest");
			return;
		}
		snprintf(u->node, sizeof(u->node), "%s", json_string_value(node));
		next_step(u);
		return;
	}
	end(u, RS_CC_VM_NOT_FOUND, "this VM was not found in the cluster");
}

static void handle_status(struct rs_pve_up *u, json_t *d)
{
	json_t *st = json_object_get(d, "status");
	char why[80];

	if (!json_is_string(st)) {
		protocol_error(u, "the status check");
		return;
	}
	if (strcmp(json_string_value(st), "running")) {
		snprintf(why, sizeof(why), "VM %u is not running", u->vmid);
		end(u, RS_CC_VM_NOT_RUNNING, why);
		return;
	}
	next_step(u);
}

static void handle_proxy(struct rs_pve_up *u, json_t *d)
{
	json_t *port = json_object_get(d, "port");
	long p = json_is_integer(port)	 ? (long)json_integer_value(port)
		 : json_is_string(port) ? strtol(json_string_value(port), NULL, 10)
					 : 0;

	u->vncticket = dup_field(d, "ticket");
	u->vncpw = dup_field(d, "password");
	u->vncuser = dup_field(d, "user");
	if (!u->vncticket || !u->vncuser || p < 5900 || p > 5999 || strlen(u->vncticket) > 512) {
		protocol_error(u, u->term ? "termproxy" : "vncproxy");
		return;
	}
	u->vncport = (uint16_t)p;
	next_step(u);
}

static int ws_send_frame(struct rs_pve_up *u, int op, struct rs_buf *b, uint8_t *data, size_t len)
{
	uint8_t hdr[RS_WS_MAX_HEADER], key[4];
	size_t hl;

	rs_random(key, sizeof(key));
	hl = rs_ws_frame_header(hdr, op, true, len, key);
	rs_ws_mask(data, len, key, 0);
	if (rs_conn_send(u->c, hdr, hl))
		return -ENOMEM;
	if (!len)
		return 0;
	return b ? rs_conn_send_buf(u->c, b, data, len) : rs_conn_send(u->c, data, len);
}

static void become_ready(struct rs_pve_up *u)
{
	char pw[9] = "";

	u->step = S_READY;
	rs_timer_unlink(rs_worker_timers(u->w), &u->timer);
	if (!u->term) {
		/* Section 4.1: password, else the ticket; DES uses 8 bytes. */
		snprintf(pw, sizeof(pw), "%s", u->vncpw ? u->vncpw : u->vncticket);
	}
	wipe_str(&u->vncticket);
	wipe_str(&u->vncpw);
	wipe_str(&u->ticket);
	wipe_str(&u->csrf);
	u->ops->on_ready(u->arg, u->term ? NULL : pw);
	explicit_bzero(pw, sizeof(pw));
}

static void ws_bytes(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len);

static void handle_upgrade(struct rs_pve_up *u, struct rs_buf *b, uint8_t *rest, size_t rest_len)
{
	char want[29];

	rs_ws_accept_key(u->ws_key, want);
	if (u->status != 101) {
		if (!handle_error(u))
			protocol_error(u, "the console WebSocket");
		return;
	}
	if (strcmp(want, u->accept)) {
		protocol_error(u, "the console WebSocket (accept key)");
		return;
	}
	rs_ws_parser_init(&u->ws, false, WS_MAX, UINT64_MAX);
	if (u->term) {
		char *line;
		int n = asprintf(&line, "%s:%s\n", u->vncuser, u->vncticket);

		if (n < 0 || ws_send_frame(u, RS_WS_OP_BINARY, NULL, (uint8_t *)line, (size_t)n)) {
			if (n >= 0) {
				explicit_bzero(line, (size_t)n);
				free(line);
			}
			end(u, RS_CC_NOMEM, "out of memory");
			return;
		}
		explicit_bzero(line, (size_t)n);
		free(line);
		u->step = S_TERM_OK;
		wipe_str(&u->vncticket);
	} else {
		become_ready(u);
	}
	if (!u->ended && rest_len)
		ws_bytes(u, b, rest, rest_len);
}

static void handle_response(struct rs_pve_up *u)
{
	json_t *root = NULL, *d;

	if (handle_error(u))
		return;
	d = data_of(u, &root);
	if (!d) {
		json_decref(root);
		protocol_error(u, "an API call");
		return;
	}
	switch (u->step) {
	case S_LOGIN:
		handle_login(u, d);
		break;
	case S_RESOURCES:
		handle_resources(u, d);
		break;
	case S_STATUS:
		handle_status(u, d);
		break;
	case S_PROXY:
		handle_proxy(u, d);
		break;
	default:
		protocol_error(u, "an API call");
		break;
	}
	/* Tickets in the body: wipe before freeing. */
	if (u->body)
		explicit_bzero(u->body, u->body_len);
	json_decref(root);
}

/* Terminal output after the handshake: strip termproxy's "OK" first. */
static void term_or_data(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len)
{
	while (u->step == S_TERM_OK && len) {
		if (data[0] != "OK"[u->ok_seen]) {
			end(u, RS_CC_UPSTREAM_AUTH, "the terminal refused the console ticket");
			return;
		}
		data++, len--;
		if (++u->ok_seen == 2)
			become_ready(u);
	}
	if (len && u->step == S_READY)
		u->ops->on_data(u->arg, b, data, len);
}

static void ws_bytes(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len)
{
	while (len && !u->ended) {
		struct rs_ws_event ev;
		int n = rs_ws_parse(&u->ws, data, len, &ev);

		if (n < 0 || ev.type == RS_WS_EV_ERROR) {
			end(u, RS_CC_TARGET_PROTOCOL, "the console stream broke");
			return;
		}
		data += n;
		len -= (size_t)n;
		if (ev.type == RS_WS_EV_DATA)
			term_or_data(u, b, (uint8_t *)ev.data, ev.len);
		else if (ev.type == RS_WS_EV_PING &&
			 ws_send_frame(u, RS_WS_OP_PONG, NULL, (uint8_t *)ev.data, ev.len))
			end(u, RS_CC_NOMEM, "out of memory");
		else if (ev.type == RS_WS_EV_CLOSE)
			end(u, RS_CC_TARGET_CLOSED, "the console closed");
		if (!n && ev.type == RS_WS_EV_NONE)
			break;
	}
}

/* --- connection --- */

static void up_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct rs_pve_up *u = rs_conn_ctx(c);

	if (u->ended)
		return;
	if (u->step >= S_TERM_OK) {
		ws_bytes(u, b, data, len);
		return;
	}
	while (len && !u->ended) {
		enum llhttp_errno e = llhttp_execute(&u->ll, (const char *)data, len);
		size_t used = len;

		if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)
			used = (size_t)(llhttp_get_error_pos(&u->ll) - (const char *)data);
		else if (e != HPE_OK) {
			failover(u, RS_CC_UPSTREAM_PROTOCOL, "malformed HTTP answer");
			return;
		}
		data += used;
		len -= used;
		if (e == HPE_PAUSED_UPGRADE || (u->step == S_UPGRADE && u->complete)) {
			handle_upgrade(u, b, data, len);
			return;
		}
		if (!u->complete)
			return;
		handle_response(u);
	}
}

static void up_on_eof(struct rs_conn *c)
{
	struct rs_pve_up *u = rs_conn_ctx(c);

	if (u->step == S_READY || u->step == S_TERM_OK) {
		/* pveproxy never sends a close frame: this is how consoles end. A
		 * console that ends before any byte is a guest that is not running. */
		end(u, RS_CC_TARGET_CLOSED, "the console closed");
		return;
	}
	failover(u, RS_CC_UPSTREAM_UNAVAILABLE, "connection closed during the API calls");
}

static void up_on_drain(struct rs_conn *c)
{
	struct rs_pve_up *u = rs_conn_ctx(c);

	if (u->step == S_READY && u->ops->on_drain)
		u->ops->on_drain(u->arg);
}

static void up_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct rs_pve_up *u = rs_conn_ctx(c);

	(void)why;
	u->c = NULL;
	if (!u->ended) {
		if (u->step >= S_TERM_OK)
			end(u, RS_CC_TARGET_RESET, "the connection to the console broke");
		else
			failover(u, RS_CC_UPSTREAM_UNAVAILABLE, err ? strerror(err) : "closed");
		return;
	}
	free_up(u);
}

static void on_tls(struct rs_conn *c, void *arg, int res, const char *msg)
{
	struct rs_pve_up *u = arg;

	(void)c;
	if (res) {
		failover(u, res == -EKEYREJECTED ? RS_CC_UPSTREAM_TLS : RS_CC_UPSTREAM_UNAVAILABLE,
			 msg ? msg : "TLS handshake failed");
		return;
	}
	next_step(u);
}

static void up_on_connect(struct rs_conn *c, int res)
{
	struct rs_pve_up *u = rs_conn_ctx(c);
	struct endpoint *e = &u->cl->ep[u->ep];

	if (res) {
		failover(u, RS_CC_UPSTREAM_UNAVAILABLE, strerror(-res));
		return;
	}
	if (rs_tls_client_attach(u->cl->tls, c, e->host, e->port, on_tls, u))
		end(u, RS_CC_NOMEM, "out of memory");
}

static const struct rs_conn_ops up_ops = {
	.on_data = up_on_data,
	.on_eof = up_on_eof,
	.on_drain = up_on_drain,
	.on_connect = up_on_connect,
	.on_close = up_on_close,
};

static void start_attempt(struct rs_pve_up *u)
{
	struct endpoint *e;
	int ret;

	if (u->ep >= u->cl->n_ep) {
		end(u, u->last_cause ? u->last_cause : RS_CC_UPSTREAM_UNAVAILABLE,
		    u->last_reason[0] ? u->last_reason : "the Proxmox cluster could not be reached");
		return;
	}
	e = &u->cl->ep[u->ep];
	u->step = S_CONNECT;
	if (u->cl->user && !u->have_login) {
		/* A ticket younger than half its life is reused; CSRF goes with it. */
		pthread_mutex_lock(&u->cl->lock);
		if (u->cl->ticket && rs_now_ms() - u->cl->ticket_ms < TICKET_RENEW_MS) {
			u->ticket = strdup(u->cl->ticket);
			u->csrf = strdup(u->cl->csrf);
			u->have_login = u->ticket && u->csrf;
		}
		pthread_mutex_unlock(&u->cl->lock);
	}
	ret = rs_conn_connect(u->w, (struct sockaddr *)&e->addr, e->len, NULL, 0,
			      (unsigned)RS_MIN(u->deadline_ms - rs_worker_now(u->w), 10000), &up_ops,
			      u, &u->c);
	if (ret) {
		u->c = NULL;
		failover(u, RS_CC_UPSTREAM_UNAVAILABLE, strerror(-ret));
	}
}

int rs_pve_up_open(struct rs_pve *p, struct rs_worker *w, const struct rs_console_spec *spec,
		   unsigned timeout_ms, const struct rs_pve_up_ops *ops, void *arg,
		   struct rs_pve_up **out)
{
	struct cluster *cl = p ? find_cluster(p, spec->cluster) : NULL;
	struct rs_pve_up *u;

	if (!cl && !(p && p->inline_tls && !spec->cluster && spec->host && spec->user))
		return -ENOENT;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	if (!cl) {
		/* ProxmoxVNC-style inline details: one endpoint, a login, the
		 * shared inline verification policy; nothing cached across consoles. */
		struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
					 .ai_socktype = SOCK_STREAM},
				*ai = NULL;
		char port[8];

		cl = u->own = calloc(1, sizeof(*cl));
		if (cl) {
			pthread_mutex_init(&cl->lock, NULL);
			cl->name = strdup("inline");
			cl->ep = calloc(1, sizeof(*cl->ep));
			cl->user = strdup(spec->user);
			cl->password = strdup(spec->password ? spec->password : "");
			cl->tls = p->inline_tls;
		}
		snprintf(port, sizeof(port), "%u", spec->port ? spec->port : 8006);
		if (!cl || !cl->name || !cl->ep || !cl->user || !cl->password ||
		    getaddrinfo(spec->host, port, &hints, &ai) || !ai) {
			if (ai)
				freeaddrinfo(ai);
			u->w = w;
			free_up(u);
			return -EINVAL;
		}
		snprintf(cl->ep[0].host, sizeof(cl->ep[0].host), "%s", spec->host);
		cl->ep[0].port = spec->port ? spec->port : 8006;
		memcpy(&cl->ep[0].addr, ai->ai_addr, ai->ai_addrlen);
		cl->ep[0].len = ai->ai_addrlen;
		cl->n_ep = 1;
		freeaddrinfo(ai);
	}
	u->pve = p;
	u->cl = cl;
	u->w = w;
	u->ops = ops;
	u->arg = arg;
	u->vmid = spec->vmid;
	u->term = spec->kind == RS_CONSOLE_PVE_TERM;
	u->lxc = spec->pve_type && !strcmp(spec->pve_type, "lxc");
	u->type_known = spec->pve_type != NULL;
	if (spec->node)
		snprintf(u->node, sizeof(u->node), "%s", spec->node);
	u->deadline_ms = rs_worker_now(w) + timeout_ms;
	rs_timer_init(&u->timer, on_deadline);
	arm_deadline(u);
	*out = u;
	start_attempt(u);
	return 0;
}

int rs_pve_up_send(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len)
{
	while (len) {
		size_t n = RS_MIN(len, (size_t)WS_MAX);
		int ret = ws_send_frame(u, RS_WS_OP_BINARY, b, data, n);

		if (ret)
			return ret;
		data += n;
		len -= n;
	}
	return 0;
}

bool rs_pve_up_congested(const struct rs_pve_up *u)
{
	return u->c && rs_conn_congested(u->c);
}

void rs_pve_up_pause(struct rs_pve_up *u)
{
	if (u->c)
		rs_conn_pause(u->c);
}

void rs_pve_up_resume(struct rs_pve_up *u)
{
	if (u->c)
		rs_conn_resume(u->c);
}

void rs_pve_up_auth_done(struct rs_pve_up *u)
{
	if (u->locked) {
		vm_unlock(u->pve, u->cl, u->vmid);
		u->locked = false;
	}
}

void rs_pve_up_close(struct rs_pve_up *u)
{
	if (u->ended)
		return;
	u->ended = true;
	if (u->c)
		rs_conn_close(u->c, RS_CLOSE_NORMAL, 0);
	else
		free_up(u);
}
