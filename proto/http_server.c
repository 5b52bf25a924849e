#include "core/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/random.h>

#include "core/addr.h"
#include "core/log.h"
#include "proto/http_server.h"
#include "tls/server.h"

struct rs_http_conn {
	struct rs_conn *c;
	struct rs_http_server *srv;
	struct rs_http_parser parser;
	struct rs_timer timer;
	const struct rs_http_req *cur;
	const uint8_t *in_rest; /* unfed bytes of the current receive, for upgrades */
	size_t in_rest_len;
	bool responded, close_after, upgraded, timer_is_header;
	bool at_head;	   /* the current request's body is still unread */
	bool peer_pending; /* the per-client limit is not checked yet */
	bool counted;	   /* holds one of its client's connections */
	uint64_t accepted_ms;
	unsigned route;
	/* A deferred answer (rs_http_defer): the unfed rest of that receive,
	 * copied, and who to tell if the connection goes first. */
	bool deferred;
	uint8_t *held;
	size_t held_len;
	void (*on_gone)(void *arg);
	void *gone_arg;
};

/* --- connections per client ---
 *
 * A sharded hash of client address -> open connections, shared by the
 * workers. Accept and close of an HTTP connection take one shard's lock;
 * the relay path never does. Entries exist only while a client has a
 * connection, so memory follows the open connections. */

/* How long an idle connection may still bring a request once the server
 * stops (see on_stop). */
#define STOP_GRACE_MS 250

#define CLIENT_SHARDS  64
#define CLIENT_BUCKETS 64

struct client_ent {
	struct client_ent *next;
	uint8_t key[9]; /* family, then 4 (IPv4) or 8 (an IPv6 /64) bytes */
	uint32_t n;
};

struct rs_http_clients {
	uint64_t seed; /* keyed hash: a client cannot aim at one chain */
	struct {
		pthread_mutex_t mu;
		struct client_ent *b[CLIENT_BUCKETS];
	} s[CLIENT_SHARDS];
};

struct rs_http_clients *rs_http_clients_new(void)
{
	struct rs_http_clients *cl = rs_xcalloc(1, sizeof(*cl));

	if (getrandom(&cl->seed, sizeof(cl->seed), 0) != sizeof(cl->seed))
		cl->seed = (uint64_t)(uintptr_t)cl ^ rs_now_ms();
	for (size_t i = 0; i < CLIENT_SHARDS; i++)
		pthread_mutex_init(&cl->s[i].mu, NULL);
	return cl;
}

void rs_http_clients_free(struct rs_http_clients *cl)
{
	if (!cl)
		return;
	for (size_t i = 0; i < CLIENT_SHARDS; i++) {
		for (size_t j = 0; j < CLIENT_BUCKETS; j++) {
			struct client_ent *e = cl->s[i].b[j], *n;

			for (; e; e = n) {
				n = e->next;
				free(e);
			}
		}
		pthread_mutex_destroy(&cl->s[i].mu);
	}
	free(cl);
}

/* IPv4 (also when mapped into IPv6) by address, IPv6 by its /64: one
 * subscriber gets a whole /64. False for a family we cannot tell apart. */
static bool client_key(const struct sockaddr *sa, uint8_t key[9])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(key, 0, 9);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

		if (!memcmp(a, mapped, sizeof(mapped))) {
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, a, 8);
		}
		return true;
	}
	return false;
}

static uint64_t client_hash(const struct rs_http_clients *cl, const uint8_t key[9])
{
	uint64_t h = 0xcbf29ce484222325ull ^ cl->seed;

	for (int i = 0; i < 9; i++)
		h = (h ^ key[i]) * 0x100000001b3ull;
	return h ^ (h >> 29);
}

/* Count one more connection of <sa>'s client: 0, or -EBUSY at <limit>. A
 * client we cannot count (unknown family, no memory for its entry) is let
 * through uncounted: *counted says which. */
