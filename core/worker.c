/* core/worker.c — the engine: worker threads, their rings, connections.
 * See core/engine.h for the contracts. */
#include "core/common.h"

#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <liburing.h>

#include "core/engine.h"
#include "core/log.h"
#include "core/uring_compat.h"

#define MAX_LISTENERS 8
#define IOV_MAX_SEND 16
#define LINGER_MS 2000
#define SEAL_CHUNK RS_FILTER_CHUNK
#define SEAL_DIRECT 4096 /* a plain segment this large is sealed where it lies */
/* Sealed records are copied into segments of this size, kept on a per-worker
 * free list: a full record (16 KiB of plaintext plus at most 29 bytes of
 * framing) is beyond jemalloc's small classes, and allocating one per record
 * cost page faults and extent bookkeeping on every bulk transfer. */
#define REC_CAP 16896
#define REC_CACHE 256
#define ACCEPT_RETRY_MS 100
#define BGID 1
#define PIN_MAX 4 /* pool buffers one connection's queues may reference */

const char *const rs_close_reason_names[RS_CLOSE__COUNT] = {
	"normal", "peer_eof", "error", "timeout", "nomem", "shutdown",
};

enum op {
	OP_ACCEPT = 1,
	OP_RECV,
	OP_SEND,
	OP_CONNECT,
	OP_LINK_TIMEOUT,
	OP_CANCEL,
	OP_SHUTDOWN,
	OP_CLOSE,
	OP_PEERNAME,
	OP_REGISTER,
	OP_WAKE,
	OP_ACCEPT_CANCEL,
	OP_HANDOFF, /* IORING_OP_MSG_RING sending this conn's descriptor away */
	OP_ADOPT,   /* posted by another ring: a descriptor arrived (user_data: record) */
};

/* user_data: op (8 bits) | generation (24 bits) | slot (32 bits). */
#define UD(op, gen, slot) (((uint64_t)(op) << 56) | ((uint64_t)((gen)&0xffffffu) << 32) | (slot))
#define UD_OP(u) ((unsigned)((u) >> 56))
#define UD_GEN(u) ((uint32_t)(((u) >> 32) & 0xffffffu))
#define UD_SLOT(u) ((uint32_t)(u))

enum seg_kind { SEG_COPY = 0, SEG_OWNED, SEG_BUF, SEG_STATIC };

struct seg {
	struct seg *next;
	const uint8_t *ptr;
	uint32_t len;
	uint32_t cap;  /* SEG_COPY: bytes available in data[] */
	uint32_t cost; /* what this segment counts against the congestion limit */
	enum seg_kind kind;
	union {
		struct rs_buf *buf;
		void *owned;
	};
	uint8_t data[];
};

/* A sendmsg's header and iovecs. The kernel has consumed them once the SQE
 * is submitted (IORING_FEAT_SUBMIT_STABLE), so they live beside the SQE
 * slot that carries them (one per SQ entry, reused with the slot) rather
 * than in every connection: an idle console then keeps none. */
struct send_hdr {
	struct msghdr msg;
	struct iovec iov[IOV_MAX_SEND];
};

enum conn_flag {
	CF_RECV_ARMED = 1 << 0,
	CF_PAUSED = 1 << 1,
	CF_CLOSING = 1 << 2,
	CF_SENDING = 1 << 3,
	CF_CLOSE_AFTER_SEND = 1 << 4,
	CF_LINGER = 1 << 5,
	CF_DIRTY = 1 << 6,
	CF_CONGESTED = 1 << 7,
	CF_CONNECTING = 1 << 8,
	CF_CANCEL_PENDING = 1 << 9,
	CF_REARM = 1 << 10,
	CF_EOF = 1 << 11,
	CF_FINAL = 1 << 12,
	CF_FILTER_SHUT = 1 << 13, /* the filter's closing bytes are queued */
	CF_FWAIT = 1 << 14,       /* on w->fwait: the filter waits for a user buffer
				   * (its own receive pause, apart from CF_PAUSED) */
	CF_FILTER_READY = 1 << 15, /* the filter's handshake is done: owner bytes accepted */
	CF_HANDOFF = 1 << 16,      /* moving to another worker: input is carried, not delivered */
	CF_HANDOFF_SENT = 1 << 17, /* its MSG_RING is in flight */
	/* The linger's shutdown(SHUT_WR) is in flight. io_uring runs a shutdown
	 * on io-wq and resolves its direct descriptor only there, so the close
	 * that frees the descriptor must wait for it: otherwise a connection
	 * accepted into the freed descriptor meanwhile has its writing shut
	 * down (its sends fail with EPIPE). */
	CF_SHUT_WR = 1 << 18,
};

/* A connection on its way to another worker (rs_conn_hand_off). Allocated by
 * the sending worker; owned by the receiving worker once its OP_ADOPT
 * completion arrives (the kernel posts it only when the descriptor was
 * installed), by the sender again when its MSG_RING failed. */
struct rs_handoff {
	struct rs_worker *to;
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} peer;
	socklen_t peer_len;
	rs_adopt_fn adopt;
	rs_handoff_fail_fn fail;
	void *arg;
	const struct rs_conn_filter *filter; /* moves with the socket */
	void *fctx;
	bool filter_ready;
	size_t carry_len;
	uint8_t carry[RS_HANDOFF_CARRY_MAX];
};

union rs_sockaddr {
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

struct rs_conn {
	struct rs_worker *w;
	const struct rs_conn_ops *ops;
	void *ctx;
	uint32_t slot, gen;
	int fd; /* fixed-file index, -1 when none */
	uint16_t inflight;
	uint32_t flags;
	struct seg *sq_head, *sq_tail; /* wire bytes */
	struct seg *pq_head, *pq_tail; /* with a filter: the owner's bytes, not yet encoded */
	const struct rs_conn_filter *filter;
	void *fctx;
	uint32_t queued; /* payload bytes not yet sent */
	uint32_t cost;   /* memory those bytes pin: a referenced pool buffer costs all of it */
	uint16_t send_segs; /* segments covered by the send in flight */
	uint16_t pinned;    /* pool buffers its queues reference (SEG_BUF) */
	enum rs_close_reason why;
	int err;
	struct rs_conn *dirty_next, *rearm_next, *fwait_next;
	union rs_sockaddr peer;
	socklen_t peer_len;
	struct rs_timer timer; /* linger */
	/* Outgoing connect state. */
	int reg_fd;   /* real fd while it is being registered */
	int reg_fd_slot; /* in: the fd; out: the allocated table index */
	unsigned connect_timeout_ms;
	struct __kernel_timespec ts;
	struct rs_handoff *ho; /* CF_HANDOFF */
};

struct listener {
	union rs_sockaddr addr;
	socklen_t len;
	rs_accept_fn on_accept;
	void *arg;
};

struct post {
	struct post *next;
	void (*fn)(struct rs_worker *w, void *arg);
	void *arg;
};

struct rs_worker {
	struct rs_engine *e;
	unsigned id;
	pthread_t thread;
	struct io_uring ring;
	bool ring_ok;
	struct rs_bufpool pool;
	struct rs_timer_wheel timers;
	uint64_t now;
	struct rs_conn **conns;
	uint32_t *gens;
	uint32_t *free_slots;
	uint32_t nslots, nfree;
	int listen_fd[MAX_LISTENERS];
	bool accept_armed[MAX_LISTENERS];
	struct rs_timer accept_retry;
	int efd;
	uint64_t efd_buf;
	pthread_mutex_t inbox_lock;
	struct post *inbox;
	struct rs_conn *dirty, *rearm, *fwait;
	uint8_t *seal_buf; /* gathers small plaintext segments into one record */
	struct send_hdr *send_hdrs; /* one per SQ entry (see struct send_hdr) */
	struct seg *rec_free; /* spare REC_CAP copy segments, at most REC_CACHE */
	unsigned rec_nfree;
	uint16_t pin_max;  /* pool buffers one connection may reference */
	bool stopping, accept_paused, force_closed;
	bool abandoning; /* force_close_all: closes submit nothing */
	uint64_t stop_deadline;
	struct rs_timer stop_timer;
	struct rs_engine_stats stats;
	void *data;
	int start_err;
	char start_msg[256];
};

struct rs_engine {
	struct rs_engine_opts o;
	unsigned nworkers;
	struct rs_worker *workers;
	struct listener listeners[MAX_LISTENERS];
	unsigned nlisteners;
	void (*on_worker_start)(struct rs_worker *w, void *arg);
	void *on_worker_start_arg;
	pthread_mutex_t start_lock;
	pthread_cond_t start_cond;
	unsigned started;
	unsigned drain_ms;
	bool running;
	uint32_t ring_flags_used;
};

/* Counters are written only by their worker; readers on other threads load
 * them relaxed. A plain store of the incremented value keeps the data path
 * free of locked instructions. */
#define STAT_ADD(w, field, n)                                                                      \
	__atomic_store_n(&(w)->stats.field, (w)->stats.field + (n), __ATOMIC_RELAXED)

static void conn_finalize(struct rs_conn *c);
static void conn_arm_recv(struct rs_conn *c);
static void arm_accept(struct rs_worker *w, unsigned i);
static void on_linger_timeout(struct rs_timer *t);
static void handoff_carry(struct rs_conn *c, const uint8_t *data, size_t len);
static void handoff_try(struct rs_conn *c);

/* The configured socket buffer sizes, on a plain descriptor (a listener,
 * whose accepted sockets inherit them, or an outgoing socket before it moves
 * into the ring's table). 0 or -errno. */
static int set_sockbufs(const struct rs_engine *e, int fd)
{
	int v;

	if (e->o.socket_sndbuf) {
		v = (int)e->o.socket_sndbuf;
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)))
			return -errno;
	}
	if (e->o.socket_rcvbuf) {
		v = (int)e->o.socket_rcvbuf;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)))
			return -errno;
	}
	return 0;
}

