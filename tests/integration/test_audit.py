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
