/* proto/rfb_srv.h — the target→browser RFB stream after the security phase,
 * cut at message boundaries (pure: bytes in, boundaries out, no I/O).
 *
 * Why: a resumable VNC console keeps its upstream while the browser is away
 * (a reload). The new browser may only receive whole messages from a
 * boundary on, and gets the upstream's ServerInit from a cache (ringside
 * answers its handshake itself). So the parser knows where every message
 * ends — for the stateless encodings only: while a console is resumable the
 * browser's SetEncodings is narrowed to those (rs_rfb_srv_encoding_ok), since
 * ZRLE/Tight/zlib keep compression state across messages that a new browser
 * would not have.
 *
 * Messages (RFC 6143 7.6 and the extensions noVNC negotiates):
 *   ServerInit   once, first: 24 + name (cached, name <= RS_RFB_SRV_NAME_MAX)
 *   0   FramebufferUpdate: pad, u16 n, n rectangles (x y w h u16, s32 enc):
 *       Raw w*h*bpp; CopyRect 4; RRE u32 k, bpp + k*(bpp+8); Hextile per
 *       16x16 tile (RFC 6143 7.7.4); Cursor w*h*bpp + ceil(w/8)*h;
 *       XCursor 6 + 2*ceil(w/8)*h (0 when empty); ExtendedDesktopSize u8 n,
 *       3 pad, 16n; DesktopName u32 len + len; QEMU LED state 1; LastRect
 *       (ends the update), DesktopSize, QEMU key/pointer/audio, Fence,
 *       ContinuousUpdates, xvp, ExtendedClipboard, ExtendedMouseButtons,
 *       quality/compression levels: 0
 *   1   SetColourMapEntries: pad, u16 first, u16 n, 6n
 *   2   Bell
 *   3   ServerCutText: 3 pad, s32 len, |len| bytes (negative: extended)
 *   150 EndOfContinuousUpdates
 *   248 ServerFence: 3 pad, u32 flags, u8 len, len
 *   250 xvp: pad, version, code
 *   255 QEMU audio: u8 1, u16 op; op 2 (data): u32 size + size
 * Anything else (an encoding not offered, an unknown type) stops the parser
 * with a reason: the caller then stops treating the console as resumable.
 */
#ifndef RS_RFB_SRV_H
#define RS_RFB_SRV_H

#include "core/common.h"

#define RS_RFB_SRV_NAME_MAX 1024
#define RS_RFB_SRV_INIT_MAX (24 + RS_RFB_SRV_NAME_MAX)

/* Members are private; public so that a session can embed it. */
struct rs_rfb_srv {
	uint8_t state, bpp; /* bytes per pixel of the current pixel format */
	uint8_t hdr[24];
	uint8_t need, hdr_len;
	uint8_t hex_se; /* Hextile: the tile's subencoding */
	bool failed;
	uint16_t rw, rh, tx, ty; /* the rectangle; Hextile: the tile's origin in it */
	uint32_t rects_left;
	uint64_t skip;	 /* payload bytes still to pass */
	uint64_t offset; /* stream bytes consumed (tests, logs) */
	uint16_t init_len;
	uint8_t init[RS_RFB_SRV_INIT_MAX]; /* ServerInit as the target sent it */
	char error[96];
};

/* Prepare <p> for a stream that starts with ServerInit. */
void rs_rfb_srv_init(struct rs_rfb_srv *p);

/* The browser's SetPixelFormat (bits per pixel 8, 16 or 32) applies to the
 * updates the target sends after it. false: not a valid bpp (parser stops). */
bool rs_rfb_srv_set_bpp(struct rs_rfb_srv *p, unsigned bits_per_pixel);

/* Consume the next bytes (at most <len>), stopping right after a message's
 * end: returns the count (> 0 when len > 0), *at_end true when they end a
 * message. RS_PARSE_ERROR with p->error when the stream is not one this
 * parser can frame; it then refuses all further input. Never reads outside
 * <in>; any chunking gives the same boundaries. */
int rs_rfb_srv_feed(struct rs_rfb_srv *p, const uint8_t *in, size_t len, bool *at_end);

/* The cached ServerInit once the parser is past it (NULL before). */
const uint8_t *rs_rfb_srv_server_init(const struct rs_rfb_srv *p, size_t *len);

/* May the browser announce <enc> to a resumable console? The stateless
 * encodings and the pseudo-encodings above. */
bool rs_rfb_srv_encoding_ok(int32_t enc);

#endif
