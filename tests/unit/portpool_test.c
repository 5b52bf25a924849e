#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/portpool.h"

static struct sockaddr_storage v4(const char *ip)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	s->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &s->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *ip, uint32_t scope)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

	s->sin6_family = AF_INET6;
	s->sin6_scope_id = scope;
	assert_int_equal(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
	return ss;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)ss)->sin6_port)
					 : ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static uint32_t v4_of(const struct sockaddr_storage *ss)
{
	assert_int_equal(ss->ss_family, AF_INET);
	return ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr);
}

static struct rs_portpool_stats stats(const struct rs_portpool *p)
{
	struct rs_portpool_stats s;

	rs_portpool_stats(p, &s);
	return s;
}

/* Drain every worker's pool of <nworkers>: each (address, port) pair of the
 * range comes out of exactly one pool, each pool's ports are one contiguous
 * slice, and slices differ in size by at most one. */
static void check_partition(unsigned nworkers, uint16_t lo, uint16_t hi)
{
	struct sockaddr_storage a[2] = {v4("127.0.0.2"), v4("127.0.0.3")}, got;
	static uint8_t seen[2][65536];
	size_t min_slice = SIZE_MAX, max_slice = 0;

	memset(seen, 0, sizeof(seen));
	for (unsigned w = 0; w < nworkers; w++) {
		struct rs_portpool *p;
		unsigned first = 65536, last = 0;
		size_t n = 0;

		assert_int_equal(rs_portpool_init(&p, a, 2, lo, hi, w, nworkers), 0);
		while (!rs_portpool_get(p, &got)) {
			int ai = v4_of(&got) == 0x7f000003;
			uint16_t port = port_of(&got);

			assert_int_equal(seen[ai][port], 0); /* never in two pools */
			seen[ai][port] = (uint8_t)(w + 1);
			first = RS_MIN(first, port);
			last = RS_MAX(last, port);
			n++;
		}
		assert_int_equal(n, 2 * (last - first + 1)); /* contiguous, both addresses */
		assert_int_equal(stats(p).size, n);
		min_slice = RS_MIN(min_slice, n / 2);
		max_slice = RS_MAX(max_slice, n / 2);
		rs_portpool_free(p);
	}
	for (unsigned port = lo; port <= hi; port++)
		for (int ai = 0; ai < 2; ai++)
			assert_int_not_equal(seen[ai][port], 0); /* and every pair is somewhere */
	assert_true(max_slice - min_slice <= 1);
}

static void test_partition_is_disjoint(void **st)
{
	(void)st;
	check_partition(3, 10000, 10099);
	check_partition(1, 10000, 10099);
	check_partition(7, 10000, 10009); /* 10 ports, 7 workers: slices of 1 or 2 */
	check_partition(4, 65532, 65535); /* top of the range: no wrap */
	check_partition(16, 1024, 65535);
}

static void test_exhaustion_and_fifo_reuse(void **st)
{
	struct sockaddr_storage a = v4("127.0.0.1"), x[4], y, z;
	struct rs_portpool *p;
	struct rs_portpool_stats s;

	(void)st;
	assert_int_equal(rs_portpool_init(&p, &a, 1, 20000, 20003, 0, 1), 0);
	assert_int_equal(rs_portpool_get(p, &x[0]), 0);
	assert_int_equal(rs_portpool_get(p, &x[1]), 0);
	assert_int_equal(port_of(&x[0]), 20000);
	assert_int_equal(port_of(&x[1]), 20001);
	/* a released pair queues behind the never-used ones */
	rs_portpool_put(p, &x[0]);
	assert_int_equal(rs_portpool_get(p, &x[2]), 0);
	assert_int_equal(port_of(&x[2]), 20002);
	assert_int_equal(rs_portpool_get(p, &x[3]), 0);
	assert_int_equal(port_of(&x[3]), 20003);
	assert_int_equal(rs_portpool_get(p, &y), 0);
	assert_int_equal(port_of(&y), 20000);
	assert_int_equal(v4_of(&y), 0x7f000001);
	assert_int_equal(rs_portpool_get(p, &z), -EADDRNOTAVAIL);
	assert_int_equal(rs_portpool_get(p, &z), -EADDRNOTAVAIL);
	s = stats(p);
	assert_int_equal(s.in_use, 4);
	assert_int_equal(s.exhausted, 2);
	/* released in the order 3, 1, 2: handed out again in that order */
	rs_portpool_put(p, &x[3]);
	rs_portpool_put(p, &x[1]);
	rs_portpool_put(p, &x[2]);
	assert_int_equal(rs_portpool_get(p, &z), 0);
	assert_int_equal(port_of(&z), 20003);
	assert_int_equal(rs_portpool_get(p, &z), 0);
	assert_int_equal(port_of(&z), 20001);
	assert_int_equal(rs_portpool_get(p, &z), 0);
	assert_int_equal(port_of(&z), 20002);
	s = stats(p);
	assert_int_equal(s.size, 4);
	assert_int_equal(s.in_use, 4);
	assert_int_equal(s.bad_put, 0);
	rs_portpool_free(p);
}