static struct io_uring_sqe *get_sqe(struct rs_worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	while (!sqe) {
		/* SQ full in the middle of a batch: push what we have. */
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe;
}

/* Make room for a linked group of <n> SQEs before preparing it. get_sqe()
 * submits when the queue is full; doing that between two linked SQEs would
 * cut the link (the kernel ends a chain at the end of a submission): a
 * shutdown whose close never runs, a connect without its timeout. */
static void sq_reserve(struct rs_worker *w, unsigned n)
{
	if (io_uring_sq_space_left(&w->ring) < n)
		io_uring_submit(&w->ring);
}

static inline uint64_t conn_ud(const struct rs_conn *c, enum op op)
{
	return UD(op, c->gen, c->slot);
}

/* An SQE for <op> on <c>, its user_data already set: liburing's prep
 * helpers never touch user_data, so callers only prepare the operation. */
static struct io_uring_sqe *conn_sqe(struct rs_conn *c, enum op op)
{
	struct io_uring_sqe *sqe = get_sqe(c->w);

	c->inflight++;
	io_uring_sqe_set_data64(sqe, conn_ud(c, op));
	return sqe;
}

/* --- accessors --- */

unsigned rs_engine_workers(const struct rs_engine *e)
{
	return e->nworkers;
}
struct rs_worker *rs_engine_worker(struct rs_engine *e, unsigned i)
{
	return &e->workers[i];
}
unsigned rs_worker_id(const struct rs_worker *w)
{
	return w->id;
}
struct rs_engine *rs_worker_engine(struct rs_worker *w)
{
	return w->e;
}
struct rs_timer_wheel *rs_worker_timers(struct rs_worker *w)
{
	return &w->timers;
}
struct rs_bufpool *rs_worker_bufpool(struct rs_worker *w)
{
	return &w->pool;
}
uint64_t rs_worker_now(const struct rs_worker *w)
{
	return w->now;
}
bool rs_worker_stopping(const struct rs_worker *w)
{
	return w->stopping;
}
void *rs_worker_data(const struct rs_worker *w)
{
	return w->data;
}
void rs_worker_set_data(struct rs_worker *w, void *data)
{
	w->data = data;
}
const struct rs_engine_stats *rs_worker_stats(const struct rs_worker *w)
{
	return &w->stats;
}
void rs_conn_set_ops(struct rs_conn *c, const struct rs_conn_ops *ops, void *ctx)
{
	c->ops = ops;
	c->ctx = ctx;
}
void *rs_conn_ctx(const struct rs_conn *c)
{
	return c->ctx;
}
struct rs_worker *rs_conn_worker(const struct rs_conn *c)
{
	return c->w;
}
uint64_t rs_conn_id(const struct rs_conn *c)
{
	return ((uint64_t)c->w->id << 48) | ((uint64_t)(c->gen & 0xffff) << 32) | c->slot;
}
const struct sockaddr *rs_conn_peer(const struct rs_conn *c)
{
	return &c->peer.sa;
}
bool rs_conn_closing(const struct rs_conn *c)
{
	return c->flags & CF_CLOSING;
}
size_t rs_conn_queued(const struct rs_conn *c)
{
	return c->queued;
}
bool rs_conn_congested(const struct rs_conn *c)
{
	return c->cost > c->w->e->o.send_high_water;
}

void rs_conn_peer_str(const struct rs_conn *c, char *out, size_t len)
{
	const void *a = NULL;

	if (c->peer.sa.sa_family == AF_INET)
		a = &c->peer.sin.sin_addr;
	else if (c->peer.sa.sa_family == AF_INET6)
		a = &c->peer.sin6.sin6_addr;
	if (!a || !inet_ntop(c->peer.sa.sa_family, a, out, (socklen_t)len))
		snprintf(out, len, "-");
}

/* --- connection slots --- */

static struct rs_conn *conn_new(struct rs_worker *w)
{
	struct rs_conn *c;
	uint32_t slot;

	if (!w->nfree)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	slot = w->free_slots[--w->nfree];
	c->w = w;
	c->slot = slot;
	c->gen = w->gens[slot];
	c->fd = -1;
	c->reg_fd = -1;
	rs_timer_init(&c->timer, on_linger_timeout);
	w->conns[slot] = c;
	STAT_ADD(w, conns_live, 1);
	return c;
}

static void seg_free(struct rs_worker *w, struct seg *s)
{
	if (s->kind == SEG_BUF)
		rs_buf_unref(&w->pool, s->buf);
	else if (s->kind == SEG_OWNED)
		free(s->owned);
	if (s->kind == SEG_COPY && s->cap == REC_CAP && w->rec_nfree < REC_CACHE) {
		s->next = w->rec_free;
		w->rec_free = s;
		w->rec_nfree++;
		return;
	}
	free(s);
}

static void conn_finalize(struct rs_conn *c)
{
	struct rs_worker *w = c->w;
	struct seg *s, *n;

	c->flags |= CF_FINAL;
	rs_timer_unlink(&w->timers, &c->timer);
	for (s = c->sq_head; s; s = n) {
		n = s->next;
		seg_free(w, s);
	}
	c->sq_head = c->sq_tail = NULL;
	if (c->reg_fd >= 0)
		close(c->reg_fd);
	STAT_ADD(w, closed, 1);
	STAT_ADD(w, close_reasons[c->why], 1);
	STAT_ADD(w, conns_live, (uint64_t)-1);
	if (c->ho) { /* the hand-off failed before the descriptor moved */
		struct rs_handoff *ho = c->ho;

		c->ho = NULL;
		ho->fail(w, c->err ? -c->err : -EPIPE, ho->arg);
		free(ho);
	}
	if (c->ops && c->ops->on_close)
		c->ops->on_close(c, c->why, c->err);
	if (c->filter)
		c->filter->release(c->fctx);
	w->conns[c->slot] = NULL;
	w->gens[c->slot]++;
	w->free_slots[w->nfree++] = c->slot;
	/* Lists that may still point at <c> are walked with a CF_FINAL check, so
	 * the memory is released only once it is off them (see flush_pending). */
	if (!(c->flags & (CF_DIRTY | CF_REARM | CF_FWAIT)))
		free(c);
}

static void conn_maybe_finalize(struct rs_conn *c)
{
	if ((c->flags & CF_CLOSING) && !c->inflight && !(c->flags & CF_FINAL))
		conn_finalize(c);
}

/* --- send path --- */

static void mark_dirty(struct rs_conn *c)
{
	if (c->flags & (CF_DIRTY | CF_CLOSING))
		return;
	c->flags |= CF_DIRTY;
	c->dirty_next = c->w->dirty;
	c->w->dirty = c;
}

/* Wire bytes go to the send queue; the owner's bytes on a filtered
 * connection wait in the plain queue until the flush encodes them. */
static void queue_seg(struct rs_conn *c, struct seg *s, bool wire)
{
	struct seg **head = wire ? &c->sq_head : &c->pq_head;
	struct seg **tail = wire ? &c->sq_tail : &c->pq_tail;

	s->next = NULL;
	if (*tail)
		(*tail)->next = s;
	else
		*head = s;
	*tail = s;
	c->queued += s->len;
	c->cost += s->cost;
	if (c->cost > c->w->e->o.send_high_water)
		c->flags |= CF_CONGESTED;
	mark_dirty(c);
}

static void seg_done(struct rs_conn *c, struct seg *s)
{
	c->cost -= s->cost;
	if (s->kind == SEG_BUF)
		c->pinned--;
	seg_free(c->w, s);
}

/* Room for <len> more bytes at the end of a queue, already counted as
 * queued: the caller fills it at once. NULL when out of memory. */
static uint8_t *queue_room(struct rs_conn *c, size_t len, bool wire)
{
	struct seg *t = wire ? c->sq_tail : c->pq_tail, *s;
	uint8_t *p;
	size_t cap;

	/* Cork small writes into the tail copy segment. Its unsent bytes start
	 * at t->ptr, which a partial send moved past t->data, so the room left
	 * is what follows t->ptr + t->len. Appending to a segment a send in
	 * flight covers is safe too: the iovec holds the old length and
	 * on_send keeps what it did not cover. */
	if (t && t->kind == SEG_COPY &&
	    (size_t)(t->data + t->cap - (t->ptr + t->len)) >= len) {
		p = (uint8_t *)t->ptr + t->len;
		t->len += (uint32_t)len;
		c->queued += (uint32_t)len;
		if (c->cost > c->w->e->o.send_high_water)
			c->flags |= CF_CONGESTED;
		mark_dirty(c);
		return p;
	}
	if (len > UINT32_MAX / 2)
		return NULL;
	cap = len < 1024 ? 1024 : len;
	if (len > REC_CAP / 2 && len <= REC_CAP) {
		cap = REC_CAP;
		s = c->w->rec_free;
		if (s) {
			c->w->rec_free = s->next;
			c->w->rec_nfree--;
		}
	} else {
		s = NULL;
	}
	if (!s)
		s = malloc(sizeof(*s) + cap);
	if (!s)
		return NULL;
	s->kind = SEG_COPY;
	s->cap = (uint32_t)cap;
	s->cost = (uint32_t)cap;
	s->ptr = s->data;
	s->len = (uint32_t)len;
	queue_seg(c, s, wire);
	return s->data;
}

static int send_copy(struct rs_conn *c, const void *data, size_t len, bool wire)
{
	uint8_t *p;

	if (!len)
		return 0;
	p = queue_room(c, len, wire);
	if (!p)
		return len > UINT32_MAX / 2 ? -EMSGSIZE : -ENOMEM;
	memcpy(p, data, len);
	return 0;
}

/* Whether the owner may queue bytes: not before its connect completed, nor
 * before its filter's handshake (see engine.h). 0 or -errno. */
static int owner_may_send(const struct rs_conn *c)
{
	if (c->flags & (CF_CLOSING | CF_CLOSE_AFTER_SEND))
		return -EPIPE;
	if ((c->flags & CF_CONNECTING) || (c->filter && !(c->flags & CF_FILTER_READY)))
		return -ENOTCONN;
	return 0;
}

int rs_conn_send(struct rs_conn *c, const void *data, size_t len)
{
	int ret = owner_may_send(c);

	return ret ? ret : send_copy(c, data, len, !c->filter);
}

int rs_conn_send_wire(struct rs_conn *c, const void *data, size_t len)
{
	if (c->flags & CF_CLOSING)
		return -EPIPE;
	return send_copy(c, data, len, true);
}

uint8_t *rs_conn_wire_room(struct rs_conn *c, size_t len)
{
	if ((c->flags & CF_CLOSING) || !len)
		return NULL;
	return queue_room(c, len, true);
}

static int send_ref(struct rs_conn *c, enum seg_kind kind, void *ref, const uint8_t *data,
		    size_t len)
{
	struct seg *s;
	int ret = owner_may_send(c);

	if (ret)
		return ret;
	if (len > UINT32_MAX / 2)
		return -EMSGSIZE;
	/* Small slices are copied: pinning a whole receive buffer for a few
	 * bytes would let a slow reader hold the pool hostage. So are slices
	 * past the connection's share of the pool: a reader that stops (a
	 * plain ws:// browser) would otherwise keep ~high-water / buffer-size
	 * buffers (17 by default) and a few dozen such readers would stop every
	 * receive on the worker. The copies still count against the same
	 * high-water mark, so the memory a connection holds stays bounded.
	 * A filtered connection (TLS) is exempt: the flush at the end of this
	 * pass seals its plain queue and lets the references go, whether its
	 * reader reads or not, so they cannot pin the pool — and sealing
	 * copies the bytes anyway. */
	if (kind == SEG_BUF && !c->filter && (len <= 1024 || c->pinned >= c->w->pin_max))
		return send_copy(c, data, len, true);
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->kind = kind;
	s->cost = kind == SEG_BUF ? c->w->pool.size : (uint32_t)len;
	s->ptr = data;
	s->len = (uint32_t)len;
	s->cap = 0;
	s->owned = ref;
	if (kind == SEG_BUF) {
		rs_buf_ref(ref);
		c->pinned++;
	}
	queue_seg(c, s, !c->filter);
	return 0;
}

int rs_conn_send_owned(struct rs_conn *c, void *data, size_t len)
{
	int ret = send_ref(c, SEG_OWNED, data, data, len);

	if (ret)
		free(data);
	return ret;
}

int rs_conn_send_buf(struct rs_conn *c, struct rs_buf *b, const uint8_t *data, size_t len)
{
	return send_ref(c, SEG_BUF, b, data, len);
}

int rs_conn_send_static(struct rs_conn *c, const void *data, size_t len)
{
	return send_ref(c, SEG_STATIC, NULL, data, len);
}

static void submit_send(struct rs_conn *c)
{
	struct io_uring_sqe *sqe = conn_sqe(c, OP_SEND);
	struct send_hdr *h = &c->w->send_hdrs[sqe - c->w->ring.sq.sqes];
	struct seg *s = c->sq_head;
	unsigned n = 0;

	for (; s && n < IOV_MAX_SEND; s = s->next, n++) {
		h->iov[n].iov_base = (void *)s->ptr;
		h->iov[n].iov_len = s->len;
	}
	memset(&h->msg, 0, sizeof(h->msg));
	h->msg.msg_iov = h->iov;
	h->msg.msg_iovlen = n;
	c->send_segs = (uint16_t)n;
	io_uring_prep_sendmsg(sqe, c->fd, &h->msg, MSG_NOSIGNAL);
	sqe->flags |= IOSQE_FIXED_FILE;
	c->flags |= CF_SENDING;
	STAT_ADD(c->w, sends, 1);
}

static void begin_linger(struct rs_conn *c)
{
	struct io_uring_sqe *sqe;

	/* The peer already finished sending (a half-closed client): nothing
	 * is left to discard, so close now rather than after the linger. */
	if (c->flags & CF_EOF) {
		rs_conn_close(c, c->why, c->err);
		return;
	}
	c->flags |= CF_LINGER | CF_SHUT_WR;
	sqe = conn_sqe(c, OP_SHUTDOWN);
	io_uring_prep_shutdown(sqe, c->fd, SHUT_WR);
	sqe->flags |= IOSQE_FIXED_FILE;
	rs_timer_link(&c->w->timers, &c->timer, c->w->now + LINGER_MS);
	if (!(c->flags & CF_RECV_ARMED) && !(c->flags & CF_EOF)) {
		c->flags &= (uint32_t)~CF_PAUSED;
		conn_arm_recv(c);
	}
}

static struct seg *pop_plain(struct rs_conn *c)
{
	struct seg *s = c->pq_head;

	c->pq_head = s->next;
	if (!c->pq_head)
		c->pq_tail = NULL;
	c->queued -= s->len;
	return s;
}

/* Hand the plain queue to the filter in order. Small segments (a frame
 * header, then a short payload) are gathered so that each makes one record
 * rather than one per write. A large segment (a receive buffer's worth of
 * payload) goes in where it lies: copying 16 KiB costs about a fifth of
 * sealing it (bench/README.md), more than the record of its own the bytes
 * gathered before it then make. The small segments right after it (the next
 * frame's header) go in its last record, as its tail, where they fit. */
static int seal_plain(struct rs_conn *c)
{
	struct rs_worker *w = c->w;
	size_t fill = 0;
	int ret = 0;

	while (c->pq_head && !ret) {
		struct seg *s = pop_plain(c);
		const uint8_t *p = s->ptr;
		size_t left = s->len;

		if (left >= SEAL_DIRECT) {
			size_t room = RS_MIN(RS_FILTER_TAIL_MAX,
					     SEAL_CHUNK - ((left - 1) % SEAL_CHUNK + 1));

			if (fill)
				ret = c->filter->write(c, c->fctx, w->seal_buf, fill, NULL, 0);
			fill = 0;
			while (c->pq_head && c->pq_head->len <= room - fill) {
				struct seg *t = pop_plain(c);

				if (t->len)
					memcpy(w->seal_buf + fill, t->ptr, t->len);
				fill += t->len;
				seg_done(c, t);
			}
			if (!ret)
				ret = c->filter->write(c, c->fctx, p, left, w->seal_buf, fill);
			fill = 0;
			left = 0;
		}
		while (left && !ret) {
			size_t n = RS_MIN(left, SEAL_CHUNK - fill);

			memcpy(w->seal_buf + fill, p, n);
			fill += n;
			p += n;
			left -= n;
			if (fill == SEAL_CHUNK) {
				ret = c->filter->write(c, c->fctx, w->seal_buf, fill, NULL, 0);
				fill = 0;
			}
		}
		seg_done(c, s);
	}
	if (fill && !ret)
		ret = c->filter->write(c, c->fctx, w->seal_buf, fill, NULL, 0);
	return ret;
}

static void drop_plain(struct rs_conn *c)
{
	struct seg *s, *n;

	for (s = c->pq_head; s; s = n) {
		n = s->next;
		c->queued -= s->len;
		seg_done(c, s);
	}
	c->pq_head = c->pq_tail = NULL;
}

static void flush_conn(struct rs_conn *c)
{
	int ret;

	if (c->flags & (CF_CLOSING | CF_CONNECTING) || c->fd < 0)
		return;
	if (c->filter && c->pq_head) {
		ret = seal_plain(c);
		if (ret) {
			rs_conn_close(c, ret == -ENOMEM ? RS_CLOSE_NOMEM : RS_CLOSE_ERROR, -ret);
			return;
		}
	}
	if (c->filter && (c->flags & CF_CLOSE_AFTER_SEND) && !(c->flags & CF_FILTER_SHUT)) {
		c->flags |= CF_FILTER_SHUT;
		if (c->filter->shutdown)
			c->filter->shutdown(c, c->fctx);
	}
	if (c->flags & CF_SENDING)
		return;
	if (c->sq_head)
		submit_send(c);
	else if ((c->flags & CF_CLOSE_AFTER_SEND) && !(c->flags & CF_LINGER))
		begin_linger(c);
}

static void on_send(struct rs_conn *c, int res)
{
	struct rs_worker *w = c->w;
	size_t done;

	c->flags &= (uint32_t)~CF_SENDING;
	if (c->flags & CF_CLOSING)
		return;
	if (res < 0) {
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	STAT_ADD(w, bytes_out, (uint64_t)res);
	done = (size_t)res;
	c->queued -= (uint32_t)done;
	while (done && c->sq_head) {
		struct seg *s = c->sq_head;

		if (done < s->len) {
			s->ptr += done;
			s->len -= (uint32_t)done;
			break;
		}
		done -= s->len;
		c->sq_head = s->next;
		if (!c->sq_head)
			c->sq_tail = NULL;
		seg_done(c, s);
	}
	c->send_segs = 0;
	if (c->flags & CF_HANDOFF)
		handoff_try(c); /* it waited for the queued wire bytes */
	if (c->sq_head || (c->flags & CF_CLOSE_AFTER_SEND))
		mark_dirty(c);
	if ((c->flags & CF_CONGESTED) && c->cost <= w->e->o.send_high_water / 2) {
		c->flags &= (uint32_t)~CF_CONGESTED;
		if (c->ops && c->ops->on_drain)
			c->ops->on_drain(c);
	}
}

/* --- receive path --- */

static void conn_arm_recv(struct rs_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->flags & (CF_RECV_ARMED | CF_CLOSING | CF_PAUSED | CF_EOF) || c->fd < 0)
		return;
	/* A filter waiting for a user buffer keeps the socket unread, whatever
	 * the owner's pause says; lingering input is discarded, so it may flow. */
	if ((c->flags & (CF_FWAIT | CF_LINGER)) == CF_FWAIT)
		return;
	sqe = conn_sqe(c, OP_RECV);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	c->flags |= CF_RECV_ARMED;
}

/* Stop the armed multishot receive (bytes already completed still arrive). */
static void recv_cancel(struct rs_conn *c)
{
	struct io_uring_sqe *sqe;

	if ((c->flags & CF_RECV_ARMED) && !(c->flags & CF_CANCEL_PENDING)) {
		sqe = conn_sqe(c, OP_CANCEL);
		io_uring_prep_cancel64(sqe, conn_ud(c, OP_RECV), 0);
		c->flags |= CF_CANCEL_PENDING;
	}
}

void rs_conn_pause(struct rs_conn *c)
{
	if (c->flags & (CF_PAUSED | CF_CLOSING))
		return;
	c->flags |= CF_PAUSED;
	recv_cancel(c);
}

void rs_conn_resume(struct rs_conn *c)
{
	if (!(c->flags & CF_PAUSED))
		return;
	c->flags &= (uint32_t)~CF_PAUSED;
	conn_arm_recv(c);
}

static void on_recv(struct rs_conn *c, struct io_uring_cqe *cqe)
{
	struct rs_worker *w = c->w;
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->flags &= (uint32_t)~CF_RECV_ARMED;
	if (res > 0) {
		struct rs_buf *b;

		if (!(cqe->flags & IORING_CQE_F_BUFFER)) {
			rs_conn_close(c, RS_CLOSE_ERROR, EIO);
			return;
		}
		b = rs_bufpool_take(&w->pool, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
		STAT_ADD(w, bytes_in, (uint64_t)res);
		if (c->flags & (CF_CLOSING | CF_LINGER))
			;
		else if (c->flags & CF_HANDOFF)
			handoff_carry(c, rs_buf_data(&w->pool, b), (size_t)res);
		else if (c->filter)
			c->filter->on_recv(c, c->fctx, b, rs_buf_data(&w->pool, b), (size_t)res);
		else if (c->ops && c->ops->on_data)
			c->ops->on_data(c, b, rs_buf_data(&w->pool, b), (size_t)res);
		rs_buf_unref(&w->pool, b);
	} else if (res == 0) {
		c->flags |= CF_EOF;
		if (c->flags & CF_CLOSING)
			return;
		if (c->flags & CF_HANDOFF) {
			/* The new owner's own receive sees the end too. */
			handoff_try(c);
			return;
		}
		if (c->flags & CF_LINGER)
			rs_conn_close(c, c->why, c->err);
		else if (c->ops && c->ops->on_eof)
			c->ops->on_eof(c);
		else
			rs_conn_close(c, RS_CLOSE_PEER_EOF, 0);
		return;
	} else if (res == -ENOBUFS) {
		STAT_ADD(w, enobufs, 1);
		w->pool.enobufs++;
		if (!(c->flags & (CF_REARM | CF_CLOSING))) {
			c->flags |= CF_REARM;
			c->rearm_next = w->rearm;
			w->rearm = c;
		}
		return;
	} else if (res == -ECANCELED) {
		/* paused or closing */
	} else if (!(c->flags & CF_CLOSING)) {
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	if (!(c->flags & CF_RECV_ARMED) && !(c->flags & (CF_REARM | CF_CLOSING)))
		conn_arm_recv(c);
	if (c->flags & CF_HANDOFF)
		handoff_try(c);
}

/* --- transport filter --- */

int rs_conn_set_filter(struct rs_conn *c, const struct rs_conn_filter *f, void *fctx)
{
	/* Bytes queued before the filter would leave unencoded, under a
	 * channel the owner takes for encrypted. */
	if (c->sq_head || c->pq_head)
		return -EBUSY;
	c->filter = f;
	c->fctx = fctx;
	c->flags &= (uint32_t)~CF_FILTER_READY;
	return 0;
}

void rs_conn_filter_ready(struct rs_conn *c)
{
	c->flags |= CF_FILTER_READY;
}

void *rs_conn_filter_ctx(const struct rs_conn *c)
{
	return c->fctx;
}

void rs_conn_deliver(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	if (!(c->flags & (CF_CLOSING | CF_LINGER)) && c->ops && c->ops->on_data)
		c->ops->on_data(c, b, data, len);
}

void rs_conn_filter_wait(struct rs_conn *c)
{
	if (c->flags & (CF_FWAIT | CF_CLOSING))
		return;
	c->flags |= CF_FWAIT;
	c->fwait_next = c->w->fwait;
	c->w->fwait = c;
	/* The filter's own pause, apart from the owner's (CF_PAUSED): an owner
	 * resuming on its backpressure release must not re-arm a socket whose
	 * filter has nowhere to decode, or held input grows until the peer is
	 * closed as out of memory instead of throttled by TCP. */
	recv_cancel(c);
}

/* --- close --- */

static void submit_close(struct rs_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->fd < 0)
		return;
	/* No cancel: shutdown(SHUT_RDWR) ends the socket's pending requests
	 * itself (the multishot recv sees EOF, a waiting send EPIPE, a connect
	 * in SYN_SENT is disconnected), while a cancel by descriptor walks
	 * every request pending on the ring, making each close cost O(open
	 * connections): 20 s to stop 15,000 consoles before this
	 * (bench/relay-profile.py). */
	sq_reserve(c->w, 2);
	sqe = conn_sqe(c, OP_SHUTDOWN);
	io_uring_prep_shutdown(sqe, c->fd, SHUT_RDWR);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
	sqe = conn_sqe(c, OP_CLOSE);
	io_uring_prep_close_direct(sqe, (unsigned)c->fd);
}

void rs_conn_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct seg *s, *n, *keep = NULL;
	unsigned i = 0;

	if (c->flags & CF_CLOSING)
		return;
	c->flags |= CF_CLOSING;
	c->why = why;
	c->err = err;
	rs_timer_unlink(&c->w->timers, &c->timer);
	drop_plain(c);
	/* Segments covered by an in-flight send still belong to the kernel. */
	for (s = c->sq_head; s; s = n) {
		n = s->next;
		if ((c->flags & CF_SENDING) && i++ < c->send_segs) {
			keep = s;
			continue;
		}
		seg_done(c, s);
	}
	if (keep) {
		keep->next = NULL;
		c->sq_tail = keep;
	} else {
		c->sq_head = c->sq_tail = NULL;
	}
	if (c->w->abandoning && !(c->flags & CF_SENDING))
		return; /* force_close_all finalizes it; the ring's teardown closes it */
	if (!(c->flags & CF_SHUT_WR)) /* else submitted when that shutdown completes */
		submit_close(c);
	/* With nothing in flight (connect before registration finished is the
	 * only such case) the registration completion finalizes. */
}

void rs_conn_close_after_send(struct rs_conn *c)
{
	if (c->flags & (CF_CLOSING | CF_CLOSE_AFTER_SEND))
		return;
	c->flags |= CF_CLOSE_AFTER_SEND;
	mark_dirty(c);
}

static void on_linger_timeout(struct rs_timer *t)
{
	struct rs_conn *c = rs_container_of(t, struct rs_conn, timer);

	rs_conn_close(c, c->why, c->err);
}

/* --- hand-off to another worker --- */

static void handoff_carry(struct rs_conn *c, const uint8_t *data, size_t len)
{
	struct rs_handoff *ho = c->ho;

	if (len > sizeof(ho->carry) - ho->carry_len) {
		rs_conn_close(c, RS_CLOSE_NOMEM, EMSGSIZE);
		return;
	}
	memcpy(ho->carry + ho->carry_len, data, len);
	ho->carry_len += len;
}

/* Send the descriptor once the receive has stopped (no byte may be read
 * here after the other worker reads) and the send queue is empty. */
static void handoff_try(struct rs_conn *c)
{
	struct io_uring_sqe *sqe;

	if ((c->flags & (CF_CLOSING | CF_HANDOFF_SENT | CF_RECV_ARMED | CF_SENDING)) ||
	    !(c->flags & CF_HANDOFF) || c->sq_head || c->fd < 0)
		return;
	c->flags |= CF_HANDOFF_SENT;
	sqe = conn_sqe(c, OP_HANDOFF);
	/* liburing 2.3 has no io_uring_prep_msg_ring_fd: the kernel reads
	 * fd (target ring), addr (command), addr3 (our fixed file), file_index
	 * (slot there) and off (the target CQE's user_data), see
	 * io_uring/msg_ring.c io_msg_ring_prep. */
	io_uring_prep_rw(IORING_OP_MSG_RING, sqe, c->ho->to->ring.ring_fd,
			 (void *)(uintptr_t)IORING_MSG_SEND_FD, 0,
			 ((uint64_t)OP_ADOPT << 56) | (uint64_t)(uintptr_t)c->ho);
	io_uring_sqe_set_data64(sqe, conn_ud(c, OP_HANDOFF));
	sqe->addr3 = (uint64_t)c->fd;
	sqe->file_index = IORING_FILE_INDEX_ALLOC;
}

static void on_handoff_sent(struct rs_conn *c, int res)
{
	struct io_uring_sqe *sqe;

	if (res >= 0) {
		/* The other worker owns the record, the socket and the filter's
		 * context now: this struct must not release them. */
		c->ho = NULL;
		c->filter = NULL;
		c->fctx = NULL;
	}
	if (c->flags & CF_CLOSING)
		return; /* the finalize reports a failure while the record is ours */
	if (res < 0) {
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	/* Drop only our table entry: no shutdown, the socket lives on there. */
	c->flags |= CF_CLOSING;
	sqe = conn_sqe(c, OP_CLOSE);
	io_uring_prep_close_direct(sqe, (unsigned)c->fd);
}

static void on_adopt(struct rs_worker *w, struct rs_handoff *ho, int res)
{
	struct io_uring_sqe *sqe;
	struct rs_conn *c = res >= 0 ? conn_new(w) : NULL;

	if (!c) {
		if (res >= 0) {
			sqe = get_sqe(w);
			io_uring_prep_close_direct(sqe, (unsigned)res);
			io_uring_sqe_set_data64(sqe, 0);
		}
		if (ho->filter)
			ho->filter->release(ho->fctx);
		ho->adopt(NULL, NULL, 0, ho->arg);
		free(ho);
		return;
	}
	c->fd = res;
	memcpy(&c->peer, &ho->peer, sizeof(ho->peer));
	c->peer_len = ho->peer_len;
	if (ho->filter) {
		c->filter = ho->filter;
		c->fctx = ho->fctx;
		if (ho->filter_ready)
			c->flags |= CF_FILTER_READY;
		c->filter->on_move(c, c->fctx);
		ho->adopt(c, NULL, 0, ho->arg);
		/* Wire bytes read there, then whatever the filter held. */
		if (ho->carry_len && !(c->flags & CF_CLOSING))
			c->filter->on_recv(c, c->fctx, NULL, ho->carry, ho->carry_len);
		if (c->filter->on_resume && !(c->flags & CF_CLOSING))
			c->filter->on_resume(c, c->fctx);
	} else {
		ho->adopt(c, ho->carry, ho->carry_len, ho->arg);
	}
	explicit_bzero(ho->carry, ho->carry_len);
	free(ho);
	if (!(c->flags & CF_CLOSING))
		conn_arm_recv(c);
}

static const struct rs_conn_ops handoff_ops = {0};

int rs_conn_hand_off(struct rs_conn *c, struct rs_worker *to, rs_adopt_fn adopt,
		     rs_handoff_fail_fn fail, void *arg)
{
	struct rs_handoff *ho;

	if (c->flags & (CF_CLOSING | CF_CLOSE_AFTER_SEND | CF_HANDOFF | CF_CONNECTING))
		return -EPIPE;
	if (c->filter && !c->filter->on_move)
		return -EOPNOTSUPP;
	if (c->pq_head || (c->flags & CF_FWAIT))
		return -EBUSY;
	if (to == c->w || !to->ring_ok)
		return -EINVAL;
	ho = calloc(1, sizeof(*ho));
	if (!ho)
		return -ENOMEM;
	if (c->filter && c->filter->on_leave)
		c->filter->on_leave(c, c->fctx);
	ho->to = to;
	memcpy(&ho->peer, &c->peer, sizeof(ho->peer));
	ho->peer_len = c->peer_len;
	ho->adopt = adopt;
	ho->fail = fail;
	ho->arg = arg;
	ho->filter = c->filter;
	ho->fctx = c->fctx;
	ho->filter_ready = c->flags & CF_FILTER_READY;
	c->ho = ho;
	c->ops = &handoff_ops;
	c->ctx = NULL;
	c->flags |= CF_HANDOFF | CF_PAUSED;
	recv_cancel(c);
	handoff_try(c);
	return 0;
}

/* --- connect --- */

static void on_connected(struct rs_conn *c, int res)
{
	c->flags &= (uint32_t)~CF_CONNECTING;
	if (c->flags & CF_CLOSING)
		return;
	if (res == -ECANCELED)
		res = -ETIMEDOUT;
	if (!res) {
		STAT_ADD(c->w, connected, 1);
		conn_arm_recv(c);
		mark_dirty(c);
	}
	if (c->ops && c->ops->on_connect)
		c->ops->on_connect(c, res);
}

static void on_registered(struct rs_conn *c, int res)
{
	struct io_uring_sqe *sqe;

	close(c->reg_fd);
	c->reg_fd = -1;
	if (res < 1) {
		if (!(c->flags & CF_CLOSING)) {
			c->flags &= (uint32_t)~CF_CONNECTING;
			if (c->ops && c->ops->on_connect)
				c->ops->on_connect(c, res < 0 ? res : -ENFILE);
			if (!(c->flags & CF_CLOSING))
				rs_conn_close(c, RS_CLOSE_ERROR, res < 0 ? -res : ENFILE);
		}
		return;
	}
	/* The kernel wrote the allocated table index over the fd we passed. */
	c->fd = c->reg_fd_slot;
	if (c->flags & CF_CLOSING) {
		c->flags &= (uint32_t)~CF_CLOSING;
		rs_conn_close(c, c->why, c->err);
		return;
	}
	sq_reserve(c->w, 2);
	sqe = conn_sqe(c, OP_CONNECT);
	io_uring_prep_connect(sqe, c->fd, &c->peer.sa, c->peer_len);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
	c->ts.tv_sec = c->connect_timeout_ms / 1000;
	c->ts.tv_nsec = (long long)(c->connect_timeout_ms % 1000) * 1000000;
	sqe = conn_sqe(c, OP_LINK_TIMEOUT);
	io_uring_prep_link_timeout(sqe, &c->ts, 0);
}

int rs_conn_connect(struct rs_worker *w, const struct sockaddr *dst, socklen_t dstlen,
		    const struct sockaddr *src, socklen_t srclen, unsigned timeout_ms,
		    const struct rs_conn_ops *ops, void *ctx, struct rs_conn **out)
{
	struct io_uring_sqe *sqe;
	struct rs_conn *c;
	int fd, one = 1, ret;

	if (dstlen > sizeof(union rs_sockaddr) || (dst->sa_family != AF_INET &&
						      dst->sa_family != AF_INET6))
		return -EAFNOSUPPORT;
	if (w->stopping)
		return -ESHUTDOWN;
	/* Sockets are created and bound with plain syscalls (bind/setsockopt on
	 * direct descriptors need 6.7-6.11 kernels), then moved into the ring's
	 * table; the real fd lives only until the registration completes. */
	fd = socket(dst->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ret = set_sockbufs(w->e, fd);
	if (ret)
		goto out_close;
	if (src) {
		const struct sockaddr_in *s4 = (const void *)src;

		if (s4->sin_port == 0)
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		else
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, src, srclen)) {
			ret = -errno;
			goto out_close;
		}
	}
	c = conn_new(w);
	if (!c) {
		ret = -ENFILE;
		goto out_close;
	}
	c->ops = ops;
	c->ctx = ctx;
	memcpy(&c->peer, dst, dstlen);
	c->peer_len = dstlen;
	c->connect_timeout_ms = timeout_ms ? timeout_ms : 10000;
	c->reg_fd = fd;
	c->reg_fd_slot = fd;
	c->flags |= CF_CONNECTING;
	sqe = conn_sqe(c, OP_REGISTER);
	io_uring_prep_files_update(sqe, &c->reg_fd_slot, 1, IORING_FILE_INDEX_ALLOC);
	*out = c;
	return 0;

out_close:
	close(fd);
	return ret;
}

/* --- accept --- */

static void arm_accept(struct rs_worker *w, unsigned i)
{
	struct io_uring_sqe *sqe;

	if (w->accept_armed[i] || w->listen_fd[i] < 0 || w->stopping || w->accept_paused)
		return;
	sqe = get_sqe(w);
	io_uring_prep_multishot_accept_direct(sqe, w->listen_fd[i], NULL, NULL, 0);
	io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0, i));
	w->accept_armed[i] = true;
}

