"""A fleet of three ringside boxes (127.0.0.11-13) behind HAProxy in TCP mode
(round robin), sharing their links through real Redis (a master, a replica,
Sentinel): links minted on any box open on any box, exactly once, across a
master failover; Redis away and back; nothing readable in Redis; a box
killed; the per-VM lock across boxes; the fleet view and kills across boxes.

The lab is in fleet.py; every process listens on loopback and is stopped by
its PID."""
import json
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import API_KEY, Xvnc
from fleet import WS, Fleet, http, metric
from test_proxmox import Sim, cluster

VNC_PW = "secret12"  # conftest's session-wide Xvnc (fixture xvnc)


def start_lab(tmp, **kw):
    return Fleet(tmp, **kw)


def stop_lab(lab):
    errors = lab.stop()
    for b in lab.boxes:
        b.check_clean()
    assert not errors, errors


@pytest.fixture
def lab(tmp_path):
    lab = start_lab(str(tmp_path))
    yield lab
    stop_lab(lab)


def vnc_body(x):
    return {"kind": "vnc", "host": "127.0.0.1", "port": x.port, "password": VNC_PW}


def open_console(host, port, token):
    ws = WS(host, port, "/ws/" + token)
    return ws


def open_settled(host, port, token, timeout=15):
    """Open <token> on a box that can reach the store: a box still on its way
    to the new master accepts and closes at once with 1013 (what the console
    page retries on, the link untouched); try again as the page does."""
    deadline = time.time() + timeout
    while True:
        ws = open_console(host, port, token)
        if ws.status != 101:
            return ws
        op, _, p = ws.recv_frame()
        if op == 8 and p[:2] == struct.pack(">H", 1013) and time.time() < deadline:
            ws.close()
            time.sleep(0.2)
            continue
        assert op in (0, 2), (op, p)
        ws.pending += p
        return ws


def desktop(ws):
    """The browser's side of RFB through ringside: security None, then the
    server's ClientInit answer (the framebuffer size)."""
    assert ws.rfb_client_handshake() == 0
    ws.send_frame(2, b"\x01")
    w, h = struct.unpack(">HH", ws.recv_data(4))
    return w, h


def box_metric(lab, name, labels=None):
    return sum(metric(b.metrics(), name, labels) for b in lab.boxes if b.alive())


def test_links_minted_through_the_balancer_open_on_any_box(lab, xvnc):
    """Six links minted and opened through HAProxy: round robin makes most
    of them open on a box other than the one that minted them."""
    tokens = [lab.create(vnc_body(xvnc))["token"] for _ in range(6)]
    for tok in tokens:
        ws = open_console("127.0.0.1", lab.lb.port, tok)
        assert ws.status == 101, ws.head
        assert desktop(ws)[0] > 0
        ws.close()
    # Both legs were spread: every box minted and every box opened consoles.
    for b in lab.boxes:
        assert metric(b.metrics(), "ringside_consoles_opened_total") >= 1, b.node


def test_proxmox_console_minted_on_one_box_opens_on_another(tmp_path):
    tmp = str(tmp_path)
    x = Xvnc(tmp, None)
    sim = Sim(tmp, x.port)
    try:
        lab = start_lab(tmp, box_overrides={"clusters": {"lab": cluster(sim)}})
        try:
            a, b = lab.boxes[0], lab.boxes[1]
            tok = lab.create({"cluster": "lab", "vmid": 100}, via=a)["token"]
            ws = open_console(b.host, b.port, tok)
            assert ws.status == 101, ws.head
            assert desktop(ws) == (1024, 768)
            ws.close()
        finally:
            stop_lab(lab)
    finally:
        sim.stop()
        x.stop()


def test_one_link_raced_by_64_upgrades_over_three_boxes_opens_one_console(lab, xvnc):
    tok = lab.create(vnc_body(xvnc))["token"]
    go = threading.Barrier(64)
    results = []
    lock = threading.Lock()

    def race(i):
        b = lab.boxes[i % 3]
        go.wait()
        ws = open_console(b.host, b.port, tok)
        with lock:
            results.append((b.node, ws.status))
        ws.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 64
    won = [r for r in results if r[1] == 101]
    assert len(won) == 1, results
    assert box_metric(lab, "ringside_consoles_opened_total") == 1