/* The ring wraps around many times and keeps its order. */
static void test_ring_wraps(void **st)
{
	struct sockaddr_storage a = v4("127.0.0.1"), got, held;
	struct rs_portpool *p;

	(void)st;
	assert_int_equal(rs_portpool_init(&p, &a, 1, 20000, 20002, 0, 1), 0);
	assert_int_equal(rs_portpool_get(p, &held), 0); /* 20000 stays out */
	for (int i = 0; i < 100; i++) {
		assert_int_equal(rs_portpool_get(p, &got), 0);
		assert_int_equal(port_of(&got), 20001 + i % 2);
		rs_portpool_put(p, &got);
	}
	rs_portpool_put(p, &held);
	assert_int_equal(stats(p).in_use, 0);
	assert_int_equal(stats(p).bad_put, 0);
	rs_portpool_free(p);
}

static void test_addresses_alternate(void **st)
{
	struct sockaddr_storage a[3] = {v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3")}, got;
	struct rs_portpool *p;

	(void)st;
	assert_int_equal(rs_portpool_init(&p, a, 3, 30000, 30009, 0, 1), 0);
	assert_int_equal(stats(p).size, 30);
	for (int i = 0; i < 30; i++) {
		assert_int_equal(rs_portpool_get(p, &got), 0);
		assert_int_equal(v4_of(&got), 0x0a000001 + (uint32_t)(i % 3));
		assert_int_equal(port_of(&got), 30000 + i / 3);
	}
	rs_portpool_free(p);
}

static void test_ipv6_and_mixed(void **st)
{
	struct sockaddr_storage a[2] = {v6("fe80::1", 3), v4("192.0.2.1")}, got[4], back;
	struct rs_portpool *p;
	int n6 = 0;

	(void)st;
	/* the address's own port is ignored */
	((struct sockaddr_in6 *)&a[0])->sin6_port = htons(443);
	assert_int_equal(rs_portpool_init(&p, a, 2, 30000, 30003, 1, 2), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(rs_portpool_get(p, &got[i]), 0);
		assert_true(port_of(&got[i]) == 30002 || port_of(&got[i]) == 30003);
		if (got[i].ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&got[i];

			assert_memory_equal(&s6->sin6_addr,
					    &((struct sockaddr_in6 *)&a[0])->sin6_addr, 16);
			assert_int_equal(s6->sin6_scope_id, 3);
			n6++;
		} else {
			assert_int_equal(v4_of(&got[i]), 0xc0000201);
		}
	}
	assert_int_equal(n6, 2);
	assert_int_equal(rs_portpool_get(p, &back), -EADDRNOTAVAIL);
	/* an IPv6 pair comes back (a copy, as from getsockname, will do) */
	for (int i = 0; i < 4; i++) {
		if (got[i].ss_family != AF_INET6)
			continue;
		back = v6("fe80::1", 0);
		((struct sockaddr_in6 *)&back)->sin6_port = htons(port_of(&got[i]));
		rs_portpool_put(p, &back);
		assert_int_equal(rs_portpool_get(p, &back), 0);
		assert_int_equal(back.ss_family, AF_INET6);
		assert_int_equal(port_of(&back), port_of(&got[i]));
		break;
	}
	assert_int_equal(stats(p).bad_put, 0);
	rs_portpool_free(p);
}

static void test_bad_puts_are_ignored(void **st)
{
	struct sockaddr_storage a = v4("127.0.0.1"), x, y, other, unix_ss = {.ss_family = AF_UNIX};
	struct sockaddr_storage mapped = v6("::ffff:127.0.0.1", 0);
	struct rs_portpool *p;
	struct rs_portpool_stats s;
	uint8_t seen[5] = {0};

	(void)st;
	assert_int_equal(rs_portpool_init(&p, &a, 1, 40000, 40009, 1, 2), 0); /* 40005..40009 */
	assert_int_equal(rs_portpool_get(p, &x), 0);
	rs_portpool_put(p, &x);
	rs_portpool_put(p, &x); /* double put */
	y = x;
	((struct sockaddr_in *)&y)->sin_port = htons(40000); /* worker 0's port */
	rs_portpool_put(p, &y);
	((struct sockaddr_in *)&y)->sin_port = htons(40006); /* ours, but never handed out */
	rs_portpool_put(p, &y);
	other = v4("127.0.0.2");
	((struct sockaddr_in *)&other)->sin_port = htons(40005);
	rs_portpool_put(p, &other); /* unknown address */
	((struct sockaddr_in6 *)&mapped)->sin6_port = htons(40005);
	rs_portpool_put(p, &mapped); /* another family */
	rs_portpool_put(p, &unix_ss);
	rs_portpool_put(p, NULL);
	s = stats(p);
	assert_int_equal(s.bad_put, 7);
	assert_int_equal(s.in_use, 0);
	/* nothing was queued twice: exactly 5 pairs come out, all distinct */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(rs_portpool_get(p, &y), 0);
		assert_in_range(port_of(&y), 40005, 40009);
		assert_int_equal(seen[port_of(&y) - 40005]++, 0);
	}
	assert_int_equal(rs_portpool_get(p, &y), -EADDRNOTAVAIL);
	rs_portpool_free(p);
}

