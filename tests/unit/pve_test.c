#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto/http_resp.h"
#include "proto/pve.h"
#include "proto/pve_up.h"

#define HOST	   "pve1:8006"
#define PW	   "8T:,O)X\\"
#define PW_ENC	   "8T%3A%2CO%29X%5C"
#define VT	   "8T:,O)X\\:PVEVNC:6A4BB5CD::LwJk+/ab=="
#define VT_ENC	   "8T%3A%2CO%29X%5C%3APVEVNC%3A6A4BB5CD%3A%3ALwJk%2B%2Fab%3D%3D"
#define TICKET	   "PVE:relay@pve:6A4BB5CD::sig+/="
#define TICKET_ENC "PVE%3Arelay%40pve%3A6A4BB5CD%3A%3Asig%2B%2F%3D"
#define WS_KEY	   "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT  "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const struct rs_pve_auth TOKEN = {
    .kind = RS_PVE_AUTH_TOKEN,
    .token_id = "relay@pve!console",
    .secret = "0b5c9a4e-1111-2222-3333-444455556666",
};
static const struct rs_pve_auth TICKET_AUTH = {
    .kind = RS_PVE_AUTH_TICKET,
    .ticket = TICKET,
    .csrf = "6A4BB5CD:csrfcsrfcsrf",
};

/* Build into a buffer and compare with <want> byte for byte; also check
 * that one byte less of room is -ENOSPC (the NUL needs its byte). */
#define EXPECT_REQ(want, call_with_out_cap)                                                        \
	do {                                                                                       \
		char out_[4096];                                                                   \
		char *out = out_;                                                                  \
		size_t cap = sizeof(out_);                                                         \
		int n_ = (call_with_out_cap);                                                      \
		assert_int_equal(n_, (int)strlen(want));                                           \
		assert_string_equal(out_, want);                                                   \
		cap = strlen(want);                                                                \
		assert_int_equal((call_with_out_cap), -ENOSPC);                                    \
		cap = strlen(want) + 1;                                                            \
		assert_int_equal((call_with_out_cap), (int)strlen(want));                          \
	} while (0)

static void test_login_request(void **st)
{
	const char *want = "POST /api2/json/access/ticket HTTP/1.1\r\n"
			   "Host: pve1:8006\r\n"
			   "User-Agent: ringside\r\n"
			   "Connection: keep-alive\r\n"
			   "Content-Type: application/x-www-form-urlencoded\r\n"
			   "Content-Length: 46\r\n"
			   "\r\n"
			   "username=relay%40pve&password=" PW_ENC;
	const char *renew = "POST /api2/json/access/ticket HTTP/1.1\r\n"
			    "Host: pve1:8006\r\n"
			    "User-Agent: ringside\r\n"
			    "Connection: keep-alive\r\n"
			    "Content-Type: application/x-www-form-urlencoded\r\n"
			    "Content-Length: 91\r\n"
			    "\r\n"
			    "username=relay%40pve&password=" TICKET_ENC "%2Bx%26y%25z%20";

	(void)st;
	EXPECT_REQ(want, rs_pve_req_login(out, cap, HOST, "relay@pve", PW));
	EXPECT_REQ(renew, rs_pve_req_login(out, cap, HOST, "relay@pve", TICKET "+x&y%z "));
}

static void test_vncproxy_qemu_never_sends_size(void **st)
{
	const char *want = "POST /api2/json/nodes/pve1/qemu/100/vncproxy HTTP/1.1\r\n"
			   "Host: pve1:8006\r\n"
			   "User-Agent: ringside\r\n"
			   "Authorization: PVEAPIToken=relay@pve!console="
			   "0b5c9a4e-1111-2222-3333-444455556666\r\n"
			   "Connection: keep-alive\r\n"
			   "Content-Type: application/x-www-form-urlencoded\r\n"
			   "Content-Length: 11\r\n"
			   "\r\n"
			   "websocket=1";

	(void)st;
	EXPECT_REQ(
	    want, rs_pve_req_vncproxy(out, cap, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 100, 1024, 768));
	EXPECT_REQ(want,
		   rs_pve_req_vncproxy(out, cap, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 100, 0, 0));
}

static void test_vncproxy_lxc_ticket_auth(void **st)
{
	const char *want = "POST /api2/json/nodes/pve-2.lab/lxc/999999999/vncproxy HTTP/1.1\r\n"
			   "Host: pve1:8006\r\n"
			   "User-Agent: ringside\r\n"
			   "Cookie: PVEAuthCookie=" TICKET_ENC "\r\n"
			   "CSRFPreventionToken: 6A4BB5CD:csrfcsrfcsrf\r\n"
			   "Connection: keep-alive\r\n"
			   "Content-Type: application/x-www-form-urlencoded\r\n"
			   "Content-Length: 32\r\n"
			   "\r\n"
			   "websocket=1&width=800&height=600";
	char buf[2048];

	(void)st;
	EXPECT_REQ(want, rs_pve_req_vncproxy(out, cap, HOST, &TICKET_AUTH, "pve-2.lab", RS_PVE_LXC,
					     999999999, 800, 600));
	assert_int_equal(rs_pve_req_vncproxy(buf, sizeof(buf), HOST, &TICKET_AUTH, "pve1",
					     RS_PVE_LXC, 100, 15, 600),
			 -EINVAL);
	assert_int_equal(rs_pve_req_vncproxy(buf, sizeof(buf), HOST, &TICKET_AUTH, "pve1",
					     RS_PVE_LXC, 100, 800, 2161),
			 -EINVAL);
	assert_true(rs_pve_req_vncproxy(buf, sizeof(buf), HOST, &TICKET_AUTH, "pve1", RS_PVE_LXC,
					100, 800, 0) > 0);
	assert_non_null(strstr(buf, "\r\n\r\nwebsocket=1&width=800"));
	assert_null(strstr(buf, "height"));
}

