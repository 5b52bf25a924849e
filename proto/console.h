/* proto/console.h — a browser console session: the WebSocket upgrade that
 * consumes a token, the RFB security phase on both legs, then the relay.
 *
 * Browser leg: RFC 6455 server, ringside answers the browser's RFB handshake
 * itself with security type None. Upstream leg: TCP to the VNC target (from
 * the port pool when configured), RFB client with VNC authentication. After
 * both security phases the bytes pass through untouched, re-framed as
 * WebSocket binary messages towards the browser. Each failure reaches the
 * browser as a readable reason and ops as a counted cause.
 */
#ifndef RS_CONSOLE_H
#define RS_CONSOLE_H

#include "core/common.h"
#include "core/config.h"
#include "core/engine.h"
#include "core/token.h"
#include "proto/store.h"
#include "proto/http_server.h"

/* Why a console ended or failed to open: one counter each. */
enum rs_console_cause {
	RS_CC_BROWSER_CLOSED = 0, /* the browser closed (normal end) */
	RS_CC_TARGET_CLOSED,      /* the VNC target closed (normal end) */
	RS_CC_KILLED,             /* closed by an operator or shutdown */
	RS_CC_TOKEN_INVALID,      /* unknown, expired or already used token */
	RS_CC_TOKEN_IP,           /* token bound to another client address */
	RS_CC_WS_HANDSHAKE,       /* bad WebSocket upgrade request */
	RS_CC_DRAINING,           /* refused: appliance draining */
	RS_CC_PORTS_EXHAUSTED,    /* no (source address, port) pair left */
	RS_CC_CONNECT_REFUSED,
	RS_CC_CONNECT_TIMEOUT,
	RS_CC_CONNECT_ERROR,
	RS_CC_TARGET_AUTH,        /* the target refused our VNC password */
	RS_CC_TARGET_PROTOCOL,    /* the target spoke something other than RFB */
	RS_CC_TARGET_RESET,       /* the target connection broke */
	RS_CC_BROWSER_PROTOCOL,   /* WebSocket or RFB protocol error from the browser */
	RS_CC_HANDSHAKE_TIMEOUT,
	RS_CC_IDLE_TIMEOUT,       /* no byte either way for limits.session_idle_timeout_s */
	RS_CC_UPSTREAM_AUTH,      /* Proxmox refused ringside's credentials (or wants TFA) */
	RS_CC_UPSTREAM_PERMISSION, /* the Proxmox account lacks VM.Console (403) */
	RS_CC_VM_NOT_FOUND,       /* no such VM on that node (500 "does not exist") */
	RS_CC_VM_NOT_RUNNING,
	RS_CC_UPSTREAM_TLS,       /* every endpoint failed certificate verification */
	RS_CC_UPSTREAM_UNAVAILABLE, /* every endpoint refused, failed or answered 5xx/595 */
	RS_CC_UPSTREAM_PROTOCOL,  /* Proxmox answered something unexpected */
	RS_CC_CONSOLE_UNREACHABLE, /* no 101 from vncwebsocket in time (backend connect hung) */
	RS_CC_TERMINAL_REFUSED,   /* termproxy closed before its OK (ticket refused) */
	RS_CC_NOMEM,
	RS_CC_KEY_CONSOLES,       /* refused: the link's API key has max_consoles open */
	RS_CC_STORE_UNAVAILABLE,  /* the fleet store (Redis) could not say whether the link is good */
	RS_CC__COUNT
};
extern const char *const rs_console_cause_names[RS_CC__COUNT];

/* What the audit log records of a console; strings are valid only during the
 * callback. No secret is ever in here: the token appears as its hash. */
enum rs_console_event_type { RS_CEV_OPENED = 0, RS_CEV_CLOSED, RS_CEV_REJECTED };

struct rs_console_event {
	enum rs_console_event_type type;
	const char *token_hash; /* 8 hex digits, or "-" when the token did not parse */
	const char *api_key, *label, *target_host;
	const char *kind; /* rs_console_kind_names: the metrics' kind label */
	uint16_t target_port;
	const char *client, *user_agent;
	const char *cause; /* CLOSED, REJECTED */
	uint64_t duration_ms, bytes_to_target, bytes_to_browser;
};

struct rs_pve;

struct rs_console_env {
	struct rs_token_table *tokens;
	struct rs_store *store; /* where links live (proto/store.h): consumed through it */
	/* A fleet's link comes back from Redis without its key's usage record:
	 * found again by the key's name (NULL: not counted). */
	struct rs_key_usage *(*key_usage)(void *arg, const char *key_name);
	void *key_usage_arg;
	struct rs_pve *pve; /* Proxmox clusters (NULL when none are configured) */
	const struct rs_config *cfg;
	_Atomic bool *draining;
	/* Optional: called on the worker for every console event (audit log). */
	void (*on_event)(void *arg, const struct rs_console_event *ev);
	void *event_arg;
};

