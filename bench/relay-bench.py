#!/usr/bin/python3
"""bench/relay-bench.py — ringside and its peers in one harness, one run.

    bench/relay-bench.py short|full|tiny [--rounds N] [--only NAME,NAME]
                         [--scenarios setup,hold,stream,latency,tokens] [--out DIR]
    bench/relay-bench.py hold [--conns 100000] [--drain-s 5] [--idle-s 10]
                         [--perf] [--out DIR]                    (make bench-hold)

Every relay is driven by the same client (bench/ringside-bench: io_uring,
the browser's whole path) against the same fast fake upstreams in C
(bench/fake-pve: pveproxy's console calls + WSS vncwebsocket with RFB VNC
authentication; bench/fake-rfb: plain RFB), on this machine, one after the
other:

  Proxmox mode, WSS in and WSS out (upstream certificate verified by all)
    ringside     API token per console, then the whole PVE sequence
    floor        bench/floor-relay: the simplest correct relay of the same
                 path on liburing (TLS both legs, WebSocket re-framed,
                 nothing else): the physical-limit row
    nginx        pure relay: WSS proxy_pass to vncwebsocket, no token logic
    haproxy      the same with HAProxy
    direct       no relay: the client at fake-pve itself (latency baseline)
  Plain VNC mode, WSS in, TCP out
    ringside-vnc ringside's plain VNC kind
    nginx+wsfy   nginx (TLS) in front of websockify (Debian)
    websockify   websockify alone, plain ws:// (it has no TLS here)
    direct-rfb   no relay: the client speaks RFB over TCP to fake-rfb (latency
                 baseline)

Scenarios per relay: hold (memory per idle console: userspace Private_Dirty
and PSS growth of the relay's process tree, kernel slab growth, CPU while
idle, memory sampled while the consoles open), setup with and without TLS
resumption (opens per relay CPU-second, setup p50/p99), stream at 16 B ..
64 KiB (echoed bytes per relay CPU-second; client and fake upstream CPU
beside it), latency idle and under a background stream (p50/p99/p99.9 of
>= 100k round trips), and for ringside the token rate per CPU-second.

The relays run interleaved: round 1 measures every relay in turn, then
round 2 does again, and so on (--rounds, 3 by default), so a change in the
machine's load falls on all of them; the report gives each figure's median
over the rounds with its spread (min-max), the CPU model and its AES/AVX
flags, and the load before and after each relay in each round (load average,
and how much CPU other processes took meanwhile). Every stream scenario runs
at the same fixed offered load for every relay and round: the same consoles,
message size and messages in flight (a closed loop: 4 per console).

Writes bench/results/relays-<UTC stamp>.{json,md} and SVG plots (gnuplot)
of memory vs consoles and throughput vs message size. Loopback only; every
process is stopped by its PID.

`hold` is ringside alone in Proxmox mode (TLS both legs) holding --conns
consoles (100,000 by default: issue 18's goal for this 2-core box), once:
consoles held and failures, userspace memory and kernel slab per idle
console, the relay's CPU over --idle-s seconds of idle, then SIGTERM with
every console still open and `drain_timeout_s` set to --drain-s: how long
the relay takes to exit, against that drain (the sockets still open over
the stop beside it; --perf adds `perf record -e cpu-clock` top symbols of
the idle and of the stop). Writes bench/results/hold-<UTC stamp>.{json,md}.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The integration tests' helpers (as bench/scrape-impact.py uses them): one
# free_port for both (never the same port twice in a run), one wait_port.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/integration"))
from conftest import free_port, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, os.environ.get("RINGSIDE_BUILD", "build/release"))
KEY = "bench-key-0123456789abcdef"
PVE_PATH = "/api2/json/nodes/bench/qemu/100/vncwebsocket?port=5900&vncticket=PVEVNC%3Abench"
HZ = os.sysconf("SC_CLK_TCK")
PER_RING = 19000  # sockets per io_uring direct-descriptor table (RLIMIT_NOFILE)

# hold_wait: seconds after the last console opened before memory is read;
# idle_s: how long the relay's idle CPU is measured; bg_warm: seconds the
# background stream runs before the loaded latency is measured.
# settle_s: how often the relay's CPU is checked for quiet between scenarios.
PACE = dict(hold_wait=3, idle_s=5, warm_pause=2, bg_warm=2, settle_s=0.3)
SIZES = {
    "short": dict(hold=2000, wsfy_hold=100, setup=1000, wsfy_setup=40, stream_conns=32,
                  stream_s=2, sizes=[1024, 65536], lat_conns=8, lat_s=3, tokens=20000, **PACE),
    "full": dict(hold=50000, wsfy_hold=600, setup=5000, wsfy_setup=150, stream_conns=64,
                 stream_s=5, sizes=[16, 256, 1024, 16384, 65536], lat_conns=8, lat_s=8,
                 tokens=50000, **PACE),
    # the harness's own test (tests/integration/test_bench.py): seconds, not minutes
    # ringside alone, Proxmox mode, `hold` then SIGTERM (--conns overrides hold)
    "hold": dict(hold=100000, tokens=0, hold_wait=5, idle_s=10, warm_pause=2, settle_s=0.3),
    "tiny": dict(hold=4, wsfy_hold=4, setup=4, wsfy_setup=4, stream_conns=2, stream_s=1,
                 sizes=[1024], lat_conns=2, lat_s=1, tokens=200, hold_wait=0.3, idle_s=0.5,
                 warm_pause=0.2, bg_warm=0.3, settle_s=0.1),
}
# one process, regular descriptors, 2 per console: HAProxy's maxconn 9,800
# and the floor relay's 20,000 descriptors hold at most this many
ONE_PROCESS_HOLD = 9000
# The TLS 1.3 suites every relay offers on its upstream leg and accepts on
# its browser leg, in BoringSSL's order on a CPU with AES instructions (what
# ringside, the floor relay and the bench client offer). fake-pve, BoringSSL
# too, takes the client's first choice; OpenSSL's default order puts
# AES-256-GCM first, so nginx and HAProxy left alone would pay its extra AES
# rounds on the upstream leg while ringside did not. Every relay negotiates
# AES-128-GCM on both legs here; each run records it (tls_suites,
# upstream_suites). A real pveproxy chooses by its own order instead
# (honor_cipher_order => 1 in PVE::APIServer::AnyEvent::new, OpenSSL's
# default TLS 1.3 list): AES-256-GCM upstream, for every relay alike.
SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
SCENARIOS = ("setup", "hold", "stream", "latency", "tokens")


def proc_stat():
    """(busy, steal) jiffies of all CPUs from /proc/stat: busy is user, nice,
    system, irq and softirq; steal is what the hypervisor gave others."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7] if len(v) > 7 else 0


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Load:
    """The machine's load around one relay's measurement: the load average
    before and after, and the CPU that processes other than this run's took
    meanwhile (all CPUs' busy time minus ours: this script and its reaped
    children, which every process it starts is by the end of a measurement),
    as a share of all CPUs; steal likewise."""

    def __init__(self):
        self.t, self.la = time.time(), loadavg()
        self.busy, self.steal = proc_stat()
        self.ours = sum(os.times()[:4])

    def end(self):
        secs = max(time.time() - self.t, 1e-3)
        busy, steal = proc_stat()
        cpus = os.cpu_count() or 1
        ours = sum(os.times()[:4]) - self.ours
        others = (busy - self.busy) / HZ - ours
        return {"seconds": round(secs, 1), "loadavg_before": self.la, "loadavg_after": loadavg(),
                "others_cpu_share": round(max(0.0, others) / (secs * cpus), 3),
                "steal_share": round((steal - self.steal) / HZ / (secs * cpus), 3),
                "ours_cpu_share": round(ours / (secs * cpus), 3)}


