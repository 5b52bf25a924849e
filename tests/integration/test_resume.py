"""Resuming a console within console.resume_grace_s (issue 17): the page keeps
a resume secret and opens /ws/<token>?resume=<secret>; after a drop the same
browser takes the same console up again — a terminal keeps its shell, an RFB
console gets a fresh handshake over a reopened upstream — while the bare link
(or a wrong secret) stays a used link, a second window replaces the first
(close 4001), and the grace ending closes the console (resume_expired)."""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, Xvnc, free_port
from conftest import API_KEY, ROOT
from fakes import RawWS
from test_proxmox import Sim, cluster, metric, closed, expect_desktop
from test_tls import client_ctx


def secret():
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def lab():
    with tempfile.TemporaryDirectory(prefix="rs-resume-") as tmp:
        x = Xvnc(tmp, None, "#2e8b57")
        sim = Sim(tmp, x.port)
        try:
            yield sim
        finally:
            sim.stop()
            x.stop()


def start(daemon_factory, lab=None, grace=None, **extra):
    cfg = {}
    if lab is not None:
        cfg["clusters"] = {"lab": cluster(lab)}
    if grace is not None:
        cfg["console"] = {"resume_grace_s": grace}
    cfg.update(extra)
    d = daemon_factory(cfg)
    return d


def ws(d, tok, sec=None):
    path = "/ws/%s%s" % (tok, "?resume=" + sec if sec else "")
    if getattr(d, "tls_port", None):
        return RawWS(d.tls_port, path, tls=client_ctx())
    return RawWS(d.port, path)


def term(d):
    return d.create_console({"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term"})["token"]


def shell(w, cmd, want, timeout=10):
    """Run <cmd> in the terminal; the output up to <want> (bytes)."""
    w.send_frame(2, b"0:%d:" % len(cmd) + cmd)
    out, deadline = b"", time.time() + timeout
    while want not in out and time.time() < deadline:
        op, _, p = w.recv_frame()
        assert op == 2, (op, p)
        out += p
    assert want in out, out
    return out


def drop(w):
    """The network goes away under the page: no close frame, a reset."""
    w.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    w.s.close()


def resumes(d, outcome):
    return metric(d, "ringside_console_resumes_total", {"outcome": outcome})


def gauge(d, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def wait_for(fn, timeout=5):
    end = time.time() + timeout
    while not fn() and time.time() < end:
        time.sleep(0.05)
    return fn()


def page_status(d, tok):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/console/%s" % (d.port, tok), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_terminal_keeps_its_shell_across_drops_on_either_worker(daemon_factory, lab, tmpdir_rs,
                                                                transport):
    audit = os.path.join(tmpdir_rs, "audit.jsonl")
    if transport == "wss":  # the BoringSSL connection moves with the socket
        port = free_port()
        d = start(daemon_factory, lab, audit_log=audit, tls_listen=["127.0.0.1:%d" % port],
                  state_dir=tmpdir_rs)
        d.tls_port = port
    else:
        d = start(daemon_factory, lab, audit_log=audit)
    tok, sec = term(d), secret()
    w = ws(d, tok, sec)
    assert w.status == 101, w.head
    w.send_frame(2, b"1:100:30:")
    mark = os.urandom(4).hex().encode()
    shell(w, b"RS_KEPT=kept-%s; echo s''et-$RS_KEPT\n" % mark, b"set-kept-" + mark)
    # e''nd: the typed line's echo never matches what the shell prints
    pid = shell(w, b"echo pid-$$-e''nd\n", b"-end").split(b"pid-")[-1].split(b"-end")[0]
    # Reconnect until one attempt landed on the other worker (SO_REUSEPORT
    # spreads them): that one is moved there with its descriptor.
    for i in range(16):
        drop(w)
        assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1)
        assert page_status(d, tok) == 200  # a reload finds its page
        w = ws(d, tok, sec)
        assert w.status == 101, w.head
        w.send_frame(2, b"1:100:30:")
        out = shell(w, b"echo got-$RS_KEPT-$$-e''nd\n", b"-end\r")
        assert b"got-kept-%s-%s-end" % (mark, pid) in out, out  # same shell, same variable
        if i >= 3 and gauge(d, "ringside_console_resume_handoffs_total") > 0:
            break
    assert gauge(d, "ringside_console_resume_handoffs_total") > 0
    assert resumes(d, "resumed") == i + 1
    assert closed(d, "browser_closed") == 0
    w.close()
    recs = [json.loads(line) for line in open(audit) if line.strip()]
    res = [r for r in recs if r.get("event") == "console.resumed"]
    assert len(res) == i + 1 and all(r["outcome"] == "resumed" for r in res), res
    assert sec not in open(audit).read() and sec not in d.logs()


