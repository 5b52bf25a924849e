#include "core/common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/token.h"

/* cmocka's assertions may only fail on the test's own thread; worker threads
 * use this. */
#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static uint64_t fake_now = 1000000;
static uint64_t fake_clock(void)
{
	return fake_now;
}

static struct rs_console_spec *spec_kind(const char *pw, enum rs_console_kind kind)
{
	struct rs_console_spec *s = rs_spec_new();

	CHECK(s);
	s->kind = kind;
	s->host = strdup("127.0.0.1");
	s->port = 5900;
	s->password = pw ? strdup(pw) : NULL;
	return s;
}

static struct rs_console_spec *spec(const char *pw)
{
	return spec_kind(pw, RS_CONSOLE_VNC);
}

static void issue_raw(struct rs_token_table *t, struct rs_console_spec *s, uint32_t ttl_ms,
		      uint8_t raw[16])
{
	char text[RS_TOKEN_TEXT + 1];

	assert_int_equal(rs_token_issue(t, s, ttl_ms, text), 0);
	assert_int_equal(rs_token_parse(text, strlen(text), raw), 0);
}

static struct rs_token_stats stats(struct rs_token_table *t)
{
	struct rs_token_stats s;

	rs_token_stats_get(t, &s);
	return s;
}

static void test_issue_peek_consume_once(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	char text[RS_TOKEN_TEXT + 1];
	uint8_t raw[16];
	struct rs_console_spec *got = (void *)1;
	enum rs_console_kind kind = RS_CONSOLE_VNC;
	struct rs_token_stats s;

	(void)st;
	assert_non_null(t);
	assert_int_equal(rs_token_issue(t, spec_kind("pw", RS_CONSOLE_PVE_TERM), 60000, text), 0);
	assert_int_equal(strlen(text), RS_TOKEN_TEXT);
	assert_int_equal(strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				      "0123456789-_"),
			 RS_TOKEN_TEXT);
	assert_int_equal(rs_token_parse(text, 22, raw), 0);
	assert_int_equal(rs_token_peek(t, raw, &kind, NULL), 0);
	assert_int_equal(kind, RS_CONSOLE_PVE_TERM);
	assert_int_equal(rs_token_peek(t, raw, NULL, NULL), 0); /* peeking never consumes */
	{
		/* A view-only link says so to the page, with its kind intact. */
		struct rs_console_spec *vo = spec_kind("pw", RS_CONSOLE_PVE_VNC);
		uint8_t vraw[16];
		char vtext[RS_TOKEN_TEXT + 1];
		bool view_only = false;

		vo->view_only = true;
		assert_int_equal(rs_token_issue(t, vo, 60000, vtext), 0);
		assert_int_equal(rs_token_parse(vtext, 22, vraw), 0);
		assert_int_equal(rs_token_peek(t, vraw, &kind, &view_only), 0);
		assert_int_equal(kind, RS_CONSOLE_PVE_VNC);
		assert_true(view_only);
		assert_int_equal(rs_token_peek(t, raw, &kind, &view_only), 0);
		assert_false(view_only);
		assert_int_equal(rs_token_revoke(t, vraw), 0);
	}
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), 0);
	assert_int_equal(got->kind, RS_CONSOLE_PVE_TERM);
	assert_string_equal(got->password, "pw");
	rs_spec_free(got);
	got = (void *)1;
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), -ENOENT);
	assert_null(got); /* *out is cleared on failure */
	assert_int_equal(rs_token_peek(t, raw, &kind, NULL), -ENOENT);
	assert_int_equal(rs_token_revoke(t, raw), -ENOENT);
	s = stats(t);
	assert_int_equal(s.issued, 2); /* and the view-only one, revoked */
	assert_int_equal(s.consumed, 1);
	assert_int_equal(s.rejected, 1);
	assert_int_equal(s.live, 0);
	rs_token_table_free(t);
}

