/* tests/unit/engine_handshake_test.c — no owner byte reaches the wire before
 * the connection is up and its TLS handshake complete.
 *
 * Issue 15 item 2: a timer sent an API token on an upstream whose connect
 * was still pending; the TLS filter was installed in on_connect, after the
 * bytes were already queued, and they went out in clear. The engine now
 * refuses owner bytes (-ENOTCONN) while a connect is pending and while a
 * filter has not reported its handshake done (rs_conn_filter_ready), and
 * refuses to install a filter over bytes already queued (-EBUSY).
 */
#include "tests/unit/engine_harness.h"

#include <signal.h>
#include <stdlib.h>

#include "tls/client.h"
#include "tls/server.h"

#define SECRET "Authorization: PVEAPIToken=root@pam!x=deadbeef\r\n"

struct hfx {
	struct harness h;
	struct rs_tls_client *cl;
	struct rs_tls_server *srv;
	struct sockaddr_in addr;
	struct rs_conn *c;
	int ret_connecting, ret_handshaking, ret_attach_over_bytes;
	bool after_connect, echoed;
};

static void c_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	(void)c, (void)b, (void)data, (void)len;
}

static void on_tls_done(struct rs_conn *c, void *arg, int res, const char *msg)
{
	(void)c, (void)arg, (void)res, (void)msg;
}

static void c_on_connect(struct rs_conn *c, int res)
{
	struct hfx *f = rs_conn_ctx(c);

	if (res) {
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	assert_int_equal(rs_tls_client_attach(f->cl, c, "127.0.0.1", 443, on_tls_done, f), 0);
	__atomic_store_n(&f->after_connect, true, __ATOMIC_RELEASE);
}

static void c_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct hfx *f = rs_conn_ctx(c);

	(void)why, (void)err;
	f->c = NULL;
}

static const struct rs_conn_ops c_ops = {
    .on_data = c_on_data,
    .on_connect = c_on_connect,
    .on_close = c_on_close,
};

static void start_client(struct rs_worker *w, void *arg)
{
	struct hfx *f = arg;

	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->addr, sizeof(f->addr), NULL, 0,
					 2000, &c_ops, f, &f->c),
			 0);
	/* What the failover timer did: send while the connect is pending. */
	f->ret_connecting = rs_conn_send(f->c, SECRET, strlen(SECRET));
}

static void close_conn(struct rs_worker *w, void *arg)
{
	struct hfx *f = arg;

	(void)w;
	if (f->c)
		rs_conn_close(f->c, RS_CLOSE_NORMAL, 0);
}

static void test_upstream_no_plaintext(void **state)
{
	struct hfx *f = calloc(1, sizeof(*f));
	struct rs_tls_client_opts co = {.name = "test", .insecure = true};
	char err[256];
	uint8_t wire[16384];
	size_t got = 0;
	uint64_t end;
	int lfd, fd;

	(void)state;
	assert_non_null(f);
	if (!h_start(&f->h, (struct rs_engine_opts){0})) {
		free(f);
		skip();
	}
	assert_int_equal(rs_tls_client_new(&f->cl, &co, err, sizeof(err)), 0);
	lfd = h_listen(&f->addr, 4, 0);
	assert_int_equal(rs_worker_call(f->h.w, start_client, f), 0);
	fd = h_accept(lfd, 2000);
	assert_true(fd >= 0);
	assert_true(h_wait_flag(&f->after_connect, 2000));
	/* Everything the engine put on the wire in half a second. */
	end = h_now_ms() + 500;
	while (h_now_ms() < end && got < sizeof(wire)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 50) != 1)
			continue;
		n = read(fd, wire + got, sizeof(wire) - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	assert_true(got > 0);
	assert_int_equal(wire[0], 0x16); /* a TLS handshake record first */
	if (memmem(wire, got, "PVEAPIToken", 11))
		fail_msg("the token went out in clear");
	assert_int_equal(f->ret_connecting, -ENOTCONN);
	assert_int_equal(rs_worker_call(f->h.w, close_conn, f), 0);
	close(fd);
	close(lfd);
	h_stop(&f->h);
	rs_tls_client_free(f->cl);
	free(f);
}

/* A plain connection that queued bytes cannot have a filter put over them
 * (they would leave in clear under a channel the owner thinks encrypted). */
