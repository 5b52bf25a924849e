/* tls/rec13.c — the TLS 1.3 record layer after the handshake (see rec13.h). */
#include "core/common.h"

#include <openssl/aead.h>
#include <openssl/cipher.h>
#include <openssl/hkdf.h>

#include "tls/rec13.h"

enum {
	CT_ALERT = 21,
	CT_HANDSHAKE = 22,
	CT_APPDATA = 23,
	HS_NEW_SESSION_TICKET = 4,
	HS_KEY_UPDATE = 24,
	AL_CLOSE_NOTIFY = 0,
	AL_UNEXPECTED_MESSAGE = 10,
	AL_BAD_RECORD_MAC = 20,
	AL_RECORD_OVERFLOW = 22,
	AL_ILLEGAL_PARAMETER = 47,
	AL_DECODE_ERROR = 50,
	AL_INTERNAL_ERROR = 80,
	AL_USER_CANCELED = 90,
};

/* Post-handshake messages are small (a ticket is a few hundred bytes);
 * one beyond this is refused rather than buffered. */
#define HS_MAX 16384

/* bssl::SSL_get_traffic_secrets is C++ only (two bssl::Span<const uint8_t>
 * out-parameters). Span is a pointer then a size, so it is called here by
 * its exported name; tests/unit/rec13_test.c exchanges records with
 * BoringSSL itself, which fails if that ever stops holding. */
struct bssl_span {
	const uint8_t *data;
	size_t size;
};
extern bool rs_bssl_traffic_secrets(const SSL *ssl, struct bssl_span *rd, struct bssl_span *wr)
    __asm__("_ZN4bssl23SSL_get_traffic_secretsEPK6ssl_stPNS_4SpanIKhEES6_");

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 §7.1. */
static int expand_label(const struct rs_rec13 *r, const uint8_t *secret, const char *label,
			uint8_t *out, size_t len)
{
	uint8_t info[2 + 1 + 6 + 12 + 1];
	size_t ll = strlen(label), n = 0;

	info[n++] = (uint8_t)(len >> 8);
	info[n++] = (uint8_t)len;
	info[n++] = (uint8_t)(6 + ll);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, ll);
	n += ll;
	info[n++] = 0; /* empty context */
	return HKDF_expand(out, len, r->md, secret, r->secret_len, info, n) ? 0 : -EINVAL;
}

/* Keys and IV of <d> from its secret (d->secret); resets the sequence. */
static int set_keys(struct rs_rec13 *r, struct rs_rec13_dir *d, enum evp_aead_direction_t dir)
{
	uint8_t key[32];
	int ret = expand_label(r, d->secret, "key", key, r->key_len);

	if (!ret)
		ret = expand_label(r, d->secret, "iv", d->iv, sizeof(d->iv));
	if (!ret && d == &r->rd)
		memcpy(r->rd_key, key, r->key_len);
	if (!ret) {
		EVP_AEAD_CTX_cleanup(&d->aead);
		if (!EVP_AEAD_CTX_init_with_direction(&d->aead, r->alg, key, r->key_len,
						      RS_REC13_TAG, dir))
			ret = -EINVAL;
	}
	d->seq = 0;
	explicit_bzero(key, sizeof(key));
	return ret;
}

/* The next traffic secret (§7.2) and its keys. */
static int next_keys(struct rs_rec13 *r, struct rs_rec13_dir *d, enum evp_aead_direction_t dir)
{
	uint8_t next[48];
	int ret = expand_label(r, d->secret, "traffic upd", next, r->secret_len);

	if (!ret) {
		memcpy(d->secret, next, r->secret_len);
		ret = set_keys(r, d, dir);
	}
	explicit_bzero(next, sizeof(next));
	return ret;
}

