#include "core/common.h"

#include <openssl/des.h>

#include "core/text.h"
#include "proto/rfb.h"

static void put_u32(struct rs_rfb_out *o, uint32_t v)
{
	if (o->len + 4 > sizeof(o->buf))
		return;
	o->buf[o->len++] = (uint8_t)(v >> 24);
	o->buf[o->len++] = (uint8_t)(v >> 16);
	o->buf[o->len++] = (uint8_t)(v >> 8);
	o->buf[o->len++] = (uint8_t)v;
}

static void put(struct rs_rfb_out *o, const void *p, size_t n)
{
	if (o->len + n > sizeof(o->buf))
		n = sizeof(o->buf) - o->len;
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* "RFB xxx.yyy\n" -> effective minor version 3, 7 or 8; -1 if malformed.
 * Unknown minors below 7 mean 3.3 and above 8 mean 3.8 (RFC 6143 7.1.1;
 * Apple's 3.889 is 3.8). */
static int parse_version(const uint8_t v[12])
{
	int major = 0, minor = 0;

	if (memcmp(v, "RFB ", 4) || v[7] != '.' || v[11] != '\n')
		return -1;
	for (int i = 4; i < 7; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		major = major * 10 + (v[i] - '0');
	}
	for (int i = 8; i < 11; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		minor = minor * 10 + (v[i] - '0');
	}
	if (major < 3)
		return -1;
	if (major > 3 || minor >= 8)
		return 8;
	return minor == 7 ? 7 : 3;
}

/* --- server toward the browser --- */

void rs_rfb_server_init(struct rs_rfb_server *s)
{
	memset(s, 0, sizeof(*s));
}

void rs_rfb_server_start(struct rs_rfb_server *s, struct rs_rfb_out *out)
{
	(void)s;
	put(out, "RFB 003.008\n", 12);
}

int rs_rfb_server_feed(struct rs_rfb_server *s, const uint8_t *in, size_t len,
		       struct rs_rfb_out *out)
{
	size_t i = 0;

	if (s->state == RS_RFB_SERVER_FAILED)
		return RS_PARSE_ERROR;
	if (s->state == RS_RFB_SERVER_VERSION) {
		while (s->ver_len < 12 && i < len)
			s->ver[s->ver_len++] = in[i++];
		if (s->ver_len < 12)
			return (int)i;
		s->minor = parse_version(s->ver);
		if (s->minor < 0) {
			s->state = RS_RFB_SERVER_FAILED;
			s->error = "the browser did not send an RFB protocol version";
			return RS_PARSE_ERROR;
		}
		s->state = RS_RFB_SERVER_WAIT_UPSTREAM;
		return (int)i;
	}
	if (s->state == RS_RFB_SERVER_CHOICE && i < len) {
		if (in[i++] != 1) {
			s->state = RS_RFB_SERVER_FAILED;
			s->error = "the browser chose a security type that was not offered";
			return RS_PARSE_ERROR;
		}
		if (s->minor == 8)
			put_u32(out, 0); /* SecurityResult OK */
		s->state = RS_RFB_SERVER_DONE;
	}
	return (int)i;
}

bool rs_rfb_server_waiting(const struct rs_rfb_server *s)
{
	return s->state == RS_RFB_SERVER_WAIT_UPSTREAM;
}

bool rs_rfb_server_done(const struct rs_rfb_server *s)
{
	return s->state == RS_RFB_SERVER_DONE;
}

void rs_rfb_server_accept(struct rs_rfb_server *s, struct rs_rfb_out *out)
{
	static const uint8_t none_list[2] = {1, 1};

	if (s->state != RS_RFB_SERVER_WAIT_UPSTREAM)
		return;
	if (s->minor == 3) {
		put_u32(out, 1);
		s->state = RS_RFB_SERVER_DONE;
		return;
	}
	put(out, none_list, 2);
	s->state = RS_RFB_SERVER_CHOICE;
}

void rs_rfb_server_fail(struct rs_rfb_server *s, const char *reason, struct rs_rfb_out *out)
{
	size_t n = strlen(reason);

	if (s->state != RS_RFB_SERVER_WAIT_UPSTREAM)
		return;
	if (n > sizeof(out->buf) - out->len - 8)
		n = sizeof(out->buf) - out->len - 8;
	/* Before any type list: 3.3 sends type 0, 3.7/3.8 an empty list; both
	 * are followed by the reason string. */
	if (s->minor == 3)
		put_u32(out, 0);
	else
		put(out, "", 1);
	put_u32(out, (uint32_t)n);
	put(out, reason, n);
	s->state = RS_RFB_SERVER_FAILED;
	s->error = "upstream failed";
}

/* --- client toward the target --- */

void rs_rfb_vnc_auth_response(const char *password, const uint8_t challenge[16],
			      uint8_t out[16])
{
	DES_cblock key = {0};
	DES_key_schedule ks;
	size_t n = password ? strlen(password) : 0;

	for (size_t i = 0; i < 8 && i < n; i++) {
		uint8_t b = (uint8_t)password[i], r = 0;

		/* VNC's quirk: every key byte is bit-reversed. */
		for (int k = 0; k < 8; k++)
			r |= (uint8_t)(((b >> k) & 1) << (7 - k));
		key.bytes[i] = r;
	}
	DES_set_key_unchecked(&key, &ks);
	DES_ecb_encrypt((const DES_cblock *)challenge, (DES_cblock *)out, &ks, DES_ENCRYPT);
	DES_ecb_encrypt((const DES_cblock *)(challenge + 8), (DES_cblock *)(out + 8), &ks,
			DES_ENCRYPT);
	explicit_bzero(&key, sizeof(key));
	explicit_bzero(&ks, sizeof(ks));
}

void rs_rfb_client_init(struct rs_rfb_client *c, const char *password)
{
	memset(c, 0, sizeof(*c));
	c->acc_need = 12;
	if (password && *password) {
		snprintf(c->password, sizeof(c->password), "%s", password);
		c->has_password = true;
	}
}

void rs_rfb_client_release(struct rs_rfb_client *c)
{
	explicit_bzero(c->password, sizeof(c->password));
	c->has_password = false;
}

bool rs_rfb_client_done(const struct rs_rfb_client *c)
{
	return c->state == RS_RFB_CLIENT_DONE;
}

bool rs_rfb_client_auth_failed(const struct rs_rfb_client *c)
{
	return c->auth_failed;
}

static int client_fail(struct rs_rfb_client *c, const char *fmt, const char *arg)
{
	c->state = RS_RFB_CLIENT_FAILED;
	snprintf(c->error, sizeof(c->error), fmt, arg);
	return RS_PARSE_ERROR;
}

static void expect(struct rs_rfb_client *c, enum rs_rfb_client_state st, size_t need)
{
	c->state = st;
	c->acc_len = 0;
	c->acc_need = need;
}

static void after_security_type(struct rs_rfb_client *c, int type)
{
	if (type == 2) {
		c->used_vnc_auth = true;
		expect(c, RS_RFB_CLIENT_CHALLENGE, 16);
	} else if (c->minor == 8) {
		expect(c, RS_RFB_CLIENT_RESULT, 4);
	} else {
		/* 3.3 and 3.7 send no SecurityResult for None. */
		c->state = RS_RFB_CLIENT_DONE;
	}
}

/* A complete fixed-size field is in c->acc: act on it. 0 or an error. */
static int client_step(struct rs_rfb_client *c, struct rs_rfb_out *out)
{
	char offered[64];
	size_t olen = 0;
	int pick = 0;

	switch (c->state) {
	case RS_RFB_CLIENT_VERSION: {
		char reply[16];

		c->minor = parse_version(c->acc);
		if (c->minor < 0)
			return client_fail(c, "%s", "the console target is not a VNC server "
						    "(no RFB protocol version)");
		snprintf(reply, sizeof(reply), "RFB 003.00%c\n", '0' + c->minor);
		put(out, reply, 12);
		if (c->minor == 3)
			expect(c, RS_RFB_CLIENT_TYPES, 4);
		else
			expect(c, RS_RFB_CLIENT_TYPES, 1);
		return 0;
	}
	case RS_RFB_CLIENT_TYPES:
		if (c->minor == 3) {
			uint32_t t = get_u32(c->acc);

			if (t == 0) {
				c->reason_after_types = true;
				expect(c, RS_RFB_CLIENT_REASON, 4);
				return 0;
			}
			if (t == 2 && !c->has_password)
				return client_fail(c, "%s", "the VNC target requires a password");
			if (t != 1 && t != 2)
				return client_fail(c, "%s", "no supported security type");
			after_security_type(c, (int)t);
			return 0;
		}
		if (!c->types_read_count) {
			c->ntypes = c->acc[0];
			if (!c->ntypes) {
				c->reason_after_types = true;
				expect(c, RS_RFB_CLIENT_REASON, 4);
				return 0;
			}
			c->types_read_count = true;
			expect(c, RS_RFB_CLIENT_TYPES, c->ntypes);
			return 0;
		}
		for (size_t i = 0; i < c->ntypes; i++) {
			if (c->acc[i] == 2 && c->has_password)
				pick = 2;
			else if (c->acc[i] == 1 && pick != 2)
				pick = 1;
			if (olen + 5 < sizeof(offered))
				olen += (size_t)snprintf(offered + olen, sizeof(offered) - olen,
							 "%s%u", i ? "," : "", c->acc[i]);
		}
		offered[olen] = 0;
		if (!pick) {
			if (memchr(c->acc, 2, c->ntypes))
				return client_fail(c, "%s", "the VNC target requires a password");
			return client_fail(c, "no supported security type (the target offers: %s)",
					   offered);
		}
		put(out, &(uint8_t){(uint8_t)pick}, 1);
		after_security_type(c, pick);
		return 0;
	case RS_RFB_CLIENT_CHALLENGE: {
		uint8_t resp[16];

		rs_rfb_vnc_auth_response(c->password, c->acc, resp);
		put(out, resp, 16);
		explicit_bzero(resp, sizeof(resp));
		expect(c, RS_RFB_CLIENT_RESULT, 4);
		return 0;
	}
	case RS_RFB_CLIENT_RESULT: {
		uint32_t r = get_u32(c->acc);

		if (r == 0) {
			c->state = RS_RFB_CLIENT_DONE;
			return 0;
		}
		c->auth_failed = true;
		if (c->minor == 8) {
			expect(c, RS_RFB_CLIENT_REASON, 4);
			return 0;
		}
		return client_fail(c, "%s", "VNC authentication failed");
	}
	case RS_RFB_CLIENT_REASON:
		c->reason_len = get_u32(c->acc);
		c->reason_got = 0;
		c->acc_need = 0;
		return 0;
	default:
		return RS_PARSE_ERROR;
	}
}

/* The server chose these bytes: the browser shows them and the log keeps
 * them, so only printable UTF-8 without controls or bidi overrides passes. */
static int finish_reason(struct rs_rfb_client *c)
{
	char clean[RS_RFB_REASON_MAX + 1];

	rs_text_sanitize(clean, sizeof(clean), c->reason, RS_MIN(c->reason_got, RS_RFB_REASON_MAX));
	if (c->auth_failed)
		return client_fail(c, "VNC authentication failed: %s", clean);
	return client_fail(c, "the VNC target refused the connection: %s", clean);
}

int rs_rfb_client_feed(struct rs_rfb_client *c, const uint8_t *in, size_t len,
		       struct rs_rfb_out *out)
{
	size_t i = 0;

	while (i < len || (c->state == RS_RFB_CLIENT_REASON && !c->acc_need &&
			   c->reason_got == c->reason_len)) {
		if (c->state == RS_RFB_CLIENT_DONE)
			break;
		if (c->state == RS_RFB_CLIENT_FAILED)
			return RS_PARSE_ERROR;
		if (c->state == RS_RFB_CLIENT_REASON && !c->acc_need) {
			/* Reason bytes beyond the cap are read and dropped, never stored. */
			size_t n = RS_MIN((size_t)(c->reason_len - c->reason_got), len - i);

			if (c->reason_got < RS_RFB_REASON_MAX)
				memcpy(c->reason + c->reason_got, in + i,
				       RS_MIN(n, (size_t)(RS_RFB_REASON_MAX - c->reason_got)));
			c->reason_got += (uint32_t)n;
			i += n;
			if (c->reason_got == c->reason_len)
				return finish_reason(c);
			continue;
		}
		while (c->acc_len < c->acc_need && i < len)
			c->acc[c->acc_len++] = in[i++];
		if (c->acc_len < c->acc_need)
			break;
		if (client_step(c, out))
			return RS_PARSE_ERROR;
	}
	return (int)i;
}