def test_master_killed_sentinel_promotes_and_no_link_is_consumed_twice(tmp_path, xvnc):
    # consume_replicas 1: a consumption is acknowledged by a replica before
    # the console opens, so it survives the master's death. Two replicas: the
    # one not promoted acknowledges the new master's consumptions.
    lab = start_lab(str(tmp_path), fleet_extra={"redis": {"consume_replicas": 1}}, replicas=2)
    try:
        spent = lab.create(vnc_body(xvnc))["token"]
        unspent = lab.create(vnc_body(xvnc))["token"]
        # Opened for real: a 101 alone may be the 1013 that leaves the link
        # untouched (a WAIT that timed out puts the link back).
        ws = open_settled("127.0.0.1", lab.lb.port, spent)
        assert ws.status == 101, ws.head
        assert desktop(ws)[0] > 0
        ws.close()
        old = lab.master
        # WAIT 1 vouches for one replica; Sentinel may promote the other, so
        # the master dies only once both replicas hold the consumption (the
        # README's consume_replicas trade: N replicas, not all of them).
        deadline = time.time() + 10
        while True:
            role = old.cmd("ROLE")
            offsets = [int(r[2]) for r in role[2]]
            if len(offsets) == 2 and min(offsets) >= int(role[1]):
                break
            assert time.time() < deadline, role
            time.sleep(0.05)
        t0 = time.time()
        old.stop(signal.SIGKILL)
        # New links work again once Sentinel has promoted the replica.
        deadline = t0 + 20
        while True:
            st, body, _ = http(lab.base + "/api/v1/consoles", "POST", vnc_body(xvnc))
            if st == 201:
                break
            assert st == 503, (st, body)
            assert time.time() < deadline, "no new link 20 s after the master died"
            time.sleep(0.2)
        took = time.time() - t0
        print("failover: new links after %.2f s" % took)
        promoted = lab.current_master()
        assert promoted is not old and promoted.role() == "master"
        fresh = json.loads(body)["token"]
        # Within Sentinel's failover time (down-after 1 s + election) plus
        # ringside's reconnect back-off (at most 2 s).
        assert took < 10, took
        # The link consumed before the failover stays consumed on every box.
        # Boxes follow the new master one by one (each within its back-off):
        # ask each until it answers for the store.
        for b in lab.boxes:
            ws = open_settled(b.host, b.port, spent)
            assert ws.status != 101, (b.node, ws.head)
            ws.close()
        # One minted before (replicated) and one after both open, once.
        for tok in (unspent, fresh):
            ws = open_settled("127.0.0.1", lab.lb.port, tok)
            assert ws.status == 101, ws.head
            assert desktop(ws)[0] > 0
            ws.close()
            again = open_settled("127.0.0.1", lab.lb.port, tok)
            assert again.status != 101
            again.close()
        assert box_metric(lab, "ringside_redis_failovers_total") >= 3  # each box followed
    finally:
        stop_lab(lab)


def test_redis_stopped_answers_503_and_recovers(tmp_path, xvnc):
    lab = start_lab(str(tmp_path), use_sentinel=False)
    try:
        before = lab.create(vnc_body(xvnc))["token"]
        # Saved on the way down, loaded on the way up: the link outlives the outage.
        lab.master.cmd("SAVE")
        for r in lab.replicas:
            r.stop()
        lab.master.stop()
        b = lab.boxes[0]
        st, body, hdrs = http(b.base + "/api/v1/consoles", "POST", vnc_body(xvnc))
        assert st == 503, (st, body)
        assert json.loads(body)["error"]["code"] == "store_unavailable", body
        assert "Retry-After" in hdrs
        st, page, _ = http(b.base + "/console/" + before)
        assert st == 503 and b"temporarily unavailable" in page
        ws = open_console(b.host, b.port, before)
        assert ws.status != 101 or b"unavailable" in ws.s.recv(4096)
        ws.close()
        text = b.metrics()
        assert metric(text, "ringside_redis_errors_total") >= 1
        assert metric(text, "ringside_store_links_total", {"outcome": "store_unavailable"}) >= 2
        lab.master.start()
        deadline = time.time() + 10
        while http(b.base + "/api/v1/consoles", "POST", vnc_body(xvnc))[0] != 201:
            assert time.time() < deadline, "no recovery 10 s after Redis came back"
            time.sleep(0.2)
        ws = open_console(b.host, b.port, before)
        assert ws.status == 101, ws.head
        assert desktop(ws)[0] > 0
        ws.close()
    finally:
        stop_lab(lab)


