#include "core/common.h"

#include <stdarg.h>
#include <strings.h>

#include <jansson.h>

#include "proto/http1.h"
#include "proto/pve.h"
#include "proto/ws.h"

#define API	      "/api2/json"
#define HOST_MAX      255u
#define VNCTICKET_MAX 512u /* the API's own limit for the parameter */

const char *rs_pve_vmtype_str(enum rs_pve_vmtype t)
{
	return t == RS_PVE_LXC ? "lxc" : "qemu";
}

/* --- Input checks --- */

/* Anything that ends up in a request: no CR, LF or other control byte. */
static bool no_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* A header value we send verbatim: printable ASCII without spaces. */
static bool header_token(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static bool valid_node(const char *s)
{
	size_t n = 0;

	if (!s)
		return false;
	for (; s[n]; n++) {
		char c = s[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-'))
			return false;
	}
	return n >= 1 && n <= RS_PVE_NODE_MAX;
}

static bool valid_vmid(uint32_t vmid)
{
	return vmid >= RS_PVE_VMID_MIN && vmid <= RS_PVE_VMID_MAX;
}

static bool valid_type(enum rs_pve_vmtype t)
{
	return t == RS_PVE_QEMU || t == RS_PVE_LXC;
}

static bool valid_host(const char *h)
{
	return header_token(h) && strlen(h) <= HOST_MAX;
}

static bool valid_auth(const struct rs_pve_auth *a, bool post)
{
	if (!a)
		return false;
	switch (a->kind) {
	case RS_PVE_AUTH_TOKEN:
		/* PVE splits "<id>=<secret>" at the last '=': neither part may
		 * hold one, or the server would read a different token. */
		return header_token(a->token_id) && header_token(a->secret) &&
		       !strchr(a->token_id, '=') && !strchr(a->secret, '=');
	case RS_PVE_AUTH_TICKET:
		return a->ticket && *a->ticket && no_ctl(a->ticket) &&
		       (post ? header_token(a->csrf) : !a->csrf || header_token(a->csrf));
	}
	return false;
}

static bool valid_ws_key(const char *k)
{
	size_t n = 0;

	if (!k)
		return false;
	for (; k[n]; n++) {
		char c = k[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/' || c == '='))
			return false;
	}
	return n == 24;
}

/* --- Writer: appends to the caller's buffer, remembers overflow --- */

struct wbuf {
	char *p;
	size_t cap, len;
	bool over;
};

static void put_n(struct wbuf *w, const char *s, size_t n)
{
	if (w->over || w->len + n >= w->cap) {
		w->over = true;
		return;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
	w->p[w->len] = '\0';
}

static void put(struct wbuf *w, const char *s)
{
	put_n(w, s, strlen(s));
}

static RS_PRINTF(2, 3) void putf(struct wbuf *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (w->over)
		return;
	va_start(ap, fmt);
	n = vsnprintf(w->p + w->len, w->cap - w->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= w->cap - w->len) {
		w->over = true;
		return;
	}
	w->len += (size_t)n;
}

static bool unreserved(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static size_t pct_len(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += unreserved((unsigned char)*s) ? 1 : 3;
	return n;
}

/* Everything outside the unreserved set is encoded: PVE decodes '+' as a
 * space, and passwords and tickets contain ':', '+', '&', '%', '\', '='. */
static void put_pct(struct wbuf *w, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s && !w->over; s++) {
		unsigned char c = (unsigned char)*s;
		char e[3] = {'%', hex[c >> 4], hex[c & 15]};

		if (unreserved(c))
			put_n(w, (const char *)&c, 1);
		else
			put_n(w, e, 3);
	}
}

int rs_pve_pct_encode(char *out, size_t cap, const char *in)
{
	struct wbuf w = {out, cap, 0, false};

	if (!cap)
		return -ENOSPC;
	out[0] = '\0';
	put_pct(&w, in);
	return w.over ? -ENOSPC : (int)w.len;
}

struct form_field {
	const char *name, *value; /* name is a literal, never encoded */
};

static size_t form_len(const struct form_field *f, size_t n)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		len += (i ? 1 : 0) + strlen(f[i].name) + 1 + pct_len(f[i].value);
	return len;
}

static void put_form(struct wbuf *w, const struct form_field *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			put(w, "&");
		put(w, f[i].name);
		put(w, "=");
		put_pct(w, f[i].value);
	}
}

/* The auth headers; the CSRF token only on a non-GET with a ticket. */
static void put_auth(struct wbuf *w, const struct rs_pve_auth *auth, bool post)
{
	if (!auth)
		return;
	if (auth->kind == RS_PVE_AUTH_TOKEN) {
		putf(w, "Authorization: PVEAPIToken=%s=%s\r\n", auth->token_id, auth->secret);
		return;
	}
	/* The server's cookie regex wants the name first or after whitespace:
	 * a Cookie header of our own with nothing before it always matches. */
	put(w, "Cookie: PVEAuthCookie=");
	put_pct(w, auth->ticket);
	put(w, "\r\n");
	if (post)
		putf(w, "CSRFPreventionToken: %s\r\n", auth->csrf);
}

/* Request line, Host, User-Agent and the auth headers. <target> is already
 * safe (built from validated parts). */
static void put_head(struct wbuf *w, const char *method, const char *target, const char *host,
		     const struct rs_pve_auth *auth)
{
	putf(w, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringside\r\n", method, target, host);
	put_auth(w, auth, strcmp(method, "GET") != 0);
}

static int finish(struct wbuf *w)
{
	if (w->over || w->len > INT32_MAX)
		return -ENOSPC;
	return (int)w->len;
}

static int post_form(char *out, size_t cap, const char *target, const char *host,
		     const struct rs_pve_auth *auth, const struct form_field *f, size_t n)
{
	struct wbuf w = {out, cap, 0, false};

	if (!cap)
		return -ENOSPC;
	put_head(&w, "POST", target, host, auth);
	put(&w, "Connection: keep-alive\r\n");
	if (n)
		put(&w, "Content-Type: application/x-www-form-urlencoded\r\n");
	putf(&w, "Content-Length: %zu\r\n\r\n", form_len(f, n));
	put_form(&w, f, n);
	return finish(&w);
}

static int vm_path(char *out, size_t cap, const char *node, enum rs_pve_vmtype type, uint32_t vmid,
		   const char *what)
{
	int n =
	    snprintf(out, cap, API "/nodes/%s/%s/%u/%s", node, rs_pve_vmtype_str(type), vmid, what);

	return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int rs_pve_req_login(char *out, size_t cap, const char *host, const char *username,
		     const char *password)
{
	const struct form_field f[] = {{"username", username}, {"password", password}};

	if (!valid_host(host) || !username || !*username || !no_ctl(username) || !password ||
	    !no_ctl(password))
		return -EINVAL;
	return post_form(out, cap, API "/access/ticket", host, NULL, f, RS_ARRAY_SIZE(f));
}

int rs_pve_req_vncproxy(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
			const char *node, enum rs_pve_vmtype type, uint32_t vmid, unsigned width,
			unsigned height)
{
	char path[160], ws[12], hs[12];
	struct form_field f[3] = {{"websocket", "1"}};
	size_t n = 1;

	if (!valid_host(host) || !valid_auth(auth, true) || !valid_node(node) ||
	    !valid_type(type) || !valid_vmid(vmid))
		return -EINVAL;
	/* QEMU's vncproxy has additionalProperties => 0: a width is a 400. */
	if (type == RS_PVE_LXC && width) {
		if (width < 16 || width > 4096)
			return -EINVAL;
		snprintf(ws, sizeof(ws), "%u", width);
		f[n++] = (struct form_field){"width", ws};
	}
	if (type == RS_PVE_LXC && height) {
		if (height < 16 || height > 2160)
			return -EINVAL;
		snprintf(hs, sizeof(hs), "%u", height);
		f[n++] = (struct form_field){"height", hs};
	}
	if (vm_path(path, sizeof(path), node, type, vmid, "vncproxy") < 0)
		return -EINVAL;
	return post_form(out, cap, path, host, auth, f, n);
}

int rs_pve_req_termproxy(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
			 const char *node, enum rs_pve_vmtype type, uint32_t vmid)
{
	char path[160];

	if (!valid_host(host) || !valid_auth(auth, true) || !valid_node(node) ||
	    !valid_type(type) || !valid_vmid(vmid))
		return -EINVAL;
	if (vm_path(path, sizeof(path), node, type, vmid, "termproxy") < 0)
		return -EINVAL;
	return post_form(out, cap, path, host, auth, NULL, 0);
}

static int get(char *out, size_t cap, const char *target, const char *host,
	       const struct rs_pve_auth *auth)
{
	struct wbuf w = {out, cap, 0, false};

	if (!cap)
		return -ENOSPC;
	put_head(&w, "GET", target, host, auth);
	put(&w, "Connection: keep-alive\r\n\r\n");
	return finish(&w);
}

int rs_pve_req_resources(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth)
{
	if (!valid_host(host) || !valid_auth(auth, false))
		return -EINVAL;
	return get(out, cap, API "/cluster/resources?type=vm", host, auth);
}

int rs_pve_req_status(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
		      const char *node, enum rs_pve_vmtype type, uint32_t vmid)
{
	char path[160];

	if (!valid_host(host) || !valid_auth(auth, false) || !valid_node(node) ||
	    !valid_type(type) || !valid_vmid(vmid))
		return -EINVAL;
	if (vm_path(path, sizeof(path), node, type, vmid, "status/current") < 0)
		return -EINVAL;
	return get(out, cap, path, host, auth);
}

int rs_pve_req_vncwebsocket(char *out, size_t cap, const char *host, const struct rs_pve_auth *auth,
			    const char *node, enum rs_pve_vmtype type, uint32_t vmid, unsigned port,
			    const char *vncticket, const char *ws_key)
{
	struct wbuf w = {out, cap, 0, false};
	char path[160];

	if (!valid_host(host) || !valid_auth(auth, false) || !valid_node(node) ||
	    !valid_type(type) || !valid_vmid(vmid) || port < RS_PVE_PORT_MIN ||
	    port > RS_PVE_PORT_MAX || !vncticket || !*vncticket || !no_ctl(vncticket) ||
	    strlen(vncticket) > VNCTICKET_MAX || !valid_ws_key(ws_key))
		return -EINVAL;
	if (!cap)
		return -ENOSPC;
	if (vm_path(path, sizeof(path), node, type, vmid, "vncwebsocket") < 0)
		return -EINVAL;
	putf(&w, "GET %s?port=%u&vncticket=", path, port);
	put_pct(&w, vncticket);
	putf(&w, " HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringside\r\n", host);
	put_auth(&w, auth, false);
	putf(&w,
	     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
	     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Protocol: binary\r\n\r\n",
	     ws_key);
	return finish(&w);
}

/* --- Errors --- */

static const char *const err_text[RS_PVE_E__COUNT] = {
    [RS_PVE_OK] = "ok",
    [RS_PVE_E_AUTH] = "Proxmox refused the credentials (wrong user, password or API token, "
		      "or an expired ticket)",
    [RS_PVE_E_TFA] = "the Proxmox user needs two-factor authentication; use an API token",
    [RS_PVE_E_PERM] = "the Proxmox user or token lacks a permission (VM.Console is needed "
		      "on the VM)",
    [RS_PVE_E_NOT_FOUND] = "Proxmox says the VM does not exist on that node (wrong node, "
			   "migrated, or no such VM)",
    [RS_PVE_E_NO_VM] = "the VM is not in the cluster's resource list (no such VM, or no "
		       "VM.Audit on it)",
    [RS_PVE_E_NO_NODE] = "the node named is not a member of the Proxmox cluster",
    [RS_PVE_E_PARAM] = "Proxmox rejected a request parameter",
    [RS_PVE_E_SERVER] = "the Proxmox API failed (server error)",
    [RS_PVE_E_UNREACHABLE] = "the Proxmox node could not reach the node that hosts the VM",
    [RS_PVE_E_STATUS] = "the Proxmox API answered with an unexpected status",
    [RS_PVE_E_UPGRADE] = "the Proxmox console WebSocket handshake failed",
    [RS_PVE_E_MALFORMED] = "the Proxmox API answer could not be understood",
    [RS_PVE_E_NOMEM] = "out of memory",
};

const char *rs_pve_err_str(enum rs_pve_err e)
{
	if ((unsigned)e >= RS_PVE_E__COUNT)
		return "unknown error";
	return err_text[e];
}

bool rs_pve_err_failover(enum rs_pve_err e)
{
	return e == RS_PVE_E_SERVER || e == RS_PVE_E_UNREACHABLE;
}

/* Copy server text into the detail: printable ASCII only (it ends up in
 * logs and UI), trailing newlines of PVE messages dropped. */
static void set_detail(struct rs_pve_error *err, const char *a, const char *b)
{
	size_t n = 0;

	for (int part = 0; part < 2; part++) {
		const char *s = part ? b : a;

		for (; s && *s && n < sizeof(err->detail) - 1; s++) {
			unsigned char c = (unsigned char)*s;

			err->detail[n++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
		}
	}
	while (n && err->detail[n - 1] == ' ')
		n--;
	err->detail[n] = '\0';
}

static enum rs_pve_err set_err(struct rs_pve_error *err, enum rs_pve_err code, int status,
			       const char *detail)
{
	if (err) {
		err->code = code;
		err->status = status;
		set_detail(err, detail, NULL);
	}
	return code;
}

static json_t *load(const uint8_t *body, size_t len)
{
	if (!body || !len)
		return NULL;
	return json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
}

/* Overwrite every string in <v>: the tree held tickets and passwords. */
static void wipe_tree(json_t *v)
{
	const char *k;
	json_t *x;
	size_t i;

	if (json_is_string(v)) {
		explicit_bzero((char *)json_string_value(v), json_string_length(v));
	} else if (json_is_object(v)) {
		json_object_foreach (v, k, x)
			wipe_tree(x);
	} else if (json_is_array(v)) {
		json_array_foreach (v, i, x)
			wipe_tree(x);
	}
}

static void drop_tree(json_t *root)
{
	if (!root)
		return;
	wipe_tree(root);
	json_decref(root);
}

enum rs_pve_err rs_pve_classify(int status, const char *reason, const uint8_t *body,
				size_t body_len, struct rs_pve_error *err)
{
	json_t *root = load(body, body_len);
	const char *msg = json_string_value(json_object_get(root, "message"));
	json_t *errors = json_object_get(root, "errors");
	enum rs_pve_err code;
	struct rs_pve_error local;

	if (!err)
		err = &local;
	memset(err, 0, sizeof(*err));
	err->status = status;
	if (!reason)
		reason = "";
	/* PVE puts its message in the status line; the body, when there is
	 * one, may repeat it as "message". */
	set_detail(err, reason, NULL);
	if (status == 401) {
		code = RS_PVE_E_AUTH;
	} else if (status == 403) {
		code = RS_PVE_E_PERM;
	} else if (status == 400) {
		code = RS_PVE_E_PARAM;
		if (json_is_object(errors) && json_object_size(errors)) {
			void *it = json_object_iter(errors);
			const char *v = json_string_value(json_object_iter_value(it));
			char key[64];

			snprintf(key, sizeof(key), "%s: ", json_object_iter_key(it));
			set_detail(err, key, v ? v : "invalid");
		}
	} else if (status == 595 || status == 596) {
		code = RS_PVE_E_UNREACHABLE;
	} else if (status >= 500 && status <= 599) {
		code = RS_PVE_E_SERVER;
		if (strstr(reason, "does not exist") || (msg && strstr(msg, "does not exist")))
			code = RS_PVE_E_NOT_FOUND;
		/* pveproxy resolves the node before proxying: a name that is no
		 * cluster member fails there, on every endpoint alike
		 * (pve-http-server AnyEvent.pm proxy_request). */
		if ((!strncmp(reason, "hostname lookup '", 17) && strstr(reason, "' failed")) ||
		    (msg && !strncmp(msg, "hostname lookup '", 17) && strstr(msg, "' failed")))
			code = RS_PVE_E_NO_NODE;
		if (!*reason && msg)
			set_detail(err, msg, NULL);
	} else {
		code = RS_PVE_E_STATUS;
	}
	err->code = code;
	drop_tree(root);
	return code;
}

/* Common start of every decoder: a 200 whose body is {"data": <kind>}. */
static enum rs_pve_err open_data(int status, const char *reason, const uint8_t *body,
				 size_t body_len, json_t **root, json_t **data, bool array,
				 struct rs_pve_error *err)
{
	*root = NULL;
	if (err)
		memset(err, 0, sizeof(*err));
	if (status != 200)
		return rs_pve_classify(status, reason, body, body_len, err);
	*root = load(body, body_len);
	if (!*root)
		return set_err(err, RS_PVE_E_MALFORMED, status, "body is not JSON");
	*data = json_object_get(*root, "data");
	if (array ? !json_is_array(*data) : !json_is_object(*data))
		return set_err(err, RS_PVE_E_MALFORMED, status,
			       array ? "data is not an array" : "data is not an object");
	return RS_PVE_OK;
}

/* A copy of the string at data.<key>; NULL when absent or not a string.
 * Strings that later go into request lines or headers must hold no control
 * byte (*bad is set then); <multiline> allows the PEM's newlines. *nomem
 * is set when the copy fails. */
static char *take(json_t *data, const char *key, bool multiline, bool *bad, bool *nomem)
{
	json_t *v = json_object_get(data, key);
	const char *s = json_string_value(v);
	char *c;

	if (!v)
		return NULL;
	if (!s || (!multiline && (!*s || !no_ctl(s)))) {
		*bad = true;
		return NULL;
	}
	c = strdup(s);
	if (!c)
		*nomem = true;
	return c;
}

static void wipe_str(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

void rs_pve_login_wipe(struct rs_pve_login *l)
{
	wipe_str(&l->username);
	wipe_str(&l->ticket);
	wipe_str(&l->csrf);
}

enum rs_pve_err rs_pve_parse_login(int status, const char *reason, const uint8_t *body,
				   size_t body_len, struct rs_pve_login *out,
				   struct rs_pve_error *err)
{
	enum rs_pve_err ret;
	json_t *root, *data, *tfa;
	bool bad = false, nomem = false;

	memset(out, 0, sizeof(*out));
	ret = open_data(status, reason, body, body_len, &root, &data, false, err);
	if (ret)
		goto out_free;
	tfa = json_object_get(data, "NeedTFA");
	if (json_is_true(tfa) || (json_is_integer(tfa) && json_integer_value(tfa))) {
		ret = set_err(err, RS_PVE_E_TFA, status, "NeedTFA");
		goto out_free;
	}
	out->username = take(data, "username", false, &bad, &nomem);
	out->ticket = take(data, "ticket", false, &bad, &nomem);
	out->csrf = take(data, "CSRFPreventionToken", false, &bad, &nomem);
	if (nomem) {
		ret = set_err(err, RS_PVE_E_NOMEM, status, "out of memory");
		goto out_free;
	}
	if (bad || !out->username || !out->ticket || !out->csrf || !header_token(out->csrf)) {
		ret = set_err(err, RS_PVE_E_MALFORMED, status,
			      "login answer lacks username, ticket or CSRFPreventionToken");
		goto out_free;
	}
out_free:
	if (ret)
		rs_pve_login_wipe(out);
	drop_tree(root);
	return ret;
}

void rs_pve_console_wipe(struct rs_pve_console *c)
{
	wipe_str(&c->user);
	wipe_str(&c->ticket);
	wipe_str(&c->password);
	wipe_str(&c->cert);
	wipe_str(&c->upid);
	c->port = 0;
}

/* port is an integer in the schema but often a string on the wire. */
static int get_port(json_t *v)
{
	json_int_t n = -1;
	const char *s = json_string_value(v);

	if (json_is_integer(v)) {
		n = json_integer_value(v);
	} else if (s && *s && strlen(s) <= 5 && strspn(s, "0123456789") == strlen(s)) {
		n = atoi(s);
	}
	if (n < RS_PVE_PORT_MIN || n > RS_PVE_PORT_MAX)
		return -1;
	return (int)n;
}

enum rs_pve_err rs_pve_parse_console(int status, const char *reason, const uint8_t *body,
				     size_t body_len, struct rs_pve_console *out,
				     struct rs_pve_error *err)
{
	enum rs_pve_err ret;
	json_t *root, *data;
	bool bad = false, nomem = false;
	int port;

	memset(out, 0, sizeof(*out));
	ret = open_data(status, reason, body, body_len, &root, &data, false, err);
	if (ret)
		goto out_free;
	port = get_port(json_object_get(data, "port"));
	if (port < 0) {
		ret = set_err(err, RS_PVE_E_MALFORMED, status,
			      "console port missing or outside 5900-5999");
		goto out_free;
	}
	out->port = (uint16_t)port;
	out->user = take(data, "user", false, &bad, &nomem);
	out->ticket = take(data, "ticket", false, &bad, &nomem);
	out->password = take(data, "password", false, &bad, &nomem);
	out->cert = take(data, "cert", true, &bad, &nomem);
	out->upid = take(data, "upid", false, &bad, &nomem);
	if (nomem) {
		ret = set_err(err, RS_PVE_E_NOMEM, status, "out of memory");
		goto out_free;
	}
	if (bad || !out->user || !out->ticket) {
		ret = set_err(err, RS_PVE_E_MALFORMED, status,
			      "console answer lacks user or ticket, or has a bad field");
		goto out_free;
	}
out_free:
	if (ret)
		rs_pve_console_wipe(out);
	drop_tree(root);
	return ret;
}

size_t rs_pve_vnc_password(const struct rs_pve_console *c, char out[9])
{
	const char *src = c->password ? c->password : c->ticket;
	size_t n = src ? strnlen(src, 8) : 0;

	memcpy(out, src ? src : "", n);
	out[n] = '\0';
	return n;
}

static bool entry_vmid(json_t *e, uint32_t *vmid)
{
	json_t *v = json_object_get(e, "vmid");
	const char *s = json_string_value(v), *id;

	if (json_is_integer(v)) {
		json_int_t n = json_integer_value(v);

		if (n < 0 || n > RS_PVE_VMID_MAX)
			return false;
		*vmid = (uint32_t)n;
		return true;
	}
	/* No vmid member: the id is "<type>/<vmid>". */
	id = json_string_value(json_object_get(e, "id"));
	if (!s && id && strchr(id, '/'))
		s = strchr(id, '/') + 1;
	if (!s || !*s || strlen(s) > 9 || strspn(s, "0123456789") != strlen(s))
		return false;
	*vmid = (uint32_t)strtoul(s, NULL, 10);
	return true;
}

enum rs_pve_err rs_pve_parse_resources(int status, const char *reason, const uint8_t *body,
				       size_t body_len, uint32_t vmid, struct rs_pve_vm *out,
				       struct rs_pve_error *err)
{
	enum rs_pve_err ret;
	json_t *root, *data, *e;
	size_t i;

	memset(out, 0, sizeof(*out));
	ret = open_data(status, reason, body, body_len, &root, &data, true, err);
	if (ret)
		goto out_free;
	ret = set_err(err, RS_PVE_E_NO_VM, status, "vmid not listed");
	json_array_foreach (data, i, e) {
		const char *type = json_string_value(json_object_get(e, "type"));
		const char *node = json_string_value(json_object_get(e, "node"));
		const char *st = json_string_value(json_object_get(e, "status"));
		uint32_t id;

		if (!type || (strcmp(type, "qemu") && strcmp(type, "lxc")))
			continue;
		if (!entry_vmid(e, &id) || id != vmid)
			continue;
		if (!valid_node(node)) {
			ret = set_err(err, RS_PVE_E_MALFORMED, status, "VM entry has a bad node");
			goto out_free;
		}
		out->vmid = vmid;
		out->type = strcmp(type, "lxc") ? RS_PVE_QEMU : RS_PVE_LXC;
		strcpy(out->node, node);
		if (st && strlen(st) < sizeof(out->status) && no_ctl(st))
			strcpy(out->status, st);
		out->running = st && !strcmp(st, "running");
		ret = RS_PVE_OK;
		break;
	}
out_free:
	if (ret)
		memset(out, 0, sizeof(*out));
	drop_tree(root);
	return ret;
}

enum rs_pve_err rs_pve_parse_status(int status, const char *reason, const uint8_t *body,
				    size_t body_len, bool *running, struct rs_pve_error *err)
{
	enum rs_pve_err ret;
	json_t *root, *data;
	const char *st;

	*running = false;
	ret = open_data(status, reason, body, body_len, &root, &data, false, err);
	if (ret)
		goto out_free;
	st = json_string_value(json_object_get(data, "status"));
	if (!st) {
		ret = set_err(err, RS_PVE_E_MALFORMED, status, "status answer lacks data.status");
		goto out_free;
	}
	*running = !strcmp(st, "running");
out_free:
	drop_tree(root);
	return ret;
}


enum rs_pve_err rs_pve_check_upgrade(const struct rs_http_resp *r, const char *ws_key,
				     struct rs_pve_error *err)
{
	char accept[29];

	if (r->status != 101)
		return rs_pve_classify(r->status, r->reason, r->body, r->body_len, err);
	if (err)
		memset(err, 0, sizeof(*err));
	if (!valid_ws_key(ws_key))
		return set_err(err, RS_PVE_E_UPGRADE, 101, "bad Sec-WebSocket-Key given");
	if (!rs_http_list_has(r->upgrade, "websocket", true) ||
	    !rs_http_list_has(r->connection, "upgrade", true))
		return set_err(err, RS_PVE_E_UPGRADE, 101, "101 without Upgrade: websocket");
	rs_ws_accept_key(ws_key, accept);
	if (!r->has_ws_accept || strcmp(r->ws_accept, accept))
		return set_err(err, RS_PVE_E_UPGRADE, 101, "Sec-WebSocket-Accept does not match");
	/* We offered exactly "binary"; anything else is not an echo of it. */
	if (r->has_ws_protocol && strcmp(r->ws_protocol, "binary"))
		return set_err(err, RS_PVE_E_UPGRADE, 101, "unexpected Sec-WebSocket-Protocol");
	return RS_PVE_OK;
}
