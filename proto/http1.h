/* proto/http1.h — HTTP/1.1 request codec on llhttp (bytes in, requests out).
 *
 * A parser belongs to one connection. It copies received bytes into its own
 * bounded buffer (so requests spanning receive buffers stay contiguous),
 * runs llhttp over them, and hands out one complete request at a time.
 * Pointers in a request stay valid until rs_http_parser_next(). An idle
 * parser (nothing buffered) holds no memory.
 */
#ifndef RS_HTTP1_H
#define RS_HTTP1_H

#include "core/common.h"

#include <llhttp.h>

struct rs_http_limits {
	uint32_t max_request_line, max_header_bytes, max_headers, max_body;
};

struct rs_http_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct rs_http_req {
	int method; /* llhttp_method_t: HTTP_GET, ... */
	const char *method_str;
	const char *target;
	size_t target_len;
	const char *path; /* target without the query */
	size_t path_len;
	const char *query; /* after '?', or NULL */
	size_t query_len;
	int minor;
	struct rs_http_header *headers;
	size_t n_headers;
	const uint8_t *body;
	size_t body_len;
	bool keep_alive;
	bool upgrade; /* asks to switch protocols (Upgrade + Connection: upgrade) */
	/* Only the head has been read; the body follows (see
	 * rs_http_parser_want_heads). <body> is NULL. */
	bool body_pending;
};

struct rs_http_span {
	uint32_t off, len;
};

struct rs_http_parser {
	llhttp_t ll;
	const struct rs_http_limits *lim;
	uint8_t *buf;
	size_t cap, len, parsed;
	struct rs_http_span url, hname, hval, body;
	struct rs_http_span *hdrs; /* name, value pairs */
	size_t n_hdrs;
	size_t body_w;    /* compaction cursor for chunked bodies */
	size_t hdr_start; /* offset of the first header field */
	unsigned n_host;  /* Host fields seen (RFC 9112 3.2: exactly one) */
	int status;    /* error status set by a callback */
	bool complete, in_value, head_done;
	bool want_heads, at_head; /* hand out heads before bodies; one is out */
	struct rs_http_req req;
};

void rs_http_parser_init(struct rs_http_parser *p, const struct rs_http_limits *lim);
void rs_http_parser_release(struct rs_http_parser *p);

/* Take up to <len> bytes and parse. Returns the bytes taken (the caller keeps
 * the rest for later; <data> may be NULL with <len> 0 to parse what is
 * already buffered). Sets *req when a whole request is ready; then call
 * rs_http_parser_next() before feeding again. On a malformed or over-limit
 * request returns RS_PARSE_ERROR with *status = 400, 413, 414, 431, 501 or
 * 505; the parser then refuses everything. Beyond llhttp's grammar it
 * refuses (RFC 9110/9112): whitespace between a field name and its colon,
 * an empty field name, obs-fold line folding, a missing (HTTP/1.1) or
 * repeated Host field (400); CONNECT (501: no tunnels here); a chunk whose
 * announced size alone passes max_body (413 from its size line). */
int rs_http_parser_feed(struct rs_http_parser *p, const uint8_t *data, size_t len,
			struct rs_http_req **req, int *status);

/* Done with the current request: keep pipelined bytes, free the buffer when
 * nothing is left. Also for an upgrade request that was not upgraded: the
 * bytes after it are parsed as HTTP again (RFC 9110 7.8 lets a server ignore
 * Upgrade). After a head (req->body_pending), go on reading its body. */
void rs_http_parser_next(struct rs_http_parser *p);

/* With <on>, a request with a body is handed out twice: first its head alone
 * (req->body_pending, before any body byte is parsed), so the caller can
 * refuse it (401) or answer Expect: 100-continue; then, after
 * rs_http_parser_next(), the whole request. Set after rs_http_parser_init. */
void rs_http_parser_want_heads(struct rs_http_parser *p, bool on);

/* No partial request is buffered. */
bool rs_http_parser_idle(const struct rs_http_parser *p);

/* For an upgrade request: the bytes after its head that were already taken. */
void rs_http_parser_upgrade_rest(const struct rs_http_parser *p, const uint8_t **data,
				 size_t *len);

/* Case-insensitive lookup; first match or NULL. */
const struct rs_http_header *rs_http_req_header(const struct rs_http_req *r, const char *name);
/* Is <token> in the comma-separated, case-insensitive list of <h>? */
bool rs_http_header_has_token(const struct rs_http_header *h, const char *token);

const char *rs_http_status_text(int status);
/* Format a response head into <out>. Returns its length or -ENOSPC. */
int rs_http_format_head(char *out, size_t cap, int status, const char *content_type,
			size_t content_length, bool keep_alive, const char *extra_headers);

/* Is <tok> one of the comma-separated items of header value <list> (NULL:
 * none)? Items are trimmed of spaces and tabs; <nocase> compares
 * case-insensitively (Connection: Upgrade, Sec-WebSocket-Protocol). */
bool rs_http_list_has(const char *list, const char *tok, bool nocase);

#endif