def wait_quiet(base_sockets, limit_s=90):
    """Wait, before a relay's round, until the previous round has left the
    machine: TCP sockets in use back within 200 of where the run started
    (the kernel can still be closing a 50,000-console hold's sockets after
    every process has exited) and all CPUs under 10 % busy over half a
    second. At most <limit_s>; returns the seconds waited (a guard: in
    relays-20261207T223134Z it never waited past its first half-second
    sample)."""
    t0 = time.time()
    cpus = os.cpu_count() or 1
    while time.time() - t0 < limit_s:
        b0, _ = proc_stat()
        time.sleep(0.5)
        b1, _ = proc_stat()
        if tcp_inuse() <= base_sockets + 200 and (b1 - b0) / HZ < 0.05 * cpus:
            break
    return round(time.time() - t0, 1)


def tree(pid):
    """pid and its live descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ns(pids):
    """On-CPU nanoseconds of every thread of <pids> (schedstat)."""
    total = 0
    for pid in pids:
        try:
            for t in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def proc_cpu_s(pid):
    """utime + stime of a process, all its threads (as its rusage counts)."""
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / HZ


def worker_threads(pid):
    """ringside's worker threads still running (named rs-worker-N)."""
    n = 0
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                    n += f.read().startswith("rs-worker")
            except OSError:
                pass
    except OSError:
        pass
    return n


def mem_kb(pids):
    """(Private_Dirty, Pss) in kB summed over <pids>."""
    d = p = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Private_Dirty:"):
                        d += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        p += int(line.split()[1])
        except OSError:
            pass
    return d, p


def slab_kb(field="Slab:"):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def tcp_sockstat():
    """The machine's TCP line of /proc/net/sockstat: inuse (open sockets,
    orphans included), orphan (closed by their process, still finishing:
    FIN_WAIT, LAST_ACK), tw (TIME_WAIT), ..."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                v = line.split()[1:]
                return {k: int(n) for k, n in zip(v[::2], v[1::2])}
    return {}


def tcp_inuse():
    return tcp_sockstat().get("inuse", 0)


def perf_start(pid, data):
    """perf record (cpu-clock: this VM has no hardware counters) on <pid>,
    samples stamped with CLOCK_MONOTONIC (time.monotonic()) so a report can
    cut them by phase; None when perf is not there or may not attach."""
    if not shutil.which("perf"):
        return None
    # -g: kernel call chains always; ringside's own with a frame-pointer build
    # (make B=build/prof CFLAGS=-fno-omit-frame-pointer; RINGSIDE_BUILD=build/prof)
    p = subprocess.Popen(["perf", "record", "-q", "-g", "-e", "cpu-clock", "-F", "999", "-k",
                          "mono", "-p", str(pid), "-o", data],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before what it is to see
    return p


def end_process(p, sig, timeout):
    """Send <sig> to a running process, wait <timeout> s for it, then kill."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def perf_stop(p, data, phases=(("", None),)):
    """Stop it (it also ends when its process exits); per phase (label,
    (monotonic start, end) or None for all of it) the samples and the top
    symbols by self time, one "percent dso symbol" line each."""
    if p is None:
        return []
    end_process(p, signal.SIGINT, 60)
    out = []
    for label, span in phases:
        lines = []
        # which threads (workers, main, io_uring's iou-wrk), then which symbols
        for sort, limit, top in (("comm", "3", 6), ("dso,symbol", "1.5", 20)):
            cmd = ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                   "--percent-limit", limit, "-g", "none"]
            if span:
                cmd += ["--time", "%.6f,%.6f" % span]
            rep = subprocess.run(cmd, capture_output=True, text=True).stdout
            if not lines:
                samples = [ln for ln in rep.splitlines() if ln.startswith("# Samples:")]
                lines.append("-- %s%s" % (label or "samples", ": " + samples[0][2:].split(
                    " (time")[0] if samples else ": none"))
            # "  7.66%  ringside  [.] worker_main  -  -": the dashes are empty columns
            got = [" ".join(w for w in ln.split() if w != "-") for ln in rep.splitlines()
                   if ln.strip() and ln[0] != "#"][:top]
            lines += ["threads: " + ", ".join(got)] if sort == "comm" and got else got
        out += lines
    return out


