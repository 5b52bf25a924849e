"""Integration fixtures: start the real ringside daemon on loopback."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.environ.get("RINGSIDE_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BUILD = os.environ.get("RINGSIDE_BUILD", "build/release")
BIN = os.path.join(ROOT, BUILD, "ringside")
ASAN = "asan" in BUILD
API_KEY = "test-key-0123456789abcdef"
# RINGSIDE_TORTURE=1: every daemon runs with resources squeezed so the
# engine's corners (full submission queue, partial sends, exhausted pool,
# backpressure) are hit on every run; a test's own overrides still win.
TORTURE = {
    "engine": {"ring_entries": 8, "socket_sndbuf": 4096, "socket_rcvbuf": 4096},
    "buffers": {"count": 16},
    "limits": {"session_buffer_bytes": 16384},
} if os.environ.get("RINGSIDE_TORTURE") == "1" else {}


_given_ports = set()


def free_port():
    """A port free now and never handed out before in this run: the kernel
    may return the same ephemeral port to two binds in a row, and a daemon
    given one port for two listeners refuses to start."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_port(port, timeout=10.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_healthy(port, timeout=10.0, proc=None):
    """True once GET /healthz answers 200 (a bound port alone may not serve yet)."""
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1) as r:
                if r.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    return False


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, tmp, overrides=None, args=()):
        self.port = free_port()
        self.metrics_port = free_port()
        self.tmp = tmp
        self.log = os.path.join(tmp, "ringside-%d.log" % self.port)
        cfg = {
            "listen": ["127.0.0.1:%d" % self.port],
            "workers": 2,
            "log_level": "debug",
            "log_target": self.log,
            "api_keys": [{"name": "test", "key": API_KEY}],
            "state_dir": tmp,
            "drain_timeout_s": 5,
            # No rate, pending-link or failed-authentication limits unless a
            # test sets them (some issue 100k links or fail on purpose).
            "api": {"rate_limit_per_s": 0, "max_pending_per_key": 0,
                    "auth_failures_per_window": 0},
            # Targets are refused unless listed (SSRF); the tests' fakes
            # all listen on loopback.
            "allowed_targets": ["127.0.0.0/8", "::1"],
            "metrics_listen": "127.0.0.1:%d" % self.metrics_port,
        }
        for k, v in [*TORTURE.items(), *(overrides or {}).items()]:
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = dict(v) if isinstance(v, dict) else v
        self.cfg = cfg
        self.cfg_path = os.path.join(tmp, "ringside-%d.json" % self.port)
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        self.stderr_path = self.log + ".stderr"
        self.stderr = open(self.stderr_path, "w")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen([BIN, "--config", self.cfg_path, *args],
                                     stdout=self.stderr, stderr=self.stderr, env=env)
        self.host = "127.0.0.1"
        self.api_key = API_KEY
        self.log_path = self.log
        self.base = "http://127.0.0.1:%d" % self.port
        if not wait_healthy(self.port, 10, self.proc):
            self.stop_quietly()
            raise RuntimeError("ringside did not answer /healthz: " + self.logs())

    @property
    def pid(self):
        return self.proc.pid

    def logs(self):
        out = ""
        for p in (self.log, self.stderr_path):
            try:
                out += open(p, errors="replace").read()
            except OSError:
                pass
        return out

    def create_console(self, body=None, key=API_KEY, expect=201):
        body = body if body is not None else {}
        req = urllib.request.Request(self.base + "/api/v1/consoles", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + key,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, data = r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            status, data = e.code, json.loads(e.read() or b"{}")
        assert status == expect, (status, data)
        return data

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("ringside did not stop within %ss" % timeout)
        self.stderr.close()
        return self.proc.returncode

    def stop_quietly(self):
        """Startup failed: make sure the process is gone, by its PID only."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()

    def check_clean(self):
        logs = self.logs()
        for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert bad not in logs, logs[-4000:]
        assert API_KEY not in logs, "the API key appeared in the log"


@pytest.fixture
def tmpdir_rs():
    with tempfile.TemporaryDirectory(prefix="rs-it-") as d:
        yield d


@pytest.fixture
def daemon_factory(tmpdir_rs):
    started = []

    def start(overrides=None, args=()):
        d = Daemon(tmpdir_rs, overrides, args)
        started.append(d)
        return d

    yield start
    for d in started:
        rc = d.stop()
        assert rc == 0, "ringside exited with %s: %s" % (rc, d.logs()[-3000:])
        d.check_clean()


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


class Xvnc:
    def __init__(self, tmp, password, colour="#2e8b57"):
        self.port = free_port()
        self.password = password
        self.colour = colour
        out = subprocess.run([os.path.join(ROOT, "scripts/xvnc"), "start", "auto", str(self.port),
                              password or "-", colour, tmp], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        self.pid = int(out.stdout.strip().splitlines()[-1])

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts/xvnc"), "stop", str(self.pid)], timeout=30)


@pytest.fixture(scope="session")
def xvnc():
    with tempfile.TemporaryDirectory(prefix="rs-xvnc-") as d:
        x = Xvnc(d, "secret12")
        yield x
        x.stop()
