/* core/engine.h — the io_uring thread-per-core engine.
 *
 * One worker thread per core, each owning one io_uring, its own SO_REUSEPORT
 * listeners (multishot accept into direct descriptors, so sockets do not
 * count against RLIMIT_NOFILE), a provided-buffer receive pool, a timer wheel
 * and its connections. Everything a worker owns is touched only by its
 * thread: no locks on the data path. Other threads reach a worker with
 * rs_worker_post().
 *
 * Connection lifetime: the engine allocates a struct rs_conn on accept or
 * connect and frees it after ops->on_close() returns. Callbacks run on the
 * owning worker's thread. After rs_conn_close() no callback but on_close runs.
 * Completions carry {op, slot, generation} so a late completion for a reused
 * slot is detected, never dereferenced.
 */
#ifndef RS_ENGINE_H
#define RS_ENGINE_H

#include "core/common.h"

#include <sys/socket.h>
#include <netinet/in.h>

#include "core/bufpool.h"
#include "core/timer.h"

struct rs_engine;
struct rs_worker;
struct rs_conn;

/* Why a connection ended; one counter per cause. */
enum rs_close_reason {
	RS_CLOSE_NORMAL = 0, /* owner closed it */
	RS_CLOSE_PEER_EOF,   /* peer closed its side */
	RS_CLOSE_ERROR,      /* socket error (reset, ...) */
	RS_CLOSE_TIMEOUT,    /* a timeout owned by the layer above */
	RS_CLOSE_NOMEM,      /* could not queue data */
	RS_CLOSE_SHUTDOWN,   /* engine stopping */
	RS_CLOSE__COUNT
};
extern const char *const rs_close_reason_names[RS_CLOSE__COUNT];

struct rs_conn_ops {
	/* <len> bytes arrived in pool buffer <buf> at <data>. The bytes are
	 * valid until the callback returns unless the callee takes a reference
	 * (rs_buf_ref, or rs_conn_send_buf which takes one itself). <data> may
	 * be modified in place (WebSocket unmasking). */
	void (*on_data)(struct rs_conn *c, struct rs_buf *buf, uint8_t *data, size_t len);
	/* The peer finished sending (recv returned 0). NULL: close the conn. */
	void (*on_eof)(struct rs_conn *c);
	/* Queued bytes fell to or below the low-water mark after having been
	 * above the high-water mark (backpressure release). Optional. */
	void (*on_drain)(struct rs_conn *c);
	/* An outgoing connect finished: 0 or -errno (-ETIMEDOUT on timeout).
	 * On error the owner must close the connection. */
	void (*on_connect)(struct rs_conn *c, int res);
	/* The engine is shutting down (drain). Optional: close idle connections. */
	void (*on_stop)(struct rs_conn *c);
	/* Final: the connection is gone; free the owner's state. Required. */
	void (*on_close)(struct rs_conn *c, enum rs_close_reason why, int err);
};

typedef void (*rs_accept_fn)(struct rs_conn *c, void *arg);

struct rs_engine_opts {
	unsigned workers;         /* 0: one per online CPU */
	bool pin;                 /* pin worker i to CPU i % ncpu */
	uint32_t buf_size;        /* receive buffer size */
	uint32_t buf_count;       /* receive buffers per worker (power of two) */
	uint32_t max_conns;       /* direct descriptor table size per worker; 0: from RLIMIT_NOFILE */
	uint32_t send_high_water; /* queued bytes above which a conn reports backpressure */
	uint32_t ring_entries;    /* SQ size (a power of two >= 8); 0: 4096 */
	/* SO_SNDBUF / SO_RCVBUF of every accepted and connected socket, in
	 * bytes; 0 keeps the kernel's default (and its autotuning). Accepted
	 * sockets inherit them from the listener, set before listen(). */
	uint32_t socket_sndbuf, socket_rcvbuf;
};

struct rs_engine_stats {
	uint64_t accepted, connected, closed, conns_live;
	uint64_t loops, cqes, enters, enobufs, cq_overflow, accept_errors, sends, bytes_in,
		bytes_out;
	uint64_t close_reasons[RS_CLOSE__COUNT];
	uint64_t bufs_out, bufs_total;
};

