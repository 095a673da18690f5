"""EDNS options that belong to one hop stay on it: a client's COOKIE, ECS, NSID request, TCP
keepalive and padding are not forwarded upstream, and an upstream's answers to such options are
not cached and handed to other clients.

Why it matters: the cache serves one answer to many clients. An upstream that supports cookies
answers a forwarded COOKIE with the first client's cookie in it; served from the cache to a second
client, the client cookie does not match, and RFC 7873 5.3 tells that client to discard the
answer (dig prints "Client COOKIE mismatch"; a cookie-aware resolver drops it). A forwarded ECS
gets an answer tailored to the first client's subnet, and its ECS option names that subnet to
everyone after (RFC 7871 11.3, privacy). The upstream here answers every option it gets, as
cookie-aware and non-compliant servers do (tests/support/upstream.py `echo_options`)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import pytest

from tests.integration.test_server import LOOPBACK, Blokir
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

COOKIE, ECS, NSID, KEEPALIVE, PADDING = 10, 8, 3, 11, 12
UNKNOWN = 65001  # a local/experimental option code (RFC 6891 9): forwarded as it came


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.program(echo_options=True)
        fake.add("shared.example", "A", "198.51.100.7")
        fake.add("tcp.example", "A", "198.51.100.8")
        fake.add("dig.example", "A", "198.51.100.9")
        yield fake


@pytest.fixture
def blokir(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Blokir]:
    with Blokir(tmp_path, upstream.port) as server:
        yield server


def _ask(
    blokir: Blokir, name: str, *options: dns.edns.Option, tcp: bool = False
) -> dns.message.Message:
    """`name` A with EDNS and these options, over UDP (or TCP)."""
    query = dns.message.make_query(name, "A", use_edns=0, options=list(options))
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, LOOPBACK, port=blokir.port, timeout=3)


def _codes(message: dns.message.Message) -> list[int]:
    return [int(option.otype) for option in message.options]


def test_cookie_and_subnet_stay_with_the_client(blokir: Blokir, upstream: FakeUpstream) -> None:
    reply = _ask(
        blokir,
        "shared.example",
        dns.edns.CookieOption(b"client-a", b""),
        dns.edns.ECSOption("192.0.2.0", 24),
        dns.edns.NSIDOption(b""),
        dns.edns.GenericOption(UNKNOWN, b"kept"),
    )
    assert [rd.address for rd in reply.answer[0]] == ["198.51.100.7"]
    # The upstream never saw the client's own options.
    assert [q.options for q in upstream.queries] == [(UNKNOWN,)]
    assert COOKIE not in _codes(reply) and ECS not in _codes(reply) and NSID not in _codes(reply)

    # Another client, another cookie: the cached answer carries nothing of the first client.
    cached = _ask(blokir, "shared.example", dns.edns.CookieOption(b"client-b", b""))
    assert upstream.seen("shared.example") == 1  # from the cache
    assert [rd.address for rd in cached.answer[0]] == ["198.51.100.7"]
    assert COOKIE not in _codes(cached) and ECS not in _codes(cached)


def test_tcp_keepalive_and_padding_are_not_forwarded(
    blokir: Blokir, upstream: FakeUpstream
) -> None:
    reply = _ask(
        blokir,
        "tcp.example",
        dns.edns.GenericOption(KEEPALIVE, b""),
        dns.edns.GenericOption(PADDING, b"\0" * 8),
        tcp=True,
    )
    assert [rd.address for rd in reply.answer[0]] == ["198.51.100.8"]
    # RFC 7828 3.2.1: keepalive is for the client's TCP connection, never for UDP upstream.
    assert [q.options for q in upstream.queries] == [()]
    assert _codes(reply) == []


def test_options_an_upstream_adds_unasked_are_not_cached(
    blokir: Blokir, upstream: FakeUpstream
) -> None:
    """A compliant upstream sends none of these, since none were sent to it; one that does
    anyway must not reach the cache. Its Extended DNS Error is for the client, and passes."""
    ede = dns.edns.EDEOption(dns.edns.EDECode.OTHER, "from upstream")
    upstream.program(
        add_options=(
            dns.edns.NSIDOption(b"upstream-1"),
            dns.edns.CookieOption(b"stranger", b"server-1"),
            ede,
        )
    )
    for client in range(2):
        reply = _ask(blokir, "shared.example")
        assert [rd.address for rd in reply.answer[0]] == ["198.51.100.7"], client
        assert reply.options == (ede,), client
    assert upstream.seen("shared.example") == 1


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) not installed")
def test_dig_gets_no_cookie_of_another_client(blokir: Blokir) -> None:
    """dig sends a fresh client cookie per run (BIND 9.11 and later); the second run is answered
    from the cache, where the first run's cookie must not be."""
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            ["dig", "@" + LOOPBACK, "-p", str(blokir.port), "dig.example", "A", "+tries=1"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        outputs.append(done.stdout + done.stderr)
    assert all("198.51.100.9" in out for out in outputs), outputs
    assert not any("COOKIE mismatch" in out for out in outputs), outputs[1]
