#include "core/common.h"

#include <stdatomic.h>
#include <strings.h>

#include "admin/app.h"
#include "admin/fleet.h"
#include "admin/metrics.h"
#include "core/token.h"
#include "proto/console.h"
#include "proto/pve_up.h"
#include "proto/redis.h"
#include "tls/server.h"

#ifndef RS_VERSION
#define RS_VERSION "0.1.0"
#endif

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(FILE *f, const char *name, const char *labels, const double *le, size_t n,
		      const uint64_t *counts, double sum)
{
	uint64_t cum = 0;

	for (size_t i = 0; i <= n; i++) {
		cum += counts[i];
		if (i < n)
			fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "",
				le[i], (unsigned long long)cum);
		else
			fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels,
				*labels ? "," : "", (unsigned long long)cum);
	}
	fprintf(f, "%s_sum%s%s%s %.6f\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", sum);
	fprintf(f, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
		(unsigned long long)cum);
}

static const char *const route_names[RS_APP_ROUTES] = {
	"other", "healthz", "static", "console_page", "websocket", "api_consoles", "api_stats", "root",
};


/* The fleet view (admin/fleet.h); the Redis client's families are above. */
static void fleet_metrics(FILE *f, struct rs_fleet *fl)
{
	struct rs_fleet_stats fs;

	rs_fleet_stats_get(fl, &fs);
	family(f, "ringside_fleet_boxes", "gauge",
	       "Other boxes alive in the fleet view (their heartbeat not expired).");
	fprintf(f, "ringside_fleet_boxes %llu\n", (unsigned long long)fs.boxes);
	family(f, "ringside_fleet_sessions", "gauge", "Sessions the other boxes publish.");
	fprintf(f, "ringside_fleet_sessions %llu\n", (unsigned long long)fs.sessions);
	family(f, "ringside_fleet_heartbeats_total", "counter",
	       "This box's heartbeats (publish and read the fleet view), by result.");
	fprintf(f, "ringside_fleet_heartbeats_total{result=\"ok\"} %llu\n",
		(unsigned long long)fs.heartbeats);
	fprintf(f, "ringside_fleet_heartbeats_total{result=\"error\"} %llu\n",
		(unsigned long long)fs.heartbeat_errors);
	family(f, "ringside_fleet_kills_total", "counter",
	       "Kills across boxes: sent to another box, received, and sessions they ended here.");
	fprintf(f, "ringside_fleet_kills_total{event=\"sent\"} %llu\n",
		(unsigned long long)fs.kills_sent);
	fprintf(f, "ringside_fleet_kills_total{event=\"received\"} %llu\n",
		(unsigned long long)fs.kills_received);
	fprintf(f, "ringside_fleet_kills_total{event=\"done\"} %llu\n",
		(unsigned long long)fs.kills_done);
}

static const char *cluster_label(const struct rs_app *app, size_t c, size_t ncl)
{
	return c == ncl ? "other" : app->cfg->clusters[c].name;
}

/* Causes that say something about the Proxmox side. */
static bool upstream_cause(int i)
{
	switch (i) {
	case RS_CC_UPSTREAM_AUTH:
	case RS_CC_UPSTREAM_PERMISSION:
	case RS_CC_VM_NOT_FOUND:
	case RS_CC_VM_NOT_RUNNING:
	case RS_CC_UPSTREAM_TLS:
	case RS_CC_UPSTREAM_UNAVAILABLE:
	case RS_CC_UPSTREAM_PROTOCOL:
	case RS_CC_CONSOLE_UNREACHABLE:
	case RS_CC_TERMINAL_REFUSED:
	case RS_CC_TARGET_PROTOCOL:
	case RS_CC_TARGET_AUTH:
	case RS_CC_TARGET_RESET:
	case RS_CC_HANDSHAKE_TIMEOUT:
		return true;
	default:
		return false;
	}
}

static uint64_t refused(const struct rs_http_server *srv)
{
	return atomic_load_explicit((_Atomic uint64_t *)&srv->refused_per_client,
				    memory_order_relaxed);
}

