"""Tests of the Proxmox VE simulator with independent clients.

Run: /usr/bin/python3 -m pytest tests/pvesim
"""
import asyncio
import base64
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse

import pytest
import websockets
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIM = os.path.join(HERE, "pvesim.py")
XVNC = os.path.join(ROOT, "scripts", "xvnc")
PY = "/usr/bin/python3"
TOKEN_SECRET = "5f0c9a3e-8d1b-4c2e-9f7a-0b1c2d3e4f50"
ALLPRIVS = ["VM.Console", "VM.Audit", "Sys.Audit"]


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Simulator:
    def __init__(self, tmp, conf):
        self.dir = str(tmp)
        path = os.path.join(self.dir, "conf.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        self.proc = subprocess.Popen([PY, SIM, "--config", path, "--dir", os.path.join(self.dir, "out")])
        ready = os.path.join(self.dir, "out", "ready.json")
        deadline = time.time() + 15
        while not os.path.exists(ready):
            assert self.proc.poll() is None, "simulator died"
            assert time.time() < deadline, "simulator not ready"
            time.sleep(0.05)
        with open(ready) as f:
            self.ready = json.load(f)
        self.ctx = ssl.create_default_context(cafile=self.ready["ca"])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def node(self, name):
        n = self.ready["nodes"][name]
        return n["host"], n["port"]

    def conn(self, node="pve1"):
        host, port = self.node(node)
        return http.client.HTTPSConnection(host, port, context=self.ctx, timeout=15)

    def api(self, method, path, params=None, headers=None, node="pve1", body=None, conn=None):
        c = conn or self.conn(node)
        hdrs = dict(headers or {})
        url = "/api2/json" + path
        if params is not None and method == "GET":
            url += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        elif params is not None:
            body = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        t0 = time.monotonic()
        c.request(method, url, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        el = time.monotonic() - t0
        if conn is None:
            c.close()
        obj = json.loads(data) if data else None
        return r.status, r.reason, r, obj, el

    def ctl(self, method, path, body=None):
        host, port = self.ready["control"].split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request(method, path, body=json.dumps(body) if body is not None else None)
        r = c.getresponse()
        out = json.loads(r.read())
        c.close()
        assert r.status == 200, out
        return out

    def login(self, user="root@pam", pw="pw", node="pve1"):
        st, _, _, obj, _ = self.api("POST", "/access/ticket", {"username": user, "password": pw}, node=node)
        assert st == 200
        return obj["data"]

    def cookie_headers(self, data):
        return {"Cookie": "PVEAuthCookie=" + urllib.parse.quote(data["ticket"], safe=""),
                "CSRFPreventionToken": data["CSRFPreventionToken"]}

    def token_headers(self, tid="root@pam!ringside", secret=TOKEN_SECRET):
        return {"Authorization": "PVEAPIToken=%s=%s" % (tid, secret)}


class FakeVnc:
    """A tiny VNC server (security None) that floods after ClientInit."""

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                c.sendall(b"RFB 003.008\n")
                c.recv(12)
                c.sendall(b"\x01\x01")
                c.recv(1)
                c.sendall(b"\0\0\0\0")
                c.recv(1)
                c.sendall(bytes(i & 0xFF for i in range(self.nbytes)))
                time.sleep(0.5)
            except OSError:
                pass
            c.close()


@pytest.fixture(scope="module")
def xvnc(tmp_path_factory):
    run = tmp_path_factory.mktemp("xvnc")
    port = free_port()
    out = subprocess.run([XVNC, "start", "auto", str(port), "-", "#2e8b57", str(run)],
                         capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout.strip().split()[-1])
    yield port
    subprocess.run([XVNC, "stop", str(pid)], timeout=30)


@pytest.fixture(scope="module")
def bigvnc():
    f = FakeVnc(300000)
    yield f
    f.sock.close()


def hosts():
    a = random.randint(2, 250)
    b = random.randint(2, 250)
    return "127.%d.%d.1" % (a, b), "127.%d.%d.2" % (a, b)


def base_conf(xvnc_port, big_port, **kw):
    h1, h2 = hosts()
    conf = {
        "nodes": [{"name": "pve1", "host": h1, "port": 0}, {"name": "pve2", "host": h2, "port": 0}],
        "users": [{"userid": "root@pam", "password": "pw", "privs": ALLPRIVS},
                  {"userid": "tfa@pve", "password": "pw", "tfa": True},
                  {"userid": "audit@pve", "password": "pw", "privs": ["VM.Audit"]},
                  {"userid": "blind@pve", "password": "pw", "privs": ["VM.Console"]}],
        "tokens": [{"tokenid": "root@pam!ringside", "secret": TOKEN_SECRET, "privs": ALLPRIVS}],
        "vms": [{"vmid": 100, "type": "qemu", "node": "pve1", "name": "web", "status": "running",
                 "vnc": "127.0.0.1:%d" % xvnc_port},
                {"vmid": 101, "type": "qemu", "node": "pve1", "status": "stopped"},
                {"vmid": 102, "type": "qemu", "node": "pve1", "name": "big", "vnc": "127.0.0.1:%d" % big_port},
                {"vmid": 200, "type": "lxc", "node": "pve2", "status": "running", "shell": ["/bin/sh", "-i"]},
                {"vmid": 201, "type": "lxc", "node": "pve1", "status": "running"}],
        "auth_delay_s": 0.2,
        "idle_close_s": 1.0,
        "console_accept_timeout_s": 3.0,
    }
    conf.update(kw)
    return conf


@pytest.fixture(scope="module")
def sim(tmp_path_factory, xvnc, bigvnc):
    s = Simulator(tmp_path_factory.mktemp("sim"), base_conf(xvnc, bigvnc.port))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def legacy(tmp_path_factory, xvnc, bigvnc):
    s = Simulator(tmp_path_factory.mktemp("legacy"), base_conf(xvnc, bigvnc.port, legacy=True))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def root(sim):
    return sim.login()


# ---- raw WebSocket + RFB clients -------------------------------------------


class RawWS:
    """A minimal, deliberately strict WebSocket client on a TLS socket."""

    def __init__(self, sim, node, path, headers, protocol="binary", upgrade=True, version="13", timeout=10):
        host, port = sim.node(node)
        raw = socket.create_connection((host, port), timeout=timeout)
        self.s = sim.ctx.wrap_socket(raw, server_hostname=host)
        self.key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET /api2/json%s HTTP/1.1" % path, "Host: %s:%d" % (host, port)]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: %s" % version,
                      "Sec-WebSocket-Key: %s" % self.key]
        if protocol:
            lines.append("Sec-WebSocket-Protocol: %s" % protocol)
        lines += ["%s: %s" % kv for kv in headers.items()]
        self.s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        self.sbuf = b""
        self.timed_out = False
        while b"\r\n\r\n" not in self.buf:
            try:
                d = self.s.recv(262144)
            except socket.timeout:
                self.timed_out = True
                d = b""
            except (ConnectionError, ssl.SSLError, OSError):
                d = b""
            if not d:
                self.status = None
                self.head = self.buf
                return
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head = head.decode()
        self.status = int(self.head.split(" ")[1])
        self.headers = {}
        self.lines = self.head.split("\r\n")[1:]
        for line in self.lines:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()

    def _recv(self):
        try:
            return self.s.recv(262144)
        except (ConnectionError, ssl.SSLError, OSError):
            return b""

    def exact(self, n):
        while len(self.buf) < n:
            d = self._recv()
            if not d:
                raise EOFError
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, payload, op=2, mask=True, fin=True, rsv=0):
        b0 = (0x80 if fin else 0) | rsv | op
        n = len(payload)
        if n < 126:
            hdr = bytes([b0, (0x80 if mask else 0) | n])
        elif n < 65536:
            hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack(">H", n)
        else:
            hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack(">Q", n)
        if mask:
            k = os.urandom(4)
            payload = bytes(b ^ k[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
                (int.from_bytes(payload, "big") ^ int.from_bytes((k * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
            hdr += k
        self.s.sendall(hdr + payload)

    def frame(self):
        """(fin, opcode, masked, payload); raises EOFError at connection end."""
        h = self.exact(2)
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", self.exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self.exact(8))[0]
        assert not h[1] & 0x80, "server frames must be unmasked"
        return bool(h[0] & 0x80), h[0] & 0x0F, False, self.exact(n)

    def stream(self, n):
        """n bytes of backend stream carried in binary frames."""
        while len(self.sbuf) < n:
            fin, op, _, p = self.frame()
            assert fin and op == 2
            self.sbuf += p
        out, self.sbuf = self.sbuf[:n], self.sbuf[n:]
        return out

    def read_until(self, needle, timeout=5):
        out = b""
        end = time.time() + timeout
        self.s.settimeout(timeout)
        while needle not in out and time.time() < end:
            fin, op, _, p = self.frame()
            assert op == 2
            out += p
        return out

    def closed(self, timeout=3):
        """True if the server shut the connection without sending any further frame."""
        self.s.settimeout(timeout)
        if self.buf or self.sbuf:
            return False
        d = self._recv()
        return d == b""

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def des(pw, chal):
    key = bytes(int("{:08b}".format(b)[::-1], 2) for b in pw.encode("latin-1")[:8].ljust(8, b"\0"))
    e = Cipher(algorithms.TripleDES(key + key + key), modes.ECB()).encryptor()
    return e.update(chal) + e.finalize()


def ws_path(node, vtype, vmid, port, ticket):
    return "/nodes/%s/%s/%d/vncwebsocket?port=%s&vncticket=%s" % (
        node, vtype, vmid, port, urllib.parse.quote(ticket, safe=""))


def vncproxy(sim, auth_headers, vmid=100, node="pve1", vtype="qemu", params=None, via="pve1"):
    st, reason, _, obj, _ = sim.api("POST", "/nodes/%s/%s/%d/vncproxy" % (node, vtype, vmid),
                                    params if params is not None else {"websocket": "1"},
                                    headers=auth_headers, node=via)
    assert st == 200, (st, reason)
    return obj["data"]


def rfb_auth(ws, password):
    assert ws.stream(12) == b"RFB 003.008\n"
    ws.send(b"RFB 003.008\n")
    assert ws.stream(2) == b"\x01\x02"
    ws.send(b"\x02")
    chal = ws.stream(16)
    ws.send(des(password, chal))
    return ws.stream(4)


def events(sim, name):
    return [e for e in sim.ctl("GET", "/log") if e.get("event") == name]


# ---- tests: simulator lifecycle and TLS ---------------------------------------


def test_ready_json_and_certificates(sim):
    r = sim.ready
    assert r["pid"] == sim.proc.pid and os.path.exists(r["ca"])
    assert set(r["nodes"]) == {"pve1", "pve2"}
    for name, n in r["nodes"].items():
        assert n["port"] > 0 and re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", n["fingerprint"])
        raw = socket.create_connection((n["host"], n["port"]))
        with sim.ctx.wrap_socket(raw, server_hostname=n["host"]) as s:  # verifies CA + IP SAN
            der = s.getpeercert(binary_form=True)
            assert s.version() in ("TLSv1.2", "TLSv1.3")
        assert ":".join("%02X" % b for b in hashlib.sha256(der).digest()) == n["fingerprint"]
        assert ssl.DER_cert_to_PEM_cert(der).strip() == open(n["cert"]).read().strip()


def test_sigterm_clean_exit(tmp_path):
    s = Simulator(tmp_path, {"nodes": [{"name": "solo", "host": hosts()[0], "port": 0}]})
    assert s.stop() == 0


def test_pveproxy_headers_and_version(sim, root):
    st, _, r, obj, _ = sim.api("GET", "/version", headers=sim.cookie_headers(root))
    assert st == 200 and obj["data"]["version"].startswith("9.")
    assert r.getheader("Server") == "pve-api-daemon/3.0"
    assert r.getheader("Content-Type") == "application/json;charset=UTF-8"
    assert r.getheader("Connection") == "Keep-Alive" and r.getheader("Pragma") == "no-cache"


def test_keepalive_then_idle_close(sim, root):
    c = sim.conn()
    for _ in range(3):
        st, *_ = sim.api("GET", "/version", headers=sim.cookie_headers(root), conn=c)
        assert st == 200
    time.sleep(1.5)  # idle_close_s = 1.0 in this fixture
    c.sock.settimeout(2)
    assert c.sock.recv(1) == b""
    c.close()


# ---- tests: authentication -----------------------------------------------------


def test_ticket_format_and_fields(sim, root):
    assert root["username"] == "root@pam" and root["clustername"]
    m = re.fullmatch(r"PVE:root@pam:([0-9A-F]{8})::([A-Za-z0-9+/]{342}==)", root["ticket"])
    assert m and abs(int(m.group(1), 16) - time.time()) < 60
    assert len(base64.b64decode(m.group(2))) == 256
    assert re.fullmatch(r"[0-9A-F]{8}:[A-Za-z0-9+/]{43}", root["CSRFPreventionToken"])
    assert set(root["cap"]) == {"vms", "storage", "access", "nodes", "sdn", "dc", "mapping"}
    assert root["cap"]["vms"] == {"VM.Console": 1, "VM.Audit": 1}
    # JSON body and realm field work too
    st, _, _, obj, _ = sim.api("POST", "/access/ticket", body=json.dumps({"username": "root", "realm": "pam",
                                                                           "password": "pw"}),
                               headers={"Content-Type": "application/json"})
    assert st == 200 and obj["data"]["username"] == "root@pam"


def test_ticket_renew_and_lifetime(sim, root):
    st, _, _, obj, _ = sim.api("POST", "/access/ticket", {"username": "root@pam", "password": root["ticket"]})
    assert st == 200 and obj["data"]["ticket"].startswith("PVE:root@pam:")
    h = {"Cookie": "PVEAuthCookie=" + root["ticket"]}
    try:
        sim.ctl("POST", "/clock", {"advance": 7190})
        assert sim.api("GET", "/version", headers=h)[0] == 200
        sim.ctl("POST", "/clock", {"advance": 20})  # age 7210 s > 2 h
        st, reason, *_ = sim.api("GET", "/version", headers=h)
        assert (st, reason) == (401, "Authentication failed!")
        sim.ctl("POST", "/clock", {"advance": -7210 - 290})  # ticket 290 s in the future: still valid
        assert sim.api("GET", "/version", headers=h)[0] == 200
        sim.ctl("POST", "/clock", {"advance": -20})
        assert sim.api("GET", "/version", headers=h)[0] == 401
    finally:
        sim.ctl("POST", "/clock", {"offset": 0})
    assert sim.ctl("GET", "/state")["clock_offset"] == 0


def test_bad_credentials_401_delayed(sim):
    # create_ticket runs in pvedaemon: its 401 is JSON (delayed there), one Connection: close
    st, reason, r, obj, el = sim.api("POST", "/access/ticket", {"username": "root@pam", "password": "nope"})
    assert st == 401 and reason == "authentication failure" and el >= 0.2
    assert obj == {"data": None, "message": "authentication failure\n"}
    assert r.msg.get_all("Connection") == ["close"]
    assert sim.api("POST", "/access/ticket", {"username": "ghost@pve", "password": "pw"})[0] == 401


def test_default_auth_delay_is_3s(tmp_path):
    s = Simulator(tmp_path, {"nodes": [{"name": "pve1", "host": hosts()[0], "port": 0}]})
    try:
        st, reason, _, obj, el = s.api("GET", "/cluster/resources")
        assert (st, reason, obj) == (401, "No ticket", None)
        assert 2.9 <= el < 5
    finally:
        assert s.stop() == 0


def test_cookie_regex_quirk(sim, root):
    t = root["ticket"]
    q = urllib.parse.quote(t, safe="")
    ok = ["PVEAuthCookie=" + t, "PVEAuthCookie=" + q, "a=b; PVEAuthCookie=" + q, "PVEAuthCookie " + q,
          "a=b;\tPVEAuthCookie=" + q + "; c=d"]
    for cookie in ok:
        assert sim.api("GET", "/version", headers={"Cookie": cookie})[0] == 200, cookie
    st, reason, *_ = sim.api("GET", "/version", headers={"Cookie": "a=b;PVEAuthCookie=" + q})
    assert (st, reason) == (401, "No ticket")
    st, reason, *_ = sim.api("GET", "/version", headers={"Cookie": "XPVEAuthCookie=" + q})
    assert (st, reason) == (401, "No ticket")
    # fallback: the same regex on the Authorization header
    assert sim.api("GET", "/version", headers={"Authorization": "PVEAuthCookie=" + q})[0] == 200
    st, reason, *_ = sim.api("GET", "/version", headers={"Cookie": "PVEAuthCookie=" + t[:-4] + "AAA="})
    assert (st, reason) == (401, "Authentication failed!")


def test_csrf_required_for_cookie_post(sim, root):
    h = {"Cookie": "PVEAuthCookie=" + root["ticket"]}
    st, reason, *_ = sim.api("POST", "/nodes/pve1/qemu/100/vncproxy", {"websocket": "1"}, headers=h)
    assert (st, reason) == (401, "Permission denied - invalid csrf token")
    h["CSRFPreventionToken"] = root["CSRFPreventionToken"][:-2] + "xx"
    assert sim.api("POST", "/nodes/pve1/qemu/100/vncproxy", {"websocket": "1"}, headers=h)[0] == 401
    vncproxy(sim, sim.cookie_headers(root))
    vncproxy(sim, sim.token_headers())  # tokens never need CSRF
    log = [e for e in sim.ctl("GET", "/log") if e.get("path", "").endswith("vncproxy")]
    assert {"auth": "token", "csrf": False, "status": 200}.items() <= log[-1].items()
    assert {"auth": "cookie", "csrf": True, "status": 200}.items() <= log[-2].items()


def test_token_auth_forms(sim):
    assert sim.api("GET", "/version", headers=sim.token_headers())[0] == 200
    h = {"Authorization": "PVEAPIToken root@pam!ringside=" + TOKEN_SECRET}
    assert sim.api("GET", "/version", headers=h)[0] == 200
    st, reason, *_ = sim.api("GET", "/version", headers=sim.token_headers(secret="wrong"))
    assert (st, reason) == (401, "Authentication failed!")
    d = vncproxy(sim, sim.token_headers())
    assert d["user"] == "root@pam!ringside"


def test_token_refused_on_access_ticket(sim):
    st, reason, *_ = sim.api("POST", "/access/ticket", {"username": "root@pam", "password": "pw"},
                             headers=sim.token_headers())
    assert (st, reason) == (403, "Permission check failed (URI '/access/ticket' not available with API token, "
                                 "need proper ticket.")


def test_tfa_half_ticket(sim):
    d = sim.login("tfa@pve")
    assert d["NeedTFA"] == 1 and "cap" not in d
    assert d["ticket"].startswith("PVE:!tfa!") and re.search(r":[0-9A-F]{8}::[A-Za-z0-9+/]{342}==$", d["ticket"])
    st, reason, *_ = sim.api("GET", "/version", headers={"Cookie": "PVEAuthCookie=" + d["ticket"]})
    assert (st, reason) == (401, "No ticket")
    st, _, _, obj, _ = sim.api("POST", "/access/ticket", {"username": "tfa@pve", "tfa-challenge": d["ticket"],
                                                           "password": "totp:000000"})
    assert st == 401
    st, _, _, obj, _ = sim.api("POST", "/access/ticket", {"username": "tfa@pve", "tfa-challenge": d["ticket"],
                                                           "password": "totp:123456"})
    assert st == 200 and obj["data"]["ticket"].startswith("PVE:tfa@pve:") and "cap" in obj["data"]


def test_403_without_vm_console(sim):
    d = sim.login("audit@pve")
    st, reason, _, obj, _ = sim.api("POST", "/nodes/pve1/qemu/100/vncproxy", {"websocket": "1"},
                                    headers=sim.cookie_headers(d))
    assert (st, reason) == (403, "Permission check failed (/vms/100, VM.Console)")


# ---- tests: console endpoints ---------------------------------------------------


def test_qemu_vncproxy_fields(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root), params={"websocket": "1", "generate-password": "1"})
    assert set(d) == {"user", "ticket", "password", "port", "upid", "cert"}
    assert d["user"] == "root@pam" and isinstance(d["port"], str) and 5900 <= int(d["port"]) <= 5999
    assert len(d["password"]) == 8 and all(0x21 <= ord(c) <= 0x60 for c in d["password"])
    assert d["ticket"].startswith(d["password"] + ":PVEVNC:")
    assert re.fullmatch(r".{8}:PVEVNC:[0-9A-F]{8}::[A-Za-z0-9+/]{342}==", d["ticket"], re.S)
    assert re.fullmatch(r"UPID:pve1:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:vncproxy:100:root@pam:", d["upid"])
    assert d["cert"] == open(sim.ready["ca"]).read()


def test_password_special_characters(sim, root):
    seen = set()
    for _ in range(8):
        seen |= set(vncproxy(sim, sim.token_headers())["password"])
    assert seen & set(":\\+&%#")


def test_vncproxy_parameter_400s(sim, root):
    h = sim.cookie_headers(root)
    st, _, _, obj, _ = sim.api("POST", "/nodes/pve1/qemu/100/vncproxy", {"websocket": "1", "width": "800"}, headers=h)
    assert st == 400 and "width" in obj["errors"] and obj["data"] is None
    st, _, _, obj, _ = sim.api("POST", "/nodes/pve2/lxc/200/vncproxy", {"websocket": "1", "generate-password": "1"},
                               headers=h)
    assert st == 400 and "generate-password" in obj["errors"]
    st, _, _, obj, _ = sim.api("POST", "/nodes/pve2/lxc/200/vncproxy", {"websocket": "1", "width": "8"}, headers=h)
    assert st == 400 and "width" in obj["errors"]
    d = vncproxy(sim, h, vmid=200, node="pve2", vtype="lxc", params={"websocket": "1", "width": "800",
                                                                     "height": "600"})
    assert d["ticket"].startswith(d["password"] + ":PVEVNC:")
    d = vncproxy(sim, h, vmid=200, node="pve2", vtype="lxc", params={})
    assert "password" not in d and d["ticket"].startswith("PVEVNC:")


def test_wrong_node_and_unknown_vmid_500(sim, root):
    h = sim.cookie_headers(root)
    st, reason, *_ = sim.api("POST", "/nodes/pve2/qemu/100/vncproxy", {"websocket": "1"}, headers=h)
    assert (st, reason) == (500, "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist")
    st, reason, *_ = sim.api("POST", "/nodes/pve1/qemu/999/vncproxy", {"websocket": "1"}, headers=h)
    assert (st, reason) == (500, "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist")
    st, reason, *_ = sim.api("GET", "/nodes/pve1/lxc/200/status/current", headers=h)
    assert (st, reason) == (500, "Configuration file 'nodes/pve1/lxc/200.conf' does not exist")


def test_vncwebsocket_plain_get_returns_port(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root))
    st, _, _, obj, _ = sim.api("GET", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]),
                               headers=sim.cookie_headers(root))
    assert st == 200 and obj == {"data": {"port": d["port"]}}
    # new mode: the ticket is bound to its port
    other = int(d["port"]) + 1
    st, reason, _, obj, _ = sim.api("GET", ws_path("pve1", "qemu", 100, other, d["ticket"]),
                                    headers=sim.cookie_headers(root))
    assert (st, reason) == (401, "permission denied - invalid PVEVNC ticket")
    assert obj == {"data": None, "message": "permission denied - invalid PVEVNC ticket\n"}
    # and to the authid
    st, *_ = sim.api("GET", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), headers=sim.token_headers())
    assert st == 401


