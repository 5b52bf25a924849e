"""TLS on the browser leg (ringside's server side) and towards upstreams
(its client side, through `ringside tls-check`), against independent peers:
Python's ssl module (OpenSSL), openssl s_server and testssl."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import BIN, ASAN, free_port
from fakes import RawWS, Target, echo_target
from test_console import cut_text


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d, name="ca"):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "30", "-subj", "/CN=" + name,
            cwd=d)
    return os.path.join(d, name + ".pem")


def make_cert(d, name, ca="ca", sans=("IP:127.0.0.1", "DNS:localhost")):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\n" % ",".join(sans))
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "30", "-extfile", name + ".ext",
            cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


def fingerprint(der):
    import hashlib
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def pem_fingerprint(path):
    return fingerprint(ssl.PEM_cert_to_DER_cert(open(path).read()))


def client_ctx(**kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def handshake(port, ctx, sni="localhost", session=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t = ctx.wrap_socket(s, server_hostname=sni, session=session)
    return t


def https_get(port, path, ctx=None, sni="localhost"):
    t = handshake(port, ctx or client_ctx(), sni)
    t.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    data = b""
    while True:
        chunk = t.recv(65536)
        if not chunk:
            break
        data += chunk
    t.close()
    return data


def metric(d, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def tls_daemon(daemon_factory):
    def start(extra=None):
        port = free_port()
        cfg = {"tls_listen": ["127.0.0.1:%d" % port]}
        cfg.update(extra or {})
        d = daemon_factory(cfg)
        d.tls_port = port
        return d
    return start


def test_selfsigned_certificate_is_generated_kept_and_announced(tls_daemon, tmpdir_rs):
    d = tls_daemon()
    crt = os.path.join(tmpdir_rs, "tls-selfsigned.crt")
    key = os.path.join(tmpdir_rs, "tls-selfsigned.key")
    assert os.stat(key).st_mode & 0o777 == 0o600
    t = handshake(d.tls_port, client_ctx())
    der = t.getpeercert(binary_form=True)
    t.close()
    fp = fingerprint(der)
    assert fp == pem_fingerprint(crt)
    assert fp in d.logs(), "the fingerprint must be printed at start"
    assert b"HTTP/1.1 200" in https_get(d.tls_port, "/healthz")
    # The API answers console links with https:// when TLS is on.
    body = {"kind": "vnc", "host": "127.0.0.1", "port": 5999}
    assert d.create_console(body)["url"].startswith("https://127.0.0.1:%d/" % d.tls_port)
    # Verified by a client that trusts exactly this certificate.
    ctx = ssl.create_default_context(cafile=crt)
    t = handshake(d.tls_port, ctx, sni="localhost")
    assert t.version() in ("TLSv1.3", "TLSv1.2")
    t.close()


def test_protocols_ciphers_groups_and_alpn(tls_daemon):
    d = tls_daemon()
    # TLS 1.2 works, with an ECDHE AEAD suite.
    t = handshake(d.tls_port, client_ctx(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert t.version() == "TLSv1.2"
    name, _, _ = t.cipher()
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    t.close()
    # CBC suites are refused even when that is all the client offers.
    ctx = client_ctx(maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-SHA")
    with pytest.raises(ssl.SSLError):
        handshake(d.tls_port, ctx)
    # Static RSA key exchange (no forward secrecy) likewise.
    ctx = client_ctx(maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("AES128-GCM-SHA256:AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        handshake(d.tls_port, ctx)
    # TLS 1.0/1.1 ClientHello (raw bytes: local OpenSSL may not even send one).
    s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=5)
    hello = bytes.fromhex(
        "16030100" "2f" "01" "00002b" "0302" + "00" * 32 + "00" "0004" "c013c014" "0100")
    s.sendall(hello)
    reply = s.recv(100)
    assert reply[:1] in (b"\x15", b""), reply  # an alert or a close, never a ServerHello
    s.close()
    # ALPN: http/1.1 chosen; an h2-only client gets no ALPN (and HTTP/1.1).
    ctx = client_ctx()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    t = handshake(d.tls_port, ctx)
    assert t.selected_alpn_protocol() == "http/1.1"
    t.close()
    ctx = client_ctx()
    ctx.set_alpn_protocols(["h2"])
    t = handshake(d.tls_port, ctx)
    assert t.selected_alpn_protocol() is None
    t.close()
    assert metric(d, "ringside_tls_handshake_failures_total") >= 3


def test_sni_picks_the_certificate(tls_daemon, tmpdir_rs):
    make_ca(tmpdir_rs)
    a = make_cert(tmpdir_rs, "a", sans=("DNS:a.example", "DNS:*.wild.example"))
    b = make_cert(tmpdir_rs, "b", sans=("DNS:b.example",))
    d = tls_daemon({"tls": {"certificates": [{"cert": a[0], "key": a[1]},
                                             {"cert": b[0], "key": b[1]}]}})
    ca = ssl.create_default_context(cafile=os.path.join(tmpdir_rs, "ca.pem"))
    for sni, want in (("a.example", a[0]), ("b.example", b[0]), ("x.wild.example", a[0]),
                      ("unknown.example", a[0])):
        t = handshake(d.tls_port, client_ctx(), sni=sni)
        assert fingerprint(t.getpeercert(binary_form=True)) == pem_fingerprint(want), sni
        t.close()
    t = handshake(d.tls_port, ca, sni="b.example")  # chain verifies against the CA
    t.close()


def test_bad_certificate_config_refuses_to_start(tmpdir_rs):
    make_ca(tmpdir_rs)
    a = make_cert(tmpdir_rs, "a")
    other = make_cert(tmpdir_rs, "other")
    for certs, want in (([{"cert": "/nonexistent.pem", "key": a[1]}], "/nonexistent.pem"),
                        ([{"cert": a[0], "key": other[1]}], "does not match")):
        cfg = os.path.join(tmpdir_rs, "bad.json")
        with open(cfg, "w") as f:
            json.dump({"tls_listen": ["127.0.0.1:%d" % free_port()], "state_dir": tmpdir_rs,
                       "listen": [], "metrics_listen": "", "tls": {"certificates": certs}}, f)
        out = subprocess.run([BIN, "--config", cfg], capture_output=True, text=True, timeout=20)
        assert out.returncode != 0
        assert want in out.stderr, out.stderr


def test_session_resumption_and_ticket_rotation(tls_daemon):
    d = tls_daemon({"tls": {"ticket_key_rotation_s": 1}})
    ctx = client_ctx()
    t = handshake(d.tls_port, ctx)
    t.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    t.recv(1000)  # TLS 1.3 tickets arrive after the handshake
    sess = t.session
    t.close()
    t = handshake(d.tls_port, ctx, session=sess)
    assert t.session_reused, "a ticket from this server must resume"
    t.close()
    # Two rotations later the ticket's key is gone: a full handshake.
    time.sleep(2.6)
    t = handshake(d.tls_port, ctx, session=sess)
    assert not t.session_reused
    t.close()
    assert metric(d, "ringside_tls_resumed_total") >= 1
    assert metric(d, "ringside_tls_ticket_key_rotations_total") >= 2


def test_garbage_and_plain_http_on_the_tls_port(tls_daemon):
    d = tls_daemon()
    before = metric(d, "ringside_tls_handshake_failures_total")
    # Random bytes, except the first: one that happens to open a plausible
    # record (a handshake type and 0x03, or an SSLv2 hello) makes the server
    # rightly wait for the rest of it — about 1 run in 500 hung here.
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" + os.urandom(2999),
                 b"\x16\x03\x01\xff\xff" + b"\x01" * 200):
        s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=5)
        s.sendall(junk)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        s.close()
    # A handshake cut short leaves nothing behind either.
    s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=5)
    s.sendall(b"\x16\x03\x01\x00\x40\x01")
    s.close()
    assert metric(d, "ringside_tls_handshake_failures_total") >= before + 3
    assert b"200" in https_get(d.tls_port, "/healthz")


def test_wss_console_relays_and_survives_certificate_reload(tls_daemon, tmpdir_rs):
    make_ca(tmpdir_rs)
    a = make_cert(tmpdir_rs, "a")
    live_cert, live_key = os.path.join(tmpdir_rs, "live.pem"), os.path.join(tmpdir_rs, "live.key")
    shutil.copy(a[0], live_cert)
    shutil.copy(a[1], live_key)
    d = tls_daemon({"tls": {"certificates": [{"cert": live_cert, "key": live_key}]}})
    target = Target(echo_target)
    try:
        tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": target.port})["token"]
        ws = RawWS(d.tls_port, "/ws/" + tok, tls=client_ctx())
        assert ws.status == 101, ws.head
        assert ws.rfb_client_handshake() == 0
        ws.send_frame(2, b"\x01")  # ClientInit (the echo target returns it)
        assert ws.recv_data(1) == b"\x01"
        # Handshakes keep succeeding throughout the reload (load from a thread).
        stop, errors, done = threading.Event(), [], [0]

        def hammer():
            while not stop.is_set():
                try:
                    assert b"200" in https_get(d.tls_port, "/healthz")
                    done[0] += 1
                except Exception as e:  # noqa: BLE001 - any failure counts
                    errors.append(repr(e))
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        # Sessions keep relaying while new certificates are loaded under them.
        b = make_cert(tmpdir_rs, "b")
        shutil.copy(b[0], live_cert)
        shutil.copy(b[1], live_key)
        os.kill(d.pid, signal.SIGHUP)
        new_fp = pem_fingerprint(b[0])
        deadline = time.time() + 10
        while time.time() < deadline:
            t = handshake(d.tls_port, client_ctx())
            fp = fingerprint(t.getpeercert(binary_form=True))
            t.close()
            if fp == new_fp:
                break
            time.sleep(0.1)
        assert fp == new_fp, "new handshakes must present the new certificate"
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors and done[0] > 10, (errors[:3], done[0])
        for i in range(50):
            msg = cut_text(os.urandom(1000 + i * 100 - 8))  # the relay checks RFB messages
            ws.send_frame(2, msg)
            assert ws.recv_data(len(msg)) == msg
        ws.close()
        # A reload with a broken key keeps the working certificate.
        with open(live_key, "w") as f:
            f.write("not a key\n")
        os.kill(d.pid, signal.SIGHUP)
        time.sleep(0.5)
        t = handshake(d.tls_port, client_ctx())
        assert fingerprint(t.getpeercert(binary_form=True)) == new_fp
        t.close()
        assert "old certificates stay in use" in d.logs() or "nothing changed" in d.logs()
    finally:
        target.stop()


def test_large_frames_over_wss_one_record_per_frame_boundary(tls_daemon):
    """64 KiB frames both ways through the TLS filter, compared byte for byte."""
    d = tls_daemon()
    target = Target(echo_target)
    try:
        tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": target.port})["token"]
        ws = RawWS(d.tls_port, "/ws/" + tok, tls=client_ctx())
        assert ws.rfb_client_handshake() == 0
        ws.send_frame(2, b"\x01")
        assert ws.recv_data(1) == b"\x01"
        for size in (4, 125, 126, 16383, 16384, 16385, 65535, 65536, 200000):
            # RFB messages, as the relay checks them: an xvp op, then ClientCutTexts
            msg = b"\xfa\x00\x01\x02" if size == 4 else cut_text(os.urandom(size - 8))
            ws.send_frame(2, msg)
            assert ws.recv_data(size) == msg, size
        ws.close()
    finally:
        target.stop()


def test_trusted_proxy_x_forwarded_for(daemon_factory):
    target = Target(echo_target)
    try:
        for trusted, ok in ((["127.0.0.0/8"], True), ([], False), (["10.0.0.0/8"], False)):
            d = daemon_factory({"trusted_proxies": trusted} if trusted else None)
            tok = d.create_console({"kind": "vnc", "host": "127.0.0.1", "port": target.port,
                                    "client_ip": "192.0.2.7"})["token"]
            ws = RawWS(d.port, "/ws/" + tok,
                       extra_headers="X-Forwarded-For: 198.51.100.1, 192.0.2.7\r\n")
            assert (ws.status == 101) == ok, (trusted, ws.head)
            ws.close()
    finally:
        target.stop()


# --- ringside as a TLS client (upstream side), against openssl s_server ---

@pytest.fixture
def s_server(tmpdir_rs):
    make_ca(tmpdir_rs)
    cert, key = make_cert(tmpdir_rs, "pve1", sans=("IP:127.0.0.1", "DNS:pve1.example"))
    make_ca(tmpdir_rs, "otherca")
    port = free_port()
    p = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", cert,
                          "-key", key, "-www", "-quiet"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield {"port": port, "cert": cert, "dir": tmpdir_rs}
    p.terminate()
    p.wait(10)


def tls_check(*args):
    out = subprocess.run([BIN, "tls-check", *args], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_client_ca_verification(s_server):
    addr = "127.0.0.1:%d" % s_server["port"]
    rc, out = tls_check(addr, "--ca", os.path.join(s_server["dir"], "ca.pem"))
    assert rc == 0 and "connection 1: ok" in out, out
    rc, out = tls_check(addr, "--ca", os.path.join(s_server["dir"], "ca.pem"),
                        "--name", "pve1.example")
    assert rc == 0, out
    rc, out = tls_check(addr, "--ca", os.path.join(s_server["dir"], "otherca.pem"))
    assert rc == 1 and "certificate not trusted" in out, out
    assert pem_fingerprint(s_server["cert"]) in out, "the failure names the actual fingerprint"
    rc, out = tls_check(addr, "--ca", os.path.join(s_server["dir"], "ca.pem"),
                        "--name", "wrong.example")
    assert rc == 1 and "wrong.example" in out and "mismatch" in out.lower(), out
    # The system store does not know a private cluster CA.
    rc, out = tls_check(addr)
    assert rc == 1 and "not trusted" in out, out


def test_client_pins(s_server):
    addr = "127.0.0.1:%d" % s_server["port"]
    fp = pem_fingerprint(s_server["cert"])
    rc, out = tls_check(addr, "--pin", fp)
    assert rc == 0, out
    rc, out = tls_check(addr, "--pin", fp.replace(":", "").lower())
    assert rc == 0, out
    wrong = ("01" if fp.startswith("00") else "00") + fp[2:]  # one certificate in 256 starts with 00
    rc, out = tls_check(addr, "--pin", wrong)
    assert rc == 1, out
    assert "fingerprint mismatch: expected %s, got %s" % (wrong, fp) in out, out
    assert "127.0.0.1:%d" % s_server["port"] in out
    rc, out = tls_check(addr, "--pin", "nothex")
    assert rc == 1 and "not a SHA-256 fingerprint" in out, out


def test_client_resumes_on_the_second_connection(s_server):
    addr = "127.0.0.1:%d" % s_server["port"]
    rc, out = tls_check(addr, "--ca", os.path.join(s_server["dir"], "ca.pem"), "--count", "3")
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert "resumed=no" in lines[0] and "resumed=yes" in lines[1] and "resumed=yes" in lines[2], out


def test_client_insecure_only_when_asked(s_server):
    addr = "127.0.0.1:%d" % s_server["port"]
    rc, out = tls_check(addr, "--insecure")
    assert rc == 0, out
    assert "verification is OFF" in out or "insecure" in out


def test_client_refused_and_plaintext_peers(tmpdir_rs):
    port = free_port()
    rc, out = tls_check("127.0.0.1:%d" % port, "--insecure")
    assert rc == 1 and "connect" in out, out
    target = Target(lambda c, t: (c.sendall(b"HTTP/1.0 400 Bad\r\n\r\n"), c.recv(10)))
    try:
        rc, out = tls_check("127.0.0.1:%d" % target.port, "--insecure")
        assert rc == 1 and "FAILED" in out, out
    finally:
        target.stop()


SCANNER_SELF = ("scanTime", "scanProblem", "engine_problem")


@pytest.mark.skipif(ASAN, reason="scanner run once, on the release build")
@pytest.mark.skipif(shutil.which("testssl") is None, reason="testssl not installed")
def test_testssl_finds_nothing(tls_daemon, tmpdir_rs):
    d = tls_daemon()
    out = os.path.join(tmpdir_rs, "testssl.json")
    subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p", "-P", "-S",
                    "-f", "-U", "--jsonfile", out, "127.0.0.1:%d" % d.tls_port],
                   capture_output=True, timeout=600)
    findings = json.load(open(out))
    offered = {f["id"]: f["finding"] for f in findings if f["id"] in
               ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")}
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert "not offered" in offered[old], (old, offered[old])
    assert offered["TLS1_2"].startswith("offered") and offered["TLS1_3"].startswith("offered"), offered
    # Certificate findings are about the self-signed test certificate, not the TLS setup;
    # SCANNER_SELF are testssl's notes on its own run and its own openssl (Debian's openssl 3
    # has no engines: "engine_problem"), not findings on the server.
    cert_ids = re.compile(r"^(cert|DNS_CAA|chain_of_trust|intermediate|OCSP|CRL)", re.I)
    bad = [f for f in findings if f["severity"] not in ("OK", "INFO")
           and not cert_ids.match(f["id"]) and f["id"] not in SCANNER_SELF]
    assert not bad, bad
    assert any(f["id"] in ("FS", "PFS") and f["severity"] == "OK" for f in findings), "forward secrecy"
