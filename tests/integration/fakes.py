"""Scripted peers for console tests: fake VNC targets and a raw WebSocket client."""
import base64
import os
import socket
import struct
import threading
import time


class Target:
    """A TCP server on loopback running <handler(conn, target)> per connection."""

    def __init__(self, handler, backlog=64):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.sent = 0
        self.conns = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            self.handler(c, self)
        except (OSError, EOFError):
            pass
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def rfb_none_handshake(c):
    """Server side of RFB 3.8 with security None, up to and including ClientInit."""
    c.sendall(b"RFB 003.008\n")
    recv_exact(c, 12)
    c.sendall(b"\x01\x01")
    recv_exact(c, 1)
    c.sendall(struct.pack(">I", 0))


def echo_target(c, t):
    rfb_none_handshake(c)
    while True:
        data = c.recv(65536)
        if not data:
            return
        c.sendall(data)


def streaming_target(c, t):
    """After the handshake and ClientInit, stream 64 KiB blocks as fast as allowed."""
    rfb_none_handshake(c)
    recv_exact(c, 1)
    block = os.urandom(65536)
    while not t.stopped:
        c.sendall(block)
        t.sent += len(block)


# --- a raw WebSocket client, so protocol errors can be sent on purpose ---

class RawWS:
    def __init__(self, port, path, extra_headers="", protocols="binary", tls=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:  # an ssl.SSLContext: the same client over wss://
            self.s = tls.wrap_socket(self.s, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        proto = "Sec-WebSocket-Protocol: %s\r\n" % protocols if protocols else ""
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s%s\r\n"
                        % (path, key, proto, extra_headers)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(1)
            if not chunk:
                break
            head += chunk
        self.head = head.decode(errors="replace")
        self.status = int(self.head.split(" ")[1]) if head else 0
        self.buf = b""
        self.pending = b""

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload) if length is None else length
        hdr = bytes([b0])
        m = 0x80 if mask else 0
        if n < 126:
            hdr += bytes([m | n])
        elif n < 65536:
            hdr += bytes([m | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([m | 127]) + struct.pack(">Q", n)
        if mask:
            key = os.urandom(4)
            hdr += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.s.sendall(hdr + payload)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._read(2)
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        assert not b1 & 0x80, "server frames must not be masked"
        return b0 & 0x0f, bool(b0 & 0x80), self._read(n)

    def recv_data(self, n):
        """Exactly <n> bytes of binary payload (frames are a byte stream)."""
        while len(self.pending) < n:
            op, _, p = self.recv_frame()
            assert op in (0, 2), (op, p)
            self.pending += p
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def expect_close(self):
        """Skip data frames up to the close frame; return (code, reason)."""
        while True:
            op, _, p = self.recv_frame()
            if op == 8:
                if not p:
                    return None, ""
                return struct.unpack(">H", p[:2])[0], p[2:].decode()

    def rfb_client_handshake(self):
        """Browser side of RFB 3.8 through ringside; returns after SecurityResult."""
        assert self.recv_data(12) == b"RFB 003.008\n"
        self.send_frame(2, b"RFB 003.008\n")
        types = self.recv_data(2)
        assert types == b"\x01\x01", types
        self.send_frame(2, b"\x01")
        return struct.unpack(">I", self.recv_data(4))[0]

    def close(self):
        self.s.close()
