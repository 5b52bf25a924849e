/* bench/hold.c — open N keep-alive HTTP connections, make one request on
 * each, read the whole answer, then keep every connection open and idle.
 *
 *   hold --port P --conns N [--host 127.0.0.1] [--src-base B --src-count K]
 *        [--request 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' | --path /healthz]
 *        [--hold-seconds S] [--batch 512] [--timeout-ms 10000] [--ramp-seconds 120]
 *        [--tls]
 *
 * --tls: a full TLS handshake (BoringSSL, no verification, no resumption)
 * before the request, so the held connections are idle TLS connections.
 *
 * A process with ordinary descriptors cannot pass RLIMIT_NOFILE, so the
 * benchmark runs several of these side by side; --src-base/--src-count spread
 * each process's connections over 127.0.0.B … 127.0.0.(B+K-1) (bound with
 * IP_BIND_ADDRESS_NO_PORT) so the ephemeral port range never runs out.
 *
 * Connections are opened in batches: at most --batch are connecting or waiting
 * for their answer at any time, so the server's listen backlog (4096) is never
 * overrun and a slow accept shows as ramp time, not as refused connections.
 *
 * Output: when the ramp ends, one JSON line on stderr ("event":"held") that a
 * script can wait for; at exit (after S seconds, or on SIGTERM/SIGINT) one
 * JSON line on stdout with every count and timing. Exit status 0 when every
 * connection was opened and none was dropped while idle, 1 otherwise, 2 on a
 * usage error.
 */
#include "core/common.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls/boringssl.h"

#define HOLD_REQ_MAX  4096
#define HOLD_RESP_MAX 8192

enum hold_state {
	HOLD_CONNECTING = 0,
	HOLD_HANDSHAKE,
	HOLD_READING,
	HOLD_IDLE,
	HOLD_DEAD,
};

/* Why a connection that was accepted did not end up held. */
enum hold_err {
	HOLD_ERR_WRITE = 0,
	HOLD_ERR_READ,
	HOLD_ERR_EOF,
	HOLD_ERR_HTTP,
	HOLD_ERR_STATUS,
	HOLD_ERR_CLOSE,
	HOLD_ERR_TIMEOUT,
	HOLD_ERR_TLS,
	HOLD_ERR_MAX,
};

static const char *const hold_err_names[HOLD_ERR_MAX] = {
    [HOLD_ERR_WRITE] = "write",	    [HOLD_ERR_READ] = "read",
    [HOLD_ERR_EOF] = "eof",	    [HOLD_ERR_HTTP] = "malformed",
    [HOLD_ERR_STATUS] = "status",   [HOLD_ERR_CLOSE] = "not_keepalive",
    [HOLD_ERR_TIMEOUT] = "timeout", [HOLD_ERR_TLS] = "tls",
};

struct hold_conn {
	int fd;
	uint8_t state;
	uint16_t sent;
	uint16_t got;
	uint64_t start_ns;
	char *rx; /* the answer so far; only while HOLD_READING */
	SSL *ssl; /* --tls */
};

static SSL_CTX *hold_tls;

struct hold_opts {
	const char *host;
	int port;
	int conns;
	int src_base;
	int src_count;
	int hold_s;
	int batch;
	int timeout_ms;
	int ramp_s;
	char req[HOLD_REQ_MAX];
	size_t req_len;
};

struct hold_stats {
	/* answered 2xx with keep-alive, now held */
	int opened;
	/* never connected: socket, bind, connect error, refused, timeout */
	int failed;
	/* connected, but no usable answer */
	int errors;
	int err_kind[HOLD_ERR_MAX];
	/* held, then closed by the server while idle */
	int dropped;
	/* bytes the server sent beyond its answer */
	long unexpected;
	int first_errno;
	const char *first_errno_op;
	/* connect start to full answer, one per opened connection */
	uint32_t *lat_us;
	uint64_t ramp_ms;
};

