/* tests/fuzz/fuzz_rec13.c — the TLS 1.3 record codec (tls/rec13.c) fed
 * hostile records, with every contract of rs_rec13_record_len and
 * rs_rec13_open checked, and the simple inner content types checked against
 * a reference.
 *
 * Once per process: a BoringSSL client and server shake hands in memory
 * (self-signed P-256 certificate) and the client reads the server's first
 * answer; both SSL objects are kept. Per input, both are taken over afresh
 * with rs_rec13_init: the reader (client side) and a writer (server side)
 * whose write keys are the reader's read keys.
 *
 * Input: byte 0 bit 0 picks the mode.
 *   0 — wire mode: the rest is the byte stream the reader receives, split
 *       with rs_rec13_record_len and opened record by record (random bytes
 *       fail authentication: this mode is for headers and lengths).
 *   1 — sealed mode: the rest is a list of operations, each one byte then
 *       its arguments (missing bytes read as zero):
 *       op % 5 == 0  inner record: type, pad, len (2 bytes, big-endian),
 *                    <len> content bytes: the writer seals
 *                    content || type || <pad * 8> zeros (any layout, padding
 *                    cut to the body limit) and the reader opens it;
 *       op % 5 == 1  the writer's KeyUpdate (rs_rec13_update), next byte
 *                    bit 0 = request;
 *       op % 5 == 2  the reader answers a KeyUpdate it owes; the writer
 *                    opens the answer;
 *       op % 5 == 3  rs_rec13_seal: type, len (1 byte), content (type 23:
 *                    rs_rec13_seal_tail, its last len % 7 bytes the tail);
 *       op % 5 == 4  a sealed data record with one byte flipped: position
 *                    (2 bytes), then the reader must fail.
 *       op / 5, when not 0, picks where the records of this operation are
 *       cut in two for rs_rec13_open_split.
 *       It stops at the reader's first ERROR or CLOSE.
 */
#include "core/common.h"

#include <openssl/aead.h>

#include "tls/rec13.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static SSL *srv, *cli;
/* Nonzero: records are opened with rs_rec13_open_split, cut there. */
static size_t split_cut;
static uint8_t inner[RS_REC13_MAX_CIPHER], rec[RS_REC13_MAX_RECORD + 16];

static BIO *mem_bio(void)
{
	BIO *b = BIO_new(BIO_s_mem());

	CHECK(b);
	BIO_set_mem_eof_return(b, -1);
	return b;
}

static void move(BIO *from, BIO *to)
{
	uint8_t b[4096];
	int n;

	while ((n = BIO_read(from, b, sizeof(b))) > 0)
		CHECK(BIO_write(to, b, n) == n);
}

static void setup(void)
{
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	EVP_PKEY *key = EVP_PKEY_new();
	X509 *x = X509_new();
	SSL_CTX *sctx = SSL_CTX_new(TLS_method()), *cctx = SSL_CTX_new(TLS_method());
	BIO *s_in = mem_bio(), *s_out = mem_bio(), *c_in = mem_bio(), *c_out = mem_bio();
	X509_NAME *name;
	bool cdone = false, sdone = false;
	char b[8];

	CHECK(ec && EC_KEY_generate_key(ec) && key && EVP_PKEY_assign_EC_KEY(key, ec) && x);
	CHECK(X509_set_version(x, X509_VERSION_3) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1));
	CHECK(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	CHECK(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	name = X509_get_subject_name(x);
	CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"fuzz", -1, -1,
					 0));
	CHECK(X509_set_issuer_name(x, name) && X509_set_pubkey(x, key) &&
	      X509_sign(x, key, EVP_sha256()));
	CHECK(sctx && cctx && SSL_CTX_use_certificate(sctx, x) && SSL_CTX_use_PrivateKey(sctx, key));
	CHECK(SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION));
	CHECK(SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION));
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT); /* tickets, then */
	srv = SSL_new(sctx);
	cli = SSL_new(cctx);
	CHECK(srv && cli);
	SSL_set_bio(srv, s_in, s_out);
	SSL_set_bio(cli, c_in, c_out);
	SSL_set_accept_state(srv);
	SSL_set_connect_state(cli);
	for (int i = 0; i < 20 && !(cdone && sdone); i++) {
		if (!cdone)
			cdone = SSL_do_handshake(cli) == 1;
		move(c_out, s_in);
		if (!sdone)
			sdone = SSL_do_handshake(srv) == 1;
		move(s_out, c_in);
	}
	CHECK(cdone && sdone);
	CHECK(SSL_write(srv, "ping", 4) == 4); /* the tickets, then an answer */
	move(s_out, c_in);
	CHECK(SSL_read(cli, b, sizeof(b)) == 4);
	CHECK(!SSL_has_pending(cli) && !SSL_has_pending(srv));
	X509_free(x);
	EVP_PKEY_free(key);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

