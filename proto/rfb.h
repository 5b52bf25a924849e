/* proto/rfb.h — the RFB (RFC 6143) security phase on both legs (pure codecs).
 *
 * struct rs_rfb_server: ringside as the server toward the browser, offering
 * only security type None. It waits after the version exchange until the
 * caller knows the upstream outcome, so a failure can always be reported in
 * the browser's own protocol version (noVNC then shows the reason).
 *
 * struct rs_rfb_client: ringside as the client toward the VNC target, with
 * None or VNC Authentication (DES challenge/response via BoringSSL).
 *
 * Both consume any chunking (even a byte at a time), never read past their
 * input, and stop at the end of the security phase: later bytes (ClientInit,
 * ServerInit...) belong to the relay and are not consumed.
 */
#ifndef RS_RFB_H
#define RS_RFB_H

#include "core/common.h"

#define RS_RFB_REASON_MAX 1024

struct rs_rfb_out {
	uint8_t buf[512];
	size_t len;
};

enum rs_rfb_server_state {
	RS_RFB_SERVER_VERSION = 0, /* reading the client's version */
	RS_RFB_SERVER_WAIT_UPSTREAM,
	RS_RFB_SERVER_CHOICE,      /* type list sent, reading the client's choice */
	RS_RFB_SERVER_DONE,
	RS_RFB_SERVER_FAILED,
};

struct rs_rfb_server {
	enum rs_rfb_server_state state;
	uint8_t ver[12];
	size_t ver_len;
	int minor; /* 3, 7 or 8 */
	const char *error;
};

void rs_rfb_server_init(struct rs_rfb_server *s);
/* The server greeting "RFB 003.008\n". */
void rs_rfb_server_start(struct rs_rfb_server *s, struct rs_rfb_out *out);
/* Bytes consumed, or RS_PARSE_ERROR with s->error set. */
int rs_rfb_server_feed(struct rs_rfb_server *s, const uint8_t *in, size_t len,
		       struct rs_rfb_out *out);
/* Waiting for the caller's verdict on the upstream. */
bool rs_rfb_server_waiting(const struct rs_rfb_server *s);
/* Upstream ready: offer None (and finish when the client's version needs no
 * more bytes from it). */
void rs_rfb_server_accept(struct rs_rfb_server *s, struct rs_rfb_out *out);
/* Upstream failed: send the failure with <reason> in the client's dialect. */
void rs_rfb_server_fail(struct rs_rfb_server *s, const char *reason, struct rs_rfb_out *out);
bool rs_rfb_server_done(const struct rs_rfb_server *s);

enum rs_rfb_client_state {
	RS_RFB_CLIENT_VERSION = 0,
	RS_RFB_CLIENT_TYPES,       /* 3.7/3.8: count + list; 3.3: u32 type */
	RS_RFB_CLIENT_CHALLENGE,
	RS_RFB_CLIENT_RESULT,
	RS_RFB_CLIENT_REASON,      /* reading a failure reason */
	RS_RFB_CLIENT_DONE,
	RS_RFB_CLIENT_FAILED,
};

struct rs_rfb_client {
	enum rs_rfb_client_state state;
	uint8_t acc[256]; /* fixed-size field being assembled (up to 255 types) */
	size_t acc_len, acc_need;
	int minor;
	uint8_t ntypes;
	bool types_read_count, used_vnc_auth, auth_failed, reason_after_types;
	uint32_t reason_len, reason_got;
	char password[9]; /* wiped by rs_rfb_client_release */
	bool has_password;
	char error[RS_RFB_REASON_MAX + 96];
	char reason[RS_RFB_REASON_MAX + 1];
};

/* <password> NULL or "" for none; at most 8 bytes are used (VNC auth). */
void rs_rfb_client_init(struct rs_rfb_client *c, const char *password);
/* Bytes consumed, or RS_PARSE_ERROR with c->error set. */
int rs_rfb_client_feed(struct rs_rfb_client *c, const uint8_t *in, size_t len,
		       struct rs_rfb_out *out);
bool rs_rfb_client_done(const struct rs_rfb_client *c);
/* The failure was the target refusing our credentials. */
bool rs_rfb_client_auth_failed(const struct rs_rfb_client *c);
void rs_rfb_client_release(struct rs_rfb_client *c);

/* VNC Authentication response: DES-ECB of the 16-byte challenge with the
 * password (NUL-padded to 8, each key byte bit-reversed). */
void rs_rfb_vnc_auth_response(const char *password, const uint8_t challenge[16],
			      uint8_t out[16]);

#endif
