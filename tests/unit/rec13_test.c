/* tests/unit/rec13_test.c — the TLS 1.3 record codec (tls/rec13.c) against
 * BoringSSL itself.
 *
 * A BoringSSL client and server shake hands in memory (memory BIOs pumped
 * by hand, a self-signed P-256 certificate made here); then one side is
 * taken over with rs_rec13_init and the other stays BoringSSL: data,
 * KeyUpdate and close_notify must cross both ways. For crafted input both
 * sides are taken over (a mirrored pair): the "attacker" context seals any
 * inner plaintext it likes with its write keys, which are the victim's read
 * keys. TLS_CHACHA20_POLY1305_SHA256 needs BoringSSL to believe there is no
 * AES hardware: the test re-executes itself with OPENSSL_ia32cap masking
 * AES-NI. TLS_AES_256_GCM_SHA384 is never chosen by a BoringSSL client, so
 * its test takes `openssl s_client` (OpenSSL 3) as the peer when present.
 */
#include "core/common.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/aead.h>

#include "tls/rec13.h"

enum { SERVER, CLIENT };

#define SCRATCH (1u << 20)
#define U(s) ((const uint8_t *)(s))

static EVP_PKEY *g_key;
static X509 *g_cert;
static uint16_t g_expect_cipher; /* 0: whatever BoringSSL picks */

struct fx {
	SSL_CTX *sctx, *cctx;
	SSL *s, *c;
	BIO *s_in, *s_out, *c_in, *c_out;
	SSL *bssl;	   /* the side BoringSSL keeps */
	BIO *b_in, *b_out; /* its transport: what it reads, what it wrote */
	struct rs_rec13 rec; /* the side taken over (the victim in crafted tests) */
	struct rs_rec13 atk; /* mirrored pair: the other side taken over too */
	struct rs_rec13 atk2;
	bool have_rec, have_atk, have_atk2;
	uint8_t held[65536]; /* server records kept from the client */
	size_t held_len;
	uint8_t *buf, *buf2, *data;
};

/* ---- certificate and pair ---------------------------------------------- */

static int group_setup(void **state)
{
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	X509_NAME *name;

	(void)state;
	if (!ec || !EC_KEY_generate_key(ec))
		return -1;
	g_key = EVP_PKEY_new();
	if (!g_key || !EVP_PKEY_assign_EC_KEY(g_key, ec))
		return -1;
	g_cert = X509_new();
	if (!g_cert || !X509_set_version(g_cert, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(g_cert), 1) ||
	    !X509_gmtime_adj(X509_getm_notBefore(g_cert), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(g_cert), 86400))
		return -1;
	name = X509_get_subject_name(g_cert);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"rec13.test", -1,
					-1, 0) ||
	    !X509_set_issuer_name(g_cert, name) || !X509_set_pubkey(g_cert, g_key) ||
	    !X509_sign(g_cert, g_key, EVP_sha256()))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	X509_free(g_cert);
	EVP_PKEY_free(g_key);
	return 0;
}

static BIO *mem_bio(void)
{
	BIO *b = BIO_new(BIO_s_mem());

	assert_non_null(b);
	BIO_set_mem_eof_return(b, -1);
	return b;
}

static void make_pair(struct fx *f, uint16_t max_version)
{
	f->sctx = SSL_CTX_new(TLS_method());
	f->cctx = SSL_CTX_new(TLS_method());
	assert_non_null(f->sctx);
	assert_non_null(f->cctx);
	assert_int_equal(SSL_CTX_use_certificate(f->sctx, g_cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(f->sctx, g_key), 1);
	assert_int_equal(SSL_CTX_set_min_proto_version(f->sctx, TLS1_2_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(f->sctx, max_version), 1);
	assert_int_equal(SSL_CTX_set_min_proto_version(f->cctx, TLS1_2_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(f->cctx, max_version), 1);
	/* a client that keeps sessions: BoringSSL servers send tickets only then */
	SSL_CTX_set_session_cache_mode(f->cctx, SSL_SESS_CACHE_CLIENT);
	f->s = SSL_new(f->sctx);
	f->c = SSL_new(f->cctx);
	assert_non_null(f->s);
	assert_non_null(f->c);
	f->s_in = mem_bio(), f->s_out = mem_bio(), f->c_in = mem_bio(), f->c_out = mem_bio();
	SSL_set_bio(f->s, f->s_in, f->s_out);
	SSL_set_bio(f->c, f->c_in, f->c_out);
	SSL_set_accept_state(f->s);
	SSL_set_connect_state(f->c);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->buf = malloc(SCRATCH);
	f->buf2 = malloc(SCRATCH);
	f->data = malloc(SCRATCH);
	assert_non_null(f->buf);
	assert_non_null(f->buf2);
	assert_non_null(f->data);
	make_pair(f, TLS1_3_VERSION);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->have_rec)
		rs_rec13_clear(&f->rec);
	if (f->have_atk)
		rs_rec13_clear(&f->atk);
	if (f->have_atk2)
		rs_rec13_clear(&f->atk2);
	SSL_free(f->s);
	SSL_free(f->c);
	SSL_CTX_free(f->sctx);
	SSL_CTX_free(f->cctx);
	free(f->buf);
	free(f->buf2);
	free(f->data);
	free(f);
	return 0;
}

/* ---- transport --------------------------------------------------------- */

static size_t drain(BIO *b, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (n < cap) {
		int r = BIO_read(b, out + n, (int)RS_MIN(cap - n, (size_t)65536));

		if (r <= 0)
			break;
		n += (size_t)r;
	}
	assert_int_equal(BIO_pending(b), 0);
	return n;
}

static void put(BIO *b, const uint8_t *p, size_t n)
{
	if (n)
		assert_int_equal(BIO_write(b, p, (int)n), (int)n);
}

static void move(struct fx *f, BIO *from, BIO *to)
{
	put(to, f->buf2, drain(from, f->buf2, SCRATCH));
}

static size_t whole_record(const uint8_t *p, size_t n)
{
	size_t len;

	if (n < 5)
		return 0;
	len = 5 + ((size_t)p[3] << 8 | p[4]);
	return len <= n ? len : 0;
}

static bool step(SSL *ssl)
{
	int rc = SSL_do_handshake(ssl);

	if (rc == 1)
		return true;
	assert_int_equal(SSL_get_error(ssl, rc), SSL_ERROR_WANT_READ);
	return false;
}

/* Handshake to completion. <hold>: the client gets the server's records one
 * at a time and none after its handshake is done (they stay in f->held). */
static void handshake(struct fx *f, bool hold)
{
	bool cdone = false, sdone = false;

	for (int i = 0; i < 40 && !(cdone && sdone); i++) {
		if (!cdone)
			cdone = step(f->c);
		move(f, f->c_out, f->s_in);
		if (!sdone)
			sdone = step(f->s);
		if (!hold) {
			move(f, f->s_out, f->c_in);
			continue;
		}
		f->held_len += drain(f->s_out, f->held + f->held_len, sizeof(f->held) - f->held_len);
		while (!cdone) {
			size_t n = whole_record(f->held, f->held_len);

			if (!n)
				break;
			put(f->c_in, f->held, n);
			memmove(f->held, f->held + n, f->held_len - n);
			f->held_len -= n;
			cdone = step(f->c);
			move(f, f->c_out, f->s_in);
		}
	}
	assert_true(cdone);
	assert_true(sdone);
	if (g_expect_cipher)
		assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(f->c)),
				 g_expect_cipher);
}