static void test_termproxy_resources_status(void **st)
{
	const char *term = "POST /api2/json/nodes/pve1/lxc/101/termproxy HTTP/1.1\r\n"
			   "Host: pve1:8006\r\n"
			   "User-Agent: ringside\r\n"
			   "Cookie: PVEAuthCookie=" TICKET_ENC "\r\n"
			   "CSRFPreventionToken: 6A4BB5CD:csrfcsrfcsrf\r\n"
			   "Connection: keep-alive\r\n"
			   "Content-Length: 0\r\n"
			   "\r\n";
	/* A GET with a ticket carries no CSRF token. */
	const char *res = "GET /api2/json/cluster/resources?type=vm HTTP/1.1\r\n"
			  "Host: pve1:8006\r\n"
			  "User-Agent: ringside\r\n"
			  "Cookie: PVEAuthCookie=" TICKET_ENC "\r\n"
			  "Connection: keep-alive\r\n"
			  "\r\n";
	const char *stat = "GET /api2/json/nodes/pve1/qemu/100/status/current HTTP/1.1\r\n"
			   "Host: pve1:8006\r\n"
			   "User-Agent: ringside\r\n"
			   "Authorization: PVEAPIToken=relay@pve!console="
			   "0b5c9a4e-1111-2222-3333-444455556666\r\n"
			   "Connection: keep-alive\r\n"
			   "\r\n";

	(void)st;
	EXPECT_REQ(term,
		   rs_pve_req_termproxy(out, cap, HOST, &TICKET_AUTH, "pve1", RS_PVE_LXC, 101));
	EXPECT_REQ(res, rs_pve_req_resources(out, cap, HOST, &TICKET_AUTH));
	EXPECT_REQ(stat, rs_pve_req_status(out, cap, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 100));
}

static void test_vncwebsocket_request(void **st)
{
	const char *want =
	    "GET /api2/json/nodes/pve1/qemu/100/vncwebsocket?port=5900&vncticket=" VT_ENC
	    " HTTP/1.1\r\n"
	    "Host: pve1:8006\r\n"
	    "User-Agent: ringside\r\n"
	    "Cookie: PVEAuthCookie=" TICKET_ENC "\r\n"
	    "Upgrade: websocket\r\n"
	    "Connection: Upgrade\r\n"
	    "Sec-WebSocket-Version: 13\r\n"
	    "Sec-WebSocket-Key: " WS_KEY "\r\n"
	    "Sec-WebSocket-Protocol: binary\r\n"
	    "\r\n";
	char enc[128];

	(void)st;
	EXPECT_REQ(want, rs_pve_req_vncwebsocket(out, cap, HOST, &TICKET_AUTH, "pve1", RS_PVE_QEMU,
						 100, 5900, VT, WS_KEY));
	assert_int_equal(rs_pve_pct_encode(enc, sizeof(enc), VT), (int)strlen(VT_ENC));
	assert_string_equal(enc, VT_ENC);
	assert_int_equal(rs_pve_pct_encode(enc, 4, "a:b"), -ENOSPC);
}

static void test_builders_refuse_bad_input(void **st)
{
	struct rs_pve_auth no_csrf = TICKET_AUTH, eq_secret = TOKEN, sp_token = TOKEN;
	char big[80], buf[4096];
	const size_t c = sizeof(buf);

	(void)st;
	no_csrf.csrf = NULL;
	eq_secret.secret = "abc=def";
	sp_token.token_id = "relay@pve !x";
	memset(big, 'a', 64);
	big[64] = '\0';
	assert_int_equal(rs_pve_req_login(buf, c, HOST, "relay@pve", "pw\r\nX: y"), -EINVAL);
	assert_int_equal(rs_pve_req_login(buf, c, HOST, "relay@pve\n", "pw"), -EINVAL);
	assert_int_equal(rs_pve_req_login(buf, c, "pve1\r\nX: y", "u@pve", "pw"), -EINVAL);
	assert_int_equal(rs_pve_req_login(buf, c, "", "u@pve", "pw"), -EINVAL);
	assert_int_equal(rs_pve_req_status(buf, c, HOST, &TOKEN, "pve 1", RS_PVE_QEMU, 100),
			 -EINVAL);
	assert_int_equal(rs_pve_req_status(buf, c, HOST, &TOKEN, "pve/../x", RS_PVE_QEMU, 100),
			 -EINVAL);
	assert_int_equal(rs_pve_req_status(buf, c, HOST, &TOKEN, "", RS_PVE_QEMU, 100), -EINVAL);
	assert_int_equal(rs_pve_req_status(buf, c, HOST, &TOKEN, big, RS_PVE_QEMU, 100), -EINVAL);
	big[63] = '\0';
	assert_true(rs_pve_req_status(buf, c, HOST, &TOKEN, big, RS_PVE_QEMU, 100) > 0);
	assert_int_equal(rs_pve_req_status(buf, c, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 99), -EINVAL);
	assert_int_equal(rs_pve_req_status(buf, c, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 1000000000),
			 -EINVAL);
	assert_int_equal(
	    rs_pve_req_status(buf, c, HOST, &TOKEN, "pve1", (enum rs_pve_vmtype)7, 100), -EINVAL);
	/* A POST with a ticket needs the CSRF token; a GET does not. */
	assert_int_equal(rs_pve_req_termproxy(buf, c, HOST, &no_csrf, "pve1", RS_PVE_QEMU, 100),
			 -EINVAL);
	assert_true(rs_pve_req_resources(buf, c, HOST, &no_csrf) > 0);
	assert_int_equal(rs_pve_req_resources(buf, c, HOST, &eq_secret), -EINVAL);
	assert_int_equal(rs_pve_req_resources(buf, c, HOST, &sp_token), -EINVAL);
	assert_int_equal(rs_pve_req_resources(buf, c, HOST, NULL), -EINVAL);
	assert_int_equal(rs_pve_req_vncwebsocket(buf, c, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 100,
						 6000, VT, WS_KEY),
			 -EINVAL);
	assert_int_equal(rs_pve_req_vncwebsocket(buf, c, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 100,
						 5999, VT "\n", WS_KEY),
			 -EINVAL);
	assert_int_equal(rs_pve_req_vncwebsocket(buf, c, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 100,
						 5999, VT, "short"),
			 -EINVAL);
	assert_int_equal(rs_pve_req_vncwebsocket(buf, c, HOST, &TOKEN, "pve1", RS_PVE_QEMU, 100,
						 5999, VT, "dGhlIHNhbXBsZSBub25jZQ=\n"),
			 -EINVAL);
	assert_int_equal(rs_pve_req_resources(buf, 0, HOST, &TOKEN), -ENOSPC);
}

