#include "core/common.h"

#include <pthread.h>
#include <stdatomic.h>

#include "core/config.h"
#include "core/log.h"
#include "proto/redis.h"
#include "tls/client.h"

const double rs_redis_lat_le_s[RS_REDIS_LAT_BUCKETS] = {0.0005, 0.001, 0.002, 0.005, 0.01,
							0.025,	0.05,  0.1,   0.25,  0.5};
const char *const rs_redis_err_names[RS_REDIS_E__COUNT] = {
    "unavailable", "queue_full", "timeout", "connection_lost", "protocol", "reply",
};

#define BACKOFF_MIN_MS	   50u
#define BACKOFF_MAX_MS	   2000u
#define MAX_SUBS	   16
#define RETRY_ON_DEMAND_MS 100u

struct rconn;

enum rc_state {
	RC_IDLE = 0,   /* nothing: a reconnect is due (timer) */
	RC_SENTINEL,   /* asking a sentinel where the master is */
	RC_CONNECTING, /* TCP (and TLS) to the node */
	RC_READY,      /* commands flow */
	RC_STOPPED,
};

struct rs_redis_req {
	struct rs_redis_req *next;
	rs_redis_cb cb; /* NULL: cancelled, or an internal command with <internal> */
	void *arg;
	void (*internal)(struct rconn *rc, const redisReply *reply, int err);
	uint64_t deadline_ms, t0_ns;
	char *buf; /* formatted, not sent yet (while connecting) */
	size_t len;
};

struct rconn {
	struct rs_redis *r;
	struct rs_conn *c;
	enum rc_state state;
	bool sub; /* the subscriber connection (worker 0) */
	redisReader *rd;
	struct rs_redis_req *head, *tail; /* FIFO: sent (or waiting to be sent), oldest first */
	unsigned n;			  /* entries in the FIFO */
	struct rs_timer timer;		  /* command deadline, or back-off */
	unsigned backoff_ms;
	uint64_t attempt_ms; /* when the last connect began */
	unsigned sentinel_i;
	struct sockaddr_storage dst;
	socklen_t dstlen;
	char host[64];
	uint16_t port;
};

struct rs_redis {
	struct rs_redis_pool *p;
	struct rs_worker *w;
	struct rconn rc[RS_REDIS_CONNS + 1]; /* + the subscriber on worker 0 */
	unsigned nrc;
	unsigned pending;
	bool stopping;
};

struct sub {
	char *channel;
	rs_redis_msg_cb cb;
	void *arg;
};

struct rs_redis_pool {
	char *address;
	char **sentinels;
	size_t n_sentinels;
	char *master_name, *username, *password;
	unsigned db, timeout_ms, connect_timeout_ms, max_pending, conns;
	struct rs_tls_client *tls;
	unsigned nworkers;
	struct rs_redis **clients;
	struct rs_worker **workers; /* by id, set at start: where to post */
	struct sub subs[MAX_SUBS];
	unsigned n_subs;
	pthread_mutex_t mu; /* <master> */
	char master[96];
	_Atomic uint64_t commands, replies, errors[RS_REDIS_E__COUNT];
	_Atomic uint64_t connects, connect_failures, disconnects, failovers, reconnects;
	_Atomic uint64_t pending, connected, pubsub_messages;
	_Atomic uint64_t lat[RS_REDIS_LAT_BUCKETS + 1], lat_sum_us;
};

#define P_ADD(p, field, v) atomic_fetch_add_explicit(&(p)->field, (v), memory_order_relaxed)
#define P_SUB(p, field, v) atomic_fetch_sub_explicit(&(p)->field, (v), memory_order_relaxed)

static void rc_connect(struct rconn *rc);

static void gone_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	(void)c;
	(void)why;
	(void)err;
}

static const struct rs_conn_ops gone_ops = {.on_close = gone_on_close};
static const struct rs_conn_ops redis_ops;
static void sentinel_answer(struct rconn *rc, const redisReply *reply);
static void rc_drop(struct rconn *rc, int err);

/* --- requests --- */

