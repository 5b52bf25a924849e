/* proto/ws.h — RFC 6455 WebSocket codec (pure: bytes in, events out, no I/O).
 *
 * Used on both legs of a console: as a SERVER toward browsers (every frame
 * received must be masked) and as a CLIENT toward an upstream WebSocket
 * server such as Proxmox's vncwebsocket (no frame received may be masked).
 *
 * Zero copy: data payloads are unmasked in place and handed out as chunks
 * that point into the caller's buffer, as they arrive — no reassembly. Only
 * control frames (at most 125 bytes) are copied, into the parser, so that
 * they can be delivered whole. Nothing here allocates or keeps global state.
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

/* Largest control frame payload (RFC 6455 section 5.5). */
#define RS_WS_MAX_CONTROL 125u
/* Longest frame header: 2 + 8 (64-bit length) + 4 (mask key). */
#define RS_WS_MAX_HEADER 14u

/* --- Incremental UTF-8 validation (text messages and close reasons) ---
 *
 * Accepts exactly the well-formed sequences of RFC 3629 / Unicode table 3-7:
 * no overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
 * A sequence may be split across any number of feeds. Zero-initialise (or
 * set .state = 0) to start. */
struct rs_utf8 {
	uint32_t state; /* private */
};

/* Validate the next <len> bytes at <p>. Returns false as soon as the bytes
 * seen so far cannot start a valid UTF-8 string; once false, it stays false. */
bool rs_utf8_feed(struct rs_utf8 *u, const uint8_t *p, size_t len);
/* True when everything fed so far is valid and no multi-byte sequence is
 * left open (call at the end of the text). */
bool rs_utf8_complete(const struct rs_utf8 *u);

/* --- Frame parser --- */

enum rs_ws_ev_type {
	RS_WS_EV_NONE = 0,
	RS_WS_EV_DATA,	/* a chunk of a text or binary message */
	RS_WS_EV_PING,	/* whole payload in data/len */
	RS_WS_EV_PONG,	/* whole payload in data/len */
	RS_WS_EV_CLOSE, /* close_code (1005 when absent), reason */
	RS_WS_EV_ERROR, /* close_code to send, error */
};

struct rs_ws_event {
	enum rs_ws_ev_type type;
	/* DATA: RS_WS_OP_TEXT or RS_WS_OP_BINARY, the message's opcode (also for
	 * the chunks of continuation frames). */
	int opcode;
	/* DATA: points into the buffer given to rs_ws_parse() (unmasked in
	 * place). PING/PONG/CLOSE: the whole payload, in the parser; valid until
	 * the next call. DATA chunks may be empty only when fin is set. */
	const uint8_t *data;
	size_t len;
	bool fin; /* DATA: the last chunk of the message */
	/* CLOSE: the peer's code, 1005 when the frame carried none.
	 * ERROR: the code to send in our close frame (1002, 1007 or 1009). */
	uint16_t close_code;
	/* CLOSE: the reason, NUL-terminated, in the parser ("" when absent);
	 * valid UTF-8 of reason_len bytes (it may contain U+0000). */
	const char *reason;
	size_t reason_len;
	const char *error; /* ERROR: static description, fit for a log or a close reason */
};

/* All members are private; the struct is public so that a session can embed
 * it (about 200 bytes, no heap). */
struct rs_ws_parser {
	uint64_t max_frame, max_message;
	uint64_t remaining;  /* payload bytes left in the current frame */
	uint64_t msg_len;    /* payload bytes of the open data message so far */
	const char *err;     /* set once the parser has stopped */
	struct rs_utf8 utf8; /* open text message */
	uint16_t err_code;
	uint8_t state;
	bool server;
	uint8_t frame_op, msg_op; /* msg_op: 0 when no data message is open */
	bool frame_fin;
	uint8_t hdr_len, hdr_need;
	uint8_t mask_off; /* key offset of the next payload byte, 0..3 */
	uint8_t ctl_len;
	uint8_t mask[4];
	uint8_t hdr[RS_WS_MAX_HEADER];
	uint8_t ctl[RS_WS_MAX_CONTROL + 1]; /* + the NUL after a close reason */
};

/* Prepare <p>. <server>: we are the server, so every frame must be masked;
 * false: we are the client, so none may be. <max_frame> and <max_message>
 * (inclusive, UINT64_MAX for none) bound the payload of one data frame and
 * of one whole, possibly fragmented, data message; exceeding either is a
 * 1009 error reported as soon as the frame header arrives. */
void rs_ws_parser_init(struct rs_ws_parser *p, bool server, uint64_t max_frame,
		       uint64_t max_message);

/* Consume bytes from <buf> (<len> of them; at most INT_MAX are looked at),
 * unmasking data payload in place, and report at most one event in *ev.
 * Returns the number of bytes consumed: call again with the rest. When it
 * returns with ev->type == RS_WS_EV_NONE it consumed all it was given.
 *
 * On a protocol violation *ev is RS_WS_EV_ERROR with the close code the
 * caller must send and a static reason; after that, and after a CLOSE event
 * (nothing may follow a close frame), the parser is stopped: any further
 * non-empty input is refused with RS_PARSE_ERROR and an ERROR event (the
 * same one again, or 1002 "data after a close frame"). <len> 0 always
 * returns 0 with no event. */