static volatile sig_atomic_t hold_stop;

static void on_signal(int sig)
{
	(void)sig;
	hold_stop = 1;
}

/* Decode the C escapes a shell user types in --request (\r \n \t \\ \xHH)
 * from <in> into <out> (<cap> bytes). Returns the decoded length, or -EINVAL
 * for an unknown escape or an input that does not fit. */
static int hold_unescape(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	for (; *in; in++) {
		char c = *in;

		if (c == '\\') {
			in++;
			switch (*in) {
			case 'r':
				c = '\r';
				break;
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case '\\':
				c = '\\';
				break;
			case 'x': {
				char hex[3] = {0};

				if (!isxdigit((unsigned char)in[1]) ||
				    !isxdigit((unsigned char)in[2]))
					return -EINVAL;
				hex[0] = in[1];
				hex[1] = in[2];
				c = (char)strtol(hex, NULL, 16);
				in += 2;
				break;
			}
			default:
				return -EINVAL;
			}
		}
		if (n + 1 >= cap)
			return -EINVAL;
		out[n++] = c;
	}
	return (int)n;
}

/* Case-insensitive search for header <name> (with its colon) among the header
 * lines in <hdr> (<len> bytes, starting after the status line). Returns the
 * value with leading blanks skipped, or NULL; <*vlen> is its length. */
static const char *hold_header(const char *hdr, size_t len, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *end = hdr + len, *line = hdr;

	while (line < end) {
		const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);

		if (!eol)
			eol = end;
		if ((size_t)(eol - line) > nlen && !strncasecmp(line, name, nlen)) {
			const char *v = line + nlen;

			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*vlen = (size_t)(eol - v);
			return v;
		}
		line = eol + 2;
	}
	return NULL;
}

/* Walk a chunked body at <p> (<len> bytes so far). Returns the bytes the body
 * takes, RS_PARSE_PARTIAL or RS_PARSE_ERROR. Trailers are not supported. */
static int hold_chunked(const char *p, size_t len)
{
	size_t off = 0;

	for (int guard = 0; guard < 4096; guard++) {
		const char *eol = memmem(p + off, len - off, "\r\n", 2);
		unsigned long sz;
		char *ep;

		if (!eol)
			return len - off > 32 ? RS_PARSE_ERROR : RS_PARSE_PARTIAL;
		if (!isxdigit((unsigned char)p[off]))
			return RS_PARSE_ERROR;
		sz = strtoul(p + off, &ep, 16);
		if (ep > eol || sz > HOLD_RESP_MAX)
			return RS_PARSE_ERROR;
		off = (size_t)(eol - p) + 2;
		if (sz == 0) {
			if (len - off < 2)
				return RS_PARSE_PARTIAL;
			return memcmp(p + off, "\r\n", 2) ? RS_PARSE_ERROR : (int)(off + 2);
		}
		if (len - off < sz + 2)
			return RS_PARSE_PARTIAL;
		if (memcmp(p + off + sz, "\r\n", 2))
			return RS_PARSE_ERROR;
		off += sz + 2;
	}
	return RS_PARSE_ERROR;
}

/* Parse one HTTP/1.x response in <buf> (<len> bytes). Returns the bytes it
 * takes, RS_PARSE_PARTIAL, or RS_PARSE_ERROR; once complete, <*status> is the
 * status code and <*keepalive> false when the connection cannot stay open
 * (HTTP/1.0, "Connection: close", or a body that ends at close). */
