/* proto/pve_up.c — the upstream leg of a Proxmox VE console (see pve_up.h). */
#include "core/common.h"

#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/log.h"
#include "core/portpool.h"
#include "proto/http_resp.h"
#include "proto/pve.h"
#include "proto/pve_up.h"
#include "proto/redis.h"
#include "proto/ws.h"
#include "tls/boringssl.h"
#include "tls/client.h"

#define REQ_MAX		8192	      /* the longest request: vncwebsocket with an encoded ticket */
#define WS_MAX		131072	      /* pveproxy drops frames above 128 KiB */
#define TICKET_RENEW_MS (3600 * 1000) /* tickets live 2 h; renew at half */
#define LOCK_RETRY_MS	20
#define MAX_LOCKS	4096
/* The fleet's VM lock lives at most this long when its box dies holding it;
 * a live box releases it as soon as the VNC authentication is over. */
#define FLEET_LOCK_MIN_MS 2000
#define FLEET_LOCK_MAX_MS 30000

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
	char *token; /* "user@realm!id=secret", split at the last '=' below */
	const char *token_secret;
	char *user, *password;
	struct rs_tls_client *tls;
	bool own_tls;	      /* false for inline upstreams (the shared client) */
	pthread_mutex_t lock; /* the login ticket below */
	char *ticket, *csrf;
	uint64_t ticket_ms;
};

/* VMs whose VNC authentication is in progress: every vncproxy call resets
 * the VM's VNC password, so a second console waits for the first. */
struct vmlock {
	const void *cl;
	uint32_t vmid;
};

