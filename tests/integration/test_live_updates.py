"""Live list updates end to end: a real `blokir serve` whose list comes from an HTTP server on
loopback. The list changes, `blokir reload` applies it without a restart; every kind of bad
update (truncated download, garbage, a 90% shrink, HTTP 500, a timeout, an invalid config) is
refused while the old index keeps answering, and metrics and logs say why."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.dnsutil import free_port, names
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
LANDING = "192.0.2.10"
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
# 40 names that stay, plus the ones a test adds or removes: removing 4 is a 9% shrink.
STAYING = [f"stay{i}.example" for i in range(40)]


class ListServer:
    """Serves one list over HTTP with a programmable misbehaviour."""

    def __init__(self) -> None:
        self.body = b""
        self.mode = "ok"  # ok | truncated | status500 | slow
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.mode == "status500":
                    self.send_error(500, "upstream list server broke")
                    return
                if outer.mode == "slow":
                    time.sleep(2.0)
                declared = len(outer.body) + (5000 if outer.mode == "truncated" else 0)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                body = (
                    outer.body[: len(outer.body) // 2] if outer.mode == "truncated" else outer.body
                )
                with contextlib.suppress(OSError):  # the client may give up first
                    self.wfile.write(body)
                if outer.mode == "truncated":
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}/trustpositif.txt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LiveBlokir:
    def __init__(self, tmp: Path, upstream_port: int, url: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.metrics_port = free_port()
        self.upstream_port = upstream_port
        self.url = url
        self.config = tmp / "blokir.toml"
        self.write_config()
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, extra_list: str = "") -> None:
        self.config.write_text(
            f"""
[server]
listen = ["{LOOPBACK}:{self.port}"]
[upstream]
servers = ["{LOOPBACK}:{self.upstream_port}"]
timeout = 1.0
attempts = 1
[blocking]
landing_ipv4 = "{LANDING}"
index_path = "index.blkx"
[cache]
max_entries = 0
[metrics]
listen = "{LOOPBACK}:{self.metrics_port}"
[updates]
watch_interval = 0.3
refresh = 3600
download_timeout = 0.5
download_retries = 0
[[lists]]
name = "trustpositif"
path = "{self.url}"
category = "negative-content"
ede = "censored"
{extra_list}
"""
        )

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "resolver", "serve", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"blokir exited early:\n{self.log.read_text()}")
            try:
                if self.address(STAYING[0]) == LANDING:
                    return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        raise AssertionError("blokir did not answer within the start timeout")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def address(self, name: str) -> str | None:
        """The A address answered for a name, or the rcode's name when there is none."""
        reply = dns.query.udp(
            dns.message.make_query(name, "A"), LOOPBACK, port=self.port, timeout=2
        )
        for rrset in reply.answer:
            for rd in rrset:
                return str(rd.address)
        return dns.rcode.to_text(reply.rcode())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "resolver", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def reloads(self) -> dict[str, float]:
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            m.group(1): float(m.group(2))
            for m in re.finditer(r'^blokir_reloads_total\{result="(\w+)"\} (\S+)$', text, re.M)
        }

    def worker_pids(self) -> set[int]:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return {int(pid) for pid in children.split()}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        for name in ("added.example", "removed1.example", "still-free.example"):
            fake.add(name, "A", "198.51.100.7")
        yield fake


@pytest.fixture
def list_server() -> Iterator[ListServer]:
    server = ListServer()
    yield server
    server.close()


