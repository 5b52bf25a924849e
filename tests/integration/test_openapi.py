"""GET /api/v1/openapi.json (issue 17): a valid OpenAPI 3.1 description (checked
by @seriousme/openapi-schema-validator, pinned in www/package.json), and every
status and error code it documents compared with what the real daemon answers
when driven into it (status, code, content type)."""
import json
import os
import socket
import subprocess

from conftest import API_KEY, BIN, ROOT
from fakes import RawWS, Target, echo_target
from test_api_hardening import multipart, request

VALIDATOR = os.path.join(ROOT, "www/node_modules/@seriousme/openapi-schema-validator/bin/"
                         "validate-api-cli.js")
DOC = json.load(open(os.path.join(ROOT, "admin/openapi.json")))

# Documented answers no test can cause on purpose: each is what ringside says
# when an allocation fails or an internal step refuses what the request
# checks already ruled out.
UNREACHABLE = {
    ("/api/v1/consoles", "post", "400", "invalid_request"): "the table refuses a client address the parser accepted",
    ("/api/v1/consoles", "post", "503", "issue_failed"): "the token table fails otherwise than full",
    ("/api/v1/consoles", "post", "503", "no_memory"): "out of memory",
    ("/create", "post", "400", "invalid_request"): "as for /api/v1/consoles",
    ("/create", "post", "503", "issue_failed"): "as for /api/v1/consoles",
    ("/create", "post", "503", "no_memory"): "out of memory",
    ("/status", "get", "503", "no_memory"): "out of memory",
    ("/ws/{token}", "get", "503", "no_memory"): "out of memory",
}


def documented():
    """{(path, method, status, code or None): content type or None}."""
    out = {}
    comps = DOC["components"]["responses"]
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            for status, resp in op["responses"].items():
                if "$ref" in resp:
                    resp = comps[resp["$ref"].rsplit("/", 1)[1]]
                ctype = next(iter(resp.get("content", {})), None)
                codes = []
                if ctype == "application/json":
                    schema = resp["content"][ctype]["schema"]
                    props = schema.get("properties", {})
                    if "error" in props:
                        codes = props["error"]["properties"]["code"]["enum"]
                    elif "code" in props:
                        codes = props["code"]["enum"]
                if resp.get("x-ringside-without-code") or not codes:
                    codes = codes + [None]
                for c in codes:
                    out[(path, method, status, c)] = ctype
    return out