def fake_suites(path):
    """The TLS suites fake-pve's connections negotiated ({} if it printed none)."""
    try:
        last = open(path).read().strip().splitlines()[-1]
        return json.loads(last).get("suites", {})
    except (OSError, IndexError, ValueError):
        return {}


class Procs:
    """Processes started by this run, stopped by PID."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, log, **kw):
        p = subprocess.Popen(cmd, stdout=open(log + ".out", "w"), stderr=open(log + ".err", "w"),
                             **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        end_process(p, signal.SIGTERM, 20)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


class Run:
    def __init__(self, mode, out, only, scenarios=SCENARIOS, drain_s=None, perf=False):
        self.mode, self.cfg, self.out, self.only = mode, dict(SIZES[mode]), out, only
        self.scenarios = scenarios
        # drain_s: ringside's drain_timeout_s, and the hold ends with a
        # SIGTERM of the relay under the held consoles (the `hold` mode)
        self.drain_s, self.perf, self.perf_keep = drain_s, perf, None
        self.rounds, self.load = [], []
        self.dir = tempfile.mkdtemp(prefix="rs-relay-bench.")
        self.procs = Procs()
        self.relay = self.wsfy = None
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.key, "-out", self.cert,
                        "-days", "30", "-subj", "/CN=fake-pve", "-addext",
                        "subjectAltName=DNS:fake-pve,DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        self.combined = os.path.join(self.dir, "combined.pem")
        with open(self.combined, "w") as f:
            f.write(open(self.cert).read() + open(self.key).read())

    # --- upstreams ---

    def fakes(self, conns):
        rings = max(1, -(-(conns + 1000) // PER_RING))
        self.pve_port, self.rfb_port = free_port(), free_port()
        self.fake_pve = self.procs.start(
            [B + "/bench/fake-pve", "--listen", "127.0.0.1:%d" % self.pve_port, "--workers",
             str(rings), "--cert", self.cert, "--key", self.key], self.dir + "/fake-pve")
        self.fake_rfb = self.procs.start(
            [B + "/bench/fake-rfb", "--listen", "127.0.0.1:%d" % self.rfb_port, "--workers",
             str(rings)], self.dir + "/fake-rfb")
        assert wait_port(self.pve_port, 15) and wait_port(self.rfb_port, 15), \
            "fake upstreams did not start"

    # --- relays: each returns (process, client arguments) ---

    def ringside(self, conns, plain, drain_s=None):
        api, tls = free_port(), free_port()
        workers = max(2, -(-2 * conns // PER_RING))
        src = ["127.0.0.%d" % i for i in range(101, 109)]
        cfg = {"listen": ["127.0.0.1:%d" % api], "tls_listen": ["127.0.0.1:%d" % tls],
               "workers": workers, "state_dir": self.dir, "metrics_listen": "",
               "log_level": "warn", "api_keys": [{"name": "bench", "key": KEY}],
               "api": {"rate_limit_per_s": 0, "max_pending_per_key": 0},
               "allowed_targets": ["127.0.0.0/8"],
               "tokens": {"capacity": conns + self.cfg["tokens"] + 20000, "ttl_s": 600},
               "limits": {"header_timeout_ms": 600000, "keepalive_timeout_ms": 3600000,
                          "handshake_timeout_ms": 120000},
               "port_pool": {"source_addresses": src, "port_min": 10000, "port_max": 32767},
               "clusters": {"bench": {"endpoints": ["127.0.0.1:%d" % self.pve_port],
                                      "token": "bench@pve!bench=00000000-0000-4000-8000-000000000000",
                                      "ca_file": self.cert, "source_addresses": src}}}
        if drain_s is not None:
            cfg["drain_timeout_s"] = drain_s
        path = os.path.join(self.dir, "ringside.json")
        json.dump(cfg, open(path, "w"))
        p = self.procs.start([B + "/ringside", "--config", path], self.dir + "/ringside")
        assert wait_port(api, 15), "ringside did not start: " + open(self.dir + "/ringside.err").read()
        args = ["--api", "127.0.0.1:%d" % api, "--ws", "127.0.0.1:%d" % tls, "--tls", "--key", KEY]
        if plain:
            args += ["--target", "127.0.0.1:%d" % self.rfb_port]
        else:
            args += ["--pve", "bench:bench:100"]
        return p, args

    def nginx(self, conns, upstream_tls):
        port = free_port()
        workers = max(2, -(-2 * conns // PER_RING))
        srcs = "".join("  %s 127.0.0.%d;\n" % ("12.5%" if i < 108 else "*", i)
                       for i in range(101, 109))
        if upstream_tls:
            up = ("proxy_pass https://127.0.0.1:%d;\n proxy_ssl_verify on;\n"
                  " proxy_ssl_trusted_certificate %s;\n proxy_ssl_name fake-pve;\n"
                  " proxy_ssl_server_name on;\n proxy_ssl_session_reuse on;\n"
                  " proxy_ssl_protocols TLSv1.2 TLSv1.3;\n"
                  " proxy_ssl_conf_command Ciphersuites %s;\n" % (self.pve_port, self.cert, SUITES))
        else:
            up = "proxy_pass http://127.0.0.1:%d;\n" % self.wsfy_port
        conf = """worker_processes %d;
