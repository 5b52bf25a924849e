#include "core/common.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "admin/app.h"
#include "admin/ctl.h"
#include "admin/fleet.h"
#include "core/log.h"
#include "core/text.h"
#include "core/token.h"
#include "proto/console.h"

#define REQ_MAX 4096
#define MAX_LIST 100000

#define CTL_CLIENTS 16          /* served at once */
#define CTL_REQUEST_MS 5000     /* to send the request line, from accept */
#define CTL_ANSWER_MS 5000      /* to read the whole answer */
#define CTL_LINGER_MS 500       /* input dropped after an error answer */
#define CTL_LINGER_BYTES (1u << 20)

struct client {
	int fd; /* -1: a free slot */
	enum { C_READ, C_WRITE, C_LINGER } st;
	bool linger; /* C_WRITE: the request was not read to its end */
	uint64_t deadline_ms;
	size_t n, len, off, dropped;
	char *answer;
	char req[REQ_MAX + 1];
};

struct rs_ctl {
	struct rs_app *app;
	char *path;
	int fd, wake[2];
	pthread_t thread;
	struct client clients[CTL_CLIENTS];
};

/* --- commands --- */

struct out {
	FILE *f;
	char *buf;
	size_t len;
	bool json;
};

static int err_out(struct out *o, const char *fmt, const char *arg)
{
	fprintf(o->f, "ERR ");
	fprintf(o->f, fmt, arg);
	fprintf(o->f, "\n");
	return 1;
}

static const char HELP[] =
	"commands:\n"
	"  help                     this list\n"
	"  stats                    totals and per-worker figures\n"
	"  sessions [filter]        open consoles (filter: text in key, label, target or client)\n"
	"                           --fleet: every box's (other boxes as of their last heartbeat)\n"
	"  session <id>             one console\n"
	"  kill <id>                close a console (on whichever worker, or box, holds it)\n"
	"  kill <box>/<id>          in a fleet: console <id> of box <box> (ids are per box)\n"
	"  revoke <token-hash>      revoke an unused console link by its 8-hex-digit log hash\n"
	"  drain                    refuse new consoles; open ones continue\n"
	"  undrain                  accept new consoles again\n"
	"  reload                   re-read the config file: log level, API keys, certificates\n"
	"                           (listeners, paths, limits, workers need a restart)\n"
	"  log-level <level>        debug, info, warn or error\n"
	"append --json for JSON\n";