/* The server writes, the client reads: the client has read the tickets. */
static void ping(struct fx *f)
{
	char got[8];

	assert_int_equal(SSL_write(f->s, "ping", 4), 4);
	move(f, f->s_out, f->c_in);
	assert_int_equal(SSL_read(f->c, got, sizeof(got)), 4);
	assert_memory_equal(got, "ping", 4);
	assert_int_equal(BIO_pending(f->c_in), 0);
}

static void take_over(struct fx *f, int side)
{
	SSL *ssl = side == SERVER ? f->s : f->c;

	assert_int_equal(SSL_has_pending(ssl), 0);
	assert_int_equal(BIO_pending(side == SERVER ? f->s_out : f->c_out), 0);
	assert_int_equal(BIO_pending(side == SERVER ? f->s_in : f->c_in), 0);
	assert_int_equal(rs_rec13_init(&f->rec, ssl), 0);
	f->have_rec = true;
	f->bssl = side == SERVER ? f->c : f->s;
	f->b_in = side == SERVER ? f->c_in : f->s_in;
	f->b_out = side == SERVER ? f->c_out : f->s_out;
	if (g_expect_cipher)
		assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(ssl)),
				 g_expect_cipher);
}

/* BoringSSL holds a TLS 1.3 server's tickets until its first write; a
 * zero-byte write sends them (what tls/conn.c does before taking over). */
static void flush_tickets(struct fx *f)
{
	assert_true(SSL_write(f->s, "", 0) >= 0);
}

/* Handshake, then the server or the client taken over, as tls/conn.c does:
 * the server once the client has sent data and its tickets are out, the
 * client once it has read the server's first answer (tickets before it). */
static void start(struct fx *f, int side)
{
	char b[16];

	handshake(f, false);
	assert_int_equal(SSL_version(f->c), TLS1_3_VERSION);
	if (side == CLIENT) {
		ping(f);
	} else {
		assert_int_equal(SSL_write(f->c, "hi", 2), 2);
		move(f, f->c_out, f->s_in);
		assert_int_equal(SSL_read(f->s, b, sizeof(b)), 2);
		flush_tickets(f);
		move(f, f->s_out, f->c_in);
	}
	take_over(f, side);
}

/* Both sides taken over: f->rec is the client (victim), f->atk the server. */
static void start_mirrored(struct fx *f)
{
	handshake(f, false);
	ping(f);
	assert_int_equal(SSL_has_pending(f->s), 0);
	assert_int_equal(rs_rec13_init(&f->atk, f->s), 0);
	f->have_atk = true;
	take_over(f, CLIENT);
	assert_int_equal(f->atk.wr.seq, f->rec.rd.seq);
	assert_int_equal(f->atk.rd.seq, f->rec.wr.seq);
}

/* ---- record helpers ---------------------------------------------------- */

struct got {
	enum rs_rec13_ev ev;
	uint8_t *out;
	size_t out_len;
	uint8_t alert;
	const char *why;
};

/* Open one record and check the contract common to every event. */
static struct got open1(struct rs_rec13 *r, uint8_t *rec, size_t len)
{
	struct got g = {.alert = 0xee, .why = NULL, .out = NULL, .out_len = 0xdead};

	g.ev = rs_rec13_open(r, rec, len, &g.out, &g.out_len, &g.alert, &g.why);
	switch (g.ev) {
	case RS_REC13_DATA:
		assert_int_equal(g.alert, 0);
		assert_true(g.out >= rec + RS_REC13_HDR);
		assert_true(g.out_len <= RS_REC13_MAX_PLAIN);
		assert_true(g.out + g.out_len <= rec + len);
		break;
	case RS_REC13_NONE:
	case RS_REC13_CLOSE:
		assert_int_equal(g.alert, 0);
		break;
	case RS_REC13_ERROR:
		assert_non_null(g.why);
		assert_int_not_equal(g.alert, 0xee);
		break;
	default:
		fail_msg("event %d", g.ev);
	}
	return g;
}

/* Every record BoringSSL wrote, opened by the rec side: DATA appended to
 * f->data (returns its length); no ERROR; *none and *close counted. */
static size_t rec_read(struct fx *f, unsigned *records, unsigned *none, bool *closed)
{
	size_t n = drain(f->b_out, f->buf, SCRATCH), at = 0, got = 0;

	if (records)
		*records = 0;
	if (none)
		*none = 0;
	if (closed)
		*closed = false;
	while (at < n) {
		ssize_t len = rs_rec13_record_len(f->buf + at, n - at);
		struct got g;

		assert_true(len > 0);
		assert_true((size_t)len <= n - at);
		g = open1(&f->rec, f->buf + at, (size_t)len);
		if (g.ev == RS_REC13_ERROR)
			fail_msg("rec side: %s (alert %u)", g.why, g.alert);
		if (records)
			++*records;
		if (g.ev == RS_REC13_DATA) {
			memcpy(f->data + got, g.out, g.out_len);
			got += g.out_len;
		} else if (g.ev == RS_REC13_NONE && none) {
			++*none;
		} else if (g.ev == RS_REC13_CLOSE) {
			assert_non_null(closed);
			*closed = true;
		}
		at += (size_t)len;
	}
	return got;
}

/* The rec side seals <len> bytes of <type> and hands them to BoringSSL. */
static void rec_send(struct fx *f, uint8_t type, const void *p, size_t len)
{
	uint8_t *out = f->buf;
	size_t n = rs_rec13_seal(&f->rec, type, p, len, out);

	assert_int_equal(n, len + RS_REC13_OVERHEAD);
	assert_int_equal(rs_rec13_record_len(out, n), (ssize_t)n);
	put(f->b_in, out, n);
}

/* BoringSSL reads exactly <len> bytes, then nothing more. */
static void bssl_expect(struct fx *f, const void *want, size_t len)
{
	size_t got = 0;
	uint8_t *b = f->buf2;

	while (got < len) {
		int r = SSL_read(f->bssl, b + got, (int)(len - got));

		if (r <= 0)
			fail_msg("SSL_read: %d (error %d) after %zu of %zu", r,
				 SSL_get_error(f->bssl, r), got, len);
		got += (size_t)r;
	}
	assert_memory_equal(b, want, len);
	assert_int_equal(SSL_read(f->bssl, b, 1), -1);
	assert_int_equal(SSL_get_error(f->bssl, -1), SSL_ERROR_WANT_READ);
}

