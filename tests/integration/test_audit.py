"""The audit log for a full console life, field by field; no secret in it."""
import json
import os
import signal
import struct
import time

from conftest import API_KEY
from fakes import RawWS, Target, echo_target
from test_console import stats


def records(path, event=None, n=1, timeout=5):
    end = time.time() + timeout
    while True:
        try:
            recs = [json.loads(l) for l in open(path) if l.strip()]
        except FileNotFoundError:
            recs = []
        got = [r for r in recs if event is None or r["event"] == event]
        if len(got) >= n or time.time() > end:
            return got
        time.sleep(0.05)


def test_full_console_life(daemon_factory, tmpdir_rs):
    audit = os.path.join(tmpdir_rs, "audit.jsonl")
    d = daemon_factory({"audit_log": audit})
    t = Target(echo_target)
    tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": t.port,
                            "password": "vnc-secret-pw", "label": "vm-42", "ttl": 30})
    ws = RawWS(d.port, "/ws/" + tok["token"], "User-Agent: TestBrowser/1.0\r\n")
    assert ws.rfb_client_handshake() == 0
    ws.send_frame(2, b"\x01\xfa\x00\x01\x02")  # ClientInit, an xvp message
    assert ws.recv_data(5) == b"\x01\xfa\x00\x01\x02"
    time.sleep(0.1)
    ws.send_frame(8, struct.pack(">H", 1000))
    ws.expect_close()
    RawWS(d.port, "/ws/" + tok["token"], "User-Agent: Replayer\r\n")  # used again: rejected

    issued = records(audit, "token.issued")[0]
    opened = records(audit, "console.opened")[0]
    closed = records(audit, "console.closed")[0]
    rejected = records(audit, "token.rejected")[0]
    h = issued["token"]
    assert len(h) == 8 and all(c in "0123456789abcdef" for c in h)
    assert issued["api_key"] == "test" and issued["label"] == "vm-42"
    assert issued["target"] == "127.0.0.1:%d" % t.port and issued["ttl"] == 30
    assert issued["kind"] == "vnc" and issued["api_client"] == "127.0.0.1"
    for r in (opened, closed):
        assert r["token"] == h and r["api_key"] == "test" and r["label"] == "vm-42"
        assert r["target"] == "127.0.0.1:%d" % t.port and r["client"] == "127.0.0.1"
        assert r["user_agent"] == "TestBrowser/1.0"
    assert closed["cause"] == "browser_closed"
    assert closed["duration_ms"] >= 100
    assert closed["bytes_to_target"] == 5 and closed["bytes_to_browser"] == 5
    assert rejected["token"] == h and rejected["reason"] == "token_invalid"
    assert rejected["user_agent"] == "Replayer"
    for r in (issued, opened, closed, rejected):
        assert r["ts"].endswith("Z") and "T" in r["ts"]
    text = open(audit).read()
    for secret in (tok["token"], "vnc-secret-pw", API_KEY):
        assert secret not in text
        assert secret not in d.logs()
    t.stop()


def test_sighup_reopens_for_logrotate(daemon_factory, tmpdir_rs):
    audit = os.path.join(tmpdir_rs, "audit.jsonl")
    d = daemon_factory({"audit_log": audit})
    d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5901})
    assert records(audit, "token.issued")
    os.rename(audit, audit + ".1")
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5902})
    new = records(audit, "token.issued")
    assert len(new) == 1 and new[0]["target"] == "127.0.0.1:5902"
    assert len(records(audit + ".1", "token.issued")) == 1


