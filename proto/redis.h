/* proto/redis.h — a Redis client driven by ringside's own engine.
 *
 * No thread ever blocks on Redis and there is no second event loop: every
 * connection is an engine connection (rs_conn_connect, on_data, the worker's
 * timer wheel), optionally under tls/client.c. hiredis (Debian's
 * libhiredis-dev 0.14) is used only for the protocol: redisFormatCommandArgv
 * builds the commands, a redisReader parses the replies.
 *
 * Shape. One process-wide pool (struct rs_redis_pool) built from the
 * `fleet` configuration; on each worker a client (struct rs_redis) holding a
 * few connections (RS_REDIS_CONNS), each pipelined: commands are written at
 * once and their callbacks wait in a FIFO, answered in order. A client picks
 * the connection with the fewest commands in flight.
 *
 * Connecting. Directly to fleet.redis.address, or, with fleet.sentinel, to
 * the master a sentinel names (SENTINEL get-master-addr-by-name, sentinels
 * tried in turn); then AUTH (username/password when configured), SELECT db,
 * and with Sentinel a ROLE check (a connection to a node that is not the
 * master is dropped and the sentinels are asked again). On connection loss,
 * a -READONLY answer or a ROLE mismatch the client asks the sentinels again
 * and reconnects with back-off (50 ms doubling to 2 s); each change of master
 * address is counted as a failover followed.
 *
 * Bounds. At most fleet.redis.max_pending commands wait per worker (queued
 * while connecting plus in flight); beyond that a command is refused at once
 * (-EAGAIN, counted). Every command has a deadline (fleet.redis.timeout_ms,
 * default 500): when it passes, the command fails with -ETIMEDOUT and its
 * connection is recycled (every other command on it fails with -ECONNRESET),
 * since a pipeline cannot skip one answer.
 *
 * Threads. Everything about a struct rs_redis runs on its worker's thread:
 * call rs_redis_cmd and rs_redis_cancel there only; callbacks run there.
 * The pool's counters may be read from any thread (racy snapshot).
 *
 * Secrets: the password is wiped when the pool is freed and never logged;
 * callers put no secret in a key name (logs may show key names, never
 * values).
 */
#ifndef RS_REDIS_H
#define RS_REDIS_H

#include "core/common.h"
#include "core/engine.h"

#include <hiredis/hiredis.h>

#define RS_REDIS_CONNS	     2	/* connections per worker */
#define RS_REDIS_LAT_BUCKETS 10 /* upper bounds in rs_redis_lat_le_s, then +Inf */
extern const double rs_redis_lat_le_s[RS_REDIS_LAT_BUCKETS];

struct rs_redis_pool;
struct rs_redis;
struct rs_redis_req;

/* Connection settings (strings copied by rs_redis_pool_new). */
struct rs_redis_opts {
	const char *address;	      /* "host:port"; NULL with sentinels */
	const char *const *sentinels; /* "host:port" each */
	size_t n_sentinels;
	const char *master;		 /* the Sentinel master name */
	const char *username, *password; /* AUTH; NULL: none */
	unsigned db;			 /* SELECT, when not 0 */
	bool tls;			 /* through tls/client.c */
	const char *tls_ca_file;	 /* NULL: the system store */
	bool tls_insecure;
	unsigned timeout_ms;	     /* per command; 0: 500 */
	unsigned connect_timeout_ms; /* 0: 1000 */
	unsigned max_pending;	     /* per worker; 0: 1024 */
	unsigned conns;		     /* per worker, 1..RS_REDIS_CONNS; 0: RS_REDIS_CONNS */
};

/* Why a command failed (the err argument of rs_redis_cb). */
enum rs_redis_err_cause {
	RS_REDIS_E_UNAVAILABLE = 0, /* not connected (connecting, backing off): -ENOTCONN */
	RS_REDIS_E_QUEUE_FULL,	    /* max_pending reached: -EAGAIN */
	RS_REDIS_E_TIMEOUT,	    /* no answer within timeout_ms: -ETIMEDOUT */
	RS_REDIS_E_CONN_LOST, /* the connection broke with the command in flight: -ECONNRESET */
	RS_REDIS_E_PROTOCOL,  /* unparsable answer: -EPROTO */
	RS_REDIS_E_REPLY, /* Redis answered an error (-ERR, -READONLY …), counted by callers */
	RS_REDIS_E__COUNT
};
extern const char *const rs_redis_err_names[RS_REDIS_E__COUNT];

