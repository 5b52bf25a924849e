#include "core/common.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

#include "proto/rfb_srv.h"

/* Each state reads <need> header bytes (0: runs at once, after a skip). */
enum {
	S_INIT = 0, /* ServerInit's 24 fixed bytes */
	S_INIT_NAME,
	S_TYPE,
	S_DONE, /* the message ends once its payload is skipped */
	S_FBU,
	S_RECT,
	S_RECT_DONE,
	S_RRE,
	S_HEX,
	S_HEX_COUNT,
	S_HEX_NEXT,
	S_EXTDESK,
	S_DESKNAME,
	S_CMAP,
	S_CUT,
	S_FENCE,
	S_QEMU,
	S_QEMU_AUDIO,
	S_QEMU_DATA,
};

enum {
	ENC_RAW = 0,
	ENC_COPYRECT = 1,
	ENC_RRE = 2,
	ENC_HEXTILE = 5,
	ENC_CURSOR = -239,
	ENC_XCURSOR = -240,
	ENC_DESKTOP_SIZE = -223,
	ENC_LAST_RECT = -224,
	ENC_QEMU_POINTER = -257,
	ENC_QEMU_KEY = -258,
	ENC_QEMU_AUDIO = -259,
	ENC_QEMU_LED = -261,
	ENC_EXT_DESKTOP_SIZE = -308,
	ENC_DESKTOP_NAME = -307,
	ENC_XVP = -309,
	ENC_FENCE = -312,
	ENC_CONT_UPDATES = -313,
	ENC_EXT_MOUSE = -316,
	ENC_EXT_CLIPBOARD = (int32_t)0xC0A1E5CE,
};

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void go(struct rs_rfb_srv *p, uint8_t state, uint8_t need)
{
	p->state = state;
	p->need = need;
	p->hdr_len = 0;
}

static int stop(struct rs_rfb_srv *p, const char *fmt, ...) RS_PRINTF(2, 3);
static int stop(struct rs_rfb_srv *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->error, sizeof(p->error), fmt, ap);
	va_end(ap);
	p->failed = true;
	return RS_PARSE_ERROR;
}

void rs_rfb_srv_init(struct rs_rfb_srv *p)
{
	memset(p, 0, sizeof(*p));
	go(p, S_INIT, 24);
}

bool rs_rfb_srv_set_bpp(struct rs_rfb_srv *p, unsigned bits)
{
	if (bits != 8 && bits != 16 && bits != 32) {
		stop(p, "pixel format of %u bits per pixel", bits);
		return false;
	}
	p->bpp = (uint8_t)(bits / 8);
	return true;
}

bool rs_rfb_srv_encoding_ok(int32_t enc)
{
	switch (enc) {
	case ENC_RAW:
	case ENC_COPYRECT:
	case ENC_RRE:
	case ENC_HEXTILE:
	case ENC_CURSOR:
	case ENC_XCURSOR:
	case ENC_DESKTOP_SIZE:
	case ENC_LAST_RECT:
	case ENC_QEMU_POINTER:
	case ENC_QEMU_KEY:
	case ENC_QEMU_AUDIO:
	case ENC_QEMU_LED:
	case ENC_EXT_DESKTOP_SIZE:
	case ENC_DESKTOP_NAME:
	case ENC_XVP:
	case ENC_FENCE:
	case ENC_CONT_UPDATES:
	case ENC_EXT_MOUSE:
	case ENC_EXT_CLIPBOARD:
		return true;
	default:
		/* JPEG quality and compression levels carry no data. */
		return (enc >= -32 && enc <= -23) || (enc >= -256 && enc <= -247);
	}
}

