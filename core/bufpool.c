#include "core/common.h"

#include <sys/mman.h>

#include <liburing.h>

#include "core/bufpool.h"

int rs_bufpool_init(struct rs_bufpool *p, struct io_uring *ring, uint16_t bgid, uint32_t count,
		    uint32_t size)
{
	struct io_uring_buf_reg reg = {0};
	size_t ring_bytes = (size_t)count * sizeof(struct io_uring_buf);
	int ret;

	memset(p, 0, sizeof(*p));
	if (!count || (count & (count - 1)) || count > 32768 || !size)
		return -EINVAL;
	p->ring = ring;
	p->bgid = bgid;
	p->count = count;
	p->size = size;
	p->mask = (uint32_t)io_uring_buf_ring_mask(count);
	p->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (p->br == MAP_FAILED) {
		p->br = NULL;
		return -ENOMEM;
	}
	/* The buffer memory is reserved, not committed: pages are touched only
	 * when the kernel first fills a buffer. */
	p->mem = mmap(NULL, 2 * (size_t)count * size, PROT_READ | PROT_WRITE,
		      MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
	if (p->mem == MAP_FAILED) {
		p->mem = NULL;
		ret = -ENOMEM;
		goto out_unmap_ring;
	}
	p->bufs = calloc(2 * (size_t)count, sizeof(*p->bufs));
	p->user_free = calloc(count, sizeof(*p->user_free));
	if (!p->bufs || !p->user_free) {
		ret = -ENOMEM;
		goto out_unmap_mem;
	}
	io_uring_buf_ring_init(p->br);
	reg.ring_addr = (unsigned long)p->br;
	reg.ring_entries = count;
	reg.bgid = bgid;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret)
		goto out_free_bufs;
	for (uint32_t i = 0; i < count; i++) {
		p->bufs[i].bid = (uint16_t)i;
		io_uring_buf_ring_add(p->br, p->mem + (size_t)i * size, size, (unsigned short)i,
				      (int)p->mask, (int)i);
	}
	io_uring_buf_ring_advance(p->br, (int)count);
	for (uint32_t i = 0; i < count; i++) {
		p->bufs[count + i].bid = (uint16_t)(count + i);
		p->user_free[i] = (uint16_t)(2 * count - 1 - i);
	}
	p->user_nfree = count;
	return 0;

out_free_bufs:
	free(p->bufs);
	free(p->user_free);
	p->bufs = NULL;
	p->user_free = NULL;
out_unmap_mem:
	munmap(p->mem, 2 * (size_t)count * size);
	p->mem = NULL;
out_unmap_ring:
	munmap(p->br, ring_bytes);
	p->br = NULL;
	return ret;
}

void rs_bufpool_release(struct rs_bufpool *p)
{
	if (p->br) {
		io_uring_unregister_buf_ring(p->ring, p->bgid);
		munmap(p->br, (size_t)p->count * sizeof(struct io_uring_buf));
	}
	if (p->mem)
		munmap(p->mem, 2 * (size_t)p->count * p->size);
	free(p->bufs);
	free(p->user_free);
	memset(p, 0, sizeof(*p));
}

struct rs_buf *rs_bufpool_take(struct rs_bufpool *p, uint16_t bid)
{
	struct rs_buf *b = &p->bufs[bid & p->mask];

	b->refs = 1;
	p->out++;
	return b;
}

struct rs_buf *rs_bufpool_get(struct rs_bufpool *p)
{
	struct rs_buf *b;

	if (!p->user_nfree) {
		p->user_exhausted++;
		return NULL;
	}
	b = &p->bufs[p->user_free[--p->user_nfree]];
	b->refs = 1;
	return b;
}

void rs_buf_unref(struct rs_bufpool *p, struct rs_buf *b)
{
	if (--b->refs)
		return;
	if (b->bid >= p->count) {
		p->user_free[p->user_nfree++] = b->bid;
		return;
	}
	io_uring_buf_ring_add(p->br, rs_buf_data(p, b), p->size, b->bid, (int)p->mask,
			      (int)p->pending_adv);
	p->pending_adv++;
	p->out--;
}

void rs_bufpool_flush(struct rs_bufpool *p)
{
	if (!p->pending_adv)
		return;
	io_uring_buf_ring_advance(p->br, (int)p->pending_adv);
	p->pending_adv = 0;
}