/* Setup stages timed per console (histograms): token check, upgrade -> TCP connected,
 * connected -> target's RFB security phase done, upgrade -> relaying. */
enum rs_console_stage {
	RS_STAGE_TOKEN = 0, /* upgrade request validated and token consumed */
	RS_STAGE_CONNECT,      /* plain VNC: TCP connected */
	RS_STAGE_UPSTREAM_API, /* Proxmox: upgrade -> console stream open (API calls, WebSocket) */
	RS_STAGE_TARGET_AUTH,
	RS_STAGE_TOTAL,
	RS_STAGE__COUNT
};
extern const char *const rs_console_stage_names[RS_STAGE__COUNT];

#define RS_SETUP_BUCKETS 13 /* upper bounds in rs_console_setup_le_ms, then +Inf */
#define RS_DURATION_BUCKETS 9
extern const double rs_console_setup_le_s[RS_SETUP_BUCKETS];
extern const double rs_console_duration_le_s[RS_DURATION_BUCKETS];

#define RS_KINDS 3          /* enum rs_console_kind */
/* "vnc", "pve-vnc", "pve-term": the kind label of metrics, audit and listings. */
extern const char *const rs_console_kind_names[RS_KINDS];
#define RS_MAX_CLUSTERS 32  /* clusters with their own metric labels (the rest share "other") */

struct rs_console_stats {
	uint64_t opened, active, bytes_to_target, bytes_to_browser;
	uint64_t causes[RS_CC__COUNT];
	uint64_t opened_kind[RS_KINDS], active_kind[RS_KINDS];
	uint64_t causes_kind[RS_KINDS][RS_CC__COUNT];
	/* Proxmox consoles by cluster (index in the config; RS_MAX_CLUSTERS = inline/other). */
	uint64_t cl_opened[RS_MAX_CLUSTERS + 1], cl_active[RS_MAX_CLUSTERS + 1];
	uint64_t cl_causes[RS_MAX_CLUSTERS + 1][RS_CC__COUNT];
	uint64_t ports_total, ports_in_use, ports_exhausted;
	/* histograms: per-bucket counts (not cumulative; last = +Inf), sums in µs */
	uint64_t setup[RS_STAGE__COUNT][RS_SETUP_BUCKETS + 1];
	uint64_t setup_sum_us[RS_STAGE__COUNT];
	uint64_t duration[RS_DURATION_BUCKETS + 1];
	uint64_t duration_sum_ms;
};

/* Per-worker console state (port pool, counters); call from the engine's
 * worker-start hook with <env> as argument. Until it has run on a worker,
 * listings and stats from other threads see that worker as empty. */
void rs_console_worker_start(struct rs_worker *w, void *env);
/* After rs_engine_start: 0 when every worker's state is complete, or
 * -EINVAL with <err> saying which worker failed and why (a port pool that
 * cannot be built): the daemon must then refuse to start. */
int rs_console_workers_ready(struct rs_engine *e, char *err, size_t errlen);
void rs_console_worker_stop(struct rs_worker *w);

/* Handle GET /ws/<token>: validate the upgrade, consume the token, answer
 * 101 and start the session — or answer an HTTP error before any upgrade. */
void rs_console_upgrade(const struct rs_console_env *env, struct rs_http_conn *hc,
			const struct rs_http_req *req, const char *tok, size_t toklen);

/* Sum every worker's console counters (racy snapshot). */
void rs_console_stats(struct rs_engine *e, struct rs_console_stats *out);
/* One worker's counters (racy snapshot). */
void rs_console_worker_stats(struct rs_worker *w, struct rs_console_stats *out);

/* A session as the admin socket lists it. */
struct rs_console_info {
	uint64_t id; /* the browser connection's id: worker in the top bits */
	unsigned worker;
	char kind[12], state[12], token_hash[9], api_key[65], label[65], target[80], client[48];
	char node[64];
	uint32_t vmid;
	int64_t created_s, connected_s; /* wall clock; connected_s 0 until relaying */
	uint64_t age_ms, bytes_to_target, bytes_to_browser;
};

/* Snapshot the sessions of worker <w>, from any thread (takes the worker's
 * session-list lock). Fills at most <max> entries; returns how many exist. */
size_t rs_console_list(struct rs_worker *w, struct rs_console_info *out, size_t max);
/* End session <id> on worker <w> (on its thread): 0 or -ENOENT. */
int rs_console_kill(struct rs_worker *w, uint64_t id);

#endif