worker_rlimit_nofile 19500;
pid %s/nginx.pid;
error_log %s/nginx-error.log error;
daemon off;
events { worker_connections 19000; multi_accept on; }
http {
 access_log off;
 split_clients "$remote_addr$remote_port" $src {
%s }
 server {
  listen 127.0.0.1:%d ssl reuseport backlog=4096;
  ssl_certificate %s;
  ssl_certificate_key %s;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ecdh_curve X25519:prime256v1;
  ssl_session_tickets on;
  location / {
   %s
   proxy_bind $src;
   proxy_http_version 1.1;
   proxy_set_header Upgrade $http_upgrade;
   proxy_set_header Connection "upgrade";
   proxy_read_timeout 3600s;
   proxy_send_timeout 3600s;
  }
 }
}
""" % (workers, self.dir, self.dir, srcs, port, self.cert, self.key, up)
        path = os.path.join(self.dir, "nginx.conf")
        open(path, "w").write(conf)
        p = self.procs.start(["nginx", "-c", path, "-p", self.dir], self.dir + "/nginx")
        assert wait_port(port, 15), "nginx did not start: " + open(self.dir + "/nginx.err").read()
        path_arg = PVE_PATH if upstream_tls else "/websockify"
        return p, ["--ws", "127.0.0.1:%d" % port, "--tls", "--path", path_arg]

    def floor(self, conns):
        port = free_port()
        p = self.procs.start([B + "/bench/floor-relay", "--listen", "127.0.0.1:%d" % port,
                              "--cert", self.cert, "--key", self.key, "--upstream",
                              "127.0.0.1:%d" % self.pve_port, "--path", PVE_PATH, "--ca",
                              self.cert, "--sni", "fake-pve", "--workers", "2"],
                             self.dir + "/floor")
        assert wait_port(port, 15), "floor-relay did not start: " + open(self.dir + "/floor.err").read()
        return p, ["--ws", "127.0.0.1:%d" % port, "--tls", "--path", PVE_PATH]

    def haproxy(self, conns):
        port = free_port()
        servers = "".join(
            "  server s%d 127.0.0.1:%d ssl verify required ca-file %s verifyhost fake-pve"
            " sni str(fake-pve) source 127.0.0.%d\n" % (i, self.pve_port, self.cert, 100 + i)
            for i in range(1, 9))
        conf = """global
  maxconn 9800
  nbthread 2
  pidfile %s/haproxy.pid
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-bind-ciphersuites %s
  ssl-default-server-ciphersuites %s
  ssl-server-verify required
defaults
  mode http
  maxconn 9800
  timeout connect 10s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  timeout http-request 60s
frontend fe
  bind 127.0.0.1:%d ssl crt %s alpn http/1.1 curves X25519:P-256
  default_backend pve
backend pve
  balance roundrobin
