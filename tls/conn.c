/* tls/conn.c — BoringSSL on the engine (see tls/conn.h). */
#include "core/common.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/log.h"
#include "tls/conn.h"
#include "tls/rec13.h"

const char *const rs_tls_fail_names[RS_TLS_FAIL__COUNT] = {
    "protocol", "version", "cipher", "verify", "closed", "other",
};

static BIO_METHOD *bio_method;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The BIO reads from the receive buffer being handled and writes records
 * onto the wire queue; both are set per call, so the BIO itself holds
 * nothing between events. */
static int bio_read(BIO *b, char *out, int len)
{
	struct rs_tls_conn *t = BIO_get_data(b);
	size_t n;

	BIO_clear_retry_flags(b);
	if (!t->in_len) {
		BIO_set_retry_read(b);
		return -1;
	}
	n = RS_MIN((size_t)len, t->in_len);
	memcpy(out, t->in, n);
	t->in += n;
	t->in_len -= n;
	return (int)n;
}

static int bio_write(BIO *b, const char *data, int len)
{
	struct rs_tls_conn *t = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (rs_conn_send_wire(t->c, data, (size_t)len))
		return -1;
	return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b, (void)num, (void)ptr;
	/* BoringSSL flushes after each flight; the engine sends at the loop's end. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void init_once(void)
{
	bio_method = BIO_meth_new(BIO_TYPE_SOURCE_SINK | 0x80, "ringside engine");
	if (bio_method) {
		BIO_meth_set_read(bio_method, bio_read);
		BIO_meth_set_write(bio_method, bio_write);
		BIO_meth_set_ctrl(bio_method, bio_ctrl);
	}
}

/* The BIO carries <t> already: no ex_data slot, whose stack BoringSSL would
 * allocate for every SSL and keep for the connection's life. */
struct rs_tls_conn *rs_tls_conn_of(const SSL *ssl)
{
	return BIO_get_data(SSL_get_rbio(ssl));
}

enum rs_tls_fail rs_tls_classify(const SSL *ssl, int ret)
{
	uint32_t e = ERR_peek_error();
	int reason = ERR_GET_REASON(e);
	enum rs_tls_fail why = RS_TLS_FAIL_OTHER;

	if (SSL_get_error(ssl, ret) == SSL_ERROR_ZERO_RETURN)
		why = RS_TLS_FAIL_CLOSED;
	else if (reason == SSL_R_UNSUPPORTED_PROTOCOL ||
		 reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
		why = RS_TLS_FAIL_VERSION;
	else if (reason == SSL_R_NO_SHARED_CIPHER || reason == SSL_R_NO_SHARED_GROUP ||
		 reason == SSL_R_NO_CIPHERS_AVAILABLE ||
		 reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE)
		why = RS_TLS_FAIL_CIPHER;
	else if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED)
		why = RS_TLS_FAIL_VERIFY;
	else if (e)
		why = RS_TLS_FAIL_PROTOCOL;
	ERR_clear_error();
	return why;
}

static void finish_handshake(struct rs_tls_conn *t, int res, const char *msg)
{
	rs_tls_done_fn done = t->done;

	t->done = NULL;
	if (done)
		done(t->c, t->done_arg, res, msg);
}

static void fail(struct rs_tls_conn *t, int ret)
{
	enum rs_tls_fail why = rs_tls_classify(t->ssl, ret);
	char msg[160];

	t->failed = true;
	if (!t->established) {
		atomic_fetch_add_explicit(&t->stats->failures[why], 1, memory_order_relaxed);
		snprintf(msg, sizeof(msg), "TLS handshake failed (%s)", rs_tls_fail_names[why]);
		finish_handshake(t, why == RS_TLS_FAIL_VERIFY ? -EKEYREJECTED : -EPROTO,
				 t->fail_msg ? t->fail_msg : msg);
	}
	if (!rs_conn_closing(t->c))
		rs_conn_close(t->c, why == RS_TLS_FAIL_CLOSED ? RS_CLOSE_PEER_EOF : RS_CLOSE_ERROR,
			      EPROTO);
}

/* After the handshake: stop keeping its configuration (certificates, key
 * shares) around for the life of the connection. */
static void established(struct rs_tls_conn *t)
{
	t->established = true;
	rs_conn_filter_ready(t->c);
	atomic_fetch_add_explicit(&t->stats->handshakes, 1, memory_order_relaxed);
	t->resumed = SSL_session_reused(t->ssl);
	if (t->resumed)
		atomic_fetch_add_explicit(&t->stats->resumed, 1, memory_order_relaxed);
	finish_handshake(t, 0, NULL);
}

#define HELD_MAX (64 * 1024) /* input kept while waiting; beyond it the peer is not reading */

/* Keep unprocessed input, in order, until a user buffer frees up. Bytes
 * may still arrive meanwhile (receives completed before the engine stopped
 * the socket), so they are appended behind what is held. */
static int hold(struct rs_tls_conn *t, const uint8_t *data, size_t len)
{
	uint8_t *p;

	if (t->held_len + len > HELD_MAX)
		return -ENOBUFS;
	p = realloc(t->held, t->held_len + len);
	if (!p)
		return -ENOMEM;
	memcpy(p + t->held_len, data, len);
	t->held = p;
	t->held_len += len;
	return 0;
}

static void rec_fail(struct rs_tls_conn *t, enum rs_close_reason why, const char *msg)
{
	t->failed = true;
	if (why == RS_CLOSE_ERROR)
		rs_debug("tls", "connection %llx: %s", (unsigned long long)rs_conn_id(t->c), msg);
	if (!rs_conn_closing(t->c))
		rs_conn_close(t->c, why, EPROTO);
}

/* The peer asked for our KeyUpdate: it goes out before anything sealed
 * after it. */
static void rec_answer(struct rs_tls_conn *t)
{
	uint8_t *o;

	if (!rs_rec13_owed(t->rec))
		return;
	o = rs_conn_wire_room(t->c, RS_REC13_KEY_UPDATE_LEN);
	if (!o || rs_rec13_answer_update(t->rec, o) != RS_REC13_KEY_UPDATE_LEN)
		rec_fail(t, RS_CLOSE_ERROR, "cannot answer a KeyUpdate");
}

/* What a record without data asks for (NONE, CLOSE, ERROR). */
static void rec_other(struct rs_tls_conn *t, enum rs_rec13_ev ev, const char *why)
{
	if (ev == RS_REC13_NONE)
		rec_answer(t);
	else if (ev == RS_REC13_CLOSE)
		rec_fail(t, RS_CLOSE_PEER_EOF, "close_notify");
	else
		rec_fail(t, RS_CLOSE_ERROR, why);
}

/* Open the complete record rec[0..len) and hand its data on: from <b> in
 * place, or (b NULL: a record put together from two receives, or input
 * held) copied into a user buffer, which the caller made sure is free.
 * false when the connection ends. */
static bool rec_open(struct rs_tls_conn *t, struct rs_buf *b, uint8_t *rec, size_t len)
{
	struct rs_bufpool *pool = rs_worker_bufpool(rs_conn_worker(t->c));
	const char *why = NULL;
	uint8_t *out, alert;
	size_t n;
	enum rs_rec13_ev ev = rs_rec13_open(t->rec, rec, len, &out, &n, &alert, &why);

	if (ev != RS_REC13_DATA) {
		rec_other(t, ev, why);
	} else if (n && b) {
		rs_conn_deliver(t->c, b, out, n);
	} else if (n) {
		struct rs_buf *ob = rs_bufpool_get(pool);

		memcpy(rs_buf_data(pool, ob), out, n);
		rs_conn_deliver(t->c, ob, rs_buf_data(pool, ob), n);
		rs_buf_unref(pool, ob);
	}
	return !t->failed && !rs_conn_closing(t->c);
}

/* The beginning of a record, copied, waits in t->part for its rest. */
static int part_begin(struct rs_tls_conn *t, const uint8_t *p, size_t n)
{
	t->part = malloc(RS_REC13_MAX_RECORD);
	if (!t->part)
		return -ENOMEM;
	memcpy(t->part, p, n);
	t->part_len = n;
	return 0;
}

/* The beginning of a record left in its receive buffer becomes a copy:
 * its rest does not follow in the next receive, or the buffer must go. */
static int unpin(struct rs_tls_conn *t)
{
	int ret = part_begin(t, t->pin_p, t->pin_n);

	if (!ret) {
		rs_buf_unref(rs_worker_bufpool(rs_conn_worker(t->c)), t->pin);
		t->pin = NULL;
	}
	return ret;
}

/* The record begun at t->pin ends within data[0..len): open it in its two
 * pieces and hand both on from where they lie. The bytes of <data> it took,
 * or 0 when it does not end there (then nothing changed). */
static size_t rec_open_pinned(struct rs_tls_conn *t, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct rs_bufpool *pool = rs_worker_bufpool(rs_conn_worker(t->c));
	struct rs_rec13_span out[2];
	uint8_t hdr[RS_REC13_HDR], alert;
	struct rs_buf *pin = t->pin;
	const char *why = NULL;
	size_t h = RS_MIN(t->pin_n, sizeof(hdr)), need;
	enum rs_rec13_ev ev;
	ssize_t rl;

	if (!b || h + len < sizeof(hdr))
		return 0;
	memcpy(hdr, t->pin_p, h);
	memcpy(hdr + h, data, sizeof(hdr) - h);
	rl = rs_rec13_record_len(hdr, sizeof(hdr));
	if (rl <= 0 || (size_t)rl - t->pin_n > len)
		return 0; /* a bad header is reported by the copying path */
	need = (size_t)rl - t->pin_n;
	t->pin = NULL; /* handed on below, whatever the owner does meanwhile */
	ev = rs_rec13_open_split(t->rec, t->pin_p, t->pin_n, data, need, out, &alert, &why);
	if (ev != RS_REC13_DATA) {
		rec_other(t, ev, why);
	} else {
		if (out[0].n)
			rs_conn_deliver(t->c, pin, out[0].p, out[0].n);
		if (out[1].n && !rs_conn_closing(t->c))
			rs_conn_deliver(t->c, b, out[1].p, out[1].n);
	}
	rs_buf_unref(pool, pin);
	return need;
}

/* Records from wire bytes (rec mode). A record cut by the end of a receive
 * stays in its buffer (AES-GCM opens it in two pieces) or, when its rest
 * does not come in one piece or the pool runs low, waits copied in t->part;
 * one that cannot be handed on for want of a user buffer waits, with
 * everything after it, in t->held. */
static void rec_recv(struct rs_tls_conn *t, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct rs_bufpool *pool = rs_worker_bufpool(rs_conn_worker(t->c));
	ssize_t rl;

	while (len || t->part_len || t->pin) {
		if (t->pin) {
			size_t n = rec_open_pinned(t, b, data, len);

			if (t->failed || rs_conn_closing(t->c))
				return;
			if (n) {
				data += n;
				len -= n;
				continue;
			}
			if (unpin(t))
				goto out_nomem;
		}
		if (t->part_len) {
			size_t want = RS_REC13_HDR, n;

			if (t->part_len >= RS_REC13_HDR) {
				rl = rs_rec13_record_len(t->part, t->part_len);
				if (rl < 0)
					goto out_bad;
				want = (size_t)rl;
			}
			n = RS_MIN(want - t->part_len, len);
			if (n)
				memcpy(t->part + t->part_len, data, n);
			t->part_len += n;
			data += n;
			len -= n;
			if (t->part_len < want)
				return;
			if (want == RS_REC13_HDR)
				continue; /* the header is complete: now the body */
			if (!rs_bufpool_has_user_free(pool))
				goto out_wait;
			t->part_len = 0;
			if (!rec_open(t, NULL, t->part, want))
				return;
			free(t->part);
			t->part = NULL;
			continue;
		}
		rl = rs_rec13_record_len(data, len);
		if (rl < 0)
			goto out_bad;
		if (!rl || (size_t)rl > len) {
			/* Leave it where it is while the pool has room: the
			 * receive buffer then holds no other bytes of use. */
			if (b && rs_rec13_can_split(t->rec) && pool->out < pool->count / 2) {
				rs_buf_ref(b);
				t->pin = b;
				t->pin_p = data;
				t->pin_n = len;
				return;
			}
			if (part_begin(t, data, len))
				goto out_nomem;
			return;
		}
		if (!b && !rs_bufpool_has_user_free(pool))
			goto out_wait;
		if (!rec_open(t, b, data, (size_t)rl))
			return;
		data += rl;
		len -= (size_t)rl;
	}
	return;

out_wait:
	/* As pump below: the socket stops until a user buffer frees. */
	if (len && hold(t, data, len)) {
		rec_fail(t, RS_CLOSE_NOMEM, "input held too long");
		return;
	}
	rs_conn_filter_wait(t->c);
	return;

out_nomem:
	rec_fail(t, RS_CLOSE_NOMEM, "out of memory");
	return;

out_bad:
	rec_fail(t, RS_CLOSE_ERROR, "malformed record header");
}

/* Hand a TLS 1.3 connection over to tls/rec13 once BoringSSL returned
 * application data and holds nothing more: on the client side the server's
 * tickets come before its first answer, so BoringSSL has stored them; on the
 * server side the peer has shown it is a client that talks, not a scanner
 * that handshakes and leaves (its tickets are flushed here, where BoringSSL
 * would at its first write). Stays with BoringSSL for TLS 1.2. */
static void take_over(struct rs_tls_conn *t)
{
	SSL *ssl;
	int ret;

	if (t->rec || !t->established || t->failed || rs_conn_closing(t->c) ||
	    !t->got_data || SSL_version(t->ssl) != TLS1_3_VERSION || SSL_has_pending(t->ssl))
		return;
	/* BoringSSL keeps a TLS 1.3 server's tickets until its first write: a
	 * zero-byte write sends them. */
	if (SSL_write(t->ssl, "", 0) < 0) {
		ERR_clear_error();
		return;
	}
	ssl = t->ssl;
	ret = rs_rec13_init(&t->rec13, ssl); /* overwrites t->ssl unless refused */
	if (ret == -EPROTONOSUPPORT)
		return;
	SSL_free(ssl);
	if (ret) {
		t->ssl = NULL; /* <rec13> was wiped: the union is the handshake's again */
		rec_fail(t, RS_CLOSE_ERROR, "TLS 1.3 keys could not be taken over");
		return;
	}
	t->rec = &t->rec13;
}

/* Feed t->in to BoringSSL and deliver plaintext until it needs more. */
static void pump(struct rs_tls_conn *t)
{
	struct rs_bufpool *pool = rs_worker_bufpool(rs_conn_worker(t->c));
	int ret;

	if (t->failed)
		return;
	if (!t->established) {
		ret = SSL_do_handshake(t->ssl);
		if (ret != 1) {
			if (SSL_get_error(t->ssl, ret) != SSL_ERROR_WANT_READ)
				fail(t, ret);
			return;
		}
		established(t);
		if (rs_conn_closing(t->c))
			return;
	}
	while (!t->rec && (t->in_len || SSL_pending(t->ssl))) {
		struct rs_buf *ob = rs_bufpool_get(pool);

		if (!ob) {
			/* Every user buffer is pinned by slow readers: keep the rest
			 * of the input until one frees. The engine stops reading the
			 * socket meanwhile, whatever the owner pauses or resumes. */
			rs_conn_filter_wait(t->c);
			return;
		}
		ret = SSL_read(t->ssl, rs_buf_data(pool, ob), (int)pool->size);
		if (ret > 0) {
			t->got_data = true;
			rs_conn_deliver(t->c, ob, rs_buf_data(pool, ob), (size_t)ret);
		}
		rs_buf_unref(pool, ob);
		if (ret <= 0) {
			if (SSL_get_error(t->ssl, ret) != SSL_ERROR_WANT_READ)
				fail(t, ret);
			return;
		}
		if (rs_conn_closing(t->c))
			return;
		take_over(t);
		if (t->failed)
			return;
	}
}

static void f_on_recv(struct rs_conn *c, void *fctx, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct rs_tls_conn *t = fctx;

	if (t->failed)
		return;
	if (t->held) {
		if (hold(t, data, len))
			rs_conn_close(c, RS_CLOSE_NOMEM, ENOBUFS);
		return;
	}
	if (t->rec) {
		rec_recv(t, b, data, len);
		return;
	}
	t->in = data;
	t->in_len = len;
	pump(t);
	if (t->rec && t->in_len && !rs_conn_closing(c)) {
		/* Handed over with records left in this receive: the
		 * record layer reads on. */
		size_t n = t->in_len;

		t->in_len = 0;
		rec_recv(t, b, (uint8_t *)t->in, n);
	}
	if (t->in_len && !rs_conn_closing(c) && !t->failed && hold(t, t->in, t->in_len))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOBUFS);
	t->in = NULL;
	t->in_len = 0;
}

