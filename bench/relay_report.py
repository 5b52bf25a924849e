"""bench/relay_report.py — the report of bench/relay-bench.py: JSON, a
Markdown table (ringside, each peer, the ratio), the harness's own CPU
beside each figure, and two SVG plots drawn by gnuplot.

With several interleaved rounds every figure and every ratio is computed in
each round (a ratio from the two relays' figures of the same round), and
the table gives the median over the rounds with its spread, min-max; the
plots and the harness table use the medians.

    /usr/bin/python3 bench/relay_report.py bench/results/relays-STAMP.json   (redraw)
    /usr/bin/python3 bench/relay_report.py bench/results/hold-STAMP.json     (the hold's)
"""
import json
import os
import platform
import statistics
import subprocess
import sys

PVE = ["ringside", "floor", "nginx", "haproxy"]
CPU_FLAGS = ["aes", "pclmulqdq", "vaes", "vpclmulqdq", "sha_ni", "avx", "avx2", "avx512f",
             "avx512vl", "avx512bw"]
VNC = ["ringside-vnc", "nginx+websockify", "websockify"]


def machine():
    cpu, flags = "?", []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in CPU_FLAGS if f in have]
                break
    except OSError:
        pass
    ver = {}
    for name, cmd in (("nginx", ["nginx", "-v"]), ("haproxy", ["haproxy", "-v"]),
                      ("websockify", ["dpkg-query", "-W", "-f=${Version}", "websockify"])):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            ver[name] = (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            ver[name] = "?"
    return {"cpus": os.cpu_count(), "cpu": cpu, "cpu_flags": flags, "kernel": platform.release(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg": open("/proc/loadavg").read().split()[:3], "versions": ver}


def get(r, *path):
    for k in path:
        if not isinstance(r, dict) or k not in r or r[k] is None:
            return None
        r = r[k]
    return r


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, float) and v < 100:
        return "%.2f%s" % (v, unit)
    return "{:,}{}".format(round(v), unit)


def added_p99(res, name, label):
    """Over the same path with no relay: `direct` (the client at the fake
    pveproxy, WSS) for the Proxmox-mode relays, `direct-rfb` (RFB over TCP
    at the fake RFB server) for the plain ones."""
    base = "direct" if name in PVE else "direct-rfb"
    a = get(res, name, "latency", label, "rtt_us", "p99")
    d = get(res, base, "latency", label, "rtt_us", "p99")
    return None if a is None or d is None else a - d


def mb(v):
    return None if v is None else v / 1e6


ROWS = [
    # (label, getter, lower is better)
    ("consoles held (asked)", lambda r, n: get(r, n, "hold", "held"), False),
    ("userspace memory per idle console, Private_Dirty (B)",
     lambda r, n: get(r, n, "hold", "private_dirty_bytes_per_console"), True),
    ("userspace memory per idle console, PSS of the process tree (B)",
     lambda r, n: get(r, n, "hold", "pss_bytes_per_console"), True),
    ("kernel slab per console, all 4 sockets of the test (B)",
     lambda r, n: get(r, n, "hold", "slab_bytes_per_console_4_sockets"), True),
    ("relay CPU while the consoles idle (% of a core)",
     lambda r, n: get(r, n, "hold", "cpu_percent_idle"), True),
    ("throughput per relay core, 1 KiB messages (MB relayed per CPU-s)",
     lambda r, n: mb(get(r, n, "stream", "1024", "relayed_bytes_per_relay_cpu_s")), False),
    ("throughput per relay core, 64 KiB messages (MB relayed per CPU-s)",
     lambda r, n: mb(get(r, n, "stream", "65536", "relayed_bytes_per_relay_cpu_s")), False),
    ("wall-clock throughput, 1 KiB messages, same offered load (MB/s echoed)",
     lambda r, n: mb(get(r, n, "stream", "1024", "echo_bytes_per_s")), False),
    ("wall-clock throughput, 64 KiB messages, same offered load (MB/s echoed)",
     lambda r, n: mb(get(r, n, "stream", "65536", "echo_bytes_per_s")), False),
    ("added latency p99, idle (µs over direct)", lambda r, n: added_p99(r, n, "idle"), True),
    ("added latency p99, under a 16 KiB stream (µs over direct)",
     lambda r, n: added_p99(r, n, "loaded"), True),
    ("latency p50 / p99 / p99.9, idle (µs)", None, True),
    ("latency p50 / p99 / p99.9, under a 16 KiB stream (µs)", None, True),
    ("setup rate per relay core, resumed TLS (consoles per CPU-s)",
     lambda r, n: get(r, n, "setup", "resumed", "opens_per_relay_cpu_s"), False),
    ("setup rate per relay core, full TLS handshakes (consoles per CPU-s)",
     lambda r, n: get(r, n, "setup", "full_handshake", "opens_per_relay_cpu_s"), False),
    ("setup latency p50 / p99, resumed (µs, 64 in flight)", None, True),
    ("API tokens per relay core (per CPU-s)",
     lambda r, n: get(r, n, "tokens", "tokens_per_relay_cpu_s"), False),
]


def triple(r, n, *path):
    v = get(r, n, *path)
    if not v:
        return "—"
    keys = ["p50", "p99", "p99.9"] if "p99.9" in v else ["p50", "p99"]
    return " / ".join(fmt(v.get(k)) for k in keys)


def spread(vals):
    """(median, min, max) of the figures present, None when there are none;
    a median of whole numbers stays whole when it is one."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    m = statistics.median(vals)
    if all(isinstance(v, int) for v in vals) and float(m).is_integer():
        m = int(m)
    return m, min(vals), max(vals)


def cell(s, f=fmt):
    if s is None:
        return f(None)
    m, lo, hi = s
    return f(m) if lo == hi else "%s (%s–%s)" % (f(m), f(lo), f(hi))


def ratio(v):
    return "%.2f" % v


def table(res, names, rounds=None):
    """res: the medians' shape (triples are read from it); rounds: each
    round's results, from which every figure and ratio is computed."""
    rounds = rounds or [res]
    present = [n for n in names if n in res]
    if not present:
        return []
    base = present[0]
    head = "| figure | " + " | ".join(
        n if n == base else "%s | ratio" % n for n in present) + " |"
    out = [head, "|---" * (1 + 2 * (len(present) - 1) + 1) + "|"]
    for label, fn, _lower in ROWS:
        cells = []
        for n in present:
            if fn is None:
                path = ("setup", "resumed", "setup_us") if label.startswith("setup") else \
                    ("latency", "idle" if "idle" in label else "loaded", "rtt_us")
                cells.append(triple(res, n, *path))
                if n != base:
                    cells.append("")
                continue
            cells.append(cell(spread([fn(r, n) for r in rounds])))
            if n != base:
                rs = [(fn(r, base), fn(r, n)) for r in rounds]
                s = spread([b / v for b, v in rs if b is not None and v])
                cells.append(cell(s, ratio) if s else "")
        if all(c in ("—", "") for c in cells):
            continue
        out.append("| %s | %s |" % (label, " | ".join(cells)))
    return out


def limits(res):
    out = ["| relay | scenario | relay cores | fake upstream cores | client cores (≤) |",
           "|---|---|---|---|---|"]
    for n, r in res.items():
        for size, s in sorted((r.get("stream") or {}).items(), key=lambda x: int(x[0])):
            out.append("| %s | stream %s B × %s consoles | %s | %s | %s |" % (
                n, size, s.get("consoles", "?"), fmt(s.get("relay_cpu_cores")),
                fmt(s.get("fake_cpu_cores")), fmt(s.get("client_cpu_cores"))))
        for k, s in (r.get("setup") or {}).items():
            out.append("| %s | setup (%s), CPU per console | %s ms | | %s ms |" % (
                n, k, fmt(s.get("relay_cpu_ms_per_open")), fmt(s.get("client_cpu_ms_per_open"))))
    return out


def data_blocks(path, groups):
    """Write one gnuplot data block per (title, [(x, y)]); return the plot clause."""
    with open(path, "w") as f:
        for n, points in groups:
            f.write('"%s"\n' % n)
            for x, y in points:
                f.write("%s %.3f\n" % (x, y))
            f.write("\n\n")
    return ", ".join("'%s' index %d using 1:2 with linespoints title '%s'" % (path, i, n)
                     for i, (n, _) in enumerate(groups))


def plots(res, base):
    made = []
    mem = [(n, [(opened, d / 1024) for opened, d, _p in r["hold"]["series"]])
           for n, r in res.items() if get(r, "hold", "series")]
    if mem:
        data = base + "-mem.dat"
        plot = data_blocks(data, mem)
        script = ("set terminal svg size 900,560 dynamic background rgb 'white'\n"
                  "set output '%s-memory.svg'\nset title 'Relay userspace memory (Private_Dirty "
                  "growth) vs consoles open'\nset xlabel 'consoles open'\nset ylabel 'MiB'\n"
                  "set key left top\nset grid\nplot %s\n" % (base, plot))
        made.append((script, base + "-memory.svg", data))
    thr = [(n, [(size, s["relayed_bytes_per_relay_cpu_s"] / 1e6)
                for size, s in sorted(r["stream"].items(), key=lambda x: int(x[0]))
                if s.get("relayed_bytes_per_relay_cpu_s")])
           for n, r in res.items() if r.get("stream")]
    if thr:
        data = base + "-thr.dat"
        plot = data_blocks(data, thr)
        script = ("set terminal svg size 900,560 dynamic background rgb 'white'\n"
                  "set output '%s-throughput.svg'\nset title 'Bytes relayed per relay CPU-second "
                  "vs message size'\nset xlabel 'message size (bytes)'\nset ylabel 'MB per "
                  "CPU-second'\nset logscale x 2\nset logscale y 10\nset key left top\nset grid\n"
                  "plot %s\n" % (base, plot))
        made.append((script, base + "-throughput.svg", data))
    out = []
    for script, svg, data in made:
        try:
            subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
            out.append(os.path.basename(svg))
        except (OSError, subprocess.CalledProcessError) as e:
            print("relay-bench: gnuplot failed: %s" % e, file=sys.stderr)
        os.unlink(data)
    return out


def median_tree(trees):
    """The rounds' results merged: numbers become their median, lists and
    text come from the first round that has them."""
    trees = [t for t in trees if t is not None]
    if not trees:
        return None
    if all(isinstance(t, dict) for t in trees):
        keys = []
        for t in trees:
            keys += [k for k in t if k not in keys]
        return {k: median_tree([t.get(k) for t in trees]) for k in keys}
    if all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in trees):
        return spread(trees)[0]
    return trees[0]


def write(res, mode, base, command, seconds, rounds=None, load=None):
    """res: one run's results by relay, or None with rounds: a list of them,
    one per interleaved round, and load: the machine's load per relay and
    round (relay-bench.py's Load)."""
    os.makedirs(os.path.dirname(base), exist_ok=True)
    rounds = rounds or [res]
    names = []
    for r in rounds:
        names += [n for n in r if n not in names]
    med = {n: median_tree([r.get(n) for r in rounds]) for n in names}
    doc = {"mode": mode, "command": command, "seconds": round(seconds), "machine": machine(),
           "rounds": rounds, "load": load or [], "results": med}
    json.dump(doc, open(base + ".json", "w"), indent=1)
    render(doc, base)


def load_table(load):
    out = ["| round | relay | waited for quiet (s) | seconds | load average before → after "
           "(1 / 5 / 15 min) | other processes' CPU share | steal | this run's CPU share |",
           "|---|---|---|---|---|---|---|---|"]
    for x in load:
        out.append("| %d | %s | %s | %s | %s → %s | %.0f %% | %.0f %% | %.0f %% |" % (
            x["round"], x["relay"], fmt(x.get("quiet_wait_s")), fmt(x["seconds"]),
            " / ".join("%.2f" % v for v in x["loadavg_before"]),
            " / ".join("%.2f" % v for v in x["loadavg_after"]), 100 * x["others_cpu_share"],
            100 * x["steal_share"], 100 * x["ours_cpu_share"]))
    return out


def suites(rounds):
    """Which TLS 1.3 suites each relay's legs negotiated, over all rounds:
    the per-core figures compare relays only if these agree."""
    seen = {}
    for r in rounds:
        for name, x in r.items():
            legs = seen.setdefault(name, ({}, {}))
            for s in (x.get("setup") or {}).values():
                for k, n in (s.get("tls_suites") or {}).items():
                    legs[0][k] = legs[0].get(k, 0) + n
            for k, n in (x.get("upstream_suites") or {}).items():
                legs[1][k] = legs[1].get(k, 0) + n
    rows = [(name, legs) for name, legs in seen.items() if legs[0] or legs[1]]
    if not rows:
        return []
    out = ["", "## TLS suites negotiated", "",
           "Connections by TLS 1.3 suite over all rounds: the browser leg as the client saw it "
           "(setup runs), the upstream leg as fake-pve saw it (every scenario). Every relay is "
           "offered the same suites in the same order (bench/relay-bench.py, SUITES).", "",
           "| relay | browser leg | upstream leg |", "|---|---|---|"]
    for name, legs in rows:
        out.append("| %s | %s | %s |" % (name, *(", ".join(
            "%s %s" % (k, fmt(n)) for k, n in sorted(leg.items())) or "—" for leg in legs)))
    return out


def render(doc, base):
    res = doc["results"]
    rounds = doc.get("rounds") or [res]
    m = doc["machine"]
    svgs = plots(res, base)
    md = ["# Relays side by side (`%s`, %s s)" % (doc["command"], doc["seconds"]), "",
          "Machine: %d vCPU %s (%s), %s GiB, Linux %s; load average at the end %s. Peers: %s." % (
              m["cpus"], m["cpu"], "flags: " + " ".join(m.get("cpu_flags") or ["none of "
                                                       + "/".join(CPU_FLAGS)]),
              m["mem_gib"], m["kernel"], " ".join(m["loadavg"]),
              "; ".join("%s %s" % kv for kv in m["versions"].items())), ""]
    if len(rounds) > 1:
        md += ["%d interleaved rounds (every relay once per round, in the same order). Each cell "
               "is the median over the rounds, then the spread (min–max) when the rounds "
               "differ; each ratio is computed within a round, then its median and spread are "
               "given. Latency triples are the medians of each percentile." % len(rounds), ""]
    md += ["Ratios are ringside ÷ peer: below 1 is better for memory, CPU and latency rows, above "
           "1 for held, throughput and rate rows. `floor` is bench/floor-relay, the simplest "
           "correct relay of the same path (TLS both legs, WebSocket re-framed, nothing else): "
           "ringside ÷ floor is the distance to the physical limit of this machine (for "
           "throughput, latency and setup: the floor's fixed per-leg buffers make its memory "
           "row no limit). Per-core "
           "figures divide by the relay's own "
           "on-CPU time (every thread and process, from schedstat), so they hold on a shared "
           "2-vCPU machine where client, upstream and relay share the cores.", "",
           "## Proxmox mode: WSS in, WSS out (upstream certificate verified)", ""]
    md += table(res, PVE, rounds)
    md += ["", "`direct` (no relay, the client at the fake pveproxy) latency p50 / p99 / p99.9: "
           "idle %s µs, loaded %s µs." % (triple(res, "direct", "latency", "idle", "rtt_us"),
                                          triple(res, "direct", "latency", "loaded", "rtt_us")),
           "", "## Plain VNC mode: WSS in (websockify: plain ws), TCP out", ""]
    md += table(res, VNC, rounds)
    md += ["", "`direct-rfb` (no relay, the client speaking RFB over TCP to the fake RFB server) "
           "latency p50 / p99 / p99.9: idle %s µs, loaded %s µs." % (
               triple(res, "direct-rfb", "latency", "idle", "rtt_us"),
               triple(res, "direct-rfb", "latency", "loaded", "rtt_us"))]
    md += ["", "## The harness's own CPU beside the relay's", "",
           "Client (one io_uring thread: at most 1 core), fake upstream and relay share 2 vCPUs. "
           "Where relay + fake + client come near 2, the machine was full and the relay got what "
           "was left; where the client is near 1 core and the relay well under what is left, the "
           "client set the pace. Either way the per-core figures divide by the relay's own CPU "
           "time, so they compare relays; wall-clock rates are in the JSON.", ""]
    md += limits(res)
    md += suites(rounds)
    if doc.get("load"):
        md += ["", "## The machine's load in each round", "",
               "Before each relay's measurement the harness waits until the previous one has "
               "left the machine (TCP sockets back to where the run started, CPUs under 10 %% "
               "busy; at most 90 s). "
               "Load average before and after each relay's measurement; the CPU other processes "
               "took meanwhile (all CPUs' busy time from /proc/stat minus this run's own "
               "processes), the hypervisor's steal and this run's own CPU, as shares of all "
               "%d CPUs." % m["cpus"], ""]
        md += load_table(doc["load"])
    if svgs:
        md += ["", "## Plots", ""] + ["![%s](%s)" % (s, s) for s in svgs]
    md += ["", "Reproduce: `make && %s`." % doc["command"]]
    open(base + ".md", "w").write("\n".join(md) + "\n")
    print("\n".join(md))


def write_hold(res, base, command, seconds, load):
    """The `hold` mode's report: ringside alone holding its consoles, then
    stopped with SIGTERM under them (relay-bench.py main_hold)."""
    os.makedirs(os.path.dirname(base), exist_ok=True)
    doc = {"mode": "hold", "command": command, "seconds": round(seconds), "machine": machine(),
           "load": load, "results": res}
    json.dump(doc, open(base + ".json", "w"), indent=1)
    render_hold(doc, base)


def render_hold(doc, base):
    h, m, load = doc["results"].get("hold") or {}, doc["machine"], doc.get("load") or {}
    st = h.get("stop") or {}
    fails = h.get("failures") or {}
    held, asked = h.get("held") or 0, h.get("asked") or 0
    kb = lambda v: None if v is None else v / 1000  # noqa: E731

    def goal(ok):
        return "—" if ok is None else ("met" if ok else "**not met**")

    over = st.get("over_drain_s")
    rows = [
        ("consoles held (asked)", "%s (%s)" % (fmt(held), fmt(asked)),
         "100,000, zero failures",
         goal(held >= 100000 and held == asked and not any(fails.values())
              and not h.get("dropped_while_idle"))),
        ("failures while opening, by cause",
         ", ".join("%s %d" % kv for kv in fails.items() if kv[1]) or "none", "", ""),
        ("consoles dropped while idle (before the SIGTERM)", fmt(h.get("dropped_while_idle")),
         "", ""),
        ("opening: ramp (s) / consoles per s / setup p50 / p99 (ms)", "%s / %s / %s / %s" % (
            fmt(h.get("ramp_s")), fmt(h.get("opened_per_s")),
            fmt(kb(get(h, "setup_us", "p50"))), fmt(kb(get(h, "setup_us", "p99")))), "", ""),
        ("userspace memory per idle console, Private_Dirty (B)",
         fmt(h.get("private_dirty_bytes_per_console")), "≤ 6,000",
         goal(None if h.get("private_dirty_bytes_per_console") is None
              else h["private_dirty_bytes_per_console"] <= 6000)),
        ("userspace memory per idle console, PSS (B)", fmt(h.get("pss_bytes_per_console")),
         "", ""),
        ("kernel slab per console, all 4 sockets on this box (B)",
         fmt(h.get("slab_bytes_per_console_4_sockets")), "", ""),
        ("kernel slab per console, ringside's 2 sockets ≈ half (B)",
         fmt(None if h.get("slab_bytes_per_console_4_sockets") is None
             else h["slab_bytes_per_console_4_sockets"] / 2), "", ""),
        ("of which unreclaimable (SUnreclaim), 4 sockets (B)",
         fmt(h.get("sunreclaim_bytes_per_console_4_sockets")), "", ""),
        ("TCP sockets open per console (client, ringside ×2, fake pveproxy)",
         fmt(h.get("tcp_sockets_per_console")), "", ""),
        ("relay CPU while idle (%% of a core over %s s)" % fmt(h.get("idle_s")),
         fmt(h.get("cpu_percent_idle")), "< 1 %",
         goal(None if h.get("cpu_percent_idle") is None else h["cpu_percent_idle"] < 1)),
        ("SIGTERM → exit with every console open (s)", fmt(st.get("stop_s")), "", ""),
        ("drain_timeout_s", fmt(st.get("drain_timeout_s")), "", ""),
        ("SIGTERM → the consoles' sockets closed (s): 99 % gone, or the machine's count "
         "steady for 1 s", fmt(st.get("sockets_closed_s")), "", ""),
        ("stop − drain_timeout_s (s)", fmt(over), "≤ 2", goal(None if over is None else over <= 2)),
        ("relay CPU over the stop (s) / exit status", "%s / %s" % (
            fmt(st.get("relay_cpu_s")), fmt(st.get("exit_status"))), "", ""),
        ("consoles the client saw closed by the stop", fmt(st.get("client_saw_closed")), "",
         ""),
        ("client + fake pveproxy CPU over the stop (s): closing their ends on the same cores",
         fmt(st.get("harness_cpu_s")), "", ""),
    ]
    md = ["# ringside holding %s Proxmox consoles, then SIGTERM (`%s`, %s s)" % (
              fmt(asked), doc["command"], doc["seconds"]), "",
          "Machine: %d vCPU %s (%s), %s GiB, Linux %s; load average at the end %s; while it ran "
          "other processes took %.0f %% of all CPUs, steal %.0f %%." % (
              m["cpus"], m["cpu"], "flags: " + " ".join(m.get("cpu_flags") or ["none"]),
              m["mem_gib"], m["kernel"], " ".join(m["loadavg"]),
              100 * load.get("others_cpu_share", 0), 100 * load.get("steal_share", 0)), "",
          "ringside alone in Proxmox mode (WSS in, WSS out, upstream certificate verified), one "
          "run: ringside-bench (ringside's engine, direct descriptors) opens every console as a "
          "browser does, through the fake pveproxy, and holds them idle. Memory is the growth "
          "of ringside's Private_Dirty / PSS from before the hold (after a 200-console warm-up) "
          "to %s s after the last console opened, ÷ consoles held; slab is the growth of "
          "/proc/meminfo's Slab over the same span, which on loopback counts all four sockets "
          "of a console (browser, ringside's two, the upstream's). Idle CPU is ringside's "
          "on-CPU time (schedstat, every thread) over the idle window. Then ringside gets "
          "SIGTERM with every console still open: consoles run on for drain_timeout_s, then "
          "ringside closes the rest and exits; the stop is SIGTERM → process reaped." % fmt(
              h.get("hold_wait")), "",
          "| figure | ringside | goal (issue 18) | |", "|---|---|---|---|"]
    md += ["| %s | %s | %s | %s |" % r for r in rows]
    tl = st.get("timeline") or []
    if tl:
        pick, last = [], None
        for x in tl:  # about one sample a second, and every change of more than 5 %
            if last is None or x[0] - last[0] >= 1 or abs(x[1] - last[1]) > 0.05 * max(
                    last[1], 1) or x[2] != last[2]:
                pick.append(x)
                last = x
        for x in tl:  # the exit, and the last sample
            if (x[2:4] == [0, 0] or x[2:4] == (0, 0) or x is tl[-1]) and x not in pick:
                pick.append(x)
        pick.sort(key=lambda x: x[0])
        md += ["", "## The stop, second by second", "",
               "After SIGTERM: TCP sockets open on the machine above the count before the hold "
               "(all four sockets of each console, and whatever else runs on the machine), "
               "ringside's worker threads still running (each ends once its connections are "
               "closed; then the main thread frees the rest and exits) and its resident memory. "
               "The row with no worker threads and no RSS is the moment ringside was reaped "
               "(rows after it: the kernel still closing sockets). Workers all gone by %s s; "
               "drain deadline at %s s; ringside reaped at %s s." % (
                   fmt(st.get("workers_gone_s")), fmt(st.get("drain_timeout_s")),
                   fmt(st.get("stop_s"))), "",
               "| s after SIGTERM | sockets open | of which orphans (closed, finishing) | "
               "TIME_WAIT | worker threads | ringside RSS (MiB) |",
               "|---|---|---|---|---|---|"]
        md += ["| %s | %s | %s | %s | %s | %s |" % (
            fmt(x[0]), fmt(x[1]), fmt(x[4] if len(x) > 4 else None),
            fmt(x[5] if len(x) > 5 else None), fmt(x[2]), fmt(x[3])) for x in pick]
    for label, lines in (("idle", h.get("perf_idle")), ("the stop", st.get("perf"))):
        if lines:
            md += ["", "## perf record -e cpu-clock on ringside: %s (self time, top symbols)"
                   % label, "", "```"] + lines + ["```"]
    md += ["", "Reproduce: `make && %s` (`make bench-hold`)." % doc["command"]]
    open(base + ".md", "w").write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    path = sys.argv[1]
    doc = json.load(open(path))
    (render_hold if doc.get("mode") == "hold" else render)(doc, path[:-5])
