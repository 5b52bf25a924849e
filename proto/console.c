#include "core/common.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "core/addr.h"
#include "core/log.h"
#include "core/text.h"
#include "core/portpool.h"
#include "core/spec.h"
#include "proto/console.h"
#include "proto/pve_up.h"
#include "proto/rfb.h"
#include "proto/rfb_msgs.h"
#include "proto/rfb_srv.h"
#include "proto/termproxy.h"
#include "proto/ws.h"

const char *const rs_console_cause_names[RS_CC__COUNT] = {
	"browser_closed",   "target_closed",    "killed",          "token_invalid",
	"token_ip",         "ws_handshake",     "draining",        "ports_exhausted",
	"connect_refused",  "connect_timeout",  "connect_error",   "target_auth",
	"target_protocol",  "target_reset",     "browser_protocol", "handshake_timeout",
	"idle_timeout",     "upstream_auth",    "upstream_permission", "vm_not_found",
	"vm_not_running",   "upstream_tls",     "upstream_unavailable", "upstream_protocol",
	"console_unreachable", "terminal_refused", "nomem",   "key_consoles",
	"store_unavailable",
	"resume_expired",
};

const char *const rs_resume_outcome_names[RS_RESUME__COUNT] = {"resumed", "replaced", "refused",
								 "expired", "failed"};

const char *const rs_console_stage_names[RS_STAGE__COUNT] = {"token", "connect", "upstream_api",
								"target_auth",
							    "total"};
const double rs_console_setup_le_s[RS_SETUP_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
							0.05,   0.1,   0.25,   0.5,   1,    2.5,
							10};
const double rs_console_duration_le_s[RS_DURATION_BUCKETS] = {1,    10,    60,    300,  900,
							      3600, 14400, 86400, 604800};

/* Per-worker state: written only by its worker, read racily by stats. */
struct session;

struct console_worker {
	struct rs_portpool *ports;
	struct rs_portpool *cl_ports[RS_MAX_CLUSTERS]; /* clusters with their own source_addresses */
	struct rs_console_stats st;
	/* Every live session of this worker. <lock> is taken when a session is
	 * linked, unlinked or changes state, and by listings from other threads
	 * (ProxmoxVNC's /status): a few times per session, never per byte. */
	pthread_mutex_t lock;
	struct session *sessions;
	char start_err[300]; /* the start hook's failure, "" when none */
	struct rs_redis_pool *redis; /* the fleet store's (NULL: embedded) */
};

#define CW_ADD(cw, field, n)                                                                       \
	__atomic_store_n(&(cw)->st.field, (cw)->st.field + (n), __ATOMIC_RELAXED)

static void observe_setup(struct console_worker *cw, enum rs_console_stage st, uint64_t us)
{
	size_t b = 0;

	while (b < RS_SETUP_BUCKETS && (double)us / 1e6 > rs_console_setup_le_s[b])
		b++;
	CW_ADD(cw, setup[st][b], 1);
	CW_ADD(cw, setup_sum_us[st], us);
}

static void observe_duration(struct console_worker *cw, uint64_t ms)
{
	size_t b = 0;

	while (b < RS_DURATION_BUCKETS && (double)ms / 1e3 > rs_console_duration_le_s[b])
		b++;
	CW_ADD(cw, duration[b], 1);
	CW_ADD(cw, duration_sum_ms, ms);
}

/* ST_DETACHED: an RFB console whose browser dropped; its upstream is closed
 * and reopened when a browser resumes (see detach). */
enum sess_state { ST_HANDSHAKE = 0, ST_RELAY, ST_CLOSING, ST_DETACHED };

/* Only needed until both security phases are over; freed (and wiped) then,
 * so an established session carries no handshake state. */
struct handshake {
	struct rs_rfb_server srv;
	struct rs_rfb_client cli;
	bool up_ready, up_failed;
	enum rs_console_cause fail_cause;
	char fail_reason[200];
};

struct resume_entry;

/* Grouped by alignment: a held console is one 896-byte allocation. */
struct session {
	struct console_worker *cw;
	struct rs_worker *w; /* the worker both legs live on */
	struct resume_entry *re; /* resumable: its registry entry (console.resume_grace_s) */
	/* A resumable RFB console keeps its upstream across a drop while <srv>
	 * frames the target's messages (keep_up). The browser sees target
	 * bytes only while <live>: from its ServerInit (replayed from the
	 * cache) and the target's next message boundary on. */
	struct rs_rfb_srv *srv;
	uint8_t *bacc; /* the browser's SetEncodings / SetPixelFormat being read */
	size_t bacc_len;
	const struct rs_console_env *env;
	struct rs_conn *br, *up;
	struct rs_pve_up *pve; /* Proxmox kinds: the upstream leg instead of <up> */
	struct rs_console_spec *spec;
	uint8_t *pending; /* terminal: browser messages sent before the upstream was ready */
	size_t pending_len;
	uint8_t *tmsg; /* terminal: a browser message split over several reads/frames */
	size_t tmsg_len;
	struct handshake *hs;
	struct rs_ws_parser ws;
	/* The browser's latest unanswered ping: allocated when one arrives and
	 * freed once its pong is queued (pings are rare; every held console
	 * would otherwise carry the 127 bytes). */
	struct rs_ws_pong *pong;
	struct rs_rfb_msgs msgs; /* RFB consoles: the browser's messages after the security phase */
	struct rs_timer timer;
	uint64_t opened_ms, to_target, to_browser;
	uint64_t t_upgrade_ns, t_connected_ns, relay_ms;
	uint64_t last_activity_ms; /* relay: for the idle timeout */
	uint64_t id;               /* the browser connection's id (0 is a valid id) */
	int64_t created_s, connected_s; /* wall clock, for listings */
	struct session *next, *prev; /* console_worker.sessions */
	enum sess_state state;
	enum rs_console_cause cause;
	int cl; /* Proxmox: cluster index for metrics, -1 for plain VNC */
	/* The (source address, port) pair held while <up> exists (plain VNC
	 * with a port pool): as long as its family needs, not a sockaddr_storage. */
	union {
		struct sockaddr_in v4;
		struct sockaddr_in6 v6;
	} src;
	bool detached; /* resumable and no browser attached: the grace runs */
	bool reopened; /* an RFB console's upstream was reopened for a resume */
	bool keep_up, live, at_boundary, init_replayed, replay_init;
	bool client_init_sent; /* the target has had a ClientInit (so a ServerInit comes) */
	bool rehs;	       /* a resumed browser's RFB security phase, answered by ringside */
	bool term;
	bool pong_paused; /* browser reads stopped until that pong can be queued */
	bool have_src, close_sent;
	bool upgraded; /* <id> is set: the session is listed */
	uint8_t refs;
	char tokhash[9];
	char client[48];
	char user_agent[160];
};
_Static_assert(sizeof(struct session) <= 896, "struct session outgrew its jemalloc size class");

/* --- the registry of resumable consoles ---
 *
 * A reconnection may be accepted by any worker, the console lives on one:
 * the registry says which. One global mutex, taken when a resumable console
 * opens or ends and when a browser asks to resume — the control path, never
 * per byte. Entries hold hashes only: SHA-256 of the token (the key) and of
 * the resume secret. The session pointer is dereferenced only on its own
 * worker, which alone ends it (and removes the entry first). */
#define REG_BUCKETS 1024

struct resume_entry {
	struct resume_entry *next;
	uint8_t key[SHA256_DIGEST_LENGTH];
	uint8_t secret[SHA256_DIGEST_LENGTH];
	enum rs_console_kind kind;
	bool view_only;
	bool bound;	    /* the link is bound to a client address (tokens.bind_client_ip) */
	uint8_t addr[16];   /* ... this one, IPv4 as IPv4-mapped IPv6 */
	struct rs_worker *w;
	struct session *s;
};

/* <sa> as 16 bytes, IPv4 mapped into IPv6 (as the token table compares). */
static void addr16(const struct sockaddr *sa, uint8_t out[16])
{
	memset(out, 0, 16);
	if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else if (sa->sa_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	}
}

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct resume_entry *reg[REG_BUCKETS];

static size_t reg_bucket(const uint8_t key[SHA256_DIGEST_LENGTH])
{
	return ((size_t)key[0] | (size_t)key[1] << 8) % REG_BUCKETS;
}

static void token_key(const uint8_t tok[16], uint8_t key[SHA256_DIGEST_LENGTH])
{
	SHA256(tok, 16, key);
}

