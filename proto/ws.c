#include "core/common.h"

#include <strings.h>

#include <openssl/base64.h>
#include <openssl/sha.h>

#include "proto/ws.h"

/* --- UTF-8: a DFA over byte classes (Hoehrmann-style, written from the
 * Unicode table of well-formed sequences, RFC 3629 section 4). States:
 * 0 accept, 1 reject, 2.. expecting continuation bytes. */
enum { U_OK = 0, U_BAD = 1 };

static uint32_t utf8_step(uint32_t st, uint8_t b)
{
	/* st encodes: low byte = continuation bytes still needed (0-3);
	 * next byte = allowed range selector for the next byte. */
	uint32_t need = st & 0xff, sel = st >> 8;

	if (need == 0) {
		if (b < 0x80)
			return 0;
		if (b >= 0xc2 && b <= 0xdf)
			return 1 | 0 << 8;
		if (b == 0xe0)
			return 2 | 1 << 8; /* next A0..BF (no overlongs) */
		if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef)
			return 2;
		if (b == 0xed)
			return 2 | 2 << 8; /* next 80..9F (no surrogates) */
		if (b == 0xf0)
			return 3 | 3 << 8; /* next 90..BF */
		if (b >= 0xf1 && b <= 0xf3)
			return 3;
		if (b == 0xf4)
			return 3 | 4 << 8; /* next 80..8F (<= U+10FFFF) */
		return UINT32_MAX;
	}
	switch (sel) {
	case 1:
		if (b < 0xa0 || b > 0xbf)
			return UINT32_MAX;
		break;
	case 2:
		if (b < 0x80 || b > 0x9f)
			return UINT32_MAX;
		break;
	case 3:
		if (b < 0x90 || b > 0xbf)
			return UINT32_MAX;
		break;
	case 4:
		if (b < 0x80 || b > 0x8f)
			return UINT32_MAX;
		break;
	default:
		if (b < 0x80 || b > 0xbf)
			return UINT32_MAX;
	}
	return need - 1;
}

bool rs_utf8_feed(struct rs_utf8 *u, const uint8_t *p, size_t len)
{
	uint32_t st = u->state;

	if (st == UINT32_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		/* ASCII fast path */
		if (st == 0 && p[i] < 0x80)
			continue;
		st = utf8_step(st, p[i]);
		if (st == UINT32_MAX)
			break;
	}
	u->state = st;
	return st != UINT32_MAX;
}

bool rs_utf8_complete(const struct rs_utf8 *u)
{
	return u->state == 0;
}

/* --- masking --- */

void rs_ws_mask(uint8_t *p, size_t len, const uint8_t key[4], size_t offset)
{
	uint8_t k[8];
	uint64_t k64;
	size_t i = 0;

	for (int j = 0; j < 8; j++)
		k[j] = key[(offset + (size_t)j) & 3];
	memcpy(&k64, k, 8);
	for (; i + 8 <= len; i += 8) {
		uint64_t v;

		memcpy(&v, p + i, 8);
		v ^= k64;
		memcpy(p + i, &v, 8);
	}
	for (; i < len; i++)
		p[i] ^= k[i & 7];
}

/* --- writers --- */

size_t rs_ws_frame_header(uint8_t out[14], int opcode, bool fin, uint64_t len,
			  const uint8_t mask[4])
{
	size_t n = 2;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (len < 126) {
		out[1] = (uint8_t)len;
	} else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		n = 4;
	} else {
		out[1] = 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		n = 10;
	}
	if (mask) {
		out[1] |= 0x80;
		memcpy(out + n, mask, 4);
		n += 4;
	}
	return n;
}

