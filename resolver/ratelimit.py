"""Per-client-prefix token buckets: one client network cannot take the resolver for itself.

Clients are grouped by prefix, /24 for IPv4 and /56 for IPv6 (what one customer line or one
NAT usually holds), as BIND's and Unbound's rate limits do. Each prefix earns `rate` tokens a
second up to `burst`; a query spends one. Over the limit the server answers REFUSED (counted as
`ratelimited`), so a legitimate client backs off instead of retrying into silence.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

MAX_PREFIXES = 100_000  # tracked prefixes; past this the table restarts (memory stays bounded)


def client_prefix(client: str) -> str:
    """The bucket a client address belongs to."""
    if ":" not in client:
        return client.rpartition(".")[0]  # the /24
    try:
        network = ipaddress.IPv6Network(f"{client.split('%', 1)[0]}/56", strict=False)
    except ValueError:
        return client
    return str(network.network_address)


class RateLimiter:
    def __init__(
        self, rate: float, burst: float = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst or rate
        self._clock = clock
        self._prefixes: dict[str, str] = {}  # client address -> prefix, a cache
        self._buckets: dict[str, list[float]] = {}  # prefix -> [tokens, last refill time]

    def allow(self, client: str) -> bool:
        prefix = self._prefixes.get(client)
        if prefix is None:
            if len(self._prefixes) >= MAX_PREFIXES:
                self._prefixes.clear()
            prefix = self._prefixes[client] = client_prefix(client)
        now = self._clock()
        bucket = self._buckets.get(prefix)
        if bucket is None:
            if len(self._buckets) >= MAX_PREFIXES:
                self._buckets.clear()
            self._buckets[prefix] = [self.burst - 1, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True