def test_a_dump_of_redis_holds_no_secret(tmp_path, xvnc):
    tmp = str(tmp_path)
    x = Xvnc(tmp, None)
    sim = Sim(tmp, x.port)
    try:
        lab = start_lab(tmp, box_overrides={"clusters": {"lab": cluster(sim)}})
        try:
            vnc = lab.create(vnc_body(xvnc))["token"]
            pve = lab.create({"cluster": "lab", "vmid": 100})["token"]
            live = lab.create(vnc_body(xvnc))["token"]
            ws = open_console("127.0.0.1", lab.lb.port, live)
            assert ws.status == 101
            desktop(ws)
            time.sleep(1.5)  # a heartbeat publishes the live session
            dump = lab.current_master().dump()
            blob = b"".join(k + b"".join(v if isinstance(v, bytes) else str(v).encode()
                                        for v in vals) + (d or b"")
                            for k, _, vals, d in dump)
            assert any(k.startswith(b"rs:box:") for k, *_ in dump), dump
            for secret in (vnc, pve, live, VNC_PW, "127.0.0.1", str(xvnc.port),
                           "11111111-2222-3333-4444-555555555555", "PVEVNC", "PVE:"):
                assert secret.encode() not in blob, secret
            ws.close()
        finally:
            stop_lab(lab)
    finally:
        sim.stop()
        x.stop()


def test_a_box_killed_the_others_serve_every_new_link(lab, xvnc):
    dead = lab.boxes[1]
    dead.stop(signal.SIGKILL)
    # The kernel closes a dead process's io_uring listeners asynchronously:
    # until then connections to it are accepted and reset. Once they are
    # refused, HAProxy retries elsewhere; its check (300 ms) takes the box out.
    def refused():
        try:
            socket.create_connection((dead.host, dead.port), 0.2).close()
            return False
        except ConnectionRefusedError:
            return True
    assert wait_for(refused, 5)
    time.sleep(0.7)
    for _ in range(9):
        tok = lab.create(vnc_body(xvnc))["token"]
        ws = open_console("127.0.0.1", lab.lb.port, tok)
        assert ws.status == 101, ws.head
        assert desktop(ws)[0] > 0
        ws.close()


