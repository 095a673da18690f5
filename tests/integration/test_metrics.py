"""Metrics proven against a live blokir and a real Prometheus: promtool on a live scrape, exact
counters, every outcome exercised, every dashboard and alert expression returning data."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.integration.dnsutil import find_binary, free_port
from tests.integration.test_server import LOOPBACK, Blokir, _alive, _children
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "blokir.json"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
SERVER_EXTRA = 'allow = ["127.0.0.1/32"]\nratelimit = 40\nratelimit_burst = 40'


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the series of `name` that carry these labels, in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def settle(port: int, name: str, expected: float, **labels: str) -> float:
    """Workers publish every 0.5 s: poll until the value arrives (bounded)."""
    deadline = time.monotonic() + 5
    value = sample(scrape(port), name, **labels)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = sample(scrape(port), name, **labels)
    return value


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.add("www.allowed.example", "A", "198.51.100.1")
        fake.add("cname-target-blocked.example", "A", "203.0.113.66")
        fake.cname("alias.allowed.example", "cname-target-blocked.example")
        fake.program("silent.example", drop=True)
        yield fake


@pytest.fixture
def blokir(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Blokir]:
    server = Blokir(
        tmp_path, upstream.port, metrics_port=free_port(), server_extra=SERVER_EXTRA, timeout=0.5
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def raw_udp(port: int, data: bytes, source: str = LOOPBACK) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(1)
        sock.sendto(data, (LOOPBACK, port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def exercise_every_outcome(server: Blokir) -> None:
    server.ask("judi-contoh.example")  # blocked
    server.ask("alias.allowed.example")  # blocked_cname
    server.ask("www.allowed.example")  # allowed
    server.ask("www.allowed.example")  # cached
    server.ask("silent.example", timeout=3)  # servfail
    server.ask_tcp("pinjol-palsu.example")  # blocked over TCP
    good = dns.message.make_query("x.example", "A").to_wire()
    raw_udp(server.port, good, source="127.0.0.2")  # refused: outside [server] allow
    raw_udp(server.port, good[:4] + b"\x00\x02" + good[6:])  # formerr: QDCOUNT 2
    raw_udp(server.port, good[:2] + bytes([good[2] | 0x10]) + good[3:])  # notimp: opcode 2
    raw_udp(server.port, good[:2] + bytes([good[2] | 0x80]) + good[3:])  # dropped: QR=1
    for i in range(60):  # over the 40 query burst: ratelimited
        query = dns.message.make_query(f"r{i}.judi-contoh.example", "A")
        raw_udp(server.port, query.to_wire())


def test_counters_are_exact_and_promtool_accepts_a_live_scrape(blokir: Blokir) -> None:
    port = blokir.metrics_port
    assert port is not None
    time.sleep(0.7)  # the start-up probes' counts are published (every 0.5 s)
    before = sample(scrape(port), "blokir_blocked_total", list="trustpositif")
    before_a = sample(scrape(port), "blokir_queries_total", outcome="blocked", qtype="A")
    for i in range(17):
        blokir.ask(f"n{i}.judi-contoh.example")
    assert settle(port, "blokir_blocked_total", before + 17, list="trustpositif") == before + 17
    after_a = settle(port, "blokir_queries_total", before_a + 17, outcome="blocked", qtype="A")
    assert after_a == before_a + 17

    exercise_every_outcome(blokir)
    text = scrape(port)
    for outcome in (
        "blocked",
        "blocked_cname",
        "allowed",
        "cached",
        "servfail",
        "refused",
        "ratelimited",
        "formerr",
        "notimp",
        "dropped",
    ):
        assert sample(text, "blokir_queries_total", outcome=outcome) > 0 or settle(
            port, "blokir_queries_total", 1, outcome=outcome
        ), outcome
    assert sample(scrape(port), "blokir_queries_total", outcome="blocked", transport="tcp") == 1

    promtool = find_binary("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/install-test-deps installs prometheus)")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=scrape(port), capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", "promtool warned"

    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api/top", timeout=5) as reply:
        top = json.load(reply)["top"]
    assert top and top[0]["list"] == "trustpositif" and len(top) <= 5
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/readyz", timeout=5) as reply:
        assert reply.status == 200


def test_workers_sum_into_one_scrape_and_survive_a_worker_crash(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = Blokir(tmp_path, upstream.port, workers=2, metrics_port=free_port())
    server.start()
    try:
        assert server.proc is not None and server.metrics_port is not None
        port = server.metrics_port
        assert settle(port, "blokir_workers", 2) == 2
        time.sleep(0.7)
        before = sample(scrape(port), "blokir_blocked_total", list="trustpositif")
        for i in range(40):  # fresh sockets: SO_REUSEPORT spreads them over both workers
            server.ask(f"w{i}.judi-contoh.example")
        total = before + 40
        assert settle(port, "blokir_blocked_total", total, list="trustpositif") == total
        victim = _children(server.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        while _alive(victim):
            time.sleep(0.01)
        time.sleep(1.5)  # the supervisor retires the dead worker's last snapshot
        assert sample(scrape(port), "blokir_blocked_total", list="trustpositif") == total
        assert settle(port, "blokir_workers", 2) == 2  # its replacement reports
    finally:
        server.stop()


# -- a real Prometheus -----------------------------------------------------------------------


def _prometheus(tmp_path: Path, target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    binary = find_binary("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (scripts/install-test-deps installs it)")
    port = free_port()
    (tmp_path / "prom").mkdir()
    config = tmp_path / "prom" / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
scrape_configs:
  - job_name: blokir
    static_configs:
      - targets: ["{LOOPBACK}:{target_port}"]
"""
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'prom' / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prom" / "log").open("wb"),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("prometheus did not become ready")


