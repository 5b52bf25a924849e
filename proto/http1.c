#include "core/common.h"

#include <pthread.h>
#include <strings.h>

#include "proto/http1.h"

#define SLACK 1024

static struct rs_http_parser *P(llhttp_t *ll)
{
	return rs_container_of(ll, struct rs_http_parser, ll);
}

static uint32_t off_of(struct rs_http_parser *p, const char *at)
{
	return (uint32_t)((const uint8_t *)at - p->buf);
}

static int fail(struct rs_http_parser *p, int status)
{
	p->status = status;
	return HPE_USER;
}

/* Spans arrive in pieces when a request straddles receives; the buffer is
 * contiguous, so a piece always extends the span it continues. */
static void extend(struct rs_http_parser *p, struct rs_http_span *s, const char *at, size_t len)
{
	if (!s->len && !s->off)
		s->off = off_of(p, at);
	s->len = off_of(p, at) + (uint32_t)len - s->off;
}

static size_t head_limit(const struct rs_http_parser *p)
{
	return (size_t)p->lim->max_request_line + p->lim->max_header_bytes;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_parser *p = P(ll);

	extend(p, &p->url, at, len);
	if (p->url.len + 16 > p->lim->max_request_line)
		return fail(p, 414);
	return 0;
}

/* Header bytes are counted from the first header field, so a long request
 * line and a large header block are limited separately. */
static int check_head(struct rs_http_parser *p, const char *at, size_t len)
{
	if (!p->hdr_start)
		p->hdr_start = off_of(p, at);
	if (off_of(p, at) + len - p->hdr_start > p->lim->max_header_bytes)
		return fail(p, 431);
	return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_parser *p = P(ll);

	extend(p, &p->hname, at, len);
	return check_head(p, at, len);
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_parser *p = P(ll);

	p->in_value = true;
	extend(p, &p->hval, at, len);
	return check_head(p, at, len);
}

/* What llhttp 8 lets through and RFC 9110/9112 do not: whitespace between
 * the name and the colon (5.1: MUST reject, a smuggling vector behind
 * lenient proxies), an empty name (a field-name is a non-empty token) and
 * obs-fold (5.2: a server rejects it or unfolds it; we reject). The span
 * extends over every piece llhttp reported, so a fold shows as CR/LF in it. */
static bool field_ok(const struct rs_http_parser *p)
{
	const struct rs_http_span n = p->hname, v = p->hval;

	if (!n.len || (size_t)n.off + n.len >= p->len || p->buf[n.off + n.len] != ':')
		return false;
	return !v.len || (!memchr(p->buf + v.off, '\r', v.len) && !memchr(p->buf + v.off, '\n', v.len));
}

static int on_header_value_complete(llhttp_t *ll)
{
	struct rs_http_parser *p = P(ll);

	if (p->n_hdrs >= p->lim->max_headers)
		return fail(p, 431);
	if (!field_ok(p))
		return fail(p, 400);
	if (p->hname.len == 4 && !strncasecmp((const char *)p->buf + p->hname.off, "host", 4))
		p->n_host++;
	p->hdrs[2 * p->n_hdrs] = p->hname;
	p->hdrs[2 * p->n_hdrs + 1] = p->hval;
	p->n_hdrs++;
	memset(&p->hname, 0, sizeof(p->hname));
	memset(&p->hval, 0, sizeof(p->hval));
	p->in_value = false;
	return 0;
}

/* The version is judged as soon as it is read: an HTTP/2 connection
 * preface ("PRI * HTTP/2.0" then a blank line) would otherwise wait for the
 * "SM" part llhttp expects, and stall until the header timeout when a client
 * sends the preface in two writes. */
