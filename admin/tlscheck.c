/* admin/tlscheck.c — `ringside tls-check` (see admin/tlscheck.h). */
#include "core/common.h"

#include <getopt.h>
#include <netdb.h>
#include <pthread.h>

#include "admin/tlscheck.h"
#include "core/engine.h"
#include "core/log.h"
#include "tls/client.h"

struct check {
	struct rs_tls_client *cl;
	const char *host; /* SNI and verification name */
	const char *verified_by;
	uint16_t port;
	struct sockaddr_storage dst;
	socklen_t dstlen;
	unsigned timeout_ms;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool finished;
	int res;
	char line[700];
	struct rs_timer timer;
	struct rs_conn *c;
};

static void finish(struct check *k, int res)
{
	pthread_mutex_lock(&k->lock);
	k->res = res;
	k->finished = true;
	pthread_cond_signal(&k->cond);
	pthread_mutex_unlock(&k->lock);
}

static void c_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct check *k = rs_conn_ctx(c);

	(void)why, (void)err;
	rs_timer_unlink(rs_worker_timers(rs_conn_worker(c)), &k->timer);
	if (!k->line[0])
		snprintf(k->line, sizeof(k->line),
			 "FAILED: connection closed during the handshake");
	finish(k, k->res);
}

/* After the handshake wait briefly for the server's first bytes: TLS 1.3
 * session tickets arrive after the handshake and make the next connection
 * resume. */
static void on_settle(struct rs_timer *t)
{
	struct check *k = rs_container_of(t, struct check, timer);

	rs_conn_close(k->c, RS_CLOSE_NORMAL, 0);
}

static void c_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	(void)c, (void)b, (void)data, (void)len;
}

static void c_on_eof(struct rs_conn *c)
{
	rs_conn_close(c, RS_CLOSE_NORMAL, 0);
}

