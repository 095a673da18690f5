"""`blokir verify` against real resolvers on loopback: blokir itself, Unbound loading an RPZ export
of half the list, dnsmasq loading the hosts export, a control resolver with dead names, and the
Prometheus endpoint. Every resolver listens on 127.0.0.1 and forwards to `hash_upstream()` on
127.0.0.1; every run is bounded by the sample size, the timeouts and a subprocess timeout."""

from __future__ import annotations

import csv
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import xxhash

from resolver.compile import collect_names
from resolver.export import export
from resolver.lists.model import ListSpec
from tests.integration.dnsutil import (
    find_binary,
    free_port,
    require_binary,
    serving,
    unbound_config,
)
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
LANDING_V4 = "192.0.2.10"
LANDING_V6 = "2001:db8::10"
ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120  # seconds for one `blokir verify` run
FAST = ["--rate", "1000", "--concurrency", "40", "--timeout", "1", "--retries", "2"]


def hash_ipv4(name: str) -> str:
    h = xxhash.xxh3_64_intdigest(name.encode())
    return f"198.{18 + (h >> 16 & 1)}.{h >> 8 & 0xFF}.{h & 0xFF}"


def hash_ipv6(name: str) -> str:
    h = xxhash.xxh3_64_intdigest(name.encode())
    return f"2001:db8:{h >> 48 & 0xFFFF:x}:{h >> 32 & 0xFFFF:x}::{h & 0xFFFF:x}"


def hash_upstream() -> FakeUpstream:
    """An upstream that answers every name like the real Internet would, each with its own
    addresses: A in 198.18.0.0/15 (RFC 2544, benchmarking) and AAAA in 2001:db8::/32, both
    derived from a hash of the name, so no two sites share an address and nothing looks like a
    landing page. `kill` makes a name, and every name below it, NXDOMAIN."""
    upstream = FakeUpstream()
    upstream.program(answer=(), ttl=60)
    upstream.program(rdtype="A", answer=lambda name, _: [hash_ipv4(name)])
    upstream.program(rdtype="AAAA", answer=lambda name, _: [hash_ipv6(name)])
    return upstream


def kill(upstream: FakeUpstream, names: set[str]) -> None:
    for name in names:
        upstream.program(name, subtree=True, rcode=dns.rcode.NXDOMAIN, answer=())


def site_names(prefix: str, count: int, tld: str = "example") -> list[str]:
    return [f"{prefix}-{i:03d}.{tld}" for i in range(count)]


def write_list(path: Path, names: list[str]) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


