/* bench/floor-relay.c — the physical-limit row of the relay benchmark.
 *
 *   floor-relay --listen H:P --cert PEM --key PEM --upstream H:P --path P
 *               --ca PEM [--sni NAME] [--workers N]
 *
 * --sni: the upstream's name, sent as SNI and verified against its
 * certificate (an IP address is verified against its IP SANs, and not sent).
 *
 * The simplest correct relay of Proxmox mode's data path that can be written
 * on io_uring: browser TLS terminated (BoringSSL), one WebSocket upgrade
 * read, a TLS connection re-originated to one fixed upstream (certificate
 * verified against --ca for --sni) with the upgrade to the fixed --path, the
 * 101 answered, then every WebSocket frame re-framed: browser frames unmasked
 * and re-masked toward the upstream, upstream frames passed on unmasked.
 * Nothing else: no API, no tokens, no timers, no limits beyond the buffers.
 * It uses liburing directly (not ringside's engine): one ring per worker
 * thread, each accepting on the one listener (no SO_REUSEPORT: a port this
 * relay was given is never shared with another process), regular descriptors (2 per
 * console: HAProxy's 9,800-console cap applies), recv/send/connect/accept
 * SQEs, TLS through a BIO over fixed per-leg buffers (one copy each way, the
 * copy BoringSSL's BIO interface imposes; ringside makes the same one).
 *
 * Bounded: a leg's ciphertext buffers are RX_CAP and TX_CAP bytes; a
 * direction reads from its source only while its destination has room for
 * one full record, so a slow side stops the fast one. Stopped by SIGTERM
 * (the kernel closes every connection); prints {"consoles":N} on stdout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/base64.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define RX_CAP	 (32 * 1024)
#define TX_CAP	 (64 * 1024)
#define REC_ROOM (16384 + 256) /* one read re-framed (≤ 16,397 B: two records) sealed */
#define HEAD_CAP 4096

enum { OP_RECV, OP_SEND, OP_CONNECT };
enum { S_B_TLS, S_B_HEAD, S_U_CONNECT, S_U_TLS, S_U_HEAD, S_RELAY };

/* Re-framing state of one direction: the frame header being read, then how
 * much payload is left and where in the mask we are. */
struct reframe {
	uint8_t hdr[14];
	unsigned hdr_len;
	uint64_t left;	/* payload bytes of the current frame not yet passed */
	uint8_t key[4]; /* in-mask XOR out-mask, applied from payload offset pos */
	unsigned pos;
};

struct conn;
struct leg {
	struct conn *c;
	int fd;
	SSL *ssl;
	uint8_t *rx, *tx;
	uint32_t rx_off, rx_len;  /* received ciphertext not yet read by SSL */
	uint32_t tx_len, tx_sent; /* sealed; tx_sent is the prefix in flight */
	bool rx_busy, tx_busy;
	struct reframe rf; /* frames read from this leg */
};

struct worker;
struct conn {
	struct leg b, u; /* browser, upstream */
	struct worker *w;
	int st, inflight;
	bool closing, proto;
	char key[64];
	char head[HEAD_CAP];
	size_t head_len;
	uint64_t rnd;
};

struct worker {
	struct io_uring ring;
	int lfd;
	SSL_SESSION *up_session; /* the upstream's last ticket: resumed by the next */
	pthread_t th;
};

static struct sockaddr_in up_addr;
static const char *up_path, *up_sni = "fake-pve";
static bool up_sni_is_ip;
static SSL_CTX *srv_ctx, *cli_ctx;
static BIO_METHOD *leg_bio;
static _Atomic unsigned long n_consoles;
static __thread struct worker *cur;

static int parse_addr(const char *s, struct sockaddr_in *a)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -EINVAL;
}

/* --- the BIO: SSL reads from leg->rx and seals into leg->tx --- */

