#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "core/bufpool.h"

struct fx {
	struct io_uring ring;
	struct rs_bufpool pool;
	int sv[2];
};

static int setup(void **st)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (io_uring_queue_init(64, &f->ring, 0)) {
		free(f);
		*st = NULL;
		return 0;
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->sv), 0);
	assert_int_equal(rs_bufpool_init(&f->pool, &f->ring, 7, 4, 4096), 0);
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

/* One single-shot receive with buffer selection; returns res, sets *bid. */
static int recv_one(struct fx *f, int *bid)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);
	struct io_uring_cqe *cqe;
	int res;

	io_uring_prep_recv(sqe, f->sv[0], NULL, 4096, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 7;
	io_uring_submit(&f->ring);
	assert_int_equal(io_uring_wait_cqe(&f->ring, &cqe), 0);
	res = cqe->res;
	*bid = (cqe->flags & IORING_CQE_F_BUFFER) ? (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) : -1;
	io_uring_cqe_seen(&f->ring, cqe);
	return res;
}

static void test_receive_lands_in_pool_buffer(void **st)
{
	struct fx *f = *st;
	struct rs_buf *b;
	int bid;

	if (!f)
		skip();
	assert_int_equal(write(f->sv[1], "hello", 5), 5);
	assert_int_equal(recv_one(f, &bid), 5);
	assert_true(bid >= 0 && bid < 4);
	b = rs_bufpool_take(&f->pool, (uint16_t)bid);
	assert_memory_equal(rs_buf_data(&f->pool, b), "hello", 5);
	assert_int_equal(f->pool.out, 1);
	rs_buf_unref(&f->pool, b);
	assert_int_equal(f->pool.out, 0);
}

static void test_exhaustion_enobufs_and_recycling(void **st)
{
	struct fx *f = *st;
	struct rs_buf *held[4];
	int bid;

	if (!f)
		skip();
	for (int i = 0; i < 4; i++) {
		assert_int_equal(write(f->sv[1], "x", 1), 1);
		assert_int_equal(recv_one(f, &bid), 1);
		held[i] = rs_bufpool_take(&f->pool, (uint16_t)bid);
	}
	assert_false(rs_bufpool_has_free(&f->pool));
	assert_int_equal(write(f->sv[1], "y", 1), 1);
	assert_int_equal(recv_one(f, &bid), -ENOBUFS);
	/* an extra reference keeps a buffer out after the first unref */
	rs_buf_ref(held[0]);
	rs_buf_unref(&f->pool, held[0]);
	assert_int_equal(f->pool.out, 4);
	rs_buf_unref(&f->pool, held[0]);
	assert_int_equal(f->pool.out, 3);
	rs_bufpool_flush(&f->pool);
	assert_int_equal(recv_one(f, &bid), 1);
	assert_int_equal(bid, held[0]->bid);
	rs_bufpool_take(&f->pool, (uint16_t)bid);
	for (int i = 0; i < 4; i++)
		rs_buf_unref(&f->pool, held[i]);
	assert_int_equal(f->pool.out, 0);
}

static void test_rejects_bad_sizes(void **st)
{
	struct fx *f = *st;
	struct rs_bufpool p;

	if (!f)
		skip();
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 3, 4096), -EINVAL);
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 65536, 4096), -EINVAL);
	assert_int_equal(rs_bufpool_init(&p, &f->ring, 8, 4, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_receive_lands_in_pool_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exhaustion_enobufs_and_recycling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejects_bad_sizes, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
