/* proto/http_resp.h — HTTP/1.1 response codec on llhttp (bytes in, one response out).
 *
 * The client side of an upstream connection (the Proxmox API) needs the
 * status, the reason phrase (Proxmox puts its error text there), a handful of
 * headers and a bounded body. Nothing else of the head is kept: llhttp hands
 * out pieces of the caller's buffer and the parser copies only what it
 * keeps, so any split of the input gives the same result and the input
 * buffer may be reused as soon as a feed returns.
 *
 * Memory: the head lives inside the struct; only the body is on the heap,
 * allocated when the first body byte arrives. An idle parser (just
 * initialised or reset) holds no heap memory. Bodies may carry secrets
 * (tickets, CSRF tokens), so every body buffer is wiped before it is freed.
 */
#ifndef RS_HTTP_RESP_H
#define RS_HTTP_RESP_H

#include "core/common.h"

#include <llhttp.h>

#define RS_HTTP_RESP_DEFAULT_MAX_BODY (256u * 1024)
/* Status line plus headers; Proxmox heads are a few hundred bytes. */
#define RS_HTTP_RESP_MAX_HEAD (16u * 1024)

/* One response. Strings are NUL-terminated and empty when the header is
 * absent; has_* tells an absent header from an empty one where it matters. */
struct rs_http_resp {
	int status; /* 100..999 */
	int minor;  /* HTTP/1.<minor> */
	/* Reason phrase, cut at 255 bytes (longer ones are kept truncated, not
	 * refused: Proxmox puts whole error messages there). */
	char reason[256];
	char content_type[128];
	char connection[128];
	char upgrade[64];
	char ws_accept[64];
	char ws_protocol[128];
	bool has_ws_accept, has_ws_protocol;
	bool keep_alive; /* llhttp's verdict from version and Connection */
	/* 101: the head ended and everything after it is WebSocket data. */
	bool upgraded;
	/* The decoded body (de-chunked), NUL-terminated for convenience (the
	 * NUL is not counted), or NULL when empty. Owned by the parser. */
	uint8_t *body;
	size_t body_len;
};

/* All members are private except <resp>, which is valid once
 * rs_http_resp_done() is true. */
struct rs_http_resp_parser {
	llhttp_t ll;
	size_t max_body;
	size_t head_len; /* head bytes seen so far */
	size_t body_cap; /* allocated size of resp.body (includes the NUL) */
	const char *err; /* static reason once failed */
	char *hval;	 /* where the current header value goes, or NULL */
	size_t hval_cap; /* its size, including the NUL */
	size_t hval_len;
	uint8_t hname_len; /* 0xff: too long to be one we keep */
	char hname[24];
	bool done;
	struct rs_http_resp resp;
};

/* Prepare <p> for one response. <max_body> bounds the decoded body (0: the
 * default 256 KiB); a larger Content-Length or a chunked body that grows past
 * it is an error. Allocates nothing. */
void rs_http_resp_init(struct rs_http_resp_parser *p, size_t max_body);

/* Wipe and free the body; <p> stays usable only after rs_http_resp_init()
 * or rs_http_resp_reset(). Safe to call twice. */
void rs_http_resp_release(struct rs_http_resp_parser *p);

/* Release, then ready for the next response on a keep-alive connection
 * (same body limit). */
void rs_http_resp_reset(struct rs_http_resp_parser *p);

/* Parse up to <len> bytes of <data> (at most INT_MAX are looked at).
 * Returns the number of bytes consumed, or RS_PARSE_ERROR on a malformed
 * response, an over-long head, a body over the limit or a failed allocation
 * (rs_http_resp_error() says which; the parser then refuses everything).
 * When the response is complete rs_http_resp_done() becomes true and the
 * return value is the offset in <data> just after it: for a 101 that is the
 * first WebSocket byte, which may be in the same buffer. Once done, feeds
 * consume nothing and return 0. */
int rs_http_resp_feed(struct rs_http_resp_parser *p, const uint8_t *data, size_t len);

/* The peer closed the connection. Completes a response whose body runs
 * until the close (no Content-Length, not chunked) and returns 0; returns
 * RS_PARSE_ERROR when the response is cut short. 0 when already done. */
int rs_http_resp_eof(struct rs_http_resp_parser *p);

/* A whole response (or a 101 head) has been parsed. */
bool rs_http_resp_done(const struct rs_http_resp_parser *p);

/* Static description of why the parser failed, or NULL. */
const char *rs_http_resp_error(const struct rs_http_resp_parser *p);

#endif