def test_vnc_through_to_real_xvnc(sim, root):
    """websockets (independent client) + own RFB client: VNC auth, then Xvnc's ServerInit 1024x768."""
    d = vncproxy(sim, sim.cookie_headers(root))
    host, port = sim.node("pve1")
    url = "wss://%s:%d/api2/json%s" % (host, port, ws_path("pve1", "qemu", 100, d["port"], d["ticket"]))

    async def run():
        async with websockets.connect(url, ssl=sim.ctx, subprotocols=["binary"], compression=None,
                                      extra_headers={"Cookie": "PVEAuthCookie=" + root["ticket"]},
                                      close_timeout=0.2, max_size=None) as ws:
            assert ws.subprotocol == "binary"
            buf = bytearray()

            async def exact(n):
                while len(buf) < n:
                    m = await asyncio.wait_for(ws.recv(), 10)
                    assert isinstance(m, bytes)
                    buf.extend(m)
                out = bytes(buf[:n])
                del buf[:n]
                return out
            assert await exact(12) == b"RFB 003.008\n"
            await ws.send(b"RFB 003.008\n")
            assert await exact(2) == b"\x01\x02"
            await ws.send(b"\x02")
            chal = await exact(16)
            await ws.send(des(d["ticket"][:8], chal))  # first 8 bytes of the ticket == password
            assert await exact(4) == b"\0\0\0\0"
            await ws.send(b"\x01")  # ClientInit shared
            w, h = struct.unpack(">HH", await exact(4))
            pf = await exact(16)
            name = await exact(struct.unpack(">I", await exact(4))[0])
            return w, h, pf, name
    w, h, pf, name = asyncio.run(run())
    assert (w, h) == (1024, 768) and pf[0] == 32 and name
    ev = [e for e in sim.ctl("GET", "/log") if e.get("port") == int(d["port"])]
    assert [e["event"] for e in ev] == ["console-accept", "vnc-auth-ok"]


