"""HTTP/1.1 server behaviour against the real daemon.

Protocol-level checks use raw sockets (rs.Conn) so that framing, connection
handling and exact status codes are seen as a client sees them.
"""
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import API_KEY, ASAN, BIN, ROOT, rss_kb
from rs import Conn, get


def version():
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[1]


# --- basic routes -----------------------------------------------------------

def test_healthz(daemon):
    c = Conn(daemon.port)
    c.send(get("/healthz"))
    st, h, body = c.response()
    assert (st, body) == (200, b"ok\n")
    assert h["content-type"].startswith("text/plain")
    assert h["content-length"] == "3"
    assert h["connection"] == "keep-alive"
    assert h["server"] == "ringside"


def test_head_has_length_and_no_body(daemon):
    c = Conn(daemon.port)
    c.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    st, h, _ = c.response(head_only=True)
    assert st == 200 and h["content-length"] == "3"
    # No body bytes follow the head: the next response starts right after it.
    c.send(get("/healthz"))
    st2, _, body2 = c.response()
    assert (st2, body2) == (200, b"ok\n")


def test_method_not_allowed_names_allowed_methods(daemon):
    c = Conn(daemon.port)
    c.send("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    st, h, _ = c.response()
    assert st == 405
    allowed = {m.strip() for m in h["allow"].split(",")}
    assert allowed == {"GET", "HEAD"}


def test_root_reveals_nothing(daemon):
    c = Conn(daemon.port)
    c.send(get("/"))
    st, h, body = c.response()
    assert st == 401
    ver = version()
    assert b"ringside" not in body.lower() and ver.encode() not in body
    # "Server: ringside" is the only place the product is named, never a version
    for k, v in h.items():
        if k != "server":
            assert "ringside" not in v.lower(), (k, v)
        assert ver not in v, (k, v)
    assert h["server"] == "ringside"


def test_unknown_path_is_json_404(daemon):
    c = Conn(daemon.port)
    c.send(get("/nope"))
    st, h, body = c.response()
    assert st == 404 and h["content-type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert err["code"] == "not_found" and err["message"]
    c.send(get("/healthz"))  # a 404 does not end the connection
    assert c.response()[0] == 200


# --- connection management --------------------------------------------------

def test_keepalive_100_requests(daemon):
    c = Conn(daemon.port)
    for _ in range(100):
        c.send(get("/healthz"))
        st, h, body = c.response()
        assert (st, body) == (200, b"ok\n") and h["connection"] == "keep-alive"


def test_http10_closes(daemon):
    c = Conn(daemon.port)
    c.send("GET /healthz HTTP/1.0\r\n\r\n")
    st, h, _ = c.response()
    assert st == 200 and h["connection"] == "close"
    assert c.closed()


def test_connection_close(daemon):
    c = Conn(daemon.port)
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    st, h, _ = c.response()
    assert st == 200 and h["connection"] == "close"
    assert c.closed()


def test_pipelining_in_one_send(daemon):
    c = Conn(daemon.port)
    paths = ["/healthz", "/nope"] * 10
    c.send("".join(get(p) for p in paths))
    for p in paths:
        st, _, body = c.response()
        if p == "/healthz":
            assert (st, body) == (200, b"ok\n")
        else:
            assert st == 404


def test_pipelining_split_at_odd_boundaries(daemon):
    c = Conn(daemon.port)
    reqs = [get("/healthz"), "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", get("/nope")] * 4
    data = "".join(reqs).encode()
    rnd = random.Random(7)
    i = 0
    while i < len(data):
        n = rnd.randint(1, 9)
        c.send(data[i:i + n])
        i += n
        time.sleep(0.001)
    for r in reqs:
        head = r.startswith("HEAD")
        st, h, body = c.response(head_only=head)
        if "/nope" in r:
            assert st == 404
        else:
            assert st == 200 and h["content-length"] == "3"
            assert body == (b"" if head else b"ok\n")


def test_pipelining_split_between_cr_and_lf(daemon):
    # every CRLF of two pipelined requests is cut in half
    c = Conn(daemon.port)
    data = (get("/healthz") + get("/healthz")).encode()
    for part in data.split(b"\n"):
        if part:
            c.send(part)
            time.sleep(0.02)
            c.send(b"\n")
    for _ in range(2):
        assert c.response()[0] == 200


# --- errors: exact status, then the connection is closed ---------------------

def expect_error_and_close(port, raw, status):
    c = Conn(port)
    try:
        c.send(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.response()
    assert r is not None, "no response"
    st = r[0]
    assert (st in status) if isinstance(status, tuple) else (st == status), r
    assert r[1]["connection"] == "close"
    assert r[1]["content-type"]  # every error carries a typed body
    assert c.closed()
    return r


def test_request_line_too_long_414(daemon):
    expect_error_and_close(daemon.port, "GET /" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 414)


def test_request_line_just_under_limit_is_fine(daemon):
    # 8192-byte limit: a 8000-byte target is an ordinary 404, not 414
    c = Conn(daemon.port)
    c.send("GET /" + "a" * 8000 + " HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.response()[0] == 404


def test_header_block_too_big_431(daemon):
    expect_error_and_close(daemon.port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 20000 + "\r\n\r\n", 431)


def test_header_block_of_many_small_lines_too_big_431(daemon):
    # within max_headers (64) but over max_header_bytes (16384) in total
    hdrs = "".join("X-H%d: %s\r\n" % (i, "v" * 400) for i in range(50))
    expect_error_and_close(daemon.port, "GET / HTTP/1.1\r\nHost: x\r\n" + hdrs + "\r\n", 431)


def test_too_many_headers_431(daemon):
    hdrs = "".join("X-H%d: v\r\n" % i for i in range(70))
    expect_error_and_close(daemon.port, "GET / HTTP/1.1\r\nHost: x\r\n" + hdrs + "\r\n", 431)


def test_body_too_big_413_before_body(daemon):
    # Only the head is sent: the answer must not wait for 100 kB of body.
    start = time.time()
    expect_error_and_close(daemon.port, "POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n"
                           "Content-Length: 100000\r\n\r\n", 413)
    assert time.time() - start < 2


def test_body_too_big_413_seen_even_when_body_is_sent(daemon):
    # The client pushes the whole 1 MB body; it must still read the 413
    # (the server drains before closing instead of resetting the connection).
    expect_error_and_close(daemon.port, b"POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 1000000\r\n\r\n" + b"x" * 1000000, 413)


# The key gets these past the 401 answered from the head alone: they are
# about the body's framing.
AUTH = "Authorization: Bearer %s\r\n" % API_KEY


def test_chunked_body_too_big_413(daemon):
    chunk = "4000\r\n" + "x" * 0x4000 + "\r\n"
    expect_error_and_close(daemon.port, "POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n" + AUTH +
                           "Transfer-Encoding: chunked\r\n\r\n" + chunk * 5 + "0\r\n\r\n", 413)


@pytest.mark.parametrize("raw", [
    "GARBAGE\r\n\r\n",
    "GET\r\n\r\n",
    "GET /hea lthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET\t/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "get /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /healthz HTTX/1.1\r\nHost: x\r\n\r\n",
    "GET /healthz HTTP/1.1\nHost: x\n\n",
    "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
], ids=["word", "no-target", "space-in-target", "tab", "lowercase-method",
        "bad-protocol", "bare-lf", "tls-hello"])
def test_malformed_request_line_400(daemon, raw):
    expect_error_and_close(daemon.port, raw, 400)


@pytest.mark.parametrize("hdr", [
    "X-Bad\x01: x",
    "X\x7fA: x",
    "X\xc3\xa9: x",
    "X-A: a\x00b",
    "X-A: a\rb",
    "Host x",
], ids=["ctl-in-name", "del-in-name", "utf8-in-name", "nul-in-value", "cr-in-value",
        "no-colon"])
def test_bad_header_bytes_400(daemon, hdr):
    raw = ("GET /healthz HTTP/1.1\r\nHost: x\r\n" + hdr + "\r\n\r\n").encode("latin-1")
    expect_error_and_close(daemon.port, raw, 400)


@pytest.mark.parametrize("hdrs", [
    "Content-Length: 3\r\nTransfer-Encoding: chunked",
    "Transfer-Encoding: chunked\r\nContent-Length: 3",
    "Content-Length: 1\r\nContent-Length: 2",
    "Content-Length: abc",
    "Content-Length: -1",
    "Content-Length: 1 2",
], ids=["cl-then-te", "te-then-cl", "two-lengths", "non-numeric", "negative", "two-numbers"])
def test_ambiguous_body_framing_400(daemon, hdrs):
    # request smuggling vectors: refused, never guessed
    expect_error_and_close(daemon.port, "POST /healthz HTTP/1.1\r\nHost: x\r\n" + hdrs +
                           "\r\n\r\n0\r\n\r\n", 400)


def test_unknown_transfer_coding_501(daemon):
    # RFC 9112 6.1: a transfer coding the server does not understand -> 501
    expect_error_and_close(daemon.port, "POST /healthz HTTP/1.1\r\nHost: x\r\n"
                           "Transfer-Encoding: gzip\r\n\r\n", 501)


def test_bad_chunk_size_400(daemon):
    expect_error_and_close(daemon.port, "POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n" + AUTH +
                           "Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400)


# A request line whose version is well formed but not 1.0/1.1 gets 505: the
# line parsed fine, so "400 malformed" would be wrong; RFC 9110 15.6.6 reserves
# 505 for "the major version of HTTP that was used in the request" being
# unsupported, which is exactly the case for HTTP/2.0 (or 3) sent as text. An
# unsupported minor of 1 (1.2) is answered the same way. A protocol name other
# than HTTP, by contrast, is a malformed line: 400 (see the test above).
@pytest.mark.parametrize("ver", ["HTTP/2.0", "HTTP/3.0", "HTTP/1.2", "HTTP/0.9"])
def test_unsupported_version_505(daemon, ver):
    r = expect_error_and_close(daemon.port, "GET / %s\r\nHost: x\r\n\r\n" % ver, 505)
    assert r[1]["content-length"] == str(len(r[2]))


def test_version_without_minor_refused(daemon):
    # "HTTP/2" breaks the RFC 9112 2.3 grammar (HTTP-name "/" DIGIT "." DIGIT):
    # 400 is exact; 505 (the version is unsupported either way) is tolerated
    expect_error_and_close(daemon.port, "GET / HTTP/2\r\nHost: x\r\n\r\n", (400, 505))


def test_http09_simple_request_refused(daemon):
    # "GET /path" without a version is an HTTP/0.9 simple request: 505 names the
    # reason (unsupported version), 400 would be acceptable too
    expect_error_and_close(daemon.port, "GET /healthz\r\n\r\n", (400, 505))


def test_h2_prior_knowledge_preface_refused(daemon):
    # "PRI * HTTP/2.0" is not a request ringside understands: clean error and close
    expect_error_and_close(daemon.port, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400, 505))


def test_h2_preface_in_two_writes_is_refused_at_once(daemon):
    # the preface's first part alone was held until the header timeout (408
    # after 10 s): the version is refused as soon as it is read
    start = time.time()
    expect_error_and_close(daemon.port, "PRI * HTTP/2.0\r\n\r\n", 505)
    assert time.time() - start < 2


# --- RFC 9110/9112 requirements ------------------------------------------------
# These were strict xfails until proto/http1.c enforced what llhttp 8 lets
# through (issue 15).

def test_whitespace_before_colon_400(daemon):
    # RFC 9112 5.1: MUST reject; a smuggling vector behind lenient proxies
    expect_error_and_close(daemon.port, "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400)


def test_empty_field_name_400(daemon):
    # RFC 9110 5.1: field-name is a non-empty token
    expect_error_and_close(daemon.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n: x\r\n\r\n", 400)


def test_http11_without_host_400(daemon):
    # RFC 9112 3.2: MUST respond 400
    expect_error_and_close(daemon.port, "GET /healthz HTTP/1.1\r\n\r\n", 400)


def test_two_host_fields_400(daemon):
    # RFC 9112 3.2: MUST respond 400
    expect_error_and_close(daemon.port, "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)


def test_obs_fold_is_refused(daemon):
    # RFC 9112 5.2: reject with 400 or replace the fold by a space; a server
    # that passes "a\r\n b" on does neither
    expect_error_and_close(daemon.port, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400)


def test_connect_is_refused_and_closed(daemon):
    # no tunnels here: an error, then either the connection closes or the
    # pipelined request is served; never a connection that silently hangs
    c = Conn(daemon.port, timeout=3)
    c.send("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n" + get("/healthz"))
    st, h, _ = c.response()
    assert st >= 400
    if h["connection"] != "close":
        assert c.response()[0] == 200
    else:
        assert c.closed()


def test_chunk_size_over_limit_413_before_data(daemon):
    # a single chunk announcing 1 MB: refused from its size line alone, not
    # after waiting for the data (and a 408 at the header timeout)
    start = time.time()
    expect_error_and_close(daemon.port, "POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n" + AUTH +
                           "Transfer-Encoding: chunked\r\n\r\n100000\r\n", 413)
    assert time.time() - start < 2


def test_expect_100_continue_is_answered(daemon):
    # RFC 9110 10.1.1: the server MUST send 100 or the final status at once;
    # here the 401 is known from the head alone
    c = Conn(daemon.port, timeout=1.5)
    c.send("POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
           "Expect: 100-continue\r\n\r\n")
    st, _, _ = c.response()  # a socket timeout here is the failure
    assert st == 100 or st == 401


# --- half-close, upgrades not taken, heads before bodies (issue 15) ----------

def half_closed_exchange(port, raw, timeout=5):
    """Send <raw>, shutdown(SHUT_WR) as `nc -N` does, read until EOF."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def test_half_closed_requests_are_answered(daemon):
    # item 8: a health checker that half-closes after its request got nothing
    req = get("/healthz").encode()
    answered = sum(half_closed_exchange(daemon.port, req).endswith(b"\r\n\r\nok\n")
                   for _ in range(300))
    assert answered == 300
    # pipelined requests before the half-close are all answered, in order
    out = half_closed_exchange(daemon.port, (get("/healthz") + get("/nope") + get("/healthz")).encode())
    assert out.count(b"HTTP/1.1 ") == 3 and out.index(b" 404 ") > out.index(b" 200 ")
    # a partial request at EOF can never complete: closed, no answer, no hang
    assert half_closed_exchange(daemon.port, b"GET /healthz HTTP/1.1\r\nHo") == b""
    # a half-closed connection is released as soon as its answer is out,
    # not after the 2 s linger kept for peers that may still be sending (a
    # large answer is still queued when the request is handled)
    big = get("/static/console-vnc.js").encode()
    for _ in range(3):
        assert half_closed_exchange(daemon.port, big).startswith(b"HTTP/1.1 200 ")
    settled(daemon, timeout=1.2)


@pytest.mark.parametrize("upgrade", [
    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
], ids=["h2c", "websocket-on-plain-route"])
def test_upgrade_not_taken_keeps_pipelined_requests(daemon, upgrade):
    # item 18: RFC 9110 7.8 lets a server ignore Upgrade; the connection then
    # stays HTTP/1.1 and the requests pipelined after it are served
    c = Conn(daemon.port, timeout=3)
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n" + upgrade + "\r\n" + get("/nope") + get("/healthz"))
    assert c.response()[0] == 200
    assert c.response()[0] == 404
    assert c.response()[2] == b"ok\n"


@pytest.mark.parametrize("path,auth", [
    ("/api/v1/consoles", "Bearer wrong-key-0123456789abcdef"),
    ("/api/v1/consoles", None),
    ("/api/v1/stats", None),
    ("/create", "wrong-key-0123456789abcdef"),
    ("/status", None),
])
def test_unauthenticated_head_gets_401_before_its_body(daemon, path, auth):
    # item 14: the answer comes from the head alone; the body is never awaited
    c = Conn(daemon.port, timeout=2)
    c.send("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n%s\r\n"
           % (path, "Authorization: %s\r\n" % auth if auth else "") + "x" * 100)
    st, h, _ = c.response()
    assert st == 401 and h["connection"] == "close"
    assert c.closed()


def test_expect_100_continue_then_body(daemon):
    # RFC 9110 10.1.1 with a valid key: 100 Continue at once, then the body is
    # read and the request answered
    body = b'{"kind": "vnc", "host": "127.0.0.1", "port": 5999}'
    c = Conn(daemon.port, timeout=2)
    c.send("POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\n" + AUTH +
           "Content-Type: application/json\r\nContent-Length: %d\r\n"
           "Expect: 100-continue\r\n\r\n" % len(body))
    assert c.response()[0] == 100
    c.send(body)
    st, _, resp = c.response()
    assert st == 201 and json.loads(resp)["token"]
    # the connection goes on
    c.send(get("/healthz"))
    assert c.response()[0] == 200


@pytest.mark.skipif(ASAN, reason="ASan's allocator and quarantine make RSS meaningless here")
def test_unauthenticated_bodies_are_not_buffered(daemon_factory):
    # item 14: 2,000 unauthenticated connections each pushing most of a 64 KiB
    # body made ringside buffer it (+160 MB; +130 MB here on the parent
    # commit); answered 401 from the head, they cost ~4 MB. A small receive
    # pool keeps its first touch out of the figure.
    daemon = daemon_factory({"buffers": {"count": 64}, "log_level": "info"})
    n, body = 2000, b"x" * 60000
    head = ("POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n").encode()
    base = rss_kb(daemon.pid)
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            s.setblocking(False)
            try:
                s.send(head + body)
            except OSError:
                pass
            socks.append(s)
        time.sleep(1)
        grown = rss_kb(daemon.pid) - base
    finally:
        for s in socks:
            s.close()
    assert grown < 24 * 1024, "RSS grew by %d KiB" % grown


# --- connections per client (issue 15 item 14) -------------------------------

def open_idle(port, n, source="127.0.0.1"):
    """n keep-alive connections from <source> that each had one request
    answered (so they are accepted and idle): the answers' statuses."""
    socks, statuses = [], []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        socks.append(s)
    for s in socks:
        try:
            s.sendall(get("/healthz").encode())
            statuses.append(int(s.recv(4096).split(b" ", 2)[1]))
        except (OSError, IndexError):
            statuses.append(0)  # reset or closed unanswered
    return socks, statuses


def settled(d, timeout=5.0):
    """Wait until the daemon holds no connection but the metrics scrape's
    own (e.g. the start-up health check's lingers, then closes, and counts
    against its client until it has); fail after <timeout> s."""
    end = time.time() + timeout
    while time.time() < end:
        if metric(d, "ringside_connections_open") <= 1:
            return
        time.sleep(0.02)
    raise AssertionError("connections still open after %.0f s" % timeout)


def metric(d, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_one_client_cannot_fill_the_table(daemon_factory):
    # 65 idle keep-alive connections from one address filled max_conns 64 and
    # every other client was reset; by default one address gets at most half
    # a worker's table
    d = daemon_factory({"workers": 1, "limits": {"max_conns": 64}})
    settled(d)
    socks, st = open_idle(d.port, 65)
    try:
        # at most the 32 allowed are served; the rest are refused with 503
        # — or, while refused ones still hold their slots, find the 64-slot
        # table full and are reset by the engine. Which ones depends on when
        # each silent connection's check ran (16 ms after accept), not on
        # the order the test talks to them.
        assert 16 <= st.count(200) <= 32 and set(st) <= {200, 503, 0}, st
        assert st.count(503) >= 30, st
        # another client is served while the hog keeps all 65 open: the
        # refused ones free their slots once answered and lingered (at most
        # 2 s while the hog keeps them open), so until then it may be reset
        deadline, answer = time.monotonic() + 4, b""
        while not answer.startswith(b"HTTP/1.1 200") and time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", d.port), timeout=5,
                                             source_address=("127.0.0.2", 0))
                s.sendall(get("/healthz").encode())
                answer = s.recv(4096)
                s.close()
            except OSError:
                pass
            if not answer.startswith(b"HTTP/1.1 200"):
                time.sleep(0.1)
        assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        for s in socks:
            s.close()


def test_max_conns_per_client_refuses_with_503(daemon_factory):
    d = daemon_factory({"limits": {"max_conns_per_client": 5}})
    settled(d)
    socks, st = open_idle(d.port, 8)
    try:
        assert st == [200] * 5 + [503] * 3
        c = Conn(d.port, timeout=3)
        st2, h, body = c.response()
        assert st2 == 503 and h["connection"] == "close" and h["retry-after"]
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        assert metric(d, "ringside_connections_refused_per_client_total") == 4
        # a connection that ends gives its place back
        socks.pop(0).close()
        time.sleep(0.2)
        c = Conn(d.port, timeout=3)
        c.send(get("/healthz"))
        assert c.response()[0] == 200
    finally:
        for s in socks:
            s.close()


def test_tls_connection_over_the_client_limit_is_closed(daemon_factory):
    # no answer is possible before a handshake: the refused TLS connection
    # is closed, and counted
    import ssl
    from conftest import free_port
    tls_port = free_port()
    d = daemon_factory({"tls_listen": ["127.0.0.1:%d" % tls_port],
                        "limits": {"max_conns_per_client": 2}})
    settled(d)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    held = []
    try:
        for _ in range(2):
            t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=5))
            t.sendall(get("/healthz").encode())
            assert t.recv(4096).startswith(b"HTTP/1.1 200")
            held.append(t)
        with pytest.raises((ssl.SSLError, OSError)):
            t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=5))
            t.sendall(get("/healthz").encode())
            if not t.recv(4096):
                raise ConnectionResetError("closed unanswered")
        assert metric(d, "ringside_connections_refused_per_client_total") == 1
    finally:
        for t in held:
            t.close()


def test_trusted_proxy_is_not_limited_as_one_client(daemon_factory):
    d = daemon_factory({"limits": {"max_conns_per_client": 3}, "trusted_proxies": ["127.0.0.1/32"]})
    socks, st = open_idle(d.port, 10)
    try:
        assert st == [200] * 10
    finally:
        for s in socks:
            s.close()


# --- timeouts ----------------------------------------------------------------

def test_slowloris_gets_408_while_others_are_served(daemon_factory):
    d = daemon_factory({"limits": {"header_timeout_ms": 1000}})
    slow = Conn(d.port)
    start = time.time()
    stop = threading.Event()

    def trickle():
        try:
            for ch in "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a" * 100:
                if stop.is_set():
                    return
                slow.send(ch)
                time.sleep(0.2)
        except OSError:
            pass

    t = threading.Thread(target=trickle)
    t.start()
    try:
        other = Conn(d.port)
        for _ in range(5):
            t0 = time.time()
            other.send(get("/healthz"))
            assert other.response()[0] == 200
            assert time.time() - t0 < 0.5  # not held up by the slow client
            time.sleep(0.1)
        r = slow.response()
        elapsed = time.time() - start
        assert r is not None and r[0] == 408 and r[1]["connection"] == "close"
        assert 0.9 <= elapsed <= 2.5, elapsed
        assert slow.closed()
    finally:
        stop.set()
        t.join(5)


def test_silent_connection_closed_after_header_timeout(daemon_factory):
    d = daemon_factory({"limits": {"header_timeout_ms": 800}})
    c = Conn(d.port)
    start = time.time()
    assert c.closed(timeout=5)
    assert 0.7 <= time.time() - start < 3


def test_idle_keepalive_closed_after_timeout(daemon_factory):
    d = daemon_factory({"limits": {"keepalive_timeout_ms": 1500}})
    c = Conn(d.port)
    c.send(get("/healthz"))
    assert c.response()[0] == 200
    start = time.time()
    assert c.closed(timeout=6)
    assert 1.2 <= time.time() - start <= 4


def test_active_keepalive_connection_outlives_the_timeout(daemon_factory):
    # the keep-alive timer is re-armed by each request, not counted from accept
    d = daemon_factory({"limits": {"keepalive_timeout_ms": 1500}})
    c = Conn(d.port)
    end = time.time() + 3.5
    while time.time() < end:
        c.send(get("/healthz"))
        assert c.response()[0] == 200
        time.sleep(0.5)


# --- static files --------------------------------------------------------------

STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".html": "text/html",
                ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/"}


def static_files():
    d = os.path.join(ROOT, "www/static")
    return sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))
                  and os.path.splitext(f)[1] in STATIC_TYPES)


