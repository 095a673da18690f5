"""DoT and DoH end to end: a real `blokir serve` with a test CA, asked by the clients people
use (kdig +tls and +https, dnspython's DoT and DoH clients), per-group answers for clients
bound to 127.0.0.2 and 127.0.0.3, RFC 8467 padding on the wire, DoT upstreams, metrics labels,
and a certificate renewed by SIGHUP without dropping an open connection."""

from __future__ import annotations

import contextlib
import http.server
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.dnsutil import UPSTREAM_IPV4 as UPSTREAM
from tests.integration.dnsutil import answer_everything
from tests.support.processes import LOOPBACK, ManagedProcess, free_port
from tests.support.servers import addresses, metric_sum, scrape_metrics, start_blokir
from tests.support.servers import wait_for_answer as wait_until_answers
from tests.support.tlsca import SERVER_NAME, TestCa, make_ca
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

LANDING = "192.0.2.10"
NATIONAL = "judi-contoh.example"  # blocked for everyone
FAMILY = "dewasa-contoh.example"  # blocked for the family group (and the default group)
PLAIN_CLIENT, FAMILY_CLIENT = "127.0.0.2", "127.0.0.3"


@dataclass
class Served:
    ca: TestCa
    process: ManagedProcess
    udp: int
    dot: int
    doh: int
    metrics: int
    config: Path

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.doh}/dns-query"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.ca))


def write_config(tmp: Path, ca: TestCa, ports: dict[str, int], upstream: str, extra: str) -> Path:
    (tmp / "national.txt").write_text(NATIONAL + "\n")
    (tmp / "family.txt").write_text(FAMILY + "\n")
    config = tmp / "blokir.toml"
    config.write_text(f"""
[server]
listen = ["{LOOPBACK}:{ports["udp"]}"]
tls_listen = ["{LOOPBACK}:{ports["dot"]}"]
https_listen = ["{LOOPBACK}:{ports["doh"]}"]
certificate = "{ca.certificate}"
key = "{ca.key}"
tcp_idle_timeout = 3.0
[upstream]
servers = [{upstream}]
timeout = 1.0
attempts = 1
{extra}
[blocking]
landing_ipv4 = "{LANDING}"
index_path = "index.blkx"
[metrics]
enabled = true
listen = "{LOOPBACK}:{ports["metrics"]}"
[[lists]]
name = "national"
path = "national.txt"
[[lists]]
name = "family"
path = "family.txt"
[[groups]]
name = "plain"
clients = ["{PLAIN_CLIENT}/32"]
lists = ["national"]
[[groups]]
name = "family"
clients = ["{FAMILY_CLIENT}/32"]
lists = ["national", "family"]
""")
    return config


def serve(tmp: Path, upstream: str, extra: str = "", landing: str = LANDING) -> Served:
    ca = make_ca(tmp)
    ports = {key: free_port() for key in ("udp", "dot", "doh", "metrics")}
    config = write_config(tmp, ca, ports, upstream, extra)
    config.write_text(config.read_text().replace(f'"{LANDING}"', f'"{landing}"'))
    process = start_blokir(config, "blokir")
    try:
        wait_until_answers(process, ports["udp"], NATIONAL, time.monotonic() + 60, landing)
    except BaseException:
        process.stop()
        raise
    return Served(ca, process, ports["udp"], ports["dot"], ports["doh"], ports["metrics"], config)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with FakeUpstream() as upstream:
        answer_everything(upstream)
        server = serve(tmp_path, f'"{LOOPBACK}:{upstream.port}"')
        try:
            yield server
        finally:
            server.process.stop()


def kdig(*args: str) -> str:
    binary = shutil.which("kdig")
    if binary is None:
        pytest.skip("kdig (knot-dnsutils) is not installed")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def _a(text: str) -> list[str]:
    return re.findall(r"^\S+\s+\d+\s+IN\s+A\s+(\S+)$", text, re.MULTILINE)


def test_kdig_over_tls_and_https(served: Served) -> None:
    tls = ["+tls-ca=" + str(served.ca.ca), "+tls-hostname=" + SERVER_NAME]
    out = kdig(f"@{LOOPBACK}", "-p", str(served.dot), *tls, NATIONAL, "A")
    assert _a(out) == [LANDING], out
    assert "TLS session" in out  # kdig reports the verified session
    out = kdig(f"@{LOOPBACK}", "-p", str(served.dot), *tls, "www.allowed.example", "A")
    assert _a(out) == [UPSTREAM], out
    for method in ("+https", "+https-get"):
        out = kdig(f"@{LOOPBACK}", "-p", str(served.doh), method, *tls, NATIONAL, "A")
        assert _a(out) == [LANDING], out
        assert "HTTP/2" in out or "HTTPS" in out, out
    # The certificate is checked: another name fails the handshake.
    out = kdig(f"@{LOOPBACK}", "-p", str(served.dot), "+tls-ca=" + str(served.ca.ca),
               "+tls-hostname=wrong.example", NATIONAL)  # fmt: skip
    assert not _a(out)