static int hold_parse_response(const char *buf, size_t len, int *status, bool *keepalive)
{
	const char *hend = memmem(buf, len, "\r\n\r\n", 4), *sl_end, *v;
	size_t hlen, vlen, body = 0;
	bool chunked = false;
	char *ep;

	if (!hend)
		return len >= HOLD_RESP_MAX ? RS_PARSE_ERROR : RS_PARSE_PARTIAL;
	hlen = (size_t)(hend - buf) + 4;
	if (hlen < 16 || memcmp(buf, "HTTP/1.", 7) || buf[8] != ' ')
		return RS_PARSE_ERROR;
	*status = (int)strtol(buf + 9, &ep, 10);
	if (ep != buf + 12 || *status < 100 || *status > 599)
		return RS_PARSE_ERROR;
	sl_end = memmem(buf, hlen, "\r\n", 2);
	*keepalive = buf[7] == '1';
	v = hold_header(sl_end + 2, (size_t)(hend - sl_end), "connection:", &vlen);
	if (v && vlen >= 5 && !strncasecmp(v, "close", 5))
		*keepalive = false;
	v = hold_header(sl_end + 2, (size_t)(hend - sl_end), "transfer-encoding:", &vlen);
	if (v && vlen >= 7 && !strncasecmp(v, "chunked", 7))
		chunked = true;
	if (chunked) {
		int r = hold_chunked(buf + hlen, len - hlen);

		return r < 0 ? r : (int)hlen + r;
	}
	v = hold_header(sl_end + 2, (size_t)(hend - sl_end), "content-length:", &vlen);
	if (v) {
		body = strtoul(v, &ep, 10);
		if (ep == v || body > HOLD_RESP_MAX)
			return RS_PARSE_ERROR;
	} else if (*status != 204 && *status != 304 && *status >= 200) {
		/* A body that ends at close cannot be held open. */
		*keepalive = false;
	}
	if (hlen + body > HOLD_RESP_MAX)
		return RS_PARSE_ERROR;
	if (len < hlen + body)
		return RS_PARSE_PARTIAL;
	return (int)(hlen + body);
}

static void hold_note_errno(struct hold_stats *st, const char *op, int err)
{
	if (!st->first_errno) {
		st->first_errno = err;
		st->first_errno_op = op;
	}
}

static void hold_kill(int ep, struct hold_conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->state = HOLD_DEAD;
	free(c->rx);
	c->rx = NULL;
	SSL_free(c->ssl);
	c->ssl = NULL;
}

/* send()/read() or their TLS twins; -1 with errno EAGAIN when it would block. */
static ssize_t hold_io(struct hold_conn *c, void *buf, size_t len, bool wr)
{
	int n;

	if (!c->ssl)
		return wr ? send(c->fd, buf, len, MSG_NOSIGNAL) : read(c->fd, buf, len);
	n = wr ? SSL_write(c->ssl, buf, (int)len) : SSL_read(c->ssl, buf, (int)len);
	if (n > 0)
		return n;
	switch (SSL_get_error(c->ssl, n)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
}

static void hold_fail(int ep, struct hold_conn *c, struct hold_stats *st)
{
	hold_kill(ep, c);
	st->failed++;
}

static void hold_error(int ep, struct hold_conn *c, struct hold_stats *st, enum hold_err why)
{
	hold_kill(ep, c);
	st->errors++;
	st->err_kind[why]++;
}

/* Start connection <i> in <c>: socket, source bind, nonblocking connect. */
static void hold_open(const struct hold_opts *o, const struct sockaddr_in *dst, int ep,
		      struct hold_conn *c, int i, struct hold_stats *st)
{
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
	int one = 1;

	c->start_ns = rs_now_ns();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		hold_note_errno(st, "socket", errno);
		c->state = HOLD_DEAD;
		st->failed++;
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (o->src_base) {
		struct sockaddr_in src = {.sin_family = AF_INET};
		uint32_t host = 0x7f000000u | (uint32_t)(o->src_base + i % o->src_count);

		src.sin_addr.s_addr = htonl(host);
		/* The port is picked at connect() for the full 4-tuple, so each
		 * source address has the whole ephemeral range to itself. */
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(c->fd, (const struct sockaddr *)&src, sizeof(src)) != 0) {
			hold_note_errno(st, "bind", errno);
			goto out_fail;
		}
	}
	if (connect(c->fd, (const struct sockaddr *)dst, sizeof(*dst)) != 0 &&
	    errno != EINPROGRESS) {
		hold_note_errno(st, "connect", errno);
		goto out_fail;
	}
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
		hold_note_errno(st, "epoll_ctl", errno);
		goto out_fail;
	}
	c->state = HOLD_CONNECTING;
	return;