static int clients_acquire(struct rs_http_clients *cl, const struct sockaddr *sa, unsigned limit,
			   bool *counted)
{
	uint8_t key[9];
	uint64_t h;
	struct client_ent **b, *e;
	int ret = 0;

	*counted = false;
	if (!client_key(sa, key))
		return 0;
	h = client_hash(cl, key);
	pthread_mutex_lock(&cl->s[h % CLIENT_SHARDS].mu);
	b = &cl->s[h % CLIENT_SHARDS].b[(h / CLIENT_SHARDS) % CLIENT_BUCKETS];
	for (e = *b; e && memcmp(e->key, key, sizeof(key)); e = e->next)
		;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e)
			goto out_unlock;
		memcpy(e->key, key, sizeof(key));
		e->next = *b;
		*b = e;
	}
	if (e->n >= limit) {
		ret = -EBUSY;
		goto out_unlock;
	}
	e->n++;
	*counted = true;

out_unlock:
	pthread_mutex_unlock(&cl->s[h % CLIENT_SHARDS].mu);
	return ret;
}

static void clients_release(struct rs_http_clients *cl, const struct sockaddr *sa)
{
	uint8_t key[9];
	uint64_t h;
	struct client_ent **pe, *e;

	if (!client_key(sa, key))
		return;
	h = client_hash(cl, key);
	pthread_mutex_lock(&cl->s[h % CLIENT_SHARDS].mu);
	pe = &cl->s[h % CLIENT_SHARDS].b[(h / CLIENT_SHARDS) % CLIENT_BUCKETS];
	for (; (e = *pe) && memcmp(e->key, key, sizeof(key)); pe = &e->next)
		;
	if (e && !--e->n) {
		*pe = e->next;
		free(e);
	}
	pthread_mutex_unlock(&cl->s[h % CLIENT_SHARDS].mu);
}

static void arm_timer(struct rs_http_conn *hc)
{
	struct rs_worker *w = rs_conn_worker(hc->c);
	bool idle = rs_http_parser_idle(&hc->parser);
	unsigned ms = idle ? hc->srv->keepalive_timeout_ms : hc->srv->header_timeout_ms;

	/* A request's deadline runs from its first byte, not its latest one:
	 * a client trickling bytes (slowloris) does not extend it. */
	if (!idle && hc->timer_is_header && rs_timer_is_linked(&hc->timer))
		return;
	hc->timer_is_header = !idle;
	rs_timer_link(rs_worker_timers(w), &hc->timer, rs_worker_now(w) + ms);
}

static void count_status(struct rs_http_conn *hc, int status)
{
	struct rs_http_server *srv = hc->srv;

	atomic_fetch_add_explicit((_Atomic uint64_t *)&srv->requests, 1, memory_order_relaxed);
	if (status >= 100 && status < 600) {
		atomic_fetch_add_explicit((_Atomic uint64_t *)&srv->errors_by_status[status / 100],
					  1, memory_order_relaxed);
		atomic_fetch_add_explicit((_Atomic uint64_t *)&srv->by_route[hc->route][status / 100],
					  1, memory_order_relaxed);
	}
}

void rs_http_set_route(struct rs_http_conn *hc, unsigned route)
{
	hc->route = route < RS_HTTP_MAX_ROUTES ? route : 0;
}

static void send_response(struct rs_http_conn *hc, int status, const char *type, const void *body,
			  size_t len, const char *extra, bool is_static)
{
	char head[2048];
	/* An answer to a head leaves its body unread in the stream: close. */
	bool keep = !hc->close_after && !hc->at_head &&
		    !rs_worker_stopping(rs_conn_worker(hc->c)) && (!hc->cur || hc->cur->keep_alive);
	bool head_only = hc->cur && hc->cur->method == HTTP_HEAD;
	int n, ret;

	if (hc->responded)
		return;
	hc->responded = true;
	count_status(hc, status);
	n = rs_http_format_head(head, sizeof(head), status, type, len, keep, extra);
	if (n < 0) {
		rs_conn_close(hc->c, RS_CLOSE_ERROR, ENOSPC);
		return;
	}
	ret = rs_conn_send(hc->c, head, (size_t)n);
	if (!ret && len && !head_only)
		ret = is_static ? rs_conn_send_static(hc->c, body, len)
				: rs_conn_send(hc->c, body, len);
	if (ret) {
		rs_conn_close(hc->c, RS_CLOSE_NOMEM, -ret);
		return;
	}
	if (!keep) {
		hc->close_after = true;
		rs_conn_close_after_send(hc->c);
	}
}

void rs_http_respond(struct rs_http_conn *hc, int status, const char *content_type,
		     const void *body, size_t len, const char *extra_headers)
{
	send_response(hc, status, content_type, body, len, extra_headers, false);
}