struct rs_pve {
	struct cluster *cl;
	size_t n;
	struct rs_tls_client *inline_tls; /* NULL: inline details refused */
	unsigned upgrade_timeout_ms;	  /* vncwebsocket request to its 101 */
	struct rs_pve_counters ct;
	pthread_mutex_t locks_mu;
	struct vmlock locks[MAX_LOCKS];
	size_t n_locks;
	/* A fleet (rs_pve_set_fleet): the per-VM lock also holds across boxes. */
	struct rs_redis_pool *fleet;
	char fleet_prefix[64], fleet_node[64];
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

/* What only the console's setup needs: freed (secrets wiped) once the
 * console is established — for a terminal when termproxy said OK, for a VNC
 * console when its VNC authentication is over (rs_pve_up_auth_done: the
 * VM's lock is let go then, and a refused password may still need a fresh
 * vncproxy until then). A held idle console keeps only struct rs_pve_up. */
struct pve_setup {
	struct rs_pve_up *u;
	struct rs_timer timer;
	uint64_t deadline_ms;
	char node[64];
	/* Secrets of this console; wiped when freed. */
	char *ticket, *csrf; /* login (user/password clusters) */
	char *vncticket, *vncpw, *vncuser;
	uint16_t vncport;
	struct rs_http_resp_parser rp; /* the answer being read */
	char ws_key[25];
	enum rs_console_cause last_cause;
	char last_reason[200];
	/* The fleet's VM lock: <lock_req> is the SET NX in flight (then
	 * <locked> is true: the box's own lock is held first), <flocked> when
	 * Redis granted it; <lock_val> tells our hold from another's. */
	struct rs_redis_req *lock_req;
	bool flocked;
	char lock_key[200], lock_val[96];
};

/* One bit per flag and the rest grouped by alignment: a held console's
 * Proxmox leg is one 320-byte allocation. Only its worker touches it. */
struct rs_pve_up {
	struct rs_pve *pve;
	struct cluster *cl;
	struct cluster *own; /* inline details: a cluster of one endpoint, ours */
	struct rs_worker *w;
	const struct rs_pve_up_ops *ops;
	void *arg;
	struct rs_conn *c;
	struct rs_portpool *ports;
	struct pve_setup *st; /* NULL once established (see struct pve_setup) */
	/* The pair held while <c> exists: IPv4 only (the pool is used for IPv4
	 * endpoints), kept short since a held console keeps it. */
	struct sockaddr_in src;
	uint32_t ep;
	enum step step;
	/* Callbacks of <u> on the stack; <dead>: free when the last returns
	 * (DESIGN.md "Nothing is freed inside its own callback"). */
	unsigned depth;
	/* Bumped whenever an attempt's connection is let go: a loop over
	 * received bytes stops as soon as they belong to an older attempt. */
	unsigned attempt;
	uint32_t vmid;
	uint8_t ok_seen;
	bool have_src : 1;
	bool term : 1, lxc : 1, type_known : 1, locked : 1, ended : 1, have_login : 1;
	/* The TLS handshake of <c> is complete: the only state in which a
	 * request may be queued (a secret never leaves in clear). */
	bool tls_ready : 1;
	/* <c> reached EOF after the answer being handled: the next request
	 * needs a new connection. */
	bool peer_eof : 1;
	/* Each second chance is taken once per console. */
	bool node_retried : 1, ticket_retried : 1, auth_retried : 1;
	bool dead : 1;
	struct rs_ws_parser ws;
	/* The latest unanswered ping (RFC 6455 5.5.3 allows answering only
	 * it): sent when the connection is not congested, so a node that pings
	 * and never reads cannot make pongs pile up. Allocated when a ping
	 * arrives and freed once its pong is queued: pveproxy does not ping, so
	 * a held console would carry the 127 bytes for nothing. */
	struct rs_ws_pong *pong;
};
_Static_assert(sizeof(struct rs_pve_up) <= 320, "struct rs_pve_up outgrew its jemalloc size class");

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
	if (k->token) {
		explicit_bzero((char *)k->token_secret, strlen(k->token_secret));
		explicit_bzero(k->token, strlen(k->token));
	}
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
	p->upgrade_timeout_ms =
	    cfg->upstream_upgrade_timeout_ms ? cfg->upstream_upgrade_timeout_ms : 5000;
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
		if (k->token) {
			char *eq = strrchr(k->token, '='); /* validated by the config */

			*eq = 0;
			k->token_secret = eq + 1;
		}
		k->user = cc->user ? rs_xstrdup(cc->user) : NULL;
		if (cc->token && !cc->user)
			rs_warn("pve",
				"cluster %s has only an API token: terminal consoles fail on nodes "
				"without the April 2026 update (their termproxy refuses tokens); "
				"configure user and password too for terminals",
				cc->name);
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

bool rs_pve_vm_lock(struct rs_pve *p, const void *cl, uint32_t vmid)
{
	bool ok = true;

	pthread_mutex_lock(&p->locks_mu);
	for (size_t i = 0; i < p->n_locks && ok; i++)
		ok = !(p->locks[i].cl == cl && p->locks[i].vmid == vmid);
	/* A full table is a busy lock, never a success without one: the
	 * console waits for a free slot as it waits for the VM. */
	if (ok && p->n_locks == MAX_LOCKS)
		ok = false;
	if (ok)
		p->locks[p->n_locks++] = (struct vmlock){cl, vmid};
	pthread_mutex_unlock(&p->locks_mu);
	return ok;
}

void rs_pve_vm_unlock(struct rs_pve *p, const void *cl, uint32_t vmid)
{
	pthread_mutex_lock(&p->locks_mu);
	for (size_t i = 0; i < p->n_locks; i++)
		if (p->locks[i].cl == cl && p->locks[i].vmid == vmid) {
			p->locks[i] = p->locks[--p->n_locks];
			break;
		}
	pthread_mutex_unlock(&p->locks_mu);
}

void rs_pve_set_fleet(struct rs_pve *p, struct rs_redis_pool *pool, const char *key_prefix,
		      const char *node)
{
	p->fleet = pool;
	snprintf(p->fleet_prefix, sizeof(p->fleet_prefix), "%s", key_prefix ? key_prefix : "");
	snprintf(p->fleet_node, sizeof(p->fleet_node), "%s", node ? node : "");
}

/* --- helpers --- */

/* Compare-and-delete: only the holder's own value releases the lock (one
 * that expired and was taken by another box stays theirs). */
static const char unlock_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
    "else return 0 end";

static void on_fleet_unlocked(void *arg, const redisReply *reply, int err)
{
	struct rs_pve *p = arg;

	if (err || !reply || reply->type == REDIS_REPLY_ERROR)
		atomic_fetch_add(&p->ct.vmlock_errors, 1); /* it expires on its own */
}

static void fleet_unlock(struct rs_pve_up *u)
{
	struct rs_redis *r = rs_redis_of(u->pve->fleet, u->w);
	const char *argv[] = {"EVAL", unlock_lua, "1", u->st->lock_key, u->st->lock_val};

	if (!r || rs_redis_cmd(r, on_fleet_unlocked, u->pve, 5, argv, NULL, NULL))
		atomic_fetch_add(&u->pve->ct.vmlock_errors, 1);
}

/* Let go of the VM's lock, the fleet's first (a SET still in flight may
 * have been executed: it is released like a granted one). */
static void unlock_vm(struct rs_pve_up *u)
{
	if (!u->locked)
		return;
	if (u->st->lock_req) {
		rs_redis_cancel(u->st->lock_req);
		u->st->lock_req = NULL;
		fleet_unlock(u);
	} else if (u->st->flocked) {
		fleet_unlock(u);
	}
	u->st->flocked = false;
	rs_pve_vm_unlock(u->pve, u->cl, u->vmid);
	u->locked = false;
}

static void wipe_str(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

/* The setup is over (or the console is): its timer stops and its secrets
 * are wiped. The VM's lock is let go first (its fleet key is in <st>). */
static void free_setup(struct rs_pve_up *u)
{
	struct pve_setup *st = u->st;

	if (!st)
		return;
	unlock_vm(u);
	rs_timer_unlink(rs_worker_timers(u->w), &st->timer);
	wipe_str(&st->ticket);
	wipe_str(&st->csrf);
	wipe_str(&st->vncticket);
	wipe_str(&st->vncpw);
	wipe_str(&st->vncuser);
	rs_http_resp_release(&st->rp);
	explicit_bzero(st, sizeof(*st));
	free(st);
	u->st = NULL;
}

static void free_up(struct rs_pve_up *u)
{
	free_setup(u);
	free(u->pong);
	if (u->own) {
		free_cluster(u->own);
		free(u->own);
	}
	explicit_bzero(u, sizeof(*u));
	free(u);
}

/* Every entry point (connection callbacks, timers, calls from the console)
 * brackets its work with hold()/release(): whatever ends or fails over
 * inside only marks <u> dead, and the outermost release() frees it. */
static void hold(struct rs_pve_up *u)
{
	u->depth++;
}

static void release(struct rs_pve_up *u)
{
	if (--u->depth == 0 && u->dead)
		free_up(u);
}

static void dispose(struct rs_pve_up *u)
{
	u->dead = true;
	if (!u->depth)
		free_up(u);
}

/* Report once and let go: the connection's close frees <u> (or we do when
 * there is no connection). */
static void end(struct rs_pve_up *u, enum rs_console_cause cause, const char *reason)
{
	if (u->ended)
		return;
	u->ended = true;
	u->attempt++;
	if (u->st)
		rs_timer_unlink(rs_worker_timers(u->w), &u->st->timer);
	unlock_vm(u);
	u->ops->on_end(u->arg, cause, reason);
	if (u->c)
		rs_conn_close(u->c, RS_CLOSE_NORMAL, 0);
	else
		dispose(u);
}

static void start_attempt(struct rs_pve_up *u, bool fresh);

/* A connection given up for the next endpoint: it closes on its own and
 * returns its (source address, port) pair once its socket is gone. */
struct orphan {
	struct rs_portpool *ports;
	struct sockaddr_in src;
	bool have_src;
};

/* Give back a pair held as a struct sockaddr_in (see rs_pve_up.src). */
static void put_pair(struct rs_portpool *ports, const struct sockaddr_in *src)
{
	struct sockaddr_storage ss = {0};

	memcpy(&ss, src, sizeof(*src));
	rs_portpool_put(ports, &ss);
}

static void orphan_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct orphan *o = rs_conn_ctx(c);

	(void)why, (void)err;
	if (o->have_src)
		put_pair(o->ports, &o->src);
	free(o);
}

static const struct rs_conn_ops orphan_ops = {.on_close = orphan_on_close};

static void orphan(struct rs_pve_up *u, struct rs_conn *c)
{
	struct orphan *o = calloc(1, sizeof(*o));

	if (o) {
		o->ports = u->ports;
		o->src = u->src;
		o->have_src = u->have_src;
	} else if (u->have_src) {
		put_pair(u->ports, &u->src); /* out of memory: give it back early */
	}
	u->have_src = false;
	rs_conn_set_ops(c, o ? &orphan_ops : NULL, o);
	rs_conn_close(c, RS_CLOSE_NORMAL, 0);
}

static void put_src(struct rs_pve_up *u)
{
	if (u->have_src)
		put_pair(u->ports, &u->src);
	u->have_src = false;
}

static void on_deadline(struct rs_timer *t);

static void arm_deadline(struct rs_pve_up *u)
{
	rs_timer_unlink(rs_worker_timers(u->w), &u->st->timer);
	u->st->timer.cb = on_deadline;
	rs_timer_link(rs_worker_timers(u->w), &u->st->timer, u->st->deadline_ms);
}

/* The current attempt is over: its connection is let go (bytes still in
 * flight on it are never read as the next attempt's answer), its timers
 * are disarmed (only the console's deadline runs), its parser is reset. */
static void attempt_over(struct rs_pve_up *u)
{
	u->attempt++;
	arm_deadline(u);
	if (u->c) {
		struct rs_conn *c = u->c;

		u->c = NULL;
		orphan(u, c);
	}
	u->tls_ready = false;
	u->peer_eof = false;
	rs_http_resp_reset(&u->st->rp);
}

/* This endpoint failed in a way another endpoint may not: try the next. */
static void failover(struct rs_pve_up *u, enum rs_console_cause cause, const char *why)
{
	struct endpoint *e = &u->cl->ep[u->ep];

	rs_warn("pve", "cluster %s endpoint %s:%u: reason=%s", u->cl->name, e->host, e->port,
		rs_log_q(why));
	u->st->last_cause = cause;
	snprintf(u->st->last_reason, sizeof(u->st->last_reason), "%s",
		 cause == RS_CC_UPSTREAM_TLS ? "the Proxmox server's certificate was not accepted"
					     : "the Proxmox cluster could not be reached");
	unlock_vm(u);
	attempt_over(u);
	u->ep++;
	if (u->ep < u->cl->n_ep)
		atomic_fetch_add(&u->pve->ct.failovers, 1);
	start_attempt(u, true);
}

/* Start over on the same endpoint with a new connection, keeping the
 * login, the lock and (unless the caller changed it) the step reached. */
static void reconnect(struct rs_pve_up *u)
{
	attempt_over(u);
	start_attempt(u, false);
}

/* --- requests --- */

/* Log in with user and password? Only clusters with a login do; where a
 * token is configured too, terminals still use the login: termproxy before
 * the April 2026 hardening verifies through /access/ticket, which refuses
 * API tokens. */
static bool use_login(const struct rs_pve_up *u)
{
	return u->cl->user && (!u->cl->token || u->term);
}

static void auth_of(const struct rs_pve_up *u, struct rs_pve_auth *a)
{
	memset(a, 0, sizeof(*a));
	if (!use_login(u)) {
		a->kind = RS_PVE_AUTH_TOKEN;
		a->token_id = u->cl->token;
		a->secret = u->cl->token_secret;
	} else {
		a->kind = RS_PVE_AUTH_TICKET;
		a->ticket = u->st->ticket;
		a->csrf = u->st->csrf;
	}
}

/* Queue a request built by the codec (<n> bytes in <req>, or -errno). */
static int send_built(struct rs_pve_up *u, char *req, int n)
{
	int ret = n;

	/* Requests carry the token or the ticket: never queue one on a
	 * connection whose TLS handshake has not completed. */
	if (n >= 0)
		ret = u->c && u->tls_ready ? rs_conn_send(u->c, req, (size_t)n) : -ENOTCONN;

	explicit_bzero(req, REQ_MAX);
	rs_http_resp_reset(&u->st->rp);
	return ret;
}

static enum rs_pve_vmtype type_of(const struct rs_pve_up *u)
{
	return u->lxc ? RS_PVE_LXC : RS_PVE_QEMU;
}

static void next_step(struct rs_pve_up *u);
static void on_lock_retry(struct rs_timer *t);
static void protocol_error(struct rs_pve_up *u, const char *what);

static bool fleet_lock(struct rs_pve_up *u);

static void wait_lock(struct rs_pve_up *u)
{
	rs_timer_unlink(rs_worker_timers(u->w), &u->st->timer);
	u->st->timer.cb = on_lock_retry;
	rs_timer_link(rs_worker_timers(u->w), &u->st->timer, rs_worker_now(u->w) + LOCK_RETRY_MS);
}

/* Waiting for the VM's lock holds no connection (pveproxy closes idle ones
 * after 5 s); once the lock is ours, a new connection takes up the step. */
static void on_lock_retry(struct rs_timer *t)
{
	struct rs_pve_up *u = rs_container_of(t, struct pve_setup, timer)->u;

	hold(u);
	if (rs_worker_now(u->w) >= u->st->deadline_ms) {
		end(u, RS_CC_HANDSHAKE_TIMEOUT, "the console did not open in time");
	} else if (rs_pve_vm_lock(u->pve, u->cl, u->vmid)) {
		u->locked = true;
		arm_deadline(u);
		if (!fleet_lock(u)) /* else the fleet's answer takes it up */
			start_attempt(u, false);
	} else {
		wait_lock(u);
	}
	release(u);
}

static void on_fleet_locked(void *arg, const redisReply *reply, int err)
{
	struct rs_pve_up *u = arg;

	hold(u);
	u->st->lock_req = NULL;
	if (!err && reply && reply->type == REDIS_REPLY_NIL) {
		/* Another box authenticates on this VM: wait as for our own. */
		atomic_fetch_add(&u->pve->ct.vmlock_waits, 1);
		rs_pve_vm_unlock(u->pve, u->cl, u->vmid);
		u->locked = false;
		u->step = S_LOCK;
		attempt_over(u);
		wait_lock(u);
	} else {
		if (!err && reply && reply->type == REDIS_REPLY_STATUS) {
			u->st->flocked = true;
		} else {
			/* Redis is unreachable or refused: go on with this box's
			 * lock alone rather than hold the console — a password reset
			 * by another box is still caught by rs_pve_up_retry_auth. */
			atomic_fetch_add(&u->pve->ct.vmlock_errors, 1);
			rs_warn("pve",
				"cluster %s: VM %u: the fleet's VM lock is unavailable (%s): "
				"going on with this box's lock",
				u->cl->name, u->vmid, err ? strerror(-err) : "refused");
		}
		if (!u->c)
			start_attempt(u, false); /* from on_lock_retry: no connection yet */
		else if (u->tls_ready)
			next_step(u); /* else on_tls takes up the step */
	}
	release(u);
}

/* Ask Redis for the VM's lock across the fleet (this box's own lock is held
 * already). True when the SET is in flight (on_fleet_locked takes the
 * console up), false when there is no fleet or the command could not be
 * sent (then the box's lock alone serialises, counted). */
static bool fleet_lock(struct rs_pve_up *u)
{
	struct rs_pve *p = u->pve;
	struct rs_redis *r = p->fleet ? rs_redis_of(p->fleet, u->w) : NULL;
	uint64_t now = rs_worker_now(u->w), nonce = 0;
	char px[24];
	const char *argv[6];

	if (!p->fleet || u->own || u->term)
		return false;
	rs_random(&nonce, sizeof(nonce));
	snprintf(u->st->lock_key, sizeof(u->st->lock_key), "%svmlock:%s:%u", p->fleet_prefix,
		 u->cl->name, u->vmid);
	snprintf(u->st->lock_val, sizeof(u->st->lock_val), "%s/%016llx", p->fleet_node,
		 (unsigned long long)nonce);
	snprintf(
	    px, sizeof(px), "%llu",
	    (unsigned long long)RS_MIN(
		RS_MAX(u->st->deadline_ms > now ? u->st->deadline_ms - now : 0, FLEET_LOCK_MIN_MS),
		FLEET_LOCK_MAX_MS));
	argv[0] = "SET", argv[1] = u->st->lock_key, argv[2] = u->st->lock_val;
	argv[3] = "NX", argv[4] = "PX", argv[5] = px;
	if (!r || rs_redis_cmd(r, on_fleet_locked, u, 6, argv, NULL, &u->st->lock_req)) {
		u->st->lock_req = NULL;
		atomic_fetch_add(&p->ct.vmlock_errors, 1);
		return false;
	}
	return true;
}

static void on_deadline(struct rs_timer *t)
{
	struct rs_pve_up *u = rs_container_of(t, struct pve_setup, timer)->u;

	hold(u);
	end(u, RS_CC_HANDSHAKE_TIMEOUT, "the console did not open in time");
	release(u);
}

/* pveproxy connects to the console port only when the upgrade arrives and
 * never answers when that connect fails (AnyEvent.pm, the die in the
 * tcp_connect callback is outside the eval): no 101 in time is its own
 * cause, not the whole handshake deadline. */
static void on_upgrade_timeout(struct rs_timer *t)
{
	struct rs_pve_up *u = rs_container_of(t, struct pve_setup, timer)->u;

	hold(u);
	rs_warn("pve", "cluster %s: VM %u: no answer to the console WebSocket in %u ms",
		u->cl->name, u->vmid, u->pve->upgrade_timeout_ms);
	end(u, RS_CC_CONSOLE_UNREACHABLE,
	    "the Proxmox node did not connect to the VM's console in time");
	release(u);
}

static void next_step(struct rs_pve_up *u)
{
	const struct endpoint *e = &u->cl->ep[u->ep];
	char host[300], req[REQ_MAX];
	struct rs_pve_auth auth;
	int n = 0;

	if (u->peer_eof) {
		/* The answer ended with the connection (no length): go on on a new one. */
		reconnect(u);
		return;
	}
	snprintf(host, sizeof(host), strchr(e->host, ':') ? "[%s]:%u" : "%s:%u", e->host, e->port);
	auth_of(u, &auth);
	if (use_login(u) && !u->have_login) {
		u->step = S_LOGIN;
		n = rs_pve_req_login(req, sizeof(req), host, u->cl->user, u->cl->password);
	} else if (!u->st->node[0] || !u->type_known) {
		u->step = S_RESOURCES;
		n = rs_pve_req_resources(req, sizeof(req), host, &auth);
	} else if (u->step < S_STATUS) {
		u->step = S_STATUS;
		n = rs_pve_req_status(req, sizeof(req), host, &auth, u->st->node, type_of(u),
				      u->vmid);
	} else if (u->step == S_STATUS || u->step == S_LOCK) {
		/* Serialise the VNC handshake per VM (vncproxy resets its password). */
		if (!u->term && !u->locked) {
			if (!rs_pve_vm_lock(u->pve, u->cl, u->vmid)) {
				u->step = S_LOCK;
				attempt_over(u);
				wait_lock(u);
				return;
			}
			u->locked = true;
			if (fleet_lock(u)) {
				u->step = S_LOCK;
				return; /* on_fleet_locked takes the step up */
			}
		}
		if (u->st->lock_req)
			return; /* a reconnection while the fleet's answer is awaited */
		u->step = S_PROXY;
		n = u->term ? rs_pve_req_termproxy(req, sizeof(req), host, &auth, u->st->node,
						   type_of(u), u->vmid)
			    : rs_pve_req_vncproxy(req, sizeof(req), host, &auth, u->st->node,
						  type_of(u), u->vmid, 0, 0);
	} else if (u->step == S_PROXY) {
		uint8_t key[16];

		u->step = S_UPGRADE;
		rs_random(key, sizeof(key));
		EVP_EncodeBlock((uint8_t *)u->st->ws_key, key, sizeof(key));
		n = rs_pve_req_vncwebsocket(req, sizeof(req), host, &auth, u->st->node, type_of(u),
					    u->vmid, u->st->vncport, u->st->vncticket,
					    u->st->ws_key);
		if (n >= 0) {
			uint64_t at = rs_worker_now(u->w) + u->pve->upgrade_timeout_ms;

			rs_timer_unlink(rs_worker_timers(u->w), &u->st->timer);
			u->st->timer.cb =
			    at < u->st->deadline_ms ? on_upgrade_timeout : on_deadline;
			rs_timer_link(rs_worker_timers(u->w), &u->st->timer,
				      RS_MIN(at, u->st->deadline_ms));
		}
	}
	n = send_built(u, req, n);
	if (n == -ENOTCONN)
		protocol_error(u, "a request before the TLS handshake");
	else if (n)
		end(u, n == -ENOMEM ? RS_CC_NOMEM : RS_CC_UPSTREAM_PROTOCOL,
		    n == -ENOMEM ? "out of memory" : "the console request could not be built");
}

/* --- responses --- */

static void protocol_error(struct rs_pve_up *u, const char *what)
{
	rs_warn("pve", "cluster %s: unexpected answer to %s", u->cl->name, what);
	end(u, RS_CC_UPSTREAM_PROTOCOL, "Proxmox answered something unexpected");
}

/* An answer that is not what the step needed: a cause and a reason for the
 * browser (no address, node or secret), or the next endpoint. */
static void api_error(struct rs_pve_up *u, enum rs_pve_err code, const struct rs_pve_error *err)
{
	char why[300];

	snprintf(why, sizeof(why), "%s (HTTP %d %s)", rs_pve_err_str(code), err->status,
		 err->detail);
	if (rs_pve_err_failover(code)) {
		atomic_fetch_add(&u->pve->ct.api_errors, 1);
		failover(u, RS_CC_UPSTREAM_UNAVAILABLE, why);
		return;
	}
	rs_warn("pve", "cluster %s: VM %u: reason=%s", u->cl->name, u->vmid, rs_log_q(why));
	switch (code) {
	case RS_PVE_E_AUTH:
		if (u->step == S_UPGRADE && !u->ticket_retried) {
			/* vncwebsocket's 401 is about the console ticket (expired,
			 * or checked by a node that did not issue it), not the
			 * login: one fresh vncproxy/termproxy. */
			u->ticket_retried = true;
			u->step = S_STATUS;
			reconnect(u);
			break;
		}
		if (u->have_login && u->cl->user) {
			/* A cached ticket may have been revoked: log in afresh next time. */
			pthread_mutex_lock(&u->cl->lock);
			wipe_str(&u->cl->ticket);
			wipe_str(&u->cl->csrf);
			pthread_mutex_unlock(&u->cl->lock);
		}
		end(u, RS_CC_UPSTREAM_AUTH,
		    "the console service's Proxmox credentials were refused");
		break;
	case RS_PVE_E_TFA:
		rs_warn("pve",
			"cluster %s: account %s needs two-factor login: configure an API token "
			"for ringside instead",
			u->cl->name, u->cl->user ? u->cl->user : "-");
		end(u, RS_CC_UPSTREAM_AUTH,
		    "the console service's Proxmox account needs two-factor login");
		break;
	case RS_PVE_E_PERM:
		end(u, RS_CC_UPSTREAM_PERMISSION,
		    "the console service may not open this VM's console (VM.Console)");
		break;
	case RS_PVE_E_NOT_FOUND:
		if (!u->node_retried &&
		    (u->step == S_STATUS || u->step == S_PROXY || u->step == S_UPGRADE)) {
			/* The VM moved (migration) since the node was given or
			 * found: look it up once more, as Proxmox's own xterm.js
			 * client does. */
			u->node_retried = true;
			u->st->node[0] = '\0';
			u->step = S_CONNECT;
			reconnect(u);
			break;
		}
		end(u, RS_CC_VM_NOT_FOUND, "this VM was not found where the console looked for it");
		break;
	case RS_PVE_E_NO_NODE:
		end(u, RS_CC_VM_NOT_FOUND, "this VM's node is not a member of the Proxmox cluster");
		break;
	case RS_PVE_E_NO_VM:
		end(u, RS_CC_VM_NOT_FOUND, "this VM was not found in the cluster");
		break;
	case RS_PVE_E_NOMEM:
		end(u, RS_CC_NOMEM, "out of memory");
		break;
	default:
		end(u, RS_CC_UPSTREAM_PROTOCOL, "Proxmox refused the console request");
		break;
	}
}

static void handle_login(struct rs_pve_up *u, const struct rs_http_resp *r)
{
	struct rs_pve_login l = {0};
	struct rs_pve_error err;
	enum rs_pve_err code =
	    rs_pve_parse_login(r->status, r->reason, r->body, r->body_len, &l, &err);

	if (code) {
		rs_pve_login_wipe(&l);
		api_error(u, code, &err);
		return;
	}
	u->st->ticket = l.ticket;
	u->st->csrf = l.csrf;
	l.ticket = l.csrf = NULL;
	rs_pve_login_wipe(&l);
	pthread_mutex_lock(&u->cl->lock);
	wipe_str(&u->cl->ticket);
	wipe_str(&u->cl->csrf);
	u->cl->ticket = strdup(u->st->ticket);
	u->cl->csrf = strdup(u->st->csrf);
	u->cl->ticket_ms = rs_now_ms();
	pthread_mutex_unlock(&u->cl->lock);
	atomic_fetch_add(&u->pve->ct.login_renewals, 1);
	u->have_login = true;
	next_step(u);
}

static void handle_resources(struct rs_pve_up *u, const struct rs_http_resp *r)
{
	struct rs_pve_error err;
	struct rs_pve_vm vm;
	enum rs_pve_err code =
	    rs_pve_parse_resources(r->status, r->reason, r->body, r->body_len, u->vmid, &vm, &err);

	if (code) {
		api_error(u, code, &err);
		return;
	}
	if (!u->type_known) {
		u->lxc = vm.type == RS_PVE_LXC;
		u->type_known = true;
	}
	if (vm.type != type_of(u) || (u->st->node[0] && strcmp(u->st->node, vm.node))) {
		end(u, RS_CC_VM_NOT_FOUND, "this VM was not found where the console looked for it");
		return;
	}
	snprintf(u->st->node, sizeof(u->st->node), "%s", vm.node);
	next_step(u);
}

static void handle_status(struct rs_pve_up *u, const struct rs_http_resp *r)
{
	struct rs_pve_error err;
	bool running = false;
	enum rs_pve_err code =
	    rs_pve_parse_status(r->status, r->reason, r->body, r->body_len, &running, &err);
	char why[80];

	if (code) {
		api_error(u, code, &err);
		return;
	}
	if (!running) {
		snprintf(why, sizeof(why), "VM %u is not running", u->vmid);
		end(u, RS_CC_VM_NOT_RUNNING, why);
		return;
	}
	next_step(u);
}

static void handle_proxy(struct rs_pve_up *u, const struct rs_http_resp *r)
{
	struct rs_pve_console con = {0};
	struct rs_pve_error err;
	enum rs_pve_err code =
	    rs_pve_parse_console(r->status, r->reason, r->body, r->body_len, &con, &err);
	char pw[9];

	if (code) {
		rs_pve_console_wipe(&con);
		api_error(u, code, &err);
		return;
	}
	/* A retry replaces the previous console's secrets. */
	wipe_str(&u->st->vncpw);
	wipe_str(&u->st->vncticket);
	wipe_str(&u->st->vncuser);
	/* Section 4.1: the password, else the ticket; DES uses 8 bytes. */
	rs_pve_vnc_password(&con, pw);
	u->st->vncpw = strdup(pw);
	explicit_bzero(pw, sizeof(pw));
	u->st->vncticket = con.ticket;
	u->st->vncuser = con.user;
	u->st->vncport = con.port;
	con.ticket = con.user = NULL;
	rs_pve_console_wipe(&con);
	if (!u->st->vncpw || !u->st->vncticket || !u->st->vncuser) {
		end(u, RS_CC_NOMEM, "out of memory");
		return;
	}
	next_step(u);
}

static int ws_send_frame(struct rs_pve_up *u, int op, struct rs_buf *b, uint8_t *data, size_t len)
{
	uint8_t hdr[RS_WS_MAX_HEADER], key[4];
	size_t hl;

	if (!u->c || u->step < S_TERM_OK)
		return -ENOTCONN;
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
	rs_timer_unlink(rs_worker_timers(u->w), &u->st->timer);
	if (u->term) {
		free_setup(u); /* a terminal is established once termproxy said OK */
	} else {
		/* The VNC authentication still needs the VM's lock (and, for a
		 * refused password, the node for one fresh vncproxy): the rest
		 * of the setup goes at rs_pve_up_auth_done. */
		snprintf(pw, sizeof(pw), "%s", u->st->vncpw);
		wipe_str(&u->st->vncticket);
		wipe_str(&u->st->vncpw);
		wipe_str(&u->st->vncuser);
		wipe_str(&u->st->ticket);
		wipe_str(&u->st->csrf);
	}
	u->ops->on_ready(u->arg, u->term ? NULL : pw);
	explicit_bzero(pw, sizeof(pw));
}

static void ws_bytes(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len);

static void handle_upgrade(struct rs_pve_up *u, struct rs_buf *b, uint8_t *rest, size_t rest_len)
{
	struct rs_pve_error err;
	enum rs_pve_err code = rs_pve_check_upgrade(&u->st->rp.resp, u->st->ws_key, &err);

	rs_http_resp_release(&u->st->rp);
	arm_deadline(u);
	if (code) {
		if (code == RS_PVE_E_UPGRADE)
			protocol_error(u, "the console WebSocket");
		else
			api_error(u, code, &err);
		return;
	}
	rs_ws_parser_init(&u->ws, false, WS_MAX, UINT64_MAX);
	if (u->term) {
		char *line;
		int n = asprintf(&line, "%s:%s\n", u->st->vncuser, u->st->vncticket);

		u->step = S_TERM_OK;
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
		wipe_str(&u->st->vncticket);
	} else {
		become_ready(u);
	}
	if (!u->ended && rest_len)
		ws_bytes(u, b, rest, rest_len);
}

/* termproxy closed or refused before its OK (pve-xtermjs termproxy: a bad
 * ticket closes without a word). Before the April 2026 hardening it checks
 * tickets through /access/ticket, which refuses API tokens. */
static void term_refused(struct rs_pve_up *u)
{
	bool token = !use_login(u);

	rs_warn("pve", "cluster %s: VM %u: termproxy refused the terminal ticket%s", u->cl->name,
		u->vmid,
		token ? " (API token: nodes before the April 2026 update need user and password "
			"for terminals)"
		      : "");
	end(u, RS_CC_TERMINAL_REFUSED,
	    token ? "the Proxmox node refused the terminal: API tokens need nodes with the "
		    "April 2026 update (else a user login)"
		  : "the Proxmox node refused the terminal ticket");
}

static void handle_response(struct rs_pve_up *u)
{
	const struct rs_http_resp *r = &u->st->rp.resp;

	switch (u->step) {
	case S_LOGIN:
		handle_login(u, r);
		break;
	case S_RESOURCES:
		handle_resources(u, r);
		break;
	case S_STATUS:
		handle_status(u, r);
		break;
	case S_PROXY:
		handle_proxy(u, r);
		break;
	default:
		protocol_error(u, "an API call");
		break;
	}
}

/* Terminal output after the handshake: strip termproxy's "OK" first. */
static void term_or_data(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len)
{
	while (u->step == S_TERM_OK && len) {
		if (data[0] != "OK"[u->ok_seen]) {
			term_refused(u);
			return;
		}
		data++, len--;
		if (++u->ok_seen == 2)
			become_ready(u);
	}
	if (len && u->step == S_READY)
		u->ops->on_data(u->arg, b, data, len);
}

static void flush_pong(struct rs_pve_up *u)
{
	uint8_t frame[RS_WS_MAX_PONG_FRAME], mask[4];
	size_t n;

	if (!u->pong || !u->pong->pending || !u->c || rs_conn_congested(u->c))
		return;
	rs_random(mask, sizeof(mask));
	n = rs_ws_pong_take(u->pong, frame, mask);
	free(u->pong);
	u->pong = NULL;
	if (rs_conn_send(u->c, frame, n))
		end(u, RS_CC_NOMEM, "out of memory");
}

static void ws_bytes(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len)
{
	unsigned gen = u->attempt;

	while (len && !u->ended && u->attempt == gen) {
		struct rs_ws_event ev;
		int n = rs_ws_parse(&u->ws, data, len, &ev);

		if (n < 0 || ev.type == RS_WS_EV_ERROR) {
			end(u, RS_CC_TARGET_PROTOCOL, "the console stream broke");
			return;
		}
		data += n;
		len -= (size_t)n;
		if (ev.type == RS_WS_EV_DATA) {
			term_or_data(u, b, (uint8_t *)ev.data, ev.len);
		} else if (ev.type == RS_WS_EV_PING) {
			if (!u->pong && !(u->pong = calloc(1, sizeof(*u->pong)))) {
				end(u, RS_CC_NOMEM, "out of memory");
				return;
			}
			rs_ws_pong_hold(u->pong, (const uint8_t *)ev.data, ev.len);
			flush_pong(u);
		} else if (ev.type == RS_WS_EV_CLOSE) {
			end(u, RS_CC_TARGET_CLOSED, "the console closed");
		}
		if (!n && ev.type == RS_WS_EV_NONE)
			break;
	}
}

/* --- connection --- */

/* A whole answer is in <u->st->rp>: act on it. <rest> follows a 101. */
static void dispatch(struct rs_pve_up *u, struct rs_buf *b, uint8_t *rest, size_t rest_len)
{
	if (u->step == S_UPGRADE)
		handle_upgrade(u, b, rest, rest_len);
	else
		handle_response(u);
}

static void up_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct rs_pve_up *u = rs_conn_ctx(c);
	unsigned gen = u->attempt;