struct rs_redis_stats {
	uint64_t commands, replies, errors[RS_REDIS_E__COUNT];
	uint64_t connects, connect_failures, disconnects, failovers, reconnects;
	uint64_t pending;			/* now, over every worker */
	uint64_t connected;			/* connections now ready */
	uint64_t lat[RS_REDIS_LAT_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
	uint64_t lat_sum_us;
	uint64_t pubsub_messages;
};

/* The answer to one command, on the worker that sent it.
 * <reply> is the parsed answer when <err> is 0 (it may be a
 * REDIS_REPLY_ERROR: the caller decides what an error means), NULL otherwise.
 * <err>: 0, -ENOTCONN (never sent: no connection), -EAGAIN (never sent: queue
 * full), -ETIMEDOUT or -ECONNRESET (sent: Redis may or may not have executed
 * it — a caller that consumed something must treat it as possibly done),
 * -EPROTO, -ECANCELED (the pool is stopping). <reply> belongs to the client
 * and is freed when the callback returns: copy what you keep. The callback
 * may issue new commands; it must not free the client. */
typedef void (*rs_redis_cb)(void *arg, const redisReply *reply, int err);

/* A message on a subscribed channel (worker 0's thread). <msg> is valid only
 * during the callback. */
typedef void (*rs_redis_msg_cb)(void *arg, const char *channel, const char *msg, size_t len);

/* Build the pool for <nworkers> workers. 0, or -errno with <err> filled
 * (bad address, TLS set-up). Control thread. */
int rs_redis_pool_new(struct rs_redis_pool **out, const struct rs_redis_opts *o, unsigned nworkers,
		      char *err, size_t errlen);
/* Free the pool; every worker's client must be stopped (rs_redis_worker_stop)
 * or never started. Wipes the password. NULL is accepted. */
void rs_redis_pool_free(struct rs_redis_pool *p);

/* On worker <w>'s thread, from the engine's worker-start hook: create its
 * client and start connecting (worker 0 also runs the subscriber). */
void rs_redis_worker_start(struct rs_redis_pool *p, struct rs_worker *w);
/* On worker <w>'s thread (or after the engine stopped): fail every pending
 * command with -ECANCELED, close the connections, free the client. */
void rs_redis_worker_stop(struct rs_redis_pool *p, struct rs_worker *w);

/* Worker <w>'s client, NULL before rs_redis_worker_start. */
struct rs_redis *rs_redis_of(struct rs_redis_pool *p, struct rs_worker *w);

/* Send a command of <argc> arguments (<lens> NULL: NUL-terminated strings).
 * Returns 0 and then <cb> runs exactly once, later (never inside this call),
 * unless cancelled; *<req> (when not NULL) is a handle valid until <cb> runs
 * or rs_redis_cancel. Returns -EAGAIN (queue full), -ENOMEM, -EINVAL, or
 * -ENOTCONN (no connection ready nor being made: back-off after failures):
 * then <cb> will not run and nothing was sent. While a connection is being
 * made the command waits for it (bounded, its deadline running). */
int rs_redis_cmd(struct rs_redis *r, rs_redis_cb cb, void *arg, int argc, const char **argv,
		 const size_t *lens, struct rs_redis_req **req) RS_MUST_CHECK;

/* The caller is going away: <cb> of <req> will never run. The command itself
 * is not recalled (it may still execute on Redis). Call it only while the
 * handle is valid (before the callback ran). */
void rs_redis_cancel(struct rs_redis_req *req);

/* Subscribe to <channel> on the pool's subscriber connection (worker 0,
 * re-subscribed after every reconnect). Call before rs_engine_start (control
 * thread). At most 16 channels. 0, -ENOSPC or -ENOMEM. To publish, send
 * PUBLISH through rs_redis_cmd. */
int rs_redis_subscribe(struct rs_redis_pool *p, const char *channel, rs_redis_msg_cb cb, void *arg);

/* Is at least one connection of <r> ready (for health checks)? */
bool rs_redis_ready(const struct rs_redis *r);

/* Counters over every worker (racy snapshot, any thread). */
void rs_redis_stats_get(struct rs_redis_pool *p, struct rs_redis_stats *out);

/* The master address currently used ("host:port", "" when unknown), into
 * <out>; any thread. */
void rs_redis_master(struct rs_redis_pool *p, char *out, size_t len);

/* Parsing helper for tests and fuzzing: feed <len> bytes to a fresh hiredis
 * reader and count the complete replies; -EPROTO on a protocol error. */
int rs_redis_parse_count(const uint8_t *data, size_t len, size_t *replies);

#endif