void rs_http_respond_static(struct rs_http_conn *hc, int status, const char *content_type,
			    const void *body, size_t len, const char *extra_headers)
{
	send_response(hc, status, content_type, body, len, extra_headers, true);
}

static size_t json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	for (; *s && n + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			out[n++] = '\\';
			out[n++] = (char)ch;
		} else if (ch < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
		} else {
			out[n++] = (char)ch;
		}
	}
	out[n] = 0;
	return n;
}

void rs_http_respond_error(struct rs_http_conn *hc, int status, const char *code,
			   const char *message, const char *extra_headers)
{
	char body[1024], msg[700];
	int n;

	json_escape(msg, sizeof(msg), message);
	n = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n", code,
		     msg);
	rs_http_respond(hc, status, "application/json", body, (size_t)n, extra_headers);
}

static void respond_protocol_error(struct rs_http_conn *hc, int status)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, rs_http_status_text(status));

	hc->close_after = true;
	hc->cur = NULL;
	hc->route = 0;
	send_response(hc, status, "text/plain; charset=utf-8", body, (size_t)n, NULL, false);
	/* The parser refuses everything from now on: free what it buffered
	 * rather than hold it while the connection lingers. */
	rs_http_parser_release(&hc->parser);
}

struct rs_conn *rs_http_upgrade(struct rs_http_conn *hc, const char *response, uint8_t **rest,
				size_t *rest_len)
{
	const uint8_t *pr = NULL;
	size_t plen = 0;
	struct rs_conn *c = hc->c;

	*rest = NULL;
	*rest_len = 0;
	rs_http_parser_upgrade_rest(&hc->parser, &pr, &plen);
	if (plen + hc->in_rest_len) {
		*rest = malloc(plen + hc->in_rest_len);
		if (!*rest)
			goto out_fail;
		if (plen)
			memcpy(*rest, pr, plen);
		if (hc->in_rest_len) /* held bytes of a deferred upgrade, or this receive's */
			memcpy(*rest + plen, hc->in_rest, hc->in_rest_len);
		*rest_len = plen + hc->in_rest_len;
	}
	if (rs_conn_send(c, response, strlen(response)))
		goto out_fail;
	count_status(hc, 101);
	hc->responded = true;
	hc->upgraded = true;
	/* A deferred request paused reading; the new owner reads from here
	 * (and may pause again itself while it handles <rest>). */
	if (hc->deferred)
		rs_conn_resume(c);
	/* From here the connection belongs to the caller; the HTTP state is freed
	 * when the handler returns (see on_data). */
	return c;

out_fail:
	free(*rest);
	*rest = NULL;
	rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
	return NULL;
}

struct rs_conn *rs_http_conn_conn(struct rs_http_conn *hc)
{
	return hc->c;
}

struct rs_http_server *rs_http_conn_server(struct rs_http_conn *hc)
{
	return hc->srv;
}

static void hc_free(struct rs_http_conn *hc)
{
	if (hc->held) {
		explicit_bzero(hc->held, hc->held_len);
		free(hc->held);
	}
	if (hc->counted)
		clients_release(hc->srv->clients, rs_conn_peer(hc->c));
	rs_timer_unlink(rs_worker_timers(rs_conn_worker(hc->c)), &hc->timer);
	rs_http_parser_release(&hc->parser);
	free(hc);
}

static bool over_client_limit(struct rs_http_conn *hc);

/* The engine learns the peer's address from a socket command it submits
 * with the accept (direct descriptors have no getpeername): it is known
 * from the connection's first receive, or a tick after the accept for a
 * client that sends nothing. The first of the two checks the per-client
 * limit; true when the connection was refused. */
static bool client_refused(struct rs_http_conn *hc)
{
	struct rs_worker *w = rs_conn_worker(hc->c);

	if (!hc->peer_pending)
		return false;
	hc->peer_pending = false;
	if (over_client_limit(hc))
		return true;
	/* The timer was the check's: it becomes the first request's deadline. */
	hc->timer_is_header = true;
	rs_timer_link(rs_worker_timers(w), &hc->timer,
		      hc->accepted_ms + hc->srv->header_timeout_ms);
	return false;
}

/* A request's head, its body not read yet: the server's on_head may refuse
 * it (true: answered, the connection closes). Otherwise a client waiting
 * for leave to send its body gets it (RFC 9110 10.1.1: 100 or the final
 * status, at once; HTTP/1.0 clients do not know 100). */
