"""Access control and rate-limit actions against a real `blokir serve` (issue 6 items 2, 3).

Only loopback may be used, so "a client outside the allow list" is 127.0.0.1 with
allow = ["127.0.0.2/32"], and the allowed client sends from 127.0.0.2. Counts are read from
/metrics, so the test proves both the answers and that they were counted."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.dnsutil import free_port
from tests.integration.test_metrics import sample, scrape, settle
from tests.integration.test_server import BLOCKED, LANDING_V4, LOOPBACK, Blokir
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

ALLOWED_SOURCE = "127.0.0.2"


class BlokirFrom(Blokir):
    """A Blokir whose own probes (start-up included) come from `source`."""

    source = LOOPBACK

    def ask(
        self, name: str, rdtype: str = "A", timeout: float = 3.0, **kw: object
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
        return dns.query.udp(query, LOOPBACK, port=self.port, timeout=timeout, source=self.source)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.add("www.allowed.example", "A", "198.51.100.1")
        yield fake


def start(tmp: Path, upstream: FakeUpstream, extra: str) -> BlokirFrom:
    server = BlokirFrom(tmp, upstream.port, metrics_port=free_port(), server_extra=extra)
    server.source = ALLOWED_SOURCE
    server.start()
    return server


def udp(port: int, data: bytes, source: str = LOOPBACK, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(data, (LOOPBACK, port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def test_client_outside_allow_is_refused_and_counted(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    server = start(tmp_path, upstream, f'allow = ["{ALLOWED_SOURCE}/32"]')
    try:
        assert server.metrics_port is not None
        time.sleep(0.7)
        before = sample(scrape(server.metrics_port), "blokir_queries_total", outcome="refused")
        for name in (BLOCKED[0], "www.allowed.example"):
            query = dns.message.make_query(name, "A")
            raw = udp(server.port, query.to_wire(), source=LOOPBACK)
            assert raw is not None
            reply = dns.message.from_wire(raw)
            assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
            tcp = dns.query.tcp(query, LOOPBACK, port=server.port, timeout=3, source=LOOPBACK)
            assert tcp.rcode() == dns.rcode.REFUSED
        assert upstream.seen("www.allowed.example") == 0  # refused clients never cost upstream
        allowed = server.ask("www.allowed.example")  # from 127.0.0.2
        assert [rd.address for rd in allowed.answer[0]] == ["198.51.100.1"]
        assert [rd.address for rd in server.ask(BLOCKED[0]).answer[0]] == [LANDING_V4]
        after = settle(server.metrics_port, "blokir_queries_total", before + 4, outcome="refused")
        assert after == before + 4
    finally:
        server.stop()


def over_limit(server: Blokir, count: int) -> list[dns.message.Message | None]:
    """`count` queries as fast as possible from 127.0.0.1, answers matched by ID."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        for i in range(count):
            query = dns.message.make_query(f"r{i}.{BLOCKED[0]}", "A")
            query.id = i + 1
            sock.sendto(query.to_wire(), (LOOPBACK, server.port))
        replies: dict[int, dns.message.Message] = {}
        sock.settimeout(0.5)
        while len(replies) < count:  # bounded: ends at the first 0.5 s of silence
            try:
                message = dns.message.from_wire(sock.recv(4096))
            except TimeoutError:
                break
            replies[message.id] = message
    return [replies.get(i + 1) for i in range(count)]


@pytest.mark.parametrize("action", ["refuse", "drop", "slip"])
def test_rate_limit_actions(tmp_path: Path, upstream: FakeUpstream, action: str) -> None:
    # The limit applies to 127.0.0.0/24, the start-up probes (127.0.0.2) included.
    extra = f'ratelimit = 5\nratelimit_burst = 20\nratelimit_action = "{action}"'
    server = start(tmp_path, upstream, extra)
    try:
        assert server.metrics_port is not None
        time.sleep(1.5)  # the bucket refills after the start-up probes
        before = sample(scrape(server.metrics_port), "blokir_queries_total", outcome="ratelimited")
        replies = over_limit(server, 60)
        answered = [r for r in replies if r is not None and r.answer]
        assert 15 <= len(answered) <= 30, len(answered)  # the burst, plus a little refill
        limited = [r for r in replies if r is None or not r.answer]
        if action == "refuse":
            assert all(r is not None and r.rcode() == dns.rcode.REFUSED for r in limited)
        elif action == "drop":
            assert all(r is None for r in limited)
        else:
            for reply in limited:
                assert reply is not None and reply.flags & dns.flags.TC
                assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
                assert str(reply.question[0].name).startswith("r")
            # The client's TCP retry is answered although UDP is still over the limit.
            tcp = dns.query.tcp(
                dns.message.make_query(BLOCKED[0], "A"), LOOPBACK, port=server.port, timeout=3
            )
            assert [rd.address for rd in tcp.answer[0]] == [LANDING_V4]
        expected = before + len(limited)
        assert (
            settle(server.metrics_port, "blokir_queries_total", expected, outcome="ratelimited")
            == expected
        )
        time.sleep(1.0)
        assert server.ask(BLOCKED[0]).answer  # refilled: answered again
    finally:
        server.stop()
