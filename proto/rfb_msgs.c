#include "core/common.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

#include "proto/rfb_msgs.h"

/* Pseudo-encodings whose announcement changes how messages are framed. */
#define ENC_EXT_MOUSE_BUTTONS 0xfffffec4u /* -316 */
#define ENC_EXT_CLIPBOARD     0xc0a1e5ceu

static const char *const msg_names[RS_RFB_MSG__COUNT] = {
    [RS_RFB_MSG_NONE] = "none",
    [RS_RFB_MSG_CLIENT_INIT] = "ClientInit",
    [RS_RFB_MSG_SET_PIXEL_FORMAT] = "SetPixelFormat",
    [RS_RFB_MSG_SET_ENCODINGS] = "SetEncodings",
    [RS_RFB_MSG_FB_UPDATE_REQUEST] = "FramebufferUpdateRequest",
    [RS_RFB_MSG_KEY] = "KeyEvent",
    [RS_RFB_MSG_POINTER] = "PointerEvent",
    [RS_RFB_MSG_CUT_TEXT] = "ClientCutText",
    [RS_RFB_MSG_CONTINUOUS_UPDATES] = "EnableContinuousUpdates",
    [RS_RFB_MSG_FENCE] = "ClientFence",
    [RS_RFB_MSG_XVP] = "xvp",
    [RS_RFB_MSG_SET_DESKTOP_SIZE] = "SetDesktopSize",
    [RS_RFB_MSG_QEMU] = "QEMU",
};

const char *rs_rfb_msg_name(enum rs_rfb_msg_kind kind)
{
	return (unsigned)kind < RS_RFB_MSG__COUNT ? msg_names[kind] : "unknown";
}

bool rs_rfb_msg_is_input(enum rs_rfb_msg_kind kind)
{
	switch (kind) {
	case RS_RFB_MSG_KEY:
	case RS_RFB_MSG_POINTER:
	case RS_RFB_MSG_CUT_TEXT:
	case RS_RFB_MSG_XVP:
	case RS_RFB_MSG_SET_DESKTOP_SIZE:
	case RS_RFB_MSG_QEMU:
		return true;
	default:
		return false;
	}
}

static enum rs_rfb_msg_kind kind_of(uint8_t type)
{
	switch (type) {
	case 0:
		return RS_RFB_MSG_SET_PIXEL_FORMAT;
	case 2:
		return RS_RFB_MSG_SET_ENCODINGS;
	case 3:
		return RS_RFB_MSG_FB_UPDATE_REQUEST;
	case 4:
		return RS_RFB_MSG_KEY;
	case 5:
		return RS_RFB_MSG_POINTER;
	case 6:
		return RS_RFB_MSG_CUT_TEXT;
	case 150:
		return RS_RFB_MSG_CONTINUOUS_UPDATES;
	case 248:
		return RS_RFB_MSG_FENCE;
	case 250:
		return RS_RFB_MSG_XVP;
	case 251:
		return RS_RFB_MSG_SET_DESKTOP_SIZE;
	case 255:
		return RS_RFB_MSG_QEMU;
	default:
		return RS_RFB_MSG_NONE;
	}
}

void rs_rfb_msgs_init(struct rs_rfb_msgs *p, const struct rs_rfb_msgs_limits *lim)
{
	memset(p, 0, sizeof(*p));
	p->lim = *lim;
}

static uint32_t be16(const uint8_t *b)
{
	return (uint32_t)b[0] << 8 | b[1];
}

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Stop for good with a reason fit for the browser's close frame. */
static int bad(struct rs_rfb_msgs *p, const char *fmt, ...) RS_PRINTF(2, 3);
static int bad(struct rs_rfb_msgs *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->error, sizeof(p->error), fmt, ap);
	va_end(ap);
	p->failed = true;
	return RS_PARSE_ERROR;
}

/* With the current message's first p->hdr_len bytes in p->hdr: set
 * p->total, or return how many first bytes must be seen before the size is
 * known (always more than p->hdr_len), or RS_PARSE_ERROR. */
