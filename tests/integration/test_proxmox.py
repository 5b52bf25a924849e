"""Proxmox VE consoles through ringside against the Proxmox VE simulator
(tests/pvesim, independent of ringside's code) in front of a real Xvnc and a
real PTY: token and password auth, node discovery, terminals, failover, the
errors a user meets, secrets kept from the browser and the logs, ProxmoxVNC's
API."""
import json
import os
import re
import signal
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, TORTURE, Xvnc, free_port
from fakes import RawWS

SIM = os.path.join(ROOT, "tests/pvesim/pvesim.py")
SECRET = "11111111-2222-3333-4444-555555555555"
FULL = ["VM.Console", "VM.Audit", "Sys.Audit"]


class Sim:
    def __init__(self, tmp, vnc_port, legacy=False, base=1, **extra):
        self.dir = os.path.join(tmp, "sim-%d" % base)
        os.makedirs(self.dir)
        conf = {
            "nodes": [{"name": "pve%d" % i, "host": "127.0.%d.%d" % (base, i), "port": 0}
                      for i in (1, 2, 3)],
            "users": [{"userid": "root@pam", "password": "pw", "privs": FULL},
                      {"userid": "tfa@pve", "password": "pw", "tfa": True, "privs": FULL},
                      {"userid": "audit@pve", "password": "pw", "privs": ["VM.Audit"]}],
            "tokens": [{"tokenid": "root@pam!ringside", "secret": SECRET, "privs": FULL},
                       {"tokenid": "root@pam!audit", "secret": SECRET, "privs": ["VM.Audit"]}],
            "vms": [{"vmid": 100, "type": "qemu", "node": "pve1", "name": "web", "status": "running",
                     "vnc": "127.0.0.1:%d" % vnc_port},
                    {"vmid": 101, "type": "qemu", "node": "pve1", "status": "stopped"},
                    {"vmid": 102, "type": "qemu", "node": "pve2", "status": "running",
                     "vnc": "127.0.0.1:%d" % vnc_port},
                    {"vmid": 200, "type": "lxc", "node": "pve2", "status": "running"}],
            "legacy": legacy,
            "auth_delay_s": 0.2,
            # The torture run: every answer in 1..16-byte TLS records.
            "tls_record_split": bool(TORTURE),
        }
        conf.update(extra)
        self.legacy = legacy
        with open(os.path.join(self.dir, "sim.json"), "w") as f:
            json.dump(conf, f)
        self.log = open(os.path.join(self.dir, "sim.log"), "w")
        self.proc = subprocess.Popen(["/usr/bin/python3", SIM, "--config",
                                      os.path.join(self.dir, "sim.json"), "--dir", self.dir],
                                     stdout=self.log, stderr=self.log)
        ready = os.path.join(self.dir, "ready.json")
        deadline = time.time() + 20
        while not os.path.exists(ready):
            assert self.proc.poll() is None, open(os.path.join(self.dir, "sim.log")).read()
            assert time.time() < deadline, "simulator not ready"
            time.sleep(0.05)
        self.ready = json.load(open(ready))
        self.ca = self.ready["ca"]

    def ep(self, node):
        n = self.ready["nodes"][node]
        return "%s:%d" % (n["host"], n["port"])

    def control(self, path, body=None):
        req = urllib.request.Request("http://%s%s" % (self.ready["control"], path),
                                     data=json.dumps(body).encode() if body is not None else None,
                                     method="POST" if body is not None else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def mode(self, node, mode):
        self.control("/mode", {"node": node, "mode": mode})

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# The whole suite runs against both ticket generations (corrections item 10:
# the April 2026 hardening exists on PVE 8 and 9, and so do unhardened nodes).
@pytest.fixture(scope="module", params=[False, True], ids=["hardened", "legacy"])
def lab(request):
    with tempfile.TemporaryDirectory(prefix="rs-pve-") as tmp:
        x = Xvnc(tmp, None, "#2e8b57")  # security None, as QEMU's proxy connects
        sim = Sim(tmp, x.port, legacy=request.param)
        try:
            yield sim
        finally:
            sim.stop()
            x.stop()


def cluster(sim, nodes=("pve1", "pve2", "pve3"), **kw):
    """A token cluster; on unhardened nodes also a login, which terminals
    need there (termproxy refuses API tokens before the April 2026 update)."""
    c = {"endpoints": [sim.ep(n) for n in nodes], "ca_file": sim.ca}
    if "user" not in kw:
        c["token"] = "root@pam!ringside=" + SECRET
        if sim.legacy and "token" not in kw:
            c.update(user="root@pam", password="pw")
    c.update(kw)
    return c


@pytest.fixture
def rs(daemon_factory, lab):
    def start(clusters=None, extra=None):
        cfg = {"clusters": clusters or {"lab": cluster(lab)}}
        cfg.update(extra or {})
        return daemon_factory(cfg)
    return start


def open_vnc(d, body):
    tok = d.create_console(body)["token"]
    ws = RawWS(d.port, "/ws/" + tok)
    assert ws.status == 101, ws.head
    return ws


def expect_desktop(ws):
    assert ws.rfb_client_handshake() == 0
    ws.send_frame(2, b"\x01")
    w, h = struct.unpack(">HH", ws.recv_data(4))
    assert (w, h) == (1024, 768)
    return ws


def expect_refusal(ws):
    """The browser's RFB leg fails with a readable reason; returns it. ringside
    fails it as early as it knows: no security types (count 0), or a failed
    SecurityResult."""
    assert ws.recv_data(12) == b"RFB 003.008\n"
    ws.send_frame(2, b"RFB 003.008\n")
    count = ws.recv_data(1)[0]
    if count:
        ws.recv_data(count)
        ws.send_frame(2, b"\x01")
        assert struct.unpack(">I", ws.recv_data(4))[0] == 1
    n = struct.unpack(">I", ws.recv_data(4))[0]
    reason = ws.recv_data(n).decode()
    ws.close()
    return reason


def metric(d, name, labels):
    """The sum over every series of <name> carrying <labels>."""
    total = 0.0
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") and all('%s="%s"' % kv in line for kv in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def closed(d, cause):
    return metric(d, "ringside_consoles_closed_total", {"cause": cause})


SECRET_PATTERNS = [re.compile(p) for p in (r"PVE:[^ ]*:[0-9A-F]{8}::", r"PVEVNC:[0-9A-F]{8}::",
                                          r"PVEAuthCookie=", r"[0-9A-F]{8}:[A-Za-z0-9+/]{43}\b")]


def assert_no_secrets(text, extra=()):
    for p in SECRET_PATTERNS:
        assert not p.search(text), p.pattern
    for s in (SECRET, "root@pam!ringside=") + tuple(extra):
        assert s not in text, s


def test_vnc_console_with_api_token_and_explicit_node(rs, lab):
    d = rs()
    ws = expect_desktop(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100, "type": "qemu"}))
    assert metric(d, "ringside_pve_sessions_active", {"cluster": "lab"}) == 1
    assert metric(d, "ringside_console_sessions_active", {"kind": "pve-vnc"}) == 1
    assert metric(d, "ringside_console_setup_seconds_count", {"stage": "upstream_api"}) == 1
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port) as r:
        text = r.read()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    ws.close()
    log = lab.control("/log")
    calls = [e for e in log if e.get("path", "").endswith("/vncproxy")]
    assert calls and calls[-1]["auth"] == "token"
    # the websocket reached the node that made the console port
    assert any(e.get("path", "").endswith("/vncwebsocket") and e.get("status") == 101 for e in log)