def verify(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `blokir verify` as the CLI does, bounded in time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "resolver", "verify", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    return result


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@contextmanager
def blokir(tmp: Path, upstream: FakeUpstream, lists_toml: str) -> Iterator[str]:
    """`blokir serve` on a free loopback port with these `[[lists]]`, forwarding to `upstream`."""
    port = free_port()
    config = tmp / "blokir.toml"
    config.write_text(
        f"""
[server]
listen = ["{LOOPBACK}:{port}"]
[upstream]
servers = ["{upstream.label}"]
timeout = 1.0
attempts = 2
[blocking]
landing_ipv4 = "{LANDING_V4}"
landing_ipv6 = "{LANDING_V6}"
index_path = "index.blkx"
[metrics]
enabled = false
{lists_toml}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp / "blokir.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "resolver", "serve", "-c", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_answering(port, proc, log)
        yield f"{LOOPBACK}:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_answering(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    request = dns.message.make_query("localhost.", "A")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"blokir exited early:\n{log.read_text()}")
        try:
            dns.query.udp(request, LOOPBACK, port=port, timeout=0.3)
            return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.1)
    raise AssertionError(f"blokir did not answer within 30 s:\n{log.read_text()}")


# -- blokir itself -----------------------------------------------------------------------------


def test_blokir_enforces_its_lists_and_nothing_else(tmp_path: Path) -> None:
    gambling = write_list(tmp_path / "gambling.txt", site_names("judi", 120))
    phishing = write_list(tmp_path / "phishing.txt", site_names("phish", 60, "test"))
    unlisted = write_list(tmp_path / "unlisted.txt", site_names("berita", 100, "org"))
    lists = f"""
[[lists]]
name = "trustpositif"
path = "{gambling}"
category = "gambling"
ede = "censored"
[[lists]]
name = "phishing"
path = "{phishing}"
category = "phishing"
action = "nxdomain"
"""
    with hash_upstream() as upstream, blokir(tmp_path, upstream, lists) as target:
        config = str(tmp_path / "blokir.toml")
        report = tmp_path / "listed.json"
        probes = tmp_path / "listed.csv"
        common = ["--resolver", target, "--control", upstream.label, "--seed", "7", *FAST]
        run = verify(
            "-c", config, "--sample", "90", "--json", str(report), "--csv", str(probes), *common
        )
        assert run.returncode == 0, run.stderr
        data = load_json(report)
        figures = data["resolvers"][target]
        assert figures["enforcement_rate"] == 1.0
        assert figures["denominator"] == 90
        assert figures["ci_high"] == 1.0 and 0.95 < figures["ci_low"] < 0.97
        assert figures["subtree_rate"] == 1.0
        gambling_figures = figures["categories"]["gambling"]
        phishing_figures = figures["categories"]["phishing"]
        # Proportional allocation: 120 and 60 listed names share 90 as 60 and 30.
        assert gambling_figures["counts"]["landing"] == 60
        assert phishing_figures["counts"]["nxdomain"] == 30
        assert gambling_figures["enforcement_rate"] == phishing_figures["enforcement_rate"] == 1.0
        strata = {s["list"]: s["sampled"] for s in data["sample"]["strata"]}
        assert strata == {"trustpositif": 60, "phishing": 30}
        # The config's landing addresses are known, so nothing needs learning.
        assert LANDING_V4 in data["landing"]["given"]
        assert data["landing"]["learned"][target]["landing"] == {}
        rows = read_csv(probes)
        assert len(rows) == 90 * 3 * 2  # name, www., random label; A and AAAA each
        gambling_rows = [r for r in rows if r["category"] == "gambling"]
        assert all(r["class"] == "landing" and r["ede_code"] == "16" for r in gambling_rows)
        assert all(r["ede_text"].startswith("blocked by blokir") for r in gambling_rows)

        # Names that are not on any list: blokir forwards them, and none counts as blocked.
        report = tmp_path / "unlisted.json"
        run = verify("--list", str(unlisted), "--sample", "100", "--json", str(report), *common)
        assert run.returncode == 0, run.stderr
        figures = load_json(report)["resolvers"][target]
        assert figures["enforcement_rate"] == 0.0
        assert figures["counts"]["not_blocked"] == 100
        assert figures["ci_low"] == 0.0 and 0.03 < figures["ci_high"] < 0.04
        assert figures["subtree_rate"] == 0.0
        assert figures["not_blocked_differing_from_control"] == 0
        print(f"MEASURED blokir listed 1.0 [0.96, 1]; unlisted 0.0 [0, {figures['ci_high']:.3f}]")

        # The index blokir compiled names its lists; change one and the report says so.
        index = tmp_path / "index.blkx"
        assert index.exists()
        report = tmp_path / "index.json"
        run = verify("--index", str(index), "--sample", "30", "--json", str(report), *common)
        assert run.returncode == 0, run.stderr
        assert load_json(report)["resolvers"][target]["enforcement_rate"] == 1.0
        assert "warning" not in run.stdout
        with phishing.open("a") as f:
            f.write("added-after-build.test\n")
        run = verify("--index", str(index), "--all", "--json", str(report), *common)
        assert run.returncode == 0, run.stderr
        assert "warning: list 'phishing'" in run.stdout and "changed since the index" in run.stdout
        data = load_json(report)
        assert data["resolvers"][target]["denominator"] == 180  # not the name added since
        assert any("changed since" in w for w in data["warnings"])

        # Two resolvers side by side: blokir, and its upstream audited as if it were a resolver
        # that enforces nothing. Every answered name is a disagreement.
        report = tmp_path / "two.json"
        html = tmp_path / "two.html"
        run = verify("-c", config, "--resolver", target, "--resolver", upstream.label,
                     "--control", upstream.label, "--sample", "60", "--seed", "11", *FAST,
                     "--json", str(report), "--html", str(html))  # fmt: skip
        assert run.returncode == 0, run.stderr
        data = load_json(report)
        assert data["resolvers"][target]["enforcement_rate"] == 1.0
        assert data["resolvers"][upstream.label]["enforcement_rate"] == 0.0
        assert len(data["disagreements"]) == 60
        assert "disagreements between resolvers: 60 name(s)" in run.stdout
        assert html.read_text().count("<svg") >= 3
        # --fail-below: exit 1 when a resolver's rate is under the threshold.
        run = verify("-c", config, "--resolver", upstream.label, "--sample", "10",
                     "--fail-below", "0.9", *FAST)  # fmt: skip
        assert run.returncode == 1


# -- Unbound with an RPZ of half the list -------------------------------------------------------


def unbound_conf(tmp: Path, port: int, upstream: int, zonefile: Path) -> Path:
    body = f'rpz:\n    name: "rpz.blokir."\n    zonefile: "{zonefile}"'
    return unbound_config(tmp, port, upstream, body, nodefault="example.")


def test_unbound_rpz_of_half_the_list(tmp_path: Path) -> None:
    unbound = require_binary("unbound")
    names = site_names("slot", 400)
    full = write_list(tmp_path / "full.txt", names)
    half = write_list(tmp_path / "half.txt", names[::2])
    zonefile = tmp_path / "half.rpz"
    with zonefile.open("w", encoding="ascii") as out:
        export(
            collect_names([ListSpec("half", str(half), format="plain")]),
            "rpz",
            out,
            landing_ipv4=LANDING_V4,
            landing_ipv6=LANDING_V6,
        )
    port = free_port()
    html = tmp_path / "report.html"
    report = tmp_path / "report.json"
    with hash_upstream() as upstream:
        config = unbound_conf(tmp_path, port, upstream.port, zonefile)
        with serving([unbound, "-d", "-c", str(config)], port, tmp_path / "unbound.out"):
            target = f"{LOOPBACK}:{port}"
            run = verify(
                "--list", str(full), "--resolver", target, "--control", upstream.label,
                "--sample", "200", "--seed", "2024", "--json", str(report), "--html", str(html),
                "--csv", str(tmp_path / "report.csv"), *FAST,
            )  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = load_json(report)
    figures = data["resolvers"][target]
    low, rate, high = figures["ci_low"], figures["enforcement_rate"], figures["ci_high"]
    print(f"MEASURED unbound rpz half: rate {rate:.3f} CI [{low:.3f}, {high:.3f}]")
    assert figures["denominator"] == 200
    assert low <= 0.5 <= high, (low, rate, high)
    assert high - low < 0.15
    # The landing address was not given: it was learned from the answers.
    assert data["landing"]["given"] == []
    assert LANDING_V4 in data["landing"]["learned"][target]["landing"]
    assert figures["counts"]["landing"] + figures["counts"]["not_blocked"] == 200
    subtree = figures["subtree"]
    print(f"MEASURED unbound subtree: {subtree['rate']:.3f} [{subtree['ci_low']:.3f}, "
          f"{subtree['ci_high']:.3f}]")  # fmt: skip
    # RPZ `*.name` records cover the subtree, so it is enforced exactly where the name is.
    assert subtree["blocked"] == figures["blocked"]
    check_html_in_chromium(html, tmp_path)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-pings",
    "--dns-prefetch-disable",
    # Belt and braces: the page is a file, so any name lookup or proxy use would be a bug.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
]


def check_html_in_chromium(html: Path, tmp: Path) -> None:
    """Render the report in headless Chromium: a screenshot that is not blank, no console
    errors, and the page's script ran to the end (it marks the document when it has)."""
    chromium = find_binary("chromium") or find_binary("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/install-test-deps should install it)")
    shots = Path(os.environ.get("BLOKIR_VERIFY_SCREENSHOT_DIR", str(tmp)))
    shots.mkdir(parents=True, exist_ok=True)
    screenshot = shots / "verify-report.png"
    screenshot.unlink(missing_ok=True)
    url = html.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="blokir-chromium-") as profile:
        common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        shot = subprocess.run(
            [*common, "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}",
             "--window-size=1200,2000", "--hide-scrollbars", url],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        dom = subprocess.run(
            [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    logs = shot.stderr + dom.stderr
    console = [
        line for line in logs.splitlines() if "Uncaught" in line or "CONSOLE" in line.upper()
    ]
    assert not console, "\n".join(console)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.exists(), shot.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1200, 2000)
    assert len(png) > 50_000, f"screenshot of {len(png)} bytes: blank page?"
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert 'data-report-ready="yes"' in rendered, "the report's script did not run to the end"
    assert "Enforcement rate (95% Wilson CI)" in rendered
    assert len(re.findall(r"<svg", rendered)) >= 3
    assert LANDING_V4 in rendered  # the learned landing address is listed
    print(f"SCREENSHOT {screenshot} ({len(png)} bytes)")


# -- dnsmasq with the hosts export -------------------------------------------------------------


def test_dnsmasq_hosts_export_is_landing_blocking(tmp_path: Path) -> None:
    dnsmasq = require_binary("dnsmasq")
    names = site_names("judi", 80, "id")
    listed = write_list(tmp_path / "list.txt", names)
    hosts = tmp_path / "blokir.hosts"
    with hosts.open("w", encoding="ascii") as out:
        export(
            collect_names([ListSpec("list", str(listed), format="plain")]),
            "hosts",
            out,
            landing_ipv4=LANDING_V4,
            landing_ipv6=LANDING_V6,
        )
    port = free_port()
    with hash_upstream() as upstream:
        argv = [
            dnsmasq,
            "--no-daemon",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={hosts}",
            f"--server=127.0.0.1#{upstream.port}",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}",
            f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
            "--cache-size=0",
        ]
        with serving(argv, port, tmp_path / "dnsmasq.out"):
            target = f"{LOOPBACK}:{port}"
            learned_json = tmp_path / "learned.json"
            run = verify("--list", str(listed), "--resolver", target, "--control", upstream.label,
                         "--all", "--seed", "1", "--json", str(learned_json), *FAST)  # fmt: skip
            assert run.returncode == 0, run.stderr
            given_json = tmp_path / "given.json"
            run = verify("--list", str(listed), "--resolver", target, "--sample", "40",
                         "--landing", LANDING_V4, LANDING_V6, "--no-learn",
                         "--json", str(given_json), *FAST)  # fmt: skip
            assert run.returncode == 0, run.stderr
    learned = load_json(learned_json)
    figures = learned["resolvers"][target]
    assert figures["counts"]["landing"] == 80
    assert figures["enforcement_rate"] == 1.0
    assert learned["landing"]["learned"][target]["landing"] == {LANDING_V4: 80, LANDING_V6: 80}
    # A hosts file matches exact names only: www. and random labels resolve normally.
    assert figures["subtree"]["rate"] == 0.0
    assert figures["subtree"]["counts"]["not_blocked"] == 80
    given = load_json(given_json)["resolvers"][target]
    assert given["counts"]["landing"] == 40
    print(
        f"MEASURED dnsmasq hosts: rate {figures['enforcement_rate']} "
        f"[{figures['ci_low']:.3f}, {figures['ci_high']:.3f}], subtree 0.0 "
        f"[0, {figures['subtree']['ci_high']:.3f}]"
    )


# -- dead names --------------------------------------------------------------------------------


def test_dead_names_are_not_counted_as_blocked(tmp_path: Path) -> None:
    names = site_names("mati", 40, "net")
    dead = set(names[:10])
    plain_nx = write_list(tmp_path / "nx.txt", names)
    lists = f"""
[[lists]]
name = "nx"
path = "{plain_nx}"
category = "scam"
action = "nxdomain"
ede = "none"
"""
    with hash_upstream() as upstream, blokir(tmp_path, upstream, lists) as target:
        kill(upstream, dead)
        with_control = tmp_path / "control.json"
        run = verify("-c", str(tmp_path / "blokir.toml"), "--resolver", target, "--control",
                     upstream.label, "--all", "--json", str(with_control),
                     "--csv", str(tmp_path / "control.csv"), *FAST)  # fmt: skip
        assert run.returncode == 0, run.stderr
        without_control = tmp_path / "alone.json"
        run = verify("-c", str(tmp_path / "blokir.toml"), "--resolver", target, "--all",
                     "--json", str(without_control), *FAST)  # fmt: skip
        assert run.returncode == 0, run.stderr
    figures = load_json(with_control)["resolvers"][target]
    assert figures["counts"]["dead"] == 10
    assert figures["counts"]["nxdomain"] == 30
    assert figures["denominator"] == 30 and figures["enforcement_rate"] == 1.0
    rows = read_csv(tmp_path / "control.csv")
    dead_rows = [r for r in rows if r["name"] in dead]
    assert len(dead_rows) == 10 * 3 * 2 and all(r["class"] == "dead" for r in dead_rows)
    # Without a control an NXDOMAIN cannot be told from a dead name: every one counts.
    alone = load_json(without_control)["resolvers"][target]
    assert alone["counts"]["nxdomain"] == 40 and alone["denominator"] == 40
    print(f"MEASURED dead: with control 10 dead, rate 1.0 over 30 [{figures['ci_low']:.3f}, 1]")


# -- Prometheus endpoint -----------------------------------------------------------------------


def test_serve_metrics(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    listed = write_list(tmp_path / "list.txt", site_names("judi", 30))
    lists = f"""
[[lists]]
name = "trustpositif"
path = "{listed}"
category = "gambling"
"""
    metrics_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with hash_upstream() as upstream, blokir(tmp_path, upstream, lists) as target:
        argv = [
            sys.executable, "-m", "resolver", "verify", "-c", str(tmp_path / "blokir.toml"),
            "--resolver", target, "--resolver", upstream.label, "--control", upstream.label,
            "--sample", "20", "--seed", "3", "--serve-metrics", f"{LOOPBACK}:{metrics_port}",
            "--interval", "1", "--runs", "30", *FAST,
        ]  # fmt: skip
        log = tmp_path / "verify.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            text = _scrape_after_first_run(metrics_port, proc, log)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        assert proc.returncode == 0, log.read_text()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("blokir_verify_enforcement_ratio", resolver=target, category="all") == 1.0
    assert value("blokir_verify_enforcement_ratio", resolver=target, category="gambling") == 1.0
    assert value("blokir_verify_ci_high", resolver=target, category="all") == 1.0
    assert 0.8 < value("blokir_verify_ci_low", resolver=target, category="all") < 0.9
    assert value("blokir_verify_enforcement_ratio", resolver=upstream.label, category="all") == 0
    assert value("blokir_verify_ci_low", resolver=upstream.label, category="all") == 0.0
    assert value("blokir_verify_probes_total", resolver=target, **{"class": "landing"}) >= 120
    assert value("blokir_verify_probes_total", resolver=upstream.label, **{"class": "not_blocked"})
    stamp = value("blokir_verify_last_run_timestamp_seconds")
    assert time.time() - 120 < stamp <= time.time()


def _scrape_after_first_run(port: int, proc: subprocess.Popen[bytes], log: Path) -> str:
    """Poll /metrics (bounded) until a run has finished, wait one interval, scrape once more."""
    deadline = time.monotonic() + 60
    url = f"http://{LOOPBACK}:{port}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"blokir verify exited early:\n{log.read_text()}")
        try:
            with opener.open(url, timeout=2) as reply:
                text: str = reply.read().decode()
            if "blokir_verify_last_run_timestamp_seconds " in text:
                time.sleep(1.0)
                with opener.open(url, timeout=2) as reply:
                    text = reply.read().decode()
                return text
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no finished run within 60 s:\n{log.read_text()}")