static void cmd_stats(struct rs_app *app, struct out *o)
{
	struct rs_engine *e = app->engine;
	struct rs_token_stats ts;
	struct rs_console_stats cs;
	json_t *root, *workers;

	rs_token_stats_get(app->tokens, &ts);
	rs_console_stats(e, &cs);
	root = json_pack("{s:b, s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I, s:I}}",
			 "draining", atomic_load(&app->draining), "tokens", "live", (json_int_t)ts.live,
			 "issued", (json_int_t)ts.issued, "consumed", (json_int_t)ts.consumed,
			 "expired", (json_int_t)ts.expired, "revoked", (json_int_t)ts.revoked,
			 "rejected", (json_int_t)ts.rejected, "consoles", "opened",
			 (json_int_t)cs.opened, "active", (json_int_t)cs.active, "bytes_to_target",
			 (json_int_t)cs.bytes_to_target, "bytes_to_browser",
			 (json_int_t)cs.bytes_to_browser, "ports_in_use", (json_int_t)cs.ports_in_use,
			 "ports_total", (json_int_t)cs.ports_total);
	workers = json_array();
	for (unsigned i = 0; i < rs_engine_workers(e); i++) {
		struct rs_worker *w = rs_engine_worker(e, i);
		const struct rs_engine_stats *es = rs_worker_stats(w);
		struct rs_console_stats ws;
		const struct rs_bufpool *bp = rs_worker_bufpool(w);
		uint64_t loops = __atomic_load_n(&es->loops, __ATOMIC_RELAXED);
		uint64_t cqes = __atomic_load_n(&es->cqes, __ATOMIC_RELAXED);

		rs_console_worker_stats(w, &ws);
		json_array_append_new(
			workers,
			json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I}", "worker",
				  (int)i, "connections", (json_int_t)es->conns_live, "sessions_active",
				  (json_int_t)ws.active, "bytes_to_target",
				  (json_int_t)ws.bytes_to_target, "bytes_to_browser",
				  (json_int_t)ws.bytes_to_browser, "buffers_in_use",
				  (json_int_t)bp->out, "buffers_total", (json_int_t)bp->count,
				  "loops", (json_int_t)loops, "completions", (json_int_t)cqes,
				  "completions_per_loop", loops ? (double)cqes / (double)loops : 0.0,
				  "enobufs", (json_int_t)es->enobufs, "cq_overflows",
				  (json_int_t)es->cq_overflow));
	}
	json_object_set_new(root, "workers", workers);
	if (o->json) {
		json_dumpf(root, o->f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', o->f);
	} else {
		size_t i;
		json_t *w;

		fprintf(o->f, "draining          %s\n", atomic_load(&app->draining) ? "yes" : "no");
		fprintf(o->f, "tokens            live %llu  issued %llu  consumed %llu  expired %llu  "
			      "revoked %llu  rejected %llu\n",
			(unsigned long long)ts.live, (unsigned long long)ts.issued,
			(unsigned long long)ts.consumed, (unsigned long long)ts.expired,
			(unsigned long long)ts.revoked, (unsigned long long)ts.rejected);
		fprintf(o->f, "consoles          active %llu  opened %llu  bytes to target %llu  "
			      "to browser %llu\n",
			(unsigned long long)cs.active, (unsigned long long)cs.opened,
			(unsigned long long)cs.bytes_to_target, (unsigned long long)cs.bytes_to_browser);
		fprintf(o->f, "port pool         %llu of %llu in use\n",
			(unsigned long long)cs.ports_in_use, (unsigned long long)cs.ports_total);
		json_array_foreach(workers, i, w)
		{
			fprintf(o->f,
				"worker %zu          connections %lld  sessions %lld  buffers %lld/%lld  "
				"completions/loop %.2f  enobufs %lld  cq overflows %lld\n",
				i, json_integer_value(json_object_get(w, "connections")),
				json_integer_value(json_object_get(w, "sessions_active")),
				json_integer_value(json_object_get(w, "buffers_in_use")),
				json_integer_value(json_object_get(w, "buffers_total")),
				json_real_value(json_object_get(w, "completions_per_loop")),
				json_integer_value(json_object_get(w, "enobufs")),
				json_integer_value(json_object_get(w, "cq_overflows")));
		}
	}
	json_decref(root);
}

struct list_req {
	struct rs_console_info *items;
	size_t max, n;
};

static void list_on_worker(struct rs_worker *w, void *arg)
{
	struct list_req *r = arg;

	r->n = rs_console_list(w, r->items, r->max);
}

static json_t *info_json(const struct rs_console_info *i)
{
	return json_pack("{s:I, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "id",
			 (json_int_t)i->id, "worker", (int)i->worker, "kind", i->kind, "state",
			 i->state, "token", i->token_hash, "api_key", i->api_key, "label", i->label,
			 "target", i->target, "client", i->client, "age_ms", (json_int_t)i->age_ms,
			 "bytes_to_target", (json_int_t)i->bytes_to_target, "bytes_to_browser",
			 (json_int_t)i->bytes_to_browser);
}

static bool matches(const struct rs_console_info *i, const char *filter)
{
	return !filter || strstr(i->api_key, filter) || strstr(i->label, filter) ||
	       strstr(i->target, filter) || strstr(i->client, filter) ||
	       strstr(i->token_hash, filter) || strstr(i->state, filter);
}