static void on_accept_retry(struct rs_timer *t)
{
	struct rs_worker *w = rs_container_of(t, struct rs_worker, accept_retry);

	for (unsigned i = 0; i < w->e->nlisteners; i++)
		arm_accept(w, i);
}

static void handle_accept(struct rs_worker *w, unsigned li, struct io_uring_cqe *cqe)
{
	struct listener *l = &w->e->listeners[li];
	struct io_uring_sqe *sqe;
	struct rs_conn *c;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		w->accept_armed[li] = false;
	if (cqe->res < 0) {
		if (cqe->res != -ECANCELED) {
			STAT_ADD(w, accept_errors, 1);
			/* Table full or transient: try again shortly, never spin. */
			rs_timer_link(&w->timers, &w->accept_retry, w->now + ACCEPT_RETRY_MS);
		}
		return;
	}
	c = conn_new(w);
	if (!c) {
		STAT_ADD(w, accept_errors, 1);
		sqe = get_sqe(w);
		io_uring_prep_close_direct(sqe, (unsigned)cqe->res);
		io_uring_sqe_set_data64(sqe, 0);
		goto out_rearm;
	}
	c->fd = cqe->res;
	STAT_ADD(w, accepted, 1);
	/* The peer address: direct descriptors have no getpeername, so ask with
	 * a socket command; SO_PEERNAME wants exactly the family's length. */
	c->peer_len = l->addr.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						       : sizeof(struct sockaddr_in);
	sqe = conn_sqe(c, OP_PEERNAME);
	rs_uring_prep_cmd_sock(sqe, RS_SOCKET_URING_OP_GETSOCKOPT, c->fd, SOL_SOCKET, SO_PEERNAME,
			       &c->peer, (int)c->peer_len);
	sqe->flags |= IOSQE_FIXED_FILE;
	l->on_accept(c, l->arg);
	if (!(c->flags & CF_CLOSING))
		conn_arm_recv(c);
out_rearm:
	if (!w->accept_armed[li])
		arm_accept(w, li);
}

