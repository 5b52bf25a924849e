/* bench/ringside-bench.c — the console load generator, on ringside's own
 * io_uring engine (direct descriptors, so one process passes the 20,000
 * descriptor limit). It drives the whole console path the way a browser
 * does: an API call for a token (pipelined on keep-alive connections), the
 * WebSocket upgrade (over TLS with --tls), the RFB handshake through the
 * relay, ClientInit, the target's ServerInit. Then:
 *
 *   hold    keep every console open and idle for --hold-seconds
 *   stream  every console sends --msg-size byte messages (4 in flight) for
 *           --hold-seconds through an echoing upstream: bytes and messages
 *           per second each way
 *   latency one message in flight per console: round trips through the
 *           relay, log-bucket histogram (p50/p99/p99.9 over every sample)
 *   setup   open the consoles and report (opens per second, setup latency),
 *           then end; --no-resume makes every TLS handshake a full one
 *   tokens  only create tokens (API rate over keep-alive), no consoles
 *
 * --pve CLUSTER:NODE:VMID asks for Proxmox consoles instead of plain VNC
 * ones. --path speaks to a relay without an API (websockify, nginx,
 * HAProxy); the RFB handshake then offers what the upstream offers, and
 * VNC authentication is answered as noVNC would, with --vnc-password
 * (default: fake-pve's, "benchpw1"; fake-pve checks the answer). --raw
 * speaks RFB over plain TCP straight to an RFB server (no WebSocket, no
 * TLS): plain mode's baseline with no relay at all.
 *
 *   ringside-bench --scenario hold --api 127.0.0.1:8080 --ws 127.0.0.1:8443 --tls
 *                  --key KEY --target 127.0.0.1:5999 --conns 50000
 *                  [--src-base 2 --src-count 16] [--batch 256] [--workers 1]
 *                  [--hold-seconds 30] [--timeout-ms 20000]
 *
 * Prints {"event":"held",...} on stderr when the ramp is over (scripts wait
 * for it), then {"event":"holding","opened":N,"dropped":D,...} every 250 ms
 * while the consoles are held, and one JSON line on stdout at the end:
 * opened, failures by cause, ramp time, setup latency percentiles. Exit 0
 * when every console opened and none dropped while held.
 */
#include "core/common.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "bench/fake.h"
#include "core/addr.h"
#include "core/config.h"
#include "core/engine.h"
#include "core/log.h"
#include "proto/rfb.h"
#include "proto/ws.h"
#include "tls/client.h"

enum fail {
	F_API = 0, /* token request refused or malformed */
	F_CONNECT, /* WebSocket connection refused or timed out */
	F_TLS,
	F_UPGRADE, /* no 101 */
	F_RFB,	   /* the relay's RFB handshake went wrong */
	F_CLOSED,  /* closed before the console was open */
	F_TIMEOUT,
	F__COUNT
};
static const char *const fail_names[F__COUNT] = {"api", "connect", "tls",    "upgrade",
						 "rfb", "closed",  "timeout"};

struct opts {
	const char *scenario, *key, *target_host;
	const char *path;	  /* peer mode: upgrade to this path, no API (websockify) */
	const char *pve;	  /* CLUSTER:NODE:VMID: Proxmox consoles */
	const char *vnc_password; /* peer mode: answers the upstream's VNC auth */
	unsigned vmids;		  /* spread over VMID .. VMID+vmids-1 */
	bool no_resume;
	bool raw; /* RFB over TCP, no WebSocket: straight at the upstream */
	size_t msg_size;
	struct sockaddr_storage api, ws;
	socklen_t api_len, ws_len;
	uint16_t ws_port, target_port;
	bool tls;
	unsigned conns, batch, workers, hold_s, timeout_ms, src_base, src_count;
};

static struct opts o = {.scenario = "hold",
			.msg_size = 1024,
			.conns = 1000,
			.batch = 256,
			.workers = 1,
			.hold_s = 30,
			.timeout_ms = 20000,
			.src_count = 1,
			.vmids = 1000,
			.vnc_password = "benchpw1"};
static struct rs_tls_client *tls_client;
static _Atomic uint64_t n_tokens, n_opened, n_dropped, n_resumed, failures[F__COUNT];
static _Atomic uint64_t echo_bytes, echo_msgs;
static _Atomic bool traffic; /* stream/latency: every console is open, go */
/* Round trips in log buckets: 8 per power of two of nanoseconds. */
#define RTT_BUCKETS (64 * 8)
static _Atomic uint64_t rtt_hist[RTT_BUCKETS];
static _Atomic unsigned n_done; /* consoles finished opening (held or failed) */
static _Atomic bool stop_flag;
static pthread_mutex_t lat_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *lat_us;
static size_t n_lat;