/* Other boxes' sessions (fleet.h) matching <filter>: no target or client
 * address is published, so the filter sees key, label, token, state, box. */
static int add_fleet(struct rs_app *app, json_t *arr, const char *filter, const uint64_t *only)
{
	json_t *others = rs_fleet_others(app->fleet), *v;
	size_t k;
	int found = 0;

	json_array_foreach(others, k, v)
	{
		const char *fields[] = {"api_key", "label", "token", "state", "box"};
		bool hit = !filter;

		for (size_t f = 0; !hit && f < RS_ARRAY_SIZE(fields); f++) {
			const char *t = json_string_value(json_object_get(v, fields[f]));

			hit = t && strstr(t, filter);
		}
		if (only ? (uint64_t)json_integer_value(json_object_get(v, "id")) != *only : !hit)
			continue;
		json_array_append(arr, v);
		found++;
	}
	json_decref(others);
	return found;
}

static const char *str(json_t *v, const char *key)
{
	const char *s = json_string_value(json_object_get(v, key));

	return s ? s : "-";
}

/* <only>: a single session id (0 is a valid id: worker 0, slot 0,
 * generation 0), or NULL for a list filtered by <filter>.
 * <fleet>: other boxes' sessions too, each entry naming its box. */
static int cmd_sessions(struct rs_app *app, struct out *o, const char *filter,
			const uint64_t *only, bool fleet)
{
	struct rs_engine *e = app->engine;
	json_t *arr = json_array();
	int found = 0;

	fleet = fleet && app->fleet;

	for (unsigned wi = 0; wi < rs_engine_workers(e); wi++) {
		struct list_req r = {.max = 4096};

		/* Each worker copies its sessions out on its own thread. */
		for (;;) {
			r.items = malloc(r.max * sizeof(*r.items));
			if (!r.items || rs_worker_call(rs_engine_worker(e, wi), list_on_worker, &r)) {
				free(r.items);
				json_decref(arr);
				return err_out(o, "%s", "out of memory");
			}
			if (r.n <= r.max || r.max >= MAX_LIST)
				break;
			free(r.items);
			r.max = r.n + 1024;
		}
		for (size_t k = 0; k < RS_MIN(r.n, r.max); k++) {
			const struct rs_console_info *i = &r.items[k];
			json_t *v;

			if ((only && i->id != *only) || (!only && !matches(i, filter)))
				continue;
			v = info_json(i);
			if (fleet)
				json_object_set_new(v, "box", json_string(rs_fleet_node(app->fleet)));
			json_array_append_new(arr, v);
			found++;
		}
		free(r.items);
	}
	if (fleet && !(only && found))
		found += add_fleet(app, arr, filter, only);
	if (only && !found) {
		json_decref(arr);
		return err_out(o, "%s", "no such session");
	}
	fprintf(o->f, "OK\n");
	if (o->json) {
		/* ASCII: labels' C1 controls and bidi overrides stay \uXXXX escapes. */
		json_dumpf(only ? json_array_get(arr, 0) : arr, o->f,
			   JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		fputc('\n', o->f);
	} else {
		size_t k;
		json_t *v;

		if (!only)
			fprintf(o->f, "%s%-16s %-6s %-4s %-9s %-8s %-24s %-40s %-10s %10s %12s\n",
				fleet ? "BOX              " : "", "ID", "WORKER", "KIND", "STATE",
				"TOKEN", "TARGET", "CLIENT", "AGE_S", "TO_TARGET", "TO_BROWSER");
		json_array_foreach(arr, k, v)
		{
			if (fleet) /* another box's target and client are not published: "-" */
				fprintf(o->f, "%-16.16s ", str(v, "box"));
			fprintf(o->f, "%-16llx %-6lld %-4s %-9s %-8s %-24s %-40s %-10.1f %10lld %12lld\n",
				(unsigned long long)json_integer_value(json_object_get(v, "id")),
				json_integer_value(json_object_get(v, "worker")), str(v, "kind"),
				str(v, "state"), str(v, "token"), str(v, "target"), str(v, "client"),
				(double)json_integer_value(json_object_get(v, "age_ms")) / 1000.0,
				json_integer_value(json_object_get(v, "bytes_to_target")),
				json_integer_value(json_object_get(v, "bytes_to_browser")));
			if (only) {
				/* An API client chose the label: the operator's terminal
				 * gets no control or bidi override from it. */
				const char *key = str(v, "api_key");
				const char *label = str(v, "label");
				char ckey[256], clabel[800];

				rs_text_sanitize(ckey, sizeof(ckey), key, strlen(key));
				rs_text_sanitize(clabel, sizeof(clabel), label, strlen(label));
				fprintf(o->f, "api_key %s  label %s\n", ckey, clabel);
			}
		}
	}
	json_decref(arr);
	return 0;
}

struct kill_req {
	uint64_t id;
	int ret;
};

static void kill_on_worker(struct rs_worker *w, void *arg)
{
	struct kill_req *k = arg;

	k->ret = rs_console_kill(w, k->id);
}

static int parse_id(const char *s, uint64_t *id)
{
	char *end;

	errno = 0;
	*id = strtoull(s, &end, 16);
	return (!*s || *end || errno) ? -EINVAL : 0;
}

/* Another box's session: <on> names the box, or NULL for the first other
 * box that lists <id>. */
static int kill_elsewhere(struct rs_app *app, struct out *o, const char *on, uint64_t id)
{
	char box[64];
	json_t *j;

	if (!app->fleet || rs_fleet_kill(app->fleet, on, id, box, sizeof(box)))
		return err_out(o, "%s", "no such session");
	rs_info("ctl", "session %llx on box %s: kill sent by an operator", (unsigned long long)id,
		rs_log_q(box));
	fprintf(o->f, "OK\n");
	if (!o->json) {
		fprintf(o->f, "kill sent to box %s\n", box);
		return 0;
	}
	j = json_pack("{s:b, s:s}", "killed", 1, "box", box);
	json_dumpf(j, o->f, JSON_COMPACT | JSON_ENSURE_ASCII);
	fputc('\n', o->f);
	json_decref(j);
	return 0;
}

static int cmd_kill(struct rs_app *app, struct out *o, const char *arg)
{
	struct kill_req k = {0};
	const char *slash = arg ? strchr(arg, '/') : NULL;
	char box[64] = "";
	unsigned wi;

	if (slash) { /* <box>/<id>: this box's own, or another's */
		snprintf(box, sizeof(box), "%.*s", (int)(slash - arg), arg);
		arg = slash + 1;
	}
	if (!arg || parse_id(arg, &k.id) || (slash && !box[0]))
		return err_out(o, "%s", "usage: kill [<box>/]<id> (hexadecimal, from 'sessions')");
	if (box[0] && (!app->fleet || strcmp(box, rs_fleet_node(app->fleet))))
		return kill_elsewhere(app, o, box, k.id);
	wi = (unsigned)(k.id >> 48);
	/* The id names the worker that owns the session: the kill runs there.
	 * Not ours: the box that lists it in the fleet view ends it. */
	if (wi >= rs_engine_workers(app->engine) ||
	    rs_worker_call(rs_engine_worker(app->engine, wi), kill_on_worker, &k) || k.ret)
		return kill_elsewhere(app, o, NULL, k.id);
	rs_info("ctl", "session %llx killed by an operator", (unsigned long long)k.id);
	fprintf(o->f, "OK\n%s", o->json ? "{\"killed\":true}\n" : "killed\n");
	return 0;
}

static int ok(struct out *o, const char *text, const char *json)
{
	fprintf(o->f, "OK\n%s\n", o->json ? json : text);
	return 0;
}

int rs_ctl_execute(struct rs_app *app, const char *line, char **result)
{
	struct out o = {0};
	char buf[REQ_MAX + 1], *argv[8], *save = NULL, *tok;
	int argc = 0, ret = 0;
	bool fleet = false;

	o.f = open_memstream(&o.buf, &o.len);
	if (!o.f)
		return 1;
	snprintf(buf, sizeof(buf), "%s", line);
	for (tok = strtok_r(buf, " \t\r\n", &save); tok && argc < 8;
	     tok = strtok_r(NULL, " \t\r\n", &save)) {
		if (!strcmp(tok, "--json"))
			o.json = true;
		else if (!strcmp(tok, "--fleet"))
			fleet = true;
		else
			argv[argc++] = tok;
	}
	if (!argc) {
		ret = err_out(&o, "%s", "empty request; try 'help'");
	} else if (!atomic_load(&app->running) && strcmp(argv[0], "help")) {
		ret = err_out(&o, "%s", "starting up; try again in a moment");
	} else if (!strcmp(argv[0], "help")) {
		ret = ok(&o, HELP, "{\"commands\":[\"help\",\"stats\",\"sessions\",\"session\",\"kill\","
				   "\"revoke\",\"drain\",\"undrain\",\"reload\",\"log-level\"]}");
	} else if (!strcmp(argv[0], "stats")) {
		fprintf(o.f, "OK\n");
		cmd_stats(app, &o);
	} else if (!strcmp(argv[0], "sessions")) {
		ret = cmd_sessions(app, &o, argc > 1 ? argv[1] : NULL, NULL, fleet);
	} else if (!strcmp(argv[0], "session")) {
		uint64_t id;

		if (argc < 2 || parse_id(argv[1], &id))
			ret = err_out(&o, "%s", "usage: session <id>");
		else
			ret = cmd_sessions(app, &o, NULL, &id, fleet);
	} else if (!strcmp(argv[0], "kill")) {
		ret = cmd_kill(app, &o, argc > 1 ? argv[1] : NULL);
	} else if (!strcmp(argv[0], "revoke")) {
		if (argc < 2 || strlen(argv[1]) != 8)
			ret = err_out(&o, "%s", "usage: revoke <token-hash> (8 hex digits from the logs)");
		else {
			/* With a fleet store: on every box's links, through Redis. */
			int r = rs_store_revoke_hash(app->store, app->engine, argv[1]);

			if (r == -EAGAIN)
				ret = err_out(&o, "%s", "store_unavailable: the link store (Redis) "
							"did not answer; try again");
			else if (r)
				ret = err_out(&o, "%s", "no pending console link with that hash");
			else
				ret = ok(&o, "revoked", "{\"revoked\":true}");
		}
	} else if (!strcmp(argv[0], "drain") || !strcmp(argv[0], "undrain")) {
		bool on = !strcmp(argv[0], "drain");

		atomic_store(&app->draining, on);
		rs_info("ctl", "%s", on ? "draining: new consoles are refused"
					: "accepting new consoles again");
		ret = ok(&o, on ? "draining: new consoles are refused, open ones continue"
				: "accepting new consoles",
			 on ? "{\"draining\":true}" : "{\"draining\":false}");
	} else if (!strcmp(argv[0], "log-level")) {
		enum rs_log_level l;

		if (argc < 2 || rs_log_level_parse(argv[1], &l)) {
			ret = err_out(&o, "%s", "usage: log-level debug|info|warn|error");
		} else {
			char json[48];

			rs_log_set_level(l);
			snprintf(json, sizeof(json), "{\"log_level\":\"%s\"}", rs_log_level_name(l));
			ret = ok(&o, rs_log_level_name(l), json);
		}
	} else if (!strcmp(argv[0], "reload")) {
		ret = rs_app_reload(app, o.f, o.json) ? 1 : 0;
	} else {
		ret = err_out(&o, "unknown command '%.64s'; try 'help'", argv[0]);
	}
	fclose(o.f);
	*result = o.buf;
	return ret;
}

/* --- server --- */

/* Clients are served side by side, each with its own deadline, so one that
 * sends a byte every second (or never reads its answer) holds only its own
 * slot, and only until its deadline; the thread never blocks on a client, so
 * rs_ctl_stop (SIGTERM's drain) never waits for one either. */
static void client_close(struct client *cl)
{
	close(cl->fd);
	cl->fd = -1;
	free(cl->answer);
	cl->answer = NULL;
}

/* Answer <text> (taking ownership of a malloc'd one when <owned>), then close;
 * <linger>: input was left unread, see C_LINGER. */
static void client_answer(struct client *cl, char *text, bool owned, bool linger, uint64_t now)
{
	cl->answer = owned ? text : rs_xstrdup(text);
	cl->len = strlen(cl->answer);
	cl->off = 0;
	cl->linger = linger;
	cl->st = C_WRITE;
	cl->deadline_ms = now + CTL_ANSWER_MS;
}

static void client_request(struct rs_ctl *c, struct client *cl, uint64_t now)
{
	char *answer = NULL;

	cl->req[cl->n] = 0;
	if (memchr(cl->req, 0, cl->n))
		return client_answer(cl, "ERR request contains a NUL byte\n", false, false, now);
	rs_ctl_execute(c->app, cl->req, &answer);
	if (!answer)
		return client_close(cl);
	/* Executing may have taken a while (a call on every worker): the answer
	 * gets its own time from now. */
	client_answer(cl, answer, true, false, rs_now_ms());
}

static void client_read(struct rs_ctl *c, struct client *cl, uint64_t now)
{
	for (;;) {
		ssize_t r = read(cl->fd, cl->req + cl->n, REQ_MAX - cl->n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r < 0)
			return client_close(cl);
		if (r > 0 && memchr(cl->req + cl->n, '\n', (size_t)r)) {
			cl->n += (size_t)r;
			return client_request(c, cl, now);
		}
		cl->n += (size_t)r;
		if (cl->n >= REQ_MAX)
			return client_answer(cl, "ERR request too long (4096 bytes at most)\n", false,
					     true, now);
		if (!r)
			return client_answer(
			    cl, "ERR incomplete request (one line, ending in a newline)\n", false,
			    false, now);
	}
}

static void client_write(struct client *cl, uint64_t now)
{
	while (cl->off < cl->len) {
		ssize_t w = write(cl->fd, cl->answer + cl->off, cl->len - cl->off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (w <= 0)
			return client_close(cl); /* the client is gone */
		cl->off += (size_t)w;
	}
	if (!cl->linger)
		return client_close(cl);
	/* Closing with unread input would reset the connection and lose the
	 * answer: stop writing, then drop input for a bounded moment. */
	shutdown(cl->fd, SHUT_WR);
	cl->st = C_LINGER;
	cl->dropped = 0;
	cl->deadline_ms = now + CTL_LINGER_MS;
}

static void client_drop_input(struct client *cl)
{
	char buf[4096];

	for (;;) {
		ssize_t r = read(cl->fd, buf, sizeof(buf));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0 || (cl->dropped += (size_t)r) >= CTL_LINGER_BYTES)
			return client_close(cl);
	}
}

static void client_step(struct rs_ctl *c, struct client *cl, short revents, uint64_t now)
{
	if (now >= cl->deadline_ms) {
		if (cl->st == C_READ)
			return client_answer(cl,
					     "ERR timed out: send one line, ending in a newline, "
					     "within 5 s\n",
					     false, false, now);
		return client_close(cl);
	}
	if (!revents)
		return;
	if (cl->st == C_READ)
		client_read(c, cl, now);
	else if (cl->st == C_WRITE)
		client_write(cl, now);
	else
		client_drop_input(cl);
}

static void accept_clients(struct rs_ctl *c, uint64_t now)
{
	for (size_t i = 0; i < CTL_CLIENTS; i++) {
		struct client *cl = &c->clients[i];
		int fd;

		if (cl->fd >= 0)
			continue;
		fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return; /* EAGAIN: none waiting; anything else: try on the next wakeup */
		cl->fd = fd;
		cl->st = C_READ;
		cl->n = 0;
		cl->deadline_ms = now + CTL_REQUEST_MS;
	}
}

static void *ctl_main(void *arg)
{
	struct rs_ctl *c = arg;
	struct pollfd p[2 + CTL_CLIENTS];
	struct client *of[2 + CTL_CLIENTS];

	pthread_setname_np(pthread_self(), "rs-ctl");
	for (;;) {
		uint64_t now = rs_now_ms(), next = UINT64_MAX;
		nfds_t n = 2;
		bool full = true;
		int timeout;

		p[0] = (struct pollfd){.fd = c->wake[0], .events = POLLIN};
		for (size_t i = 0; i < CTL_CLIENTS; i++) {
			struct client *cl = &c->clients[i];

			if (cl->fd < 0) {
				full = false;
				continue;
			}
			p[n] = (struct pollfd){.fd = cl->fd,
					       .events = cl->st == C_WRITE ? POLLOUT : POLLIN};
			of[n++] = cl;
			next = RS_MIN(next, cl->deadline_ms);
		}
		/* All slots taken: new clients wait in the backlog until a deadline
		 * frees one. */
		p[1] = (struct pollfd){.fd = full ? -1 : c->fd, .events = POLLIN};
		timeout = next == UINT64_MAX ? -1 : next <= now ? 0 : (int)RS_MIN(next - now, 60000u);
		if (poll(p, n, timeout) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		now = rs_now_ms();
		for (nfds_t k = 2; k < n; k++)
			client_step(c, of[k], p[k].revents, now);
		if (p[1].revents & POLLIN)
			accept_clients(c, now);
	}
	for (size_t i = 0; i < CTL_CLIENTS; i++)
		if (c->clients[i].fd >= 0)
			client_close(&c->clients[i]);
	return NULL;
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

struct rs_ctl *rs_ctl_start(struct rs_app *app, char *err, size_t errlen)
{
	const struct rs_config *cfg = app->cfg;
	struct sockaddr_un sa;
	struct rs_ctl *c;
	mode_t old;
	int fd, probe;

	err[0] = 0;
	if (!cfg->admin_socket || !*cfg->admin_socket)
		return NULL;
	if (unix_addr(cfg->admin_socket, &sa)) {
		snprintf(err, errlen, "admin socket path too long: '%s'", cfg->admin_socket);
		return NULL;
	}
	/* A socket file that still answers belongs to a running instance. */
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && !connect(probe, (struct sockaddr *)&sa, sizeof(sa))) {
		close(probe);
		snprintf(err, errlen, "another ringside owns the admin socket '%s'",
			 cfg->admin_socket);
		return NULL;
	}
	if (probe >= 0)
		close(probe);
	unlink(cfg->admin_socket); /* stale: nobody answers on it */
	/* Non-blocking: the serving thread accepts until none is waiting. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "admin socket: %s", strerror(errno));
		return NULL;
	}
	/* Created with the final mode at once: no window with a wider one. */
	old = umask((mode_t)(~cfg->admin_socket_mode & 0777));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 16)) {
		umask(old);
		snprintf(err, errlen, "cannot create the admin socket '%s': %s", cfg->admin_socket,
			 strerror(errno));
		close(fd);
		return NULL;
	}
	umask(old);
	chmod(cfg->admin_socket, cfg->admin_socket_mode);
	if ((cfg->admin_socket_owner && *cfg->admin_socket_owner) ||
	    (cfg->admin_socket_group && *cfg->admin_socket_group)) {
		struct passwd *pw = cfg->admin_socket_owner && *cfg->admin_socket_owner
					    ? getpwnam(cfg->admin_socket_owner)
					    : NULL;
		struct group *g = cfg->admin_socket_group && *cfg->admin_socket_group
					  ? getgrnam(cfg->admin_socket_group)
					  : NULL;
		bool want_owner = cfg->admin_socket_owner && *cfg->admin_socket_owner;
		bool want_group = cfg->admin_socket_group && *cfg->admin_socket_group;

		if ((want_owner && !pw) || (want_group && !g) ||
		    chown(cfg->admin_socket, pw ? pw->pw_uid : (uid_t)-1,
			  g ? g->gr_gid : (gid_t)-1)) {
			snprintf(err, errlen, "admin socket: cannot give it to owner '%s' group '%s'",
				 want_owner ? cfg->admin_socket_owner : "-",
				 want_group ? cfg->admin_socket_group : "-");
			close(fd);
			unlink(cfg->admin_socket);
			return NULL;
		}
	}
	c = rs_xcalloc(1, sizeof(*c));
	c->app = app;
	c->fd = fd;
	for (size_t i = 0; i < CTL_CLIENTS; i++)
		c->clients[i].fd = -1;
	c->path = rs_xstrdup(cfg->admin_socket);
	if (pipe2(c->wake, O_CLOEXEC)) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		close(fd);
		free(c->path);
		free(c);
		return NULL;
	}
	pthread_create(&c->thread, NULL, ctl_main, c);
	rs_info("ctl", "admin socket %s (mode %04o)", c->path, cfg->admin_socket_mode);
	return c;
}

