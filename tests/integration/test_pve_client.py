"""The Proxmox client's rules against a scripted node (tests/integration/pvefake.py)
where an answer must be cut or packed at an exact place: the cause a user reads
(counter and browser message) for each real-node answer, no use of freed memory
when a node answers more than asked, no secret before TLS, no stale bytes after a
failover, pongs bounded."""
import re
import time
import urllib.request

import pytest

from conftest import rss_kb
from pvefake import Node, Recorder, make_cert
from test_proxmox import SECRET, closed, expect_desktop, expect_refusal, metric, open_vnc

TOKEN = "root@pam!ringside=" + SECRET


@pytest.fixture
def fake(tmpdir_rs):
    cert, key = make_cert(tmpdir_rs)
    made = []

    def node(**script):
        n = Node(tmpdir_rs, cert, key, **script)
        made.append(n)
        return n
    node.ca = cert
    yield node
    for n in made:
        n.stop()


def cluster(fake, *eps, **kw):
    c = {"endpoints": list(eps), "ca_file": fake.ca, "token": TOKEN}
    c.update(kw)
    return {"lab": c}


def wait_for(cond, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def failovers(d):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port, timeout=5) as r:
        m = re.search(r"^ringside_pve_failovers_total (\d+)", r.read().decode(), re.M)
    return int(m.group(1))


VNC = {"cluster": "lab", "node": "pve1", "vmid": 100, "type": "qemu"}
TERM = {"cluster": "lab", "node": "pve1", "vmid": 200, "type": "lxc", "console": "term"}


def test_5xx_with_more_bytes_in_the_record_single_endpoint(daemon_factory, fake):
    """Issue 15.1: the 500 ends the last attempt and frees the upstream while
    the rest of the record is still being read (ASan: heap-use-after-free)."""
    n = fake(status="500_then_more")
    d = daemon_factory({"clusters": cluster(fake, n.ep)})
    for _ in range(3):
        reason = expect_refusal(open_vnc(d, VNC))
        assert "could not be reached" in reason, reason
    assert closed(d, "upstream_unavailable") == 3
    assert d.proc.poll() is None


def test_stale_bytes_never_read_as_the_next_attempts_answer(daemon_factory, fake):
    """The bytes after the 500 belong to the connection given up: the next
    endpoint's own answers open the console."""
    bad, good = fake(status="500_then_more"), fake(after_upgrade="term_ok")
    d = daemon_factory({"clusters": cluster(fake, bad.ep, good.ep)})
    ws = open_vnc(d, TERM)
    assert wait_for(lambda: metric(d, "ringside_console_sessions_active",
                                   {"kind": "pve-term"}) == 1), d.logs()[-3000:]
    assert failovers(d) == 1
    assert closed(d, "upstream_protocol") == 0
    ws.close()


def test_token_never_in_clear_after_a_failover_while_waiting_on_the_lock(daemon_factory, fake):
    """Issue 15.2: a console waiting for the VM's lock holds no connection; on
    the parent commit the node's idle close sent it to the next endpoint with
    the lock-retry timer armed, and the token left before any TLS."""
    n = fake(idle_close_s=0.3)  # pveproxy closes idle connections (5 s), scaled down
    rec = Recorder()
    try:
        d = daemon_factory({"clusters": cluster(fake, n.ep, rec.ep),
                            "limits": {"handshake_timeout_ms": 2500}})
        first = open_vnc(d, VNC)  # holds the lock: the node never speaks RFB
        time.sleep(1.0)
        second = open_vnc(d, VNC)
        r1, r2 = expect_refusal(first), expect_refusal(second)
        assert b"PVEAPIToken" not in rec.data and SECRET.encode() not in rec.data, rec.data[:200]
        assert rec.accepted == 0, "no failover: the wait held no connection to lose"
        assert "in time" in r1 and "in time" in r2, (r1, r2)
        # the second console took up its step on a new connection: vncproxy, no status again
        proxies = [r for r in n.requests if r[1].endswith("/vncproxy")]
        assert len(proxies) == 2, n.requests
    finally:
        rec.stop()


def test_401_at_eof_is_upstream_auth_without_failover(daemon_factory, fake):
    """pveproxy's auth-handler 401 has no length and ends at the close; it is
    the same on every endpoint, so no failover (and no 3 s x endpoints wait)."""
    a, b = fake(status="401_eof"), fake()
    d = daemon_factory({"clusters": cluster(fake, a.ep, b.ep)})
    t0 = time.time()
    reason = expect_refusal(open_vnc(d, VNC))
    assert "credentials were refused" in reason, reason
    assert time.time() - t0 < 3
    assert closed(d, "upstream_auth") == 1
    assert metric(d, "ringside_pve_upstream_errors_total", {"cause": "upstream_auth"}) == 1
    assert failovers(d) == 0 and b.requests == []


def test_no_101_in_time_is_console_unreachable(daemon_factory, fake):
    """pveproxy never answers vncwebsocket when its connect to the console
    port fails: a short deadline of its own, not the whole handshake's."""
    n = fake(upgrade="hang")
    d = daemon_factory({"clusters": cluster(fake, n.ep),
                        "limits": {"upstream_upgrade_timeout_ms": 400,
                                   "handshake_timeout_ms": 10000}})
    t0 = time.time()
    reason = expect_refusal(open_vnc(d, VNC))
    assert "did not connect to the VM's console in time" in reason, reason
    assert time.time() - t0 < 3
    assert closed(d, "console_unreachable") == 1
    assert metric(d, "ringside_pve_upstream_errors_total",
                  {"cause": "console_unreachable"}) == 1