def test_vnc_auth_failure(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root))
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.cookie_headers(root))
    assert ws.status == 101
    res = rfb_auth(ws, "wrongpw!")
    assert res == b"\0\0\0\1"
    assert ws.stream(4) == struct.pack(">I", 22) and ws.stream(22) == b"Authentication failed\0"
    assert ws.closed()
    assert any(e["port"] == int(d["port"]) for e in events(sim, "vnc-auth-fail"))


def test_vnc_password_expires_30s_after_accept(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root))
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.cookie_headers(root))
    assert ws.status == 101 and ws.stream(12) == b"RFB 003.008\n"
    sim.ctl("POST", "/clock", {"advance": 31})
    try:
        ws.send(b"RFB 003.008\n")
        assert ws.stream(2) == b"\x01\x02"
        ws.send(b"\x02")
        ws.send(des(d["password"], ws.stream(16)))
        assert ws.stream(4) == b"\0\0\0\1"
    finally:
        sim.ctl("POST", "/clock", {"offset": 0})
    ws.close()


def test_single_accept_only(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root))
    p = ws_path("pve1", "qemu", 100, d["port"], d["ticket"])
    ws1 = RawWS(sim, "pve1", p, sim.cookie_headers(root))
    assert ws1.status == 101 and ws1.stream(12) == b"RFB 003.008\n"
    ws2 = RawWS(sim, "pve1", p, sim.cookie_headers(root), timeout=1.5)  # ticket valid, listener gone
    assert ws2.status is None and ws2.head == b"" and ws2.timed_out  # no answer: a hang
    ws1.close()
    ws2.close()