/* Create the engine (rings are created by the worker threads at start).
 * NULL with <err> filled on failure. */
struct rs_engine *rs_engine_new(const struct rs_engine_opts *o, char *err, size_t errlen);

/* Add a listening address (before rs_engine_start). Every worker binds its own
 * SO_REUSEPORT socket. <on_accept> runs on the accepting worker and must set
 * the connection's ops. 0 or -errno. */
int rs_engine_listen(struct rs_engine *e, const struct sockaddr *addr, socklen_t len,
		     rs_accept_fn on_accept, void *arg);

/* Hook run on each worker thread right after its ring exists and before it
 * accepts (per-worker state of upper layers). */
void rs_engine_on_worker_start(struct rs_engine *e, void (*fn)(struct rs_worker *w, void *arg),
			       void *arg);

/* Start the workers; returns once each has its ring and listeners, or fails
 * with a message (e.g. io_uring disabled). 0 or -errno. */
int rs_engine_start(struct rs_engine *e, char *err, size_t errlen);

/* Stop accepting, ask every connection to finish (on_stop), wait up to
 * <drain_ms> for them, then close the rest and join the workers. */
void rs_engine_stop(struct rs_engine *e, unsigned drain_ms);

/* Stop accepting new connections on every worker (drain); open ones go on. */
void rs_engine_pause_accept(struct rs_engine *e);

void rs_engine_free(struct rs_engine *e);

unsigned rs_engine_workers(const struct rs_engine *e);
struct rs_worker *rs_engine_worker(struct rs_engine *e, unsigned i);

/* Sum of every worker's counters (racy snapshot, for stats and metrics). */
void rs_engine_stats(struct rs_engine *e, struct rs_engine_stats *out);

/* --- worker --- */

unsigned rs_worker_id(const struct rs_worker *w);
struct rs_engine *rs_worker_engine(struct rs_worker *w);
struct rs_timer_wheel *rs_worker_timers(struct rs_worker *w);
struct rs_bufpool *rs_worker_bufpool(struct rs_worker *w);
/* Cached clock of the current loop iteration (ms, monotonic). */
uint64_t rs_worker_now(const struct rs_worker *w);
bool rs_worker_stopping(const struct rs_worker *w);
/* Per-worker pointer for upper layers. */
void *rs_worker_data(const struct rs_worker *w);
void rs_worker_set_data(struct rs_worker *w, void *data);
const struct rs_engine_stats *rs_worker_stats(const struct rs_worker *w);

/* Run fn(w, arg) on worker <w>'s thread, from any thread. Control plane only
 * (kill, revoke, stats): takes a mutex on the worker's inbox. 0 or -ENOMEM. */
int rs_worker_post(struct rs_worker *w, void (*fn)(struct rs_worker *w, void *arg), void *arg);

/* Run fn(w, arg) on <w>'s thread and wait for it to finish. For control
 * threads only: never call it from a worker. 0 or -ENOMEM. */
int rs_worker_call(struct rs_worker *w, void (*fn)(struct rs_worker *w, void *arg), void *arg);

/* --- connections --- */

void rs_conn_set_ops(struct rs_conn *c, const struct rs_conn_ops *ops, void *ctx);
void *rs_conn_ctx(const struct rs_conn *c);
struct rs_worker *rs_conn_worker(const struct rs_conn *c);
/* Process-unique id: worker in the top bits, then slot and generation. */
uint64_t rs_conn_id(const struct rs_conn *c);
/* Peer address; family AF_UNSPEC when the kernel could not tell us. */
const struct sockaddr *rs_conn_peer(const struct rs_conn *c);
/* Format the peer as "1.2.3.4" / "::1" into <out>. */
void rs_conn_peer_str(const struct rs_conn *c, char *out, size_t len);

/* Queue bytes for sending; sends are corked until the end of the current
 * event-loop iteration, one send in flight per socket.
 *
 * No byte before the channel is up: every send variant below refuses with
 * -ENOTCONN, queueing nothing, while an outgoing connect is pending (until
 * on_connect reported 0) and, on a connection with a filter, until the
 * filter has called rs_conn_filter_ready() (TLS: handshake complete). So a
 * timer or a stale callback can never put plaintext on the wire ahead of
 * the handshake; the owner sends from the filter's completion callback on.
 * -EPIPE once closing. Copy variant: */
