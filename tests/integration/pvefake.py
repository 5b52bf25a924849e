"""A scripted Proxmox VE API node for the client rules the simulator cannot
stage byte for byte: answers cut at exact places, several answers in one TLS
record, a node that pings and never reads, a plain-TCP recorder that shows
whether a secret ever left in clear. Answers are shaped as pveproxy's
(pve-http-server AnyEvent.pm response()/error(): both Connection lines on
proxied calls, >= 400 closing). Listens on 127.0.0.0/8 only; stopped by the
test that started it (threads in this process, no child process)."""
import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time

HEAD = ("Cache-Control: max-age=0\r\nDate: Mon, 07 Dec 2026 02:55:33 GMT\r\nPragma: no-cache\r\n"
        "Server: pve-api-daemon/3.0\r\n")


def make_cert(tmp):
    """A self-signed certificate for 127.0.0.1; returns (cert, key) paths."""
    cert, key = os.path.join(tmp, "fake.pem"), os.path.join(tmp, "fake.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=pvefake",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def answer(status, reason, body=None, proxied=True, extra=b""):
    """An answer as pveproxy writes it; proxied: both Connection lines."""
    head = "HTTP/1.1 %d %s\r\n" % (status, reason) + HEAD
    if status >= 400:
        head += "Connection: close\r\n"
    elif proxied:
        head += "Connection: close\r\nConnection: Keep-Alive\r\n"
    else:
        head += "Connection: Keep-Alive\r\n"
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        head += "Content-Length: %d\r\nContent-Type: application/json;charset=UTF-8\r\n" % len(data)
    return head.encode() + b"\r\n" + data + extra


def ws_frame(op, payload):
    n = len(payload)
    if n < 126:
        return bytes([0x80 | op, n]) + payload
    if n < 65536:
        return bytes([0x80 | op, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x80 | op, 127]) + n.to_bytes(8, "big") + payload


class Node:
    """One API endpoint. <script> picks how it misbehaves:
    status: "ok" | "500_then_more" (a 500 and more bytes in one record, then close)
            | "401_eof" (the auth handler's 401: no length, ends at the close)
    upgrade: "ok" | "hang" (no answer to vncwebsocket) | "401_once" (the first
             vncwebsocket gets 401 "invalid PVEVNC ticket")
    after_upgrade: "hold" | "term_ok" (terminal: OK, then hold)
            | "term_refuse" (close without OK) | "ping_flood" (OK, then pings,
            never reads)
    idle_close_s: close a keep-alive connection idle that long (pveproxy: 5 s)."""

    def __init__(self, tmp, cert, key, host="127.0.0.1", **script):
        self.script = dict(status="ok", upgrade="ok", after_upgrade="hold", idle_close_s=5.0)
        self.script.update(script)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.ep = "%s:%d" % (host, self.port)
        self.requests = []  # (method, path) in arrival order
        self.conns = []
        self.stopping = False
        self.flood_sent = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def stop(self):
        self.stopping = True
        self.sock.close()
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, raw):
        try:
            c = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.conns.append(c)
        buf = b""
        try:
            while not self.stopping:
                c.settimeout(self.script["idle_close_s"])
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdrs = {k.strip().lower(): v.strip() for k, _, v in
                        (ln.partition(":") for ln in lines[1:])}
                n = int(hdrs.get("content-length", "0"))
                while len(buf) < n:
                    buf += c.recv(65536)
                buf = buf[n:]
                auth = ("token" if "authorization" in hdrs else
                        "cookie" if "cookie" in hdrs else "none")
                with self.lock:
                    self.requests.append((method, path.split("?")[0], auth))
                if not self.handle(c, method, path.split("?")[0], hdrs):
                    return
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def handle(self, c, method, path, hdrs):
        s = self.script
        if s["status"] == "401_eof" and not path.endswith("/access/ticket"):
            time.sleep(0.2)
            c.sendall(("HTTP/1.1 401 No ticket\r\n" + HEAD + "Connection: close\r\n\r\n").encode())
            return False
        if path.endswith("/access/ticket"):
            c.sendall(answer(200, "OK", {"data": {
                "username": "root@pam", "ticket": "PVE:root@pam:6A4BB5CD::c2ln",
                "CSRFPreventionToken": "6A4BB5CD:abc"}}))
        elif path.startswith("/api2/json/cluster/resources"):
            c.sendall(answer(200, "OK", {"data": [
                {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1",
                 "status": "running"},
                {"id": "lxc/200", "type": "lxc", "vmid": 200, "node": "pve1",
                 "status": "running"}]}, proxied=False))
        elif path.endswith("/status/current"):
            if s["status"] == "500_then_more":
                # one write, one TLS record: the 500 and a whole second answer
                c.sendall(answer(500, "Internal Server Error", {"data": None},
                                 extra=answer(200, "OK", {"data": {"status": "running"}})))
                return False
            c.sendall(answer(200, "OK", {"data": {"status": "running", "vmid": 100}}))
        elif path.endswith("/vncproxy") or path.endswith("/termproxy"):
            c.sendall(answer(200, "OK", {"data": {
                "user": "root@pam", "ticket": "PVEVNC:6A4BB5CD::dGlja2V0",
                "password": "PVEVNC:6A4BB5CD::dGlja2V0", "port": "5900",
                "upid": "UPID:pve1:0:0:6A4BB5CD:vncproxy:100:root@pam:"}}))
        elif path.endswith("/vncwebsocket"):
            if s["upgrade"] == "401_once" and not getattr(self, "refused", False):
                self.refused = True
                c.sendall(answer(401, "permission denied - invalid PVEVNC ticket"))
                return False
            if s["upgrade"] == "hang":
                while not self.stopping and c.recv(65536):
                    pass
                return False
            key = hdrs.get("sec-websocket-key", "")
            acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                                .encode()).digest()).decode()
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                       "Sec-WebSocket-Protocol: binary\r\n\r\n" % acc).encode())
            self.console(c)
            return False
        else:
            c.sendall(answer(501, "Method not implemented", {"data": None}))
            return False
        return True

    def ws_read(self, c, n):
        """At least <n> payload bytes of client frames (frames are whole
        here: ringside sends each handshake message as one)."""
        got = b""
        while len(got) < n:
            d = c.recv(65536)
            if not d:
                raise OSError("closed")
            got += _unmask(d)
        return got

    def console(self, c):
        mode = self.script["after_upgrade"]
        if mode in ("term_ok", "term_refuse"):
            c.settimeout(5)
            self.line = c.recv(65536)
            if mode == "term_refuse":
                return
            c.sendall(ws_frame(2, b"OK"))
        if mode == "vnc_reset_once":
            # another client's vncproxy reset the VM's VNC password: the first
            # VNC authentication fails, the next one (fresh vncproxy) passes
            self.vnc_auths = getattr(self, "vnc_auths", 0) + 1
            c.settimeout(5)
            c.sendall(ws_frame(2, b"RFB 003.008\n"))
            self.ws_read(c, 12)
            c.sendall(ws_frame(2, b"\x01\x02"))
            self.ws_read(c, 1)
            c.sendall(ws_frame(2, b"\x00" * 16))
            self.ws_read(c, 16)
            if self.vnc_auths == 1 or self.script.get("vnc_fail") == "always":
                why = b"Authentication failed"
                c.sendall(ws_frame(2, b"\x00\x00\x00\x01" + len(why).to_bytes(4, "big") + why))
                return
            c.sendall(ws_frame(2, b"\x00\x00\x00\x00"))
            self.ws_read(c, 1)
            pf = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
            c.sendall(ws_frame(2, (1024).to_bytes(2, "big") + (768).to_bytes(2, "big") + pf +
                               (3).to_bytes(4, "big") + b"web"))
        if mode == "ping_flood":
            c.settimeout(5)
            c.recv(65536)  # the user:ticket line (one small frame)
            c.sendall(ws_frame(2, b"OK"))
            ping = ws_frame(9, b"p" * 125)
            burst = ping * 128
            c.settimeout(0.5)
            end = time.time() + 30
            try:
                while not self.stopping and time.time() < end:
                    c.sendall(burst)  # and never read again
                    self.flood_sent += len(burst)
            except (OSError, ssl.SSLError):
                pass
            return
        c.settimeout(None)
        while not self.stopping:
            if not c.recv(65536):
                return


def _unmask(data):
    """Payloads of the masked client frames in <data> (whole frames only)."""
    out, i = b"", 0
    while i + 2 <= len(data):
        n, i = data[i + 1] & 0x7F, i + 2
        if n == 126:
            n, i = int.from_bytes(data[i:i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i:i + 8], "big"), i + 8
        key, i = data[i:i + 4], i + 4
        out += bytes(b ^ key[j % 4] for j, b in enumerate(data[i:i + n]))
        i += n
    return out


class Recorder:
    """A plain TCP listener that records every byte it receives and never
    answers: shows whether anything was sent before a TLS handshake."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.ep = "%s:%d" % (host, self.sock.getsockname()[1])
        self.data = b""
        self.accepted = 0
        self.stopping = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.read, args=(c,), daemon=True).start()

    def read(self, c):
        c.settimeout(10)
        try:
            while not self.stopping:
                d = c.recv(65536)
                if not d:
                    break
                self.data += d
        except OSError:
            pass
        c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()