static bool head_answered(struct rs_http_conn *hc, const struct rs_http_req *req)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	const struct rs_http_header *ex;

	hc->cur = req;
	hc->responded = false;
	hc->route = 0;
	hc->at_head = true;
	if (hc->srv->on_head)
		hc->srv->on_head(hc, req, hc->srv->arg);
	hc->at_head = false;
	hc->cur = NULL;
	if (hc->responded) {
		/* Nothing reads this request again: the part of its body that
		 * came with the head is not held while the connection lingers. */
		rs_http_parser_release(&hc->parser);
		return true;
	}
	ex = rs_http_req_header(req, "Expect");
	if (ex && req->minor == 1 && rs_http_header_has_token(ex, "100-continue") &&
	    rs_conn_send_static(hc->c, cont, sizeof(cont) - 1)) {
		rs_conn_close(hc->c, RS_CLOSE_NOMEM, ENOMEM);
		return true;
	}
	return false;
}

static void on_data(struct rs_conn *c, struct rs_buf *buf, uint8_t *data, size_t len)
{
	struct rs_http_conn *hc = rs_conn_ctx(c);

	(void)buf;
	if (client_refused(hc))
		return;
	if (hc->deferred && len) {
		/* A receive already under way when the connection paused: its bytes
		 * wait behind the held rest for rs_http_resume. */
		uint8_t *more = malloc(hc->held_len + len);

		if (!more) {
			rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
			return;
		}
		if (hc->held) {
			memcpy(more, hc->held, hc->held_len);
			explicit_bzero(hc->held, hc->held_len);
			free(hc->held);
		}
		memcpy(more + hc->held_len, data, len);
		hc->held = more;
		hc->held_len += len;
		hc->in_rest = hc->held;
		hc->in_rest_len = hc->held_len;
		return;
	}
	/* Feed until the parser has neither new bytes nor a buffered pipelined
	 * request left: a feed of 0 bytes parses what is already buffered. */
	while (!hc->close_after) {
		struct rs_http_req *req = NULL;
		int status = 0;
		int n = rs_http_parser_feed(&hc->parser, data, len, &req, &status);

		if (n < 0) {
			respond_protocol_error(hc, status ? status : 400);
			return;
		}
		data += n;
		len -= (size_t)n;
		if (!req) {
			if (len) {
				/* The parser is full yet has no request: limits should have
				 * caught this; answer rather than lose bytes. */
				respond_protocol_error(hc, 431);
				return;
			}
			break;
		}
		if (req->body_pending) {
			if (head_answered(hc, req))
				return;
			rs_http_parser_next(&hc->parser);
			continue;
		}
		hc->cur = req;
		hc->responded = false;
		hc->route = 0;
		hc->in_rest = data;
		hc->in_rest_len = len;
		hc->srv->handler(hc, req, hc->srv->arg);
		if (hc->deferred && !hc->responded && !hc->upgraded) {
			/* Answered later: keep the unread rest, read nothing more. */
			if (len) {
				hc->held = malloc(len);
				if (!hc->held) {
					hc->deferred = false;
					rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
					return;
				}
				memcpy(hc->held, data, len);
				hc->held_len = len;
			}
			hc->in_rest = hc->held;
			hc->in_rest_len = hc->held_len;
			rs_timer_unlink(rs_worker_timers(rs_conn_worker(c)), &hc->timer);
			rs_conn_pause(c);
			return;
		}
		hc->deferred = false;
		hc->on_gone = NULL;
		if (hc->upgraded) {
			hc_free(hc);
			return;
		}
		if (!hc->responded)
			rs_http_respond_error(hc, 500, "internal", "no response", NULL);
		hc->cur = NULL;
		rs_http_parser_next(&hc->parser);
		if (rs_conn_closing(c))
			return;
	}
	if (!hc->close_after)
		arm_timer(hc);
	/* A client that pipelines without reading answers is throttled. */
	if (rs_conn_congested(c))
		rs_conn_pause(c);
}

/* The client half-closed (shutdown(SHUT_WR): health checkers, nc -N). Every
 * complete request it sent was answered by on_data (handlers answer at
 * once); send those answers, then close. A partial request can never
 * complete and is dropped. */
