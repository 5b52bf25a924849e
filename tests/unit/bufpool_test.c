/* tests/unit/bufpool_test.c — the receive-buffer pool on a real io_uring.
 *
 * A socketpair stands in for a connection: data written on one end is
 * received on the other by io_uring with buffer selection from the pool,
 * as the worker does. Skipped (cmocka skip) where io_uring is unavailable,
 * e.g. in a container that forbids it.
 */
#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "core/bufpool.h"

#define BGID 7
#define NBUF 4
#define BUFSZ 4096

struct fx {
	struct io_uring ring;
	struct rs_bufpool pool;
	int sv[2];
};

static int setup(void **st)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	*st = NULL;
	if (io_uring_queue_init(64, &f->ring, 0)) {
		free(f);
		return 0;
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->sv), 0);
	assert_int_equal(rs_bufpool_init(&f->pool, &f->ring, BGID, NBUF, BUFSZ), 0);
	*st = f;
	return 0;
}

static int teardown(void **st)
{
	struct fx *f = *st;

	if (!f)
		return 0;
	rs_bufpool_release(&f->pool);
	io_uring_queue_exit(&f->ring);
	close(f->sv[0]);
	close(f->sv[1]);
	free(f);
	return 0;
}

static struct fx *fixture(void **st)
{
	if (!*st)
		skip(); /* io_uring_queue_init failed: no io_uring here */
	return *st;
}

struct cqe {
	int res;
	int bid; /* -1 when the completion selected no buffer */
	bool more;
};

static struct cqe reap(struct fx *f)
{
	struct io_uring_cqe *c;
	struct cqe out;
	struct __kernel_timespec ts = {.tv_sec = 2};

	assert_int_equal(io_uring_wait_cqe_timeout(&f->ring, &c, &ts), 0);
	out.res = c->res;
	out.bid = (c->flags & IORING_CQE_F_BUFFER) ? (int)(c->flags >> IORING_CQE_BUFFER_SHIFT) : -1;
	out.more = c->flags & IORING_CQE_F_MORE;
	io_uring_cqe_seen(&f->ring, c);
	return out;
}

static bool cqe_ready(struct fx *f)
{
	struct io_uring_cqe *c;

	return io_uring_peek_cqe(&f->ring, &c) == 0;
}

static void arm_multishot(struct fx *f)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);

	io_uring_prep_recv_multishot(sqe, f->sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	assert_int_equal(io_uring_submit(&f->ring), 1);
}

/* One single-shot receive with buffer selection. */
static struct cqe recv_one(struct fx *f)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);

	io_uring_prep_recv(sqe, f->sv[0], NULL, BUFSZ, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	assert_int_equal(io_uring_submit(&f->ring), 1);
	return reap(f);
}

static void put(struct fx *f, const void *data, size_t len)
{
	assert_int_equal(write(f->sv[1], data, len), (ssize_t)len);
}

static void test_multishot_receive_lands_in_pool_buffer(void **st)
{
	struct fx *f = fixture(st);
	struct rs_buf *b1, *b2;
	struct cqe c;

	arm_multishot(f);
	assert_false(cqe_ready(f)); /* idle: no buffer is taken */
	assert_int_equal(f->pool.out, 0);

	put(f, "hello", 5);
	c = reap(f);
	assert_int_equal(c.res, 5);
	assert_true(c.more); /* still armed */
	assert_true(c.bid >= 0 && c.bid < NBUF);
	b1 = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
	assert_int_equal(b1->bid, c.bid);
	assert_int_equal(b1->refs, 1);
	assert_memory_equal(rs_buf_data(&f->pool, b1), "hello", 5);
	assert_int_equal(f->pool.out, 1);

	put(f, "world!", 6);
	c = reap(f);
	assert_int_equal(c.res, 6);
	assert_true(c.bid >= 0 && c.bid < NBUF && c.bid != b1->bid);
	b2 = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
	assert_memory_equal(rs_buf_data(&f->pool, b2), "world!", 6);
	/* the first buffer was not overwritten by the second receive */
	assert_memory_equal(rs_buf_data(&f->pool, b1), "hello", 5);

	rs_buf_unref(&f->pool, b1);
	rs_buf_unref(&f->pool, b2);
	rs_bufpool_flush(&f->pool);
	assert_int_equal(f->pool.out, 0);
	assert_true(rs_bufpool_has_free(&f->pool));
}