def test_unwritable_audit_log_refuses_start(tmpdir_rs):
    import subprocess
    from conftest import BIN
    cfg = os.path.join(tmpdir_rs, "c.json")
    json.dump({"listen": ["127.0.0.1:1"], "audit_log": "/nonexistent/dir/audit.jsonl",
               "metrics_listen": ""}, open(cfg, "w"))
    r = subprocess.run([BIN, "--config", cfg], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "audit log" in r.stderr


def test_console_events_name_the_real_kind(daemon_factory, tmpdir_rs):
    """console.opened/closed carry the console's kind with the metric labels'
    names (vnc, pve-vnc, pve-term), not "vnc" for every console."""
    from conftest import free_port
    audit = os.path.join(tmpdir_rs, "audit.jsonl")
    down = free_port()  # nothing listens: the Proxmox consoles fail fast
    d = daemon_factory({"audit_log": audit,
                        "clusters": {"lab": {"endpoints": ["127.0.0.1:%d" % down],
                                             "token": "root@pam!rs=11111111-2222-3333-4444-555555555555",
                                             "verify": "insecure"}}})
    t = Target(echo_target)
    want = []
    for body, kind in (({"kind": "vnc", "host": "127.0.0.1", "port": t.port}, "vnc"),
                       ({"cluster": "lab", "node": "pve1", "vmid": 100}, "pve-vnc"),
                       ({"cluster": "lab", "node": "pve1", "vmid": 100, "console": "term"},
                        "pve-term")):
        tok = d.create_console(body)["token"]
        ws = RawWS(d.port, "/ws/" + tok)
        if kind == "vnc":
            assert ws.rfb_client_handshake() == 0
        ws.send_frame(8, struct.pack(">H", 1000))
        ws.close()
        want.append(kind)
        closed = records(audit, "console.closed", n=len(want))
        assert [r["kind"] for r in closed] == want, closed
    issued = records(audit, "token.issued", n=3)
    assert [r["kind"] for r in issued] == want
    assert [r["kind"] for r in records(audit, "console.opened")] == ["vnc"]
    t.stop()


# Text a client or a target chose, as it must never appear in the log: C0
# controls, DEL, C1 controls (CSI U+009B, NEL U+0085), bidi overrides and
# isolates, line separators.
UNSAFE = [chr(c) for c in range(0x20) if c != 0x0a] + [chr(c) for c in range(0x7f, 0xa0)] + \
    ["\u061c", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
     "\u2066", "\u2067", "\u2068", "\u2069", "\u2028", "\u2029"]


def assert_clean_text(raw):
    """<raw> (bytes) is valid UTF-8 without any unsafe code point; returns it decoded."""
    text = raw.decode("utf-8")  # strict: invalid UTF-8 raises
    bad = sorted({"U+%04X" % ord(c) for c in text if c in UNSAFE})
    assert not bad, bad
    return text


def test_log_label_cannot_forge_fields_or_lines(daemon):
    label = 'x" key=admin token=deadbeef \u009b31m \u202etxt.exe'
    daemon.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5901, "label": label})
    time.sleep(0.1)
    lines = [l for l in assert_clean_text(open(daemon.log_path, "rb").read()).splitlines()
             if "token.issued" in l]
    assert len(lines) == 1, lines
    assert lines[0].endswith(' label="x\\" key=admin token=deadbeef \\u009b31m \\u202etxt.exe"'), \
        lines[0]
    assert " key=test " in lines[0] and " key=admin" not in lines[0].replace('\\" key=admin', "")


def hostile_reason_target(c, t):
    """A VNC server that refuses with a reason full of terminal and bidi tricks."""
    c.sendall(b"RFB 003.008\n")
    from fakes import recv_exact
    recv_exact(c, 12)
    reason = (b"go away\x1b[2J\xc2\x9b31m\xe2\x80\xaeexe.txt\xe2\x81\xa6\xff\xfe\xc0\xaf"
              b"\r\n2026-01-01T00:00:00.000Z error main: forged")
    c.sendall(b"\0" + struct.pack(">I", len(reason)) + reason)
    time.sleep(0.5)


def test_vnc_failure_reason_reaches_browser_and_log_clean(daemon):
    t = Target(hostile_reason_target)
    tok = daemon.create_console({"kind": "vnc", "host": "127.0.0.1", "port": t.port})
    ws = RawWS(daemon.port, "/ws/" + tok["token"])
    assert ws.recv_data(12) == b"RFB 003.008\n"
    ws.send_frame(2, b"RFB 003.008\n")
    count = ws.recv_data(1)[0]
    if count:
        ws.recv_data(count)
        ws.send_frame(2, b"\x01")
        assert struct.unpack(">I", ws.recv_data(4))[0] == 1
    n = struct.unpack(">I", ws.recv_data(4))[0]
    reason = assert_clean_text(ws.recv_data(n))
    ws.close()
    assert "go away" in reason and "exe.txt" in reason and "forged" in reason, reason
    time.sleep(0.2)
    log = assert_clean_text(open(daemon.log_path, "rb").read())
    assert "go away" in log
    # the forged record stays inside the quoted reason of the real one
    assert not any(l.startswith("2026-01-01T00:00:00.000Z") for l in log.splitlines()), log
    assert any(' reason="the VNC target refused the connection: go away' in l and
               l.endswith('error main: forged"') for l in log.splitlines()), log
    t.stop()


def test_audit_records_are_ascii_json(daemon_factory, tmpdir_rs):
    """A label's C1 controls and bidi overrides reach the audit log escaped
    (\\u009b, \\u202e): the file is printable ASCII, the JSON still decodes to
    the label as given."""
    audit = os.path.join(tmpdir_rs, "audit.jsonl")
    d = daemon_factory({"audit_log": audit})
    label = "caf\u00e9 \u009b31m \u202etxt.exe \u2066x\u2069"
    d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5901, "label": label})
    assert records(audit, "token.issued")[0]["label"] == label
    raw = open(audit, "rb").read()
    assert all(0x20 <= b < 0x7f or b == 0x0a for b in raw), raw
    assert b"\\u202E" in raw and b"\\u009B" in raw
