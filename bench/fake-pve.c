/* bench/fake-pve.c — a fast pveproxy-like endpoint for the bench harness's
 * Proxmox mode, on ringside's own io_uring engine and TLS code, so the
 * upstream is never what limits a measurement.
 *
 *   fake-pve --listen 127.0.0.1:8006 [--workers 1] [--mode echo|idle]
 *            [--state-dir DIR | --cert PEM --key PEM]
 *
 * HTTPS only, keep-alive, and just the calls of a console open (the shapes
 * of tests/pvesim, i.e. of the real API; nothing is authorised — any
 * credentials pass):
 *   POST .../access/ticket           a ticket and CSRF token
 *   GET  .../cluster/resources       VM 100 (qemu) on node "bench"
 *   GET  .../status/current          running
 *   POST .../vncproxy, .../termproxy port "5900", a vncticket, a password
 *   GET  .../vncwebsocket (Upgrade)  101 (subprotocol "binary" echoed), then
 *        RFB 3.8 in WebSocket frames: security type 2 (VNC authentication)
 *        with a random challenge, checked against the vncproxy password
 *        as real PVE does (a wrong answer: SecurityResult failed with a
 *        reason, then close), ClientInit, a 1024x768 ServerInit; then
 *        `echo` returns every payload byte in unmasked binary frames,
 *        `idle` reads and drops.
 * Anything else gets a 501. Pings are answered; a close frame is answered
 * and the connection closed. Runs until SIGTERM/SIGINT and prints one JSON
 * line with its counters.
 */
#include "core/common.h"

#include <getopt.h>
#include <stdatomic.h>
#include <strings.h>
#include <unistd.h>

#include "bench/fake.h"
#include "core/log.h"
#include "proto/rfb.h"
#include "proto/ws.h"
#include "tls/server.h"

enum stage { ST_HTTP = 0, ST_VERSION, ST_TYPE, ST_RESPONSE, ST_INIT, ST_RUN };

struct pconn {
	enum stage st;
	uint8_t got; /* bytes of the current RFB handshake message */
	uint8_t challenge[16], answer[16];
	bool refused;	  /* wrong VNC answer: the failure is queued, the rest ignored */
	size_t head_len;  /* ST_HTTP: bytes in head */
	size_t body_left; /* request body bytes still to skip */
	struct rs_ws_parser wp;
	char head[2048];
};

static bool echo_mode = true;
static struct rs_tls_server *tls;
static _Atomic uint64_t n_accepted, n_requests, n_upgrades, n_ready, n_auth_failed, bytes_echoed;
/* vncproxy's password: the VNC authentication key (DES uses 8 bytes). */
#define VNC_PASSWORD "benchpw1"

static const uint8_t SERVER_INIT[] = {
    0x04, 0x00, 0x03, 0x00,	      /* 1024 x 768 */
    32,	  24,	0,    1,	      /* bpp, depth, little endian, true colour */
    0,	  255,	0,    255,  0,	 255, /* max r, g, b */
    16,	  8,	0,    0,    0,	 0,   /* shifts, padding */
    0,	  0,	0,    5,    'b', 'e', 'n', 'c', 'h',
};

/* A header's value in a request head (case-insensitive name at a line
 * start), copied NUL-terminated into <out>; "" when absent. */
static const char *header(const char *head, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = strstr(head, "\r\n");

	out[0] = 0;
	while (p && p[2] != '\r') {
		p += 2;
		if (!strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1, *e = strstr(v, "\r\n");

			while (*v == ' ')
				v++;
			snprintf(out, cap, "%.*s", e ? (int)(e - v) : 0, v);
			break;
		}
		p = strstr(p, "\r\n");
	}
	return out;
}

