#include "core/common.h"

#include <limits.h>
#include <stdatomic.h>
#include <strings.h>

#include <openssl/base64.h>
#include <openssl/sha.h>

#include "proto/http1.h"
#include "proto/ws.h"

/* --- UTF-8 -----------------------------------------------------------------
 *
 * A DFA over byte classes, written from Unicode table 3-7 (well-formed byte
 * sequences). The lead byte of a 3- or 4-byte sequence narrows the range of
 * the byte after it; that is where overlongs (E0 80..9F, F0 80..8F),
 * surrogates (ED A0..BF) and code points above U+10FFFF (F4 90..BF) die. */

enum {
	U_ACCEPT = 0,
	U_REJECT,
	U_NEED1, /* one more 80..BF */
	U_NEED2, /* two more 80..BF */
	U_E0,	 /* A0..BF, then one more */
	U_ED,	 /* 80..9F, then one more */
	U_NEED3, /* three more 80..BF */
	U_F0,	 /* 90..BF, then two more */
	U_F4,	 /* 80..8F, then two more */
	U_NSTATES,
};

enum {
	K_ASCII = 0, /* 00..7F */
	K_80,	     /* 80..8F */
	K_90,	     /* 90..9F */
	K_A0,	     /* A0..BF */
	K_BAD,	     /* C0, C1, F5..FF: never in UTF-8 */
	K_L2,	     /* C2..DF */
	K_E0,
	K_L3, /* E1..EC, EE, EF */
	K_ED,
	K_F0,
	K_L4, /* F1..F3 */
	K_F4,
	K_NCLASSES,
};

/* clang-format off */
static const uint8_t utf8_class[256] = {
	[0x00 ... 0x7f] = K_ASCII, [0x80 ... 0x8f] = K_80, [0x90 ... 0x9f] = K_90,
	[0xa0 ... 0xbf] = K_A0,    [0xc0 ... 0xc1] = K_BAD, [0xc2 ... 0xdf] = K_L2,
	[0xe0] = K_E0,             [0xe1 ... 0xec] = K_L3, [0xed] = K_ED,
	[0xee ... 0xef] = K_L3,    [0xf0] = K_F0,          [0xf1 ... 0xf3] = K_L4,
	[0xf4] = K_F4,             [0xf5 ... 0xff] = K_BAD,
};

#define R U_REJECT
static const uint8_t utf8_next[U_NSTATES][K_NCLASSES] = {
	/* columns: ASCII, 80-8F, 90-9F, A0-BF, bad, C2-DF, E0, E1-EF but ED, ED, F0, F1-F3, F4 */
	[U_ACCEPT] = {U_ACCEPT, R, R, R, R, U_NEED1, U_E0, U_NEED2, U_ED, U_F0, U_NEED3, U_F4},
	[U_REJECT] = {R, R, R, R, R, R, R, R, R, R, R, R},
	[U_NEED1] = {R, U_ACCEPT, U_ACCEPT, U_ACCEPT, R, R, R, R, R, R, R, R},
	[U_NEED2] = {R, U_NEED1, U_NEED1, U_NEED1, R, R, R, R, R, R, R, R},
	[U_E0] = {R, R, R, U_NEED1, R, R, R, R, R, R, R, R},
	[U_ED] = {R, U_NEED1, U_NEED1, R, R, R, R, R, R, R, R, R},
	[U_NEED3] = {R, U_NEED2, U_NEED2, U_NEED2, R, R, R, R, R, R, R, R},
	[U_F0] = {R, R, U_NEED2, U_NEED2, R, R, R, R, R, R, R, R},
	[U_F4] = {R, U_NEED2, R, R, R, R, R, R, R, R, R, R},
};
#undef R
/* clang-format on */

bool rs_utf8_feed(struct rs_utf8 *u, const uint8_t *p, size_t len)
{
	uint32_t st = u->state;
	size_t i = 0;

	/* A state from outside the table is corrupt: refuse rather than index out of it. */
	if (st >= U_NSTATES)
		st = U_REJECT;
	while (i < len && st != U_REJECT) {
		if (st == U_ACCEPT) {
			/* Terminal text is mostly ASCII: skip it a word at a time. */
			for (; i + 8 <= len; i += 8) {
				uint64_t w;

				memcpy(&w, p + i, 8);
				if (w & 0x8080808080808080ull)
					break;
			}
			while (i < len && p[i] < 0x80)
				i++;
			if (i == len)
				break;
		}
		st = utf8_next[st][utf8_class[p[i++]]];
	}
	u->state = st;
	return st != U_REJECT;
}