/* --- dispatch --- */

static void on_wake(struct rs_worker *w);

static void handle_cqe(struct rs_worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	unsigned op = UD_OP(ud);
	uint32_t slot = UD_SLOT(ud);
	struct rs_conn *c;

	switch (op) {
	case 0:
		return;
	case OP_ACCEPT:
		handle_accept(w, slot, cqe);
		return;
	case OP_ACCEPT_CANCEL:
		return;
	case OP_WAKE:
		on_wake(w);
		return;
	case OP_ADOPT:
		on_adopt(w, (struct rs_handoff *)(uintptr_t)(ud & ((UINT64_C(1) << 56) - 1)),
			 cqe->res);
		return;
	}
	if (slot >= w->nslots)
		return;
	c = w->conns[slot];
	if (!c || (c->gen & 0xffffffu) != UD_GEN(ud))
		return; /* late completion for a reused slot */
	if (op != OP_RECV || !(cqe->flags & IORING_CQE_F_MORE))
		c->inflight--;
	switch (op) {
	case OP_RECV:
		on_recv(c, cqe);
		break;
	case OP_SEND:
		on_send(c, cqe->res);
		break;
	case OP_CONNECT:
		on_connected(c, cqe->res);
		break;
	case OP_REGISTER:
		on_registered(c, cqe->res);
		break;
	case OP_HANDOFF:
		on_handoff_sent(c, cqe->res);
		break;
	case OP_CANCEL:
		c->flags &= (uint32_t)~CF_CANCEL_PENDING;
		break;
	case OP_SHUTDOWN:
		/* While CF_SHUT_WR is set no other shutdown is submitted: this is
		 * the linger's, and a close that came meanwhile waited for it (one
		 * abandoned at the stop deadline is finalized: its completions
		 * never arrive here). */
		if (c->flags & CF_SHUT_WR) {
			c->flags &= (uint32_t)~CF_SHUT_WR;
			if (c->flags & CF_CLOSING)
				submit_close(c);
		}
		break;
	case OP_CLOSE:
		c->fd = -1;
		break;
	case OP_PEERNAME:
		if (cqe->res < 0)
			c->peer.sa.sa_family = AF_UNSPEC;
		break;
	default:
		break;
	}
	conn_maybe_finalize(c);
}