static int answer(struct rs_conn *c, int status, const char *json)
{
	char out[1024];
	int n =
	    snprintf(out, sizeof(out),
		     "HTTP/1.1 %d %s\r\nServer: pve-api-daemon/3.0\r\nCache-Control: max-age=0\r\n"
		     "Connection: Keep-Alive\r\nContent-Type: application/json;charset=UTF-8\r\n"
		     "Content-Length: %zu\r\n\r\n%s",
		     status, status == 200 ? "OK" : "Not Implemented", strlen(json), json);

	atomic_fetch_add_explicit(&n_requests, 1, memory_order_relaxed);
	return rs_conn_send(c, out, (size_t)n);
}

static int send_frame(struct rs_conn *c, int op, const void *data, size_t len)
{
	uint8_t hdr[RS_WS_MAX_HEADER];
	size_t hl = rs_ws_frame_header(hdr, op, true, len, NULL);

	return rs_conn_send(c, hdr, hl) || (len && rs_conn_send(c, data, len)) ? -ENOMEM : 0;
}

static int upgrade(struct rs_conn *c, struct pconn *p)
{
	char key[64], proto[64], accept[29], out[512];
	int n;

	header(p->head, "Sec-WebSocket-Key", key, sizeof(key));
	header(p->head, "Sec-WebSocket-Protocol", proto, sizeof(proto));
	rs_ws_accept_key(key, accept);
	n = snprintf(
	    out, sizeof(out),
	    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
	    "Sec-WebSocket-Accept: %s\r\n%s\r\n",
	    accept, strstr(proto, "binary") ? "Sec-WebSocket-Protocol: binary\r\n" : "");
	atomic_fetch_add_explicit(&n_upgrades, 1, memory_order_relaxed);
	p->st = ST_VERSION;
	rs_ws_parser_init(&p->wp, true, 1 << 20, UINT64_MAX);
	if (rs_conn_send(c, out, (size_t)n))
		return -ENOMEM;
	return send_frame(c, RS_WS_OP_BINARY, "RFB 003.008\n", 12);
}

/* One complete request head in p->head: answer it. */
static int request(struct rs_conn *c, struct pconn *p)
{
	char v[32];
	const char *path = strchr(p->head, ' ');

	p->body_left = strtoul(header(p->head, "Content-Length", v, sizeof(v)), NULL, 10);
	if (!path)
		return answer(c, 501, "{\"data\":null}");
	if (strstr(path, "/vncwebsocket?") && *header(p->head, "Upgrade", v, sizeof(v)))
		return upgrade(c, p);
	if (strstr(path, "/access/ticket "))
		return answer(
		    c, 200,
		    "{\"data\":{\"username\":\"bench@pve\",\"CSRFPreventionToken\":"
		    "\"6789ABCD:bench0csrf0token0bench0csrf0tok\",\"ticket\":\"PVE:bench@pve:"
		    "6789ABCD::bench0ticket0signature0bench0ticket0signature\"}}");
	if (strstr(path, "/cluster/resources"))
		return answer(c, 200,
			      "{\"data\":[{\"id\":\"qemu/100\",\"type\":\"qemu\",\"vmid\":100,"
			      "\"node\":\"bench\",\"status\":\"running\",\"name\":\"bench\"}]}");
	if (strstr(path, "/status/current "))
		return answer(
		    c, 200,
		    "{\"data\":{\"status\":\"running\",\"qmpstatus\":\"running\",\"vmid\":100,"
		    "\"name\":\"bench\"}}");
	if (strstr(path, "/vncproxy ") || strstr(path, "/termproxy "))
		return answer(
		    c, 200,
		    "{\"data\":{\"port\":\"5900\",\"user\":\"bench@pve\",\"password\":"
		    "\"" VNC_PASSWORD
		    "\",\"upid\":\"UPID:bench:00001234:00005678:6789ABCD:vncproxy:"
		    "100:bench@pve:\",\"ticket\":\"PVEVNC:6789ABCD::bench0vnc0ticket0signature\"}"
		    "}");
	return answer(c, 501, "{\"data\":null}");
}