def test_bare_link_or_wrong_secret_stays_used_and_a_second_window_replaces(daemon_factory, lab):
    d = start(daemon_factory, lab)
    tok, sec = term(d), secret()
    a = ws(d, tok, sec)
    assert a.status == 101
    a.send_frame(2, b"1:100:30:")
    shell(a, b"echo fi''rst-ok\n", b"first-ok\r")
    # The link forwarded to someone else: refused like any used link.
    for other in (None, secret()):
        assert ws(d, tok, other).status == 404
    assert resumes(d, "refused") == 1
    assert closed(d, "token_invalid") == 2
    # The same browser in a second window: it wins, the first learns why.
    b = ws(d, tok, sec)
    assert b.status == 101, b.head
    op, _, p = a.recv_frame()
    while op != 8:
        op, _, p = a.recv_frame()
    assert int.from_bytes(p[:2], "big") == 4001 and p[2:] == b"replaced by another window", p
    b.send_frame(2, b"1:100:30:")
    shell(b, b"echo sec''ond-ok\n", b"second-ok\r")
    assert resumes(d, "replaced") == 1
    b.close()


def test_grace_ends_the_console_and_the_page_expires(daemon_factory, lab):
    d = start(daemon_factory, lab, grace=1)
    tok, sec = term(d), secret()
    w = ws(d, tok, sec)
    assert w.status == 101
    w.send_frame(2, b"1:100:30:")
    shell(w, b"echo u''p-ok\n", b"up-ok\r")
    drop(w)
    assert wait_for(lambda: closed(d, "resume_expired") == 1, timeout=5)
    assert resumes(d, "expired") == 1
    assert gauge(d, "ringside_console_detached") == 0
    assert page_status(d, tok) == 404
    assert ws(d, tok, sec).status == 404


def test_grace_zero_or_no_secret_is_not_resumable(daemon_factory, lab):
    d = start(daemon_factory, lab, grace=0)
    tok, sec = term(d), secret()
    w = ws(d, tok, sec)
    assert w.status == 101
    drop(w)
    assert wait_for(lambda: closed(d, "browser_closed") == 1)
    assert ws(d, tok, sec).status == 404
    d2 = start(daemon_factory, lab)
    tok = term(d2)
    w = ws(d2, tok)
    assert w.status == 101
    drop(w)
    assert wait_for(lambda: closed(d2, "browser_closed") == 1)
    assert ws(d2, tok, sec).status == 404


def test_page_closing_with_1000_ends_the_console(daemon_factory, lab):
    d = start(daemon_factory, lab)
    tok, sec = term(d), secret()
    w = ws(d, tok, sec)
    assert w.status == 101
    w.send_frame(8, (1000).to_bytes(2, "big"))
    assert wait_for(lambda: closed(d, "browser_closed") == 1)
    assert ws(d, tok, sec).status == 404


class CountingProxy:
    """A TCP forwarder in front of the VNC target: how many upstream
    connections ringside opened."""

    def __init__(self, port):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.accepted = 0
        self.target = port
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            u = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.ls.close()


def rfb_session(w):
    """Handshake, ClientInit; the ServerInit (bytes) the browser got."""
    assert w.rfb_client_handshake() == 0
    w.send_frame(2, b"\x01")
    head = w.recv_data(24)
    return head + w.recv_data(struct.unpack(">I", head[20:24])[0])