def test_node_discovery_and_password_login_cached(rs, lab):
    d = rs({"lab": cluster(lab, user="root@pam", password="pw")})
    lab.control("/reset-log", {})
    for _ in range(2):
        expect_desktop(open_vnc(d, {"cluster": "lab", "vmid": 102})).close()
    log = lab.control("/log")
    logins = [e for e in log if e.get("path", "").endswith("/access/ticket")]
    assert len(logins) == 1, "the ticket is cached per cluster"
    assert any(e.get("path", "").startswith("/api2/json/cluster/resources") for e in log)
    posts = [e for e in log if e.get("method") == "POST" and e.get("path", "").endswith("vncproxy")]
    assert posts and all(e["auth"] == "cookie" and e["csrf"] for e in posts)


def test_terminal_console_runs_a_command(rs, lab):
    d = rs()
    ws = open_vnc(d, {"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term"})
    ws.send_frame(2, b"1:100:30:")
    cmd = b"echo ringside-$((6*7))\n"
    ws.send_frame(2, b"0:%d:" % len(cmd) + cmd)
    out, deadline = b"", time.time() + 10
    while b"ringside-42" not in out and time.time() < deadline:
        op, _, p = ws.recv_frame()
        assert op == 2, (op, p)
        out += p
    assert b"ringside-42" in out
    assert not out.startswith(b"OK"), "termproxy's OK is stripped"
    ws.close()


