#!/usr/bin/python3
"""pvesim: a Proxmox VE cluster simulator for ringside's tests and demo.

Simulates, per node, pveproxy's HTTPS API (authentication, console endpoints,
the vncwebsocket proxy) and the console workers (QEMU VNC authentication in
front of a real VNC server, termproxy with a real PTY).  Behaviour follows
/work/shared/reference/proxmox-console-protocol.md; see README.md here.

Usage: /usr/bin/python3 tests/pvesim/pvesim.py --config CONF.json --dir DIR
Runs until SIGTERM (exit 0).  Loopback only.
"""
import signal
import sys

# SIGTERM at any moment (even while still starting up) is a clean exit 0
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

import argparse  # noqa: E402
import asyncio
import base64
import datetime
import email.utils
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import ssl
import struct
import subprocess
import tempfile
import termios
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_MAX = 131072
PW_CHARS = [chr(c) for c in range(0x21, 0x61)]
PW_SPECIAL = ":\\+&%#"
CAP_KEYS = ("vms", "storage", "access", "nodes", "sdn", "dc", "mapping")
MSG_595 = "Errors during connection establishment, proxy handshake: No route to host"
MSG_595_REFUSED = "Errors during connection establishment, proxy handshake: Connection refused"
DEFAULT_PRIVS = ["VM.Console", "VM.Audit", "Sys.Audit"]

DEFAULTS = {
    "console_ports": [5900, 5999],
    "users": [
        {"userid": "root@pam", "password": "pw", "privs": DEFAULT_PRIVS},
    ],
    "tokens": [],
    "vms": [],
    "legacy": False,
    "auth_delay_s": 3.0,
    "idle_close_s": 5.0,
    # extra knobs (not in the original contract; defaults are PVE's values)
    "console_accept_timeout_s": 10.0,
    "term_auth_timeout_s": 10.0,
    "vnc_password_expire_s": 30.0,
    "clustername": "pvesim",
}


class HttpError(Exception):
    def __init__(self, code, reason, body=None, close=False):
        super().__init__(reason)
        self.code, self.reason, self.body, self.close = code, reason, body, close


def http_date(t=None):
    return email.utils.formatdate(t, usegmt=True)


def b64sig(key, data):
    """A 256-byte signature (the size of PVE's RSA-2048 one): HMAC expanded."""
    raw = b"".join(hmac.new(key, bytes([i]) + data, hashlib.sha256).digest() for i in range(8))
    return base64.b64encode(raw).decode()


def parse_bool(v):
    s = str(v).lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    return None


