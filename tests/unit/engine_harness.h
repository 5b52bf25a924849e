/* tests/unit/engine_harness.h — a one-worker engine in the test process.
 *
 * The engine's connections connect out (rs_conn_connect) to plain sockets
 * the test thread owns on 127.0.0.1, so a test plays the peer with ordinary
 * blocking calls while the worker runs the real io_uring paths. Work on the
 * worker's thread goes through rs_worker_call. A test is skipped where
 * io_uring is unavailable (a container that forbids it).
 */
#ifndef RS_TEST_ENGINE_HARNESS_H
#define RS_TEST_ENGINE_HARNESS_H

#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/engine.h"
#include "core/log.h"

struct harness {
	struct rs_engine *e;
	struct rs_worker *w;
};

/* Start a one-worker engine; false (and the test skipped) without io_uring. */
static inline bool h_start(struct harness *h, struct rs_engine_opts o)
{
	char err[256] = "";

	o.workers = 1;
	if (!o.max_conns)
		o.max_conns = 256;
	h->e = rs_engine_new(&o, err, sizeof(err));
	assert_non_null(h->e);
	if (rs_engine_start(h->e, err, sizeof(err))) {
		print_message("engine did not start (%s): skipped\n", err);
		rs_engine_free(h->e);
		h->e = NULL;
		return false;
	}
	h->w = rs_engine_worker(h->e, 0);
	return true;
}

static inline void h_stop(struct harness *h)
{
	if (!h->e)
		return;
	rs_engine_stop(h->e, 200);
	rs_engine_free(h->e);
	h->e = NULL;
}

/* A listening socket on 127.0.0.1 (kernel-chosen port) with receive buffer
 * <rcvbuf> (0: default), inherited by what it accepts. */
static inline int h_listen(struct sockaddr_in *addr, int backlog, int rcvbuf)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (rcvbuf)
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	return fd;
}

/* accept() with a deadline; -1 on timeout. */
static inline int h_accept(int lfd, int timeout_ms)
{
	struct pollfd p = {.fd = lfd, .events = POLLIN};

	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static inline uint64_t h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait until *flag (read with acquire) is true or <timeout_ms> passes. */
static inline bool h_wait_flag(const bool *flag, unsigned timeout_ms)
{
	uint64_t end = h_now_ms() + timeout_ms;

	while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
		if (h_now_ms() > end)
			return false;
		usleep(1000);
	}
	return true;
}

static inline uint64_t h_rand(uint64_t *s)
{
	/* xorshift64*: reproducible from the seed printed by the test. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

#endif
