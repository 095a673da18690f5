"""The upstream pool against an in-process fake upstream on 127.0.0.1 (real sockets).

Every test runs its own event loop with `asyncio.run` under a hard `asyncio.timeout`, so a bug
that makes the pool wait forever fails the test in bounded time instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from resolver.dns.names import MessageError
from resolver.upstream import BACKOFF_INITIAL, DOWN_AFTER, UpstreamPool
from tests.support.upstream import FakeUpstream, Request

LOOPBACK = "127.0.0.1"
REAL = "192.0.2.1"
TEST_LIMIT = 2.5  # seconds; every test must finish in under 3


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(TEST_LIMIT):
                await test(*args, **kwargs)

        asyncio.run(bounded())

    return wrapper


def _addresses(wire: bytes) -> list[str]:
    return [rdata.to_text() for rrset in dns.message.from_wire(wire).answer for rdata in rrset]


# How each mode answers over UDP; TCP always answers properly (see `tcp_wrong_id_first`).
MODES: dict[str, dict[str, Any]] = {
    "normal": {},
    "silent": {"drop": True},
    "servfail": {"rcode": dns.rcode.SERVFAIL, "answer": ()},
    "refused": {"rcode": dns.rcode.REFUSED, "answer": ()},
    "tc": {"tc": True},
    "wrong_id_first": {"forge": ("id",), "delay": 0.02},
    # Answers to other questions (name, type, class), the query itself (QR=0) and junk.
    "wrong_question_first": {"forge": ("name", "type", "class", "query", "junk"), "delay": 0.02},
    # An off-path attacker who knows the port and the ID, sending from elsewhere.
    "spoof": {"forge": ("port",), "delay": 0.05},
    "lowercase_question": {"lower_question": True},
}


def set_mode(upstream: FakeUpstream, mode: str) -> None:
    """Every query answered with REAL, except as `mode` says over UDP."""
    upstream.clear()
    upstream.program(answer=[REAL])
    upstream.program(transport="udp", **MODES[mode])


def fake(mode: str = "normal", host: str = LOOPBACK) -> FakeUpstream:
    upstream = FakeUpstream(host)
    set_mode(upstream, mode)
    return upstream.start()


def tcp_wrong_id_first(upstream: FakeUpstream) -> None:
    """Over TCP, a wrong-ID answer before the right one: validated like UDP's."""
    upstream.program(transport="tcp", forge=("id",))


def udp_requests(upstream: FakeUpstream) -> list[Request]:
    return upstream.requests("udp")


def _query(name: str = "www.Example.com.", rdtype: str = "A", qid: int = 0xBEEF) -> bytes:
    query = dns.message.make_query(name, rdtype)
    query.id = qid
    return query.to_wire()


