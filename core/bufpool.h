/* core/bufpool.h — a worker's fixed receive-buffer pool.
 *
 * <count> buffers of <size> bytes, registered with the worker's io_uring as a
 * provided-buffer ring: multishot receives pick a buffer only when data
 * arrives, so an idle connection holds no userspace buffer at all. A buffer
 * handed to a receive callback carries one reference; anyone who keeps the
 * bytes (a queued send forwarding them) takes another. The buffer returns to
 * the ring when the last reference is dropped. Single-threaded (one worker).
 *
 * Beside the ring the pool keeps as many buffers again that the kernel never
 * sees ("user" buffers, bids count..2*count-1): a transport filter (TLS)
 * decrypts into them, so plaintext travels through the same refcounted
 * buffers as received bytes. They are reserved like the rest and cost memory
 * only once touched.
 */
#ifndef RS_BUFPOOL_H
#define RS_BUFPOOL_H

#include "core/common.h"

struct io_uring;
struct io_uring_buf_ring;

struct rs_buf {
	uint16_t bid;
	uint16_t refs;
};

struct rs_bufpool {
	struct io_uring *ring;
	struct io_uring_buf_ring *br;
	uint8_t *mem;
	struct rs_buf *bufs;
	uint32_t size, count, mask;
	uint16_t bgid;
	uint32_t pending_adv; /* buffers added since the last ring advance */
	uint32_t out;         /* buffers currently held by the application */
	uint64_t enobufs;     /* times a receive found the ring empty */
	uint16_t *user_free;  /* stack of free user buffer ids */
	uint32_t user_nfree;
	uint64_t user_exhausted; /* rs_bufpool_get() found none free */
};

/* Allocate and register the pool. <count> must be a power of two <= 32768.
 * 0 or -errno. */
int rs_bufpool_init(struct rs_bufpool *p, struct io_uring *ring, uint16_t bgid, uint32_t count,
		    uint32_t size);
void rs_bufpool_release(struct rs_bufpool *p);

/* The buffer a completion selected (bid from the CQE flags); it now carries
 * one reference owned by the caller. */
struct rs_buf *rs_bufpool_take(struct rs_bufpool *p, uint16_t bid);

/* A free user buffer with one reference, or NULL when all are held. */
struct rs_buf *rs_bufpool_get(struct rs_bufpool *p);

static inline uint8_t *rs_buf_data(const struct rs_bufpool *p, const struct rs_buf *b)
{
	return p->mem + (size_t)b->bid * p->size;
}

static inline void rs_buf_ref(struct rs_buf *b)
{
	b->refs++;
}

/* Drop a reference; at zero the buffer goes back to the kernel (published at
 * the next rs_bufpool_flush). */
void rs_buf_unref(struct rs_bufpool *p, struct rs_buf *b);

/* Publish recycled buffers to the kernel; once per event-loop iteration. */
void rs_bufpool_flush(struct rs_bufpool *p);

static inline bool rs_bufpool_has_free(const struct rs_bufpool *p)
{
	return p->out < p->count;
}

static inline bool rs_bufpool_has_user_free(const struct rs_bufpool *p)
{
	return p->user_nfree > 0;
}

#endif