def test_static_files_have_types_etag_and_304(daemon):
    files = static_files()
    assert "console.css" in files
    c = Conn(daemon.port)
    for name in files:
        c.send(get("/static/" + name))
        st, h, body = c.response()
        assert st == 200, name
        with open(os.path.join(ROOT, "www/static", name), "rb") as f:
            assert body == f.read(), name
        assert h["content-type"].startswith(STATIC_TYPES[os.path.splitext(name)[1]]), (name, h)
        assert "max-age" in h["cache-control"] and h["etag"].startswith('"')
        assert h["x-content-type-options"] == "nosniff"
        c.send("GET /static/%s HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n\r\n" % (name, h["etag"]))
        st2, h2, body2 = c.response()
        assert st2 == 304 and body2 == b"" and h2["etag"] == h["etag"]
        c.send("GET /static/%s HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"other\"\r\n\r\n" % name)
        assert c.response()[0] == 200
    c.send(get("/static/novnc/core/rfb.js"))
    st3, h3, _ = c.response()
    assert st3 == 200 and h3["content-type"].startswith("text/javascript")


def test_static_head_has_length_and_no_body(daemon):
    c = Conn(daemon.port)
    c.send(get("/static/console.css"))
    _, h, body = c.response()
    c.send("HEAD /static/console.css HTTP/1.1\r\nHost: x\r\n\r\n")
    st, h2, _ = c.response(head_only=True)
    assert st == 200 and h2["content-length"] == str(len(body)) and h2["etag"] == h["etag"]
    c.send(get("/healthz"))
    assert c.response()[2] == b"ok\n"


