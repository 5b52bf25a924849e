/* tls/client.h — TLS towards upstreams (Proxmox API endpoints).
 *
 * One client context per upstream (cluster) holds its verification policy:
 * SHA-256 pins of the server certificate (as pveproxy pins between nodes),
 * else a CA bundle (Proxmox clusters sign node certificates with their own
 * CA), else the system store; or nothing at all when `insecure` is set
 * explicitly (warned about at start, counted per connection). The host name
 * (or IP) is checked against the certificate when a CA verifies it. Sessions
 * are cached per host:port so the next connection resumes. Every connection
 * to the same server shares one copy of its certificate chain (a buffer
 * pool per client); a held connection keeps only its host:port key besides
 * its SSL.
 *
 * Threads: new/free from the control thread; attach from any worker (the
 * session cache takes a mutex once per handshake, never per byte).
 */
#ifndef RS_TLS_CLIENT_H
#define RS_TLS_CLIENT_H

#include "core/common.h"
#include "core/engine.h"
#include "tls/cert.h"
#include "tls/conn.h"

struct rs_tls_client;

struct rs_tls_client_opts {
	const char *name;	 /* upstream label for messages ("fra1") */
	const char *ca_pem;	 /* CA certificates as PEM text, or NULL */
	const char *ca_file;	 /* or a PEM file */
	const char *const *pins; /* SHA-256 fingerprints of acceptable server certificates */
	size_t n_pins;
	bool insecure;	/* accept any certificate (explicit opt-in only) */
	bool no_resume; /* never offer a cached session: every handshake is full
			 * (the bench harness's setup scenario without resumption) */
};

/* 0 or -errno with <err> filled (bad PEM, bad pin). */
int rs_tls_client_new(struct rs_tls_client **out, const struct rs_tls_client_opts *o, char *err,
		      size_t errlen);
/* After every connection attached with <cl> is gone: their sessions hold
 * buffers of its pool. */
void rs_tls_client_free(struct rs_tls_client *cl);

/* Start TLS on connected <c> to <host> (name or IP literal; SNI is sent for
 * names) port <port>. <done> runs once: 0 when established, else -errno and
 * a message (a verification failure names the host and the expected and
 * actual fingerprints); the owner closes the connection on failure. 0 or
 * -ENOMEM. */
int rs_tls_client_attach(struct rs_tls_client *cl, struct rs_conn *c, const char *host,
			 uint16_t port, rs_tls_done_fn done, void *arg);

/* Whether the handshake of <c> resumed a cached session. */
bool rs_tls_client_resumed(struct rs_conn *c);

const struct rs_tls_counters *rs_tls_client_counters(const struct rs_tls_client *cl);
/* Connections made without verification (insecure). */
uint64_t rs_tls_client_insecure_conns(const struct rs_tls_client *cl);

#endif