static void reg_add(struct resume_entry *e)
{
	size_t b = reg_bucket(e->key);

	pthread_mutex_lock(&reg_lock);
	e->next = reg[b];
	reg[b] = e;
	pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(struct resume_entry *e)
{
	size_t b = reg_bucket(e->key);

	pthread_mutex_lock(&reg_lock);
	for (struct resume_entry **p = &reg[b]; *p; p = &(*p)->next)
		if (*p == e) {
			*p = e->next;
			break;
		}
	pthread_mutex_unlock(&reg_lock);
	explicit_bzero(e, sizeof(*e));
	free(e);
}

static struct resume_entry *reg_find_locked(const uint8_t key[SHA256_DIGEST_LENGTH])
{
	for (struct resume_entry *e = reg[reg_bucket(key)]; e; e = e->next)
		if (!CRYPTO_memcmp(e->key, key, SHA256_DIGEST_LENGTH))
			return e;
	return NULL;
}

int rs_console_resumable(const uint8_t tok[16], enum rs_console_kind *kind, bool *view_only)
{
	uint8_t key[SHA256_DIGEST_LENGTH];
	struct resume_entry *e;
	int ret = -ENOENT;

	token_key(tok, key);
	pthread_mutex_lock(&reg_lock);
	e = reg_find_locked(key);
	if (e) {
		*kind = e->kind;
		*view_only = e->view_only;
		ret = 0;
	}
	pthread_mutex_unlock(&reg_lock);
	return ret;
}

/* The resume secret of "?resume=<43 base64url chars>" hashed into <out>;
 * false when the query has none (or a malformed one: not resumable). */
static bool resume_secret(const struct rs_http_req *req, uint8_t out[SHA256_DIGEST_LENGTH])
{
	const char *q = req->query, *end = q ? q + req->query_len : NULL;

	while (q && q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;

		if (stop - q == 7 + 43 && !memcmp(q, "resume=", 7)) {
			for (const char *p = q + 7; p < stop; p++)
				if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
				      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
					return false;
			SHA256((const uint8_t *)q + 7, 43, out);
			return true;
		}
		q = amp ? amp + 1 : NULL;
	}
	return false;
}

static struct console_worker *cw_of(struct rs_worker *w)
{
	return rs_worker_data(w);
}

/* Another thread's view of worker <w>'s state: NULL until its start hook has
 * run (workers start side by side; one may serve a listing of all of them
 * while another is still setting up). Pairs with the release fence before
 * rs_worker_set_data in rs_console_worker_start. */
static struct console_worker *cw_of_other(struct rs_worker *w)
{
	struct console_worker *cw = rs_worker_data(w);

	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return cw;
}

/* A worker's slice of the (source address, port) pairs of <addrs>. */
static struct rs_portpool *build_pool(struct rs_worker *w, const struct rs_config *cfg,
				      char *const *list, size_t n, const char *what,
				      struct console_worker *cw)
{
	struct sockaddr_storage *addrs = rs_xcalloc(n, sizeof(*addrs));
	struct rs_portpool *pool = NULL;
	unsigned nw = rs_engine_workers(rs_worker_engine(w));
	int ret;

	for (size_t i = 0; i < n; i++)
		rs_parse_ip(list[i], strlen(list[i]), &addrs[i]); /* validated by the config */
	ret = rs_portpool_init(&pool, addrs, n, (uint16_t)cfg->port_min, (uint16_t)cfg->port_max,
			       rs_worker_id(w), nw);
	/* Without its pool the worker would connect from kernel-chosen ports:
	 * recorded here, and the daemon refuses to start (rs_console_workers_ready). */
	if (ret && !cw->start_err[0])
		snprintf(cw->start_err, sizeof(cw->start_err),
			 "worker %u: cannot build the port pool of %s (%zu address(es), ports "
			 "%u-%u, %u workers): %s",
			 rs_worker_id(w), what, n, cfg->port_min, cfg->port_max, nw,
			 ret == -ENOMEM ? "out of memory"
					: "the port range must hold at least one port per worker, and "
					  "no address may be listed twice");
	free(addrs);
	return pool;
}

void rs_console_worker_start(struct rs_worker *w, void *arg)
{
	const struct rs_console_env *env = arg;
	const struct rs_config *cfg = env->cfg;
	struct console_worker *cw = rs_xcalloc(1, sizeof(*cw));

	pthread_mutex_init(&cw->lock, NULL);
	if (cfg->n_source_addresses)
		cw->ports = build_pool(w, cfg, cfg->source_addresses, cfg->n_source_addresses,
				       "port_pool.source_addresses", cw);
	for (size_t i = 0; i < cfg->n_clusters && i < RS_MAX_CLUSTERS; i++) {
		char what[200];

		if (!cfg->clusters[i].n_source_addresses)
			continue;
		snprintf(what, sizeof(what), "clusters.%s.source_addresses", cfg->clusters[i].name);
		cw->cl_ports[i] = build_pool(w, cfg, cfg->clusters[i].source_addresses,
					     cfg->clusters[i].n_source_addresses, what, cw);
	}
	/* The fleet store's Redis client of this worker, driven by its ring. */
	cw->redis = rs_store_redis(env->store);
	rs_redis_worker_start(cw->redis, w);
	/* Everything above is visible to a thread that sees the pointer. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	rs_worker_set_data(w, cw);
}

/* A session's memory, once it is off its worker's list: its resume entry
 * (a console never upgraded, or one detached at stop), handshake state and
 * spec (secrets wiped by their owners). */
/* Give the source pair back to the worker's pool. */
static void put_src(struct session *s)
{
	struct sockaddr_storage ss = {0};

	if (!s->have_src)
		return;
	memcpy(&ss, &s->src,
	       s->src.v4.sin_family == AF_INET6 ? sizeof(s->src.v6) : sizeof(s->src.v4));
	rs_portpool_put(s->cw->ports, &ss);
	s->have_src = false;
}

static void session_free(struct session *s)
{
	if (s->re)
		reg_remove(s->re);
	if (s->hs) {
		rs_rfb_client_release(&s->hs->cli);
		explicit_bzero(s->hs, sizeof(*s->hs));
		free(s->hs);
	}
	rs_spec_free(s->spec);
	free(s->pending);
	free(s->tmsg);
	free(s->srv);
	free(s->bacc);
	free(s->pong);
	free(s);
}

void rs_console_worker_stop(struct rs_worker *w)
{
	struct console_worker *cw = cw_of(w);

	if (!cw)
		return;
	rs_redis_worker_stop(cw->redis, w);
	/* RFB consoles still waiting for their browser hold no connection, so
	 * the engine's stop did not end them: free them here. */
	while (cw->sessions) {
		struct session *s = cw->sessions;

		cw->sessions = s->next;
		session_free(s);
	}
	if (cw->ports)
		rs_portpool_free(cw->ports);
	for (size_t i = 0; i < RS_MAX_CLUSTERS; i++)
		if (cw->cl_ports[i])
			rs_portpool_free(cw->cl_ports[i]);
	pthread_mutex_destroy(&cw->lock);
	free(cw);
	rs_worker_set_data(w, NULL);
}

int rs_console_workers_ready(struct rs_engine *e, char *err, size_t errlen)
{
	for (unsigned i = 0; i < rs_engine_workers(e); i++) {
		struct console_worker *cw = cw_of_other(rs_engine_worker(e, i));

		if (!cw) {
			snprintf(err, errlen, "worker %u: console state not set up", i);
			return -EINVAL;
		}
		if (cw->start_err[0]) {
			snprintf(err, errlen, "%s", cw->start_err);
			return -EINVAL;
		}
	}
	return 0;
}

void rs_console_stats(struct rs_engine *e, struct rs_console_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < rs_engine_workers(e); i++) {
		struct console_worker *cw = cw_of_other(rs_engine_worker(e, i));
		const uint64_t *src;
		uint64_t *dst = (uint64_t *)out;

		if (!cw)
			continue;
		src = (const uint64_t *)&cw->st;
		for (size_t k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
			dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
		for (size_t p = 0; p <= RS_MAX_CLUSTERS; p++) {
			struct rs_portpool *pool = p == RS_MAX_CLUSTERS ? cw->ports : cw->cl_ports[p];
			struct rs_portpool_stats ps;

			if (!pool)
				continue;
			rs_portpool_stats(pool, &ps);
			out->ports_total += ps.size;
			out->ports_in_use += ps.in_use;
			out->ports_exhausted += ps.exhausted;
		}
	}
}

/* --- sending to the browser --- */

static int ws_send(struct session *s, int opcode, const void *data, size_t len)
{
	uint8_t hdr[14];
	size_t hlen = rs_ws_frame_header(hdr, opcode, true, len, NULL);
	int ret = rs_conn_send(s->br, hdr, hlen);

	if (!ret && len)
		ret = rs_conn_send(s->br, data, len);
	return ret;
}

static void ws_close(struct session *s, uint16_t code, const char *reason)
{
	uint8_t payload[125];
	size_t n = 0;

	if (!s->br || s->close_sent)
		return;
	s->close_sent = true;
	if (code && rs_ws_close_code_sendable(code))
		n = rs_ws_close_payload(payload, code, reason);
	if (ws_send(s, RS_WS_OP_CLOSE, payload, n))
		rs_conn_close(s->br, RS_CLOSE_NOMEM, ENOMEM);
	else
		rs_conn_close_after_send(s->br);
}

/* "10.0.0.9:5900" or, for Proxmox consoles, "fra1/pve2/100" (node "-" until known). */
static void target_desc(const struct rs_console_spec *sp, char *out, size_t len)
{
	if (sp->kind == RS_CONSOLE_VNC)
		snprintf(out, len, strchr(sp->host, ':') ? "[%s]:%u" : "%s:%u", sp->host, sp->port);
	else
		snprintf(out, len, "%s/%s/%u", sp->cluster ? sp->cluster : "-",
			 sp->node ? sp->node : "-", sp->vmid);
}

const char *const rs_console_kind_names[RS_KINDS] = {"vnc", "pve-vnc", "pve-term"};

static void emit_as(const struct session *s, enum rs_console_event_type type, uint64_t now_ms,
		    const char *cause);

static void emit(const struct session *s, enum rs_console_event_type type, uint64_t now_ms)
{
	emit_as(s, type, now_ms, rs_console_cause_names[s->cause]);
}

static void emit_as(const struct session *s, enum rs_console_event_type type, uint64_t now_ms,
		    const char *cause)
{
	char target[200];
	struct rs_console_event ev = {
		.type = type,
		.token_hash = s->tokhash,
		.api_key = s->spec->api_key_name ? s->spec->api_key_name : "",
		.label = s->spec->label ? s->spec->label : "",
		.target_host = s->spec->kind == RS_CONSOLE_VNC ? s->spec->host : target,
		.kind = rs_console_kind_names[s->spec->kind],
		.target_port = s->spec->port,
		.client = s->client,
		.user_agent = s->user_agent,
		.cause = cause,
		.duration_ms = now_ms - s->opened_ms,
		.bytes_to_target = s->to_target,
		.bytes_to_browser = s->to_browser,
		.view_only = s->spec->view_only,
	};

	target_desc(s->spec, target, sizeof(target));
	if (s->env->on_event)
		s->env->on_event(s->env->event_arg, &ev);
}

static void log_closed(struct session *s)
{
	rs_info("console", "console.closed token=%s cause=%s duration_ms=%llu to_target=%llu "
			   "to_browser=%llu",
		s->tokhash, rs_console_cause_names[s->cause],
		(unsigned long long)(rs_worker_now(s->w) -
				     s->opened_ms),
		(unsigned long long)s->to_target, (unsigned long long)s->to_browser);
}

/* End the session: <code>/<reason> go to the browser in a close frame. */
static void session_end(struct session *s, enum rs_console_cause cause, uint16_t code,
			const char *reason)
{
	if (s->state == ST_CLOSING)
		return;
	if (s->state == ST_RELAY) {
		CW_ADD(s->cw, active, (uint64_t)-1);
		CW_ADD(s->cw, active_kind[s->spec->kind], (uint64_t)-1);
		if (s->cl >= 0)
			CW_ADD(s->cw, cl_active[s->cl], (uint64_t)-1);
		observe_duration(s->cw, rs_worker_now(s->w) -
						s->relay_ms);
	}
	pthread_mutex_lock(&s->cw->lock);
	s->state = ST_CLOSING;
	pthread_mutex_unlock(&s->cw->lock);
	s->cause = cause;
	CW_ADD(s->cw, causes[cause], 1);
	CW_ADD(s->cw, causes_kind[s->spec->kind][cause], 1);
	if (s->cl >= 0)
		CW_ADD(s->cw, cl_causes[s->cl][cause], 1);
	rs_timer_unlink(rs_worker_timers(s->w), &s->timer);
	if (s->re) { /* the link is spent for good: a later resume finds nothing */
		reg_remove(s->re);
		s->re = NULL;
	}
	if (s->detached) {
		s->detached = false;
		CW_ADD(s->cw, detached, (uint64_t)-1);
	}
	if (s->br)
		ws_close(s, code, reason);
	if (s->up)
		rs_conn_close(s->up, RS_CLOSE_NORMAL, 0);
	if (s->pve) {
		rs_pve_up_close(s->pve);
		s->pve = NULL;
		s->refs--; /* the upstream's reference: it calls nothing any more */
	}
	log_closed(s);
	emit(s, RS_CEV_CLOSED, rs_worker_now(s->w));
}

static void session_unref(struct session *s)
{
	if (--s->refs)
		return;
	pthread_mutex_lock(&s->cw->lock);
	if (s->prev)
		s->prev->next = s->next;
	else
		s->cw->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	pthread_mutex_unlock(&s->cw->lock);
	session_free(s);
}

/* --- handshake --- */

static void send_rfb_out(struct session *s, struct rs_rfb_out *out)
{
	if (out->len && ws_send(s, RS_WS_OP_BINARY, out->buf, out->len))
		session_end(s, RS_CC_NOMEM, 1011, "out of memory");
	out->len = 0;
}

static void fail_upstream(struct session *s, enum rs_console_cause cause, const char *reason)
{
	struct handshake *hs = s->hs;

	if (!hs || hs->up_failed)
		return;
	hs->up_failed = true;
	hs->fail_cause = cause;
	snprintf(hs->fail_reason, sizeof(hs->fail_reason), "%s", reason);
	if (s->up)
		rs_conn_close(s->up, RS_CLOSE_NORMAL, 0);
}

/* --- the upstream leg: a TCP target or a Proxmox console --- */

static int up_send(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	if (s->pve)
		return rs_pve_up_send(s->pve, buf, data, len);
	if (!s->up)
		return -EPIPE;
	return buf ? rs_conn_send_buf(s->up, buf, data, len) : rs_conn_send(s->up, data, len);
}

static bool up_congested(const struct session *s)
{
	return s->pve ? rs_pve_up_congested(s->pve) : s->up && rs_conn_congested(s->up);
}

static void up_pause(struct session *s)
{
	if (s->pve)
		rs_pve_up_pause(s->pve);
	else if (s->up)
		rs_conn_pause(s->up);
}

/* One timer per session, linked only at the idle deadline: activity just
 * moves a timestamp, and the timer re-arms itself when it finds some. */
static void on_idle_check(struct rs_timer *t)
{
	struct session *s = rs_container_of(t, struct session, timer);
	uint64_t limit = (uint64_t)s->env->cfg->session_idle_timeout_s * 1000;
	struct rs_worker *w;

	if (s->state != ST_RELAY || !s->br)
		return;
	w = s->w;
	if (rs_worker_now(w) - s->last_activity_ms >= limit) {
		session_end(s, RS_CC_IDLE_TIMEOUT, 1000, "the console was idle for too long");
		return;
	}
	rs_timer_link(rs_worker_timers(w), &s->timer, s->last_activity_ms + limit);
}

static void forward_to_target(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len);

static void enter_relay(struct session *s)
{
	rs_rfb_client_release(&s->hs->cli);
	explicit_bzero(s->hs, sizeof(*s->hs));
	free(s->hs);
	s->hs = NULL;
	/* A resumable plain VNC console may have to log in again (its upstream
	 * is reopened on resume): the password stays until the session ends. */
	if (s->spec->password && !s->re) {
		explicit_bzero(s->spec->password, strlen(s->spec->password));
		free(s->spec->password);
		s->spec->password = NULL;
	}
	rs_timer_unlink(rs_worker_timers(s->w), &s->timer);
	pthread_mutex_lock(&s->cw->lock);
	s->state = ST_RELAY;
	s->connected_s = rs_wall_s();
	pthread_mutex_unlock(&s->cw->lock);
	s->relay_ms = rs_worker_now(s->w);
	s->last_activity_ms = s->relay_ms;
	if (s->env->cfg->session_idle_timeout_s) {
		s->timer.cb = on_idle_check;
		rs_timer_link(rs_worker_timers(s->w), &s->timer,
			      s->relay_ms + (uint64_t)s->env->cfg->session_idle_timeout_s * 1000);
	}
	CW_ADD(s->cw, active, 1);
	CW_ADD(s->cw, active_kind[s->spec->kind], 1);
	if (s->cl >= 0)
		CW_ADD(s->cw, cl_active[s->cl], 1);
	{
		uint64_t now = rs_now_ns();

		if (s->t_connected_ns)
			observe_setup(s->cw, RS_STAGE_TARGET_AUTH, (now - s->t_connected_ns) / 1000);
		observe_setup(s->cw, RS_STAGE_TOTAL, (now - s->t_upgrade_ns) / 1000);
	}
	{
		char target[200];

		target_desc(s->spec, target, sizeof(target));
		rs_info("console", "console.opened token=%s key=%s target=%s", s->tokhash,
			s->spec->api_key_name ? s->spec->api_key_name : "-", target);
	}
	if (s->term && s->pending_len) {
		uint8_t *p = s->pending;
		size_t n = s->pending_len;

		s->pending = NULL;
		s->pending_len = 0;
		forward_to_target(s, NULL, p, n);
		free(p);
	}
	if (!s->term && s->re && !s->srv) {
		/* Resumable RFB: frame the target's messages from its ServerInit
		 * on, so a resumed browser can join the same upstream. */
		s->srv = malloc(sizeof(*s->srv));
		if (s->srv) {
			rs_rfb_srv_init(s->srv);
			s->keep_up = true;
		}
	}
	s->live = true;
	if (!s->reopened) /* a resume is audited as console.resumed */
		emit(s, RS_CEV_OPENED, s->relay_ms);
}

/* Move the browser-side RFB machine forward once the upstream outcome is
 * known; the browser learns the result only through its own RFB dialect. */
static void advance(struct session *s)
{
	struct handshake *hs = s->hs;
	struct rs_rfb_out out = {0};

	if (s->state != ST_HANDSHAKE || !hs || !rs_rfb_server_waiting(&hs->srv))
		return;
	if (hs->up_failed) {
		rs_rfb_server_fail(&hs->srv, hs->fail_reason, &out);
		send_rfb_out(s, &out);
		session_end(s, hs->fail_cause, 1011, hs->fail_reason);
		return;
	}
	if (!hs->up_ready)
		return;
	rs_rfb_server_accept(&hs->srv, &out);
	send_rfb_out(s, &out);
	if (s->state == ST_HANDSHAKE && rs_rfb_server_done(&hs->srv))
		enter_relay(s);
}

static void forward_to_target(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	int ret;

	if (!len)
		return;
	ret = up_send(s, buf, data, len);
	if (ret) {
		session_end(s, RS_CC_NOMEM, 1011, "out of memory");
		return;
	}
	CW_ADD(s->cw, bytes_to_target, len);
	s->to_target += len;
	s->last_activity_ms = rs_worker_now(s->w);
	/* Backpressure: a target that does not read stops the browser's reads. */
	if (up_congested(s))
		rs_conn_pause(s->br);
}

static void view_only_relay(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len);

/* Browser bytes for the target once relaying: on RFB consoles each message
 * is checked first (known type, bounded length), so a hostile page cannot
 * hand the VNC server's parser what noVNC never sends. The bytes go on
 * unchanged, in one send (view-only consoles: view_only_relay, or
 * relay_rfb_pieces for resumable ones, drops the input among them).
 * Terminal input was checked by term_chunk(). */
static int ws_send(struct session *s, int opcode, const void *data, size_t len);

/* Gather a small browser message (SetPixelFormat, SetEncodings) split over
 * pieces; false when out of memory. */
static bool bacc_add(struct session *s, const uint8_t *data, size_t len, bool first)
{
	uint8_t *p;

	if (first)
		s->bacc_len = 0;
	p = realloc(s->bacc, s->bacc_len + len);
	if (!p)
		return false;
	memcpy(p + s->bacc_len, data, len);
	s->bacc = p;
	s->bacc_len += len;
	return true;
}

/* A resumable RFB console's browser stream, message by message: SetEncodings
 * is narrowed to what rs_rfb_srv frames (stateless encodings), SetPixelFormat
 * tells it the pixel size, and a resumed browser's ClientInit is answered
 * with the cached ServerInit instead of reaching the target. */
static void relay_rfb_pieces(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	uint8_t *run = data;
	size_t run_len = 0;

	while (len && s->state == ST_RELAY) {
		struct rs_rfb_msg_ev ev;
		int n = rs_rfb_msgs_feed(&s->msgs, data, len, &ev);
		bool pass = true;

		if (n < 0) {
			if (run_len)
				forward_to_target(s, buf, run, run_len);
			rs_info("console", "token=%s browser_protocol: %s", s->tokhash, s->msgs.error);
			session_end(s, RS_CC_BROWSER_PROTOCOL, 1008, s->msgs.error);
			return;
		}
		if (s->spec->view_only && rs_rfb_msg_is_input(ev.kind)) {
			pass = false; /* a viewer's input never reaches the target */
		} else if (ev.kind == RS_RFB_MSG_CLIENT_INIT && s->replay_init &&
			   !s->client_init_sent) {
			/* The first browser left before its ClientInit: this one's
			 * goes to the target, whose ServerInit starts the stream. */
			s->replay_init = false;
			s->init_replayed = true;
			s->live = true;
		} else if (ev.kind == RS_RFB_MSG_CLIENT_INIT && s->replay_init) {
			size_t ilen;
			const uint8_t *init = rs_rfb_srv_server_init(s->srv, &ilen);

			pass = false;
			s->replay_init = false;
			if (!init || ws_send(s, RS_WS_OP_BINARY, init, ilen)) {
				session_end(s, RS_CC_NOMEM, 1011, "the console could not be resumed");
				return;
			}
			s->init_replayed = true;
			if (s->at_boundary)
				s->live = true;
		} else if (ev.kind == RS_RFB_MSG_SET_PIXEL_FORMAT ||
			   ev.kind == RS_RFB_MSG_SET_ENCODINGS) {
			if (!bacc_add(s, data, (size_t)n, ev.first)) {
				session_end(s, RS_CC_NOMEM, 1011, "out of memory");
				return;
			}
			pass = ev.kind == RS_RFB_MSG_SET_PIXEL_FORMAT;
			if (ev.last && ev.kind == RS_RFB_MSG_SET_PIXEL_FORMAT && s->bacc_len >= 5)
				rs_rfb_srv_set_bpp(s->srv, s->bacc[4]); /* a failure shows on the target side */
		}
		if (pass && ev.kind == RS_RFB_MSG_CLIENT_INIT)
			s->client_init_sent = true;
		if (pass) {
			if (!run_len)
				run = data;
			run_len += (size_t)n;
		} else if (run_len) {
			forward_to_target(s, buf, run, run_len);
			run_len = 0;
		}
		if (!pass && ev.last && ev.kind == RS_RFB_MSG_SET_ENCODINGS && s->bacc_len >= 4) {
			/* The same message with only the encodings it can frame
			 * (noVNC decodes Raw, CopyRect, RRE and Hextile too). */
			size_t k = 4;

			for (size_t i = 4; i + 4 <= s->bacc_len; i += 4) {
				int32_t e = (int32_t)((uint32_t)s->bacc[i] << 24 | (uint32_t)s->bacc[i + 1] << 16 |
						      (uint32_t)s->bacc[i + 2] << 8 | s->bacc[i + 3]);

				if (rs_rfb_srv_encoding_ok(e)) {
					memmove(s->bacc + k, s->bacc + i, 4);
					k += 4;
				}
			}
			s->bacc[2] = (uint8_t)(((k - 4) / 4) >> 8);
			s->bacc[3] = (uint8_t)((k - 4) / 4);
			forward_to_target(s, NULL, s->bacc, k);
		}
		data += n;
		len -= (size_t)n;
	}
	if (run_len && s->state == ST_RELAY)
		forward_to_target(s, buf, run, run_len);
}

static void relay_to_target(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	if (s->srv && s->keep_up) {
		relay_rfb_pieces(s, buf, data, len);
		return;
	}
	if (!s->term && s->spec->view_only)
		return view_only_relay(s, buf, data, len);
	if (!s->term && rs_rfb_msgs_check(&s->msgs, data, len)) {
		rs_info("console", "token=%s browser_protocol: %s", s->tokhash, s->msgs.error);
		session_end(s, RS_CC_BROWSER_PROTOCOL, 1008, s->msgs.error);
		return;
	}
	forward_to_target(s, buf, data, len);
}

/* --- view-only consoles: the browser's input never reaches the target --- */

/* RFB: walk the browser's messages piece by piece and forward only those
 * that shape what the viewer receives (rs_rfb_msg_is_input says which); key,
 * pointer, cut text, QEMU key, xvp and SetDesktopSize are dropped here,
 * whatever the page does. Each run of kept pieces goes on in one send. */
static void view_only_relay(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	size_t off = 0, run = 0; /* the kept bytes not yet sent start at <run> */

	while (off < len && s->state == ST_RELAY) {
		struct rs_rfb_msg_ev ev;
		int n = rs_rfb_msgs_feed(&s->msgs, data + off, len - off, &ev);

		if (n < 0) {
			rs_info("console", "token=%s browser_protocol: %s", s->tokhash,
				s->msgs.error);
			session_end(s, RS_CC_BROWSER_PROTOCOL, 1008, s->msgs.error);
			return;
		}
		if (rs_rfb_msg_is_input(ev.kind)) {
			forward_to_target(s, buf, data + run, off - run);
			run = off + (size_t)n;
		}
		off += (size_t)n;
	}
	if (s->state == ST_RELAY)
		forward_to_target(s, buf, data + run, len - run);
}

/* termproxy: a viewer neither types (0: data) nor resizes the shell's window
 * (1: resize, which every other viewer would see); keep-alives pass. */
static bool view_only_drops_term(const struct session *s, const struct rs_tp_msg *m)
{
	return s->spec->view_only && m->type != RS_TP_PING;
}

static void browser_payload(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	struct rs_rfb_out out = {0};
	int n;

	if (s->state == ST_RELAY && s->rehs) {
		/* A resumed browser's security phase: the upstream is ready. */
		while (s->rehs && s->state == ST_RELAY) {
			n = rs_rfb_server_feed(&s->hs->srv, data, len, &out);
			if (n < 0) {
				session_end(s, RS_CC_BROWSER_PROTOCOL, 1002, s->hs->srv.error);
				return;
			}
			send_rfb_out(s, &out);
			data += n;
			len -= (size_t)n;
			if (rs_rfb_server_waiting(&s->hs->srv)) {
				rs_rfb_server_accept(&s->hs->srv, &out);
				send_rfb_out(s, &out);
			}
			if (rs_rfb_server_done(&s->hs->srv)) {
				explicit_bzero(s->hs, sizeof(*s->hs));
				free(s->hs);
				s->hs = NULL;
				s->rehs = false;
			} else if (!len || (!n && !rs_rfb_server_waiting(&s->hs->srv))) {
				return;
			}
		}
		if (len && s->state == ST_RELAY)
			relay_to_target(s, buf, data, len);
		return;
	}
	if (s->state == ST_RELAY) {
		relay_to_target(s, buf, data, len);
		return;
	}
	if (s->state != ST_HANDSHAKE)
		return;
	if (s->term) {
		/* The page sends its size at once; keep it until the terminal is up. */
		uint8_t *p = s->pending_len + len <= 8192 ? realloc(s->pending, s->pending_len + len)
							  : NULL;

		if (!p) {
			session_end(s, RS_CC_BROWSER_PROTOCOL, 1008,
				    "too much input before the terminal was ready");
			return;
		}
		memcpy(p + s->pending_len, data, len);
		s->pending = p;
		s->pending_len += len;
		return;
	}
	n = rs_rfb_server_feed(&s->hs->srv, data, len, &out);
	if (n < 0) {
		session_end(s, RS_CC_BROWSER_PROTOCOL, 1002, s->hs->srv.error);
		return;
	}
	send_rfb_out(s, &out);
	advance(s);
	if (s->state == ST_HANDSHAKE && s->hs && rs_rfb_server_done(&s->hs->srv) &&
	    s->hs->up_ready)
		enter_relay(s);
	if ((size_t)n < len) {
		if (s->state != ST_RELAY) {
			session_end(s, RS_CC_BROWSER_PROTOCOL, 1002,
				    "unexpected data during the RFB handshake");
			return;
		}
		relay_to_target(s, buf, data + n, len - (size_t)n);
	}
}

static void on_handshake_timeout(struct rs_timer *t)
{
	struct session *s = rs_container_of(t, struct session, timer);

	if (s->state != ST_HANDSHAKE)
		return;
	if (s->hs && !s->hs->up_ready && !s->hs->up_failed) {
		fail_upstream(s, RS_CC_HANDSHAKE_TIMEOUT,
			      "the console target did not complete the VNC handshake in time");
		advance(s);
	}
	if (s->state == ST_HANDSHAKE)
		session_end(s, RS_CC_HANDSHAKE_TIMEOUT, 1011, "console handshake timed out");
}

/* --- browser leg --- */

#define TERM_MSG_MAX (256 * 1024) /* a large paste is one message */

/* Terminal sessions relay whole termproxy messages, each checked first. */
static void term_chunk(struct session *s, uint8_t *data, size_t len, bool fin)
{
	struct rs_tp_msg m;
	uint8_t *msg = data;
	size_t n = len;

	if (!fin || s->tmsg_len) {
		uint8_t *p = s->tmsg_len + len <= TERM_MSG_MAX ? realloc(s->tmsg, s->tmsg_len + len)
							       : NULL;

		if (!p) {
			session_end(s, RS_CC_BROWSER_PROTOCOL, 1009, "terminal message too large");
			return;
		}
		memcpy(p + s->tmsg_len, data, len);
		s->tmsg = p;
		s->tmsg_len += len;
		if (!fin)
			return;
		msg = s->tmsg;
		n = s->tmsg_len;
	}
	if (rs_termproxy_check(msg, n, &m))
		session_end(s, RS_CC_BROWSER_PROTOCOL, 1008, "malformed terminal message");
	else if (!view_only_drops_term(s, &m))
		browser_payload(s, NULL, msg, n);
	free(s->tmsg);
	s->tmsg = NULL;
	s->tmsg_len = 0;
}

/* Send the pong owed to the browser, if any. */
static void flush_pong(struct session *s)
{
	uint8_t frame[RS_WS_MAX_PONG_FRAME];
	size_t n;

	if (!s->pong)
		return;
	n = rs_ws_pong_take(s->pong, frame, NULL);
	free(s->pong);
	s->pong = NULL;
	if (n && !s->close_sent && rs_conn_send(s->br, frame, n))
		session_end(s, RS_CC_NOMEM, 1011, "out of memory");
}

static bool detach(struct session *s);
static void close_conn_with(struct rs_conn *c, uint16_t code, const char *reason);

static void br_data_bytes(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	struct rs_conn *br = s->br;

	/* A close frame may detach the browser (resume): stop at once then. */
	while (len && s->state != ST_CLOSING && s->br == br && br) {
		struct rs_ws_event ev;
		int n = rs_ws_parse(&s->ws, data, len, &ev);

		if (n < 0) {
			session_end(s, RS_CC_BROWSER_PROTOCOL, 1002, "WebSocket protocol error");
			return;
		}
		data += n;
		len -= (size_t)n;
		switch (ev.type) {
		case RS_WS_EV_DATA:
			if (s->term)
				term_chunk(s, (uint8_t *)ev.data, ev.len, ev.fin);
			else
				browser_payload(s, buf, (uint8_t *)ev.data, ev.len);
			break;
		case RS_WS_EV_PING:
			/* Pongs obey the browser's backpressure like data: a
			 * browser that pings and never reads is owed one pong
			 * (the latest) and is not read until it drains. */
			if (!s->pong && !(s->pong = calloc(1, sizeof(*s->pong)))) {
				session_end(s, RS_CC_NOMEM, 1011, "out of memory");
				return;
			}
			rs_ws_pong_hold(s->pong, ev.data, ev.len);
			if (rs_conn_congested(s->br)) {
				s->pong_paused = true;
				rs_conn_pause(s->br);
			} else {
				flush_pong(s);
			}
			break;
		case RS_WS_EV_CLOSE:
			/* A page going away (reload: 1001) may come back within the
			 * grace; 1000 is the page ending the console on purpose. */
			if (ev.close_code != 1000 && detach(s)) {
				close_conn_with(br, ev.close_code == 1005 ? 0 : ev.close_code, "");
				return;
			}
			/* Echo the browser's code; with none, answer with an empty close. */
			session_end(s, RS_CC_BROWSER_CLOSED,
				    ev.close_code == 1005 ? 0 : ev.close_code, "");
			break;
		case RS_WS_EV_ERROR:
			session_end(s, RS_CC_BROWSER_PROTOCOL, ev.close_code, ev.error);
			break;
		default:
			break;
		}
		if (!n && ev.type == RS_WS_EV_NONE)
			break;
	}
}

static void br_on_data(struct rs_conn *c, struct rs_buf *buf, uint8_t *data, size_t len)
{
	br_data_bytes(rs_conn_ctx(c), buf, data, len);
}

static void br_on_eof(struct rs_conn *c)
{
	struct session *s = rs_conn_ctx(c);

	if (!detach(s))
		session_end(s, RS_CC_BROWSER_CLOSED, 0, NULL);
	rs_conn_close(c, RS_CLOSE_PEER_EOF, 0);
}

static void br_on_drain(struct rs_conn *c)
{
	struct session *s = rs_conn_ctx(c);

	if (s->state == ST_CLOSING)
		return;
	flush_pong(s);
	if (s->state == ST_CLOSING)
		return;
	if (s->pve)
		rs_pve_up_resume(s->pve);
	else if (s->up)
		rs_conn_resume(s->up);
	/* Reads stopped for an owed pong restart here, unless the target
	 * still holds them back (its drain restarts them then). */
	if (s->pong_paused && !up_congested(s)) {
		s->pong_paused = false;
		rs_conn_resume(c);
	}
}

static void br_on_stop(struct rs_conn *c)
{
	(void)c; /* consoles run on until the drain deadline */
}

static void br_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct session *s = rs_conn_ctx(c);

	(void)err;
	/* A reset or a broken network: the browser's reference moves to the
	 * waiting console (its on_close no longer reaches us). */
	if (why != RS_CLOSE_SHUTDOWN && why != RS_CLOSE_NOMEM && detach(s))
		return;
	session_end(s, why == RS_CLOSE_SHUTDOWN ? RS_CC_KILLED : RS_CC_BROWSER_CLOSED, 0, NULL);
	rs_timer_unlink(rs_worker_timers(rs_conn_worker(c)), &s->timer);
	s->br = NULL;
	session_unref(s);
}

static const struct rs_conn_ops browser_ops = {
	.on_data = br_on_data,
	.on_eof = br_on_eof,
	.on_drain = br_on_drain,
	.on_stop = br_on_stop,
	.on_close = br_on_close,
};

/* --- resume: detach and attach (console.resume_grace_s) --- */

static void start_target(struct session *s, struct rs_worker *w);
static void drop_upstream(struct session *s);

/* A browser connection its console let go of (replaced, or dropped while the
 * console waits): it only finishes closing; input is discarded. */
static void orphan_on_data(struct rs_conn *c, struct rs_buf *b, uint8_t *d, size_t n)
{
	(void)c, (void)b, (void)d, (void)n;
}

static void orphan_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	(void)c, (void)why, (void)err;
}

