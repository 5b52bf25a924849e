"""The console page as customers and panels meet it: console.* settings
(embedding, branding, languages), the headers that enforce them, and — in a
real headless Chromium (tests/e2e/page.mjs) — framing by another origin, the
postMessage API, and the page's automatic reconnect."""
import os
import shutil
import subprocess

import pytest

from conftest import API_KEY, BIN, ROOT, free_port
from rs import Conn, get

LOGO = (b"<svg xmlns='http://www.w3.org/2000/svg' width='40' height='20'>"
        b"<rect width='40' height='20' fill='#c03'/></svg>")


def fetch(d, path, headers=""):
    c = Conn(d.port)
    c.send("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, headers))
    r = c.response()
    c.close()
    return r


def link(d, vnc_port=5999):
    return d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": vnc_port})["token"]


def test_default_page_cannot_be_framed(daemon):
    tok = link(daemon)
    for path in ("/console/" + tok, "/console/nope"):
        status, h, body = fetch(daemon, path)
        assert status in (200, 404)
        assert h["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert b'<body data-lang="en" data-state=' in body  # no settings beyond the language
    assert fetch(daemon, "/brand/logo")[0] == 404


@pytest.fixture
def branded(daemon_factory, tmpdir_rs):
    logo = os.path.join(tmpdir_rs, "logo.svg")
    with open(logo, "wb") as f:
        f.write(LOGO)
    return daemon_factory({"console": {
        "frame_ancestors": ["https://panel.example.com", "http://127.0.0.2:8123"],
        "title": "Acme <Cloud> \"Console\" & \u202eevil",
        "logo": logo, "accent_colour": "#FF8800",
        "support_url": "https://help.example.com/?a=1&b=\"2\""}})


def test_frame_ancestors_and_branding_headers(branded):
    tok = link(branded)
    status, h, body = fetch(branded, "/console/" + tok)
    assert status == 200
    # X-Frame-Options cannot name origins: left out, the CSP alone decides
    assert "x-frame-options" not in h
    csp = h["content-security-policy"]
    assert "frame-ancestors https://panel.example.com http://127.0.0.2:8123\r" not in csp
    assert csp.endswith("frame-ancestors https://panel.example.com http://127.0.0.2:8123")
    assert "script-src" not in csp and "default-src 'self'" in csp  # still no inline script
    head = body[body.index(b"<body"):body.index(b">", body.index(b"<body"))]
    # escaped for an attribute; the bidi override made harmless
    assert b'data-title="Acme &lt;Cloud&gt; &quot;Console&quot; &amp; \xef\xbf\xbdevil"' in head
    assert b'data-accent="#FF8800"' in head
    assert b'data-support="https://help.example.com/?a=1&amp;b=&quot;2&quot;"' in head
    assert b'data-origins="https://panel.example.com http://127.0.0.2:8123"' in head
    assert b'data-logo="/brand/logo"' in head
    assert b"<script>" not in body
    # the expired page carries the same settings and headers
    status, h, body = fetch(branded, "/console/AAAAAAAAAAAAAAAAAAAAAA")
    assert status == 404 and "x-frame-options" not in h and b'data-support="https://help' in body
    # the logo: from memory, its type, an ETag, and a CSP that keeps an SVG inert
    status, h, body = fetch(branded, "/brand/logo")
    assert status == 200 and body == LOGO and h["content-type"] == "image/svg+xml"
    assert "sandbox" in h["content-security-policy"] and h["x-content-type-options"] == "nosniff"
    status, _, _ = fetch(branded, "/brand/logo", "If-None-Match: %s\r\n" % h["etag"])
    assert status == 304


@pytest.mark.parametrize("accept,want", [
    (None, "en"),
    ("de-DE,de;q=0.9,en;q=0.8", "de"),
    ("fr-CH, de;q=0.9, en;q=0.8", "de"),
    ("de;q=0.5, en-GB;q=0.8", "en"),
    ("fr, es", "en"),
    ("DE", "de"),
    ("dee, de-AT;q=0.1", "de"),
])
def test_language_auto_follows_accept_language(daemon, accept, want):
    tok = link(daemon)
    _, _, body = fetch(daemon, "/console/" + tok, "Accept-Language: %s\r\n" % accept if accept else "")
    assert b'<body data-lang="%s"' % want.encode() in body


def test_language_fixed(daemon_factory):
    d = daemon_factory({"console": {"language": "de"}})
    _, _, body = fetch(d, "/console/" + link(d), "Accept-Language: en-US\r\n")
    assert b'<body data-lang="de"' in body


@pytest.mark.parametrize("console,key", [
    ({"frame_ancestors": ["https://panel.example.com/"]}, "'console.frame_ancestors[0]'"),
    ({"frame_ancestors": ["https://*.example.com"]}, "'console.frame_ancestors[0]'"),
    ({"frame_ancestors": ["panel.example.com"]}, "'console.frame_ancestors[0]'"),
    ({"frame_ancestors": ["https://ok.example", "https://Panel.example.com"]}, "'console.frame_ancestors[1]'"),
    ({"frame_ancestors": ["https://a.example:0"]}, "'console.frame_ancestors[0]'"),
    ({"frame_ancestors": ["https://a.example:65536"]}, "'console.frame_ancestors[0]'"),
    ({"frame_ancestors": ["https://a.example; script-src *"]}, "'console.frame_ancestors[0]'"),
    ({"frame_ancestors": ["https://a%d.example" % i for i in range(11)]}, "at most 10"),
    ({"frame_ancestors": "https://a.example"}, "'console.frame_ancestors'"),
    ({"accent_colour": "orange"}, "'console.accent_colour'"),
    ({"accent_colour": "#ff880"}, "'console.accent_colour'"),
    ({"language": "fr"}, "'console.language'"),
    ({"title": ""}, "'console.title'"),
    ({"title": "a\nb"}, "'console.title'"),
    ({"title": "x" * 101}, "'console.title'"),
    ({"support_url": "javascript:alert(1)"}, "'console.support_url'"),
    ({"support_url": "https://a.example/x y"}, "'console.support_url'"),
    ({"logo": "/nonexistent/logo.png"}, "'console.logo'"),
    ({"logo": "/etc/passwd"}, "'console.logo'"),
    ({"colour": "#fff"}, "'console.colour': unknown key"),
])
def test_bad_console_settings_are_refused(tmp_path, console, key):
    cfg = tmp_path / "c.json"
    cfg.write_text(__import__("json").dumps({"listen": ["127.0.0.1:%d" % free_port()],
                                             "console": console}))
    r = subprocess.run([BIN, "--check-config", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0 and key in r.stderr, r.stderr


def test_logo_too_large_is_refused(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (256 * 1024))
    cfg = tmp_path / "c.json"
    cfg.write_text('{"console": {"logo": "%s"}}' % big)
    r = subprocess.run([BIN, "--check-config", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0 and "larger than 256 KiB" in r.stderr, r.stderr


def run_e2e(env):
    env = dict(os.environ, RINGSIDE_KEY=API_KEY, NODE_PATH=os.path.join(ROOT, "www/node_modules"), **env)
    out = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/page.mjs")], env=env,
                         capture_output=True, text=True, timeout=120)
    print(out.stdout, out.stderr)
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr


chromium = pytest.mark.skipif(not shutil.which("chromium"),
                              reason="chromium not installed (scripts/setup installs it)")


@chromium
def test_browser_embedding_and_postmessage(daemon_factory, xvnc, tmpdir_rs):
    allowed = "http://127.0.0.2:%d" % free_port()
    other = "http://127.0.0.3:%d" % free_port()
    logo = os.path.join(tmpdir_rs, "logo.svg")
    with open(logo, "wb") as f:
        f.write(LOGO)
    d = daemon_factory({"console": {"frame_ancestors": [allowed], "title": "Acme Cloud",
                                    "logo": logo, "accent_colour": "#cc0033"}})
    run_e2e(dict(MODE="embed", RINGSIDE_URL=d.base, VNC_PORT=str(xvnc.port),
                 VNC_PASSWORD=xvnc.password, ALLOWED_ORIGIN=allowed, OTHER_ORIGIN=other,
                 TITLE="Acme Cloud", ACCENT="#cc0033"))


@chromium
def test_browser_reconnects_after_a_drop(daemon_factory, xvnc, tmpdir_rs):
    sock = os.path.join(tmpdir_rs, "ctl.sock")
    support = "https://help.example.com/console"
    d = daemon_factory({"admin_socket": sock, "console": {"support_url": support}})
    run_e2e(dict(MODE="reconnect", RINGSIDE_URL=d.base, VNC_PORT=str(xvnc.port),
                 VNC_PASSWORD=xvnc.password, COLOUR=xvnc.colour, RINGSIDE_BIN=BIN, CTL_SOCK=sock,
                 SUPPORT_URL=support, METRICS_URL="http://127.0.0.1:%d/metrics" % d.metrics_port))


@chromium
def test_browser_close_codes_against_a_scripted_server(daemon, xvnc):
    """What the page does on each close code, with the server side of resume
    stood in for by a scripted RFB server (Playwright's WebSocket routing)."""
    run_e2e(dict(MODE="codes", RINGSIDE_URL=daemon.base, VNC_PORT=str(xvnc.port),
                 VNC_PASSWORD=xvnc.password))