static void bssl_write(struct fx *f, const void *p, size_t len)
{
	assert_int_equal(SSL_write(f->bssl, p, (int)len), (int)len);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

/* Seal an arbitrary TLSInnerPlaintext with r's write keys (what
 * rs_rec13_seal does, without choosing the inner layout). */
static size_t raw_seal(struct rs_rec13 *r, const uint8_t *inner, size_t n, uint8_t *out)
{
	uint8_t nonce[12];
	size_t body = n + RS_REC13_TAG, out_len;

	out[0] = 23, out[1] = 3, out[2] = 3, out[3] = (uint8_t)(body >> 8), out[4] = (uint8_t)body;
	memcpy(nonce, r->wr.iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(r->wr.seq >> (56 - 8 * i));
	assert_int_equal(EVP_AEAD_CTX_seal(&r->wr.aead, out + 5, &out_len, body, nonce, 12, inner, n,
					   out, 5),
			 1);
	r->wr.seq++;
	return 5 + out_len;
}

/* content || type || <pad> zeros, sealed by the attacker, opened by the victim. */
static struct got inject(struct fx *f, uint8_t type, const void *content, size_t len, size_t pad)
{
	uint8_t *inner = f->buf2, *rec = f->buf;
	size_t n;

	if (len)
		memcpy(inner, content, len);
	inner[len] = type;
	memset(inner + len + 1, 0, pad);
	n = raw_seal(&f->atk, inner, len + 1 + pad, rec);
	assert_int_equal(rs_rec13_record_len(rec, n), (ssize_t)n);
	return open1(&f->rec, rec, n);
}

static void expect_error(struct got g, uint8_t alert)
{
	assert_int_equal(g.ev, RS_REC13_ERROR);
	assert_int_equal(g.alert, alert);
	assert_non_null(g.why);
}

/* The attacker's ordinary data still reaches the victim intact. */
static void expect_data_flows(struct fx *f)
{
	struct got g = inject(f, 23, "still here", 10, 0);

	assert_int_equal(g.ev, RS_REC13_DATA);
	assert_int_equal(g.out_len, 10);
	assert_memory_equal(g.out, "still here", 10);
}

/* ---- data ---------------------------------------------------------------- */

static void exchange(struct fx *f)
{
	uint8_t *msg = malloc(3 * 16384 + 1000), *rec = malloc(RS_REC13_MAX_RECORD);
	unsigned records, none;
	size_t n;

	assert_non_null(msg);
	assert_non_null(rec);

	/* small, both ways */
	rec_send(f, 23, "hello", 5);
	bssl_expect(f, "hello", 5);
	bssl_write(f, "world!", 6);
	assert_int_equal(rec_read(f, &records, &none, NULL), 6);
	assert_int_equal(records, 1);
	assert_memory_equal(f->data, "world!", 6);

	/* empty application data from the rec side */
	rec_send(f, 23, "", 0);
	assert_int_equal(SSL_read(f->bssl, f->buf2, 16), -1);
	assert_int_equal(SSL_get_error(f->bssl, -1), SSL_ERROR_WANT_READ);

	/* one full record, both ways */
	fill(msg, 16384, 1);
	rec_send(f, 23, msg, 16384);
	assert_int_equal(BIO_pending(f->b_in), 16384 + RS_REC13_OVERHEAD);
	bssl_expect(f, msg, 16384);
	fill(msg, 16384, 2);
	bssl_write(f, msg, 16384);
	assert_int_equal(BIO_pending(f->b_out), 16384 + RS_REC13_OVERHEAD);
	assert_int_equal(rec_read(f, &records, NULL, NULL), 16384);
	assert_int_equal(records, 1);
	assert_memory_equal(f->data, msg, 16384);

	/* one rec-side record too long: refused, nothing written */
	assert_int_equal(rs_rec13_seal(&f->rec, 23, msg, 16385, rec), 0);

	/* multi-record writes */
	fill(msg, 3 * 16384 + 1000, 3);
	bssl_write(f, msg, 3 * 16384 + 1000);
	assert_int_equal(rec_read(f, &records, NULL, NULL), 3 * 16384 + 1000);
	assert_int_equal(records, 4);
	assert_memory_equal(f->data, msg, 3 * 16384 + 1000);
	fill(msg, 3 * 16384 + 1000, 4);
	for (size_t at = 0; at < 3 * 16384 + 1000; at += 16384)
		rec_send(f, 23, msg + at, RS_MIN((size_t)16384, 3 * 16384 + 1000 - at));
	bssl_expect(f, msg, 3 * 16384 + 1000);

	/* in place: in == out + RS_REC13_HDR */
	fill(rec + RS_REC13_HDR, 1234, 5);
	memcpy(msg, rec + RS_REC13_HDR, 1234);
	n = rs_rec13_seal(&f->rec, 23, rec + RS_REC13_HDR, 1234, rec);
	assert_int_equal(n, 1234 + RS_REC13_OVERHEAD);
	put(f->b_in, rec, n);
	bssl_expect(f, msg, 1234);
	fill(rec + RS_REC13_HDR, 16384, 6);
	memcpy(msg, rec + RS_REC13_HDR, 16384);
	n = rs_rec13_seal(&f->rec, 23, rec + RS_REC13_HDR, 16384, rec);
	assert_int_equal(n, 16384 + RS_REC13_OVERHEAD);
	put(f->b_in, rec, n);
	bssl_expect(f, msg, 16384);

	/* a tail joins the record: BoringSSL reads in ++ tail */
	fill(msg, 16384, 7);
	n = rs_rec13_seal_tail(&f->rec, msg, 16384 - 14, msg + 16384 - 14, 14, rec);
	assert_int_equal(n, 16384 + RS_REC13_OVERHEAD);
	put(f->b_in, rec, n);
	bssl_expect(f, msg, 16384);
	n = rs_rec13_seal_tail(&f->rec, msg, 3000, NULL, 0, rec);
	assert_int_equal(n, 3000 + RS_REC13_OVERHEAD);
	put(f->b_in, rec, n);
	bssl_expect(f, msg, 3000);
	/* in place, and a tail that is not: */
	fill(rec + RS_REC13_HDR, 5000, 8);
	memcpy(msg, rec + RS_REC13_HDR, 5000);
	memcpy(msg + 5000, "HEADER", 6);
	n = rs_rec13_seal_tail(&f->rec, rec + RS_REC13_HDR, 5000, U("HEADER"), 6, rec);
	assert_int_equal(n, 5006 + RS_REC13_OVERHEAD);
	put(f->b_in, rec, n);
	bssl_expect(f, msg, 5006);
	/* too long a tail, or past a record: refused, the sequence unmoved */
	assert_int_equal(rs_rec13_seal_tail(&f->rec, msg, 100, msg, RS_REC13_TAIL_MAX + 1, rec), 0);
	assert_int_equal(rs_rec13_seal_tail(&f->rec, msg, 16384 - 3, msg, 4, rec), 0);
	rec_send(f, 23, U("still in step"), 13);
	bssl_expect(f, "still in step", 13);

	/* many records: the sequence numbers keep step both ways */
	for (unsigned i = 0; i < 600; i++) {
		size_t len = 1 + (i * 37) % 700;

		fill(msg, len, 100 + i);
		if (i % 3 == 0) {
			/* several records in one batch */
			rec_send(f, 23, msg, len);
			rec_send(f, 23, msg + len / 2, len - len / 2);
			memcpy(msg + len, msg + len / 2, len - len / 2);
			bssl_expect(f, msg, len + len - len / 2);
		} else {
			rec_send(f, 23, msg, len);
			bssl_expect(f, msg, len);
		}
		fill(msg, len, 1000 + i);
		bssl_write(f, msg, len);
		if (i % 5 == 0)
			bssl_write(f, msg, len);
		n = rec_read(f, &records, NULL, NULL);
		assert_int_equal(records, i % 5 == 0 ? 2 : 1);
		assert_int_equal(n, i % 5 == 0 ? 2 * len : len);
		assert_memory_equal(f->data, msg, len);
	}
	free(msg);
	free(rec);
}

static void test_server_data(void **state)
{
	struct fx *f = *state;

	start(f, SERVER);
	assert_true(f->rec.wr.seq >= 1); /* the tickets BoringSSL sent first */
	assert_int_equal(f->rec.rd.seq, 1); /* "hi" */
	exchange(f);
}

static void test_client_data(void **state)
{
	struct fx *f = *state;

	start(f, CLIENT);
	assert_true(f->rec.rd.seq >= 2); /* tickets and ping read by BoringSSL */
	exchange(f);
}

/* The client taken over before it read the server's tickets (the server's
 * records reach it one at a time, and none after its handshake is done):
 * the tickets reach the rec side, which ignores them, then the data. */
static void test_client_tickets_after_takeover(void **state)
{
	struct fx *f = *state;
	unsigned n = 0;
	struct got g;

	handshake(f, true);
	flush_tickets(f);
	assert_int_equal(SSL_write(f->s, "first", 5), 5);
	f->held_len += drain(f->s_out, f->held + f->held_len, sizeof(f->held) - f->held_len);
	assert_int_equal(SSL_has_pending(f->c), 0);
	take_over(f, CLIENT);
	assert_int_equal(f->rec.rd.seq, 0);
	for (size_t at = 0, len; at < f->held_len; at += len) {
		len = whole_record(f->held + at, f->held_len - at);
		assert_int_not_equal(len, 0);
		assert_int_equal(rs_rec13_record_len(f->held + at, len), (ssize_t)len);
		g = open1(&f->rec, f->held + at, len);
		if (at + len < f->held_len) {
			assert_int_equal(g.ev, RS_REC13_NONE);
		} else {
			assert_int_equal(g.ev, RS_REC13_DATA);
			assert_int_equal(g.out_len, 5);
			assert_memory_equal(g.out, "first", 5);
		}
		n++;
	}
	assert_true(n >= 2); /* the tickets (BoringSSL packs them in a record), then the data */
	assert_int_equal(f->rec.rd.seq, n);
	assert_null(f->rec.hs);
	assert_false(rs_rec13_owed(&f->rec));
	/* and the connection goes on both ways */
	bssl_write(f, "after tickets", 13);
	assert_int_equal(rec_read(f, NULL, NULL, NULL), 13);
	assert_memory_equal(f->data, "after tickets", 13);
	rec_send(f, 23, "reply", 5);
	bssl_expect(f, "reply", 5);
}

/* ---- KeyUpdate --------------------------------------------------------- */

static void keyupdate_requested(struct fx *f)
{
	uint8_t out[RS_REC13_KEY_UPDATE_LEN];
	unsigned records, none;
	size_t n;

	assert_int_equal(SSL_key_update(f->bssl, SSL_KEY_UPDATE_REQUESTED), 1);
	bssl_write(f, "after update", 12);
	assert_int_equal(rec_read(f, &records, &none, NULL), 12);
	assert_int_equal(records, 2);
	assert_int_equal(none, 1);
	assert_memory_equal(f->data, "after update", 12);
	assert_true(rs_rec13_owed(&f->rec));
	n = rs_rec13_answer_update(&f->rec, out);
	assert_int_equal(n, RS_REC13_KEY_UPDATE_LEN);
	assert_false(rs_rec13_owed(&f->rec));
	assert_int_equal(f->rec.wr.seq, 0);
	assert_int_equal(rs_rec13_answer_update(&f->rec, out), 0);
	put(f->b_in, out, n);
	rec_send(f, 23, "under new keys", 14);
	bssl_expect(f, "under new keys", 14);
	/* BoringSSL got no request: it sends no second KeyUpdate */
	bssl_write(f, "more", 4);
	assert_int_equal(rec_read(f, &records, &none, NULL), 4);
	assert_int_equal(records, 1);
	assert_memory_equal(f->data, "more", 4);
	rec_send(f, 23, "and more", 8);
	bssl_expect(f, "and more", 8);
}

static void keyupdate_not_requested(struct fx *f)
{
	uint8_t out[RS_REC13_KEY_UPDATE_LEN];
	unsigned records, none;
	uint64_t wseq = f->rec.wr.seq;

	assert_int_equal(SSL_key_update(f->bssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
	bssl_write(f, "x", 1);
	assert_int_equal(rec_read(f, &records, &none, NULL), 1);
	assert_int_equal(records, 2);
	assert_int_equal(none, 1);
	assert_int_equal(f->rec.rd.seq, 1);
	assert_false(rs_rec13_owed(&f->rec));
	assert_int_equal(rs_rec13_answer_update(&f->rec, out), 0);
	assert_int_equal(f->rec.wr.seq, wseq);
	rec_send(f, 23, "old write keys", 14);
	bssl_expect(f, "old write keys", 14);
	bssl_write(f, "y", 1);
	assert_int_equal(rec_read(f, NULL, NULL, NULL), 1);
	assert_int_equal(f->data[0], 'y');
}

static void keyupdate_by_rec(struct fx *f)
{
	uint8_t out[RS_REC13_KEY_UPDATE_LEN];
	unsigned records, none;
	size_t n;

	n = rs_rec13_update(&f->rec, true, out);
	assert_int_equal(n, RS_REC13_KEY_UPDATE_LEN);
	assert_int_equal(f->rec.wr.seq, 0);
	assert_false(rs_rec13_owed(&f->rec));
	put(f->b_in, out, n);
	rec_send(f, 23, "d1", 2);
	bssl_expect(f, "d1", 2);
	bssl_write(f, "d2", 2); /* BoringSSL's answer comes first */
	assert_int_equal(rec_read(f, &records, &none, NULL), 2);
	assert_int_equal(none, 1);
	assert_int_equal(records, 2);
	assert_int_equal(f->rec.rd.seq, 1);
	assert_memory_equal(f->data, "d2", 2);
	assert_false(rs_rec13_owed(&f->rec)); /* BoringSSL did not ask back */
	/* and an update that asks for nothing */
	n = rs_rec13_update(&f->rec, false, out);
	assert_int_equal(n, RS_REC13_KEY_UPDATE_LEN);
	put(f->b_in, out, n);
	rec_send(f, 23, "d3", 2);
	bssl_expect(f, "d3", 2);
	bssl_write(f, "d4", 2);
	assert_int_equal(rec_read(f, &records, &none, NULL), 2);
	assert_int_equal(records, 1);
	assert_memory_equal(f->data, "d4", 2);
}

static void test_keyupdate_requested_server(void **state)
{
	struct fx *f = *state;

	start(f, SERVER);
	keyupdate_requested(f);
	keyupdate_requested(f); /* twice: the second generation too */
}

static void test_keyupdate_requested_client(void **state)
{
	struct fx *f = *state;

	start(f, CLIENT);
	keyupdate_requested(f);
}

static void test_keyupdate_not_requested(void **state)
{
	struct fx *f = *state;

	start(f, SERVER);
	keyupdate_not_requested(f);
}

static void test_keyupdate_by_rec_server(void **state)
{
	struct fx *f = *state;

	start(f, SERVER);
	keyupdate_by_rec(f);
}

static void test_keyupdate_by_rec_client(void **state)
{
	struct fx *f = *state;

	start(f, CLIENT);
	keyupdate_by_rec(f);
	keyupdate_not_requested(f);
	keyupdate_requested(f);
}

/* ---- close ------------------------------------------------------------- */

static void test_close_from_bssl(void **state)
{
	struct fx *f = *state;
	bool closed;

	start(f, SERVER);
	bssl_write(f, "last", 4);
	assert_int_equal(SSL_shutdown(f->bssl), 0); /* sent, not yet received */
	assert_int_equal(rec_read(f, NULL, NULL, &closed), 4);
	assert_true(closed);
}

static void test_close_from_rec(void **state)
{
	struct fx *f = *state;
	static const uint8_t close_notify[2] = {1, 0};
	char b[4];
	int r;

	start(f, CLIENT);
	rec_send(f, 23, "bye", 3);
	rec_send(f, 21, close_notify, 2);
	assert_int_equal(SSL_read(f->bssl, b, sizeof(b)), 3);
	assert_memory_equal(b, "bye", 3);
	r = SSL_read(f->bssl, b, sizeof(b));
	assert_int_equal(r, 0);
	assert_int_equal(SSL_get_error(f->bssl, r), SSL_ERROR_ZERO_RETURN);
}

/* ---- init -------------------------------------------------------------- */

/* A refusal leaves <r> untouched: tls/conn.c overlays it on the SSL
 * pointer it keeps using when the connection stays with BoringSSL. */
static void assert_refused_untouched(const SSL *ssl)
{
	struct rs_rec13 r, before;

	memset(&r, 0xa5, sizeof(r));
	memcpy(&before, &r, sizeof(r));
	assert_int_equal(rs_rec13_init(&r, ssl), -EPROTONOSUPPORT);
	assert_memory_equal(&r, &before, sizeof(r));
}

static void test_init_refuses(void **state)
{
	struct fx *f = *state;

	/* mid-handshake */
	assert_refused_untouched(f->c);
	/* TLS 1.2 */
	SSL_free(f->s), SSL_free(f->c), SSL_CTX_free(f->sctx), SSL_CTX_free(f->cctx);
	make_pair(f, TLS1_2_VERSION);
	handshake(f, false);
	assert_int_equal(SSL_version(f->s), TLS1_2_VERSION);
	assert_int_equal(SSL_has_pending(f->s), 0);
	assert_refused_untouched(f->s);
	assert_refused_untouched(f->c);
}

/* ---- crafted input (mirrored pair) ------------------------------------- */

/* start_mirrored again on a used fixture: a new pair. */
static void restart(struct fx *f)
{
	rs_rec13_clear(&f->rec), rs_rec13_clear(&f->atk);
	f->have_rec = f->have_atk = false;
	SSL_free(f->s), SSL_free(f->c), SSL_CTX_free(f->sctx), SSL_CTX_free(f->cctx);
	make_pair(f, TLS1_3_VERSION);
	start_mirrored(f);
}


static void test_mirrored_sanity(void **state)
{
	struct fx *f = *state;
	uint8_t rec[64];
	struct got g;
	size_t n;

	start_mirrored(f);
	expect_data_flows(f);
	/* the victim's own writes reach the attacker too */
	n = rs_rec13_seal(&f->rec, 23, U("back"), 4, rec);
	g = open1(&f->atk, rec, n);
	assert_int_equal(g.ev, RS_REC13_DATA);
	assert_int_equal(g.out_len, 4);
	assert_memory_equal(g.out, "back", 4);
	/* and an empty data record is DATA of length 0 */
	g = inject(f, 23, NULL, 0, 0);
	assert_int_equal(g.ev, RS_REC13_DATA);
	assert_int_equal(g.out_len, 0);
}

static void test_bad_ciphertext(void **state)
{
	struct fx *f = *state;
	const size_t at[] = {5, 6, 10, 5 + 100, 5 + 100 + 1, 5 + 100 + 1 + 15};

	start_mirrored(f);
	for (size_t i = 0; i < RS_ARRAY_SIZE(at); i++) {
		uint8_t rec[5 + 100 + RS_REC13_OVERHEAD], msg[100];
		uint64_t seq = f->rec.rd.seq;
		size_t n;

		fill(msg, sizeof(msg), (unsigned)i);
		n = rs_rec13_seal(&f->atk, 23, msg, sizeof(msg), rec);
		assert_int_equal(n, 100 + RS_REC13_OVERHEAD);
		rec[at[i]] ^= (uint8_t)(1u << (i % 8));
		expect_error(open1(&f->rec, rec, n), 20);
		assert_int_equal(f->rec.rd.seq, seq); /* nothing consumed */
		f->atk.wr.seq = seq;		      /* start over at the same number */
	}
	expect_data_flows(f);
}

static void test_bad_header(void **state)
{
	struct fx *f = *state;
	uint8_t rec[64];
	size_t n;

	start_mirrored(f);
	for (int i = 0; i < 5; i++) {
		uint64_t seq = f->rec.rd.seq;

		n = rs_rec13_seal(&f->atk, 23, U("header"), 6, rec);
		rec[i] ^= 1;
		if (i < 3)
			assert_int_equal(rs_rec13_record_len(rec, n), -EPROTO);
		else
			assert_int_not_equal(rs_rec13_record_len(rec, n), (ssize_t)n);
		expect_error(open1(&f->rec, rec, n), 50);
		assert_int_equal(f->rec.rd.seq, seq);
		f->atk.wr.seq = seq;
	}
	/* a header that passes but authenticates something else: the length
	 * byte changed together with the record's size */
	n = rs_rec13_seal(&f->atk, 23, U("header"), 6, rec);
	rec[4]++;
	rec[n] = 0;
	assert_int_equal(rs_rec13_record_len(rec, n + 1), (ssize_t)(n + 1));
	expect_error(open1(&f->rec, rec, n + 1), 20);
}

static void test_bad_outer_type(void **state)
{
	struct fx *f = *state;
	const uint8_t types[] = {20, 21, 22, 24, 0, 255};
	uint8_t rec[64];

	start_mirrored(f);
	for (size_t i = 0; i < RS_ARRAY_SIZE(types); i++) {
		size_t n = rs_rec13_seal(&f->atk, 23, U("type"), 4, rec);

		rec[0] = types[i];
		assert_int_equal(rs_rec13_record_len(rec, n), -EPROTO);
		expect_error(open1(&f->rec, rec, n), 50);
		f->atk.wr.seq--;
	}
	/* record version other than 0x0303 */
	rec[0] = 23, rec[1] = 3, rec[2] = 1;
	assert_int_equal(rs_rec13_record_len(rec, 5), -EPROTO);
	rec[1] = 2, rec[2] = 3;
	assert_int_equal(rs_rec13_record_len(rec, 5), -EPROTO);
	expect_data_flows(f);
}

static void test_record_len(void **state)
{
	uint8_t h[5] = {23, 3, 3, 0, 0};

	(void)state;
	assert_int_equal(rs_rec13_record_len(h, 0), 0);
	assert_int_equal(rs_rec13_record_len(h, 4), 0);
	h[3] = 16640 >> 8, h[4] = 16640 & 0xff;
	assert_int_equal(rs_rec13_record_len(h, 5), 5 + 16640);
	h[4]++; /* 16641 */
	assert_int_equal(rs_rec13_record_len(h, 5), -EPROTO);
	h[3] = 0xff, h[4] = 0xff;
	assert_int_equal(rs_rec13_record_len(h, 5), -EPROTO);
	h[3] = 0, h[4] = 17;
	assert_int_equal(rs_rec13_record_len(h, 5), 22);
	h[4] = 16;
	assert_int_equal(rs_rec13_record_len(h, 5), -EPROTO);
	h[4] = 0;
	assert_int_equal(rs_rec13_record_len(h, 5), -EPROTO);
}

/* rs_rec13_open on a record that is not exactly one whole record. */
static void test_open_bad_lengths(void **state)
{
	struct fx *f = *state;
	uint8_t rec[64];
	size_t n;

	start_mirrored(f);
	n = rs_rec13_seal(&f->atk, 23, U("length"), 6, rec);
	f->atk.wr.seq--; /* never delivered */
	expect_error(open1(&f->rec, rec, 0), 50);
	expect_error(open1(&f->rec, rec, 3), 50);
	expect_error(open1(&f->rec, rec, 5), 50);
	expect_error(open1(&f->rec, rec, n - 1), 50);
	expect_error(open1(&f->rec, rec, n + 1), 50);
	expect_data_flows(f);
}

static void test_padding(void **state)
{
	struct fx *f = *state;
	uint8_t *big = malloc(16385);
	struct got g;

	start_mirrored(f);
	g = inject(f, 23, "abc", 3, 300);
	assert_int_equal(g.ev, RS_REC13_DATA);
	assert_int_equal(g.out_len, 3);
	assert_memory_equal(g.out, "abc", 3);
	/* a full record and padding up to the body limit */
	fill(big, 16385, 7);
	big[16383] |= 1; /* not mistaken for padding */
	g = inject(f, 23, big, 16384, 16640 - 16 - 16385);
	assert_int_equal(g.ev, RS_REC13_DATA);
	assert_int_equal(g.out_len, 16384);
	assert_memory_equal(g.out, big, 16384);
	/* content of a user_canceled alert, padded */
	g = inject(f, 21, "\x01\x5a", 2, 17);
	assert_int_equal(g.ev, RS_REC13_NONE);
	/* one byte over */
	expect_error(inject(f, 23, big, 16385, 0), 22);
	free(big);
}

static void test_all_zero_inner(void **state)
{
	struct fx *f = *state;
	uint8_t zeros[100] = {0}, rec[200];
	size_t n;

	start_mirrored(f);
	expect_error(inject(f, 0, NULL, 0, 0), 10);
	restart(f);
	expect_error(inject(f, 0, zeros, sizeof(zeros), 50), 10);
	/* the same through rs_rec13_seal: type 0, empty content */
	restart(f);
	n = rs_rec13_seal(&f->atk, 0, NULL, 0, rec);
	assert_int_equal(n, RS_REC13_OVERHEAD);
	expect_error(open1(&f->rec, rec, n), 10);
	/* padding through rs_rec13_seal: content || type || zeros, sealed as type 0 */
	restart(f);
	memcpy(rec + 100, "pad\x17\0\0\0", 7);
	n = rs_rec13_seal(&f->atk, 0, rec + 100, 7, rec);
	{
		struct got g = open1(&f->rec, rec, n);

		assert_int_equal(g.ev, RS_REC13_DATA);
		assert_int_equal(g.out_len, 3);
		assert_memory_equal(g.out, "pad", 3);
	}
}

static void test_unknown_types(void **state)
{
	struct fx *f = *state;
	const uint8_t types[] = {24, 20, 1, 0x7f, 255};

	start_mirrored(f);
	for (size_t i = 0; i < RS_ARRAY_SIZE(types); i++) {
		expect_error(inject(f, types[i], "x", 1, i), 10);
		restart(f);
	}
}

static void test_alerts(void **state)
{
	struct fx *f = *state;
	struct got g;

	start_mirrored(f);
	g = inject(f, 21, "\x01\x5a", 2, 0); /* user_canceled */
	assert_int_equal(g.ev, RS_REC13_NONE);
	expect_data_flows(f);
	g = inject(f, 21, "\x02\x5a", 2, 0); /* user_canceled, "fatal" level */
	assert_int_equal(g.ev, RS_REC13_NONE);
	expect_error(inject(f, 21, "\x01\x00\x00", 3, 0), 50);
	restart(f);
	expect_error(inject(f, 21, "\x01", 1, 0), 50);
	restart(f);
	expect_error(inject(f, 21, NULL, 0, 0), 50);
	restart(f);
	expect_error(inject(f, 21, "\x02\x28", 2, 0), 0); /* fatal handshake_failure */
	restart(f);
	expect_error(inject(f, 21, "\x01\x0a", 2, 0), 0); /* "warning" unexpected_message */
	restart(f);
	g = inject(f, 21, "\x01\x00", 2, 4);
	assert_int_equal(g.ev, RS_REC13_CLOSE);
}

static const uint8_t *msg_of(uint8_t type, size_t body, uint8_t *out)
{
	out[0] = type;
	out[1] = (uint8_t)(body >> 16), out[2] = (uint8_t)(body >> 8), out[3] = (uint8_t)body;
	fill(out + 4, body, type);
	return out;
}

static void test_handshake_messages(void **state)
{
	struct fx *f = *state;
	uint8_t m[64];

	start_mirrored(f);
	msg_of(13, 10, m); /* CertificateRequest: no post-handshake auth */
	expect_error(inject(f, 22, m, 14, 0), 10);
	restart(f);
	msg_of(2, 10, m); /* ServerHello */
	expect_error(inject(f, 22, m, 14, 0), 10);
	restart(f);
	expect_error(inject(f, 22, "\x18\0\0\x01\x02", 5, 0), 50); /* KeyUpdate 2 */
	restart(f);
	expect_error(inject(f, 22, "\x18\0\0\x02\x00\x00", 6, 0), 50); /* KeyUpdate, 2 bytes */
	restart(f);
	expect_error(inject(f, 22, "\x18\0\0\x00", 4, 0), 50); /* KeyUpdate, empty */
	restart(f);
	expect_error(inject(f, 22, "\x18\0\0\x01\x00" "\x04\0\0\0", 9, 0), 10); /* and a ticket */
	restart(f);
	expect_error(inject(f, 22, "\x18\0\0\x01\x00" "x", 6, 0), 10);
	restart(f);
	expect_error(inject(f, 22, NULL, 0, 0), 10); /* an empty handshake record */
	restart(f);
	/* tickets, several to a record, one empty: ignored */
	msg_of(4, 20, m), msg_of(4, 0, m + 24), msg_of(4, 30, m + 28);
	assert_int_equal(inject(f, 22, m, 62, 3).ev, RS_REC13_NONE);
	assert_null(f->rec.hs);
	expect_data_flows(f);
}

static void test_handshake_split(void **state)
{
	struct fx *f = *state;
	uint8_t *m = malloc(2 * 16384 + 64);
	const size_t cuts[] = {1, 2, 3, 4, 5, 100, 203};

	start_mirrored(f);
	msg_of(4, 200, m); /* a NewSessionTicket of 204 bytes */
	for (size_t i = 0; i < RS_ARRAY_SIZE(cuts); i++) {
		assert_int_equal(inject(f, 22, m, cuts[i], 0).ev, RS_REC13_NONE);
		assert_non_null(f->rec.hs);
		assert_int_equal(inject(f, 22, m + cuts[i], 204 - cuts[i], 0).ev, RS_REC13_NONE);
		assert_null(f->rec.hs);
		assert_int_equal(f->rec.hs_len, 0);
		expect_data_flows(f);
	}
	/* byte by byte */
	for (size_t i = 0; i < 204; i++) {
		assert_int_equal(inject(f, 22, m + i, 1, i % 3).ev, RS_REC13_NONE);
		assert_true(i == 203 ? f->rec.hs == NULL : f->rec.hs != NULL);
	}
	expect_data_flows(f);
	/* a ticket, then the start of a second, then its rest */
	msg_of(4, 50, m + 204);
	assert_int_equal(inject(f, 22, m, 204 + 20, 0).ev, RS_REC13_NONE);
	assert_int_equal(f->rec.hs_len, 20);
	assert_int_equal(inject(f, 22, m + 224, 34, 0).ev, RS_REC13_NONE);
	assert_null(f->rec.hs);
	/* a KeyUpdate split in two: the read keys move after its last byte */
	assert_int_equal(inject(f, 22, "\x18\0", 2, 0).ev, RS_REC13_NONE);
	assert_int_equal(inject(f, 22, "\0\x01\x01", 3, 0).ev, RS_REC13_NONE);
	assert_null(f->rec.hs);
	assert_true(rs_rec13_owed(&f->rec));
	assert_int_equal(f->rec.rd.seq, 0);
	/* the attacker's old keys no longer open; its next keys do (a twin
	 * context from the same SSL, moved by a KeyUpdate of its own) */
	{
		uint8_t rec[64];
		struct got g;
		size_t n;

		assert_int_equal(rs_rec13_init(&f->atk2, f->s), 0);
		f->have_atk2 = true;
		f->atk2.wr.seq = f->atk.wr.seq;
		assert_int_equal(rs_rec13_update(&f->atk2, false, rec), RS_REC13_KEY_UPDATE_LEN);
		n = rs_rec13_seal(&f->atk2, 23, U("new keys"), 8, rec);
		g = open1(&f->rec, rec, n);
		assert_int_equal(g.ev, RS_REC13_DATA);
		assert_int_equal(g.out_len, 8);
		assert_memory_equal(g.out, "new keys", 8);
	}
	free(m);
}

static void test_handshake_too_long(void **state)
{
	struct fx *f = *state;
	uint8_t *m = malloc(2 * 16384 + 64);

	start_mirrored(f);
	msg_of(4, 16385, m); /* declared longer than 2^14 */
	expect_error(inject(f, 22, m, 16384, 0), 47);
	restart(f);
	expect_error(inject(f, 22, m, 4, 0), 47);
	restart(f);
	m[1] = m[2] = m[3] = 0xff;
	expect_error(inject(f, 22, m, 4, 0), 47);
	restart(f);
	/* 2^14 itself is fine, over two records */
	msg_of(4, 16384, m);
	assert_int_equal(inject(f, 22, m, 16384, 0).ev, RS_REC13_NONE);
	assert_int_equal(inject(f, 22, m + 16384, 4, 0).ev, RS_REC13_NONE);
	assert_null(f->rec.hs);
	expect_data_flows(f);
	/* and over two records when its rest shares a record with the next
	 * message's beginning */
	msg_of(4, 16384, m);
	msg_of(4, 100, m + 16388);
	assert_int_equal(inject(f, 22, m, 10, 0).ev, RS_REC13_NONE);
	assert_int_equal(inject(f, 22, m + 10, 16384, 0).ev, RS_REC13_NONE);
	assert_int_equal(f->rec.hs_len, 6);
	assert_int_equal(inject(f, 22, m + 16394, 98, 0).ev, RS_REC13_NONE);
	assert_null(f->rec.hs);
	expect_data_flows(f);
	free(m);
}

static void test_handshake_interrupted(void **state)
{
	struct fx *f = *state;
	uint8_t m[300];

	start_mirrored(f);
	msg_of(4, 200, m);
	assert_int_equal(inject(f, 22, m, 100, 0).ev, RS_REC13_NONE);
	expect_error(inject(f, 23, "data", 4, 0), 10);
	restart(f);
	assert_int_equal(inject(f, 22, m, 3, 0).ev, RS_REC13_NONE);
	expect_error(inject(f, 21, "\x01\x00", 2, 0), 10);
	restart(f);
	assert_int_equal(inject(f, 22, m, 3, 0).ev, RS_REC13_NONE);
	expect_error(inject(f, 21, "\x01\x5a", 2, 0), 10);
	restart(f);
	/* a KeyUpdate inside a pending message is only more of that message */
	assert_int_equal(inject(f, 22, m, 100, 0).ev, RS_REC13_NONE);
	assert_int_equal(inject(f, 22, "\x18\0\0\x01\x01", 5, 0).ev, RS_REC13_NONE);
	assert_false(rs_rec13_owed(&f->rec));
	assert_int_equal(f->rec.hs_len, 105);
	/* the victim's state is freed by rs_rec13_clear (ASan checks) */
}

/* After the KeyUpdate, a record under the old keys fails. */
/* A record cut anywhere between two receive buffers opens in its two
 * pieces, in place, to the same bytes; a tampered one is refused and its
 * pieces wiped; alerts and handshake messages cut in two still work. */
static void test_open_split(void **state)
{
	struct fx *f = *state;
	static uint8_t rec[RS_REC13_MAX_RECORD], msg[RS_REC13_MAX_PLAIN], a[RS_REC13_MAX_RECORD],
	    b[RS_REC13_MAX_RECORD];
	const size_t sizes[] = {1, 100, RS_REC13_MAX_PLAIN};
	struct rs_rec13_span out[2];
	const char *why;
	uint8_t alert;

	start_mirrored(f);
	assert_true(rs_rec13_can_split(&f->rec));
	for (size_t i = 0; i < RS_ARRAY_SIZE(sizes); i++) {
		size_t n, cut;

		fill(msg, sizes[i], (unsigned)i);
		for (cut = 1; cut < sizes[i] + RS_REC13_OVERHEAD; cut += cut < 40 ? 1 : 997) {
			n = rs_rec13_seal(&f->atk, 23, msg, sizes[i], rec);
			memcpy(a, rec, cut);
			memcpy(b, rec + cut, n - cut);
			assert_int_equal(rs_rec13_open_split(&f->rec, a, cut, b, n - cut, out, &alert,
							     &why),
					 RS_REC13_DATA);
			assert_int_equal(out[0].n + out[1].n, sizes[i]);
			assert_true(out[0].p >= a && out[0].p + out[0].n <= a + cut);
			assert_true(!out[1].n || (out[1].p >= b && out[1].p + out[1].n <= b + n - cut));
			assert_memory_equal(out[0].p, msg, out[0].n);
			assert_memory_equal(out[1].p, msg + out[0].n, out[1].n);
		}
	}
	/* tampered: refused, the sequence unchanged, nothing left readable */
	{
		uint64_t seq = f->rec.rd.seq;
		size_t n;

		fill(msg, 300, 7);
		f->atk.wr.seq = seq;
		n = rs_rec13_seal(&f->atk, 23, msg, 300, rec);
		memcpy(a, rec, 150);
		memcpy(b, rec + 150, n - 150);
		b[n - 150 - 1] ^= 1;
		assert_int_equal(rs_rec13_open_split(&f->rec, a, 150, b, n - 150, out, &alert, &why),
				 RS_REC13_ERROR);
		assert_int_equal(alert, 20);
		assert_int_equal(f->rec.rd.seq, seq);
		for (size_t k = 5; k < 150; k++)
			assert_int_equal(a[k], 0);
		f->atk.wr.seq = seq;
	}
	/* a cut header, an alert and a KeyUpdate cut in two */
	{
		static const uint8_t cn[2] = {1, 0};
		size_t n = rs_rec13_update(&f->atk, true, rec);

		memcpy(a, rec, 3);
		memcpy(b, rec + 3, n - 3);
		assert_int_equal(rs_rec13_open_split(&f->rec, a, 3, b, n - 3, out, &alert, &why),
				 RS_REC13_NONE);
		assert_true(rs_rec13_owed(&f->rec));
		assert_int_equal(rs_rec13_answer_update(&f->rec, rec), RS_REC13_KEY_UPDATE_LEN);
		assert_int_equal(open1(&f->atk, rec, RS_REC13_KEY_UPDATE_LEN).ev, RS_REC13_NONE);
		n = rs_rec13_seal(&f->atk, 21, cn, sizeof(cn), rec);
		memcpy(a, rec, n - 1);
		memcpy(b, rec + n - 1, 1);
		assert_int_equal(rs_rec13_open_split(&f->rec, a, n - 1, b, 1, out, &alert, &why),
				 RS_REC13_CLOSE);
	}
}

static void test_old_keys_after_update(void **state)
{
	struct fx *f = *state;

	start_mirrored(f);
	assert_int_equal(inject(f, 22, "\x18\0\0\x01\x00", 5, 0).ev, RS_REC13_NONE);
	assert_false(rs_rec13_owed(&f->rec));
	expect_error(inject(f, 23, "old", 3, 0), 20);
}

/* ---- cipher suites ------------------------------------------------------- */

/* Everything that depends on the suite, on both sides. */
static void suite_run(struct fx *f, uint16_t want)
{
	start(f, SERVER);
	assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(f->s)), want);
	rec_send(f, 23, "suite", 5);
	bssl_expect(f, "suite", 5);
	keyupdate_requested(f);
	keyupdate_by_rec(f);
	keyupdate_not_requested(f);
	restart(f); /* a new pair; f->rec is the client */
	assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(f->c)), want);
	rs_rec13_clear(&f->atk);
	f->have_atk = false;
	keyupdate_requested(f);
	keyupdate_by_rec(f);
	rec_send(f, 23, "suite", 5);
	bssl_expect(f, "suite", 5);
}