static void req_done(struct rconn *rc, struct rs_redis_req *q, const redisReply *reply, int err)
{
	struct rs_redis *r = rc->r;
	struct rs_redis_pool *p = r->p;

	if (!q->internal) {
		r->pending--;
		P_SUB(p, pending, 1);
	}
	if (err) {
		enum rs_redis_err_cause cause = err == -ETIMEDOUT    ? RS_REDIS_E_TIMEOUT
						: err == -ECONNRESET ? RS_REDIS_E_CONN_LOST
						: err == -EPROTO     ? RS_REDIS_E_PROTOCOL
								     : RS_REDIS_E_UNAVAILABLE;
		if (err != -ECANCELED)
			P_ADD(p, errors[cause], 1);
	} else if (reply) {
		uint64_t us = (rs_now_ns() - q->t0_ns) / 1000;
		size_t b = 0;

		while (b < RS_REDIS_LAT_BUCKETS && (double)us / 1e6 > rs_redis_lat_le_s[b])
			b++;
		P_ADD(p, lat[b], 1);
		P_ADD(p, lat_sum_us, us);
		P_ADD(p, replies, 1);
		if (reply->type == REDIS_REPLY_ERROR)
			P_ADD(p, errors[RS_REDIS_E_REPLY], 1);
	}
	if (q->internal)
		q->internal(rc, reply, err);
	else if (q->cb)
		q->cb(q->arg, reply, err);
	free(q->buf);
	free(q);
}

static struct rs_redis_req *pop(struct rconn *rc)
{
	struct rs_redis_req *q = rc->head;

	if (q) {
		rc->head = q->next;
		if (!rc->head)
			rc->tail = NULL;
		rc->n--;
	}
	return q;
}

static void arm_deadline(struct rconn *rc)
{
	struct rs_timer_wheel *tw = rs_worker_timers(rc->r->w);
	struct rs_redis_req *q = rc->head;

	while (q && !q->deadline_ms)
		q = q->next;
	if (q)
		rs_timer_link(tw, &rc->timer, q->deadline_ms);
	else
		rs_timer_unlink(tw, &rc->timer);
}

static int push(struct rconn *rc, struct rs_redis_req *q, char *cmd, size_t len)
{
	int ret = 0;

	q->next = NULL;
	if (rc->tail)
		rc->tail->next = q;
	else
		rc->head = q;
	rc->tail = q;
	rc->n++;
	if (rc->state == RC_READY && rc->c) {
		ret = rs_conn_send_owned(rc->c, cmd, len);
		cmd = NULL;
	} else {
		q->buf = cmd; /* sent when the connection is up */
		q->len = len;
	}
	if (!rs_timer_is_linked(&rc->timer) && q->deadline_ms)
		rs_timer_link(rs_worker_timers(rc->r->w), &rc->timer, q->deadline_ms);
	return ret;
}

/* An internal command (handshake, sentinel, subscribe): first in line. */
static int push_internal(struct rconn *rc, void (*fn)(struct rconn *, const redisReply *, int),
			 int argc, const char **argv, bool deadline)
{
	struct rs_redis_req *q = calloc(1, sizeof(*q));
	char *cmd = NULL;
	int len;

	if (!q)
		return -ENOMEM;
	len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
	if (len < 0) {
		free(q);
		return -ENOMEM;
	}
	q->internal = fn;
	q->t0_ns = rs_now_ns();
	if (deadline)
		q->deadline_ms = rs_worker_now(rc->r->w) + rc->r->p->timeout_ms;
	/* hiredis allocates with malloc: rs_conn_send_owned frees with free(). */
	return push(rc, q, cmd, (size_t)len);
}

/* --- connection life --- */

static void fail_all(struct rconn *rc, int sent_err)
{
	struct rs_redis_req *q;

	while ((q = pop(rc)))
		req_done(rc, q, NULL, q->buf ? -ENOTCONN : sent_err);
	rs_timer_unlink(rs_worker_timers(rc->r->w), &rc->timer);
}

static void arm_backoff(struct rconn *rc)
{
	struct rs_redis *r = rc->r;

	rc->state = RC_IDLE;
	if (r->stopping)
		return;
	rc->backoff_ms = rc->backoff_ms ? rc->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (rc->backoff_ms > BACKOFF_MAX_MS)
		rc->backoff_ms = BACKOFF_MAX_MS;
	rs_timer_link(rs_worker_timers(r->w), &rc->timer, rs_worker_now(r->w) + rc->backoff_ms);
}

/* The connection is finished with (error, timeout, -READONLY, stop): every
 * command on it fails, the socket closes, a reconnect is scheduled. */
