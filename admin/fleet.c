/* admin/fleet.c — heartbeat, published sessions and kills across boxes
 * (see fleet.h). */
#include "admin/fleet.h"

#include <pthread.h>
#include <stdatomic.h>

#include "core/log.h"
#include "core/timer.h"
#include "proto/console.h"
#include "proto/redis.h"

#define MAX_LIST 4096 /* sessions published per worker */

struct rs_fleet {
	struct rs_engine *e;
	struct rs_redis_pool *pool;
	char prefix[64], node[64], channel[160];
	struct rs_timer timer; /* worker 0 */
	struct rs_worker *w0;
	bool in_flight, stopped;
	pthread_mutex_t mu; /* <others> */
	json_t *others;
	_Atomic uint64_t heartbeats, heartbeat_errors, kills_sent, kills_received, kills_done;
	_Atomic uint64_t boxes, sessions;
};

/* Publish this box and read every other one in one round trip; boxes whose
 * hash expired leave the set. ARGV: prefix, node, now (ms), sessions, TTL. */
static const char beat_lua[] =
    "local p, me = ARGV[1], ARGV[2] "
    "redis.call('HSET', p..'box:'..me, 'at', ARGV[3], 'sessions', ARGV[4]) "
    "redis.call('PEXPIRE', p..'box:'..me, ARGV[5]) "
    "redis.call('SADD', p..'boxes', me) "
    "local out = {} "
    "for _, b in ipairs(redis.call('SMEMBERS', p..'boxes')) do "
    "  if b ~= me then "
    "    local s = redis.call('HGET', p..'box:'..b, 'sessions') "
    "    if s then out[#out+1] = b; out[#out+1] = s "
    "    else redis.call('SREM', p..'boxes', b) end "
    "  end "
    "end "
    "return out";

const char *rs_fleet_node(const struct rs_fleet *f)
{
	return f->node;
}

struct rs_redis_pool *rs_fleet_pool(const struct rs_fleet *f)
{
	return f->pool;
}

json_t *rs_fleet_session_json(const struct rs_fleet *f, const struct rs_console_info *i)
{
	/* No target address, client address or secret: the fleet view lives
	 * in Redis, which must open nothing. */
	return json_pack(
	    "{s:I, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "id",
	    (json_int_t)i->id, "box", f->node, "worker", (int)i->worker, "kind", i->kind, "state",
	    i->state, "token", i->token_hash, "api_key", i->api_key, "label", i->label, "vmid",
	    (json_int_t)i->vmid, "created_s", (json_int_t)i->created_s, "connected_s",
	    (json_int_t)i->connected_s, "age_ms", (json_int_t)i->age_ms, "bytes_to_target",
	    (json_int_t)i->bytes_to_target, "bytes_to_browser", (json_int_t)i->bytes_to_browser);
}

static char *local_sessions(struct rs_fleet *f)
{
	json_t *arr = json_array();
	struct rs_console_info *items = malloc(MAX_LIST * sizeof(*items));
	char *text = NULL;

	if (!arr || !items)
		goto free_all;
	for (unsigned wi = 0; wi < rs_engine_workers(f->e); wi++) {
		size_t n = rs_console_list(rs_engine_worker(f->e, wi), items, MAX_LIST);

		for (size_t k = 0; k < RS_MIN(n, (size_t)MAX_LIST); k++)
			json_array_append_new(arr, rs_fleet_session_json(f, &items[k]));
	}
	text = json_dumps(arr, JSON_COMPACT);
free_all:
	free(items);
	json_decref(arr);
	return text;
}

static void arm(struct rs_fleet *f)
{
	if (!f->stopped)
		rs_timer_link(rs_worker_timers(f->w0), &f->timer,
			      rs_worker_now(f->w0) + RS_FLEET_HEARTBEAT_MS);
}