def test_failover_refused_then_595_then_third(rs, lab):
    d = rs({"lab": cluster(lab, nodes=("pve3", "pve2", "pve1"))})
    lab.mode("pve3", "refuse")
    lab.mode("pve2", "status595")
    try:
        expect_desktop(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100})).close()
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port) as r:
            text = r.read().decode()
        m = re.search(r"^ringside_pve_failovers_total (\d+)", text, re.M)
        assert m and int(m.group(1)) >= 2, text[-2000:]
    finally:
        lab.mode("pve3", "normal")
        lab.mode("pve2", "normal")


def test_all_endpoints_down_is_a_clear_error(rs, lab):
    d = rs({"lab": cluster(lab, nodes=("pve3",))})
    lab.mode("pve3", "refuse")
    try:
        reason = expect_refusal(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100}))
        assert "could not be reached" in reason
        assert closed(d, "upstream_unavailable") == 1
    finally:
        lab.mode("pve3", "normal")


@pytest.mark.parametrize("case", ["bad_token", "no_console_priv", "unknown_node", "stopped",
                                  "pin_mismatch", "tfa"])
def test_errors_users_meet(rs, lab, case):
    body = {"cluster": "lab", "node": "pve1", "vmid": 100}
    cl = cluster(lab)
    cause, text = {
        "bad_token": ("upstream_auth", "credentials were refused"),
        "no_console_priv": ("upstream_permission", "VM.Console"),
        "unknown_node": ("vm_not_found", "not a member of the Proxmox cluster"),
        "stopped": ("vm_not_running", "VM 101 is not running"),
        "pin_mismatch": ("upstream_tls", "certificate was not accepted"),
        "tfa": ("upstream_auth", "two-factor"),
    }[case]
    if case == "bad_token":
        cl["token"] = "root@pam!ringside=00000000-0000-0000-0000-000000000000"
    elif case == "no_console_priv":
        cl["token"] = "root@pam!audit=" + SECRET
    elif case == "unknown_node":
        body["node"] = "pve9"  # 500 "hostname lookup 'pve9' failed": no failover
    elif case == "stopped":
        body["vmid"] = 101
    elif case == "pin_mismatch":
        del cl["ca_file"]
        fp = lab.ready["nodes"]["pve1"]["fingerprint"]
        # a different first byte (a certificate whose own starts with 00 exists: 1 in 256)
        cl["fingerprints"] = [("11" if fp[:2] == "00" else "00") + fp[2:]]
    elif case == "tfa":
        del cl["token"]
        cl.update(user="tfa@pve", password="pw")
    d = rs({"lab": cl})
    reason = expect_refusal(open_vnc(d, body))
    assert text in reason, reason
    assert closed(d, cause) == 1, cause
    assert metric(d, "ringside_pve_upstream_errors_total", {"cluster": "lab", "cause": cause}) == 1
    assert_no_secrets(reason)
    if case == "pin_mismatch":
        assert "fingerprint mismatch" in d.logs()
    if case == "tfa":
        assert "API token" in d.logs()