/* A neighbouring token (one bit off, in either half) is a different token. */
static void test_near_miss_is_unknown(void **st)
{
	struct rs_token_table *t = rs_token_table_new(64);
	struct rs_console_spec *got;
	uint8_t raw[16], other[16];

	(void)st;
	issue_raw(t, spec(NULL), 60000, raw);
	for (int bit = 0; bit < 128; bit++) {
		memcpy(other, raw, 16);
		other[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(rs_token_peek(t, other, NULL, NULL), -ENOENT);
		assert_int_equal(rs_token_consume(t, other, NULL, &got), -ENOENT);
		assert_int_equal(rs_token_revoke(t, other), -ENOENT);
	}
	assert_int_equal(rs_token_peek(t, raw, NULL, NULL), 0);
	assert_int_equal(stats(t).rejected, 128);
	rs_token_table_free(t);
}

static int ref_value(int c)
{
	const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *p = c ? strchr(a, c) : NULL;

	return p ? (int)(p - a) : -1;
}

static void test_parse(void **st)
{
	uint8_t raw[16], zero[16] = {0}, ones[16];
	char text[RS_TOKEN_TEXT + 1];

	(void)st;
	memset(ones, 0xff, sizeof(ones));
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAAA", 22, raw), 0);
	assert_memory_equal(raw, zero, 16);
	assert_int_equal(rs_token_parse("_____________________w", 22, raw), 0);
	assert_memory_equal(raw, ones, 16);
	/* RFC 4648 base64 of 00 01 02 ... 0f, padding dropped */
	assert_int_equal(rs_token_parse("AAECAwQFBgcICQoLDA0ODw", 22, raw), 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(raw[i], i);

	/* non-canonical: the last character's 4 spare bits must be zero */
	for (const char *c = "BCDEFGHIJKLMNOP"; *c; c++) {
		snprintf(text, sizeof(text), "AAAAAAAAAAAAAAAAAAAAA%c", *c);
		assert_int_equal(rs_token_parse(text, 22, raw), -EINVAL);
	}
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAAQ", 22, raw), 0);
	assert_int_equal(raw[15], 0x01);

	/* lengths */
	assert_int_equal(rs_token_parse("", 0, raw), -EINVAL);
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAA", 21, raw), -EINVAL);
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAAAA", 23, raw), -EINVAL);
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAAA=", 23, raw), -EINVAL);
	assert_int_equal(rs_token_parse("AAAAAAAAAAAAAAAAAAAAAA==", 24, raw), -EINVAL);
	assert_int_equal(rs_token_parse(NULL, 22, raw), -EINVAL);

	/* every byte value in every position against a reference decoder */
	for (int pos = 0; pos < 22; pos++) {
		for (int c = 0; c < 256; c++) {
			bool ok = ref_value(c) >= 0 && (pos < 21 || !(ref_value(c) & 15));

			memset(text, 'A', 22);
			text[pos] = (char)c;
			assert_int_equal(rs_token_parse(text, 22, raw), ok ? 0 : -EINVAL);
			if (ok) {
				/* character <pos> holds bits 6*pos.. of the 128, MSB first */
				int v = ref_value(c), got = 0, nbits = pos < 21 ? 6 : 2;

				for (int k = 0; k < nbits; k++) {
					int b = 6 * pos + k;

					got = got << 1 | ((raw[b / 8] >> (7 - b % 8)) & 1);
				}
				assert_int_equal(got, pos < 21 ? v : v >> 4);
			}
		}
	}
	/* an embedded NUL does not end a 22-byte token early */
	assert_int_equal(rs_token_parse("AAAAAAAAAA\0AAAAAAAAAAA", 22, raw), -EINVAL);
}

/* Issued text round-trips: the bytes that parse() returns name the token. */
static void test_text_round_trip(void **st)
{
	struct rs_token_table *t = rs_token_table_new(1024);
	char text[RS_TOKEN_TEXT + 1];
	uint8_t raw[16], again[16];

	(void)st;
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(rs_token_issue(t, spec(NULL), 60000, text), 0);
		assert_int_equal(rs_token_parse(text, 22, raw), 0);
		assert_int_equal(rs_token_peek(t, raw, NULL, NULL), 0);
		assert_int_equal(rs_token_parse(text, 22, again), 0);
		assert_memory_equal(raw, again, 16);
		assert_int_equal(rs_token_revoke(t, raw), 0);
	}
	assert_int_equal(stats(t).live, 0);
	assert_int_equal(stats(t).revoked, 1000);
	rs_token_table_free(t);
}

static void test_expiry_with_fake_clock(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	uint8_t a[16], b[16];
	struct rs_console_spec *got;
	struct rs_token_stats s;

	(void)st;
	rs_token_table_set_clock(t, fake_clock);
	issue_raw(t, spec("pw"), 1000, a);
	issue_raw(t, spec("pw"), 1000, b);
	fake_now += 999;
	assert_int_equal(rs_token_peek(t, a, NULL, NULL), 0);
	fake_now += 1; /* exactly TTL: expired */
	assert_int_equal(rs_token_peek(t, a, NULL, NULL), -ENOENT);
	/* consuming an expired token fails and reclaims it at once */
	assert_int_equal(rs_token_consume(t, a, NULL, &got), -ENOENT);
	assert_null(got);
	s = stats(t);
	assert_int_equal(s.expired, 1);
	assert_int_equal(s.live, 1);
	assert_int_equal(rs_token_sweep(t, fake_now - 1), 0); /* b not expired by that clock */
	assert_int_equal(rs_token_sweep(t, fake_now), 1);
	assert_int_equal(rs_token_sweep(t, fake_now), 0);
	assert_int_equal(rs_token_consume(t, b, NULL, &got), -ENOENT);
	s = stats(t);
	assert_int_equal(s.expired, 2);
	assert_int_equal(s.live, 0);
	assert_int_equal(s.consumed, 0);
	/* TTL 0 is expired on arrival */
	issue_raw(t, spec(NULL), 0, a);
	assert_int_equal(rs_token_peek(t, a, NULL, NULL), -ENOENT);
	assert_int_equal(rs_token_sweep(t, fake_now), 1);
	rs_token_table_free(t);
}

static void test_sweep_100k(void **st)
{
	struct rs_token_table *t = rs_token_table_new(100000);
	char text[RS_TOKEN_TEXT + 1];
	uint8_t first[16], last[16];
	struct rs_console_spec *extra = spec(NULL);
	struct rs_token_stats s;

	(void)st;
	rs_token_table_set_clock(t, fake_clock);
	for (int i = 0; i < 100000; i++) {
		assert_int_equal(rs_token_issue(t, spec("secret"), 1000, text), 0);
		if (!i)
			rs_token_parse(text, 22, first);
	}
	rs_token_parse(text, 22, last);
	assert_int_equal(stats(t).live, 100000);
	assert_int_equal(rs_token_issue(t, extra, 1000, text), -ENOSPC); /* full */
	fake_now += 999;
	assert_int_equal(rs_token_sweep(t, fake_now), 0);
	assert_int_equal(rs_token_peek(t, last, NULL, NULL), 0);
	fake_now += 1;
	assert_int_equal(rs_token_sweep(t, fake_now), 100000);
	s = stats(t);
	assert_int_equal(s.live, 0);
	assert_int_equal(s.expired, 100000);
	assert_int_equal(s.issued, 100000);
	assert_int_equal(rs_token_peek(t, first, NULL, NULL), -ENOENT);
	assert_int_equal(rs_token_peek(t, last, NULL, NULL), -ENOENT);
	assert_int_equal(rs_token_sweep(t, fake_now + 5000), 0);
	/* the whole capacity is usable again */
	assert_int_equal(rs_token_issue(t, extra, 1000, text), 0);
	assert_int_equal(stats(t).live, 1);
	rs_token_table_free(t);
}

static int wakes;

static void count_wake(void *arg)
{
	assert_ptr_equal(arg, &wakes);
	wakes++;
}

/* The sweeper sleeps until rs_token_next_expiry() and is woken only when an
 * issue needs a sweep more than RS_TOKEN_SWEEP_LATE_MS sooner: once when the
 * table had nothing live, not once per token. */
static void test_next_expiry_and_wake(void **st)
{
	struct rs_token_table *t = rs_token_table_new(64);
	uint8_t a[16], b[16], c[16];
	struct rs_console_spec *got;
	uint64_t t0;

	(void)st;
	rs_token_table_set_clock(t, fake_clock);
	rs_token_table_set_wake(t, count_wake, &wakes);
	wakes = 0;
	t0 = fake_now;
	assert_true(rs_token_next_expiry(t) == UINT64_MAX);
	issue_raw(t, spec(NULL), 60000, a); /* from none: wake */
	assert_int_equal(wakes, 1);
	assert_true(rs_token_next_expiry(t) == t0 + 60000);
	fake_now += 10;
	issue_raw(t, spec(NULL), 60000, b); /* later than the first: no wake */
	assert_int_equal(wakes, 1);
	issue_raw(t, spec(NULL), 59700, c); /* sooner, within the slack: no wake */
	assert_int_equal(wakes, 1);
	assert_true(rs_token_next_expiry(t) == t0 + 10 + 59700);
	/* consumed and revoked, the bound goes stale: the sweep at it resets it
	 * without a scan, and then asks for no sweep at all */
	assert_int_equal(rs_token_consume(t, a, NULL, &got), 0);
	rs_spec_free(got);
	assert_int_equal(rs_token_revoke(t, b), 0);
	assert_int_equal(rs_token_revoke(t, c), 0);
	assert_int_equal(rs_token_sweep(t, fake_now), 0); /* not due: untouched */
	assert_true(rs_token_next_expiry(t) == t0 + 10 + 59700);
	assert_int_equal(rs_token_sweep(t, t0 + 60000), 0);
	assert_true(rs_token_next_expiry(t) == UINT64_MAX);
	/* and the next issue wakes the sweeper again */
	issue_raw(t, spec(NULL), 60000, a);
	assert_int_equal(wakes, 2);
	/* a much shorter lifetime than the live ones: wake */
	issue_raw(t, spec(NULL), 1000, b);
	assert_int_equal(wakes, 3);
	assert_true(rs_token_next_expiry(t) == fake_now + 1000);
	fake_now += 1000;
	assert_int_equal(rs_token_sweep(t, fake_now), 1);
	assert_true(rs_token_next_expiry(t) == fake_now - 1000 + 60000);
	assert_int_equal(wakes, 3); /* the sweep's own bound wakes nobody */
	rs_token_table_free(t);
}

static void test_full_then_space_again(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	char text[RS_TOKEN_TEXT + 1];
	uint8_t raw[16][16];
	struct rs_console_spec *extra = spec(NULL), *got;

	(void)st;
	rs_token_table_set_clock(t, fake_clock);
	for (int i = 0; i < 16; i++)
		issue_raw(t, spec(NULL), i == 15 ? 10 : 60000, raw[i]);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), -ENOSPC);
	assert_int_equal(stats(t).live, 16);
	/* room after a consume ... */
	assert_int_equal(rs_token_consume(t, raw[0], NULL, &got), 0);
	rs_spec_free(got);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), 0);
	extra = spec(NULL);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), -ENOSPC);
	/* ... after a revoke ... */
	assert_int_equal(rs_token_revoke(t, raw[1]), 0);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), 0);
	extra = spec(NULL);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), -ENOSPC);
	/* ... and after a sweep */
	fake_now += 10;
	assert_int_equal(rs_token_sweep(t, fake_now), 1);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), 0);
	assert_int_equal(stats(t).live, 16);
	rs_token_table_free(t); /* frees the 16 live specs (ASan checks) */

	/* a table of capacity 0 holds nothing */
	t = rs_token_table_new(0);
	extra = spec(NULL);
	assert_int_equal(rs_token_issue(t, extra, 60000, text), -ENOSPC);
	rs_spec_free(extra);
	rs_token_table_free(t);
	rs_token_table_free(NULL);
}

