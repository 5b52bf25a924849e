#include "core/common.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto/http1.h"

static const struct rs_http_limits LIM = {8192, 16384, 64, 65536};
static const struct rs_http_limits SMALL = {256, 1024, 8, 1024};

/* Feed <s> in chunks of <chunk> bytes; return the first request or error. */
static int feed_all(struct rs_http_parser *p, const char *s, size_t len, size_t chunk,
		    struct rs_http_req **req, int *status)
{
	size_t off = 0;

	*req = NULL;
	while (off < len || !*req) {
		size_t n = RS_MIN(chunk, len - off);
		int r = rs_http_parser_feed(p, (const uint8_t *)s + off, n, req, status);

		if (r < 0)
			return r;
		off += (size_t)r;
		if (*req || (!n && !r))
			break;
	}
	return (int)off;
}

static void test_simple_get(void **st)
{
	struct rs_http_parser p;
	struct rs_http_req *r;
	int status;
	const char *s = "GET /console/abc?x=1 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, keep-alive\r\n\r\n";

	(void)st;
	rs_http_parser_init(&p, &LIM);
	assert_int_equal(feed_all(&p, s, strlen(s), 4096, &r, &status), (int)strlen(s));
	assert_non_null(r);
	assert_int_equal(r->method, HTTP_GET);
	assert_int_equal(r->path_len, 12);
	assert_memory_equal(r->path, "/console/abc", 12);
	assert_memory_equal(r->query, "x=1", 3);
	assert_true(r->keep_alive);
	assert_true(rs_http_header_has_token(rs_http_req_header(r, "connection"), "upgrade"));
	assert_false(rs_http_header_has_token(rs_http_req_header(r, "connection"), "close"));
	assert_null(rs_http_req_header(r, "cookie"));
	rs_http_parser_next(&p);
	assert_true(rs_http_parser_idle(&p));
	assert_null(p.buf); /* an idle parser holds no memory */
	/* polling an idle parser for pipelined requests allocates nothing */
	assert_int_equal(rs_http_parser_feed(&p, NULL, 0, &r, &status), 0);
	assert_null(r);
	assert_null(p.buf);
	assert_null(p.hdrs);
	rs_http_parser_release(&p);
}

static void test_byte_at_a_time_equals_whole(void **st)
{
	const char *s = "POST /api/v1/consoles HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}";
	struct rs_http_parser p;
	struct rs_http_req *r;
	int status;

	(void)st;
	rs_http_parser_init(&p, &LIM);
	assert_int_equal(feed_all(&p, s, strlen(s), 1, &r, &status), (int)strlen(s));
	assert_non_null(r);
	assert_int_equal(r->body_len, 11);
	assert_memory_equal(r->body, "{\"a\":\"bcd\"}", 11);
	rs_http_parser_release(&p);
}

static void test_chunked_body_is_dechunked(void **st)
{
	const char *s = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
			"3\r\nabc\r\n5;ext=1\r\ndefgh\r\n0\r\n\r\n";
	struct rs_http_parser p;
	struct rs_http_req *r;
	int status;

	(void)st;
	for (size_t chunk = 1; chunk <= 7; chunk += 3) {
		rs_http_parser_init(&p, &LIM);
		assert_true(feed_all(&p, s, strlen(s), chunk, &r, &status) > 0);
		assert_non_null(r);
		assert_int_equal(r->body_len, 8);
		assert_memory_equal(r->body, "abcdefgh", 8);
		rs_http_parser_release(&p);
	}
}

static void test_pipelining_three_in_one_feed(void **st)
{
	const char *s = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /bb HTTP/1.1\r\nHost: x\r\n\r\n"
			"GET /ccc HTTP/1.0\r\n\r\n";
	struct rs_http_parser p;
	struct rs_http_req *r;
	int status, n;
	size_t lens[3] = {2, 3, 4};

	(void)st;
	rs_http_parser_init(&p, &LIM);
	n = rs_http_parser_feed(&p, (const uint8_t *)s, strlen(s), &r, &status);
	assert_int_equal(n, (int)strlen(s));
	for (int i = 0; i < 3; i++) {
		if (i)
			assert_int_equal(rs_http_parser_feed(&p, NULL, 0, &r, &status), 0);
		assert_non_null(r);
		assert_int_equal(r->path_len, lens[i]);
		assert_int_equal(r->keep_alive, i < 2);
		rs_http_parser_next(&p);
	}
	assert_true(rs_http_parser_idle(&p));
	rs_http_parser_release(&p);
}

