"""The landing page in a real browser: headless Chromium whose DNS goes to a running blokir.

Chromium runs in a network and mount namespace of its own (tests/integration/
browser_namespace.py), where /etc/resolv.conf names blokir on 127.0.0.1:53 and /etc/hosts lists
none of the test names: no hosts mapping, no resolver rules. Proof that its lookups reached
blokir: blokir's own counters of blocked and allowed A queries move by what the browser asked.
The screenshot of the block page stays in the test's tmp directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.browser_namespace import ALLOWED_TEXT, BLOCKED

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_chromium_through_blokir_shows_the_block_page_and_not_the_allowed_site(
    tmp_path: Path,
) -> None:
    for tool in ("chromium", "nsd", "unshare", "ip", "mount"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"{tool} not installed (scripts/install-test-deps installs it)")
    # Root here (CI) needs no user namespace; elsewhere one maps us to root inside.
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    probe = subprocess.run(["unshare", *userns, "--net", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.decode().strip()}")
    out = tmp_path / "browser"
    done = subprocess.run(
        [
            "unshare",
            *userns,
            "--net",
            "--mount",
            "--fork",
            sys.executable,
            "-m",
            "tests.integration.browser_namespace",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    before, after = results["before"], results["after"]

    blocked = (out / "blocked.html").read_text()
    assert f'<span id="name">{BLOCKED}</span> is blocked' in blocked
    assert '<dd id="category">gambling</dd>' in blocked and "trustpositif" in blocked
    assert "451 Unavailable For Legal Reasons" in blocked
    assert results["http"]["blocked"] == {
        "status": 451,
        "link": '<https://isp.example/appeal>; rel="blocked-by"',
    }
    allowed = (out / "allowed.html").read_text()
    assert ALLOWED_TEXT in allowed and "blocked" not in allowed
    assert results["http"]["allowed"]["status"] == 200

    # The browser's lookups went to blokir: the page load and the screenshot each asked for
    # the blocked name, and the allowed name went upstream through blokir; the landing page
    # counted both loads of the block page.
    assert after["blocked_a"] - before["blocked_a"] >= 2
    assert after["allowed"] - before["allowed"] >= 1
    assert after["landing_gambling"] - before["landing_gambling"] >= 2

    screenshot = out / "blocked.png"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 5000
    print(f"screenshot of the block page: {screenshot}")