static void test_issue_bad_spec(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	struct rs_console_spec *s = spec(NULL);
	char text[RS_TOKEN_TEXT + 1];

	(void)st;
	assert_int_equal(rs_token_issue(t, NULL, 60000, text), -EINVAL);
	s->bind_ip = true; /* bound, but to no address */
	assert_int_equal(rs_token_issue(t, s, 60000, text), -EINVAL);
	s->client_ip.sa.sa_family = AF_UNIX;
	assert_int_equal(rs_token_issue(t, s, 60000, text), -EINVAL);
	assert_int_equal(stats(t).live, 0);
	assert_int_equal(stats(t).issued, 0);
	rs_spec_free(s); /* still ours after a failed issue */
	rs_token_table_free(t);
}

static void test_revoke_and_revoke_by_hash(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	char hash[9], upper[9], other[9];
	uint8_t raw[16], keep[16], k[16];
	struct rs_console_spec *got;

	(void)st;
	issue_raw(t, spec(NULL), 60000, keep);
	issue_raw(t, spec(NULL), 60000, raw);
	assert_int_equal(rs_token_revoke(t, raw), 0);
	assert_int_equal(rs_token_revoke(t, raw), -ENOENT);
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), -ENOENT);

	issue_raw(t, spec(NULL), 60000, raw);
	rs_log_hash(raw, 16, hash);
	assert_int_equal(rs_token_revoke_hash(t, NULL), -EINVAL);
	assert_int_equal(rs_token_revoke_hash(t, ""), -EINVAL);
	assert_int_equal(rs_token_revoke_hash(t, "1234567"), -EINVAL);
	assert_int_equal(rs_token_revoke_hash(t, "123456789"), -EINVAL);
	assert_int_equal(rs_token_revoke_hash(t, "1234567g"), -EINVAL);
	assert_int_equal(rs_token_revoke_hash(t, "1234 567"), -EINVAL);
	for (int i = 0; i < 9; i++)
		upper[i] = (char)(hash[i] >= 'a' ? hash[i] - 'a' + 'A' : hash[i]);
	/* a hash no live token has */
	memcpy(k, raw, 16);
	k[0] ^= 1;
	rs_log_hash(k, 16, other);
	assert_int_equal(rs_token_revoke_hash(t, other), -ENOENT);
	assert_int_equal(rs_token_peek(t, raw, NULL, NULL), 0);
	assert_int_equal(rs_token_revoke_hash(t, upper), 0); /* either case */
	assert_int_equal(rs_token_peek(t, raw, NULL, NULL), -ENOENT);
	assert_int_equal(rs_token_revoke_hash(t, hash), -ENOENT);
	assert_int_equal(rs_token_peek(t, keep, NULL, NULL), 0); /* the other token is untouched */
	assert_int_equal(stats(t).revoked, 2);
	assert_int_equal(stats(t).live, 1);
	rs_token_table_free(t);
}

