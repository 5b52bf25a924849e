#!/usr/bin/python3
"""Fleet mode next to the embedded token table, in the same run: one box with
links in its own memory, one with links in Redis (a real redis-server on
loopback), both driven by bench/ringside-bench against bench/fake-rfb.

Rows (one per mode): tokens per ringside CPU-second (scenario `tokens`),
setup rate and setup latency p50/p99 (scenario `setup`: API call, upgrade,
RFB handshake through the relay), and the CPU seconds ringside and Redis
spent in each run. Small counts by default: this is a shared 2-core box.

    bench/fleet-bench.py [--tokens 2000] [--conns 400] [--batch 16] [--out bench/results]

Writes bench/results/fleet-<UTC time>.json and .md (with the command line).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
os.environ.setdefault("RINGSIDE_BUILD", "build/release")

from conftest import API_KEY, free_port, wait_port  # noqa: E402
from fleet import Box, Redis, fleet_section  # noqa: E402

B = os.path.join(ROOT, os.environ["RINGSIDE_BUILD"])


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def run_client(box, rfb_port, scenario, conns, batch):
    cmd = [B + "/bench/ringside-bench", "--scenario", scenario, "--conns", str(conns),
           "--batch", str(batch), "--workers", "1", "--timeout-ms", "30000",
           "--api", "%s:%d" % (box.host, box.port), "--ws", "%s:%d" % (box.host, box.port),
           "--key", API_KEY, "--target", "127.0.0.1:%d" % rfb_port]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("ringside-bench: %s" % out.stderr[-2000:])
    return json.loads(lines[-1])


def measure(box, redis, rfb_port, scenario, conns, batch):
    print("fleet-bench: %s %s %d" % (box.node, scenario, conns), file=sys.stderr, flush=True)
    r0 = cpu_s(box.pid)
    d0 = cpu_s(redis.proc.pid) if redis else 0.0
    t0 = time.time()
    res = run_client(box, rfb_port, scenario, conns, batch)
    wall = time.time() - t0
    return res, cpu_s(box.pid) - r0, (cpu_s(redis.proc.pid) - d0) if redis else 0.0, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results"))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rs-fleet-bench-") as tmp:
        rfb_port = free_port()
        rfb = subprocess.Popen([B + "/bench/fake-rfb", "--listen", "127.0.0.1:%d" % rfb_port],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        redis = boxes = None
        try:
            assert wait_port(rfb_port, 10), "fake-rfb did not start"
            redis = Redis(tmp, "redis")
            over = {"log_level": "warn", "api": {"rate_limit_per_s": 0, "max_pending_per_key": 0,
                                                 "auth_failures_per_window": 0}}
            boxes = [("embedded", Box(tmp, "127.0.0.11", "embedded", None, over), None),
                     ("redis", Box(tmp, "127.0.0.12", "box-a",
                                   fleet_section("box-a", redis=redis), over), redis)]
            for mode, box, rd in boxes:
                tok, tok_cpu, tok_rcpu, tok_wall = measure(box, rd, rfb_port, "tokens",
                                                           a.tokens, a.batch)
                st, st_cpu, st_rcpu, st_wall = measure(box, rd, rfb_port, "setup", a.conns,
                                                       a.batch)
                rows.append({
                    "mode": mode,
                    "tokens": tok["tokens"],
                    "tokens_per_s": tok["tokens_per_s"],
                    "tokens_per_ringside_cpu_s": round(tok["tokens"] / tok_cpu) if tok_cpu else None,
                    "tokens_ringside_cpu_s": round(tok_cpu, 3),
                    "tokens_redis_cpu_s": round(tok_rcpu, 3),
                    "consoles": st["opened"],
                    "setup_per_s": st["opened_per_s"],
                    "setup_p50_ms": st["setup_us"]["p50"] / 1000,
                    "setup_p99_ms": st["setup_us"]["p99"] / 1000,
                    "setup_ringside_cpu_s": round(st_cpu, 3),
                    "setup_redis_cpu_s": round(st_rcpu, 3),
                    "failures": {k: v for k, v in {**tok["failures"], **st["failures"]}.items() if v},
                })
        finally:
            for _, box, _ in boxes or []:
                box.stop()
            if redis:
                redis.stop()
            rfb.terminate()
            rfb.wait(10)
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    cmd = "bench/fleet-bench.py " + " ".join(sys.argv[1:])
    doc = {"command": cmd, "when": stamp, "machine": "2 shared cores (loopback; ringside, "
           "redis-server, fake-rfb and the client on one machine)", "rows": rows}
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, "fleet-%s" % stamp)
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=2)
    with open(base + ".md", "w") as f:
        f.write("# Fleet mode (Redis) next to the embedded token table\n\n`%s` (%s, %s)\n\n"
                % (cmd, stamp, doc["machine"]))
        f.write("| mode | tokens/s | tokens per ringside CPU-s | ringside CPU s | Redis CPU s "
                "| setups/s | setup p50 ms | setup p99 ms | ringside CPU s | Redis CPU s |\n"
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
        for r in rows:
            f.write("| %s | %.0f | %s | %.3f | %.3f | %.0f | %.2f | %.2f | %.3f | %.3f |\n"
                    % (r["mode"], r["tokens_per_s"], r["tokens_per_ringside_cpu_s"],
                       r["tokens_ringside_cpu_s"], r["tokens_redis_cpu_s"], r["setup_per_s"],
                       r["setup_p50_ms"], r["setup_p99_ms"], r["setup_ringside_cpu_s"],
                       r["setup_redis_cpu_s"]))
        f.write("\nTokens: %d API calls (scenario `tokens`); setups: %d consoles (scenario "
                "`setup`), %d at a time. Failures: %s\n"
                % (a.tokens, a.conns, a.batch, {r["mode"]: r["failures"] for r in rows}))
    print(open(base + ".md").read())


if __name__ == "__main__":
    main()
