/* tls/conn.h — one TLS connection on the engine: BoringSSL driven through a
 * custom BIO over engine buffers, installed as the connection's filter.
 *
 * BoringSSL runs the handshake, reading records straight out of the
 * receive buffer (no copy into a memory BIO). A TLS 1.3 connection is then
 * handed to tls/rec13 and its SSL object freed — on the server side at
 * once, on the client side after the first application data (the tickets
 * that precede it were stored): records are opened in place in the receive
 * buffer and delivered from there, and sealed in place in the send queue.
 * TLS 1.2 connections stay with BoringSSL, which decrypts into the pool's
 * user buffers and frees its record buffers whenever they are empty.
 * Nothing here blocks. Used by tls/server.c and tls/client.c, not by upper layers.
 */
#ifndef RS_TLS_CONN_H
#define RS_TLS_CONN_H

#include "core/common.h"

#include <stdatomic.h>

#include "core/engine.h"
#include "tls/boringssl.h"
#include "tls/rec13.h"

/* Handshake outcome: res 0, or -errno with a message for people (a failed
 * verification names the host and both fingerprints). */
typedef void (*rs_tls_done_fn)(struct rs_conn *c, void *arg, int res, const char *msg);

/* Why handshakes failed, for counters. */
enum rs_tls_fail {
	RS_TLS_FAIL_PROTOCOL = 0, /* malformed or unexpected records */
	RS_TLS_FAIL_VERSION,	  /* no common version */
	RS_TLS_FAIL_CIPHER,	  /* no common cipher or group */
	RS_TLS_FAIL_VERIFY,	  /* upstream certificate refused */
	RS_TLS_FAIL_CLOSED,	  /* peer went away during the handshake */
	RS_TLS_FAIL_OTHER,
	RS_TLS_FAIL__COUNT
};
extern const char *const rs_tls_fail_names[RS_TLS_FAIL__COUNT];

struct rs_tls_counters {
	_Atomic uint64_t handshakes, resumed, failures[RS_TLS_FAIL__COUNT];
};

struct rs_tls_conn {
	struct rs_rec13 *rec; /* NULL while BoringSSL runs; &rec13 once it took over */
	uint8_t *part;	      /* <rec>: a record begun in an earlier receive, copied */
	size_t part_len;
	struct rs_buf *pin; /* <rec>: ... or left where it was received (pin_p, pin_n) */
	uint8_t *pin_p;
	size_t pin_n;
	struct rs_conn *c;
	struct rs_tls_counters *stats;
	const uint8_t *in; /* wire bytes not handed to BoringSSL or <rec> yet */
	size_t in_len;
	uint8_t *held; /* input kept (copied) while no user buffer was free */
	size_t held_len;
	void (*on_release)(struct rs_tls_conn *t); /* owner cleanup (server set refs) */
	void *owner;
	bool established, failed;
	bool resumed;  /* the handshake resumed a session */
	bool got_data; /* BoringSSL returned application data (tickets before it read) */
	/* A held connection keeps only <rec13>, in the same allocation: the
	 * handshake's state and the record layer never live at once. */
	union {
		struct {
			SSL *ssl;	     /* until the hand-over */
			rs_tls_done_fn done; /* client: handshake result */
			void *done_arg;
			const char *fail_msg; /* set by a verify callback; owned by <owner> */
		};
		struct rs_rec13 rec13; /* TLS 1.3 after the handshake (tls/rec13.h) */
	};
};

/* Wrap <ssl> (ownership passes) around <c> as its filter. 0, -ENOMEM, or
 * -EBUSY when <c> already has bytes queued (then <ssl> is freed). The owner
 * may send once the handshake is complete (rs_conn_filter_ready). Server
 * side: SSL_set_accept_state before. */
int rs_tls_conn_attach(struct rs_conn *c, SSL *ssl, struct rs_tls_counters *stats,
		       struct rs_tls_conn **out);

/* Start the client handshake (ClientHello goes out at the loop's end). */
void rs_tls_conn_start(struct rs_tls_conn *t);

/* The cipher suite an established TLS connection <c> negotiated (its
 * standard name, static text); NULL before the handshake is over. */
const char *rs_tls_suite(struct rs_conn *c);

/* The rs_tls_conn of an SSL in a BoringSSL callback. */
struct rs_tls_conn *rs_tls_conn_of(const SSL *ssl);

/* Classify the error queue of a failed handshake and clear it. */
enum rs_tls_fail rs_tls_classify(const SSL *ssl, int ret);

#endif