/* <ss>: a sockaddr_storage or a spec's union rs_ip. */
static void set_v4(void *ss, const char *ip)
{
	struct sockaddr_in *s4 = ss;

	memset(s4, 0, sizeof(*s4));
	s4->sin_family = AF_INET;
	s4->sin_port = htons(40000);
	assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
}

static void set_v6(void *ss, const char *ip)
{
	struct sockaddr_in6 *s6 = ss;

	memset(s6, 0, sizeof(*s6));
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(40001);
	assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
}

static void test_bound_ipv4(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	struct rs_console_spec *s = spec(NULL), *got;
	struct sockaddr_storage right, wrong, mapped, v6, unix_addr = {.ss_family = AF_UNIX};
	uint8_t raw[16];

	(void)st;
	set_v4(&right, "192.0.2.7");
	set_v4(&wrong, "192.0.2.8");
	set_v6(&mapped, "::ffff:192.0.2.7");
	set_v6(&v6, "2001:db8::7");
	s->bind_ip = true;
	set_v4(&s->client_ip, "192.0.2.7");
	issue_raw(t, s, 60000, raw);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&wrong, &got), -EACCES);
	assert_null(got);
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), -EACCES);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&v6, &got), -EACCES);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&unix_addr, &got), -EACCES);
	assert_int_equal(rs_token_peek(t, raw, NULL, NULL), 0); /* still live for its owner */
	assert_int_equal(stats(t).rejected, 4);
	/* a dual-stack listener reports the IPv4 browser as ::ffff:a.b.c.d */
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&mapped, &got), 0);
	rs_spec_free(got);

	s = spec(NULL);
	s->bind_ip = true;
	set_v4(&s->client_ip, "192.0.2.7");
	issue_raw(t, s, 60000, raw);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&right, &got), 0);
	rs_spec_free(got);
	assert_int_equal(stats(t).consumed, 2);

	/* unbound: any client, or none */
	issue_raw(t, spec(NULL), 60000, raw);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&wrong, &got), 0);
	rs_spec_free(got);
	rs_token_table_free(t);
}

