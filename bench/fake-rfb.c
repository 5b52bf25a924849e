/* bench/fake-rfb.c — a fast fake VNC server for the bench harness, on
 * ringside's own io_uring engine (direct descriptors: it holds far more
 * connections than RLIMIT_NOFILE allows, and is never the bottleneck).
 *
 *   fake-rfb --listen 127.0.0.1:5999 [--workers 1] [--mode echo|idle]
 *
 * Each connection: RFB 3.8, security type None, ClientInit, a ServerInit
 * for a 1024x768 desktop named "bench"; then `echo` returns every byte it
 * gets (ping-pong and streaming through the relay), `idle` sends nothing
 * and reads nothing more. Runs until SIGTERM/SIGINT; prints one JSON line
 * with its counters at exit.
 */
#include "core/common.h"

#include <getopt.h>
#include <stdatomic.h>
#include <unistd.h>

#include "bench/fake.h"

enum stage { ST_VERSION = 0, ST_SECURITY, ST_INIT, ST_RUN };

struct fconn {
	enum stage st;
	uint8_t got; /* bytes of the current handshake message */
};

static bool echo_mode = true;
static _Atomic uint64_t n_accepted, n_ready, bytes_echoed;

static const uint8_t SERVER_INIT[] = {
	0x04, 0x00, 0x03, 0x00,		/* 1024 x 768 */
	32,   24,   0,	  1,		/* bpp, depth, little endian, true colour */
	0,    255,  0,	  255,	0, 255, /* max r, g, b */
	16,   8,    0,	  0,	0, 0,	/* shifts, padding */
	0,    0,    0,	  5,	'b', 'e', 'n', 'c', 'h',
};

static void f_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct fconn *f = rs_conn_ctx(c);
	static const uint8_t need[] = {12, 1, 1};
	int ret = 0;

	while (len && f->st != ST_RUN) {
		size_t n = RS_MIN(len, (size_t)(need[f->st] - f->got));

		f->got = (uint8_t)(f->got + n);
		data += n;
		len -= n;
		if (f->got < need[f->st])
			return;
		f->got = 0;
		if (f->st == ST_VERSION)
			ret = rs_conn_send(c, "\x01\x01", 2); /* one type: None */
		else if (f->st == ST_SECURITY)
			ret = rs_conn_send(c, "\0\0\0\0", 4); /* SecurityResult OK */
		else if (f->st == ST_INIT) {
			ret = rs_conn_send_static(c, SERVER_INIT, sizeof(SERVER_INIT));
			atomic_fetch_add_explicit(&n_ready, 1, memory_order_relaxed);
		}
		f->st++;
		if (ret) {
			rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
			return;
		}
	}
	if (!len || !echo_mode)
		return;
	if (rs_conn_send_buf(c, b, data, len)) {
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
		return;
	}
	atomic_fetch_add_explicit(&bytes_echoed, len, memory_order_relaxed);
	/* A relay that does not read its echo stops being read from. */
	if (rs_conn_congested(c))
		rs_conn_pause(c);
}

static const struct rs_conn_ops fops = {
	.on_data = f_on_data,
	.on_drain = rs_fake_on_drain,
	.on_close = rs_fake_on_close,
};

static void f_on_accept(struct rs_conn *c, void *arg)
{
	struct fconn *f = calloc(1, sizeof(*f));

	(void)arg;
	rs_conn_set_ops(c, &fops, f);
	if (!f || rs_conn_send(c, "RFB 003.008\n", 12)) {
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
		return;
	}
	atomic_fetch_add_explicit(&n_accepted, 1, memory_order_relaxed);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"workers", required_argument, NULL, 'w'},
		{"mode", required_argument, NULL, 'm'},
		{NULL, 0, NULL, 0},
	};
	struct rs_engine_opts eo = {.workers = 1, .pin = false, .max_conns = 65536};
	const char *listen = "127.0.0.1:5999";
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'l')
			listen = optarg;
		else if (opt == 'w')
			eo.workers = (unsigned)atoi(optarg);
		else if (opt == 'm' && (!strcmp(optarg, "echo") || !strcmp(optarg, "idle")))
			echo_mode = !strcmp(optarg, "echo");
		else {
			fprintf(stderr, "usage: fake-rfb --listen HOST:PORT [--workers N] "
					"[--mode echo|idle]\n");
			return 2;
		}
	}
	ret = rs_fake_serve("fake-rfb", &eo, listen, f_on_accept);
	if (ret)
		return ret;
	printf("{\"accepted\":%llu,\"ready\":%llu,\"bytes_echoed\":%llu}\n",
	       (unsigned long long)n_accepted, (unsigned long long)n_ready,
	       (unsigned long long)bytes_echoed);
	fflush(stdout);
	_exit(0); /* as ringside-bench: no graceful stop of every connection */
}