int rs_conn_send(struct rs_conn *c, const void *data, size_t len) RS_MUST_CHECK;
/* Take ownership of a malloc'd block (freed with free() once sent). */
int rs_conn_send_owned(struct rs_conn *c, void *data, size_t len) RS_MUST_CHECK;
/* Send bytes that outlive the connection (embedded assets): no copy. */
int rs_conn_send_static(struct rs_conn *c, const void *data, size_t len) RS_MUST_CHECK;
/* Forward bytes that live in a pool buffer: takes a reference, or copies
 * the bytes when they are small or the connection's queues already hold a
 * few pool buffers (up to 4, fewer in a pool under 128 buffers) — a reader
 * that stops must not keep the worker's receive pool. */
int rs_conn_send_buf(struct rs_conn *c, struct rs_buf *b, const uint8_t *data,
		     size_t len) RS_MUST_CHECK;
/* Bytes queued and not yet acknowledged by send completions. */
size_t rs_conn_queued(const struct rs_conn *c);
/* True when queued bytes exceed the high-water mark: stop feeding this conn
 * (pause its source) until on_drain. */
bool rs_conn_congested(const struct rs_conn *c);

/* Stop / restart receiving (backpressure on the source). */
void rs_conn_pause(struct rs_conn *c);
void rs_conn_resume(struct rs_conn *c);

/* Abortive close: drop queued data, cancel everything, close the socket. */
void rs_conn_close(struct rs_conn *c, enum rs_close_reason why, int err);
/* Graceful close: send what is queued, shut down writing, discard input for a
 * short linger, then close. */
void rs_conn_close_after_send(struct rs_conn *c);
bool rs_conn_closing(const struct rs_conn *c);

/* --- transport filters (TLS) ---
 *
 * A filter sits between the socket and the owner. The engine hands it the
 * wire bytes received (instead of ops->on_data); the filter decodes them
 * into user buffers of the pool (rs_bufpool_get) and passes plaintext on with
 * rs_conn_deliver(). What the owner sends waits in a plain queue until the
 * end of the event-loop iteration, then goes to filter->write in order, in
 * calls whose bytes fit whole records of RS_FILTER_CHUNK: small segments
 * gathered (a frame header and its payload become one record), a large one
 * passed where it lies with the small segments after it as its tail; the
 * filter queues the encoded bytes with rs_conn_send_wire(). Callbacks run on
 * the connection's worker. */
#define RS_FILTER_CHUNK	   16384 /* a TLS record's plaintext */
#define RS_FILTER_TAIL_MAX 256
struct rs_conn_filter {
	/* Wire bytes arrived (same validity rules as on_data). */
	void (*on_recv)(struct rs_conn *c, void *fctx, struct rs_buf *b, uint8_t *data,
			size_t len);
	/* Encode owner bytes data[0..len) then tail[0..tail_len); 0 or -errno
	 * (the engine closes the connection). A tail (<= RS_FILTER_TAIL_MAX,
	 * else NULL and 0) comes only where it fits in the last chunk of
	 * <data>: len % RS_FILTER_CHUNK + tail_len <= RS_FILTER_CHUNK. */
	int (*write)(struct rs_conn *c, void *fctx, const uint8_t *data, size_t len,
		     const uint8_t *tail, size_t tail_len);
	/* The owner asked for a graceful close: queue the closing bytes. Optional. */
	void (*shutdown)(struct rs_conn *c, void *fctx);
	/* A user buffer is free again after rs_conn_filter_wait(). Optional. */
	void (*on_resume)(struct rs_conn *c, void *fctx);
	/* The connection is gone (after ops->on_close): free <fctx>. */
	void (*release)(void *fctx);
	/* The connection moved to another worker (rs_conn_hand_off): <c> is
	 * its new struct there; called on the new worker before any other
	 * callback. Optional: a filter without it cannot move. */
	void (*on_move)(struct rs_conn *c, void *fctx);
	/* The connection is about to move (rs_conn_hand_off), called on the old
	 * worker: let go of its pool buffers. Optional. */
	void (*on_leave)(struct rs_conn *c, void *fctx);
};

