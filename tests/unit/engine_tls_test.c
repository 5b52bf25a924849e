/* tests/unit/engine_tls_test.c — a TLS peer throttled, not closed, when no
 * user buffer is free.
 *
 * The engine side is the real TLS filter (tls/conn.c, server role, on a
 * self-signed certificate); the peer is a BoringSSL client on a plain
 * socket. With every user buffer held (slow readers elsewhere pin them),
 * the filter cannot decrypt and waits; meanwhile the owner resumes the
 * connection as its backpressure releases (what up_on_drain does). The
 * owner's resume must not re-arm a socket whose filter still waits: the
 * peer is throttled by TCP, its held input stays small, and once buffers
 * are back every byte arrives on the same connection.
 */
#include "tests/unit/engine_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>

#include "tls/server.h"

#define TOTAL (768u * 1024)

struct tfx {
	struct harness h;
	struct rs_tls_server *srv;
	struct sockaddr_in addr;
	struct rs_conn *c;
	struct rs_timer tick;
	struct rs_buf *hog[4096];
	unsigned nhog;
	size_t got; /* plaintext delivered to the owner (worker writes, release) */
	enum rs_close_reason why;
	bool closed;
};

static void t_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct tfx *f = rs_conn_ctx(c);

	(void)b, (void)data;
	__atomic_store_n(&f->got, f->got + len, __ATOMIC_RELEASE);
}

/* The owner's backpressure keeps releasing (on_drain -> rs_conn_resume). */
static void on_tick(struct rs_timer *t)
{
	struct tfx *f = rs_container_of(t, struct tfx, tick);

	if (!f->c)
		return;
	rs_conn_resume(f->c);
	rs_timer_link(rs_worker_timers(f->h.w), &f->tick, rs_worker_now(f->h.w) + 8);
}

static void t_on_connect(struct rs_conn *c, int res)
{
	struct tfx *f = rs_conn_ctx(c);

	if (res || rs_tls_server_attach(f->srv, c)) {
		rs_conn_close(c, RS_CLOSE_ERROR, EIO);
		return;
	}
	rs_timer_link(rs_worker_timers(f->h.w), &f->tick, rs_worker_now(f->h.w) + 8);
}

static void t_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct tfx *f = rs_conn_ctx(c);

	(void)err;
	f->c = NULL;
	f->why = why;
	rs_timer_unlink(rs_worker_timers(f->h.w), &f->tick);
	__atomic_store_n(&f->closed, true, __ATOMIC_RELEASE);
}

static const struct rs_conn_ops t_ops = {
    .on_data = t_on_data,
    .on_connect = t_on_connect,
    .on_close = t_on_close,
};

static void start_conn(struct rs_worker *w, void *arg)
{
	struct tfx *f = arg;

	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->addr, sizeof(f->addr), NULL, 0,
					 2000, &t_ops, f, &f->c),
			 0);
}

static void hog(struct rs_worker *w, void *arg)
{
	struct tfx *f = arg;
	struct rs_buf *b;

	while (f->nhog < RS_ARRAY_SIZE(f->hog) && (b = rs_bufpool_get(rs_worker_bufpool(w))))
		f->hog[f->nhog++] = b;
}

static void unhog(struct rs_worker *w, void *arg)
{
	struct tfx *f = arg;

	while (f->nhog)
		rs_buf_unref(rs_worker_bufpool(w), f->hog[--f->nhog]);
}

static void close_conn(struct rs_worker *w, void *arg)
{
	struct tfx *f = arg;

	(void)w;
	if (f->c)
		rs_conn_close(f->c, RS_CLOSE_NORMAL, 0);
}

/* Write from <*off> towards TOTAL without blocking, for up to <ms>. */
static void pump_writes(SSL *ssl, int fd, const uint8_t *src, size_t *off, unsigned ms)
{
	uint64_t end = h_now_ms() + ms;

	while (*off < TOTAL && h_now_ms() < end) {
		int n = SSL_write(ssl, src + *off, (int)RS_MIN((size_t)16384, TOTAL - *off));

		if (n > 0) {
			*off += (size_t)n;
			continue;
		}
		if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_WRITE)
			return; /* the engine closed the connection: checked by the caller */
		{
			struct pollfd p = {.fd = fd, .events = POLLOUT};

			poll(&p, 1, 10);
		}
	}
}

static void test_throttled_not_closed(void **state)
{
	struct tfx *f = calloc(1, sizeof(*f));
	struct rs_tls_server_opts so = {0};
	char dir[] = "/tmp/rs-engine-tls-XXXXXX", err[256];
	uint8_t *src = malloc(TOTAL);
	size_t off = 0;
	SSL_CTX *cctx;
	SSL *ssl;
	int lfd, fd;

	(void)state;
	assert_non_null(f);
	assert_non_null(src);
	memset(src, 'x', TOTAL);
	if (!h_start(&f->h, (struct rs_engine_opts){.buf_count = 16, .socket_rcvbuf = 16384})) {
		free(f);
		free(src);
		skip();
	}
	assert_non_null(mkdtemp(dir));
	so.state_dir = dir;
	assert_int_equal(rs_tls_server_new(&f->srv, &so, err, sizeof(err)), 0);
	rs_timer_init(&f->tick, on_tick);
	lfd = h_listen(&f->addr, 4, 0);
	assert_int_equal(rs_worker_call(f->h.w, start_conn, f), 0);
	fd = h_accept(lfd, 2000);
	assert_true(fd >= 0);
	{
		int sb = 16384;

		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb)), 0);
	}
	cctx = SSL_CTX_new(TLS_method());
	ssl = SSL_new(cctx);
	SSL_set_fd(ssl, fd);
	assert_int_equal(SSL_connect(ssl), 1);
	/* Every user buffer is pinned elsewhere: decryption must wait. */
	assert_int_equal(rs_worker_call(f->h.w, hog, f), 0);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	pump_writes(ssl, fd, src, &off, 1000);
	usleep(100000);
	if (__atomic_load_n(&f->closed, __ATOMIC_ACQUIRE))
		fail_msg("the TLS peer was closed (%s) after %zu bytes instead of throttled",
			 rs_close_reason_names[f->why], off);
	assert_true(off < TOTAL); /* TCP throttled the writer */
	assert_int_equal(__atomic_load_n(&f->got, __ATOMIC_ACQUIRE), 0);
	/* Buffers back: everything arrives, on the same connection. */
	assert_int_equal(rs_worker_call(f->h.w, unhog, f), 0);
	pump_writes(ssl, fd, src, &off, 3000);
	assert_int_equal(off, TOTAL);
	{
		uint64_t end = h_now_ms() + 3000;

		while (__atomic_load_n(&f->got, __ATOMIC_ACQUIRE) < TOTAL && h_now_ms() < end)
			usleep(1000);
	}
	assert_false(__atomic_load_n(&f->closed, __ATOMIC_ACQUIRE));
	assert_int_equal(__atomic_load_n(&f->got, __ATOMIC_ACQUIRE), TOTAL);
	assert_int_equal(rs_worker_call(f->h.w, close_conn, f), 0);
	assert_true(h_wait_flag(&f->closed, 2000));
	SSL_free(ssl);
	SSL_CTX_free(cctx);
	close(fd);
	close(lfd);
	h_stop(&f->h);
	rs_tls_server_free(f->srv);
	{
		char cmd[64];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		assert_int_equal(system(cmd), 0);
	}
	free(src);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_throttled_not_closed),
	};

	rs_log_set_level(RS_LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