def test_accept_timeout_closes_listener(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root))
    time.sleep(3.3)  # console_accept_timeout_s = 3 in this fixture (PVE: 10 s)
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.cookie_headers(root),
               timeout=1.5)
    assert ws.status is None and ws.timed_out  # no 101: backend connect failed first, no answer
    ws.close()
    time.sleep(0.2)
    log = [e for e in sim.ctl("GET", "/log") if e.get("path", "").endswith("vncwebsocket")]
    assert log[-1]["status"] == 0 and log[-1]["hung"] is True


def test_other_node_vncwebsocket_fails(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root), via="pve1")
    ws = RawWS(sim, "pve2", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.cookie_headers(root),
               timeout=1.5)
    assert ws.status is None and ws.timed_out  # pve2 has no listener on that port: no answer, a hang
    ws.close()
    # the same ticket still works on the issuing node
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.cookie_headers(root))
    assert ws.status == 101
    ws.close()


def test_vncproxy_for_vm_on_other_node_runs_on_receiving_node(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root), vmid=200, node="pve2", vtype="lxc", via="pve1")
    assert d["upid"].startswith("UPID:pve1:")


def test_ws_upgrade_headers_and_subprotocol(sim, root):
    d = vncproxy(sim, sim.token_headers())
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.token_headers(),
               protocol=None)
    assert ws.status == 101 and "sec-websocket-protocol" not in ws.headers
    want = base64.b64encode(hashlib.sha1((ws.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    assert ws.headers["sec-websocket-accept"] == want.decode()
    ws.close()
    d = vncproxy(sim, sim.token_headers())
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.token_headers(),
               protocol="binary, base64")
    assert ws.status == 101 and ws.headers["sec-websocket-protocol"] == "binary, base64"  # verbatim
    ws.close()
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), sim.token_headers(),
               version="8")
    assert ws.status == 500 and ws.headers["connection"] == "close"
    ws.close()
    # unauthenticated upgrade: delayed 401 with Connection: close
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), {})
    assert ws.status == 401 and ws.headers["connection"] == "close"
    ws.close()


def term_session(sim, headers, vmid=201, node="pve1", vtype="lxc"):
    st, _, _, obj, _ = sim.api("POST", "/nodes/%s/%s/%d/termproxy" % (node, vtype, vmid), {}, headers=headers)
    assert st == 200
    d = obj["data"]
    ws = RawWS(sim, node, ws_path(node, vtype, vmid, d["port"], d["ticket"]), headers)
    assert ws.status == 101
    return d, ws


