/* tls/rec13.h — the TLS 1.3 record layer of an established connection.
 *
 * BoringSSL runs the handshake; once it is over, tls/conn.c hands the
 * connection's traffic secrets and sequence numbers to this codec and frees
 * the SSL object — the same hand-over kernel TLS takes (this kernel has no
 * `tls` ULP), done in user space. What it buys: records are opened in place
 * in the receive buffer and sealed straight into the send queue (BoringSSL
 * copies both ways through its own buffers), and a held connection keeps
 * two AEAD contexts instead of an SSL object, its session and its record
 * state.
 *
 * RFC 8446 §5.1–5.5, §4.6.1 and §4.6.3: records of type application_data
 * carrying an inner content type; application data delivered; alerts
 * (close_notify ends the stream, user_canceled is ignored, every other is
 * fatal); post-handshake messages reassembled across records —
 * KeyUpdate updates the read keys and, when the peer asked, owes our own
 * KeyUpdate (rs_rec13_owed), NewSessionTicket is ignored (tls/conn.c hands
 * over only after the tickets that precede the first answer were read by
 * BoringSSL). Cipher suites: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
 * TLS_CHACHA20_POLY1305_SHA256. Crypto is BoringSSL's (EVP_AEAD, HKDF).
 *
 * Pure codec: bytes in, events out; no I/O, no allocation but the
 * reassembly of a post-handshake message that spans records.
 */
#ifndef RS_TLS_REC13_H
#define RS_TLS_REC13_H

#include "core/common.h"

#include "tls/boringssl.h"

#define RS_REC13_HDR	    5
#define RS_REC13_TAG	    16
#define RS_REC13_OVERHEAD   (RS_REC13_HDR + 1 + RS_REC13_TAG) /* header, inner type, tag */
#define RS_REC13_MAX_PLAIN  16384			       /* 2^14 */
#define RS_REC13_MAX_CIPHER (16384 + 256)		       /* record body limit */
#define RS_REC13_MAX_RECORD (RS_REC13_HDR + RS_REC13_MAX_CIPHER)
/* What a KeyUpdate and an alert record take on the wire. */
#define RS_REC13_KEY_UPDATE_LEN (RS_REC13_OVERHEAD + 5)
#define RS_REC13_ALERT_LEN	(RS_REC13_OVERHEAD + 2)

struct rs_rec13_dir {
	EVP_AEAD_CTX aead;
	uint64_t seq;
	uint8_t iv[12];
	uint8_t secret[48]; /* for the next KeyUpdate; wiped with the rest */
};

struct rs_rec13 {
	const EVP_AEAD *alg;
	const EVP_MD *md;
	uint8_t secret_len, key_len;
	bool owed;	  /* the peer asked for our KeyUpdate (rs_rec13_owed) */
	uint8_t *hs;	  /* a post-handshake message awaiting its rest */
	uint32_t hs_len;
	struct rs_rec13_dir rd, wr;
	uint8_t rd_key[32]; /* for rs_rec13_open_split */
};

/* Take over <ssl>: a completed TLS 1.3 handshake with nothing buffered
 * (!SSL_has_pending). 0; -EPROTONOSUPPORT for another version or cipher
 * (keep using BoringSSL), and then <r> is not written: it may share storage
 * with what the caller keeps while BoringSSL runs (tls/conn.h); -EINVAL on
 * failure (<r> wiped). <ssl> is only read: the caller frees it. */
int rs_rec13_init(struct rs_rec13 *r, const SSL *ssl);

/* Wipe the keys and free the reassembly buffer. */
void rs_rec13_clear(struct rs_rec13 *r);

/* Length of the record starting at <buf>: header and body. 0 while fewer
 * than 5 bytes are there; -EPROTO for a header no TLS 1.3 peer sends after
 * the handshake (wrong type or version, body too long or too short). */
ssize_t rs_rec13_record_len(const uint8_t *buf, size_t len);