/* --- Response parser --- */

struct parsed {
	int rc; /* total bytes consumed, or RS_PARSE_ERROR */
	bool done;
};

/* Feed <s> in two pieces split at <split>, then call eof if asked. */
static struct parsed feed_split(struct rs_http_resp_parser *p, const char *s, size_t len,
				size_t split, bool eof)
{
	struct parsed r = {0, false};
	int n = rs_http_resp_feed(p, (const uint8_t *)s, split);

	if (n < 0) {
		r.rc = n;
		return r;
	}
	r.rc = n;
	if (!rs_http_resp_done(p)) {
		assert_int_equal(n, (int)split);
		n = rs_http_resp_feed(p, (const uint8_t *)s + split, len - split);
		if (n < 0) {
			r.rc = n;
			return r;
		}
		r.rc += n;
	}
	if (eof && rs_http_resp_eof(p) < 0)
		r.rc = RS_PARSE_ERROR;
	r.done = rs_http_resp_done(p);
	return r;
}

/* Byte at a time, as the worst split of all. */
static struct parsed feed_bytes(struct rs_http_resp_parser *p, const char *s, size_t len, bool eof)
{
	struct parsed r = {0, false};

	for (size_t i = 0; i < len && !rs_http_resp_done(p); i++) {
		int n = rs_http_resp_feed(p, (const uint8_t *)s + i, 1);

		if (n < 0) {
			r.rc = n;
			return r;
		}
		r.rc += n;
	}
	if (eof && rs_http_resp_eof(p) < 0)
		r.rc = RS_PARSE_ERROR;
	r.done = rs_http_resp_done(p);
	return r;
}

struct resp_case {
	const char *raw;
	size_t consumed; /* expected bytes consumed */
	bool eof;	 /* the body runs to the close */
	int status;
	const char *reason;
	const char *body; /* NULL: empty */
	bool keep_alive;
};

static void check_case(const struct resp_case *c)
{
	size_t len = strlen(c->raw);

	for (size_t split = 0; split <= len + 1; split++) {
		struct rs_http_resp_parser p;
		struct parsed r;

		rs_http_resp_init(&p, 0);
		assert_null(p.resp.body); /* idle: no heap */
		if (split <= len)
			r = feed_split(&p, c->raw, len, split, c->eof);
		else
			r = feed_bytes(&p, c->raw, len, c->eof);
		assert_int_equal(r.rc, (int)c->consumed);
		assert_true(r.done);
		assert_int_equal(p.resp.status, c->status);
		assert_string_equal(p.resp.reason, c->reason);
		assert_int_equal(p.resp.keep_alive, c->keep_alive);
		if (c->body) {
			assert_int_equal(p.resp.body_len, strlen(c->body));
			assert_string_equal((const char *)p.resp.body, c->body);
		} else {
			assert_null(p.resp.body);
			assert_int_equal(p.resp.body_len, 0);
		}
		rs_http_resp_release(&p);
		assert_null(p.resp.body);
	}
}

#define LOGIN_BODY                                                                                 \
	"{\"data\":{\"username\":\"relay@pve\",\"ticket\":\"PVE:relay@pve:6A4BB5CD::c2ln\","       \
	"\"CSRFPreventionToken\":\"6A4BB5CD:abc\",\"cap\":{\"vms\":{\"VM.Console\":1}}}}"
#define STR_(x) #x
#define STR(x)	STR_(x)

