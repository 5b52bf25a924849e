#!/usr/bin/python3
"""pvesim: a Proxmox VE cluster simulator for ringside's tests and demo.

Simulates, per node, pveproxy's HTTPS API (authentication, console endpoints,
the vncwebsocket proxy) and the console workers (QEMU VNC authentication in
front of a real VNC server, termproxy with a real PTY).  Behaviour follows
Proxmox's own code (pve-http-server, pve-manager, qemu-server, pve-container,
pve-access-control, pve-common, pve-xtermjs, AnyEvent::HTTP); each behaviour names
the function it follows, and README.md here lists the versions read.

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
# AnyEvent::HTTP (2.25, http_request $connect_cb) fails a connect with Status 595 and
# Reason "$!" -- the system error text; proxy_request passes it on without a body.
MSG_595 = "No route to host"
MSG_595_REFUSED = "Connection refused"
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
    # every byte the API/WebSocket listener writes goes out in random small TLS
    # records (mostly 1 byte, some up to 16): a torture run for the client's parser
    "tls_record_split": False,
}

FAULT_KINDS = ("ws_backend_unreachable", "vnc_ticket_invalid", "vnc_password_reset", "term_refuse")


class HttpError(Exception):
    """An answer other than 200.  kind:
    "json"  -- rest_handler's error, formatted by the JSON formatter ({"data":null,"message":...});
    "auth"  -- auth_handler's die: HTTP::Response->new(401, $msg) without content (delayed 3 s);
    "raw"   -- pveproxy's error(): the message is the body (no Content-Type);
    "empty" -- an AnyEvent::HTTP error passed through by proxy_request (595: no body);
    "hang"  -- no answer at all, the connection stays open until the client closes it.
    via: "local" (pveproxy itself), "daemon" (proxied to pvedaemon), "remote" (proxyto)."""

    def __init__(self, code, reason, body=None, close=False, kind=None, via="local", errors=None):
        super().__init__(reason)
        self.code, self.reason, self.body, self.close = code, reason, body, close
        self.kind = kind or ("json" if body is not None else "raw")
        self.via, self.errors = via, errors


def api_error(code, msg, errors=None):
    """rest_handler's error for a PVE::Exception/die with message `msg` (newline included)."""
    return HttpError(code, msg, {"data": None, "message": msg}, kind="json", errors=errors)


JSON_CT = "application/json;charset=UTF-8"
HTTP_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 500: "Internal Server Error",
                501: "Not Implemented", 506: "Variant Also Negotiates"}

# libwww-perl HTTP/Headers.pm (6.x): @general_headers, @request_headers, @response_headers,
# @entity_headers -- the order headers_as_string writes known fields in; unknown fields
# follow, sorted by lower-cased name (_sorted_field_names).
HEADER_ORDER = """Cache-Control Connection Date Pragma Trailer Transfer-Encoding Upgrade Via Warning
Accept Accept-Charset Accept-Encoding Accept-Language Authorization Expect From Host
If-Match If-Modified-Since If-None-Match If-Range If-Unmodified-Since Max-Forwards
Proxy-Authorization Range Referer TE User-Agent
Accept-Ranges Age ETag Location Proxy-Authenticate Retry-After Server Vary WWW-Authenticate
Allow Content-Encoding Content-Language Content-Length Content-Location Content-MD5
Content-Range Content-Type Expires Last-Modified""".split()
HEADER_RANK = {h.lower(): i for i, h in enumerate(HEADER_ORDER)}
HEADER_CASE = {h.lower(): h for h in HEADER_ORDER}


class Headers:
    """HTTP::Headers as response() uses it: header() replaces, push_header() appends a
    value (written as its own line), headers_as_string sorts the fields."""

    def __init__(self, items=()):
        self.h = {}
        for k, v in items:
            self.push(k, v)

    def set(self, k, v):
        self.h[k.lower()] = (HEADER_CASE.get(k.lower(), k), [v])

    def push(self, k, v):
        name, vals = self.h.get(k.lower(), (HEADER_CASE.get(k.lower(), k), []))
        self.h[k.lower()] = (name, vals + [v])

    def remove(self, k):
        self.h.pop(k.lower(), None)

    def as_string(self):
        out = []
        for k in sorted(self.h, key=lambda k: (HEADER_RANK.get(k, 999), k)):
            name, vals = self.h[k]
            out += ["%s: %s\r\n" % (name, v) for v in vals]
        return "".join(out)


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