static void rc_drop(struct rconn *rc, int err)
{
	struct rs_conn *c = rc->c;

	if (rc->state == RC_READY) {
		P_SUB(rc->r->p, connected, 1);
		P_ADD(rc->r->p, disconnects, 1);
	}
	rc->c = NULL;
	if (c) {
		rs_conn_close(c, RS_CLOSE_NORMAL, 0);
		/* Its close completes later, maybe after the client is freed
		 * (worker stop): nothing of it may reach <rc> again. */
		rs_conn_set_ops(c, &gone_ops, NULL);
	}
	fail_all(rc, err);
	arm_backoff(rc);
}

static void on_timer(struct rs_timer *t)
{
	struct rconn *rc = rs_container_of(t, struct rconn, timer);
	struct rs_redis *r = rc->r;

	if (rc->state == RC_IDLE) {
		if (!r->stopping && !rs_worker_stopping(r->w)) {
			P_ADD(r->p, reconnects, 1);
			rc_connect(rc);
		}
		return;
	}
	if (rc->head) {
		uint64_t now = rs_worker_now(r->w);
		struct rs_redis_req *q = rc->head;

		while (q && !q->deadline_ms)
			q = q->next;
		if (q && q->deadline_ms <= now) {
			/* A pipeline cannot skip an answer: the late command fails
			 * and the connection is recycled with everything on it. */
			rs_warn("redis", "no answer from %s:%u within %u ms: reconnecting",
				rc->host, rc->port, r->p->timeout_ms);
			if (rc->state == RC_SENTINEL)
				rc->sentinel_i++;
			/* The late one says so; those behind it lose their
			 * connection. Off the FIFO first: its callback may send. */
			if (q == rc->head && !q->buf) {
				pop(rc);
				req_done(rc, q, NULL, -ETIMEDOUT);
			}
			rc_drop(rc, -ECONNRESET);
			return;
		}
	}
	arm_deadline(rc);
}

static void flush_queued(struct rconn *rc)
{
	for (struct rs_redis_req *q = rc->head; q; q = q->next) {
		if (!q->buf)
			continue;
		if (rs_conn_send_owned(rc->c, q->buf, q->len)) {
			q->buf = NULL;
			rc_drop(rc, -ECONNRESET);
			return;
		}
		q->buf = NULL;
	}
}

static void on_auth(struct rconn *rc, const redisReply *reply, int err)
{
	if (err || !reply)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		rs_error("redis", "%s:%u refused the handshake: %.*s", rc->host, rc->port,
			 (int)reply->len, reply->str);
		rc_drop(rc, -ECONNRESET);
	}
}

static void on_role(struct rconn *rc, const redisReply *reply, int err)
{
	if (err || !reply)
		return;
	if (reply->type != REDIS_REPLY_ARRAY || !reply->elements ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "master")) {
		rs_warn("redis", "%s:%u is not the master (any more): asking the sentinels again",
			rc->host, rc->port);
		rc_drop(rc, -ECONNRESET);
	}
}

static void on_sentinel(struct rconn *rc, const redisReply *reply, int err)
{
	if (!err && reply)
		sentinel_answer(rc, reply);
}

static void on_subscribed(struct rconn *rc, const redisReply *reply, int err)
{
	(void)rc;
	(void)reply;
	(void)err;
}

/* Connections sleeping in back-off try now (on their own worker). */
static void wake_idle(struct rs_redis *r)
{
	for (unsigned i = 0; r && !r->stopping && i < r->nrc; i++) {
		struct rconn *o = &r->rc[i];

		if (o->state == RC_IDLE) {
			o->backoff_ms = 0;
			rs_timer_link(rs_worker_timers(r->w), &o->timer, rs_worker_now(r->w));
		}
	}
}

/* The node is connected (and TLS is up): handshake commands go first, then
 * whatever waited. */