static void on_eof(struct rs_conn *c)
{
	struct rs_http_conn *hc = rs_conn_ctx(c);

	if (client_refused(hc))
		return;
	if (hc->deferred) {
		/* The answer still comes; then the connection closes. */
		hc->close_after = true;
		return;
	}
	if (!rs_conn_queued(c)) {
		/* Nothing left to say: free the slot now, not after a linger. */
		rs_conn_close(c, RS_CLOSE_PEER_EOF, 0);
		return;
	}
	rs_timer_unlink(rs_worker_timers(rs_conn_worker(c)), &hc->timer);
	hc->close_after = true;
	rs_conn_close_after_send(c);
}

static void on_drain(struct rs_conn *c)
{
	rs_conn_resume(c);
}

static void on_timeout(struct rs_timer *t)
{
	struct rs_http_conn *hc = rs_container_of(t, struct rs_http_conn, timer);

	if (hc->peer_pending) {
		client_refused(hc);
		return;
	}
	if (rs_http_parser_idle(&hc->parser)) {
		rs_conn_close(hc->c,
			      rs_worker_stopping(rs_conn_worker(hc->c)) ? RS_CLOSE_SHUTDOWN
									: RS_CLOSE_TIMEOUT,
			      0);
		return;
	}
	rs_debug("http", "request timeout");
	respond_protocol_error(hc, 408);
}

static void on_stop(struct rs_conn *c)
{
	struct rs_http_conn *hc = rs_conn_ctx(c);

	/* Busy connections finish their request; its response then says
	 * Connection: close because the worker is stopping. An idle one is
	 * closed after a short grace rather than at once: bytes already on
	 * their way when the stop came (the client cannot know) are a request
	 * that gets its answer instead of a closed connection. */
	if (rs_http_parser_idle(&hc->parser) && !rs_conn_queued(c)) {
		hc->peer_pending = false; /* closing anyway: no need to count it */
		hc->timer_is_header = false;
		rs_timer_link(rs_worker_timers(rs_conn_worker(c)), &hc->timer,
			      rs_worker_now(rs_conn_worker(c)) + STOP_GRACE_MS);
	}
}

static void on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct rs_http_conn *hc = rs_conn_ctx(c);

	(void)why;
	(void)err;
	if (hc->deferred && hc->on_gone)
		hc->on_gone(hc->gone_arg);
	hc_free(hc);
}

void rs_http_defer(struct rs_http_conn *hc, void (*on_gone)(void *arg), void *arg)
{
	hc->deferred = true;
	hc->on_gone = on_gone;
	hc->gone_arg = arg;
}

void rs_http_resume(struct rs_http_conn *hc)
{
	struct rs_conn *c = hc->c;
	uint8_t *held = hc->held;
	size_t len = hc->held_len;

	hc->deferred = false;
	hc->on_gone = NULL;
	hc->held = NULL;
	hc->held_len = 0;
	if (hc->upgraded) {
		/* The connection is the upgrade owner's (reading again since
		 * rs_http_upgrade): only the HTTP state is left to free. */
		hc->held = held; /* freed with the HTTP state */
		hc->held_len = len;
		hc_free(hc);
		return;
	}
	if (!hc->responded)
		rs_http_respond_error(hc, 500, "internal", "no response", NULL);
	hc->cur = NULL;
	rs_http_parser_next(&hc->parser);
	if (rs_conn_closing(c) || hc->close_after) {
		if (held) {
			explicit_bzero(held, len);
			free(held);
		}
		if (!rs_conn_closing(c) && !rs_conn_queued(c))
			rs_conn_close(c, RS_CLOSE_PEER_EOF, 0);
		else if (!rs_conn_closing(c))
			rs_conn_close_after_send(c);
		return;
	}
	rs_conn_resume(c);
	/* Requests pipelined behind the deferred one, then the held bytes. */
	on_data(c, NULL, held ? held : (uint8_t *)"", len);
	if (held) {
		explicit_bzero(held, len);
		free(held);
	}
}

static const struct rs_conn_ops http_ops = {
	.on_data = on_data,
	.on_eof = on_eof,
	.on_drain = on_drain,
	.on_stop = on_stop,
	.on_close = on_close,
};

static bool trusted(const struct rs_http_server *srv, const struct sockaddr *sa);

/* Over its client's connection limit? Then answer 503 and close (TLS:
 * close unanswered, counted all the same). */