static void on_tls(struct rs_conn *c, void *arg, int res, const char *msg)
{
	struct check *k = arg;
	struct rs_tls_conn *t = rs_conn_filter_ctx(c);
	const STACK_OF(CRYPTO_BUFFER) * chain;
	char fp[RS_TLS_FP_STR] = "-";
	struct rs_worker *w = rs_conn_worker(c);
	char req[300];

	if (res) {
		k->res = res;
		snprintf(k->line, sizeof(k->line), "FAILED: %s", msg);
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	chain = SSL_get0_peer_certificates(t->ssl);
	if (chain && sk_CRYPTO_BUFFER_num(chain))
		rs_tls_fingerprint(CRYPTO_BUFFER_data(sk_CRYPTO_BUFFER_value(chain, 0)),
				   CRYPTO_BUFFER_len(sk_CRYPTO_BUFFER_value(chain, 0)), fp);
	snprintf(k->line, sizeof(k->line), "ok %s %s verified-by=%s resumed=%s peer-sha256=%s",
		 SSL_get_version(t->ssl), rs_tls_suite(c),
		 k->verified_by, rs_tls_client_resumed(c) ? "yes" : "no", fp);
	snprintf(req, sizeof(req), "HEAD / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		 k->host);
	if (rs_conn_send(c, req, strlen(req)))
		rs_conn_close(c, RS_CLOSE_ERROR, EIO);
	else
		rs_timer_link(rs_worker_timers(w), &k->timer, rs_worker_now(w) + 300);
}

static void c_on_connect(struct rs_conn *c, int res)
{
	struct check *k = rs_conn_ctx(c);

	if (res) {
		k->res = res;
		snprintf(k->line, sizeof(k->line), "FAILED: connect: %s", strerror(-res));
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	if (rs_tls_client_attach(k->cl, c, k->host, k->port, on_tls, k))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
}

static const struct rs_conn_ops check_ops = {
    .on_data = c_on_data,
    .on_eof = c_on_eof,
    .on_connect = c_on_connect,
    .on_close = c_on_close,
};

static void start_one(struct rs_worker *w, void *arg)
{
	struct check *k = arg;
	int ret;

	rs_timer_init(&k->timer, on_settle);
	ret = rs_conn_connect(w, (struct sockaddr *)&k->dst, k->dstlen, NULL, 0, k->timeout_ms,
			      &check_ops, k, &k->c);
	if (ret) {
		snprintf(k->line, sizeof(k->line), "FAILED: connect: %s", strerror(-ret));
		finish(k, ret);
	}
}

static void usage(FILE *f)
{
	fputs("usage: ringside tls-check HOST:PORT [--name NAME] [--ca FILE] [--pin SHA256]...\n"
	      "                          [--insecure] [--count N] [--timeout-ms N]\n"
	      "Connects with ringside's upstream TLS client and reports, per connection, the\n"
	      "protocol, cipher, whether the session resumed and the server's fingerprint.\n"
	      "Verification: --pin (repeatable) > --ca > the system store; --insecure: none.\n"
	      "--name sets the name sent as SNI and checked against the certificate.\n",
	      f);
}

int rs_tlscheck_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"name", required_argument, NULL, 'n'},  {"ca", required_argument, NULL, 'c'},
	    {"pin", required_argument, NULL, 'p'},   {"insecure", no_argument, NULL, 'k'},
	    {"count", required_argument, NULL, 'N'}, {"timeout-ms", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},	     {NULL, 0, NULL, 0},
	};
	struct rs_tls_client_opts o = {.name = "tls-check"};
	const char *pins[16];
	struct rs_engine_opts eo = {.workers = 1};
	struct rs_engine *e = NULL;
	struct check k = {.timeout_ms = 5000};
	unsigned count = 1;
	char err[512], host[256], *colon;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int opt, ret = 2;

	optind = 0;
	while ((opt = getopt_long(argc + 1, argv - 1, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			k.host = optarg;
			break;
		case 'c':
			o.ca_file = optarg;
			break;
		case 'p':
			if (o.n_pins == RS_ARRAY_SIZE(pins))
				goto out_usage;
			pins[o.n_pins++] = optarg;
			break;
		case 'k':
			o.insecure = true;
			break;
		case 'N':
			count = (unsigned)atoi(optarg);
			break;
		case 't':
			k.timeout_ms = (unsigned)atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto out_usage;
		}
	}
	if (optind != argc || count < 1 || count > 100 || !k.timeout_ms)
		goto out_usage;
	snprintf(host, sizeof(host), "%s", argv[optind - 1]);
	colon = strrchr(host, ':');
	if (!colon || colon == host)
		goto out_usage;
	*colon = 0;
	k.port = (uint16_t)atoi(colon + 1);
	if (host[0] == '[' && colon[-1] == ']') {
		colon[-1] = 0;
		memmove(host, host + 1, strlen(host));
	}
	if (!k.host)
		k.host = host;
	o.pins = pins;
	k.verified_by = o.insecure  ? "nothing(insecure)"
			: o.n_pins  ? "pin"
			: o.ca_file ? "ca"
				    : "system-ca";
	if (o.insecure)
		fprintf(stderr, "ringside tls-check: warning: --insecure: the certificate is not "
				"verified\n");
	rs_log_set_level(RS_LOG_ERROR);
	if (getaddrinfo(host, colon + 1, &hints, &ai) || !ai) {
		fprintf(stderr, "ringside tls-check: cannot resolve '%s'\n", host);
		return 1;
	}
	memcpy(&k.dst, ai->ai_addr, ai->ai_addrlen);
	k.dstlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	ret = 1;
	if (rs_tls_client_new(&k.cl, &o, err, sizeof(err))) {
		fprintf(stderr, "ringside tls-check: %s\n", err);
		return 1;
	}
	e = rs_engine_new(&eo, err, sizeof(err));
	if (!e || rs_engine_start(e, err, sizeof(err))) {
		fprintf(stderr, "ringside tls-check: %s\n", err);
		goto out_free;
	}
	pthread_mutex_init(&k.lock, NULL);
	pthread_cond_init(&k.cond, NULL);
	ret = 0;
	for (unsigned i = 1; i <= count; i++) {
		k.finished = false;
		k.res = 0;
		k.line[0] = 0;
		if (rs_worker_post(rs_engine_worker(e, 0), start_one, &k)) {
			ret = 1;
			break;
		}
		pthread_mutex_lock(&k.lock);
		while (!k.finished)
			pthread_cond_wait(&k.cond, &k.lock);
		pthread_mutex_unlock(&k.lock);
		printf("connection %u: %s\n", i, k.line);
		if (k.res)
			ret = 1;
	}
	fflush(stdout);

out_free:
	if (e) {
		rs_engine_stop(e, 0);
		rs_engine_free(e);
	}
	rs_tls_client_free(k.cl);
	return ret;

out_usage:
	usage(stderr);
	return 2;
}