out_fail:
	close(c->fd);
	c->fd = -1;
	c->state = HOLD_DEAD;
	st->failed++;
}

static void hold_send_request(const struct hold_opts *o, int ep, struct hold_conn *c,
			      struct hold_stats *st);

/* Drive the TLS handshake; then the request. */
static void hold_on_handshake(const struct hold_opts *o, int ep, struct hold_conn *c,
			      struct hold_stats *st)
{
	struct epoll_event ev = {.data.ptr = c};
	int r = SSL_do_handshake(c->ssl);

	if (r == 1) {
		c->state = HOLD_CONNECTING; /* request phase */
		hold_send_request(o, ep, c, st);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		ev.events = EPOLLIN | EPOLLRDHUP;
		break;
	case SSL_ERROR_WANT_WRITE:
		ev.events = EPOLLOUT;
		break;
	default:
		ERR_clear_error();
		hold_error(ep, c, st, HOLD_ERR_TLS);
		return;
	}
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		hold_error(ep, c, st, HOLD_ERR_TLS);
}

/* Connected (or failed to): check SO_ERROR, TLS if asked, send the request. */
static void hold_on_writable(const struct hold_opts *o, int ep, struct hold_conn *c,
			     struct hold_stats *st)
{
	socklen_t elen = sizeof(int);
	int err = 0;

	if (c->ssl) {
		hold_send_request(o, ep, c, st);
		return;
	}
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err) {
		hold_note_errno(st, "connect", err ? err : errno);
		hold_fail(ep, c, st);
		return;
	}
	if (hold_tls) {
		c->ssl = SSL_new(hold_tls);
		if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
			hold_error(ep, c, st, HOLD_ERR_TLS);
			return;
		}
		SSL_set_connect_state(c->ssl);
		c->state = HOLD_HANDSHAKE;
		hold_on_handshake(o, ep, c, st);
		return;
	}
	hold_send_request(o, ep, c, st);
}

static void hold_send_request(const struct hold_opts *o, int ep, struct hold_conn *c,
			      struct hold_stats *st)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};

	while (c->sent < o->req_len) {
		ssize_t w = hold_io(c, (char *)o->req + c->sent, o->req_len - c->sent, true);

		if (w < 0 && errno == EAGAIN)
			return; /* EPOLLOUT comes again */
		if (w <= 0) {
			hold_note_errno(st, "send", errno);
			hold_error(ep, c, st, HOLD_ERR_WRITE);
			return;
		}
		c->sent += (uint16_t)w;
	}
	c->rx = malloc(HOLD_RESP_MAX);
	if (!c->rx || epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
		hold_error(ep, c, st, HOLD_ERR_READ);
		return;
	}
	c->state = HOLD_READING;
}

static void hold_on_readable(int ep, struct hold_conn *c, struct hold_stats *st)
{
	bool keepalive = false;
	int status = 0, r;
	ssize_t n;

	n = hold_io(c, c->rx + c->got, HOLD_RESP_MAX - c->got, false);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		if (n < 0)
			hold_note_errno(st, "read", errno);
		hold_error(ep, c, st, n ? HOLD_ERR_READ : HOLD_ERR_EOF);
		return;
	}
	c->got += (uint16_t)n;
	r = hold_parse_response(c->rx, c->got, &status, &keepalive);
	if (r == RS_PARSE_PARTIAL)
		return;
	if (r == RS_PARSE_ERROR) {
		hold_error(ep, c, st, HOLD_ERR_HTTP);
		return;
	}
	if (status < 200 || status > 299) {
		hold_error(ep, c, st, HOLD_ERR_STATUS);
		return;
	}
	if (!keepalive) {
		hold_error(ep, c, st, HOLD_ERR_CLOSE);
		return;
	}
	/* Idle from now on, with the same interest set (EPOLLIN|EPOLLRDHUP):
	 * only a close by the server, or bytes it should not send, wake us. */
	st->unexpected += c->got - r;
	free(c->rx);
	c->rx = NULL;
	c->state = HOLD_IDLE;
	st->lat_us[st->opened++] = (uint32_t)RS_MIN((rs_now_ns() - c->start_ns) / 1000, UINT32_MAX);
}

