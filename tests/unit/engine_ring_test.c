/* tests/unit/engine_ring_test.c — linked operations on a tiny ring.
 *
 * With an 8-entry submission queue, one pass over the completions prepares
 * far more SQEs than fit, and the engine submits in the middle of the pass.
 * A linked group (SHUTDOWN -> CLOSE, CONNECT -> LINK_TIMEOUT) cut by such a
 * submission loses its link: the close or the timeout never applies. Every
 * connection below connects, then in its on_connect pauses, closes and
 * opens a connection to a listener whose accept queue is full (the SYN is
 * dropped, so only the linked timeout can end that connect): 5 SQEs per
 * completion, so groups straddle the queue's end. Every connection must be
 * freed and every hanging connect must time out.
 */
#include "tests/unit/engine_harness.h"

#define CONNECT_TIMEOUT_MS 300

struct ring_fx {
	struct harness h;
	struct sockaddr_in a, b; /* a accepts (backlog), b's queue is full */
	unsigned n, a_ok, a_closed, b_timedout, b_other, b_closed;
	bool all_done;
};

static void check_done(struct ring_fx *f)
{
	if (f->a_closed == f->n && f->b_closed == f->n)
		__atomic_store_n(&f->all_done, true, __ATOMIC_RELEASE);
}

static void b_on_connect(struct rs_conn *c, int res)
{
	struct ring_fx *f = rs_conn_ctx(c);

	if (res == -ETIMEDOUT)
		f->b_timedout++;
	else
		f->b_other++;
	rs_conn_close(c, RS_CLOSE_ERROR, res < 0 ? -res : 0);
}

static void b_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct ring_fx *f = rs_conn_ctx(c);

	(void)why, (void)err;
	f->b_closed++;
	check_done(f);
}

static const struct rs_conn_ops b_ops = {
    .on_connect = b_on_connect,
    .on_close = b_on_close,
};

static void a_on_connect(struct rs_conn *c, int res)
{
	struct ring_fx *f = rs_conn_ctx(c);
	struct rs_conn *nc;

	if (res) {
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	f->a_ok++;
	rs_conn_pause(c);
	if (rs_conn_connect(rs_conn_worker(c), (struct sockaddr *)&f->b, sizeof(f->b), NULL, 0,
			    CONNECT_TIMEOUT_MS, &b_ops, f, &nc))
		f->b_other++, f->b_closed++;
	rs_conn_close(c, RS_CLOSE_NORMAL, 0);
}

static void a_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	(void)c, (void)b, (void)data, (void)len;
}

static void a_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct ring_fx *f = rs_conn_ctx(c);

	(void)why, (void)err;
	f->a_closed++;
	check_done(f);
}

static const struct rs_conn_ops a_ops = {
    .on_data = a_on_data,
    .on_connect = a_on_connect,
    .on_close = a_on_close,
};

static void open_wave(struct rs_worker *w, void *arg)
{
	struct ring_fx *f = arg;
	struct rs_conn *c;

	for (unsigned i = 0; i < f->n; i++)
		if (rs_conn_connect(w, (struct sockaddr *)&f->a, sizeof(f->a), NULL, 0, 2000,
				    &a_ops, f, &c))
			f->a_closed++, f->b_closed++;
}

static void test_linked_groups(void **state)
{
	static const unsigned waves[] = {3, 5, 7, 11, 13, 30};
	struct ring_fx *f = calloc(1, sizeof(*f));
	int la, lb, fill[2];

	(void)state;
	assert_non_null(f);
	if (!h_start(&f->h, (struct rs_engine_opts){.ring_entries = 8})) {
		free(f);
		skip();
	}
	la = h_listen(&f->a, 256, 0);
	lb = h_listen(&f->b, 0, 0);
	/* Fill b's accept queue: later SYNs are dropped and connects hang. */
	for (int i = 0; i < 2; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		connect(fill[i], (struct sockaddr *)&f->b, sizeof(f->b));
	}
	usleep(50000);
	for (size_t i = 0; i < RS_ARRAY_SIZE(waves); i++) {
		struct rs_engine_stats st;

		f->n = waves[i];
		f->a_ok = f->a_closed = f->b_timedout = f->b_other = f->b_closed = 0;
		f->all_done = false;
		assert_int_equal(rs_worker_call(f->h.w, open_wave, f), 0);
		if (!h_wait_flag(&f->all_done, 5000))
			fail_msg("wave of %u: %u connected, %u closed; %u connects timed out, %u "
				 "other, %u closed",
				 f->n, f->a_ok, f->a_closed, f->b_timedout, f->b_other,
				 f->b_closed);
		assert_int_equal(f->a_ok, f->n);
		assert_int_equal(f->b_timedout, f->n);
		usleep(20000);
		rs_engine_stats(f->h.e, &st);
		assert_int_equal(st.conns_live, 0);
	}
	h_stop(&f->h);
	close(fill[0]);
	close(fill[1]);
	close(la);
	close(lb);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_linked_groups),
	};

	rs_log_set_level(RS_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
