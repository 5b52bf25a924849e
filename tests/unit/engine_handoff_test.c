/* tests/unit/engine_handoff_test.c — moving an accepted connection to another
 * worker (rs_conn_hand_off: IORING_OP_MSG_RING with IORING_MSG_SEND_FD).
 *
 * A two-worker engine listens; each accepted connection is handed at once to
 * the other worker, which echoes every byte prefixed with its worker id. The
 * client sends before the hand-off can have finished, so some bytes are read
 * by the accepting worker and must be carried, in order, to the adopter.
 * The accepting worker's struct ends without its on_close and without a
 * shutdown: the socket stays open for the adopter.
 */
#include "tests/unit/engine_harness.h"

#define CONNS 8

struct ho_fx {
	struct rs_engine *e;
	unsigned accepted[2], adopted[2], failed, first_closed, echo_closed;
	unsigned carried;
};

static struct ho_fx fx;

static void echo_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	uint8_t id = (uint8_t)('0' + rs_worker_id(rs_conn_worker(c)));

	(void)b;
	if (rs_conn_send(c, &id, 1) || rs_conn_send(c, data, len))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
}

static void echo_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	(void)c, (void)why, (void)err;
	__atomic_fetch_add(&fx.echo_closed, 1, __ATOMIC_RELAXED);
}

static const struct rs_conn_ops echo_ops = {
    .on_data = echo_on_data,
    .on_close = echo_on_close,
};

static void first_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	(void)c, (void)why, (void)err;
	__atomic_fetch_add(&fx.first_closed, 1, __ATOMIC_RELAXED);
}

static const struct rs_conn_ops first_ops = {.on_close = first_on_close};

static void adopt(struct rs_conn *nc, const uint8_t *carry, size_t len, void *arg)
{
	(void)arg;
	assert_non_null(nc);
	__atomic_fetch_add(&fx.adopted[rs_worker_id(rs_conn_worker(nc))], 1, __ATOMIC_RELAXED);
	rs_conn_set_ops(nc, &echo_ops, NULL);
	if (len) {
		__atomic_fetch_add(&fx.carried, 1, __ATOMIC_RELAXED);
		echo_on_data(nc, NULL, (uint8_t *)carry, len);
	}
}

static void on_fail(struct rs_worker *from, int err, void *arg)
{
	(void)from, (void)err, (void)arg;
	__atomic_fetch_add(&fx.failed, 1, __ATOMIC_RELAXED);
}

static void on_accept(struct rs_conn *c, void *arg)
{
	struct rs_worker *w = rs_conn_worker(c);
	unsigned id = rs_worker_id(w);

	(void)arg;
	__atomic_fetch_add(&fx.accepted[id], 1, __ATOMIC_RELAXED);
	rs_conn_set_ops(c, &first_ops, NULL);
	assert_int_equal(rs_conn_hand_off(c, rs_engine_worker(fx.e, 1 - id), adopt, on_fail, NULL), 0);
}

static int free_port(void)
{
	struct sockaddr_in a;
	int fd = h_listen(&a, 1, 0);

	close(fd);
	return ntohs(a.sin_port);
}

static void read_exact(int fd, char *out, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		assert_int_equal(poll(&p, 1, 3000), 1);
		r = read(fd, out + got, n - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

static void test_hand_off_moves_the_socket_and_carries_early_bytes(void **state)
{
	struct rs_engine_opts o = {.workers = 2, .max_conns = 64};
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char err[256] = "";
	int fds[CONNS];
	struct rs_engine_stats st;

	(void)state;
	memset(&fx, 0, sizeof(fx));
	fx.e = rs_engine_new(&o, err, sizeof(err));
	assert_non_null(fx.e);
	a.sin_port = htons((uint16_t)free_port());
	assert_int_equal(rs_engine_listen(fx.e, (struct sockaddr *)&a, sizeof(a), on_accept, NULL),
			 0);
	if (rs_engine_start(fx.e, err, sizeof(err))) {
		print_message("engine did not start (%s): skipped\n", err);
		rs_engine_free(fx.e);
		skip();
	}
	for (int i = 0; i < CONNS; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
		/* At once: the accepting worker may read this before it lets go. */
		assert_int_equal(write(fds[i], "early", 5), 5);
	}
	for (int i = 0; i < CONNS; i++) {
		char buf[64], text[64], tag = 0;
		size_t got = 0, n = 0;

		assert_int_equal(write(fds[i], "ping", 4), 4);
		/* Echoes come tagged with the adopter's id, "early" maybe in parts
		 * (carried, then read by the adopter): collect until "ping". */
		while (got < sizeof(buf) - 1) {
			read_exact(fds[i], buf + got, 1);
			got++;
			buf[got] = 0;
			if (got >= 4 && !memcmp(buf + got - 4, "ping", 4))
				break;
		}
		for (size_t k = 0; k < got; k++) {
			if (buf[k] == '0' || buf[k] == '1') {
				assert_true(!tag || tag == buf[k]); /* one worker only */
				tag = buf[k];
			} else {
				text[n++] = buf[k];
			}
		}
		text[n] = 0;
		assert_string_equal(text, "earlyping");
		assert_true(buf[0] == tag);
	}
	assert_int_equal(fx.accepted[0] + fx.accepted[1], CONNS);
	assert_int_equal(fx.adopted[0], fx.accepted[1]);
	assert_int_equal(fx.adopted[1], fx.accepted[0]);
	assert_int_equal(fx.failed, 0);
	assert_int_equal(fx.first_closed, 0); /* given up, not closed */
	for (int i = 0; i < CONNS; i++)
		close(fds[i]);
	for (int t = 0; t < 200 && __atomic_load_n(&fx.echo_closed, __ATOMIC_RELAXED) < CONNS; t++)
		usleep(10000);
	assert_int_equal(fx.echo_closed, CONNS);
	rs_engine_stats(fx.e, &st);
	assert_int_equal(st.conns_live, 0);
	rs_engine_stop(fx.e, 200);
	rs_engine_free(fx.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hand_off_moves_the_socket_and_carries_early_bytes),
	};

	rs_log_set_level(RS_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