static void node_ready(struct rconn *rc)
{
	struct rs_redis_pool *p = rc->r->p;
	char db[16];
	int ret = 0;

	rc->state = RC_READY;
	rc->backoff_ms = 0;
	P_ADD(p, connects, 1);
	P_ADD(p, connected, 1);
	/* Redis is back (or the new master is up): siblings sleeping in
	 * back-off try now rather than up to BACKOFF_MAX_MS later. */
	wake_idle(rc->r);
	/* The handshake jumps the queue: commands that waited come after it. */
	{
		struct rs_redis_req *waiting = rc->head;
		unsigned n = rc->n;

		rc->head = rc->tail = NULL;
		rc->n = 0;
		if (p->password) {
			const char *a[3] = {"AUTH", p->username ? p->username : p->password,
					    p->password};
			ret = push_internal(rc, on_auth, p->username ? 3 : 2, a, true);
		}
		if (!ret && p->db && !rc->sub) {
			const char *a[2] = {"SELECT", db};

			snprintf(db, sizeof(db), "%u", p->db);
			ret = push_internal(rc, on_auth, 2, a, true);
		}
		if (!ret && p->n_sentinels && !rc->sub) {
			const char *a[1] = {"ROLE"};

			ret = push_internal(rc, on_role, 1, a, true);
		}
		if (rc->tail)
			rc->tail->next = waiting;
		else
			rc->head = waiting;
		if (waiting) {
			struct rs_redis_req *t = waiting;

			while (t->next)
				t = t->next;
			rc->tail = t;
		}
		rc->n += n;
	}
	if (!ret && rc->sub && p->n_subs) {
		const char *a[1 + MAX_SUBS];

		a[0] = "SUBSCRIBE";
		for (unsigned i = 0; i < p->n_subs; i++)
			a[1 + i] = p->subs[i].channel;
		ret = push_internal(rc, on_subscribed, (int)p->n_subs + 1, a, false);
	}
	if (ret) {
		rc_drop(rc, -ECONNRESET);
		return;
	}
	flush_queued(rc);
}

static void on_tls(struct rs_conn *c, void *arg, int res, const char *msg)
{
	struct rconn *rc = arg;

	if (rc->c != c)
		return;
	if (res) {
		rs_error("redis", "TLS to %s:%u failed: %s", rc->host, rc->port, msg ? msg : "");
		P_ADD(rc->r->p, connect_failures, 1);
		rc_drop(rc, -ENOTCONN);
		return;
	}
	node_ready(rc);
}

static void on_connect(struct rs_conn *c, int res)
{
	struct rconn *rc = rs_conn_ctx(c);
	struct rs_redis_pool *p = rc->r->p;

	if (rc->c != c)
		return;
	if (res) {
		rs_warn("redis", "cannot connect to %s %s:%u: %s",
			rc->state == RC_SENTINEL ? "sentinel" : "redis", rc->host, rc->port,
			strerror(-res));
		P_ADD(p, connect_failures, 1);
		if (rc->state == RC_SENTINEL)
			rc->sentinel_i++;
		rc_drop(rc, -ENOTCONN);
		return;
	}
	if (rc->state == RC_SENTINEL) {
		const char *a[3] = {"SENTINEL", "get-master-addr-by-name", p->master_name};
		struct rs_redis_req *waiting = rc->head;
		unsigned n = rc->n;

		/* Ask first; the user's commands wait for the master. */
		rc->head = rc->tail = NULL;
		rc->n = 0;
		if (push_internal(rc, on_sentinel, 3, a, true)) {
			rc->head = waiting;
			rc_drop(rc, -ENOTCONN);
			return;
		}
		rc->head->next = waiting;
		if (waiting) {
			struct rs_redis_req *t = waiting;

			while (t->next)
				t = t->next;
			rc->tail = t;
		}
		rc->n += n;
		/* Only the query goes out now. */
		if (rs_conn_send_owned(c, rc->head->buf, rc->head->len)) {
			rc->head->buf = NULL;
			rc_drop(rc, -ENOTCONN);
			return;
		}
		rc->head->buf = NULL;
		return;
	}
	if (p->tls) {
		if (rs_tls_client_attach(p->tls, c, rc->host, rc->port, on_tls, rc))
			rc_drop(rc, -ENOTCONN);
		return;
	}
	node_ready(rc);
}

static int start_conn(struct rconn *rc)
{
	struct rs_redis *r = rc->r;
	struct rs_conn *c = NULL;
	int ret;

	if (rc->rd)
		redisReaderFree(rc->rd);
	rc->rd = redisReaderCreate();
	if (!rc->rd)
		return -ENOMEM;
	ret = rs_conn_connect(r->w, (struct sockaddr *)&rc->dst, rc->dstlen, NULL, 0,
			      r->p->connect_timeout_ms, &redis_ops, rc, &c);
	if (ret)
		return ret;
	rc->c = c;
	return 0;
}

static void set_dst(struct rconn *rc, const char *hostport)
{
	const char *colon = strrchr(hostport, ':');

	snprintf(rc->host, sizeof(rc->host), "%.*s",
		 (int)(colon ? (size_t)(colon - hostport) : strlen(hostport)), hostport);
	if (rc->host[0] == '[') { /* [v6]:port */
		memmove(rc->host, rc->host + 1, strlen(rc->host));
		rc->host[strcspn(rc->host, "]")] = 0;
	}
	rc->port = colon ? (uint16_t)atoi(colon + 1) : 6379;
	if (rs_parse_hostport(hostport, &rc->dst, &rc->dstlen))
		rc->dstlen = 0;
}