def test_url_list_updates_live_and_bad_updates_never_replace_it(
    tmp_path: Path, upstream: FakeUpstream, list_server: ListServer
) -> None:
    removed = [f"removed{i}.example" for i in range(1, 5)]
    list_server.body = names([*STAYING, *removed]).encode()
    server = LiveBlokir(tmp_path, upstream.port, list_server.url)
    server.start()
    try:
        supervisor, workers = server.proc.pid if server.proc else 0, server.worker_pids()
        assert server.address("removed1.example") == LANDING
        assert server.address("added.example") == "198.51.100.7"

        # A good update: new entries block, removed ones resolve, nothing restarts.
        list_server.body = names([*STAYING, "added.example"]).encode()
        done = server.cli("reload")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "applied" in done.stdout
        assert server.address("added.example") == LANDING
        assert server.address("removed1.example") == "198.51.100.7"
        assert server.proc is not None and server.proc.pid == supervisor
        assert server.worker_pids() == workers

        def refused(mode: str, body: bytes | None, result: str, reason: str) -> None:
            before = server.reloads()
            list_server.mode = mode
            if body is not None:
                list_server.body = body
            done = server.cli("reload")
            assert done.returncode == 1, (mode, done.stdout, done.stderr)
            assert result in done.stdout and reason in done.stdout, done.stdout
            # The old index keeps serving: the good update's answers are unchanged.
            assert server.address("added.example") == LANDING
            assert server.address("stay7.example") == LANDING
            assert server.address("removed1.example") == "198.51.100.7"
            after = server.reloads()
            assert after[result] == before[result] + 1, (before, after)
            list_server.mode = "ok"

        good = names([*STAYING, "added.example"]).encode()
        refused("truncated", good, "download_failed", "truncated")
        refused("status500", good, "download_failed", "http_500")
        refused("slow", good, "download_failed", "timeout")
        garbage = b"".join(
            b"<tr><td class='x'>%d</td><td>nothing here</td></tr>\n" % i for i in range(200)
        )
        refused("ok", garbage, "rejected_parse", "no entry from 200 lines")
        shrunk = names(STAYING[:4]).encode()  # 41 -> 4 names: a 90% shrink
        refused("ok", shrunk, "rejected_shrink", "shrank by 90.2%")

        # --force applies a shrink an operator means.
        done = server.cli("reload", "--force")
        assert done.returncode == 0, done.stdout
        assert server.address("stay7.example") == "NXDOMAIN"
        assert server.address("stay1.example") == LANDING

        # An invalid edited config is refused by the watcher; the running one stays.
        list_server.body = good
        before = server.reloads()
        text = server.config.read_text()
        server.config.write_text(text.replace("attempts = 1", "attempts = 1\nfrobnicate = 3"))
        deadline = time.monotonic() + 10
        while server.reloads()["invalid_config"] == before["invalid_config"]:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        assert "frobnicate" in server.log.read_text()
        assert server.address("stay1.example") == LANDING
        done = server.cli("reload")  # the CLI reads the config too, and says what is wrong
        assert done.returncode != 0 and "frobnicate" in done.stderr
        server.config.write_text(text)

        status = server.cli("status")
        assert status.returncode == 0, status.stderr
        assert "trustpositif" in status.stdout and list_server.url in status.stdout
        assert re.search(r"trustpositif\s+url\s+4\b", status.stdout), status.stdout
        # Upstream health and the cache, from the workers' counters (published every 0.5 s).
        upstream = f"upstream {LOOPBACK}:{server.upstream_port}: up, "
        assert upstream in status.stdout, status.stdout
        assert re.search(r"cache    \d+ entries", status.stdout), status.stdout
    finally:
        assert server.stop() == 0

    # A restart without the list server serves the last good copy, and says so.
    list_server.close()
    server.start()
    try:
        assert server.address("stay1.example") == LANDING
        assert "serving the last good copy" in server.log.read_text()
    finally:
        assert server.stop() == 0
    after_stop = server.cli("status")
    assert after_stop.returncode == 2 and "no blokir" in after_stop.stderr.lower()


def test_local_file_change_and_sighup_reload(tmp_path: Path, upstream: FakeUpstream) -> None:
    """A local list is watched; with the watch off, SIGHUP reloads it."""
    (tmp_path / "block.txt").write_text(names(STAYING))
    port = free_port()
    config = tmp_path / "blokir.toml"
    config.write_text(
        f"""
[server]
listen = ["{LOOPBACK}:{port}"]
[upstream]
servers = ["{LOOPBACK}:{upstream.port}"]
timeout = 1.0
[blocking]
landing_ipv4 = "{LANDING}"
index_path = "index.blkx"
[metrics]
enabled = false
[updates]
watch = false
[[lists]]
name = "local"
path = "block.txt"
"""
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "resolver", "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )

    def address(name: str) -> str | None:
        reply = dns.query.udp(dns.message.make_query(name, "A"), LOOPBACK, port=port, timeout=2)
        return str(reply.answer[0][0].address) if reply.answer else None

    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if address(STAYING[0]) == LANDING:
                    break
            except (dns.exception.Timeout, OSError):
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        (tmp_path / "block.txt").write_text(names([*STAYING, "added.example"]))
        time.sleep(1.0)
        assert address("added.example") == "198.51.100.7"  # watch is off: nothing happened
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while address("added.example") != LANDING:
            assert time.monotonic() < deadline, "SIGHUP did not reload the list"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
