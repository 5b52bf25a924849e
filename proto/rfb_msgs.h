/* proto/rfb_msgs.h — the browser→target RFB message stream after the
 * security phase (RFC 6143 section 7.5 plus the extensions noVNC negotiates),
 * checked message by message (pure: bytes in, events out, no I/O).
 *
 * Why: without it a browser's ClientCutText declaring 0xFFFFFFFF bytes or a
 * SetEncodings with 65,535 entries reached the VNC server's parser verbatim.
 * The parser knows the exact size of every message type noVNC sends, bounds
 * the variable ones, and stops on anything else with a readable reason.
 *
 * Zero copy: the caller's bytes are never modified or copied out; the parser
 * only reports how many of them belong to the current message (a "piece"),
 * its kind, and whether the piece starts and/or ends the message. A caller
 * that forwards everything validates a whole receive with rs_rfb_msgs_check()
 * and forwards it in one send; a filtering caller (view-only consoles) walks
 * the pieces with rs_rfb_msgs_feed() and drops those whose kind is input
 * (rs_rfb_msg_is_input). Every kind is known from a message's first byte,
 * so the first piece of a message already carries its kind.
 *
 * Messages (sizes in bytes, including the type byte):
 *   ClientInit                 1, once, first in the stream
 *   0   SetPixelFormat         20
 *   2   SetEncodings           4 + 4n, n <= max_encodings
 *   3   FramebufferUpdateRequest 10
 *   4   KeyEvent               8
 *   5   PointerEvent           6; 7 when the marker bit 0x80 is set and the
 *                              browser announced ExtendedMouseButtons (-316)
 *                              in its last SetEncodings (the 7th byte's
 *                              reserved bits 2-7 must be clear)
 *   6   ClientCutText          8 + len, len <= max_cut_text; a negative len
 *                              (extended clipboard, |len| >= 4 for the flags)
 *                              only after the browser announced it
 *                              (0xC0A1E5CE)
 *   150 EnableContinuousUpdates 10
 *   248 ClientFence            9 + n, n <= 64
 *   250 xvp                    4
 *   251 SetDesktopSize         8 + 16n, 1 <= n <= RS_RFB_MAX_SCREENS
 *   255 QEMU: 0 extended key event 12; 1 audio: 0 enable / 1 disable 4,
 *       2 set format 10
 *
 * Limit of the model: the 7-byte PointerEvent and the negative ClientCutText
 * length follow what the browser announced, since the server's confirmation
 * travels in the other direction. A browser that announces either to a server
 * without it and then uses it anyway (noVNC never does: it waits for the
 * server's confirmation) makes this parser's boundaries differ from the
 * server's; a filter that drops pointer and cut-text messages entirely
 * (view-only) never forwards such a message, so what it forwards is framed the
 * same way on both sides.
 */
#ifndef RS_RFB_MSGS_H
#define RS_RFB_MSGS_H

#include "core/common.h"

#define RS_RFB_MAX_SCREENS 16 /* SetDesktopSize: noVNC sends 1 */
#define RS_RFB_MAX_FENCE   64 /* ClientFence payload, the protocol's own bound */

enum rs_rfb_msg_kind {
	RS_RFB_MSG_NONE = 0,
	RS_RFB_MSG_CLIENT_INIT,
	RS_RFB_MSG_SET_PIXEL_FORMAT,
	RS_RFB_MSG_SET_ENCODINGS,
	RS_RFB_MSG_FB_UPDATE_REQUEST,
	RS_RFB_MSG_KEY,
	RS_RFB_MSG_POINTER,
	RS_RFB_MSG_CUT_TEXT, /* both forms, classic and extended clipboard */
	RS_RFB_MSG_CONTINUOUS_UPDATES,
	RS_RFB_MSG_FENCE,
	RS_RFB_MSG_XVP,
	RS_RFB_MSG_SET_DESKTOP_SIZE,
	RS_RFB_MSG_QEMU, /* extended key event or audio */
	RS_RFB_MSG__COUNT
};

/* Static name of <kind> ("KeyEvent", ...), for logs and tests. */
const char *rs_rfb_msg_name(enum rs_rfb_msg_kind kind);

/* Does <kind> act on the machine, so that a view-only console must drop it?
 * Key, pointer and QEMU (extended key) events, cut text, xvp (power
 * operations) and SetDesktopSize. The rest (ClientInit, pixel format,
 * encodings, update requests, fences, continuous updates) only shape what
 * the viewer receives. */
bool rs_rfb_msg_is_input(enum rs_rfb_msg_kind kind);

struct rs_rfb_msgs_limits {
	uint32_t max_cut_text;	/* ClientCutText payload bytes, either form */
	uint32_t max_encodings; /* SetEncodings entries */
};

/* One piece of the stream: the first <len> bytes of the input given to
 * rs_rfb_msgs_feed() (its return value), all of one message. */
struct rs_rfb_msg_ev {
	enum rs_rfb_msg_kind kind;
	size_t len;
	bool first; /* the piece starts the message */
	bool last;  /* the piece ends the message */
};

/* All members are private; the struct is public so that a session can embed
 * it (under 200 bytes, no heap). */
struct rs_rfb_msgs {
	struct rs_rfb_msgs_limits lim;
	uint64_t total; /* current message's size once known, else 0 */
	uint64_t got;	/* bytes of the current message seen so far */
	uint8_t kind;	/* enum rs_rfb_msg_kind of the current message */
	uint8_t hdr_len;
	uint8_t hdr[12]; /* the current message's first bytes (up to its size fields) */
	uint8_t enc[4];	 /* SetEncodings: the entry being read */
	bool init_done, failed;
	bool ext_mouse, ext_clip;	  /* announced in the last complete SetEncodings */
	bool new_ext_mouse, new_ext_clip; /* seen in the SetEncodings being read */
	char error[112];
};

/* Prepare <p> for a stream that starts with ClientInit. */
void rs_rfb_msgs_init(struct rs_rfb_msgs *p, const struct rs_rfb_msgs_limits *lim);

/* Look at the next bytes of the stream (<len> of them; at most INT_MAX) and
 * report the piece of one message they start with in *ev. Returns the
 * piece's length (> 0 whenever len > 0): call again with the rest. On a
 * message that is unknown or out of bounds, returns RS_PARSE_ERROR with
 * p->error set to a readable reason (nothing of that message is in a
 * reported piece past the bytes that showed it bad, and the caller must not
 * forward it); the parser then stays stopped and refuses further input the
 * same way. <len> 0 returns 0 with ev->kind NONE. Never reads outside <in>. */
int rs_rfb_msgs_feed(struct rs_rfb_msgs *p, const uint8_t *in, size_t len,
		     struct rs_rfb_msg_ev *ev);

/* Run the whole of <in> through the parser (the forward-everything fast
 * path). 0, or RS_PARSE_ERROR with p->error set: then none of <in> may be
 * forwarded past the previous complete message. */
int rs_rfb_msgs_check(struct rs_rfb_msgs *p, const uint8_t *in, size_t len);

#endif