int rs_ws_parse(struct rs_ws_parser *p, uint8_t *buf, size_t len, struct rs_ws_event *ev);

/* --- Writers --- */

/* Write the header of a frame with <len> payload bytes to <out> and return
 * its length (2 to 14). <mask> is the masking key for a client frame (the
 * caller then masks the payload with rs_ws_mask(payload, len, mask, 0)), or
 * NULL for a server frame. Returns 0, writing nothing useful, when the frame
 * would break RFC 6455: an unknown <opcode>, a control frame longer than 125
 * bytes or without <fin>, or <len> >= 2^63. */
size_t rs_ws_frame_header(uint8_t out[RS_WS_MAX_HEADER], int opcode, bool fin, uint64_t len,
			  const uint8_t mask[4]);

/* Write a close frame payload to <out>: <code>, then the longest prefix of
 * <reason> (may be NULL) that is valid UTF-8, ends on a character boundary
 * and fits in 123 bytes — so a peer never fails us with 1007 whatever text we
 * pass. Returns its length (2 to 125), or 0 (an empty close payload, meaning
 * "no status") when <code> may not be sent (see rs_ws_close_code_sendable). */
size_t rs_ws_close_payload(uint8_t out[RS_WS_MAX_CONTROL], uint16_t code, const char *reason);

/* May <code> appear in a close frame? True for 1000-1003, 1007-1014 and
 * 3000-4999; never for 1005, 1006 or 1015, which only describe a closure
 * locally. The parser accepts exactly these codes on the wire. */
bool rs_ws_close_code_sendable(uint16_t code);

/* XOR <len> bytes at <p> with the masking <key>, starting at key position
 * <offset> (the payload offset of p[0] within its frame; only offset % 4
 * matters). Masking twice restores the data. */
void rs_ws_mask(uint8_t *p, size_t len, const uint8_t key[4], size_t offset);

/* --- The pong owed to a peer that does not read ---
 *
 * RFC 6455 5.5.3 lets an endpoint answer only the most recent of several
 * pings. A leg holds the latest ping's payload here and sends the pong only
 * while its send queue is not congested, so a peer that pings and never
 * reads costs this struct (about 130 bytes) instead of a pong per ping.
 * Usable on both legs: the browser leg (server, unmasked pongs) and an
 * upstream WebSocket client leg (masked pongs). Zero-initialise. */
struct rs_ws_pong {
	bool pending;
	uint8_t len;
	uint8_t data[RS_WS_MAX_CONTROL];
};

/* The longest pong frame rs_ws_pong_take() writes: header, mask key, payload. */
#define RS_WS_MAX_PONG_FRAME (RS_WS_MAX_HEADER + RS_WS_MAX_CONTROL)

/* Remember a ping's payload (<len> <= 125; longer is cut, which a parsed
 * RS_WS_EV_PING never is) as the pong to send, replacing any earlier one. */
void rs_ws_pong_hold(struct rs_ws_pong *pp, const uint8_t *data, size_t len);

/* When a pong is pending: write the whole pong frame to <out> — masked with
 * <mask> when it is not NULL (a client leg) — clear it, and return the
 * frame's length. Returns 0 when none is pending. */
size_t rs_ws_pong_take(struct rs_ws_pong *pp, uint8_t out[RS_WS_MAX_PONG_FRAME],
		       const uint8_t mask[4]);

/* --- Server handshake (RFC 6455 section 4.2), independent of the HTTP code --- */

struct rs_ws_handshake_in {
	const char *method; /* "GET" */
	int http_minor;	    /* 1 for HTTP/1.1 */
	/* Header values, each NUL-terminated, or NULL when the header is absent.
	 * connection, upgrade and protocol may be comma-separated lists. */
	const char *upgrade, *connection, *key, *version, *protocol, *origin;
	const char *const *allowed_origins; /* compared case-insensitively */
	size_t n_allowed_origins;	    /* 0: any origin, even none */
};

struct rs_ws_handshake_out {
	int status;	     /* 101 on success, else 400, 403 or 426 */
	const char *error;   /* static reason when status != 101, else NULL */
	const char *headers; /* extra response header lines the caller must send ("" if none):
			      * "Sec-WebSocket-Version: 13\r\n" with a 426 */
	char accept[29];     /* Sec-WebSocket-Accept value on success */
	bool echo_binary;    /* send "Sec-WebSocket-Protocol: binary" (and no other value) */
};

/* Check an upgrade request: GET, HTTP/1.1, Upgrade has the token
 * "websocket", Connection has the token "upgrade" (both case-insensitive),
 * Sec-WebSocket-Version is 13 (else 426), Sec-WebSocket-Key is base64 of
 * exactly 16 bytes, and Origin is in the allow list when one is configured
 * (else 403). echo_binary is set when the offered subprotocols include
 * "binary" — matched case-sensitively, as browsers compare the echoed value
 * exactly. Returns 0 with out->status 101 and out->accept filled, or -EINVAL
 * with out->status, out->error and out->headers set. Reads nothing but <in>. */
int rs_ws_handshake_check(const struct rs_ws_handshake_in *in, struct rs_ws_handshake_out *out);

/* Sec-WebSocket-Accept for <key> (NUL-terminated, non-NULL):
 * base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), 28 characters
 * and a NUL, into <out>. */
void rs_ws_accept_key(const char *key, char out[29]);

#endif