/* RFB bytes from the client, unmasked: the handshake, then echo. */
static int rfb_bytes(struct rs_conn *c, struct pconn *p, struct rs_buf *b, const uint8_t *data,
		     size_t len)
{
	static const uint8_t need[] = {
	    [ST_VERSION] = 12, [ST_TYPE] = 1, [ST_RESPONSE] = 16, [ST_INIT] = 1};
	static const uint8_t refused[] = "\0\0\0\1\0\0\0\025authentication failed";
	uint8_t expect[16];
	int ret = 0;

	if (p->refused)
		return 0;
	while (len && p->st != ST_RUN) {
		size_t n = RS_MIN(len, (size_t)(need[p->st] - p->got));

		if (p->st == ST_RESPONSE)
			memcpy(p->answer + p->got, data, n);
		p->got = (uint8_t)(p->got + n);
		data += n;
		len -= n;
		if (p->got < need[p->st])
			return 0;
		p->got = 0;
		if (p->st == ST_VERSION) {
			ret = send_frame(c, RS_WS_OP_BINARY, "\x01\x02", 2); /* VNC auth only */
		} else if (p->st == ST_TYPE) {
			rs_random(p->challenge, sizeof(p->challenge));
			ret = send_frame(c, RS_WS_OP_BINARY, p->challenge, sizeof(p->challenge));
		} else if (p->st == ST_RESPONSE) {
			rs_rfb_vnc_auth_response(VNC_PASSWORD, p->challenge, expect);
			if (memcmp(expect, p->answer, sizeof(expect))) {
				atomic_fetch_add_explicit(&n_auth_failed, 1, memory_order_relaxed);
				p->refused = true;
				ret = send_frame(c, RS_WS_OP_BINARY, refused, sizeof(refused) - 1);
				rs_conn_close_after_send(c);
				return ret;
			}
			ret = send_frame(c, RS_WS_OP_BINARY, "\0\0\0\0", 4);
		} else {
			ret = send_frame(c, RS_WS_OP_BINARY, SERVER_INIT, sizeof(SERVER_INIT));
			atomic_fetch_add_explicit(&n_ready, 1, memory_order_relaxed);
			rs_bench_count_suite(c);
		}
		p->st++;
		if (ret)
			return ret;
	}
	if (!len || !echo_mode)
		return 0;
	{
		uint8_t hdr[RS_WS_MAX_HEADER];
		size_t hl = rs_ws_frame_header(hdr, RS_WS_OP_BINARY, true, len, NULL);

		if (rs_conn_send(c, hdr, hl) || rs_conn_send_buf(c, b, (uint8_t *)data, len))
			return -ENOMEM;
	}
	atomic_fetch_add_explicit(&bytes_echoed, len, memory_order_relaxed);
	if (rs_conn_congested(c)) /* a relay that does not read its echo stops being read */
		rs_conn_pause(c);
	return 0;
}

static int ws_bytes(struct rs_conn *c, struct pconn *p, struct rs_buf *b, uint8_t *data, size_t len)
{
	while (len) {
		struct rs_ws_event ev;
		int n = rs_ws_parse(&p->wp, data, len, &ev);

		if (n < 0 || ev.type == RS_WS_EV_ERROR || ev.type == RS_WS_EV_CLOSE) {
			if (ev.type == RS_WS_EV_CLOSE)
				send_frame(c, RS_WS_OP_CLOSE, "\x03\xe8", 2);
			rs_conn_close_after_send(c);
			return 0;
		}
		data += n;
		len -= (size_t)n;
		if (ev.type == RS_WS_EV_DATA && rfb_bytes(c, p, b, ev.data, ev.len))
			return -ENOMEM;
		if (ev.type == RS_WS_EV_PING && send_frame(c, RS_WS_OP_PONG, ev.data, ev.len))
			return -ENOMEM;
		if (!n && ev.type == RS_WS_EV_NONE)
			break;
	}
	return 0;
}

