"""Consoles to plain VNC targets: API, tokens, upgrade, RFB, relay, failures."""
import asyncio
import json
import os
import socket
import struct
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import ASAN, API_KEY, free_port, rss_kb
from fakes import RawWS, Target, echo_target, rfb_none_handshake, streaming_target
from test_proxmox import lab, rs  # noqa: F401 (fixtures)
from rs import Conn, get


def stats(d):
    req = urllib.request.Request(d.base + "/api/v1/stats", headers={"Authorization": "Bearer " + API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def api(d, method, path, body=None, key=API_KEY, ctype="application/json"):
    c = Conn(d.port)
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    head = "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (method, path, len(data))
    if key:
        head += "Authorization: Bearer %s\r\n" % key
    if ctype:
        head += "Content-Type: %s\r\n" % ctype
    c.send(head.encode() + b"\r\n" + data)
    st, h, b = c.response()
    c.close()
    return st, h, (json.loads(b) if b and h.get("content-type", "").startswith("application/json") else b)


def vnc_console(d, port, password=None, **kw):
    body = {"kind": "vnc", "host": "127.0.0.1", "port": port}
    if password is not None:
        body["password"] = password
    body.update(kw)
    return d.create_console(body)


async def rfb_through(url, version=b"RFB 003.008\n"):
    async with websockets.connect(url, subprotocols=["binary"], max_size=None) as ws:
        assert ws.subprotocol == "binary"
        assert await ws.recv() == b"RFB 003.008\n"
        await ws.send(version)
        if version == b"RFB 003.003\n":
            assert await ws.recv() == struct.pack(">I", 1)
        else:
            assert await ws.recv() == b"\x01\x01"
            await ws.send(b"\x01")
            if version == b"RFB 003.008\n":
                assert await ws.recv() == struct.pack(">I", 0)
        await ws.send(b"\x01")  # ClientInit, shared
        si = b""
        while len(si) < 24:
            si += await ws.recv()
        w, h = struct.unpack(">HH", si[:4])
        return w, h


@pytest.mark.parametrize("version", [b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"])
def test_console_reaches_xvnc_with_password(daemon, xvnc, version):
    tok = vnc_console(daemon, xvnc.port, xvnc.password)
    url = "ws://127.0.0.1:%d/ws/%s" % (daemon.port, tok["token"])
    assert asyncio.run(rfb_through(url, version)) == (1024, 768)
    assert tok["url"] == "%s/console/%s" % (daemon.base, tok["token"])


def test_token_is_single_use_and_page_does_not_consume(daemon, xvnc):
    tok = vnc_console(daemon, xvnc.port, xvnc.password)
    for _ in range(3):  # link previewers fetch the page first
        st, h, body = api(daemon, "GET", "/console/" + tok["token"], key=None, ctype=None)
        assert st == 200 and b"/static/console-vnc.js" in body
        assert h["cache-control"] == "no-store" and h["referrer-policy"] == "no-referrer"
    url = "ws://127.0.0.1:%d/ws/%s" % (daemon.port, tok["token"])
    asyncio.run(rfb_through(url))
    ws = RawWS(daemon.port, "/ws/" + tok["token"])
    assert ws.status == 404
    st, _, body = api(daemon, "GET", "/console/" + tok["token"], key=None, ctype=None)
    assert st == 404 and b"expired or was already used" in body
    s = stats(daemon)
    assert s["tokens"]["consumed"] == 1 and s["consoles"]["causes"]["token_invalid"] == 1


def test_unknown_and_malformed_tokens(daemon):
    for tok in ("AAAAAAAAAAAAAAAAAAAAAA", "short", "x" * 200, "%00%00", "../../etc"):
        ws = RawWS(daemon.port, "/ws/" + tok)
        assert ws.status == 404, tok
        st, _, _ = api(daemon, "GET", "/console/" + tok, key=None, ctype=None)
        assert st == 404


def test_api_errors(daemon_factory):
    d = daemon_factory({"api": {"rate_limit_per_s": 1, "rate_limit_burst": 40}, "tokens": {"capacity": 16}})
    good = {"kind": "vnc", "host": "127.0.0.1", "port": 5901}
    assert api(d, "POST", "/api/v1/consoles", good, key=None)[0] == 401
    st, h, b = api(d, "POST", "/api/v1/consoles", good, key="wrong-key-0123456789abcdef")
    assert st == 401 and b["error"]["code"] == "unauthorized" and h["www-authenticate"] == "Bearer"
    assert api(d, "POST", "/api/v1/consoles", good, ctype="text/plain")[0] == 415
    for body, field in [({"kind": "vnc", "port": 5901}, "host"),
                        ({"kind": "vnc", "host": "127.0.0.1", "port": 70000}, "port"),
                        ({"kind": "vnc", "host": "example.com", "port": 1}, "host"),
                        ({"kind": "spice", "host": "127.0.0.1", "port": 1}, "kind"),
                        ({**good, "ttl": 0}, "ttl"),
                        ({**good, "colour": 1}, "colour"),
                        ({**good, "label": "a\nb"}, "label")]:
        st, _, b = api(d, "POST", "/api/v1/consoles", body)
        assert st == 400 and field in b["error"]["message"], (body, b)
    st, _, b = api(d, "POST", "/api/v1/consoles", b'{"kind": "vnc",')
    assert st == 400 and b["error"]["code"] == "invalid_json"
    st, _, b = api(d, "POST", "/api/v1/consoles", b"[1,2]")
    assert st == 400
    # capacity 16: the 17th live token is refused with 503
    for _ in range(16):
        assert api(d, "POST", "/api/v1/consoles", good)[0] == 201
    st, _, b = api(d, "POST", "/api/v1/consoles", good)
    assert st == 503 and b["error"]["code"] == "token_table_full"
    # the rate limit: burst 40 then 1/s
    codes = [api(d, "POST", "/api/v1/consoles", good)[0] for _ in range(30)]
    assert 429 in codes
    st, h, b = api(d, "POST", "/api/v1/consoles", good)
    assert st == 429 and b["error"]["code"] == "rate_limited" and h["retry-after"] == "1"


def test_revoke(daemon):
    tok = vnc_console(daemon, 5901)
    assert api(daemon, "DELETE", "/api/v1/consoles/" + tok["token"])[0] == 204
    assert RawWS(daemon.port, "/ws/" + tok["token"]).status == 404
    assert api(daemon, "DELETE", "/api/v1/consoles/" + tok["token"])[0] == 404
    assert api(daemon, "DELETE", "/api/v1/consoles/" + tok["token"], key=None)[0] == 401


def wakeups(pid):
    """Voluntary context switches of every thread of <pid>."""
    n = 0
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, t)) as f:
            n += sum(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))
    return n


def test_idle_daemon_sleeps_and_still_sweeps_on_time(daemon):
    # Nothing to do: no thread wakes (it used to tick every 500 ms) ...
    time.sleep(1)
    w0 = wakeups(daemon.pid)
    time.sleep(4)
    assert wakeups(daemon.pid) - w0 <= 2
    # ... yet a token issued now is swept soon after it expires: the issue
    # wakes the sleeping main thread, which then sleeps until the expiry.
    vnc_console(daemon, 5901, ttl=1)
    assert stats(daemon)["tokens"]["live"] == 1
    time.sleep(1.0 + 0.5 + 0.5)  # ttl, the sweep's allowed lateness, slack
    t = stats(daemon)["tokens"]
    assert t["live"] == 0 and t["expired"] == 1, t


def test_websocket_handshake_errors_do_not_spend_the_token(daemon_factory):
    d = daemon_factory({"allowed_origins": ["https://panel.example"]})
    tok = vnc_console(d, 5901)["token"]
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(("GET /ws/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n\r\n" % tok).encode())
    head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 426") and "Sec-WebSocket-Version: 13" in head
    s.close()
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(("GET /ws/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % tok).encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 400")
    s.close()
    assert RawWS(d.port, "/ws/" + tok, "Origin: https://evil.example\r\n").status == 403
    ws = RawWS(d.port, "/ws/" + tok, "Origin: https://panel.example\r\n")
    assert ws.status == 101


def test_subprotocol_echo_rules(daemon):
    for offered, echoed in [("binary", "binary"), ("foo, binary", "binary"), (None, None), ("foo", None)]:
        tok = vnc_console(daemon, 5901)["token"]
        ws = RawWS(daemon.port, "/ws/" + tok, protocols=offered)
        assert ws.status == 101
        got = [l.split(":", 1)[1].strip() for l in ws.head.split("\r\n")
               if l.lower().startswith("sec-websocket-protocol:")]
        assert got == ([echoed] if echoed else []), (offered, got)
        ws.close()


def failure_reason(d, port, password=None):
    tok = vnc_console(d, port, password)["token"]
    ws = RawWS(d.port, "/ws/" + tok)
    assert ws.status == 101
    assert ws.recv_data(12) == b"RFB 003.008\n"
    ws.send_frame(2, b"RFB 003.008\n")
    count = ws.recv_data(1)
    assert count == b"\x00", count  # an empty type list: failure with a reason
    n = struct.unpack(">I", ws.recv_data(4))[0]
    reason = ws.recv_data(n).decode()
    code, close_reason = ws.expect_close()
    assert code == 1011 and close_reason
    return reason


def test_connect_refused(daemon):
    port = free_port()
    reason = failure_reason(daemon, port)
    assert "could not connect to the console target" in reason and "refused" in reason.lower()
    assert "127.0.0.1" not in reason and str(port) not in reason
    assert stats(daemon)["consoles"]["causes"]["connect_refused"] == 1


def test_connect_timeout(daemon_factory):
    d = daemon_factory({"limits": {"connect_timeout_ms": 700}})
    # A listener whose accept queue is full drops further SYNs: connect hangs.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(srv.getsockname())
        fillers.append(f)
    time.sleep(0.2)
    start = time.time()
    reason = failure_reason(d, srv.getsockname()[1])
    assert "timed out" in reason and time.time() - start < 5
    assert stats(d)["consoles"]["causes"]["connect_timeout"] == 1
    srv.close()


def test_wrong_vnc_password(daemon, xvnc):
    reason = failure_reason(daemon, xvnc.port, "wrongpw1")
    assert reason.startswith("VNC authentication failed")
    assert stats(daemon)["consoles"]["causes"]["target_auth"] == 1


def test_missing_vnc_password(daemon, xvnc):
    assert "requires a password" in failure_reason(daemon, xvnc.port)


def test_target_not_vnc(daemon):
    def http_target(c, t):
        c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(1)

    t = Target(http_target)
    assert "not a VNC server" in failure_reason(daemon, t.port)
    assert stats(daemon)["consoles"]["causes"]["target_protocol"] == 1
    t.stop()


def relay_ws(d, target_port):
    tok = vnc_console(d, target_port)["token"]
    ws = RawWS(d.port, "/ws/" + tok)
    assert ws.status == 101
    assert ws.rfb_client_handshake() == 0
    return ws


# After the security phase the browser's bytes must be RFB messages: ringside
# checks each one (type known, length bounded) before it reaches the target.
CLIENT_INIT = b"\x01"


def cut_text(payload):
    """A ClientCutText message carrying <payload> (any bytes, 8 + len of them)."""
    return struct.pack(">BxxxI", 6, len(payload)) + payload


def key_event(keysym, down=True):
    return struct.pack(">BBxxI", 4, 1 if down else 0, keysym)


def test_relay_passes_bytes_untouched_both_ways(daemon):
    t = Target(echo_target)
    ws = relay_ws(daemon, t.port)
    for size in (1, 125, 126, 65535, 65536, 200000):
        data = CLIENT_INIT if size == 1 else cut_text(os.urandom(size - 8))
        ws.send_frame(2, data)
        assert ws.recv_data(size) == data
    ws.close()
    t.stop()


def test_target_close_ends_session_with_1000(daemon):
    def closing_target(c, t):
        rfb_none_handshake(c)
        c.recv(1)

    t = Target(closing_target)
    ws = relay_ws(daemon, t.port)
    ws.send_frame(2, b"\x01")
    code, reason = ws.expect_close()
    assert code == 1000 and "closed" in reason
    t.stop()


def test_browser_close_tears_down_target(daemon):
    closed = threading.Event()

    def watching_target(c, t):
        rfb_none_handshake(c)
        while c.recv(4096):
            pass
        closed.set()

    t = Target(watching_target)
    ws = relay_ws(daemon, t.port)
    ws.send_frame(8, struct.pack(">H", 1000) + b"bye")
    assert ws.expect_close()[0] == 1000
    assert closed.wait(5)
    ws.close()
    t.stop()


def test_race_64_upgrades_one_winner_100_times(daemon):
    async def round_once(port):
        tok = vnc_console(daemon, port)["token"]
        url = "ws://127.0.0.1:%d/ws/%s" % (daemon.port, tok)

        async def one():
            try:
                ws = await websockets.connect(url, subprotocols=["binary"], open_timeout=10)
                await ws.close()
                return 1
            except websockets.exceptions.InvalidStatusCode as e:
                assert e.status_code == 404
                return 0
        return sum(await asyncio.gather(*[one() for _ in range(64)]))

    t = Target(echo_target)
    for _ in range(100):
        assert asyncio.run(round_once(t.port)) == 1
    s = stats(daemon)
    assert s["tokens"]["consumed"] == 100 and s["tokens"]["rejected"] >= 6300
    t.stop()


@pytest.mark.skipif(ASAN, reason="ASan quarantines freed memory; LeakSanitizer checks leaks at exit")
def test_expiry_100k_tokens(daemon_factory):
    d = daemon_factory({"tokens": {"capacity": 200000}, "api": {"rate_limit_per_s": 0}, "log_level": "warn"})
    body = json.dumps({"kind": "vnc", "host": "127.0.0.1", "port": 5901, "ttl": 1}).encode()
    req = ("POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (API_KEY, len(body))).encode() + body

    def warm(n):
        c = Conn(d.port)
        for i in range(0, n, 500):
            c.send(req * min(500, n - i))
            for _ in range(min(500, n - i)):
                assert c.response()[0] == 201
        c.close()

    # The allocator's own count of live heap bytes must come back to its
    # baseline after every wave (tight: a leak of 10 B per token fails).
    # RSS is checked loosely: jemalloc keeps a cache that wanders by a few
    # MiB once its plateau is reached after a warm-up wave or two.
    warm(100000)
    time.sleep(2.2)
    s = stats(d)
    assert s["tokens"]["live"] == 0
    heap0, peak = s["heap_allocated_bytes"], rss_kb(d.pid)
    for _ in range(3):
        warm(100000)
        assert stats(d)["tokens"]["live"] > 0
        time.sleep(2.2)
        s = stats(d)
        assert s["tokens"]["live"] == 0
        assert s["heap_allocated_bytes"] <= heap0 + (1 << 20), (heap0, s["heap_allocated_bytes"])
    assert stats(d)["tokens"]["expired"] >= 400000
    assert rss_kb(d.pid) <= peak + 24 * 1024, (peak, rss_kb(d.pid))


def test_slow_browser_throttles_target(daemon_factory):
    d = daemon_factory({"limits": {"session_buffer_bytes": 262144}})
    t = Target(streaming_target)
    ws = relay_ws(d, t.port)
    ws.send_frame(2, b"\x01")
    ws.recv_data(1 << 20)  # the stream flows
    base = rss_kb(d.pid)
    time.sleep(1.0)  # now stop reading
    sent1 = t.sent
    time.sleep(2.0)
    sent2 = t.sent
    # the target is blocked: at most kernel buffers' worth more went out
    assert sent2 - sent1 < 8 << 20, (sent1, sent2)
    assert rss_kb(d.pid) < base + 8192, (base, rss_kb(d.pid))
    ws.recv_data(1 << 20)  # reading again resumes the flow
    ws.close()
    t.stop()


def test_port_pool_exhaustion_and_reuse(daemon_factory):
    d = daemon_factory({"workers": 1, "port_pool": {"source_addresses": ["127.0.0.1"],
                                                     "port_min": 31000, "port_max": 31001}})
    t = Target(echo_target)
    a = relay_ws(d, t.port)
    b = relay_ws(d, t.port)
    assert "no free source port" in failure_reason(d, t.port)
    s = stats(d)
    assert s["consoles"]["causes"]["ports_exhausted"] == 1 and s["consoles"]["ports_in_use"] == 2
    a.send_frame(8, struct.pack(">H", 1000))
    a.expect_close()
    time.sleep(0.3)
    c = relay_ws(d, t.port)  # the released pair is used again
    assert stats(d)["consoles"]["ports_in_use"] == 2
    for w in (b, c):
        w.close()
    t.stop()


def test_link_bound_to_client_address(daemon_factory):
    d = daemon_factory({"tokens": {"bind_client_ip": True}})
    t = Target(echo_target)
    st, _, b = api(d, "POST", "/api/v1/consoles", {"kind": "vnc", "host": "127.0.0.1", "port": t.port})
    assert st == 400 and "client_ip" in b["error"]["message"]
    other = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": t.port, "client_ip": "192.0.2.1"})
    assert RawWS(d.port, "/ws/" + other["token"]).status == 403
    mine = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": t.port, "client_ip": "127.0.0.1"})
    ws = RawWS(d.port, "/ws/" + mine["token"])
    assert ws.status == 101 and ws.rfb_client_handshake() == 0
    s = stats(d)
    assert s["consoles"]["causes"]["token_ip"] == 1 and s["tokens"]["live"] == 1  # the bound one stays
    t.stop()


def test_target_reset_reaches_browser_as_reason(daemon):
    def resetting_target(c, t):
        rfb_none_handshake(c)
        c.recv(1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST

    t = Target(resetting_target)
    ws = relay_ws(daemon, t.port)
    ws.send_frame(2, b"\x01")
    code, reason = ws.expect_close()
    assert code == 1011 and reason == "connection to the console target lost: Connection reset by peer"
    t.stop()


def test_browser_half_close_tears_down_both_legs(daemon):
    closed = threading.Event()

    def watching_target(c, t):
        rfb_none_handshake(c)
        while c.recv(4096):
            pass
        closed.set()

    t = Target(watching_target)
    ws = relay_ws(daemon, t.port)
    ws.s.shutdown(socket.SHUT_WR)  # FIN without a close frame
    assert closed.wait(5)
    time.sleep(0.2)
    assert stats(daemon)["consoles"]["active"] == 0
    t.stop()


def test_idle_sessions_end_active_ones_do_not(daemon_factory):
    d = daemon_factory({"limits": {"session_idle_timeout_s": 1}})
    t = Target(echo_target)
    idle = relay_ws(d, t.port)
    busy = relay_ws(d, t.port)
    start = time.time()
    busy.send_frame(2, CLIENT_INIT)
    assert busy.recv_data(1) == CLIENT_INIT
    while time.time() - start < 2.5:
        busy.send_frame(2, key_event(0x61))
        assert busy.recv_data(8) == key_event(0x61)
        time.sleep(0.2)
    code, reason = idle.expect_close()
    assert code == 1000 and "idle" in reason
    busy.send_frame(2, key_event(0x62))
    assert busy.recv_data(8) == key_event(0x62)
    assert stats(d)["consoles"]["causes"]["idle_timeout"] == 1
    t.stop()


def recording_target(c, t):
    """RFB handshake, then record everything the browser sends (t.got)."""
    rfb_none_handshake(c)
    while True:
        data = c.recv(65536)
        if not data:
            return
        t.got = getattr(t, "got", b"") + data


@pytest.mark.parametrize("name,msg,reason", [
    # the two of the security report: a 4 GiB ClientCutText, 65,535 encodings
    ("cut_text_4g", struct.pack(">BxxxI", 6, 0xFFFFFFFF) + b"x" * 64,
     "ClientCutText with a negative length"),
    ("cut_text_too_big", struct.pack(">BxxxI", 6, (1 << 20) + 1) + b"x" * 64,
     "ClientCutText of 1048577 bytes (limits.rfb_max_cut_text: 1048576)"),
    ("encodings_65535", struct.pack(">BBH", 2, 0, 65535) + b"\0" * 64,
     "SetEncodings with 65535 entries (limits.rfb_max_encodings: 64)"),
    ("unknown_type", b"\x07" + b"\0" * 16, "unknown RFB client message type 7"),
], ids=["cut_text_4g", "cut_text_too_big", "encodings_65535", "unknown_type"])
def test_bad_rfb_message_from_browser_closes_with_reason(daemon, name, msg, reason):
    t = Target(recording_target)
    before = stats(daemon)["consoles"]["causes"]["browser_protocol"]
    ws = relay_ws(daemon, t.port)
    good = CLIENT_INIT + key_event(0x61)
    ws.send_frame(2, good)
    deadline = time.time() + 5
    while getattr(t, "got", b"") != good and time.time() < deadline:
        time.sleep(0.02)
    ws.send_frame(2, msg)
    code, why = ws.expect_close()
    assert code == 1008 and reason in why, (code, why)
    time.sleep(0.2)
    assert t.got == good  # nothing of the bad message reached the target
    assert stats(daemon)["consoles"]["causes"]["browser_protocol"] == before + 1
    ws.close()
    t.stop()


def test_rfb_limits_are_configurable(daemon_factory):
    d = daemon_factory({"limits": {"rfb_max_cut_text": 1024, "rfb_max_encodings": 32}})
    t = Target(echo_target)
    ws = relay_ws(d, t.port)
    encs = struct.pack(">BBH", 2, 0, 32) + struct.pack(">i", -223) * 32
    ok = CLIENT_INIT + cut_text(b"x" * 1024) + encs
    ws.send_frame(2, ok)
    assert ws.recv_data(len(ok)) == ok
    ws.send_frame(2, cut_text(b"x" * 1025))
    code, why = ws.expect_close()
    assert code == 1008 and "limits.rfb_max_cut_text: 1024" in why
    ws = relay_ws(d, t.port)
    ws.send_frame(2, CLIENT_INIT + struct.pack(">BBH", 2, 0, 33) + struct.pack(">i", 0) * 33)
    code, why = ws.expect_close()
    assert code == 1008 and "limits.rfb_max_encodings: 32" in why
    t.stop()


def test_bad_rfb_message_closes_a_proxmox_console_too(rs, lab):
    # Proxmox consoles get the same check (the simulator fronts a real Xvnc).
    from test_proxmox import expect_desktop, open_vnc

    d = rs()
    ws = expect_desktop(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100}))
    ws.send_frame(2, struct.pack(">BBHHHH", 3, 0, 0, 0, 16, 16))  # fine: an update request
    ws.send_frame(2, struct.pack(">BBH", 2, 0, 65535) + b"\0" * 64)
    code, why = ws.expect_close()
    assert code == 1008 and "SetEncodings with 65535 entries" in why, (code, why)
    assert stats(d)["consoles"]["causes"]["browser_protocol"] == 1
    ws.close()
