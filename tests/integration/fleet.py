"""A fleet on loopback with real parts, for test_fleet.py and the bench:
redis-server (a master and a replica), redis-sentinel, HAProxy in TCP mode
(round robin) and three ringside boxes on 127.0.0.11, .12 and .13.

One Sentinel with quorum 1: three would triple the processes on a 2-core
machine shared with others for no extra coverage — what ringside sees is the
same (a master that moves, `SENTINEL get-master-addr-by-name` answering the
new one). Production runs three on three machines (README "Running several
boxes").

Every process listens on 127.0.0.0/8 and is stopped by its PID.
"""
import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from conftest import API_KEY, BIN, TORTURE, free_port
from fakes import RawWS

REDIS = "/usr/bin/redis-server"
SENTINEL = "/usr/bin/redis-sentinel"
HAPROXY = "/usr/sbin/haproxy"
MASTER = "ringside"
REDIS_PASSWORD = "fleet-redis-pw-0123456789"
# Sentinel's failover clock, kept small so the failover test takes seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _wait(pred, timeout, what, proc=None, log=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s: the process exited: %s" % (what, _tail(log)))
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("%s: not ready in %ss: %s" % (what, timeout, _tail(log)))


def _wait_started(proc, pred, timeout, what, log):
    """_wait for a process just started; one that does not come up is
    stopped (by its PID) before the error goes up."""
    try:
        _wait(pred, timeout, what, proc, log)
    except BaseException:
        _stop(proc, signal.SIGKILL)
        raise


def _tail(path, n=3000):
    try:
        return open(path, errors="replace").read()[-n:] if path else ""
    except OSError:
        return ""


def _stop(proc, sig=signal.SIGTERM, timeout=10):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Resp:
    """A minimal blocking RESP client (the tests' own view of Redis,
    independent of ringside's client)."""

    def __init__(self, port, password=None, host="127.0.0.1", timeout=5):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.f = self.s.makefile("rb")
        if password:
            self.cmd("AUTH", password)

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line:
            raise EOFError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("unexpected RESP: %r" % line)

    def close(self):
        self.f.close()
        self.s.close()


class Redis:
    def __init__(self, tmp, name, replicaof=None, password=REDIS_PASSWORD):
        self.port = free_port()
        self.name = name
        self.password = password
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "redis.log")
        self.args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", self.dir,
                     "--logfile", self.log, "--daemonize", "no",
                     # the replica syncs at once, not after the default 5 s
                     "--repl-diskless-sync-delay", "0"]
        if password:
            self.args += ["--requirepass", password, "--masterauth", password]
        if replicaof:
            self.args += ["--replicaof", "127.0.0.1", str(replicaof.port)]
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_started(self.proc, lambda: self.client().cmd("PING") == "PONG", 10,
                      "redis " + self.name, self.log)

    def client(self):
        return Resp(self.port, self.password)

    def cmd(self, *args):
        c = self.client()
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def role(self):
        return self.cmd("ROLE")[0].decode()

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def dump(self):
        """Every key with its type and raw contents, as bytes (for the
        no-secret-in-clear check)."""
        out = []
        c = self.client()
        try:
            for k in c.cmd("KEYS", "*"):
                t = c.cmd("TYPE", k)
                if t == "string":
                    v = [c.cmd("GET", k)]
                elif t == "hash":
                    v = c.cmd("HGETALL", k)
                elif t == "set":
                    v = c.cmd("SMEMBERS", k)
                elif t == "list":
                    v = c.cmd("LRANGE", k, 0, -1)
                elif t == "zset":
                    v = c.cmd("ZRANGE", k, 0, -1, "WITHSCORES")
                else:
                    v = []
                out.append((k, t, v, c.cmd("DUMP", k)))
        finally:
            c.close()
        return out

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None:
            _stop(self.proc, sig)


