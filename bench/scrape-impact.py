#!/usr/bin/python3
"""Relay throughput with and without a monitoring loop (Prometheus scrapes and
`ringside ctl stats` as fast as they go). The target streams 64 KiB blocks
through ringside to a raw WebSocket reader; figures are MB/s of payload the
reader received over <seconds>, alternating rounds.

    bench/scrape-impact.py [seconds] [rounds]       (run from the repository root)
"""
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/integration"))
import conftest  # noqa: E402
from fakes import Target, streaming_target  # noqa: E402
from test_console import relay_ws  # noqa: E402

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 5
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def measure(d, t, monitor):
    ws = relay_ws(d, t.port)
    ws.send_frame(2, b"\x01")
    stop = threading.Event()
    scrapes = [0]

    def loop():
        while not stop.is_set():
            urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port, timeout=5).read()
            subprocess.run([conftest.BIN, "ctl", "--socket", d.sock, "stats"], capture_output=True)
            scrapes[0] += 1

    th = threading.Thread(target=loop) if monitor else None
    if th:
        th.start()
    got, start = 0, time.time()
    ws.s.settimeout(5)
    while time.time() - start < secs:
        got += len(ws.s.recv(1 << 20))
    elapsed = time.time() - start
    stop.set()
    if th:
        th.join()
    ws.close()
    return got / elapsed / 1e6, scrapes[0] / elapsed


with tempfile.TemporaryDirectory() as tmp:
    d = conftest.Daemon(tmp, {"admin_socket": os.path.join(tmp, "a.sock"), "log_level": "warn"})
    d.sock = os.path.join(tmp, "a.sock")
    t = Target(streaming_target)
    plain, loaded, rate = [], [], []
    for _ in range(rounds):
        plain.append(measure(d, t, False)[0])
        mb, r = measure(d, t, True)
        loaded.append(mb)
        rate.append(r)
    t.stop()
    d.stop()
med = lambda v: sorted(v)[len(v) // 2]
print("relay MB/s without monitoring: %s (median %.0f)" % (["%.0f" % v for v in plain], med(plain)))
print("relay MB/s while scraping /metrics + ctl stats %.0f times/s: %s (median %.0f)" %
      (med(rate), ["%.0f" % v for v in loaded], med(loaded)))
print("ratio (with / without): %.2f" % (med(loaded) / med(plain)))