long rs_metrics_render(struct rs_app *app, char **out)
{
	struct rs_console_stats cs;
	struct rs_token_stats ts;
	struct rs_engine_stats es;
	size_t len = 0;
	FILE *f = open_memstream(out, &len);

	if (!f)
		return -ENOMEM;
	rs_console_stats(app->engine, &cs);
	rs_token_stats_get(app->tokens, &ts);
	rs_engine_stats(app->engine, &es);

	family(f, "ringside_build_info", "gauge", "Build information.");
	fprintf(f, "ringside_build_info{version=\"%s\"} 1\n", RS_VERSION);
	family(f, "ringside_workers", "gauge", "Worker threads (one io_uring each).");
	fprintf(f, "ringside_workers %u\n", rs_engine_workers(app->engine));
	family(f, "ringside_draining", "gauge", "1 while the appliance refuses new consoles.");
	fprintf(f, "ringside_draining %d\n", atomic_load(&app->draining) ? 1 : 0);

	if (app->tls) {
		const struct rs_tls_counters *tc = rs_tls_server_counters(app->tls);

		family(f, "ringside_tls_handshakes_total", "counter",
		       "TLS handshakes completed on the browser listener.");
		fprintf(f, "ringside_tls_handshakes_total{side=\"server\"} %llu\n",
			(unsigned long long)atomic_load(&tc->handshakes));
		family(f, "ringside_tls_resumed_total", "counter",
		       "TLS handshakes that resumed a session from a ticket.");
		fprintf(f, "ringside_tls_resumed_total{side=\"server\"} %llu\n",
			(unsigned long long)atomic_load(&tc->resumed));
		family(f, "ringside_tls_handshake_failures_total", "counter",
		       "TLS handshakes that failed, by cause.");
		for (int i = 0; i < RS_TLS_FAIL__COUNT; i++)
			fprintf(f,
				"ringside_tls_handshake_failures_total{side=\"server\",cause=\"%s\"} "
				"%llu\n",
				rs_tls_fail_names[i], (unsigned long long)atomic_load(&tc->failures[i]));
		family(f, "ringside_tls_ticket_key_rotations_total", "counter",
		       "Session ticket key rotations.");
		fprintf(f, "ringside_tls_ticket_key_rotations_total %llu\n",
			(unsigned long long)rs_tls_server_ticket_rotations(app->tls));
	}

	{
		uint64_t so[RS_SO__COUNT];

		rs_store_outcomes(app->store, so);
		family(f, "ringside_store_links_total", "counter",
		       "Console link operations on the token store (embedded or fleet), by "
		       "outcome.");
		for (int i = 0; i < RS_SO__COUNT; i++)
			fprintf(f, "ringside_store_links_total{store=\"%s\",outcome=\"%s\"} %llu\n",
				app->redis ? "redis" : "embedded", rs_store_outcome_names[i],
				(unsigned long long)so[i]);
	}
	if (app->redis) {
		struct rs_redis_stats rst;
		uint64_t cum = 0;

		rs_redis_stats_get(app->redis, &rst);
		family(f, "ringside_redis_commands_total", "counter", "Commands sent to Redis.");
		fprintf(f, "ringside_redis_commands_total %llu\n", (unsigned long long)rst.commands);
		family(f, "ringside_redis_errors_total", "counter",
		       "Redis commands that failed, by cause.");
		for (int i = 0; i < RS_REDIS_E__COUNT; i++)
			fprintf(f, "ringside_redis_errors_total{cause=\"%s\"} %llu\n",
				rs_redis_err_names[i], (unsigned long long)rst.errors[i]);
		family(f, "ringside_redis_latency_seconds", "histogram",
		       "Time from sending a Redis command to its answer.");
		for (int i = 0; i < RS_REDIS_LAT_BUCKETS; i++) {
			cum += rst.lat[i];
			fprintf(f, "ringside_redis_latency_seconds_bucket{le=\"%g\"} %llu\n",
				rs_redis_lat_le_s[i], (unsigned long long)cum);
		}
		cum += rst.lat[RS_REDIS_LAT_BUCKETS];
		fprintf(f, "ringside_redis_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
			(unsigned long long)cum);
		fprintf(f, "ringside_redis_latency_seconds_sum %.6f\n", (double)rst.lat_sum_us / 1e6);
		fprintf(f, "ringside_redis_latency_seconds_count %llu\n", (unsigned long long)cum);
		family(f, "ringside_redis_failovers_total", "counter",
		       "Changes of Redis master followed through Sentinel.");
		fprintf(f, "ringside_redis_failovers_total %llu\n", (unsigned long long)rst.failovers);
		family(f, "ringside_redis_connections", "gauge", "Redis connections ready now.");
		fprintf(f, "ringside_redis_connections %llu\n", (unsigned long long)rst.connected);
		family(f, "ringside_redis_connects_total", "counter",
		       "Redis connection attempts, by result.");
		fprintf(f, "ringside_redis_connects_total{result=\"ok\"} %llu\n",
			(unsigned long long)rst.connects);
		fprintf(f, "ringside_redis_connects_total{result=\"failed\"} %llu\n",
			(unsigned long long)rst.connect_failures);
		family(f, "ringside_redis_pending", "gauge", "Redis commands waiting for an answer.");
		fprintf(f, "ringside_redis_pending %llu\n", (unsigned long long)rst.pending);
	}

	if (app->pve) {
		const struct rs_pve_counters *pc = rs_pve_counters(app->pve);

		family(f, "ringside_pve_failovers_total", "counter",
		       "Console opens moved to the next Proxmox endpoint (connect/TLS failure, 5xx, "
		       "595, 596).");
		fprintf(f, "ringside_pve_failovers_total %llu\n",
			(unsigned long long)atomic_load(&pc->failovers));
		family(f, "ringside_pve_api_errors_total", "counter",
		       "Proxmox API calls answered with 5xx, 595 or 596.");
		fprintf(f, "ringside_pve_api_errors_total %llu\n",
			(unsigned long long)atomic_load(&pc->api_errors));
		family(f, "ringside_pve_logins_total", "counter",
		       "Proxmox login tickets obtained (user/password clusters).");
		fprintf(f, "ringside_pve_logins_total %llu\n",
			(unsigned long long)atomic_load(&pc->login_renewals));
		family(f, "ringside_pve_vmlock_waits_total", "counter",
		       "VNC consoles that waited while another box authenticated on the same VM "
		       "(the fleet's VM lock).");
		fprintf(f, "ringside_pve_vmlock_waits_total %llu\n",
			(unsigned long long)atomic_load(&pc->vmlock_waits));
		family(f, "ringside_pve_vmlock_errors_total", "counter",
		       "Fleet VM locks Redis could not grant or release (the console went on with "
		       "this box's lock; a lock not released expires).");
		fprintf(f, "ringside_pve_vmlock_errors_total %llu\n",
			(unsigned long long)atomic_load(&pc->vmlock_errors));
	}
	if (app->fleet)
		fleet_metrics(f, app->fleet);

	family(f, "ringside_consoles_opened_total", "counter",
	       "Console WebSocket upgrades that consumed a token, by kind.");
	for (int k = 0; k < RS_KINDS; k++)
		fprintf(f, "ringside_consoles_opened_total{kind=\"%s\"} %llu\n", rs_console_kind_names[k],
			(unsigned long long)cs.opened_kind[k]);
	family(f, "ringside_consoles_closed_total", "counter",
	       "Consoles that ended or could not be opened, by kind and cause (kind \"none\": "
	       "refused before a token was spent).");
	for (int i = 0; i < RS_CC__COUNT; i++) {
		uint64_t rest = cs.causes[i];

		for (int k = 0; k < RS_KINDS; k++) {
			rest -= cs.causes_kind[k][i];
			fprintf(f, "ringside_consoles_closed_total{kind=\"%s\",cause=\"%s\"} %llu\n",
				rs_console_kind_names[k], rs_console_cause_names[i],
				(unsigned long long)cs.causes_kind[k][i]);
		}
		fprintf(f, "ringside_consoles_closed_total{kind=\"none\",cause=\"%s\"} %llu\n",
			rs_console_cause_names[i], (unsigned long long)rest);
	}
	family(f, "ringside_console_sessions_active", "gauge", "Consoles relaying right now, by kind.");
	for (int k = 0; k < RS_KINDS; k++)
		fprintf(f, "ringside_console_sessions_active{kind=\"%s\"} %llu\n", rs_console_kind_names[k],
			(unsigned long long)cs.active_kind[k]);
	family(f, "ringside_console_resumes_total", "counter",
	       "Attempts to take a console up again with its resume secret, by outcome.");
	for (int i = 0; i < RS_RESUME__COUNT; i++)
		fprintf(f, "ringside_console_resumes_total{outcome=\"%s\"} %llu\n",
			rs_resume_outcome_names[i], (unsigned long long)cs.resumes[i]);
	family(f, "ringside_console_detached", "gauge",
	       "Consoles whose browser leg dropped, waiting for it within console.resume_grace_s.");
	fprintf(f, "ringside_console_detached %llu\n", (unsigned long long)cs.detached);
	family(f, "ringside_console_resume_handoffs_total", "counter",
	       "Resuming connections moved from the worker that accepted them to the console's.");
	fprintf(f, "ringside_console_resume_handoffs_total %llu\n",
		(unsigned long long)cs.resume_handoffs);
	if (app->cfg->n_clusters || app->cfg->inline_upstreams) {
		/* Bounded labels: configured clusters (the first RS_MAX_CLUSTERS), then "other". */
		size_t ncl = RS_MIN(app->cfg->n_clusters, (size_t)RS_MAX_CLUSTERS);

		family(f, "ringside_pve_sessions_active", "gauge",
		       "Proxmox consoles relaying right now, by cluster.");
		for (size_t c = 0; c <= ncl; c++)
			fprintf(f, "ringside_pve_sessions_active{cluster=\"%s\"} %llu\n",
				cluster_label(app, c, ncl), (unsigned long long)cs.cl_active[c == ncl ? RS_MAX_CLUSTERS : c]);
		family(f, "ringside_pve_upstream_errors_total", "counter",
		       "Proxmox consoles that failed upstream, by cluster and cause.");
		for (size_t c = 0; c <= ncl; c++)
			for (int i = 0; i < RS_CC__COUNT; i++) {
				if (!upstream_cause(i))
					continue;
				fprintf(f,
					"ringside_pve_upstream_errors_total{cluster=\"%s\",cause=\"%s\"} "
					"%llu\n",
					cluster_label(app, c, ncl), rs_console_cause_names[i],
					(unsigned long long)cs.cl_causes[c == ncl ? RS_MAX_CLUSTERS : c][i]);
			}
	}
	family(f, "ringside_relayed_bytes_total", "counter", "Console payload bytes relayed.");
	fprintf(f, "ringside_relayed_bytes_total{direction=\"to_target\"} %llu\n",
		(unsigned long long)cs.bytes_to_target);
	fprintf(f, "ringside_relayed_bytes_total{direction=\"to_browser\"} %llu\n",
		(unsigned long long)cs.bytes_to_browser);

	family(f, "ringside_tokens_total", "counter", "Console links by outcome.");
	fprintf(f, "ringside_tokens_total{outcome=\"issued\"} %llu\n", (unsigned long long)ts.issued);
	fprintf(f, "ringside_tokens_total{outcome=\"consumed\"} %llu\n",
		(unsigned long long)ts.consumed);
	fprintf(f, "ringside_tokens_total{outcome=\"expired\"} %llu\n",
		(unsigned long long)ts.expired);
	fprintf(f, "ringside_tokens_total{outcome=\"revoked\"} %llu\n",
		(unsigned long long)ts.revoked);
	fprintf(f, "ringside_tokens_total{outcome=\"rejected\"} %llu\n",
		(unsigned long long)ts.rejected);
	family(f, "ringside_tokens_live", "gauge", "Console links issued and not yet used or expired.");
	fprintf(f, "ringside_tokens_live %llu\n", (unsigned long long)ts.live);

	family(f, "ringside_http_responses_total", "counter",
	       "HTTP responses of the console listener by route and status class.");
	for (int r = 0; r < RS_APP_ROUTES; r++)
		for (int c = 1; c <= 5; c++)
			fprintf(f, "ringside_http_responses_total{route=\"%s\",code=\"%dxx\"} %llu\n",
				route_names[r], c,
				(unsigned long long)atomic_load_explicit(
					(_Atomic uint64_t *)&app->http.by_route[r][c],
					memory_order_relaxed));

	family(f, "ringside_connections_open", "gauge", "TCP connections held (both legs).");
	fprintf(f, "ringside_connections_open %llu\n", (unsigned long long)es.conns_live);
	family(f, "ringside_connections_accepted_total", "counter", "TCP connections accepted.");
	fprintf(f, "ringside_connections_accepted_total %llu\n", (unsigned long long)es.accepted);
	family(f, "ringside_connections_refused_per_client_total", "counter",
	       "HTTP connections refused: their client address held limits.max_conns_per_client.");
	fprintf(f, "ringside_connections_refused_per_client_total %llu\n",
		(unsigned long long)(refused(&app->http) + refused(&app->metrics_http)));
	family(f, "ringside_buffer_pool_buffers", "gauge", "Receive buffers, in use and in total.");
	fprintf(f, "ringside_buffer_pool_buffers{state=\"in_use\"} %llu\n",
		(unsigned long long)es.bufs_out);
	fprintf(f, "ringside_buffer_pool_buffers{state=\"total\"} %llu\n",
		(unsigned long long)es.bufs_total);
	family(f, "ringside_buffer_pool_exhausted_total", "counter",
	       "Receives that found the buffer pool empty (ENOBUFS; retried).");
	fprintf(f, "ringside_buffer_pool_exhausted_total %llu\n", (unsigned long long)es.enobufs);
	family(f, "ringside_port_pool_pairs", "gauge",
	       "Upstream (source address, port) pairs, in use and in total.");
	fprintf(f, "ringside_port_pool_pairs{state=\"in_use\"} %llu\n",
		(unsigned long long)cs.ports_in_use);
	fprintf(f, "ringside_port_pool_pairs{state=\"total\"} %llu\n",
		(unsigned long long)cs.ports_total);
	family(f, "ringside_port_pool_exhausted_total", "counter",
	       "Consoles refused because no pair was free.");
	fprintf(f, "ringside_port_pool_exhausted_total %llu\n",
		(unsigned long long)cs.ports_exhausted);
	family(f, "ringside_engine_loop_iterations_total", "counter", "Event-loop iterations.");
	fprintf(f, "ringside_engine_loop_iterations_total %llu\n", (unsigned long long)es.loops);
	family(f, "ringside_engine_completions_total", "counter", "io_uring completions handled.");
	fprintf(f, "ringside_engine_completions_total %llu\n", (unsigned long long)es.cqes);
	family(f, "ringside_engine_cq_overflows_total", "counter",
	       "Loop iterations that saw the completion queue overflow.");
	fprintf(f, "ringside_engine_cq_overflows_total %llu\n", (unsigned long long)es.cq_overflow);

	family(f, "ringside_console_setup_seconds", "histogram",
	       "Console setup time by stage: token (upgrade checked, token consumed), connect "
	       "(upgrade to TCP connected), target_auth "
	       "(connected to the target's RFB security phase done), total (upgrade to relaying).");
	for (int st = 0; st < RS_STAGE__COUNT; st++) {
		char labels[64];

		snprintf(labels, sizeof(labels), "stage=\"%s\"", rs_console_stage_names[st]);
		histogram(f, "ringside_console_setup_seconds", labels, rs_console_setup_le_s,
			  RS_SETUP_BUCKETS, cs.setup[st], (double)cs.setup_sum_us[st] / 1e6);
	}
	family(f, "ringside_console_duration_seconds", "histogram",
	       "How long consoles relayed before they ended.");
	histogram(f, "ringside_console_duration_seconds", "", rs_console_duration_le_s,
		  RS_DURATION_BUCKETS, cs.duration, (double)cs.duration_sum_ms / 1e3);
	if (fclose(f)) {
		free(*out);
		*out = NULL;
		return -ENOMEM;
	}
	return (long)len;
}

void rs_metrics_route(struct rs_http_conn *hc, const struct rs_http_req *req, void *arg)
{
	struct rs_app *app = arg;
	const char *tok = app->cfg->metrics_token;
	char *text = NULL;
	long n;

	if (req->path_len != 8 || memcmp(req->path, "/metrics", 8))
		return rs_http_respond_error(hc, 404, "not_found", "not found", NULL);
	if (req->method != HTTP_GET && req->method != HTTP_HEAD)
		return rs_http_respond_error(hc, 405, "method_not_allowed", "use GET",
					     "Allow: GET, HEAD\r\n");
	if (tok) {
		const struct rs_http_header *h = rs_http_req_header(req, "Authorization");

		if (!h || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) ||
		    !rs_ct_equal(h->value + 7, h->value_len - 7, tok, strlen(tok)))
			return rs_http_respond_error(hc, 401, "unauthorized", "bearer token required",
						     "WWW-Authenticate: Bearer\r\n");
	}
	n = rs_metrics_render(app, &text);
	if (n < 0)
		return rs_http_respond_error(hc, 503, "no_memory", "out of memory", NULL);
	rs_http_respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", text, (size_t)n, NULL);
	free(text);
}
