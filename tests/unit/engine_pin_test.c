/* tests/unit/engine_pin_test.c — readers that stop must not hold the
 * receive pool.
 *
 * A relay forwards received pool buffers to its readers with
 * rs_conn_send_buf (no copy). A plain ws:// browser that stops reading kept
 * every forwarded buffer referenced until its queue reached the high-water
 * mark: ~17 of them each, so a few dozen such browsers took the whole pool
 * and no connection on the worker could receive any more. Here a source
 * connection floods 8 readers that never read, with a 64-buffer pool (on
 * the parent commit 8 x 17 pins > 64); a probe connection must still
 * receive afterwards.
 */
#include "tests/unit/engine_harness.h"

#include <fcntl.h>
#include <signal.h>

#define NSINK 8
#define POOL  64

struct pfx {
	struct harness h;
	struct sockaddr_in a_src, a_sink, a_probe; /* one listener each */
	struct rs_conn *src, *probe, *sink[NSINK];
	unsigned nconn, nconnected;
	size_t forwarded;
	bool all_up, all_full, probe_got;
};

static void x_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	(void)c, (void)why, (void)err;
}

static void x_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	(void)c, (void)b, (void)data, (void)len;
}

static void x_on_connect(struct rs_conn *c, int res)
{
	struct pfx *f = rs_conn_ctx(c);

	assert_int_equal(res, 0);
	if (++f->nconnected == f->nconn)
		__atomic_store_n(&f->all_up, true, __ATOMIC_RELEASE);
}

static const struct rs_conn_ops sink_ops = {
    .on_data = x_on_data,
    .on_connect = x_on_connect,
    .on_close = x_on_close,
};

/* The source forwards each receive to the first reader with room. */
static void src_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct pfx *f = rs_conn_ctx(c);

	for (unsigned i = 0; i < NSINK; i++) {
		if (rs_conn_congested(f->sink[i]))
			continue;
		assert_int_equal(rs_conn_send_buf(f->sink[i], b, data, len), 0);
		f->forwarded += len;
		return;
	}
	rs_conn_pause(c);
	__atomic_store_n(&f->all_full, true, __ATOMIC_RELEASE);
}

static const struct rs_conn_ops src_ops = {
    .on_data = src_on_data,
    .on_connect = x_on_connect,
    .on_close = x_on_close,
};

static void probe_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct pfx *f = rs_conn_ctx(c);

	(void)b, (void)data, (void)len;
	__atomic_store_n(&f->probe_got, true, __ATOMIC_RELEASE);
}

static const struct rs_conn_ops probe_ops = {
    .on_data = probe_on_data,
    .on_connect = x_on_connect,
    .on_close = x_on_close,
};

static void open_all(struct rs_worker *w, void *arg)
{
	struct pfx *f = arg;
	socklen_t len = sizeof(struct sockaddr_in);

	f->nconn = NSINK + 2;
	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->a_src, len, NULL, 0, 2000,
					 &src_ops, f, &f->src),
			 0);
	for (unsigned i = 0; i < NSINK; i++)
		assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->a_sink, len, NULL, 0,
						 2000, &sink_ops, f, &f->sink[i]),
				 0);
	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->a_probe, len, NULL, 0, 2000,
					 &probe_ops, f, &f->probe),
			 0);
}

static void test_stalled_readers(void **state)
{
	struct pfx *f = calloc(1, sizeof(*f));
	int lfd[3], fds[NSINK + 2];
	uint8_t chunk[16384];
	uint64_t end;

	(void)state;
	assert_non_null(f);
	if (!h_start(&f->h, (struct rs_engine_opts){.buf_count = POOL, .socket_sndbuf = 4096})) {
		free(f);
		skip();
	}
	lfd[0] = h_listen(&f->a_src, 4, 0);
	lfd[1] = h_listen(&f->a_sink, 16, 4096);
	lfd[2] = h_listen(&f->a_probe, 4, 0);
	assert_int_equal(rs_worker_call(f->h.w, open_all, f), 0);
	for (unsigned i = 0; i < NSINK + 2; i++) {
		fds[i] = h_accept(lfd[i == 0 ? 0 : i <= NSINK ? 1 : 2], 2000);
		assert_true(fds[i] >= 0);
	}
	assert_true(h_wait_flag(&f->all_up, 2000));
	/* Flood the source until every reader is congested (or the pool ran
	 * dry and the source cannot receive any more). */
	memset(chunk, 'z', sizeof(chunk));
	fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
	end = h_now_ms() + 3000;
	while (!__atomic_load_n(&f->all_full, __ATOMIC_ACQUIRE) && h_now_ms() < end) {
		if (write(fds[0], chunk, sizeof(chunk)) < 0)
			usleep(2000);
	}
	/* Another connection on the worker must still receive. */
	assert_int_equal(write(fds[NSINK + 1], "probe", 5), 5);
	if (!h_wait_flag(&f->probe_got, 1000))
		fail_msg("no receive after %u stalled readers took the pool (%zu bytes forwarded)",
			 NSINK, f->forwarded);
	assert_true(f->all_full);
	for (unsigned i = 0; i < NSINK + 2; i++)
		close(fds[i]);
	for (unsigned i = 0; i < 3; i++)
		close(lfd[i]);
	h_stop(&f->h);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stalled_readers),
	};

	rs_log_set_level(RS_LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