static void test_bound_ipv6(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	struct rs_console_spec *s = spec(NULL), *got;
	struct sockaddr_storage right, wrong, v4;
	uint8_t raw[16];

	(void)st;
	set_v6(&right, "2001:db8::7");
	set_v6(&wrong, "2001:db8::8");
	set_v4(&v4, "0.0.0.7");
	s->bind_ip = true;
	set_v6(&s->client_ip, "2001:db8::7");
	issue_raw(t, s, 60000, raw);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&wrong, &got), -EACCES);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&v4, &got), -EACCES);
	assert_int_equal(rs_token_consume(t, raw, (struct sockaddr *)&right, &got), 0);
	assert_true(got->bind_ip);
	rs_spec_free(got);
	rs_token_table_free(t);
}

/* THE RACE: 64 threads released together by a barrier; exactly one wins. */
struct racer {
	struct rs_token_table *t;
	uint8_t raw[16];
	pthread_barrier_t *bar;
	_Atomic int *wins;
	bool revoke; /* revokers compete with consumers for the same token */
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct rs_console_spec *got;

	pthread_barrier_wait(r->bar);
	if (r->revoke) {
		if (!rs_token_revoke(r->t, r->raw))
			atomic_fetch_add(r->wins, 1);
	} else if (!rs_token_consume(r->t, r->raw, NULL, &got)) {
		atomic_fetch_add(r->wins, 1);
		rs_spec_free(got);
	}
	return NULL;
}

