/* proto/pve.h — Proxmox VE API client codec (pure: no I/O).
 *
 * Builders write whole HTTP/1.1 requests for the console flow (login,
 * vncproxy/termproxy, VM lookup, status, the vncwebsocket upgrade) into a
 * caller buffer. Decoders turn a response (status, reason phrase, body, as
 * given by proto/http_resp.h) into structs, using jansson for the JSON.
 * Wire facts come from reading PVE's source (pve-access-control,
 * qemu-server, pve-container, pve-http-server), not from a live cluster.
 *
 * Builders return the request length (the request is also NUL-terminated,
 * so <cap> must exceed it by one), -ENOSPC when it does not fit (the buffer
 * content is then unspecified) or -EINVAL when an input cannot be embedded
 * safely: a node name outside [A-Za-z0-9.-] (1-63 bytes), a vmid outside
 * 100..999999999, a port outside 5900..5999, a CR, LF or other control byte
 * in any string, a space in a header token. Inputs are borrowed for the
 * call only. Requests that carry secrets should be wiped by the caller
 * (explicit_bzero) once sent.
 *
 * Decoders return RS_PVE_OK (0) or an rs_pve_err cause; <err> (may be NULL)
 * is always filled: zeroed on success, the cause and the server's text for
 * the user on failure. On success the output struct owns heap strings; on
 * failure it is left zeroed. Secrets are wiped before they are freed,
 * including jansson's copies.
 */
#ifndef RS_PVE_H
#define RS_PVE_H

#include "core/common.h"

#include "proto/http_resp.h"

#define RS_PVE_VMID_MIN 100u
#define RS_PVE_VMID_MAX 999999999u
#define RS_PVE_PORT_MIN 5900u
#define RS_PVE_PORT_MAX 5999u
#define RS_PVE_NODE_MAX 63u

enum rs_pve_vmtype {
	RS_PVE_QEMU = 0,
	RS_PVE_LXC,
};

/* "qemu" or "lxc" (as in API paths). */
const char *rs_pve_vmtype_str(enum rs_pve_vmtype t);

/* --- Authentication (borrowed strings, never copied) --- */

enum rs_pve_auth_kind {
	RS_PVE_AUTH_TOKEN = 0, /* Authorization: PVEAPIToken=<token_id>=<secret> */
	RS_PVE_AUTH_TICKET,    /* Cookie: PVEAuthCookie=<ticket>, + CSRF on non-GET */
};

struct rs_pve_auth {
	enum rs_pve_auth_kind kind;
	/* TOKEN: "user@realm!tokenid" and the UUID secret. The server splits
	 * at the last '=', so the secret may not contain one. */
	const char *token_id, *secret;
	/* TICKET: the ticket (percent-encoded in the cookie) and the
	 * CSRFPreventionToken, required for POST. */
	const char *ticket, *csrf;
};

/* --- Request builders --- */

/* POST /api2/json/access/ticket with username and password, form-encoded.
 * Also renews a ticket: pass the current ticket as <password>. No auth
 * header: the endpoint takes none. */
int rs_pve_req_login(char *out, size_t cap, const char *host, const char *username,
		     const char *password);

/* POST /api2/json/nodes/<node>/<type>/<vmid>/vncproxy with websocket=1.
 * <width>/<height> (0: omit) are sent for LXC only (16-4096 x 16-2160, else
 * -EINVAL); QEMU refuses them with a 400, so they are never sent for it. */
int rs_pve_req_vncproxy(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
			const char *node, enum rs_pve_vmtype type, uint32_t vmid, unsigned width,
			unsigned height);

/* POST /api2/json/nodes/<node>/<type>/<vmid>/termproxy, empty body. */
int rs_pve_req_termproxy(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
			 const char *node, enum rs_pve_vmtype type, uint32_t vmid);

/* GET /api2/json/cluster/resources?type=vm */
int rs_pve_req_resources(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth);

/* GET /api2/json/nodes/<node>/<type>/<vmid>/status/current */
int rs_pve_req_status(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
		      const char *node, enum rs_pve_vmtype type, uint32_t vmid);

/* GET /api2/json/nodes/<node>/<type>/<vmid>/vncwebsocket?port=<port>&vncticket=<ticket>
 * upgrade request: the ticket fully percent-encoded (PVE turns '+' into a
 * space), Sec-WebSocket-Protocol: binary (mandatory before PVE 7, harmless
 * since), <ws_key> as Sec-WebSocket-Key (24 base64 characters, else
 * -EINVAL), and the auth header (no CSRF: it is a GET). */
int rs_pve_req_vncwebsocket(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
			    const char *node, enum rs_pve_vmtype type, uint32_t vmid, unsigned port,
			    const char *vncticket, const char *ws_key);

/* Percent-encode <in> into <out>, everything but A-Z a-z 0-9 - . _ ~ as
 * %XX. Returns the length written (NUL-terminated) or -ENOSPC. */
int rs_pve_pct_encode(char *out, size_t cap, const char *in);

/* --- Errors a user meets --- */

