/* bench/hold.c — open N keep-alive HTTP connections, make one request on
 * each, then hold them idle. Several processes together pass the fd limit.
 *
 *   hold --port P [--host 127.0.0.1] --conns N [--src-base 2 --src-count K]
 *        [--path /healthz] [--hold-seconds S]
 *
 * Prints one JSON line when every connection has its answer ("held"), and
 * another when it exits. SIGTERM ends the hold early. */
#include "core/common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

struct c {
	int fd;
	int state; /* 0 connecting, 1 sent, 2 answered, 3 failed */
	size_t got;
};

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *path = "/healthz";
	int port = 0, conns = 1000, src_base = 0, src_count = 1, hold = 30, batch = 512;
	static const struct option opts[] = {
		{"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"conns", 1, 0, 'n'},
		{"src-base", 1, 0, 'b'}, {"src-count", 1, 0, 'k'}, {"path", 1, 0, 'u'},
		{"hold-seconds", 1, 0, 's'}, {0, 0, 0, 0}};
	struct sockaddr_in dst = {.sin_family = AF_INET};
	struct epoll_event evs[256];
	struct rlimit rl;
	struct c *cs;
	char req[256];
	int ep, opened = 0, answered = 0, failed = 0, o, one = 1;
	uint64_t t0 = rs_now_ms(), deadline;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'n': conns = atoi(optarg); break;
		case 'b': src_base = atoi(optarg); break;
		case 'k': src_count = atoi(optarg); break;
		case 'u': path = optarg; break;
		case 's': hold = atoi(optarg); break;
		default: return 2;
		}
	}
	if (!port || conns <= 0) {
		fprintf(stderr, "usage: hold --port P --conns N [--src-base B --src-count K] ...\n");
		return 2;
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	signal(SIGPIPE, SIG_IGN);
	inet_pton(AF_INET, host, &dst.sin_addr);
	dst.sin_port = htons((uint16_t)port);
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path);
	cs = calloc((size_t)conns, sizeof(*cs));
	ep = epoll_create1(0);
	deadline = t0 + 120000;
	/* Open in batches so the server's listen backlog is never overrun. */
	while ((answered + failed < conns) && !stop && rs_now_ms() < deadline) {
		while (opened < conns && opened - answered - failed < batch) {
			struct c *c = &cs[opened];
			struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};

			c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			if (c->fd < 0) {
				c->state = 3;
				failed++;
				opened++;
				continue;
			}
			setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			if (src_base) {
				struct sockaddr_in src = {.sin_family = AF_INET};

				src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(src_base + opened % src_count));
				setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
				bind(c->fd, (struct sockaddr *)&src, sizeof(src));
			}
			connect(c->fd, (struct sockaddr *)&dst, sizeof(dst));
			epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
			opened++;
		}
		int n = epoll_wait(ep, evs, 256, 100);

		for (int i = 0; i < n; i++) {
			struct c *c = evs[i].data.ptr;
			char buf[512];

			if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
				if (c->state < 2) {
					c->state = 3;
					failed++;
					epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				}
				continue;
			}
			if (c->state == 0 && (evs[i].events & EPOLLOUT)) {
				struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

				if (write(c->fd, req, strlen(req)) < 0) {
					c->state = 3;
					failed++;
					continue;
				}
				c->state = 1;
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			} else if (c->state == 1 && (evs[i].events & EPOLLIN)) {
				ssize_t r = read(c->fd, buf, sizeof(buf));

				if (r <= 0) {
					c->state = 3;
					failed++;
					epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
					continue;
				}
				/* The answer is small; its end is the body's "\n". */
				if (memmem(buf, (size_t)r, "\r\n\r\n", 4)) {
					c->state = 2;
					answered++;
				}
			}
		}
	}
	printf("{\"event\":\"held\",\"conns\":%d,\"answered\":%d,\"failed\":%d,\"ms\":%llu}\n", conns,
	       answered, failed, (unsigned long long)(rs_now_ms() - t0));
	fflush(stdout);
	/* Hold: the server must keep them all, idle. Count any it drops. */
	deadline = rs_now_ms() + (uint64_t)hold * 1000;
	int dropped = 0;

	while (!stop && rs_now_ms() < deadline) {
		int n = epoll_wait(ep, evs, 256, 200);

		for (int i = 0; i < n; i++) {
			struct c *c = evs[i].data.ptr;

			if (c->state == 2) {
				c->state = 3;
				dropped++;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
			}
		}
	}
	printf("{\"event\":\"done\",\"dropped_while_idle\":%d}\n", dropped);
	for (int i = 0; i < opened; i++)
		if (cs[i].fd > 0)
			close(cs[i].fd);
	free(cs);
	return failed ? 1 : 0;
}