static void flush_dirty(struct rs_worker *w)
{
	while (w->dirty) {
		struct rs_conn *c = w->dirty;

		w->dirty = c->dirty_next;
		c->flags &= (uint32_t)~CF_DIRTY;
		if (c->flags & CF_FINAL) {
			if (!(c->flags & (CF_REARM | CF_FWAIT)))
				free(c);
			continue;
		}
		flush_conn(c);
	}
}

static void flush_waiting(struct rs_worker *w)
{
	if (w->rearm && rs_bufpool_has_free(&w->pool)) {
		struct rs_conn *list = w->rearm;

		w->rearm = NULL;
		while (list) {
			struct rs_conn *c = list;

			list = c->rearm_next;
			c->flags &= (uint32_t)~CF_REARM;
			if (c->flags & CF_FINAL) {
				if (!(c->flags & (CF_DIRTY | CF_FWAIT)))
					free(c);
				continue;
			}
			conn_arm_recv(c);
		}
	}
	while (w->fwait && rs_bufpool_has_user_free(&w->pool)) {
		struct rs_conn *c = w->fwait;

		w->fwait = c->fwait_next;
		c->flags &= (uint32_t)~CF_FWAIT;
		if (c->flags & CF_FINAL) {
			if (!(c->flags & (CF_DIRTY | CF_REARM)))
				free(c);
			continue;
		}
		if (!(c->flags & CF_CLOSING) && c->filter->on_resume)
			c->filter->on_resume(c, c->fctx);
		/* Unless the filter waits again, its pause is over; the owner's
		 * own pause still holds (conn_arm_recv checks both). */
		conn_arm_recv(c);
	}
}