/* --- per worker --- */

struct wstate {
	struct rs_worker *w;
	unsigned id, quota, requested, pending; /* consoles this worker opens */
	struct rs_conn *api;
	uint8_t rx[65536];
	size_t rx_len;
	unsigned in_flight; /* API requests sent, not answered */
	unsigned opening;   /* consoles between token and held */
	unsigned next_src;
	unsigned next_vm;
};

enum cstate {
	C_CONNECT = 0,
	C_UPGRADE,
	C_RFB_VERSION,
	C_RFB_TYPES,
	C_RFB_CHALLENGE, /* peer mode: the upstream's VNC authentication */
	C_RFB_RESULT,
	C_INIT,
	C_HELD
};

struct console {
	struct wstate *ws;
	struct rs_conn *c;
	enum cstate st;
	char token[64];
	char head[256];
	size_t head_len, got;
	uint8_t buf[32];
	uint64_t t0_ns;
	struct rs_ws_parser wp;
	struct rs_timer timer;
	size_t owed;	  /* echoed bytes still expected (stream/latency) */
	uint64_t sent_ns; /* latency: when the message in flight left */
};

static uint8_t *msg_payload; /* --msg-size bytes, the same for every message */

static unsigned rtt_bucket(uint64_t ns)
{
	unsigned lg = ns ? 63u - (unsigned)__builtin_clzll(ns) : 0;
	unsigned sub = lg >= 3 ? (unsigned)((ns >> (lg - 3)) & 7) : 0;

	return RS_MIN(lg * 8 + sub, RTT_BUCKETS - 1u);
}

static uint64_t bucket_ns(unsigned b)
{
	unsigned lg = b / 8, sub = b % 8;

	return lg >= 3 ? ((8ull + sub) << (lg - 3)) : (1ull << lg);
}

/* One masked binary frame of --msg-size bytes (the relay unmasks it, so a
 * copy per frame: the payload buffer stays clean for the next). */
static int send_message(struct console *k)
{
	uint8_t hdr[RS_WS_MAX_HEADER], key[4] = {0, 0, 0, 0};
	size_t hl = rs_ws_frame_header(hdr, RS_WS_OP_BINARY, true, o.msg_size, key);

	/* A zero mask leaves the payload unchanged: the load generator must not
	 * be the bottleneck (ringside unmasks as it would any key). */
	if ((!o.raw && rs_conn_send(k->c, hdr, hl)) ||
	    rs_conn_send_static(k->c, msg_payload, o.msg_size))
		return -ENOMEM;
	k->owed += o.msg_size;
	k->sent_ns = rs_now_ns();
	return 0;
}

static void start_traffic(struct console *k)
{
	unsigned window = !strcmp(o.scenario, "latency") ? 1 : 4;

	for (unsigned i = 0; i < window; i++)
		if (send_message(k))
			return;
}

/* Echoed bytes came back: count, and keep the window full. */
static void echoed(struct console *k, size_t len)
{
	bool lat = !strcmp(o.scenario, "latency");

	atomic_fetch_add_explicit(&echo_bytes, len, memory_order_relaxed);
	k->owed -= RS_MIN(len, k->owed);
	while (k->owed <= (lat ? 0 : 3 * o.msg_size) && !atomic_load(&stop_flag)) {
		atomic_fetch_add_explicit(&echo_msgs, 1, memory_order_relaxed);
		if (lat)
			atomic_fetch_add_explicit(&rtt_hist[rtt_bucket(rs_now_ns() - k->sent_ns)],
						  1, memory_order_relaxed);
		if (send_message(k))
			return;
		if (lat)
			break;
	}
}

static void traffic_tick(struct rs_timer *t);

static void fail_console(struct console *k, enum fail why)
{
	atomic_fetch_add(&failures[why], 1);
	atomic_fetch_add(&n_done, 1);
	k->ws->opening--;
	k->st = C_HELD + 1; /* counted */
	rs_conn_close(k->c, RS_CLOSE_NORMAL, 0);
}

/* One RFB message from the browser: a masked binary frame (--raw: as is). */
static int send_rfb(struct rs_conn *c, const void *data, size_t len)
{
	uint8_t hdr[RS_WS_MAX_HEADER], key[4], payload[64];
	size_t hl;

	if (o.raw)
		return rs_conn_send(c, data, len) ? -ENOMEM : 0;
	rs_random(key, sizeof(key));
	hl = rs_ws_frame_header(hdr, RS_WS_OP_BINARY, true, len, key);
	memcpy(payload, data, len);
	rs_ws_mask(payload, len, key, 0);
	return rs_conn_send(c, hdr, hl) || rs_conn_send(c, payload, len) ? -ENOMEM : 0;
}