def test_termproxy_auth_echo_resize(sim, root):
    d, ws = term_session(sim, sim.cookie_headers(root))
    assert set(d) == {"user", "ticket", "port", "upid"} and d["ticket"].startswith("PVEVNC:")
    ws.send(("%s:%s\n" % (d["user"], d["ticket"])).encode(), op=1)
    assert ws.stream(2) == b"OK"
    cmd = b"echo pvesim$((40+2)) $TERM; stty size\r"
    ws.send(b"0:%d:" % len(cmd) + cmd, op=1)
    out = ws.read_until(b"20 80")
    assert b"pvesim42 xterm-256color" in out
    ws.send(b"2", op=1)  # ping: ignored
    ws.send(b"1:100:30:", op=1)
    cmd = b"stty size\r"
    ws.send(b"0:%d:" % len(cmd), op=1)  # data may follow the header in another frame
    ws.send(cmd, op=1)
    assert b"30 100" in ws.read_until(b"30 100")
    ws.close()
    assert any(e["port"] == int(d["port"]) for e in events(sim, "term-auth-ok"))


def test_termproxy_bad_ticket_closes_without_ok(sim):
    d, ws = term_session(sim, sim.token_headers())
    ws.send(("root@pam:%s\n" % d["ticket"]).encode(), op=1)  # wrong authid (token issued it)
    assert ws.closed()
    assert any(e["port"] == int(d["port"]) for e in events(sim, "term-auth-fail"))


def test_ws_frame_rules(sim, root):
    h = sim.token_headers()
    # ping -> pong with the same payload; 128 KiB frame accepted; text frames are raw bytes
    d, ws = term_session(sim, h)
    ws.send(("%s:%s\n" % (d["user"], d["ticket"])).encode(), op=1)
    assert ws.stream(2) == b"OK"
    ws.send(b"2" * 131072, op=2)  # 128 KiB of termproxy pings
    ws.send(b"hello", op=9)
    while True:
        fin, op, _, p = ws.frame()
        if op == 10:
            break
        assert op == 2
    assert p == b"hello" and fin
    ws.send(b"x", op=10)  # unsolicited pong ignored
    ws.send(b"", op=8)  # close frame: server shuts down, never answers with a close frame
    s = b""
    ws.s.settimeout(3)
    while True:
        try:
            fin, op, _, p = ws.frame()
        except EOFError:
            break
        assert op == 2  # only data frames, no 0x88
    ws.close()
    for bad in ("unmasked", "big", "fragment", "rsv", "opcode"):
        d, ws = term_session(sim, h)
        try:  # the server may drop the connection while the frame is still being written
            if bad == "unmasked":
                ws.send(b"abc", mask=False)
            elif bad == "big":
                ws.send(b"2" * 131073)
            elif bad == "fragment":
                ws.send(b"abc", fin=False)
            elif bad == "rsv":
                ws.send(b"abc", rsv=0x40)
            else:
                ws.send(b"abc", op=3)
        except (OSError, ssl.SSLError):
            pass
        assert ws.closed(), bad
        ws.close()


def test_server_frames_at_most_128k(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root), vmid=102)
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 102, d["port"], d["ticket"]), sim.cookie_headers(root))
    assert rfb_auth(ws, d["password"]) == b"\0\0\0\0"
    ws.send(b"\x01")
    total = 0
    sizes = []
    ws.s.settimeout(5)
    while total < 300000:
        fin, op, _, p = ws.frame()
        assert fin and op == 2 and len(p) <= 131072
        assert p == bytes((total + i) & 0xFF for i in range(len(p)))
        total += len(p)
        sizes.append(len(p))
    assert total == 300000
    assert ws.closed()  # backend EOF: no close frame
    ws.close()


def test_stopped_vm_ws_closes_after_101(sim, root):
    d = vncproxy(sim, sim.cookie_headers(root), vmid=101)
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 101, d["port"], d["ticket"]), sim.cookie_headers(root))
    assert ws.status == 101
    assert ws.closed()  # no RFB bytes, no close frame
    ws.close()


def test_cluster_resources_and_status(sim, root):
    st, _, _, obj, _ = sim.api("GET", "/cluster/resources", {"type": "vm"}, headers=sim.token_headers())
    vms = {v["id"]: v for v in obj["data"]}
    assert set(vms) == {"qemu/100", "qemu/101", "qemu/102", "lxc/200", "lxc/201"}
    assert {"vmid": 100, "node": "pve1", "type": "qemu", "status": "running", "name": "web"}.items() \
        <= vms["qemu/100"].items()
    assert vms["qemu/101"]["status"] == "stopped"
    blind = sim.login("blind@pve")
    st, _, _, obj, _ = sim.api("GET", "/cluster/resources", {"type": "vm"}, headers=sim.cookie_headers(blind))
    assert st == 200 and obj["data"] == []
    st, _, _, obj, _ = sim.api("GET", "/cluster/status", headers=sim.cookie_headers(root))
    nodes = {n["name"]: n for n in obj["data"] if n["type"] == "node"}
    assert nodes["pve2"]["ip"] == sim.ready["nodes"]["pve2"]["host"] and nodes["pve2"]["online"] == 1
    assert nodes["pve1"]["local"] == 1


def test_status_current_and_vm_control(sim, root):
    h = sim.cookie_headers(root)
    st, _, _, obj, _ = sim.api("GET", "/nodes/pve1/qemu/100/status/current", headers=h)
    assert obj["data"]["status"] == "running" and obj["data"]["vmid"] == 100
    sim.ctl("POST", "/vm", {"vmid": 100, "status": "stopped"})
    try:
        st, _, _, obj, _ = sim.api("GET", "/nodes/pve1/qemu/100/status/current", headers=h, node="pve2")
        assert st == 200 and obj["data"]["status"] == "stopped"  # proxied from pve2
    finally:
        sim.ctl("POST", "/vm", {"vmid": 100, "status": "running"})
    st, reason, *_ = sim.api("GET", "/nodes/pve1/qemu/100/status/current", headers=h, node="pve1")
    assert st == 200
    blind = sim.login("blind@pve")
    st, reason, *_ = sim.api("GET", "/nodes/pve1/qemu/100/status/current", headers=sim.cookie_headers(blind))
    assert (st, reason) == (403, "Permission check failed (/vms/100, VM.Audit)")


def test_offline_node_595(sim, root):
    h = sim.cookie_headers(root)
    sim.ctl("POST", "/mode", {"node": "pve2", "mode": "offline"})
    try:
        st, reason, _, obj, _ = sim.api("GET", "/nodes/pve2/lxc/200/status/current", headers=h)
        assert (st, reason, obj) == (595, "No route to host", None)
        st, _, _, obj, _ = sim.api("GET", "/cluster/status", headers=h)
        assert {n["name"]: n["online"] for n in obj["data"] if n["type"] == "node"} == {"pve1": 1, "pve2": 0}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(sim.node("pve2"), timeout=3)
    finally:
        sim.ctl("POST", "/mode", {"node": "pve2", "mode": "normal"})
    assert sim.api("GET", "/nodes/pve2/lxc/200/status/current", headers=h)[0] == 200


def test_refuse_status595_status500_modes(sim, root):
    h = sim.cookie_headers(root)
    sim.ctl("POST", "/mode", {"node": "pve2", "mode": "refuse"})
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(sim.node("pve2"), timeout=3)
    finally:
        sim.ctl("POST", "/mode", {"node": "pve2", "mode": "normal"})
    assert sim.api("GET", "/version", headers=h, node="pve2")[0] == 200  # same port again
    for mode, code in (("status595", 595), ("status500", 500)):
        sim.ctl("POST", "/mode", {"node": "pve2", "mode": mode})
        try:
            st, reason, r, obj, _ = sim.api("GET", "/version", headers=h, node="pve2")
            assert st == code
            if code == 595:
                assert reason == "No route to host" and obj is None
        finally:
            sim.ctl("POST", "/mode", {"node": "pve2", "mode": "normal"})