/* A held connection woke up: the server closed it, or sent something. */
static void hold_on_idle_event(int ep, struct hold_conn *c, struct hold_stats *st)
{
	char buf[512];
	ssize_t n = hold_io(c, buf, sizeof(buf), false);

	if (n > 0) {
		st->unexpected += n;
		return;
	}
	if (n < 0 && errno == EAGAIN)
		return;
	hold_kill(ep, c);
	st->dropped++;
}

static void hold_dispatch(const struct hold_opts *o, int ep, const struct epoll_event *e,
			  struct hold_stats *st)
{
	struct hold_conn *c = e->data.ptr;

	switch (c->state) {
	case HOLD_CONNECTING:
		hold_on_writable(o, ep, c, st);
		break;
	case HOLD_HANDSHAKE:
		hold_on_handshake(o, ep, c, st);
		break;
	case HOLD_READING:
		hold_on_readable(ep, c, st);
		break;
	case HOLD_IDLE:
		hold_on_idle_event(ep, c, st);
		break;
	default:
		break;
	}
}

/* Give up on connections that have been opening for longer than the timeout.
 * <*lo> is the oldest index in <cs> that may still be in flight. */
static void hold_expire(const struct hold_opts *o, int ep, struct hold_conn *cs, int opened,
			int *lo, struct hold_stats *st)
{
	uint64_t now = rs_now_ns(), limit = (uint64_t)o->timeout_ms * 1000000u;

	while (*lo < opened && cs[*lo].state >= HOLD_IDLE)
		(*lo)++;
	for (int i = *lo; i < opened; i++) {
		struct hold_conn *c = &cs[i];

		if (c->state >= HOLD_IDLE || now - c->start_ns < limit)
			continue;
		if (c->state == HOLD_CONNECTING) {
			hold_note_errno(st, "connect", ETIMEDOUT);
			hold_fail(ep, c, st);
		} else {
			hold_error(ep, c, st, HOLD_ERR_TIMEOUT);
		}
	}
}

static int hold_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile <pct> of the sorted <v> (<n> values); 0 if empty. */
static uint32_t hold_pct(const uint32_t *v, int n, int pct)
{
	long rank = ((long)n * pct + 99) / 100;

	if (n == 0)
		return 0;
	return v[RS_MAX(rank, 1) - 1];
}

static void hold_usage(void)
{
	fprintf(
	    stderr,
	    "usage: hold --port P --conns N [--host 127.0.0.1] [--src-base B --src-count K]\n"
	    "            [--request 'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' | --path P]\n"
	    "            [--hold-seconds S] [--batch 512] [--timeout-ms 10000] "
	    "[--ramp-seconds 120] [--tls]\n");
}