/* Sends and re-arms are batched: everything queued during one pass over the
 * completion queue goes out in the next io_uring_enter. A filter resumed by
 * flush_waiting queues sends of its own (the owner answers what it now
 * receives), so the pass repeats until nothing is dirty: the worker must not
 * sleep on bytes it has queued. */
static void flush_pending(struct rs_worker *w)
{
	do {
		flush_dirty(w);
		flush_waiting(w);
	} while (w->dirty);
	rs_bufpool_flush(&w->pool);
}

/* --- cross-worker messages --- */

static void arm_wake(struct rs_worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_read(sqe, w->efd, &w->efd_buf, sizeof(w->efd_buf), 0);
	io_uring_sqe_set_data64(sqe, UD(OP_WAKE, 0, 0));
}

int rs_worker_post(struct rs_worker *w, void (*fn)(struct rs_worker *w, void *arg), void *arg)
{
	struct post *p = malloc(sizeof(*p)), **tail;
	uint64_t one = 1;

	if (!p)
		return -ENOMEM;
	p->fn = fn;
	p->arg = arg;
	p->next = NULL;
	pthread_mutex_lock(&w->inbox_lock);
	/* FIFO, so messages from one sender run in order. */
	for (tail = &w->inbox; *tail; tail = &(*tail)->next)
		;
	*tail = p;
	pthread_mutex_unlock(&w->inbox_lock);
	if (write(w->efd, &one, sizeof(one)) < 0) {
		/* The counter cannot overflow in practice; a failed wake only delays. */
	}
	return 0;
}

struct sync_call {
	void (*fn)(struct rs_worker *w, void *arg);
	void *arg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void run_sync(struct rs_worker *w, void *arg)
{
	struct sync_call *sc = arg;

	sc->fn(w, sc->arg);
	pthread_mutex_lock(&sc->lock);
	sc->done = true;
	pthread_cond_signal(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
}

int rs_worker_call(struct rs_worker *w, void (*fn)(struct rs_worker *w, void *arg), void *arg)
{
	struct sync_call sc = {.fn = fn, .arg = arg};
	int ret;

	pthread_mutex_init(&sc.lock, NULL);
	pthread_cond_init(&sc.cond, NULL);
	ret = rs_worker_post(w, run_sync, &sc);
	if (!ret) {
		pthread_mutex_lock(&sc.lock);
		while (!sc.done)
			pthread_cond_wait(&sc.cond, &sc.lock);
		pthread_mutex_unlock(&sc.lock);
	}
	pthread_mutex_destroy(&sc.lock);
	pthread_cond_destroy(&sc.cond);
	return ret;
}

static void on_wake(struct rs_worker *w)
{
	struct post *list, *p;

	pthread_mutex_lock(&w->inbox_lock);
	list = w->inbox;
	w->inbox = NULL;
	pthread_mutex_unlock(&w->inbox_lock);
	while ((p = list)) {
		list = p->next;
		p->fn(w, p->arg);
		free(p);
	}
	if (!w->stopping || w->stats.conns_live)
		arm_wake(w);
}

/* --- stop / drain --- */

static void close_listeners(struct rs_worker *w)
{
	for (unsigned i = 0; i < w->e->nlisteners; i++) {
		if (w->listen_fd[i] < 0)
			continue;
		if (w->accept_armed[i]) {
			struct io_uring_sqe *sqe = get_sqe(w);

			io_uring_prep_cancel64(sqe, UD(OP_ACCEPT, 0, i), 0);
			io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT_CANCEL, 0, i));
		}
	}
	io_uring_submit(&w->ring);
	for (unsigned i = 0; i < w->e->nlisteners; i++) {
		if (w->listen_fd[i] >= 0)
			close(w->listen_fd[i]);
		w->listen_fd[i] = -1;
	}
}

