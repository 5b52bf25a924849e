#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>

#include "core/portpool.h"

static struct sockaddr_storage v4(const char *ip)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	s->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &s->sin_addr);
	return ss;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)ss)->sin6_port)
					 : ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static void test_partition_is_disjoint(void **st)
{
	struct sockaddr_storage a[2] = {v4("127.0.0.2"), v4("127.0.0.3")}, got;
	static uint8_t seen[2][65536];
	struct rs_portpool *p[3];

	(void)st;
	memset(seen, 0, sizeof(seen));
	for (unsigned w = 0; w < 3; w++) {
		assert_int_equal(rs_portpool_init(&p[w], a, 2, 10000, 10099, w, 3), 0);
		while (!rs_portpool_get(p[w], &got)) {
			int ai;
			char ip[32];

			inet_ntop(AF_INET, &((struct sockaddr_in *)&got)->sin_addr, ip, sizeof(ip));
			ai = !strcmp(ip, "127.0.0.3");
			assert_int_equal(seen[ai][port_of(&got)], 0); /* never handed out twice */
			seen[ai][port_of(&got)] = 1;
		}
	}
	for (int ai = 0; ai < 2; ai++)
		for (int port = 10000; port <= 10099; port++)
			assert_int_equal(seen[ai][port], 1); /* and every pair is somewhere */
	for (unsigned w = 0; w < 3; w++)
		rs_portpool_free(p[w]);
}

static void test_exhaustion_and_fifo_reuse(void **st)
{
	struct sockaddr_storage a = v4("127.0.0.1"), x, y, z;
	struct rs_portpool *p;
	struct rs_portpool_stats s;

	(void)st;
	assert_int_equal(rs_portpool_init(&p, &a, 1, 20000, 20002, 0, 1), 0);
	assert_int_equal(rs_portpool_get(p, &x), 0);
	assert_int_equal(rs_portpool_get(p, &y), 0);
	assert_int_equal(rs_portpool_get(p, &z), 0);
	assert_int_equal(rs_portpool_get(p, &z), -EADDRNOTAVAIL);
	rs_portpool_put(p, &x);
	rs_portpool_put(p, &y);
	rs_portpool_put(p, &x); /* double put is ignored */
	assert_int_equal(rs_portpool_get(p, &z), 0);
	assert_int_equal(port_of(&z), port_of(&x)); /* FIFO: oldest released first */
	rs_portpool_stats(p, &s);
	assert_int_equal(s.size, 3);
	assert_int_equal(s.in_use, 2);
	assert_int_equal(s.exhausted, 1);
	assert_int_equal(s.bad_put, 1);
	rs_portpool_free(p);
}

static void test_ipv6_and_bad_input(void **st)
{
	struct sockaddr_storage a = {0}, got, other = v4("10.0.0.1");
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a;
	struct rs_portpool *p;
	struct rs_portpool_stats s;

	(void)st;
	s6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::1", &s6->sin6_addr);
	assert_int_equal(rs_portpool_init(&p, &a, 1, 30000, 30001, 1, 2), 0);
	assert_int_equal(rs_portpool_get(p, &got), 0);
	assert_int_equal(got.ss_family, AF_INET6);
	assert_int_equal(port_of(&got), 30001);
	rs_portpool_put(p, &other); /* unknown address: counted, ignored */
	rs_portpool_stats(p, &s);
	assert_int_equal(s.bad_put, 1);
	rs_portpool_free(p);
	assert_int_equal(rs_portpool_init(&p, &a, 1, 30001, 30000, 0, 1), -EINVAL);
	assert_int_equal(rs_portpool_init(&p, &a, 1, 30000, 30000, 0, 2), -EINVAL);
	assert_int_equal(rs_portpool_init(&p, &a, 0, 30000, 30010, 0, 1), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_partition_is_disjoint),
		cmocka_unit_test(test_exhaustion_and_fifo_reuse),
		cmocka_unit_test(test_ipv6_and_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
