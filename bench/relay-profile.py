#!/usr/bin/python3
"""bench/relay-profile.py — where ringside's CPU goes, scenario by scenario.

    bench/relay-profile.py [--out DIR] [--callers [--dwarf]]

Starts the fake pveproxy and ringside exactly as bench/relay-bench.py does
(Proxmox mode, TLS on both legs), then for each scenario attaches
`perf record -e cpu-clock` (a software event: this machine has no hardware
counters) to ringside for the length of one bench/ringside-bench run:
stream at 1 KiB and 64 KiB, setup (resumed TLS), tokens, 15,000 consoles
held idle, and the SIGTERM stop of those. Writes DIR/profile-<stamp>.txt with the top
symbols (self time) of each. For call chains build with frame pointers and
pass --callers:

    make B=build/prof CFLAGS=-fno-omit-frame-pointer
    RINGSIDE_BUILD=build/prof bench/relay-profile.py --callers

Needs perf (linux-perf) and permission to attach (root, or
kernel.perf_event_paranoid <= 1).
"""
import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("relay_bench", os.path.join(HERE, "relay-bench.py"))
rb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rb)

SCENARIOS = [
    ("stream 1 KiB", "stream", 32, ["--msg-size", "1024", "--hold-seconds", "8"]),
    ("stream 64 KiB", "stream", 32, ["--msg-size", "65536", "--hold-seconds", "8"]),
    ("setup (TLS resumed)", "setup", 4000, ["--batch", "64"]),
]


def perf_start(pid, data, callers):
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2999", "-p", str(pid), "-o", data]
    if callers == "dwarf":
        # through libssl/libcrypto, which have no frame pointers
        cmd[2:2] = ["--call-graph", "dwarf,32768"]
    elif callers:
        cmd.insert(2, "-g")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the traffic starts
    return p


def perf_stop(p):
    p.send_signal(signal.SIGINT)
    p.wait(60)


def report(data, callers):
    cmd = ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
           "--percent-limit", "1"]
    cmd += ["-g", "caller,0.5,callee,function,percent", "--max-stack", "6"] if callers \
        else ["-g", "none"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line and not line.startswith("#"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(rb.ROOT, "bench/results"))
    ap.add_argument("--callers", action="store_true")
    ap.add_argument("--dwarf", action="store_true",
                    help="call graphs by DWARF unwinding (with --callers): they reach into "
                         "BoringSSL, which frame pointers do not")
    ap.add_argument("--only", default="",
                    help="profile only the stream/setup scenarios whose label contains this "
                         "(e.g. setup); the tokens, idle and stop sections are then skipped")
    a = ap.parse_args()
    callers = "dwarf" if a.callers and a.dwarf else a.callers
    run = rb.Run("short", a.out, "")
    sections = []
    try:
        run.fakes(16000)
        run.relay, args = run.ringside(16000, plain=False)
        pid = run.relay.pid
        run.client(args, "hold", 200, ["--hold-seconds", "0"])  # warm the pools
        for label, scenario, conns, extra in SCENARIOS:
            if a.only not in label:
                continue
            data = os.path.join(run.dir, "perf.data")
            p = perf_start(pid, data, callers)
            out, _, _, _, _ = run.client(args, scenario, conns, extra)
            perf_stop(p)
            sections.append((label, out, report(data, a.callers)))
            run.settle()
        if not a.only:
            # tokens: the API alone, keep-alive, pipelined
            api = args[args.index("--api") + 1]
            data = os.path.join(run.dir, "perf.data")
            p = perf_start(pid, data, callers)
            out, _, _, _, _ = run.client(["--api", api, "--key", rb.KEY, "--target", "127.0.0.1:1"],
                                         "tokens", 30000, ["--batch", "128", "--workers", "1"])
            perf_stop(p)
            sections.append(("tokens", out, report(data, a.callers)))
            # idle, then stop: 15,000 consoles held idle for 5 s, then SIGTERM
            held = {}
            idle_data = os.path.join(run.dir, "perf-idle.data")

            def on_held(proc, relay):
                time.sleep(2)
                p = perf_start(pid, idle_data, callers)
                t0 = rb.cpu_ns([pid])
                time.sleep(5)
                held["idle_pct"] = round((rb.cpu_ns([pid]) - t0) / 5e9 * 100, 2)
                perf_stop(p)
                held["p"] = perf_start(pid, data, callers)
                t0 = time.time()
                run.relay.send_signal(signal.SIGTERM)
                run.relay.wait(120)
                held["s"] = time.time() - t0
                perf_stop(held["p"])
                proc.send_signal(signal.SIGTERM)

            run.client(args, "hold", 15000, ["--hold-seconds", "600", "--batch", "512"],
                       on_held=on_held)
            sections.append(("idle, 15,000 consoles held (5 s)",
                             {"cpu_percent_of_a_core": held["idle_pct"]}, report(idle_data, a.callers)))
            sections.append(("SIGTERM with 15,000 consoles held", {"stop_s": round(held["s"], 2)},
                             report(data, a.callers)))
    finally:
        run.procs.stop_all()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(a.out, "profile-%s.txt" % stamp)
    with open(path, "w") as f:
        f.write("# ringside CPU profile by scenario: perf record -e cpu-clock, self time\n")
        f.write("# reproduce: %s\n" % " ".join(["bench/relay-profile.py"] + sys.argv[1:]))
        for label, out, rep in sections:
            f.write("\n## %s\n# client: %s\n%s\n" % (label, out, rep))
    print(path)


if __name__ == "__main__":
    main()