static const struct rs_conn_ops orphan_ops = {
	.on_data = orphan_on_data,
	.on_close = orphan_on_close,
};

/* A close frame with <code> (0: none) to a connection no session owns. */
static void close_conn_with(struct rs_conn *c, uint16_t code, const char *reason)
{
	uint8_t payload[125], hdr[14];
	size_t n = code && rs_ws_close_code_sendable(code) ? rs_ws_close_payload(payload, code, reason)
							   : 0;
	size_t hlen = rs_ws_frame_header(hdr, RS_WS_OP_CLOSE, true, n, NULL);

	if (rs_conn_send(c, hdr, hlen) || (n && rs_conn_send(c, payload, n)))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
	else
		rs_conn_close_after_send(c);
}

static void on_grace_expired(struct rs_timer *t)
{
	struct session *s = rs_container_of(t, struct session, timer);

	if (!s->detached)
		return;
	CW_ADD(s->cw, resumes[RS_RESUME_EXPIRED], 1);
	session_end(s, RS_CC_RESUME_EXPIRED, 0, NULL);
	session_unref(s); /* the waiting console's reference */
}

/* The browser leg of a resumable, relaying console dropped: keep the console
 * for the grace instead of ending it. The browser connection's reference to
 * the session becomes the waiting console's (a resuming browser takes it
 * over); the caller closes that connection, whose callbacks no longer reach
 * the session. False: not resumable, the caller ends the session. */
