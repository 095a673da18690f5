"""The landing page under `blokir serve` and as `blokir landing`: real processes on loopback.

Under serve: the page follows a list reload, the landing process is replaced on the reload and
restarted when it dies, its counters reach the supervisor's scrape and never go backwards, and
it stops with the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dnsutil import free_port
from tests.support.processes import ManagedProcess
from tests.support.servers import metric_sum, scrape_metrics
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
BLOCKED = "judi-contoh.example"
ADDED = "baru-diblokir.example"


def write_config(tmp: Path, upstream_port: int) -> tuple[Path, int, int]:
    landing_port, metrics_port = free_port(), free_port()
    (tmp / "block.txt").write_text(f"{BLOCKED}\n")
    config = tmp / "blokir.toml"
    config.write_text(
        f"""
[server]
listen = ["{LOOPBACK}:{free_port()}"]
[upstream]
servers = ["{LOOPBACK}:{upstream_port}"]
[blocking]
landing_ipv4 = "{LOOPBACK}"
index_path = "index.blkx"
justification = "Peraturan Menteri Kominfo 5/2020"
[metrics]
listen = "{LOOPBACK}:{metrics_port}"
[updates]
watch_interval = 0.3
[landing]
listen = ["{LOOPBACK}:{landing_port}"]
[[lists]]
name = "trustpositif"
path = "block.txt"
category = "gambling"
"""
    )
    return config, landing_port, metrics_port


def page(port: int, host: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until(check, seconds: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{check} did not hold within {seconds} s")
        time.sleep(0.1)


def landed(metrics_port: int) -> float:
    text = scrape_metrics(metrics_port, 5)
    return metric_sum(text, "blokir_landing_requests_total", category="gambling", scheme="http")


def status(config: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def test_serve_runs_the_landing_process_through_reloads_and_crashes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    config, port, metrics_port = write_config(tmp_path, upstream.port)
    server = ManagedProcess(
        "blokir",
        [sys.executable, "-m", "resolver", "serve", "-c", str(config)],
        tmp_path / "serve.log",
        cwd=ROOT,
    )
    try:
        assert wait_until(lambda: page(port, BLOCKED))[0] == 451
        code, body = page(port, f"www.{BLOCKED}")
        assert code == 451 and "Peraturan Menteri Kominfo 5/2020" in body
        assert page(port, ADDED)[0] == 200
        assert wait_until(lambda: landed(metrics_port) == 2)
        first = status(config)["landing_pid"]

        # A list change: the reload replaces the landing process, which maps the new index.
        (tmp_path / "block.txt").write_text(f"{BLOCKED}\n{ADDED}\n")
        wait_until(lambda: page(port, ADDED)[0] == 451)
        second = status(config)["landing_pid"]
        assert second != first
        wait_until(lambda: not os.path.exists(f"/proc/{first}"))  # drained and reaped
        assert wait_until(lambda: landed(metrics_port) == 3)  # carried over, plus one

        # A crash: restarted on the same socket; the counters do not go backwards.
        assert isinstance(second, int)
        os.kill(second, signal.SIGKILL)
        wait_until(lambda: status(config)["landing_pid"] not in (second, 0))
        assert page(port, BLOCKED)[0] == 451
        assert wait_until(lambda: landed(metrics_port) == 4)
    finally:
        server.stop()
    assert server.proc.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
    with pytest.raises(OSError):
        page(port, BLOCKED)  # the landing process went with the server


def compile_index(config: Path) -> None:
    compiled = subprocess.run(
        [sys.executable, "-m", "resolver", "compile", "-c", str(config)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert compiled.returncode == 0, compiled.stderr


def test_blokir_landing_runs_on_its_own(tmp_path: Path, upstream: FakeUpstream) -> None:
    config, port, metrics_port = write_config(tmp_path, upstream.port)
    compile_index(config)
    server = ManagedProcess(
        "landing",
        [sys.executable, "-m", "resolver", "landing", "-c", str(config)],
        tmp_path / "landing.log",
        cwd=ROOT,
    )
    try:
        assert wait_until(lambda: page(port, BLOCKED))[0] == 451
        assert wait_until(lambda: landed(metrics_port) == 1)  # its own /metrics
        (tmp_path / "block.txt").write_text(f"{ADDED}\n")
        compile_index(config)  # a new index renamed over the old one, as a copy job would
        wait_until(lambda: page(port, ADDED)[0] == 451)
        assert page(port, BLOCKED)[0] == 200
    finally:
        server.stop()
    assert server.proc.returncode == 0, (tmp_path / "landing.log").read_text()[-2000:]
