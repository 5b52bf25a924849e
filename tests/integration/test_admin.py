"""The admin socket and `ringside ctl` against a running daemon with live consoles."""
import json
import os
import socket
import struct
import subprocess
import time

import pytest

from conftest import BIN
from fakes import RawWS, Target, echo_target
from test_console import relay_ws, stats


@pytest.fixture
def admin(daemon_factory, tmpdir_rs):
    sock = os.path.join(tmpdir_rs, "admin.sock")
    audit = os.path.join(tmpdir_rs, "audit.jsonl")
    d = daemon_factory({"admin_socket": sock, "audit_log": audit})
    d.sock = sock
    d.audit = audit
    return d


def ctl(d, *args):
    r = subprocess.run([BIN, "ctl", "--socket", d.sock, *args], capture_output=True, text=True,
                       timeout=10)
    return r.returncode, r.stdout, r.stderr


def ctl_json(d, *args):
    rc, out, err = ctl(d, *args, "--json")
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture
def echo():
    t = Target(echo_target)
    yield t
    t.stop()


def test_socket_owner_group_mode(daemon_factory, tmpdir_rs):
    sock = os.path.join(tmpdir_rs, "owned.sock")
    d = daemon_factory({"admin_socket": sock, "admin_socket_mode": 0o600,
                        "admin_socket_owner": "nobody", "admin_socket_group": "nogroup"})
    st = os.stat(sock)
    import grp
    import pwd
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid
    assert st.st_mode & 0o777 == 0o600


def test_socket_mode_and_help(admin):
    assert oct(os.stat(admin.sock).st_mode & 0o777) == "0o660"
    rc, out, _ = ctl(admin, "help")
    assert rc == 0 and "kill <id>" in out and "drain" in out
    assert "commands" in ctl_json(admin, "help")


def test_stats_sessions_kill_across_workers(admin, echo):
    sessions = []

    def settled(n):
        # The client's last handshake byte (ClientInit) may still be in flight.
        for _ in range(100):
            st = ctl_json(admin, "stats")
            if st["consoles"]["active"] == n:
                return st
            time.sleep(0.05)
        return st

    # SO_REUSEPORT spreads connections by a hash: 8 land on one worker now and
    # then (1 in 128), so open more until both workers hold one.
    while len(sessions) < 8 or (len(sessions) < 24 and len(
            {s["worker"] for s in ctl_json(admin, "sessions")}) < 2):
        sessions.append(relay_ws(admin, echo.port))
        if len(sessions) >= 8:
            settled(len(sessions))
    n = len(sessions)
    st = settled(n)
    assert st["consoles"]["active"] == n and len(st["workers"]) == 2
    assert sum(w["sessions_active"] for w in st["workers"]) == n
    rc, text, _ = ctl(admin, "stats")
    assert rc == 0 and "completions/loop" in text
    listed = ctl_json(admin, "sessions")
    assert len(listed) == n and {s["state"] for s in listed} == {"relay"}
    by_worker = {}
    for s in listed:
        by_worker.setdefault(s["worker"], s)
    assert set(by_worker) == {0, 1}, "consoles should spread over both workers"
    one = ctl_json(admin, "session", "%x" % listed[0]["id"])
    assert one["id"] == listed[0]["id"] and one["target"] == "127.0.0.1:%d" % echo.port
    assert ctl_json(admin, "sessions", "no-such-label") == []
    # kill one console on each worker; the admin thread is neither of them
    victims = [by_worker[0]["id"], by_worker[1]["id"]]
    for v in victims:
        rc, out, _ = ctl(admin, "kill", "%x" % v)
        assert rc == 0, out
    closed = 0
    for ws in sessions:
        ws.s.settimeout(0.5)
        try:
            op, _, payload = ws.recv_frame()
            if op == 8:
                assert struct.unpack(">H", payload[:2])[0] == 1000
                assert b"operator" in payload
                closed += 1
        except (socket.timeout, EOFError):
            pass
    assert closed == 2
    time.sleep(0.2)
    assert ctl_json(admin, "stats")["consoles"]["active"] == n - 2
    assert stats(admin)["consoles"]["causes"]["killed"] == 2
    rc, _, err = ctl(admin, "kill", "%x" % victims[0])
    assert rc == 1 and "no such session" in err
    rc, _, err = ctl(admin, "kill", "zz")
    assert rc == 1
    for ws in sessions:
        ws.close()