static bool detach(struct session *s)
{
	struct rs_worker *w = s->w;
	unsigned grace = s->env->cfg->resume_grace_s;

	if (!s->re || !s->br || !grace || s->state != ST_RELAY || rs_worker_stopping(w) ||
	    atomic_load(s->env->draining))
		return false;
	rs_conn_set_ops(s->br, &orphan_ops, NULL);
	s->br = NULL;
	s->detached = true;
	CW_ADD(s->cw, detached, 1);
	rs_timer_unlink(rs_worker_timers(w), &s->timer);
	s->timer.cb = on_grace_expired;
	rs_timer_link(rs_worker_timers(w), &s->timer, rs_worker_now(w) + (uint64_t)grace * 1000);
	if (s->term || (s->srv && s->keep_up)) {
		/* The shell lives on (its output is dropped meanwhile); an RFB
		 * upstream stays authenticated, its messages dropped at their
		 * boundaries until a resumed browser is live. The gone browser's
		 * backpressure must not stall either. */
		s->live = false;
		s->init_replayed = false;
		if (s->pve)
			rs_pve_up_resume(s->pve);
		else if (s->up)
			rs_conn_resume(s->up);
	} else {
		drop_upstream(s);
	}
	rs_info("console", "console.detached token=%s grace_s=%u", s->tokhash, grace);
	return true;
}