struct in {
	const uint8_t *p;
	size_t left;
};

static uint8_t byte(struct in *in)
{
	if (!in->left)
		return 0;
	in->left--;
	return *in->p++;
}

static bool known_alert(uint8_t a)
{
	return a == 0 || a == 10 || a == 20 || a == 22 || a == 47 || a == 50 || a == 80;
}

/* Open rec[0..len) with every contract checked. */
static enum rs_rec13_ev open_checked(struct rs_rec13 *r, uint8_t *p, size_t len, uint8_t **out,
				     size_t *out_len, uint8_t *alert)
{
	const char *why = NULL;
	enum rs_rec13_ev ev;

	*out = NULL;
	*out_len = SIZE_MAX;
	*alert = 0xee;
	if (split_cut && len > 1 && rs_rec13_can_split(r)) {
		/* The record cut in two, as between two receive buffers. */
		static uint8_t a[RS_REC13_MAX_RECORD + 16], b[RS_REC13_MAX_RECORD + 16];
		struct rs_rec13_span sp[2];
		size_t cut = 1 + split_cut % (len - 1);

		memcpy(a, p, cut);
		memcpy(b, p + cut, len - cut);
		ev = rs_rec13_open_split(r, a, cut, b, len - cut, sp, alert, &why);
		if (ev == RS_REC13_DATA) {
			CHECK(sp[0].p >= a && sp[0].p + sp[0].n <= a + cut);
			CHECK(!sp[1].n || (sp[1].p >= b && sp[1].p + sp[1].n <= b + len - cut));
			CHECK(sp[0].n + sp[1].n <= RS_REC13_MAX_PLAIN);
			/* Back where rs_rec13_open leaves it, for the checks below. */
			memcpy(p + RS_REC13_HDR, sp[0].p, sp[0].n);
			memcpy(p + RS_REC13_HDR + sp[0].n, sp[1].p, sp[1].n);
			*out = p + RS_REC13_HDR;
			*out_len = sp[0].n + sp[1].n;
		}
	} else {
		ev = rs_rec13_open(r, p, len, out, out_len, alert, &why);
	}
	switch (ev) {
	case RS_REC13_DATA:
		CHECK(*alert == 0);
		CHECK(*out >= p + RS_REC13_HDR && *out <= p + len);
		CHECK(*out_len <= RS_REC13_MAX_PLAIN && *out_len <= (size_t)(p + len - *out));
		break;
	case RS_REC13_NONE:
	case RS_REC13_CLOSE:
		CHECK(*alert == 0);
		break;
	case RS_REC13_ERROR:
		CHECK(why && *why);
		CHECK(known_alert(*alert));
		break;
	default:
		CHECK(!"unknown event");
	}
	CHECK((r->hs == NULL) == (r->hs_len == 0));
	CHECK(r->hs_len < 16384 + 4);
	return ev;
}

static void check_record_len(const uint8_t *p, size_t left, ssize_t l)
{
	if (left < RS_REC13_HDR) {
		CHECK(l == 0);
		return;
	}
	if (p[0] != 23 || p[1] != 3 || p[2] != 3) {
		CHECK(l == -EPROTO);
		return;
	}
	CHECK(l == -EPROTO || (l >= RS_REC13_HDR + 17 && l <= (ssize_t)RS_REC13_MAX_RECORD));
	if (l > 0)
		CHECK((size_t)l == RS_REC13_HDR + ((size_t)p[3] << 8 | p[4]));
}