def test_bad_console_ticket_gets_one_fresh_termproxy(daemon_factory, fake):
    n = fake(upgrade="401_once", after_upgrade="term_ok")
    d = daemon_factory({"clusters": cluster(fake, n.ep)})
    ws = open_vnc(d, TERM)
    assert wait_for(lambda: metric(d, "ringside_console_sessions_active",
                                   {"kind": "pve-term"}) == 1), d.logs()[-3000:]
    assert [r[1].rsplit("/", 1)[1] for r in n.requests if "termproxy" in r[1]] == ["termproxy"] * 2
    assert closed(d, "upstream_auth") == 0
    ws.close()


def term_close_reason(ws):
    code, reason = ws.expect_close()
    ws.close()
    return code, reason


def test_termproxy_closing_before_ok_is_terminal_refused(daemon_factory, fake):
    n = fake(after_upgrade="term_refuse")
    d = daemon_factory({"clusters": cluster(fake, n.ep)})
    code, reason = term_close_reason(open_vnc(d, TERM))
    assert "API token" in reason and "April 2026" in reason, (code, reason)
    assert closed(d, "terminal_refused") == 1
    assert "has only an API token" in d.logs()


def test_terminals_use_the_login_where_both_are_configured(daemon_factory, fake):
    n = fake(after_upgrade="term_ok")
    d = daemon_factory({"clusters": cluster(fake, n.ep, user="root@pam", password="pw")})
    ws = open_vnc(d, TERM)
    assert wait_for(lambda: metric(d, "ringside_console_sessions_active",
                                   {"kind": "pve-term"}) == 1), d.logs()[-3000:]
    ws.close()
    term = [r for r in n.requests if r[1].endswith("/termproxy")]
    assert term and all(r[2] == "cookie" for r in term), n.requests
    n.requests.clear()
    vnc = open_vnc(d, VNC)
    assert wait_for(lambda: any(r[1].endswith("/vncproxy") for r in n.requests))
    vnc.close()
    assert all(r[2] == "token" for r in n.requests if not r[1].endswith("/access/ticket"))
    assert "has only an API token" not in d.logs()


def test_vnc_password_retry_with_a_login_reuses_the_clusters_ticket(daemon_factory, fake):
    """The console's own copy of the login ticket is wiped once it is ready:
    the fresh vncproxy after a refused VNC password takes the cluster's
    cached ticket (no second login) instead of a request without one."""
    n = fake(after_upgrade="vnc_reset_once")
    d = daemon_factory({"clusters": {"lab": {"endpoints": [n.ep], "ca_file": fake.ca,
                                             "user": "root@pam", "password": "pw"}}})
    ws = expect_desktop(open_vnc(d, VNC))
    assert n.vnc_auths == 2
    proxy = [r for r in n.requests if r[1].endswith("/vncproxy")]
    assert len(proxy) == 2 and all(r[2] == "cookie" for r in proxy), n.requests
    assert len([r for r in n.requests if r[1].endswith("/access/ticket")]) == 1, n.requests
    assert closed(d, "target_auth") == 0 and closed(d, "upstream_protocol") == 0
    ws.close()


def test_pings_from_a_node_that_never_reads_do_not_pile_up(daemon_factory, fake, monkeypatch):
    """Issue 15.10: one pending pong at most, sent when the connection is not
    congested (RFC 6455 allows answering only the latest ping)."""
    # ASan keeps freed memory in quarantine (256 MiB): that is not a queue
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4")
    n = fake(after_upgrade="ping_flood")
    d = daemon_factory({"clusters": cluster(fake, n.ep)})
    ws = open_vnc(d, TERM)
    # after a warm-up (buffers, allocator caches), a bounded reply queue
    # stops growing; a queue per ping grows with every MiB of them
    assert wait_for(lambda: n.flood_sent > 16 << 20, 20), "the flood did not start"
    base, at = rss_kb(d.pid), n.flood_sent
    assert wait_for(lambda: n.flood_sent > at + (32 << 20), 30), n.flood_sent
    grown = rss_kb(d.pid) - base
    print("RSS grew %d KiB over %d MiB of pings" % (grown, (n.flood_sent - at) >> 20))
    assert grown < 8 * 1024, "ringside grew %d KiB for %d MiB of pings" % (
        grown, (n.flood_sent - at) >> 20)
    ws.close()
    n.stop()


def test_vnc_password_reset_by_another_client_gets_one_fresh_vncproxy(daemon_factory, fake):
    """vncproxy sets a VM-wide VNC password: another client's call in between
    makes ours fail; one fresh vncproxy recovers, keeping the login."""
    n = fake(after_upgrade="vnc_reset_once")
    d = daemon_factory({"clusters": cluster(fake, n.ep)})
    ws = expect_desktop(open_vnc(d, VNC))
    assert n.vnc_auths == 2
    assert len([r for r in n.requests if r[1].endswith("/vncproxy")]) == 2
    assert closed(d, "target_auth") == 0
    ws.close()
    # twice refused: the console fails with the target's reason, once retried
    n2 = fake(after_upgrade="vnc_reset_once", vnc_fail="always")
    d2 = daemon_factory({"clusters": cluster(fake, n2.ep)})
    reason = expect_refusal(open_vnc(d2, VNC))
    assert "Authentication failed" in reason, reason
    assert closed(d2, "target_auth") == 1
    assert len([r for r in n2.requests if r[1].endswith("/vncproxy")]) == 2