def request_frame(w, width, height):
    # Tight and ZRLE first, as noVNC asks: a resumable console must not get them.
    w.send_frame(2, b"\x02\x00" + struct.pack(">H", 3) + struct.pack(">iii", 7, 16, 0))
    w.send_frame(2, struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))


def read_update(w):
    """One whole FramebufferUpdate: it must start right at a message boundary."""
    t, _, n = struct.unpack(">BBH", w.recv_data(4))
    assert t == 0, "not at a message boundary: type %d" % t
    area = 0
    for _ in range(n):
        x, y, rw, rh, enc = struct.unpack(">HHHHi", w.recv_data(12))
        assert enc == 0, "encoding %d (only stateless ones are allowed while resumable)" % enc
        w.recv_data(rw * rh * 4)
        area += rw * rh
    return area


@pytest.mark.parametrize("kind", ["vnc", "pve-vnc"])
def test_rfb_console_resumes_on_the_same_upstream(daemon_factory, lab, xvnc, kind):
    d = start(daemon_factory, lab)
    proxy = CountingProxy(xvnc.port)
    proxies = lambda: len([e for e in lab.control("/log") if e.get("path", "").endswith("vncproxy")])
    before = proxies()
    try:
        if kind == "vnc":
            body = {"kind": "vnc", "host": "127.0.0.1", "port": proxy.port, "password": xvnc.password}
        else:
            body = {"cluster": "lab", "vmid": 100}
        tok, sec = d.create_console(body)["token"], secret()
        w = ws(d, tok, sec)
        init = rfb_session(w)
        assert struct.unpack(">HH", init[:4]) == (1024, 768)
        request_frame(w, 64, 64)
        assert read_update(w) == 64 * 64
        for i in range(3):
            # Drop in the middle of a big frame: the rest is cut at its end.
            w.send_frame(2, struct.pack(">BBHHHH", 3, 0, 0, 0, 1024, 768))
            w.recv_data(1000)
            drop(w)
            assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1), d.logs()[-3000:]
            w = ws(d, tok, sec)
            assert w.status == 101, w.head
            assert rfb_session(w) == init  # replayed from the cache
            request_frame(w, 64, 64)
            assert read_update(w) == 64 * 64
        assert resumes(d, "resumed") == 3
        # A window replaced in the middle of its handshake, then its successor.
        a = ws(d, tok, sec)
        assert a.recv_data(12) == b"RFB 003.008\n"
        w = ws(d, tok, sec)
        op, _, p = a.recv_frame()
        while op != 8:
            op, _, p = a.recv_frame()
        assert int.from_bytes(p[:2], "big") == 4001, p
        assert rfb_session(w) == init
        request_frame(w, 64, 64)
        assert read_update(w) == 64 * 64
        # Same upstream all along: one connection to the target, one vncproxy.
        if kind == "vnc":
            assert proxy.accepted == 1
        else:
            assert proxies() - before == 1
        w.send_frame(8, (1000).to_bytes(2, "big"))
        assert wait_for(lambda: closed(d, "browser_closed") == 1)
    finally:
        proxy.stop()


@pytest.mark.parametrize("kind", ["vnc", "pve-vnc"])
def test_rfb_console_resumes_and_a_second_window_replaces_the_first(daemon_factory, lab, xvnc, kind):
    d = start(daemon_factory, lab)
    if kind == "vnc":
        body = {"kind": "vnc", "host": "127.0.0.1", "port": xvnc.port, "password": xvnc.password}
    else:
        body = {"cluster": "lab", "vmid": 100}
    tok, sec = d.create_console(body)["token"], secret()
    w = expect_desktop(ws(d, tok, sec))
    for i in range(4):
        drop(w)
        assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1)
        w = ws(d, tok, sec)
        assert w.status == 101, w.head
        expect_desktop(w)  # a fresh handshake, then the same VM's screen
    assert resumes(d, "resumed") == 4
    # A second window with the secret: it gets the screen, the first one 4001.
    w2 = RawWS(d.port, "/ws/%s?resume=%s" % (tok, sec))
    assert w2.status == 101, w2.head
    expect_desktop(w2)
    op, _, p = w.recv_frame()
    while op != 8:
        op, _, p = w.recv_frame()
    assert int.from_bytes(p[:2], "big") == 4001, p
    assert resumes(d, "replaced") == 1
    w = w2
    assert metric(d, "ringside_consoles_opened_total", {}) == 1
    w.send_frame(8, (1000).to_bytes(2, "big"))  # the page ends it on purpose
    assert wait_for(lambda: closed(d, "browser_closed") == 1)
    assert gauge(d, "ringside_console_detached") == 0