/* An RFB console without a browser whose stream cannot be framed: the
 * upstream is closed now and reopened when a browser resumes, which then
 * gets a fresh handshake and a full frame. */
static void drop_upstream(struct session *s)
{
	CW_ADD(s->cw, active, (uint64_t)-1);
	CW_ADD(s->cw, active_kind[s->spec->kind], (uint64_t)-1);
	if (s->cl >= 0)
		CW_ADD(s->cw, cl_active[s->cl], (uint64_t)-1);
	observe_duration(s->cw, rs_worker_now(s->w) - s->relay_ms);
	pthread_mutex_lock(&s->cw->lock);
	s->state = ST_DETACHED;
	pthread_mutex_unlock(&s->cw->lock);
	s->keep_up = false;
	if (s->up) {
		rs_conn_close(s->up, RS_CLOSE_NORMAL, 0); /* its on_close drops its ref */
		s->up = NULL;
	}
	put_src(s); /* the next upstream takes a pair of its own */
	if (s->pve) {
		rs_pve_up_close(s->pve);
		s->pve = NULL;
		s->refs--; /* the upstream's reference: it calls nothing any more */
	}
}

/* An RFB console taken up again: a new upstream, the handshake as at the
 * first upgrade (noVNC then asks for a full frame). */
static void reopen(struct session *s)
{
	struct rs_rfb_out rout = {0};

	s->hs = calloc(1, sizeof(*s->hs));
	if (!s->hs) {
		session_end(s, RS_CC_NOMEM, 1011, "out of memory");
		return;
	}
	s->reopened = true;
	free(s->srv); /* a new upstream: enter_relay frames it from its ServerInit */
	s->srv = NULL;
	s->keep_up = false;
	pthread_mutex_lock(&s->cw->lock);
	s->state = ST_HANDSHAKE;
	pthread_mutex_unlock(&s->cw->lock);
	s->t_upgrade_ns = rs_now_ns();
	s->t_connected_ns = 0;
	rs_rfb_server_init(&s->hs->srv);
	rs_rfb_client_init(&s->hs->cli, s->spec->password);
	rs_rfb_msgs_init(&s->msgs, &(struct rs_rfb_msgs_limits){
					   .max_cut_text = s->env->cfg->rfb_max_cut_text,
					   .max_encodings = s->env->cfg->rfb_max_encodings,
				   });
	s->timer.cb = on_handshake_timeout;
	rs_timer_link(rs_worker_timers(s->w), &s->timer,
		      rs_worker_now(s->w) + s->env->cfg->handshake_timeout_ms);
	rs_rfb_server_start(&s->hs->srv, &rout);
	send_rfb_out(s, &rout);
	if (s->state == ST_CLOSING)
		return;
	start_target(s, s->w);
	advance(s);
}

/* A browser's resume request, from the upgrade to the console's worker. */
struct attach_req {
	uint8_t key[SHA256_DIGEST_LENGTH], secret[SHA256_DIGEST_LENGTH];
	char resp[512]; /* the 101, sent by the console's worker */
	char client[48], user_agent[160];
	uint8_t *rest; /* bytes after the upgrade request */
	size_t rest_len;
};

static void attach_req_free(struct attach_req *a)
{
	free(a->rest);
	explicit_bzero(a, sizeof(*a));
	free(a);
}

static const char RESP_GONE[] = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
				"Content-Length: 51\r\nConnection: close\r\n\r\n"
				"this console link has expired or was already used\n";