	hold(u);
	if (u->ended) {
		goto out_release;
	} else if (u->step >= S_TERM_OK) {
		ws_bytes(u, b, data, len);
		goto out_release;
	}
	/* Stop as soon as the answer handled ended the console or let this
	 * connection go: the rest is not the next attempt's to read. */
	while (len && !u->ended && u->attempt == gen && u->step < S_TERM_OK) {
		int n = rs_http_resp_feed(&u->st->rp, data, len);

		if (n < 0) {
			failover(u, RS_CC_UPSTREAM_PROTOCOL, rs_http_resp_error(&u->st->rp));
			break;
		}
		data += n;
		len -= (size_t)n;
		if (!rs_http_resp_done(&u->st->rp))
			break;
		if (u->step == S_UPGRADE) {
			dispatch(u, b, data, len);
			break;
		}
		dispatch(u, NULL, NULL, 0);
	}
out_release:
	release(u);
}

/* The node closed the connection (a TCP FIN, or a TLS close_notify, which
 * the filter reports as a close): an answer without a length ends here. */
static void at_eof(struct rs_pve_up *u)
{
	if (u->ended) {
		/* already reported */
	} else if (u->step == S_READY) {
		/* pveproxy never sends a close frame: this is how consoles end. A
		 * console that ends before any byte is a guest that is not running. */
		end(u, RS_CC_TARGET_CLOSED, "the console closed");
	} else if (u->step == S_TERM_OK) {
		term_refused(u);
	} else if (u->tls_ready && !rs_http_resp_eof(&u->st->rp) && rs_http_resp_done(&u->st->rp)) {
		/* An answer without a length ends with the connection: pveproxy's
		 * 401s and 595s are such. It is an answer, not a broken node. */
		u->peer_eof = true;
		dispatch(u, NULL, NULL, 0);
	} else {
		failover(u, RS_CC_UPSTREAM_UNAVAILABLE, "connection closed during the API calls");
	}
}