class Sentinel:
    def __init__(self, tmp, master, password=REDIS_PASSWORD):
        self.port = free_port()
        self.dir = os.path.join(tmp, "sentinel-%d" % self.port)
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        self.log = os.path.join(self.dir, "sentinel.log")
        lines = ["port %d" % self.port, "bind 127.0.0.1", "daemonize no",
                 "logfile %s" % self.log, "dir %s" % self.dir,
                 "sentinel monitor %s 127.0.0.1 %d 1" % (MASTER, master.port),
                 "sentinel down-after-milliseconds %s %d" % (MASTER, DOWN_AFTER_MS),
                 "sentinel failover-timeout %s %d" % (MASTER, FAILOVER_TIMEOUT_MS),
                 "sentinel parallel-syncs %s 1" % MASTER]
        if password:
            lines.append("sentinel auth-pass %s %s" % (MASTER, password))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        # Sentinel rewrites its file (it must be writable and its own).
        self.proc = subprocess.Popen([SENTINEL, self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_started(self.proc, lambda: self.master_addr() == ("127.0.0.1", master.port), 10,
                      "sentinel", self.log)

    def cmd(self, *args):
        c = Resp(self.port)
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def master_addr(self):
        a = self.cmd("SENTINEL", "get-master-addr-by-name", MASTER)
        return (a[0].decode(), int(a[1])) if a else None

    def replicas(self):
        return self.cmd("SENTINEL", "replicas", MASTER)

    def stop(self):
        _stop(self.proc)


class HAProxy:
    """TCP mode, round robin; a refused connect is retried on another box
    (`option redispatch`) and a dead box leaves the rotation on its check."""

    def __init__(self, tmp, backends):
        self.port = free_port()
        self.dir = os.path.join(tmp, "haproxy-%d" % self.port)
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        self.log = os.path.join(self.dir, "haproxy.log")
        servers = "\n".join("    server box%d %s:%d check inter 300 fall 1 rise 2"
                            % (i, h, p) for i, (h, p) in enumerate(backends))
        with open(self.conf, "w") as f:
            f.write("""global
    maxconn 2048
defaults
    mode tcp
    retries 3
    option redispatch
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend fleet
    bind 127.0.0.1:%d
    default_backend boxes
backend boxes
    balance roundrobin
%s
""" % (self.port, servers))
        self.out = open(self.log, "w")
        # -db: stay in the foreground, one process, so its PID is the one to stop.
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.conf], stdout=self.out,
                                     stderr=self.out)
        _wait_started(self.proc, lambda: socket.create_connection(("127.0.0.1", self.port),
                                                                  0.2).close() is None,
                      10, "haproxy", self.log)

    def stop(self):
        _stop(self.proc, signal.SIGUSR1)  # soft stop
        self.out.close()


def fleet_section(node, redis=None, sentinel=None, password=REDIS_PASSWORD, **extra):
    f = {"node": node, "redis": {"key_prefix": "rs:"}}
    if password:
        f["redis"]["password"] = password
    if sentinel is not None:
        f["sentinel"] = {"addresses": ["127.0.0.1:%d" % sentinel.port], "master": MASTER}
    else:
        f["redis"]["address"] = "127.0.0.1:%d" % redis.port
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(f.get(k), dict):
            f[k].update(v)
        else:
            f[k] = v
    return f


class Box:
    """One ringside daemon listening on its own loopback address."""

    def __init__(self, tmp, host, node, fleet, overrides=None):
        self.host = host
        self.node = node
        self.port = free_port()
        self.metrics_port = free_port()
        self.dir = os.path.join(tmp, node)
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "ringside.log")
        self.sock = os.path.join(self.dir, "admin.sock")
        cfg = {
            "listen": ["%s:%d" % (host, self.port)],
            "workers": 2,
            "log_level": "debug",
            "log_target": self.log,
            "api_keys": [{"name": "test", "key": API_KEY}],
            "state_dir": self.dir,
            "admin_socket": self.sock,
            "drain_timeout_s": 5,
            "api": {"rate_limit_per_s": 0, "max_pending_per_key": 0,
                    "auth_failures_per_window": 0},
            "allowed_targets": ["127.0.0.0/8", "::1"],
            "metrics_listen": "%s:%d" % (host, self.metrics_port),
        }
        if fleet is not None:  # None: the embedded table (the bench's baseline)
            cfg["fleet"] = fleet
        for k, v in [*TORTURE.items(), *(overrides or {}).items()]:
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = dict(v) if isinstance(v, dict) else v
        self.cfg = cfg
        self.cfg_path = os.path.join(self.dir, "ringside.json")
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        self.base = "http://%s:%d" % (host, self.port)
        self.proc = None
        self.start()

    def start(self):
        self.stderr = open(self.log + ".stderr", "a")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen([BIN, "--config", self.cfg_path], stdout=self.stderr,
                                     stderr=self.stderr, env=env)
        _wait_started(self.proc, lambda: http(self.base + "/healthz")[0] == 200, 15,
                      "ringside " + self.node, self.log + ".stderr")

    @property
    def pid(self):
        return self.proc.pid

    def logs(self):
        return _tail(self.log, 1 << 30) + _tail(self.log + ".stderr", 1 << 30)

    def metrics(self):
        return http("http://%s:%d/metrics" % (self.host, self.metrics_port))[1].decode()

    def ctl(self, *args):
        r = subprocess.run([BIN, "ctl", "--socket", self.sock, *args], capture_output=True,
                           text=True, timeout=10)
        return r.returncode, r.stdout, r.stderr

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        rc = _stop(self.proc, sig, 15)
        self.stderr.close()
        return rc

    def check_clean(self):
        logs = self.logs()
        for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert bad not in logs, logs[-4000:]
        assert API_KEY not in logs, "the API key appeared in the log"
        assert REDIS_PASSWORD not in logs, "the Redis password appeared in the log"