static const char RESP_BUSY[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
				"Retry-After: 1\r\nContent-Length: 42\r\nConnection: close\r\n\r\n"
				"this console is reconnecting; try again\n\n";

/* On the console's worker: <c> (upgraded, nothing sent yet) takes the
 * console up — after a drop, or replacing the browser holding it. */
static void attach(struct console_worker *cw, struct rs_conn *c, struct attach_req *a,
		   const uint8_t *carry, size_t carry_len)
{
	struct rs_worker *w = rs_conn_worker(c);
	struct resume_entry *e;
	struct session *s = NULL;
	enum rs_resume_outcome outcome;

	pthread_mutex_lock(&reg_lock);
	e = reg_find_locked(a->key);
	if (e && e->w == w && !CRYPTO_memcmp(e->secret, a->secret, sizeof(e->secret)))
		s = e->s;
	pthread_mutex_unlock(&reg_lock);
	if (!s || (s->state != ST_RELAY && s->state != ST_DETACHED)) {
		/* Ended meanwhile, or an RFB console still reopening (retry). */
		CW_ADD(cw, resumes[RS_RESUME_FAILED], 1);
		if (rs_conn_send_static(c, s ? RESP_BUSY : RESP_GONE,
					s ? sizeof(RESP_BUSY) - 1 : sizeof(RESP_GONE) - 1))
			rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
		else
			rs_conn_close_after_send(c);
		return;
	}
	if (rs_conn_send(c, a->resp, strlen(a->resp))) {
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
		return;
	}
	if (s->br) {
		/* One browser at a time: the newer one wins, the older one is
		 * told why (the page does not reconnect on 4001). Its reference
		 * passes to <c>. */
		struct rs_conn *old = s->br;

		outcome = RS_RESUME_REPLACED;
		rs_conn_set_ops(old, &orphan_ops, NULL);
		if (!s->close_sent)
			close_conn_with(old, 4001, "replaced by another window");
	} else {
		outcome = RS_RESUME_RESUMED;
		s->detached = false;
		CW_ADD(cw, detached, (uint64_t)-1);
	}
	s->br = c;
	s->close_sent = false;
	s->pong_paused = false;
	free(s->pong);
	s->pong = NULL;
	free(s->tmsg);
	s->tmsg = NULL;
	s->tmsg_len = 0;
	rs_ws_parser_init(&s->ws, true, s->env->cfg->ws_max_frame, s->env->cfg->ws_max_message);
	rs_conn_set_ops(c, &browser_ops, s);
	pthread_mutex_lock(&cw->lock);
	s->id = rs_conn_id(c);
	pthread_mutex_unlock(&cw->lock);
	snprintf(s->client, sizeof(s->client), "%s", a->client);
	snprintf(s->user_agent, sizeof(s->user_agent), "%s", a->user_agent);
	rs_timer_unlink(rs_worker_timers(w), &s->timer);
	CW_ADD(cw, resumes[outcome], 1);
	rs_info("console", "console.resumed token=%s outcome=%s", s->tokhash,
		rs_resume_outcome_names[outcome]);
	emit_as(s, RS_CEV_RESUMED, rs_worker_now(w), rs_resume_outcome_names[outcome]);
	if (s->state == ST_DETACHED) {
		reopen(s);
	} else {
		s->last_activity_ms = rs_worker_now(w);
		if (s->env->cfg->session_idle_timeout_s) {
			s->timer.cb = on_idle_check;
			rs_timer_link(rs_worker_timers(w), &s->timer,
				      s->last_activity_ms +
					      (uint64_t)s->env->cfg->session_idle_timeout_s * 1000);
		}
		if (s->pve)
			rs_pve_up_resume(s->pve);
		else if (s->up)
			rs_conn_resume(s->up);
		if (!s->term && s->srv && s->keep_up) {
			/* Same upstream: ringside answers the new browser's
			 * handshake and replays ServerInit from its cache. */
			struct rs_rfb_out rout = {0};

			/* A window that dropped or was replaced mid-handshake
			 * left its state: start over in it. */
			if (!s->hs)
				s->hs = calloc(1, sizeof(*s->hs));
			if (!s->hs) {
				session_end(s, RS_CC_NOMEM, 1011, "out of memory");
				return;
			}
			memset(s->hs, 0, sizeof(*s->hs));
			s->live = false;
			s->init_replayed = false;
			s->replay_init = true;
			s->rehs = true;
			rs_rfb_server_init(&s->hs->srv);
			rs_rfb_msgs_init(&s->msgs, &(struct rs_rfb_msgs_limits){
							   .max_cut_text = s->env->cfg->rfb_max_cut_text,
							   .max_encodings = s->env->cfg->rfb_max_encodings,
						   });
			rs_rfb_server_start(&s->hs->srv, &rout);
			send_rfb_out(s, &rout);
		} else if (outcome == RS_RESUME_REPLACED && !s->term) {
			/* The new page's RFB handshake needs a new upstream too. */
			CW_ADD(s->cw, active, (uint64_t)-1);
			CW_ADD(s->cw, active_kind[s->spec->kind], (uint64_t)-1);
			if (s->cl >= 0)
				CW_ADD(s->cw, cl_active[s->cl], (uint64_t)-1);
			if (s->up) {
				rs_conn_close(s->up, RS_CLOSE_NORMAL, 0);
				s->up = NULL;
			}
			put_src(s);
			if (s->pve) {
				rs_pve_up_close(s->pve);
				s->pve = NULL;
				s->refs--;
			}
			reopen(s);
		}
	}
	if (a->rest_len && s->state != ST_CLOSING && s->br == c)
		br_data_bytes(s, NULL, a->rest, a->rest_len);
	if (carry_len && s->state != ST_CLOSING && s->br == c)
		br_data_bytes(s, NULL, (uint8_t *)carry, carry_len);
}

static void adopt_browser(struct rs_conn *nc, const uint8_t *carry, size_t len, void *arg)
{
	struct attach_req *a = arg;

	if (nc)
		attach(cw_of(rs_conn_worker(nc)), nc, a, carry, len);
	attach_req_free(a);
}

static void handoff_failed(struct rs_worker *from, int err, void *arg)
{
	(void)err;
	CW_ADD(cw_of(from), resumes[RS_RESUME_FAILED], 1);
	attach_req_free(arg);
}

/* --- target leg --- */

/* Relay target bytes to the browser (one WebSocket message). */
static void to_browser(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	uint8_t hdr[14];
	size_t hlen = rs_ws_frame_header(hdr, RS_WS_OP_BINARY, true, len, NULL);

	/* The engine already closes the browser leg (a reset): its on_close
	 * decides between detaching and ending; its bytes are lost either way. */
	if (rs_conn_closing(s->br))
		return;
	if (rs_conn_send(s->br, hdr, hlen) ||
	    (buf ? rs_conn_send_buf(s->br, buf, data, len) : rs_conn_send(s->br, data, len))) {
		session_end(s, RS_CC_NOMEM, 1011, "out of memory");
		return;
	}
	CW_ADD(s->cw, bytes_to_browser, len);
	s->to_browser += len;
	s->last_activity_ms = rs_worker_now(s->w);
	if (rs_conn_congested(s->br))
		up_pause(s);
}

/* A resumable RFB console's target stream: framed message by message;
 * what arrives while no browser is live (detached, or a resumed one before
 * its ServerInit and the next boundary) is dropped at message boundaries. */
static void target_rfb(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	uint8_t *run = data;
	size_t run_len = 0;

	while (len) {
		bool at_end, fwd = s->live && s->br;
		int n = rs_rfb_srv_feed(s->srv, data, len, &at_end);

		if (n < 0) {
			/* Not framable (an encoding the browser was not allowed
			 * to ask for): no longer resumable over this upstream. */
			rs_info("console", "token=%s resume: %s; a resume reopens the upstream",
				s->tokhash, s->srv->error);
			s->keep_up = false;
			if (run_len)
				to_browser(s, buf, run, run_len);
			if (s->state != ST_RELAY)
				return;
			if (!s->br)
				drop_upstream(s); /* detached: reopened on resume */
			else if (!s->live)
				session_end(s, RS_CC_TARGET_PROTOCOL, 1011,
					    "the console could not be resumed");
			else
				to_browser(s, buf, data, len);
			return;
		}
		if (fwd) {
			if (!run_len)
				run = data;
			run_len += (size_t)n;
		} else if (run_len) {
			to_browser(s, buf, run, run_len);
			run_len = 0;
			if (s->state != ST_RELAY)
				return;
		}
		data += n;
		len -= (size_t)n;
		s->at_boundary = at_end;
		if (at_end && !s->live && s->init_replayed && s->br)
			s->live = true;
	}
	if (run_len)
		to_browser(s, buf, run, run_len);
}

/* Bytes from the target (TCP) or the Proxmox console (unwrapped). */
static void target_bytes(struct session *s, struct rs_buf *buf, uint8_t *data, size_t len)
{
	struct rs_rfb_out out = {0};
	uint8_t hdr[14];
	size_t hlen;
	int n;

	if (s->state == ST_RELAY && s->srv && s->keep_up) {
		target_rfb(s, buf, data, len);
		return;
	}
	if (s->state == ST_RELAY && !s->br) {
		/* A terminal waiting for its browser: output is dropped (the
		 * shell lives on; a resumed xterm.js starts from a blank screen). */
		return;
	}
	if (s->state == ST_RELAY && s->re && rs_conn_closing(s->br))
		return; /* a reset browser leg of a resumable console: see to_browser */
	if (s->state == ST_RELAY) {
		hlen = rs_ws_frame_header(hdr, RS_WS_OP_BINARY, true, len, NULL);
		if (rs_conn_send(s->br, hdr, hlen) ||
		    (buf ? rs_conn_send_buf(s->br, buf, data, len) : rs_conn_send(s->br, data, len))) {
			session_end(s, RS_CC_NOMEM, 1011, "out of memory");
			return;
		}
		CW_ADD(s->cw, bytes_to_browser, len);
		s->to_browser += len;
		s->last_activity_ms = rs_worker_now(s->w);
		if (rs_conn_congested(s->br))
			up_pause(s);
		return;
	}
	if (s->state != ST_HANDSHAKE || !s->hs || s->hs->up_ready || s->hs->up_failed)
		return;
	n = rs_rfb_client_feed(&s->hs->cli, data, len, &out);
	if (n < 0) {
		char reason[200];
		bool auth = rs_rfb_client_auth_failed(&s->hs->cli);

		/* The target chose part of it: cut at a whole character, logged quoted. */
		rs_text_sanitize(reason, sizeof(reason), s->hs->cli.error, strlen(s->hs->cli.error));
		/* Proxmox: another client's vncproxy may have reset the VM's VNC
		 * password; the upstream tries once more and on_ready follows. */
		if (auth && s->pve && rs_pve_up_retry_auth(s->pve))
			return;
		rs_warn("console", "token=%s target %s:%u: reason=%s", s->tokhash,
			s->spec->host ? s->spec->host : "pve", s->spec->port, rs_log_q(reason));
		fail_upstream(s, auth ? RS_CC_TARGET_AUTH : RS_CC_TARGET_PROTOCOL, reason);
		advance(s);
		return;
	}
	if (out.len && up_send(s, NULL, out.buf, out.len)) {
		session_end(s, RS_CC_NOMEM, 1011, "out of memory");
		return;
	}
	if (rs_rfb_client_done(&s->hs->cli)) {
		if (s->pve)
			rs_pve_up_auth_done(s->pve);
		if ((size_t)n < len) {
			fail_upstream(s, RS_CC_TARGET_PROTOCOL,
				      "the console target sent data before the client init");
		} else {
			s->hs->up_ready = true;
		}
		advance(s);
	}
}

static void up_on_data(struct rs_conn *c, struct rs_buf *buf, uint8_t *data, size_t len)
{
	target_bytes(rs_conn_ctx(c), buf, data, len);
}

static void up_on_connect(struct rs_conn *c, int res)
{
	struct session *s = rs_conn_ctx(c);
	char reason[160];

	if (!res) {
		s->t_connected_ns = rs_now_ns();
		observe_setup(s->cw, RS_STAGE_CONNECT, (s->t_connected_ns - s->t_upgrade_ns) / 1000);
		return; /* the target speaks first (RFB version) */
	}
	snprintf(reason, sizeof(reason), "could not connect to the console target: %s",
		 res == -ETIMEDOUT ? "connection timed out" : strerror(-res));
	fail_upstream(s,
		      res == -ECONNREFUSED ? RS_CC_CONNECT_REFUSED
		      : res == -ETIMEDOUT  ? RS_CC_CONNECT_TIMEOUT
					   : RS_CC_CONNECT_ERROR,
		      reason);
	rs_conn_close(c, RS_CLOSE_ERROR, -res);
	advance(s);
}

static void up_on_eof(struct rs_conn *c)
{
	struct session *s = rs_conn_ctx(c);

	if (s->state == ST_HANDSHAKE) {
		fail_upstream(s, RS_CC_TARGET_PROTOCOL,
			      "the console target closed the connection during the handshake");
		advance(s);
		return;
	}
	session_end(s, RS_CC_TARGET_CLOSED, 1000, "the console target closed the connection");
}

static void up_on_drain(struct rs_conn *c)
{
	struct session *s = rs_conn_ctx(c);

	if (s->br && s->state != ST_CLOSING)
		rs_conn_resume(s->br);
}

static void up_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	struct session *s = rs_conn_ctx(c);
	char reason[120];

	if (s->up != c) {
		/* An upstream a resume gave up (detach, or a second window):
		 * its pair went back then; the session may already hold a new
		 * upstream, whose handshake this must not fail. */
		session_unref(s);
		return;
	}
	s->up = NULL;
	/* The pair is free once its socket is gone, not when the session is. */
	put_src(s);
	if (s->state == ST_HANDSHAKE) {
		snprintf(reason, sizeof(reason), "connection to the console target lost: %s",
			 err ? strerror(err) : "closed");
		fail_upstream(s, RS_CC_TARGET_RESET, reason);
		advance(s);
	} else if (s->state == ST_RELAY) {
		snprintf(reason, sizeof(reason), "connection to the console target lost: %s",
			 err ? strerror(err) : "closed");
		session_end(s, why == RS_CLOSE_SHUTDOWN ? RS_CC_KILLED : RS_CC_TARGET_RESET, 1011,
			    reason);
	}
	session_unref(s);
}

static const struct rs_conn_ops target_ops = {
	.on_data = up_on_data,
	.on_eof = up_on_eof,
	.on_drain = up_on_drain,
	.on_connect = up_on_connect,
	.on_close = up_on_close,
};

static int target_addr(const struct rs_console_spec *spec, struct sockaddr_storage *ss,
		       socklen_t *len)
{
	const char *h = !strcmp(spec->host, "localhost") ? "127.0.0.1" : spec->host;

	if (rs_parse_ip(h, strlen(h), ss))
		return -EINVAL;
	if (ss->ss_family == AF_INET) {
		((struct sockaddr_in *)ss)->sin_port = htons(spec->port);
		*len = sizeof(struct sockaddr_in);
	} else {
		((struct sockaddr_in6 *)ss)->sin6_port = htons(spec->port);
		*len = sizeof(struct sockaddr_in6);
	}
	return 0;
}

/* --- Proxmox upstream callbacks --- */

static void pve_on_ready(void *arg, const char *vnc_password)
{
	struct session *s = arg;

	s->t_connected_ns = rs_now_ns();
	observe_setup(s->cw, RS_STAGE_UPSTREAM_API, (s->t_connected_ns - s->t_upgrade_ns) / 1000);
	if (s->state != ST_HANDSHAKE || !s->hs)
		return;
	if (s->term) {
		s->hs->up_ready = true;
		enter_relay(s);
		return;
	}
	/* The VNC password exists only now (vncproxy made it). */
	rs_rfb_client_release(&s->hs->cli);
	rs_rfb_client_init(&s->hs->cli, vnc_password);
}

static void pve_on_data(void *arg, struct rs_buf *b, uint8_t *data, size_t len)
{
	target_bytes(arg, b, data, len);
}

static void pve_on_drain(void *arg)
{
	struct session *s = arg;

	if (s->br && s->state != ST_CLOSING)
		rs_conn_resume(s->br);
}

static void pve_on_end(void *arg, enum rs_console_cause cause, const char *reason)
{
	struct session *s = arg;
	bool waiting = s->detached;

	s->pve = NULL;
	if (s->state == ST_HANDSHAKE && !s->term) {
		fail_upstream(s, cause, reason);
		advance(s);
	} else if (s->state != ST_CLOSING) {
		/* pveproxy never sends a close frame: its end is the normal end. */
		session_end(s, cause, cause == RS_CC_TARGET_CLOSED ? 1000 : 4000 + (uint16_t)cause,
			    reason);
	}
	if (waiting) /* the waiting console's reference: no browser will take it up */
		session_unref(s);
	session_unref(s);
}

static const struct rs_pve_up_ops pve_ops = {
	.on_ready = pve_on_ready,
	.on_data = pve_on_data,
	.on_drain = pve_on_drain,
	.on_end = pve_on_end,
};

/* Open the target connection now, at upgrade time: console listeners and
 * tickets are short-lived, so nothing upstream happens at token creation. */
static void start_target(struct session *s, struct rs_worker *w)
{
	struct sockaddr_storage dst;
	socklen_t dlen, slen = 0;
	int ret;

	if (s->spec->kind != RS_CONSOLE_VNC) {
		s->refs++; /* held by the upstream until its on_end */
		struct rs_portpool *pool = s->cl >= 0 && s->cl < RS_MAX_CLUSTERS && s->cw->cl_ports[s->cl]
						   ? s->cw->cl_ports[s->cl]
						   : s->cw->ports;

		if (rs_pve_up_open(s->env->pve, w, s->spec, s->env->cfg->handshake_timeout_ms, pool,
				   &pve_ops, s, &s->pve)) {
			s->refs--;
			s->pve = NULL;
			fail_upstream(s, RS_CC_UPSTREAM_UNAVAILABLE,
				      "this console's Proxmox cluster is not configured");
		}
		return;
	}
	if (target_addr(s->spec, &dst, &dlen)) {
		fail_upstream(s, RS_CC_CONNECT_ERROR, "invalid console target address");
		return;
	}
	if (s->cw->ports) {
		struct sockaddr_storage ss;

		if (rs_portpool_get(s->cw->ports, &ss)) {
			fail_upstream(s, RS_CC_PORTS_EXHAUSTED,
				      "no free source port for the console target; try again later");
			return;
		}
		s->have_src = true;
		slen = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						: sizeof(struct sockaddr_in);
		memcpy(&s->src, &ss, slen);
	}
	ret = rs_conn_connect(w, (struct sockaddr *)&dst, dlen,
			      s->have_src ? (struct sockaddr *)&s->src : NULL, slen,
			      s->env->cfg->connect_timeout_ms, &target_ops, s, &s->up);
	if (ret) {
		char reason[160];

		snprintf(reason, sizeof(reason), "could not connect to the console target: %s",
			 strerror(-ret));
		s->up = NULL;
		put_src(s);
		fail_upstream(s, ret == -EADDRINUSE || ret == -EADDRNOTAVAIL ? RS_CC_PORTS_EXHAUSTED
									      : RS_CC_CONNECT_ERROR,
			      reason);
		return;
	}
	s->refs++;
}

