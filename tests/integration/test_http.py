"""HTTP/1.1 server behaviour against the real daemon."""
import os
import random
import signal
import socket
import threading
import time

from conftest import API_KEY
from rs import Conn, get


def test_healthz(daemon):
    c = Conn(daemon.port)
    c.send(get("/healthz"))
    st, h, body = c.response()
    assert (st, body) == (200, b"ok\n")
    assert h["content-type"].startswith("text/plain")
    assert h["connection"] == "keep-alive"


def test_head_has_length_and_no_body(daemon):
    c = Conn(daemon.port)
    c.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    st, h, _ = c.response(head_only=True)
    assert st == 200 and h["content-length"] == "3"
    c.send(get("/healthz"))  # the next response starts right after the head
    assert c.response()[0] == 200


def test_method_not_allowed_names_allowed_methods(daemon):
    c = Conn(daemon.port)
    c.send("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    st, h, _ = c.response()
    assert st == 405 and "GET" in h["allow"]


def test_root_reveals_nothing(daemon):
    c = Conn(daemon.port)
    c.send(get("/"))
    st, h, body = c.response()
    assert st == 401
    assert b"ringside" not in body.lower() and b"version" not in body.lower()


def test_unknown_path_is_json_404(daemon):
    c = Conn(daemon.port)
    c.send(get("/nope"))
    st, h, body = c.response()
    assert st == 404 and b'"code":"not_found"' in body


def test_keepalive_100_requests(daemon):
    c = Conn(daemon.port)
    for _ in range(100):
        c.send(get("/healthz"))
        assert c.response()[0] == 200


def test_http10_closes(daemon):
    c = Conn(daemon.port)
    c.send("GET /healthz HTTP/1.0\r\n\r\n")
    st, h, _ = c.response()
    assert st == 200 and h["connection"] == "close"
    assert c.closed()


def test_connection_close(daemon):
    c = Conn(daemon.port)
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert c.response()[0] == 200
    assert c.closed()


def test_pipelining_in_one_send(daemon):
    c = Conn(daemon.port)
    paths = ["/healthz", "/nope"] * 10
    c.send("".join(get(p) for p in paths))
    for p in paths:
        st, _, _ = c.response()
        assert st == (200 if p == "/healthz" else 404)


def test_pipelining_split_at_odd_boundaries(daemon):
    c = Conn(daemon.port)
    data = ("".join(get("/healthz") for _ in range(10))).encode()
    rnd = random.Random(7)
    i = 0
    while i < len(data):
        n = rnd.randint(1, 9)
        c.send(data[i:i + n])
        i += n
        time.sleep(0.001)
    for _ in range(10):
        assert c.response()[0] == 200


def expect_error_and_close(port, raw, status):
    c = Conn(port)
    try:
        c.send(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.response()
    assert r is not None and r[0] == status, r
    assert r[1]["connection"] == "close"
    assert c.closed()


def test_request_line_too_long_414(daemon):
    expect_error_and_close(daemon.port, "GET /" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 414)


def test_header_block_too_big_431(daemon):
    expect_error_and_close(daemon.port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 20000 + "\r\n\r\n", 431)


def test_too_many_headers_431(daemon):
    hdrs = "".join("X-H%d: v\r\n" % i for i in range(70))
    expect_error_and_close(daemon.port, "GET / HTTP/1.1\r\nHost: x\r\n" + hdrs + "\r\n", 431)


def test_body_too_big_413_before_body(daemon):
    # Only the head is sent: the answer must not wait for 100 kB of body.
    expect_error_and_close(daemon.port, "POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n"
                           "Content-Length: 100000\r\n\r\n", 413)


def test_chunked_body_too_big_413(daemon):
    chunk = "4000\r\n" + "x" * 0x4000 + "\r\n"
    expect_error_and_close(daemon.port, "POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n" + chunk * 5 + "0\r\n\r\n", 413)


def test_malformed_request_line_400(daemon):
    expect_error_and_close(daemon.port, "GARBAGE\r\n\r\n", 400)


def test_bad_header_bytes_400(daemon):
    expect_error_and_close(daemon.port, "GET / HTTP/1.1\r\nX-Bad\x01: x\r\n\r\n", 400)


def test_content_length_and_chunked_400(daemon):
    expect_error_and_close(daemon.port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)


def test_http2_version_505(daemon):
    expect_error_and_close(daemon.port, "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)


def test_slowloris_gets_408_while_others_are_served(daemon_factory):
    d = daemon_factory({"limits": {"header_timeout_ms": 1000}})
    slow = Conn(d.port)
    start = time.time()
    result = {}

    def trickle():
        try:
            for ch in "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a" * 100:
                slow.send(ch)
                time.sleep(0.2)
        except OSError:
            result["closed_at"] = time.time() - start

    t = threading.Thread(target=trickle)
    t.start()
    other = Conn(d.port)
    for _ in range(5):
        other.send(get("/healthz"))
        assert other.response()[0] == 200
        time.sleep(0.1)
    r = slow.response()
    elapsed = time.time() - start
    assert r is not None and r[0] == 408
    assert 0.9 <= elapsed <= 2.5, elapsed
    assert slow.closed()
    t.join(5)


def test_silent_connection_closed_after_header_timeout(daemon_factory):
    d = daemon_factory({"limits": {"header_timeout_ms": 800}})
    c = Conn(d.port)
    start = time.time()
    assert c.closed(timeout=5)
    assert time.time() - start < 3


def test_idle_keepalive_closed_after_timeout(daemon_factory):
    d = daemon_factory({"limits": {"keepalive_timeout_ms": 1500}})
    c = Conn(d.port)
    c.send(get("/healthz"))
    assert c.response()[0] == 200
    start = time.time()
    assert c.closed(timeout=6)
    assert 1.2 <= time.time() - start <= 4


def test_static_files_have_types_etag_and_304(daemon):
    c = Conn(daemon.port)
    c.send(get("/static/console.css"))
    st, h, body = c.response()
    assert st == 200 and h["content-type"].startswith("text/css") and body
    assert "max-age" in h["cache-control"] and h["etag"].startswith('"')
    c.send("GET /static/console.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n\r\n" % h["etag"])
    st2, _, body2 = c.response()
    assert st2 == 304 and body2 == b""
    c.send(get("/static/novnc/core/rfb.js"))
    st3, h3, _ = c.response()
    assert st3 == 200 and h3["content-type"].startswith("text/javascript")


def test_graceful_shutdown_finishes_request_in_flight(daemon_factory):
    d = daemon_factory()
    c = Conn(d.port)
    c.send("GET /static/console.css HTTP/1.1\r\nHost:")
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    c.send(" x\r\n\r\n")
    st, h, body = c.response()
    assert st == 200 and body and h["connection"] == "close"
    assert d.proc.wait(10) == 0


def test_shutdown_with_idle_keepalive_is_prompt(daemon_factory):
    d = daemon_factory()
    c = Conn(d.port)
    c.send(get("/healthz"))
    assert c.response()[0] == 200
    start = time.time()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert time.time() - start < 2
    assert c.closed()


def test_2000_concurrent_connections(daemon):
    socks = []
    try:
        for _ in range(2000):
            s = socket.create_connection(("127.0.0.1", daemon.port))
            socks.append(s)
        for s in socks:
            s.sendall(get("/healthz").encode())
        ok = 0
        for s in socks:
            s.settimeout(10)
            data = b""
            while b"ok\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok += data.startswith(b"HTTP/1.1 200")
        assert ok == 2000
    finally:
        for s in socks:
            s.close()


def test_garbage_is_refused_and_daemon_stays_healthy(daemon):
    rnd = random.Random(1)
    for _ in range(5):
        c = Conn(daemon.port)
        try:
            c.send(bytes(rnd.getrandbits(8) for _ in range(200000)))
        except OSError:
            pass
        r = c.response()
        assert r is None or r[0] in (400, 414, 431)
        c.close()
    c = Conn(daemon.port)
    c.send(get("/healthz"))
    assert c.response()[0] == 200