def test_dnspython_dot_and_doh(served: Served) -> None:
    query = dns.message.make_query(NATIONAL, "A")
    reply = dns.query.tls(query, LOOPBACK, port=served.dot, ssl_context=served.context(),
                          server_hostname=SERVER_NAME, timeout=5)  # fmt: skip
    assert addresses(reply) == [LANDING]
    versions = (dns.query.HTTPVersion.H2, dns.query.HTTPVersion.H1)
    for post, version in ((True, versions[0]), (False, versions[0]), (True, versions[1])):
        query = dns.message.make_query("www.allowed.example", "A")
        reply = dns.query.https(
            query, served.url, post=post, verify=served.context(), timeout=5,
            http_version=version,
        )  # fmt: skip
        assert addresses(reply) == [UPSTREAM]
    query = dns.message.make_query(NATIONAL, "A")
    reply = dns.query.https(query, served.url, verify=served.context(), http_version=versions[0])
    assert addresses(reply) == [LANDING]
    text = scrape_metrics(served.metrics, 5)
    deadline = time.monotonic() + 5
    while metric_sum(text, "blokir_queries_total", transport="https") < 4:
        assert time.monotonic() < deadline, "DoH queries not counted under transport=https"
        time.sleep(0.2)
        text = scrape_metrics(served.metrics, 5)
    assert metric_sum(text, "blokir_queries_total", transport="tls") >= 1


def _dot_exchange(sock: ssl.SSLSocket, wire: bytes) -> bytes:
    sock.sendall(len(wire).to_bytes(2, "big") + wire)
    size = int.from_bytes(_read(sock, 2), "big")
    return _read(sock, size)


def _read(sock: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def _dot_socket(served: Served, source: str = LOOPBACK) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, served.dot), timeout=5, source_address=(source, 0))
    return served.context().wrap_socket(raw, server_hostname=SERVER_NAME)


def test_encrypted_answers_are_padded(served: Served) -> None:
    with _dot_socket(served) as sock:
        for name in (NATIONAL, "www.allowed.example"):
            wire = _dot_exchange(sock, dns.message.make_query(name, "A", use_edns=0).to_wire())
            assert len(wire) % 468 == 0
            options = dns.message.from_wire(wire).options
            assert [o.otype for o in options][-1:] == [dns.edns.OptionType.PADDING]
        plain = _dot_exchange(sock, dns.message.make_query(NATIONAL, "A").to_wire())
        assert len(plain) % 468 != 0  # no EDNS in the query: nothing to pad with
    # Port 53 stays unpadded (RFC 8467 pads encrypted transports).
    udp = dns.query.udp(
        dns.message.make_query(NATIONAL, "A", use_edns=0), LOOPBACK, port=served.udp, timeout=3
    )
    assert dns.edns.OptionType.PADDING not in [o.otype for o in udp.options]


def test_groups_get_their_own_answers(served: Served) -> None:
    def over_udp(name: str, source: str) -> list[str]:
        query = dns.message.make_query(name, "A")
        return addresses(dns.query.udp(query, LOOPBACK, port=served.udp, timeout=3, source=source))

    def over_tls(name: str, source: str) -> list[str]:
        with _dot_socket(served, source) as sock:
            wire = _dot_exchange(sock, dns.message.make_query(name, "A").to_wire())
        return addresses(dns.message.from_wire(wire))

    for ask in (over_udp, over_tls):
        for _ in range(3):  # repeats go through the answer memo: it must keep groups apart
            assert ask(FAMILY, FAMILY_CLIENT) == [LANDING]
            assert ask(FAMILY, PLAIN_CLIENT) == [UPSTREAM]
            assert ask(FAMILY, LOOPBACK) == [LANDING]  # the default group: every list
            assert ask(NATIONAL, PLAIN_CLIENT) == [LANDING]
    text = scrape_metrics(served.metrics, 5)
    deadline = time.monotonic() + 5
    while metric_sum(text, "blokir_blocked_total", group="family", list="family") < 6:
        assert time.monotonic() < deadline, "blocks not counted by group"
        time.sleep(0.2)
        text = scrape_metrics(served.metrics, 5)
    assert metric_sum(text, "blokir_blocked_total", group="plain", list="family") == 0
    assert metric_sum(text, "blokir_blocked_total", group="plain", list="national") == 6


def test_group_cname_check_on_shared_cache(tmp_path: Path) -> None:
    """An alias to the family list's name, cached once: blocked for the family group only."""
    with FakeUpstream() as upstream:
        upstream.cname("alias.allowed.example", FAMILY)
        upstream.add(FAMILY, "A", UPSTREAM)
        server = serve(tmp_path, f'"{LOOPBACK}:{upstream.port}"')
        try:

            def ask(source: str) -> list[str]:
                query = dns.message.make_query("alias.allowed.example", "A")
                reply = dns.query.udp(query, LOOPBACK, port=server.udp, timeout=3, source=source)
                return addresses(reply)

            assert ask(PLAIN_CLIENT) != [LANDING]
            assert ask(FAMILY_CLIENT) == [LANDING]
            assert ask(PLAIN_CLIENT) != [LANDING]
            assert ask(LOOPBACK) == [LANDING]
        finally:
            server.process.stop()


