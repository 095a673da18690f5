"""The plugin's metrics as Prometheus text exposition, for node_exporter's textfile collector.

The family names and labels are the ones `blokir serve` exports (resolver/metrics.py), so the
dashboards and alerts work for both modes; the plugin adds its own reload counter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from resolver.metrics import index_metrics


class _Snapshot(Collector):
    def __init__(
        self,
        blocked: dict[tuple[str, str, str], int],
        header: dict[str, Any],
        loaded_at: float,
        reloads: dict[str, int],
    ) -> None:
        self.blocked = blocked
        self.header = header
        self.loaded_at = loaded_at
        self.reloads = reloads

    def collect(self) -> Iterator[Metric]:
        blocked = CounterMetricFamily(
            "blokir_blocked",
            "Blocked answers by list, category and action (including blocked via CNAME)",
            labels=["list", "category", "action"],
        )
        for labels, n in sorted(self.blocked.items()):
            blocked.add_metric(list(labels), n)
        yield blocked
        yield from index_metrics(self.header, self.loaded_at)
        reloads = CounterMetricFamily(
            "blokir_plugin_index_reloads",
            "Index files the resolver plugin swapped in (applied) or refused (rejected)",
            labels=["result"],
        )
        for result, n in sorted(self.reloads.items()):
            reloads.add_metric([result], n)
        yield reloads


def exposition(
    blocked: dict[tuple[str, str, str], int],
    header: dict[str, Any],
    loaded_at: float,
    reloads: dict[str, int],
) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(blocked, header, loaded_at, reloads))
    return generate_latest(registry)
