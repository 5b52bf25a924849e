/* tls/server.h — the browser-facing TLS listener's contexts.
 *
 * A certificate set (one SSL_CTX per certificate, chosen by SNI, the first
 * is the default) is built from PEM files, or from the self-signed
 * certificate in the state directory when none is configured. TLS 1.2 and
 * 1.3 only, AEAD ciphers only, X25519 first, ALPN http/1.1. Sessions resume
 * through stateless tickets (no server-side session cache) whose keys
 * rotate on a schedule; the previous key still opens tickets for one more
 * period. rs_tls_server_reload() swaps in a new certificate set for new
 * handshakes while established connections keep theirs.
 *
 * Threads: new/reload/tick/free from the main (control) thread; attach from
 * any worker.
 */
#ifndef RS_TLS_SERVER_H
#define RS_TLS_SERVER_H

#include "core/common.h"
#include "core/engine.h"
#include "tls/cert.h"
#include "tls/conn.h"

struct rs_tls_server;

struct rs_tls_cert_files {
	const char *cert; /* PEM chain: leaf first */
	const char *key;  /* PEM private key */
};

struct rs_tls_server_opts {
	const struct rs_tls_cert_files *certs;
	size_t n_certs; /* 0: the self-signed certificate in <state_dir> */
	const char *state_dir;
	unsigned ticket_rotation_s; /* 0: tickets off */
};

/* Build the server. 0 or -errno with <err> naming the file and the reason. */
int rs_tls_server_new(struct rs_tls_server **out, const struct rs_tls_server_opts *o, char *err,
		      size_t errlen);
void rs_tls_server_free(struct rs_tls_server *s);

/* Load certificates again (same or new paths); on failure the old set stays
 * in use. 0 or -errno with <err> filled. */
int rs_tls_server_reload(struct rs_tls_server *s, const struct rs_tls_server_opts *o, char *err,
			 size_t errlen);

/* Rotate ticket keys when due (<now_s> monotonic, rs_now_ms / 1000).
 * Returns when it is next due (same clock), UINT64_MAX when tickets are off. */
uint64_t rs_tls_server_tick(struct rs_tls_server *s, uint64_t now_s);

/* Describe the certificates in use ("<subject> sha256 <fp>" per line). */
void rs_tls_server_describe(struct rs_tls_server *s, char *out, size_t len);

/* A server-side SSL on the current certificate set, holding a reference to
 * it; pass *set_ref to rs_tls_server_put() when the SSL is freed. NULL on
 * allocation failure. (The engine path is rs_tls_server_attach; the fuzzer
 * drives this directly.) */
SSL *rs_tls_server_new_ssl(struct rs_tls_server *s, void **set_ref);
void rs_tls_server_put(void *set_ref);

/* Start TLS on an accepted connection (after its ops are set). 0 or -ENOMEM. */
int rs_tls_server_attach(struct rs_tls_server *s, struct rs_conn *c);

/* Counters (handshakes, resumptions, failures by cause). */
const struct rs_tls_counters *rs_tls_server_counters(const struct rs_tls_server *s);
uint64_t rs_tls_server_ticket_rotations(const struct rs_tls_server *s);

#endif