static int size_msg(struct rs_rfb_msgs *p)
{
	const uint8_t *h = p->hdr;
	uint32_t n;

	switch (h[0]) {
	case 0:
		p->total = 20;
		return 0;
	case 2:
		if (p->hdr_len < 4)
			return 4;
		n = be16(h + 2);
		if (n > p->lim.max_encodings)
			return bad(
			    p, "RFB SetEncodings with %u entries (limits.rfb_max_encodings: %u)", n,
			    p->lim.max_encodings);
		p->total = 4 + 4 * (uint64_t)n;
		return 0;
	case 3:
		p->total = 10;
		return 0;
	case 4:
		p->total = 8;
		return 0;
	case 5:
		if (p->hdr_len < 2)
			return 2;
		if (!(h[1] & 0x80) || !p->ext_mouse) {
			p->total = 6;
			return 0;
		}
		if (p->hdr_len < 7)
			return 7;
		if (h[6] & 0xfc)
			return bad(p, "RFB extended PointerEvent with reserved button bits set");
		p->total = 7;
		return 0;
	case 6: {
		int64_t len;

		if (p->hdr_len < 8)
			return 8;
		len = (int32_t)be32(h + 4);
		if (len < 0) {
			if (!p->ext_clip)
				return bad(
				    p, "RFB ClientCutText with a negative length, but the extended "
				       "clipboard was not negotiated");
			len = -len;
			if (len < 4)
				return bad(p, "RFB extended ClientCutText shorter than its flags");
		}
		if (len > p->lim.max_cut_text)
			return bad(p,
				   "RFB ClientCutText of %lld bytes (limits.rfb_max_cut_text: %u)",
				   (long long)len, p->lim.max_cut_text);
		p->total = 8 + (uint64_t)len;
		return 0;
	}
	case 150:
		p->total = 10;
		return 0;
	case 248:
		if (p->hdr_len < 9)
			return 9;
		if (h[8] > RS_RFB_MAX_FENCE)
			return bad(p, "RFB ClientFence with %u payload bytes (at most %u)", h[8],
				   RS_RFB_MAX_FENCE);
		p->total = 9 + (uint64_t)h[8];
		return 0;
	case 250:
		p->total = 4;
		return 0;
	case 251:
		if (p->hdr_len < 8)
			return 8;
		if (!h[6] || h[6] > RS_RFB_MAX_SCREENS)
			return bad(p, "RFB SetDesktopSize with %u screens (1 to %u)", h[6],
				   RS_RFB_MAX_SCREENS);
		p->total = 8 + 16 * (uint64_t)h[6];
		return 0;
	case 255:
		if (p->hdr_len < 2)
			return 2;
		if (h[1] == 0) {
			p->total = 12;
			return 0;
		}
		if (h[1] != 1)
			return bad(p, "unknown RFB QEMU message subtype %u", h[1]);
		if (p->hdr_len < 4)
			return 4;
		switch (be16(h + 2)) {
		case 0: /* enable */
		case 1: /* disable */
			p->total = 4;
			return 0;
		case 2: /* set format: u8 format, u8 channels, u32 frequency */
			p->total = 10;
			return 0;
		default:
			return bad(p, "unknown RFB QEMU audio operation %u", be16(h + 2));
		}
	default:
		return bad(p, "unknown RFB client message type %u", h[0]);
	}
}

/* SetEncodings body bytes: note the announcements that change framing. */
static void scan_encodings(struct rs_rfb_msgs *p, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t off = p->got + i - 4; /* offset in the list */

		p->enc[off & 3] = b[i];
		if ((off & 3) == 3) {
			uint32_t e = be32(p->enc);

			if (e == ENC_EXT_MOUSE_BUTTONS)
				p->new_ext_mouse = true;
			else if (e == ENC_EXT_CLIPBOARD)
				p->new_ext_clip = true;
		}
	}
}

int rs_rfb_msgs_feed(struct rs_rfb_msgs *p, const uint8_t *in, size_t len, struct rs_rfb_msg_ev *ev)
{
	size_t i = 0, n;

	memset(ev, 0, sizeof(*ev));
	if (!len)
		return 0;
	if (p->failed)
		return RS_PARSE_ERROR;
	if (len > INT_MAX)
		len = INT_MAX;
	if (!p->init_done) {
		/* ClientInit: one byte, the shared flag; any value is fine. */
		p->init_done = true;
		ev->kind = RS_RFB_MSG_CLIENT_INIT;
		ev->len = 1;
		ev->first = ev->last = true;
		return 1;
	}
	ev->first = p->got == 0;
	if (ev->first) {
		p->kind = (uint8_t)kind_of(in[0]);
		p->hdr_len = 0;
		p->total = 0;
		p->new_ext_mouse = p->new_ext_clip = false;
	}
	/* The fields that decide the size are gathered (at most 9 bytes); the
	 * rest of a message is only counted. */
	while (!p->total && i < len) {
		int r;

		p->hdr[p->hdr_len++] = in[i++];
		p->got++;
		r = size_msg(p);
		if (r < 0)
			return RS_PARSE_ERROR;
	}
	if (p->total) {
		n = (size_t)RS_MIN(p->total - p->got, (uint64_t)(len - i));
		if (p->kind == RS_RFB_MSG_SET_ENCODINGS)
			scan_encodings(p, in + i, n);
		i += n;
		p->got += n;
		if (p->got == p->total) {
			ev->last = true;
			if (p->kind == RS_RFB_MSG_SET_ENCODINGS) {
				/* A SetEncodings replaces the whole earlier list. */
				p->ext_mouse = p->new_ext_mouse;
				p->ext_clip = p->new_ext_clip;
			}
			p->got = 0;
			p->total = 0;
		}
	}
	ev->kind = (enum rs_rfb_msg_kind)p->kind;
	ev->len = i;
	return (int)i;
}

int rs_rfb_msgs_check(struct rs_rfb_msgs *p, const uint8_t *in, size_t len)
{
	struct rs_rfb_msg_ev ev;

	while (len) {
		int n = rs_rfb_msgs_feed(p, in, len, &ev);

		if (n < 0)
			return RS_PARSE_ERROR;
		in += n;
		len -= (size_t)n;
	}
	return 0;
}