static void test_resp_every_split(void **st)
{
	static const char login[] = "HTTP/1.1 200 OK\r\n"
				    "Connection: Keep-Alive\r\n"
				    "Content-Type: application/json;charset=UTF-8\r\n"
				    "Server: pve-api-daemon/3.0\r\n"
				    "Content-Length: 141\r\n"
				    "\r\n" LOGIN_BODY;
	static const char chunked[] = "HTTP/1.1 200 OK\r\n"
				      "Transfer-Encoding: chunked\r\n"
				      "Content-Type: application/json;charset=UTF-8\r\n"
				      "\r\n"
				      "a\r\n{\"data\":{\"\r\n"
				      "15;x=y\r\nport\":5900,\"user\":\"u\"\r\n"
				      "3\r\n}}\n\r\n"
				      "0\r\nX-Trailer: 1\r\n\r\n";
	static const char unauth[] = "HTTP/1.1 401 authentication failure\r\n"
				     "Cache-Control: max-age=0\r\n"
				     "Connection: close\r\n"
				     "Content-Length: 0\r\n"
				     "\r\n";
	static const char unreach[] = "HTTP/1.1 595 Errors during connection establishment, proxy "
				      "handshake: No route to host\r\n"
				      "Connection: close\r\n"
				      "\r\n";
	static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n"
				      "HTTP/1.0 200 OK\r\n"
				      "Content-Type: application/json\r\n"
				      "\r\n"
				      "{\"data\":{}}";
	static const char upgrade[] = "HTTP/1.1 101 Switching Protocols\r\n"
				      "Upgrade: websocket\r\n"
				      "Connection: upgrade\r\n"
				      "Sec-WebSocket-Accept: " WS_ACCEPT "\r\n"
				      "Sec-WebSocket-Protocol: binary\r\n"
				      "\r\n"
				      "\x82\x0cRFB 003.008\n";
	/* What pveproxy really sends for a call it proxies to pvedaemon: the
	 * daemon's "Connection: close" copied, then "Keep-Alive" pushed
	 * (pve-http-server AnyEvent.pm proxy_request + response()). */
	static const char proxied[] = "HTTP/1.1 200 OK\r\n"
				      "Cache-Control: max-age=0\r\n"
				      "Connection: close\r\n"
				      "Connection: Keep-Alive\r\n"
				      "Date: Mon, 07 Dec 2026 02:55:33 GMT\r\n"
				      "Pragma: no-cache\r\n"
				      "Server: pve-api-daemon/3.0\r\n"
				      "Content-Length: 141\r\n"
				      "Content-Type: application/json;charset=UTF-8\r\n"
				      "Expires: Mon, 07 Dec 2026 02:55:33 GMT\r\n"
				      "\r\n" LOGIN_BODY;
	/* The auth handler's 401: no body, no length, closed (AnyEvent.pm
	 * error() with empty content). */
	static const char noticket[] = "HTTP/1.1 401 No ticket\r\n"
				       "Cache-Control: max-age=0\r\n"
				       "Connection: close\r\n"
				       "Date: Mon, 07 Dec 2026 02:55:33 GMT\r\n"
				       "Pragma: no-cache\r\n"
				       "Server: pve-api-daemon/3.0\r\n"
				       "Expires: Mon, 07 Dec 2026 02:55:33 GMT\r\n"
				       "\r\n";
	static const char hostname[] = "HTTP/1.1 500 hostname lookup 'pve9' failed - failed to get "
				       "address info for: pve9: Name or service not known\r\n"
				       "Cache-Control: max-age=0\r\n"
				       "Connection: close\r\n"
				       "Server: pve-api-daemon/3.0\r\n"
				       "\r\n";
	const struct resp_case cases[] = {
	    {login, sizeof(login) - 1, false, 200, "OK", LOGIN_BODY, true},
	    {proxied, sizeof(proxied) - 1, false, 200, "OK", LOGIN_BODY, false},
	    {noticket, sizeof(noticket) - 1, true, 401, "No ticket", NULL, false},
	    {hostname, sizeof(hostname) - 1, true, 500,
	     "hostname lookup 'pve9' failed - failed to get address info for: pve9: Name or "
	     "service not known",
	     NULL, false},
	    {chunked, sizeof(chunked) - 1, false, 200, "OK",
	     "{\"data\":{\"port\":5900,\"user\":\"u\"}}\n", true},
	    {unauth, sizeof(unauth) - 1, false, 401, "authentication failure", NULL, false},
	    /* no length, no chunking: the body (here none) ends at the close */
	    {unreach, sizeof(unreach) - 1, true, 595,
	     "Errors during connection establishment, proxy handshake: No route to host", NULL,
	     false},
	    /* an interim 100 is skipped; HTTP/1.0 body read until the close */
	    {interim, sizeof(interim) - 1, true, 200, "OK", "{\"data\":{}}", false},
	    {upgrade, sizeof(upgrade) - 1 - 14, false, 101, "Switching Protocols", NULL, true},
	};

	(void)st;
	assert_int_equal(strlen(LOGIN_BODY), 141);
	for (size_t i = 0; i < RS_ARRAY_SIZE(cases); i++)
		check_case(&cases[i]);
}

/* RFC 9110 section 5.3: repeated list headers are one list. */
static void test_resp_repeated_headers_combined(void **st)
{
	static const char two[] = "HTTP/1.1 200 OK\r\n"
				  "Connection: close\r\n"
				  "Connection: Keep-Alive\r\n"
				  "Content-Length: 2\r\n"
				  "\r\n{}";
	static const char up[] = "HTTP/1.1 101 Switching Protocols\r\n"
				 "Upgrade: websocket\r\n"
				 "Connection: Keep-Alive\r\n"
				 "Connection: upgrade\r\n"
				 "Sec-WebSocket-Accept: " WS_ACCEPT "\r\n"
				 "\r\n";
	static const char protos[] = "HTTP/1.1 101 Switching Protocols\r\n"
				     "Upgrade: websocket\r\n"
				     "Connection: upgrade\r\n"
				     "Sec-WebSocket-Accept: " WS_ACCEPT "\r\n"
				     "Sec-WebSocket-Protocol: binary\r\n"
				     "Sec-WebSocket-Protocol: base64\r\n"
				     "\r\n";
	struct rs_http_resp_parser p;
	struct rs_pve_error err;

	(void)st;
	rs_http_resp_init(&p, 0);
	assert_int_equal(rs_http_resp_feed(&p, (const uint8_t *)two, sizeof(two) - 1),
			 (int)sizeof(two) - 1);
	assert_true(rs_http_resp_done(&p));
	assert_string_equal(p.resp.connection, "close, Keep-Alive");
	rs_http_resp_reset(&p);
	assert_int_equal(rs_http_resp_feed(&p, (const uint8_t *)up, sizeof(up) - 1),
			 (int)sizeof(up) - 1);
	assert_string_equal(p.resp.connection, "Keep-Alive, upgrade");
	assert_int_equal(rs_pve_check_upgrade(&p.resp, WS_KEY, &err), RS_PVE_OK);
	rs_http_resp_reset(&p);
	/* two subprotocols combine into a list that is not our "binary" */
	assert_int_equal(rs_http_resp_feed(&p, (const uint8_t *)protos, sizeof(protos) - 1),
			 (int)sizeof(protos) - 1);
	assert_string_equal(p.resp.ws_protocol, "binary, base64");
	assert_int_equal(rs_pve_check_upgrade(&p.resp, WS_KEY, &err), RS_PVE_E_UPGRADE);
	rs_http_resp_release(&p);
}

