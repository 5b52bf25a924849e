/* tests/unit/engine_sendq_test.c — the send queue against a model.
 *
 * A worker connection sends a random mix of rs_conn_send (copied, corked
 * into the tail), send_owned, send_static and send_buf (pool buffers) of
 * random sizes, through 4 KiB socket buffers to a peer that reads random
 * amounts at random pauses, so nearly every sendmsg is partial. Every byte
 * queued is appended to a model of the stream; the peer must receive
 * exactly the model, in order, nothing more. Under ASan a send that reads
 * past a segment fails too. Bounded: ~2 s of traffic.
 */
#include "tests/unit/engine_harness.h"

#include <stdlib.h>

#include "tls/server.h"

#define MODEL_CAP  (64u << 20)
#define RUN_MS	   2000
#define STATIC_LEN 65536

static uint8_t static_bytes[STATIC_LEN];

struct gen {
	struct harness h;
	struct rs_tls_server *srv; /* TLS variant: the engine side is the server */
	struct sockaddr_in addr;
	struct rs_conn *c;
	struct rs_timer tick;
	uint64_t rng, end_ms;
	uint8_t *model;
	size_t model_len; /* written by the worker (release), read by the peer */
	bool done, closed, failed;
	int connect_res;
	unsigned sends[4];
};

static void model_add(struct gen *g, const uint8_t *p, size_t n)
{
	assert_true(g->model_len + n <= MODEL_CAP);
	memcpy(g->model + g->model_len, p, n);
	__atomic_store_n(&g->model_len, g->model_len + n, __ATOMIC_RELEASE);
}

static void fill(struct gen *g, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(h_rand(&g->rng) >> 56);
}

/* Mostly small writes (frame headers, short messages) with some large. */
static size_t rand_len(struct gen *g, size_t max)
{
	uint64_t r = h_rand(&g->rng);
	size_t n = (r & 7) ? 1 + (size_t)((r >> 8) % 300) : 1 + (size_t)((r >> 8) % 20000);

	return n < max ? n : max;
}

static void one_send(struct gen *g)
{
	struct rs_bufpool *pool = rs_worker_bufpool(g->h.w);
	unsigned kind = (unsigned)(h_rand(&g->rng) % 4);
	uint8_t tmp[20000];
	size_t n;
	int ret = 0;

	if (kind == 0) {
		n = rand_len(g, sizeof(tmp));
		fill(g, tmp, n);
		model_add(g, tmp, n);
		ret = rs_conn_send(g->c, tmp, n);
	} else if (kind == 1) {
		uint8_t *p;

		n = rand_len(g, sizeof(tmp));
		p = malloc(n);
		assert_non_null(p);
		fill(g, p, n);
		model_add(g, p, n);
		ret = rs_conn_send_owned(g->c, p, n);
	} else if (kind == 2) {
		size_t off = (size_t)(h_rand(&g->rng) % STATIC_LEN);

		n = rand_len(g, STATIC_LEN - off);
		model_add(g, static_bytes + off, n);
		ret = rs_conn_send_static(g->c, static_bytes + off, n);
	} else {
		struct rs_buf *b = rs_bufpool_get(pool);
		size_t off;

		if (!b)
			return;
		off = (size_t)(h_rand(&g->rng) % 512);
		n = rand_len(g, pool->size - off);
		fill(g, rs_buf_data(pool, b) + off, n);
		model_add(g, rs_buf_data(pool, b) + off, n);
		ret = rs_conn_send_buf(g->c, b, rs_buf_data(pool, b) + off, n);
		rs_buf_unref(pool, b);
	}
	g->sends[kind]++;
	assert_int_equal(ret, 0);
}

/* Queue a random burst; stop at congestion (on_drain resumes) or the end. */
static void generate(struct gen *g)
{
	unsigned burst = 1 + (unsigned)(h_rand(&g->rng) % 24);

	if (g->done || !g->c)
		return;
	if (rs_worker_now(g->h.w) >= g->end_ms) {
		g->done = true;
		rs_conn_close_after_send(g->c);
		return;
	}
	while (burst-- && !rs_conn_congested(g->c))
		one_send(g);
	rs_timer_link(rs_worker_timers(g->h.w), &g->tick, rs_worker_now(g->h.w) + 1);
}

static void on_tick(struct rs_timer *t)
{
	generate(rs_container_of(t, struct gen, tick));
}

static void g_on_connect(struct rs_conn *c, int res)
{
	struct gen *g = rs_conn_ctx(c);

	g->connect_res = res;
	if (res || (g->srv && rs_tls_server_attach(g->srv, c))) {
		g->failed = true;
		rs_conn_close(c, RS_CLOSE_ERROR, res ? -res : ENOMEM);
		return;
	}
	g->end_ms = rs_worker_now(g->h.w) + RUN_MS;
	if (!g->srv)
		generate(g);
	/* With TLS the peer's first record says the handshake is done. */
}

static void g_on_drain(struct rs_conn *c)
{
	generate(rs_conn_ctx(c));
}