def test_control_log(sim, root):
    sim.ctl("POST", "/reset-log")
    sim.api("GET", "/version?x=1", headers={"Cookie": "PVEAuthCookie=" + root["ticket"]})
    log = sim.ctl("GET", "/log")
    assert log == [{"node": "pve1", "method": "GET", "path": "/api2/json/version", "query": "x=1",
                    "auth": "cookie", "csrf": False, "status": 200}]


# ---- legacy (pre-April-2026) mode -------------------------------------------------


def test_legacy_mode(legacy):
    d = legacy.login()
    h = legacy.cookie_headers(d)
    v = vncproxy(legacy, h)
    assert "password" not in v and re.fullmatch(r"PVEVNC:[0-9A-F]{8}::[A-Za-z0-9+/]{342}==", v["ticket"])
    v2 = vncproxy(legacy, h, params={"websocket": "1", "generate-password": "1"})
    assert len(v2["password"]) == 8 and v2["ticket"].startswith("PVEVNC:")
    # tickets are not bound to the port
    other = int(v["port"]) + 50
    st, _, _, obj, _ = legacy.api("GET", ws_path("pve1", "qemu", 100, other, v["ticket"]), headers=h)
    assert st == 200 and obj["data"]["port"] == str(other)
    # VNC password = first 8 bytes of the ticket ("PVEVNC:<first hex digit>")
    ws = RawWS(legacy, "pve1", ws_path("pve1", "qemu", 100, v["port"], v["ticket"]), h, protocol="binary")
    assert ws.status == 101 and ws.headers["sec-websocket-protocol"] == "binary"
    assert rfb_auth(ws, v["ticket"][:8]) == b"\0\0\0\0"
    ws.close()
    # old termproxy refuses API tokens
    d2, ws = term_session(legacy, legacy.token_headers())
    ws.send(("%s:%s\n" % (d2["user"], d2["ticket"])).encode(), op=1)
    assert ws.closed()


def test_lxc_vncproxy_vncterm_lookalike(sim, root):
    h = sim.cookie_headers(root)
    for params, size in (({"websocket": "1"}, (744, 400)),
                         ({"websocket": "1", "width": "800", "height": "600"}, (800, 600))):
        d = vncproxy(sim, h, vmid=201, vtype="lxc", params=params)
        ws = RawWS(sim, "pve1", ws_path("pve1", "lxc", 201, d["port"], d["ticket"]), h)
        assert rfb_auth(ws, d["password"]) == b"\0\0\0\0"
        ws.send(b"\x01")
        assert struct.unpack(">HH", ws.stream(4)) == size
        assert ws.stream(16)[:4] == bytes([8, 8, 0, 0])  # 8-bit colour map
        assert ws.stream(struct.unpack(">I", ws.stream(4))[0]) == b"VNC Command Terminal"
        ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, size[0], size[1]))
        assert ws.stream(16) == struct.pack(">BxHHHHHi", 0, 1, 0, 0, size[0], size[1], 0)
        assert ws.stream(size[0] * size[1]) == bytes(size[0] * size[1])
        ws.close()


# ---- pveproxy's answers byte for byte (pve-http-server 6.0.5 AnyEvent.pm) ----------

class RawHTTP:
    """One TLS connection; requests and answers as raw bytes (header lines in order)."""

    def __init__(self, sim, node="pve1", timeout=10):
        host, port = sim.node(node)
        self.host, self.port = host, port
        raw = socket.create_connection((host, port), timeout=timeout)
        self.s = sim.ctx.wrap_socket(raw, server_hostname=host)
        self.buf = b""

    def send(self, method, path, headers=None, body=b"", version="HTTP/1.1", form=None):
        hdrs = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form, quote_via=urllib.parse.quote).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if body:
            hdrs["Content-Length"] = str(len(body))
        lines = ["%s /api2/json%s %s" % (method, path, version), "Host: %s:%d" % (self.host, self.port)]
        lines += ["%s: %s" % kv for kv in hdrs.items()]
        self.s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _more(self):
        try:
            d = self.s.recv(65536)
        except (ConnectionError, ssl.SSLError, OSError):
            d = b""
        self.buf += d
        return d

    def answer(self):
        """(status line, [header lines], body, ended_at_eof, elapsed)."""
        t0 = time.monotonic()
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise EOFError(self.buf)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        clen = [int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:")]
        eof = False
        if clen:
            while len(self.buf) < clen[0]:
                if not self._more():
                    raise EOFError
            body, self.buf = self.buf[:clen[0]], self.buf[clen[0]:]
        else:
            while self._more():
                pass
            body, self.buf, eof = self.buf, b"", True
        return lines[0], lines[1:], body, eof, time.monotonic() - t0

    def closed(self, timeout=2):
        self.s.settimeout(timeout)
        if self.buf:
            return False
        return self._more() == b""

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def names(lines):
    return [ln.split(":", 1)[0] for ln in lines]


def hval(lines, name):
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.split(":", 1)[0].lower() == name.lower()]


STD = ["Cache-Control", "Connection", "Date", "Pragma", "Server", "Content-Length", "Content-Type", "Expires"]


def test_local_answer_header_set_and_order(sim, root):
    """response(): HTTP::Headers order, Date = Expires, one pushed Connection: Keep-Alive."""
    c = RawHTTP(sim)
    c.send("GET", "/version", sim.cookie_headers(root))
    status, lines, body, eof, _ = c.answer()
    assert status == "HTTP/1.1 200 OK" and not eof
    assert names(lines) == STD
    assert hval(lines, "Connection") == ["Keep-Alive"] and hval(lines, "Cache-Control") == ["max-age=0"]
    assert hval(lines, "Date") == hval(lines, "Expires") and hval(lines, "Server") == ["pve-api-daemon/3.0"]
    assert hval(lines, "Content-Length") == [str(len(body))] and json.loads(body)["data"]["version"]
    # HTTP/1.0 without Connection: status line echoes the protocol, Connection: close
    c.send("GET", "/version", sim.cookie_headers(root), version="HTTP/1.0")
    status, lines, body, eof, _ = c.answer()
    assert status == "HTTP/1.0 200 OK" and hval(lines, "Connection") == ["close"] and c.closed()
    c.close()


def test_proxied_calls_carry_two_connection_lines(sim, root):
    """protected calls go to pvedaemon through proxy_request: its Connection: close is kept
    and response() pushes Connection: Keep-Alive; the connection stays open."""
    c = RawHTTP(sim)
    c.send("POST", "/access/ticket", form={"username": "root@pam", "password": "pw"})
    status, lines, body, _, _ = c.answer()
    assert status == "HTTP/1.1 200 OK"
    assert lines[:3] == ["Cache-Control: max-age=0", "Connection: close", "Connection: Keep-Alive"]
    assert names(lines) == STD[:2] + STD[1:]
    tk = json.loads(body)["data"]
    h = {"Cookie": "PVEAuthCookie=" + urllib.parse.quote(tk["ticket"], safe=""),
         "CSRFPreventionToken": tk["CSRFPreventionToken"]}
    for method, path, form in (("GET", "/nodes/pve1/qemu/100/status/current", None),
                               ("POST", "/nodes/pve1/qemu/100/vncproxy", {"websocket": "1"}),
                               ("POST", "/nodes/pve1/lxc/201/termproxy", {})):
        c.send(method, path, h, form=form)  # same connection: it stayed open
        status, lines, body, eof, _ = c.answer()
        assert status == "HTTP/1.1 200 OK" and not eof, (path, status)
        assert hval(lines, "Connection") == ["close", "Keep-Alive"], path
        assert names(lines) == STD[:2] + STD[1:]
    # local calls (not protected) keep one line
    c.send("GET", "/cluster/resources", h)
    assert hval(c.answer()[1], "Connection") == ["Keep-Alive"]
    c.close()


