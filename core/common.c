#include "core/common.h"

#include <malloc.h>
#include <sys/random.h>
#include <time.h>

void *rs_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

void *rs_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		abort();
	return p;
}

char *rs_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

uint64_t rs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t rs_now_ms(void)
{
	return rs_now_ns() / 1000000u;
}

int64_t rs_wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec;
}

static int fill_random(uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = getrandom(p, n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Small requests (a WebSocket masking key per frame, a token) are served
 * from a per-thread block of getrandom() output: one system call per 64
 * masking keys instead of one per frame, which was 5 % of a relaying core.
 * Served bytes are wiped from the block at once. ringside never forks, so
 * no two processes can share a block. */
#define RANDOM_BLOCK 256

int rs_random(void *buf, size_t n)
{
	static __thread uint8_t block[RANDOM_BLOCK];
	static __thread size_t used = RANDOM_BLOCK;
	int ret;

	if (n > RANDOM_BLOCK / 4)
		return fill_random(buf, n);
	if (RANDOM_BLOCK - used < n) {
		ret = fill_random(block, RANDOM_BLOCK);
		if (ret)
			return ret;
		used = 0;
	}
	memcpy(buf, block + used, n);
	explicit_bzero(block + used, n);
	used += n;
	return 0;
}

bool rs_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	const volatile uint8_t *pa = a, *pb = b;
	uint8_t diff = alen != blen;

	/* Walk <b> fully so timing reveals only the length of the secret. */
	for (size_t i = 0; i < blen; i++)
		diff |= (uint8_t)(pb[i] ^ (alen ? pa[i % alen] : 0));
	return diff == 0;
}

/* jemalloc when linked (release builds), glibc's allocator otherwise. */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
    __attribute__((weak));

void rs_mem_release(void)
{
	if (mallctl)
		mallctl("arena.4096.purge", NULL, NULL, NULL, 0); /* MALLCTL_ARENAS_ALL */
	else
		malloc_trim(0);
}

uint64_t rs_mem_allocated(void)
{
	if (mallctl) {
		uint64_t epoch = 1;
		size_t allocated = 0, len = sizeof(allocated), elen = sizeof(epoch);

		/* jemalloc refreshes its statistics when the epoch is written. */
		mallctl("epoch", &epoch, &elen, &epoch, elen);
		if (!mallctl("stats.allocated", &allocated, &len, NULL, 0))
			return allocated;
		return 0;
	}
	return (uint64_t)mallinfo2().uordblks;
}