def _dead_port() -> int:
    """A UDP port on 127.0.0.1 with nothing behind it: the kernel answers ICMP unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


async def _timed(call: Awaitable[bytes | None]) -> tuple[bytes | None, float]:
    start = time.monotonic()
    result = await call
    return result, time.monotonic() - start


# -- answers ------------------------------------------------------------------------------


@run_async
async def test_normal_answer_gets_the_request_id_back_and_fresh_ids_and_ports() -> None:
    with fake() as upstream:
        pool = UpstreamPool([upstream.address], timeout=1.0, attempts=1)
        for _ in range(6):
            response = await pool.query(_query(qid=0xBEEF))
            assert response is not None
            assert response[:2] == b"\xbe\xef"
            assert _addresses(response) == [REAL]
        ids = {request.wire[:2] for request in udp_requests(upstream)}
        ports = {request.source[1] for request in udp_requests(upstream)}
        assert len(ids) > 1 and len(ports) > 1  # a fresh ID and socket per query (RFC 5452)
        # the upstream saw the client's query, apart from the ID
        assert all(request.wire[2:] == _query()[2:] for request in udp_requests(upstream))
        stats = pool.stats[0]
        assert (stats.requests, stats.responses, stats.timeouts, stats.errors) == (6, 6, 0, 0)
        assert stats.up and stats.rtt_ewma > 0
        pool.close()


@run_async
async def test_question_case_does_not_matter() -> None:
    with fake("lowercase_question") as upstream:
        pool = UpstreamPool([upstream.address], timeout=1.0, attempts=1)
        response = await pool.query(_query("WWW.EXAMPLE.COM."))
        assert response is not None and _addresses(response) == [REAL]


@run_async
async def test_truncated_answer_is_asked_again_over_tcp() -> None:
    with fake("tc") as upstream:
        tcp_wrong_id_first(upstream)
        pool = UpstreamPool([upstream.address], timeout=1.0, attempts=1)
        response = await pool.query(_query())
        assert response is not None
        assert response[:2] == b"\xbe\xef"
        assert not dns.message.from_wire(response).flags & dns.flags.TC
        assert _addresses(response) == [REAL]
        assert len(upstream.requests("tcp")) == 1
        assert pool.stats[0].tcp_fallbacks == 1


@run_async
async def test_answer_with_wrong_id_is_ignored() -> None:
    with fake("wrong_id_first") as upstream:
        pool = UpstreamPool([upstream.address], timeout=1.0, attempts=1)
        response = await pool.query(_query())
        assert response is not None and _addresses(response) == [REAL]


@run_async
async def test_answers_to_other_questions_queries_and_junk_are_ignored() -> None:
    with fake("wrong_question_first") as upstream:
        pool = UpstreamPool([upstream.address], timeout=1.0, attempts=1)
        response = await pool.query(_query())
        assert response is not None and _addresses(response) == [REAL]
        assert len(udp_requests(upstream)) == 1  # all in one try


@run_async
async def test_spoofed_answer_from_another_port_is_never_accepted() -> None:
    with fake("spoof") as upstream:
        pool = UpstreamPool([upstream.address], timeout=1.0, attempts=1)
        for _ in range(3):
            response = await pool.query(_query())
            assert response is not None and _addresses(response) == [REAL]


# -- failures and failover ----------------------------------------------------------------


@run_async
async def test_silent_upstream_gives_none_within_timeout_times_attempts() -> None:
    with fake("silent") as one, fake("silent") as two:
        pool = UpstreamPool([one.address, two.address], timeout=0.2, attempts=3)
        response, elapsed = await _timed(pool.query(_query()))
        assert response is None
        assert 0.55 <= elapsed < 0.6 + 0.25
        assert len(udp_requests(one)) == 2 and len(udp_requests(two)) == 1
        assert pool.stats[0].timeouts == 2 and pool.stats[1].timeouts == 1
        assert pool.stats[0].rtt_ewma >= 0.2  # a timeout counts as a slow answer


@run_async
async def test_failover_from_dead_to_live_server() -> None:
    with fake() as live:
        pool = UpstreamPool([(LOOPBACK, _dead_port()), live.address], timeout=1.0, attempts=2)
        response, elapsed = await _timed(pool.query(_query()))
        assert response is not None and _addresses(response) == [REAL]
        assert elapsed < 0.5  # ICMP port unreachable ends the try at once
        assert pool.stats[0].errors == 1 and pool.stats[0].consecutive_failures == 1
        assert pool.stats[1].responses == 1


@run_async
async def test_failover_from_silent_to_live_server() -> None:
    with fake("silent") as silent, fake() as live:
        pool = UpstreamPool([silent.address, live.address], timeout=0.2, attempts=2)
        response, elapsed = await _timed(pool.query(_query()))
        assert response is not None and _addresses(response) == [REAL]
        assert 0.2 <= elapsed < 0.5
        # the silent server now has a worse RTT, so the live one goes first
        response = await pool.query(_query())
        assert response is not None
        assert len(udp_requests(silent)) == 1 and len(udp_requests(live)) == 2


@pytest.mark.parametrize("mode", ["servfail", "refused"])
@run_async
async def test_servfail_and_refused_fail_over_and_end_in_none(mode: str) -> None:
    with fake(mode) as bad, fake() as good:
        pool = UpstreamPool([bad.address, good.address], timeout=1.0, attempts=2)
        response = await pool.query(_query())
        assert response is not None and _addresses(response) == [REAL]
        assert pool.stats[0].failure_rcodes == 1 and pool.stats[0].consecutive_failures == 1
        only_bad = UpstreamPool([bad.address], timeout=1.0, attempts=2)
        assert await only_bad.query(_query()) is None
        assert only_bad.stats[0].responses == 2


@run_async
async def test_health_goes_down_and_comes_back() -> None:
    clock = [100.0]
    with fake("servfail") as flaky, fake() as steady:
        pool = UpstreamPool(
            [flaky.address, steady.address], timeout=0.5, attempts=2, clock=lambda: clock[0]
        )
        pool.stats[1].rtt_ewma = 1.0  # make the steady server look slow so the flaky one is first
        flaky_stats = pool.stats[0]
        for n in range(1, DOWN_AFTER + 1):
            assert await pool.query(_query()) is not None  # the steady server answers
            assert flaky_stats.consecutive_failures == n
            assert flaky_stats.up is (n < DOWN_AFTER)
        assert len(udp_requests(flaky)) == DOWN_AFTER
        set_mode(flaky, "normal")
        # down, and its back-off has not run out: not asked, even though it would answer now
        assert await pool.query(_query()) is not None
        assert len(udp_requests(flaky)) == DOWN_AFTER
        clock[0] += BACKOFF_INITIAL + 0.1
        # the back-off ran out: the next query probes it first, and one answer brings it back
        assert await pool.query(_query()) is not None
        assert len(udp_requests(flaky)) == DOWN_AFTER + 1
        assert flaky_stats.up and flaky_stats.consecutive_failures == 0


@run_async
async def test_failed_probe_doubles_the_back_off() -> None:
    clock = [100.0]
    with fake("servfail") as flaky, fake() as steady:
        pool = UpstreamPool(
            [flaky.address, steady.address], timeout=0.5, attempts=2, clock=lambda: clock[0]
        )
        pool.stats[1].rtt_ewma = 1.0
        for _ in range(DOWN_AFTER):
            await pool.query(_query())
        assert not pool.stats[0].up
        clock[0] += BACKOFF_INITIAL + 0.1
        await pool.query(_query())  # the probe fails
        assert len(udp_requests(flaky)) == DOWN_AFTER + 1 and not pool.stats[0].up
        clock[0] += BACKOFF_INITIAL + 0.1  # not enough: the back-off is now twice as long
        await pool.query(_query())
        assert len(udp_requests(flaky)) == DOWN_AFTER + 1
        clock[0] += BACKOFF_INITIAL
        await pool.query(_query())
        assert len(udp_requests(flaky)) == DOWN_AFTER + 2


@run_async
async def test_a_lone_down_server_is_still_asked() -> None:
    with fake("servfail") as only:
        pool = UpstreamPool([only.address], timeout=0.5, attempts=1)
        for _ in range(DOWN_AFTER):
            assert await pool.query(_query()) is None
        assert not pool.stats[0].up
        set_mode(only, "normal")
        response = await pool.query(_query())
        assert response is not None and pool.stats[0].up


@run_async
async def test_with_one_attempt_a_down_server_is_probed_on_the_side_and_comes_back() -> None:
    clock = [100.0]
    with fake("servfail") as flaky, fake() as steady:
        pool = UpstreamPool(
            [flaky.address, steady.address], timeout=0.5, attempts=1, clock=lambda: clock[0]
        )
        pool.stats[1].rtt_ewma = 1.0  # the steady server looks slow: the flaky one goes first
        for _ in range(DOWN_AFTER):
            assert await pool.query(_query()) is None  # one try, and it went to the flaky one
        assert not pool.stats[0].up
        assert await pool.query(_query()) is not None  # down: the steady server is asked
        set_mode(flaky, "normal")
        clock[0] += BACKOFF_INITIAL + 0.1
        # The back-off ran out. The query's only try goes to the steady server; the flaky one
        # gets a copy on the side, and its answer brings it back.
        response = await pool.query(_query())
        assert response is not None and len(udp_requests(steady)) == 2
        for _ in range(50):
            if pool.stats[0].up:
                break
            await asyncio.sleep(0.01)
        assert pool.stats[0].up and len(udp_requests(flaky)) == DOWN_AFTER + 1
        # Back up with a fresh RTT, so it is first again rather than stuck behind.
        assert await pool.query(_query()) is not None
        assert len(udp_requests(flaky)) == DOWN_AFTER + 2 and len(udp_requests(steady)) == 2
        pool.close()


@run_async
async def test_a_server_back_from_down_is_ordered_by_its_new_rtt() -> None:
    clock = [100.0]
    with fake("silent") as primary, fake() as secondary:
        pool = UpstreamPool(
            [primary.address, secondary.address], timeout=0.1, attempts=2, clock=lambda: clock[0]
        )
        for _ in range(DOWN_AFTER):
            pool.stats[0].rtt_ewma, pool.stats[1].rtt_ewma = 0.0001, 1.0  # primary first
            assert await pool.query(_query()) is not None
        assert not pool.stats[0].up and pool.stats[0].rtt_ewma >= 0.03
        set_mode(primary, "normal")
        clock[0] += BACKOFF_INITIAL + 0.1
        assert await pool.query(_query()) is not None  # the probe goes first and answers
        assert pool.stats[0].up and pool.stats[0].rtt_ewma < 0.05
        pool.stats[1].rtt_ewma = 0.05  # the secondary is a little slower than the primary now
        asked = len(udp_requests(primary))
        assert await pool.query(_query()) is not None
        assert len(udp_requests(primary)) == asked + 1


# -- other --------------------------------------------------------------------------------


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
@run_async
async def test_ipv6_upstream() -> None:
    with fake("tc", host="::1") as upstream:
        pool = UpstreamPool([upstream.address], timeout=1.0, attempts=1)
        response = await pool.query(_query())
        assert response is not None and _addresses(response) == [REAL]
        assert pool.stats[0].tcp_fallbacks == 1


@run_async
async def test_malformed_requests_are_refused_up_front() -> None:
    pool = UpstreamPool([(LOOPBACK, 53)], timeout=0.2, attempts=1)
    query = _query()
    for bad in (b"", query[:11], query[:4] + b"\x00\x02" + query[6:], query[:-3]):
        with pytest.raises(MessageError):
            await pool.query(bad)
    assert pool.stats[0].requests == 0


def test_bad_configuration() -> None:
    with pytest.raises(ValueError):
        UpstreamPool([], timeout=1.0, attempts=1)
    with pytest.raises(ValueError):
        UpstreamPool([(LOOPBACK, 53)], timeout=0, attempts=1)
    with pytest.raises(OSError):
        UpstreamPool([("resolver.example", 53)], timeout=1.0, attempts=1)  # names are not allowed