@pytest.mark.parametrize("path", [
    "/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fetc/passwd",
    "/static/", "/static/console.css%00.js", "/static/nonexistent.css", "/static//etc/passwd",
])
def test_static_outside_or_missing_is_404(daemon, path):
    c = Conn(daemon.port)
    c.send(get(path))
    st, _, body = c.response()
    assert st in (400, 404) and b"root:" not in body


# --- shutdown ------------------------------------------------------------------

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
    assert c.closed()
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


def test_shutdown_stops_accepting(daemon_factory):
    d = daemon_factory()
    busy = Conn(d.port)
    busy.send("GET /static/console.css HTTP/1.1\r\nHost:")  # keeps the drain going
    # let the worker read it first, so the connection is busy when SIGTERM
    # lands (an idle one would be closed after a 250 ms grace)
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert d.proc.poll() is None
    try:
        late = socket.create_connection(("127.0.0.1", d.port), timeout=2)
        late.sendall(get("/healthz").encode())
        late.settimeout(2)
        assert late.recv(100) == b""  # refused, reset or closed unanswered
    except OSError:
        pass
    busy.send(" x\r\n\r\n")
    st, h, _ = busy.response()
    assert st == 200 and h["connection"] == "close"
    assert d.proc.wait(10) == 0


def test_request_in_flight_as_sigterm_lands_is_answered(daemon_factory):
    # An idle keep-alive connection's next request may be on its way when
    # SIGTERM lands (the client cannot know): it was closed unanswered at
    # once. Sent a moment after the signal here, so the race is certain.
    d = daemon_factory()
    conns = []
    for _ in range(20):
        c = Conn(d.port, timeout=5)
        c.send(get("/nope"))
        assert c.response()[0] == 404
        conns.append(c)
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.02)
    for c in conns:
        try:
            c.send(get("/nope"))
        except OSError:
            pass
    answered = 0
    for c in conns:
        try:
            r = c.response()
        except OSError:
            r = None
        answered += r is not None and r[0] == 404 and r[1]["connection"] == "close"
    assert answered == len(conns)
    start = time.time()
    assert d.proc.wait(10) == 0
    assert time.time() - start < 2