static void request_tokens(struct wstate *ws);

static void held(struct console *k)
{
	uint32_t us = (uint32_t)RS_MIN((rs_now_ns() - k->t0_ns) / 1000, UINT32_MAX);

	k->st = C_HELD;
	rs_timer_unlink(rs_worker_timers(k->ws->w), &k->timer);
	atomic_fetch_add(&n_opened, 1);
	atomic_fetch_add(&n_done, 1);
	k->ws->opening--;
	pthread_mutex_lock(&lat_lock);
	if (n_lat < o.conns)
		lat_us[n_lat++] = us;
	pthread_mutex_unlock(&lat_lock);
	request_tokens(k->ws);
	if (!strcmp(o.scenario, "stream") || !strcmp(o.scenario, "latency")) {
		/* Traffic starts once every console is open (polled per console).
		 * Not in setup: its relay CPU is the consoles' opening and
		 * closing, not 300 ms of every one of them streaming. */
		k->timer.cb = traffic_tick;
		rs_timer_link(rs_worker_timers(k->ws->w), &k->timer, rs_worker_now(k->ws->w) + 20);
	}
}

static void traffic_tick(struct rs_timer *t)
{
	struct console *k = rs_container_of(t, struct console, timer);

	if (atomic_load(&traffic)) {
		start_traffic(k);
		return;
	}
	rs_timer_link(rs_worker_timers(k->ws->w), &k->timer, rs_worker_now(k->ws->w) + 20);
}

/* RFB bytes from the relay, as the browser sees them. */
static void rfb_bytes(struct console *k, const uint8_t *p, size_t len)
{
	static const size_t need[] = {[C_RFB_VERSION] = 12,
				      [C_RFB_TYPES] = 2,
				      [C_RFB_CHALLENGE] = 16,
				      [C_RFB_RESULT] = 4,
				      [C_INIT] = 24};
	uint8_t answer[16];

	while (len && k->st >= C_RFB_VERSION && k->st <= C_INIT) {
		size_t want = k->st == C_INIT && k->got >= 24
				  ? 24 + (((size_t)k->buf[20] << 24) | ((size_t)k->buf[21] << 16) |
					  ((size_t)k->buf[22] << 8) | k->buf[23])
				  : need[k->st];
		size_t n = RS_MIN(len, want - k->got);

		if (k->got < sizeof(k->buf))
			memcpy(k->buf + k->got, p, RS_MIN(n, sizeof(k->buf) - k->got));
		k->got += n;
		p += n;
		len -= n;
		if (k->got < want || (k->st == C_INIT && want == 24))
			continue;
		k->got = 0;
		switch (k->st) {
		case C_RFB_VERSION:
			if (memcmp(k->buf, "RFB 003.008\n", 12) ||
			    send_rfb(k->c, "RFB 003.008\n", 12))
				return fail_console(k, F_RFB);
			k->st = C_RFB_TYPES;
			break;
		case C_RFB_TYPES: /* one type: None (ringside), VNC auth (a peer's upstream) */
			if (k->buf[0] != 1 || (k->buf[1] != 1 && k->buf[1] != 2) ||
			    send_rfb(k->c, &k->buf[1], 1))
				return fail_console(k, F_RFB);
			k->st = k->buf[1] == 2 ? C_RFB_CHALLENGE : C_RFB_RESULT;
			break;
		case C_RFB_CHALLENGE:
			rs_rfb_vnc_auth_response(o.vnc_password, k->buf, answer);
			if (send_rfb(k->c, answer, sizeof(answer)))
				return fail_console(k, F_RFB);
			k->st = C_RFB_RESULT;
			break;
		case C_RFB_RESULT:
			if (memcmp(k->buf, "\0\0\0\0", 4) || send_rfb(k->c, "\x01", 1))
				return fail_console(k, F_RFB);
			k->st = C_INIT;
			break;
		default:
			return held(k);
		}
	}
}

/* Payload from the relay (or, --raw, the RFB server): the handshake until
 * the console is held, then echoes (none arrive before: nothing was sent). */
static void console_bytes(struct console *k, const uint8_t *data, size_t len)
{
	if (k->st < C_HELD)
		rfb_bytes(k, data, len);
	else if (k->st == C_HELD)
		echoed(k, len);
}