int rs_rec13_init(struct rs_rec13 *r, const SSL *ssl)
{
	struct bssl_span rd, wr;
	const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
	uint64_t rseq = SSL_get_read_sequence(ssl), wseq = SSL_get_write_sequence(ssl);
	const EVP_AEAD *alg;
	const EVP_MD *md;
	uint8_t key_len;
	int ret;

	if (SSL_version(ssl) != TLS1_3_VERSION || !cipher || SSL_in_init(ssl))
		return -EPROTONOSUPPORT;
	switch (SSL_CIPHER_get_protocol_id(cipher)) {
	case 0x1301:
		alg = EVP_aead_aes_128_gcm(), md = EVP_sha256(), key_len = 16;
		break;
	case 0x1302:
		alg = EVP_aead_aes_256_gcm(), md = EVP_sha384(), key_len = 32;
		break;
	case 0x1303:
		alg = EVP_aead_chacha20_poly1305(), md = EVP_sha256(), key_len = 32;
		break;
	default:
		return -EPROTONOSUPPORT;
	}
	/* Only now: <r> may overlay the caller's state until this point. */
	memset(r, 0, sizeof(*r));
	EVP_AEAD_CTX_zero(&r->rd.aead);
	EVP_AEAD_CTX_zero(&r->wr.aead);
	r->alg = alg, r->md = md, r->key_len = key_len;
	r->secret_len = (uint8_t)EVP_MD_size(r->md);
	if (!rs_bssl_traffic_secrets(ssl, &rd, &wr) || rd.size != r->secret_len ||
	    wr.size != r->secret_len)
		return -EINVAL;
	memcpy(r->rd.secret, rd.data, r->secret_len);
	memcpy(r->wr.secret, wr.data, r->secret_len);
	ret = set_keys(r, &r->rd, evp_aead_open);
	if (!ret)
		ret = set_keys(r, &r->wr, evp_aead_seal);
	r->rd.seq = rseq;
	r->wr.seq = wseq;
	if (ret)
		rs_rec13_clear(r);
	return ret;
}

void rs_rec13_clear(struct rs_rec13 *r)
{
	EVP_AEAD_CTX_cleanup(&r->rd.aead);
	EVP_AEAD_CTX_cleanup(&r->wr.aead);
	free(r->hs);
	explicit_bzero(r, sizeof(*r));
}

ssize_t rs_rec13_record_len(const uint8_t *buf, size_t len)
{
	size_t body;

	if (len < RS_REC13_HDR)
		return 0;
	body = (size_t)buf[3] << 8 | buf[4];
	/* Only application_data records once the handshake is over
	 * (§5: change_cipher_spec is for the handshake, alerts are encrypted). */
	if (buf[0] != CT_APPDATA || buf[1] != 3 || buf[2] != 3 || body > RS_REC13_MAX_CIPHER ||
	    body < 1 + RS_REC13_TAG)
		return -EPROTO;
	return (ssize_t)(RS_REC13_HDR + body);
}