static void rc_connect(struct rconn *rc)
{
	struct rs_redis_pool *p = rc->r->p;
	int ret;

	rc->attempt_ms = rs_worker_now(rc->r->w);
	if (p->n_sentinels) {
		set_dst(rc, p->sentinels[rc->sentinel_i % p->n_sentinels]);
		rc->state = RC_SENTINEL;
	} else {
		set_dst(rc, p->address);
		rc->state = RC_CONNECTING;
	}
	ret = rc->dstlen ? start_conn(rc) : -EINVAL;
	if (ret) {
		P_ADD(p, connect_failures, 1);
		rc->c = NULL;
		fail_all(rc, -ENOTCONN);
		arm_backoff(rc);
	}
}

static void wake_idle_posted(struct rs_worker *w, void *arg)
{
	wake_idle(rs_redis_of(arg, w));
}

/* A master moved: every other worker's connections still backing off
 * (up to BACKOFF_MAX_MS) ask the sentinels now, so the whole box follows
 * at once rather than worker by worker. */
static void wake_other_workers(struct rs_redis_pool *p, const struct rs_worker *self)
{
	for (unsigned i = 0; i < p->nworkers; i++) {
		struct rs_worker *w = __atomic_load_n(&p->workers[i], __ATOMIC_ACQUIRE);

		if (w && w != self)
			rs_worker_post(w, wake_idle_posted, p);
	}
}

/* The sentinel named the master: connect there. */
static void sentinel_answer(struct rconn *rc, const redisReply *reply)
{
	struct rs_redis_pool *p = rc->r->p;
	struct rs_conn *old = rc->c;
	char addr[96];
	bool moved = false;
	int ret;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING) {
		rs_warn("redis", "sentinel %s:%u does not know master '%s'", rc->host, rc->port,
			p->master_name);
		rc->sentinel_i++;
		rc_drop(rc, -ENOTCONN);
		return;
	}
	snprintf(addr, sizeof(addr), strchr(reply->element[0]->str, ':') ? "[%s]:%s" : "%s:%s",
		 reply->element[0]->str, reply->element[1]->str);
	pthread_mutex_lock(&p->mu);
	if (strcmp(p->master, addr)) {
		if (p->master[0]) {
			moved = true;
			P_ADD(p, failovers, 1);
			rs_info("redis", "following the new master of '%s': %s (was %s)",
				p->master_name, addr, p->master);
		}
		snprintf(p->master, sizeof(p->master), "%s", addr);
	}
	pthread_mutex_unlock(&p->mu);
	if (moved)
		wake_other_workers(p, rc->r->w);
	rc->c = NULL;
	rs_conn_close(old, RS_CLOSE_NORMAL, 0);
	rs_conn_set_ops(old, &gone_ops, NULL);
	set_dst(rc, addr);
	rc->state = RC_CONNECTING;
	ret = rc->dstlen ? start_conn(rc) : -EINVAL;
	if (ret) {
		rc->c = NULL;
		fail_all(rc, -ENOTCONN);
		arm_backoff(rc);
	}
}

static void dispatch_push(struct rconn *rc, const redisReply *reply)
{
	struct rs_redis_pool *p = rc->r->p;
	const redisReply *ch, *msg;

	if (reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "message"))
		return; /* subscribe confirmations */
	ch = reply->element[1];
	msg = reply->element[2];
	if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING)
		return;
	P_ADD(p, pubsub_messages, 1);
	for (unsigned i = 0; i < p->n_subs; i++)
		if (!strcmp(p->subs[i].channel, ch->str))
			p->subs[i].cb(p->subs[i].arg, ch->str, msg->str, msg->len);
}

static bool is_readonly(const redisReply *reply)
{
	return reply->type == REDIS_REPLY_ERROR && !strncmp(reply->str, "READONLY", 8);
}