static int bio_read(BIO *bio, char *out, int len)
{
	struct leg *l = BIO_get_data(bio);
	uint32_t n = l->rx_len - l->rx_off;

	BIO_clear_retry_flags(bio);
	if (!n) {
		BIO_set_retry_read(bio);
		return -1;
	}
	if (n > (uint32_t)len)
		n = (uint32_t)len;
	memcpy(out, l->rx + l->rx_off, n);
	l->rx_off += n; /* reset by leg_compact: a recv may be writing past rx_len */
	return (int)n;
}

static int bio_write(BIO *bio, const char *in, int len)
{
	struct leg *l = BIO_get_data(bio);
	uint32_t n = TX_CAP - l->tx_len;

	BIO_clear_retry_flags(bio);
	if (!n) {
		BIO_set_retry_write(bio);
		return -1;
	}
	if (n > (uint32_t)len)
		n = (uint32_t)len;
	memcpy(l->tx + l->tx_len, in, n);
	l->tx_len += n;
	return (int)n;
}

static long bio_ctrl(BIO *bio, int cmd, long larg, void *parg)
{
	(void)bio, (void)larg, (void)parg;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int leg_init(struct leg *l, struct conn *c, SSL_CTX *ctx)
{
	BIO *bio;

	l->c = c;
	l->rx = malloc(RX_CAP);
	l->tx = malloc(TX_CAP);
	l->ssl = SSL_new(ctx);
	bio = BIO_new(leg_bio);
	if (!l->rx || !l->tx || !l->ssl || !bio) {
		BIO_free(bio);
		return -ENOMEM;
	}
	BIO_set_data(bio, l);
	BIO_set_init(bio, 1);
	SSL_set_bio(l->ssl, bio, bio);
	return 0;
}

/* --- submissions --- */

static struct io_uring_sqe *sqe_get(void)
{
	struct io_uring_sqe *s = io_uring_get_sqe(&cur->ring);

	if (!s) {
		io_uring_submit(&cur->ring);
		s = io_uring_get_sqe(&cur->ring);
	}
	return s;
}

static void submit_op(struct leg *l, int op)
{
	struct io_uring_sqe *s = sqe_get();

	if (op == OP_RECV) {
		io_uring_prep_recv(s, l->fd, l->rx + l->rx_len, RX_CAP - l->rx_len, 0);
		l->rx_busy = true;
	} else if (op == OP_SEND) {
		io_uring_prep_send(s, l->fd, l->tx + l->tx_sent, l->tx_len - l->tx_sent,
				   MSG_NOSIGNAL);
		l->tx_busy = true;
	} else {
		io_uring_prep_connect(s, l->fd, (struct sockaddr *)&up_addr, sizeof(up_addr));
	}
	io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)l | (uint64_t)op);
	l->c->inflight++;
}