static void k_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct console *k = rs_conn_ctx(c);

	(void)b;
	if (o.raw)
		return console_bytes(k, data, len);
	if (k->st == C_UPGRADE) {
		char *end;
		size_t n = RS_MIN(len, sizeof(k->head) - 1 - k->head_len);

		memcpy(k->head + k->head_len, data, n);
		k->head_len += n;
		k->head[k->head_len] = 0;
		end = strstr(k->head, "\r\n\r\n");
		if (!end) {
			if (k->head_len == sizeof(k->head) - 1)
				fail_console(k, F_UPGRADE);
			return;
		}
		if (strncmp(k->head, "HTTP/1.1 101", 12))
			return fail_console(k, F_UPGRADE);
		n = (size_t)(end + 4 - k->head) -
		    (k->head_len - n); /* bytes of <data> in the head */
		data += n;
		len -= n;
		k->st = C_RFB_VERSION;
		rs_ws_parser_init(&k->wp, false, 1 << 20, 1 << 20);
	}
	while (len && k->st <= C_HELD) {
		struct rs_ws_event ev;
		int n = rs_ws_parse(&k->wp, data, len, &ev);

		if (n < 0 || ev.type == RS_WS_EV_ERROR || ev.type == RS_WS_EV_CLOSE) {
			if (k->st == C_HELD) {
				atomic_fetch_add(&n_dropped, 1);
				rs_conn_close(c, RS_CLOSE_NORMAL, 0);
			} else {
				fail_console(k, F_RFB);
			}
			return;
		}
		data += n;
		len -= (size_t)n;
		if (ev.type == RS_WS_EV_DATA)
			console_bytes(k, ev.data, ev.len);
		if (!n && ev.type == RS_WS_EV_NONE)
			break;
	}
}

static void send_upgrade(struct console *k)
{
	char req[400];
	int n = snprintf(req, sizeof(req),
			 "GET %s%s HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n",
			 o.path ? o.path : "/ws/", o.path ? "" : k->token);

	k->st = C_UPGRADE;
	if (rs_conn_send(k->c, req, (size_t)n))
		fail_console(k, F_UPGRADE);
}

static void k_on_tls(struct rs_conn *c, void *arg, int res, const char *msg)
{
	struct console *k = arg;

	(void)c, (void)msg;
	if (res)
		return fail_console(k, F_TLS);
	if (rs_tls_client_resumed(c))
		atomic_fetch_add_explicit(&n_resumed, 1, memory_order_relaxed);
	rs_bench_count_suite(c);
	send_upgrade(k);
}

static void k_on_connect(struct rs_conn *c, int res)
{
	struct console *k = rs_conn_ctx(c);

	if (res)
		return fail_console(k, F_CONNECT);
	if (o.raw) { /* the RFB server speaks first */
		k->st = C_RFB_VERSION;
		return;
	}
	if (!o.tls)
		return send_upgrade(k);
	if (rs_tls_client_attach(tls_client, c, "localhost", o.ws_port, k_on_tls, k))
		fail_console(k, F_TLS);
}

static void k_on_eof(struct rs_conn *c)
{
	struct console *k = rs_conn_ctx(c);

	if (k->st == C_HELD)
		atomic_fetch_add(&n_dropped, 1);
	else if (k->st < C_HELD)
		return fail_console(k, F_CLOSED);
	rs_conn_close(c, RS_CLOSE_PEER_EOF, 0);
}

static void k_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct console *k = rs_conn_ctx(c);

	(void)why, (void)err;
	if (k->st < C_HELD) { /* closed under us (reset) before it was counted */
		atomic_fetch_add(&failures[F_CLOSED], 1);
		atomic_fetch_add(&n_done, 1);
		k->ws->opening--;
		request_tokens(k->ws);
	} else if (k->st == C_HELD + 1) {
		request_tokens(k->ws);
	}
	rs_timer_unlink(rs_worker_timers(k->ws->w), &k->timer);
	free(k);
}

static const struct rs_conn_ops console_ops = {
    .on_data = k_on_data,
    .on_eof = k_on_eof,
    .on_connect = k_on_connect,
    .on_close = k_on_close,
};

static void k_on_timeout(struct rs_timer *t)
{
	struct console *k = rs_container_of(t, struct console, timer);

	if (k->st < C_HELD)
		fail_console(k, F_TIMEOUT);
}