static void up_on_eof(struct rs_conn *c)
{
	struct rs_pve_up *u = rs_conn_ctx(c);

	hold(u);
	at_eof(u);
	release(u);
}

static void up_on_drain(struct rs_conn *c)
{
	struct rs_pve_up *u = rs_conn_ctx(c);

	hold(u);
	flush_pong(u);
	if (!u->ended && u->step == S_READY && u->ops->on_drain)
		u->ops->on_drain(u->arg);
	release(u);
}

static void up_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct rs_pve_up *u = rs_conn_ctx(c);

	hold(u);
	u->c = NULL;
	put_src(u);
	if (!u->ended && why == RS_CLOSE_PEER_EOF) {
		at_eof(u);
		u->tls_ready = false;
	} else if (!u->ended) {
		u->tls_ready = false;
		if (u->step == S_TERM_OK)
			term_refused(u);
		else if (u->step == S_READY)
			end(u, RS_CC_TARGET_RESET, "the connection to the console broke");
		else
			failover(u, RS_CC_UPSTREAM_UNAVAILABLE, err ? strerror(err) : "closed");
	} else {
		u->dead = true;
	}
	release(u);
}

static void on_tls(struct rs_conn *c, void *arg, int res, const char *msg)
{
	struct rs_pve_up *u = arg;

	(void)c;
	hold(u);
	if (res) {
		failover(u, res == -EKEYREJECTED ? RS_CC_UPSTREAM_TLS : RS_CC_UPSTREAM_UNAVAILABLE,
			 msg ? msg : "TLS handshake failed");
	} else {
		u->tls_ready = true;
		next_step(u);
	}
	release(u);
}

