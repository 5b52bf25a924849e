/* admin/pvnc.h — ProxmoxVNC's API, so its users switch without changing a
 * line of their panel:
 *
 *   POST /create      Authorization: <key>, multipart field params = JSON
 *                     {hostname, port, node, username, password, vmid}
 *                     → {"status":"success","token":"…"}
 *   GET  /vnc/<token> the console page (the same as /console/<token>)
 *   GET  /status      Authorization: <key> → sessions in ProxmoxVNC's shape
 *
 * Inline Proxmox details need `inline_upstreams` in the config (how to
 * verify those hosts' certificates); hostname must be an IP address.
 */
#ifndef RS_PVNC_H
#define RS_PVNC_H

#include "core/common.h"
#include "core/config.h"
#include "core/spec.h"
#include "proto/http_server.h"

struct rs_app;

/* The value of form field <name> in a multipart/form-data <body> whose
 * Content-Type header value is <ctype>. Pure. 0 with *out and *outlen pointing
 * into <body>, -ENOENT when absent, -EINVAL when the body is malformed. */
int rs_multipart_field(const char *ctype, size_t ctype_len, const uint8_t *body, size_t len,
		       const char *name, const uint8_t **out, size_t *outlen);

/* ProxmoxVNC's params JSON into a Proxmox console spec (inline details).
 * Pure. 0, or -EINVAL with <msg> filled. */
int rs_pvnc_parse_params(const struct rs_config *cfg, const uint8_t *json, size_t len,
			 struct rs_console_spec **out, char *msg, size_t msglen);

/* For the HTTP server's on_head: 401 from the head of /create or /status
 * when the key is missing or wrong, before the body is read. */
void rs_pvnc_check_head(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);
void rs_pvnc_create(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);
void rs_pvnc_status(struct rs_app *app, struct rs_http_conn *hc, const struct rs_http_req *req);

#endif
