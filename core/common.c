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

int rs_random(void *buf, size_t n)
{
	uint8_t *p = buf;

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