static void on_data(struct rs_conn *c, struct rs_buf *buf, uint8_t *data, size_t len)
{
	struct rconn *rc = rs_conn_ctx(c);

	(void)buf;
	if (rc->c != c)
		return;
	if (redisReaderFeed(rc->rd, (const char *)data, len) != REDIS_OK) {
		rc_drop(rc, -EPROTO);
		return;
	}
	while (rc->c == c) {
		void *obj = NULL;
		redisReply *reply;
		struct rs_redis_req *q;

		if (redisReaderGetReply(rc->rd, &obj) != REDIS_OK) {
			rs_warn("redis", "unparsable answer from %s:%u", rc->host, rc->port);
			rc_drop(rc, -EPROTO);
			return;
		}
		if (!obj)
			break;
		reply = obj;
		if (rc->sub && reply->type == REDIS_REPLY_ARRAY && reply->elements &&
		    reply->element[0]->type == REDIS_REPLY_STRING &&
		    (!strcmp(reply->element[0]->str, "message") ||
		     (!strcmp(reply->element[0]->str, "subscribe") &&
		      !(rc->head && rc->head->internal == on_subscribed)))) {
			dispatch_push(rc, reply);
			freeReplyObject(reply);
			continue;
		}
		q = pop(rc);
		if (!q) {
			freeReplyObject(reply);
			rc_drop(rc, -EPROTO);
			return;
		}
		req_done(rc, q, reply, 0);
		/* A master demoted under us: every write fails there. Follow
		 * the sentinels (the caller saw the error reply). */
		if (rc->c == c && is_readonly(reply) && rc->r->p->n_sentinels)
			rc_drop(rc, -ECONNRESET);
		freeReplyObject(reply);
	}
	if (rc->c == c)
		arm_deadline(rc);
}

static void on_stop(struct rs_conn *c)
{
	struct rconn *rc = rs_conn_ctx(c);

	/* The engine drains: Redis connections must not hold the drain. */
	rc->r->stopping = true;
	if (rc->c == c)
		rc_drop(rc, -ECANCELED);
}

static void on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct rconn *rc = rs_conn_ctx(c);

	(void)why;
	(void)err;
	if (rc->c != c)
		return; /* already dropped by us */
	rs_warn("redis", "connection to %s:%u lost", rc->host, rc->port);
	if (rc->state == RC_SENTINEL)
		rc->sentinel_i++;
	rc->c = NULL; /* the engine frees it */
	rc_drop(rc, -ECONNRESET);
}

static const struct rs_conn_ops redis_ops = {
    .on_data = on_data,
    .on_connect = on_connect,
    .on_stop = on_stop,
    .on_close = on_close,
};

/* --- public --- */

static char *dup_or_null(const char *s)
{
	return s ? rs_xstrdup(s) : NULL;
}

int rs_redis_pool_new(struct rs_redis_pool **out, const struct rs_redis_opts *o, unsigned nworkers,
		      char *err, size_t errlen)
{
	struct rs_redis_pool *p = rs_xcalloc(1, sizeof(*p));
	int ret = 0;

	*out = NULL;
	pthread_mutex_init(&p->mu, NULL);
	p->address = dup_or_null(o->address);
	p->n_sentinels = o->n_sentinels;
	p->sentinels = rs_xcalloc(o->n_sentinels + 1, sizeof(char *));
	for (size_t i = 0; i < o->n_sentinels; i++)
		p->sentinels[i] = rs_xstrdup(o->sentinels[i]);
	p->master_name = dup_or_null(o->master);
	p->username = dup_or_null(o->username);
	p->password = dup_or_null(o->password);
	p->db = o->db;
	p->timeout_ms = o->timeout_ms ? o->timeout_ms : 500;
	p->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 1000;
	p->max_pending = o->max_pending ? o->max_pending : 1024;
	p->conns = o->conns && o->conns < RS_REDIS_CONNS ? o->conns : RS_REDIS_CONNS;
	p->nworkers = nworkers;
	p->clients = rs_xcalloc(nworkers ? nworkers : 1, sizeof(*p->clients));
	p->workers = rs_xcalloc(nworkers ? nworkers : 1, sizeof(*p->workers));
	if (!p->address && !(p->n_sentinels && p->master_name)) {
		snprintf(err, errlen, "fleet: neither a redis address nor sentinels with a master");
		ret = -EINVAL;
		goto out_free;
	}
	if (p->address) {
		struct sockaddr_storage ss;
		socklen_t len;

		if (rs_parse_hostport(p->address, &ss, &len)) {
			snprintf(err, errlen, "fleet.redis.address: '%s' is not host:port",
				 p->address);
			ret = -EINVAL;
			goto out_free;
		}
	}
	if (o->tls) {
		struct rs_tls_client_opts to = {
		    .name = "redis", .ca_file = o->tls_ca_file, .insecure = o->tls_insecure};

		ret = rs_tls_client_new(&p->tls, &to, err, errlen);
		if (ret)
			goto out_free;
	}
	*out = p;
	return 0;
out_free:
	rs_redis_pool_free(p);
	return ret;
}