def test_two_consoles_to_one_vm_through_two_boxes_at_once(tmp_path):
    """vncproxy resets the VM's VNC password: without the fleet's VM lock
    the second box's call invalidates the first one's password and a retry
    is needed (or, with two, fails)."""
    tmp = str(tmp_path)
    x = Xvnc(tmp, None)
    sim = Sim(tmp, x.port)
    try:
        lab = start_lab(tmp, box_overrides={"clusters": {"lab": cluster(sim)}})
        try:
            # Six at the same instant, two through each box: authentications
            # on different boxes overlap for sure.
            toks = [lab.create({"cluster": "lab", "vmid": 100})["token"] for _ in range(6)]
            go = threading.Barrier(6)
            sizes = {}

            def one(i, box, tok):
                go.wait()
                ws = open_console(box.host, box.port, tok)
                sizes[i] = desktop(ws) if ws.status == 101 else ws.head
                ws.close()

            threads = [threading.Thread(target=one, args=(i, lab.boxes[i % 3], toks[i]))
                       for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sizes == {i: (1024, 768) for i in range(6)}, sizes
            # Some waited for another box's authentication; none needed the
            # retry a password reset by another vncproxy call forces.
            assert box_metric(lab, "ringside_pve_vmlock_waits_total") >= 1
            for box in lab.boxes:
                assert "VNC password refused" not in box.logs()
        finally:
            stop_lab(lab)
    finally:
        sim.stop()
        x.stop()


def wait_for(pred, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


def test_fleet_view_lists_every_box_and_kill_reaches_the_owner(lab, xvnc):
    consoles = {}
    for b in lab.boxes:
        tok = lab.create(vnc_body(xvnc), via=b)["token"]
        ws = open_console(b.host, b.port, tok)
        assert ws.status == 101
        desktop(ws)
        consoles[b.node] = ws
    a, b, c = lab.boxes

    def api_boxes():
        st, body, _ = http(a.base + "/api/v1/sessions")
        assert st == 200, body
        s = json.loads(body)["sessions"]
        return sorted(x["box"] for x in s) == ["box-a", "box-b", "box-c"] and s

    sessions = wait_for(api_boxes)
    assert sessions, http(a.base + "/api/v1/sessions")
    for s in sessions:
        assert "target" not in s and "client" not in s
    # Each box sees the others as of its last heartbeat (every second).
    def status_boxes():
        st, body, _ = http(b.base + "/status")
        assert st == 200
        status = json.loads(body)
        return status["total_sessions"] == 3 and status
    status = wait_for(status_boxes)
    assert status, http(b.base + "/status")
    assert sorted(s["box"] for s in status["sessions"]) == ["box-a", "box-b", "box-c"]

    def ctl_boxes():
        rc, out, err = c.ctl("sessions", "--fleet", "--json")
        assert rc == 0, err
        listed = json.loads(out)
        return sorted(s["box"] for s in listed) == ["box-a", "box-b", "box-c"] and listed
    listed = wait_for(ctl_boxes)
    assert listed, c.ctl("sessions", "--fleet", "--json")
    rc, text, _ = c.ctl("sessions", "--fleet")
    assert rc == 0 and "box-a" in text and "box-b" in text
    # Without --fleet only the box's own.
    rc, out, _ = c.ctl("sessions", "--json")
    assert [s.get("box", "box-c") for s in json.loads(out)] == ["box-c"]

    # Kill box b's session from box a.
    # Ids are unique per box (three fresh boxes give out the same ones): the
    # box names which.
    victim = next(s for s in listed if s["box"] == "box-b")
    rc, out, err = a.ctl("kill", "box-b/%x" % victim["id"], "--json")
    assert rc == 0, err
    assert json.loads(out) == {"killed": True, "box": "box-b"}
    ws = consoles["box-b"]
    ws.s.settimeout(5)
    try:
        ws.expect_close()
    except EOFError:
        pass
    assert wait_for(lambda: metric(b.metrics(), "ringside_fleet_kills_total",
                                   {"event": "done"}) == 1)
    assert wait_for(lambda: sorted(s["box"] for s in json.loads(
        http(a.base + "/api/v1/sessions")[1])["sessions"]) == ["box-a", "box-c"], 4)
    # Box a's and c's consoles are untouched.
    for node in ("box-a", "box-c"):
        consoles[node].send_frame(2, b"\x03\x00\x00\x00\x00\x00\x00\x10\x00\x10")
        assert consoles[node].recv_frame()[0] == 2
    # The fleet's families next to the store's: one exposition promtool accepts.
    check = subprocess.run(["promtool", "check", "metrics"], input=a.metrics().encode(),
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # An id no box lists.
    rc, _, err = a.ctl("kill", "7fffffffffff")
    assert rc != 0 and "no such session" in err
    for ws in consoles.values():
        ws.close()


def test_pipelined_api_requests_while_links_are_written(lab, xvnc):
    """A keep-alive client with several requests in flight (ringside-bench,
    proxies that pipeline): bytes that arrive while an answer waits for
    Redis are kept for after it, none lost, every request answered in
    order."""
    b = lab.boxes[0]
    body = json.dumps(vnc_body(xvnc)).encode()
    req = (b"POST /api/v1/consoles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
           % (API_KEY.encode(), len(body), body))
    s = socket.create_connection((b.host, b.port), timeout=10)
    f = s.makefile("rb")
    # Four in flight, one more sent as each answer comes (as ringside-bench
    # does): the new one lands while the next answer waits for Redis.
    sent, statuses = 4, []
    s.sendall(req * 4)
    while len(statuses) < 40:
        line = f.readline()
        assert line, "connection closed after %d answers" % len(statuses)
        statuses.append(int(line.split()[1]))
        n = 0
        while True:
            h = f.readline().strip()
            if not h:
                break
            if h.lower().startswith(b"content-length:"):
                n = int(h.split(b":")[1])
        json.loads(f.read(n))
        if sent < 40:
            s.sendall(req)
            sent += 1
    assert statuses == [201] * 40
    s.close()