static void test_cipher_default(void **state)
{
	suite_run(*state, EVP_has_aes_hardware() ? 0x1301 : 0x1303);
}

static void test_cipher_chacha_child(void **state)
{
	assert_false(EVP_has_aes_hardware());
	suite_run(*state, 0x1303);
}

/* BoringSSL prefers ChaCha20 when it believes there is no AES hardware:
 * run the suite in a copy of this program started with AES-NI masked. */
static void test_cipher_chacha(void **state)
{
	int status;
	pid_t pid;

	if (!EVP_has_aes_hardware()) {
		suite_run(*state, 0x1303);
		return;
	}
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		setenv("OPENSSL_ia32cap", "~0x200000000000000", 1);
		execl("/proc/self/exe", "rec13_test", "--chacha", (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* AES-256-GCM (SHA-384): a BoringSSL client never asks for it first, so the
 * peer is OpenSSL's s_client told to offer nothing else; the server is the
 * BoringSSL side taken over. */
struct proc {
	pid_t pid;
	int to, from; /* its stdin, its stdout */
};

static size_t read_for(int fd, uint8_t *out, size_t want, int ms)
{
	size_t got = 0;

	while (got < want) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, ms) <= 0)
			break;
		r = read(fd, out + got, want - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

/* Records from the socket until DATA of <want> bytes arrived; NONE counted. */
static size_t sock_data(struct fx *f, int fd, size_t want, unsigned *none, bool *closed)
{
	size_t have = 0, got = 0;

	*none = 0;
	*closed = false;
	while (got < want && !*closed) {
		ssize_t len = rs_rec13_record_len(f->buf, have);
		struct got g;

		if (len == 0 || (len > 0 && (size_t)len > have)) {
			size_t r = read_for(fd, f->buf + have, 1, 5000);

			if (!r)
				break;
			have += r;
			continue;
		}
		assert_true(len > 0);
		g = open1(&f->rec, f->buf, (size_t)len);
		if (g.ev == RS_REC13_ERROR)
			fail_msg("rec side: %s (alert %u)", g.why, g.alert);
		if (g.ev == RS_REC13_DATA) {
			memcpy(f->data + got, g.out, g.out_len);
			got += g.out_len;
		} else if (g.ev == RS_REC13_NONE) {
			++*none;
		} else {
			*closed = true;
		}
		memmove(f->buf, f->buf + len, have - (size_t)len);
		have -= (size_t)len;
	}
	assert_int_equal(have, 0);
	return got;
}

static void sock_send(struct fx *f, int fd, uint8_t type, const void *p, size_t len)
{
	size_t n = rs_rec13_seal(&f->rec, type, p, len, f->buf2);

	assert_int_equal(n, len + RS_REC13_OVERHEAD);
	assert_int_equal(write(fd, f->buf2, n), (ssize_t)n);
}

static void test_cipher_aes256_openssl(void **state)
{
	struct fx *f = *state;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	struct timeval tv = {.tv_sec = 10};
	int ls, fd, in[2], out[2], status;
	char addr[32];
	uint8_t ku[RS_REC13_KEY_UPDATE_LEN];
	unsigned none;
	bool closed;
	pid_t pid;

	if (access("/usr/bin/openssl", X_OK))
		skip();
	ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(ls >= 0);
	assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(ls, 1), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(a.sin_port));
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		int null = open("/dev/null", O_WRONLY);

		dup2(in[0], 0), dup2(out[1], 1), dup2(null, 2);
		execl("/usr/bin/openssl", "openssl", "s_client", "-connect", addr, "-tls1_3",
		      "-ciphersuites", "TLS_AES_256_GCM_SHA384", "-quiet", (char *)NULL);
		_exit(127);
	}
	close(in[0]), close(out[1]);
	fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	close(ls);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	SSL_free(f->s);
	f->s = SSL_new(f->sctx);
	assert_non_null(f->s);
	assert_int_equal(SSL_set_fd(f->s, fd), 1);
	assert_int_equal(SSL_accept(f->s), 1);
	assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(f->s)), 0x1302);
	assert_int_equal(SSL_has_pending(f->s), 0);
	assert_int_equal(rs_rec13_init(&f->rec, f->s), 0);
	f->have_rec = true;
	assert_int_equal(f->rec.secret_len, 48);

	/* rec -> OpenSSL */
	sock_send(f, fd, 23, "from rec\n", 9);
	assert_int_equal(read_for(out[0], f->data, 9, 5000), 9);
	assert_memory_equal(f->data, "from rec\n", 9);
	/* OpenSSL -> rec */
	assert_int_equal(write(in[1], "from openssl\n", 13), 13);
	assert_int_equal(sock_data(f, fd, 13, &none, &closed), 13);
	assert_memory_equal(f->data, "from openssl\n", 13);
	/* our KeyUpdate, asking for OpenSSL's */
	assert_int_equal(rs_rec13_update(&f->rec, true, ku), RS_REC13_KEY_UPDATE_LEN);
	assert_int_equal(write(fd, ku, RS_REC13_KEY_UPDATE_LEN), RS_REC13_KEY_UPDATE_LEN);
	sock_send(f, fd, 23, "new keys\n", 9);
	assert_int_equal(read_for(out[0], f->data, 9, 5000), 9);
	assert_memory_equal(f->data, "new keys\n", 9);
	assert_int_equal(write(in[1], "theirs too\n", 11), 11);
	assert_int_equal(sock_data(f, fd, 11, &none, &closed), 11);
	assert_memory_equal(f->data, "theirs too\n", 11);
	assert_int_equal(none, 1); /* their KeyUpdate */
	assert_false(rs_rec13_owed(&f->rec));
	/* close_notify: s_client ends and sends its own */
	sock_send(f, fd, 21, "\x01\x00", 2);
	assert_int_equal(sock_data(f, fd, 1, &none, &closed), 0);
	assert_true(closed);
	close(in[1]), close(out[0]), close(fd);
	assert_int_equal(waitpid(pid, &status, 0), pid);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest chacha[] = {
	    cmocka_unit_test_setup_teardown(test_cipher_chacha_child, setup, teardown),
	};
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_server_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_tickets_after_takeover, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keyupdate_requested_server, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keyupdate_requested_client, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keyupdate_not_requested, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keyupdate_by_rec_server, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keyupdate_by_rec_client, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_from_bssl, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_from_rec, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_init_refuses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mirrored_sanity, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_ciphertext, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_outer_type, setup, teardown),
	    cmocka_unit_test(test_record_len),
	    cmocka_unit_test_setup_teardown(test_open_bad_lengths, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_padding, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_all_zero_inner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_types, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alerts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshake_messages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshake_split, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshake_too_long, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshake_interrupted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_old_keys_after_update, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_split, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cipher_default, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cipher_chacha, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cipher_aes256_openssl, setup, teardown),
	};

	if (argc > 1 && !strcmp(argv[1], "--chacha"))
		return cmocka_run_group_tests_name("rec13 (no AES hardware)", chacha, group_setup,
						   group_teardown);
	return cmocka_run_group_tests_name("rec13", tests, group_setup, group_teardown);
}