/* --- the upgrade --- */

static const char *hval(const struct rs_http_req *req, const char *name, char *buf, size_t cap)
{
	const struct rs_http_header *h = rs_http_req_header(req, name);

	if (!h)
		return NULL;
	snprintf(buf, cap, "%.*s", (int)RS_MIN(h->value_len, cap - 1), h->value);
	return buf;
}

static void refuse(struct rs_http_conn *hc, struct console_worker *cw, enum rs_console_cause cc,
		   int status, const char *code, const char *msg, const char *extra)
{
	CW_ADD(cw, causes[cc], 1);
	rs_http_respond_error(hc, status, code, msg, extra);
}

/* Copy a header value for the audit log: bounded, printable ASCII only. */
static void copy_printable(char *dst, size_t cap, const struct rs_http_header *h)
{
	size_t n = 0;

	for (size_t i = 0; h && i < h->value_len && n + 1 < cap; i++)
		dst[n++] = h->value[i] >= 0x20 && h->value[i] < 0x7f ? h->value[i] : '?';
	dst[n] = 0;
}

static void audit_rejected(const struct rs_console_env *env, const struct sockaddr *from,
			   const struct rs_http_req *req, const char *tokhash,
			   enum rs_console_cause cc)
{
	struct rs_console_event ev = {.type = RS_CEV_REJECTED, .token_hash = tokhash,
				      .api_key = "", .label = "", .target_host = "",
				      .cause = rs_console_cause_names[cc]};
	char client[48], ua[160];

	if (!env->on_event)
		return;
	rs_addr_str(from, client, sizeof(client));
	copy_printable(ua, sizeof(ua), rs_http_req_header(req, "User-Agent"));
	ev.client = client;
	ev.user_agent = ua;
	env->on_event(env->event_arg, &ev);
}

/* What an upgrade brings for a resume: the page's secret (hashed), the
 * token's registry key and the 101 to answer with. Secrets: wiped. */
struct resume_ask {
	bool resumable;
	uint8_t tkey[SHA256_DIGEST_LENGTH], secret[SHA256_DIGEST_LENGTH];
	char resp[512];
};

/* A WebSocket upgrade waiting for the fleet store (GETDEL). */
struct pending_upgrade {
	const struct rs_console_env *env;
	struct rs_http_conn *hc;
	const struct rs_http_req *req;
	struct rs_ws_handshake_out out;
	struct sockaddr_storage client;
	uint8_t raw[16];
	uint64_t t0;
	struct resume_ask ra;
	struct rs_store_op *op;
};

static void upgrade_with(const struct rs_console_env *env, struct rs_http_conn *hc,
			 const struct rs_http_req *req, const struct rs_ws_handshake_out *hout,
			 const struct sockaddr_storage *clientp, uint8_t raw[16], uint64_t t0,
			 const struct resume_ask *ra, int ret, struct rs_console_spec *spec);

static void on_consumed(void *arg, int err, struct rs_console_spec *spec,
			enum rs_console_kind kind)
{
	struct pending_upgrade *pu = arg;
	struct rs_http_conn *hc = pu->hc;

	(void)kind;
	upgrade_with(pu->env, hc, pu->req, &pu->out, &pu->client, pu->raw, pu->t0, &pu->ra, err,
		     spec);
	explicit_bzero(pu, sizeof(*pu));
	free(pu);
	rs_http_resume(hc);
}

/* The browser went away while the store was asked: the link may be spent
 * (GETDEL sent), never handed out twice. */
static void upgrade_gone(void *arg)
{
	struct pending_upgrade *pu = arg;

	rs_store_cancel(pu->op);
	explicit_bzero(pu, sizeof(*pu));
	free(pu);
}

static void closing_on_data(struct rs_conn *c, struct rs_buf *buf, uint8_t *data, size_t len)
{
	(void)c;
	(void)buf;
	(void)data;
	(void)len;
}

static void closing_on_close(struct rs_conn *c, enum rs_close_reason why, int err)
{
	(void)c;
	(void)why;
	(void)err;
}

static const struct rs_conn_ops closing_ops = {
	.on_data = closing_on_data,
	.on_close = closing_on_close,
};

/* The store cannot say whether the link is good: accept the WebSocket and
 * close it at once with 1013 (try again later) and a reason the console
 * page shows, rather than an HTTP error the browser hides. */
static void refuse_unavailable(struct rs_http_conn *hc, struct console_worker *cw,
			       const struct rs_ws_handshake_out *out)
{
	static const char reason[] = "console service temporarily unavailable; try again in a "
				     "moment";
	uint8_t frame[RS_WS_MAX_HEADER + RS_WS_MAX_CONTROL], payload[RS_WS_MAX_CONTROL], *rest;
	char resp[512];
	size_t n, h, rest_len;
	struct rs_conn *c;

	CW_ADD(cw, causes[RS_CC_STORE_UNAVAILABLE], 1);
	snprintf(resp, sizeof(resp),
		 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Accept: %s\r\n%s\r\n",
		 out->accept, out->echo_binary ? "Sec-WebSocket-Protocol: binary\r\n" : "");
	c = rs_http_upgrade(hc, resp, &rest, &rest_len);
	if (!c)
		return;
	free(rest);
	rs_conn_set_ops(c, &closing_ops, NULL);
	n = rs_ws_close_payload(payload, 1013, reason);
	h = rs_ws_frame_header(frame, RS_WS_OP_CLOSE, true, n, NULL);
	memcpy(frame + h, payload, n);
	if (rs_conn_send(c, frame, h + n))
		rs_conn_close(c, RS_CLOSE_NOMEM, ENOMEM);
	else
		rs_conn_close_after_send(c);
}

/* The token is spent: is it a resumable console, and does this browser hold
 * its secret? True when answered here (attached, moved to the console's
 * worker, or told to retry); false: refuse it like any used link. */
static bool try_resume(struct rs_http_conn *hc, const struct rs_http_req *req, const uint8_t key[SHA256_DIGEST_LENGTH],
		       const uint8_t secret[SHA256_DIGEST_LENGTH], const char *resp,
		       const struct sockaddr *client)
{
	struct rs_conn *c = rs_http_conn_conn(hc);
	struct rs_worker *self = rs_conn_worker(c), *w = NULL;
	struct console_worker *cw = cw_of(self);
	struct resume_entry *e;
	struct attach_req *a;
	bool ok = false, elsewhere = false;
	uint8_t from[16];
	int ret;

	addr16(client, from);
	pthread_mutex_lock(&reg_lock);
	e = reg_find_locked(key);
	if (e) {
		ok = !CRYPTO_memcmp(e->secret, secret, sizeof(e->secret));
		elsewhere = e->bound && memcmp(e->addr, from, sizeof(from));
		w = e->w;
	}
	pthread_mutex_unlock(&reg_lock);
	if (!e)
		return false;
	if (!ok) {
		/* A forwarded bare link (or a guess) stays a used link. */
		CW_ADD(cw, resumes[RS_RESUME_REFUSED], 1);
		return false;
	}
	if (elsewhere) {
		/* A link bound to one client address stays bound on resume. */
		CW_ADD(cw, resumes[RS_RESUME_REFUSED], 1);
		refuse(hc, cw, RS_CC_TOKEN_IP, 403, "token_bound",
		       "this console link belongs to another client address", NULL);
		return true;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		refuse(hc, cw, RS_CC_NOMEM, 503, "no_memory", "out of memory", NULL);
		return true;
	}
	memcpy(a->key, key, sizeof(a->key));
	memcpy(a->secret, secret, sizeof(a->secret));
	snprintf(a->resp, sizeof(a->resp), "%s", resp);
	rs_addr_str(client, a->client, sizeof(a->client));
	copy_printable(a->user_agent, sizeof(a->user_agent), rs_http_req_header(req, "User-Agent"));
	/* Upgrade without a byte: the console's worker sends the 101. */
	c = rs_http_upgrade(hc, "", &a->rest, &a->rest_len);
	if (!c) {
		attach_req_free(a);
		return true;
	}
	if (w == self) {
		attach(cw, c, a, NULL, 0);
		attach_req_free(a);
		return true;
	}
	ret = rs_conn_hand_off(c, w, adopt_browser, handoff_failed, a);
	if (ret) {
		CW_ADD(cw, resumes[RS_RESUME_FAILED], 1);
		attach_req_free(a);
		rs_conn_close(c, RS_CLOSE_ERROR, -ret);
		return true;
	}
	CW_ADD(cw, resume_handoffs, 1);
	return true;
}