/* Install a filter (right after accept or connect, before any byte flows):
 * 0, or -EBUSY when bytes are already queued (they would leave unencoded).
 * The owner's bytes are refused until the filter calls rs_conn_filter_ready;
 * the filter's own wire bytes (rs_conn_send_wire) flow from the start. */
int rs_conn_set_filter(struct rs_conn *c, const struct rs_conn_filter *f, void *fctx) RS_MUST_CHECK;
/* The filter's handshake is complete: accept the owner's bytes from now on. */
void rs_conn_filter_ready(struct rs_conn *c);
/* Queue bytes on the wire, past the filter. */
int rs_conn_send_wire(struct rs_conn *c, const void *data, size_t len) RS_MUST_CHECK;
/* Queue <len> bytes on the wire, past the filter, that the caller writes
 * into the returned space at once (a record sealed in place), before any
 * other call on <c>. NULL when closing or out of memory. */
uint8_t *rs_conn_wire_room(struct rs_conn *c, size_t len) RS_MUST_CHECK;
/* The filter's context (NULL without a filter). */
void *rs_conn_filter_ctx(const struct rs_conn *c);
/* Hand decoded bytes in pool buffer <b> to the owner's on_data. */
void rs_conn_deliver(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len);
/* Call filter->on_resume once a user buffer is free (the filter found none).
 * Meanwhile the engine stops receiving on the socket (receives already
 * completed still reach filter->on_recv), independently of the owner's
 * rs_conn_pause/rs_conn_resume: the socket is read again after on_resume
 * unless the filter waits again or the owner has it paused. */
void rs_conn_filter_wait(struct rs_conn *c);

/* --- hand-off to another worker ---
 *
 * A browser's reconnection can be accepted by any worker (SO_REUSEPORT), while
 * the console it resumes lives on one: the connection moves there. The
 * socket's direct descriptor goes to <to>'s table with IORING_OP_MSG_RING
 * (IORING_MSG_SEND_FD); on <to>'s thread a new struct rs_conn is made for it
 * and adopt() runs; the old struct ends here without a shutdown (its
 * on_close does not run: the owner gave it up). A filter moves with it (its
 * on_move names the new struct; one without on_move: -EOPNOTSUPP); its
 * context is then used only by the new worker (BoringSSL objects are not
 * bound to a thread, only never used by two at once). The owner must have
 * no bytes waiting for the filter (-EBUSY); wire bytes already queued are
 * sent first. Bytes the peer sent before the receive stopped are carried (at
 * most RS_HANDOFF_CARRY_MAX, else the hand-off fails with -EMSGSIZE) and
 * reach the new struct — through its filter when it has one, else as
 * <carry>. Exactly one of adopt / fail runs:
 * - adopt(nc, carry, len, arg) on <to>: <nc> NULL when <to> had no free slot
 *   (the socket is then closed); otherwise set its ops there; its receive is
 *   armed after adopt returns. <carry> is valid during the call.
 * - fail(from, -errno, arg) on the calling worker; the connection is closed.
 * 0, or -errno with nothing changed (the caller still owns <c>). */
#define RS_HANDOFF_CARRY_MAX 16384
typedef void (*rs_adopt_fn)(struct rs_conn *nc, const uint8_t *carry, size_t len, void *arg);
typedef void (*rs_handoff_fail_fn)(struct rs_worker *from, int err, void *arg);
int rs_conn_hand_off(struct rs_conn *c, struct rs_worker *to, rs_adopt_fn adopt,
		     rs_handoff_fail_fn fail, void *arg) RS_MUST_CHECK;

/* Open an outgoing TCP connection from worker <w> to <dst>, optionally bound
 * to <src> (NULL: the kernel chooses). ops->on_connect reports the result
 * within <timeout_ms>. On success *out is the new connection. 0 or -errno. */
int rs_conn_connect(struct rs_worker *w, const struct sockaddr *dst, socklen_t dstlen,
		    const struct sockaddr *src, socklen_t srclen, unsigned timeout_ms,
		    const struct rs_conn_ops *ops, void *ctx, struct rs_conn **out);

#endif