enum rs_pve_err {
	RS_PVE_OK = 0,
	RS_PVE_E_AUTH,	      /* 401: bad credentials, expired ticket, bad CSRF */
	RS_PVE_E_TFA,	      /* login needs a second factor (NeedTFA) */
	RS_PVE_E_PERM,	      /* 403: e.g. VM.Console missing */
	RS_PVE_E_NOT_FOUND,   /* 500 "does not exist": wrong node or no such VM */
	RS_PVE_E_NO_VM,	      /* cluster/resources does not list the vmid */
	RS_PVE_E_NO_NODE,     /* 500 "hostname lookup '<node>' failed": not a cluster member */
	RS_PVE_E_PARAM,	      /* 400 parameter verification */
	RS_PVE_E_SERVER,      /* other 5xx */
	RS_PVE_E_UNREACHABLE, /* 595/596: pveproxy could not reach the other node */
	RS_PVE_E_STATUS,      /* any other unexpected status (3xx, 404, ...) */
	RS_PVE_E_UPGRADE,     /* 101 answer fails the WebSocket checks */
	RS_PVE_E_MALFORMED,   /* 2xx with a body we cannot use */
	RS_PVE_E_NOMEM,
	RS_PVE_E__COUNT,
};

struct rs_pve_error {
	enum rs_pve_err code;
	int status; /* HTTP status, 0 when not from one */
	/* Printable ASCII, NUL-terminated: the server's text (reason phrase or
	 * "message"), the first bad parameter for a 400, or what was wrong with
	 * the body. Never contains a ticket or password from our request. */
	char detail[200];
};

/* A fixed, readable sentence for <e> (never NULL). */
const char *rs_pve_err_str(enum rs_pve_err e);

/* Should the client retry the whole sequence on another API endpoint?
 * True for 5xx other than "does not exist" and "hostname lookup ... failed"
 * (pveproxy's answers about the node asked for, the same on every endpoint),
 * and for 595/596 (connect and TLS
 * failures, outside this codec, also qualify). */
bool rs_pve_err_failover(enum rs_pve_err e);

/* Map a non-2xx answer to its cause (decoders do this themselves). */
enum rs_pve_err rs_pve_classify(int status, const char *reason, const uint8_t *body,
				size_t body_len, struct rs_pve_error *err);

/* --- Decoders --- */

/* POST access/ticket. Owns three heap strings; ticket and csrf are secrets. */
struct rs_pve_login {
	char *username;
	char *ticket;
	char *csrf;
};

/* Wipe (explicit_bzero) and free every string, leaving <l> zeroed. */
void rs_pve_login_wipe(struct rs_pve_login *l);

/* 200 with data.{username,ticket,CSRFPreventionToken} -> RS_PVE_OK;
 * data.NeedTFA set -> RS_PVE_E_TFA (the half ticket is wiped, not kept). */
enum rs_pve_err rs_pve_parse_login(int status, const char *reason, const uint8_t *body,
				   size_t body_len, struct rs_pve_login *out,
				   struct rs_pve_error *err);

/* POST vncproxy / termproxy. ticket and password are secrets. */
struct rs_pve_console {
	char *user;	/* the authenticated user or token id */
	char *ticket;	/* the vncticket */
	char *password; /* NULL when absent (legacy, termproxy) */
	char *cert;	/* PEM of the cluster CA, NULL when absent */
	char *upid;	/* NULL when absent */
	uint16_t port;	/* 5900..5999; a JSON string or number on the wire */
};

void rs_pve_console_wipe(struct rs_pve_console *c);

/* user, ticket and port are required; a port outside 5900..5999 is
 * RS_PVE_E_MALFORMED. */
enum rs_pve_err rs_pve_parse_console(int status, const char *reason, const uint8_t *body,
				     size_t body_len, struct rs_pve_console *out,
				     struct rs_pve_error *err);

/* The RFB password: <password> when present, else the ticket, cut to 8
 * bytes (DES uses no more; this works for both PVE generations). Writes it
 * NUL-terminated into <out> and returns its length. Wipe <out> after use. */
size_t rs_pve_vnc_password(const struct rs_pve_console *c, char out[9]);

/* Where a VM lives, from cluster/resources. No heap. */
struct rs_pve_vm {
	uint32_t vmid;
	enum rs_pve_vmtype type;
	char node[RS_PVE_NODE_MAX + 1];
	char status[32]; /* "running", "stopped", ... ("" when absent) */
	bool running;
};

/* Find <vmid> among data[] entries of type qemu or lxc. Not listed (or not
 * visible without VM.Audit) -> RS_PVE_E_NO_VM. A node name that would not
 * pass the builders' check is RS_PVE_E_MALFORMED. */
enum rs_pve_err rs_pve_parse_resources(int status, const char *reason, const uint8_t *body,
				       size_t body_len, uint32_t vmid, struct rs_pve_vm *out,
				       struct rs_pve_error *err);

/* status/current: *running is data.status == "running". */
enum rs_pve_err rs_pve_parse_status(int status, const char *reason, const uint8_t *body,
				    size_t body_len, bool *running, struct rs_pve_error *err);

/* Check the answer to rs_pve_req_vncwebsocket() sent with <ws_key>: a 101
 * with Upgrade: websocket, Connection: upgrade, the matching
 * Sec-WebSocket-Accept, and no subprotocol or exactly "binary" ->
 * RS_PVE_OK; a bad 101 -> RS_PVE_E_UPGRADE; any other status is classified
 * as an API error. */
enum rs_pve_err rs_pve_check_upgrade(const struct rs_http_resp *r, const char *ws_key,
				     struct rs_pve_error *err);

#endif
