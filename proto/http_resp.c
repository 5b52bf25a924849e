#include "core/common.h"

#include <limits.h>
#include <pthread.h>
#include <strings.h>

#include "proto/http_resp.h"

#define BODY_MIN_CAP 1024u

static struct rs_http_resp_parser *P(llhttp_t *ll)
{
	return rs_container_of(ll, struct rs_http_resp_parser, ll);
}

static int fail(struct rs_http_resp_parser *p, const char *why)
{
	if (!p->err)
		p->err = why;
	return HPE_USER;
}

/* Count head bytes here rather than trusting llhttp: it has no limit of its
 * own on the number or size of header lines. */
static int count_head(struct rs_http_resp_parser *p, size_t len)
{
	p->head_len += len;
	if (p->head_len > RS_HTTP_RESP_MAX_HEAD)
		return fail(p, "response head too large");
	return 0;
}

static int on_status(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_resp_parser *p = P(ll);
	size_t have = strlen(p->resp.reason);
	size_t n = RS_MIN(len, sizeof(p->resp.reason) - 1 - have);

	memcpy(p->resp.reason + have, at, n);
	p->resp.reason[have + n] = '\0';
	return count_head(p, len);
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_resp_parser *p = P(ll);

	if (p->hname_len != 0xff) {
		if (p->hname_len + len >= sizeof(p->hname)) {
			p->hname_len = 0xff;
		} else {
			memcpy(p->hname + p->hname_len, at, len);
			p->hname_len = (uint8_t)(p->hname_len + len);
		}
	}
	return count_head(p, len);
}

/* Pick where the value of the header just named goes. A repeated header is
 * combined into one comma-separated list (RFC 9110 section 5.3): pveproxy
 * sends both "Connection: close" and "Connection: Keep-Alive" on every call
 * it proxies to pvedaemon. Only a second Sec-WebSocket-Accept is refused:
 * two values leave no honest way to choose (RFC 6455 section 4.1). */
static int on_header_field_complete(llhttp_t *ll)
{
	struct rs_http_resp_parser *p = P(ll);
	struct rs_http_resp *r = &p->resp;
	static const struct {
		const char *name;
		size_t off, cap;
	} keep[] = {
	    {"content-type", offsetof(struct rs_http_resp, content_type), sizeof(r->content_type)},
	    {"connection", offsetof(struct rs_http_resp, connection), sizeof(r->connection)},
	    {"upgrade", offsetof(struct rs_http_resp, upgrade), sizeof(r->upgrade)},
	    {"sec-websocket-accept", offsetof(struct rs_http_resp, ws_accept),
	     sizeof(r->ws_accept)},
	    {"sec-websocket-protocol", offsetof(struct rs_http_resp, ws_protocol),
	     sizeof(r->ws_protocol)},
	};

	p->hval = NULL;
	if (p->hname_len == 0xff)
		return 0;
	for (size_t i = 0; i < RS_ARRAY_SIZE(keep); i++) {
		char *dst = (char *)r + keep[i].off;

		if (strlen(keep[i].name) != p->hname_len ||
		    strncasecmp(p->hname, keep[i].name, p->hname_len))
			continue;
		if (dst == r->ws_accept && r->has_ws_accept)
			return fail(p, "repeated Sec-WebSocket-Accept");
		p->hval = dst;
		p->hval_cap = keep[i].cap;
		p->hval_len = strlen(dst);
		if (dst[0] || (dst == r->ws_protocol && r->has_ws_protocol)) {
			if (p->hval_len + 2 >= p->hval_cap)
				return fail(p, "response header value too long");
			memcpy(dst + p->hval_len, ", ", 3);
			p->hval_len += 2;
		}
		if (dst == r->ws_accept)
			r->has_ws_accept = true;
		else if (dst == r->ws_protocol)
			r->has_ws_protocol = true;
		break;
	}
	return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_resp_parser *p = P(ll);

	if (p->hval) {
		if (p->hval_len + len >= p->hval_cap)
			return fail(p, "response header value too long");
		memcpy(p->hval + p->hval_len, at, len);
		p->hval_len += len;
		p->hval[p->hval_len] = '\0';
	}
	return count_head(p, len);
}

static int on_header_value_complete(llhttp_t *ll)
{
	struct rs_http_resp_parser *p = P(ll);

	/* llhttp keeps trailing whitespace of a value; strip it. */
	while (p->hval && p->hval_len &&
	       (p->hval[p->hval_len - 1] == ' ' || p->hval[p->hval_len - 1] == '\t'))
		p->hval[--p->hval_len] = '\0';
	p->hval = NULL;
	p->hname_len = 0;
	return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
	struct rs_http_resp_parser *p = P(ll);

	if (ll->http_major != 1)
		return fail(p, "not an HTTP/1 response");
	if ((ll->flags & F_CONTENT_LENGTH) && ll->content_length > p->max_body)
		return fail(p, "response body over the limit");
	p->resp.status = ll->status_code;
	p->resp.minor = ll->http_minor;
	return 0;
}