static void nonce_of(const struct rs_rec13_dir *d, uint8_t nonce[12])
{
	memcpy(nonce, d->iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(d->seq >> (56 - 8 * i));
}

/* The post-handshake messages in p[0..n), possibly continuing r->hs. */
static enum rs_rec13_ev handshake(struct rs_rec13 *r, const uint8_t *p, size_t n, uint8_t *alert,
				  const char **why)
{
	const uint8_t *m = p;
	size_t left = n;
	uint8_t *joined = NULL;
	enum rs_rec13_ev ev = RS_REC13_NONE;

	if (r->hs) { /* the rest of a message that began in an earlier record */
		/* No cap on hs_len + n here: the message kept is under HS_MAX + 4
		 * (checked below when it was kept), and what follows it in this
		 * record may be the beginning of another message. */
		joined = realloc(r->hs, r->hs_len + n);
		if (!joined) {
			*alert = AL_INTERNAL_ERROR, *why = "out of memory";
			return RS_REC13_ERROR;
		}
		memcpy(joined + r->hs_len, p, n);
		m = joined;
		left = r->hs_len + n;
		r->hs = NULL;
		r->hs_len = 0;
	}
	while (left) {
		size_t body;

		if (left < 4 || left < 4 + ((size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3])) {
			/* Keep the beginning; the rest comes in the next record. */
			if (left > HS_MAX + 4 ||
			    (left >= 4 && ((size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3]) > HS_MAX))
				goto out_too_long;
			r->hs = malloc(left);
			if (!r->hs) {
				*alert = AL_INTERNAL_ERROR, *why = "out of memory";
				ev = RS_REC13_ERROR;
				goto out;
			}
			memcpy(r->hs, m, left);
			r->hs_len = (uint32_t)left;
			goto out;
		}
		body = (size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3];
		if (m[0] == HS_KEY_UPDATE) {
			/* §4.6.3: one byte, 0 or 1, and the last message under the
			 * old keys (§5.1: no message spans a key change). */
			if (body != 1 || m[4] > 1) {
				*alert = AL_DECODE_ERROR, *why = "malformed KeyUpdate";
				ev = RS_REC13_ERROR;
				goto out;
			}
			if (left != 5) {
				*alert = AL_UNEXPECTED_MESSAGE, *why = "data after a KeyUpdate";
				ev = RS_REC13_ERROR;
				goto out;
			}
			if (next_keys(r, &r->rd, evp_aead_open)) {
				*alert = AL_INTERNAL_ERROR, *why = "cannot derive the next keys";
				ev = RS_REC13_ERROR;
				goto out;
			}
			if (m[4])
				r->owed = true;
		} else if (m[0] != HS_NEW_SESSION_TICKET) {
			/* Post-handshake authentication is never offered. */
			*alert = AL_UNEXPECTED_MESSAGE, *why = "unexpected post-handshake message";
			ev = RS_REC13_ERROR;
			goto out;
		}
		m += 4 + body;
		left -= 4 + body;
	}
out:
	free(joined);
	return ev;

out_too_long:
	*alert = AL_ILLEGAL_PARAMETER, *why = "post-handshake message too long";
	ev = RS_REC13_ERROR;
	goto out;
}

/* A decrypted record's content p[0..n) of <type>. */
static enum rs_rec13_ev inner(struct rs_rec13 *r, uint8_t type, uint8_t *p, size_t n, uint8_t **out,
			      size_t *out_len, uint8_t *alert, const char **why)
{
	if (n > RS_REC13_MAX_PLAIN) {
		*alert = AL_RECORD_OVERFLOW, *why = "record too long";
		return RS_REC13_ERROR;
	}
	if (r->hs && type != CT_HANDSHAKE) {
		*alert = AL_UNEXPECTED_MESSAGE, *why = "post-handshake message interrupted";
		return RS_REC13_ERROR;
	}
	switch (type) {
	case CT_APPDATA:
		*out = p;
		*out_len = n;
		return RS_REC13_DATA;
	case CT_ALERT:
		if (n != 2) {
			*alert = AL_DECODE_ERROR, *why = "malformed alert";
			return RS_REC13_ERROR;
		}
		if (p[1] == AL_CLOSE_NOTIFY)
			return RS_REC13_CLOSE;
		if (p[1] == AL_USER_CANCELED)
			return RS_REC13_NONE;
		*why = "the peer sent a fatal alert";
		return RS_REC13_ERROR;
	case CT_HANDSHAKE:
		if (!n) {
			*alert = AL_UNEXPECTED_MESSAGE, *why = "empty handshake record";
			return RS_REC13_ERROR;
		}
		return handshake(r, p, n, alert, why);
	default:
		*alert = AL_UNEXPECTED_MESSAGE, *why = "unexpected record type";
		return RS_REC13_ERROR;
	}
}

enum rs_rec13_ev rs_rec13_open(struct rs_rec13 *r, uint8_t *rec, size_t rec_len, uint8_t **out,
			       size_t *out_len, uint8_t *alert, const char **why)
{
	uint8_t nonce[12], *p = rec + RS_REC13_HDR;
	size_t n;
	ssize_t len = rs_rec13_record_len(rec, rec_len);
	uint8_t type;

	*alert = 0;
	if (len <= 0 || (size_t)len != rec_len) {
		*alert = AL_DECODE_ERROR, *why = "malformed record header";
		return RS_REC13_ERROR;
	}
	if (r->rd.seq == UINT64_MAX) {
		*alert = AL_INTERNAL_ERROR, *why = "record sequence exhausted";
		return RS_REC13_ERROR;
	}
	nonce_of(&r->rd, nonce);
	if (!EVP_AEAD_CTX_open(&r->rd.aead, p, &n, rec_len - RS_REC13_HDR, nonce, sizeof(nonce), p,
			       rec_len - RS_REC13_HDR, rec, RS_REC13_HDR)) {
		ERR_clear_error();
		*alert = AL_BAD_RECORD_MAC, *why = "record authentication failed";
		return RS_REC13_ERROR;
	}
	r->rd.seq++;
	/* TLSInnerPlaintext: content, type, zero padding (§5.2, §5.4). */
	while (n && !p[n - 1])
		n--;
	if (!n) {
		*alert = AL_UNEXPECTED_MESSAGE, *why = "record without a content type";
		return RS_REC13_ERROR;
	}
	type = p[--n];
	return inner(r, type, p, n, out, out_len, alert, why);
}

const char *rs_rec13_suite(const struct rs_rec13 *r)
{
	if (r->alg == EVP_aead_aes_128_gcm())
		return "TLS_AES_128_GCM_SHA256";
	return r->alg == EVP_aead_aes_256_gcm() ? "TLS_AES_256_GCM_SHA384"
						: "TLS_CHACHA20_POLY1305_SHA256";
}

bool rs_rec13_can_split(const struct rs_rec13 *r)
{
	return r->alg == EVP_aead_aes_128_gcm() || r->alg == EVP_aead_aes_256_gcm();
}

/* Bytes [off, off + n) of the record p1[0..n1) ++ p2[0..n2) as spans. */
static void spans_of(uint8_t *p1, size_t n1, uint8_t *p2, size_t off, size_t n,
		     struct rs_rec13_span sp[2])
{
	size_t a = off < n1 ? RS_MIN(n, n1 - off) : 0;

	sp[0].p = p1 + RS_MIN(off, n1);
	sp[0].n = a;
	sp[1].p = p2 + (off >= n1 ? off - n1 : 0);
	sp[1].n = n - a;
}

/* Copy bytes [off, off + n) of p1[0..n1) ++ p2 into <dst>. */
static void gather(uint8_t *p1, size_t n1, uint8_t *p2, size_t off, size_t n, uint8_t *dst)
{
	struct rs_rec13_span sp[2];

	spans_of(p1, n1, p2, off, n, sp);
	memcpy(dst, sp[0].p, sp[0].n);
	memcpy(dst + sp[0].n, sp[1].p, sp[1].n);
}

enum rs_rec13_ev rs_rec13_open_split(struct rs_rec13 *r, uint8_t *p1, size_t n1, uint8_t *p2,
				     size_t n2, struct rs_rec13_span out[2], uint8_t *alert,
				     const char **why)
{
	uint8_t hdr[RS_REC13_HDR], tag[RS_REC13_TAG], nonce[12], type = 0, *tmp, *unused;
	struct rs_rec13_span ct[2];
	EVP_CIPHER_CTX ctx;
	size_t len = n1 + n2, n, i, k, unused_len;
	enum rs_rec13_ev ev;
	bool ok;
	int l;

	*alert = 0;
	out[0].n = out[1].n = 0;
	if (len < RS_REC13_HDR)
		goto out_header;
	gather(p1, n1, p2, 0, RS_REC13_HDR, hdr);
	if (rs_rec13_record_len(hdr, sizeof(hdr)) != (ssize_t)len)
		goto out_header;
	if (!rs_rec13_can_split(r) || r->rd.seq == UINT64_MAX) {
		*alert = AL_INTERNAL_ERROR, *why = "record cannot be opened in two parts";
		return RS_REC13_ERROR;
	}
	n = len - RS_REC13_HDR - RS_REC13_TAG;
	spans_of(p1, n1, p2, RS_REC13_HDR, n, ct);
	gather(p1, n1, p2, len - RS_REC13_TAG, RS_REC13_TAG, tag);
	nonce_of(&r->rd, nonce);
	EVP_CIPHER_CTX_init(&ctx);
	ok = EVP_DecryptInit_ex(&ctx, r->key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(),
				NULL, r->rd_key, nonce) &&
	     EVP_DecryptUpdate(&ctx, NULL, &l, hdr, sizeof(hdr));
	for (i = 0; ok && i < 2; i++)
		ok = !ct[i].n || (EVP_DecryptUpdate(&ctx, ct[i].p, &l, ct[i].p, (int)ct[i].n) &&
				  (size_t)l == ct[i].n);
	ok = ok && EVP_CIPHER_CTX_ctrl(&ctx, EVP_CTRL_AEAD_SET_TAG, RS_REC13_TAG, tag) &&
	     EVP_DecryptFinal_ex(&ctx, nonce, &l);
	EVP_CIPHER_CTX_cleanup(&ctx);
	if (!ok) {
		/* Nothing decrypted may reach anyone: wipe what was. */
		explicit_bzero(ct[0].p, ct[0].n);
		explicit_bzero(ct[1].p, ct[1].n);
		ERR_clear_error();
		*alert = AL_BAD_RECORD_MAC, *why = "record authentication failed";
		return RS_REC13_ERROR;
	}
	r->rd.seq++;
	/* The content type is the last byte that is not padding, in either part. */
	for (k = n; k; k--) {
		type = k > ct[0].n ? ct[1].p[k - 1 - ct[0].n] : ct[0].p[k - 1];
		if (type)
			break;
	}
	if (!k) {
		*alert = AL_UNEXPECTED_MESSAGE, *why = "record without a content type";
		return RS_REC13_ERROR;
	}
	n = k - 1; /* content length */
	if (type == CT_APPDATA && n <= RS_REC13_MAX_PLAIN && !r->hs) {
		out[0].p = ct[0].p;
		out[0].n = RS_MIN(n, ct[0].n);
		out[1].p = ct[1].p;
		out[1].n = n - out[0].n;
		return RS_REC13_DATA;
	}
	/* Alerts and post-handshake messages (rare): put the content together. */
	tmp = malloc(n ? n : 1);
	if (!tmp) {
		*alert = AL_INTERNAL_ERROR, *why = "out of memory";
		return RS_REC13_ERROR;
	}
	gather(p1, n1, p2, RS_REC13_HDR, n, tmp);
	/* Never DATA here: the data records inner() accepts took the way above. */
	ev = inner(r, type, tmp, n, &unused, &unused_len, alert, why);
	free(tmp);
	return ev;

out_header:
	*alert = AL_DECODE_ERROR, *why = "malformed record header";
	return RS_REC13_ERROR;
}

/* Seal in ++ extra: AES-GCM and ChaCha20-Poly1305 encrypt <extra> (the
 * inner content type, after any tail) into the bytes before the tag. */
static size_t seal(struct rs_rec13 *r, const uint8_t *in, size_t len, const uint8_t *extra,
		   size_t extra_len, uint8_t *out)
{
	uint8_t nonce[12];
	size_t body = len + extra_len + RS_REC13_TAG, tag_len;

	if (len + extra_len > RS_REC13_MAX_PLAIN + 1 || r->wr.seq == UINT64_MAX)
		return 0;
	out[0] = CT_APPDATA;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(body >> 8);
	out[4] = (uint8_t)body;
	nonce_of(&r->wr, nonce);
	if (!EVP_AEAD_CTX_seal_scatter(&r->wr.aead, out + RS_REC13_HDR, out + RS_REC13_HDR + len,
				       &tag_len, extra_len + RS_REC13_TAG, nonce, sizeof(nonce), in,
				       len, extra, extra_len, out, RS_REC13_HDR)) {
		ERR_clear_error();
		return 0;
	}
	r->wr.seq++;
	return RS_REC13_HDR + len + tag_len;
}

size_t rs_rec13_seal(struct rs_rec13 *r, uint8_t type, const uint8_t *in, size_t len,
		     uint8_t *out)
{
	return seal(r, in, len, &type, 1, out);
}

size_t rs_rec13_seal_tail(struct rs_rec13 *r, const uint8_t *in, size_t len,
			  const uint8_t *tail, size_t tail_len, uint8_t *out)
{
	uint8_t extra[RS_REC13_TAIL_MAX + 1];

	if (tail_len > RS_REC13_TAIL_MAX)
		return 0;
	if (tail_len) /* tail may be NULL then, which memcpy must not see */
		memcpy(extra, tail, tail_len);
	extra[tail_len] = CT_APPDATA;
	return seal(r, in, len, extra, tail_len + 1, out);
}

size_t rs_rec13_update(struct rs_rec13 *r, bool request, uint8_t *out)
{
	const uint8_t msg[5] = {HS_KEY_UPDATE, 0, 0, 1, request ? 1 : 0};
	size_t n = rs_rec13_seal(r, CT_HANDSHAKE, msg, sizeof(msg), out);

	if (n && next_keys(r, &r->wr, evp_aead_seal))
		return 0;
	return n;
}

size_t rs_rec13_answer_update(struct rs_rec13 *r, uint8_t *out)
{
	size_t n;

	if (!r->owed)
		return 0;
	n = rs_rec13_update(r, false, out);
	if (n)
		r->owed = false;
	return n;
}