bool rs_utf8_complete(const struct rs_utf8 *u)
{
	return u->state == U_ACCEPT;
}

/* --- masking --- */

/* Every payload byte of both legs passes here (unmasking the browser's,
 * masking toward Proxmox): 32 bytes per step, in AVX2 registers where the
 * CPU has them, else as two SSE2 halves. */
typedef uint8_t rs_v32 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) void mask32(uint8_t *p, size_t len,
							 const uint8_t key[4], size_t offset)
{
	rs_v32 kv;
	size_t i = 0;

	/* Rotate the key so that kv[0] applies to p[0]; every 32-byte step then
	 * starts at the same key position again. */
	for (size_t j = 0; j < sizeof(kv); j++)
		kv[j] = key[(offset + j) & 3];
	for (; i + sizeof(kv) <= len; i += sizeof(kv)) {
		rs_v32 v;

		memcpy(&v, p + i, sizeof(v));
		v ^= kv;
		memcpy(p + i, &v, sizeof(v));
	}
	for (; i < len; i++)
		p[i] ^= kv[i & 31];
}

__attribute__((target("avx2"))) static void mask_avx2(uint8_t *p, size_t len,
						      const uint8_t key[4], size_t offset)
{
	mask32(p, len, key, offset);
}

static void mask_base(uint8_t *p, size_t len, const uint8_t key[4], size_t offset)
{
	mask32(p, len, key, offset);
}

void rs_ws_mask(uint8_t *p, size_t len, const uint8_t key[4], size_t offset)
{
	static _Atomic int avx2 = -1; /* unknown yet; the same answer on every thread */
	int have = atomic_load_explicit(&avx2, memory_order_relaxed);

	if (have < 0) {
		__builtin_cpu_init();
		have = __builtin_cpu_supports("avx2") ? 1 : 0;
		atomic_store_explicit(&avx2, have, memory_order_relaxed);
	}
	if (have)
		mask_avx2(p, len, key, offset);
	else
		mask_base(p, len, key, offset);
}

/* --- writers --- */

static bool is_control(int opcode)
{
	return opcode == RS_WS_OP_CLOSE || opcode == RS_WS_OP_PING || opcode == RS_WS_OP_PONG;
}

static bool is_data(int opcode)
{
	return opcode == RS_WS_OP_CONT || opcode == RS_WS_OP_TEXT || opcode == RS_WS_OP_BINARY;
}

