"""Resolver addresses, the token bucket, and the prober's limits against a loopback responder."""

from __future__ import annotations

import asyncio
import time

import pytest

from resolver.verify.probe import Settings, Target, TokenBucket, parse_target, run_probes
from tests.support.upstream import FakeUpstream


def test_parse_target() -> None:
    assert parse_target("127.0.0.1") == Target("127.0.0.1", 53)
    assert parse_target("127.0.0.1:5353") == Target("127.0.0.1", 5353)
    assert parse_target("::1") == Target("::1", 53)
    assert parse_target("[::1]:5300") == Target("::1", 5300)
    assert parse_target("[::1]").label == "[::1]:53"
    assert parse_target("127.0.0.1:53").label == "127.0.0.1:53"
    for bad in ("resolver.example", "127.0.0.1:0", "127.0.0.1:x", "[::1", "[::1]5300", ""):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_token_bucket_keeps_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=2.0, now=0.0)
    assert bucket.delay(0.0) == 0.0
    assert bucket.delay(0.0) == 0.0  # the burst
    assert bucket.delay(0.0) == pytest.approx(0.1)  # then one per 1/rate seconds, queued
    assert bucket.delay(0.0) == pytest.approx(0.2)
    assert bucket.delay(1.0) == 0.0  # refilled after a pause, but never beyond the burst
    assert bucket.delay(1.0) == 0.0
    assert bucket.delay(1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, burst=1.0, now=0.0)


def responder(silent: bool = False) -> FakeUpstream:
    """A loopback upstream answering every A query with 192.0.2.1 (or nothing), recording each
    query it saw."""
    upstream = FakeUpstream()
    if silent:
        upstream.program(drop=True)
    else:
        upstream.program(answer=["192.0.2.1"], ttl=60)
    return upstream


def test_probes_respect_the_rate_limit() -> None:
    jobs = [(f"n{i}.example", "A") for i in range(30)]
    settings = Settings(rate=100.0, concurrency=5, timeout=1.0, retries=0)
    with responder() as upstream:
        target = Target("127.0.0.1", upstream.port)
        started = time.monotonic()
        results = asyncio.run(run_probes([target], jobs, settings))
        elapsed = time.monotonic() - started
    answers = results[target]
    assert len(answers) == 30
    assert all(r.addresses == ("192.0.2.1",) for r in answers.values())
    # A burst of 5, then 25 more at 100/s: at least 0.25 s.
    assert elapsed >= 0.24
    assert len(upstream.queries) == 30


def test_timeouts_are_retried_a_bounded_number_of_times() -> None:
    jobs = [("silent.example", "A"), ("silent.example", "AAAA")]
    settings = Settings(rate=1000.0, concurrency=2, timeout=0.2, retries=2)
    with responder(silent=True) as upstream:
        target = Target("127.0.0.1", upstream.port)
        started = time.monotonic()
        results = asyncio.run(run_probes([target], jobs, settings))
        elapsed = time.monotonic() - started
    for response in results[target].values():
        assert response.rcode is None and response.error == "timeout" and response.attempts == 3
    assert len(upstream.queries) == 6
    assert elapsed < 2.0