static void test_full_buffers_split_a_large_write(void **st)
{
	struct fx *f = fixture(st);
	uint8_t data[3 * BUFSZ];
	size_t got = 0;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + i / 251);
	put(f, data, sizeof(data));
	arm_multishot(f);
	while (got < sizeof(data)) {
		struct cqe c = reap(f);
		struct rs_buf *b;

		assert_true(c.res > 0 && c.res <= BUFSZ);
		b = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
		assert_memory_equal(rs_buf_data(&f->pool, b), data + got, (size_t)c.res);
		got += (size_t)c.res;
		rs_buf_unref(&f->pool, b);
		rs_bufpool_flush(&f->pool);
	}
	assert_int_equal(got, sizeof(data));
	assert_int_equal(f->pool.out, 0);
}

static void test_exhaustion_gives_enobufs_until_flush(void **st)
{
	struct fx *f = fixture(st);
	struct rs_buf *held[NBUF];
	struct cqe c;

	arm_multishot(f);
	for (int i = 0; i < NBUF; i++) {
		put(f, "x", 1);
		c = reap(f);
		assert_int_equal(c.res, 1);
		held[i] = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
	}
	assert_false(rs_bufpool_has_free(&f->pool));
	assert_int_equal(f->pool.out, NBUF);

	/* every buffer is held: the kernel has nowhere to put the next bytes */
	put(f, "y", 1);
	c = reap(f);
	assert_int_equal(c.res, -ENOBUFS);
	assert_int_equal(c.bid, -1);
	assert_false(c.more); /* ENOBUFS ends a multishot receive */

	/* released but not yet published: the kernel still sees none */
	rs_buf_unref(&f->pool, held[2]);
	assert_int_equal(f->pool.out, NBUF - 1);
	assert_true(rs_bufpool_has_free(&f->pool));
	c = recv_one(f);
	assert_int_equal(c.res, -ENOBUFS);

	/* published: the waiting byte arrives, in the recycled buffer */
	rs_bufpool_flush(&f->pool);
	arm_multishot(f);
	c = reap(f);
	assert_int_equal(c.res, 1);
	assert_true(c.more);
	assert_int_equal(c.bid, held[2]->bid);
	held[2] = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
	assert_memory_equal(rs_buf_data(&f->pool, held[2]), "y", 1);
	for (int i = 0; i < NBUF; i++)
		rs_buf_unref(&f->pool, held[i]);
	assert_int_equal(f->pool.out, 0);
}

static void test_extra_references_keep_a_buffer_out(void **st)
{
	struct fx *f = fixture(st);
	struct rs_buf *held[NBUF];
	struct cqe c;

	for (int i = 0; i < NBUF; i++) {
		put(f, "z", 1);
		c = recv_one(f);
		assert_int_equal(c.res, 1);
		held[i] = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
	}
	/* a queued send forwarding buffer 0 takes two more references */
	rs_buf_ref(held[0]);
	rs_buf_ref(held[0]);
	assert_int_equal(held[0]->refs, 3);
	rs_buf_unref(&f->pool, held[0]);
	rs_buf_unref(&f->pool, held[0]);
	rs_bufpool_flush(&f->pool);
	assert_int_equal(f->pool.out, NBUF);
	put(f, "w", 1);
	c = recv_one(f);
	assert_int_equal(c.res, -ENOBUFS); /* still referenced: not recycled */

	rs_buf_unref(&f->pool, held[0]); /* the last reference */
	assert_int_equal(f->pool.out, NBUF - 1);
	rs_bufpool_flush(&f->pool);
	rs_bufpool_flush(&f->pool); /* nothing pending: harmless */
	c = recv_one(f);
	assert_int_equal(c.res, 1);
	assert_int_equal(c.bid, held[0]->bid);
	held[0] = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
	for (int i = 0; i < NBUF; i++)
		rs_buf_unref(&f->pool, held[i]);
	assert_int_equal(f->pool.out, 0);
}

