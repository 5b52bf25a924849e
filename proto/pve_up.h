/* proto/pve_up.h — the upstream leg of a Proxmox VE console.
 *
 * At WebSocket-upgrade time (never at token creation: console ports accept
 * within 10 s and VNC tickets live 40 s) one rs_pve_up walks the console
 * sequence on one API endpoint over one keep-alive HTTPS connection:
 * [login] → [node discovery] → status check → vncproxy/termproxy →
 * vncwebsocket upgrade on the same connection (so it reaches the pveproxy
 * that owns the console port) → for terminals the `user:ticket` line and
 * termproxy's `OK`. Connect or TLS failures, 5xx, 595 and 596 move to the
 * next endpoint and redo the whole sequence there. After that it is a byte
 * stream: console bytes in and out, WebSocket-framed (masked) towards
 * pveproxy. pveproxy never sends a close frame; an unclean end is a normal
 * end.
 *
 * Clusters (rs_pve_new) are built once from the config on the control
 * thread and shared read-only by workers; their login-ticket cache and the
 * per-VM VNC-authentication locks take a mutex once per console open, never
 * per byte. An rs_pve_up lives on one worker.
 */
#ifndef RS_PVE_UP_H
#define RS_PVE_UP_H

#include "core/common.h"
#include "core/config.h"
#include "core/engine.h"
#include "core/spec.h"
#include "proto/console.h"

struct rs_pve;
struct rs_pve_up;

/* Build every configured cluster (TLS clients, resolved endpoints). 0 or
 * -errno with <err> naming the cluster. */
int rs_pve_new(struct rs_pve **out, const struct rs_config *cfg, char *err, size_t errlen);
void rs_pve_free(struct rs_pve *p);
bool rs_pve_has_cluster(const struct rs_pve *p, const char *name);

struct rs_pve_counters {
	_Atomic uint64_t failovers, api_errors, login_renewals, insecure_conns;
	/* The fleet's VM lock: consoles that waited for another box, and locks
	 * that could not be taken or released through Redis. */
	_Atomic uint64_t vmlock_waits, vmlock_errors;
};
const struct rs_pve_counters *rs_pve_counters(const struct rs_pve *p);

struct rs_pve_up_ops {
	/* The console stream is open. VNC: <vnc_password> is the RFB password
	 * to answer the VNC authentication with (valid during the call only);
	 * call rs_pve_up_auth_done() when that authentication is over. TERM:
	 * NULL, and bytes are terminal output. */
	void (*on_ready)(void *arg, const char *vnc_password);
	/* Console bytes from upstream (valid during the call; take a reference
	 * on <b> to keep them). */
	void (*on_data)(void *arg, struct rs_buf *b, uint8_t *data, size_t len);
	/* The upstream send queue drained below its low-water mark. */
	void (*on_drain)(void *arg);
	/* Setup failed, or the console ended after on_ready. Called once; the
	 * rs_pve_up is freed right after it returns. <reason> is fit for the
	 * browser: it never carries a secret, an address or a node name. */
	void (*on_end)(void *arg, enum rs_console_cause cause, const char *reason);
};

/* Open the upstream for <spec> (a Proxmox kind) on worker <w>. 0 or -errno
 * (then nothing was started and on_end is not called). */
struct rs_portpool;
/* <ports> (may be NULL): the worker's (source address, port) pairs for this
 * cluster's connections; a pair is held while its socket exists. */
int rs_pve_up_open(struct rs_pve *p, struct rs_worker *w, const struct rs_console_spec *spec,
		   unsigned timeout_ms, struct rs_portpool *ports, const struct rs_pve_up_ops *ops,
		   void *arg, struct rs_pve_up **out);

/* Send console bytes (after on_ready); 0 or -errno. May mask <data> in place. */
int rs_pve_up_send(struct rs_pve_up *u, struct rs_buf *b, uint8_t *data, size_t len);
bool rs_pve_up_congested(const struct rs_pve_up *u);
void rs_pve_up_pause(struct rs_pve_up *u);
void rs_pve_up_resume(struct rs_pve_up *u);
/* The VNC authentication of this console is over: the VM's next console may
 * reset its VNC password now, and what only the setup needed (tickets, node,
 * answer parser, lock keys) is freed and wiped — a held console keeps its
 * stream state alone (terminals drop it when termproxy says OK). */
void rs_pve_up_auth_done(struct rs_pve_up *u);
/* The target refused the VNC password this console's vncproxy made:
 * another client's vncproxy may have reset the VM's password since (it is
 * VM-wide). True when one fresh vncproxy is under way (on_ready comes
 * again with the new password, or on_end); false when it was tried already
 * or does not apply (a terminal, or after rs_pve_up_auth_done), and the
 * caller fails the console. Safe to call from on_data. */
bool rs_pve_up_retry_auth(struct rs_pve_up *u);
/* Close without calling on_end. */
void rs_pve_up_close(struct rs_pve_up *u);

/* The per-VM VNC-authentication lock (exposed for tests): true when taken,
 * false when <cl, vmid> is held or the table is full, never a success
 * without a lock. */
bool rs_pve_vm_lock(struct rs_pve *p, const void *cl, uint32_t vmid);
void rs_pve_vm_unlock(struct rs_pve *p, const void *cl, uint32_t vmid);

/* A fleet: the per-VM lock also holds across boxes, as the Redis key
 * `<key_prefix>vmlock:<cluster>:<vmid>` = "<node>/<nonce>", taken with
 * SET NX PX (it expires on its own when a box dies holding it, after the
 * console's handshake timeout, 2..30 s) after this box's own lock, and
 * released by compare-and-delete when the VNC authentication is over. When
 * Redis cannot answer, a console goes on with this box's lock alone
 * (counted in vmlock_errors). Control thread, before any console opens;
 * <pool> outlives <p>'s consoles. */
struct rs_redis_pool;
void rs_pve_set_fleet(struct rs_pve *p, struct rs_redis_pool *pool, const char *key_prefix,
		      const char *node);

#endif