static void expect_status(const struct rs_http_limits *lim, const char *s, size_t len, int want)
{
	struct rs_http_parser p;
	struct rs_http_req *r;
	int status = 0;

	rs_http_parser_init(&p, lim);
	assert_int_equal(feed_all(&p, s, len, 512, &r, &status), RS_PARSE_ERROR);
	assert_int_equal(status, want);
	/* a failed parser refuses everything after */
	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)"GET", 3, &r, &status), RS_PARSE_ERROR);
	rs_http_parser_release(&p);
}

#define EXPECT_LIT(lim, lit, status) expect_status(lim, lit, sizeof(lit) - 1, status)

static void test_limits_and_errors(void **st)
{
	char big[4096];

	(void)st;
	snprintf(big, sizeof(big), "GET /%0300d HTTP/1.1\r\n\r\n", 0);
	expect_status(&SMALL, big, strlen(big), 414);
	snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX: %01100d\r\n\r\n", 0);
	expect_status(&SMALL, big, strlen(big), 431);
	strcpy(big, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 9; i++)
		strcat(big, "A: b\r\n");
	strcat(big, "\r\n");
	expect_status(&SMALL, big, strlen(big), 431);
	EXPECT_LIT(&SMALL, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", 413);
	snprintf(big, sizeof(big), "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n%0512d\r\n200\r\n%0512d\r\n1\r\nxx", 0, 0);
	expect_status(&SMALL, big, strlen(big), 413);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/2.0\r\n\r\n", 505);
	EXPECT_LIT(&LIM, "BREW / HTTP/1.1\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nX\x01: y\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "\x00\x01\x02\x03", 400);
}

static void test_upgrade_keeps_following_bytes(void **st)
{
	const char *s = "GET /ws/t HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x82\x85WSBYTES";
	struct rs_http_parser p;
	struct rs_http_req *r;
	const uint8_t *rest;
	size_t rest_len;
	int status;

	(void)st;
	rs_http_parser_init(&p, &LIM);
	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)s, strlen(s), &r, &status), (int)strlen(s));
	assert_non_null(r);
	assert_true(r->upgrade);
	rs_http_parser_upgrade_rest(&p, &rest, &rest_len);
	assert_int_equal(rest_len, 9);
	assert_memory_equal(rest, "\x82\x85WSBYTES", 9);
	rs_http_parser_release(&p);
}

/* RFC 9110/9112 rules llhttp 8 lets through (issue 15: the strict xfails of
 * tests/integration/test_http.py). */
static void test_rfc_field_rules(void **st)
{
	(void)st;
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nHost: x\r\n: x\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400);
	EXPECT_LIT(&LIM, "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501);
	/* the first half of an HTTP/2 preface is refused at once, not held
	 * waiting for its "SM" part */
	EXPECT_LIT(&LIM, "PRI * HTTP/2.0\r\n\r\n", 505);
	/* a chunk's size line alone is enough for 413 */
	EXPECT_LIT(&SMALL, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n", 413);
}

static void test_rfc_accepted_forms(void **st)
{
	const char *s = "GET / HTTP/1.0\r\n\r\n"
			"GET / HTTP/1.1\r\nhOsT: x\r\nX-A: a b \t\r\nX-E:\r\n\r\n";
	struct rs_http_parser p;
	struct rs_http_req *r;
	const struct rs_http_header *h;
	int status;

	(void)st;
	rs_http_parser_init(&p, &LIM);
	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)s, strlen(s), &r, &status), (int)strlen(s));
	assert_non_null(r); /* HTTP/1.0 needs no Host */
	rs_http_parser_next(&p);
	assert_int_equal(rs_http_parser_feed(&p, NULL, 0, &r, &status), 0);
	assert_non_null(r);
	h = rs_http_req_header(r, "x-a");
	assert_non_null(h);
	assert_int_equal(h->value_len, 3); /* trailing whitespace is not the value */
	assert_memory_equal(h->value, "a b", 3);
	assert_int_equal(rs_http_req_header(r, "x-e")->value_len, 0);
	rs_http_parser_release(&p);
}

/* An Upgrade the server does not take (h2c on a plain route) leaves the
 * connection HTTP: the pipelined request after it is parsed (issue 15 item 18). */
static void test_upgrade_not_taken_keeps_pipelined(void **st)
{
	const char *s = "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
			"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
			"GET /second HTTP/1.1\r\nHost: a\r\n\r\n";
	struct rs_http_parser p;
	struct rs_http_req *r;
	int status;

	(void)st;
	rs_http_parser_init(&p, &LIM);
	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)s, strlen(s), &r, &status), (int)strlen(s));
	assert_non_null(r);
	assert_true(r->upgrade);
	rs_http_parser_next(&p);
	assert_int_equal(rs_http_parser_feed(&p, NULL, 0, &r, &status), 0);
	assert_non_null(r);
	assert_int_equal(r->path_len, 7);
	assert_memory_equal(r->path, "/second", 7);
	assert_false(r->upgrade);
	rs_http_parser_next(&p);
	assert_true(rs_http_parser_idle(&p));
	rs_http_parser_release(&p);
}

