"""Small raw-HTTP helpers for protocol-level tests."""
import socket


class Conn:
    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.s.makefile("rb")

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def response(self, head_only=False):
        line = self.f.readline()
        if not line:
            return None
        parts = line.decode().rstrip("\r\n").split(" ", 2)
        status = int(parts[1])
        headers = {}
        while True:
            h = self.f.readline().decode().rstrip("\r\n")
            if not h:
                break
            k, v = h.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        body = b"" if head_only else self.f.read(n)
        return status, headers, body

    def closed(self, timeout=5):
        """True when the server closed the connection (EOF or reset)."""
        self.s.settimeout(timeout)
        try:
            return self.f.read(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.f.close()
        self.s.close()


def get(path, host="x"):
    return "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)