static void run_race(bool with_revokers)
{
	struct rs_token_table *t = rs_token_table_new(64);
	struct rs_token_stats s;

	for (int round = 0; round < 100; round++) {
		pthread_t th[64];
		struct racer r[64];
		pthread_barrier_t bar;
		_Atomic int wins = 0;
		uint8_t raw[16];

		issue_raw(t, spec("x"), 60000, raw);
		assert_int_equal(pthread_barrier_init(&bar, NULL, 64), 0);
		for (int i = 0; i < 64; i++) {
			r[i].t = t;
			memcpy(r[i].raw, raw, 16);
			r[i].bar = &bar;
			r[i].wins = &wins;
			r[i].revoke = with_revokers && (i & 1);
			assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
		}
		for (int i = 0; i < 64; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&bar);
		assert_int_equal(wins, 1);
	}
	s = stats(t);
	assert_int_equal(s.issued, 100);
	assert_int_equal(s.consumed + s.revoked, 100);
	assert_int_equal(s.live, 0);
	if (!with_revokers)
		assert_int_equal(s.rejected, 100 * 63);
	rs_token_table_free(t);
}

static void test_race_exactly_one_winner(void **st)
{
	(void)st;
	run_race(false);
}

static void test_race_consume_against_revoke(void **st)
{
	(void)st;
	run_race(true);
}

/*
 * Stress: 4 threads issue, peek, consume, revoke and sweep for about a
 * second, on each other's tokens (shared through a small board). Every spec
 * carries a serial number; whoever ends up owning it marks it, so a spec
 * handed out twice (or a token spent twice) fails the test, and ASan catches a
 * spec freed twice or never. The counters must add up afterwards.
 */
#define STRESS_THREADS 4
#define BOARD 64
#define MAX_SERIALS (1u << 24)

static struct rs_token_table *stress_t;
static _Atomic int stop_flag;
static _Atomic long n_issued, n_consumed, n_revoked, n_full;
static _Atomic uint32_t next_serial;
static _Atomic uint8_t *owned;
static pthread_mutex_t board_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t board[BOARD][16];