void rs_ctl_stop(struct rs_ctl *c)
{
	if (!c)
		return;
	if (write(c->wake[1], "x", 1) < 0) {
		/* the thread still ends when the pipe closes */
	}
	pthread_join(c->thread, NULL);
	close(c->fd);
	close(c->wake[0]);
	close(c->wake[1]);
	unlink(c->path);
	free(c->path);
	free(c);
}

/* --- client --- */

int rs_ctl_client(int argc, char **argv)
{
	const char *path = getenv("RINGSIDE_ADMIN_SOCKET");
	char line[REQ_MAX + 2] = "", buf[65536];
	struct sockaddr_un sa;
	size_t n = 0;
	int fd, i = 0, status = -1;
	FILE *in;

	if (!path)
		path = "/run/ringside/admin.sock";
	for (; i < argc && !strncmp(argv[i], "--socket", 8); i++) {
		if (argv[i][8] == '=')
			path = argv[i] + 9;
		else if (i + 1 < argc)
			path = argv[++i];
	}
	if (i >= argc) {
		fputs("usage: ringside ctl [--socket PATH] <command> [args] [--json]  (try: help)\n",
		      stderr);
		return 2;
	}
	for (; i < argc; i++) {
		if (n + strlen(argv[i]) + 2 > REQ_MAX) {
			fputs("ringside ctl: request too long\n", stderr);
			return 2;
		}
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s", n ? " " : "", argv[i]);
	}
	line[n++] = '\n';
	if (unix_addr(path, &sa)) {
		fputs("ringside ctl: socket path too long\n", stderr);
		return 2;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "ringside ctl: cannot reach %s: %s\n", path, strerror(errno));
		return 3;
	}
	if (write(fd, line, n) != (ssize_t)n) {
		fprintf(stderr, "ringside ctl: write: %s\n", strerror(errno));
		close(fd);
		return 3;
	}
	in = fdopen(fd, "r");
	while (in && fgets(buf, sizeof(buf), in)) {
		if (status < 0) {
			status = strncmp(buf, "OK", 2) ? 1 : 0;
			if (status)
				fprintf(stderr, "ringside ctl: %s", buf[0] == 'E' ? buf + 4 : buf);
			continue;
		}
		fputs(buf, status ? stderr : stdout);
	}
	if (in)
		fclose(in);
	if (status < 0) {
		fputs("ringside ctl: no answer\n", stderr);
		return 3;
	}
	return status;
}