static void f_on_resume(struct rs_conn *c, void *fctx)
{
	struct rs_tls_conn *t = fctx;
	uint8_t *held = t->held;
	size_t n = t->held_len;

	t->held = NULL;
	t->held_len = 0;
	if (held) {
		f_on_recv(c, t, NULL, held, n);
		free(held);
	} else if (t->rec) {
		rec_recv(t, NULL, NULL, 0); /* a record waiting in t->part */
	} else {
		pump(t);
	}
	/* No rs_conn_resume here: the engine re-arms the socket once the
	 * filter stops waiting, and only if the owner has not paused it. */
}

_Static_assert(RS_FILTER_CHUNK == RS_REC13_MAX_PLAIN && RS_FILTER_TAIL_MAX <= RS_REC13_TAIL_MAX,
	       "the engine's chunks and tails fit records");

/* Records sealed straight into the send queue, the tail in the last one
 * (the engine passes one only where it fits: rs_conn_filter.write). */
static int rec_write(struct rs_tls_conn *t, const uint8_t *data, size_t len,
		     const uint8_t *tail, size_t tail_len)
{
	while (len) {
		size_t n = RS_MIN(len, (size_t)RS_REC13_MAX_PLAIN), tl = n == len ? tail_len : 0;
		uint8_t *o = rs_conn_wire_room(t->c, n + tl + RS_REC13_OVERHEAD);

		if (!o)
			return -ENOMEM;
		if (rs_rec13_seal_tail(t->rec, data, n, tail, tl, o) != n + tl + RS_REC13_OVERHEAD)
			return -EIO; /* the queue holds garbage: the engine closes */
		data += n;
		len -= n;
	}
	return 0;
}

