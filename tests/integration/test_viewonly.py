"""View-only consoles (issue 17): the browser sees the screen, and ringside
drops every input message it sends before the target — checked at the target
(a fake VNC server recording every byte after the handshake; a Proxmox
simulator terminal whose "shell" records its input and window size)."""
import os
import shutil
import socket
import subprocess
import struct
import tempfile
import time

import pytest

from conftest import API_KEY, ROOT
from fakes import RawWS, Target, recv_exact, rfb_none_handshake
from test_audit import records

# The browser->target messages noVNC may send (RFC 6143 7.5 and extensions).
CLIENT_INIT = b"\x01"
SET_PIXEL_FORMAT = b"\x00\x00\x00\x00" + bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])
SET_ENCODINGS = b"\x02\x00\x00\x02" + struct.pack(">ii", 0, -223)
FB_UPDATE_REQUEST = b"\x03\x00" + struct.pack(">HHHH", 0, 0, 1024, 768)
FENCE = b"\xf8\x00\x00\x00" + struct.pack(">I", 0) + b"\x00"
KEY = b"\x04\x01\x00\x00" + struct.pack(">I", 0x61)
POINTER = b"\x05\x01" + struct.pack(">HH", 16, 16)
CUT_TEXT = b"\x06\x00\x00\x00" + struct.pack(">I", 5) + b"hello"
XVP = b"\xfa\x00\x01\x04"  # xvp reboot
SET_DESKTOP_SIZE = b"\xfb\x00" + struct.pack(">HH", 800, 600) + b"\x01\x00" + bytes(16)
QEMU_KEY = b"\xff\x00\x00\x01" + struct.pack(">II", 0x61, 0x1e)

VIEW = [SET_PIXEL_FORMAT, SET_ENCODINGS, FB_UPDATE_REQUEST, FENCE]
INPUT = [KEY, POINTER, CUT_TEXT, XVP, SET_DESKTOP_SIZE, QEMU_KEY]


def recording_target(c, t):
    """RFB security None, then record every byte; answer ClientInit with a
    'screen' so the viewer can see updates arrive."""
    rfb_none_handshake(c)
    t.got = recv_exact(c, 1)
    c.sendall(b"SCREEN-1")
    while True:
        data = c.recv(65536)
        if not data:
            return
        t.got += data
        if b"SCREEN-2" not in t.sent_marks:
            t.sent_marks.append(b"SCREEN-2")
            c.sendall(b"SCREEN-2")


def new_target():
    t = Target(recording_target)
    t.got, t.sent_marks = b"", []
    return t


def wait_bytes(t, n, timeout=5):
    end = time.time() + timeout
    while len(t.got) < n and time.time() < end:
        time.sleep(0.02)


def run_rfb(d, view_only, split):
    """Open a console, send every message kind; return what the target got."""
    t = new_target()
    body = {"kind": "vnc", "host": "127.0.0.1", "port": t.port, "label": "vo"}
    if view_only is not None:
        body["view_only"] = view_only
    tok = d.create_console(body)["token"]
    ws = RawWS(d.port, "/ws/" + tok)
    assert ws.status == 101, ws.head
    assert ws.rfb_client_handshake() == 0
    ws.send_frame(2, CLIENT_INIT)
    assert ws.recv_data(8) == b"SCREEN-1"
    stream = b"".join(m for pair in zip(VIEW + [b""] * 2, INPUT) for m in pair) + FB_UPDATE_REQUEST
    if split:
        # Input messages cut across WebSocket frames at every byte: the filter
        # must recognise a key event whose bytes arrive one at a time.
        for i in range(len(stream)):
            ws.send_frame(2, stream[i:i + 1])
    else:
        ws.send_frame(2, stream)
    assert ws.recv_data(8) == b"SCREEN-2", "the screen keeps updating"
    want = CLIENT_INIT + b"".join(VIEW) + FB_UPDATE_REQUEST
    wait_bytes(t, len(want) if view_only else 1 + len(stream))
    # Anything still in flight would arrive now.
    time.sleep(0.3)
    ws.close()
    t.stop()
    return t.got, stream


@pytest.mark.parametrize("split", [False, True], ids=["one-frame", "byte-frames"])
def test_view_only_rfb_drops_every_input_message(daemon_factory, tmpdir_rs, split):
    audit = os.path.join(tmpdir_rs, "audit.jsonl")
    d = daemon_factory({"audit_log": audit})
    got, stream = run_rfb(d, True, split)
    assert got == CLIENT_INIT + b"".join(VIEW) + FB_UPDATE_REQUEST, got.hex()
    # The same stream on an ordinary console reaches the target whole.
    got, stream = run_rfb(d, None, split)
    assert got == CLIENT_INIT + stream, got.hex()
    issued = records(audit, "token.issued", 2)
    opened = records(audit, "console.opened", 2)
    assert issued[0]["view_only"] is True and "view_only" not in issued[1]
    assert opened[0]["view_only"] is True and "view_only" not in opened[1]
    assert records(audit, "console.closed", 2)[0]["view_only"] is True
    assert any("token.issued" in l and "view_only" in l for l in d.logs().splitlines())


