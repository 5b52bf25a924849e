/* admin/main.c — the ringside daemon: CLI, config, signals, lifecycle. */
#include "core/common.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "admin/app.h"
#include "admin/audit.h"
#include "admin/ctl.h"
#include "admin/fleet.h"
#include "admin/tlscheck.h"
#include "core/config.h"
#include "core/engine.h"
#include "core/log.h"
#include "proto/pve_up.h"
#include "tls/server.h"

#ifndef RS_VERSION
#define RS_VERSION "0.1.0"
#endif

static void print_listen(const struct rs_app *app, unsigned workers)
{
	const struct rs_config *cfg = app->cfg;
	char desc[1024];

	for (size_t i = 0; i < cfg->n_listen; i++)
		rs_info("main", "listening on http://%s (%u workers)", cfg->listen[i], workers);
	for (size_t i = 0; i < cfg->n_tls_listen; i++)
		rs_info("main", "listening on https://%s (%u workers)", cfg->tls_listen[i], workers);
	if (app->tls) {
		rs_tls_server_describe(app->tls, desc, sizeof(desc));
		rs_info("tls", "certificates: %s", desc);
	}
	rs_info("main", "console links use %s", cfg->public_url);
	if (*cfg->metrics_listen)
		rs_info("main", "Prometheus metrics on http://%s/metrics", cfg->metrics_listen);
}