def test_description_is_served_without_authentication_and_is_valid(daemon, tmp_path):
    st, h, body = request(daemon, "GET", "/api/v1/openapi.json")
    assert st == 200 and h["content-type"] == "application/json", (st, h)
    assert body == DOC, "the daemon serves admin/openapi.json as built"
    assert body["openapi"].startswith("3.1.")
    served = tmp_path / "served.json"
    served.write_text(json.dumps(body))
    r = subprocess.run(["node", VALIDATOR, str(served)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and '"valid": true' in r.stdout, r.stdout + r.stderr
    # The validator does refuse a broken description.
    broken = dict(body)
    broken["paths"] = {"/x": {"get": {"responses": {"200": {}}}}}
    served.write_text(json.dumps(broken))
    r = subprocess.run(["node", VALIDATOR, str(served)], capture_output=True, text=True, timeout=60)
    assert '"valid": false' in r.stdout, r.stdout + r.stderr


def raw(port, data, read_timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        s.sendall(data)
    except OSError:
        pass  # answered (and closed) before the whole request was sent
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            c = s.recv(65536)
            if not c:
                break
            buf += c
    except OSError:
        pass
    head = buf.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
    rest = buf.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in buf else b""
    hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in head[1:] if ":" in l}
    n = int(hdrs.get("content-length", "0"))
    try:
        while len(rest) < n:
            c = s.recv(65536)
            if not c:
                break
            rest += c
    except OSError:
        pass
    s.close()
    return int(head[0].split(" ")[1]), hdrs, rest


def answer(st, h, body):
    """(status, code or None, content type or None) of an answer."""
    ctype = h.get("content-type")
    code = None
    if ctype == "application/json" and body:
        b = json.loads(body) if isinstance(body, (bytes, str)) else body
        code = b["error"]["code"] if "error" in b else b.get("code")
    return str(st), code, (ctype.split(";")[0] if ctype else None)


KEYS = [{"name": "test", "key": API_KEY},
        {"name": "lim", "key": "openapi-key-limited-0123456789ab", "max_pending": 1,
         "max_consoles": 1},
        {"name": "viewer", "key": "openapi-key-viewer-0123456789abc", "view_only_only": True},
        {"name": "narrow", "key": "openapi-key-narrow-0123456789abc",
         "allowed_targets": ["10.0.0.0/8"]}]
KEY = {k["name"]: k["key"] for k in KEYS}
PVNC = {"hostname": "127.0.0.1", "port": "8006", "node": "pve1", "username": "u@pve",
        "password": "p", "vmid": "100"}


def post_json(d, path, body, key=API_KEY, ctype="application/json", bearer=True):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdr = {"Content-Type": ctype}
    if key:
        hdr["Authorization"] = ("Bearer " if bearer else "") + key
    return request(d, "POST", path, data, hdr)


def pvnc_create(d, params=None, key=API_KEY, body=None):
    b, ctype = multipart(params or PVNC)
    hdr = {"Content-Type": ctype}
    if key:
        hdr["Authorization"] = key
    return request(d, "POST", "/create", b if body is None else body, hdr)


def auth_get(d, path, key=API_KEY):
    return request(d, "GET", path, headers={"Authorization": "Bearer " + key} if key else {})


ORIGIN = "Origin: https://panel.example\r\n"


def ws_answer(d, tok, extra=ORIGIN):
    """A refused upgrade's answer read whole (RawWS only reads the head)."""
    req = ("GET /ws/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: binary\r\n%s\r\n" % (tok, extra)).encode()
    return raw(d.port, req)


def ctl(d, *args):
    r = subprocess.run([BIN, "ctl", "--socket", d.sock, *args], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr


def test_every_documented_answer_is_what_the_daemon_says(daemon_factory, tmpdir_rs):
    t = Target(echo_target)
    sock = os.path.join(tmpdir_rs, "admin.sock")
    d = daemon_factory({"api_keys": KEYS, "admin_socket": sock,
                        "inline_upstreams": {"verify": "insecure"},
                        "allowed_origins": ["https://panel.example"]})
    d.sock = sock
    vnc = {"kind": "vnc", "host": "127.0.0.1", "port": t.port}
    seen = {}

    def see(key, resp):
        seen[key] = answer(*resp)

    def new_token(key=API_KEY, body=None):
        st, _, b = post_json(d, "/api/v1/consoles", body or vnc, key)
        assert st == 201, b
        return b["token"]

    C, R = "/api/v1/consoles", "/api/v1/consoles/{token}"
    # --- /api/v1/consoles ---
    see((C, "post", "201", None), post_json(d, C, vnc))
    see((C, "post", "400", "invalid_json"), post_json(d, C, b"{nope"))
    see((C, "post", "400", "invalid_field"), post_json(d, C, dict(vnc, port=0)))
    see((C, "post", "401", "unauthorized"), post_json(d, C, vnc, key="wrong-key-0123456789abcdef"))
    see((C, "post", "403", "target_not_allowed"), post_json(d, C, vnc, KEY["narrow"]))
    see((C, "post", "403", "out_of_scope"), post_json(d, C, vnc, KEY["viewer"]))
    see((C, "post", "405", "method_not_allowed"), auth_get(d, C))
    see((C, "post", "415", "unsupported_media_type"), post_json(d, C, vnc, ctype="text/plain"))
    pending = post_json(d, C, vnc, KEY["lim"])
    see((C, "post", "429", "key_pending_limit"), post_json(d, C, vnc, KEY["lim"]))
    # --- /api/v1/consoles/{token} ---
    tok = new_token()
    see((R, "delete", "204", None), request(d, "DELETE", C + "/" + tok,
                                            headers={"Authorization": "Bearer " + API_KEY}))
    see((R, "delete", "404", "not_found"), request(d, "DELETE", C + "/" + tok,
                                                   headers={"Authorization": "Bearer " + API_KEY}))
    see((R, "delete", "401", "unauthorized"), request(d, "DELETE", C + "/" + tok))
    see((R, "delete", "405", "method_not_allowed"), auth_get(d, C + "/" + tok))
    # --- stats, openapi ---
    see(("/api/v1/stats", "get", "200", None), auth_get(d, "/api/v1/stats"))
    see(("/api/v1/stats", "get", "401", "unauthorized"), auth_get(d, "/api/v1/stats", None))
    see(("/api/v1/stats", "get", "405", "method_not_allowed"),
        post_json(d, "/api/v1/stats", {}))
    see(("/api/v1/openapi.json", "get", "200", None), request(d, "GET", "/api/v1/openapi.json"))
    see(("/api/v1/openapi.json", "get", "405", "method_not_allowed"),
        request(d, "DELETE", "/api/v1/openapi.json"))
    # --- ProxmoxVNC ---
    see(("/create", "post", "200", None), pvnc_create(d))
    see(("/create", "post", "400", None), pvnc_create(d, body=b"x"))
    see(("/create", "post", "401", None), pvnc_create(d, key="wrong-key-0123456789abcdef"))
    see(("/create", "post", "403", "target_not_allowed"), pvnc_create(d, key=KEY["narrow"]))
    see(("/create", "post", "403", "out_of_scope"), pvnc_create(d, key=KEY["viewer"]))
    see(("/create", "post", "405", "method_not_allowed"), request(d, "GET", "/create"))
    see(("/create", "post", "429", "key_pending_limit"), pvnc_create(d, key=KEY["lim"]))
    see(("/status", "get", "200", None), request(d, "GET", "/status",
                                                 headers={"Authorization": API_KEY}))
    see(("/status", "get", "401", None), request(d, "GET", "/status"))
    see(("/status", "get", "405", "method_not_allowed"), request(d, "DELETE", "/status",
                                                                 headers={"Authorization": API_KEY}))
    # --- the browser's routes ---
    for page in ("/console/{token}", "/vnc/{token}"):
        p = page.replace("{token}", new_token())
        see((page, "get", "200", None), request(d, "GET", p))
        see((page, "get", "404", None), request(d, "GET", page.replace("{token}", "nope")))
        see((page, "get", "405", "method_not_allowed"), post_json(d, p, {}))
    W = "/ws/{token}"
    tok = new_token()
    see((W, "get", "400", "bad_websocket_handshake"),
        raw(d.port, ("GET /ws/%s HTTP/1.1\r\nHost: x\r\n\r\n" % tok).encode()))
    see((W, "get", "403", "bad_websocket_handshake"), ws_answer(d, tok, "Origin: https://evil.example\r\n"))
    see((W, "get", "426", "bad_websocket_handshake"),
        raw(d.port, ("GET /ws/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
                     % tok).encode()))
    see((W, "get", "405", "method_not_allowed"), post_json(d, "/ws/" + tok, {}))
    bound = new_token(body=dict(vnc, client_ip="10.9.9.9"))
    see((W, "get", "403", "token_bound"), ws_answer(d, bound))
    w = RawWS(d.port, "/ws/" + tok, ORIGIN)
    assert w.status == 101, w.head
    seen[(W, "get", "101", None)] = ("101", None, None)
    see((W, "get", "404", "token_invalid"), ws_answer(d, tok))
    w.close()
    # max_consoles 1 for key "lim": one open, the second link refused.
    lim1 = pending[2]["token"]
    w1 = RawWS(d.port, "/ws/" + lim1, ORIGIN)
    assert w1.status == 101, w1.head
    st, _, b = pvnc_create(d, key=KEY["lim"])  # the pending place is free again
    assert st == 200, b
    see((W, "get", "429", "key_console_limit"), ws_answer(d, b["token"]))
    w1.close()
    # --- health ---
    see(("/healthz", "get", "200", None), request(d, "GET", "/healthz"))
    see(("/healthz", "get", "405", "method_not_allowed"), post_json(d, "/healthz", {}))
    # --- the HTTP server's own answers, on every route ---
    for path, item in DOC["paths"].items():
        p = path.replace("{token}", "t0")
        for method, op in item.items():
            if method == "parameters":
                continue
            m = method.upper()
            if "400" in op["responses"] and "$ref" in op["responses"]["400"]:
                see((path, method, "400", None),
                    raw(d.port, ("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
                                 % (m, p)).encode()))
            if "431" in op["responses"]:
                see((path, method, "431", None),
                    raw(d.port, ("%s %s HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n"
                                 % (m, p, "a" * 70000)).encode()))
            if "413" in op["responses"]:
                see((path, method, "413", None),
                    raw(d.port, ("%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                                 "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
                                 % (m, p, API_KEY)).encode()))
    # --- draining: last, it refuses every new console ---
    tok = new_token()
    ctl(d, "drain")
    see((C, "post", "503", "draining"), post_json(d, C, vnc))
    see(("/create", "post", "503", None), pvnc_create(d))
    see((W, "get", "503", "draining"), ws_answer(d, tok))
    see(("/healthz", "get", "503", None), request(d, "GET", "/healthz"))
    ctl(d, "undrain")
    t.stop()

    # A second appliance: tight limits (rate, failed authentications, link
    # table), no inline Proxmox hosts.
    d2 = daemon_factory({"api": {"rate_limit_per_s": 1, "rate_limit_burst": 1,
                                 "auth_failures_per_window": 1}})
    see(("/create", "post", "403", None), pvnc_create(d2))  # takes the one request of the burst
    see((R, "delete", "429", "rate_limited"), request(d2, "DELETE", C + "/x",
                                                      headers={"Authorization": "Bearer " + API_KEY}))
    see((C, "post", "429", "rate_limited"), post_json(d2, C, vnc))
    see(("/create", "post", "429", "rate_limited"), pvnc_create(d2))
    bad = "wrong-key-0123456789abcdef"
    post_json(d2, C, vnc, key=bad)
    see((C, "post", "429", "auth_throttled"), post_json(d2, C, vnc, key=bad))
    see((R, "delete", "429", "auth_throttled"), request(d2, "DELETE", C + "/x",
                                                        headers={"Authorization": "Bearer " + bad}))
    see(("/api/v1/stats", "get", "429", "auth_throttled"), auth_get(d2, "/api/v1/stats", bad))
    see(("/create", "post", "429", "auth_throttled"), pvnc_create(d2, key=bad))
    see(("/status", "get", "429", "auth_throttled"), request(d2, "GET", "/status",
                                                            headers={"Authorization": bad}))
    d3 = daemon_factory({"tokens": {"capacity": 16}, "inline_upstreams": {"verify": "insecure"}})
    for _ in range(200):
        r = post_json(d3, C, {"kind": "vnc", "host": "127.0.0.1", "port": 5900})
        if r[0] != 201:
            break
    see((C, "post", "503", "token_table_full"), r)
    see(("/create", "post", "503", "token_table_full"), pvnc_create(d3))

    doc = documented()
    missing = set(doc) - set(seen) - set(UNREACHABLE)
    assert not missing, "documented but never driven: %s" % sorted(missing)
    for key, (status, code, ctype) in seen.items():
        assert key in doc, "answer not documented: %s -> %s" % (key, (status, code, ctype))
        assert (status, code) == (key[2], key[3]), "%s answered %s %s" % (key, status, code)
        assert ctype == doc[key], "%s: content type %s, documented %s" % (key, ctype, doc[key])