static void test_resp_101_headers_and_check(void **st)
{
	static const char up[] = "HTTP/1.1 101 Switching Protocols\r\n"
				 "Upgrade: websocket\r\n"
				 "Connection: upgrade\r\n"
				 "Sec-WebSocket-Accept: " WS_ACCEPT "\r\n"
				 "Sec-WebSocket-Protocol: binary\r\n"
				 "\r\n"
				 "\x82\x0cRFB 003.008\n";
	struct rs_http_resp_parser p;
	struct rs_pve_error err;
	int n;

	(void)st;
	rs_http_resp_init(&p, 0);
	n = rs_http_resp_feed(&p, (const uint8_t *)up, sizeof(up) - 1);
	assert_int_equal(n, (int)sizeof(up) - 1 - 14);
	assert_memory_equal(up + n, "\x82\x0cRFB", 5);
	assert_true(p.resp.upgraded);
	assert_string_equal(p.resp.ws_accept, WS_ACCEPT);
	assert_int_equal(rs_pve_check_upgrade(&p.resp, WS_KEY, &err), RS_PVE_OK);
	/* a done parser takes nothing more */
	assert_int_equal(rs_http_resp_feed(&p, (const uint8_t *)up + n, 14), 0);

	/* protocol absent is fine (PVE >= 7 echoes only what was sent) */
	p.resp.has_ws_protocol = false;
	p.resp.ws_protocol[0] = '\0';
	assert_int_equal(rs_pve_check_upgrade(&p.resp, WS_KEY, &err), RS_PVE_OK);
	strcpy(p.resp.ws_protocol, "binary, base64");
	p.resp.has_ws_protocol = true;
	assert_int_equal(rs_pve_check_upgrade(&p.resp, WS_KEY, &err), RS_PVE_E_UPGRADE);
	strcpy(p.resp.ws_protocol, "binary");
	assert_int_equal(rs_pve_check_upgrade(&p.resp, "AAAAAAAAAAAAAAAAAAAAAA==", &err),
			 RS_PVE_E_UPGRADE);
	assert_non_null(strstr(err.detail, "Accept"));
	strcpy(p.resp.upgrade, "h2c");
	assert_int_equal(rs_pve_check_upgrade(&p.resp, WS_KEY, &err), RS_PVE_E_UPGRADE);
	/* a refused upgrade is an ordinary API error */
	p.resp.status = 401;
	strcpy(p.resp.reason, "No ticket");
	assert_int_equal(rs_pve_check_upgrade(&p.resp, WS_KEY, &err), RS_PVE_E_AUTH);
	assert_string_equal(err.detail, "No ticket");
	rs_http_resp_release(&p);
}

static void expect_resp_error(const char *raw, size_t max_body, bool eof)
{
	struct rs_http_resp_parser p;
	int n;

	rs_http_resp_init(&p, max_body);
	n = rs_http_resp_feed(&p, (const uint8_t *)raw, strlen(raw));
	if (n >= 0 && eof)
		n = rs_http_resp_eof(&p);
	assert_int_equal(n, RS_PARSE_ERROR);
	assert_non_null(rs_http_resp_error(&p));
	assert_false(rs_http_resp_done(&p));
	assert_int_equal(rs_http_resp_feed(&p, (const uint8_t *)"HTTP", 4), RS_PARSE_ERROR);
	rs_http_resp_release(&p);
}

static void test_resp_errors_and_limits(void **st)
{
	char big[RS_HTTP_RESP_MAX_HEAD + 64];

	(void)st;
	expect_resp_error("HTTX/1.1 200 OK\r\n\r\n", 0, false);
	expect_resp_error("HTTP/1.1 2000 OK\r\n\r\n", 0, false);
	expect_resp_error("HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n", 64, false);
	expect_resp_error("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 0,
			  false);
	expect_resp_error(
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
	    "1\r\nx\r\n",
	    64, false);
	expect_resp_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, false);
	expect_resp_error("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\n"
			  "Sec-WebSocket-Accept: b\r\n\r\n",
			  0, false);
	/* cut short: EOF inside a Content-Length body, and inside the head */
	expect_resp_error("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, true);
	expect_resp_error("HTTP/1.1 200 OK\r\nContent-", 0, true);
	snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nX-Big: %0*d\r\n\r\n",
		 (int)RS_HTTP_RESP_MAX_HEAD, 0);
	expect_resp_error(big, 0, false);
}