static void conn_close(struct conn *c)
{
	struct leg *legs[2] = {&c->b, &c->u};

	if (!c->closing) {
		c->closing = true;
		for (int i = 0; i < 2; i++) {
			if (legs[i]->fd < 0)
				continue;
			struct io_uring_sqe *s = sqe_get();

			io_uring_prep_cancel_fd(s, legs[i]->fd, IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(s, 0);
		}
	}
	if (c->inflight)
		return; /* freed when the last cancelled operation completes */
	for (int i = 0; i < 2; i++) {
		if (legs[i]->fd >= 0)
			close(legs[i]->fd);
		SSL_free(legs[i]->ssl);
		free(legs[i]->rx);
		free(legs[i]->tx);
	}
	free(c);
}

/* --- WebSocket --- */

static void ws_accept(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	uint8_t md[SHA_DIGEST_LENGTH];
	SHA_CTX s;

	SHA1_Init(&s);
	SHA1_Update(&s, key, strlen(key));
	SHA1_Update(&s, guid, sizeof(guid) - 1);
	SHA1_Final(md, &s);
	EVP_EncodeBlock((uint8_t *)out, md, sizeof(md));
}

static bool header(const char *head, const char *name, char *out, size_t cap)
{
	const char *p = strcasestr(head, name);
	size_t n = 0;

	*out = 0;
	if (!p || p[strlen(name)] != ':')
		return false;
	p += strlen(name) + 1;
	while (*p == ' ')
		p++;
	while (p[n] && p[n] != '\r' && n + 1 < cap)
		n++;
	memcpy(out, p, n);
	out[n] = 0;
	return true;
}

static uint32_t rnd32(struct conn *c)
{
	c->rnd ^= c->rnd << 13, c->rnd ^= c->rnd >> 7, c->rnd ^= c->rnd << 17;
	return (uint32_t)c->rnd;
}

/* Re-frame <len> bytes read from one leg into <out>: at most <len> + 13
 * bytes (headers are re-encoded at the same or a shorter length, but one
 * begun in an earlier call is written whole in this one). <mask>:
 * the frames go to the upstream, so they get a fresh mask. Returns the bytes
 * written, -1 on a frame the relay refuses (a browser frame without mask). */
static ssize_t reframe(struct conn *c, struct reframe *f, bool mask, const uint8_t *in, size_t len,
		       uint8_t *out)
{
	uint8_t *o = out;

	while (len) {
		if (!f->left && f->hdr_len < 2) {
			f->hdr[f->hdr_len++] = *in++, len--;
			continue;
		}
		if (!f->left || f->hdr_len) {
			/* header: 2 bytes, extended length, mask key */
			unsigned ext = (f->hdr[1] & 127) == 126	  ? 2
				       : (f->hdr[1] & 127) == 127 ? 8
								  : 0;
			bool masked = f->hdr[1] & 128;
			unsigned need = 2 + ext + (masked ? 4 : 0);
			uint64_t plen = f->hdr[1] & 127;

			if (masked != mask)
				return -1; /* browser frames masked, upstream frames not */
			if (f->hdr_len < need) {
				f->hdr[f->hdr_len++] = *in++, len--;
				if (f->hdr_len < need)
					continue;
			}
			if (ext) {
				plen = 0;
				for (unsigned i = 0; i < ext; i++)
					plen = plen << 8 | f->hdr[2 + i];
			}
			*o++ = f->hdr[0];
			if (plen < 126) {
				*o++ = (uint8_t)((mask ? 128 : 0) | plen);
			} else if (plen < 65536) {
				*o++ = (uint8_t)((mask ? 128 : 0) | 126);
				*o++ = (uint8_t)(plen >> 8), *o++ = (uint8_t)plen;
			} else {
				*o++ = (uint8_t)((mask ? 128 : 0) | 127);
				for (int i = 7; i >= 0; i--)
					*o++ = (uint8_t)(plen >> (8 * i));
			}
			memset(f->key, 0, 4);
			if (mask) {
				uint32_t k = rnd32(c);

				memcpy(o, &k, 4);
				for (int i = 0; i < 4; i++)
					f->key[i] = f->hdr[2 + ext + i] ^ o[i];
				o += 4;
			}
			f->left = plen, f->pos = 0, f->hdr_len = 0;
			if (!plen)
				continue;
		}
		size_t n = len < f->left ? len : (size_t)f->left;

		if (mask) {
			for (size_t i = 0; i < n; i++)
				o[i] = in[i] ^ f->key[(f->pos + i) & 3];
		} else {
			memcpy(o, in, n);
		}
		f->pos = (unsigned)((f->pos + n) & 3);
		o += n, in += n, len -= n, f->left -= n;
	}
	return o - out;
}

/* --- the state machine: run after every completion --- */

static int ssl_err(SSL *ssl, int r)
{
	int e = SSL_get_error(ssl, r);

	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -EPROTO;
}

/* Read a head into c->head up to "\r\n\r\n"; the bytes after it stay in the
 * head for the caller. 1 when complete, 0 for more, <0 on error. */
static int read_head(struct conn *c, struct leg *l, char **end)
{
	for (;;) {
		int r = SSL_read(l->ssl, c->head + c->head_len, (int)(HEAD_CAP - 1 - c->head_len));

		if (r <= 0)
			return ssl_err(l->ssl, r);
		c->head_len += (size_t)r;
		c->head[c->head_len] = 0;
		if ((*end = strstr(c->head, "\r\n\r\n")))
			return 1;
		if (c->head_len == HEAD_CAP - 1)
			return -E2BIG;
	}
}

/* Move plaintext from <src> to <dst> while <dst> has room for a record. */
static int pump(struct conn *c, struct leg *src, struct leg *dst, bool mask)
{
	/* out: a frame header split across two reads is emitted whole with the
	 * second, up to 13 bytes more than that read brought */
	static __thread uint8_t in[16384], out[16384 + 16];

	while (TX_CAP - dst->tx_len >= REC_ROOM) {
		int r = SSL_read(src->ssl, in, sizeof(in));
		ssize_t n;

		if (r <= 0)
			return ssl_err(src->ssl, r);
		n = reframe(c, &src->rf, mask, in, (size_t)r, out);
		if (n < 0)
			return -EPROTO;
		if (n && SSL_write(dst->ssl, out, (int)n) != n)
			return -EPROTO; /* cannot happen: room for a record was checked */
	}
	return 0;
}

static int upstream_start(struct conn *c)
{
	struct leg *u = &c->u;

	u->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (u->fd < 0 || leg_init(u, c, cli_ctx))
		return -ENOMEM;
	setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	SSL_set_connect_state(u->ssl);
	if (up_sni_is_ip) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(u->ssl), up_sni);
	} else {
		SSL_set_tlsext_host_name(u->ssl, up_sni);
		X509_VERIFY_PARAM_set1_host(SSL_get0_param(u->ssl), up_sni, strlen(up_sni));
	}
	if (cur->up_session)
		SSL_set_session(u->ssl, cur->up_session);
	c->st = S_U_CONNECT;
	submit_op(u, OP_CONNECT);
	return 0;
}