def test_four_consoles_to_one_vm_at_once(rs, lab):
    d = rs()
    results = []

    def one():
        try:
            expect_desktop(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100})).close()
            results.append(True)
        except Exception as e:  # noqa: BLE001
            results.append(repr(e))
    # each vncproxy resets the VM's VNC password: the consoles take turns,
    # and none holds an idle connection while it waits (pveproxy closes it)
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [True] * 4, results


def test_no_proxmox_secret_reaches_browser_or_logs(rs, lab):
    d = rs({"lab": cluster(lab, user="root@pam", password="pw-never-logged")}, {"log_level": "debug"})
    # the simulator's root@pam password is "pw": use a cluster with it for a real open
    d2 = rs({"lab": cluster(lab, user="root@pam", password="pw")}, {"log_level": "debug"})
    ws = open_vnc(d2, {"cluster": "lab", "node": "pve1", "vmid": 100})
    got = b""
    assert ws.rfb_client_handshake() == 0
    ws.send_frame(2, b"\x01")
    got += ws.recv_data(24)
    ws.close()
    term = open_vnc(d2, {"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term"})
    term.send_frame(2, b"0:5:true\n")
    op, _, p = term.recv_frame()
    got += p
    term.close()
    expect_refusal(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100}))
    text = got.decode("latin-1")
    assert_no_secrets(text)
    time.sleep(0.3)
    for daemon in (d, d2):
        assert_no_secrets(daemon.logs(), extra=("pw-never-logged",))


def test_legacy_pre_2026_tickets(daemon_factory, tmpdir_rs):
    x = Xvnc(tmpdir_rs, None, "#2e8b57")
    sim = Sim(tmpdir_rs, x.port, legacy=True, base=9)
    try:
        d = daemon_factory({"clusters": {"old": {"endpoints": [sim.ep("pve1")], "ca_file": sim.ca,
                                                  "user": "root@pam", "password": "pw"}}})
        expect_desktop(open_vnc(d, {"cluster": "old", "node": "pve1", "vmid": 100})).close()
    finally:
        sim.stop()
        x.stop()


def test_api_validates_proxmox_consoles(rs):
    d = rs()
    for body, field in (({"cluster": "nope", "vmid": 100}, "cluster"),
                        ({"cluster": "lab", "vmid": 99}, "vmid"),
                        ({"cluster": "lab", "vmid": 100, "type": "vm"}, "type"),
                        ({"cluster": "lab", "vmid": 100, "console": "spice"}, "console"),
                        ({"cluster": "lab", "vmid": 100, "node": "a/b"}, "node"),
                        ({"cluster": "lab", "vmid": 100, "host": "1.2.3.4"}, "host")):
        err = d.create_console(body, expect=400)["error"]
        assert err["code"] == "invalid_field" and field in err["message"], (body, err)


# --- ProxmoxVNC compatibility: its documented curl calls, unchanged ---