def http(url, method="GET", body=None, key=API_KEY, timeout=10):
    """(status, body bytes, headers) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + key,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def metric(text, name, labels=None):
    """Sum of the samples of <name> whose labels include <labels>."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        mname, _, lab = head.partition("{")
        if mname != name:
            continue
        if labels and any('%s="%s"' % kv not in lab for kv in labels.items()):
            continue
        total += float(value)
    return total


class WS(RawWS):
    """RawWS to any loopback address (RawWS itself dials 127.0.0.1)."""

    def __init__(self, host, port, path, timeout=10):
        self.s = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
                        "Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: binary\r\n\r\n" % (path, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(1)
            if not chunk:
                break
            head += chunk
        self.head = head.decode(errors="replace")
        self.status = int(self.head.split(" ")[1]) if head else 0
        self.buf = b""
        self.pending = b""


class Fleet:
    """The whole lab: master + replica Redis, a Sentinel, three boxes,
    HAProxy in front. <use_sentinel> False points the boxes at the master
    directly."""

    HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")

    def __init__(self, tmp, box_overrides=None, use_sentinel=True, boxes=3, fleet_extra=None,
                 replicas=1):
        self.tmp = tmp
        self.master, self.replicas, self.sentinel, self.boxes, self.lb = None, [], None, [], None
        try:
            self._start(tmp, box_overrides, use_sentinel, boxes, fleet_extra, replicas)
        except BaseException:
            self.stop()  # a lab that failed halfway leaves nothing running
            raise

    def _start(self, tmp, box_overrides, use_sentinel, boxes, fleet_extra, replicas):
        self.master = Redis(tmp, "redis-a")
        for i in range(replicas):
            self.replicas.append(Redis(tmp, "redis-%s" % "bcd"[i], replicaof=self.master))
        self.replica = self.replicas[0]
        _wait(lambda: self.master.cmd("INFO", "replication").count(b"state=online") == replicas,
              10, "replication", log=self.replica.log)
        if use_sentinel:
            self.sentinel = Sentinel(tmp, self.master)
        for i, host in enumerate(self.HOSTS[:boxes]):
            node = "box-%s" % "abc"[i]
            fs = fleet_section(node, redis=self.master, sentinel=self.sentinel)
            for k, v in (fleet_extra or {}).items():
                fs[k].update(v) if isinstance(fs.get(k), dict) else fs.__setitem__(k, v)
            self.boxes.append(Box(tmp, host, node, fs, box_overrides))
        self.lb = HAProxy(tmp, [(b.host, b.port) for b in self.boxes])

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.lb.port

    def create(self, body, expect=201, via=None):
        base = via.base if via is not None else self.base
        st, data, _ = http(base + "/api/v1/consoles", "POST", body)
        assert st == expect, (st, data)
        return json.loads(data or b"{}")

    def current_master(self):
        """The Redis instance Sentinel names as master now."""
        addr = self.sentinel.master_addr() if self.sentinel else ("127.0.0.1", self.master.port)
        return next(r for r in (self.master, *self.replicas) if r.port == addr[1])

    def stop(self):
        errors = []
        if self.lb:
            self.lb.stop()
        for b in self.boxes:
            if b.alive():
                rc = b.stop()
                if rc != 0:
                    errors.append("%s exited with %s: %s" % (b.node, rc, b.logs()[-2000:]))
            else:
                b.stderr.close()
        if self.sentinel:
            self.sentinel.stop()
        for r in self.replicas:
            r.stop()
        if self.master:
            self.master.stop()
        return errors