enum rs_rec13_ev {
	RS_REC13_DATA,	/* application data at *out (inside the record) */
	RS_REC13_NONE,	/* nothing for the reader (a handled message, padding) */
	RS_REC13_CLOSE, /* close_notify: the peer sends no more */
	RS_REC13_ERROR, /* fatal: *alert is the alert to send (0: none) */
};

/* Open one complete record, rec[0..rs_rec13_record_len), in place.
 * DATA sets *out and *out_len (a span inside <rec>, possibly empty);
 * ERROR sets *alert and, for people, *why (static text). */
enum rs_rec13_ev rs_rec13_open(struct rs_rec13 *r, uint8_t *rec, size_t rec_len, uint8_t **out,
			       size_t *out_len, uint8_t *alert, const char **why);

struct rs_rec13_span {
	uint8_t *p;
	size_t n;
};

/* The cipher suite's standard name (RFC 8446 §B.4), static text. */
const char *rs_rec13_suite(const struct rs_rec13 *r);

/* Whether rs_rec13_open_split can open records of this connection (AES-GCM:
 * its EVP_CIPHER form decrypts in pieces). */
bool rs_rec13_can_split(const struct rs_rec13 *r);

/* Open one complete record that lies in two pieces, p1[0..n1) then
 * p2[0..n2) (a record cut by the end of a receive buffer), in place in
 * both, without putting it together. Nothing is handed out before the tag
 * is verified (a piece that fails is wiped). DATA sets out[0] inside <p1>
 * and out[1] inside <p2> (either may be empty); other events as
 * rs_rec13_open. Requires rs_rec13_can_split. */
enum rs_rec13_ev rs_rec13_open_split(struct rs_rec13 *r, uint8_t *p1, size_t n1, uint8_t *p2,
				     size_t n2, struct rs_rec13_span out[2], uint8_t *alert,
				     const char **why);

/* Seal <len> <= RS_REC13_MAX_PLAIN bytes of content <type> (23 application
 * data, 21 alert, 22 handshake) into out[0..len + RS_REC13_OVERHEAD).
 * <in> may be out + RS_REC13_HDR (in place); otherwise they must not
 * overlap. Returns the record's length, or 0 when the sequence number
 * would wrap (the connection must end). */
size_t rs_rec13_seal(struct rs_rec13 *r, uint8_t type, const uint8_t *in, size_t len,
		     uint8_t *out);

#define RS_REC13_TAIL_MAX 256

/* One application-data record of in[0..len) followed by tail[0..tail_len)
 * (tail_len <= RS_REC13_TAIL_MAX, len + tail_len <= RS_REC13_MAX_PLAIN)
 * into out[0..len + tail_len + RS_REC13_OVERHEAD), <in> read where it lies:
 * a few bytes (the next frame's header) join a large span without a copy of
 * it and without a record of their own. <in> may be out + RS_REC13_HDR;
 * <tail> must not overlap <out>. Returns as rs_rec13_seal. */
size_t rs_rec13_seal_tail(struct rs_rec13 *r, const uint8_t *in, size_t len,
			  const uint8_t *tail, size_t tail_len, uint8_t *out);

/* The peer asked for a KeyUpdate: seal ours (update_not_requested) into
 * out[0..RS_REC13_KEY_UPDATE_LEN) and move to the next write keys. Returns
 * the record's length, 0 when none is owed (or the keys could not move:
 * then the connection must end, rs_rec13_owed stays true). Call it before
 * sealing anything else once rs_rec13_open returned. */
size_t rs_rec13_answer_update(struct rs_rec13 *r, uint8_t *out);

static inline bool rs_rec13_owed(const struct rs_rec13 *r)
{
	return r->owed;
}

/* Seal a KeyUpdate of our own (<request>: ask the peer for theirs) and move
 * to the next write keys; same contract as rs_rec13_answer_update. */
size_t rs_rec13_update(struct rs_rec13 *r, bool request, uint8_t *out);

#endif