size_t rs_ws_frame_header(uint8_t out[RS_WS_MAX_HEADER], int opcode, bool fin, uint64_t len,
			  const uint8_t mask[4])
{
	size_t n = 2;

	if (!is_data(opcode) && !is_control(opcode))
		return 0;
	if (is_control(opcode) && (!fin || len > RS_WS_MAX_CONTROL))
		return 0;
	if (len >> 63)
		return 0;
	out[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
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

bool rs_ws_close_code_sendable(uint16_t code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

size_t rs_ws_close_payload(uint8_t out[RS_WS_MAX_CONTROL], uint16_t code, const char *reason)
{
	struct rs_utf8 u = {0};
	size_t n = 0, good = 0;

	if (!rs_ws_close_code_sendable(code))
		return 0;
	out[0] = (uint8_t)(code >> 8);
	out[1] = (uint8_t)code;
	/* Reasons may quote an upstream's text: keep only what a peer will
	 * accept, up to the last whole character that fits. */
	while (reason && reason[n] && n < RS_WS_MAX_CONTROL - 2) {
		if (!rs_utf8_feed(&u, (const uint8_t *)reason + n, 1))
			break;
		n++;
		if (rs_utf8_complete(&u))
			good = n;
	}
	if (good)
		memcpy(out + 2, reason, good);
	return 2 + good;
}

/* --- pending pong --- */

void rs_ws_pong_hold(struct rs_ws_pong *pp, const uint8_t *data, size_t len)
{
	pp->len = (uint8_t)RS_MIN(len, (size_t)RS_WS_MAX_CONTROL);
	if (pp->len)
		memcpy(pp->data, data, pp->len);
	pp->pending = true;
}

size_t rs_ws_pong_take(struct rs_ws_pong *pp, uint8_t out[RS_WS_MAX_PONG_FRAME],
		       const uint8_t mask[4])
{
	size_t n;

	if (!pp->pending)
		return 0;
	/* A pong of at most 125 bytes always has a valid header. */
	n = rs_ws_frame_header(out, RS_WS_OP_PONG, true, pp->len, mask);
	memcpy(out + n, pp->data, pp->len);
	if (mask)
		rs_ws_mask(out + n, pp->len, mask, 0);
	n += pp->len;
	pp->pending = false;
	pp->len = 0;
	return n;
}

/* --- parser --- */

enum {
	ST_HEADER = 0,
	ST_PAYLOAD,
	ST_STOPPED,
};

void rs_ws_parser_init(struct rs_ws_parser *p, bool server, uint64_t max_frame,
		       uint64_t max_message)
{
	memset(p, 0, sizeof(*p));
	p->server = server;
	p->max_frame = max_frame;
	p->max_message = max_message;
	p->state = ST_HEADER;
	p->hdr_need = 2;
}

/* Stop the parser for good and report why. Returns <consumed>. */
static int fail(struct rs_ws_parser *p, struct rs_ws_event *ev, uint16_t code, const char *why,
		size_t consumed)
{
	p->state = ST_STOPPED;
	p->err_code = code;
	p->err = why;
	memset(ev, 0, sizeof(*ev));
	ev->type = RS_WS_EV_ERROR;
	ev->close_code = code;
	ev->error = why;
	return (int)consumed;
}

/* The first two header bytes hold everything but the extended length and
 * the key: check them at once, so a bad frame fails without waiting for
 * more bytes. Returns NULL or the violation (all are 1002). */
static const char *check_head(struct rs_ws_parser *p)
{
	uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
	uint8_t op = b0 & 0x0f, len7 = b1 & 0x7f;
	bool fin = b0 & 0x80, masked = b1 & 0x80;

	if (b0 & 0x70)
		return "reserved bits set without an extension";
	switch (op) {
	case RS_WS_OP_CLOSE:
	case RS_WS_OP_PING:
	case RS_WS_OP_PONG:
		if (!fin)
			return "fragmented control frame";
		/* 126 and 127 announce an extended length, which is > 125 */
		if (len7 > RS_WS_MAX_CONTROL)
			return "control frame longer than 125 bytes";
		if (op == RS_WS_OP_CLOSE && len7 == 1)
			return "close frame with a 1-byte payload";
		break;
	case RS_WS_OP_CONT:
		if (!p->msg_op)
			return "continuation frame without a message";
		break;
	case RS_WS_OP_TEXT:
	case RS_WS_OP_BINARY:
		if (p->msg_op)
			return "new message inside a fragmented message";
		break;
	default:
		return "unknown opcode";
	}
	if (masked != p->server)
		return p->server ? "client frame not masked" : "server frame masked";
	p->frame_op = op;
	p->frame_fin = fin;
	p->hdr_need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked ? 4 : 0));
	return NULL;
}

/* The whole header is in: decode the length and set up the payload.
 * Returns 0 or the close code of a violation, with *why set. */
static uint16_t start_payload(struct rs_ws_parser *p, const char **why)
{
	uint8_t len7 = p->hdr[1] & 0x7f;
	uint64_t len = len7;
	size_t key = 2;

	if (len7 == 126) {
		len = (uint64_t)p->hdr[2] << 8 | p->hdr[3];
		key = 4;
		if (len < 126)
			goto out_non_minimal;
	} else if (len7 == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | p->hdr[2 + i];
		key = 10;
		if (len >> 63) {
			*why = "frame length with the top bit set";
			return 1002;
		}
		if (len <= 0xffff)
			goto out_non_minimal;
	}
	if (is_data(p->frame_op)) {
		if (p->frame_op != RS_WS_OP_CONT) {
			p->msg_op = p->frame_op;
			p->msg_len = 0;
			p->utf8.state = 0;
		}
		if (len > p->max_frame) {
			*why = "frame too big";
			return 1009;
		}
		/* msg_len <= max_message holds, so this cannot wrap */
		if (len > p->max_message - p->msg_len) {
			*why = "message too big";
			return 1009;
		}
		p->msg_len += len;
	}
	if (p->server)
		memcpy(p->mask, p->hdr + key, 4);
	p->remaining = len;
	p->mask_off = 0;
	p->ctl_len = 0;
	p->state = ST_PAYLOAD;
	return 0;

out_non_minimal:
	/* RFC 6455 5.2: the minimal number of bytes MUST be used */
	*why = "non-minimal frame length";
	return 1002;
}

/* The current frame's payload is complete: expect the next header. */
static void end_frame(struct rs_ws_parser *p)
{
	p->state = ST_HEADER;
	p->hdr_len = 0;
	p->hdr_need = 2;
	if (is_data(p->frame_op) && p->frame_fin)
		p->msg_op = 0;
}

/* A control frame is complete in p->ctl: report it. */
static int control_event(struct rs_ws_parser *p, struct rs_ws_event *ev, size_t consumed)
{
	struct rs_utf8 u = {0};

	end_frame(p);
	ev->data = p->ctl;
	ev->len = p->ctl_len;
	if (p->frame_op == RS_WS_OP_PING) {
		ev->type = RS_WS_EV_PING;
		return (int)consumed;
	}
	if (p->frame_op == RS_WS_OP_PONG) {
		ev->type = RS_WS_EV_PONG;
		return (int)consumed;
	}
	/* CLOSE; a 1-byte payload was refused with the header. */
	p->ctl[p->ctl_len] = 0;
	ev->close_code = 1005;
	ev->reason = "";
	if (p->ctl_len >= 2) {
		ev->close_code = (uint16_t)(p->ctl[0] << 8 | p->ctl[1]);
		if (!rs_ws_close_code_sendable(ev->close_code))
			return fail(p, ev, 1002, "invalid close code", consumed);
		if (!rs_utf8_feed(&u, p->ctl + 2, p->ctl_len - 2u) || !rs_utf8_complete(&u))
			return fail(p, ev, 1007, "close reason is not valid UTF-8", consumed);
		ev->reason = (const char *)p->ctl + 2;
		ev->reason_len = p->ctl_len - 2u;
	}
	ev->type = RS_WS_EV_CLOSE;
	/* RFC 6455 5.5.1: nothing may follow a close frame. */
	p->state = ST_STOPPED;
	p->err_code = 1002;
	p->err = "data after a close frame";
	return (int)consumed;
}

/* Deliver the end of a data frame that carried no payload. Returns true
 * when that produced an event (the message ended, or an error). */
static bool empty_data_frame(struct rs_ws_parser *p, struct rs_ws_event *ev, const uint8_t *at)
{
	int op = p->msg_op;

	end_frame(p);
	if (!p->frame_fin)
		return false;
	if (op == RS_WS_OP_TEXT && !rs_utf8_complete(&p->utf8)) {
		fail(p, ev, 1007, "text message is not valid UTF-8", 0);
		return true;
	}
	ev->type = RS_WS_EV_DATA;
	ev->opcode = op;
	ev->data = at;
	ev->len = 0;
	ev->fin = true;
	return true;
}

int rs_ws_parse(struct rs_ws_parser *p, uint8_t *buf, size_t len, struct rs_ws_event *ev)
{
	size_t i = 0;

	memset(ev, 0, sizeof(*ev));
	if (!len)
		return 0;
	if (p->state == ST_STOPPED) {
		fail(p, ev, p->err_code, p->err, 0);
		return RS_PARSE_ERROR;
	}
	/* The count we return is an int. */
	if (len > INT_MAX)
		len = INT_MAX;
	while (i < len) {
		size_t n;

		if (p->state == ST_HEADER) {
			const char *why = NULL;
			uint16_t code;

			n = RS_MIN((size_t)(p->hdr_need - p->hdr_len), len - i);
			memcpy(p->hdr + p->hdr_len, buf + i, n);
			p->hdr_len = (uint8_t)(p->hdr_len + n);
			i += n;
			if (p->hdr_len < p->hdr_need)
				break;
			if (p->hdr_len == 2) {
				why = check_head(p);
				if (why)
					return fail(p, ev, 1002, why, i);
				if (p->hdr_len < p->hdr_need)
					continue;
			}
			code = start_payload(p, &why);
			if (code)
				return fail(p, ev, code, why, i);
			if (p->remaining)
				continue;
			if (is_control(p->frame_op))
				return control_event(p, ev, i);
			if (empty_data_frame(p, ev, buf + i))
				return (int)i;
			continue;
		}

		n = (size_t)RS_MIN(p->remaining, (uint64_t)(len - i));
		if (is_control(p->frame_op)) {
			/* Controls are delivered whole: gather them (<= 125 bytes). */
			memcpy(p->ctl + p->ctl_len, buf + i, n);
			if (p->server)
				rs_ws_mask(p->ctl + p->ctl_len, n, p->mask, p->mask_off);
			p->ctl_len = (uint8_t)(p->ctl_len + n);
		} else {
			uint8_t *d = buf + i;
			bool last;

			if (p->server)
				rs_ws_mask(d, n, p->mask, p->mask_off);
			last = p->remaining == n && p->frame_fin;
			if (p->msg_op == RS_WS_OP_TEXT && (!rs_utf8_feed(&p->utf8, d, n) ||
							   (last && !rs_utf8_complete(&p->utf8))))
				return fail(p, ev, 1007, "text message is not valid UTF-8", i + n);
			ev->type = RS_WS_EV_DATA;
			ev->opcode = p->msg_op;
			ev->data = d;
			ev->len = n;
			ev->fin = last;
		}
		p->mask_off = (uint8_t)((p->mask_off + n) & 3);
		p->remaining -= n;
		i += n;
		if (p->remaining) {
			/* everything given went into this frame */
			break;
		}
		if (is_control(p->frame_op))
			return control_event(p, ev, i);
		end_frame(p);
		break;
	}
	return (int)i;
}

/* --- handshake --- */


void rs_ws_accept_key(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	uint8_t d[SHA_DIGEST_LENGTH];
	SHA_CTX c;

	SHA1_Init(&c);
	SHA1_Update(&c, key, strlen(key));
	SHA1_Update(&c, guid, sizeof(guid) - 1);
	SHA1_Final(d, &c);
	/* 20 bytes encode to 28 characters plus the NUL EVP_EncodeBlock writes */
	EVP_EncodeBlock((uint8_t *)out, d, sizeof(d));
}

static bool key_valid(const char *key)
{
	uint8_t raw[18];
	size_t n = 0;

	/* base64 of 16 bytes is always 22 characters and "==" */
	return key && strlen(key) == 24 &&
	       EVP_DecodeBase64(raw, &n, sizeof(raw), (const uint8_t *)key, 24) && n == 16;
}

static bool origin_allowed(const struct rs_ws_handshake_in *in)
{
	if (!in->n_allowed_origins)
		return true;
	for (size_t i = 0; in->origin && i < in->n_allowed_origins; i++) {
		if (in->allowed_origins[i] && !strcasecmp(in->origin, in->allowed_origins[i]))
			return true;
	}
	return false;
}

int rs_ws_handshake_check(const struct rs_ws_handshake_in *in, struct rs_ws_handshake_out *out)
{
	memset(out, 0, sizeof(*out));
	out->headers = "";
	out->status = 400;
	if (!in->method || strcmp(in->method, "GET")) {
		out->error = "a WebSocket upgrade must be a GET";
		goto out_reject;
	}
	if (in->http_minor < 1) {
		out->error = "a WebSocket upgrade needs HTTP/1.1";
		goto out_reject;
	}
	if (!rs_http_list_has(in->upgrade, "websocket", true)) {
		out->error = "missing 'Upgrade: websocket'";
		goto out_reject;
	}
	if (!rs_http_list_has(in->connection, "upgrade", true)) {
		out->error = "missing 'Connection: Upgrade'";
		goto out_reject;
	}
	/* Before the key: a client speaking an older draft sends other key
	 * headers, and 426 tells it which version to speak (RFC 6455 4.4). */
	if (!in->version || strcmp(in->version, "13")) {
		out->status = 426;
		out->error = "unsupported WebSocket version (13 required)";
		out->headers = "Sec-WebSocket-Version: 13\r\n";
		goto out_reject;
	}
	if (!key_valid(in->key)) {
		out->error = "invalid Sec-WebSocket-Key";
		goto out_reject;
	}
	if (!origin_allowed(in)) {
		out->status = 403;
		out->error = "origin not allowed";
		goto out_reject;
	}
	rs_ws_accept_key(in->key, out->accept);
	out->echo_binary = rs_http_list_has(in->protocol, "binary", false);
	out->status = 101;
	return 0;

out_reject:
	return -EINVAL;
}