static void on_beat(void *arg, const redisReply *reply, int err)
{
	struct rs_fleet *f = arg;
	json_t *all, *old;
	uint64_t boxes = 0;

	f->in_flight = false;
	if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
		atomic_fetch_add(&f->heartbeat_errors, 1);
		return; /* the last view stays until the next heartbeat */
	}
	all = json_array();
	for (size_t k = 0; all && k + 1 < reply->elements; k += 2) {
		const redisReply *s = reply->element[k + 1];
		json_t *list =
		    s->type == REDIS_REPLY_STRING ? json_loadb(s->str, s->len, 0, NULL) : NULL;

		if (json_is_array(list)) {
			json_array_extend(all, list);
			boxes++;
		}
		json_decref(list);
	}
	if (!all)
		return;
	atomic_fetch_add(&f->heartbeats, 1);
	atomic_store(&f->boxes, boxes);
	atomic_store(&f->sessions, json_array_size(all));
	pthread_mutex_lock(&f->mu);
	old = f->others;
	f->others = all;
	pthread_mutex_unlock(&f->mu);
	json_decref(old);
}

static void beat(struct rs_fleet *f)
{
	struct rs_redis *r = rs_redis_of(f->pool, f->w0);
	char now[24], ttl[16], *sessions;
	const char *argv[8];

	if (f->in_flight || !r)
		return; /* the previous one still waits for Redis: one at a time */
	sessions = local_sessions(f);
	if (!sessions) {
		atomic_fetch_add(&f->heartbeat_errors, 1);
		return;
	}
	snprintf(now, sizeof(now), "%llu", (unsigned long long)rs_wall_s() * 1000);
	snprintf(ttl, sizeof(ttl), "%u", RS_FLEET_TTL_MS);
	argv[0] = "EVAL", argv[1] = beat_lua, argv[2] = "0", argv[3] = f->prefix;
	argv[4] = f->node, argv[5] = now, argv[6] = sessions, argv[7] = ttl;
	if (rs_redis_cmd(r, on_beat, f, 8, argv, NULL, NULL))
		atomic_fetch_add(&f->heartbeat_errors, 1);
	else
		f->in_flight = true;
	free(sessions);
}

static void on_timer(struct rs_timer *t)
{
	struct rs_fleet *f = rs_container_of(t, struct rs_fleet, timer);

	beat(f);
	arm(f);
}

static void start_on_worker(struct rs_worker *w, void *arg)
{
	struct rs_fleet *f = arg;

	(void)w;
	f->timer.cb = on_timer;
	beat(f);
	arm(f);
}

int rs_fleet_start(struct rs_fleet *f)
{
	f->w0 = rs_engine_worker(f->e, 0);
	return rs_worker_post(f->w0, start_on_worker, f);
}

void rs_fleet_worker_stop(struct rs_fleet *f, struct rs_worker *w)
{
	if (!f || w != f->w0)
		return;
	f->stopped = true;
	rs_timer_unlink(rs_worker_timers(w), &f->timer);
}

/* --- kills --- */

struct kill_msg {
	struct rs_fleet *f;
	uint64_t id;
	char box[64];
};

static void kill_on_worker(struct rs_worker *w, void *arg)
{
	struct kill_msg *k = arg;

	if (!rs_console_kill(w, k->id)) {
		atomic_fetch_add(&k->f->kills_done, 1);
		rs_info("fleet", "session %llx killed by an operator on another box",
			(unsigned long long)k->id);
	}
	free(k);
}

/* A kill for one of our sessions (worker 0's thread). */
static void on_kill_msg(void *arg, const char *channel, const char *msg, size_t len)
{
	struct rs_fleet *f = arg;
	struct kill_msg *k;
	char text[24], *end;
	unsigned wi;

	(void)channel;
	atomic_fetch_add(&f->kills_received, 1);
	if (!len || len >= sizeof(text))
		return;
	memcpy(text, msg, len);
	text[len] = 0;
	k = calloc(1, sizeof(*k));
	if (!k)
		return;
	k->f = f;
	k->id = strtoull(text, &end, 16);
	wi = (unsigned)(k->id >> 48); /* the id names its worker */
	if (*end || wi >= rs_engine_workers(f->e) ||
	    rs_worker_post(rs_engine_worker(f->e, wi), kill_on_worker, k))
		free(k);
}