def test_drain_refuses_new_consoles_open_ones_continue(admin, echo):
    live = relay_ws(admin, echo.port)
    pending = admin.create_console({"kind": "vnc", "host": "127.0.0.1", "port": echo.port})
    rc, out, _ = ctl(admin, "drain")
    assert rc == 0 and "draining" in out
    assert RawWS(admin.port, "/ws/" + pending["token"]).status == 503
    admin.create_console({"kind": "vnc", "host": "127.0.0.1", "port": echo.port}, expect=503)
    msg = b"\x01" + struct.pack(">BBHHHH", 3, 1, 0, 0, 64, 64)  # ClientInit, an update request
    live.send_frame(2, msg)
    assert live.recv_data(11) == msg
    assert ctl_json(admin, "stats")["draining"] is True
    rc, _, _ = ctl(admin, "undrain")
    assert rc == 0
    ws = RawWS(admin.port, "/ws/" + pending["token"])  # the refusal did not spend it
    assert ws.status == 101
    live.close()


def test_revoke_by_hash_log_level_reload(admin):
    admin.create_console({"kind": "vnc", "host": "127.0.0.1", "port": 5901})
    time.sleep(0.2)
    issued = [json.loads(l) for l in open(admin.audit) if '"token.issued"' in l][0]
    rc, out, _ = ctl(admin, "revoke", issued["token"])
    assert rc == 0
    assert stats(admin)["tokens"]["revoked"] == 1
    rc, _, err = ctl(admin, "revoke", issued["token"])
    assert rc == 1 and "no pending" in err
    rc, _, _ = ctl(admin, "log-level", "warn")
    assert rc == 0
    rc, _, err = ctl(admin, "log-level", "loud")
    assert rc == 1
    rc, out, _ = ctl(admin, "reload")
    assert rc == 0 and "reloaded" in out
    assert ctl_json(admin, "reload")["reloaded"] is True
    assert ctl_json(admin, "log-level", "info") == {"log_level": "info"}


def test_malformed_and_oversized_requests(admin):
    def raw(data, shut=True):
        s = socket.socket(socket.AF_UNIX)
        s.connect(admin.sock)
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        s.close()
        return out

    assert raw(b"x" * 100000).startswith(b"ERR request too long")
    assert raw(b"stats").startswith(b"ERR incomplete")
    assert raw(b"\n").startswith(b"ERR empty request")
    assert raw(b"\x00\xff\xfe garbage\n").startswith(b"ERR request contains a NUL byte")
    assert raw(b"\xff\xfe garbage\n").startswith(b"ERR unknown command")
    assert raw(b"kill\n").startswith(b"ERR usage")
    assert raw(b"session zz\n").startswith(b"ERR usage")
    assert raw(b"session 0\n").startswith(b"ERR no such session")  # 0 is a valid id
    rc, _, _ = ctl(admin, "stats")
    assert rc == 0  # the daemon is unaffected