def test_proxyto_other_node_joins_its_connection_lines(sim, root):
    """status/current for a VM on pve2 asked at pve1: pve2's answer (close + Keep-Alive) is
    read by AnyEvent::HTTP, which joins repeated fields with ','; response() pushes again."""
    c = RawHTTP(sim)
    c.send("GET", "/nodes/pve2/lxc/200/status/current", sim.cookie_headers(root))
    status, lines, body, eof, _ = c.answer()
    assert status == "HTTP/1.1 200 OK" and not eof
    assert hval(lines, "Connection") == ["close,Keep-Alive", "Keep-Alive"]
    assert json.loads(body)["data"]["vmid"] == 200
    c.close()


def test_auth_handler_401_no_body_at_eof(sim, root):
    c = RawHTTP(sim)
    c.send("GET", "/cluster/resources")
    status, lines, body, eof, el = c.answer()
    assert status == "HTTP/1.1 401 No ticket" and body == b"" and eof and el >= 0.2
    assert names(lines) == ["Cache-Control", "Connection", "Date", "Pragma", "Server", "Expires"]
    assert hval(lines, "Connection") == ["close"]
    for hdrs, reason in (({"Cookie": "PVEAuthCookie=PVE:root@pam:00000000::AAAA"}, "Authentication failed!"),
                         (sim.token_headers(secret="wrong"), "Authentication failed!"),
                         ({"Cookie": sim.cookie_headers(root)["Cookie"]}, "Permission denied - invalid csrf token")):
        c = RawHTTP(sim)
        c.send("POST", "/nodes/pve1/qemu/100/vncproxy", hdrs, form={})
        status, lines, body, eof, _ = c.answer()
        assert (status, body, eof) == ("HTTP/1.1 401 " + reason, b"", True)
        assert "Content-Length" not in names(lines) and "Content-Type" not in names(lines)
        c.close()


def test_every_error_closes_the_connection(sim, root):
    h = sim.cookie_headers(root)
    cases = [("GET", "/nodes/pve1/qemu/100/nope", None, 501, "Method 'GET /nodes/pve1/qemu/100/nope' not implemented"),
             ("POST", "/nodes/pve1/qemu/100/vncproxy", {"bogus": "1"}, 400, "Parameter verification failed."),
             ("POST", "/nodes/pve1/qemu/999/vncproxy", {}, 500,
              "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist")]
    for method, path, form, code, reason in cases:
        c = RawHTTP(sim)
        c.send(method, path, h, form=form)
        status, lines, body, eof, _ = c.answer()
        assert status == "HTTP/1.1 %d %s" % (code, reason)
        assert hval(lines, "Connection") == ["close"] and names(lines) == STD
        assert json.loads(body)["data"] is None and c.closed()
        c.close()
    c = RawHTTP(sim, timeout=5)  # audit@pve lacks VM.Console: 403 from pveproxy
    a = sim.login("audit@pve")
    c.send("POST", "/nodes/pve1/qemu/100/vncproxy", sim.cookie_headers(a), form={})
    status, lines, body, _, _ = c.answer()
    assert status == "HTTP/1.1 403 Permission check failed (/vms/100, VM.Console)" and c.closed()
    assert json.loads(body) == {"data": None, "message": "Permission check failed (/vms/100, VM.Console)\n"}


def test_keepalive_ends_after_100_requests(sim, root):
    c = RawHTTP(sim)
    h = sim.cookie_headers(root)
    for i in range(1, 101):
        c.send("GET", "/version", h)
        lines = c.answer()[1]
        assert hval(lines, "Connection") == (["Keep-Alive"] if i < 100 else ["close"]), i
    assert c.closed()
    c.close()


def test_permission_before_proxyto_and_node_errors(sim, root):
    h = sim.cookie_headers(root)
    # blind@pve has no VM.Audit: 403 even for a node that does not exist
    b = sim.login("blind@pve")
    st, reason, *_ = sim.api("GET", "/nodes/ghost/qemu/100/status/current", headers=sim.cookie_headers(b))
    assert (st, reason) == (403, "Permission check failed (/vms/100, VM.Audit)")
    lookup = "hostname lookup 'ghost' failed - failed to get address info for: ghost: Name or service not known"
    st, reason, r, obj, _ = sim.api("GET", "/nodes/ghost/qemu/100/status/current", headers=h)
    assert (st, reason, obj) == (500, lookup, {"data": None, "message": lookup + "\n"})
    # a member node that does not hold the VM: its pvedaemon's load_config
    st, reason, r, obj, _ = sim.api("GET", "/nodes/pve2/qemu/100/status/current", headers=h)
    assert (st, reason) == (500, "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist")
    assert r.msg.get_all("Connection") == ["close"]
    # vncproxy: QEMU loads the config first, LXC resolves the node first
    st, reason, *_ = sim.api("POST", "/nodes/ghost/qemu/100/vncproxy", {"websocket": "1"}, headers=h)
    assert (st, reason) == (500, "Configuration file 'nodes/ghost/qemu-server/100.conf' does not exist")
    st, reason, *_ = sim.api("POST", "/nodes/ghost/lxc/200/termproxy", {}, headers=h)
    assert (st, reason) == (500, lookup)


def test_stale_node_after_migration(sim, root):
    h = sim.cookie_headers(root)
    sim.ctl("POST", "/vm", {"vmid": 100, "node": "pve2"})
    try:
        st, reason, *_ = sim.api("POST", "/nodes/pve1/qemu/100/vncproxy", {"websocket": "1"}, headers=h)
        assert (st, reason) == (500, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist")
        st, reason, *_ = sim.api("GET", "/nodes/pve1/qemu/100/status/current", headers=h)
        assert (st, reason) == (500, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist")
        st, _, _, obj, _ = sim.api("GET", "/cluster/resources", {"type": "vm"}, headers=h)
        assert [v["node"] for v in obj["data"] if v["vmid"] == 100] == ["pve2"]
    finally:
        sim.ctl("POST", "/vm", {"vmid": 100, "node": "pve1"})


def test_bad_vnc_ticket_on_upgrade_is_delayed_401(sim, root):
    h = sim.cookie_headers(root)
    d = vncproxy(sim, h)
    t0 = time.monotonic()
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], "PVEVNC:00000000::AAAA"), h)
    assert ws.status == 401 and time.monotonic() - t0 >= 0.2
    assert ws.head.split("\r\n")[0] == "HTTP/1.1 401 permission denied - invalid PVEVNC ticket"
    assert hval(ws.lines, "Connection") == ["close"]
    assert json.loads(ws.buf) == {"data": None, "message": "permission denied - invalid PVEVNC ticket\n"}
    ws.buf = b""
    assert ws.closed()
    ws.close()
    # fault vnc_ticket_invalid: the next call finds the (good) ticket invalid, then it works
    sim.ctl("POST", "/fault", {"kind": "vnc_ticket_invalid", "vmid": 100})
    assert sim.ctl("GET", "/state")["faults"] == [{"kind": "vnc_ticket_invalid", "vmid": 100, "count": 1}]
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), h)
    assert ws.status == 401
    ws.close()
    assert sim.ctl("GET", "/state")["faults"] == []
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), h)
    assert ws.status == 101
    ws.close()
    # an expired ticket (age >= 40 s) is the same 401
    d = vncproxy(sim, h)
    sim.ctl("POST", "/clock", {"advance": 40})
    try:
        st, reason, *_ = sim.api("GET", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), headers=h)
        assert (st, reason) == (401, "permission denied - invalid PVEVNC ticket")
    finally:
        sim.ctl("POST", "/clock", {"offset": 0})


