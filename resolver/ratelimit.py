"""Per-client-prefix token buckets: one client network cannot take the resolver for itself.

Clients are grouped by prefix, /24 for IPv4 and /56 for IPv6 (what one customer line or one
NAT usually holds), as BIND's and Unbound's rate limits do. Each prefix earns `rate` tokens a
second up to `burst`; a query spends one. What an over-limit query gets is the operator's
choice (`[server] ratelimit_action`, counted in metrics as `ratelimited` and per action here):

- `refuse`: REFUSED, so a legitimate client backs off instead of retrying into silence.
- `drop`: nothing. A source address over UDP can be forged, so under a reflection attack any
  answer, even a small one, goes to the victim; silence gives the attacker nothing.
- `slip`: an empty answer with TC=1, as BIND's and NSD's response rate limiting "slip" (slip 1):
  no larger than the query, so useless for amplification, yet a real client behind a busy
  prefix retries over TCP (RFC 1035 4.2.1, RFC 7766 5) and gets its answer there.

Over TCP the three-way handshake has proven the client's address, so nothing is reflected.
With `slip`, TCP is the way out that the TC bit points to, so TCP queries are not limited at
all (as BIND's RRL exempts TCP); TCP's own bounds (connection cap, pipelining, timeouts in
server.py) hold instead. With `refuse` and `drop`, a limited TCP query gets REFUSED: dropping
it would only leave a proven client waiting on an open connection.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from enum import StrEnum

from resolver.dns.constants import NOERROR, REFUSED, TC
from resolver.dns.query import Query
from resolver.dns.response import error_response

MAX_PREFIXES = 100_000  # tracked prefixes; past this the table restarts (memory stays bounded)


class RateLimitAction(StrEnum):
    """`[server] ratelimit_action`: what a query over its prefix's limit gets."""

    REFUSE = "refuse"
    DROP = "drop"
    SLIP = "slip"


def client_prefix(client: str) -> str:
    """The bucket a client address belongs to."""
    if ":" not in client:
        return client.rpartition(".")[0]  # the /24
    try:
        network = ipaddress.IPv6Network(f"{client.split('%', 1)[0]}/56", strict=False)
    except ValueError:
        return client
    return str(network.network_address)


def slip_response(data: bytes, query: Query, payload: int) -> bytes:
    """An answer with no records and TC=1: the header (QR, RD/CD copied, RCODE NOERROR), the
    question echoed, and an OPT record when the query had one (RFC 6891 7). A client that
    really sent the query retries over TCP; a forged source receives no more octets than the
    forger sent."""
    answer = error_response(data, NOERROR, query, payload)
    return answer[:2] + bytes([answer[2] | (TC >> 8)]) + answer[3:]


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float = 0,
        clock: Callable[[], float] = time.monotonic,
        action: RateLimitAction = RateLimitAction.REFUSE,
    ) -> None:
        self.rate = rate
        self.burst = burst or rate
        self.action = action
        self._clock = clock
        self._prefixes: dict[str, str] = {}  # client address -> prefix, a cache
        self._buckets: dict[str, list[float]] = {}  # prefix -> [tokens, last refill time]
        # Over-limit queries by what they got (the metrics outcome `ratelimited` is their sum).
        self.refused = 0
        self.dropped = 0
        self.slipped = 0

    def allow(self, client: str, udp: bool = True) -> bool:
        """Spend a token of the client's prefix; False when it has none left."""
        if not udp and self.action is RateLimitAction.SLIP:
            return True  # the TCP retry a slipped answer asks for (see the module docstring)
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

    def over_limit_answer(self, data: bytes, query: Query, payload: int, udp: bool) -> bytes | None:
        """What a query that `allow` turned away gets: bytes to send, or None for silence."""
        action = self.action if udp else RateLimitAction.REFUSE
        if action is RateLimitAction.DROP:
            self.dropped += 1
            return None
        if action is RateLimitAction.SLIP:
            self.slipped += 1
            return slip_response(data, query, payload)
        self.refused += 1
        return error_response(data, REFUSED, query, payload)