/* The drain's deadline: every connection still open is closed, and this
 * worker ends. A shutdown and a close per connection cost ~50 us of CPU
 * each (shutdown goes through io-wq), 5.8 CPU-s for 100,000 consoles with
 * the exit 7 s past drain_timeout_s on 2 cores (bench/relay-bench.py
 * hold). So those with no send in flight are finalized here without a
 * request — their owners see on_close as before — and the ring's teardown
 * at exit closes their sockets in one pass of the kernel. One with a send
 * in flight takes the usual way: the kernel may still read its segments. */
static void force_close_all(struct rs_worker *w)
{
	unsigned done;

	w->force_closed = true;
	w->abandoning = true;
	for (uint32_t i = 0; i < w->nslots; i++) {
		struct rs_conn *c = w->conns[i];

		if (c && !(c->flags & CF_CLOSING))
			rs_conn_close(c, RS_CLOSE_SHUTDOWN, 0);
	}
	do { /* an owner's on_close may close (or open and close) another */
		done = 0;
		for (uint32_t i = 0; i < w->nslots; i++) {
			struct rs_conn *c = w->conns[i];

			if (!c || !(c->flags & CF_CLOSING) || (c->flags & (CF_FINAL | CF_SENDING)))
				continue;
			/* Completions still due carry a generation the slot no
			 * longer has: they are dropped (handle_cqe). */
			c->inflight = 0;
			conn_finalize(c);
			done++;
		}
	} while (done);
	w->abandoning = false;
}

static void on_stop_deadline(struct rs_timer *t)
{
	struct rs_worker *w = rs_container_of(t, struct rs_worker, stop_timer);

	force_close_all(w);
}

static void do_stop(struct rs_worker *w, void *arg)
{
	(void)arg;
	if (w->stopping)
		return;
	w->stopping = true;
	rs_timer_unlink(&w->timers, &w->accept_retry);
	close_listeners(w);
	w->stop_deadline = w->now + w->e->drain_ms;
	rs_timer_init(&w->stop_timer, on_stop_deadline);
	rs_timer_link(&w->timers, &w->stop_timer, w->stop_deadline);
	for (uint32_t i = 0; i < w->nslots; i++) {
		struct rs_conn *c = w->conns[i];

		if (c && !(c->flags & CF_CLOSING) && c->ops && c->ops->on_stop)
			c->ops->on_stop(c);
	}
}

static void do_pause_accept(struct rs_worker *w, void *arg)
{
	(void)arg;
	w->accept_paused = true;
	for (unsigned i = 0; i < w->e->nlisteners; i++) {
		if (w->accept_armed[i]) {
			struct io_uring_sqe *sqe = get_sqe(w);

			io_uring_prep_cancel64(sqe, UD(OP_ACCEPT, 0, i), 0);
			io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT_CANCEL, 0, i));
		}
	}
}

void rs_engine_pause_accept(struct rs_engine *e)
{
	for (unsigned i = 0; i < e->nworkers; i++)
		rs_worker_post(&e->workers[i], do_pause_accept, NULL);
}

/* --- worker thread --- */

static int open_listener(const struct rs_engine *e, const struct listener *l, int *out)
{
	int fd, one = 1, ret;

	fd = socket(l->addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		ret = -errno;
		goto out_close;
	}
	ret = set_sockbufs(e, fd);
	if (ret)
		goto out_close;
	if (l->addr.sa.sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, &l->addr.sa, l->len) || listen(fd, 4096)) {
		ret = -errno;
		goto out_close;
	}
	*out = fd;
	return 0;

out_close:
	close(fd);
	return ret;
}

static int setup_ring(struct rs_worker *w)
{
	struct rs_engine *e = w->e;
	struct io_uring_params p;
	unsigned entries = e->o.ring_entries ? e->o.ring_entries : 4096;
	/* Best first: DEFER_TASKRUN (6.1) runs completions only when we wait;
	 * COOP_TASKRUN (5.19) avoids IPIs; plain works everywhere else. */
	static const uint32_t tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		0,
	};
	int ret = -EINVAL;

	for (size_t i = 0; i < RS_ARRAY_SIZE(tries); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = tries[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
		p.cq_entries = entries * 4;
		ret = io_uring_queue_init_params(entries, &w->ring, &p);
		if (!ret) {
			e->ring_flags_used = p.flags;
			break;
		}
		if (ret != -EINVAL)
			break;
	}
	if (ret) {
		snprintf(w->start_msg, sizeof(w->start_msg), "io_uring_setup: %s", strerror(-ret));
		return ret;
	}
	w->ring_ok = true;
	io_uring_register_ring_fd(&w->ring);
	ret = io_uring_register_files_sparse(&w->ring, w->nslots);
	if (ret) {
		snprintf(w->start_msg, sizeof(w->start_msg),
			 "cannot register %u direct descriptors: %s", w->nslots, strerror(-ret));
		return ret;
	}
	ret = rs_bufpool_init(&w->pool, &w->ring, BGID, e->o.buf_count, e->o.buf_size);
	if (ret) {
		snprintf(w->start_msg, sizeof(w->start_msg),
			 "provided buffer ring (kernel >= 5.19 needed): %s", strerror(-ret));
		return ret;
	}
	w->seal_buf = rs_xmalloc(SEAL_CHUNK);
	/* Committed now (~1.2 MiB per 4,096 entries): a fixed cost of the
	 * worker, not memory that seems to grow as the SQ first wraps. */
	w->send_hdrs = rs_xmalloc(w->ring.sq.ring_entries * sizeof(*w->send_hdrs));
	memset(w->send_hdrs, 0, w->ring.sq.ring_entries * sizeof(*w->send_hdrs));
	/* Forwarding without a copy is worth a few buffers per connection, not
	 * a share that lets count/pin_max stalled readers drain the pool. */
	w->pin_max = (uint16_t)RS_MAX(1u, RS_MIN(PIN_MAX, e->o.buf_count / 32));
	return 0;
}

static bool worker_done(struct rs_worker *w)
{
	return w->stopping && !w->stats.conns_live;
}

static void worker_loop(struct rs_worker *w)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;

	while (!worker_done(w)) {
		uint64_t next;
		unsigned head, n = 0;
		int ret;

		flush_pending(w);
		next = rs_timer_wheel_next(&w->timers);
		if (next != UINT64_MAX) {
			uint64_t d = next > w->now ? next - w->now : 0;

			ts.tv_sec = (long long)(d / 1000);
			ts.tv_nsec = (long long)(d % 1000) * 1000000;
		}
		ret = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1,
						       next == UINT64_MAX ? NULL : &ts, NULL);
		STAT_ADD(w, enters, 1);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
			rs_error("engine", "worker %u: io_uring_enter: %s", w->id, strerror(-ret));
			break;
		}
		w->now = rs_now_ms();
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			handle_cqe(w, cqe);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
		if (*w->ring.sq.kflags & IORING_SQ_CQ_OVERFLOW)
			STAT_ADD(w, cq_overflow, 1);
		STAT_ADD(w, cqes, n);
		STAT_ADD(w, loops, 1);
		rs_timer_wheel_run(&w->timers, w->now);
	}
}