static void test_many_cycles_through_a_small_pool(void **st)
{
	struct fx *f = fixture(st);
	struct rs_buf *prev = NULL;
	char msg[32];

	arm_multishot(f);
	for (int i = 0; i < 2000; i++) {
		struct cqe c;
		struct rs_buf *b;
		int n = snprintf(msg, sizeof(msg), "message %d", i);

		put(f, msg, (size_t)n);
		c = reap(f);
		if (c.res == -ENOBUFS || !c.more) {
			/* never expected while buffers are recycled every turn */
			fail_msg("receive %d ended: res %d", i, c.res);
		}
		assert_int_equal(c.res, n);
		b = rs_bufpool_take(&f->pool, (uint16_t)c.bid);
		assert_memory_equal(rs_buf_data(&f->pool, b), msg, (size_t)n);
		/* keep one buffer across a turn, as a pending send would */
		if (prev)
			rs_buf_unref(&f->pool, prev);
		prev = b;
		rs_bufpool_flush(&f->pool);
		assert_true(f->pool.out <= 2);
	}
	rs_buf_unref(&f->pool, prev);
	assert_int_equal(f->pool.out, 0);
}

static void test_rejects_bad_sizes(void **st)
{
	struct fx *f = fixture(st);
	struct rs_bufpool p;

	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 0, 4096), -EINVAL);
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 3, 4096), -EINVAL);
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 6, 4096), -EINVAL);
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 65536, 4096), -EINVAL);
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 4, 0), -EINVAL);
	rs_bufpool_release(&p); /* after a failed init: harmless */
}

static void test_group_id_in_use_is_refused_cleanly(void **st)
{
	struct fx *f = fixture(st);
	struct rs_bufpool p;
	int ret;

	ret = rs_bufpool_init(&p, &f->ring, BGID, 8, 1024); /* BGID is the fixture's */
	assert_true(ret < 0);
	assert_null(p.bufs);
	assert_null(p.mem);
	assert_null(p.br);
	rs_bufpool_release(&p);

	/* the fixture's pool is unaffected */
	put(f, "ok", 2);
	assert_int_equal(recv_one(f).res, 2);
}

static void test_release_then_reuse_group_id(void **st)
{
	struct fx *f = fixture(st);
	struct io_uring_sqe *sqe;
	struct rs_bufpool p;
	struct cqe c;

	assert_int_equal(rs_bufpool_init(&p, &f->ring, 9, 1, 64), 0); /* a pool of one */
	rs_bufpool_release(&p);
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 9, 2, 64), 0); /* id free again */
	put(f, "0123456789", 10);
	sqe = io_uring_get_sqe(&f->ring);
	io_uring_prep_recv(sqe, f->sv[0], NULL, 64, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 9;
	assert_int_equal(io_uring_submit(&f->ring), 1);
	c = reap(f);
	assert_int_equal(c.res, 10);
	assert_true(c.bid == 0 || c.bid == 1);
	assert_memory_equal(p.mem + (size_t)c.bid * 64, "0123456789", 10);
	rs_bufpool_release(&p);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_multishot_receive_lands_in_pool_buffer),
		T(test_full_buffers_split_a_large_write),
		T(test_exhaustion_gives_enobufs_until_flush),
		T(test_extra_references_keep_a_buffer_out),
		T(test_many_cycles_through_a_small_pool),
		T(test_rejects_bad_sizes),
		T(test_group_id_in_use_is_refused_cleanly),
		T(test_release_then_reuse_group_id),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