def test_healthz_says_draining_during_shutdown(daemon_factory):
    # a load balancer polling /healthz sees the drain and stops sending traffic
    d = daemon_factory()
    c = Conn(d.port)
    c.send("GET /healthz HTTP/1.1\r\nHost:")
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    c.send(" x\r\n\r\n")
    st, h, body = c.response()
    assert (st, body) == (503, b"draining\n") and h["connection"] == "close"
    assert d.proc.wait(10) == 0


# --- load and garbage ------------------------------------------------------------

def test_2000_concurrent_connections(daemon):
    n = 2000
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            socks.append(s)
        req = get("/healthz").encode()
        for s in socks:  # every connection has a request in flight at once
            s.sendall(req)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
        ok = 0
        end = time.time() + 30
        while sel.get_map() and time.time() < end:
            for key, _ in sel.select(1):
                try:
                    chunk = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                key.data.extend(chunk)
                if not chunk or key.data.endswith(b"\r\n\r\nok\n"):
                    ok += key.data.startswith(b"HTTP/1.1 200") and key.data.endswith(b"ok\n")
                    sel.unregister(key.fileobj)
        assert ok == n
    finally:
        sel.close()
        for s in socks:
            s.close()
    c = Conn(daemon.port)
    c.send(get("/healthz"))
    assert c.response()[0] == 200