void rs_redis_pool_free(struct rs_redis_pool *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->nworkers; i++)
		free(p->clients[i]);
	free(p->clients);
	free(p->workers);
	free(p->address);
	for (size_t i = 0; i < p->n_sentinels; i++)
		free(p->sentinels[i]);
	free(p->sentinels);
	free(p->master_name);
	free(p->username);
	if (p->password) {
		explicit_bzero(p->password, strlen(p->password));
		free(p->password);
	}
	for (unsigned i = 0; i < p->n_subs; i++)
		free(p->subs[i].channel);
	if (p->tls)
		rs_tls_client_free(p->tls);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void rs_redis_worker_start(struct rs_redis_pool *p, struct rs_worker *w)
{
	unsigned id = rs_worker_id(w);
	struct rs_redis *r;

	if (!p || id >= p->nworkers)
		return;
	r = rs_xcalloc(1, sizeof(*r));
	r->p = p;
	r->w = w;
	r->nrc = p->conns + (id == 0 && p->n_subs ? 1 : 0);
	for (unsigned i = 0; i < r->nrc; i++) {
		r->rc[i].r = r;
		r->rc[i].sub = i == p->conns;
		r->rc[i].sentinel_i = id + i; /* spread the first questions */
		rs_timer_init(&r->rc[i].timer, on_timer);
	}
	__atomic_store_n(&p->workers[id], w, __ATOMIC_RELEASE);
	__atomic_store_n(&p->clients[id], r, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < r->nrc; i++)
		rc_connect(&r->rc[i]);
}

void rs_redis_worker_stop(struct rs_redis_pool *p, struct rs_worker *w)
{
	unsigned id = rs_worker_id(w);
	struct rs_redis *r;

	if (!p || id >= p->nworkers || !(r = p->clients[id]))
		return;
	r->stopping = true;
	for (unsigned i = 0; i < r->nrc; i++) {
		struct rconn *rc = &r->rc[i];

		if (rc->c)
			rc_drop(rc, -ECANCELED);
		else
			fail_all(rc, -ECANCELED);
		rs_timer_unlink(rs_worker_timers(w), &rc->timer);
		rc->state = RC_STOPPED;
		if (rc->rd)
			redisReaderFree(rc->rd);
		rc->rd = NULL;
	}
	__atomic_store_n(&p->clients[id], NULL, __ATOMIC_RELEASE);
	free(r);
}

struct rs_redis *rs_redis_of(struct rs_redis_pool *p, struct rs_worker *w)
{
	unsigned id = rs_worker_id(w);

	return p && id < p->nworkers ? __atomic_load_n(&p->clients[id], __ATOMIC_ACQUIRE) : NULL;
}