static void on_published(void *arg, const redisReply *reply, int err)
{
	(void)arg, (void)reply, (void)err;
}

static void publish_on_worker(struct rs_worker *w, void *arg)
{
	struct kill_msg *k = arg;
	struct rs_redis *r = rs_redis_of(k->f->pool, w);
	char channel[160], id[24];
	const char *argv[] = {"PUBLISH", channel, id};

	snprintf(channel, sizeof(channel), "%skill:%s", k->f->prefix, k->box);
	snprintf(id, sizeof(id), "%llx", (unsigned long long)k->id);
	if (r && !rs_redis_cmd(r, on_published, NULL, 3, argv, NULL, NULL))
		atomic_fetch_add(&k->f->kills_sent, 1);
	free(k);
}

int rs_fleet_kill(struct rs_fleet *f, const char *box, uint64_t id, char *owner, size_t ownerlen)
{
	struct kill_msg *k;
	json_t *others = rs_fleet_others(f), *s;
	size_t i;
	int ret = -ENOENT;

	json_array_foreach(others, i, s)
	{
		if (!box && (uint64_t)json_integer_value(json_object_get(s, "id")) == id) {
			box = json_string_value(json_object_get(s, "box"));
			break;
		}
	}
	if (!box)
		goto free_others;
	ret = -ENOMEM;
	k = calloc(1, sizeof(*k));
	if (!k)
		goto free_others;
	k->f = f;
	k->id = id;
	snprintf(k->box, sizeof(k->box), "%s", box);
	if (owner)
		snprintf(owner, ownerlen, "%s", box);
	ret = rs_worker_post(f->w0, publish_on_worker, k);
	if (ret)
		free(k);
free_others:
	json_decref(others);
	return ret;
}

/* --- the rest --- */

json_t *rs_fleet_others(struct rs_fleet *f)
{
	json_t *copy;

	pthread_mutex_lock(&f->mu);
	copy = f->others ? json_deep_copy(f->others) : json_array();
	pthread_mutex_unlock(&f->mu);
	return copy ? copy : json_array();
}

void rs_fleet_stats_get(struct rs_fleet *f, struct rs_fleet_stats *o)
{
	o->heartbeats = atomic_load(&f->heartbeats);
	o->heartbeat_errors = atomic_load(&f->heartbeat_errors);
	o->kills_sent = atomic_load(&f->kills_sent);
	o->kills_received = atomic_load(&f->kills_received);
	o->kills_done = atomic_load(&f->kills_done);
	o->boxes = atomic_load(&f->boxes);
	o->sessions = atomic_load(&f->sessions);
}

int rs_fleet_new(struct rs_fleet **out, struct rs_engine *e, struct rs_redis_pool *pool,
		 const char *key_prefix, const char *node)
{
	struct rs_fleet *f = calloc(1, sizeof(*f));
	int ret = -ENOMEM;

	if (!f)
		goto fail;
	f->e = e;
	f->pool = pool;
	snprintf(f->prefix, sizeof(f->prefix), "%s", key_prefix ? key_prefix : "");
	snprintf(f->node, sizeof(f->node), "%s", node);
	snprintf(f->channel, sizeof(f->channel), "%skill:%s", f->prefix, f->node);
	pthread_mutex_init(&f->mu, NULL);
	ret = rs_redis_subscribe(pool, f->channel, on_kill_msg, f);
	if (ret)
		goto free_fleet;
	*out = f;
	return 0;
free_fleet:
	pthread_mutex_destroy(&f->mu);
	free(f);
fail:
	return ret;
}

void rs_fleet_free(struct rs_fleet *f)
{
	if (!f)
		return;
	json_decref(f->others);
	pthread_mutex_destroy(&f->mu);
	free(f);
}