static int on_version_complete(llhttp_t *ll)
{
	if (ll->http_major != 1 || ll->http_minor > 1)
		return fail(P(ll), 505);
	return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
	struct rs_http_parser *p = P(ll);

	if (ll->http_major != 1 || ll->http_minor > 1)
		return fail(p, 505);
	/* No tunnels here; refusing it also keeps llhttp from taking the rest
	 * of the connection as tunnel bytes. */
	if (ll->method == HTTP_CONNECT)
		return fail(p, 501);
	/* RFC 9112 3.2: a request without Host (HTTP/1.1) or with more than one
	 * gets 400. */
	if (p->n_host > 1 || (ll->http_minor == 1 && p->n_host != 1))
		return fail(p, 400);
	if ((ll->flags & F_CONTENT_LENGTH) && ll->content_length > p->lim->max_body)
		return fail(p, 413);
	p->head_done = true;
	if (p->want_heads &&
	    ((ll->flags & F_CHUNKED) || ((ll->flags & F_CONTENT_LENGTH) && ll->content_length))) {
		/* Hand the head out before any body byte is parsed. */
		p->at_head = true;
		return HPE_PAUSED;
	}
	return 0;
}

/* llhttp holds the chunk's announced size in content_length: a chunk that
 * alone passes the limit is refused now, not after waiting for its data. */
static int on_chunk_header(llhttp_t *ll)
{
	struct rs_http_parser *p = P(ll);

	if (ll->content_length > p->lim->max_body - p->body.len)
		return fail(p, 413);
	return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
	struct rs_http_parser *p = P(ll);
	size_t off = off_of(p, at);

	if (p->body.len + len > p->lim->max_body)
		return fail(p, 413);
	if (!p->body.len && !p->body_w) {
		p->body.off = (uint32_t)off;
		p->body_w = off;
	}
	/* Chunked bodies are compacted in place: llhttp never looks back at the
	 * chunk-size lines we overwrite. */
	if (p->body_w != off)
		memmove(p->buf + p->body_w, at, len);
	p->body_w += len;
	p->body.len += (uint32_t)len;
	return 0;
}

static int on_message_complete(llhttp_t *ll)
{
	struct rs_http_parser *p = P(ll);

	p->complete = true;
	return HPE_PAUSED;
}

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void settings_init(void)
{
	llhttp_settings_init(&settings);
	settings.on_url = on_url;
	settings.on_version_complete = on_version_complete;
	settings.on_header_field = on_header_field;
	settings.on_header_value = on_header_value;
	settings.on_header_value_complete = on_header_value_complete;
	settings.on_headers_complete = on_headers_complete;
	settings.on_body = on_body;
	settings.on_chunk_header = on_chunk_header;
	settings.on_message_complete = on_message_complete;
}

static void reset_message(struct rs_http_parser *p)
{
	memset(&p->url, 0, sizeof(p->url));
	memset(&p->hname, 0, sizeof(p->hname));
	memset(&p->hval, 0, sizeof(p->hval));
	memset(&p->body, 0, sizeof(p->body));
	memset(&p->req, 0, sizeof(p->req));
	p->n_hdrs = 0;
	p->body_w = 0;
	p->hdr_start = 0;
	p->n_host = 0;
	p->complete = p->in_value = p->head_done = p->at_head = false;
}

void rs_http_parser_init(struct rs_http_parser *p, const struct rs_http_limits *lim)
{
	pthread_once(&settings_once, settings_init);
	memset(p, 0, sizeof(*p));
	p->lim = lim;
	llhttp_init(&p->ll, HTTP_REQUEST, &settings);
}

void rs_http_parser_release(struct rs_http_parser *p)
{
	free(p->buf);
	free(p->hdrs);
	p->buf = NULL;
	p->hdrs = NULL;
	p->cap = p->len = p->parsed = 0;
}

static size_t max_buffer(const struct rs_http_parser *p)
{
	return head_limit(p) + p->lim->max_body + SLACK;
}