static void up_on_connect(struct rs_conn *c, int res)
{
	struct rs_pve_up *u = rs_conn_ctx(c);
	struct endpoint *e = &u->cl->ep[u->ep];

	hold(u);
	if (res)
		failover(u, RS_CC_UPSTREAM_UNAVAILABLE, strerror(-res));
	else if (rs_tls_client_attach(u->cl->tls, c, e->host, e->port, on_tls, u))
		end(u, RS_CC_NOMEM, "out of memory");
	release(u);
}

static const struct rs_conn_ops up_ops = {
    .on_data = up_on_data,
    .on_eof = up_on_eof,
    .on_drain = up_on_drain,
    .on_connect = up_on_connect,
    .on_close = up_on_close,
};

/* Connect to the current endpoint. <fresh>: a new endpoint, the whole
 * sequence from the start; else the step reached is taken up again. */
static void start_attempt(struct rs_pve_up *u, bool fresh)
{
	struct endpoint *e;
	int ret;

	if (u->ep >= u->cl->n_ep) {
		end(u, u->st->last_cause ? u->st->last_cause : RS_CC_UPSTREAM_UNAVAILABLE,
		    u->st->last_reason[0] ? u->st->last_reason
					  : "the Proxmox cluster could not be reached");
		return;
	}
	e = &u->cl->ep[u->ep];
	if (fresh)
		u->step = S_CONNECT;
	if (use_login(u) && !u->have_login) {
		/* A ticket younger than half its life is reused; CSRF goes with it. */
		pthread_mutex_lock(&u->cl->lock);
		if (u->cl->ticket && rs_now_ms() - u->cl->ticket_ms < TICKET_RENEW_MS) {
			u->st->ticket = strdup(u->cl->ticket);
			u->st->csrf = strdup(u->cl->csrf);
			u->have_login = u->st->ticket && u->st->csrf;
		}
		pthread_mutex_unlock(&u->cl->lock);
	}
	if (u->ports && e->addr.ss_family == AF_INET) {
		/* The pool's addresses are IPv4 or IPv6 like the endpoint; a pool that
		 * is exhausted is a clear error, not a silent fallback. */
		struct sockaddr_storage ss;

		if (rs_portpool_get(u->ports, &ss)) {
			end(u, RS_CC_PORTS_EXHAUSTED,
			    "no free source port for the console; try again later");
			return;
		}
		memcpy(&u->src, &ss, sizeof(u->src));
		u->have_src = true;
	}
	ret = rs_conn_connect(u->w, (struct sockaddr *)&e->addr, e->len,
			      u->have_src ? (struct sockaddr *)&u->src : NULL,
			      u->have_src ? sizeof(struct sockaddr_in) : 0,
			      (unsigned)RS_MIN(u->st->deadline_ms - rs_worker_now(u->w), 10000),
			      &up_ops, u, &u->c);
	if (ret) {
		u->c = NULL;
		put_src(u);
		failover(u, RS_CC_UPSTREAM_UNAVAILABLE, strerror(-ret));
	}
}

