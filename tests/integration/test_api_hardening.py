"""API hardening (issue 15, items 9, 11, 12, 17, 18): one key-set snapshot per
request, /create's rate limit, per-key limits on pending links and open
consoles, allowed_targets, failed-authentication throttling, /status scoping."""
import json
import os
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import BIN, free_port
from fakes import RawWS, Target, echo_target
from rs import Conn

KEYS = [{"name": "k%d" % i, "key": "hardening-key-%d-0123456789abcdef" % i} for i in range(3)]
INLINE = {"verify": "insecure"}


def request(d, method, path, body=b"", headers=None):
    c = Conn(d.port)
    head = "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (method, path, len(body))
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    c.send(head.encode() + b"\r\n" + body)
    st, h, b = c.response()
    c.close()
    return st, h, (json.loads(b) if b and h.get("content-type", "").startswith("application/json") else b)


def consoles(d, key, body):
    return request(d, "POST", "/api/v1/consoles", json.dumps(body).encode(),
                   {"Authorization": "Bearer " + key, "Content-Type": "application/json"})


def multipart(params):
    b = "ringsideboundary"
    body = ("--%s\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n%s\r\n--%s--\r\n"
            % (b, json.dumps(params), b)).encode()
    return body, "multipart/form-data; boundary=" + b


PARAMS = {"hostname": "127.0.0.1", "port": "8006", "node": "pve1", "username": "u@pve",
          "password": "p", "vmid": "100"}


def create(d, key, params=None):
    body, ctype = multipart(params or PARAMS)
    return request(d, "POST", "/create", body, {"Authorization": key, "Content-Type": ctype})


def stats(d, key):
    st, _, b = request(d, "GET", "/api/v1/stats", headers={"Authorization": "Bearer " + key})
    assert st == 200, b
    return b