static int step(struct conn *c)
{
	char *end, buf[512];
	int r, n;

	switch (c->st) {
	case S_B_TLS:
		r = SSL_do_handshake(c->b.ssl);
		if (r <= 0)
			return ssl_err(c->b.ssl, r);
		c->st = S_B_HEAD;
		/* fall through */
	case S_B_HEAD:
		r = read_head(c, &c->b, &end);
		if (r <= 0)
			return r;
		if (end + 4 != c->head + c->head_len || strncmp(c->head, "GET ", 4))
			return -EPROTO; /* nothing may follow before our 101 */
		if (!header(c->head, "Sec-WebSocket-Key", c->key, sizeof(c->key)))
			return -EPROTO;
		c->proto = header(c->head, "Sec-WebSocket-Protocol", buf, sizeof(buf)) &&
			   strstr(buf, "binary");
		c->head_len = 0;
		return upstream_start(c);
	case S_U_TLS:
		r = SSL_do_handshake(c->u.ssl);
		if (r <= 0)
			return ssl_err(c->u.ssl, r);
		n = snprintf(
		    buf, sizeof(buf),
		    "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
		    "Sec-WebSocket-Protocol: binary\r\n\r\n",
		    up_path, up_sni);
		if (SSL_write(c->u.ssl, buf, n) != n)
			return -EPROTO;
		c->st = S_U_HEAD;
		/* fall through */
	case S_U_HEAD: {
		uint8_t out[HEAD_CAP];
		char acc[29];
		ssize_t m;
		size_t rest;

		r = read_head(c, &c->u, &end);
		if (r <= 0)
			return r;
		if (strncmp(c->head, "HTTP/1.1 101", 12))
			return -EPROTO;
		ws_accept(c->key, acc);
		n = snprintf(buf, sizeof(buf),
			     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
			     acc, c->proto ? "Sec-WebSocket-Protocol: binary\r\n" : "");
		if (SSL_write(c->b.ssl, buf, n) != n)
			return -EPROTO;
		/* frames that came with the upstream's 101 */
		rest = c->head_len - (size_t)(end + 4 - c->head);
		m = reframe(c, &c->u.rf, false, (uint8_t *)end + 4, rest, out);
		if (m < 0 || (m && SSL_write(c->b.ssl, out, (int)m) != m))
			return -EPROTO;
		c->st = S_RELAY;
		atomic_fetch_add_explicit(&n_consoles, 1, memory_order_relaxed);
	}
		/* fall through */
	case S_RELAY:
		if ((r = pump(c, &c->b, &c->u, true)) || (r = pump(c, &c->u, &c->b, false)))
			return r;
		return 0;
	default:
		return 0; /* S_U_CONNECT: waiting */
	}
}