/* With heads wanted, a request with a body comes out first as its head, before
 * any body byte is parsed (401 and Expect: 100-continue from the headers). */
static void test_head_before_body(void **st)
{
	const char *h1 = "POST /api/v1/consoles HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
	const char *s2 = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
			 "2\r\nhi\r\n0\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n";
	struct rs_http_parser p;
	struct rs_http_req *r;
	int status;

	(void)st;
	rs_http_parser_init(&p, &LIM);
	rs_http_parser_want_heads(&p, true);
	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)h1, strlen(h1), &r, &status), (int)strlen(h1));
	assert_non_null(r);
	assert_true(r->body_pending);
	assert_null(r->body);
	assert_non_null(rs_http_req_header(r, "content-length"));
	/* the head stays out until the caller moves on */
	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)"ab", 2, &r, &status), 0);
	assert_null(r);
	rs_http_parser_next(&p);
	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)"abcde", 5, &r, &status), 5);
	assert_non_null(r);
	assert_false(r->body_pending);
	assert_int_equal(r->body_len, 5);
	assert_memory_equal(r->body, "abcde", 5);
	rs_http_parser_next(&p);
	assert_true(rs_http_parser_idle(&p));

	assert_int_equal(rs_http_parser_feed(&p, (const uint8_t *)s2, strlen(s2), &r, &status), (int)strlen(s2));
	assert_true(r && r->body_pending);
	rs_http_parser_next(&p);
	assert_int_equal(rs_http_parser_feed(&p, NULL, 0, &r, &status), 0);
	assert_true(r && !r->body_pending && r->body_len == 2);
	assert_memory_equal(r->body, "hi", 2);
	rs_http_parser_next(&p);
	/* no body: no head handed out alone */
	assert_int_equal(rs_http_parser_feed(&p, NULL, 0, &r, &status), 0);
	assert_true(r && !r->body_pending && r->path_len == 2);
	rs_http_parser_next(&p);
	assert_true(rs_http_parser_idle(&p));
	rs_http_parser_release(&p);
}

/* Garbage placed right before a PROT_NONE page: any over-read faults. */
static void test_garbage_before_guard_page(void **st)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint8_t *m = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t x = 1234567;

	(void)st;
	assert_true(m != MAP_FAILED);
	assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
	for (int round = 0; round < 2000; round++) {
		size_t len = 1 + (size_t)(x % 300);
		uint8_t *in = m + pg - len;
		struct rs_http_parser p;
		struct rs_http_req *r;
		int status;

		for (size_t i = 0; i < len; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			in[i] = round & 1 ? (uint8_t)x : (uint8_t)("GET / HTTP/1.1\r\nA: b\r\n\r\n"[x % 25]);
		}
		rs_http_parser_init(&p, &SMALL);
		(void)rs_http_parser_feed(&p, in, len, &r, &status);
		rs_http_parser_release(&p);
	}
	munmap(m, (size_t)pg * 2);
}

static void test_format_head(void **st)
{
	char out[512];
	int n;

	(void)st;
	n = rs_http_format_head(out, sizeof(out), 200, "text/plain", 3, true, NULL);
	assert_true(n > 0);
	assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(out, "Content-Length: 3\r\n"));
	assert_non_null(strstr(out, "Connection: keep-alive\r\n"));
	assert_non_null(strstr(out, "Cache-Control: no-store\r\n"));
	n = rs_http_format_head(out, sizeof(out), 304, NULL, 99, false, "Cache-Control: max-age=1\r\n");
	assert_non_null(strstr(out, "Content-Length: 0\r\n"));
	assert_null(strstr(out, "no-store"));
	assert_int_equal(rs_http_format_head(out, 20, 200, "x", 1, true, NULL), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_byte_at_a_time_equals_whole),
		cmocka_unit_test(test_chunked_body_is_dechunked),
		cmocka_unit_test(test_pipelining_three_in_one_feed),
		cmocka_unit_test(test_limits_and_errors),
		cmocka_unit_test(test_upgrade_keeps_following_bytes),
		cmocka_unit_test(test_rfc_field_rules),
		cmocka_unit_test(test_rfc_accepted_forms),
		cmocka_unit_test(test_upgrade_not_taken_keeps_pipelined),
		cmocka_unit_test(test_head_before_body),
		cmocka_unit_test(test_garbage_before_guard_page),
		cmocka_unit_test(test_format_head),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