class OddRfbTarget:
    """A VNC server (security None) that sends a message type ringside
    cannot frame right after its ServerInit: the console can then not keep
    this upstream across a drop and reopens it. Counts its connections."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def serve(c):
        def read(n):
            b = b""
            while len(b) < n:
                d = c.recv(n - len(b))
                if not d:
                    raise EOFError
                b += d
            return b
        try:
            c.sendall(b"RFB 003.008\n")
            read(12)
            c.sendall(b"\x01\x01")  # one security type: None
            read(1)
            c.sendall(b"\x00\x00\x00\x00")
            read(1)  # ClientInit
            pf = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
            c.sendall(struct.pack(">HH", 640, 480) + pf + struct.pack(">I", 3) + b"odd")
            c.sendall(b"\x63odd-message")  # type 99: no RFB server sends it
            while c.recv(65536):
                pass
        except (OSError, EOFError):
            pass
        c.close()

    def stop(self):
        self.ls.close()


def test_rfb_console_that_cannot_be_framed_reopens_its_upstream(daemon_factory):
    d = start(daemon_factory, allowed_targets=["127.0.0.0/8"])
    t = OddRfbTarget()
    try:
        tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": t.port})["token"]
        sec = secret()
        for i in range(2):
            w = ws(d, tok, sec)
            assert w.status == 101, w.head
            init = rfb_session(w)
            assert struct.unpack(">HH", init[:4]) == (640, 480)
            assert w.recv_data(12) == b"\x63odd-message"  # relayed as it came
            drop(w)
            assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1)
        assert t.accepted == 2  # reopened for the resume
        assert resumes(d, "resumed") == 1
    finally:
        t.stop()


def test_a_link_bound_to_an_address_stays_bound_on_resume(daemon_factory, lab):
    d = start(daemon_factory, lab, trusted_proxies=["127.0.0.0/8"])
    tok = d.create_console({"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term",
                            "client_ip": "192.0.2.7"})["token"]
    sec = secret()

    def from_(ip):
        return RawWS(d.port, "/ws/%s?resume=%s" % (tok, sec), extra_headers="X-Forwarded-For: %s\r\n" % ip)

    w = from_("192.0.2.7")
    assert w.status == 101, w.head
    w.send_frame(2, b"1:100:30:")
    shell(w, b"echo bo''und\n", b"bound\r")
    drop(w)
    assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1)
    assert from_("198.51.100.1").status == 403  # the secret alone is not enough
    assert resumes(d, "refused") == 1
    w = from_("192.0.2.7")
    assert w.status == 101, w.head
    assert resumes(d, "resumed") == 1
    w.close()


@pytest.mark.parametrize("kind", ["pve-term", "vnc"])
def test_a_waiting_console_is_listed_and_can_be_killed(daemon_factory, lab, xvnc, tmpdir_rs, kind):
    sock = os.path.join(tmpdir_rs, "admin.sock")
    d = start(daemon_factory, lab, admin_socket=sock)

    def ctl(*args):
        r = subprocess.run([BIN, "ctl", "--socket", sock, *args, "--json"], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if r.stdout.strip() else None

    sec = secret()
    if kind == "vnc":
        tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": xvnc.port,
                                "password": xvnc.password})["token"]
        w = ws(d, tok, sec)
        rfb_session(w)
    else:
        tok = term(d)
        w = ws(d, tok, sec)
        w.send_frame(2, b"1:100:30:")
        shell(w, b"echo wa''it\n", b"wait\r")
    drop(w)
    assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1)
    listed = ctl("sessions")
    assert [s["state"] for s in listed] == ["detached"], listed
    if listed[0]["id"] == 0:
        # ctl refuses id 0 (worker 0's first slot): take the console up
        # once more, which gives it its new connection's id.
        w = ws(d, tok, sec)
        assert w.status == 101
        if kind == "vnc":
            rfb_session(w)
        drop(w)
        assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1)
        listed = ctl("sessions")
        assert listed[0]["id"] != 0 and listed[0]["state"] == "detached", listed
    subprocess.run([BIN, "ctl", "--socket", sock, "kill", "%x" % listed[0]["id"]], check=True,
                   capture_output=True, timeout=10)
    assert wait_for(lambda: closed(d, "killed") == 1)
    assert gauge(d, "ringside_console_detached") == 0
    assert ws(d, tok, sec).status == 404


def test_vnc_browser_gone_before_its_client_init_resumes(daemon_factory, xvnc):
    d = start(daemon_factory)
    tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": xvnc.port,
                            "password": xvnc.password})["token"]
    sec = secret()
    w = ws(d, tok, sec)
    assert w.rfb_client_handshake() == 0  # security phase done, no ClientInit yet
    assert wait_for(lambda: metric(d, "ringside_console_sessions_active", {}) == 1)
    drop(w)
    assert wait_for(lambda: gauge(d, "ringside_console_detached") == 1)
    w = ws(d, tok, sec)
    init = rfb_session(w)  # this ClientInit reaches the target, its ServerInit comes back
    assert struct.unpack(">HH", init[:4]) == (1024, 768)
    request_frame(w, 64, 64)
    assert read_update(w) == 64 * 64


def run_browser(env):
    env = dict(os.environ, RINGSIDE_KEY=API_KEY, NODE_PATH=os.path.join(ROOT, "www/node_modules"), **env)
    out = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/resume.mjs")], env=env,
                         capture_output=True, text=True, timeout=120)
    print(out.stdout, out.stderr)
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr


chromium = pytest.mark.skipif(not shutil.which("chromium"),
                              reason="chromium not installed (scripts/setup installs it)")


@chromium
def test_browser_reload_resumes_the_vnc_console_at_top_level_and_framed(daemon_factory, xvnc):
    """Chromium: reload → the same console on the same upstream connection; a
    fresh browser context is refused; after the grace the expired page; the
    same reload inside an iframe of an allowed origin (tests/e2e/resume.mjs)."""
    allowed = "http://127.0.0.2:%d" % free_port()
    grace = 5  # room for a fresh context to load and be refused on a busy machine
    d = daemon_factory({"console": {"resume_grace_s": grace, "frame_ancestors": [allowed]}})
    run_browser(dict(MODE="vnc", RINGSIDE_URL=d.base, VNC_PORT=str(xvnc.port),
                     VNC_PASSWORD=xvnc.password, COLOUR=xvnc.colour, GRACE_S=str(grace),
                     ALLOWED_ORIGIN=allowed,
                     METRICS_URL="http://127.0.0.1:%d/metrics" % d.metrics_port))


@chromium
def test_browser_reload_keeps_the_terminal_shell_and_the_qemu_session(daemon_factory, lab):
    """Chromium against the Proxmox simulator: a shell variable survives a
    reload of the terminal page, a fresh context is refused, and a QEMU
    console's reload is served by its one vncproxy."""
    d = start(daemon_factory, lab)
    proxies = lambda: len([e for e in lab.control("/log") if e.get("path", "").endswith("vncproxy")])
    before = proxies()
    run_browser(dict(MODE="pve", RINGSIDE_URL=d.base, CLUSTER="lab", COLOUR="#2e8b57",  # the lab's Xvnc
                     METRICS_URL="http://127.0.0.1:%d/metrics" % d.metrics_port))
    assert proxies() - before == 1  # the QEMU console: one vncproxy across the reload