static void test_resp_default_limit_and_reset(void **st)
{
	size_t n = RS_HTTP_RESP_DEFAULT_MAX_BODY + 1;
	char *raw = malloc(n + 128);
	struct rs_http_resp_parser p;
	int hl;

	(void)st;
	assert_non_null(raw);
	hl = snprintf(raw, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n - 1);
	memset(raw + hl, 'x', n - 1);
	rs_http_resp_init(&p, 0);
	assert_int_equal(rs_http_resp_feed(&p, (uint8_t *)raw, (size_t)hl + n - 1),
			 hl + (int)n - 1);
	assert_true(rs_http_resp_done(&p));
	assert_int_equal(p.resp.body_len, n - 1);
	/* keep-alive: the next answer on the same parser */
	rs_http_resp_reset(&p);
	assert_null(p.resp.body);
	hl = snprintf(raw, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
	assert_int_equal(rs_http_resp_feed(&p, (uint8_t *)raw, (size_t)hl), RS_PARSE_ERROR);
	rs_http_resp_release(&p);
	free(raw);
}

/* --- Decoders --- */

#define B(s) (const uint8_t *)(s), strlen(s)

static void test_login_decode(void **st)
{
	struct rs_pve_login l;
	struct rs_pve_error err;

	(void)st;
	assert_int_equal(rs_pve_parse_login(200, "OK", B(LOGIN_BODY), &l, &err), RS_PVE_OK);
	assert_string_equal(l.username, "relay@pve");
	assert_string_equal(l.ticket, "PVE:relay@pve:6A4BB5CD::c2ln");
	assert_string_equal(l.csrf, "6A4BB5CD:abc");
	rs_pve_login_wipe(&l);
	assert_null(l.ticket);
	rs_pve_login_wipe(&l); /* twice is harmless */

	assert_int_equal(rs_pve_parse_login(200, "OK",
					    B("{\"data\":{\"username\":\"u@pam\",\"ticket\":"
					      "\"PVE:!tfa!%7B%22totp%22%3Atrue%7D:6A4BB5CD::s\","
					      "\"CSRFPreventionToken\":\"x:y\",\"NeedTFA\":1}}"),
					    &l, &err),
			 RS_PVE_E_TFA);
	assert_int_equal(err.code, RS_PVE_E_TFA);
	assert_null(l.ticket);
	assert_false(rs_pve_err_failover(RS_PVE_E_TFA));

	assert_int_equal(rs_pve_parse_login(401, "authentication failure", NULL, 0, &l, &err),
			 RS_PVE_E_AUTH);
	assert_int_equal(err.status, 401);
	assert_string_equal(err.detail, "authentication failure");
	assert_false(rs_pve_err_failover(err.code));

	assert_int_equal(
	    rs_pve_parse_login(200, "OK", B("{\"data\":{\"username\":\"u\"}"), &l, &err),
	    RS_PVE_E_MALFORMED);
	assert_int_equal(rs_pve_parse_login(200, "OK", B("{\"data\":null}"), &l, &err),
			 RS_PVE_E_MALFORMED);
	assert_int_equal(rs_pve_parse_login(200, "OK",
					    B("{\"data\":{\"username\":\"u\","
					      "\"ticket\":\"a\\r\\nb\","
					      "\"CSRFPreventionToken\":\"x\"}}"),
					    &l, &err),
			 RS_PVE_E_MALFORMED);
	assert_int_equal(rs_pve_parse_login(200, "OK", NULL, 0, &l, &err), RS_PVE_E_MALFORMED);
	assert_null(l.username);
}

#define CONSOLE(port)                                                                              \
	"{\"data\":{\"user\":\"relay@pve\",\"ticket\":\"8T:,O)X\\\\:PVEVNC:6A4BB5CD::LwJk==\","    \
	"\"password\":\"8T:,O)X\\\\\",\"port\":" port ","                                          \
	"\"upid\":\"UPID:pve1:0012F3A1:0A1B2C3D:6A4BB5CD:vncproxy:100:relay@pve:\","               \
	"\"cert\":\"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"}}"

static void test_console_decode(void **st)
{
	struct rs_pve_console c;
	struct rs_pve_error err;
	char pw[9];

	(void)st;
	assert_int_equal(rs_pve_parse_console(200, "OK", B(CONSOLE("\"5900\"")), &c, &err),
			 RS_PVE_OK);
	assert_int_equal(c.port, 5900);
	assert_int_equal(err.code, RS_PVE_OK);
	assert_int_equal(err.status, 0);
	assert_string_equal(c.user, "relay@pve");
	assert_string_equal(c.ticket, "8T:,O)X\\:PVEVNC:6A4BB5CD::LwJk==");
	assert_string_equal(c.password, PW);
	assert_non_null(strstr(c.cert, "\n-----END CERTIFICATE-----\n"));
	assert_string_equal(c.upid, "UPID:pve1:0012F3A1:0A1B2C3D:6A4BB5CD:vncproxy:100:relay@pve:");
	assert_int_equal(rs_pve_vnc_password(&c, pw), 8);
	assert_string_equal(pw, PW);
	rs_pve_console_wipe(&c);
	assert_null(c.ticket);
	assert_int_equal(c.port, 0);

	assert_int_equal(rs_pve_parse_console(200, "OK", B(CONSOLE("5999")), &c, &err), RS_PVE_OK);
	assert_int_equal(c.port, 5999);
	rs_pve_console_wipe(&c);

	/* legacy and termproxy: no password, the ticket's first 8 bytes */
	assert_int_equal(rs_pve_parse_console(200, "OK",
					      B("{\"data\":{\"user\":\"root@pam\",\"ticket\":"
						"\"PVEVNC:6A4BB5CD::sig\",\"port\":5901,"
						"\"upid\":\"UPID:x\"}}"),
					      &c, &err),
			 RS_PVE_OK);
	assert_null(c.password);
	assert_null(c.cert);
	assert_int_equal(rs_pve_vnc_password(&c, pw), 8);
	assert_string_equal(pw, "PVEVNC:6");
	rs_pve_console_wipe(&c);

	const char *bad_ports[] = {"\"6000\"", "5899", "6000",	 "\"59a0\"",  "\"\"",
				   "-5900",    "null", "5900.5", "\"590000\""};
	for (size_t i = 0; i < RS_ARRAY_SIZE(bad_ports); i++) {
		char body[1024];

		snprintf(body, sizeof(body),
			 "{\"data\":{\"user\":\"u\",\"ticket\":\"t\",\"port\":%s}}", bad_ports[i]);
		assert_int_equal(rs_pve_parse_console(200, "OK", B(body), &c, &err),
				 RS_PVE_E_MALFORMED);
		assert_null(c.ticket);
	}
	/* no port at all */
	assert_int_equal(rs_pve_parse_console(200, "OK",
					      B("{\"data\":{\"user\":\"u\",\"ticket\":\"t\"}}"), &c,
					      &err),
			 RS_PVE_E_MALFORMED);
	/* malformed JSON, duplicate keys */
	assert_int_equal(rs_pve_parse_console(200, "OK", B("{\"data\":{\"port\":5900,"), &c, &err),
			 RS_PVE_E_MALFORMED);
	assert_int_equal(rs_pve_parse_console(200, "OK",
					      B("{\"data\":{\"user\":\"u\",\"ticket\":\"t\","
						"\"port\":5900,\"port\":5901}}"),
					      &c, &err),
			 RS_PVE_E_MALFORMED);
	assert_string_equal(rs_pve_err_str(err.code), rs_pve_err_str(RS_PVE_E_MALFORMED));
}

