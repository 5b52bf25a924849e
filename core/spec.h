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

#include <sys/socket.h>

enum rs_console_kind {
	RS_CONSOLE_VNC = 0, /* a plain VNC target, host:port */
	RS_CONSOLE_PVE_VNC,  /* Proxmox vncproxy + vncwebsocket */
	RS_CONSOLE_PVE_TERM, /* Proxmox termproxy (xterm.js) */
};

/* Every pointer member is a heap string owned by the spec (NULL when unset). */
struct rs_console_spec {
	enum rs_console_kind kind;
	char *host;
	uint16_t port;
	char *password; /* NULL: no VNC authentication; wiped on free */
	char *label;	/* free text for the audit log, never interpreted */
	char *api_key_name;
	int64_t created_s, expires_s; /* wall clock, for the audit log and the API answer */
	uint32_t ttl_s;
	bool bind_ip;
	struct sockaddr_storage client_ip; /* AF_INET or AF_INET6, when <bind_ip> */
	/* Proxmox kinds (unused by RS_CONSOLE_VNC). */
	char *cluster, *node; /* cluster NULL: inline details (host, port, user, password) */
	char *user;           /* inline Proxmox login (ProxmoxVNC's /create) */
	uint32_t vmid;
	char *pve_type; /* "qemu" or "lxc" */
};

/* A zeroed spec (kind RS_CONSOLE_VNC, no strings), or NULL when out of
 * memory: it is created per API request, so the caller sheds the request. */
struct rs_console_spec *rs_spec_new(void);

/* Wipe (explicit_bzero) and free every string, then the spec itself. NULL is
 * accepted. The caller must own <s>: never free a spec the table still holds. */
void rs_spec_free(struct rs_console_spec *s);

#endif