%s""" % (self.dir, SUITES, SUITES, port, self.combined, servers)
        path = os.path.join(self.dir, "haproxy.cfg")
        open(path, "w").write(conf)
        p = self.procs.start(["haproxy", "-f", path, "-db"], self.dir + "/haproxy")
        assert wait_port(port, 15), "haproxy did not start: " + open(self.dir + "/haproxy.err").read()
        return p, ["--ws", "127.0.0.1:%d" % port, "--tls", "--path", PVE_PATH]

    def websockify(self):
        self.wsfy_port = free_port()
        p = self.procs.start(["websockify", "127.0.0.1:%d" % self.wsfy_port,
                              "127.0.0.1:%d" % self.rfb_port], self.dir + "/websockify")
        assert wait_port(self.wsfy_port, 15), "websockify did not start"
        return p

    # --- the client ---

    def client(self, args, scenario, conns, extra=(), on_held=None, sample=None):
        """Run ringside-bench; returns (its JSON, its CPU ns, relay and fake
        CPU ns over the traffic window, the window's seconds): the window runs
        from its "held" line to its end, so it covers the whole traffic."""
        workers = max(1, -(-(conns + 600) // PER_RING))
        cmd = [B + "/bench/ringside-bench", "--scenario", scenario, "--conns", str(conns),
               "--workers", str(workers), "--src-base", "2", "--src-count", "16",
               "--timeout-ms", "120000"] + list(args) + list(extra)
        err = open(self.dir + "/client.err", "w+")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        fake = [self.fake_pve.pid, self.fake_rfb.pid]
        win = None  # [t, relay ns, fake ns] at "held" and at the last sample
        pos, ru = 0, None
        while ru is None:
            time.sleep(0.1)
            pid, _, r = os.wait4(p.pid, os.WNOHANG)
            if pid:
                ru = r
            err.seek(pos)
            for line in err.readlines():
                pos += len(line)
                if '"event":"progress"' in line and sample:
                    sample(json.loads(line)["opened"])
                if '"event":"held"' in line and win is None:
                    relay = self.relay_pids()
                    now = [time.time(), cpu_ns(relay), cpu_ns(fake)]
                    win = [now, now]
                    if on_held:
                        on_held(p, relay)
            if win is not None and ru is None:
                win[1] = [time.time(), cpu_ns(self.relay_pids()), cpu_ns(fake)]
        p.returncode = 0
        out = p.stdout.read()
        res = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        cl_ns = int((ru.ru_utime + ru.ru_stime) * 1e9)
        if win is None:
            return res, cl_ns, 0, 0, 0.0
        (t0, r0, f0), (t1, r1, f1) = win
        return res, cl_ns, r1 - r0, f1 - f0, t1 - t0

    def relay_pids(self):
        """The relay's processes: nginx + websockify count together."""
        pids = tree(self.relay.pid) if self.relay else []
        if self.wsfy is not None and self.wsfy is not self.relay:
            pids += tree(self.wsfy.pid)
        return pids

    # --- scenarios ---

    def measure(self, name, kind):
        c = self.cfg
        small = kind in ("websockify", "nginx+wsfy")
        n_hold = c["wsfy_hold"] if small else c["hold"]
        if kind in ("haproxy", "floor"):
            n_hold = min(n_hold, ONE_PROCESS_HOLD)
        res = {"relay": name}
        self.fakes(n_hold)
        if kind in ("websockify", "nginx+wsfy"):
            self.wsfy = self.websockify()
        relays = {
            "ringside": lambda n: self.ringside(n, plain=False, drain_s=self.drain_s),
            "ringside-vnc": lambda n: self.ringside(n, plain=True),
            "nginx": lambda n: self.nginx(n, upstream_tls=True),
            "nginx+wsfy": lambda n: self.nginx(n, upstream_tls=False),
            "haproxy": self.haproxy, "floor": self.floor,
        }
        # The relays that size their workers by the consoles to hold (one
        # ring or process per 19,000 sockets: this VM's descriptor limit)
        # run the other scenarios with as many workers as CPUs, as HAProxy's
        # nbthread 2 does, and hold on a second instance: 6 workers sharing
        # 2 CPUs relayed 10-20 % less per CPU-second than 2 (bench/README.md).
        sized = kind in ("ringside", "ringside-vnc", "nginx", "nginx+wsfy") and bool(
            set(self.scenarios) - {"hold"})
        n_run = min(n_hold, ONE_PROCESS_HOLD) if sized else n_hold
        if kind in relays:
            self.relay, args = relays[kind](n_run)
        elif kind == "websockify":
            self.relay, args = self.wsfy, ["--ws", "127.0.0.1:%d" % self.wsfy_port, "--path", "/"]
        elif kind == "direct":
            self.relay, args = None, ["--ws", "127.0.0.1:%d" % self.pve_port, "--tls", "--path",
                                      PVE_PATH]
        elif kind == "direct-rfb":
            self.relay, args = None, ["--ws", "127.0.0.1:%d" % self.rfb_port, "--raw"]
        res["client_args"] = args
        try:
            want = self.scenarios
            if "setup" in want and not kind.startswith("direct"):
                self.setup(res, args, c["wsfy_setup"] if small else c["setup"])
            if "stream" in want:
                self.stream(res, args, small)
            if "latency" in want:
                self.latency(res, args)
            if kind == "ringside" and "tokens" in want:
                self.tokens(res, args)
            # the hold last: the kernel may close its sockets for seconds
            # after (the next round waits for that, wait_quiet)
            if "hold" in want and not kind.startswith("direct"):
                if n_run != n_hold:
                    self.procs.stop(self.relay)
                    self.relay, args = relays[kind](n_hold)
                self.hold(res, args, n_hold, small)
        finally:
            for p in (self.relay, getattr(self, "wsfy", None), self.fake_pve, self.fake_rfb):
                if p is not None:
                    self.procs.stop(p)
            self.wsfy = None
        res["upstream_suites"] = fake_suites(self.dir + "/fake-pve.out")
        print(json.dumps(res), flush=True)
        return res

    def hold(self, res, args, n, small):
        warm = min(200, n)
        self.client(args, "hold", warm, ["--hold-seconds", "0"])
        time.sleep(self.cfg["warm_pause"])
        d0, p0 = mem_kb(self.relay_pids())
        s0 = slab_kb()
        series = [(0, 0, 0)]

        def sample(opened):
            d, p = mem_kb(self.relay_pids())
            series.append((opened, d - d0, p - p0))

        u0, sockets0 = slab_kb("SUnreclaim:"), tcp_inuse()
        idle = {}
        stop = self.drain_s is not None and self.relay is not None

        def on_held(proc, relay):
            time.sleep(self.cfg["hold_wait"])
            d, p = mem_kb(relay)
            s = slab_kb()
            idle.update(d=d - d0, p=p - p0, s=s - s0, u=slab_kb("SUnreclaim:") - u0,
                        sockets=tcp_inuse() - sockets0)
            data = os.path.join(self.dir, "perf-idle.data")
            perf = perf_start(self.relay.pid, data) if self.perf else None
            t0 = cpu_ns(relay)
            time.sleep(self.cfg["idle_s"])
            idle["cpu"] = (cpu_ns(relay) - t0) / (self.cfg["idle_s"] * 1e9) * 100
            if perf:
                idle["perf"] = perf_stop(perf, data)
            if stop:
                # drops while idle, up to now: the stop closes every console
                idle["dropped"] = self.last_event("holding").get("dropped")
                idle["stop"] = self.stop_relay(sockets0, [proc.pid, self.fake_pve.pid])
            proc.send_signal(signal.SIGTERM)

        # websockify forks a Python process per console (~50 ms of CPU): 512
        # opening at once overrun it, 64 do not; it still stops near 508 open
        # consoles, where its descriptors pass select()'s 1023 (bench/README.md)
        out, cl, _, _, _ = self.client(args, "hold", n, ["--hold-seconds", "600", "--batch",
                                                         "64" if small else "512"],
                                       on_held=on_held, sample=sample)
        held = max(1, out.get("opened", 0))
        series.append((held, idle.get("d", 0), idle.get("p", 0)))
        res["hold"] = {
            "asked": n, "held": out.get("opened", 0), "failures": out.get("failures"),
            "private_dirty_bytes_per_console": round(idle.get("d", 0) * 1024 / held),
            "pss_bytes_per_console": round(idle.get("p", 0) * 1024 / held),
            "slab_bytes_per_console_4_sockets": round(idle.get("s", 0) * 1024 / held),
            "cpu_percent_idle": round(idle.get("cpu", 0), 2),
            "opened_per_s": out.get("opened_per_s"),
            "series": [s for s in series if s[0] <= held],
        }
        if stop:
            res["hold"].update({
                "ramp_s": round(out.get("ramp_ms", 0) / 1000, 1),
                "setup_us": out.get("setup_us"),
                "dropped_while_idle": idle.get("dropped"),
                "sunreclaim_bytes_per_console_4_sockets": round(idle.get("u", 0) * 1024 / held),
                "tcp_sockets_per_console": round(idle.get("sockets", 0) / held, 2),
                "idle_s": self.cfg["idle_s"], "hold_wait": self.cfg["hold_wait"],
                "stop": idle.get("stop")})
            if idle.get("stop"):
                # the consoles the client saw closed by the stop: all of them
                idle["stop"]["client_saw_closed"] = (out.get("dropped_while_held") or 0) - (
                    idle.get("dropped") or 0)
            if self.perf:
                res["hold"]["perf_idle"] = idle.get("perf", [])
            return
        self.settle()

    def last_event(self, name):
        """The client's last {"event": <name>, …} line on stderr so far."""
        last = {}
        with open(self.dir + "/client.err") as f:
            for line in f:
                if '"event":"%s"' % name in line:
                    last = json.loads(line)
        return last

    def stop_relay(self, sockets0, harness):
        """SIGTERM to the relay under its held consoles: seconds until it
        has exited, against drain_s; its CPU over the stop (from its
        rusage: the whole life, less what it had used before). Every 0.25 s:
        the TCP sockets still open on the machine (above the count before
        the hold), the relay's worker threads (each ends once its
        connections are closed; the main thread then frees everything) and
        its resident memory (MiB), to see where the time goes; the phases'
        boundaries (drain deadline, workers gone, exit) cut --perf's
        samples. <harness>: the client's and the fake upstream's pids, whose
        CPU over the stop is given beside (on loopback they close their
        sockets on the same cores meanwhile)."""
        pid, drain = self.relay.pid, self.drain_s
        data = os.path.join(self.dir, "perf-stop.data")
        perf = perf_start(pid, data) if self.perf else None
        before, h0 = proc_cpu_s(pid), cpu_ns(harness)
        timeline, status, ru, workers_gone = [], None, None, None
        t0 = time.monotonic()
        self.relay.send_signal(signal.SIGTERM)
        while status is None:
            got, st, r = os.wait4(pid, os.WNOHANG)
            now = time.monotonic() - t0
            if got:
                status, ru = st, r
                break
            if not timeline or now - timeline[-1][0] >= 0.25:
                threads, rss = worker_threads(pid), 0
                try:
                    with open("/proc/%d/statm" % pid) as f:
                        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
                except OSError:  # exiting
                    pass
                if not threads and workers_gone is None:
                    workers_gone = now
                ss = tcp_sockstat()
                timeline.append((round(now, 2), max(0, ss.get("inuse", 0) - sockets0), threads,
                                 rss, ss.get("orphan"), ss.get("tw")))
            if now > drain + 300:  # a hung stop: say so, and go on
                self.relay.kill()
            time.sleep(0.02)
        secs = time.monotonic() - t0
        h1 = cpu_ns(harness)
        self.relay.returncode = os.waitstatus_to_exitcode(status)
        ss = tcp_sockstat()
        timeline.append((round(secs, 2), max(0, ss.get("inuse", 0) - sockets0), 0, 0,
                         ss.get("orphan"), ss.get("tw")))
        # The kernel may still be closing the relay's sockets once it is
        # gone: follow them until 99 % are closed, or the count (the
        # machine's: other work's sockets come and go in it) stops falling
        # for 1 s, or 20 s; closed = the first sample of that.
        first = max(timeline[0][1], 1)
        closed = next((x[0] for x in timeline if x[1] <= first // 100), None)
        while closed is None and time.monotonic() - t0 < secs + 20:
            time.sleep(0.25)
            now, ss = time.monotonic() - t0, tcp_sockstat()
            timeline.append((round(now, 2), max(0, ss.get("inuse", 0) - sockets0), 0, 0,
                             ss.get("orphan"), ss.get("tw")))
            last = [x for x in timeline if x[0] >= secs][-5:]
            if timeline[-1][1] <= first // 100:
                closed = now
            elif len(last) == 5 and max(x[1] for x in last) - min(x[1] for x in last) <= \
                    max(first // 100, 20):
                closed = last[0][0]
        if workers_gone is None:  # gone between two samples and the exit: by then
            workers_gone = secs
        out = {"drain_timeout_s": drain, "stop_s": round(secs, 2),
               "over_drain_s": round(secs - drain, 2), "exit_status": self.relay.returncode,
               "relay_cpu_s": round(ru.ru_utime + ru.ru_stime - before, 2),
               "harness_cpu_s": round((h1 - h0) / 1e9, 2),
               "workers_gone_s": None if workers_gone is None else round(workers_gone, 2),
               "sockets_closed_s": None if closed is None else round(closed, 2),
               "timeline": timeline}
        if perf:
            out["perf"] = perf_stop(perf, data, (
                ("draining (SIGTERM to drain_timeout_s)", (t0, t0 + drain)),
                ("closing (drain_timeout_s to the workers' exit)",
                 (t0 + drain, t0 + workers_gone)),
                ("after the workers (main thread to exit)", (t0 + workers_gone, t0 + secs + 1))))
            if self.perf_keep:  # perf has ended: the file is whole
                shutil.copy(data, os.path.join(self.perf_keep, "perf-stop.data"))
                with open(os.path.join(self.perf_keep, "phases.txt"), "w") as f:
                    f.write("sigterm %.6f drain %.6f workers_gone %.6f exit %.6f\n" % (
                        t0, t0 + drain, t0 + workers_gone, t0 + secs))
        return out

    def settle(self):
        """Wait until the relay's consoles are gone (its CPU is quiet)."""
        pause = self.cfg["settle_s"]
        for _ in range(int(30 / pause)):
            a = cpu_ns(self.relay_pids())
            time.sleep(pause)
            if cpu_ns(self.relay_pids()) - a < pause * 1e8:  # < 10 % of a core
                break

    def setup(self, res, args, n):
        # a fifth of the consoles first, not counted: the figure is the
        # steady state of a running relay, not its first-touch page faults
        # (ringside's receive buffers, any relay's allocator arenas: ~5 % of
        # a cold ringside's setup CPU), which a box pays once
        self.client(args, "setup", max(1, n // 5), ["--batch", "64"])
        self.settle()
        res["setup"] = {}
        for label, extra in (("resumed", []), ("full_handshake", ["--no-resume"])):
            relay = self.relay_pids()
            r0 = cpu_ns(relay)
            out, cl, _, _, _ = self.client(args, "setup", n, ["--batch", "64"] + extra)
            rcpu = cpu_ns(self.relay_pids()) - r0
            opened = out.get("opened", 0)
            res["setup"][label] = {
                "consoles": n, "opened": opened, "opened_per_s": out.get("opened_per_s"),
                "tls_resumed": out.get("tls_resumed"), "tls_suites": out.get("tls_suites"),
                "setup_us": out.get("setup_us"),
                "relay_cpu_ms_per_open": round(rcpu / 1e6 / max(opened, 1), 3),
                "opens_per_relay_cpu_s": round(opened / (rcpu / 1e9)) if rcpu else None,
                "client_cpu_ms_per_open": round(cl / 1e6 / max(opened, 1), 3),
            }
            self.settle()

    def stream(self, res, args, small):
        c = self.cfg
        res["stream"] = {}
        for size in c["sizes"]:
            # at most 2 MiB in flight (4 messages per console): past a few MB
            # this VM refaults the senders' buffers and the client, not the
            # relay, sets the pace (bench/README.md)
            conns = max(8, min(c["stream_conns"], (2 << 20) // (4 * size)))
            out, cl, rcpu, fcpu, secs = self.client(
                args, "stream", 8 if small else conns,
                ["--msg-size", str(size), "--hold-seconds", str(c["stream_s"])])
            secs = max(secs, 1e-3)
            bps = out.get("echo_bytes_per_s", 0)
            res["stream"][str(size)] = {
                "consoles": 8 if small else conns, "msg_size": size, "in_flight_per_console": 4,
                "echo_bytes_per_s": bps,
                "echo_msgs_per_s": out.get("echo_msgs_per_s"),
                "relay_cpu_cores": round(rcpu / 1e9 / secs, 3) if self.relay else None,
                "fake_cpu_cores": round(fcpu / 1e9 / secs, 3),
                "client_cpu_s_total": round(cl / 1e9, 2),
                # an upper bound: the client's CPU includes opening its consoles
                "client_cpu_cores": round(cl / 1e9 / secs, 3),
                # both directions pass the relay: bytes relayed = 2 x echoed
                "relayed_bytes_per_relay_cpu_s": round(2 * bps * secs / (rcpu / 1e9))
                if rcpu else None,
            }
            self.settle()

    def latency(self, res, args):
        c = self.cfg
        res["latency"] = {}
        for label in ("idle", "loaded"):
            bg = None
            if label == "loaded":
                cmd = [B + "/bench/ringside-bench", "--scenario", "stream", "--conns", "8",
                       "--msg-size", "16384", "--hold-seconds",
                       str(c["lat_s"] + c["bg_warm"] + 4), "--src-base", "40", "--src-count",
                       "4"] + list(args)
                bg = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(c["bg_warm"])
            out, _, _, _, _ = self.client(args, "latency", c["lat_conns"],
                                       ["--msg-size", "64", "--hold-seconds", str(c["lat_s"])])
            if bg:
                bg.send_signal(signal.SIGTERM)
                bg.wait()
            res["latency"][label] = {"samples": out.get("rtt_samples"), "rtt_us": out.get("rtt_us")}
            self.settle()

    def tokens(self, res, args):
        api = args[args.index("--api") + 1]
        r0 = cpu_ns(self.relay_pids())
        out, cl, _, _, _ = self.client(["--api", api, "--key", KEY, "--target", "127.0.0.1:1"],
                                    "tokens", self.cfg["tokens"], ["--batch", "128", "--workers", "1"])
        rcpu = cpu_ns(self.relay_pids()) - r0
        res["tokens"] = {"tokens": out.get("tokens"), "tokens_per_s": out.get("tokens_per_s"),
                         "tokens_per_relay_cpu_s": round(out.get("tokens", 0) / (rcpu / 1e9))
                         if rcpu else None,
                         "client_cpu_s": round(cl / 1e9, 2)}


RELAYS = [("ringside", "ringside"), ("floor", "floor"), ("nginx", "nginx"),
          ("haproxy", "haproxy"), ("direct", "direct"), ("ringside-vnc", "ringside-vnc"),
          ("nginx+websockify", "nginx+wsfy"), ("websockify", "websockify"),
          ("direct-rfb", "direct-rfb")]
TOOLS = {"nginx": ["nginx"], "haproxy": ["haproxy"], "nginx+wsfy": ["nginx", "websockify"],
         "websockify": ["websockify"]}
BINS = {"ringside": ["ringside"], "ringside-vnc": ["ringside"], "floor": ["bench/floor-relay"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=sorted(SIZES))
    ap.add_argument("--only", default="")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds: every relay once per round (default 3)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="which scenarios to run (default: all)")
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench/results")))
    hold = ap.add_argument_group("the hold mode (ringside alone, then SIGTERM)")
    hold.add_argument("--conns", type=int, help="consoles to hold (default 100000)")
    hold.add_argument("--drain-s", type=int, default=5, help="ringside's drain_timeout_s")
    hold.add_argument("--idle-s", type=float, help="seconds of idle CPU measured (default 10)")
    hold.add_argument("--hold-wait", type=float,
                      help="seconds after the last console opened before memory is read")
    hold.add_argument("--perf", action="store_true",
                      help="perf record the relay while idle and while it stops")
    hold.add_argument("--perf-keep", metavar="DIR",
                      help="keep the stop's perf.data there (perf report -i DIR/perf-stop.data)")
    a = ap.parse_args()
    if a.mode == "hold":
        return main_hold(a)
    only = set(filter(None, a.only.split(",")))
    relays = [(n, k) for n, k in RELAYS if not only or n in only]
    scenarios = tuple(filter(None, a.scenarios.split(",")))
    if not set(scenarios) <= set(SCENARIOS):
        sys.exit("relay-bench: --scenarios takes %s" % ",".join(SCENARIOS))
    if not relays or a.rounds < 1:
        sys.exit("relay-bench: nothing to run (--only names: %s)" % ", ".join(n for n, _ in RELAYS))
    for tool in sorted({"gnuplot", "openssl"}.union(*(TOOLS.get(k, []) for _, k in relays))):
        if not shutil.which(tool):
            sys.exit("relay-bench: %s is not installed (scripts/setup installs it)" % tool)
    for b in sorted({"bench/ringside-bench", "bench/fake-pve", "bench/fake-rfb"}.union(
            *(BINS.get(k, []) for _, k in relays))):
        if not os.access(os.path.join(B, b), os.X_OK):
            sys.exit("relay-bench: %s/%s missing: run make" % (B, b))
    run = Run(a.mode, a.out, a.only, scenarios)
    t0 = time.time()
    sockets0 = tcp_inuse()
    try:
        # interleaved: A, B, C, A, B, C ... so that a change in what else runs
        # on this shared machine lands on every relay, not on one
        for r in range(a.rounds):
            run.rounds.append({})
            for name, kind in relays:
                print("== round %d/%d: %s" % (r + 1, a.rounds, name), file=sys.stderr, flush=True)
                run.relay = None
                waited = wait_quiet(sockets0)
                load = Load()
                run.rounds[r][name] = run.measure(name, kind)
                run.load.append(dict(round=r + 1, relay=name, quiet_wait_s=waited, **load.end()))
    finally:
        run.procs.stop_all()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import relay_report
    relay_report.write(None, a.mode, os.path.join(a.out, "relays-" + stamp),
                       " ".join(["bench/relay-bench.py"] + sys.argv[1:]), time.time() - t0,
                       rounds=run.rounds, load=run.load)
    shutil.rmtree(run.dir, ignore_errors=True)


def main_hold(a):
    """ringside alone, Proxmox mode: hold, then SIGTERM under the consoles."""
    for b in ("ringside", "bench/ringside-bench", "bench/fake-pve", "bench/fake-rfb"):
        if not os.access(os.path.join(B, b), os.X_OK):
            sys.exit("relay-bench: %s/%s missing: run make" % (B, b))
    if a.drain_s < 0 or (a.conns is not None and a.conns < 1):
        sys.exit("relay-bench: --conns >= 1 and --drain-s >= 0")
    run = Run("hold", a.out, "ringside", ("hold",), drain_s=a.drain_s, perf=a.perf)
    run.perf_keep = a.perf_keep
    for key, v in (("hold", a.conns), ("idle_s", a.idle_s), ("hold_wait", a.hold_wait)):
        if v is not None:
            run.cfg[key] = v
    # TIME_WAIT sockets of an earlier run expire over 60 s and give back
    # slab while a large hold measures: start once they are (nearly) gone
    for _ in range(70 if run.cfg["hold"] >= 10000 else 0):
        if tcp_sockstat().get("tw", 0) < 1000:
            break
        time.sleep(1)
    t0, load = time.time(), Load()
    try:
        res = run.measure("ringside", "ringside")
    finally:
        run.procs.stop_all()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import relay_report
    relay_report.write_hold(res, os.path.join(a.out, "hold-" + stamp),
                            " ".join(["bench/relay-bench.py"] + sys.argv[1:]), time.time() - t0,
                            load.end())
    shutil.rmtree(run.dir, ignore_errors=True)
    h = res.get("hold", {})
    ok = h.get("held") == h.get("asked") and not any((h.get("failures") or {}).values()) \
        and not h.get("dropped_while_idle") and (h.get("stop") or {}).get("exit_status") == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