def test_second_instance_refused_and_stale_socket_replaced(admin, tmpdir_rs):
    cfg = os.path.join(tmpdir_rs, "second.json")
    json.dump({"listen": ["127.0.0.1:1"], "admin_socket": admin.sock, "metrics_listen": ""},
              open(cfg, "w"))
    r = subprocess.run([BIN, "--config", cfg], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "another ringside owns the admin socket" in r.stderr
    stale = os.path.join(tmpdir_rs, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # the file stays, nobody listens
    from conftest import Daemon
    d2 = Daemon(tmpdir_rs, {"admin_socket": stale})
    try:
        rc, out, _ = subprocess.run([BIN, "ctl", "--socket", stale, "help"], capture_output=True,
                                    text=True, timeout=10).returncode, "", ""
        assert rc == 0
    finally:
        assert d2.stop() == 0
    assert not os.path.exists(stale)  # removed on exit


def test_ctl_exit_codes_without_daemon(tmpdir_rs):
    r = subprocess.run([BIN, "ctl", "--socket", os.path.join(tmpdir_rs, "none.sock"), "stats"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 3 and "cannot reach" in r.stderr
    r = subprocess.run([BIN, "ctl"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2


def test_reload_rotates_api_keys(admin):
    body = {"kind": "vnc", "host": "127.0.0.1", "port": 5901}
    admin.create_console(body)
    cfg = json.load(open(admin.cfg_path))
    new_key = "rotated-key-0123456789abcdef"
    json.dump(dict(cfg, limits={"max_body": -5}), open(admin.cfg_path, "w"))
    rc, _, err = ctl(admin, "reload")
    assert rc == 1 and "'limits.max_body'" in err and "nothing changed" in err
    admin.create_console(body)  # the old key still works
    json.dump(dict(cfg, api_keys=[{"name": "rotated", "key": new_key}]), open(admin.cfg_path, "w"))
    assert ctl_json(admin, "reload")["api_keys"] == 1
    admin.create_console(body, expect=401)
    admin.create_console(body, key=new_key)
    time.sleep(0.2)
    issued = [json.loads(l) for l in open(admin.audit) if '"token.issued"' in l]
    assert issued[-1]["api_key"] == "rotated"
    assert new_key not in admin.logs()


class SlowLoris:
    """An admin client that sends one byte every <every> s and never a newline."""

    def __init__(self, path, every=0.5, duration=8.0):
        import threading
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.t0 = time.time()
        self.closed_after = None
        self.answer = b""
        self.stop = False

        def run():
            end = time.time() + duration
            while time.time() < end and not self.stop:
                try:
                    self.s.send(b"s")
                except OSError:  # the server closed the connection
                    self.closed_after = time.time() - self.t0
                    return
                self.s.settimeout(every)
                try:
                    data = self.s.recv(4096)
                    self.answer += data
                    if not data:
                        self.closed_after = time.time() - self.t0
                        return
                except socket.timeout:
                    pass
                except OSError:
                    self.closed_after = time.time() - self.t0
                    return
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self):
        self.stop = True
        self.thread.join()
        self.s.close()


def test_slow_client_does_not_block_others(admin):
    loris = [SlowLoris(admin.sock) for _ in range(3)]
    try:
        time.sleep(0.3)
        for _ in range(3):
            t0 = time.time()
            r = subprocess.run([BIN, "ctl", "--socket", admin.sock, "stats"], capture_output=True,
                               text=True, timeout=20)
            took = time.time() - t0
            assert r.returncode == 0 and "tokens" in r.stdout, r.stderr
            assert took < 1.0, "ctl stats took %.1f s behind a slow client" % took
        # the slow clients are dropped at their deadline with a reason
        for lo in loris:
            lo.thread.join(10)
            assert lo.closed_after is not None and lo.closed_after < 7, lo.closed_after
            assert lo.answer.startswith(b"ERR "), lo.answer
    finally:
        for lo in loris:
            lo.close()


def test_sigterm_is_prompt_with_stuck_admin_clients(daemon_factory, tmpdir_rs):
    from conftest import Daemon
    sock = os.path.join(tmpdir_rs, "stuck.sock")
    d = Daemon(tmpdir_rs, {"admin_socket": sock})
    loris = SlowLoris(sock, every=0.3, duration=20)
    time.sleep(0.2)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(sock)  # says nothing at all
    try:
        time.sleep(0.5)
        t0 = time.time()
        assert d.stop(timeout=10) == 0
        took = time.time() - t0
        assert took < 1.5, "SIGTERM took %.1f s with stuck admin clients" % took
    finally:
        loris.close()
        silent.close()
    d.check_clean()


def test_unbuildable_port_pool_refuses_start(tmpdir_rs):
    """One port for two workers: a worker would get no pool and silently use
    the kernel's ephemeral ports; ringside refuses to start instead."""
    from conftest import free_port
    cfg = os.path.join(tmpdir_rs, "pool.json")
    json.dump({"listen": ["127.0.0.1:%d" % free_port()], "metrics_listen": "", "workers": 2,
               "log_target": "stderr", "state_dir": tmpdir_rs,
               "port_pool": {"source_addresses": ["127.0.0.1"], "port_min": 20000,
                             "port_max": 20000}}, open(cfg, "w"))
    try:
        r = subprocess.run([BIN, "--config", cfg], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:  # run() has killed it
        raise AssertionError("ringside started with a port pool it cannot build")
    assert r.returncode != 0, r.stderr
    assert "cannot build the port pool" in r.stderr and "port_pool.source_addresses" in r.stderr, \
        r.stderr
    assert "at least one port per worker" in r.stderr, r.stderr


def test_session_label_reaches_the_terminal_clean(admin, echo):
    """A label's C1 controls and bidi overrides never reach the operator's
    terminal raw: replaced by U+FFFD in text, escaped in JSON."""
    label = "vm \u009b2J \u202etxt.exe caf\u00e9"
    tok = admin.create_console({"kind": "vnc", "host": "127.0.0.1", "port": echo.port,
                                "label": label})["token"]
    ws = RawWS(admin.port, "/ws/" + tok)
    assert ws.rfb_client_handshake() == 0
    for _ in range(100):
        listed = ctl_json(admin, "sessions")
        if listed:
            break
        time.sleep(0.05)
    assert listed[0]["label"] == label
    sid = "%x" % listed[0]["id"]
    r = subprocess.run([BIN, "ctl", "--socket", admin.sock, "session", sid], capture_output=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode("utf-8")
    assert "label vm \ufffd2J \ufffdtxt.exe caf\u00e9" in text, text
    for raw in (r.stdout, subprocess.run([BIN, "ctl", "--socket", admin.sock, "session", sid,
                                          "--json"], capture_output=True, timeout=10).stdout):
        assert b"\xc2\x9b" not in raw and b"\xe2\x80\xae" not in raw, raw
    ws.close()