static int ssl_write_all(struct rs_tls_conn *t, const uint8_t *data, size_t len)
{
	while (len) {
		int n = SSL_write(t->ssl, data, (int)RS_MIN(len, (size_t)INT_MAX));

		if (n <= 0) {
			ERR_clear_error();
			return -EIO;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

static int f_write(struct rs_conn *c, void *fctx, const uint8_t *data, size_t len,
		   const uint8_t *tail, size_t tail_len)
{
	struct rs_tls_conn *t = fctx;

	(void)c;
	if (!t->established || t->failed)
		return -ENOTCONN;
	if (t->rec)
		return rec_write(t, data, len, tail, tail_len);
	return ssl_write_all(t, data, len) ?: ssl_write_all(t, tail, tail_len);
}

static void f_shutdown(struct rs_conn *c, void *fctx)
{
	struct rs_tls_conn *t = fctx;
	static const uint8_t close_notify[2] = {1, 0};
	uint8_t *o;

	if (!t->established || t->failed)
		return;
	if (t->rec) {
		o = rs_conn_wire_room(c, RS_REC13_ALERT_LEN);
		if (o && !rs_rec13_seal(t->rec, 21, close_notify, 2, o))
			rs_conn_close(c, RS_CLOSE_ERROR, EIO);
		return;
	}
	SSL_shutdown(t->ssl);
	ERR_clear_error();
}

/* About to move to another worker: a record begun in a receive buffer of
 * this worker's pool is copied (the pool stays here). */
static void f_on_leave(struct rs_conn *c, void *fctx)
{
	struct rs_tls_conn *t = fctx;

	if (t->pin && unpin(t))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
}

static void f_release(void *fctx)
{
	struct rs_tls_conn *t = fctx;

	if (t->pin)
		rs_buf_unref(rs_worker_bufpool(rs_conn_worker(t->c)), t->pin);
	free(t->held);
	if (t->on_release)
		t->on_release(t);
	if (t->rec)
		rs_rec13_clear(t->rec);
	else
		SSL_free(t->ssl);
	free(t->part);
	free(t);
}

/* The connection moved to another worker (a resumed console): BoringSSL's
 * objects are not thread-bound; only the engine struct changes. */
static void f_on_move(struct rs_conn *c, void *fctx)
{
	struct rs_tls_conn *t = fctx;

	t->c = c;
}

/* The whole of a held TLS 1.3 connection in one jemalloc size class. */
_Static_assert(sizeof(struct rs_tls_conn) <= 1536, "rs_tls_conn outgrew its size class");

static const struct rs_conn_filter tls_filter = {
    .on_move = f_on_move,
    .on_leave = f_on_leave,
    .on_recv = f_on_recv,
    .write = f_write,
    .shutdown = f_shutdown,
    .on_resume = f_on_resume,
    .release = f_release,
};

int rs_tls_conn_attach(struct rs_conn *c, SSL *ssl, struct rs_tls_counters *stats,
		       struct rs_tls_conn **out)
{
	struct rs_tls_conn *t;
	BIO *bio;
	int ret;

	pthread_once(&once, init_once);
	t = calloc(1, sizeof(*t));
	bio = bio_method ? BIO_new(bio_method) : NULL;
	ret = -ENOMEM;
	if (!t || !bio)
		goto out_free;
	ret = rs_conn_set_filter(c, &tls_filter, t);
	if (ret)
		goto out_free;
	t->ssl = ssl;
	t->c = c;
	t->stats = stats;
	BIO_set_data(bio, t);
	BIO_set_init(bio, 1);
	SSL_set_bio(ssl, bio, bio);
	/* Certificates and key shares are not needed once the handshake is done. */
	SSL_set_shed_handshake_config(ssl, 1);
	*out = t;
	return 0;

out_free:
	BIO_free(bio);
	free(t);
	SSL_free(ssl);
	return ret;
}

const char *rs_tls_suite(struct rs_conn *c)
{
	struct rs_tls_conn *t = rs_conn_filter_ctx(c);

	if (!t || !t->established)
		return NULL;
	return t->rec ? rs_rec13_suite(t->rec)
		      : SSL_CIPHER_standard_name(SSL_get_current_cipher(t->ssl));
}

void rs_tls_conn_start(struct rs_tls_conn *t)
{
	int ret = SSL_do_handshake(t->ssl);

	if (ret == 1)
		established(t);
	else if (SSL_get_error(t->ssl, ret) != SSL_ERROR_WANT_READ)
		fail(t, ret);
}
