/* tests/unit/engine_filter_test.c — transport filters waiting for buffers.
 *
 * A pass-through filter decodes into the pool's user buffers as TLS does.
 * The test holds every user buffer, so the filter must keep its input and
 * wait (rs_conn_filter_wait); when the buffers come back, on_resume hands
 * the input to the owner, which echoes it. The echo is queued from inside
 * on_resume, after the worker's flush of dirty connections: it must still
 * go out before the worker sleeps, not wait for an unrelated event.
 */
#include "tests/unit/engine_harness.h"

#define HOG_MAX 4096

struct ffx {
	struct harness h;
	struct sockaddr_in addr;
	struct rs_conn *c;
	struct rs_buf *hog[HOG_MAX];
	unsigned nhog;
	uint8_t *held;
	size_t held_len;
	unsigned waits, resumes;
	bool connected, closed;
	bool framed;	     /* pf_write frames each call: [len][tail_len][data][tail] */
	const uint8_t *big[2]; /* test_seal_calls: its large segments ... */
	const uint8_t *got[8]; /* ... and the data pointer of each write call */
	unsigned calls;
};

static void deliver(struct ffx *f, struct rs_conn *c, const uint8_t *data, size_t len)
{
	struct rs_bufpool *pool = rs_worker_bufpool(rs_conn_worker(c));

	while (len) {
		struct rs_buf *ob = rs_bufpool_get(pool);
		size_t n = RS_MIN(len, (size_t)pool->size);
		uint8_t *p;

		if (!ob) {
			p = realloc(f->held, f->held_len + len);
			assert_non_null(p);
			memcpy(p + f->held_len, data, len);
			f->held = p;
			f->held_len += len;
			f->waits++;
			rs_conn_filter_wait(c);
			return;
		}
		memcpy(rs_buf_data(pool, ob), data, n);
		rs_conn_deliver(c, ob, rs_buf_data(pool, ob), n);
		rs_buf_unref(pool, ob);
		data += n;
		len -= n;
	}
}

static void pf_on_recv(struct rs_conn *c, void *fctx, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct ffx *f = fctx;

	(void)b;
	if (f->held) {
		uint8_t *p = realloc(f->held, f->held_len + len);

		assert_non_null(p);
		memcpy(p + f->held_len, data, len);
		f->held = p;
		f->held_len += len;
		return;
	}
	deliver(f, c, data, len);
}

static int pf_write(struct rs_conn *c, void *fctx, const uint8_t *data, size_t len,
		    const uint8_t *tail, size_t tail_len)
{
	struct ffx *f = fctx;
	uint32_t lens[2] = {(uint32_t)len, (uint32_t)tail_len};

	if (f->framed) {
		if (f->calls < RS_ARRAY_SIZE(f->got))
			f->got[f->calls] = data;
		f->calls++;
		if (rs_conn_send_wire(c, lens, sizeof(lens)))
			return -ENOMEM;
	}
	return rs_conn_send_wire(c, data, len) ?: rs_conn_send_wire(c, tail, tail_len);
}

static void pf_on_resume(struct rs_conn *c, void *fctx)
{
	struct ffx *f = fctx;
	uint8_t *held = f->held;
	size_t n = f->held_len;

	f->resumes++;
	f->held = NULL;
	f->held_len = 0;
	deliver(f, c, held, n);
	free(held);
}

static void pf_release(void *fctx)
{
	struct ffx *f = fctx;

	free(f->held);
	f->held = NULL;
}

static const struct rs_conn_filter pass_filter = {
    .on_recv = pf_on_recv,
    .write = pf_write,
    .on_resume = pf_on_resume,
    .release = pf_release,
};

static void o_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	(void)b;
	if (rs_conn_send(c, data, len))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
}

static void o_on_connect(struct rs_conn *c, int res)
{
	struct ffx *f = rs_conn_ctx(c);

	if (res) {
		rs_conn_close(c, RS_CLOSE_ERROR, -res);
		return;
	}
	assert_int_equal(rs_conn_set_filter(c, &pass_filter, f), 0);
	rs_conn_filter_ready(c); /* nothing to negotiate */
	__atomic_store_n(&f->connected, true, __ATOMIC_RELEASE);
}

static void o_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct ffx *f = rs_conn_ctx(c);

	(void)why, (void)err;
	f->c = NULL;
	__atomic_store_n(&f->closed, true, __ATOMIC_RELEASE);
}

static const struct rs_conn_ops o_ops = {
    .on_data = o_on_data,
    .on_connect = o_on_connect,
    .on_close = o_on_close,
};

static void start_conn(struct rs_worker *w, void *arg)
{
	struct ffx *f = arg;

	assert_int_equal(rs_conn_connect(w, (struct sockaddr *)&f->addr, sizeof(f->addr), NULL, 0,
					 2000, &o_ops, f, &f->c),
			 0);
}

/* Take every free user buffer (what many slow readers would pin). */
static void hog(struct rs_worker *w, void *arg)
{
	struct ffx *f = arg;
	struct rs_bufpool *pool = rs_worker_bufpool(w);
	struct rs_buf *b;

	while (f->nhog < HOG_MAX && (b = rs_bufpool_get(pool)))
		f->hog[f->nhog++] = b;
}

static void unhog(struct rs_worker *w, void *arg)
{
	struct ffx *f = arg;

	while (f->nhog)
		rs_buf_unref(rs_worker_bufpool(w), f->hog[--f->nhog]);
}