def test_bad_websocket_version_or_key_500_text(sim, root):
    h = sim.cookie_headers(root)
    d = vncproxy(sim, h)
    for version, text in (("8", "unsupported websocket-version '8'\n"), ("13", "missing websocket-key\n")):
        c = RawHTTP(sim)
        hdrs = dict(h, Upgrade="websocket", Connection="Upgrade")
        hdrs["Sec-WebSocket-Version"] = version
        if version == "8":
            hdrs["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
        c.send("GET", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), hdrs)
        status, lines, body, eof, _ = c.answer()
        assert status == "HTTP/1.1 500 " + text[:-1] and body == text.encode()
        assert names(lines) == ["Cache-Control", "Connection", "Date", "Pragma", "Server", "Content-Length",
                                "Expires"]
        assert hval(lines, "Connection") == ["close"] and c.closed()
        c.close()


def test_backend_unreachable_hangs(sim, root):
    h = sim.cookie_headers(root)
    d = vncproxy(sim, h)
    sim.ctl("POST", "/reset-log")
    sim.ctl("POST", "/fault", {"kind": "ws_backend_unreachable", "vmid": 100})
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), h, timeout=1.5)
    assert ws.status is None and ws.timed_out and ws.head == b""  # nothing, and not closed
    ws.s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        ws.s.recv(1)
    ws.close()
    time.sleep(0.2)
    log = [e for e in sim.ctl("GET", "/log") if "path" in e]
    assert log[-1]["status"] == 0 and log[-1]["hung"] is True
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), h)  # fault used up
    assert ws.status == 101
    ws.close()


def test_term_refuse_fault_closes_without_ok(sim, root):
    sim.ctl("POST", "/fault", {"kind": "term_refuse", "vmid": 201})
    d, ws = term_session(sim, sim.cookie_headers(root))
    ws.send(("%s:%s\n" % (d["user"], d["ticket"])).encode(), op=1)
    assert ws.closed()
    ws.close()
    d, ws = term_session(sim, sim.cookie_headers(root))
    ws.send(("%s:%s\n" % (d["user"], d["ticket"])).encode(), op=1)
    assert ws.stream(2) == b"OK"
    ws.close()


def vnc_fail_reason(ws):
    assert ws.stream(4) == b"\0\0\0\1"
    n = struct.unpack(">I", ws.stream(4))[0]
    return ws.stream(n)


def test_vncproxy_password_is_vm_wide(sim, root):
    h = sim.cookie_headers(root)
    d1 = vncproxy(sim, h)
    d2 = vncproxy(sim, h)
    ws1 = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d1["port"], d1["ticket"]), h)
    assert ws1.stream(12) == b"RFB 003.008\n"  # accepted: qm vncproxy set d1's password
    ws2 = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d2["port"], d2["ticket"]), h)
    assert ws2.stream(12) == b"RFB 003.008\n"  # ... and now d2's, VM-wide
    ws1.send(b"RFB 003.008\n")
    assert ws1.stream(2) == b"\x01\x02"
    ws1.send(b"\x02")
    ws1.send(des(d1["password"], ws1.stream(16)))
    assert vnc_fail_reason(ws1) == b"Authentication failed\0"
    ws1.close()
    ws2.close()
    # fault vnc_password_reset: another client's vncproxy right after our answer
    sim.ctl("POST", "/fault", {"kind": "vnc_password_reset", "vmid": 100})
    d = vncproxy(sim, h)
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), h)
    assert rfb_auth(ws, d["password"]) == b"\0\0\0\1"
    ws.close()
    d = vncproxy(sim, h)
    ws = RawWS(sim, "pve1", ws_path("pve1", "qemu", 100, d["port"], d["ticket"]), h)
    assert rfb_auth(ws, d["password"]) == b"\0\0\0\0"
    ws.close()


def test_fault_control_validation(sim):
    host, port = sim.ready["control"].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request("POST", "/fault", body=json.dumps({"kind": "nope"}))
    assert c.getresponse().status == 400
    c.close()
    sim.ctl("POST", "/fault", {"kind": "term_refuse", "count": 2})
    assert sim.ctl("GET", "/state")["faults"] == [{"kind": "term_refuse", "vmid": None, "count": 2}]
    for _ in range(2):
        d, ws = term_session(sim, sim.cookie_headers(sim.login()))
        ws.send(("%s:%s\n" % (d["user"], d["ticket"])).encode(), op=1)
        assert ws.closed()
        ws.close()
    assert sim.ctl("GET", "/state")["faults"] == []


def tls_records(sim, split):
    """Log in over a hand-driven TLS 1.3 session and return the plaintext and the
    application-data record sizes (ciphertext minus the 17 bytes of tag + type)."""
    tmp = sim
    host, port = tmp.node("pve1")
    ctx = ssl.create_default_context(cafile=tmp.ready["ca"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=host)
    s = socket.create_connection((host, port), timeout=5)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            s.sendall(out.read())
            inc.write(s.recv(65536))
    s.sendall(out.read())
    body = b"username=root%40pam&password=pw"
    obj.write(b"POST /api2/json/access/ticket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s.sendall(out.read())
    raw, plain, done = b"", b"", False
    while not done:  # until close_notify (the server then waits for ours; no TCP EOF)
        d = s.recv(65536)
        if not d:
            break
        raw += d
        inc.write(d)
        while True:
            try:
                p = obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                done = True
                break
            if not p:
                done = True
                break
            plain += p
    sizes, i = [], 0
    while i + 5 <= len(raw):
        typ, n = raw[i], struct.unpack(">H", raw[i + 3:i + 5])[0]
        if typ == 23:
            sizes.append(n - 17)
        i += 5 + n
    s.close()
    return plain, sizes


def test_tls_record_split(tmp_path, xvnc, bigvnc):
    s = Simulator(tmp_path, base_conf(xvnc, bigvnc.port, tls_record_split=True))
    try:
        plain, sizes = tls_records(s, True)
        assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and b'"ticket":"PVE:root@pam:' in plain
        # after the handshake: the server's session tickets (two records > 16 bytes), the
        # answer in records of 1..16 bytes, and close_notify (a 2-byte alert record)
        small, big = [n for n in sizes if n <= 16], [n for n in sizes if n > 16]
        assert len(big) <= 2 and sum(small) == len(plain) + 2 and small.count(1) > len(small) // 2
        # the console path works through split records too
        d = s.login()
        v = vncproxy(s, s.cookie_headers(d))
        ws = RawWS(s, "pve1", ws_path("pve1", "qemu", 100, v["port"], v["ticket"]), s.cookie_headers(d))
        assert ws.status == 101 and rfb_auth(ws, v["password"]) == b"\0\0\0\0"
        ws.close()
    finally:
        assert s.stop() == 0


def test_tls_records_normal(sim):
    plain, sizes = tls_records(sim, False)
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and max(sizes) > 100