/* A rectangle's header is read: what follows it. */
static int rect(struct rs_rfb_srv *p)
{
	uint64_t w = be16(p->hdr + 4), h = be16(p->hdr + 6);
	int32_t enc = (int32_t)be32(p->hdr + 8);

	p->rw = (uint16_t)w;
	p->rh = (uint16_t)h;
	switch (enc) {
	case ENC_RAW:
		p->skip = w * h * p->bpp;
		break;
	case ENC_COPYRECT:
		p->skip = 4;
		break;
	case ENC_RRE:
		go(p, S_RRE, 4);
		return 0;
	case ENC_HEXTILE:
		p->tx = p->ty = 0;
		if (w && h) {
			go(p, S_HEX, 1);
			return 0;
		}
		break;
	case ENC_CURSOR:
		p->skip = w * h * p->bpp + (w + 7) / 8 * h;
		break;
	case ENC_XCURSOR:
		p->skip = w && h ? 6 + (w + 7) / 8 * h * 2 : 0;
		break;
	case ENC_QEMU_LED:
		p->skip = 1;
		break;
	case ENC_EXT_DESKTOP_SIZE:
		go(p, S_EXTDESK, 4);
		return 0;
	case ENC_DESKTOP_NAME:
		go(p, S_DESKNAME, 4);
		return 0;
	case ENC_LAST_RECT:
		p->rects_left = 1; /* ends the update */
		break;
	default:
		if (!rs_rfb_srv_encoding_ok(enc))
			return stop(p, "rectangle in encoding %d (not offered while resumable)",
				    enc);
		break; /* pseudo-encodings without data */
	}
	go(p, S_RECT_DONE, 0);
	return 0;
}

/* Hextile: the next tile, or the rectangle's end. */
static void hex_next(struct rs_rfb_srv *p)
{
	p->tx = (uint16_t)(p->tx + 16);
	if (p->tx >= p->rw) {
		p->tx = 0;
		p->ty = (uint16_t)(p->ty + 16);
	}
	if (p->ty >= p->rh)
		go(p, S_RECT_DONE, 0);
	else
		go(p, S_HEX, 1);
}

/* The header of the current state is complete: 1 when the message ended,
 * 0 to go on, RS_PARSE_ERROR. */
