"""The landing server's counters and how they reach a scrape.

Under `blokir serve` the landing process publishes a JSON snapshot twice a second into a slot
of a shared memory map the supervisor made before forking (resolver.metrics.SharedSlots, the
mechanism the DNS workers use), and the supervisor's collector reads it at scrape time. There
are two slots: a reload starts a new landing process while the old one finishes its open
connections, and each writes its own slot. A process starts from the last snapshot left in its
slot, so the summed counters never go backwards across restarts. `blokir landing` (standalone)
serves the same families from its own process.

Labels are bounded: `category` is a list's category from the config (or `not_blocked`,
`landing` for the server's own name), `scheme` is http or https, `reason` a fixed set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

NOT_BLOCKED = "not_blocked"
OWN_NAME = "landing"  # the server's own name or address: the about page
SCHEMES = ("http", "https")
REASONS = ("bad_request", "header_too_large", "timeout", "connection_cap", "method")
SLOTS = 2  # an old landing process drains while its successor serves


@dataclass(slots=True)
class LandingStats:
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (category, scheme)
    tls_refused: dict[str, int] = field(default_factory=dict)  # category of the SNI name
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    connections: int = 0  # open now (a gauge)

    def count(self, category: str, scheme: str) -> None:
        key = (category, scheme)
        self.requests[key] = self.requests.get(key, 0) + 1

    def refuse_tls(self, category: str) -> None:
        self.tls_refused[category] = self.tls_refused.get(category, 0) + 1

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": [[c, s, n] for (c, s), n in self.requests.items()],
            "tls_refused": self.tls_refused,
            "rejected": self.rejected,
            "connections": self.connections,
        }

    def resume(self, snapshot: dict[str, Any] | None) -> None:
        """Continue from a predecessor's last counts (its gauge is not carried over)."""
        if not snapshot:
            return
        for category, scheme, n in snapshot.get("requests", []):
            self.requests[(str(category), str(scheme))] = int(n)
        for category, n in snapshot.get("tls_refused", {}).items():
            self.tls_refused[str(category)] = int(n)
        for reason in REASONS:
            self.rejected[reason] = int(snapshot.get("rejected", {}).get(reason, 0))


def snapshot_bytes(stats: LandingStats) -> bytes:
    return json.dumps(stats.snapshot(), separators=(",", ":")).encode()


def merge(snapshots: list[dict[str, Any] | None]) -> LandingStats:
    total = LandingStats()
    for snap in snapshots:
        if not snap:
            continue
        for category, scheme, n in snap.get("requests", []):
            key = (str(category), str(scheme))
            total.requests[key] = total.requests.get(key, 0) + int(n)
        for category, n in snap.get("tls_refused", {}).items():
            total.tls_refused[category] = total.tls_refused.get(category, 0) + int(n)
        for reason in REASONS:
            total.rejected[reason] += int(snap.get("rejected", {}).get(reason, 0))
        total.connections += int(snap.get("connections", 0))
    return total


def landing_metrics(totals: LandingStats) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "blokir_landing_requests",
        "Landing page requests by the category of the requested name and scheme "
        "(not_blocked: a name no list blocks; landing: the server's own name or address)",
        labels=["category", "scheme"],
    )
    counts = dict(totals.requests)
    counts.setdefault((NOT_BLOCKED, "http"), 0)  # a series from the start, for dashboards
    for (category, scheme), n in sorted(counts.items()):
        requests.add_metric([category, scheme], n)
    yield requests
    refused = CounterMetricFamily(
        "blokir_landing_tls_refused",
        "TLS handshakes refused with an alert because the server name (SNI) is not ours, by "
        "the category of that name",
        labels=["category"],
    )
    for category, n in sorted({NOT_BLOCKED: 0, **totals.tls_refused}.items()):
        refused.add_metric([category], n)
    yield refused
    rejected = CounterMetricFamily(
        "blokir_landing_rejected",
        "Landing connections or requests refused by the server's defences, by reason",
        labels=["reason"],
    )
    for reason in REASONS:
        rejected.add_metric([reason], totals.rejected[reason])
    yield rejected
    open_now = GaugeMetricFamily("blokir_landing_connections", "Open landing connections")
    open_now.add_metric([], totals.connections)
    yield open_now


class LandingCollector(Collector):
    """For `blokir landing`'s own /metrics: `read` returns the current totals."""

    def __init__(self, read: Callable[[], LandingStats]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        yield from landing_metrics(self.read())