def test_view_only_rfb_still_checks_messages(daemon):
    """A view-only console runs the same parser: a malformed message ends it
    instead of being skipped (its bytes would shift the framing)."""
    t = new_target()
    tok = daemon.create_console({"kind": "vnc", "host": "127.0.0.1", "port": t.port,
                                 "view_only": True})["token"]
    ws = RawWS(daemon.port, "/ws/" + tok)
    assert ws.rfb_client_handshake() == 0
    ws.send_frame(2, CLIENT_INIT)
    assert ws.recv_data(8) == b"SCREEN-1"
    ws.send_frame(2, b"\x07" + bytes(20))  # no such message type
    code, reason = ws.expect_close()
    assert code == 1008, (code, reason)
    ws.close()
    t.stop()
    assert t.got == CLIENT_INIT


def test_view_only_field_is_checked(daemon):
    for bad in ("yes", 1, [], {}):
        r = daemon.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5900,
                                   "view_only": bad}, expect=400)
        assert r["error"]["code"] == "invalid_field" and "view_only" in r["error"]["message"]
    daemon.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5900, "view_only": False})


# --- terminals: the Proxmox simulator's LXC runs a recording "shell" ---

RECORDER = r"""
import fcntl, os, signal, struct, sys, termios, threading, time, tty
rec = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
def winch(*_):
    rows, cols = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, bytes(8)))[:2]
    os.write(rec, b"winch %d %d\n" % (cols, rows))
signal.signal(signal.SIGWINCH, winch)
tty.setraw(0)
os.write(rec, b"start\n")
def tick():
    i = 0
    while True:
        os.write(1, b"tick-%d\r\n" % i)
        i += 1
        time.sleep(0.1)
threading.Thread(target=tick, daemon=True).start()
while True:
    d = os.read(0, 4096)
    if not d:
        break
    os.write(rec, b"input " + d + b"\n")
"""


@pytest.fixture(scope="module")
def term_lab():
    from test_proxmox import Sim
    with tempfile.TemporaryDirectory(prefix="rs-vo-") as tmp:
        rec = os.path.join(tmp, "recorder.log")
        script = os.path.join(tmp, "recorder.py")
        with open(script, "w") as f:
            f.write(RECORDER)
        sim = Sim(tmp, 1, vms=[{"vmid": 200, "type": "lxc", "node": "pve1", "status": "running",
                                "name": "ct", "shell": ["/usr/bin/python3", script, rec]}])
        sim.rec = rec
        try:
            yield sim
        finally:
            sim.stop()


def run_term(d, lab, view_only):
    open(lab.rec, "w").close()
    body = {"cluster": "lab", "node": "pve1", "vmid": 200, "type": "lxc", "console": "term"}
    if view_only:
        body["view_only"] = True
    tok = d.create_console(body)["token"]
    ws = RawWS(d.port, "/ws/" + tok)
    assert ws.status == 101, ws.head

    def ticks(n):
        out, deadline = b"", time.time() + 10
        while out.count(b"tick-") < n and time.time() < deadline:
            op, _, p = ws.recv_frame()
            assert op == 2, (op, p)
            out += p
        assert out.count(b"tick-") >= n, "the viewer sees the terminal's output"
    ticks(1)  # the recorder runs (its SIGWINCH handler is set)
    ws.send_frame(2, b"1:100:30:")
    ws.send_frame(2, b"2")
    cmd = b"touch /tmp/never\n"
    ws.send_frame(2, b"0:%d:" % len(cmd) + cmd)
    ticks(5)
    time.sleep(0.3)
    ws.close()
    return open(lab.rec, "rb").read()


def test_view_only_terminal_drops_input_and_resize(daemon_factory, term_lab):
    from test_proxmox import cluster
    d = daemon_factory({"clusters": {"lab": cluster(term_lab, nodes=("pve1",))}})
    rec = run_term(d, term_lab, True)
    assert rec.startswith(b"start\n"), rec
    assert b"input" not in rec and b"winch" not in rec, rec
    # An ordinary terminal gets both (the recorder works).
    rec = run_term(d, term_lab, False)
    assert b"winch 100 30" in rec and b"input touch /tmp/never" in rec, rec


# --- Chromium: the page in a real browser, keys typed at a view-only console ---

FIRST, SECOND = (200, 30, 30), (30, 30, 200)
FB_W, FB_H = 64, 48