static void open_console(struct wstate *ws, const char *token, size_t len)
{
	struct console *k = calloc(1, sizeof(*k));
	struct sockaddr_in src = {.sin_family = AF_INET};
	int ret;

	if (!k || len >= sizeof(k->token)) {
		free(k);
		atomic_fetch_add(&failures[F_API], 1);
		atomic_fetch_add(&n_done, 1);
		return;
	}
	k->ws = ws;
	memcpy(k->token, token, len);
	k->t0_ns = rs_now_ns();
	rs_timer_init(&k->timer, k_on_timeout);
	ws->opening++;
	if (o.src_base) {
		/* Spread over 127.0.0.B.. so the ephemeral range never runs out. */
		src.sin_addr.s_addr =
		    htonl(0x7f000000u | (o.src_base + ws->next_src++ % o.src_count));
	}
	ret = rs_conn_connect(ws->w, (struct sockaddr *)&o.ws, o.ws_len,
			      o.src_base ? (struct sockaddr *)&src : NULL,
			      o.src_base ? sizeof(src) : 0, o.timeout_ms, &console_ops, k, &k->c);
	if (ret) {
		ws->opening--;
		free(k);
		atomic_fetch_add(&failures[F_CONNECT], 1);
		atomic_fetch_add(&n_done, 1);
		return;
	}
	rs_timer_link(rs_worker_timers(ws->w), &k->timer, rs_worker_now(ws->w) + o.timeout_ms);
}

/* --- the API connection: pipelined token requests --- */

static void api_answer(struct wstate *ws, const char *body, size_t len, int status)
{
	const char *t = memmem(body, len, "\"token\":\"", 9);
	const char *e = t ? memchr(t + 9, '"', len - (size_t)(t + 9 - body)) : NULL;

	if (status != 201 || !e) {
		atomic_fetch_add(&failures[F_API], 1);
		atomic_fetch_add(&n_done, 1);
		return;
	}
	atomic_fetch_add(&n_tokens, 1);
	if (!strcmp(o.scenario, "tokens")) {
		atomic_fetch_add(&n_done, 1);
		return;
	}
	open_console(ws, t + 9, (size_t)(e - t - 9));
}

static void a_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct wstate *ws = rs_conn_ctx(c);

	(void)b;
	if (ws->rx_len + len > sizeof(ws->rx)) {
		rs_conn_close(c, RS_CLOSE_ERROR, EMSGSIZE);
		return;
	}
	memcpy(ws->rx + ws->rx_len, data, len);
	ws->rx_len += len;
	for (;;) {
		char *head = (char *)ws->rx, *end, *cl;
		size_t hlen, blen;

		end = memmem(head, ws->rx_len, "\r\n\r\n", 4);
		if (!end)
			break;
		hlen = (size_t)(end + 4 - head);
		cl = memmem(head, hlen, "Content-Length: ", 16);
		blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
		if (ws->rx_len < hlen + blen)
			break;
		ws->in_flight--;
		api_answer(ws, head + hlen, blen, atoi(head + 9));
		memmove(ws->rx, ws->rx + hlen + blen, ws->rx_len - hlen - blen);
		ws->rx_len -= hlen + blen;
	}
	request_tokens(ws);
}

static void a_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct wstate *ws = rs_conn_ctx(c);

	(void)why;
	ws->api = NULL;
	if (!atomic_load(&stop_flag) && ws->requested < ws->quota)
		fprintf(stderr, "ringside-bench: API connection closed (%s)\n", strerror(err));
	/* ringside closes the connection after an error answer (a 401 comes
	 * from the request's head): what was pipelined behind it, and what was
	 * never sent, fails rather than waiting for the run's deadline. */
	atomic_fetch_add(&failures[F_API], ws->in_flight + (ws->quota - ws->requested));
	atomic_fetch_add(&n_done, ws->in_flight + (ws->quota - ws->requested));
	ws->in_flight = 0;
	ws->requested = ws->quota;
}