@pytest.mark.parametrize("prefix", [b"", b"GET /", b"GET / HTTP/1.1\r\n"],
                         ids=["raw", "in-target", "in-headers"])
def test_garbage_is_refused_and_daemon_stays_healthy(daemon, prefix):
    rnd = random.Random(len(prefix))
    for _ in range(3):
        junk = prefix + bytes(rnd.getrandbits(8) for _ in range(1 << 20))
        expect_error_and_close(daemon.port, junk, (400, 414, 431))
    c = Conn(daemon.port)
    c.send(get("/healthz"))
    assert c.response()[0] == 200


def test_log_holds_no_secret(daemon_factory):
    d = daemon_factory()  # log_level debug
    tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5999})["token"]
    near = API_KEY[:-1] + "X"
    reqs = [
        "GET /api/v1/consoles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % API_KEY,
        "GET /api/v1/consoles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % near,
        "GET /nope?key=%s HTTP/1.1\r\nHost: x\r\nX-Api-Key: %s\r\n\r\n" % (API_KEY, API_KEY),
        get("/console/" + tok),
        get("/ws/" + tok),
    ]
    for r in reqs:
        c = Conn(d.port)
        c.send(r)
        assert c.response() is not None
        c.close()
    assert d.stop() == 0
    logs = d.logs()
    assert "started" in logs  # the log is really there
    for secret in (API_KEY, near, tok):
        assert secret not in logs, secret