static void test_error_causes(void **st)
{
	struct rs_pve_console c;
	struct rs_pve_error err;

	(void)st;
	assert_int_equal(rs_pve_parse_console(403, "Permission check failed (/vms/100, VM.Console)",
					      B("{\"data\":null}"), &c, &err),
			 RS_PVE_E_PERM);
	assert_string_equal(err.detail, "Permission check failed (/vms/100, VM.Console)");
	assert_non_null(strstr(rs_pve_err_str(err.code), "VM.Console"));
	assert_false(rs_pve_err_failover(err.code));

	assert_int_equal(rs_pve_parse_console(500,
					      "Configuration file "
					      "'nodes/pve2/qemu-server/100.conf' does not exist",
					      B("{\"data\":null}"), &c, &err),
			 RS_PVE_E_NOT_FOUND);
	assert_false(rs_pve_err_failover(err.code));
	/* the text may come only in the body */
	assert_int_equal(rs_pve_classify(500, "",
					 B("{\"data\":null,\"message\":\"Configuration file "
					   "'x' does not exist\\n\"}"),
					 &err),
			 RS_PVE_E_NOT_FOUND);
	assert_string_equal(err.detail, "Configuration file 'x' does not exist");

	/* a node outside the cluster: pveproxy's own lookup, not a server fault */
	assert_int_equal(rs_pve_classify(500,
					 "hostname lookup 'pve9' failed - failed to get address "
					 "info for: pve9: Name or service not known",
					 NULL, 0, &err),
			 RS_PVE_E_NO_NODE);
	assert_false(rs_pve_err_failover(err.code));
	assert_int_equal(rs_pve_classify(500, "",
					 B("{\"data\":null,\"message\":\"hostname lookup 'x' "
					   "failed - no address\\n\"}"),
					 &err),
			 RS_PVE_E_NO_NODE);
	assert_int_equal(rs_pve_classify(500, "hostname lookup failed", NULL, 0, &err),
			 RS_PVE_E_SERVER);
	assert_int_equal(
	    rs_pve_parse_console(500, "unable to find free port (5900-6000)", NULL, 0, &c, &err),
	    RS_PVE_E_SERVER);
	assert_true(rs_pve_err_failover(err.code));
	assert_int_equal(rs_pve_classify(502, "Bad Gateway", NULL, 0, &err), RS_PVE_E_SERVER);
	assert_int_equal(
	    rs_pve_classify(595, "Errors during connection establishment", NULL, 0, &err),
	    RS_PVE_E_UNREACHABLE);
	assert_true(rs_pve_err_failover(err.code));
	assert_int_equal(rs_pve_classify(596, "Connection timed out", NULL, 0, &err),
			 RS_PVE_E_UNREACHABLE);
	assert_true(rs_pve_err_failover(err.code));

	assert_int_equal(rs_pve_parse_console(400, "Parameter verification failed.",
					      B("{\"errors\":{\"width\":\"property is not defined "
						"in schema and the schema does not allow "
						"additional properties\\n\",\"height\":\"x\"},"
						"\"data\":null,\"message\":\"Parameter "
						"verification failed.\\n\"}"),
					      &c, &err),
			 RS_PVE_E_PARAM);
	assert_int_equal(strncmp(err.detail, "width: property is not defined", 30), 0);
	assert_false(rs_pve_err_failover(err.code));
	assert_int_equal(rs_pve_classify(400, "Bad Request", B("not json"), &err), RS_PVE_E_PARAM);
	assert_string_equal(err.detail, "Bad Request");

	assert_int_equal(rs_pve_classify(404, "Not Found", NULL, 0, &err), RS_PVE_E_STATUS);
	assert_int_equal(rs_pve_classify(200, "OK", NULL, 0, NULL), RS_PVE_E_STATUS);
	/* control bytes in server text never reach the detail */
	assert_int_equal(rs_pve_classify(401, "bad\r\nX-Evil: 1", NULL, 0, &err), RS_PVE_E_AUTH);
	assert_null(strchr(err.detail, '\r'));

	for (int e = 0; e <= RS_PVE_E__COUNT; e++)
		assert_non_null(rs_pve_err_str((enum rs_pve_err)e));
}

