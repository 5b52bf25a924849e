"""Scoped API keys (issue 17): each api_keys entry may restrict what it opens
(clusters, kinds, max_ttl_s, view_only_only, its own allowed_targets); a
request outside its scope is refused with 403 naming the field, one inside
passes; bad scopes are refused by the config check with a clear message."""
import json
import subprocess

import pytest

from conftest import BIN
from test_api_hardening import create, request

CLUSTER = {"endpoints": ["127.0.0.1:8006"], "token": "u@pam!t=s", "verify": "system"}
KEYS = [
    {"name": "kinds", "key": "scope-key-kinds-0123456789abcdef", "kinds": ["pve-vnc"]},
    {"name": "clusters", "key": "scope-key-clusters-0123456789abc", "clusters": ["fra1"]},
    {"name": "ttl", "key": "scope-key-ttl-0123456789abcdefgh", "max_ttl_s": 60},
    {"name": "viewer", "key": "scope-key-viewer-0123456789abcde", "view_only_only": True},
    {"name": "targets", "key": "scope-key-targets-0123456789abcd",
     "allowed_targets": ["127.0.0.2/32"]},
]
KEY = {k["name"]: k["key"] for k in KEYS}
VNC = {"kind": "vnc", "host": "127.0.0.1", "port": 5900}
FRA = {"cluster": "fra1", "vmid": 100}
AMS = {"cluster": "ams1", "vmid": 100}
TERM = {"cluster": "fra1", "vmid": 100, "type": "lxc", "console": "term"}


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    from conftest import Daemon
    dm = Daemon(str(tmp_path_factory.mktemp("scopes")),
                {"api_keys": KEYS, "clusters": {"fra1": CLUSTER, "ams1": CLUSTER},
                 "inline_upstreams": {"verify": "insecure"}})
    yield dm
    assert dm.stop() == 0
    dm.check_clean()


def post(d, name, body):
    return request(d, "POST", "/api/v1/consoles", json.dumps(body).encode(),
                   {"Authorization": "Bearer " + KEY[name], "Content-Type": "application/json"})


@pytest.mark.parametrize("name,body,field", [
    ("kinds", VNC, "kinds"),
    ("kinds", TERM, "kinds"),
    ("clusters", AMS, "clusters"),
    ("ttl", dict(VNC, ttl=61), "max_ttl_s"),
    ("viewer", VNC, "view_only_only"),
    ("viewer", dict(VNC, view_only=False), "view_only_only"),
])
def test_out_of_scope_is_403_naming_the_field(d, name, body, field):
    st, h, b = post(d, name, body)
    assert st == 403, (st, b)
    assert h["content-type"].startswith("application/json")
    assert b["error"]["code"] == "out_of_scope", b
    assert field in b["error"]["message"] and name in b["error"]["message"], b


def test_allowed_targets_of_the_key_is_403(d):
    st, _, b = post(d, "targets", VNC)
    assert st == 403 and b["error"]["code"] == "target_not_allowed", b
    assert "allowed_targets" in b["error"]["message"]


@pytest.mark.parametrize("name,body", [
    ("kinds", FRA),
    ("clusters", FRA),
    ("clusters", dict(TERM)),
    ("clusters", VNC),  # clusters scopes Proxmox consoles only
    ("ttl", dict(VNC, ttl=60)),
    ("viewer", dict(VNC, view_only=True)),
    ("targets", dict(VNC, host="127.0.0.2")),
])
def test_in_scope_passes(d, name, body):
    st, _, b = post(d, name, body)
    assert st == 201, (st, b)


def test_max_ttl_lowers_the_default(d):
    st, _, b = post(d, "ttl", VNC)  # tokens.ttl_s defaults above 60 s
    assert st == 201 and b["expires_in"] == 60, b


def test_proxmoxvnc_create_is_scoped_too(d):
    st, _, b = create(d, KEY["clusters"])  # inline Proxmox host: not one of its clusters
    assert st == 403 and b["code"] == "out_of_scope" and "clusters" in b["message"], b
    st, _, b = create(d, KEY["viewer"])
    assert st == 403 and b["code"] == "out_of_scope", b
    from test_api_hardening import PARAMS
    st, _, b = create(d, KEY["viewer"], dict(PARAMS, view_only="1"))
    assert st == 200 and b["status"] == "success", b


def test_scope_refusals_are_counted(d):
    post(d, "viewer", VNC)
    st, _, b = request(d, "GET", "/api/v1/stats", headers={"Authorization": "Bearer " + KEY["kinds"]})
    assert st == 200 and b["api"]["scope_refused"] >= 1, b


@pytest.mark.parametrize("scope,msg", [
    ({"clusters": ["nope"]}, "'api_keys[0].clusters[0]': 'nope' is not a configured cluster"),
    ({"clusters": []}, "'api_keys[0].clusters': must name at least one cluster"),
    ({"clusters": "fra1"}, "'api_keys[0].clusters': must be an array of strings"),
    ({"kinds": ["rdp"]}, "'api_keys[0].kinds[0]': must be \"vnc\", \"pve-vnc\" or \"pve-term\""),
    ({"kinds": []}, "'api_keys[0].kinds': must be a non-empty list"),
    ({"max_ttl_s": 0}, "'api_keys[0].max_ttl_s': must be an integer of seconds"),
    ({"max_ttl_s": 7200}, "'api_keys[0].max_ttl_s': 7200 exceeds tokens.max_ttl_s (3600)"),
    ({"view_only_only": "yes"}, "'api_keys[0].view_only_only': must be true or false"),
])
def test_bad_scope_is_refused_by_the_config_check(tmp_path, scope, msg):
    cfg = {"listen": ["127.0.0.1:1"], "metrics_listen": "", "clusters": {"fra1": CLUSTER},
           "api_keys": [dict({"name": "a", "key": "scope-key-config-0123456789abcd"}, **scope)]}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    r = subprocess.run([BIN, "--check-config", "--config", str(p)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0 and msg in r.stderr, r.stderr


def test_reload_applies_a_new_scope(daemon_factory, tmpdir_rs):
    import os
    from test_api_hardening import ctl_reload
    sock = os.path.join(tmpdir_rs, "admin.sock")
    key = {"name": "r", "key": "scope-key-reload-0123456789abcde"}
    d = daemon_factory({"api_keys": [key], "admin_socket": sock})
    d.sock = sock
    assert post_json_key(d, key["key"], VNC)[0] == 201
    cfg = json.load(open(d.cfg_path))
    cfg["api_keys"] = [dict(key, kinds=["pve-vnc"])]
    json.dump(cfg, open(d.cfg_path, "w"))
    ctl_reload(d)
    st, _, b = post_json_key(d, key["key"], VNC)
    assert st == 403 and b["error"]["code"] == "out_of_scope", b
    # A scope the check refuses leaves the one in force.
    cfg["api_keys"] = [dict(key, kinds=["rdp"])]
    json.dump(cfg, open(d.cfg_path, "w"))
    r = subprocess.run([BIN, "ctl", "--socket", sock, "reload"], capture_output=True, text=True,
                       timeout=10)
    assert "api_keys[0].kinds[0]" in r.stdout + r.stderr, r.stdout + r.stderr
    assert post_json_key(d, key["key"], VNC)[0] == 403


def post_json_key(d, key, body):
    return request(d, "POST", "/api/v1/consoles", json.dumps(body).encode(),
                   {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
