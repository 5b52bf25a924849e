"""Prometheus exposition: promtool-valid while consoles are open, scraped by a
real Prometheus server, bearer token, counters that move."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, wait_port
from fakes import Target, echo_target
from test_console import cut_text, relay_ws


def scrape(d, token=None):
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % d.metrics_port)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def value(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError("no series " + series)


@pytest.fixture
def echo():
    t = Target(echo_target)
    yield t
    t.stop()


@pytest.mark.skipif(not shutil.which("promtool"), reason="prometheus not installed (scripts/setup)")
def test_promtool_accepts_a_scrape_with_consoles_open(daemon, echo):
    sessions = [relay_ws(daemon, echo.port) for _ in range(3)]
    sessions[0].send_frame(2, b"\x01" + cut_text(b"x" * 991))  # ClientInit, ClientCutText
    sessions[0].recv_data(1000)
    text = scrape(daemon)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert value(text, 'ringside_console_sessions_active{kind="vnc"}') == 3
    assert value(text, 'ringside_consoles_opened_total{kind="vnc"}') == 3
    assert value(text, 'ringside_relayed_bytes_total{direction="to_target"}') >= 1000
    assert value(text, 'ringside_console_setup_seconds_count{stage="total"}') == 3
    assert value(text, 'ringside_console_setup_seconds_count{stage="token"}') == 3
    assert value(text, 'ringside_tokens_total{outcome="consumed"}') == 3
    assert value(text, 'ringside_http_responses_total{route="api_consoles",code="2xx"}') == 3
    assert value(text, 'ringside_http_responses_total{route="websocket",code="1xx"}') == 3
    for s in sessions:
        s.close()
    time.sleep(0.3)
    text = scrape(daemon)
    assert value(text, 'ringside_console_sessions_active{kind="vnc"}') == 0
    assert value(text, 'ringside_console_duration_seconds_count') == 3
    assert value(text, 'ringside_consoles_closed_total{kind="vnc",cause="browser_closed"}') == 3


def test_metrics_bearer_token(daemon_factory):
    d = daemon_factory({"metrics_token": "metrics-secret-0123456789"})
    with pytest.raises(urllib.error.HTTPError) as e:
        scrape(d)
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        scrape(d, "wrong-token-0123456789abc")
    assert e.value.code == 401
    assert "ringside_workers 2" in scrape(d, "metrics-secret-0123456789")
    assert "metrics-secret" not in d.logs()


def test_metrics_listener_serves_only_metrics(daemon):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/healthz" % daemon.metrics_port, timeout=5)
    assert e.value.code == 404
    # and the console listener does not serve /metrics
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(daemon.base + "/metrics", timeout=5)
    assert e.value.code == 404


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus not installed (scripts/setup)")
def test_real_prometheus_scrapes_the_active_session_gauge(daemon, echo, tmpdir_rs):
    ws = relay_ws(daemon, echo.port)
    port = free_port()
    cfg = os.path.join(tmpdir_rs, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ringside\n"
                "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % daemon.metrics_port)
    log = open(os.path.join(tmpdir_rs, "prometheus.log"), "w")
    p = subprocess.Popen(["prometheus", "--config.file=" + cfg,
                          "--storage.tsdb.path=" + os.path.join(tmpdir_rs, "tsdb"),
                          "--web.listen-address=127.0.0.1:%d" % port], stdout=log, stderr=log)
    try:
        assert wait_port(port, 30, p)
        q = ("http://127.0.0.1:%d/api/v1/query?query=ringside_console_sessions_active"
             "%%7Bkind%%3D%%22vnc%%22%%7D" % port)
        result = []
        for _ in range(120):
            # The web port opens before the TSDB is ready (503 until then).
            try:
                body = json.loads(urllib.request.urlopen(q, timeout=5).read())
                result = body["data"]["result"]
            except (urllib.error.HTTPError, urllib.error.URLError):
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus never scraped ringside"
        assert result[0]["metric"]["kind"] == "vnc" and result[0]["value"][1] == "1"
        up = json.loads(urllib.request.urlopen(
            "http://127.0.0.1:%d/api/v1/query?query=up" % port, timeout=5).read())
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        p.terminate()
        p.wait(20)
        log.close()
        ws.close()


def test_grafana_dashboard_queries_only_exported_metrics(daemon_factory):
    import re
    from conftest import ROOT, free_port
    # TLS and Proxmox families exist once those are configured (nothing is contacted here).
    daemon = daemon_factory({"tls_listen": ["127.0.0.1:%d" % free_port()],
                             "clusters": {"c": {"endpoints": ["127.0.0.1:8006"],
                                                "token": "u@pam!t=s", "verify": "system"}}})
    dash = json.load(open(os.path.join(ROOT, "admin/grafana/ringside-dashboard.json")))
    exported = {l.split()[2] for l in scrape(daemon).splitlines() if l.startswith("# TYPE")}
    names = set()
    for p in dash["panels"]:
        for t in p["targets"]:
            names |= set(re.findall(r"ringside_[a-z_]+", t["expr"]))
    base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert base and base <= exported, base - exported