static void p_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *data, size_t len)
{
	struct pconn *p = rs_conn_ctx(c);
	int ret = 0;

	while (len && p->st == ST_HTTP && !ret) {
		size_t skip = RS_MIN(len, p->body_left), n;
		char *end;

		data += skip;
		len -= skip;
		p->body_left -= skip;
		if (!len)
			return;
		n = RS_MIN(len, sizeof(p->head) - 1 - p->head_len);
		memcpy(p->head + p->head_len, data, n);
		p->head[p->head_len + n] = 0;
		end = strstr(p->head, "\r\n\r\n");
		if (!end) {
			p->head_len += n;
			if (p->head_len == sizeof(p->head) - 1)
				ret = -EMSGSIZE;
			data += n;
			len -= n;
			continue;
		}
		/* Bytes of <data> that belong to this head; the rest is the body
		 * (skipped at the top of the loop) or the next request. */
		n = (size_t)(end + 4 - p->head) - p->head_len;
		end[4] = 0;
		data += n;
		len -= n;
		p->head_len = 0;
		ret = request(c, p);
	}
	if (!ret && len && p->st != ST_HTTP)
		ret = ws_bytes(c, p, b, data, len);
	if (ret)
		rs_conn_close(c, RS_CLOSE_ERROR, -ret);
}

static const struct rs_conn_ops pops = {
    .on_data = p_on_data,
    .on_drain = rs_fake_on_drain,
    .on_close = rs_fake_on_close,
};

static void p_on_accept(struct rs_conn *c, void *arg)
{
	struct pconn *p = calloc(1, sizeof(*p));

	(void)arg;
	rs_conn_set_ops(c, &pops, p);
	if (!p || rs_tls_server_attach(tls, c)) {
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
	    {"state-dir", required_argument, NULL, 's'},
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {NULL, 0, NULL, 0},
	};
	struct rs_engine_opts eo = {.workers = 1, .pin = false, .max_conns = 131072};
	struct rs_tls_cert_files files = {0};
	struct rs_tls_server_opts to = {.state_dir = "/tmp", .ticket_rotation_s = 3600};
	const char *listen = "127.0.0.1:8006";
	char err[256];
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'l')
			listen = optarg;
		else if (opt == 'w')
			eo.workers = (unsigned)atoi(optarg);
		else if (opt == 'm' && (!strcmp(optarg, "echo") || !strcmp(optarg, "idle")))
			echo_mode = !strcmp(optarg, "echo");
		else if (opt == 's')
			to.state_dir = optarg;
		else if (opt == 'c')
			files.cert = optarg;
		else if (opt == 'k')
			files.key = optarg;
		else
			goto usage;
	}
	if (!!files.cert != !!files.key)
		goto usage;
	if (files.cert) {
		to.certs = &files;
		to.n_certs = 1;
	}
	rs_log_set_level(RS_LOG_WARN); /* before the TLS setup logs */
	if (rs_tls_server_new(&tls, &to, err, sizeof(err))) {
		fprintf(stderr, "fake-pve: %s\n", err);
		return 1;
	}
	ret = rs_fake_serve("fake-pve", &eo, listen, p_on_accept);
	if (ret)
		return ret;
	printf("{\"accepted\":%llu,\"requests\":%llu,\"upgrades\":%llu,\"ready\":%llu,"
	       "\"auth_failed\":%llu,\"bytes_echoed\":%llu,\"suites\":",
	       (unsigned long long)n_accepted, (unsigned long long)n_requests,
	       (unsigned long long)n_upgrades, (unsigned long long)n_ready,
	       (unsigned long long)n_auth_failed, (unsigned long long)bytes_echoed);
	rs_bench_print_suites(stdout);
	printf("}\n");
	fflush(stdout);
	_exit(0); /* no graceful stop of every connection: the kernel is faster */

usage:
	fprintf(stderr, "usage: fake-pve --listen HOST:PORT [--workers N] [--mode echo|idle]\n"
			"                [--state-dir DIR | --cert PEM --key PEM]\n");
	return 2;
}
