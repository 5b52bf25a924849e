"""Real headless Chromium (playwright-core) against ringside and a real Xvnc."""
import os
import shutil
import subprocess

import pytest

from conftest import API_KEY, ROOT, free_port


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed (scripts/setup installs it)")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_browser_console_shows_desktop(daemon_factory, xvnc, tmpdir_rs, scheme):
    tls_port = free_port()
    daemon = daemon_factory({"tls_listen": ["127.0.0.1:%d" % tls_port]} if scheme == "https" else None)
    env = dict(os.environ, RINGSIDE_URL=daemon.base, EXPECT_SCHEME=scheme, RINGSIDE_KEY=API_KEY, VNC_PORT=str(xvnc.port),
               VNC_PASSWORD=xvnc.password, COLOUR=xvnc.colour, OUT_DIR=tmpdir_rs,
               NODE_PATH=os.path.join(ROOT, "www/node_modules"))
    out = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/vnc_console.mjs")], env=env,
                         capture_output=True, text=True, timeout=180)
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout
    # nothing the browser could see or the log recorded holds the VNC password
    assert xvnc.password not in daemon.logs()


def test_demo_prints_a_working_link(tmpdir_rs):
    env = dict(os.environ, DEMO_ONESHOT="1", DEMO_PORT="0")
    out = subprocess.run([os.path.join(ROOT, "scripts/demo")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/console/" in out.stdout