bool rs_ws_close_code_sendable(uint16_t c)
{
	return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

size_t rs_ws_close_payload(uint8_t out[125], uint16_t code, const char *reason)
{
	size_t n = reason ? strlen(reason) : 0;

	if (n > 123)
		n = 123;
	/* Do not cut a multi-byte character in half. */
	while (n && n < (reason ? strlen(reason) : 0) && ((uint8_t)reason[n] & 0xc0) == 0x80)
		n--;
	out[0] = (uint8_t)(code >> 8);
	out[1] = (uint8_t)code;
	if (n)
		memcpy(out + 2, reason, n);
	return 2 + n;
}

/* --- parser --- */

void rs_ws_parser_init(struct rs_ws_parser *p, bool server, uint64_t max_frame,
		       uint64_t max_message)
{
	memset(p, 0, sizeof(*p));
	p->server = server;
	p->max_frame = max_frame;
	p->max_message = max_message;
	p->hdr_need = 2;
}

static int error(struct rs_ws_parser *p, struct rs_ws_event *ev, uint16_t code, const char *msg,
		 int consumed)
{
	p->failed = true;
	ev->type = RS_WS_EV_ERROR;
	ev->close_code = code;
	ev->error = msg;
	return consumed;
}

static bool wire_code_valid(uint16_t c)
{
	return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* Header complete: validate it and set up the frame. 0 or an error event. */
static int start_frame(struct rs_ws_parser *p, struct rs_ws_event *ev, int consumed)
{
	uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
	bool masked = b1 & 0x80;
	uint64_t len = b1 & 0x7f;
	size_t mpos = 2;

	if (b0 & 0x70)
		return error(p, ev, 1002, "reserved bits set without an extension", consumed);
	p->frame_op = b0 & 0x0f;
	p->frame_fin = b0 & 0x80;
	if (len == 126) {
		len = (uint64_t)p->hdr[2] << 8 | p->hdr[3];
		if (len < 126)
			return error(p, ev, 1002, "non-minimal frame length", consumed);
		mpos = 4;
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | p->hdr[2 + i];
		if (len >> 63)
			return error(p, ev, 1002, "frame length with the top bit set", consumed);
		if (len <= 0xffff)
			return error(p, ev, 1002, "non-minimal frame length", consumed);
		mpos = 10;
	}
	if (masked != p->server)
		return error(p, ev, 1002,
			     p->server ? "client frame not masked" : "server frame masked", consumed);
	if (masked)
		memcpy(p->mask, p->hdr + mpos, 4);
	p->remaining = len;
	p->mask_off = 0;
	switch (p->frame_op) {
	case RS_WS_OP_CLOSE:
	case RS_WS_OP_PING:
	case RS_WS_OP_PONG:
		if (!p->frame_fin)
			return error(p, ev, 1002, "fragmented control frame", consumed);
		if (len > 125)
			return error(p, ev, 1002, "control frame longer than 125 bytes", consumed);
		p->ctl_len = 0;
		break;
	case RS_WS_OP_CONT:
		if (!p->msg_op)
			return error(p, ev, 1002, "continuation frame without a message", consumed);
		break;
	case RS_WS_OP_TEXT:
	case RS_WS_OP_BINARY:
		if (p->msg_op)
			return error(p, ev, 1002, "new message inside a fragmented message",
				     consumed);
		p->msg_op = p->frame_op;
		p->msg_len = 0;
		p->utf8.state = 0;
		break;
	default:
		return error(p, ev, 1002, "unknown opcode", consumed);
	}
	if (p->frame_op < RS_WS_OP_CLOSE) {
		if (len > p->max_frame)
			return error(p, ev, 1009, "frame too big", consumed);
		if (p->msg_len + len > p->max_message)
			return error(p, ev, 1009, "message too big", consumed);
		p->msg_len += len;
	}
	p->in_payload = true;
	return 0;
}

static void end_frame(struct rs_ws_parser *p)
{
	p->in_payload = false;
	p->hdr_len = 0;
	p->hdr_need = 2;
}

static int finish_control(struct rs_ws_parser *p, struct rs_ws_event *ev, int consumed)
{
	ev->data = p->ctl;
	ev->len = p->ctl_len;
	end_frame(p);
	if (p->frame_op == RS_WS_OP_PING) {
		ev->type = RS_WS_EV_PING;
		return consumed;
	}
	if (p->frame_op == RS_WS_OP_PONG) {
		ev->type = RS_WS_EV_PONG;
		return consumed;
	}
	/* CLOSE */
	if (p->ctl_len == 1)
		return error(p, ev, 1002, "close frame with a 1-byte payload", consumed);
	ev->type = RS_WS_EV_CLOSE;
	ev->close_code = 1005;
	ev->reason = "";
	if (p->ctl_len >= 2) {
		struct rs_utf8 u = {0};

		ev->close_code = (uint16_t)(p->ctl[0] << 8 | p->ctl[1]);
		if (!wire_code_valid(ev->close_code))
			return error(p, ev, 1002, "invalid close code", consumed);
		if (!rs_utf8_feed(&u, p->ctl + 2, p->ctl_len - 2) || !rs_utf8_complete(&u))
			return error(p, ev, 1007, "close reason is not valid UTF-8", consumed);
		p->ctl[p->ctl_len] = 0;
		ev->reason = (const char *)p->ctl + 2;
	}
	p->failed = true; /* nothing may follow a close frame */
	return consumed;
}

int rs_ws_parse(struct rs_ws_parser *p, uint8_t *buf, size_t len, struct rs_ws_event *ev)
{
	size_t i = 0;

	memset(ev, 0, sizeof(*ev));
	if (p->failed)
		return 0;
	while (i < len) {
		if (!p->in_payload) {
			while (p->hdr_len < p->hdr_need && i < len)
				p->hdr[p->hdr_len++] = buf[i++];
			if (p->hdr_len < p->hdr_need)
				return (int)i;
			if (p->hdr_need == 2) {
				uint8_t l = p->hdr[1] & 0x7f;

				p->hdr_need = (uint8_t)(2 + (l == 126 ? 2 : l == 127 ? 8 : 0) +
							((p->hdr[1] & 0x80) ? 4 : 0));
				if (p->hdr_len < p->hdr_need)
					continue;
			}
			if (start_frame(p, ev, (int)i))
				return (int)i;
			if (ev->type == RS_WS_EV_ERROR)
				return (int)i;
		}
		/* payload */
		if (p->frame_op >= RS_WS_OP_CLOSE) {
			size_t n = (size_t)RS_MIN(p->remaining, (uint64_t)(len - i));

			memcpy(p->ctl + p->ctl_len, buf + i, n);
			if (p->server)
				rs_ws_mask(p->ctl + p->ctl_len, n, p->mask, p->mask_off);
			p->mask_off += n;
			p->ctl_len += n;
			p->remaining -= n;
			i += n;
			if (!p->remaining)
				return finish_control(p, ev, (int)i);
			return (int)i;
		}
		{
			size_t n = (size_t)RS_MIN(p->remaining, (uint64_t)(len - i));
			bool last;

			if (p->server)
				rs_ws_mask(buf + i, n, p->mask, p->mask_off);
			p->mask_off += n;
			p->remaining -= n;
			last = !p->remaining && p->frame_fin;
			if (p->msg_op == RS_WS_OP_TEXT &&
			    (!rs_utf8_feed(&p->utf8, buf + i, n) ||
			     (last && !rs_utf8_complete(&p->utf8))))
				return error(p, ev, 1007, "text message is not valid UTF-8",
					     (int)(i + n));
			ev->type = RS_WS_EV_DATA;
			ev->opcode = p->msg_op;
			ev->data = buf + i;
			ev->len = n;
			ev->fin = last;
			i += n;
			if (!p->remaining) {
				end_frame(p);
				if (p->frame_fin)
					p->msg_op = 0;
			}
			/* Empty data frames carry no bytes: report only a message end. */
			if (!n && !last) {
				memset(ev, 0, sizeof(*ev));
				continue;
			}
			return (int)i;
		}
	}
	return (int)i;
}

/* --- handshake --- */

static bool has_token(const char *list, const char *tok)
{
	size_t tl = strlen(tok);

	while (list && *list) {
		const char *s, *e;

		while (*list == ' ' || *list == '\t' || *list == ',')
			list++;
		s = list;
		while (*list && *list != ',')
			list++;
		e = list;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - s) == tl && !strncasecmp(s, tok, tl))
			return true;
	}
	return false;
}