def ctl_reload(d):
    r = subprocess.run([BIN, "ctl", "--socket", d.sock, "reload"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr


# --- item 9: /create and the key set ---

def test_create_survives_reloads_that_shrink_the_keys(daemon_factory, tmpdir_rs):
    """/create authenticated on one key set and looked its key up again in the
    set in force: a reload dropping keys in between read past the new, shorter
    array (ASan heap-buffer-overflow; garbage key names in release)."""
    sock = os.path.join(tmpdir_rs, "admin.sock")
    d = daemon_factory({"api_keys": KEYS, "admin_socket": sock, "inline_upstreams": INLINE,
                        "tokens": {"ttl_s": 1}, "log_level": "info"})
    d.sock = sock
    full = json.load(open(d.cfg_path))
    short = dict(full, api_keys=KEYS[:1])
    body, ctype = multipart(PARAMS)
    req = ("POST /create HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: %s\r\n"
           "Content-Length: %d\r\n\r\n" % (KEYS[2]["key"], ctype, len(body))).encode() + body
    stop = threading.Event()
    seen = {}

    def hammer():
        c = Conn(d.port)
        while not stop.is_set():
            c.send(req * 20)
            for _ in range(20):
                r = c.response()
                if r is None:
                    return
                seen[r[0]] = seen.get(r[0], 0) + 1
        c.close()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    end = time.time() + 3
    while time.time() < end and d.proc.poll() is None:
        for cfg in (short, full):
            json.dump(cfg, open(d.cfg_path, "w"))
            ctl_reload(d)
    stop.set()
    for t in threads:
        t.join(10)
    assert d.proc.poll() is None, d.logs()[-3000:]
    assert seen.get(200) and seen.get(401), seen
    assert set(seen) <= {200, 401}, seen
    names = {l.split(" key=")[1].split(" ")[0] for l in open(d.log_path, errors="replace")
             if "token.issued" in l}
    assert names == {"k2"}, names


def test_create_applies_the_per_key_rate_limit(daemon_factory):
    d = daemon_factory({"api_keys": KEYS, "inline_upstreams": INLINE,
                        "api": {"rate_limit_per_s": 1, "rate_limit_burst": 3}})
    got = [create(d, KEYS[0]["key"]) for _ in range(5)]
    assert [g[0] for g in got] == [200, 200, 200, 429, 429], got
    assert got[3][1]["retry-after"] == "1"
    assert got[3][2]["status"] == "error" and got[3][2]["code"] == "rate_limited"
    assert create(d, KEYS[1]["key"])[0] == 200  # another key has its own bucket
    # /api/v1/consoles and /create draw from the same bucket
    st, _, b = consoles(d, KEYS[0]["key"], {"kind": "vnc", "host": "127.0.0.1", "port": 5900})
    assert st == 429 and b["error"]["code"] == "rate_limited"


# --- item 11: per-key limits ---

def test_one_key_cannot_fill_the_token_table(daemon_factory):
    keys = [dict(KEYS[0], max_pending=3), KEYS[1]]
    d = daemon_factory({"api_keys": keys, "inline_upstreams": INLINE,
                        "api": {"max_pending_per_key": 5}})
    body = {"kind": "vnc", "host": "127.0.0.1", "port": 5900}
    toks = [consoles(d, KEYS[0]["key"], body) for _ in range(3)]
    assert all(t[0] == 201 for t in toks), toks
    st, h, b = consoles(d, KEYS[0]["key"], body)
    assert st == 429 and b["error"]["code"] == "key_pending_limit", b
    assert "'k0'" in b["error"]["message"] and h["retry-after"] == "1"
    st, _, b = create(d, KEYS[0]["key"])  # ProxmoxVNC's /create counts too
    assert st == 429 and b["code"] == "key_pending_limit", b
    # the global default (5) for the other key
    assert [consoles(d, KEYS[1]["key"], body)[0] for _ in range(6)] == [201] * 5 + [429]
    # a link leaving the table frees a place: revoked, or consumed
    tok = toks[0][2]["token"]
    st, _, _ = request(d, "DELETE", "/api/v1/consoles/" + tok,
                       headers={"Authorization": "Bearer " + KEYS[0]["key"]})
    assert st == 204
    st, _, b = consoles(d, KEYS[0]["key"], body)
    assert st == 201, b
    ws = RawWS(d.port, "/ws/" + toks[1][2]["token"])
    ws.close()
    time.sleep(0.2)
    assert consoles(d, KEYS[0]["key"], body)[0] == 201
    assert stats(d, KEYS[1]["key"])["api"]["key_pending_refused"] == 3


def test_per_key_open_console_limit(daemon_factory):
    target = Target(echo_target)
    keys = [dict(KEYS[0], max_consoles=1), KEYS[1]]
    d = daemon_factory({"api_keys": keys})
    body = {"kind": "vnc", "host": "127.0.0.1", "port": target.port}
    try:
        toks = [consoles(d, KEYS[0]["key"], body)[2]["token"] for _ in range(3)]
        first = RawWS(d.port, "/ws/" + toks[0])
        assert first.status == 101
        second = RawWS(d.port, "/ws/" + toks[1])
        assert second.status == 429, second.head
        n = int(second.head.lower().split("content-length: ")[1].split("\r\n")[0])
        err = json.loads(second._read(n))["error"]
        assert err["code"] == "key_console_limit", err
        assert "close one and open this link again" in err["message"], err
        other = RawWS(d.port, "/ws/" + consoles(d, KEYS[1]["key"], body)[2]["token"])
        assert other.status == 101  # another key is not affected
        s = stats(d, KEYS[1]["key"])
        assert s["consoles"]["causes"]["key_consoles"] == 1
        first.close()
        deadline = time.time() + 5
        while time.time() < deadline:  # until the first console's session is gone
            st, _, b = request(d, "GET", "/status", headers={"Authorization": KEYS[0]["key"]})
            if b["total_sessions"] == 0:
                break
            time.sleep(0.05)
        third = RawWS(d.port, "/ws/" + toks[2])
        assert third.status == 101, third.head  # the place was given back
        again = RawWS(d.port, "/ws/" + toks[1])  # the refused link was kept: it works now
        assert again.status == 429, again.head  # ... once a place is free
        third.close()
        deadline = time.time() + 5
        while time.time() < deadline:
            st, _, b = request(d, "GET", "/status", headers={"Authorization": KEYS[0]["key"]})
            if b["total_sessions"] == 0:
                break
            time.sleep(0.05)
        again = RawWS(d.port, "/ws/" + toks[1])
        assert again.status == 101, again.head
        again.close()
        assert stats(d, KEYS[1]["key"])["tokens"]["returned"] == 2
        other.close()
    finally:
        target.stop()


# --- item 12: allowed_targets ---

def test_targets_outside_allowed_targets_are_refused_at_issue(daemon_factory):
    keys = [KEYS[0], dict(KEYS[1], allowed_targets=["10.0.0.0/8", "169.254.169.254/32"])]
    d = daemon_factory({"api_keys": keys, "inline_upstreams": INLINE,
                        "allowed_targets": ["127.0.0.0/8", "0.0.0.0/0"]})
    open_port = free_port()

    def issue(key, host, port=5900):
        return consoles(d, key, {"kind": "vnc", "host": host, "port": port})

    assert issue(KEYS[0]["key"], "127.0.0.1")[0] == 201
    assert issue(KEYS[0]["key"], "localhost")[0] == 201
    assert issue(KEYS[0]["key"], "192.0.2.1")[0] == 201  # inside 0.0.0.0/0
    # special addresses are not named by a wide range: same answer whatever listens there
    answers = set()
    for host in ("0.0.0.0", "169.254.169.254", "224.0.0.1", "255.255.255.255", "::",
                 "fe80::1", "ff02::1", "::1", "::ffff:169.254.169.254"):
        for port in (open_port, d.port, 1):
            st, _, b = issue(KEYS[0]["key"], host, port)
            assert st == 403 and b["error"]["code"] == "target_not_allowed", (host, b)
            answers.add(json.dumps(b))
    assert len(answers) == 1, answers  # no oracle: one answer for every address and port
    # a key's own list replaces the global one
    assert issue(KEYS[1]["key"], "10.1.2.3")[0] == 201
    assert issue(KEYS[1]["key"], "169.254.169.254")[0] == 201
    st, _, b = issue(KEYS[1]["key"], "127.0.0.1")
    assert st == 403 and "'k1'" in b["error"]["message"]
    # ProxmoxVNC's inline hosts are checked the same way
    assert create(d, KEYS[0]["key"])[0] == 200
    st, _, b = create(d, KEYS[0]["key"], dict(PARAMS, hostname="169.254.169.254"))
    assert st == 403 and b["code"] == "target_not_allowed", b
    assert stats(d, KEYS[0]["key"])["api"]["targets_refused"] == 29


def test_no_allowed_targets_means_no_plain_targets(daemon_factory):
    d = daemon_factory({"api_keys": KEYS, "allowed_targets": []})
    st, _, b = consoles(d, KEYS[2]["key"], {"kind": "vnc", "host": "127.0.0.1", "port": 5900})
    assert st == 403 and b["error"]["code"] == "target_not_allowed"
    assert "API key 'k2'" in b["error"]["message"] and "allowed_targets" in b["error"]["message"]
    assert "API key 'k2' has no allowed_targets" in d.logs()  # said at start, too


# --- item 17: weak keys and failed authentications ---

def test_example_config_placeholder_key_is_refused():
    example = os.path.join(os.path.dirname(BIN), "../../etc/ringside.example.json")
    r = subprocess.run([BIN, "--check-config", "--config", example], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0, r.stdout
    assert "'api_keys[0].key': looks like a placeholder" in r.stderr, r.stderr
    assert "openssl rand -base64 24" in r.stderr


def test_failed_authentications_are_throttled_per_address(daemon_factory):
    d = daemon_factory({"api_keys": KEYS, "inline_upstreams": INLINE,
                        "api": {"auth_failures_per_window": 3, "auth_failure_window_s": 2}})
    body = {"kind": "vnc", "host": "127.0.0.1", "port": 5900}
    assert [consoles(d, "wrong-key-0123456789abcdef", body)[0] for _ in range(3)] == [401] * 3
    st, h, b = consoles(d, "wrong-key-0123456789abcdef", body)
    assert st == 429 and b["error"]["code"] == "auth_throttled"
    assert 1 <= int(h["retry-after"]) <= 2
    # the right key is not even compared while throttled (no oracle)
    assert consoles(d, KEYS[0]["key"], body)[0] == 429
    st, h, b = create(d, KEYS[0]["key"])
    assert st == 429 and b["code"] == "auth_throttled" and "retry-after" in h
    s = request(d, "GET", "/api/v1/stats", headers={"Authorization": "Bearer " + KEYS[0]["key"]})
    assert s[0] == 429
    time.sleep(2.1)
    assert consoles(d, KEYS[0]["key"], body)[0] == 201
    s = stats(d, KEYS[0]["key"])["api"]
    assert s["auth_failures"] == 3 and s["auth_throttled"] == 4, s


# --- item 18: /status shows a key its own consoles ---

def test_status_shows_a_key_only_its_own_consoles(daemon_factory):
    target = Target(echo_target)
    keys = [KEYS[0], KEYS[1], dict(KEYS[2], admin=True)]
    d = daemon_factory({"api_keys": keys, "inline_upstreams": INLINE})
    body = {"kind": "vnc", "host": "127.0.0.1", "port": target.port}
    try:
        ws = [RawWS(d.port, "/ws/" + consoles(d, k["key"], body)[2]["token"])
              for k in (KEYS[0], KEYS[0], KEYS[1])]
        assert all(w.status == 101 for w in ws)
        consoles(d, KEYS[1]["key"], body)  # one pending link of k1

        def status(key):
            st, _, b = request(d, "GET", "/status", headers={"Authorization": key})
            assert st == 200, b
            return b

        assert status(KEYS[0]["key"])["total_sessions"] == 2
        assert len(status(KEYS[0]["key"])["sessions"]) == 2
        assert status(KEYS[0]["key"])["pending_tokens"] == 0
        s1 = status(KEYS[1]["key"])
        assert s1["total_sessions"] == 1 and len(s1["sessions"]) == 1 and s1["pending_tokens"] == 1
        s2 = status(KEYS[2]["key"])
        assert s2["total_sessions"] == 3 and len(s2["sessions"]) == 3 and s2["pending_tokens"] == 1
        for w in ws:
            w.close()
    finally:
        target.stop()