void rs_console_upgrade(const struct rs_console_env *env, struct rs_http_conn *hc,
			const struct rs_http_req *req, const char *tok, size_t toklen)
{
	struct rs_conn *c = rs_http_conn_conn(hc);
	struct rs_worker *w = rs_conn_worker(c);
	struct console_worker *cw = cw_of(w);
	struct rs_ws_handshake_in in = {0};
	struct rs_ws_handshake_out out = {0};
	char upgrade[64], connection[128], key[64], version[16], protocol[256], origin[256];
	struct rs_console_spec *spec = NULL;
	struct pending_upgrade *pu;
	uint8_t raw[16];
	uint64_t t0 = rs_now_ns();
	struct sockaddr_storage client;
	struct resume_ask ra = {0};
	int ret;

	rs_http_client_addr(hc, req, &client);
	if (atomic_load(env->draining))
		return refuse(hc, cw, RS_CC_DRAINING, 503, "draining",
			      "this appliance is draining; open the console again", NULL);
	in.method = req->method_str;
	in.http_minor = req->minor;
	in.upgrade = hval(req, "Upgrade", upgrade, sizeof(upgrade));
	in.connection = hval(req, "Connection", connection, sizeof(connection));
	in.key = hval(req, "Sec-WebSocket-Key", key, sizeof(key));
	in.version = hval(req, "Sec-WebSocket-Version", version, sizeof(version));
	in.protocol = hval(req, "Sec-WebSocket-Protocol", protocol, sizeof(protocol));
	in.origin = hval(req, "Origin", origin, sizeof(origin));
	in.allowed_origins = (const char *const *)env->cfg->allowed_origins;
	in.n_allowed_origins = env->cfg->n_allowed_origins;
	if (rs_ws_handshake_check(&in, &out))
		return refuse(hc, cw, RS_CC_WS_HANDSHAKE, out.status, "bad_websocket_handshake",
			      out.error,
			      out.status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
	/* A resumable console is bound to SHA-256 of the page's secret. */
	snprintf(ra.resp, sizeof(ra.resp),
		 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Accept: %s\r\n%s\r\n",
		 out.accept, out.echo_binary ? "Sec-WebSocket-Protocol: binary\r\n" : "");
	ra.resumable = env->cfg->resume_grace_s && resume_secret(req, ra.secret);
	/* The upgrade is where the token is spent: exactly once, on any worker
	 * (and, with a fleet store, on any box). */
	ret = rs_token_parse(tok, toklen, raw);
	if (ret) {
		explicit_bzero(raw, sizeof(raw));
		upgrade_with(env, hc, req, &out, &client, raw, t0, &ra, ret, NULL);
		explicit_bzero(&ra, sizeof(ra));
		return;
	}
	token_key(raw, ra.tkey);
	pu = calloc(1, sizeof(*pu));
	if (!pu) {
		explicit_bzero(raw, sizeof(raw));
		explicit_bzero(&ra, sizeof(ra));
		return refuse(hc, cw, RS_CC_NOMEM, 503, "no_memory", "out of memory", NULL);
	}
	ret = rs_store_consume(env->store, w, raw, (struct sockaddr *)&client, &spec, on_consumed,
			       pu, &pu->op);
	if (ret == RS_STORE_PENDING) {
		/* Answered when the store has: the request stays valid meanwhile. */
		pu->env = env;
		pu->hc = hc;
		pu->req = req;
		pu->out = out;
		pu->client = client;
		memcpy(pu->raw, raw, sizeof(raw));
		pu->t0 = t0;
		pu->ra = ra;
		explicit_bzero(raw, sizeof(raw));
		explicit_bzero(&ra, sizeof(ra));
		rs_http_defer(hc, upgrade_gone, pu);
		return;
	}
	free(pu);
	upgrade_with(env, hc, req, &out, &client, raw, t0, &ra, ret, spec);
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(&ra, sizeof(ra));
}

/* The token's fate is known (<ret>, <spec>): resume, refuse, or open the
 * console. */
static void upgrade_with(const struct rs_console_env *env, struct rs_http_conn *hc,
			 const struct rs_http_req *req, const struct rs_ws_handshake_out *hout,
			 const struct sockaddr_storage *clientp, uint8_t raw[16], uint64_t t0,
			 const struct resume_ask *ra, int ret, struct rs_console_spec *spec)
{
	struct rs_conn *c = rs_http_conn_conn(hc);
	struct rs_worker *w = rs_conn_worker(c);
	struct console_worker *cw = cw_of(w);
	const struct rs_ws_handshake_out out = *hout;
	struct sockaddr_storage client = *clientp;
	struct session *s;
	uint8_t *rest = NULL;
	size_t rest_len = 0;
	struct rs_rfb_out rout = {0};

	/* A spent token may be a console waiting for its browser (a reload). */
	if (ret && ret != -EINVAL && ret != -EACCES && ret != -EAGAIN && ra->resumable &&
	    try_resume(hc, req, ra->tkey, ra->secret, ra->resp, (struct sockaddr *)&client))
		return;
	if (ret) {
		char hash[9] = "-";

		if (ret != -EINVAL)
			rs_log_hash(raw, 16, hash);
		if (ret == -EAGAIN) {
			audit_rejected(env, (struct sockaddr *)&client, req, hash,
				       RS_CC_STORE_UNAVAILABLE);
			return refuse_unavailable(hc, cw, &out);
		}
		audit_rejected(env, (struct sockaddr *)&client, req, hash,
			       ret == -EACCES ? RS_CC_TOKEN_IP : RS_CC_TOKEN_INVALID);
		if (ret == -EACCES)
			return refuse(hc, cw, RS_CC_TOKEN_IP, 403, "token_bound",
				      "this console link belongs to another client address", NULL);
		return refuse(hc, cw, RS_CC_TOKEN_INVALID, 404, "token_invalid",
			      "this console link has expired or was already used", NULL);
	}
	if (rs_store_fleet(env->store) && !spec->usage && env->key_usage)
		spec->usage = env->key_usage(env->key_usage_arg, spec->api_key_name);
	/* Per-key open-console limit, on the key's shared record (atomic, any
	 * worker; per box in a fleet). The link goes back into the store: it
	 * works once a console of that key has closed. */
	if (!rs_spec_open_console(spec)) {
		char hash[9];
		bool kept;

		rs_log_hash(raw, 16, hash);
		/* A fleet store takes <spec> whatever happens; the table only on success. */
		kept = !rs_store_return(env->store, w, raw, spec);
		if (!kept && !rs_store_fleet(env->store))
			rs_spec_free(spec);
		audit_rejected(env, (struct sockaddr *)&client, req, hash, RS_CC_KEY_CONSOLES);
		return refuse(hc, cw, RS_CC_KEY_CONSOLES, 429, "key_console_limit",
			      kept ? "too many consoles are open for this link's API key; close one "
				     "and open this link again"
				   : "too many consoles are open for this link's API key; close one "
				     "and open a new link",
			      NULL);
	}
	s = calloc(1, sizeof(*s));
	if (s)
		s->hs = calloc(1, sizeof(*s->hs));
	if (!s || !s->hs) {
		free(s);
		rs_spec_free(spec);
		return refuse(hc, cw, RS_CC_NOMEM, 503, "no_memory", "out of memory", NULL);
	}
	rs_log_hash(raw, 16, s->tokhash);
	s->cw = cw;
	s->w = w;
	s->env = env;
	s->spec = spec;
	s->cl = -1;
	if (ra->resumable) {
		/* Bound to SHA-256 of the page's secret: only this browser
		 * (tab) may take the console up again after a drop. */
		s->re = calloc(1, sizeof(*s->re));
		if (s->re) {
			memcpy(s->re->key, ra->tkey, sizeof(ra->tkey));
			memcpy(s->re->secret, ra->secret, sizeof(ra->secret));
			s->re->kind = spec->kind;
			s->re->view_only = spec->view_only;
			s->re->bound = spec->bind_ip;
			if (spec->bind_ip)
				addr16((const struct sockaddr *)&spec->client_ip, s->re->addr);
			s->re->w = w;
			s->re->s = s;
			reg_add(s->re);
		}
	}
	if (spec->kind != RS_CONSOLE_VNC) {
		s->cl = RS_MAX_CLUSTERS;
		for (size_t i = 0; spec->cluster && i < env->cfg->n_clusters && i < RS_MAX_CLUSTERS; i++)
			if (!strcmp(env->cfg->clusters[i].name, spec->cluster))
				s->cl = (int)i;
	}
	s->refs = 1;
	s->created_s = rs_wall_s();
	pthread_mutex_lock(&cw->lock);
	s->next = cw->sessions;
	if (cw->sessions)
		cw->sessions->prev = s;
	cw->sessions = s;
	pthread_mutex_unlock(&cw->lock);
	s->opened_ms = rs_worker_now(w);
	s->t_upgrade_ns = rs_now_ns();
	observe_setup(cw, RS_STAGE_TOKEN, (s->t_upgrade_ns - t0) / 1000);
	rs_addr_str((struct sockaddr *)&client, s->client, sizeof(s->client));
	copy_printable(s->user_agent, sizeof(s->user_agent), rs_http_req_header(req, "User-Agent"));
	rs_timer_init(&s->timer, on_handshake_timeout);
	rs_ws_parser_init(&s->ws, true, env->cfg->ws_max_frame, env->cfg->ws_max_message);
	rs_rfb_server_init(&s->hs->srv);
	rs_rfb_client_init(&s->hs->cli, spec->password);
	rs_rfb_msgs_init(&s->msgs, &(struct rs_rfb_msgs_limits){
				       .max_cut_text = env->cfg->rfb_max_cut_text,
				       .max_encodings = env->cfg->rfb_max_encodings,
				   });
	c = rs_http_upgrade(hc, ra->resp, &rest, &rest_len);
	if (!c) {
		CW_ADD(cw, causes[RS_CC_NOMEM], 1);
		s->refs = 1;
		session_unref(s);
		return;
	}
	s->br = c;
	pthread_mutex_lock(&cw->lock);
	s->id = rs_conn_id(c);
	s->upgraded = true;
	pthread_mutex_unlock(&cw->lock);
	rs_conn_set_ops(c, &browser_ops, s);
	CW_ADD(cw, opened, 1);
	CW_ADD(cw, opened_kind[spec->kind], 1);
	if (s->cl >= 0)
		CW_ADD(cw, cl_opened[s->cl], 1);
	rs_timer_link(rs_worker_timers(w), &s->timer,
		      rs_worker_now(w) + env->cfg->handshake_timeout_ms);
	s->term = spec->kind == RS_CONSOLE_PVE_TERM;
	if (!s->term) {
		rs_rfb_server_start(&s->hs->srv, &rout);
		send_rfb_out(s, &rout);
	}
	start_target(s, w);
	advance(s);
	if (rest_len && s->state != ST_CLOSING)
		br_data_bytes(s, NULL, rest, rest_len);
	free(rest);
}

void rs_console_worker_stats(struct rs_worker *w, struct rs_console_stats *out)
{
	struct console_worker *cw = cw_of_other(w);
	const uint64_t *src;
	uint64_t *dst = (uint64_t *)out;

	if (!cw) { /* its start hook has not run: nothing counted yet */
		memset(out, 0, sizeof(*out));
		return;
	}
	src = (const uint64_t *)&cw->st;
	for (size_t k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
		dst[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
}

size_t rs_console_list(struct rs_worker *w, struct rs_console_info *out, size_t max)
{
	static const char *const states[] = {"handshake", "relay", "closing", "detached"};
	struct console_worker *cw = cw_of_other(w);
	uint64_t now = rs_worker_now(w);
	size_t n = 0;

	if (!cw) /* its start hook has not run: no session yet */
		return 0;
	pthread_mutex_lock(&cw->lock);
	for (struct session *s = cw->sessions; s; s = s->next) {
		struct rs_console_info *i = &out[n];

		if (!s->upgraded || s->state == ST_CLOSING)
			continue; /* not upgraded yet, or only teardown is left */
		if (n++ >= max)
			continue;
		memset(i, 0, sizeof(*i));
		i->id = s->id;
		i->worker = rs_worker_id(w);
		snprintf(i->kind, sizeof(i->kind), "%s", rs_console_kind_names[s->spec->kind]);
		snprintf(i->state, sizeof(i->state), "%s", s->detached ? "detached" : states[s->state]);
		snprintf(i->token_hash, sizeof(i->token_hash), "%s", s->tokhash);
		snprintf(i->api_key, sizeof(i->api_key), "%s",
			 s->spec->api_key_name ? s->spec->api_key_name : "");
		snprintf(i->label, sizeof(i->label), "%s", s->spec->label ? s->spec->label : "");
		target_desc(s->spec, i->target, sizeof(i->target));
		snprintf(i->node, sizeof(i->node), "%s", s->spec->node ? s->spec->node : "");
		i->vmid = s->spec->vmid;
		snprintf(i->client, sizeof(i->client), "%s", s->client);
		i->age_ms = now - s->opened_ms;
		i->created_s = s->created_s;
		i->connected_s = s->connected_s;
		i->bytes_to_target = s->to_target;
		i->bytes_to_browser = s->to_browser;
	}
	pthread_mutex_unlock(&cw->lock);
	return n;
}

int rs_console_kill(struct rs_worker *w, uint64_t id)
{
	for (struct session *s = cw_of(w)->sessions; s; s = s->next) {
		if (s->upgraded && s->id == id && s->state != ST_CLOSING) {
			bool waiting = s->detached;

			session_end(s, RS_CC_KILLED, 1000, "the console was closed by an operator");
			if (waiting) /* the waiting console's reference */
				session_unref(s);
			return 0;
		}
	}
	return -ENOENT;
}
