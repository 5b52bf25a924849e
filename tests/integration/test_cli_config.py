"""Command line and configuration of the real binary."""
import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, free_port, wait_healthy


def run(*args, timeout=10):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "--config" in r.stdout and "--check-config" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("ringside ")


def test_unknown_flag_is_refused():
    r = run("--frobnicate")
    assert r.returncode == 2 and "--frobnicate" in r.stderr


def write(tmp_path, obj):
    # No test here wants the default metrics port (127.0.0.1:9180): a
    # process already on it would make ringside refuse to start.
    if isinstance(obj, dict):
        obj = dict({"metrics_listen": ""}, **obj)
    p = tmp_path / "c.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def test_check_config_ok(tmp_path):
    r = run("--check-config", "--config", write(tmp_path, {"listen": ["127.0.0.1:1"], "workers": 1}))
    assert r.returncode == 0 and "OK" in r.stdout


@pytest.mark.parametrize("cfg,key", [
    ({"limits": {"max_body": -1}}, "'limits.max_body'"),
    ({"limits": {"max_body": "big"}}, "'limits.max_body'"),
    ({"limits": {"max_bdoy": 1}}, "'limits.max_bdoy'"),
    ({"listne": ["127.0.0.1:1"]}, "'listne': unknown key"),
    ({"api_keys": [{"name": "x", "key": "short"}]}, "'api_keys[0].key'"),
    ({"api_keys": [{"name": "x", "key": "change-me-to-a-long-random-string"}]},
     "'api_keys[0].key': looks like a placeholder"),
    ({"authorization": "12345678"}, "'authorization': must be at least 16 characters"),
    ({"allowed_targets": ["10.0.0.0/40"]}, "'allowed_targets[0]'"),
    ({"port_pool": {"source_addresses": ["127.0.0.2", "127.0.0.2"]}},
     "'port_pool.source_addresses[1]': '127.0.0.2' is listed twice"),
    ("{\"listen\": [", "invalid JSON"),
])
def test_bad_config_is_refused_naming_the_key(tmp_path, cfg, key):
    port = free_port()
    if isinstance(cfg, dict):
        cfg = dict(cfg, listen=cfg.get("listen", ["127.0.0.1:%d" % port]))
    r = run("--config", write(tmp_path, cfg))
    assert r.returncode != 0 and key in r.stderr and "refusing to start" in r.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.3)


@pytest.mark.parametrize("cfg,key", [
    ({"limits": {"max_body": -1}}, "'limits.max_body'"),
    ({"listne": ["127.0.0.1:1"]}, "'listne'"),
    ("{\"listen\": [", "invalid JSON"),
])
def test_check_config_refuses_bad_config(tmp_path, cfg, key):
    r = run("--check-config", "--config", write(tmp_path, cfg))
    assert r.returncode != 0 and key in r.stderr and "OK" not in r.stdout


def test_missing_config_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.json")
    r = run("--config", missing)
    assert r.returncode != 0 and missing in r.stderr


def test_proxmoxvnc_config_json_works(tmp_path):
    port = free_port()
    cfg = {"authorization": "pvnc-0123456789abcdef", "router_ip": "127.0.0.1", "router_port": port,
           "public_ip": "203.0.113.9", "logging_enabled": True, "logging_level": "info",
           "log_file": str(tmp_path / "pvnc.log"), "novnc_path": "/usr/share/novnc",
           "allowed_targets": ["127.0.0.0/8"]}
    p = subprocess.Popen([BIN, "-config", write(tmp_path, cfg)])
    try:
        assert wait_healthy(port, 10, p)  # /healthz answers 200 on router_port
        req = urllib.request.Request("http://127.0.0.1:%d/api/v1/consoles" % port, method="POST",
                                     data=b'{"kind":"vnc","host":"127.0.0.1","port":5901}',
                                     headers={"Authorization": "Bearer pvnc-0123456789abcdef",
                                              "Content-Type": "application/json"})
        body = json.loads(urllib.request.urlopen(req, timeout=5).read())
        assert body["url"].startswith("http://203.0.113.9:%d/console/" % port)
    finally:
        p.terminate()
        assert p.wait(10) == 0
    log = (tmp_path / "pvnc.log").read_text()
    assert "token.issued key=default" in log
    assert "pvnc-0123456789abcdef" not in log  # the authorization secret is never logged


def test_port_flag_overrides(tmp_path):
    port = free_port()
    p = subprocess.Popen([BIN, "-config", write(tmp_path, {"listen": ["127.0.0.1:1"]}), "-port", str(port)])
    try:
        assert wait_healthy(port, 10, p)
    finally:
        p.terminate()
        assert p.wait(10) == 0


def test_no_config_starts_on_default_port():
    for port in (8080, 9180):  # the listener and the metrics listener
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
            pytest.skip("127.0.0.1:%d is in use" % port)
        except OSError:
            pass
    p = subprocess.Popen([BIN], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_healthy(8080, 10, p)
    finally:
        p.terminate()
        assert p.wait(10) == 0
    assert "listening on http://127.0.0.1:8080" in p.stderr.read()


def test_listen_failure_is_reported(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    # SO_REUSEPORT sharing needs the same user *and* the option on both: this
    # socket lacks it, so ringside cannot bind.
    r = run("--listen", "127.0.0.1:%d" % port, timeout=15)
    assert r.returncode != 0 and "cannot listen" in r.stderr
    s.close()


def test_port_held_by_another_ringside_is_refused(daemon, tmp_path):
    # SO_REUSEPORT would let a second instance share the port silently.
    r = run("--config", write(tmp_path, {"listen": ["127.0.0.1:%d" % daemon.port],
                                         "metrics_listen": ""}), timeout=15)
    assert r.returncode != 0 and "cannot listen" in r.stderr and "in use" in r.stderr


def test_two_listeners_on_one_address_are_refused(tmp_path):
    # The API's and the metrics' listeners on one port would each get a
    # random share of the connections (SO_REUSEPORT): refuse to start.
    port = free_port()
    r = run("--config", write(tmp_path, {"listen": ["127.0.0.1:%d" % port],
                                         "metrics_listen": "127.0.0.1:%d" % port}), timeout=15)
    assert r.returncode != 0 and "cannot listen" in r.stderr and "in use" in r.stderr, r.stderr