static void p_on_connect(struct rs_conn *c, int res)
{
	struct hfx *f = rs_conn_ctx(c);

	if (res) {
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	assert_int_equal(rs_conn_send(c, "PLAIN", 5), 0);
	f->ret_attach_over_bytes = rs_tls_client_attach(f->cl, c, "127.0.0.1", 443, on_tls_done, f);
	rs_conn_close_after_send(c);
	__atomic_store_n(&f->after_connect, true, __ATOMIC_RELEASE);
}

static const struct rs_conn_ops p_ops = {
    .on_data = c_on_data,
    .on_connect = p_on_connect,
    .on_close = c_on_close,
};

static void start_plain(struct rs_worker *w, void *arg)
{
	struct hfx *f = arg;

	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->addr, sizeof(f->addr), NULL, 0,
					 2000, &p_ops, f, &f->c),
			 0);
}

static void test_filter_over_queued_bytes(void **state)
{
	struct hfx *f = calloc(1, sizeof(*f));
	struct rs_tls_client_opts co = {.name = "test", .insecure = true};
	char err[256], buf[64];
	ssize_t n;
	int lfd, fd;

	(void)state;
	assert_non_null(f);
	if (!h_start(&f->h, (struct rs_engine_opts){0})) {
		free(f);
		skip();
	}
	assert_int_equal(rs_tls_client_new(&f->cl, &co, err, sizeof(err)), 0);
	lfd = h_listen(&f->addr, 4, 0);
	assert_int_equal(rs_worker_call(f->h.w, start_plain, f), 0);
	fd = h_accept(lfd, 2000);
	assert_true(fd >= 0);
	assert_true(h_wait_flag(&f->after_connect, 2000));
	assert_int_equal(f->ret_attach_over_bytes, -EBUSY);
	n = read(fd, buf, sizeof(buf));
	assert_int_equal(n, 5); /* the plain bytes, as sent, then the close */
	close(fd);
	close(lfd);
	h_stop(&f->h);
	rs_tls_client_free(f->cl);
	free(f);
}

/* The server role: once established, the owner's bytes flow. */
static void s_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct hfx *f = rs_conn_ctx(c);

	(void)b, (void)data, (void)len;
	if (!f->echoed)
		assert_int_equal(rs_conn_send(c, "hello", 5), 0);
	f->echoed = true;
}

static void s_on_connect(struct rs_conn *c, int res)
{
	struct hfx *f = rs_conn_ctx(c);

	if (res || rs_tls_server_attach(f->srv, c)) {
		rs_conn_close(c, RS_CLOSE_ERROR, EIO);
		return;
	}
	f->ret_handshaking = rs_conn_send(c, "early", 5);
}

static const struct rs_conn_ops s_ops = {
    .on_data = s_on_data,
    .on_connect = s_on_connect,
    .on_close = c_on_close,
};

static void start_server_role(struct rs_worker *w, void *arg)
{
	struct hfx *f = arg;

	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->addr, sizeof(f->addr), NULL, 0,
					 2000, &s_ops, f, &f->c),
			 0);
}

static void test_sends_after_handshake(void **state)
{
	struct hfx *f = calloc(1, sizeof(*f));
	struct rs_tls_server_opts so = {0};
	char dir[] = "/tmp/rs-engine-hs-XXXXXX", err[256], buf[16], cmd[64];
	SSL_CTX *cctx;
	SSL *ssl;
	int lfd, fd;

	(void)state;
	assert_non_null(f);
	if (!h_start(&f->h, (struct rs_engine_opts){0})) {
		free(f);
		skip();
	}
	assert_non_null(mkdtemp(dir));
	so.state_dir = dir;
	assert_int_equal(rs_tls_server_new(&f->srv, &so, err, sizeof(err)), 0);
	lfd = h_listen(&f->addr, 4, 0);
	assert_int_equal(rs_worker_call(f->h.w, start_server_role, f), 0);
	fd = h_accept(lfd, 2000);
	assert_true(fd >= 0);
	cctx = SSL_CTX_new(TLS_method());
	ssl = SSL_new(cctx);
	SSL_set_fd(ssl, fd);
	assert_int_equal(SSL_connect(ssl), 1);
	assert_int_equal(SSL_write(ssl, "x", 1), 1);
	assert_int_equal(SSL_read(ssl, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(f->ret_handshaking, -ENOTCONN);
	assert_int_equal(rs_worker_call(f->h.w, close_conn, f), 0);
	SSL_free(ssl);
	SSL_CTX_free(cctx);
	close(fd);
	close(lfd);
	h_stop(&f->h);
	rs_tls_server_free(f->srv);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_upstream_no_plaintext),
	    cmocka_unit_test(test_filter_over_queued_bytes),
	    cmocka_unit_test(test_sends_after_handshake),
	};

	rs_log_set_level(RS_LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