void rs_ws_accept_key(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	uint8_t d[SHA_DIGEST_LENGTH];
	SHA_CTX c;

	SHA1_Init(&c);
	SHA1_Update(&c, key, strlen(key));
	SHA1_Update(&c, guid, sizeof(guid) - 1);
	SHA1_Final(d, &c);
	EVP_EncodeBlock((uint8_t *)out, d, sizeof(d));
}

static int reject(struct rs_ws_handshake_out *out, int status, const char *why)
{
	out->status = status;
	out->error = why;
	return -EINVAL;
}

int rs_ws_handshake_check(const struct rs_ws_handshake_in *in, struct rs_ws_handshake_out *out)
{
	uint8_t raw[64];
	size_t rawlen = 0;

	memset(out, 0, sizeof(*out));
	if (!in->method || strcmp(in->method, "GET") || in->http_minor < 1)
		return reject(out, 400, "WebSocket upgrade needs GET over HTTP/1.1");
	if (!has_token(in->upgrade, "websocket"))
		return reject(out, 400, "missing 'Upgrade: websocket'");
	if (!has_token(in->connection, "upgrade"))
		return reject(out, 400, "missing 'Connection: Upgrade'");
	if (!in->version || strcmp(in->version, "13"))
		return reject(out, 426, "unsupported WebSocket version (13 required)");
	if (!in->key || strlen(in->key) != 24 ||
	    !EVP_DecodeBase64(raw, &rawlen, sizeof(raw), (const uint8_t *)in->key, 24) ||
	    rawlen != 16)
		return reject(out, 400, "invalid Sec-WebSocket-Key");
	if (in->n_allowed_origins) {
		bool ok = false;

		for (size_t i = 0; in->origin && i < in->n_allowed_origins; i++)
			ok |= !strcasecmp(in->origin, in->allowed_origins[i]);
		if (!ok)
			return reject(out, 403, "origin not allowed");
	}
	rs_ws_accept_key(in->key, out->accept);
	out->echo_binary = has_token(in->protocol, "binary");
	out->status = 101;
	return 0;
}
