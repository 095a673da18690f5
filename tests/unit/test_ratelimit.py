"""Rate-limit actions (refuse, drop, slip) through the real query pipeline, and the default
access list (a default deployment is not an open resolver)."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from resolver import metrics
from resolver.config import ServerConfig, load_default_config, parse_config
from resolver.dns.query import parse_query
from resolver.pipeline import Resolver
from resolver.ratelimit import RateLimitAction, RateLimiter, slip_response
from tests.unit.resolvers import make_resolver

CLIENT = "10.1.2.3"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_resolver(tmp_path: Path, action: str) -> tuple[Resolver, FakeClock]:
    resolver = make_resolver(tmp_path, server=f'ratelimit = 2\nratelimit_action = "{action}"')
    clock = FakeClock()
    assert resolver.ratelimiter is not None
    resolver.ratelimiter._clock = clock
    return resolver, clock


def query(qid: int, name: str = "Judi-Contoh.example", **kw: object) -> bytes:
    message = dns.message.make_query(name, "A", **kw)  # type: ignore[arg-type]
    message.id = qid
    return message.to_wire()


@pytest.mark.parametrize("use_edns", [False, True])
def test_slip_answers_tc_with_the_question_and_no_records(tmp_path: Path, use_edns: bool) -> None:
    resolver, _ = limited_resolver(tmp_path, "slip")
    kw: dict[str, object] = {"use_edns": 0} if use_edns else {}
    answers = [resolver.handle(query(i, **kw), CLIENT)[0] for i in range(4)]
    assert all(isinstance(a, bytes) for a in answers)
    within = dns.message.from_wire(answers[0])  # type: ignore[arg-type]
    assert within.answer and not within.flags & dns.flags.TC
    for qid, raw in enumerate(answers[2:], start=2):
        assert isinstance(raw, bytes)
        slipped = dns.message.from_wire(raw)
        assert slipped.id == qid
        assert slipped.flags & dns.flags.TC and slipped.flags & dns.flags.QR
        assert slipped.flags & dns.flags.RD  # copied from the query
        assert slipped.rcode() == dns.rcode.NOERROR
        assert not slipped.answer and not slipped.authority
        assert str(slipped.question[0].name) == "Judi-Contoh.example."  # echoed as asked
        assert (slipped.edns >= 0) == use_edns
        # No amplification: never larger than the query (an OPT is echoed only when sent).
        assert len(raw) <= len(query(qid, **kw))
    assert resolver.ratelimiter is not None and resolver.ratelimiter.slipped == 2
    assert resolver.stats.outcome_total(metrics.RATELIMITED) == 2


def test_drop_sends_nothing_and_counts(tmp_path: Path) -> None:
    resolver, clock = limited_resolver(tmp_path, "drop")
    results = [resolver.handle(query(i), CLIENT)[0] for i in range(5)]
    assert [r is None for r in results] == [False, False, True, True, True]
    assert resolver.ratelimiter is not None and resolver.ratelimiter.dropped == 3
    assert resolver.stats.outcome_total(metrics.RATELIMITED) == 3
    clock.now += 1.0  # two tokens a second
    assert resolver.handle(query(9), CLIENT)[0] is not None


def test_refuse_is_the_default_action(tmp_path: Path) -> None:
    assert ServerConfig().ratelimit_action is RateLimitAction.REFUSE
    resolver, _ = limited_resolver(tmp_path, "refuse")
    rcodes = [dns.message.from_wire(resolver.handle(query(i), CLIENT)[0]).rcode() for i in range(3)]  # type: ignore[arg-type]
    assert rcodes == [dns.rcode.NOERROR, dns.rcode.NOERROR, dns.rcode.REFUSED]
    assert resolver.ratelimiter is not None and resolver.ratelimiter.refused == 1


def test_tcp_queries_over_the_limit_are_refused_when_dropping(tmp_path: Path) -> None:
    resolver, _ = limited_resolver(tmp_path, "drop")
    for i in range(2):
        resolver.handle(query(i), CLIENT, udp=False)[0]
    raw = resolver.handle(query(7), CLIENT, udp=False)[0]
    assert isinstance(raw, bytes)
    message = dns.message.from_wire(raw)
    assert message.rcode() == dns.rcode.REFUSED and not message.flags & dns.flags.TC
    assert resolver.ratelimiter is not None and resolver.ratelimiter.refused == 1


def test_slipped_client_gets_its_answer_over_tcp(tmp_path: Path) -> None:
    """TCP is where a slipped answer sends the client: never limited under `slip`."""
    resolver, _ = limited_resolver(tmp_path, "slip")
    for i in range(3):
        resolver.handle(query(i), CLIENT)[0]
    slipped = resolver.handle(query(3), CLIENT)[0]
    assert isinstance(slipped, bytes) and dns.message.from_wire(slipped).flags & dns.flags.TC
    for i in range(10):  # far over the UDP limit of 2
        raw = resolver.handle(query(10 + i), CLIENT, udp=False)[0]
        assert isinstance(raw, bytes)
        message = dns.message.from_wire(raw)
        assert message.rcode() == dns.rcode.NOERROR and message.answer
        assert not message.flags & dns.flags.TC
    # TCP queries spent no tokens: UDP is still limited, not refilled nor further drained.
    assert resolver.ratelimiter is not None and resolver.ratelimiter.slipped == 2


def test_limited_prefix_does_not_affect_other_prefixes(tmp_path: Path) -> None:
    resolver, _ = limited_resolver(tmp_path, "drop")
    for i in range(5):
        resolver.handle(query(i), CLIENT)[0]
    assert resolver.handle(query(1), "10.1.3.3")[0] is not None  # another /24
    assert resolver.handle(query(1), "10.1.2.200")[0] is None  # the same /24


def test_slip_response_sets_only_tc_on_top_of_an_empty_answer() -> None:
    data = query(4242, use_edns=0, want_dnssec=True)
    raw = slip_response(data, parse_query(data), 1232)
    message = dns.message.from_wire(raw)
    assert message.flags & dns.flags.TC and message.ednsflags & dns.flags.DO
    assert message.payload == 1232


def test_rate_limit_action_is_validated() -> None:
    with pytest.raises(Exception, match="ratelimit_action: 'tarpit' is not one of"):
        parse_config(
            '[server]\nratelimit_action = "tarpit"\n[[lists]]\nname = "t"\npath = "x"\n',
            "blokir.toml",
        )
    limiter = RateLimiter(1, action=RateLimitAction.SLIP)
    assert limiter.action is RateLimitAction.SLIP


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "203.0.113.5", "2001:4860:4860::8888", "172.32.0.1"]
)
def test_embedded_default_config_refuses_public_addresses(address: str) -> None:
    server = load_default_config().server
    assert not server.allows(address)


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "10.20.30.40", "192.168.1.1", "100.64.0.9", "fd00::1"]
)
def test_embedded_default_config_answers_loopback_and_private_ranges(address: str) -> None:
    assert load_default_config().server.allows(address)