static void g_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct gen *g = rs_conn_ctx(c);

	(void)b, (void)data, (void)len;
	if (g->srv && !rs_timer_is_linked(&g->tick) && !g->done) {
		g->end_ms = rs_worker_now(g->h.w) + RUN_MS;
		generate(g);
	}
}

static void g_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct gen *g = rs_conn_ctx(c);

	(void)err;
	if (why != RS_CLOSE_NORMAL && why != RS_CLOSE_PEER_EOF)
		g->failed = true;
	rs_timer_unlink(rs_worker_timers(g->h.w), &g->tick);
	g->c = NULL;
	__atomic_store_n(&g->closed, true, __ATOMIC_RELEASE);
}

static const struct rs_conn_ops g_ops = {
    .on_data = g_on_data,
    .on_connect = g_on_connect,
    .on_drain = g_on_drain,
    .on_close = g_on_close,
};

static void start_conn(struct rs_worker *w, void *arg)
{
	struct gen *g = arg;

	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&g->addr, sizeof(g->addr), NULL, 0,
					 2000, &g_ops, g, &g->c),
			 0);
}

static void run_model(bool tls)
{
	struct gen *g = calloc(1, sizeof(*g));
	uint8_t buf[8192];
	size_t pos = 0;
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32), rng;
	unsigned reads = 0;
	int lfd, fd;

	char dir[] = "/tmp/rs-engine-sendq-XXXXXX";
	SSL_CTX *cctx = NULL;
	SSL *ssl = NULL;

	assert_non_null(g);
	if (!h_start(&g->h, (struct rs_engine_opts){.buf_count = 16,
						    .send_high_water = 32768,
						    .socket_sndbuf = 4096,
						    .socket_rcvbuf = 4096})) {
		free(g);
		skip();
	}
	print_message("%s seed %llu\n", tls ? "tls" : "plain", (unsigned long long)seed);
	if (tls) {
		struct rs_tls_server_opts so = {.state_dir = dir};
		char err[256];

		assert_non_null(mkdtemp(dir));
		assert_int_equal(rs_tls_server_new(&g->srv, &so, err, sizeof(err)), 0);
	}
	g->rng = seed | 1;
	rng = (seed * 31) | 1;
	fill(g, static_bytes, sizeof(static_bytes));
	g->model = malloc(MODEL_CAP);
	assert_non_null(g->model);
	rs_timer_init(&g->tick, on_tick);
	lfd = h_listen(&g->addr, 4, 4096);
	assert_int_equal(rs_worker_call(g->h.w, start_conn, g), 0);
	fd = h_accept(lfd, 2000);
	assert_true(fd >= 0);
	if (tls) {
		cctx = SSL_CTX_new(TLS_method());
		ssl = SSL_new(cctx);
		SSL_set_fd(ssl, fd);
		assert_int_equal(SSL_connect(ssl), 1);
		assert_int_equal(SSL_write(ssl, "go", 2), 2);
	}
	for (;;) {
		size_t want = 1 + (size_t)(h_rand(&rng) % sizeof(buf));
		ssize_t n = tls ? SSL_read(ssl, buf, (int)want) : read(fd, buf, want);
		size_t have;

		if (tls && n <= 0) {
			assert_int_equal(SSL_get_error(ssl, (int)n), SSL_ERROR_ZERO_RETURN);
			break;
		}
		assert_true(n >= 0);
		if (!n)
			break;
		have = __atomic_load_n(&g->model_len, __ATOMIC_ACQUIRE);
		if (pos + (size_t)n > have)
			fail_msg("received %zu bytes past the %zu the model holds",
				 pos + (size_t)n - have, have);
		if (memcmp(buf, g->model + pos, (size_t)n)) {
			size_t i = 0;

			while (buf[i] == g->model[pos + i])
				i++;
			fail_msg("stream differs from the model at byte %zu (seed %llu)", pos + i,
				 (unsigned long long)seed);
		}
		pos += (size_t)n;
		if (!(++reads % 4))
			usleep((useconds_t)(h_rand(&rng) % 300));
	}
	assert_true(h_wait_flag(&g->closed, 3000));
	assert_false(g->failed);
	assert_int_equal(pos, g->model_len);
	print_message("%zu bytes in %u reads; sends copy %u owned %u static %u buf %u\n", pos,
		      reads, g->sends[0], g->sends[1], g->sends[2], g->sends[3]);
	SSL_free(ssl);
	SSL_CTX_free(cctx);
	close(fd);
	close(lfd);
	h_stop(&g->h);
	if (tls) {
		char cmd[64];

		rs_tls_server_free(g->srv);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		assert_int_equal(system(cmd), 0);
	}
	free(g->model);
	free(g);
}

static void test_model(void **state)
{
	(void)state;
	run_model(false);
}

/* The same through the TLS filter: owner bytes wait in the plain queue,
 * are sealed at the loop's end and leave as wire segments, partially. */
static void test_model_tls(void **state)
{
	(void)state;
	run_model(true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_model),
	    cmocka_unit_test(test_model_tls),
	};

	rs_log_set_level(RS_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