def des_response(password, challenge):
    key = (password.encode("latin-1")[:8]).ljust(8, b"\0")
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in key)
    enc = Cipher(algorithms.TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


def ws_frame(payload, opcode=2):
    n = len(payload)
    if n < 126:
        hdr = bytes([0x80 | opcode, n])
    elif n < 65536:
        hdr = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
    return hdr + payload


def ws_unmask(data, mask):
    if not data:
        return data
    m = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(len(data), "big")


async def read_http_request(reader):
    """Read one HTTP/1.x request; None on clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise HttpError(400, "bad request", close=True)
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(413, "Request Entity Too Large", close=True)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HttpError(400, "bad request", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(506, "http protocol version %s not supported" % version, close=True)
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        if ":" not in line:
            raise HttpError(400, "bad request", close=True)
        k, v = line.split(":", 1)
        k = k.strip().lower()
        v = v.strip()
        headers[k] = headers[k] + ", " + v if k in headers else v
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(501, "chunked transfer encoding not supported", close=True)
    try:
        clen = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad content-length", close=True)
    if clen < 0 or clen > 64 * 1024:
        raise HttpError(413, "Request Entity Too Large", close=True)
    body = await reader.readexactly(clen) if clen else b""
    return {"method": method, "target": target, "version": version, "headers": headers, "body": body}


class Node:
    def __init__(self, sim, idx, conf):
        self.sim = sim
        self.idx = idx
        self.name = conf["name"]
        self.host = conf.get("host", "127.0.1.%d" % (idx + 1))
        self.port = int(conf.get("port", 0))
        self.mode = "normal"
        self.server = None
        self.conns = set()
        self.ports = set()  # console ports reserved on this node
        self.sslctx = None
        self.fingerprint = None
        self.certfile = None

    async def start(self):
        self.server = await asyncio.start_server(
            self.sim.handle_api_conn_factory(self), self.host, self.port,
            ssl=self.sslctx, ssl_handshake_timeout=max(self.sim.conf["idle_close_s"], 1.0),
            reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self):
        if self.server:
            self.server.close()
            self.server = None
        for w in list(self.conns):
            try:
                w.transport.abort()
            except Exception:
                pass
        self.conns.clear()

    @property
    def online(self):
        return self.mode != "offline"


class Console:
    """One console worker: a listener that accepts exactly one connection."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.accepted = False
        self.server = None
        self.timer = None


class Sim:
    def __init__(self, conf, outdir):
        c = dict(DEFAULTS)
        c.update(conf)
        self.conf = c
        self.dir = os.path.abspath(outdir)
        self.legacy = bool(c["legacy"])
        self.clock_offset = 0.0
        self.key_ticket = secrets.token_bytes(32)
        self.key_csrf = secrets.token_bytes(32)
        self.key_vnc = secrets.token_bytes(32)
        self.nodes = {}
        for i, n in enumerate(c["nodes"]):
            node = Node(self, i, n)
            self.nodes[node.name] = node
        self.users = {u["userid"]: u for u in c["users"]}
        self.tokens = {t["tokenid"]: t for t in c["tokens"]}
        self.vms = {}
        for v in c["vms"]:
            v = dict(v)
            v["vmid"] = int(v["vmid"])
            v.setdefault("type", "qemu")
            v.setdefault("status", "running")
            v.setdefault("name", ("vm%d" if v["type"] == "qemu" else "ct%d") % v["vmid"])
            v["vnc_password"] = None
            v["vnc_expire"] = 0.0
            self.vms[v["vmid"]] = v
        self.log = []
        self.pw_count = 0
        self.upid_pid = 0x1000 + secrets.randbelow(0x100000)
        self.procs = set()
        self.tasks = set()
        self.stop_event = None
        self.lo, self.hi = (int(x) for x in c["console_ports"])
        self.workdir = tempfile.mkdtemp(prefix="pvesim-shell-")

    # ---- time and crypto -------------------------------------------------

    def now(self):
        return time.time() + self.clock_offset

    def make_rsa_ticket(self, key, prefix, data, secret=""):
        plain = "%s:%s%08X" % (prefix, (data + ":") if data else "", int(self.now()))
        return plain + "::" + b64sig(key, (plain + "\0" + secret).encode())

    def verify_rsa_ticket(self, key, prefix, ticket, secret, min_age, max_age):
        """Return the data part ('' if none) or None."""
        m = re.fullmatch(re.escape(prefix) + r":(?:(\S+):)?([0-9A-F]{8})::([A-Za-z0-9+/]+=*)", ticket or "")
        if not m:
            return None
        plain = ticket[: ticket.rindex("::")]
        if not hmac.compare_digest(b64sig(key, (plain + "\0" + secret).encode()), m.group(3)):
            return None
        age = self.now() - int(m.group(2), 16)
        if age < min_age or age > max_age:
            return None
        return m.group(1) or ""

    def make_ticket(self, user):
        return self.make_rsa_ticket(self.key_ticket, "PVE", urllib.parse.quote(user, safe="@!._-+=/%"))

    def verify_ticket(self, ticket):
        """Return (userid, is_tfa_half) or None."""
        d = self.verify_rsa_ticket(self.key_ticket, "PVE", ticket, "", -300, 7200)
        if d is None:
            m = re.fullmatch(r"PVE:(!tfa!\S+):[0-9A-F]{8}::\S+", ticket or "")
            if m:
                return ("", True)  # half ticket (its signature needs the username)
            return None
        if d.startswith("!tfa!"):
            return ("", True)
        return (urllib.parse.unquote(d), False)

    def make_csrf(self, user):
        ts = "%08X" % int(self.now())
        mac = base64.b64encode(hmac.new(self.key_csrf, ("%s:%s" % (ts, user)).encode(), hashlib.sha256).digest())
        return ts + ":" + mac.decode().rstrip("=")

    def verify_csrf(self, token, user):
        m = re.fullmatch(r"([0-9A-F]{8}):(\S+)", token or "")
        if not m:
            return False
        mac = base64.b64encode(hmac.new(self.key_csrf, ("%s:%s" % (m.group(1), user)).encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac.decode().rstrip("="), m.group(2)):
            return False
        age = self.now() - int(m.group(1), 16)
        return -300 <= age <= 7200

    def vnc_secret(self, authid, vmid, port):
        if self.legacy:
            return "%s:/vms/%d" % (authid, vmid)
        return "%s:/vms/%d:%d" % (authid, vmid, port)

    def make_vnc_ticket(self, authid, vmid, port):
        return self.make_rsa_ticket(self.key_vnc, "PVEVNC", None, self.vnc_secret(authid, vmid, port))

    def verify_vnc_ticket(self, ticket, authid, vmid, port):
        if not self.legacy:
            m = re.fullmatch(r".{8}:(PVEVNC:.*)", ticket or "", re.S)
            if m:
                ticket = m.group(1)
        return self.verify_rsa_ticket(self.key_vnc, "PVEVNC", ticket, self.vnc_secret(authid, vmid, port),
                                      -20, 40) is not None

    def gen_password(self):
        pw = [secrets.choice(PW_CHARS) for _ in range(8)]
        self.pw_count += 1
        # every second password is guaranteed to contain a character that
        # breaks naive clients (':' '\' '+' '&' '%' '#')
        if self.pw_count % 2 == 0 and not any(ch in PW_SPECIAL for ch in pw):
            pw[secrets.randbelow(8)] = secrets.choice(PW_SPECIAL)
        return "".join(pw)

    def upid(self, node, vmid, authid, kind="vncproxy"):
        self.upid_pid += 1
        pstart = int(time.monotonic() * 100) & 0xFFFFFFFF
        return "UPID:%s:%08X:%08X:%08X:%s:%d:%s:" % (node, self.upid_pid, pstart, int(self.now()), kind, vmid, authid)

    # ---- certificates ------------------------------------------------------

    def make_certs(self):
        os.makedirs(self.dir, exist_ok=True)
        now = datetime.datetime.utcnow() - datetime.timedelta(days=1)
        later = now + datetime.timedelta(days=3650)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, "Proxmox Virtual Environment"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, secrets.token_hex(16)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster Manager CA"),
        ])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(later)
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_path = os.path.join(self.dir, "ca.pem")
        with open(self.ca_path, "w") as f:
            f.write(self.ca_pem)
        for node in self.nodes.values():
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, "%s.pvesim" % node.name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PVE Cluster Node"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Proxmox Virtual Environment"),
            ])
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now).not_valid_after(later)
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                    .add_extension(x509.SubjectAlternativeName([
                        x509.IPAddress(ipaddress.ip_address(node.host)),
                        x509.DNSName(node.name), x509.DNSName("%s.pvesim" % node.name),
                        x509.DNSName("localhost")]), critical=False)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                   critical=False)
                    .sign(ca_key, hashes.SHA256()))
            node.certfile = os.path.join(self.dir, "%s.pem" % node.name)
            keyfile = os.path.join(self.dir, "%s.key" % node.name)
            with open(node.certfile, "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
            fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            der = cert.public_bytes(serialization.Encoding.DER)
            node.fingerprint = ":".join("%02X" % b for b in hashlib.sha256(der).digest())
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(node.certfile, keyfile)
            node.sslctx = ctx

    # ---- helpers -----------------------------------------------------------

    def spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    def event(self, name, node, vmid, port, **kw):
        e = {"event": name, "node": node.name, "vmid": vmid, "port": port}
        e.update(kw)
        self.log.append(e)

    def privs_of(self, auth):
        return auth["privs"]

    def check_priv(self, auth, path, priv):
        if priv not in auth["privs"]:
            raise HttpError(403, "Permission check failed (%s, %s)" % (path, priv),
                            {"data": None, "message": "Permission check failed (%s, %s)\n" % (path, priv)})

    def respond(self, writer, code, reason, obj=None, close=False, extra=None):
        body = b"" if obj is None else json.dumps(obj, separators=(",", ":")).encode()
        now = time.time()
        hdr = ["HTTP/1.1 %d %s" % (code, reason),
               "Cache-Control: max-age=0",
               "Connection: %s" % ("close" if close else "Keep-Alive"),
               "Date: %s" % http_date(now),
               "Pragma: no-cache",
               "Server: pve-api-daemon/3.0",
               "Content-Length: %d" % len(body)]
        if obj is not None:
            hdr.append("Content-Type: application/json;charset=UTF-8")
        hdr.append("Expires: %s" % http_date(now))
        for k, v in (extra or {}).items():
            hdr.append("%s: %s" % (k, v))
        writer.write(("\r\n".join(hdr) + "\r\n\r\n").encode("latin-1") + body)

    # ---- API connection ------------------------------------------------------

    def handle_api_conn_factory(self, node):
        async def handler(reader, writer):
            node.conns.add(writer)
            try:
                await self.api_conn(node, reader, writer)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
                pass
            except Exception as e:  # keep the simulator alive, but say why
                print("pvesim: %s: %r" % (node.name, e), file=sys.stderr)
            finally:
                node.conns.discard(writer)
                try:
                    writer.close()
                except Exception:
                    pass
        return handler

    async def api_conn(self, node, reader, writer):
        idle = float(self.conf["idle_close_s"])
        while True:
            try:
                req = await asyncio.wait_for(read_http_request(reader), idle)
            except asyncio.TimeoutError:
                return
            except HttpError as e:
                self.respond(writer, e.code, e.reason, close=True)
                await writer.drain()
                return
            if req is None:
                return
            keep = await self.api_request(node, req, reader, writer)
            await writer.drain()
            if not keep:
                return

    def parse_params(self, req, query):
        params = {}
        for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
            params[k] = v
        if req["method"] != "GET" and req["body"]:
            ctype = req["headers"].get("content-type", "").lower()
            if ctype.startswith("application/json"):
                try:
                    obj = json.loads(req["body"].decode())
                except ValueError:
                    raise HttpError(400, "Parameter verification failed.")
                if not isinstance(obj, dict):
                    raise HttpError(400, "Parameter verification failed.")
                for k, v in obj.items():
                    params[k] = ("1" if v else "0") if isinstance(v, bool) else str(v)
            else:
                for k, v in urllib.parse.parse_qsl(req["body"].decode("latin-1"), keep_blank_values=True):
                    params[k] = v
        return params

    async def api_request(self, node, req, reader, writer):
        method, headers = req["method"], req["headers"]
        url = urllib.parse.urlsplit(req["target"])
        path = url.path
        upgrade = headers.get("upgrade", "").lower() == "websocket"
        is_ws = method == "GET" and path.endswith("websocket") and upgrade
        keep = req["version"] == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if req["version"] == "HTTP/1.0" and "keep-alive" in headers.get("connection", "").lower():
            keep = True
        authz = headers.get("authorization", "")
        m = re.search(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)", authz)
        token_val = urllib.parse.unquote(m.group(1)) if m else None
        ticket = None
        if token_val is None:
            for h in (headers.get("cookie", ""), authz):
                m = re.search(r"(?:^|\s)PVEAuthCookie(?:=| )([^;]*)", h)
                if m:
                    ticket = urllib.parse.unquote(m.group(1))
                    break
        entry = {"node": node.name, "method": method, "path": path, "query": url.query,
                 "auth": "token" if token_val is not None else ("cookie" if ticket is not None else "none"),
                 "csrf": "csrfpreventiontoken" in headers, "status": None}
        self.log.append(entry)
        close = not keep or is_ws
        try:
            if node.mode == "status595":
                raise HttpError(595, MSG_595, close=close)
            if node.mode == "status500":
                raise HttpError(500, "Internal Server Error", {"data": None}, close=close)
            if not path.startswith("/api2/json/"):
                raise HttpError(501, "Unsupported format", close=close)
            rel = path[len("/api2/json"):].rstrip("/") or "/"
            params = self.parse_params(req, url.query)
            if rel == "/access/ticket" and method in ("POST", "GET"):
                if token_val is not None:
                    raise HttpError(403, "URI '/access/ticket' not available with API token",
                                    {"data": None, "message": "URI '/access/ticket' not available with API token\n"})
                if method == "GET":
                    data = None
                else:
                    data = await self.login(params)
                entry["status"] = 200
                self.respond(writer, 200, "OK", {"data": data}, close=close)
                return keep
            auth = await self.authenticate(token_val, ticket, method, headers)
            res = await self.route(node, method, rel, params, auth, req, reader, writer, entry)
            if res == "ws":
                return False
            entry["status"] = 200
            self.respond(writer, 200, "OK", {"data": res}, close=close)
            return keep
        except HttpError as e:
            if e.code == 401:
                await asyncio.sleep(float(self.conf["auth_delay_s"]))
            entry["status"] = e.code
            if e.code == 0:  # no HTTP answer at all (failed backend connect)
                return False
            self.respond(writer, e.code, e.reason, e.body, close=close or e.close)
            return keep and not e.close

    async def login(self, params):
        username = params.get("username", "")
        realm = params.get("realm")
        if realm and "@" not in username:
            username = username + "@" + realm
        password = params.get("password", "")
        fail = HttpError(401, "authentication failure")
        user = self.users.get(username)
        if not user or user.get("enabled", True) is False or len(username) > 64:
            raise fail
        if "tfa-challenge" in params:
            if self.verify_rsa_ticket(self.key_ticket, "PVE", params["tfa-challenge"], username, -300, 7200) is None:
                raise fail
            totp = str(user.get("totp", "123456"))
            recovery = [str(x) for x in user.get("recovery", [])]
            if not (password == "totp:" + totp or (password.startswith("recovery:") and password[9:] in recovery)):
                raise fail
        elif password.startswith("PVE:"):
            v = self.verify_ticket(password)
            if not v or v[1] or v[0] != username:
                raise fail
        else:
            if password != user.get("password"):
                raise fail
            if user.get("tfa"):
                chal = json.dumps({"totp": True, "recovery": "unavailable"}, separators=(",", ":"))
                half = self.make_rsa_ticket(self.key_ticket, "PVE", "!tfa!" + urllib.parse.quote(chal, safe=""), username)
                return {"username": username, "ticket": half, "CSRFPreventionToken": self.make_csrf(username),
                        "NeedTFA": 1}
        privs = set(user.get("privs", DEFAULT_PRIVS))
        if "path" in params and "privs" in params:
            want = [p for p in re.split(r"[,;\s]+", params["privs"]) if p]
            if not all(p in privs for p in want):
                raise fail
            return {"username": username}
        data = {"username": username, "ticket": self.make_ticket(username),
                "CSRFPreventionToken": self.make_csrf(username), "cap": self.cap(privs)}
        if "Sys.Audit" in privs:
            data["clustername"] = self.conf["clustername"]
        return data

    def cap(self, privs):
        cap = {k: {} for k in CAP_KEYS}
        for p in privs:
            pre = p.split(".")[0]
            dest = {"VM": ["vms"], "Datastore": ["storage"], "User": ["access"], "Group": ["access"],
                    "Permissions": ["access", "vms", "storage", "nodes", "sdn", "dc", "mapping"],
                    "Realm": ["access"], "Sys": ["nodes", "dc"], "SDN": ["sdn"], "Mapping": ["mapping"],
                    "Pool": ["vms", "storage"]}.get(pre, ["dc"])
            for d in dest:
                cap[d][p] = 1
        return cap

    async def authenticate(self, token_val, ticket, method, headers):
        if token_val is not None:
            m = re.fullmatch(r"(.*)=(.*)", token_val, re.S)
            tok = self.tokens.get(m.group(1)) if m else None
            userid = m.group(1).split("!")[0] if m else ""
            user = self.users.get(userid)
            if (not tok or not user or user.get("enabled", True) is False
                    or not hmac.compare_digest(str(tok.get("secret", "")), m.group(2))):
                raise HttpError(401, "Authentication failed!")
            uprivs = set(user.get("privs", DEFAULT_PRIVS))
            tprivs = set(tok.get("privs", uprivs))
            privs = tprivs & uprivs if tok.get("privsep", True) else uprivs
            return {"authid": m.group(1), "userid": userid, "token": True, "privs": privs}
        if ticket is None:
            raise HttpError(401, "No ticket")
        v = self.verify_ticket(ticket)
        if v is None:
            raise HttpError(401, "Authentication failed!")
        if v[1]:
            raise HttpError(401, "No ticket")
        user = self.users.get(v[0])
        if not user or user.get("enabled", True) is False:
            raise HttpError(401, "Authentication failed!")
        if method != "GET" and not self.verify_csrf(headers.get("csrfpreventiontoken"), v[0]):
            raise HttpError(401, "Permission denied - invalid csrf token")
        return {"authid": v[0], "userid": v[0], "token": False, "privs": set(user.get("privs", DEFAULT_PRIVS))}

    # ---- routing -------------------------------------------------------------

    def param_error(self, errors):
        return HttpError(400, "Parameter verification failed.",
                         {"errors": errors, "data": None, "message": "Parameter verification failed.\n"})

    def conf_path(self, node_name, vtype, vmid):
        return "nodes/%s/%s/%d.conf" % (node_name, "qemu-server" if vtype == "qemu" else "lxc", vmid)

    def load_config(self, node_name, vtype, vmid):
        vm = self.vms.get(vmid)
        if not vm or vm["node"] != node_name or vm["type"] != vtype:
            msg = "Configuration file '%s' does not exist" % self.conf_path(node_name, vtype, vmid)
            raise HttpError(500, msg, {"data": None, "message": msg + "\n"})
        return vm

    async def route(self, node, method, rel, params, auth, req, reader, writer, entry):
        if rel == "/version" and method == "GET":
            if self.legacy:
                return {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}
            return {"version": "9.2.11", "release": "9.2", "repoid": "5a0e8e5c7a9f1b2d"}
        if rel == "/cluster/status" and method == "GET":
            self.check_priv(auth, "/", "Sys.Audit")
            out = [{"type": "cluster", "id": "cluster", "name": self.conf["clustername"], "nodes": len(self.nodes),
                    "quorate": 1, "version": len(self.nodes)}]
            for n in self.nodes.values():
                out.append({"type": "node", "id": "node/%s" % n.name, "name": n.name, "ip": n.host,
                            "online": 1 if n.online else 0, "local": 1 if n is node else 0,
                            "nodeid": n.idx + 1, "level": ""})
            return out
        if rel == "/cluster/resources" and method == "GET":
            want = params.get("type")
            if want not in (None, "vm", "node", "storage", "sdn"):
                raise self.param_error({"type": "value '%s' does not have a value in the enumeration "
                                                "'vm, storage, node, sdn'" % want})
            out = []
            if want in (None, "vm"):
                for vm in sorted(self.vms.values(), key=lambda v: v["vmid"]):
                    if "VM.Audit" not in auth["privs"]:
                        continue
                    online = self.nodes[vm["node"]].online if vm["node"] in self.nodes else False
                    st = vm["status"] if online else "unknown"
                    out.append({"id": "%s/%d" % (vm["type"], vm["vmid"]), "vmid": vm["vmid"], "node": vm["node"],
                                "type": vm["type"], "status": st, "name": vm["name"], "template": 0,
                                "maxmem": 2147483648, "maxcpu": 2, "uptime": 3600 if st == "running" else 0})
            if want in (None, "node"):
                for n in self.nodes.values():
                    if "Sys.Audit" not in auth["privs"]:
                        continue
                    out.append({"id": "node/%s" % n.name, "node": n.name, "type": "node",
                                "status": "online" if n.online else "offline", "level": ""})
            return out
        if rel == "/nodes" and method == "GET":
            return [{"node": n.name, "id": "node/%s" % n.name, "type": "node",
                     "status": "online" if n.online else "offline"} for n in self.nodes.values()]
        m = re.fullmatch(r"/nodes/([^/]+)/(qemu|lxc)/(\d+)/([a-z/]+)", rel)
        if m:
            nname, vtype, vmid, op = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            if op == "status/current" and method == "GET":
                return self.status_current(node, nname, vtype, vmid, auth)
            if op == "vncproxy" and method == "POST":
                return await self.vncproxy(node, nname, vtype, vmid, params, auth)
            if op == "termproxy" and method == "POST":
                return await self.termproxy(node, nname, vtype, vmid, params, auth)
            if op == "vncwebsocket" and method == "GET":
                return await self.vncwebsocket(node, nname, vtype, vmid, params, auth, req, reader, writer, entry)
        raise HttpError(501, "Method '%s %s' not implemented" % (method, rel))

    def status_current(self, node, nname, vtype, vmid, auth):
        target = self.nodes.get(nname)
        if target is None:
            msg = "hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known" % (
                nname, nname)
            raise HttpError(500, msg, {"data": None, "message": msg + "\n"})
        if target is not node:  # proxyto: pveproxy forwards to the target node
            if target.mode in ("offline", "status595"):
                raise HttpError(595, MSG_595)
            if target.mode == "refuse":
                raise HttpError(595, MSG_595_REFUSED)
            if target.mode == "status500":
                raise HttpError(500, "Internal Server Error", {"data": None})
        self.check_priv(auth, "/vms/%d" % vmid, "VM.Audit")
        vm = self.load_config(nname, vtype, vmid)
        running = vm["status"] == "running"
        d = {"vmid": vmid, "status": vm["status"], "name": vm["name"], "uptime": 3600 if running else 0,
             "maxmem": 2147483648, "cpus": 2, "ha": {"managed": 0}}
        if vtype == "qemu":
            d["qmpstatus"] = vm["status"]
        else:
            d["type"] = "lxc"
        return d

    def validate(self, params, schema):
        errors = {}
        for k, v in params.items():
            kind = schema.get(k)
            if kind is None:
                errors[k] = "property is not defined in schema and the schema does not allow additional properties"
            elif kind == "bool":
                if parse_bool(v) is None:
                    errors[k] = "type check ('boolean') failed - got '%s'" % v
            elif isinstance(kind, tuple) and kind[0] == "int":
                if not re.fullmatch(r"[+-]?\d+", v):
                    errors[k] = "type check ('integer') failed - got '%s'" % v
                elif int(v) < kind[1]:
                    errors[k] = "value must have a minimum value of %d" % kind[1]
                elif int(v) > kind[2]:
                    errors[k] = "value must have a maximum value of %d" % kind[2]
            elif isinstance(kind, tuple) and kind[0] == "enum":
                if v not in kind[1]:
                    errors[k] = "value '%s' does not have a value in the enumeration '%s'" % (v, ", ".join(kind[1]))
        if errors:
            raise self.param_error(errors)

    async def alloc_port(self, node):
        for p in range(self.lo, self.hi + 1):
            if p in node.ports:
                continue
            try:
                srv = await asyncio.start_server(lambda r, w: None, node.host, p, reuse_address=True)
            except OSError:
                continue
            node.ports.add(p)
            return p, srv
        msg = "unable to find free port (%d-%d)" % (self.lo, self.hi + 1)
        raise HttpError(500, msg, {"data": None, "message": msg + "\n"})

    async def vncproxy(self, node, nname, vtype, vmid, params, auth):
        self.check_priv(auth, "/vms/%d" % vmid, "VM.Console")
        if vtype == "qemu":
            self.validate(params, {"websocket": "bool", "generate-password": "bool"})
        else:
            self.validate(params, {"websocket": "bool", "width": ("int", 16, 4096), "height": ("int", 16, 2160)})
        self.load_config(nname, vtype, vmid)
        websocket = parse_bool(params.get("websocket", "0"))
        genpw = parse_bool(params.get("generate-password", "0"))
        # the port is allocated before the ticket because new tickets are bound to it
        port, srv = await self.alloc_port(node)
        srv.close()
        await srv.wait_closed()
        node.ports.discard(port)
        vt = self.make_vnc_ticket(auth["authid"], vmid, port)
        password = None
        if self.legacy:
            ticket = vt
            if vtype == "qemu" and genpw:
                password = self.gen_password()
        else:
            if vtype == "qemu" or websocket:
                password = self.gen_password()
                ticket = password + ":" + vt
            else:
                ticket = vt
        secret = password if password is not None else ticket
        con = await self.open_console_at(node, port, vtype, vmid, "vnc", auth["authid"], ticket, secret)
        con.width = int(params["width"]) if "width" in params else None
        con.height = int(params["height"]) if "height" in params else None
        data = {"user": auth["authid"], "ticket": ticket, "port": str(con.port),
                "upid": self.upid(node.name, vmid, auth["authid"]), "cert": self.ca_pem}
        if password is not None:
            data["password"] = password
        return data

    async def open_console_at(self, node, port, vtype, vmid, kind, authid, ticket, secret):
        con = Console(node=node, vtype=vtype, vmid=vmid, kind=kind, authid=authid, ticket=ticket,
                      secret=secret, port=port)

        async def on_conn(r, w):
            await self.console_conn(con, r, w)
        try:
            con.server = await asyncio.start_server(on_conn, node.host, port, reuse_address=True, backlog=5)
        except OSError:
            msg = "unable to find free port (%d-%d)" % (self.lo, self.hi + 1)
            raise HttpError(500, msg, {"data": None, "message": msg + "\n"})
        node.ports.add(port)

        def expire():
            if not con.accepted:
                con.server.close()
                node.ports.discard(port)
        con.timer = asyncio.get_running_loop().call_later(float(self.conf["console_accept_timeout_s"]), expire)
        return con

    async def termproxy(self, node, nname, vtype, vmid, params, auth):
        self.check_priv(auth, "/vms/%d" % vmid, "VM.Console")
        self.validate(params, {"serial": ("enum", ["serial0", "serial1", "serial2", "serial3"])} if vtype == "qemu"
                      else {})
        self.load_config(nname, vtype, vmid)
        port, srv = await self.alloc_port(node)
        srv.close()
        await srv.wait_closed()
        node.ports.discard(port)
        ticket = self.make_vnc_ticket(auth["authid"], vmid, port)
        con = await self.open_console_at(node, port, vtype, vmid, "term", auth["authid"], ticket, None)
        return {"user": auth["authid"], "ticket": ticket, "port": str(con.port),
                "upid": self.upid(node.name, vmid, auth["authid"])}

    async def vncwebsocket(self, node, nname, vtype, vmid, params, auth, req, reader, writer, entry):
        self.check_priv(auth, "/vms/%d" % vmid, "VM.Console")
        errors = {}
        port = params.get("port")
        if port is None:
            errors["port"] = "property is missing and it is not optional"
        elif not re.fullmatch(r"\d+", port):
            errors["port"] = "type check ('integer') failed - got '%s'" % port
        elif not self.lo <= int(port) <= self.hi:
            errors["port"] = "value must have a %s value of %d" % (
                ("minimum", self.lo) if int(port) < self.lo else ("maximum", self.hi))
        if "vncticket" not in params:
            errors["vncticket"] = "property is missing and it is not optional"
        elif len(params["vncticket"]) > 512:
            errors["vncticket"] = "value may only be 512 characters long"
        for k in params:
            if k not in ("port", "vncticket"):
                errors[k] = "property is not defined in schema and the schema does not allow additional properties"
        if errors:
            raise self.param_error(errors)
        port = int(port)
        self.load_config(nname, vtype, vmid)
        if not self.verify_vnc_ticket(params["vncticket"], auth["authid"], vmid, port):
            msg = "permission denied - invalid PVEVNC ticket"
            raise HttpError(500, msg, {"data": None, "message": msg + "\n"})
        h = req["headers"]
        if not (req["method"] == "GET" and h.get("upgrade", "").lower() == "websocket"):
            return {"port": str(port)}
        ver = h.get("sec-websocket-version")
        if ver != "13":
            raise HttpError(400, "unsupported websocket-version '%s'" % (ver or ""), close=True)
        key = h.get("sec-websocket-key")
        if not key:
            raise HttpError(400, "missing websocket-key", close=True)
        proto = h.get("sec-websocket-protocol")
        if self.legacy:
            if not proto:
                raise HttpError(400, "missing websocket-protocol header", close=True)
            if "binary" not in [p.strip() for p in proto.split(",")]:
                raise HttpError(400, "unsupported websocket-protocol protocol '%s'" % proto, close=True)
            proto = "binary"
        # connect to the node-local console port first; only then answer 101
        try:
            br, bw = await asyncio.wait_for(asyncio.open_connection(node.host, port), 5)
        except (OSError, asyncio.TimeoutError):
            # pveproxy dies inside the connect callback: no 101, the socket just closes
            raise HttpError(0, "connect failed")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: upgrade",
                 "Sec-WebSocket-Accept: %s" % accept]
        if proto is not None:
            lines.append("Sec-WebSocket-Protocol: %s" % proto)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        entry["status"] = 101
        await self.ws_relay(reader, writer, br, bw)
        return "ws"

    async def ws_relay(self, reader, writer, br, bw):
        done = asyncio.Event()

        def finish(abort=False):
            for w in (writer, bw):
                try:
                    if abort:
                        w.transport.abort()
                    else:
                        w.close()
                except Exception:
                    pass
            done.set()

        async def down():  # backend -> client: one binary frame per chunk
            try:
                while True:
                    data = await br.read(WS_MAX)
                    if not data:
                        break
                    writer.write(ws_frame(data))
                    await writer.drain()
            except (ConnectionError, OSError, ssl.SSLError):
                pass
            finish()

        async def up():  # client frames -> raw bytes to the backend
            abort = False
            try:
                while True:
                    h = await reader.readexactly(2)
                    fin, rsv, op = h[0] & 0x80, h[0] & 0x70, h[0] & 0x0F
                    masked, n = h[1] & 0x80, h[1] & 0x7F
                    if n == 126:
                        n = struct.unpack(">H", await reader.readexactly(2))[0]
                    elif n == 127:
                        n = struct.unpack(">Q", await reader.readexactly(8))[0]
                    if not fin or rsv or not masked or n > WS_MAX:
                        abort = True
                        break
                    mask = await reader.readexactly(4)
                    payload = ws_unmask(await reader.readexactly(n), mask)
                    if op in (1, 2):
                        bw.write(payload)
                        await bw.drain()
                    elif op == 9:
                        writer.write(ws_frame(payload, 0xA))
                        await writer.drain()
                    elif op == 10:
                        pass
                    elif op == 8:
                        break  # shut down both sides, never answer with a close frame
                    else:
                        abort = True
                        break
            except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
                pass
            finish(abort)

        t1 = asyncio.ensure_future(down())
        t2 = asyncio.ensure_future(up())
        await done.wait()
        await asyncio.sleep(0.05)
        for t in (t1, t2):
            t.cancel()
        await asyncio.gather(t1, t2, return_exceptions=True)

    # ---- console workers -----------------------------------------------------

    async def console_conn(self, con, reader, writer):
        node = con.node
        if con.accepted:
            writer.transport.abort()
            return
        con.accepted = True
        con.server.close()
        con.timer.cancel()
        self.event("console-accept", node, con.vmid, con.port)
        try:
            vm = self.vms.get(con.vmid)
            if not vm or vm["status"] != "running":
                return  # "VM 100 not running": the worker dies, the socket closes
            if con.kind == "vnc":
                await self.vnc_worker(con, vm, reader, writer)
            else:
                await self.term_worker(con, vm, reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            node.ports.discard(con.port)
            try:
                writer.close()
            except Exception:
                pass

    async def vnc_worker(self, con, vm, reader, writer):
        node = con.node
        # qm vncproxy: set_password + expire_password +30 after the accept (VM-wide)
        vm["vnc_password"] = con.secret
        vm["vnc_expire"] = self.now() + float(self.conf["vnc_password_expire_s"])
        writer.write(b"RFB 003.008\n")
        ver = await asyncio.wait_for(reader.readexactly(12), 60)
        m = re.fullmatch(rb"RFB (\d{3})\.(\d{3})\n", ver)
        if not m:
            return
        minor = int(m.group(2)) if int(m.group(1)) == 3 else 8
        if minor >= 7:
            writer.write(b"\x01\x02")
            t = await asyncio.wait_for(reader.readexactly(1), 60)
            if t != b"\x02":
                return
        else:
            writer.write(struct.pack(">I", 2))
        challenge = os.urandom(16)
        writer.write(challenge)
        resp = await asyncio.wait_for(reader.readexactly(16), 60)
        pw = vm["vnc_password"]
        ok = pw is not None and self.now() <= vm["vnc_expire"] and hmac.compare_digest(
            des_response(pw, challenge), resp)
        if not ok:
            self.event("vnc-auth-fail", node, con.vmid, con.port)
            msg = b"Authentication failed\0"
            writer.write(b"\0\0\0\1" + (struct.pack(">I", len(msg)) + msg if minor >= 8 else b""))
            await writer.drain()
            return
        self.event("vnc-auth-ok", node, con.vmid, con.port)
        writer.write(b"\0\0\0\0")
        await writer.drain()
        target = vm.get("vnc")
        if not target:
            if con.vtype == "lxc":
                await self.vncterm_lite(con, reader, writer)
            return
        host, _, p = target.rpartition(":")
        br, bw = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", int(p)), 5)
        try:
            sver = await asyncio.wait_for(br.readexactly(12), 10)
            if not sver.startswith(b"RFB 003."):
                return
            bw.write(b"RFB 003.008\n")
            n = (await br.readexactly(1))[0]
            if n == 0:
                return
            types = await br.readexactly(n)
            if 1 not in types:
                return
            bw.write(b"\x01")
            res = await br.readexactly(4)
            if res != b"\0\0\0\0":
                return
            await self.splice(reader, writer, br, bw)
        finally:
            bw.close()

    async def vncterm_lite(self, con, reader, writer):
        """A blank vncterm look-alike: ServerInit WxH (default 744x400), 8-bit colour-map format,
        name "VNC Command Terminal"; answers non-incremental update requests with a black frame."""
        width, height = con.width or 744, con.height or 400
        await reader.readexactly(1)  # ClientInit
        name = b"VNC Command Terminal"
        pf = struct.pack(">BBBBHHHBBBxxx", 8, 8, 0, 0, 0, 0, 0, 0, 0, 0)
        writer.write(struct.pack(">HH", width, height) + pf + struct.pack(">I", len(name)) + name)
        bpp = 8
        while True:
            t = (await reader.readexactly(1))[0]
            if t == 0:  # SetPixelFormat
                bpp = (await reader.readexactly(19))[3] or 8
            elif t == 2:  # SetEncodings
                n = struct.unpack(">xH", await reader.readexactly(3))[0]
                await reader.readexactly(4 * n)
            elif t == 3:  # FramebufferUpdateRequest
                inc = (await reader.readexactly(9))[0]
                if not inc:
                    writer.write(struct.pack(">BxHHHHHi", 0, 1, 0, 0, width, height, 0))
                    writer.write(bytes(width * height * max(bpp // 8, 1)))
                    await writer.drain()
            elif t == 4:  # KeyEvent
                await reader.readexactly(7)
            elif t == 5:  # PointerEvent
                await reader.readexactly(5)
            elif t == 6:  # ClientCutText
                n = struct.unpack(">xxxI", await reader.readexactly(7))[0]
                await reader.readexactly(n)
            else:
                return

    async def splice(self, r1, w1, r2, w2):
        async def pump(r, w):
            try:
                while True:
                    d = await r.read(65536)
                    if not d:
                        break
                    w.write(d)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
        t1 = asyncio.ensure_future(pump(r1, w2))
        t2 = asyncio.ensure_future(pump(r2, w1))
        await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
        for t in (t1, t2):
            t.cancel()
        await asyncio.gather(t1, t2, return_exceptions=True)

    async def term_worker(self, con, vm, reader, writer):
        node = con.node
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), float(self.conf["term_auth_timeout_s"]))
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.event("term-auth-fail", node, con.vmid, con.port)
            return
        user, _, ticket = line[:-1].decode("utf-8", "replace").partition(":")
        ok = (user == con.authid and ticket == con.ticket
              and self.verify_vnc_ticket(ticket, user, con.vmid, con.port)
              and not (self.legacy and "!" in user))  # old termproxy: tokens fail
        if not ok:
            self.event("term-auth-fail", node, con.vmid, con.port)
            return
        self.event("term-auth-ok", node, con.vmid, con.port)
        writer.write(b"OK")
        await writer.drain()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 80, 0, 0))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.workdir, "TERM": "xterm-256color",
               "LANG": "C.UTF-8", "PS1": "%s$ " % vm["name"]}

        def ctty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        shell = vm.get("shell") or ["/bin/sh", "-i"]
        proc = subprocess.Popen(shell, stdin=slave, stdout=slave, stderr=slave, cwd=self.workdir, env=env,
                                start_new_session=True, preexec_fn=ctty, close_fds=True)
        os.close(slave)
        self.procs.add(proc)
        os.set_blocking(master, False)
        loop = asyncio.get_running_loop()
        eof = asyncio.Event()

        def readable():
            try:
                d = os.read(master, 65536)
            except BlockingIOError:
                return
            except OSError:
                d = b""
            if not d:
                loop.remove_reader(master)
                eof.set()
                return
            writer.write(d)

        loop.add_reader(master, readable)

        def pty_write(data):
            data = bytes(data)
            while data:
                try:
                    n = os.write(master, data)
                    data = data[n:]
                except BlockingIOError:
                    time.sleep(0.001)

        async def client():
            buf = bytearray()
            remaining = 0
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
                while True:
                    if remaining:
                        n = min(remaining, len(buf))
                        if n == 0:
                            break
                        pty_write(buf[:n])
                        del buf[:n]
                        remaining -= n
                        continue
                    if len(buf) < 2:
                        break
                    t = buf[0]
                    if t == 0x30 and len(buf) >= 3:  # "0:<N>:<data>"
                        del buf[:2]
                        n = term_number(buf)
                        if n is not None:
                            remaining = n
                    elif t == 0x31 and len(buf) >= 3:  # "1:<cols>:<rows>:"
                        del buf[:2]
                        cols = term_number(buf)
                        rows = term_number(buf) if cols is not None else None
                        if cols is not None and rows is not None:
                            try:
                                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                            except (OSError, struct.error):
                                pass
                    else:  # "2" ping, unknown bytes: skipped one at a time
                        del buf[:1]

        ct = asyncio.ensure_future(client())
        et = asyncio.ensure_future(eof.wait())
        try:
            await asyncio.wait([ct, et], return_when=asyncio.FIRST_COMPLETED)
            if et.done():
                await writer.drain()
        finally:
            for t in (ct, et):
                t.cancel()
            try:
                loop.remove_reader(master)
            except Exception:
                pass
            self.kill_proc(proc)
            await asyncio.to_thread(proc.wait)
            self.procs.discard(proc)
            os.close(master)

    def kill_proc(self, proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

    # ---- control endpoint ------------------------------------------------------

    async def control_conn(self, reader, writer):
        try:
            req = await asyncio.wait_for(read_http_request(reader), 10)
            if req is None:
                return
            code, obj = 200, {"ok": True}
            try:
                body = json.loads(req["body"].decode() or "{}") if req["method"] == "POST" else {}
                code, obj = await self.control(req["method"], urllib.parse.urlsplit(req["target"]).path, body)
            except (ValueError, KeyError, TypeError) as e:
                code, obj = 400, {"error": str(e)}
            b = json.dumps(obj).encode()
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % (code, b"OK" if code == 200 else b"Error", len(b)) + b)
            await writer.drain()
        except (HttpError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def control(self, method, path, body):
        if method == "GET" and path == "/log":
            return 200, self.log
        if method == "POST" and path == "/reset-log":
            self.log.clear()
            return 200, {"ok": True}
        if method == "POST" and path == "/mode":
            node = self.nodes[body["node"]]
            mode = body["mode"]
            if mode not in ("normal", "refuse", "status595", "status500", "offline"):
                raise ValueError("unknown mode %r" % mode)
            node.mode = mode
            if mode in ("refuse", "offline"):
                node.stop()
            elif node.server is None:
                await node.start()
            return 200, {"ok": True}
        if method == "POST" and path == "/vm":
            vm = self.vms[int(body["vmid"])]
            if "status" in body:
                if body["status"] not in ("running", "stopped"):
                    raise ValueError("bad status")
                vm["status"] = body["status"]
            if "node" in body:
                if body["node"] not in self.nodes:
                    raise ValueError("unknown node")
                vm["node"] = body["node"]
            return 200, {"ok": True}
        if method == "POST" and path == "/clock":
            if "offset" in body:
                self.clock_offset = float(body["offset"])
            self.clock_offset += float(body.get("advance", 0))
            return 200, {"ok": True, "offset": self.clock_offset}
        if method == "GET" and path == "/state":
            return 200, {"clock_offset": self.clock_offset,
                         "nodes": {n.name: {"mode": n.mode, "port": n.port, "console_ports": sorted(n.ports)}
                                   for n in self.nodes.values()},
                         "vms": {v["vmid"]: {"node": v["node"], "status": v["status"]} for v in self.vms.values()}}
        return 404, {"error": "not found"}

    # ---- main ------------------------------------------------------------------

    async def run(self):
        self.stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, self.stop_event.set)
        self.make_certs()
        for node in self.nodes.values():
            await node.start()
        ctl = await asyncio.start_server(self.control_conn, "127.0.0.1", int(self.conf.get("control_port", 0)))
        cport = ctl.sockets[0].getsockname()[1]
        ready = {"pid": os.getpid(), "ca": self.ca_path, "control": "127.0.0.1:%d" % cport,
                 "nodes": {n.name: {"host": n.host, "port": n.port, "fingerprint": n.fingerprint, "cert": n.certfile}
                           for n in self.nodes.values()}}
        tmp = os.path.join(self.dir, "ready.json.tmp")
        with open(tmp, "w") as f:
            json.dump(ready, f, indent=1)
        os.rename(tmp, os.path.join(self.dir, "ready.json"))
        await self.stop_event.wait()
        ctl.close()
        for node in self.nodes.values():
            node.stop()
        for p in list(self.procs):
            self.kill_proc(p)
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.rmdir(self.workdir)
        except OSError:
            pass


def term_number(buf):
    """termproxy's remove_number: digits up to ':' (consumed); None if absent or bad."""
    while True:
        pos = buf.find(b":")
        if pos >= 0:
            data = bytes(buf[:pos])
            del buf[: pos + 1]
            if re.fullmatch(rb"\+?[0-9]{1,19}", data):
                return int(data)
            return None
        if len(buf) > 20:
            del buf[:20]
        else:
            return None


def main():
    ap = argparse.ArgumentParser(description="Proxmox VE cluster simulator")
    ap.add_argument("--config", required=True)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    with open(a.config) as f:
        conf = json.load(f)
    if not conf.get("nodes"):
        print("pvesim: config needs at least one node", file=sys.stderr)
        return 2
    sim = Sim(conf, a.dir)
    asyncio.run(sim.run())
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already stopping
    return 0


if __name__ == "__main__":
    sys.exit(main())