def curl(*args):
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True,
                         text=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_proxmoxvnc_create_vnc_status(daemon_factory, lab):
    secret = "proxmoxvnc-authorization-secret-0123"
    d = daemon_factory({"authorization": secret, "inline_upstreams": {"ca_file": lab.ca}})
    pve1 = lab.ready["nodes"]["pve1"]
    params = json.dumps({"hostname": pve1["host"], "port": str(pve1["port"]), "node": "pve1",
                         "username": "root@pam", "password": "pw", "vmid": "100"})
    code, body = curl("-X", "POST", d.base + "/create", "-H", "Authorization: " + secret,
                      "-F", "params=" + params)
    assert code == 200, body
    reply = json.loads(body)
    assert reply["status"] == "success" and reply["token"]
    code, _ = curl("-X", "POST", d.base + "/create", "-H", "Authorization: wrong",
                   "-F", "params=" + params)
    assert code == 401
    code, page = curl(d.base + "/vnc/" + reply["token"])
    assert code == 200 and "<html" in page.lower()
    ws = expect_desktop(RawWS(d.port, "/ws/" + reply["token"]))
    code, body = curl(d.base + "/status", "-H", "Authorization: " + secret)
    assert code == 200, body
    st = json.loads(body)
    assert st["sessions_active"] == 1 and st["total_sessions"] == 1
    s = st["sessions"][0]
    assert s["vmid"] == "100" and s["node"] == "pve1" and s["status"] == "active"
    assert s["created_at"] and s["connected_at"] and s["age"]
    assert "pw" not in body.replace("pve", "")
    ws.close()
    code, _ = curl(d.base + "/status")
    assert code == 401
    # without inline_upstreams the appliance refuses inline details, clearly
    d2 = daemon_factory({"authorization": secret})
    code, body = curl("-X", "POST", d2.base + "/create", "-H", "Authorization: " + secret,
                      "-F", "params=" + params)
    assert code == 403 and "inline_upstreams" in body


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="chromium not installed")
def test_browser_qemu_and_lxc_over_https(rs, lab, tmpdir_rs):
    tls_port = free_port()
    d = rs(extra={"tls_listen": ["127.0.0.1:%d" % tls_port]})
    env = dict(os.environ, RINGSIDE_URL=d.base, RINGSIDE_KEY=d.api_key, CLUSTER="lab",
               COLOUR="#2e8b57", EXPECT_SCHEME="https",
               NODE_PATH=os.path.join(ROOT, "www/node_modules"))
    out = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/pve_console.mjs")], env=env,
                         capture_output=True, text=True, timeout=180)
    print(out.stdout, out.stderr)
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr
    assert_no_secrets(d.logs())


def test_terminal_messages_are_checked(rs, lab):
    d = rs()
    ws = open_vnc(d, {"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term"})
    # A message fragmented over two frames is reassembled and passes.
    cmd = b"echo frag-$((2*21))\n"
    msg = b"0:%d:" % len(cmd) + cmd
    ws.send_frame(2, msg[:3], fin=False)
    ws.send_frame(0, msg[3:])
    out, deadline = b"", time.time() + 10
    while b"frag-42" not in out and time.time() < deadline:
        op, _, p = ws.recv_frame()
        out += p
    assert b"frag-42" in out
    # A malformed header never reaches termproxy as keystrokes.
    ws.send_frame(2, b"0:99:rm -rf /\n")
    code, reason = ws.expect_close()
    assert code == 1008 and "malformed" in reason
    ws.close()
    assert closed(d, "browser_protocol") == 1


def test_cluster_source_addresses_use_the_port_pool(rs, lab):
    d = rs({"lab": cluster(lab, source_addresses=["127.0.0.77"])},
           {"port_pool": {"port_min": 40000, "port_max": 40099}})
    ws = expect_desktop(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100}))
    req = urllib.request.Request(d.base + "/api/v1/stats",
                                 headers={"Authorization": "Bearer " + d.api_key})
    stats = json.load(urllib.request.urlopen(req, timeout=5))
    ws.close()
    text = json.dumps(stats)
    assert '"ports_in_use": 1' in text or '"ports_in_use":1' in text, text
    assert '"ports_total": 100' in text or '"ports_total":100' in text, text


# --- what real nodes answer, each mapped to the cause a user should read ---

def test_stale_node_is_rediscovered_once(rs, lab):
    """A VM migrated since the node was given: 500 'Configuration file ...
    does not exist' -> one lookup in /cluster/resources and a retry there, as
    Proxmox's own xterm.js client does."""
    d = rs()
    lab.control("/vm", {"vmid": 100, "node": "pve2"})
    try:
        lab.control("/reset-log", {})
        expect_desktop(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100})).close()
        log = lab.control("/log")
        assert any(e.get("path", "").startswith("/api2/json/cluster/resources") for e in log)
        assert any("/nodes/pve2/qemu/100/vncwebsocket" in e.get("path", "") and
                   e.get("status") == 101 for e in log), log
        assert closed(d, "vm_not_found") == 0
    finally:
        lab.control("/vm", {"vmid": 100, "node": "pve1"})
    # a VM that is nowhere: looked up once, then a clear vm_not_found
    reason = expect_refusal(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 999}))
    assert "not found" in reason, reason
    assert closed(d, "vm_not_found") == 1


