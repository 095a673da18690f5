"""Querying the resolvers under audit, politely.

Every resolver (and the control) gets its own token bucket (`--rate` queries per second, a burst
of at most `--concurrency`), its own bound on queries in flight (`--concurrency`), a timeout per
try (`--timeout`) and a bounded number of retries (`--retries`) on timeout. Queries are UDP with
EDNS(0) (payload 1232, so Extended DNS Errors come back), retried over TCP when truncated. The
work is a fixed list of probes, so a run sends at most probes x (retries + 1) queries per
resolver and lasts at most about probes x (retries + 1) x timeout / concurrency seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message

from resolver.verify.classify import Response, response_from_message

EDNS_PAYLOAD = 1232
QTYPES = ("A", "AAAA")


@dataclass(frozen=True, slots=True)
class Target:
    """A resolver to query: `label` is how reports name it (`host:port`, `[v6]:port`)."""

    host: str
    port: int = 53

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(text: str, default_port: int = 53) -> Target:
    """`HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address. The host must be an IP address
    (a resolver under audit is named by address, not resolved through another resolver)."""
    raw = text.strip()
    port = default_port
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: missing ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        port = _port(port_text, text)
    else:
        host = raw
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from exc
    return Target(str(address), port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r}: port must be 1..65535")
    return int(text)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. `delay(now)` takes a token and says
    how long to wait before using it (0 when one was there); tokens may be owed, so concurrent
    takers queue up at exactly the rate."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.stamp = now

    def delay(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def take(self) -> None:
        wait = self.delay(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass(frozen=True, slots=True)
class Settings:
    rate: float = 200.0
    concurrency: int = 20
    timeout: float = 2.0
    retries: int = 2


Job = tuple[str, str]  # (query name, type)
Progress = Callable[[int], None]  # called with the number of queries just finished


async def query_one(
    target: Target,
    qname: str,
    qtype: str,
    settings: Settings,
    bucket: TokenBucket,
    in_flight: asyncio.Semaphore,
) -> Response:
    """One probe: up to 1 + retries tries, each rate-limited and bounded by the timeout."""
    started = time.monotonic()
    attempts = 0
    last_error = "timeout"
    for _ in range(settings.retries + 1):
        attempts += 1
        await bucket.take()
        request = dns.message.make_query(
            qname, qtype, use_edns=0, payload=EDNS_PAYLOAD, flags=dns.flags.RD
        )
        try:
            async with in_flight:
                reply = await dns.asyncquery.udp(
                    request,
                    target.host,
                    timeout=settings.timeout,
                    port=target.port,
                    ignore_unexpected=True,
                )
                if reply.flags & dns.flags.TC:
                    reply = await dns.asyncquery.tcp(
                        request, target.host, timeout=settings.timeout, port=target.port
                    )
        except dns.exception.Timeout:
            last_error = "timeout"
            continue
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(min(settings.timeout, 0.2))
            continue
        elapsed = (time.monotonic() - started) * 1000.0
        return response_from_message(reply, qtype, attempts=attempts, elapsed_ms=elapsed)
    elapsed = (time.monotonic() - started) * 1000.0
    return Response(rcode=None, error=last_error, attempts=attempts, elapsed_ms=elapsed)


async def run_probes(
    targets: Sequence[Target],
    jobs: Sequence[Job],
    settings: Settings,
    progress: Progress | None = None,
) -> dict[Target, dict[Job, Response]]:
    """Every job against every target, all targets at once, each within its own limits."""

    async def one_target(target: Target) -> dict[Job, Response]:
        bucket = TokenBucket(settings.rate, min(settings.concurrency, settings.rate), 0.0)
        bucket.stamp = time.monotonic()
        in_flight = asyncio.Semaphore(settings.concurrency)
        results: dict[Job, Response] = {}
        queue = iter(jobs)

        async def worker() -> None:
            for job in queue:  # a shared iterator: each job is taken by one worker
                results[job] = await query_one(target, *job, settings, bucket, in_flight)
                if progress is not None:
                    progress(1)

        await asyncio.gather(*(worker() for _ in range(max(1, settings.concurrency))))
        return results

    done = await asyncio.gather(*(one_target(t) for t in targets))
    return dict(zip(targets, done, strict=True))