static void test_resources_and_status(void **st)
{
	static const char res[] =
	    "{\"data\":[{\"id\":\"node/pve1\",\"type\":\"node\",\"node\":\"pve1\"},"
	    "{\"id\":\"qemu/100\",\"type\":\"qemu\",\"vmid\":100,\"node\":\"pve1\","
	    "\"status\":\"stopped\",\"name\":\"web\"},"
	    "{\"id\":\"lxc/101\",\"type\":\"lxc\",\"vmid\":101,\"node\":\"pve-2\","
	    "\"status\":\"running\"},"
	    "{\"id\":\"qemu/102\",\"type\":\"qemu\",\"node\":\"pve3\",\"status\":\"running\"},"
	    "{\"id\":\"qemu/103\",\"type\":\"qemu\",\"vmid\":103,\"node\":\"pve 3\"}]}";
	struct rs_pve_vm vm;
	struct rs_pve_error err;
	bool running = true;

	(void)st;
	assert_int_equal(rs_pve_parse_resources(200, "OK", B(res), 101, &vm, &err), RS_PVE_OK);
	assert_string_equal(vm.node, "pve-2");
	assert_int_equal(vm.type, RS_PVE_LXC);
	assert_true(vm.running);
	assert_string_equal(vm.status, "running");
	assert_int_equal(rs_pve_parse_resources(200, "OK", B(res), 100, &vm, &err), RS_PVE_OK);
	assert_int_equal(vm.type, RS_PVE_QEMU);
	assert_false(vm.running);
	/* vmid only in the id */
	assert_int_equal(rs_pve_parse_resources(200, "OK", B(res), 102, &vm, &err), RS_PVE_OK);
	assert_string_equal(vm.node, "pve3");
	assert_int_equal(rs_pve_parse_resources(200, "OK", B(res), 103, &vm, &err),
			 RS_PVE_E_MALFORMED);
	assert_int_equal(rs_pve_parse_resources(200, "OK", B(res), 104, &vm, &err), RS_PVE_E_NO_VM);
	assert_int_equal(rs_pve_parse_resources(200, "OK", B("{\"data\":{}}"), 100, &vm, &err),
			 RS_PVE_E_MALFORMED);
	assert_int_equal(rs_pve_parse_resources(595, "No route to host", NULL, 0, 100, &vm, &err),
			 RS_PVE_E_UNREACHABLE);

	assert_int_equal(rs_pve_parse_status(200, "OK",
					     B("{\"data\":{\"status\":\"running\",\"vmid\":100}}"),
					     &running, &err),
			 RS_PVE_OK);
	assert_true(running);
	assert_int_equal(rs_pve_parse_status(200, "OK", B("{\"data\":{\"status\":\"stopped\"}}"),
					     &running, &err),
			 RS_PVE_OK);
	assert_false(running);
	assert_int_equal(rs_pve_parse_status(200, "OK", B("{\"data\":{}}"), &running, &err),
			 RS_PVE_E_MALFORMED);
	assert_int_equal(rs_pve_parse_status(403, "Permission check failed (/vms/100, VM.Audit)",
					     NULL, 0, &running, &err),
			 RS_PVE_E_PERM);
}

/* The whole path: raw bytes through the parser into a decoder. */
static void test_parser_into_decoder(void **st)
{
	static const char raw[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				  "Transfer-Encoding: chunked\r\n\r\n"
				  "1e\r\n{\"data\":{\"user\":\"u\",\"ticket\":\"\r\n"
				  "1c\r\nPVEVNC:X::s\",\"port\":\"5902\"}}\r\n0\r\n\r\n";
	struct rs_http_resp_parser p;
	struct rs_pve_console c;
	struct rs_pve_error err;

	(void)st;
	rs_http_resp_init(&p, 0);
	assert_int_equal(rs_http_resp_feed(&p, (const uint8_t *)raw, sizeof(raw) - 1),
			 (int)sizeof(raw) - 1);
	assert_string_equal(p.resp.content_type, "application/json");
	assert_int_equal(rs_pve_parse_console(p.resp.status, p.resp.reason, p.resp.body,
					      p.resp.body_len, &c, &err),
			 RS_PVE_OK);
	assert_int_equal(c.port, 5902);
	assert_string_equal(c.ticket, "PVEVNC:X::s");
	rs_pve_console_wipe(&c);
	rs_http_resp_release(&p);
}

/* The per-VM VNC lock table is bounded: once full, a lock is refused (the
 * console waits), never reported taken without an entry to release. */
static void test_vm_lock_table_full(void **st)
{
	struct rs_config cfg;
	struct rs_pve *p = NULL;
	char err[200];
	static int cl; /* any address stands for a cluster */
	uint32_t n = 0;

	(void)st;
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(rs_pve_new(&p, &cfg, err, sizeof(err)), 0);
	assert_true(rs_pve_vm_lock(p, &cl, 100));
	assert_false(rs_pve_vm_lock(p, &cl, 100)); /* held */
	rs_pve_vm_unlock(p, &cl, 100);
	while (n < 100000 && rs_pve_vm_lock(p, &cl, 1000 + n))
		n++;
	assert_int_equal(n, 4096);
	/* full: a new VM's lock is refused, not pretended */
	assert_false(rs_pve_vm_lock(p, &cl, 100));
	rs_pve_vm_unlock(p, &cl, 100); /* not held: changes nothing */
	assert_false(rs_pve_vm_lock(p, &cl, 100));
	assert_false(rs_pve_vm_lock(p, &cl, 1000)); /* still held */
	rs_pve_vm_unlock(p, &cl, 1000);
	assert_true(rs_pve_vm_lock(p, &cl, 100));
	assert_false(rs_pve_vm_lock(p, &cl, 100));
	rs_pve_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_login_request),
	    cmocka_unit_test(test_vncproxy_qemu_never_sends_size),
	    cmocka_unit_test(test_vncproxy_lxc_ticket_auth),
	    cmocka_unit_test(test_termproxy_resources_status),
	    cmocka_unit_test(test_vncwebsocket_request),
	    cmocka_unit_test(test_builders_refuse_bad_input),
	    cmocka_unit_test(test_resp_every_split),
	    cmocka_unit_test(test_resp_repeated_headers_combined),
	    cmocka_unit_test(test_resp_101_headers_and_check),
	    cmocka_unit_test(test_resp_errors_and_limits),
	    cmocka_unit_test(test_resp_default_limit_and_reset),
	    cmocka_unit_test(test_login_decode),
	    cmocka_unit_test(test_console_decode),
	    cmocka_unit_test(test_error_causes),
	    cmocka_unit_test(test_resources_and_status),
	    cmocka_unit_test(test_parser_into_decoder),
	    cmocka_unit_test(test_vm_lock_table_full),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