static void take_ownership(struct rs_console_spec *s)
{
	uint32_t serial = s->vmid;

	CHECK(serial < MAX_SERIALS);
	CHECK(atomic_exchange(&owned[serial], 1) == 0); /* nobody had it before */
	rs_spec_free(s);
}

static void *stress_worker(void *arg)
{
	uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull;

	while (!atomic_load(&stop_flag)) {
		char text[RS_TOKEN_TEXT + 1];
		uint8_t raw[16];
		struct rs_console_spec *s = spec(NULL), *got;
		int ret;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		s->vmid = atomic_fetch_add(&next_serial, 1);
		if (s->vmid >= MAX_SERIALS) { /* a very fast machine: enough */
			rs_spec_free(s);
			break;
		}
		ret = rs_token_issue(stress_t, s, (uint32_t)(x % 4), text);
		if (ret) {
			CHECK(ret == -ENOSPC);
			atomic_fetch_add(&n_full, 1);
			rs_spec_free(s); /* still ours */
		} else {
			atomic_fetch_add(&n_issued, 1);
			CHECK(rs_token_parse(text, 22, raw) == 0);
			pthread_mutex_lock(&board_lock);
			memcpy(board[x % BOARD], raw, 16);
			pthread_mutex_unlock(&board_lock);
		}
		/* act on a token some thread published (maybe spent already) */
		pthread_mutex_lock(&board_lock);
		memcpy(raw, board[(x >> 8) % BOARD], 16);
		pthread_mutex_unlock(&board_lock);
		switch ((x >> 16) % 8) {
		case 0:
			if (!rs_token_revoke(stress_t, raw))
				atomic_fetch_add(&n_revoked, 1);
			break;
		case 1:
			rs_token_sweep(stress_t, rs_now_ms());
			break;
		case 2:
			(void)rs_token_peek(stress_t, raw, NULL, NULL);
			break;
		default:
			if (!rs_token_consume(stress_t, raw, NULL, &got)) {
				atomic_fetch_add(&n_consumed, 1);
				take_ownership(got);
			} else {
				CHECK(!got);
			}
		}
	}
	return NULL;
}

static void test_concurrent_stress(void **st)
{
	pthread_t th[STRESS_THREADS];
	struct rs_token_stats s;

	(void)st;
	owned = calloc(MAX_SERIALS, 1);
	assert_non_null(owned);
	/* small, so the table is full now and then and slots are reused a lot */
	stress_t = rs_token_table_new(512);
	for (long i = 0; i < STRESS_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, stress_worker, (void *)(i + 1)), 0);
	usleep(1000000);
	atomic_store(&stop_flag, 1);
	for (int i = 0; i < STRESS_THREADS; i++)
		pthread_join(th[i], NULL);
	s = stats(stress_t);
	assert_true(n_issued > 1000);
	assert_int_equal(s.issued, (uint64_t)n_issued);
	assert_int_equal(s.consumed, (uint64_t)n_consumed);
	assert_int_equal(s.revoked, (uint64_t)n_revoked);
	/* every issued token is live, spent, revoked or expired: exactly once */
	assert_int_equal(s.issued, s.live + s.consumed + s.revoked + s.expired);
	assert_true(s.live <= 512);
	assert_int_equal(rs_token_sweep(stress_t, rs_now_ms() + 10), s.live);
	s = stats(stress_t);
	assert_int_equal(s.live, 0);
	assert_int_equal(s.issued, s.consumed + s.revoked + s.expired);
	rs_token_table_free(stress_t);
	free((void *)owned);
	print_message("stress: %ld issued, %ld consumed, %ld revoked, %lu expired, %ld full\n",
		      (long)n_issued, (long)n_consumed, (long)n_revoked, (unsigned long)s.expired,
		      (long)n_full);
}

/* A key's pending count (item 11's per-key limit) goes down whichever way a
 * link leaves the table: consumed, revoked, revoked by hash, expired on
 * consume, swept; the console place is given back when the spec is freed. */