static int hold_parse_args(int argc, char **argv, struct hold_opts *o)
{
	static const struct option longopts[] = {
	    {"host", 1, 0, 'h'},       {"port", 1, 0, 'p'},	    {"conns", 1, 0, 'n'},
	    {"src-base", 1, 0, 'b'},   {"src-count", 1, 0, 'k'},    {"request", 1, 0, 'r'},
	    {"path", 1, 0, 'u'},       {"hold-seconds", 1, 0, 's'}, {"batch", 1, 0, 'B'},
	    {"timeout-ms", 1, 0, 't'}, {"ramp-seconds", 1, 0, 'R'}, {"tls", 0, 0, 'T'},
	    {0, 0, 0, 0}};
	int c, len;

	*o = (struct hold_opts){.host = "127.0.0.1",
				.conns = 1000,
				.src_count = 1,
				.hold_s = 30,
				.batch = 512,
				.timeout_ms = 10000,
				.ramp_s = 120};
	len = snprintf(o->req, sizeof(o->req), "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n");
	o->req_len = (size_t)len;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			o->host = optarg;
			break;
		case 'p':
			o->port = atoi(optarg);
			break;
		case 'n':
			o->conns = atoi(optarg);
			break;
		case 'b':
			o->src_base = atoi(optarg);
			break;
		case 'k':
			o->src_count = atoi(optarg);
			break;
		case 's':
			o->hold_s = atoi(optarg);
			break;
		case 'B':
			o->batch = atoi(optarg);
			break;
		case 't':
			o->timeout_ms = atoi(optarg);
			break;
		case 'R':
			o->ramp_s = atoi(optarg);
			break;
		case 'T':
			hold_tls = SSL_CTX_new(TLS_method());
			if (!hold_tls)
				return -ENOMEM;
			/* Full handshakes only: every connection costs the server one. */
			SSL_CTX_set_session_cache_mode(hold_tls, SSL_SESS_CACHE_OFF);
			SSL_CTX_set_options(hold_tls, SSL_OP_NO_TICKET);
			break;
		case 'r':
			len = hold_unescape(optarg, o->req, sizeof(o->req));
			if (len <= 0) {
				fprintf(stderr,
					"hold: --request: bad escape or longer than %d bytes\n",
					HOLD_REQ_MAX - 1);
				return -EINVAL;
			}
			o->req_len = (size_t)len;
			break;
		case 'u':
			len = snprintf(o->req, sizeof(o->req),
				       "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", optarg);
			if (len <= 0 || (size_t)len >= sizeof(o->req))
				return -EINVAL;
			o->req_len = (size_t)len;
			break;
		default:
			hold_usage();
			return -EINVAL;
		}
	}
	if (o->port <= 0 || o->port > 65535 || o->conns <= 0 || o->batch <= 0 ||
	    o->timeout_ms <= 0 || o->ramp_s <= 0 || o->hold_s < 0 || o->src_count <= 0 ||
	    o->src_base < 0 || (o->src_base && o->src_base + o->src_count - 1 > 254)) {
		hold_usage();
		return -EINVAL;
	}
	return 0;
}

