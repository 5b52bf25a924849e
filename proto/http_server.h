/* proto/http_server.h — HTTP/1.1 connections on the engine.
 *
 * Owns the per-connection parser, keep-alive and pipelining (one request is
 * handled at a time, in order), the header-read timeout (slowloris: 408 and
 * close), the keep-alive idle timeout, and the limits' error responses.
 * Handlers run synchronously on the connection's worker and must answer with
 * exactly one rs_http_respond*() call, or take the connection over for an
 * upgrade with rs_http_upgrade().
 */
#ifndef RS_HTTP_SERVER_H
#define RS_HTTP_SERVER_H

#include "core/common.h"
#include "core/engine.h"
#include "proto/http1.h"

#include <sys/socket.h>

struct rs_http_conn;
struct rs_tls_server;
struct rs_cidr;

#define RS_HTTP_MAX_ROUTES 12

typedef void (*rs_http_handler)(struct rs_http_conn *hc, const struct rs_http_req *req, void *arg);

struct rs_http_server {
	struct rs_http_limits limits;
	unsigned header_timeout_ms;
	unsigned keepalive_timeout_ms;
	rs_http_handler handler;
	void *arg;
	/* Optional: runs with the head of a request whose body has not been
	 * read yet (req->body_pending). Answering here (a 401 from the
	 * Authorization header) refuses the request before its body is read;
	 * the connection then closes. Not answering reads the body (after a
	 * 100 Continue when the client sent Expect: 100-continue) and then
	 * <handler> runs as for any request. */
	rs_http_handler on_head;
	struct rs_tls_server *tls; /* for rs_https_on_accept */
	const struct rs_cidr *trusted_proxies; /* their X-Forwarded-For is believed */
	size_t n_trusted_proxies;
	/* At most <max_conns_per_client> open HTTP connections per client
	 * address (IPv6: per /64), counted across workers in <clients> (shared
	 * by every server that points at it); 0 or no <clients>: no limit.
	 * Peers in trusted_proxies are not limited (a balancer carries many
	 * clients). Over the limit: 503 and close (TLS: closed unanswered, an
	 * answer would need a handshake first), counted in
	 * <refused_per_client>. A connection taken over by an upgrade stops
	 * counting (consoles are bounded by their tokens). */
	unsigned max_conns_per_client;
	struct rs_http_clients *clients;
	uint64_t refused_per_client;
	/* Counters (per process; relaxed atomics: the HTTP/API path only, never
	 * the console relay). Responses by route (set by the handler with
	 * rs_http_set_route, 0 = unrouted) and status class 1xx..5xx. */
	uint64_t requests, errors_by_status[6];
	uint64_t by_route[RS_HTTP_MAX_ROUTES][6];
};

/* The per-client connection counts (thread-safe: accepts and closes on every
 * worker update it under one of several locks, off the relay path). */
struct rs_http_clients *rs_http_clients_new(void);
void rs_http_clients_free(struct rs_http_clients *cl);

/* rs_accept_fn for rs_engine_listen(); <arg> is a struct rs_http_server. */
void rs_http_on_accept(struct rs_conn *c, void *arg);
/* The same over TLS (the server's <tls> must be set). */
void rs_https_on_accept(struct rs_conn *c, void *arg);

/* The browser's address: the peer's, or when the peer is a trusted proxy,
 * the right-most X-Forwarded-For entry that is not itself a trusted proxy
 * (entries to its left could be forged by the client). */
void rs_http_client_addr(struct rs_http_conn *hc, const struct rs_http_req *req,
			 struct sockaddr_storage *out);

/* Answer the current request. <body> is copied unless the _static variant
 * is used (then it must outlive the connection, e.g. embedded assets).
 * <extra_headers>: "Name: value\r\n" lines or NULL. HEAD requests get the
 * headers only. Closes the connection after sending when the request asked
 * for it, on errors >= 400 that leave the stream unusable, or when stopping. */
void rs_http_respond(struct rs_http_conn *hc, int status, const char *content_type,
		     const void *body, size_t len, const char *extra_headers);
void rs_http_respond_static(struct rs_http_conn *hc, int status, const char *content_type,
			    const void *body, size_t len, const char *extra_headers);
/* JSON error body {"error":{"code":<code>,"message":<message>}}. */
void rs_http_respond_error(struct rs_http_conn *hc, int status, const char *code,
			   const char *message, const char *extra_headers);

/* Answer later: the handler returns without answering (the answer needs a
 * store round trip). The connection stops reading and its request timers
 * stop; the request (and its headers) stays valid until rs_http_resume.
 * If the connection closes meanwhile, <on_gone>(<arg>) runs from its close
 * (the owner cancels its pending work) and the owner must not touch <hc>
 * again. Call it at most once per request, from the handler. */
void rs_http_defer(struct rs_http_conn *hc, void (*on_gone)(void *arg), void *arg);
/* The deferred request has been answered (rs_http_respond*) or upgraded
 * (rs_http_upgrade): go on with the connection (pipelined requests, reads).
 * Not inside the handler itself. <hc> may be gone (freed, upgraded) after. */
void rs_http_resume(struct rs_http_conn *hc);

/* Take the connection over after a successful upgrade: sends <response>
 * (the 101 head), detaches the HTTP layer and returns the engine connection,
 * whose ops the caller must set before returning. Bytes that followed the
 * request head are returned in <rest> (copied into a malloc'd block the caller
 * frees) so no WebSocket byte is lost. NULL on failure (connection closed). */
struct rs_conn *rs_http_upgrade(struct rs_http_conn *hc, const char *response, uint8_t **rest,
				size_t *rest_len);

/* Label the current request's route for the by_route counters. */
void rs_http_set_route(struct rs_http_conn *hc, unsigned route);

struct rs_conn *rs_http_conn_conn(struct rs_http_conn *hc);
struct rs_http_server *rs_http_conn_server(struct rs_http_conn *hc);

#endif