/* Grow the body buffer by moving it: realloc could leave a copy of a
 * ticket in freed memory. */
static int grow_body(struct rs_http_resp_parser *p, size_t need)
{
	size_t cap = p->body_cap ? p->body_cap : BODY_MIN_CAP;
	uint8_t *nb;

	while (cap < need)
		cap *= 2;
	cap = RS_MIN(cap, p->max_body + 1);
	nb = malloc(cap);
	if (!nb)
		return -ENOMEM;
	if (p->resp.body) {
		memcpy(nb, p->resp.body, p->resp.body_len);
		explicit_bzero(p->resp.body, p->body_cap);
		free(p->resp.body);
	}
	p->resp.body = nb;
	p->body_cap = cap;
	return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_resp_parser *p = P(ll);
	struct rs_http_resp *r = &p->resp;
	size_t need = r->body_len + len + 1;

	if (r->body_len + len > p->max_body)
		return fail(p, "response body over the limit");
	/* A known length is allocated at once, so a body never moves. */
	if ((ll->flags & F_CONTENT_LENGTH) && !r->body)
		need = RS_MAX(need, r->body_len + len + ll->content_length + 1);
	if (need > p->body_cap && grow_body(p, need))
		return fail(p, "out of memory");
	memcpy(r->body + r->body_len, at, len);
	r->body_len += len;
	r->body[r->body_len] = '\0';
	return 0;
}

static void clear_message(struct rs_http_resp_parser *p)
{
	rs_http_resp_release(p);
	memset(&p->resp, 0, sizeof(p->resp));
	p->head_len = 0;
	p->hval = NULL;
	p->hname_len = 0;
}

static int on_message_complete(llhttp_t *ll)
{
	struct rs_http_resp_parser *p = P(ll);

	/* Interim 1xx answers (100 Continue, 103 Early Hints) precede the real
	 * one; forget them. 101 is final: the connection changes protocol. */
	if (ll->status_code >= 100 && ll->status_code < 200 && ll->status_code != 101) {
		clear_message(p);
		return 0;
	}
	p->resp.keep_alive = llhttp_should_keep_alive(ll);
	p->resp.upgraded = ll->status_code == 101;
	p->done = true;
	/* Stop right after the message: for a 101 the next byte is WebSocket. */
	return HPE_PAUSED;
}

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void settings_init(void)
{
	llhttp_settings_init(&settings);
	settings.on_status = on_status;
	settings.on_header_field = on_header_field;
	settings.on_header_field_complete = on_header_field_complete;
	settings.on_header_value = on_header_value;
	settings.on_header_value_complete = on_header_value_complete;
	settings.on_headers_complete = on_headers_complete;
	settings.on_body = on_body;
	settings.on_message_complete = on_message_complete;
}

void rs_http_resp_init(struct rs_http_resp_parser *p, size_t max_body)
{
	pthread_once(&settings_once, settings_init);
	memset(p, 0, sizeof(*p));
	p->max_body = max_body ? max_body : RS_HTTP_RESP_DEFAULT_MAX_BODY;
	llhttp_init(&p->ll, HTTP_RESPONSE, &settings);
}

void rs_http_resp_release(struct rs_http_resp_parser *p)
{
	if (p->resp.body)
		explicit_bzero(p->resp.body, p->body_cap);
	free(p->resp.body);
	p->resp.body = NULL;
	p->resp.body_len = 0;
	p->body_cap = 0;
}

void rs_http_resp_reset(struct rs_http_resp_parser *p)
{
	size_t max_body = p->max_body;

	rs_http_resp_release(p);
	rs_http_resp_init(p, max_body);
}

int rs_http_resp_feed(struct rs_http_resp_parser *p, const uint8_t *data, size_t len)
{
	const char *start = (const char *)data;
	llhttp_errno_t e;

	if (p->err)
		goto out_error;
	if (p->done || !len)
		return 0;
	len = RS_MIN(len, (size_t)INT_MAX);
	e = llhttp_execute(&p->ll, start, len);
	if (e == HPE_OK)
		return (int)len;
	if (e == HPE_PAUSED && p->done)
		return (int)(llhttp_get_error_pos(&p->ll) - start);
	fail(p, "malformed HTTP response");
out_error:
	return RS_PARSE_ERROR;
}

int rs_http_resp_eof(struct rs_http_resp_parser *p)
{
	if (p->err)
		return RS_PARSE_ERROR;
	if (p->done)
		return 0;
	/* llhttp completes a read-until-close body in llhttp_finish() and
	 * reports anything else left open as an error. */
	if (llhttp_finish(&p->ll) != HPE_OK && !p->done) {
		fail(p, "response cut short");
		return RS_PARSE_ERROR;
	}
	if (!p->done) {
		fail(p, "response cut short");
		return RS_PARSE_ERROR;
	}
	return 0;
}

bool rs_http_resp_done(const struct rs_http_resp_parser *p)
{
	return p->done;
}

const char *rs_http_resp_error(const struct rs_http_resp_parser *p)
{
	return p->err;
}