static bool read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
	uint8_t *p = buf;

	while (len) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pf, 1, timeout_ms) != 1)
			return false;
		n = read(fd, p, len);
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static struct ffx *ffx_start(int *lfd, int *fd)
{
	struct ffx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	if (!h_start(&f->h, (struct rs_engine_opts){.buf_count = 16})) {
		free(f);
		return NULL;
	}
	*lfd = h_listen(&f->addr, 4, 0);
	assert_int_equal(rs_worker_call(f->h.w, start_conn, f), 0);
	*fd = h_accept(*lfd, 2000);
	assert_true(*fd >= 0);
	assert_true(h_wait_flag(&f->connected, 2000));
	return f;
}

static void ffx_stop(struct ffx *f, int lfd, int fd)
{
	assert_int_equal(rs_worker_call(f->h.w, unhog, f), 0);
	close(fd);
	close(lfd);
	h_stop(&f->h);
	free(f);
}

static void test_resume_flushes(void **state)
{
	uint8_t got[4];
	int lfd, fd;
	struct ffx *f = ffx_start(&lfd, &fd);

	(void)state;
	if (!f)
		skip();
	/* Works while buffers are free. */
	assert_int_equal(write(fd, "ping", 4), 4);
	assert_true(read_exact(fd, got, 4, 2000));
	assert_memory_equal(got, "ping", 4);
	/* No user buffer: the filter keeps the input and waits. */
	assert_int_equal(rs_worker_call(f->h.w, hog, f), 0);
	assert_int_equal(write(fd, "pong", 4), 4);
	assert_false(read_exact(fd, got, 4, 200));
	assert_true(f->waits > 0);
	/* Buffers back: on_resume delivers, the owner echoes from inside it,
	 * and the echo must go out without any further event. */
	assert_int_equal(rs_worker_call(f->h.w, unhog, f), 0);
	if (!read_exact(fd, got, 4, 1000))
		fail_msg("the echo queued from on_resume was not sent (resumes %u)", f->resumes);
	assert_memory_equal(got, "pong", 4);
	ffx_stop(f, lfd, fd);
}

/* What the owner queues in one go, as ws_send_frame does for two frames whose
 * payloads are large (the second followed by a short message). */
static void queue_frames(struct rs_worker *w, void *arg)
{
	struct ffx *f = arg;
	uint8_t *p1 = malloc(16384), *p2 = malloc(10000), small[100];

	(void)w;
	assert_non_null(p1);
	assert_non_null(p2);
	memset(p1, 'a', 16384);
	memset(p2, 'b', 10000);
	memset(small, 'c', sizeof(small));
	f->big[0] = p1, f->big[1] = p2;
	f->framed = true;
	assert_int_equal(rs_conn_send(f->c, "HEADER-1", 8), 0);
	assert_int_equal(rs_conn_send_owned(f->c, p1, 16384), 0);
	assert_int_equal(rs_conn_send(f->c, "HEADER-2", 8), 0);
	assert_int_equal(rs_conn_send_owned(f->c, p2, 10000), 0);
	assert_int_equal(rs_conn_send(f->c, "HEADER-3", 8), 0);
	assert_int_equal(rs_conn_send(f->c, small, sizeof(small)), 0);
}

/* The calls the filter gets for a plain queue: small segments gathered, a
 * large one passed where it lies (never copied), the small ones after it as
 * its tail where its last record has room, never beyond a record. */
static void test_seal_calls(void **state)
{
	static const struct {
		uint32_t len, tail_len;
		char data, tail;
	} want[] = {
	    {8, 0, 'H', 0},	  /* HEADER-1, before a large segment: alone */
	    {16384, 0, 'a', 0},	  /* a full record: no room for HEADER-2 */
	    {8, 0, 'H', 0},	  /* HEADER-2 */
	    {10000, 108, 'b', 'H'}, /* HEADER-3 and the short message ride along */
	};
	uint8_t buf[16384];
	int lfd, fd;
	struct ffx *f = ffx_start(&lfd, &fd);

	(void)state;
	if (!f)
		skip();
	assert_int_equal(rs_worker_call(f->h.w, queue_frames, f), 0);
	for (size_t i = 0; i < RS_ARRAY_SIZE(want); i++) {
		uint32_t lens[2];

		assert_true(read_exact(fd, lens, sizeof(lens), 2000));
		assert_int_equal(lens[0], want[i].len);
		assert_int_equal(lens[1], want[i].tail_len);
		assert_true(read_exact(fd, buf, lens[0], 2000));
		assert_int_equal(buf[0], want[i].data);
		assert_true(read_exact(fd, buf, lens[1], 2000));
		if (lens[1]) {
			assert_memory_equal(buf, "HEADER-3", 8);
			assert_int_equal(buf[8], 'c');
			assert_int_equal(buf[lens[1] - 1], 'c');
		}
	}
	assert_false(read_exact(fd, buf, 1, 100));
	assert_int_equal(f->calls, RS_ARRAY_SIZE(want));
	assert_ptr_equal(f->got[1], f->big[0]);
	assert_ptr_equal(f->got[3], f->big[1]);
	ffx_stop(f, lfd, fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resume_flushes),
	    cmocka_unit_test(test_seal_calls),
	};

	rs_log_set_level(RS_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