static void hold_report(const struct hold_opts *o, const struct hold_stats *st, uint64_t held_ms)
{
	printf("{\"conns\":%d,\"opened\":%d,\"failed\":%d,\"errors\":%d,\"error_kinds\":{",
	       o->conns, st->opened, st->failed, st->errors);
	for (int i = 0; i < HOLD_ERR_MAX; i++)
		printf("%s\"%s\":%d", i ? "," : "", hold_err_names[i], st->err_kind[i]);
	printf("},\"first_error\":\"%s%s%s\",\"dropped_while_idle\":%d,\"unexpected_bytes\":%ld,"
	       "\"ramp_ms\":%llu,\"held_ms\":%llu,\"answer_us\":{\"p50\":%u,\"p99\":%u,\"max\":%u},"
	       "\"src\":\"127.0.0.%d-127.0.0.%d\"}\n",
	       st->first_errno_op ? st->first_errno_op : "", st->first_errno ? ": " : "",
	       st->first_errno ? strerror(st->first_errno) : "", st->dropped, st->unexpected,
	       (unsigned long long)st->ramp_ms, (unsigned long long)held_ms,
	       hold_pct(st->lat_us, st->opened, 50), hold_pct(st->lat_us, st->opened, 99),
	       st->opened ? st->lat_us[st->opened - 1] : 0, o->src_base ? o->src_base : 1,
	       o->src_base ? o->src_base + o->src_count - 1 : 1);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct sockaddr_in dst = {.sin_family = AF_INET};
	struct sigaction sa = {.sa_handler = on_signal};
	struct hold_stats st = {0};
	struct epoll_event evs[256];
	struct hold_conn *cs = NULL;
	struct hold_opts o;
	struct rlimit rl;
	uint64_t t0, deadline, held_at;
	int ep, opened = 0, lo = 0, ret = 2;

	if (hold_parse_args(argc, argv, &o) != 0)
		return 2;
	if (inet_pton(AF_INET, o.host, &dst.sin_addr) != 1) {
		fprintf(stderr, "hold: --host %s: not an IPv4 address\n", o.host);
		return 2;
	}
	dst.sin_port = htons((uint16_t)o.port);
	/* Ordinary descriptors: the whole hard limit, and no more. */
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if ((rlim_t)o.conns + 16 > rl.rlim_cur) {
		fprintf(stderr, "hold: --conns %d exceeds RLIMIT_NOFILE %llu: use more processes\n",
			o.conns, (unsigned long long)rl.rlim_cur);
		return 2;
	}
	sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: epoll_wait returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("hold: epoll_create1");
		return 2;
	}
	cs = rs_xcalloc((size_t)o.conns, sizeof(*cs));
	st.lat_us = rs_xcalloc((size_t)o.conns, sizeof(*st.lat_us));

	t0 = rs_now_ms();
	deadline = t0 + (uint64_t)o.ramp_s * 1000;
	while (!hold_stop && st.opened + st.failed + st.errors < o.conns &&
	       rs_now_ms() < deadline) {
		int n;

		while (opened < o.conns && opened - (st.opened + st.failed + st.errors) < o.batch) {
			hold_open(&o, &dst, ep, &cs[opened], opened, &st);
			opened++;
		}
		n = epoll_wait(ep, evs, (int)RS_ARRAY_SIZE(evs), 100);
		for (int i = 0; i < n; i++)
			hold_dispatch(&o, ep, &evs[i], &st);
		hold_expire(&o, ep, cs, opened, &lo, &st);
	}
	/* Whatever is still opening when the ramp ends (deadline or signal). */
	for (int i = 0; i < opened; i++) {
		if (cs[i].state == HOLD_CONNECTING && !cs[i].ssl)
			hold_fail(ep, &cs[i], &st);
		else if (cs[i].state == HOLD_CONNECTING || cs[i].state == HOLD_HANDSHAKE)
			hold_error(ep, &cs[i], &st, HOLD_ERR_TIMEOUT);
		else if (cs[i].state == HOLD_READING)
			hold_error(ep, &cs[i], &st, HOLD_ERR_TIMEOUT);
	}
	st.failed += o.conns - opened; /* never tried: stopped early */
	held_at = rs_now_ms();
	st.ramp_ms = held_at - t0;
	qsort(st.lat_us, (size_t)st.opened, sizeof(*st.lat_us), hold_cmp_u32);
	fprintf(stderr,
		"{\"event\":\"held\",\"conns\":%d,\"opened\":%d,\"failed\":%d,\"errors\":%d,"
		"\"ramp_ms\":%llu}\n",
		o.conns, st.opened, st.failed, st.errors, (unsigned long long)st.ramp_ms);

	deadline = held_at + (uint64_t)o.hold_s * 1000;
	while (!hold_stop && rs_now_ms() < deadline) {
		int n = epoll_wait(ep, evs, (int)RS_ARRAY_SIZE(evs), 1000);

		for (int i = 0; i < n; i++)
			hold_dispatch(&o, ep, &evs[i], &st);
	}
	hold_report(&o, &st, rs_now_ms() - held_at);
	ret = st.opened == o.conns && !st.dropped ? 0 : 1;
	for (int i = 0; i < opened; i++)
		if (cs[i].state != HOLD_DEAD)
			hold_kill(ep, &cs[i]);
	close(ep);
	free(st.lat_us);
	free(cs);
	return ret;
}