static int step(struct rs_rfb_srv *p)
{
	const uint8_t *h = p->hdr;

	switch (p->state) {
	case S_INIT:
		if (!rs_rfb_srv_set_bpp(p, h[4]))
			return RS_PARSE_ERROR;
		if (be32(h + 20) > RS_RFB_SRV_NAME_MAX)
			return stop(p, "ServerInit name of %u bytes", be32(h + 20));
		memcpy(p->init, h, 24);
		p->init_len = 24;
		p->skip = be32(h + 20);
		go(p, S_INIT_NAME, 0);
		return 0;
	case S_INIT_NAME:
	case S_DONE:
		go(p, S_TYPE, 1);
		return 1;
	case S_TYPE:
		switch (h[0]) {
		case 0:
			go(p, S_FBU, 3);
			return 0;
		case 1:
			go(p, S_CMAP, 5);
			return 0;
		case 2:
		case 150:
			go(p, S_TYPE, 1);
			return 1;
		case 3:
			go(p, S_CUT, 7);
			return 0;
		case 248:
			go(p, S_FENCE, 8);
			return 0;
		case 250:
			go(p, S_DONE, 0);
			p->skip = 3;
			return 0;
		case 255:
			go(p, S_QEMU, 1);
			return 0;
		default:
			return stop(p, "server message type %u", h[0]);
		}
	case S_FBU:
		p->rects_left = be16(h + 1);
		if (!p->rects_left) {
			go(p, S_TYPE, 1);
			return 1;
		}
		go(p, S_RECT, 12);
		return 0;
	case S_RECT:
		return rect(p);
	case S_RECT_DONE:
		if (--p->rects_left) {
			go(p, S_RECT, 12);
			return 0;
		}
		go(p, S_TYPE, 1);
		return 1;
	case S_RRE:
		p->skip = (uint64_t)p->bpp + (uint64_t)be32(h) * (p->bpp + 8u);
		go(p, S_RECT_DONE, 0);
		return 0;
	case S_HEX: {
		uint64_t tw = RS_MIN(16u, (unsigned)(p->rw - p->tx));
		uint64_t th = RS_MIN(16u, (unsigned)(p->rh - p->ty));
		uint8_t pre;

		p->hex_se = h[0];
		if (h[0] & 1) { /* Raw tile */
			p->skip = tw * th * p->bpp;
			go(p, S_HEX_NEXT, 0);
			return 0;
		}
		pre = (uint8_t)(((h[0] & 2) ? p->bpp : 0) + ((h[0] & 4) ? p->bpp : 0));
		if (h[0] & 8) { /* the subrectangle count follows the colours */
			go(p, S_HEX_COUNT, (uint8_t)(pre + 1));
			return 0;
		}
		p->skip = pre;
		go(p, S_HEX_NEXT, 0);
		return 0;
	}
	case S_HEX_COUNT:
		p->skip = (uint64_t)h[p->need - 1] * (((p->hex_se & 16) ? p->bpp : 0) + 2u);
		go(p, S_HEX_NEXT, 0);
		return 0;
	case S_HEX_NEXT:
		hex_next(p);
		return 0;
	case S_EXTDESK:
		p->skip = (uint64_t)h[0] * 16;
		go(p, S_RECT_DONE, 0);
		return 0;
	case S_DESKNAME:
		p->skip = be32(h);
		go(p, S_RECT_DONE, 0);
		return 0;
	case S_CMAP:
		p->skip = (uint64_t)be16(h + 3) * 6;
		go(p, S_DONE, 0);
		return 0;
	case S_CUT: {
		int32_t n = (int32_t)be32(h + 3);

		p->skip = n < 0 ? (uint64_t)(-(int64_t)n) : (uint64_t)n;
		go(p, S_DONE, 0);
		return 0;
	}
	case S_FENCE:
		p->skip = h[7];
		go(p, S_DONE, 0);
		return 0;
	case S_QEMU:
		if (h[0] != 1)
			return stop(p, "QEMU server message %u", h[0]);
		go(p, S_QEMU_AUDIO, 2);
		return 0;
	case S_QEMU_AUDIO:
		if (be16(h) == 2) {
			go(p, S_QEMU_DATA, 4);
			return 0;
		}
		if (be16(h) > 2)
			return stop(p, "QEMU audio operation %u", be16(h));
		go(p, S_TYPE, 1);
		return 1;
	case S_QEMU_DATA:
		p->skip = be32(h);
		go(p, S_DONE, 0);
		return 0;
	default:
		return stop(p, "internal state %u", p->state);
	}
}

int rs_rfb_srv_feed(struct rs_rfb_srv *p, const uint8_t *in, size_t len, bool *at_end)
{
	size_t i = 0;

	*at_end = false;
	if (p->failed)
		return RS_PARSE_ERROR;
	if (len > INT_MAX)
		len = INT_MAX;
	while (i < len || (!p->skip && p->hdr_len >= p->need)) {
		int r;

		if (p->skip) {
			size_t n = (size_t)RS_MIN(p->skip, (uint64_t)(len - i));

			if (p->state == S_INIT_NAME) {
				memcpy(p->init + p->init_len, in + i, n);
				p->init_len = (uint16_t)(p->init_len + n);
			}
			i += n;
			p->skip -= n;
			if (p->skip)
				break;
		}
		while (p->hdr_len < p->need && i < len)
			p->hdr[p->hdr_len++] = in[i++];
		if (p->hdr_len < p->need)
			break;
		r = step(p);
		if (r < 0)
			return RS_PARSE_ERROR;
		if (r > 0 && !p->skip) {
			*at_end = true;
			break;
		}
	}
	p->offset += i;
	return (int)i;
}

const uint8_t *rs_rfb_srv_server_init(const struct rs_rfb_srv *p, size_t *len)
{
	if (p->state == S_INIT || p->state == S_INIT_NAME) {
		*len = 0;
		return NULL;
	}
	*len = p->init_len;
	return p->init;
}
