"""The terminal page's reconnect in Chromium, against the Proxmox VE simulator
(tests/e2e/page.mjs MODE=term; the VNC page's is in test_page.py)."""
import os
import shutil
import subprocess

import pytest

from conftest import API_KEY, ROOT
from test_proxmox import lab, rs  # noqa: F401 (fixtures)


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed")
@pytest.mark.parametrize("lab", [False], ids=["hardened"], indirect=True)
def test_terminal_page_reconnects_after_a_drop(rs, lab):  # noqa: F811
    d = rs()
    env = dict(os.environ, MODE="term", RINGSIDE_URL=d.base, RINGSIDE_KEY=API_KEY, CLUSTER="lab",
               METRICS_URL="http://127.0.0.1:%d/metrics" % d.metrics_port,
               NODE_PATH=os.path.join(ROOT, "www/node_modules"))
    out = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/page.mjs")], env=env,
                         capture_output=True, text=True, timeout=120)
    print(out.stdout, out.stderr)
    assert out.returncode == 0 and "0 failed" in out.stdout, out.stdout + out.stderr