static void *worker_main(void *arg)
{
	struct rs_worker *w = arg;
	struct rs_engine *e = w->e;
	char name[16];
	int ret;

	snprintf(name, sizeof(name), "rs-worker-%u", w->id);
	pthread_setname_np(pthread_self(), name);
	if (e->o.pin) {
		cpu_set_t set;
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		CPU_ZERO(&set);
		CPU_SET(w->id % (unsigned)(ncpu > 0 ? ncpu : 1), &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	w->now = rs_now_ms();
	rs_timer_wheel_init(&w->timers, w->now);
	rs_timer_init(&w->accept_retry, on_accept_retry);
	ret = setup_ring(w);
	for (unsigned i = 0; !ret && i < e->nlisteners; i++) {
		ret = open_listener(e, &e->listeners[i], &w->listen_fd[i]);
		if (ret) {
			char host[INET6_ADDRSTRLEN] = "?";
			const struct listener *l = &e->listeners[i];

			inet_ntop(l->addr.sa.sa_family,
				  l->addr.sa.sa_family == AF_INET6 ? (const void *)&l->addr.sin6.sin6_addr
								   : (const void *)&l->addr.sin.sin_addr,
				  host, sizeof(host));
			snprintf(w->start_msg, sizeof(w->start_msg), "cannot listen on %s port %u: %s",
				 host, ntohs(l->addr.sin.sin_port), strerror(-ret));
		}
	}
	if (!ret) {
		arm_wake(w);
		if (e->on_worker_start)
			e->on_worker_start(w, e->on_worker_start_arg);
		for (unsigned i = 0; i < e->nlisteners; i++)
			arm_accept(w, i);
	}
	pthread_mutex_lock(&e->start_lock);
	w->start_err = ret;
	e->started++;
	pthread_cond_broadcast(&e->start_cond);
	pthread_mutex_unlock(&e->start_lock);
	if (ret)
		return NULL;
	worker_loop(w);
	return NULL;
}

/* --- engine --- */

static uint32_t default_slots(void)
{
	struct rlimit rl;

	/* A ring's direct descriptor table is bounded by RLIMIT_NOFILE, but per
	 * ring, not per process: raise the soft limit to the hard one and use
	 * almost all of it in every worker. */
	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1u << 20)
		return 1u << 20;
	return rl.rlim_cur > 512 ? (uint32_t)rl.rlim_cur - 256 : 256;
}

struct rs_engine *rs_engine_new(const struct rs_engine_opts *o, char *err, size_t errlen)
{
	struct rs_engine *e = rs_xcalloc(1, sizeof(*e));
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t slots;

	e->o = *o;
	if (!e->o.buf_size)
		e->o.buf_size = 16384;
	if (!e->o.buf_count)
		e->o.buf_count = 1024;
	if (!e->o.send_high_water)
		e->o.send_high_water = 256 * 1024;
	if (e->o.ring_entries && (e->o.ring_entries < 8 || (e->o.ring_entries & (e->o.ring_entries - 1)))) {
		snprintf(err, errlen, "ring_entries %u: a power of two of at least 8 is needed",
			 e->o.ring_entries);
		free(e);
		return NULL;
	}
	e->nworkers = o->workers ? o->workers : (unsigned)(ncpu > 0 ? ncpu : 1);
	slots = default_slots();
	if (e->o.max_conns && e->o.max_conns < slots)
		slots = e->o.max_conns;
	e->workers = rs_xcalloc(e->nworkers, sizeof(*e->workers));
	pthread_mutex_init(&e->start_lock, NULL);
	pthread_cond_init(&e->start_cond, NULL);
	for (unsigned i = 0; i < e->nworkers; i++) {
		struct rs_worker *w = &e->workers[i];

		w->e = e;
		w->id = i;
		w->nslots = slots;
		w->conns = rs_xcalloc(slots, sizeof(*w->conns));
		w->gens = rs_xcalloc(slots, sizeof(*w->gens));
		w->free_slots = rs_xmalloc(slots * sizeof(*w->free_slots));
		for (uint32_t s = 0; s < slots; s++)
			w->free_slots[s] = slots - 1 - s;
		w->nfree = slots;
		for (unsigned l = 0; l < MAX_LISTENERS; l++)
			w->listen_fd[l] = -1;
		w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->efd < 0) {
			snprintf(err, errlen, "eventfd: %s", strerror(errno));
			rs_engine_free(e);
			return NULL;
		}
		pthread_mutex_init(&w->inbox_lock, NULL);
	}
	return e;
}

int rs_engine_listen(struct rs_engine *e, const struct sockaddr *addr, socklen_t len,
		     rs_accept_fn on_accept, void *arg)
{
	struct listener *l;

	if (e->nlisteners == MAX_LISTENERS || len > sizeof(l->addr))
		return -ENOSPC;
	l = &e->listeners[e->nlisteners++];
	memcpy(&l->addr, addr, len);
	l->len = len;
	l->on_accept = on_accept;
	l->arg = arg;
	return 0;
}

void rs_engine_on_worker_start(struct rs_engine *e, void (*fn)(struct rs_worker *w, void *arg),
			       void *arg)
{
	e->on_worker_start = fn;
	e->on_worker_start_arg = arg;
}

static int probe_io_uring(char *err, size_t errlen)
{
	struct io_uring ring;
	struct io_uring_probe *probe;
	int ret = io_uring_queue_init(8, &ring, 0);

	if (ret) {
		snprintf(err, errlen,
			 "io_uring is not available (io_uring_setup: %s); ringside needs it: check "
			 "the sysctl kernel.io_uring_disabled and the seccomp profile of the "
			 "container or service",
			 strerror(-ret));
		return ret;
	}
	probe = io_uring_get_probe_ring(&ring);
	if (!probe || !io_uring_opcode_supported(probe, IORING_OP_SHUTDOWN) ||
	    !io_uring_opcode_supported(probe, IORING_OP_FILES_UPDATE) ||
	    !(ring.features & IORING_FEAT_FAST_POLL) || !(ring.features & IORING_FEAT_SUBMIT_STABLE)) {
		snprintf(err, errlen, "this kernel's io_uring lacks features ringside needs "
				      "(Linux 6.0 or newer is required)");
		ret = -ENOTSUP;
	}
	if (probe)
		io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
	return ret;
}

/* Workers bind with SO_REUSEPORT, which would let them join another
 * process's group on the same port without a word: a leftover instance
 * would silently take a share of the connections (and its own tokens).
 * Binding once without SO_REUSEPORT first makes a taken port an error. The
 * probes listen (SO_REUSEADDR lets non-listening sockets share an address)
 * and stay open until all are done, so two of this process's own listeners
 * on one address (the API's and the metrics' say) are an error too, not a
 * port whose connections go to either at random. */
static int probe_listeners(struct rs_engine *e, char *err, size_t errlen)
{
	int fds[MAX_LISTENERS];
	unsigned n = 0;
	int ret = 0;

	for (; n < e->nlisteners; n++) {
		const struct listener *l = &e->listeners[n];
		int one = 1;
		char host[INET6_ADDRSTRLEN] = "?";

		fds[n] = socket(l->addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[n] < 0) {
			ret = -errno;
			snprintf(err, errlen, "socket: %s", strerror(-ret));
			break;
		}
		setsockopt(fds[n], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (l->addr.sa.sa_family == AF_INET6)
			setsockopt(fds[n], IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fds[n], &l->addr.sa, l->len) || listen(fds[n], 1)) {
			ret = -errno;
			inet_ntop(l->addr.sa.sa_family,
				  l->addr.sa.sa_family == AF_INET6 ? (const void *)&l->addr.sin6.sin6_addr
								   : (const void *)&l->addr.sin.sin_addr,
				  host, sizeof(host));
			snprintf(err, errlen, "cannot listen on %s port %u: %s", host,
				 ntohs(l->addr.sin.sin_port), strerror(-ret));
			close(fds[n]);
			break;
		}
	}
	while (n--) /* fds[0 .. n-1] are open */
		close(fds[n]);
	return ret;
}

int rs_engine_start(struct rs_engine *e, char *err, size_t errlen)
{
	int ret = probe_io_uring(err, errlen);

	if (!ret)
		ret = probe_listeners(e, err, errlen);
	if (ret)
		return ret;
	for (unsigned i = 0; i < e->nworkers; i++) {
		ret = pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i]);
		if (ret) {
			snprintf(err, errlen, "pthread_create: %s", strerror(ret));
			return -ret;
		}
	}
	pthread_mutex_lock(&e->start_lock);
	while (e->started < e->nworkers)
		pthread_cond_wait(&e->start_cond, &e->start_lock);
	pthread_mutex_unlock(&e->start_lock);
	e->running = true;
	for (unsigned i = 0; i < e->nworkers; i++) {
		if (e->workers[i].start_err) {
			snprintf(err, errlen, "worker %u: %s", i, e->workers[i].start_msg);
			rs_engine_stop(e, 0);
			return e->workers[i].start_err;
		}
	}
	rs_info("engine", "%u workers, %u direct descriptors each, ring flags 0x%x", e->nworkers,
		e->workers[0].nslots, e->ring_flags_used);
	return 0;
}

void rs_engine_stop(struct rs_engine *e, unsigned drain_ms)
{
	if (!e->running)
		return;
	e->drain_ms = drain_ms;
	for (unsigned i = 0; i < e->nworkers; i++) {
		if (!e->workers[i].start_err)
			rs_worker_post(&e->workers[i], do_stop, NULL);
	}
	for (unsigned i = 0; i < e->nworkers; i++)
		pthread_join(e->workers[i].thread, NULL);
	e->running = false;
}

void rs_engine_free(struct rs_engine *e)
{
	if (!e)
		return;
	for (unsigned i = 0; i < e->nworkers; i++) {
		struct rs_worker *w = &e->workers[i];
		struct post *p;

		if (w->ring_ok) {
			rs_bufpool_release(&w->pool);
			io_uring_queue_exit(&w->ring);
		}
		free(w->seal_buf);
		free(w->send_hdrs);
		while (w->rec_free) {
			struct seg *sg = w->rec_free;

			w->rec_free = sg->next;
			free(sg);
		}
		for (unsigned l = 0; l < MAX_LISTENERS; l++)
			if (w->listen_fd[l] >= 0)
				close(w->listen_fd[l]);
		for (uint32_t s = 0; s < w->nslots; s++)
			free(w->conns[s]);
		while ((p = w->inbox)) {
			w->inbox = p->next;
			free(p);
		}
		if (w->efd >= 0)
			close(w->efd);
		free(w->conns);
		free(w->gens);
		free(w->free_slots);
		pthread_mutex_destroy(&w->inbox_lock);
	}
	free(e->workers);
	pthread_mutex_destroy(&e->start_lock);
	pthread_cond_destroy(&e->start_cond);
	free(e);
}

void rs_engine_stats(struct rs_engine *e, struct rs_engine_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < e->nworkers; i++) {
		const uint64_t *src = (const uint64_t *)&e->workers[i].stats;
		uint64_t *dst = (uint64_t *)out;

		for (size_t k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
			dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
		out->bufs_out += e->workers[i].pool.out;
		out->bufs_total += e->workers[i].pool.count;
	}
}