int rs_redis_cmd(struct rs_redis *r, rs_redis_cb cb, void *arg, int argc, const char **argv,
		 const size_t *lens, struct rs_redis_req **req)
{
	struct rs_redis_pool *p;
	struct rconn *best = NULL;
	struct rs_redis_req *q;
	char *cmd = NULL;
	int len, ret;

	if (req)
		*req = NULL;
	if (!r || !cb || argc <= 0)
		return -EINVAL;
	p = r->p;
	if (r->stopping)
		return -ENOTCONN;
	if (r->pending >= p->max_pending) {
		P_ADD(p, errors[RS_REDIS_E_QUEUE_FULL], 1);
		return -EAGAIN;
	}
	/* The ready connection with the fewest commands; else one on its way. */
	for (unsigned i = 0; i < p->conns; i++) {
		struct rconn *rc = &r->rc[i];

		if (rc->state == RC_READY && (!best || best->state != RC_READY || rc->n < best->n))
			best = rc;
		else if ((rc->state == RC_CONNECTING || rc->state == RC_SENTINEL) &&
			 (!best || (best->state != RC_READY && rc->n < best->n)))
			best = rc;
	}
	if (!best) {
		/* Every connection is backing off. A command is a reason to try
		 * now (at most one attempt per RETRY_ON_DEMAND_MS): Redis may be
		 * back, and its caller waits at most its deadline either way. */
		struct rconn *rc = &r->rc[0];

		if (rc->state == RC_IDLE && !rs_worker_stopping(r->w) &&
		    rs_worker_now(r->w) >= rc->attempt_ms + RETRY_ON_DEMAND_MS) {
			rs_timer_unlink(rs_worker_timers(r->w), &rc->timer);
			P_ADD(p, reconnects, 1);
			rc_connect(rc);
			if (rc->state == RC_CONNECTING || rc->state == RC_SENTINEL)
				best = rc;
		}
	}
	if (!best) {
		P_ADD(p, errors[RS_REDIS_E_UNAVAILABLE], 1);
		return -ENOTCONN;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0) {
		free(q);
		return -ENOMEM;
	}
	q->cb = cb;
	q->arg = arg;
	q->t0_ns = rs_now_ns();
	q->deadline_ms = rs_worker_now(r->w) + p->timeout_ms;
	r->pending++;
	P_ADD(p, pending, 1);
	P_ADD(p, commands, 1);
	if (req)
		*req = q;
	ret = push(best, q, cmd, (size_t)len);
	if (ret) {
		/* The send queue refused: the connection is unusable. The
		 * callback runs from the drop — but never inside this call, so
		 * the caller's state is not torn down under it: undo instead. */
		struct rs_redis_req **pp = &best->head, *prev = NULL;

		while (*pp && *pp != q) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		if (*pp) {
			*pp = q->next;
			if (best->tail == q)
				best->tail = prev;
			best->n--;
		}
		r->pending--;
		P_SUB(p, pending, 1);
		free(q->buf);
		free(q);
		if (req)
			*req = NULL;
		rc_drop(best, -ECONNRESET);
		return -ENOTCONN;
	}
	return 0;
}

void rs_redis_cancel(struct rs_redis_req *req)
{
	if (req)
		req->cb = NULL;
}

int rs_redis_subscribe(struct rs_redis_pool *p, const char *channel, rs_redis_msg_cb cb, void *arg)
{
	if (p->n_subs >= MAX_SUBS)
		return -ENOSPC;
	p->subs[p->n_subs].channel = rs_xstrdup(channel);
	p->subs[p->n_subs].cb = cb;
	p->subs[p->n_subs].arg = arg;
	p->n_subs++;
	return 0;
}

bool rs_redis_ready(const struct rs_redis *r)
{
	for (unsigned i = 0; r && i < r->p->conns; i++)
		if (r->rc[i].state == RC_READY)
			return true;
	return false;
}

void rs_redis_stats_get(struct rs_redis_pool *p, struct rs_redis_stats *o)
{
	memset(o, 0, sizeof(*o));
	if (!p)
		return;
#define L(f) atomic_load_explicit(&p->f, memory_order_relaxed)
	o->commands = L(commands);
	o->replies = L(replies);
	for (int i = 0; i < RS_REDIS_E__COUNT; i++)
		o->errors[i] = L(errors[i]);
	o->connects = L(connects);
	o->connect_failures = L(connect_failures);
	o->disconnects = L(disconnects);
	o->failovers = L(failovers);
	o->reconnects = L(reconnects);
	o->pending = L(pending);
	o->connected = L(connected);
	o->pubsub_messages = L(pubsub_messages);
	for (int i = 0; i <= RS_REDIS_LAT_BUCKETS; i++)
		o->lat[i] = L(lat[i]);
	o->lat_sum_us = L(lat_sum_us);
#undef L
}

void rs_redis_master(struct rs_redis_pool *p, char *out, size_t len)
{
	if (!p) {
		snprintf(out, len, "%s", "");
		return;
	}
	pthread_mutex_lock(&p->mu);
	snprintf(out, len, "%s", p->n_sentinels ? p->master : p->address);
	pthread_mutex_unlock(&p->mu);
}

int rs_redis_parse_count(const uint8_t *data, size_t len, size_t *replies)
{
	redisReader *rd = redisReaderCreate();
	int ret = 0;

	*replies = 0;
	if (!rd)
		return -ENOMEM;
	if (redisReaderFeed(rd, (const char *)data, len) != REDIS_OK) {
		ret = -EPROTO;
		goto out_free;
	}
	for (;;) {
		void *obj = NULL;

		if (redisReaderGetReply(rd, &obj) != REDIS_OK) {
			ret = -EPROTO;
			break;
		}
		if (!obj)
			break;
		(*replies)++;
		freeReplyObject(obj);
	}
out_free:
	redisReaderFree(rd);
	return ret;
}