def run_term(ws):
    cmd = b"echo ok-$((6*7))\n"
    ws.send_frame(2, b"0:%d:" % len(cmd) + cmd)
    out, deadline = b"", time.time() + 10
    while b"ok-42" not in out and time.time() < deadline:
        out += ws.recv_frame()[2]
    assert b"ok-42" in out


def fault(lab, kind, vmid, count=1):
    lab.control("/fault", {"kind": kind, "vmid": vmid, "count": count})


def test_backend_unreachable_is_console_unreachable(rs, lab):
    d = rs(extra={"limits": {"upstream_upgrade_timeout_ms": 500, "handshake_timeout_ms": 10000}})
    fault(lab, "ws_backend_unreachable", 100)
    t0 = time.time()
    reason = expect_refusal(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100}))
    assert "did not connect to the VM's console in time" in reason, reason
    assert time.time() - t0 < 4
    assert closed(d, "console_unreachable") == 1
    assert metric(d, "ringside_pve_upstream_errors_total",
                  {"cluster": "lab", "cause": "console_unreachable"}) == 1


@pytest.mark.parametrize("console", ["vnc", "term"])
def test_bad_console_ticket_gets_one_fresh_proxy_call(rs, lab, console):
    d = rs()
    body = ({"cluster": "lab", "node": "pve1", "vmid": 100} if console == "vnc" else
            {"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term"})
    fault(lab, "vnc_ticket_invalid", body["vmid"])
    lab.control("/reset-log", {})
    ws = open_vnc(d, body)
    if console == "vnc":
        expect_desktop(ws)
    else:
        run_term(ws)
    ws.close()
    calls = [e for e in lab.control("/log") if e.get("path", "").endswith("proxy")]
    assert len(calls) == 2, calls
    assert closed(d, "upstream_auth") == 0


def test_vnc_password_reset_by_another_client_is_retried(rs, lab):
    d = rs()
    fault(lab, "vnc_password_reset", 100)
    lab.control("/reset-log", {})
    expect_desktop(open_vnc(d, {"cluster": "lab", "node": "pve1", "vmid": 100})).close()
    calls = [e for e in lab.control("/log") if e.get("path", "").endswith("/vncproxy")]
    assert len(calls) >= 2, calls
    assert closed(d, "target_auth") == 0


@pytest.mark.parametrize("auth", ["token", "login"])
def test_termproxy_refusing_is_terminal_refused(rs, lab, auth):
    body = {"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term"}
    if auth == "token":
        cl = cluster(lab, token="root@pam!ringside=" + SECRET)  # a token only
        if not lab.legacy:
            fault(lab, "term_refuse", 200)
    else:
        cl = cluster(lab, user="root@pam", password="pw")
        fault(lab, "term_refuse", 200)
    d = rs({"lab": cl})
    ws = open_vnc(d, body)
    code, reason = ws.expect_close()
    ws.close()
    assert "refused the terminal" in reason, (code, reason)
    if auth == "token":
        assert "API tokens need nodes with the April 2026 update" in reason
        assert "has only an API token" in d.logs()
    assert closed(d, "terminal_refused") == 1
    assert metric(d, "ringside_pve_upstream_errors_total",
                  {"cluster": "lab", "cause": "terminal_refused"}) == 1


def test_tiny_tls_records(daemon_factory, tmpdir_rs):
    """Every answer in many small TLS records: parsers see every split."""
    x = Xvnc(tmpdir_rs, None, "#2e8b57")
    sim = Sim(tmpdir_rs, x.port, base=8, tls_record_split=True)
    try:
        d = daemon_factory({"clusters": {"lab": cluster(sim, user="root@pam", password="pw")}})
        expect_desktop(open_vnc(d, {"cluster": "lab", "vmid": 102})).close()
        ws = open_vnc(d, {"cluster": "lab", "vmid": 200, "type": "lxc", "console": "term"})
        run_term(ws)
        ws.close()
    finally:
        sim.stop()
        x.stop()