def msg_len(b):
    """Length of the browser message at the start of <b>, None while unknown."""
    if not b:
        return None
    t = b[0]
    fixed = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}
    if t in fixed:
        return fixed[t]
    if t == 2:
        return 4 + 4 * struct.unpack(">H", b[2:4])[0] if len(b) >= 4 else None
    if t == 6:
        return 8 + struct.unpack(">I", b[4:8])[0] if len(b) >= 8 else None
    if t == 248:
        return 9 + b[8] if len(b) >= 9 else None
    if t == 251:
        return 8 + 16 * b[6] if len(b) >= 8 else None
    if t == 255:
        if len(b) < 2:
            return None
        if b[1] == 0:
            return 12
        return (10 if b[3] == 2 else 4) if len(b) >= 4 else None
    raise AssertionError("unknown message type %d" % t)


def fake_vnc(c, t):
    """A small RFB server: one screen, then another 1.5 s later; records the
    type of every message the browser's side sends, and the key events."""
    rec = {"types": [], "keys": []}
    t.records.append(rec)
    rfb_none_handshake(c)
    recv_exact(c, 1)  # ClientInit
    c.sendall(struct.pack(">HHBBBBHHHBBB3xI", FB_W, FB_H, 32, 24, 0, 1, 255, 255, 255, 0, 8, 16, 4)
              + b"fake")
    start, buf, last, pending = time.time(), b"", None, False

    def frame(colour):
        c.sendall(b"\x00\x00\x00\x01" + struct.pack(">HHHHi", 0, 0, FB_W, FB_H, 0)
                  + bytes([*colour, 0]) * (FB_W * FB_H))
    c.settimeout(0.05)
    while True:
        colour = FIRST if time.time() - start < 1.5 else SECOND
        try:
            data = c.recv(65536)
            if not data:
                return
            buf += data
        except socket.timeout:
            pass
        while True:
            n = msg_len(buf)
            if n is None or len(buf) < n:
                break
            m, buf = buf[:n], buf[n:]
            rec["types"].append(m[0])
            if m[0] == 4:
                rec["keys"].append(struct.unpack(">I", m[4:8])[0])
            if m[0] == 3 and not m[1]:
                frame(colour)
                last = colour
            elif m[0] == 3:
                pending = True
        if pending and colour != last:
            frame(colour)
            last, pending = colour, False


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed (scripts/setup installs it)")
def test_view_only_console_in_chromium(daemon):
    t = Target(fake_vnc)
    t.records = []
    env = dict(os.environ, RINGSIDE_URL=daemon.base, RINGSIDE_KEY=API_KEY, VNC_PORT=str(t.port),
               NODE_PATH=os.path.join(ROOT, "www/node_modules"))
    out = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/viewonly_console.mjs")], env=env,
                         capture_output=True, text=True, timeout=180)
    t.stop()
    print(out.stdout, out.stderr)
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr
    assert len(t.records) == 2, t.records
    viewer, ordinary = t.records
    # The viewer's browser kept asking for updates, yet not one key or
    # pointer event reached the server.
    assert viewer["types"].count(3) >= 2, viewer["types"]
    assert not set(viewer["types"]) & {4, 5, 6, 250, 251, 255}, viewer["types"]
    # The same typing on an ordinary console does arrive (the check can fail).
    assert 4 in ordinary["types"] and 5 in ordinary["types"], ordinary["types"]
    assert ord("s") in ordinary["keys"] and 0xff0d in ordinary["keys"], ordinary["keys"]


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed (scripts/setup installs it)")
def test_view_only_terminal_in_chromium(daemon_factory, term_lab):
    from test_proxmox import cluster
    d = daemon_factory({"clusters": {"lab": cluster(term_lab, nodes=("pve1",))}})
    open(term_lab.rec, "w").close()
    env = dict(os.environ, RINGSIDE_URL=d.base, RINGSIDE_KEY=API_KEY, TERM_CLUSTER="lab",
               NODE_PATH=os.path.join(ROOT, "www/node_modules"))
    out = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/viewonly_console.mjs")], env=env,
                         capture_output=True, text=True, timeout=180)
    print(out.stdout, out.stderr)
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr
    rec = open(term_lab.rec, "rb").read()
    assert rec.startswith(b"start\n"), rec
    assert b"input" not in rec and b"winch" not in rec, rec


def test_view_only_page_offers_no_input(daemon):
    """The page of a view-only link says so (data-view-only: noVNC's viewOnly,
    no Ctrl-Alt-Del or type-text, xterm.js without stdin); an ordinary
    link's page does not. ringside drops the input either way."""
    import urllib.request

    def page(view_only):
        tok = daemon.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5999,
                                     "view_only": view_only})["token"]
        with urllib.request.urlopen("%s/console/%s" % (daemon.base, tok), timeout=5) as r:
            body = r.read()
        return body[body.index(b"<body"):body.index(b">", body.index(b"<body"))]

    assert b" data-view-only" in page(True)
    assert b"data-view-only" not in page(False)