static void leg_io(struct leg *l)
{
	if (l->fd < 0)
		return;
	if (!l->tx_busy && l->tx_len > l->tx_sent)
		submit_op(l, OP_SEND);
	if (!l->rx_busy && RX_CAP - l->rx_len >= 4096 &&
	    !(l->c->st == S_U_CONNECT && l == &l->c->u))
		submit_op(l, OP_RECV);
}

/* Move what is left to the front of a buffer no operation is using: the
 * next recv needs room at the end, the next record room after tx_len. */
static void leg_compact(struct leg *l)
{
	if (!l->rx || l->rx_busy || !l->rx_off)
		goto tx;
	memmove(l->rx, l->rx + l->rx_off, l->rx_len - l->rx_off);
	l->rx_len -= l->rx_off;
	l->rx_off = 0;
tx:
	if (!l->tx || l->tx_busy || !l->tx_sent)
		return;
	memmove(l->tx, l->tx + l->tx_sent, l->tx_len - l->tx_sent);
	l->tx_len -= l->tx_sent;
	l->tx_sent = 0;
}

static void progress(struct conn *c)
{
	leg_compact(&c->b);
	leg_compact(&c->u);
	if (c->closing || step(c) < 0)
		return conn_close(c);
	leg_io(&c->b);
	leg_io(&c->u);
}

static void on_cqe(struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	struct leg *l = (struct leg *)(uintptr_t)(ud & ~(uint64_t)7);
	int op = (int)(ud & 7), res = cqe->res;
	struct conn *c;

	if (!ud)
		return; /* a cancellation */
	c = l->c;
	c->inflight--;
	if (c->closing)
		return conn_close(c);
	if (op == OP_RECV) {
		l->rx_busy = false;
		if (res <= 0)
			return conn_close(c);
		l->rx_len += (uint32_t)res;
	} else if (op == OP_SEND) {
		l->tx_busy = false;
		if (res < 0)
			return conn_close(c);
		l->tx_sent += (uint32_t)res;
		if (l->tx_sent == l->tx_len)
			l->tx_len = l->tx_sent = 0;
	} else {
		if (res < 0)
			return conn_close(c);
		c->st = S_U_TLS;
	}
	progress(c);
}

static void arm_accept(void)
{
	struct io_uring_sqe *s = sqe_get();

	io_uring_prep_multishot_accept(s, cur->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(s, 1);
}

static void on_accept(int fd)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	c->w = cur;
	c->b.fd = fd, c->u.fd = -1;
	if (getrandom(&c->rnd, sizeof(c->rnd), 0) != sizeof(c->rnd) || !c->rnd)
		c->rnd = (uintptr_t)c | 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	if (leg_init(&c->b, c, srv_ctx))
		return conn_close(c);
	SSL_set_accept_state(c->b.ssl);
	progress(c);
}

static int new_session(SSL *ssl, SSL_SESSION *s)
{
	(void)ssl;
	if (cur->up_session)
		SSL_SESSION_free(cur->up_session);
	cur->up_session = s;
	return 1; /* we keep the reference */
}

