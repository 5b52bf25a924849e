/* admin/fleet.h — the fleet view: every box's live sessions, and kills
 * across boxes.
 *
 * Each box publishes, once per heartbeat (RS_FLEET_HEARTBEAT_MS) from worker
 * 0's thread, a hash `<prefix>box:<node>` {at, sessions} whose TTL is three
 * heartbeats (a box that dies leaves the view on its own), and registers its
 * node in the set `<prefix>boxes`. The same script (one EVAL, one round
 * trip) reads back every other box's sessions; the result is cached here, so
 * listings (ctl, the API, ProxmoxVNC's /status) never wait for Redis and
 * show other boxes as of the last heartbeat (at most about a second old).
 *
 * Published sessions carry no secret and no target address: id, box,
 * worker, kind, state, the token's 8-hex hash prefix, API key name, label,
 * VM id, age and byte counts.
 *
 * Kill: every box subscribes to `<prefix>kill:<node>`; a kill for another
 * box's session is a PUBLISH of the id (hex) on the owner's channel, which
 * ends it on the worker holding it.
 *
 * Threads: rs_fleet_new and rs_fleet_free on the control thread (before the
 * engine starts / after it stopped); rs_fleet_start after rs_engine_start;
 * rs_fleet_worker_stop on worker 0 before its Redis client stops; the rest
 * from any thread.
 */
#ifndef RS_FLEET_H
#define RS_FLEET_H

#include "core/common.h"
#include "core/engine.h"

#include <jansson.h>

#define RS_FLEET_HEARTBEAT_MS 1000
#define RS_FLEET_TTL_MS	      (3 * RS_FLEET_HEARTBEAT_MS)

struct rs_fleet;
struct rs_redis_pool;

struct rs_fleet_stats {
	uint64_t heartbeats, heartbeat_errors, kills_sent, kills_received, kills_done;
	uint64_t boxes;	   /* other live boxes in the last view */
	uint64_t sessions; /* their sessions */
};

/* Subscribe to this box's kill channel (before rs_engine_start). <pool>
 * and <e> outlive the fleet. 0 or -errno. */
int rs_fleet_new(struct rs_fleet **out, struct rs_engine *e, struct rs_redis_pool *pool,
		 const char *key_prefix, const char *node);
/* Arm the heartbeat on worker 0 (after rs_engine_start). 0 or -ENOMEM. */
int rs_fleet_start(struct rs_fleet *f);
/* On worker 0's thread: disarm the heartbeat (no command after this). */
void rs_fleet_worker_stop(struct rs_fleet *f, struct rs_worker *w);
void rs_fleet_free(struct rs_fleet *f);

const char *rs_fleet_node(const struct rs_fleet *f);
struct rs_redis_pool *rs_fleet_pool(const struct rs_fleet *f);

/* The other boxes' sessions as of the last heartbeat: a new JSON array of
 * objects (the fields above, "box" naming the holder). */
json_t *rs_fleet_others(struct rs_fleet *f);

/* A session of this box as the fleet view shows it (new reference). */
struct rs_console_info;
json_t *rs_fleet_session_json(const struct rs_fleet *f, const struct rs_console_info *i);

/* End session <id> on box <box> (NULL: the first other box listing <id> in
 * the fleet view — ids are unique per box only) with a PUBLISH on that
 * box's channel, sent from worker 0; <owner> receives the box's name. 0,
 * -ENOENT (<box> NULL and no other box lists <id>) or -ENOMEM. */
int rs_fleet_kill(struct rs_fleet *f, const char *box, uint64_t id, char *owner, size_t ownerlen);

void rs_fleet_stats_get(struct rs_fleet *f, struct rs_fleet_stats *out);

#endif