int rs_pve_up_open(struct rs_pve *p, struct rs_worker *w, const struct rs_console_spec *spec,
		   unsigned timeout_ms, struct rs_portpool *ports, const struct rs_pve_up_ops *ops,
		   void *arg, struct rs_pve_up **out)
{
	struct cluster *cl = p ? find_cluster(p, spec->cluster) : NULL;
	struct rs_pve_up *u;

	if (!cl && !(p && p->inline_tls && !spec->cluster && spec->host && spec->user))
		return -ENOENT;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->st = calloc(1, sizeof(*u->st));
	if (!u->st) {
		free(u);
		return -ENOMEM;
	}
	u->st->u = u;
	rs_http_resp_init(&u->st->rp, 0);
	rs_timer_init(&u->st->timer, on_deadline);
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
	u->ports = ports;
	u->ops = ops;
	u->arg = arg;
	u->vmid = spec->vmid;
	u->term = spec->kind == RS_CONSOLE_PVE_TERM;
	u->lxc = spec->pve_type && !strcmp(spec->pve_type, "lxc");
	u->type_known = spec->pve_type != NULL;
	if (spec->node)
		snprintf(u->st->node, sizeof(u->st->node), "%s", spec->node);
	u->st->deadline_ms = rs_worker_now(w) + timeout_ms;
	arm_deadline(u);
	*out = u;
	hold(u);
	start_attempt(u, true);
	release(u);
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
	unlock_vm(u);
	if (u->step == S_READY)
		free_setup(u); /* established: a held console keeps no setup state */
}

bool rs_pve_up_retry_auth(struct rs_pve_up *u)
{
	bool retry = !u->term && !u->ended && !u->auth_retried && u->step == S_READY && u->st;

	if (!retry)
		return false;
	hold(u);
	rs_warn("pve",
		"cluster %s: VM %u: VNC password refused (another vncproxy call reset it?): "
		"one fresh vncproxy",
		u->cl->name, u->vmid);
	u->auth_retried = true;
	u->step = S_STATUS; /* next: vncproxy, keeping the VM's lock */
	/* The console's copy of the login was wiped when it became ready: the
	 * cluster's cached ticket (or a fresh login) serves the retry. */
	u->have_login = false;
	reconnect(u);
	release(u);
	return true;
}

void rs_pve_up_close(struct rs_pve_up *u)
{
	if (u->ended)
		return;
	u->ended = true;
	u->attempt++;
	if (u->st)
		rs_timer_unlink(rs_worker_timers(u->w), &u->st->timer);
	if (u->c)
		rs_conn_close(u->c, RS_CLOSE_NORMAL, 0);
	else
		dispose(u);
}