static void *worker_run(void *arg)
{
	struct io_uring_params p = {.flags =
					IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
	struct io_uring_cqe *cqe;
	unsigned head, n;

	cur = arg;
	if (io_uring_queue_init_params(4096, &cur->ring, &p) < 0) {
		memset(&p, 0, sizeof(p));
		if (io_uring_queue_init_params(4096, &cur->ring, &p) < 0) {
			fprintf(stderr, "floor-relay: io_uring_queue_init failed\n");
			exit(1);
		}
	}
	arm_accept();
	for (;;) {
		io_uring_submit_and_wait(&cur->ring, 1);
		n = 0;
		io_uring_for_each_cqe (&cur->ring, head, cqe) {
			n++;
			if (cqe->user_data == 1) {
				if (cqe->res >= 0)
					on_accept(cqe->res);
				if (!(cqe->flags & IORING_CQE_F_MORE))
					arm_accept();
			} else {
				on_cqe(cqe);
			}
		}
		io_uring_cq_advance(&cur->ring, n);
	}
	return NULL;
}

static int listener(const struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int)) ||
	    bind(fd, (const struct sockaddr *)a, sizeof(*a)) || listen(fd, 4096)) {
		perror("floor-relay: listen");
		exit(1);
	}
	return fd;
}

static void usage(void)
{
	fprintf(stderr, "usage: floor-relay --listen H:P --cert PEM --key PEM --upstream H:P "
			"--path P --ca PEM [--sni NAME] [--workers N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *listen_s = NULL, *cert = NULL, *key = NULL, *up = NULL, *ca = NULL;
	struct sockaddr_in la;
	int workers = 1, sig;
	struct worker *ws;
	struct rlimit rl;
	sigset_t set;

	for (int i = 1; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];

		if (!strcmp(k, "--listen"))
			listen_s = v;
		else if (!strcmp(k, "--cert"))
			cert = v;
		else if (!strcmp(k, "--key"))
			key = v;
		else if (!strcmp(k, "--upstream"))
			up = v;
		else if (!strcmp(k, "--path"))
			up_path = v;
		else if (!strcmp(k, "--ca"))
			ca = v;
		else if (!strcmp(k, "--sni"))
			up_sni = v;
		else if (!strcmp(k, "--workers"))
			workers = atoi(v);
		else
			usage();
	}
	if (argc % 2 != 1 || !listen_s || !cert || !key || !up || !up_path || !ca || workers < 1 ||
	    parse_addr(listen_s, &la) || parse_addr(up, &up_addr))
		usage();
	srv_ctx = SSL_CTX_new(TLS_method());
	cli_ctx = SSL_CTX_new(TLS_method());
	leg_bio = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "floor-leg");
	if (!srv_ctx || !cli_ctx || !leg_bio ||
	    SSL_CTX_use_certificate_chain_file(srv_ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(srv_ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(cli_ctx, ca, NULL) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	BIO_meth_set_read(leg_bio, bio_read);
	BIO_meth_set_write(leg_bio, bio_write);
	BIO_meth_set_ctrl(leg_bio, bio_ctrl);
	for (int i = 0; i < 2; i++) {
		SSL_CTX *x = i ? cli_ctx : srv_ctx;

		SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
		SSL_CTX_set_max_proto_version(x, TLS1_3_VERSION);
		SSL_CTX_set1_curves_list(x, "X25519:P-256");
	}
	SSL_CTX_set_verify(cli_ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(cli_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(cli_ctx, new_session);

	/* two descriptors per console: take every descriptor the hard limit allows */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* the workers inherit the mask */
	ws = calloc((size_t)workers, sizeof(*ws));
	if (!ws)
		return 1;
	ws[0].lfd = listener(&la);
	up_sni_is_ip = inet_pton(AF_INET, up_sni, &(struct in_addr){0}) == 1;
	for (int i = 0; i < workers; i++) {
		ws[i].lfd = ws[0].lfd; /* every ring accepts on the one listener */
		if (pthread_create(&ws[i].th, NULL, worker_run, &ws[i]))
			return 1;
	}
	fprintf(stderr, "{\"event\":\"listening\",\"listen\":\"%s\",\"workers\":%d}\n", listen_s,
		workers);
	sigdelset(&set, SIGPIPE);
	do {
		if (sigwait(&set, &sig))
			return 1;
	} while (sig == SIGPIPE);
	printf("{\"consoles\":%lu}\n", atomic_load(&n_consoles));
	fflush(stdout);
	_exit(0); /* the kernel closes every connection */
}
