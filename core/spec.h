/* core/spec.h — the immutable description of one console.
 *
 * The API handler fills a spec and hands it to the token table
 * (rs_token_issue); the table owns it until the token is consumed, revoked or
 * expires; the consumer (the console session) owns it after
 * rs_token_consume. Nobody writes to a spec once it is issued, so any thread
 * may read one it owns without locks. rs_spec_free wipes every string,
 * secrets first: a freed spec leaves no password, address or node name in
 * the heap.
 */
#ifndef RS_SPEC_H
#define RS_SPEC_H

#include "core/common.h"

#include "core/addr.h"

#include <stdatomic.h>
#include <sys/socket.h>

enum rs_console_kind {
	RS_CONSOLE_VNC = 0, /* a plain VNC target, host:port */
	RS_CONSOLE_PVE_VNC,  /* Proxmox vncproxy + vncwebsocket */
	RS_CONSOLE_PVE_TERM, /* Proxmox termproxy (xterm.js) */
};

/* What one API key has in use, shared by every worker: links issued and not
 * yet consumed, revoked or expired, and consoles open. The record belongs to
 * the API's key set (admin/api.c) and outlives every spec that points to it
 * (key sets are retired, never freed, while the process runs). */
struct rs_key_usage {
	_Atomic unsigned pending;
	_Atomic unsigned consoles;
};

/* Take one unit of <*count> unless that would exceed <max> (0: unlimited).
 * Lock-free; true when taken. */
bool rs_usage_take(_Atomic unsigned *count, unsigned max);

/* Every pointer member is a heap string owned by the spec (NULL when unset),
 * except <usage>. */
struct rs_console_spec {
	enum rs_console_kind kind;
	char *host;
	uint16_t port;
	char *password; /* NULL: no VNC authentication; wiped on free */
	char *label;	/* free text for the audit log, never interpreted */
	char *api_key_name;
	int64_t created_s, expires_s; /* wall clock, for the audit log and the API answer */
	uint32_t ttl_s;
	bool ttl_explicit; /* the request named <ttl_s> (a key's max_ttl_s refuses it; a
			    * default above that limit is lowered to it instead) */
	/* View-only: the browser sees the screen but every input message it
	 * sends is dropped by ringside (proto/console.c), whatever the page
	 * does. */
	bool view_only;
	bool bind_ip;
	union rs_ip client_ip; /* AF_INET or AF_INET6, when <bind_ip> */
	/* Proxmox kinds (unused by RS_CONSOLE_VNC). */
	char *cluster, *node; /* cluster NULL: inline details (host, port, user, password) */
	char *user;           /* inline Proxmox login (ProxmoxVNC's /create) */
	uint32_t vmid;
	char *pve_type; /* "qemu" or "lxc" */
	/* The issuing key's usage (NULL: not counted). A spec issued with a
	 * <usage> holds one unit of usage->pending while the token table owns it
	 * (the table gives it back when the token leaves, see core/token.h). */
	struct rs_key_usage *usage;
	unsigned max_consoles; /* the key's open-console limit when issued; 0: none */
	bool console_held;     /* holds one unit of usage->consoles (rs_spec_open_console) */
};

/* A console opens for <s>: take one of its key's console places. True when
 * taken (or the spec is not counted); false when the key has max_consoles
 * open. rs_spec_free gives the place back. */
bool rs_spec_open_console(struct rs_console_spec *s);

/* A zeroed spec (kind RS_CONSOLE_VNC, no strings), or NULL when out of
 * memory: it is created per API request, so the caller sheds the request. */
struct rs_console_spec *rs_spec_new(void);

/* Wipe (explicit_bzero) and free every string, then the spec itself, giving
 * back its console place (console_held). NULL is accepted. The caller must own <s>: never free a spec the table still holds. */
void rs_spec_free(struct rs_console_spec *s);

#endif