def split_writes(writer):
    """tls_record_split: every write goes out as many small TLS records.  Python 3.11's
    asyncio SSL transport turns each transport.write() into its own record(s), so
    writing in chunks of mostly 1 byte (some up to 16) yields records of that size."""
    import random
    rnd = random.Random()
    tw = writer.transport.write

    def write(data):
        data = bytes(data)
        i = 0
        while i < len(data):
            n = 1 if rnd.random() < 0.7 else rnd.randint(2, 16)
            tw(data[i:i + n])
            i += n
    writer.write = write


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
        raise HttpError(400, "bad request", close=True)  # approximate: pveproxy dies and stays silent
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
    if clen < 0 or clen > 512 * 1024:  # AnyEvent.pm $limit_max_post
        raise HttpError(501, "for data too large", close=True)
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


class Via:
    """A route's data and the way its answer came: "local", "daemon" or "remote"."""

    def __init__(self, data, via):
        self.data, self.via = data, via


class via_daemon:
    """Marks errors raised inside as pvedaemon's (proxied through proxy_request)."""

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if isinstance(e, HttpError) and e.via == "local":
            e.via = "daemon"
        return False


class WsDone:
    """The connection was upgraded and relayed; nothing more to answer."""


class Console:
    """One console worker: a listener that accepts exactly one connection."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.accepted = False
        self.server = None
        self.timer = None
        self.reset_password = False


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
        self.faults = []  # pending faults: {"kind", "vmid" (None = any), "count"}
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
        # pve-common 9.2.1 src/PVE/Ticket.pm assemble_rsa_ticket: "<prefix>:[<data>:]<8HEX>::<sig>"
        # (the signature is an HMAC here, RSA there; see README "Still approximate")
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
        # pve-common 9.2.1 src/PVE/Ticket.pm verify_rsa_ticket: ($age > $min_age) && ($age < $max_age)
        age = int(self.now()) - int(m.group(2), 16)
        if not (min_age < age < max_age):
            return None
        return m.group(1) or ""

    def make_ticket(self, user):
        # pve-access-control 9.1.1 (5ccd07d) src/PVE/AccessControl.pm assemble_ticket ->
        # pve-common Ticket.pm assemble_rsa_ticket($rsa_priv, 'PVE', $data)
        return self.make_rsa_ticket(self.key_ticket, "PVE", urllib.parse.quote(user, safe="@!._-+=/%"))

    def verify_ticket(self, ticket):
        """Return (userid, is_tfa_half) or None.

        pve-access-control 9.1.1 (5ccd07d) src/PVE/AccessControl.pm verify_ticket: the age
        range -$auth_graceperiod (300 s) .. $ticket_lifetime (3600 * 2) from
        $get_ticket_age_range (narrower right after a key rotation: not simulated); the
        '!tfa!' data marks the half ticket of a two-factor login."""
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
        # Ticket.pm assemble_csrf_prevention_token: "<8HEX>:" + hmac_sha256_base64 (no padding)
        ts = "%08X" % int(self.now())
        mac = base64.b64encode(hmac.new(self.key_csrf, ("%s:%s" % (ts, user)).encode(), hashlib.sha256).digest())
        return ts + ":" + mac.decode().rstrip("=")

    def verify_csrf(self, token, user):
        # AccessControl.pm verify_csrf_prevention_token -> pve-common 9.2.1 (f665029)
        # Ticket.pm verify_csrf_prevention_token, -$auth_graceperiod .. $ticket_lifetime
        m = re.fullmatch(r"([0-9A-F]{8}):(\S+)", token or "")
        if not m:
            return False
        mac = base64.b64encode(hmac.new(self.key_csrf, ("%s:%s" % (m.group(1), user)).encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac.decode().rstrip("="), m.group(2)):
            return False
        age = int(self.now()) - int(m.group(1), 16)
        return -300 < age < 7200  # Ticket.pm verify_csrf_prevention_token, strict bounds

    def vnc_secret(self, authid, vmid, port):
        # pve-access-control 9.1.1 src/PVE/AccessControl.pm $assemble_short_lived_ticket:
        # secret "<authid>:<path>[:<port>]" -- the port since the April 2026 hardening (c9ee34b5)
        if self.legacy:
            return "%s:/vms/%d" % (authid, vmid)
        return "%s:/vms/%d:%d" % (authid, vmid, port)

    def make_vnc_ticket(self, authid, vmid, port):
        return self.make_rsa_ticket(self.key_vnc, "PVEVNC", None, self.vnc_secret(authid, vmid, port))

    def verify_vnc_ticket(self, ticket, authid, vmid, port):
        # AccessControl.pm verify_vnc_ticket: strips an 8-char "<password>:" prefix, then
        # $verify_short_lived_ticket with the age window -20..40 s
        if not self.legacy:
            m = re.fullmatch(r".{8}:(PVEVNC:.*)", ticket or "", re.S)
            if m:
                ticket = m.group(1)
        return self.verify_rsa_ticket(self.key_vnc, "PVEVNC", ticket, self.vnc_secret(authid, vmid, port),
                                      -20, 40) is not None

    def gen_password(self):
        # Ticket.pm generate_vnc_password: 8 printable characters (here 0x21..0x60)
        pw = [secrets.choice(PW_CHARS) for _ in range(8)]
        self.pw_count += 1
        # every second password is guaranteed to contain a character that
        # breaks naive clients (':' '\' '+' '&' '%' '#')
        if self.pw_count % 2 == 0 and not any(ch in PW_SPECIAL for ch in pw):
            pw[secrets.randbelow(8)] = secrets.choice(PW_SPECIAL)
        return "".join(pw)

    def upid(self, node, vmid, authid, kind="vncproxy"):
        # pve-common 9.2.1 (f665029) src/PVE/UPID.pm encode:
        # "UPID:%s:%08X:%08X:%08X:%s:%s:%s:" (node, pid, pstart, starttime, type, id, user)
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

    def take_fault(self, kind, vmid):
        """Consume one pending fault of this kind for this VM (or for any VM); True if one fired."""
        for f in self.faults:
            if f["kind"] == kind and (f["vmid"] is None or f["vmid"] == vmid):
                f["count"] -= 1
                if f["count"] <= 0:
                    self.faults.remove(f)
                return True
        return False

    def event(self, name, node, vmid, port, **kw):
        e = {"event": name, "node": node.name, "vmid": vmid, "port": port}
        e.update(kw)
        self.log.append(e)

    def privs_of(self, auth):
        return auth["privs"]

    def check_priv(self, auth, path, priv):
        if priv not in auth["privs"]:
            # pve-access-control 9.1.1 src/PVE/RPCEnvironment.pm check -> raise_perm_exc("$path, $priv")
            raise api_error(403, "Permission check failed (%s, %s)\n" % (path, priv))

    def respond(self, writer, st, code, msg, content=b"", ctype=None, base=None):
        """Write one answer exactly as pveproxy's response() does; return True if the
        connection stays open for the next request.

        Follows pve-http-server 6.0.5 src/PVE/APIServer/AnyEvent.pm sub response:
        the reason is the first line of the message; 1xx/204/304 lose their content;
        any status >= 400 ends keep-alive; Date, Expires (=Date), Cache-Control: max-age=0,
        Pragma: no-cache and Server: pve-api-daemon/3.0 are set with header() (replacing
        what a proxied answer carried); Content-Length only when there is content, else
        removed (the body then ends at EOF); then Connection: Keep-Alive is *pushed*
        (push_header: a proxied answer's own Connection line stays) or Connection: close
        is *set* (replacing).  headers_as_string sorts the fields in HTTP::Headers'
        "good practice" order.  The status line echoes the request's protocol string
        ($reqstate->{proto}->{str}, HTTP/1.0 if unknown).
        `base` holds the headers of a proxied answer (proxy_request: HTTP::Headers->new(%$hdr))."""
        msg = (msg or HTTP_REASONS.get(code, "Unknown code")).split("\n")[0]
        if 100 <= code < 200 or code in (204, 304):
            content = b""
        if code >= 400:
            st["keep_alive"] = 0
        h = Headers(base or ())
        if ctype is not None:
            h.set("Content-Type", ctype)
        now = http_date()
        h.set("Date", now)
        h.set("Expires", now)
        h.set("Cache-Control", "max-age=0")
        h.set("Pragma", "no-cache")
        h.set("Server", "pve-api-daemon/3.0")
        if content:
            h.set("Content-Length", str(len(content)))
        else:
            h.remove("Content-Length")
        if st["keep_alive"] > 0:
            h.push("Connection", "Keep-Alive")
        else:
            h.set("Connection", "close")
        head = "%s %d %s\r\n%s\r\n" % (st["proto"], code, msg, h.as_string())
        writer.write(head.encode("latin-1") + content)
        return st["keep_alive"] > 0

    def daemon_headers(self, content):
        """The headers pvedaemon's own response() puts on a JSON answer to pveproxy's
        AnyEvent::HTTP request, as proxy_request copies them (HTTP::Headers->new(%$hdr)).
        proxy_request asks localhost:85 with persistent => 0, so AnyEvent::HTTP (2.25,
        http_request) sends "Connection: close, Te"; pvedaemon's process_header sees
        "close" and its response() answers "Connection: close".  Everything else that
        pvedaemon sets is replaced by pveproxy's response() except Content-Type."""
        return [("Cache-Control", "max-age=0"), ("Connection", "close"), ("Date", http_date()),
                ("Pragma", "no-cache"), ("Server", "pve-api-daemon/3.0"),
                ("Content-Length", str(len(content))), ("Content-Type", JSON_CT), ("Expires", http_date())]

    def remote_headers(self, code, content):
        """The headers of another node's pveproxy answer to our proxy_request (proxyto):
        that node proxied the protected call to its own pvedaemon, so a keep-alive answer
        carries "Connection: close" and "Connection: Keep-Alive" -- and AnyEvent::HTTP
        (2.25, _parse_hdr: $hdr{lc $1} .= ",$2") joins repeated fields with a bare comma:
        connection => "close,Keep-Alive".  proxy_request to another node is persistent
        for GET (keep-alive request), so that node keeps the connection open."""
        conn = "close" if code >= 400 else "close,Keep-Alive"
        return [("Cache-Control", "max-age=0"), ("Connection", conn), ("Date", http_date()),
                ("Pragma", "no-cache"), ("Server", "pve-api-daemon/3.0"),
                ("Content-Length", str(len(content))), ("Content-Type", JSON_CT), ("Expires", http_date())]

    def json_answer(self, writer, st, code, data=None, message=None, errors=None, via="local"):
        """The JSON formatter (pve-http-server 6.0.5 src/PVE/APIServer/Formatter/Standard.pm,
        prepare_response_data + register_formatter('json')): {"data": ...}, "errors" when
        there are any, "message" for an error status.  Perl's to_json (not canonical) emits
        keys in hash order, which is random per process; the simulator's order is fixed."""
        obj = {"data": data}
        if errors:
            obj["errors"] = errors
        if code >= 400:
            obj["message"] = message or HTTP_REASONS.get(code, "")
        content = json.dumps(obj, separators=(",", ":")).encode()
        base = None
        if via == "daemon":
            base = self.daemon_headers(content)
        elif via == "remote":
            base = self.remote_headers(code, content)
        return self.respond(writer, st, code, message if code >= 400 else None, content, JSON_CT, base)

    # ---- API connection ------------------------------------------------------

    def handle_api_conn_factory(self, node):
        async def handler(reader, writer):
            if self.conf.get("tls_record_split"):
                split_writes(writer)
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
        # accept_connections: every connection starts with keep_alive = $self->{keep_alive}
        # (pveproxy: 100, pve-manager 9.2.11 PVE/Service/pveproxy.pm) and the handle's
        # timeout (5 s, AnyEvent.pm new: $self->{timeout} = 5): an idle connection is shut
        # down without any answer.
        idle = float(self.conf["idle_close_s"])
        st = {"keep_alive": 100, "proto": "HTTP/1.0"}
        while True:
            try:
                req = await asyncio.wait_for(read_http_request(reader), idle)
            except asyncio.TimeoutError:
                return
            except HttpError as e:  # push_request_header / process_header: error()
                st["keep_alive"] -= 1
                self.respond(writer, st, e.code, e.reason, (e.reason + "\n").encode("latin-1"))
                await writer.drain()
                return
            if req is None:
                return
            # push_request_header: keep_alive-- per request line, proto = the request's
            st["keep_alive"] -= 1
            st["proto"] = req["version"]
            # process_header: "Connection: ...close..." or HTTP/1.0 without Connection ends keep-alive
            conn = req["headers"].get("connection")
            if conn is not None:
                if "close" in conn.lower():
                    st["keep_alive"] = 0
            elif req["version"] == "HTTP/1.0":
                st["keep_alive"] = 0
            keep = await self.api_request(node, req, reader, writer, st)
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
                    raise api_error(400, "Parameter verification failed.\n")
                if not isinstance(obj, dict):
                    raise api_error(400, "Parameter verification failed.\n")
                for k, v in obj.items():
                    params[k] = ("1" if v else "0") if isinstance(v, bool) else str(v)
            else:
                for k, v in urllib.parse.parse_qsl(req["body"].decode("latin-1"), keep_blank_values=True):
                    params[k] = v
        return params

    async def api_request(self, node, req, reader, writer, st):
        t0 = time.monotonic()
        method, headers = req["method"], req["headers"]
        url = urllib.parse.urlsplit(req["target"])
        path = urllib.parse.unquote(url.path)
        authz = headers.get("authorization", "")
        # authenticate_and_handle_request: the cookie first, then PVEAuthCookie in the
        # Authorization header, only then PVEAPIToken (Formatter.pm extract_auth_value)
        ticket = None
        for h in (headers.get("cookie", ""), authz):
            m = re.search(r"(?:^|\s)PVEAuthCookie(?:=| )([^;]*)", h)
            if m and m.group(1):
                ticket = urllib.parse.unquote(m.group(1))
                break
        token_val = None
        if not ticket:
            m = re.search(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)", authz)
            token_val = urllib.parse.unquote(m.group(1)) if m and m.group(1) else None
        entry = {"node": node.name, "method": method, "path": url.path, "query": url.query,
                 "auth": "token" if token_val is not None else ("cookie" if ticket is not None else "none"),
                 "csrf": "csrfpreventiontoken" in headers, "status": None}
        self.log.append(entry)
        try:
            if node.mode == "status595":
                raise HttpError(595, MSG_595, kind="empty")
            if node.mode == "status500":
                raise HttpError(500, "Internal Server Error", kind="empty")
            if not path.startswith("/api2/json/"):
                raise HttpError(501, "no such uri", kind="raw")
            rel = path[len("/api2/json"):].rstrip("/") or "/"
            auth = await self.authenticate(token_val, ticket, method, rel, headers)
            params = self.parse_params(req, url.query)
            if rel == "/access/ticket" and method in ("POST", "GET"):
                # rest_handler: raise_perm_exc for a token on an allowtoken => 0 call (create_ticket,
                # pve-access-control 9.1.1 src/PVE/API2/AccessControl.pm) -- in pveproxy, before
                # the protected call goes to pvedaemon
                # (get_ticket keeps RESTHandler's default allowtoken = 1)
                if token_val is not None and method == "POST":
                    raise api_error(403, "Permission check failed (URI '/access/ticket' not available with API "
                                    "token, need proper ticket.\n)\n")
                if method == "GET":  # get_ticket: not protected, answered by pveproxy
                    data, via = None, "local"
                else:  # create_ticket: protected => 1 -> pvedaemon
                    try:
                        data = await self.login(params)
                    except HttpError as e:
                        e.via = "daemon"
                        raise
                    via = "daemon"
                entry["status"] = 200
                return self.json_answer(writer, st, 200, data, via=via)
            res = await self.route(node, method, rel, params, auth, req, reader, writer, entry, st)
            if isinstance(res, WsDone):
                return False
            data, via = (res.data, res.via) if isinstance(res, Via) else (res, "local")
            entry["status"] = 200
            return self.json_answer(writer, st, 200, data, via=via)
        except HttpError as e:
            entry["status"] = e.code
            if e.kind == "hang":
                # websocket_proxy: the die in the tcp_connect callback runs outside the eval and
                # the handle's timeout is already 0 (handle_request): no answer, no close --
                # the connection stays until the client gives up
                entry["status"] = 0
                entry["hung"] = True
                try:
                    while await reader.read(65536):
                        pass
                except (ConnectionError, OSError, ssl.SSLError):
                    pass
                return False
            if e.code == 401:
                if e.kind == "auth":
                    # authenticate_and_handle_request: "always delay unauthorized calls by 3 seconds"
                    delay = float(self.conf["auth_delay_s"])
                else:
                    # handle_api2_request (pveproxy or pvedaemon): $delay = 3 - tv_interval(starttime)
                    delay = float(self.conf["auth_delay_s"]) - (time.monotonic() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
            if e.kind == "json":
                return self.json_answer(writer, st, e.code, None, e.body.get("message") if e.body else e.reason,
                                        e.errors, via=e.via)
            if e.kind == "raw":
                # error(): $content //= $msg -- the whole message is the body, no Content-Type
                return self.respond(writer, st, e.code, e.reason, e.reason.encode("latin-1"))
            # "auth" and "empty": HTTP::Response->new($code, $msg) without content
            return self.respond(writer, st, e.code, e.reason, b"")

    async def login(self, params):
        # pve-access-control 9.1.1 src/PVE/API2/AccessControl.pm create_ticket (runs in pvedaemon):
        # every failure is "authentication failure\n", code 401 (no user enumeration)
        username = params.get("username", "")
        realm = params.get("realm")
        if realm and "@" not in username:
            username = username + "@" + realm
        password = params.get("password", "")
        # create_ticket: any failure -> PVE::Exception "authentication failure\n", code 401
        fail = api_error(401, "authentication failure\n")
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

    async def authenticate(self, token_val, ticket, method, rel, headers):
        """pve-manager 9.2.11 PVE/HTTPServer.pm auth_handler.  Its dies ("No ticket",
        "Authentication failed!", and verify_csrf_prevention_token's 401 "Permission denied -
        invalid csrf token" from pve-common 9.2.1 src/PVE/Ticket.pm) become a 401 without
        content (kind "auth"): the json format has no login formatter."""
        if ((rel == "/access/domains" and method == "GET")
                or (rel == "/access/ticket" and method in ("GET", "POST"))
                or (rel == "/access/vncticket" and method == "POST")):
            return None  # $require_auth = 0
        fail = HttpError(401, "Authentication failed!\n", kind="auth")
        if token_val is not None:
            m = re.fullmatch(r"(.*)=(.*)", token_val, re.S)
            tok = self.tokens.get(m.group(1)) if m else None
            userid = m.group(1).split("!")[0] if m else ""
            user = self.users.get(userid)
            if (not tok or not user or user.get("enabled", True) is False
                    or not hmac.compare_digest(str(tok.get("secret", "")), m.group(2))):
                raise fail
            uprivs = set(user.get("privs", DEFAULT_PRIVS))
            tprivs = set(tok.get("privs", uprivs))
            privs = tprivs & uprivs if tok.get("privsep", True) else uprivs
            return {"authid": m.group(1), "userid": userid, "token": True, "privs": privs}
        if not ticket:
            raise HttpError(401, "No ticket\n", kind="auth")
        v = self.verify_ticket(ticket)
        if v is None:
            raise fail
        if v[1]:
            raise HttpError(401, "No ticket\n", kind="auth")
        user = self.users.get(v[0])
        if not user or user.get("enabled", True) is False:
            raise fail
        if method != "GET" and not self.verify_csrf(headers.get("csrfpreventiontoken"), v[0]):
            raise HttpError(401, "Permission denied - invalid csrf token\n", kind="auth")
        return {"authid": v[0], "userid": v[0], "token": False, "privs": set(user.get("privs", DEFAULT_PRIVS))}

    # ---- routing -------------------------------------------------------------

    def param_error(self, errors):
        # pve-common 9.2.1 src/PVE/Exception.pm raise_param_exc: 400 "Parameter verification failed.\n"
        return api_error(400, "Parameter verification failed.\n", errors)

    def conf_path(self, node_name, vtype, vmid):
        return "nodes/%s/%s/%d.conf" % (node_name, "qemu-server" if vtype == "qemu" else "lxc", vmid)

    def load_config(self, node_name, vtype, vmid):
        vm = self.vms.get(vmid)
        if not vm or vm["node"] != node_name or vm["type"] != vtype:
            # pve-guest-common AbstractConfig load_config -> cfs_read_file dies with this text
            raise api_error(500, "Configuration file '%s' does not exist\n" % self.conf_path(node_name, vtype, vmid))
        return vm

    def remote_node_ip(self, nname):
        """pve-cluster src/PVE/Cluster.pm remote_node_ip: a name outside the nodelist falls
        back to pve-common src/PVE/Network.pm get_ip_from_hostname, which dies with
        "hostname lookup '<node>' failed - " + Tools.pm getaddrinfo_all's
        "failed to get address info for: <node>: <gai error>\n"."""
        target = self.nodes.get(nname)
        if target is None:
            raise api_error(500, "hostname lookup '%s' failed - failed to get address info for: %s: "
                            "Name or service not known\n" % (nname, nname))
        return target

    async def route(self, node, method, rel, params, auth, req, reader, writer, entry, st):
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
                # vncproxy: protected => 1, no proxyto (qemu-server 9.2.6 src/PVE/API2/Qemu.pm,
                # pve-container 6.1.10 src/PVE/API2/LXC.pm): the permission check runs in
                # pveproxy (rest_handler), the rest in the receiving node's pvedaemon
                self.check_priv(auth, "/vms/%d" % vmid, "VM.Console")
                with via_daemon():
                    return Via(await self.vncproxy(node, nname, vtype, vmid, params, auth), "daemon")
            if op == "termproxy" and method == "POST":
                self.check_priv(auth, "/vms/%d" % vmid, "VM.Console")
                with via_daemon():
                    return Via(await self.termproxy(node, nname, vtype, vmid, params, auth), "daemon")
            if op == "vncwebsocket" and method == "GET":
                return await self.vncwebsocket(node, nname, vtype, vmid, params, auth, req, reader, writer, entry, st)
        # pve-manager PVE/HTTPServer.pm rest_handler: the default answer (no "\n")
        raise api_error(501, "Method '%s %s' not implemented" % (method, rel))

    def status_current(self, node, nname, vtype, vmid, auth):
        # vm_status: proxyto => 'node', protected => 1.  pve-manager PVE/HTTPServer.pm
        # rest_handler: check_api2_permissions first, then resolve the node (remote_node_ip),
        # then proxy to that node's pveproxy, whose rest_handler hands the call to its pvedaemon
        self.check_priv(auth, "/vms/%d" % vmid, "VM.Audit")
        target = self.remote_node_ip(nname)
        via = "daemon"
        if target is not node:
            via = "remote"
            if target.mode in ("offline", "status595"):
                raise HttpError(595, MSG_595, kind="empty")
            if target.mode == "refuse":
                raise HttpError(595, MSG_595_REFUSED, kind="empty")
            if target.mode == "status500":
                raise HttpError(500, "Internal Server Error", kind="empty")
        try:
            vm = self.load_config(nname, vtype, vmid)
        except HttpError as e:
            e.via = via
            raise
        running = vm["status"] == "running"
        d = {"vmid": vmid, "status": vm["status"], "name": vm["name"], "uptime": 3600 if running else 0,
             "maxmem": 2147483648, "cpus": 2, "ha": {"managed": 0}}
        if vtype == "qemu":
            d["qmpstatus"] = vm["status"]
        else:
            d["type"] = "lxc"
        return Via(d, via)

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
        # pve-common Tools.pm next_vnc_port: next_unused_port(5900, 6000) on the receiving node
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
        # runs in pvedaemon: RESTHandler validates the parameters, then the code runs
        if vtype == "qemu":
            self.validate(params, {"websocket": "bool", "generate-password": "bool"})
            # Qemu.pm vncproxy: load_config($vmid, $node) first, remote_node_ip after
            self.load_config(nname, vtype, vmid)
            self.remote_node_ip(nname)
        else:
            self.validate(params, {"websocket": "bool", "width": ("int", 16, 4096), "height": ("int", 16, 2160)})
            # LXC.pm vncproxy: remote_node_ip($node) for another node *before* load_config
            self.remote_node_ip(nname)
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
        # fault vnc_password_reset: "another client" calls vncproxy for this VM right after
        # this answer; its qm vncproxy sets the VM-wide password after ours (see vnc_worker)
        con.reset_password = vtype == "qemu" and self.take_fault("vnc_password_reset", vmid)
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
        self.validate(params, {"serial": ("enum", ["serial0", "serial1", "serial2", "serial3"])} if vtype == "qemu"
                      else {})
        if vtype == "qemu":  # Qemu.pm termproxy: load_config first
            self.load_config(nname, vtype, vmid)
            self.remote_node_ip(nname)
        else:  # LXC.pm termproxy: remote_node_ip first
            self.remote_node_ip(nname)
            self.load_config(nname, vtype, vmid)
        port, srv = await self.alloc_port(node)
        srv.close()
        await srv.wait_closed()
        node.ports.discard(port)
        ticket = self.make_vnc_ticket(auth["authid"], vmid, port)
        con = await self.open_console_at(node, port, vtype, vmid, "term", auth["authid"], ticket, None)
        return {"user": auth["authid"], "ticket": ticket, "port": str(con.port),
                "upid": self.upid(node.name, vmid, auth["authid"])}

    async def vncwebsocket(self, node, nname, vtype, vmid, params, auth, req, reader, writer, entry, st):
        # vncwebsocket is neither protected nor proxyto: pveproxy itself runs it
        # (rest_handler), then handle_api2_request looks at the Upgrade header.
        outcome = None
        try:
            self.check_priv(auth, "/vms/%d" % vmid, "VM.Console")
            errors = {}
            port = params.get("port")
            if port is None:
                errors["port"] = "property is missing and it is not optional"
            elif not re.fullmatch(r"\d+", port):
                errors["port"] = "type check ('integer') failed - got '%s'" % port
            elif not 5900 <= int(port) <= 5999:
                errors["port"] = "value must have a %s value of %d" % (
                    ("minimum", 5900) if int(port) < 5900 else ("maximum", 5999))
            if "vncticket" not in params:
                errors["vncticket"] = "property is missing and it is not optional"
            elif len(params["vncticket"]) > 512:
                errors["vncticket"] = "value may only be 512 characters long"
            for k in params:
                if k not in ("port", "vncticket"):
                    errors[k] = "property is not defined in schema and the schema does not allow additional properties"
            if errors:
                raise self.param_error(errors)
            # Qemu.pm / LXC.pm vncwebsocket: verify_vnc_ticket first (pve-access-control 9.1.1
            # src/PVE/AccessControl.pm -> pve-common Ticket.pm verify_rsa_ticket: 401
            # "permission denied - invalid PVEVNC ticket\n"); QEMU then load_config, LXC nothing
            bad = self.take_fault("vnc_ticket_invalid", vmid)
            if bad or not self.verify_vnc_ticket(params["vncticket"], auth["authid"], vmid, int(port)):
                raise api_error(401, "permission denied - invalid PVEVNC ticket\n")
            if vtype == "qemu":
                self.load_config(nname, vtype, vmid)
        except HttpError as e:
            outcome = e
        h = req["headers"]
        upgrade = h.get("upgrade", "").lower()
        if not upgrade:
            if outcome is not None:
                raise outcome
            return {"port": port}
        # handle_api2_request (pve-http-server 6.0.5): these dies come after rest_handler,
        # whatever its status was, and go to error(500, $err): text body, no Content-Type
        if upgrade != "websocket":
            raise HttpError(500, "unable to upgrade to protocol '%s'\n" % upgrade, kind="raw")
        ver = h.get("sec-websocket-version", "")
        if ver != "13":
            raise HttpError(500, "unsupported websocket-version '%s'\n" % ver, kind="raw")
        proto = h.get("sec-websocket-protocol", "")
        key = h.get("sec-websocket-key")
        if not key:
            raise HttpError(500, "missing websocket-key\n", kind="raw")
        if outcome is not None:
            raise outcome  # formatted like any other rest_handler error (401: delayed)
        # websocket_proxy: tcp_connect 'localhost', port; the 101 only once connected
        if self.take_fault("ws_backend_unreachable", vmid):
            raise HttpError(0, "connect failed", kind="hang")
        try:
            br, bw = await asyncio.wait_for(asyncio.open_connection(node.host, int(port)), 5)
        except (OSError, asyncio.TimeoutError):
            raise HttpError(0, "connect failed", kind="hang")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        lines = ["%s 101 Switching Protocols" % st["proto"], "Upgrade: websocket", "Connection: upgrade",
                 "Sec-WebSocket-Accept: %s" % accept]
        if proto != "":
            lines.append("Sec-WebSocket-Protocol: %s" % proto)  # echoed verbatim
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        entry["status"] = 101
        await self.ws_relay(reader, writer, br, bw)
        return WsDone()

    async def ws_relay(self, reader, writer, br, bw):
        # pve-http-server 6.0.5 AnyEvent.pm websocket_proxy: $proxyhdlreader sends each backend
        # read (<= 128 KiB) as one binary frame; $hdlreader dies on unmasked/fragmented/RSV/
        # oversized frames and unknown opcodes, answers pings, and on a close frame shuts both
        # sides down without sending a close frame of its own
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
        # QEMU's VNC server (ui/vnc.c start_auth_vnc / protocol_client_auth_vnc, not part of the
        # sources read here): VNC auth only, reject = u32 1 (+ u32 22 "Authentication failed\0"
        # for RFB 3.8) on a wrong response, an expired or unset password
        node = con.node
        # qemu-server 9.2.6 src/PVE/CLI/qm.pm vncproxy: once the worker accepted the client,
        # "qm vncproxy" runs mon_cmd set_password (protocol vnc, VM-wide) and
        # expire_password time => "+30" -- every vncproxy call overwrites the previous one
        vm["vnc_password"] = con.secret
        vm["vnc_expire"] = self.now() + float(self.conf["vnc_password_expire_s"])
        if con.reset_password:  # fault: another client's qm vncproxy set its password after ours
            vm["vnc_password"] = self.gen_password()
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
        # pve-xtermjs termproxy 2.1.0 termproxy/src/main.rs do_main: 10 s for the ticket line,
        # "OK" after authenticate(), then the PTY (run_pty: 80x20, TERM=xterm-256color)
        node = con.node
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), float(self.conf["term_auth_timeout_s"]))
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.event("term-auth-fail", node, con.vmid, con.port)
            return
        # pve-xtermjs termproxy 2.1.0 src/main.rs: read_ticket_line splits at the first ':';
        # a ticket other than the pinned one (--ticket-fd, hardened only) or a failed
        # authenticate() ends the process: the client sees the connection close, no "OK".
        # Hardened: POST /access/vncticket (authid, vncticket, path, privs, port).  Before:
        # POST /access/ticket (username=authid, password=ticket): create_ticket's
        # lookup_username/check_user_enabled refuse a token ID ("user@realm!name").
        user, _, ticket = line[:-1].decode("utf-8", "replace").partition(":")
        ok = ((self.legacy or ticket == con.ticket)
              and self.verify_vnc_ticket(ticket, user, con.vmid, con.port)
              and not (self.legacy and "!" in user)
              and not self.take_fault("term_refuse", con.vmid))
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
        if method == "POST" and path == "/fault":
            kind = body["kind"]
            if kind not in FAULT_KINDS:
                raise ValueError("unknown fault kind %r" % kind)
            vmid = body.get("vmid")
            count = int(body.get("count", 1))
            if count < 1:
                raise ValueError("count must be >= 1")
            self.faults.append({"kind": kind, "vmid": None if vmid is None else int(vmid), "count": count})
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
                         "vms": {v["vmid"]: {"node": v["node"], "status": v["status"]} for v in self.vms.values()},
                         "faults": [dict(f) for f in self.faults]}
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