def promql(port: int, expr: str) -> list[object]:
    url = f"http://{LOOPBACK}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    result: list[object] = body["data"]["result"]
    return result


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "30s").replace("$instance", ".*")
            found.append((panel["title"], expr))
    return found


_COMPARISON = re.compile(r"\s(==|!=|>=|<=|>|<)\s")


def with_bool(expr: str) -> str:
    """`a > 0.05` -> `a > bool 0.05`: both sides evaluated, a 0/1 result whenever they have
    data, so an alert expression is checked even while it does not fire."""
    depth = 0
    for i, char in enumerate(expr):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth == 0:
            match = _COMPARISON.match(expr, i)
            if match:
                return f"{expr[: match.end(1)]} bool{expr[match.end(1) :]}"
    raise AssertionError(f"no top-level comparison in alert expression {expr!r}")


def alert_expressions() -> list[tuple[str, str]]:
    import yaml  # type: ignore[import-untyped]

    rules = yaml.safe_load(ALERTS.read_text())
    return [
        (rule["alert"], with_bool(" ".join(rule["expr"].split())))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def test_every_dashboard_and_alert_expression_returns_data(blokir: Blokir, tmp_path: Path) -> None:
    assert blokir.metrics_port is not None
    prometheus, port = _prometheus(tmp_path, blokir.metrics_port)
    try:
        exercise_every_outcome(blokir)
        time.sleep(2.5)
        exercise_every_outcome(blokir)  # counters move between scrapes, so rate() has data
        deadline = time.monotonic() + 20
        expressions = dashboard_expressions() + alert_expressions()
        missing = expressions
        while missing and time.monotonic() < deadline:
            time.sleep(1)
            missing = [(title, expr) for title, expr in missing if not promql(port, expr)]
        assert not missing, f"panels or alerts with no data: {missing}"
        assert promql(port, 'up{job="blokir"} == 1')
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(10)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()


def test_rules_check_and_unit_tests_pass() -> None:
    promtool = find_binary("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/install-test-deps installs prometheus)")
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        capture_output=True,
        text=True,
        cwd=ALERTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