/* Keep at most --batch consoles opening and as many token requests in flight. */
static void request_tokens(struct wstate *ws)
{
	char body[256], req[768];
	int n;

	if (o.path) {
		/* Peer mode: a relay without tokens; keep --batch consoles opening. */
		while (!atomic_load(&stop_flag) && ws->requested < ws->quota &&
		       ws->opening < o.batch) {
			ws->requested++;
			open_console(ws, "", 0);
		}
		return;
	}
	if (!ws->api || atomic_load(&stop_flag))
		return;
	while (ws->requested < ws->quota && ws->in_flight + ws->opening < o.batch) {
		if (o.pve) {
			const char *c1 = strchr(o.pve, ':'), *c2 = strrchr(o.pve, ':');

			/* A VM per console, as customers have: ringside serialises VNC
			 * authentication per VM (PVE's VNC password is VM-wide). */
			snprintf(body, sizeof(body),
				 "{\"cluster\":\"%.*s\",\"node\":\"%.*s\",\"vmid\":%lu,"
				 "\"console\":\"vnc\",\"ttl\":600}",
				 (int)(c1 - o.pve), o.pve, (int)(c2 - c1 - 1), c1 + 1,
				 strtoul(c2 + 1, NULL, 10) + ws->id +
				     o.workers * (ws->next_vm++ % o.vmids));
		} else {
			snprintf(body, sizeof(body),
				 "{\"kind\":\"vnc\",\"host\":\"%s\",\"port\":%u,\"ttl\":600}",
				 o.target_host, o.target_port);
		}
		n = snprintf(
		    req, sizeof(req),
		    "POST /api/v1/consoles HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "
		    "%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		    o.key, strlen(body), body);
		if (rs_conn_send(ws->api, req, (size_t)n))
			return;
		ws->requested++;
		ws->in_flight++;
	}
}

static void a_on_connect(struct rs_conn *c, int res)
{
	struct wstate *ws = rs_conn_ctx(c);

	if (res) {
		fprintf(stderr, "ringside-bench: cannot reach the API: %s\n", strerror(-res));
		rs_conn_close(c, RS_CLOSE_ERROR, -res); /* a_on_close counts the failures */
		return;
	}
	request_tokens(ws);
}

static const struct rs_conn_ops api_connect_ops = {
    .on_data = a_on_data, .on_connect = a_on_connect, .on_close = a_on_close};

static void start_worker(struct rs_worker *w, void *arg)
{
	struct wstate *ws = arg;

	ws->w = w;
	if (o.path) {
		request_tokens(ws);
		return;
	}
	if (rs_conn_connect(w, (struct sockaddr *)&o.api, o.api_len, NULL, 0, 5000,
			    &api_connect_ops, ws, &ws->api)) {
		atomic_fetch_add(&failures[F_API], ws->quota);
		atomic_fetch_add(&n_done, ws->quota);
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

static uint32_t pct(unsigned p)
{
	return n_lat ? lat_us[RS_MIN(n_lat - 1, n_lat * p / 100)] : 0;
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_flag, true);
}

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	return rs_parse_hostport(s, ss, len);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"scenario", 1, 0, 's'},	 {"api", 1, 0, 'a'},	    {"ws", 1, 0, 'w'},
	    {"tls", 0, 0, 'T'},		 {"key", 1, 0, 'k'},	    {"target", 1, 0, 't'},
	    {"conns", 1, 0, 'n'},	 {"batch", 1, 0, 'b'},	    {"workers", 1, 0, 'W'},
	    {"hold-seconds", 1, 0, 'h'}, {"timeout-ms", 1, 0, 'o'}, {"src-base", 1, 0, 'B'},
	    {"src-count", 1, 0, 'C'},	 {"msg-size", 1, 0, 'm'},   {"path", 1, 0, 'p'},
	    {"pve", 1, 0, 'P'},		 {"no-resume", 0, 0, 'R'},  {"vmids", 1, 0, 'V'},
	    {"vnc-password", 1, 0, 'v'}, {"raw", 0, 0, 'r'},	    {0, 0, 0, 0}};
	struct rs_engine_opts eo = {.max_conns = 131072};
	struct rs_tls_client_opts to = {.name = "bench", .insecure = true};
	/* (insecure: the relays under test present throw-away certificates) */
	struct sigaction sa = {.sa_handler = on_signal};
	struct wstate *ws;
	struct rs_engine *e;
	char err[256], *colon;
	uint64_t t0, ramp_ms, held_ms;
	const char *api = NULL, *wsaddr = NULL, *target = NULL;
	int opt;

	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 's':
			o.scenario = optarg;
			break;
		case 'a':
			api = optarg;
			break;
		case 'w':
			wsaddr = optarg;
			break;
		case 'T':
			o.tls = true;
			break;
		case 'k':
			o.key = optarg;
			break;
		case 't':
			target = optarg;
			break;
		case 'n':
			o.conns = (unsigned)atoi(optarg);
			break;
		case 'b':
			o.batch = (unsigned)atoi(optarg);
			break;
		case 'W':
			o.workers = (unsigned)atoi(optarg);
			break;
		case 'h':
			o.hold_s = (unsigned)atoi(optarg);
			break;
		case 'o':
			o.timeout_ms = (unsigned)atoi(optarg);
			break;
		case 'B':
			o.src_base = (unsigned)atoi(optarg);
			break;
		case 'C':
			o.src_count = (unsigned)atoi(optarg);
			break;
		case 'm':
			o.msg_size = (size_t)atol(optarg);
			break;
		case 'p':
			o.path = optarg;
			break;
		case 'P':
			o.pve = optarg;
			break;
		case 'R':
			o.no_resume = true;
			break;
		case 'V':
			o.vmids = (unsigned)atoi(optarg);
			break;
		case 'v':
			o.vnc_password = optarg;
			break;
		case 'r':
			o.raw = true;
			o.path = o.path ? o.path : "";
			break;
		default:
			goto usage;
		}
	}
	if (o.raw && o.tls)
		goto usage;
	if (o.path) { /* peer mode: the relay knows its target; no API */
		api = api ? api : wsaddr;
		o.key = o.key ? o.key : "-";
		target = target ? target : "0.0.0.0:0";
	}
	if (o.pve) {
		const char *c1 = strchr(o.pve, ':'), *c2 = strrchr(o.pve, ':');

		if (!c1 || c1 == c2 || c1 == o.pve || c2 == c1 + 1 || !c2[1])
			goto usage;
		target = target ? target : "0.0.0.0:0";
	}
	if (!strcmp(o.scenario, "setup"))
		o.hold_s = 0;
	if (!api || !o.key || !target || !o.conns || !o.batch || !o.workers || !o.src_count ||
	    !o.vmids || parse_addr(api, &o.api, &o.api_len) ||
	    (strcmp(o.scenario, "hold") && strcmp(o.scenario, "tokens") &&
	     strcmp(o.scenario, "stream") && strcmp(o.scenario, "latency") &&
	     strcmp(o.scenario, "setup")) ||
	    !o.msg_size || o.msg_size > (1 << 20) || o.src_base + o.src_count > 255)
		goto usage;
	if (parse_addr(wsaddr ? wsaddr : api, &o.ws, &o.ws_len))
		goto usage;
	o.ws_port = ntohs(((struct sockaddr_in *)&o.ws)->sin_port);
	colon = strrchr(target, ':');
	if (!colon)
		goto usage;
	o.target_host = strndup(target, (size_t)(colon - target));
	o.target_port = (uint16_t)atoi(colon + 1);
	rs_log_set_level(RS_LOG_ERROR);
	to.no_resume = o.no_resume;
	if (o.tls && rs_tls_client_new(&tls_client, &to, err, sizeof(err))) {
		fprintf(stderr, "ringside-bench: %s\n", err);
		return 1;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	lat_us = rs_xcalloc(o.conns, sizeof(*lat_us));
	msg_payload = rs_xmalloc(o.msg_size);
	/* ringside checks the browser's RFB messages: each message is one
	 * ClientCutText, or where none fits, KeyEvents (a run of 0x04 bytes is
	 * KeyEvents however it is framed). */
	memset(msg_payload, 0x04, o.msg_size);
	if (o.msg_size >= 8 && o.msg_size - 8 <= 1048576) {
		uint32_t n = (uint32_t)(o.msg_size - 8);

		memcpy(msg_payload, (uint8_t[]){6, 0, 0, 0, n >> 24, n >> 16, n >> 8, n}, 8);
		memset(msg_payload + 8, 0x78, n);
	}
	eo.workers = o.workers;
	e = rs_engine_new(&eo, err, sizeof(err));
	if (!e || rs_engine_start(e, err, sizeof(err))) {
		fprintf(stderr, "ringside-bench: %s\n", err);
		return 1;
	}
	ws = rs_xcalloc(o.workers, sizeof(*ws));
	t0 = rs_now_ms();
	for (unsigned i = 0; i < o.workers; i++) {
		ws[i].id = i;
		ws[i].quota = o.conns / o.workers + (i < o.conns % o.workers);
		rs_worker_post(rs_engine_worker(e, i), start_worker, &ws[i]);
	}
	for (unsigned tick = 1; atomic_load(&n_done) < o.conns && !atomic_load(&stop_flag) &&
				rs_now_ms() - t0 < 600000;
	     tick++) {
		usleep(20000);
		if (tick % 25 == 0) /* for memory-vs-consoles series */
			fprintf(stderr, "{\"event\":\"progress\",\"opened\":%llu,\"ms\":%llu}\n",
				(unsigned long long)atomic_load(&n_opened),
				(unsigned long long)(rs_now_ms() - t0));
	}
	ramp_ms = rs_now_ms() - t0;
	fprintf(stderr, "{\"event\":\"held\",\"opened\":%llu,\"tokens\":%llu,\"ramp_ms\":%llu}\n",
		(unsigned long long)n_opened, (unsigned long long)n_tokens,
		(unsigned long long)ramp_ms);
	atomic_store(&traffic, true);
	usleep(300000); /* every console has started (timer ticks are 20 ms) */
	t0 = rs_now_ms();
	{
		uint64_t b0 = atomic_load(&echo_bytes), m0 = atomic_load(&echo_msgs);

		for (unsigned i = 0; i < RTT_BUCKETS; i++)
			atomic_store(&rtt_hist[i], 0);
		for (unsigned tick = 1; strcmp(o.scenario, "tokens") && !atomic_load(&stop_flag) &&
					rs_now_ms() - t0 < (uint64_t)o.hold_s * 1000;
		     tick++) {
			usleep(50000);
			/* Drops while held, as they happen: a harness that stops
			 * the relay under the held consoles counts the drops
			 * from before its stop only. */
			if (tick % 5 == 0)
				fprintf(stderr,
					"{\"event\":\"holding\",\"opened\":%llu,"
					"\"dropped\":%llu,\"ms\":%llu}\n",
					(unsigned long long)atomic_load(&n_opened),
					(unsigned long long)atomic_load(&n_dropped),
					(unsigned long long)(rs_now_ms() - t0));
		}
		held_ms = rs_now_ms() - t0;
		atomic_store(&echo_bytes, atomic_load(&echo_bytes) - b0);
		atomic_store(&echo_msgs, atomic_load(&echo_msgs) - m0);
	}
	atomic_store(&stop_flag, true);
	pthread_mutex_lock(&lat_lock);
	qsort(lat_us, n_lat, sizeof(*lat_us), cmp_u32);
	printf("{\"scenario\":\"%s\",\"conns\":%u,\"tls\":%s,\"tokens\":%llu,\"opened\":%llu,"
	       "\"dropped_while_held\":%llu,\"ramp_ms\":%llu,\"held_ms\":%llu,"
	       "\"tls_resumed\":%llu,\"opened_per_s\":%.0f,\"tokens_per_s\":%.0f,\"setup_us\":{"
	       "\"p50\":%u,\"p99\":%u,\"max\":%u},\"failures\":{",
	       o.scenario, o.conns, o.tls ? "true" : "false", (unsigned long long)n_tokens,
	       (unsigned long long)n_opened, (unsigned long long)n_dropped,
	       (unsigned long long)ramp_ms, (unsigned long long)held_ms,
	       (unsigned long long)atomic_load(&n_resumed),
	       ramp_ms ? (double)n_opened * 1000.0 / (double)ramp_ms : 0.0,
	       ramp_ms ? (double)n_tokens * 1000.0 / (double)ramp_ms : 0.0, pct(50), pct(99),
	       n_lat ? lat_us[n_lat - 1] : 0);
	for (int i = 0; i < F__COUNT; i++)
		printf("%s\"%s\":%llu", i ? "," : "", fail_names[i],
		       (unsigned long long)atomic_load(&failures[i]));
	printf("},\"tls_suites\":");
	rs_bench_print_suites(stdout);
	printf(",\"msg_size\":%zu,\"echo_bytes_per_s\":%.0f,\"echo_msgs_per_s\":%.0f", o.msg_size,
	       held_ms ? (double)atomic_load(&echo_bytes) * 1000.0 / (double)held_ms : 0.0,
	       held_ms ? (double)atomic_load(&echo_msgs) * 1000.0 / (double)held_ms : 0.0);
	{
		uint64_t total = 0, seen = 0;
		const unsigned ps[] = {500, 990, 999};
		unsigned pi = 0;

		for (unsigned i = 0; i < RTT_BUCKETS; i++)
			total += atomic_load(&rtt_hist[i]);
		printf(",\"rtt_samples\":%llu,\"rtt_us\":{", (unsigned long long)total);
		for (unsigned i = 0; i < RTT_BUCKETS && total && pi < 3; i++) {
			seen += atomic_load(&rtt_hist[i]);
			while (pi < 3 && seen * 1000 >= total * ps[pi]) {
				printf("%s\"p%g\":%.1f", pi ? "," : "", ps[pi] / 10.0,
				       (double)bucket_ns(i + 1) / 1000.0);
				pi++;
			}
		}
		printf("}}\n");
	}
	fflush(stdout);
	pthread_mutex_unlock(&lat_lock);
	/* The kernel tears tens of thousands of sockets down faster than a
	 * graceful engine stop, and a load generator keeps no state worth it. */
	_exit(n_opened == o.conns && !n_dropped ? 0 : 1);

usage:
	fprintf(
	    stderr,
	    "usage: ringside-bench --api HOST:PORT --key KEY --target HOST:PORT [--ws HOST:PORT]\n"
	    "                      [--tls [--no-resume]] [--pve CLUSTER:NODE:VMID [--vmids K]]\n"
	    "                      [--scenario hold|setup|stream|latency|tokens] [--conns N] "
	    "[--batch N]\n"
	    "                      [--workers N] [--hold-seconds S] [--timeout-ms MS]\n"
	    "                      [--src-base B --src-count K] [--msg-size BYTES]\n"
	    "       ringside-bench --path / --ws HOST:PORT [--vnc-password PW] ...  (a peer "
	    "relay: no API)\n"
	    "       ringside-bench --raw --ws HOST:PORT ...  (RFB over TCP: no relay)\n");
	return 2;
}
