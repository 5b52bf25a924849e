"""What a held idle console costs: Proxmox consoles (WSS in, WSS out, the
upstream certificate verified) held through ringside against the bench's
fake pveproxy, measured by the allocator's own count of live heap bytes
(`heap_allocated_bytes` of /api/v1/stats, jemalloc's stats.allocated).

The bound guards README "Memory": a held console keeps its two TLS
connections (after the handshake, TLS 1.3 record keys only, inside two
struct rs_tls_conn of 1.5 KB: no SSL object, no session — with BoringSSL's
objects kept, as before the record layer, it was 6.9 KB and this fails), the
engine's two connections, the session and the Proxmox leg's stream state — no
setup state (answer parser, tickets, node, lock keys), no handshake
configuration, no per-connection copy of the node's certificate chain."""
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import API_KEY, ASAN, BUILD, ROOT, free_port
from test_bench import certs, fake_pve  # noqa: F401 (fixtures shared with the bench's tests)

BENCH = os.path.join(ROOT, BUILD, "bench")
HELD = 300
# Heap bytes per held console: 4.1-4.5 KB measured on 2026-12-07 once each held
# struct fitted its jemalloc size class (4.6-5.0 KB before; with the TLS 1.3
# record layer, 6.9 KB with BoringSSL's SSL objects and sessions kept,
# 7.9-8.2 KB before the engine's connections dropped their send headers,
# 10.8 KB before the Proxmox leg dropped its setup state, the TLS client its
# per-connection copies and the session its inline pong and address).
BOUND = 5000


def stats(d):
    req = urllib.request.Request(d.base + "/api/v1/stats",
                                 headers={"Authorization": "Bearer " + API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


class Hold:
    """ringside-bench holding <n> Proxmox consoles until stopped (by PID)."""

    def __init__(self, args, n):
        self.p = subprocess.Popen([os.path.join(BENCH, "ringside-bench"), *args, "--pve",
                                   "bench:bench:100", "--scenario", "hold", "--conns", str(n),
                                   "--batch", "64", "--hold-seconds", "60",
                                   "--timeout-ms", "10000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in self.p.stderr:  # progress lines, then "held" once the ramp is over
            if '"event":"held"' in line:
                self.held = json.loads(line)
                break
        else:
            raise AssertionError("ringside-bench ended before holding: %s" % self.p.stdout.read())

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        out, _ = self.p.communicate(timeout=20)
        return json.loads(out.strip().splitlines()[-1])


def wait_active(d, n, timeout=10):
    deadline = time.time() + timeout
    while stats(d)["consoles"]["active"] != n:
        assert time.time() < deadline, stats(d)["consoles"]
        time.sleep(0.1)


@pytest.mark.skipif(ASAN, reason="ASan's allocator keeps redzones and quarantine: no jemalloc count")
def test_held_proxmox_console_heap_stays_under_bound(daemon_factory, fake_pve, certs):
    tls = free_port()
    d = daemon_factory({"tls_listen": ["127.0.0.1:%d" % tls], "log_level": "warn",
                        "api": {"rate_limit_per_s": 0, "max_pending_per_key": 0},
                        "clusters": {"bench": {
                            "endpoints": ["127.0.0.1:%d" % fake_pve.port],
                            "token": "bench@pve!b=00000000-0000-4000-8000-000000000000",
                            "ca_file": certs[0]}}})
    args = ["--api", "127.0.0.1:%d" % d.port, "--ws", "127.0.0.1:%d" % tls, "--tls",
            "--key", API_KEY]
    # A first wave fills the allocator's caches, the TLS session cache and
    # the per-worker tables; the baseline is read once it has gone.
    warm = Hold(args, 64)
    assert warm.held["opened"] == 64, warm.held
    warm.stop()
    wait_active(d, 0)
    heap0 = stats(d)["heap_allocated_bytes"]
    assert heap0 > 0, "no allocator statistics (jemalloc) in this build"

    h = Hold(args, HELD)
    try:
        assert h.held["opened"] == HELD, h.held
        time.sleep(0.5)  # the last consoles' VNC authentication and tickets are over
        s = stats(d)
        assert s["consoles"]["active"] == HELD, s["consoles"]
        per = (s["heap_allocated_bytes"] - heap0) / HELD
    finally:
        out = h.stop()
    assert out["dropped_while_held"] == 0 and not any(out["failures"].values()), out
    print("heap bytes per held Proxmox console: %.0f" % per)
    assert per <= BOUND, "a held Proxmox console costs %.0f heap bytes (bound %d)" % (per, BOUND)
