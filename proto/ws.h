/* proto/ws.h — RFC 6455 WebSocket codec (pure: bytes in, events out).
 *
 * Server mode (toward browsers) requires masked frames; client mode (toward
 * an upstream WebSocket server) requires unmasked ones. Data payloads are
 * unmasked in place and delivered as chunks pointing into the caller's
 * buffer — no reassembly, no copy. Control frames are delivered whole.
 */
#ifndef RS_WS_H
#define RS_WS_H

#include "core/common.h"

enum {
	RS_WS_OP_CONT = 0,
	RS_WS_OP_TEXT = 1,
	RS_WS_OP_BINARY = 2,
	RS_WS_OP_CLOSE = 8,
	RS_WS_OP_PING = 9,
	RS_WS_OP_PONG = 10,
};

/* Incremental UTF-8 validation (text messages and close reasons). */
struct rs_utf8 {
	uint32_t state;
};
/* False as soon as the bytes so far cannot be valid UTF-8. */
bool rs_utf8_feed(struct rs_utf8 *u, const uint8_t *p, size_t len);
/* True when no multi-byte sequence is left open. */
bool rs_utf8_complete(const struct rs_utf8 *u);

enum rs_ws_ev_type {
	RS_WS_EV_NONE = 0,
	RS_WS_EV_DATA,  /* a chunk of a text or binary message */
	RS_WS_EV_PING,
	RS_WS_EV_PONG,
	RS_WS_EV_CLOSE, /* close_code (1005 when absent), reason */
	RS_WS_EV_ERROR, /* close_code to send, error */
};

struct rs_ws_event {
	enum rs_ws_ev_type type;
	int opcode;          /* DATA: RS_WS_OP_TEXT or RS_WS_OP_BINARY */
	const uint8_t *data; /* DATA: into the caller's buffer; control: parser's copy */
	size_t len;
	bool fin;            /* DATA: last chunk of the message */
	uint16_t close_code;
	const char *reason;  /* CLOSE: NUL-terminated copy of the reason */
	const char *error;   /* ERROR: static description */
};

struct rs_ws_parser {
	bool server, failed;
	uint64_t max_frame, max_message;
	/* frame header being assembled */
	uint8_t hdr[14];
	uint8_t hdr_len, hdr_need;
	/* current frame */
	int frame_op;
	bool frame_fin, in_payload;
	uint8_t mask[4];
	uint64_t remaining;
	size_t mask_off;
	/* current message */
	int msg_op; /* 0 when no message is open */
	uint64_t msg_len;
	struct rs_utf8 utf8;
	/* control frame payload */
	uint8_t ctl[126];
	size_t ctl_len;
};

void rs_ws_parser_init(struct rs_ws_parser *p, bool server, uint64_t max_frame,
		       uint64_t max_message);

/* Consume up to <len> bytes of <buf> (unmasking payload in place). Returns
 * the bytes consumed with at most one event in *ev (RS_WS_EV_NONE when it
 * used everything without completing one). After an ERROR event the parser
 * takes nothing more. */
int rs_ws_parse(struct rs_ws_parser *p, uint8_t *buf, size_t len, struct rs_ws_event *ev);

/* Frame header for <len> payload bytes; <mask> NULL for server frames.
 * Returns its length (2..14). */
size_t rs_ws_frame_header(uint8_t out[14], int opcode, bool fin, uint64_t len,
			  const uint8_t mask[4]);
/* Close payload: code + reason truncated at a UTF-8 boundary to fit 125. */
size_t rs_ws_close_payload(uint8_t out[125], uint16_t code, const char *reason);
/* May this code be sent on the wire? (never 1005, 1006, 1015) */
bool rs_ws_close_code_sendable(uint16_t code);
/* XOR <len> bytes with <key>, starting at key offset <offset>. */
void rs_ws_mask(uint8_t *p, size_t len, const uint8_t key[4], size_t offset);

/* Server handshake validation. */
struct rs_ws_handshake_in {
	const char *method;
	int http_minor;
	const char *upgrade, *connection, *key, *version, *protocol, *origin; /* NULL: absent */
	const char *const *allowed_origins;
	size_t n_allowed_origins; /* 0: any origin */
};

struct rs_ws_handshake_out {
	int status;        /* 101, or 400 / 403 / 426 */
	const char *error; /* static reason when not 101 */
	char accept[29];   /* Sec-WebSocket-Accept */
	bool echo_binary;  /* answer "Sec-WebSocket-Protocol: binary" */
};

/* 0 when the upgrade is acceptable, else -EINVAL with out->status/error. */
int rs_ws_handshake_check(const struct rs_ws_handshake_in *in, struct rs_ws_handshake_out *out);
/* base64(SHA-1(key + GUID)) into <out> (29 bytes incl. NUL). */
void rs_ws_accept_key(const char *key, char out[29]);

#endif