static void test_key_usage_follows_the_link(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	struct rs_key_usage u = {0};
	struct rs_console_spec *s, *got;
	uint8_t raw[5][16];
	char hash[9];

	(void)st;
	rs_token_table_set_clock(t, fake_clock);
	for (int i = 0; i < 5; i++) {
		s = spec(NULL);
		assert_true(rs_usage_take(&u.pending, 5));
		s->usage = &u;
		s->max_consoles = 1;
		issue_raw(t, s, i == 4 ? 10 : 60000, raw[i]);
	}
	assert_false(rs_usage_take(&u.pending, 5)); /* the limit holds */
	assert_int_equal(atomic_load(&u.pending), 5);
	assert_int_equal(rs_token_consume(t, raw[0], NULL, &got), 0);
	assert_int_equal(atomic_load(&u.pending), 4);
	assert_true(rs_spec_open_console(got));
	assert_int_equal(atomic_load(&u.consoles), 1);
	assert_int_equal(rs_token_consume(t, raw[1], NULL, &s), 0);
	assert_false(rs_spec_open_console(s)); /* max_consoles 1 */
	assert_int_equal(atomic_load(&u.consoles), 1);
	rs_spec_free(s); /* held no place: gives none back */
	assert_int_equal(atomic_load(&u.consoles), 1);
	rs_spec_free(got);
	assert_int_equal(atomic_load(&u.consoles), 0);
	assert_int_equal(rs_token_revoke(t, raw[2]), 0);
	rs_log_hash(raw[3], 16, hash);
	assert_int_equal(rs_token_revoke_hash(t, hash), 0);
	assert_int_equal(atomic_load(&u.pending), 1);
	fake_now += 1000;
	assert_int_equal(rs_token_sweep(t, fake_now), 1);
	assert_int_equal(atomic_load(&u.pending), 0);
	assert_true(rs_usage_take(&u.pending, 0)); /* 0: unlimited */
	rs_token_table_free(t);
}

/* A consumer that may not use a link now puts it back: the same token works
 * again until its original expiry, and its key counts it pending again. */
static void test_return_keeps_the_link(void **st)
{
	struct rs_token_table *t = rs_token_table_new(16);
	struct rs_key_usage u = {0};
	struct rs_console_spec *s = spec("pw"), *got, *again;
	uint8_t raw[16];

	(void)st;
	rs_token_table_set_clock(t, fake_clock);
	assert_true(rs_usage_take(&u.pending, 1));
	s->usage = &u;
	s->expires_s = rs_wall_s() + 60;
	issue_raw(t, s, 60000, raw);
	assert_int_equal(rs_token_consume(t, raw, NULL, &got), 0);
	assert_int_equal(atomic_load(&u.pending), 0);
	assert_int_equal(rs_token_return(t, raw, got), 0);
	assert_int_equal(atomic_load(&u.pending), 1);
	assert_int_equal(stats(t).live, 1);
	assert_int_equal(stats(t).returned, 1);
	assert_int_equal(rs_token_peek(t, raw, NULL, NULL), 0);
	assert_int_equal(rs_token_consume(t, raw, NULL, &again), 0);
	assert_ptr_equal(again, got);
	assert_string_equal(again->password, "pw");
	/* an expired link does not come back */
	again->expires_s = rs_wall_s() - 1;
	assert_int_equal(rs_token_return(t, raw, again), -ENOENT);
	assert_int_equal(stats(t).live, 0);
	rs_spec_free(again);
	rs_token_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issue_peek_consume_once),
		cmocka_unit_test(test_near_miss_is_unknown),
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_text_round_trip),
		cmocka_unit_test(test_expiry_with_fake_clock),
		cmocka_unit_test(test_sweep_100k),
		cmocka_unit_test(test_next_expiry_and_wake),
		cmocka_unit_test(test_full_then_space_again),
		cmocka_unit_test(test_issue_bad_spec),
		cmocka_unit_test(test_revoke_and_revoke_by_hash),
		cmocka_unit_test(test_bound_ipv4),
		cmocka_unit_test(test_bound_ipv6),
		cmocka_unit_test(test_race_exactly_one_winner),
		cmocka_unit_test(test_race_consume_against_revoke),
		cmocka_unit_test(test_concurrent_stress),
		cmocka_unit_test(test_key_usage_follows_the_link),
		cmocka_unit_test(test_return_keeps_the_link),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