static int reserve(struct rs_http_parser *p, size_t need)
{
	size_t cap = p->cap ? p->cap : 2048;
	uint8_t *nb;

	if (!p->hdrs) {
		/* One block: spans while parsing, then the header array handed out. */
		p->hdrs = malloc((size_t)p->lim->max_headers *
				 (2 * sizeof(*p->hdrs) + sizeof(struct rs_http_header)));
		if (!p->hdrs)
			return -ENOMEM;
	}
	if (need <= p->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	if (cap > max_buffer(p))
		cap = max_buffer(p);
	nb = realloc(p->buf, cap);
	if (!nb)
		return -ENOMEM;
	p->buf = nb;
	p->cap = cap;
	return 0;
}

static void build_request(struct rs_http_parser *p)
{
	struct rs_http_req *r = &p->req;
	const char *q;

	r->method = llhttp_get_method(&p->ll);
	r->method_str = llhttp_method_name((llhttp_method_t)r->method);
	r->minor = llhttp_get_http_minor(&p->ll);
	r->target = (const char *)p->buf + p->url.off;
	r->target_len = p->url.len;
	r->path = r->target;
	q = memchr(r->target, '?', r->target_len);
	r->path_len = q ? (size_t)(q - r->target) : r->target_len;
	if (q) {
		r->query = q + 1;
		r->query_len = r->target_len - r->path_len - 1;
	}
	/* Header spans become pointers now that the buffer no longer moves. */
	r->headers = (struct rs_http_header *)(p->hdrs + 2 * (size_t)p->lim->max_headers);
	for (size_t i = 0; i < p->n_hdrs; i++) {
		struct rs_http_span n = p->hdrs[2 * i], v = p->hdrs[2 * i + 1];
		struct rs_http_header *h = &r->headers[i];

		h->name = (const char *)p->buf + n.off;
		h->name_len = n.len;
		h->value = v.len ? (const char *)p->buf + v.off : "";
		/* RFC 9110 5.5: the value excludes the whitespace around it;
		 * llhttp drops the leading part only. */
		while (v.len && (h->value[v.len - 1] == ' ' || h->value[v.len - 1] == '\t'))
			v.len--;
		h->value_len = v.len;
	}
	r->n_headers = p->n_hdrs;
	r->body = p->body.len ? p->buf + p->body.off : NULL;
	r->body_len = p->body.len;
	r->keep_alive = llhttp_should_keep_alive(&p->ll);
	r->upgrade = p->ll.upgrade;
	r->body_pending = p->at_head;
}

static int map_error(struct rs_http_parser *p, llhttp_errno_t e)
{
	/* llhttp reports a failing callback under its own code; ours says why. */
	if (p->status)
		return p->status;
	switch (e) {
	case HPE_INVALID_VERSION:
		return 505;
	case HPE_INVALID_TRANSFER_ENCODING:
		return 501;
	default:
		return 400;
	}
}

int rs_http_parser_feed(struct rs_http_parser *p, const uint8_t *data, size_t len,
			struct rs_http_req **req, int *status)
{
	size_t take;
	llhttp_errno_t e;

	*req = NULL;
	*status = 0;
	if (p->status)
		goto out_error;
	if (p->complete || p->at_head)
		return 0;
	take = RS_MIN(len, max_buffer(p) - p->len);
	if (!take && p->parsed == p->len)
		return 0; /* nothing new, nothing buffered: stay allocation-free */
	if (take || !p->hdrs) {
		if (reserve(p, p->len + take)) {
			p->status = 503;
			goto out_error;
		}
		if (take)
			memcpy(p->buf + p->len, data, take);
		p->len += take;
	}
	if (p->parsed < p->len) {
		e = llhttp_execute(&p->ll, (const char *)p->buf + p->parsed, p->len - p->parsed);
		if (e == HPE_OK) {
			p->parsed = p->len;
		} else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
			p->parsed = (size_t)((const uint8_t *)llhttp_get_error_pos(&p->ll) - p->buf);
		} else {
			p->status = map_error(p, e);
			goto out_error;
		}
	}
	if (p->complete || p->at_head) {
		build_request(p);
		*req = &p->req;
	} else if (!p->head_done && p->len > head_limit(p)) {
		p->status = p->url.len ? 431 : 414;
		goto out_error;
	} else if (!p->url.len && p->len > p->lim->max_request_line && !memchr(p->buf, '\n', p->len)) {
		p->status = 414;
		goto out_error;
	}
	return (int)take;

out_error:
	*status = p->status;
	return RS_PARSE_ERROR;
}

