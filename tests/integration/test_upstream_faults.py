"""Dead, slow and lying upstreams against a real `blokir serve`.

Two programmable upstreams that can be stopped (their sockets closed: the kernel answers ICMP
port unreachable), blackholed (alive but silent: every try times out) and restarted on the same
port. Each one answers the same names with its own address, so an answer says who gave it. And
an upstream that races forged answers (wrong ID, wrong question, wrong source, late) against
its real one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest

from tests.integration.dnsutil import free_port
from tests.integration.test_metrics import sample, scrape
from tests.integration.test_server import LOOPBACK, Blokir
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

PRIMARY_ADDRESS = "198.51.100.1"
SECONDARY_ADDRESS = "198.51.100.2"
REAL = "192.0.2.1"
FORGED = "203.0.113.66"
TIMEOUT = 0.5
ATTEMPTS = 2
MARGIN = 0.5  # scheduling slack on a shared 2-CPU machine


def start(address: str, port: int = 0) -> FakeUpstream:
    """An upstream on `port` (to come back where blokir expects it; 0: any) answering every A
    query with `address`."""
    upstream = FakeUpstream(port=port)
    upstream.program(answer=[address])
    return upstream.start()


def blackhole(upstream: FakeUpstream, silent: bool = True) -> None:
    """Alive but silent (or answering again)."""
    upstream.program(drop=silent)


def configure(server: Blokir, upstream_ports: list[int], cache: str = "", max_ttl: int = 1) -> None:
    """Point a Blokir's config at several upstreams with ATTEMPTS tries (the helper writes one
    upstream and one attempt), and a [cache] section: `max_ttl` (short, so that answers
    expire within a test) and extra keys."""
    text = server.config.read_text()
    servers = ", ".join(f'"{LOOPBACK}:{port}"' for port in upstream_ports)
    text, n = re.subn(r"(?m)^servers = \[.*\]$", f"servers = [{servers}]", text, count=1)
    assert n == 1
    text, n = re.subn(r"(?m)^attempts = \d+$", f"attempts = {ATTEMPTS}", text, count=1)
    assert n == 1
    server.config.write_text(text + f"\n[cache]\nmax_ttl = {max_ttl}\n{cache}\n")


def ask(server: Blokir, name: str, edns: int = 0, timeout: float = 5.0) -> dns.message.Message:
    query = dns.message.make_query(name, "A", use_edns=edns)
    return dns.query.udp(query, LOOPBACK, port=server.port, timeout=timeout)


def addresses(reply: dns.message.Message) -> list[str]:
    return [rd.address for rrset in reply.answer for rd in rrset]


def ede_codes(reply: dns.message.Message) -> list[int]:
    return [o.code for o in reply.options if isinstance(o, dns.edns.EDEOption)]


def up_metric(metrics_port: int, upstream: FakeUpstream) -> float:
    return sample(
        scrape(metrics_port), "blokir_upstream_up", upstream=f"{LOOPBACK}:{upstream.port}"
    )


def wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def pair() -> Iterator[list[FakeUpstream]]:
    upstreams = [start(PRIMARY_ADDRESS), start(SECONDARY_ADDRESS)]
    try:
        yield upstreams
    finally:
        for upstream in upstreams:
            upstream.close()


def serve(tmp_path: Path, upstreams: list[FakeUpstream], cache: str = "") -> Blokir:
    server = Blokir(tmp_path, upstreams[0].port, timeout=TIMEOUT, metrics_port=free_port())
    configure(server, [u.port for u in upstreams], cache=cache)
    server.start()
    return server


def test_failover_servfail_within_the_timeout_and_recovery(
    tmp_path: Path, pair: list[FakeUpstream]
) -> None:
    primary, secondary = pair
    server = serve(tmp_path, pair)
    try:
        for i in range(6):
            reply = ask(server, f"warm{i}.test")
            assert addresses(reply) in ([PRIMARY_ADDRESS], [SECONDARY_ADDRESS])
        assert primary.queries and secondary.queries  # both used while both are healthy

        port = primary.port
        primary.close()  # mid-run: ICMP port unreachable from now on
        for i in range(20):
            reply = ask(server, f"failover{i}.test")
            assert addresses(reply) == [SECONDARY_ADDRESS], f"failover{i}: {reply}"

        blackhole(secondary)  # alive but silent: every try runs into the timeout
        for i in range(3):
            started = time.monotonic()
            reply = ask(server, f"blackhole{i}.test")
            elapsed = time.monotonic() - started
            assert reply.rcode() == dns.rcode.SERVFAIL
            assert elapsed < TIMEOUT * ATTEMPTS + MARGIN, elapsed
            assert dns.edns.EDECode.NO_REACHABLE_AUTHORITY in ede_codes(reply)
        secondary.close()  # dead too: still SERVFAIL, and as fast
        started = time.monotonic()
        reply = ask(server, "both-dead.test")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - started < TIMEOUT * ATTEMPTS + MARGIN
        # Every query tried both, so both are down by now (DOWN_AFTER = 3 failed tries).
        assert wait_for(lambda: up_metric(server.metrics_port or 0, primary) == 0, 5)

        primary = pair[0] = start(PRIMARY_ADDRESS, port)  # back on the same port
        answered: list[str] = []

        def recovered() -> bool:
            reply = ask(server, f"recover{len(answered)}.test")
            answered.append(str(addresses(reply)))
            return addresses(reply) == [PRIMARY_ADDRESS]

        assert wait_for(recovered, 15), answered
        assert wait_for(lambda: up_metric(server.metrics_port or 0, primary) == 1, 5)
        for i in range(5):  # and it stays in use
            assert addresses(ask(server, f"after{i}.test")) == [PRIMARY_ADDRESS]
    finally:
        server.stop()


def test_serve_stale_answers_expired_entries_with_ede_3_and_recovers(
    tmp_path: Path, pair: list[FakeUpstream]
) -> None:
    primary, secondary = pair
    secondary.close()  # one upstream is enough here
    server = serve(
        tmp_path,
        [primary],
        cache="serve_stale = true\nstale_answer_ttl = 30\nstale_client_timeout = 0.3",
    )
    try:
        port = primary.port
        for name, edns in (("stale.test", 0), ("stale.test", -1), ("slow.test", 0)):
            assert addresses(ask(server, name, edns)) == [PRIMARY_ADDRESS]
        time.sleep(1.2)  # max_ttl = 1: both entries have expired
        primary.close()
        reply = ask(server, "stale.test")
        assert reply.rcode() == dns.rcode.NOERROR
        assert addresses(reply) == [PRIMARY_ADDRESS] and reply.answer[0].ttl == 30
        assert ede_codes(reply) == [dns.edns.EDECode.STALE_ANSWER]
        plain = ask(server, "stale.test", edns=-1)  # no EDNS: the stale answer, no OPT
        assert addresses(plain) == [PRIMARY_ADDRESS] and plain.edns < 0
        missing = ask(server, "never-cached.test")
        assert missing.rcode() == dns.rcode.SERVFAIL  # nothing stale to give
        metrics_port = server.metrics_port or 0
        assert wait_for(lambda: up_metric(metrics_port, primary) == 0, 5)  # 6 failed tries

        primary = pair[0] = start(PRIMARY_ADDRESS, port)
        blackhole(primary)  # slow rather than dead: the client timer answers stale
        started = time.monotonic()
        reply = ask(server, "slow.test")
        elapsed = time.monotonic() - started
        assert ede_codes(reply) == [dns.edns.EDECode.STALE_ANSWER] and reply.answer[0].ttl == 30
        assert 0.3 <= elapsed < TIMEOUT + MARGIN, elapsed  # not the full timeout * attempts

        blackhole(primary, silent=False)
        assert wait_for(lambda: not ede_codes(ask(server, "stale.test")), 15)
        fresh = ask(server, "stale.test")
        assert addresses(fresh) == [PRIMARY_ADDRESS] and fresh.answer[0].ttl > 30
        assert wait_for(lambda: up_metric(metrics_port, primary) == 1, 5)

        def stale_answers() -> float:
            return sample(scrape(metrics_port), "blokir_queries_total", outcome="stale")

        assert wait_for(lambda: stale_answers() == 3, 5), stale_answers()
    finally:
        server.stop()


# -- spoofing (RFC 5452) ----------------------------------------------------------------------


def racing_upstream(late: tuple[str, ...]) -> FakeUpstream:
    """Answers each query with REAL after 30 ms, but first races forged answers (FORGED) at
    blokir's query socket: a wrong ID, a wrong question (other name, other type), the right ID
    and question from another source (another port on 127.0.0.1, and 127.0.0.2), and repeats
    them after the real answer. The `late` names get no answer to their first try until after
    blokir's timeout, and then a forged one (to a socket that has moved on)."""
    racer = FakeUpstream()
    kinds = ("id", "name", "type", "port", "address")
    racer.program(answer=[REAL], delay=0.03, forge=kinds, forge_after=kinds)
    for name in late:
        racer.program(name, times=1, delay=TIMEOUT + 0.2, answer=[FORGED], forge=(), forge_after=())
    return racer.start()


def test_forged_answers_never_reach_a_client_or_the_cache(tmp_path: Path) -> None:
    late = ("late1.test", "late2.test")
    racer = racing_upstream(late)
    server = Blokir(tmp_path, racer.port, timeout=TIMEOUT)
    configure(server, [racer.port], max_ttl=300)
    try:
        server.start()
        names = [f"victim{i}.test" for i in range(10)] + list(late)
        for name in names:
            reply = ask(server, name)
            assert addresses(reply) == [REAL], f"{name}: {reply}"
        assert racer.forged >= 10 * 5 + 2
        time.sleep(0.2)  # forged answers sent after the real one have all arrived by now
        asked = racer.counts()
        for name in names:  # from the cache now: still the real answer
            reply = ask(server, name.upper())
            assert addresses(reply) == [REAL], f"{name}: {reply}"
        assert racer.counts() == asked  # those were cache hits, not new upstream queries
        assert all(racer.seen(name) == 2 for name in late)
    finally:
        server.stop()
        racer.close()
