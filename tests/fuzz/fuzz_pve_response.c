/* Proxmox API answers: random bytes, random chunking, into the response
 * parser and then every decoder and the upgrade check. */
#include "core/common.h"

#include "proto/http_resp.h"
#include "proto/pve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rs_http_resp_parser p;
	const struct rs_http_resp *r = &p.resp;
	struct rs_pve_login login;
	struct rs_pve_console con;
	struct rs_pve_error err;
	struct rs_pve_vm vm;
	size_t chunk, off = 0;
	bool running;
	char pw[9];

	if (size < 2)
		return 0;
	chunk = 1 + data[0] % 97;
	/* a small limit now and then, so the over-limit paths run too */
	rs_http_resp_init(&p, data[1] & 1 ? 64 : 0);
	data += 2, size -= 2;
	while (off < size && !rs_http_resp_done(&p)) {
		int n = rs_http_resp_feed(&p, data + off, RS_MIN(chunk, size - off));

		if (n < 0)
			goto out_release;
		off += (size_t)n;
	}
	if (!rs_http_resp_done(&p) && rs_http_resp_eof(&p) < 0)
		goto out_release;
	if (r->body && r->body[r->body_len] != '\0')
		abort(); /* the body is NUL-terminated by contract */
	if (rs_pve_parse_login(r->status, r->reason, r->body, r->body_len, &login, &err) ==
	    RS_PVE_OK)
		rs_pve_login_wipe(&login);
	if (rs_pve_parse_console(r->status, r->reason, r->body, r->body_len, &con, &err) ==
	    RS_PVE_OK) {
		if (con.port < RS_PVE_PORT_MIN || con.port > RS_PVE_PORT_MAX)
			abort();
		rs_pve_vnc_password(&con, pw);
		rs_pve_console_wipe(&con);
	}
	rs_pve_parse_resources(r->status, r->reason, r->body, r->body_len, 100, &vm, &err);
	rs_pve_parse_status(r->status, r->reason, r->body, r->body_len, &running, &err);
	rs_pve_check_upgrade(r, "dGhlIHNhbXBsZSBub25jZQ==", &err);
	if (strlen(rs_pve_err_str(err.code)) == 0 || strlen(err.detail) >= sizeof(err.detail))
		abort();
out_release:
	rs_http_resp_release(&p);
	return 0;
}