static void wire_mode(struct rs_rec13 *rd, struct in *in)
{
	while (in->left) {
		ssize_t l = rs_rec13_record_len(in->p, in->left);
		uint8_t *copy, *out, alert;
		size_t out_len, n;
		enum rs_rec13_ev ev;

		check_record_len(in->p, in->left, l);
		/* a malformed header, or a record cut short, still must not be
		 * opened: open what is there, exactly as long as it is */
		n = l > 0 && (size_t)l <= in->left ? (size_t)l : in->left;
		copy = malloc(n ? n : 1);
		CHECK(copy);
		memcpy(copy, in->p, n);
		ev = open_checked(rd, copy, n, &out, &out_len, &alert);
		if (l <= 0 || (size_t)l > in->left)
			CHECK(ev == RS_REC13_ERROR && alert == 50);
		free(copy);
		if (ev == RS_REC13_ERROR || ev == RS_REC13_CLOSE)
			return;
		in->p += n, in->left -= n;
	}
}

/* Seal inner[0..n) as it is with w's write keys. */
static size_t raw_seal(struct rs_rec13 *w, size_t n)
{
	uint8_t nonce[12];
	size_t body = n + RS_REC13_TAG, out_len;

	rec[0] = 23, rec[1] = 3, rec[2] = 3, rec[3] = (uint8_t)(body >> 8), rec[4] = (uint8_t)body;
	memcpy(nonce, w->wr.iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(w->wr.seq >> (56 - 8 * i));
	CHECK(EVP_AEAD_CTX_seal(&w->wr.aead, rec + 5, &out_len, body, nonce, 12, inner, n, rec, 5));
	w->wr.seq++;
	return 5 + out_len;
}

/* What the reader must make of inner[0..n) (sealed in sync): the event and
 * alert, or -1 where the reference does not say (handshake parsing). */
static int expect(const struct rs_rec13 *rd, size_t n, uint8_t *alert, size_t *content)
{
	uint8_t type;

	while (n && !inner[n - 1])
		n--;
	*alert = 0;
	if (!n) {
		*alert = 10;
		return RS_REC13_ERROR;
	}
	type = inner[--n];
	*content = n;
	if (n > RS_REC13_MAX_PLAIN) {
		*alert = 22;
		return RS_REC13_ERROR;
	}
	if (rd->hs && type != 22) {
		*alert = 10;
		return RS_REC13_ERROR;
	}
	switch (type) {
	case 23:
		return RS_REC13_DATA;
	case 21:
		if (n != 2) {
			*alert = 50;
			return RS_REC13_ERROR;
		}
		return inner[1] == 0 ? RS_REC13_CLOSE : inner[1] == 90 ? RS_REC13_NONE : RS_REC13_ERROR;
	case 22:
		if (!n) {
			*alert = 10;
			return RS_REC13_ERROR;
		}
		return -1;
	default:
		*alert = 10;
		return RS_REC13_ERROR;
	}
}

/* The reader opens rec[0..len) that the writer sealed from inner[0..n).
 * false: stop (ERROR or CLOSE). */
static bool deliver(struct rs_rec13 *rd, struct rs_rec13 *wr, size_t len, size_t n)
{
	uint8_t *out, alert, want_alert;
	size_t out_len, content = 0;
	int want = expect(rd, n, &want_alert, &content);
	bool had_hs = rd->hs != NULL;
	enum rs_rec13_ev ev;

	CHECK(rs_rec13_record_len(rec, len) == (ssize_t)len);
	ev = open_checked(rd, rec, len, &out, &out_len, &alert);
	if (want >= 0) {
		CHECK((int)ev == want);
		CHECK(alert == want_alert);
		if (ev == RS_REC13_DATA) {
			CHECK(out_len == content);
			CHECK(!memcmp(out, inner, content));
		}
	} else {
		CHECK(ev == RS_REC13_NONE || ev == RS_REC13_ERROR);
		CHECK(ev == RS_REC13_NONE || alert == 10 || alert == 47 || alert == 50);
	}
	if (ev == RS_REC13_ERROR || ev == RS_REC13_CLOSE)
		return false;
	if (!had_hs && !rd->hs && want < 0 && content == 5 && inner[0] == 24 && inner[4] <= 1)
		CHECK(rd->rd.seq == 0); /* a whole KeyUpdate alone: the keys moved */
	if (rd->rd.seq == 0) {
		/* the reader took a KeyUpdate the writer only sealed: the writer
		 * follows (its own KeyUpdate record is thrown away) */
		uint8_t junk[RS_REC13_KEY_UPDATE_LEN];

		CHECK(rs_rec13_update(wr, false, junk) == RS_REC13_KEY_UPDATE_LEN);
	}
	return true;
}

static void sealed_mode(struct rs_rec13 *rd, struct rs_rec13 *wr, struct in *in)
{
	for (unsigned ops = 0; in->left && ops < 64; ops++) {
		uint8_t op = byte(in), *out, alert;
		size_t n, len, out_len;

		split_cut = (size_t)(op / 5) * 331;
		switch (op % 5) {
		case 0: {
			uint8_t type = byte(in);
			size_t pad = (size_t)byte(in) * 8, cl = (size_t)byte(in) << 8;

			cl |= byte(in);
			cl = RS_MIN(cl, in->left);
			cl = RS_MIN(cl, (size_t)RS_REC13_MAX_CIPHER - RS_REC13_TAG - 1);
			memcpy(inner, in->p, cl);
			in->p += cl, in->left -= cl;
			inner[cl] = type;
			n = cl + 1;
			pad = RS_MIN(pad, (size_t)RS_REC13_MAX_CIPHER - RS_REC13_TAG - n);
			memset(inner + n, 0, pad);
			n += pad;
			if (!deliver(rd, wr, raw_seal(wr, n), n))
				return;
			break;
		}
		case 1: {
			bool request = byte(in) & 1, owed = rs_rec13_owed(rd), had_hs = rd->hs != NULL;
			enum rs_rec13_ev ev;

			len = rs_rec13_update(wr, request, rec);
			CHECK(len == RS_REC13_KEY_UPDATE_LEN);
			CHECK(wr->wr.seq == 0);
			ev = open_checked(rd, rec, len, &out, &out_len, &alert);
			if (had_hs) /* only more of the pending message */
				return;
			CHECK(ev == RS_REC13_NONE);
			CHECK(rd->rd.seq == 0);
			CHECK(rs_rec13_owed(rd) == (owed || request));
			break;
		}
		case 2: {
			bool owed = rs_rec13_owed(rd), wr_owed = rs_rec13_owed(wr);

			len = rs_rec13_answer_update(rd, rec);
			CHECK(!rs_rec13_owed(rd));
			if (!owed) {
				CHECK(len == 0);
				break;
			}
			CHECK(len == RS_REC13_KEY_UPDATE_LEN);
			CHECK(open_checked(wr, rec, len, &out, &out_len, &alert) == RS_REC13_NONE);
			CHECK(rs_rec13_owed(wr) == wr_owed);
			CHECK(wr->rd.seq == 0);
			break;
		}
		case 3: {
			uint8_t type = byte(in);

			len = byte(in); /* not inside RS_MIN, which evaluates it twice */
			len = RS_MIN(len, in->left);
			memcpy(inner, in->p, len);
			if (type == 23) { /* application data: some of it as a tail */
				size_t t = len % 7;

				n = rs_rec13_seal_tail(wr, in->p, len - t, in->p + len - t, t, rec);
			} else {
				n = rs_rec13_seal(wr, type, in->p, len, rec);
			}
			in->p += len, in->left -= len;
			CHECK(n == len + RS_REC13_OVERHEAD);
			inner[len] = type;
			if (!deliver(rd, wr, n, len + 1))
				return;
			break;
		}
		case 4: {
			size_t at = (size_t)byte(in) << 8;

			at |= byte(in);
			n = rs_rec13_seal(wr, 23, (const uint8_t *)"tampered", 8, rec);
			at %= n;
			rec[at] ^= 0x80;
			CHECK(open_checked(rd, rec, n, &out, &out_len, &alert) == RS_REC13_ERROR);
			CHECK(alert == (at < RS_REC13_HDR ? 50 : 20));
			return;
		}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct rs_rec13 rd, wr;
	struct in in = {data + 1, size ? size - 1 : 0};

	if (!ready) {
		setup();
		ready = true;
	}
	if (!size)
		return 0;
	CHECK(rs_rec13_init(&rd, cli) == 0);
	CHECK(rs_rec13_init(&wr, srv) == 0);
	CHECK(wr.wr.seq == rd.rd.seq && rd.wr.seq == wr.rd.seq);
	split_cut = (size_t)(data[0] >> 1) * 97; /* wire mode; sealed mode sets its own */
	if (data[0] & 1)
		sealed_mode(&rd, &wr, &in);
	else
		wire_mode(&rd, &in);
	rs_rec13_clear(&rd);
	rs_rec13_clear(&wr);
	return 0;
}