static void test_init_rejects(void **st)
{
	struct sockaddr_storage a[2] = {v4("10.0.0.1"), v4("10.0.0.1")};
	struct sockaddr_storage unix_ss = {.ss_family = AF_UNIX};
	struct rs_portpool *p = (void *)1;

	(void)st;
	assert_int_equal(rs_portpool_init(&p, a, 1, 30001, 30000, 0, 1), -EINVAL);
	assert_null(p);
	assert_int_equal(rs_portpool_init(&p, a, 1, 30000, 30000, 0, 2), -EINVAL); /* empty slice */
	assert_int_equal(rs_portpool_init(&p, a, 0, 30000, 30010, 0, 1), -EINVAL);
	assert_int_equal(rs_portpool_init(&p, NULL, 1, 30000, 30010, 0, 1), -EINVAL);
	assert_int_equal(rs_portpool_init(&p, a, 1, 0, 30010, 0, 1), -EINVAL);
	assert_int_equal(rs_portpool_init(&p, a, 1, 30000, 30010, 2, 2), -EINVAL);
	assert_int_equal(rs_portpool_init(&p, a, 1, 30000, 30010, 0, 0), -EINVAL);
	assert_int_equal(rs_portpool_init(&p, &unix_ss, 1, 30000, 30010, 0, 1), -EINVAL);
	/* the same address twice (even with different ports) */
	((struct sockaddr_in *)&a[1])->sin_port = htons(5);
	assert_int_equal(rs_portpool_init(&p, a, 2, 30000, 30010, 0, 1), -EINVAL);
	assert_null(p);
	assert_int_equal(rs_portpool_init(&p, a, 1, 30000, 30000, 0, 1), 0); /* one pair */
	assert_int_equal(stats(p).size, 1);
	rs_portpool_free(p);
	rs_portpool_free(NULL);
}

/* Nanoseconds per get+put cycle, best of three runs. */
static double cycle_ns(struct rs_portpool *p)
{
	double best = 1e18;

	for (int run = 0; run < 3; run++) {
		struct sockaddr_storage got;
		uint64_t t0 = rs_now_ns();

		for (int i = 0; i < 200000; i++) {
			assert_int_equal(rs_portpool_get(p, &got), 0);
			rs_portpool_put(p, &got);
		}
		best = RS_MIN(best, (double)(rs_now_ns() - t0) / 200000);
	}
	return best;
}

/*
 * O(1): a get+put cycle costs about the same on a pool of 16 pairs and on
 * pools of 64k pairs over 4096 source addresses or one address's whole
 * range. A scan of the addresses or of the ring would make the big pools
 * hundreds of times slower; the bound leaves room for cache misses and
 * sanitizers.
 */
static void test_constant_time(void **st)
{
	size_t naddrs = 4096;
	struct sockaddr_storage *many = calloc(naddrs, sizeof(*many));
	struct rs_portpool *small, *wide, *deep;
	double t_small, t_wide, t_deep;

	(void)st;
	assert_non_null(many);
	for (size_t i = 0; i < naddrs; i++) {
		struct sockaddr_in *s = (struct sockaddr_in *)&many[i];

		s->sin_family = AF_INET;
		s->sin_addr.s_addr = htonl(0x0a000000 + (uint32_t)i);
	}
	assert_int_equal(rs_portpool_init(&small, many, 1, 20000, 20015, 0, 1), 0);
	assert_int_equal(rs_portpool_init(&wide, many, naddrs, 20000, 20015, 0, 1), 0);
	assert_int_equal(rs_portpool_init(&deep, many, 1, 1024, 65535, 0, 1), 0);
	assert_int_equal(stats(wide).size, 65536);
	t_small = cycle_ns(small);
	t_wide = cycle_ns(wide);
	t_deep = cycle_ns(deep);
	print_message("get+put: %.1f ns (16 pairs), %.1f ns (4096 addresses), %.1f ns (64k ports)\n",
		      t_small, t_wide, t_deep);
	assert_true(t_wide < 10 * t_small + 50);
	assert_true(t_deep < 10 * t_small + 50);
	rs_portpool_free(small);
	rs_portpool_free(wide);
	rs_portpool_free(deep);
	free(many);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_partition_is_disjoint),
		cmocka_unit_test(test_exhaustion_and_fifo_reuse),
		cmocka_unit_test(test_ring_wraps),
		cmocka_unit_test(test_addresses_alternate),
		cmocka_unit_test(test_ipv6_and_mixed),
		cmocka_unit_test(test_bad_puts_are_ignored),
		cmocka_unit_test(test_init_rejects),
		cmocka_unit_test(test_constant_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
