"""The browser proof's inside: run in a fresh network and mount namespace (test_landing_browser
starts it with `unshare`), where this process may bind port 53 and 80 on loopback and make
/etc/resolv.conf name blokir, so Chromium's own DNS lookups go to blokir and nowhere else.

    python -m tests.integration.browser_namespace OUTDIR

Inside: loopback up; NSD as blokir's upstream with a zone for the allowed name; a plain web
server for the allowed name on 127.0.0.81:80; `blokir serve` on 127.0.0.1:53 with its landing
page on 127.0.0.80:80 (the landing_ipv4 its blocked answers carry); headless Chromium opening a
blocked and an allowed name. OUTDIR gets each page's rendered DOM, a screenshot of the block
page, and results.json with blokir's counters before and after the browser ran.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.processes import Deadline, ManagedProcess, find_binary
from tests.support.servers import (
    metric_sum,
    scrape_metrics,
    start_blokir,
    start_nsd,
    wait_for_answer,
)

BLOCKED = "judi-contoh.example"
ALLOWED = "www.allowed.example"
LANDING = "127.0.0.80"
SITE = "127.0.0.81"
METRICS_PORT = 9153
CHROMIUM_TIMEOUT = 60.0
ALLOWED_TEXT = "The allowed site itself"


def network_up(work: Path) -> None:
    """Loopback up, and /etc/resolv.conf replaced (in this mount namespace only) by one that
    names blokir. A dummy interface with a default route keeps Chromium from deciding it is
    offline (it treats a host with only loopback as disconnected)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with contextlib.suppress(subprocess.CalledProcessError):
        subprocess.run(["ip", "link", "add", "uplink0", "type", "dummy"], check=True)
        subprocess.run(["ip", "addr", "add", "192.0.2.2/24", "dev", "uplink0"], check=True)
        subprocess.run(["ip", "link", "set", "uplink0", "up"], check=True)
        subprocess.run(["ip", "route", "add", "default", "via", "192.0.2.1"], check=True)
    resolv = work / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)
    hosts = work / "hosts"  # nothing for the test names: every answer comes from DNS
    hosts.write_text("127.0.0.1 localhost\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


def serve_site(root: Path) -> http.server.ThreadingHTTPServer:
    (root / "index.html").write_text(
        f"<!doctype html><title>allowed</title><h1 id=site>{ALLOWED_TEXT}</h1>\n"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((SITE, 80), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def blokir_config(work: Path, upstream_port: int) -> Path:
    (work / "block.txt").write_text(f"{BLOCKED}\n")
    config = work / "blokir.toml"
    config.write_text(
        f"""
[server]
listen = ["127.0.0.1:53"]
[upstream]
servers = ["127.0.0.1:{upstream_port}"]
timeout = 1.0
attempts = 1
[blocking]
landing_ipv4 = "{LANDING}"
index_path = "index.blkx"
organisation = "Contoh ISP"
contact = "mailto:abuse@isp.example"
justification = "Peraturan Menteri Kominfo Nomor 5 Tahun 2020"
[metrics]
listen = "127.0.0.1:{METRICS_PORT}"
[landing]
listen = ["{LANDING}:80"]
appeal_url = "https://isp.example/appeal"
[[lists]]
name = "trustpositif"
path = "block.txt"
category = "gambling"
ede = "censored"
"""
    )
    return config


def chromium(binary: str, work: Path, url: str, *extra: str) -> str:
    """The rendered DOM of `url` (or what `extra` asks for) from a fresh headless Chromium."""
    profile = work / f"profile-{time.monotonic_ns()}"
    argv = [
        binary,
        "--headless",
        "--no-sandbox",  # root in a namespace: Chromium's sandbox wants its own
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-features=DnsOverHttps",
        f"--user-data-dir={profile}",
        "--window-size=1000,760",
        *extra,
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT)
    (work / "chromium.log").open("a").write(f"$ {' '.join(argv)}\n{done.stderr[-4000:]}\n")
    return done.stdout


def fetch(url: str) -> dict[str, object]:
    """What the landing server answered, through the system resolver (so through blokir)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return {"status": reply.status, "link": reply.headers.get("Link")}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "link": error.headers.get("Link")}


def counters(text: str) -> dict[str, float]:
    return {
        "blocked_a": metric_sum(text, "blokir_queries_total", outcome="blocked", qtype="A"),
        "allowed": metric_sum(text, "blokir_queries_total", outcome="allowed"),
        "landing_gambling": metric_sum(
            text, "blokir_landing_requests_total", category="gambling", scheme="http"
        ),
    }


def main(out: Path) -> int:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    browser = find_binary("chromium") or find_binary("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not installed")
    network_up(work)
    deadline = Deadline(240)
    zone = work / "allowed.example.zone"
    zone.write_text(
        "$ORIGIN allowed.example.\n$TTL 60\n"
        "@ IN SOA ns.allowed.example. host.allowed.example. 1 60 60 600 60\n"
        "@ IN NS ns.allowed.example.\nns IN A 127.0.0.1\n"
        f"www IN A {SITE}\n"
    )
    nsd, nsd_port = start_nsd(work, "allowed.example", zone, ALLOWED, deadline)
    site = serve_site(work)
    blokir: ManagedProcess | None = None
    try:
        blokir = start_blokir(blokir_config(work, nsd_port), "blokir", work / "blokir.log")
        wait_for_answer(blokir, 53, BLOCKED, time.monotonic() + 60, want_address=LANDING)
        time.sleep(1.0)  # the start-up probe's counts are published
        before = counters(scrape_metrics(METRICS_PORT, 5))
        blocked_dom = chromium(browser, work, f"http://{BLOCKED}/", "--dump-dom")
        chromium(browser, work, f"http://{BLOCKED}/", f"--screenshot={out / 'blocked.png'}")
        allowed_dom = chromium(browser, work, f"http://{ALLOWED}/", "--dump-dom")
        time.sleep(1.0)
        after = counters(scrape_metrics(METRICS_PORT, 5))  # the browser's queries alone
        http = {"blocked": fetch(f"http://{BLOCKED}/"), "allowed": fetch(f"http://{ALLOWED}/")}
        (out / "blocked.html").write_text(blocked_dom)
        (out / "allowed.html").write_text(allowed_dom)
        results = {"before": before, "after": after, "http": http}
        (out / "results.json").write_text(json.dumps(results))
    finally:
        if blokir is not None:
            blokir.stop()
        site.shutdown()
        nsd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
