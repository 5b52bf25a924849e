/* core/uring_compat.h — kernel io_uring constants and SQE helpers that
 * Debian 12's liburing 2.3 headers lack. Each is guarded so a newer liburing
 * wins; every use is gated by a runtime probe (see core/worker.c). */
#ifndef RS_URING_COMPAT_H
#define RS_URING_COMPAT_H

#include <liburing.h>

#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4) /* 6.10 */
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14) /* 6.10 */
#endif
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2 /* 6.12 */
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4) /* 6.12 */
#endif
#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16) /* 6.6 */
#endif

/* io_uring socket commands (6.7): IORING_OP_URING_CMD on a socket. */
#define RS_SOCKET_URING_OP_GETSOCKOPT 2
#define RS_SOCKET_URING_OP_SETSOCKOPT 3

/* The sqe fields for socket commands post-date 2.3's struct layout; they
 * overlay addr (level, optname), addr3 (optval) and file_index (optlen). */
_Static_assert(sizeof(struct io_uring_sqe) == 64, "io_uring_sqe layout");

static inline void rs_uring_prep_cmd_sock(struct io_uring_sqe *sqe, int cmd_op, int fd, int level,
					  int optname, void *optval, int optlen)
{
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, NULL, 0, 0);
	sqe->cmd_op = (__u32)cmd_op;
	sqe->addr = (__u64)(uint32_t)level | ((__u64)(uint32_t)optname << 32);
	memcpy((char *)sqe + 48, &(__u64){(__u64)(uintptr_t)optval}, 8);
	memcpy((char *)sqe + 44, &(__u32){(__u32)optlen}, 4);
}

#endif