void rs_http_parser_next(struct rs_http_parser *p)
{
	size_t rest = p->len - p->parsed;

	if (p->at_head) {
		p->at_head = false;
		memset(&p->req, 0, sizeof(p->req));
		llhttp_resume(&p->ll);
		return;
	}
	if (!p->complete)
		return;
	/* A caller that took the connection over for an upgrade never comes
	 * here; one that did not (Upgrade: h2c on a plain route) goes on with
	 * HTTP, so the pipelined bytes stay. Every message starts from a fresh
	 * llhttp state: a resumed one would stop again at the upgrade. */
	if (rest)
		memmove(p->buf, p->buf + p->parsed, rest);
	p->len = rest;
	p->parsed = 0;
	reset_message(p);
	llhttp_reset(&p->ll);
	if (!rest)
		rs_http_parser_release(p);
}

void rs_http_parser_want_heads(struct rs_http_parser *p, bool on)
{
	p->want_heads = on;
}

bool rs_http_parser_idle(const struct rs_http_parser *p)
{
	return p->len == 0;
}

void rs_http_parser_upgrade_rest(const struct rs_http_parser *p, const uint8_t **data,
				 size_t *len)
{
	*data = p->buf ? p->buf + p->parsed : NULL;
	*len = p->len - p->parsed;
}

const struct rs_http_header *rs_http_req_header(const struct rs_http_req *r, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < r->n_headers; i++)
		if (r->headers[i].name_len == n && !strncasecmp(r->headers[i].name, name, n))
			return &r->headers[i];
	return NULL;
}

bool rs_http_header_has_token(const struct rs_http_header *h, const char *token)
{
	size_t tl = strlen(token), i = 0;

	while (i < h->value_len) {
		size_t s, e;

		while (i < h->value_len && (h->value[i] == ' ' || h->value[i] == '\t' ||
					    h->value[i] == ','))
			i++;
		s = i;
		while (i < h->value_len && h->value[i] != ',')
			i++;
		e = i;
		while (e > s && (h->value[e - 1] == ' ' || h->value[e - 1] == '\t'))
			e--;
		if (e - s == tl && !strncasecmp(h->value + s, token, tl))
			return true;
	}
	return false;
}

const char *rs_http_status_text(int status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 410: return "Gone";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

int rs_http_format_head(char *out, size_t cap, int status, const char *content_type,
			size_t content_length, bool keep_alive, const char *extra_headers)
{
	bool has_cache = extra_headers && strcasestr(extra_headers, "Cache-Control:");
	int n = snprintf(out, cap,
			 "HTTP/1.1 %d %s\r\nServer: ringside\r\n%s%s%sContent-Length: %zu\r\n"
			 "Connection: %s\r\nX-Content-Type-Options: nosniff\r\n%s%s\r\n",
			 status, rs_http_status_text(status), content_type ? "Content-Type: " : "",
			 content_type ? content_type : "", content_type ? "\r\n" : "",
			 status == 204 || status == 304 ? (size_t)0 : content_length,
			 keep_alive ? "keep-alive" : "close",
			 has_cache ? "" : "Cache-Control: no-store\r\n",
			 extra_headers ? extra_headers : "");

	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	return n;
}

bool rs_http_list_has(const char *list, const char *tok, bool nocase)
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
		if ((size_t)(e - s) == tl &&
		    !(nocase ? strncasecmp(s, tok, tl) : strncmp(s, tok, tl)))
			return true;
	}
	return false;
}