static int listen_all(struct rs_app *app, char *const *addrs, size_t n, rs_accept_fn fn,
		      struct rs_http_server *srv, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		int ret = rs_parse_hostport(addrs[i], &ss, &len);

		if (!ret)
			ret = rs_engine_listen(app->engine, (struct sockaddr *)&ss, len, fn, srv);
		if (ret) {
			snprintf(err, errlen, "cannot listen on '%s': %s", addrs[i], strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static int add_listeners(struct rs_app *app, char *err, size_t errlen)
{
	const struct rs_config *cfg = app->cfg;
	char *metrics[] = {cfg->metrics_listen};
	int ret;

	ret = listen_all(app, cfg->listen, cfg->n_listen, rs_http_on_accept, &app->http, err,
			 errlen);
	if (!ret)
		ret = listen_all(app, cfg->tls_listen, cfg->n_tls_listen, rs_https_on_accept,
				 &app->http, err, errlen);
	if (!ret && *cfg->metrics_listen)
		ret = listen_all(app, metrics, 1, rs_http_on_accept, &app->metrics_http, err,
				 errlen);
	return ret;
}

/* Sent to the main thread when a new token needs a sweep sooner than it
 * planned to wake. Between sweeps it sleeps: a wakeup every 500 ms cost 1 %
 * of a core on this VM with 50,000 consoles open (~2 ms of kernel time per
 * wakeup with 15,000 open, 0.1 ms with none). */
#define RS_SIG_WAKE SIGRTMIN

static void wake_main(void *main_thread)
{
	pthread_kill(*(pthread_t *)main_thread, RS_SIG_WAKE);
}

int main(int argc, char **argv)
{
	struct rs_config cfg;
	struct rs_cli cli;
	struct rs_app app;
	struct rs_engine_opts eo = {0};
	char err[512];
	sigset_t sigs;
	int sig, ret = 1;
	enum rs_log_level lvl;
	pthread_t main_thread;

	struct rs_ctl *ctl = NULL;

	if (argc > 1 && !strcmp(argv[1], "ctl"))
		return rs_ctl_client(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "tls-check"))
		return rs_tlscheck_main(argc - 2, argv + 2);
	if (rs_cli_parse(argc, argv, &cli, err, sizeof(err))) {
		fprintf(stderr, "ringside: %s\n", err);
		rs_cli_usage(stderr);
		return 2;
	}
	if (cli.help) {
		rs_cli_usage(stdout);
		return 0;
	}
	if (cli.version) {
		printf("ringside %s\n", RS_VERSION);
		return 0;
	}
	rs_config_init(&cfg);
	if ((cli.config_path && rs_config_load_file(&cfg, cli.config_path, err, sizeof(err))) ||
	    rs_config_apply_cli(&cfg, &cli, err, sizeof(err)) ||
	    rs_config_validate(&cfg, err, sizeof(err))) {
		fprintf(stderr, "ringside: %s\n", err);
		fprintf(stderr, "ringside: refusing to start\n");
		goto out_config;
	}
	if (cli.check_config) {
		printf("ringside: configuration OK\n");
		ret = 0;
		goto out_config;
	}
	if (rs_log_open(cfg.log_target)) {
		fprintf(stderr, "ringside: cannot open log '%s': %s\n", cfg.log_target,
			strerror(errno));
		goto out_config;
	}
	if (!rs_log_level_parse(cfg.log_level, &lvl))
		rs_log_set_level(lvl);

	/* Signals are taken synchronously by this thread; workers never see them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, RS_SIG_WAKE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (rs_app_init(&app, &cfg, err, sizeof(err))) {
		rs_error("main", "%s", err);
		goto out_config;
	}
	main_thread = pthread_self();
	rs_token_table_set_wake(app.tokens, wake_main, &main_thread);
	eo.workers = cfg.workers;
	eo.pin = cfg.pin_workers;
	eo.buf_size = cfg.buf_size;
	eo.buf_count = cfg.buf_count;
	eo.ring_entries = cfg.ring_entries;
	eo.socket_sndbuf = cfg.socket_sndbuf;
	eo.socket_rcvbuf = cfg.socket_rcvbuf;
	eo.max_conns = cfg.max_conns;
	eo.send_high_water = cfg.session_buffer_bytes;
	app.engine = rs_engine_new(&eo, err, sizeof(err));
	if (!app.engine) {
		rs_error("main", "%s", err);
		goto out_app;
	}
	rs_engine_on_worker_start(app.engine, rs_console_worker_start, &app.console);
	/* A fleet: the view and kills across boxes (subscribed before the
	 * workers start), and the per-VM lock across boxes. */
	if (app.redis && rs_fleet_new(&app.fleet, app.engine, app.redis, cfg.fleet.key_prefix,
				      cfg.fleet.node)) {
		rs_error("main", "fleet: cannot subscribe to the kill channel");
		goto out_engine;
	}
	if (app.redis && app.pve)
		rs_pve_set_fleet(app.pve, app.redis, cfg.fleet.key_prefix, cfg.fleet.node);
	/* The admin socket comes first: a second instance is refused before it
	 * touches any port, and the socket exists once the daemon answers. */
	ctl = rs_ctl_start(&app, err, sizeof(err));
	if (!ctl && err[0]) {
		rs_error("main", "%s", err);
		goto out_engine;
	}
	if (add_listeners(&app, err, sizeof(err)) ||
	    rs_engine_start(app.engine, err, sizeof(err)) ||
	    rs_console_workers_ready(app.engine, err, sizeof(err))) {
		rs_error("main", "%s", err);
		goto out_engine;
	}
	if (app.fleet && rs_fleet_start(app.fleet)) {
		rs_error("main", "fleet: cannot start the heartbeat");
		goto out_engine;
	}
	atomic_store(&app.running, true);
	rs_info("main", "ringside %s started", RS_VERSION);
	print_listen(&app, rs_engine_workers(app.engine));

	for (uint64_t wait_ms = rs_app_tick(&app);;) {
		struct timespec tick = {.tv_sec = (time_t)(wait_ms / 1000),
					.tv_nsec = (long)(wait_ms % 1000) * 1000000};
		siginfo_t si;

		sig = sigtimedwait(&sigs, &si, &tick);
		if (sig < 0 || sig == RS_SIG_WAKE) {
			wait_ms = rs_app_tick(&app);
			continue;
		}
		if (sig == SIGHUP) {
			rs_info("main", "SIGHUP: reopening the logs, reloading the configuration "
					"and certificates");
			if (rs_log_open(cfg.log_target))
				rs_error("main", "cannot reopen log '%s'", cfg.log_target);
			rs_audit_reopen(app.audit);
			rs_app_reload(&app, NULL, false);
			wait_ms = rs_app_tick(&app);
			continue;
		}
		rs_info("main", "%s: stopping, draining for up to %u s",
			sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg.drain_timeout_s);
		break;
	}
	/* The admin thread calls into workers: stop it before them. */
	rs_ctl_stop(ctl);
	ctl = NULL;
	atomic_store(&app.draining, true);
	rs_engine_stop(app.engine, cfg.drain_timeout_s * 1000);
	rs_info("main", "stopped");
	ret = 0;

out_engine:
	rs_ctl_stop(ctl);
	rs_engine_stop(app.engine, 0);
	/* The workers are joined: the heartbeat's timer is disarmed from here,
	 * before the Redis clients (and their pending answers) go. */
	if (app.fleet)
		rs_fleet_worker_stop(app.fleet, rs_engine_worker(app.engine, 0));
	for (unsigned i = 0; i < rs_engine_workers(app.engine); i++)
		rs_console_worker_stop(rs_engine_worker(app.engine, i));
	rs_fleet_free(app.fleet);
	app.fleet = NULL;
	rs_engine_free(app.engine);
out_app:
	rs_app_release(&app);
out_config:
	rs_config_release(&cfg);
	return ret;
}
