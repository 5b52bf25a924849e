"""The fleet token store on a real redis-server: links shared by daemons,
consumed exactly once, sealed at rest, and outages answered, counted and
recovered from."""
import base64
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import API_KEY, BIN, free_port, wait_port
from fakes import RawWS, Target, echo_target
from rs import Conn

REDIS = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="redis-server not installed")


class Redis:
    """A throw-away redis-server on loopback, nothing saved; stopped by PID."""

    def __init__(self, tmp, port=None, extra=()):
        self.port = port or free_port()
        self.tmp = tmp
        self.extra = list(extra)
        self.start()

    def start(self):
        listen = (["--port", "0", "--tls-port", str(self.port)] if "--tls-cert-file" in self.extra
                  else ["--port", str(self.port)])
        self.proc = subprocess.Popen(
            [REDIS, *listen, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp, "--daemonize", "no", "--loglevel", "warning",
             "--repl-diskless-sync-delay", "0",
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(self.port, 10, self.proc), "redis-server did not start"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--no-raw", *args],
                             capture_output=True, timeout=10)
        return out.stdout

    def raw(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--raw", *args],
                             capture_output=True, timeout=10)
        return out.stdout


@pytest.fixture
def redis(tmpdir_rs):
    r = Redis(tmpdir_rs)
    yield r
    r.stop()


def fleet_cfg(redis, node, **extra):
    red = {"address": "127.0.0.1:%d" % redis.port, "key_prefix": "rs:", "timeout_ms": 400}
    red.update(extra)
    return {"fleet": {"node": node, "redis": red}}


def metric(d, series):
    """The value of one exact series ("name{labels}") on the metrics listener."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


def page(d, tok):
    c = Conn(d.port)
    c.send("GET /console/%s HTTP/1.1\r\nHost: x\r\n\r\n" % tok)
    st, h, body = c.response()
    c.close()
    return st, h, body


def vnc_link(d, port, **kw):
    body = {"kind": "vnc", "host": "127.0.0.1", "port": port}
    body.update(kw)
    return d.create_console(body)


def test_fleet_link_minted_on_one_box_opens_on_another(daemon_factory, redis):
    a = daemon_factory(fleet_cfg(redis, "box-a"))
    b = daemon_factory(fleet_cfg(redis, "box-b"))
    t = Target(echo_target)
    tok = vnc_link(a, t.port, password="vncpass1", label="ticket-4711")["token"]
    # The page (through either box) does not consume the link.
    for d in (b, a, b):
        st, _, body = page(d, tok)
        assert st == 200 and b"/static/console-vnc.js" in body
    # Box B opens the console; the relay works end to end.
    ws = RawWS(b.port, "/ws/" + tok)
    assert ws.status == 101, ws.head
    assert ws.rfb_client_handshake() == 0
    ws.send_frame(2, b"\x01")  # ClientInit
    assert ws.recv_data(1) == b"\x01"
    cut = struct.pack(">BxxxI", 6, 5) + b"hello"  # ClientCutText, echoed back
    ws.send_frame(2, cut)
    assert ws.recv_data(len(cut)) == cut
    ws.close()
    # Spent across the fleet: neither box honours it again.
    assert RawWS(a.port, "/ws/" + tok).status == 404
    assert page(a, tok)[0] == 404
    assert metric(b, 'ringside_store_links_total{store="redis",outcome="consumed"}') == 1
    t.stop()


def test_fleet_exactly_one_of_64_concurrent_upgrades_wins(daemon_factory, redis):
    a = daemon_factory(fleet_cfg(redis, "box-a"))
    b = daemon_factory(fleet_cfg(redis, "box-b"))
    t = Target(echo_target)
    tok = vnc_link(a, t.port)["token"]
    statuses = []
    lock = threading.Lock()
    go = threading.Event()

    def race(d):
        go.wait()
        ws = RawWS(d.port, "/ws/" + tok)
        with lock:
            statuses.append(ws.status)
        if ws.status == 101:
            assert ws.rfb_client_handshake() == 0
        ws.close()

    threads = [threading.Thread(target=race, args=((a, b)[i % 2],)) for i in range(64)]
    for th in threads:
        th.start()
    go.set()
    for th in threads:
        th.join(30)
    assert len(statuses) == 64
    assert statuses.count(101) == 1, statuses
    assert statuses.count(404) == 63, statuses
    t.stop()


def test_fleet_redis_holds_nothing_in_the_clear(daemon_factory, redis):
    a = daemon_factory(fleet_cfg(redis, "box-a"))
    secret_pw = "Pw-Sekr1t"
    host_tag = "127.0.0.1"
    toks = [vnc_link(a, 5901 + i, password=secret_pw + str(i), label="lbl-%d" % i)["token"]
            for i in range(5)]
    # (the fleet view's rs:box:<node> and rs:boxes hold no link)
    keys = [k for k in redis.raw("--scan").split() if not k.startswith(b"rs:box")]
    assert len(keys) == 10, keys  # tok: and rev: per link
    # Key names are digests in hex and nothing else (so a port, say, can
    # show in one only by chance: "5901" is in ~1 % of 64-digit hex names).
    assert all(re.fullmatch(rb"rs:(tok|rev):[0-9a-f]+", k) for k in keys), keys
    values = b"".join(redis.raw("GET", k) + redis.cli("DUMP", k) for k in keys)
    dump = b"".join(keys) + values
    for tok in toks:
        assert tok.encode() not in dump
        raw = base64.urlsafe_b64decode(tok + "==")
        assert raw not in dump and raw.hex().encode() not in dump
    assert secret_pw.encode() not in dump
    assert host_tag.encode() not in dump and b"5901" not in values
    assert b"lbl-" not in dump and b"test" not in dump  # label, API key name


def test_fleet_revoke_from_any_box(daemon_factory, redis, tmpdir_rs):
    sock = os.path.join(tmpdir_rs, "a.sock")
    a = daemon_factory({**fleet_cfg(redis, "box-a"), "admin_socket": sock})
    b = daemon_factory(fleet_cfg(redis, "box-b"))
    tok = vnc_link(a, 5901)["token"]
    req = urllib.request.Request(b.base + "/api/v1/consoles/" + tok, method="DELETE",
                                 headers={"Authorization": "Bearer " + API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    assert page(a, tok)[0] == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 404
    # By the hash the logs show (box B minted it), through box A's admin socket.
    tok2 = vnc_link(b, 5901)["token"]
    hashes = re.findall(r"token\.issued key=test token=([0-9a-f]{8})", b.logs())
    assert hashes, b.logs()[-2000:]
    assert page(a, tok2)[0] == 200
    r = subprocess.run([BIN, "ctl", "--socket", sock, "revoke", hashes[-1]],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert page(a, tok2)[0] == 404
    r = subprocess.run([BIN, "ctl", "--socket", sock, "revoke", hashes[-1]],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert metric(a, 'ringside_store_links_total{store="redis",outcome="revoked"}') == 1


def test_fleet_redis_down_answers_503_then_old_links_work_again(daemon_factory, redis):
    a = daemon_factory(fleet_cfg(redis, "box-a"))
    t = Target(echo_target)
    tok = vnc_link(a, t.port)["token"]
    # Snapshot by hand (the server itself saves nothing), so the restart
    # below brings the link back as a persistent Redis would.
    assert b"OK" in redis.cli("SAVE")
    redis.stop()
    time.sleep(0.2)
    # The API: 503 store_unavailable with Retry-After, quickly.
    t0 = time.time()
    c = Conn(a.port)
    body = b'{"kind":"vnc","host":"127.0.0.1","port":%d}' % t.port
    c.send(b"POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
           API_KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
           str(len(body)).encode() + b"\r\n\r\n" + body)
    st, h, b = c.response()
    c.close()
    assert st == 503 and b"store_unavailable" in b and h.get("retry-after") == "1", (st, h, b)
    assert time.time() - t0 < 2
    # The page: a readable 503.
    st, h, body = page(a, tok)
    assert st == 503 and b"temporarily unavailable" in body
    # The upgrade: a WebSocket closed with 1013 and a readable reason.
    ws = RawWS(a.port, "/ws/" + tok)
    assert ws.status == 101, ws.head
    code, reason = ws.expect_close()
    assert code == 1013 and "temporarily unavailable" in reason
    ws.close()
    assert metric(a, 'ringside_store_links_total{store="redis",outcome="store_unavailable"}') >= 3
    assert metric(a, 'ringside_consoles_closed_total{kind="none",cause="store_unavailable"}') == 1
    # Redis back (same port): the link minted before the outage works.
    redis.start()
    end = time.time() + 10
    while time.time() < end and page(a, tok)[0] != 200:
        time.sleep(0.1)
    assert page(a, tok)[0] == 200
    ws = RawWS(a.port, "/ws/" + tok)
    assert ws.status == 101, ws.head
    assert ws.rfb_client_handshake() == 0
    ws.close()
    t.stop()


def test_fleet_slow_redis_times_out_without_blocking_and_pipelining_holds(daemon_factory, redis):
    a = daemon_factory(fleet_cfg(redis, "box-a"))
    tok = vnc_link(a, 5901)["token"]
    # Requests pipelined behind a page that waits for Redis are answered
    # after it, in order.
    c = Conn(a.port)
    c.send("GET /console/%s HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
           "GET /console/%s HTTP/1.1\r\nHost: x\r\n\r\n" % (tok, tok + "x"))
    assert c.response()[0] == 200
    st, _, body = c.response()
    assert st == 200 and body == b"ok\n"
    assert c.response()[0] == 404
    c.close()
    # Redis stalls (stopped, not gone: connections hang): a browser that
    # gives up while its page waits costs nothing; the API answers 503
    # within the command timeout; the worker serves others meanwhile.
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        gone = Conn(a.port)
        gone.send("GET /console/%s HTTP/1.1\r\nHost: x\r\n\r\n" % tok)
        gone.close()
        c = Conn(a.port)
        t0 = time.time()
        body = b'{"kind":"vnc","host":"127.0.0.1","port":5901}'
        c.send(b"POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               API_KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
               str(len(body)).encode() + b"\r\n\r\n" + body)
        h = Conn(a.port)
        h.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert h.response()[0] == 200
        assert time.time() - t0 < 0.3  # answered while the API request waits
        h.close()
        st, hd, b = c.response()
        assert st == 503 and b"store_unavailable" in b and hd["retry-after"] == "1"
        assert time.time() - t0 < 2
        c.close()
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    assert metric(a, 'ringside_redis_errors_total{cause="timeout"}') >= 1
    # Once Redis answers again the same link is still good.
    end = time.time() + 10
    while time.time() < end and page(a, tok)[0] != 200:
        time.sleep(0.1)
    assert page(a, tok)[0] == 200


SENTINEL = "/usr/bin/redis-sentinel"


class Sentinel:
    def __init__(self, tmp, master_port):
        self.port = free_port()
        self.conf = os.path.join(tmp, "sentinel-%d.conf" % self.port)
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                    "sentinel monitor ringside 127.0.0.1 %d 1\n"
                    "sentinel down-after-milliseconds ringside 400\n"
                    "sentinel failover-timeout ringside 2000\n"
                    "sentinel parallel-syncs ringside 1\n" % (self.port, tmp, master_port))
        self.proc = subprocess.Popen([SENTINEL, self.conf, "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(self.port, 10, self.proc), "redis-sentinel did not start"

    def master(self):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--raw", "SENTINEL",
                              "get-master-addr-by-name", "ringside"],
                             capture_output=True, text=True, timeout=5).stdout.split()
        return int(out[1]) if len(out) == 2 else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.mark.skipif(not os.path.exists(SENTINEL), reason="redis-sentinel not installed")
def open_settled(port, tok, tries=50):
    """Open <tok>, trying again while the worker met answers 101 and then
    1013 (its store connections still on their way to the new master)."""
    for _ in range(tries):
        ws = RawWS(port, "/ws/" + tok)
        if ws.status != 101:
            return ws, None
        first = ws.recv_frame()
        if first[0] != 8:
            return ws, first
        assert struct.unpack(">H", first[2][:2])[0] == 1013, first
        ws.close()
        time.sleep(0.1)
    raise AssertionError("still 1013 after %d attempts" % tries)


def test_fleet_follows_the_master_sentinel_elects(daemon_factory, redis, tmpdir_rs):
    replica = Redis(tmpdir_rs)
    replica.cli("REPLICAOF", "127.0.0.1", str(redis.port))
    sentinel = Sentinel(tmpdir_rs, redis.port)
    try:
        a = daemon_factory({"fleet": {"node": "box-a", "redis": {"timeout_ms": 400},
                                      "sentinel": {"addresses": ["127.0.0.1:%d" % sentinel.port],
                                                   "master": "ringside"}}})
        t = Target(echo_target)
        tok = vnc_link(a, t.port)["token"]
        # The link reaches the replica before the master goes away.
        end = time.time() + 10
        def links():  # not the fleet view's rs:box:<node> and rs:boxes
            return [k for k in replica.raw("--scan").split() if not k.startswith(b"rs:box")]
        while time.time() < end and not links():
            time.sleep(0.05)
        assert len(links()) == 2
        redis.proc.kill()  # the master dies at once
        redis.proc.wait()
        t0 = time.time()
        while time.time() < t0 + 15 and sentinel.master() != replica.port:
            time.sleep(0.1)
        assert sentinel.master() == replica.port, "sentinel did not promote the replica"
        # New links work again through the elected master, and the old one
        # (replicated before the failure) opens exactly once.
        while time.time() < t0 + 20:
            try:
                tok2 = vnc_link(a, t.port)["token"]
                break
            except AssertionError:
                time.sleep(0.2)
        else:
            raise AssertionError("no new link after the failover: " + a.logs()[-2000:])
        print("new links after %.1f s" % (time.time() - t0))
        # A worker whose connections are still backing off says "try again"
        # (1013) without touching the link: the browser's retry opens it.
        # Each worker follows on its own, so every attempt may meet one.
        ws, first = open_settled(a.port, tok)
        assert ws.status == 101 and first[2] == b"RFB 003.008\n", (ws.head, first)
        ws.close()
        ws, _ = open_settled(a.port, tok)
        assert ws.status == 404, ws.head
        ws.close()
        assert page(a, tok2)[0] == 200
        assert metric(a, "ringside_redis_failovers_total") >= 1
        t.stop()
    finally:
        sentinel.stop()
        replica.stop()


def test_fleet_over_tls_with_auth(daemon_factory, tmpdir_rs):
    cert, key = os.path.join(tmpdir_rs, "redis-cert.pem"), os.path.join(tmpdir_rs, "redis-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    r = Redis(tmpdir_rs, extra=["--tls-cert-file", cert, "--tls-key-file", key,
                                "--tls-ca-cert-file", cert, "--tls-auth-clients", "no",
                                "--requirepass", "redis-Pw-1"])
    try:
        a = daemon_factory(fleet_cfg(r, "box-a", tls=True, tls_ca_file=cert, password="redis-Pw-1",
                                     db=3))
        t = Target(echo_target)
        tok = vnc_link(a, t.port)["token"]
        assert page(a, tok)[0] == 200
        ws = RawWS(a.port, "/ws/" + tok)
        assert ws.status == 101 and ws.rfb_client_handshake() == 0
        ws.close()
        assert page(a, tok)[0] == 404
        out = subprocess.run([REDIS_CLI, "-p", str(r.port), "--tls", "--cacert", cert, "-a",
                              "redis-Pw-1", "--no-auth-warning", "-n", "3", "EVAL",
                              # links only, not the fleet view's rs:box* keys
                              "return #redis.call('KEYS', 'rs:tok:*') + "
                              "#redis.call('KEYS', 'rs:rev:*')", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        assert out.strip() == "1", out  # the rev: index left; the link itself is spent
        assert "redis-Pw-1" not in a.logs()
        t.stop()
    finally:
        r.stop()


def test_fleet_bound_link_stays_for_its_owner(daemon_factory, redis):
    a = daemon_factory(fleet_cfg(redis, "box-a"))
    b = daemon_factory(fleet_cfg(redis, "box-b"))
    t = Target(echo_target)
    tok = vnc_link(a, t.port, client_ip="127.0.0.1")["token"]
    tok_other = vnc_link(a, t.port, client_ip="192.0.2.7")["token"]
    ws = RawWS(b.port, "/ws/" + tok_other)
    assert ws.status == 403 and "token_bound" in ws.head + ws.s.recv(4096).decode()
    ws.close()
    # Spent by nobody: written back for its rightful owner, on every box.
    assert page(a, tok_other)[0] == 200
    ws = RawWS(b.port, "/ws/" + tok)
    assert ws.status == 101 and ws.rfb_client_handshake() == 0
    ws.close()
    assert metric(b, 'ringside_store_links_total{store="redis",outcome="consume_bound"}') == 1
    t.stop()


def test_fleet_consume_waits_for_replicas(daemon_factory, redis, tmpdir_rs):
    t = Target(echo_target)
    # No replica: WAIT 1 sees none, so the console is refused (and counted)
    # rather than opened on a consumption a failover could undo. Nobody
    # opened it, so the link is put back for the page's retry.
    a = daemon_factory(fleet_cfg(redis, "box-a", consume_replicas=1, consume_wait_ms=100))
    refused = vnc_link(a, t.port)["token"]
    ws = RawWS(a.port, "/ws/" + refused)
    assert ws.status == 101
    code, reason = ws.expect_close()
    assert code == 1013 and "temporarily unavailable" in reason
    ws.close()
    assert metric(a, 'ringside_store_links_total{store="redis",outcome="replicas_short"}') == 1
    # With a replica attached, the same setting opens consoles.
    replica = Redis(tmpdir_rs)
    try:
        replica.cli("REPLICAOF", "127.0.0.1", str(redis.port))
        end = time.time() + 10
        while time.time() < end and b"state=online" not in redis.raw("INFO", "replication"):
            time.sleep(0.05)
        # (a generous WAIT: the replica acknowledges within a loaded box's time)
        b = daemon_factory(fleet_cfg(redis, "box-b", consume_replicas=1, consume_wait_ms=1500,
                                     timeout_ms=2000))
        for tok in (refused, vnc_link(b, t.port)["token"]):
            ws = RawWS(b.port, "/ws/" + tok)
            assert ws.status == 101 and ws.rfb_client_handshake() == 0
            ws.close()
        assert metric(b, 'ringside_store_links_total{store="redis",outcome="consumed"}') == 2
        # ... once: the put-back link is spent now.
        ws = RawWS(b.port, "/ws/" + refused)
        assert ws.status == 404, ws.head
        ws.close()
    finally:
        replica.stop()
        t.stop()


def test_fleet_bytes_sent_with_the_upgrade_survive_the_store_round_trip(daemon_factory, redis):
    a = daemon_factory(fleet_cfg(redis, "box-a"))
    t = Target(echo_target)
    tok = vnc_link(a, t.port)["token"]
    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    mask = os.urandom(4)
    payload = b"RFB 003.008\n"
    frame = bytes([0x82, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))
    # The client's RFB version rides in the same segment as the upgrade,
    # while the upgrade waits for Redis: it must reach the session.
    s.sendall(("GET /ws/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: binary\r\n\r\n" % (tok, key)).encode() + frame)
    buf = b""
    while b"\x01\x01" not in buf.split(b"\r\n\r\n", 1)[-1]:
        chunk = s.recv(4096)
        assert chunk, buf
        buf += chunk
    assert buf.startswith(b"HTTP/1.1 101")
    body = buf.split(b"\r\n\r\n", 1)[1]
    assert b"RFB 003.008\n" in body and body.endswith(b"\x01\x01")  # security types: None
    s.close()
    t.stop()


def test_fleet_proxmoxvnc_create_and_inline_credentials_sealed(daemon_factory, redis):
    from test_api_hardening import INLINE, KEYS, create
    a = daemon_factory({**fleet_cfg(redis, "box-a"), "api_keys": KEYS, "inline_upstreams": INLINE})
    b = daemon_factory({**fleet_cfg(redis, "box-b"), "api_keys": KEYS, "inline_upstreams": INLINE})
    st, _, body = create(a, KEYS[0]["key"], {"hostname": "127.0.0.1", "port": "8006",
                                             "node": "pve-secret-node", "username": "u@pve",
                                             "password": "Inline-Pw-77", "vmid": "100"})
    assert st == 200 and body["status"] == "success", body
    tok = body["token"]
    st, _, _ = page(b, tok)
    assert st == 200  # minted through ProxmoxVNC's route on A, live on B
    dump = b"".join(redis.raw("GET", k) + k for k in redis.raw("--scan").split())
    for secret in (tok.encode(), b"Inline-Pw-77", b"pve-secret-node", b"u@pve", b"127.0.0.1"):
        assert secret not in dump, secret
    # Redis down: /create answers in its own shape, 503 store_unavailable.
    redis.stop()
    st, _, body = create(a, KEYS[0]["key"])
    assert st == 503 and body["status"] == "error" and body["code"] == "store_unavailable", body


def test_fleet_key_console_limit_counts_per_box_and_keeps_the_link(daemon_factory, redis):
    a = daemon_factory({**fleet_cfg(redis, "box-a"),
                        "api_keys": [{"name": "test", "key": API_KEY, "max_consoles": 1}]})
    t = Target(echo_target)
    tok1 = vnc_link(a, t.port)["token"]
    tok2 = vnc_link(a, t.port)["token"]
    ws1 = RawWS(a.port, "/ws/" + tok1)
    assert ws1.status == 101 and ws1.rfb_client_handshake() == 0
    ws2 = RawWS(a.port, "/ws/" + tok2)
    assert ws2.status == 429 and "key_console_limit" in ws2.head + ws2.s.recv(4096).decode()
    ws2.close()
    ws1.close()
    # The refused link went back to Redis: it opens once the first console is gone.
    end = time.time() + 10
    while time.time() < end:
        ws2 = RawWS(a.port, "/ws/" + tok2)
        if ws2.status != 429:
            break
        ws2.close()
        time.sleep(0.1)
    assert ws2.status == 101 and ws2.rfb_client_handshake() == 0
    ws2.close()
    t.stop()