def test_certificate_reload_keeps_open_connections(served: Served, tmp_path: Path) -> None:
    def fingerprint(sock: ssl.SSLSocket) -> bytes:
        cert = sock.getpeercert(binary_form=True)
        assert cert is not None
        return cert

    with _dot_socket(served) as old:
        before = fingerprint(old)
        renewed = make_ca(served.ca.certificate.parent, name="renewed")
        os.replace(renewed.certificate, served.ca.certificate)
        os.replace(renewed.key, served.ca.key)
        served.process.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            with _dot_socket(served) as new:
                if fingerprint(new) != before:
                    break
            assert time.monotonic() < deadline, "the renewed certificate was not served"
            time.sleep(0.2)
        # The connection made before the reload still answers.
        wire = _dot_exchange(old, dns.message.make_query(NATIONAL, "A").to_wire())
        assert addresses(dns.message.from_wire(wire)) == [LANDING]


def test_forwarding_to_a_dot_upstream(tmp_path: Path) -> None:
    """blokir as the DoT upstream of another blokir: tls://, verified by name with tls_ca."""
    with FakeUpstream() as upstream:
        answer_everything(upstream)
        first = serve(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path,
                      f'"{LOOPBACK}:{upstream.port}"')  # fmt: skip
        try:
            second_dir = tmp_path / "b"
            second_dir.mkdir()
            tls = f'"tls://{LOOPBACK}:{first.dot}#{SERVER_NAME}"'
            second = serve(second_dir, tls, f'tls_ca = "{first.ca.ca}"')
            try:
                reply = dns.query.udp(
                    dns.message.make_query("www.via-tls.example", "A"),
                    LOOPBACK,
                    port=second.udp,
                    timeout=3,
                )
                assert addresses(reply) == [UPSTREAM]
                text = scrape_metrics(first.metrics, 5)
                deadline = time.monotonic() + 5
                while metric_sum(text, "blokir_queries_total", transport="tls") < 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                    text = scrape_metrics(first.metrics, 5)
                # One persistent connection: many queries, one handshake.
                for i in range(20):
                    dns.query.udp(dns.message.make_query(f"n{i}.example", "A"), LOOPBACK,
                                  port=second.udp, timeout=3)  # fmt: skip
                time.sleep(0.7)
                text = scrape_metrics(first.metrics, 5)
                assert metric_sum(text, "blokir_encrypted_connections", transport="tls") == 1
            finally:
                second.process.stop()
        finally:
            first.process.stop()


class _LandingPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>blokir landing page for " + self.headers.get("Host", "").encode()
        body += b"</body></html>"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_chromium_resolves_a_blocked_name_over_doh(tmp_path: Path) -> None:
    """Headless Chromium with blokir as its secure DNS (DoH, secure mode: no fallback to the
    system resolver) opens a blocked name and gets the landing page, served on loopback."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed")
    page = http.server.ThreadingHTTPServer((LOOPBACK, 0), _LandingPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    with FakeUpstream() as upstream:
        answer_everything(upstream)
        server = serve(tmp_path, f'"{LOOPBACK}:{upstream.port}"', landing=LOOPBACK)
        try:
            profile = tmp_path / "chromium"
            profile.mkdir()
            # Chromium's secure DNS settings live in the profile's Local State (the settings
            # page and the DnsOverHttpsMode/Templates policies write the same preferences).
            template = f"{server.url}{{?dns}}"
            state = {"dns_over_https": {"mode": "secure", "templates": template}}
            (profile / "Local State").write_text(json.dumps(state))
            argv = [
                chromium, "--headless", "--no-sandbox", "--disable-gpu",
                f"--user-data-dir={profile}", "--enable-features=AsyncDns",
                # The test CA is trusted for this run only: Chromium's DoH client did not take
                # --ignore-certificate-errors-spki-list alone here (net_error -202).
                f"--ignore-certificate-errors-spki-list={server.ca.spki_sha256()}",
                "--ignore-certificate-errors",
                "--dump-dom", f"http://{NATIONAL}:{page.server_address[1]}/",
            ]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
            assert f"blokir landing page for {NATIONAL}" in done.stdout, done.stderr[-3000:]
            text = scrape_metrics(server.metrics, 5)
            deadline = time.monotonic() + 5
            while (
                metric_sum(text, "blokir_queries_total", transport="https", outcome="blocked") < 1
            ):
                assert time.monotonic() < deadline, "Chromium's lookup did not come over DoH"
                time.sleep(0.2)
                text = scrape_metrics(server.metrics, 5)
        finally:
            server.process.stop()
            page.shutdown()


def test_idle_dot_connection_is_closed(served: Served) -> None:
    """tcp_idle_timeout (3 s in this config) holds for DoT as for TCP: the shared loop."""
    with _dot_socket(served) as sock:
        wire = _dot_exchange(sock, dns.message.make_query(NATIONAL, "A").to_wire())
        assert addresses(dns.message.from_wire(wire)) == [LANDING]
        started = time.monotonic()
        sock.settimeout(8)
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # a reset counts as closed
            assert sock.recv(1) == b""
        assert 2.5 < time.monotonic() - started < 6