static bool over_client_limit(struct rs_http_conn *hc)
{
	struct rs_http_server *srv = hc->srv;
	const struct sockaddr *peer = rs_conn_peer(hc->c);

	if (!srv->clients || !srv->max_conns_per_client || trusted(srv, peer) ||
	    !clients_acquire(srv->clients, peer, srv->max_conns_per_client, &hc->counted))
		return false;
	atomic_fetch_add_explicit((_Atomic uint64_t *)&srv->refused_per_client, 1,
				  memory_order_relaxed);
	if (rs_conn_filter_ctx(hc->c)) {
		rs_conn_close(hc->c, RS_CLOSE_NORMAL, 0);
	} else {
		hc->close_after = true;
		rs_http_respond_error(hc, 503, "too_many_connections",
				      "too many connections from this client",
				      "Retry-After: 1\r\n");
	}
	return true;
}

static struct rs_http_conn *accept_conn(struct rs_conn *c, struct rs_http_server *srv)
{
	struct rs_http_conn *hc = calloc(1, sizeof(*hc));

	if (!hc) {
		rs_conn_set_ops(c, NULL, NULL);
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
		return NULL;
	}
	hc->c = c;
	hc->srv = srv;
	rs_http_parser_init(&hc->parser, &srv->limits);
	rs_http_parser_want_heads(&hc->parser, true);
	rs_timer_init(&hc->timer, on_timeout);
	rs_conn_set_ops(c, &http_ops, hc);
	/* The first request (and the TLS handshake before it) must start and
	 * finish within the header timeout. */
	hc->timer_is_header = true;
	hc->accepted_ms = rs_worker_now(rs_conn_worker(c));
	if (srv->clients && srv->max_conns_per_client) {
		/* Two ticks: never in this loop iteration, whose timers run
		 * before the peer-name command is even submitted. */
		hc->peer_pending = true;
		rs_timer_link(rs_worker_timers(rs_conn_worker(c)), &hc->timer,
			      hc->accepted_ms + 2 * RS_TIMER_TICK_MS);
	} else {
		rs_timer_link(rs_worker_timers(rs_conn_worker(c)), &hc->timer,
			      hc->accepted_ms + srv->header_timeout_ms);
	}
	return hc;
}

void rs_http_on_accept(struct rs_conn *c, void *arg)
{
	accept_conn(c, arg);
}

void rs_https_on_accept(struct rs_conn *c, void *arg)
{
	struct rs_http_server *srv = arg;

	if (accept_conn(c, srv) && rs_tls_server_attach(srv->tls, c))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
}

static bool trusted(const struct rs_http_server *srv, const struct sockaddr *sa)
{
	for (size_t i = 0; i < srv->n_trusted_proxies; i++)
		if (rs_cidr_match(&srv->trusted_proxies[i], sa))
			return true;
	return false;
}

void rs_http_client_addr(struct rs_http_conn *hc, const struct rs_http_req *req,
			 struct sockaddr_storage *out)
{
	const struct sockaddr *peer = rs_conn_peer(hc->c);

	memset(out, 0, sizeof(*out));
	memcpy(out, peer, peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
			  : peer->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						       : sizeof(struct sockaddr));
	if (!hc->srv->n_trusted_proxies || !trusted(hc->srv, peer))
		return;
	/* Walk every X-Forwarded-For header right to left. */
	for (size_t h = req->n_headers; h-- > 0;) {
		const struct rs_http_header *hd = &req->headers[h];
		size_t end = hd->value_len;

		if (hd->name_len != 15 || strncasecmp(hd->name, "X-Forwarded-For", 15))
			continue;
		while (end) {
			size_t start = end, a, b;
			struct sockaddr_storage ss;

			while (start && hd->value[start - 1] != ',')
				start--;
			for (a = start; a < end && (hd->value[a] == ' ' || hd->value[a] == '\t'); a++)
				;
			for (b = end; b > a && (hd->value[b - 1] == ' ' || hd->value[b - 1] == '\t'); b--)
				;
			end = start ? start - 1 : 0;
			if (rs_parse_ip(hd->value + a, b - a, &ss))
				return; /* garbage: keep the last address we could trust */
			memcpy(out, &ss, sizeof(ss));
			if (!trusted(hc->srv, (struct sockaddr *)&ss))
				return;
		}
	}
}
