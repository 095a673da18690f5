"""`blokir verify --serve-metrics HOST:PORT`: the audit as Prometheus metrics, re-run every
interval.

Exported (a custom collector over the last finished run; nothing before the first run ends):

- `blokir_verify_enforcement_ratio{resolver, category}`: enforcement rate 0..1; `category="all"`
  is the resolver as a whole. Absent for a group with no answered name.
- `blokir_verify_ci_low{resolver, category}`, `blokir_verify_ci_high{resolver, category}`: its
  95% Wilson interval.
- `blokir_verify_subtree_ratio{resolver, category}`: the subtree enforcement rate.
- `blokir_verify_names{resolver, category, class}`: sampled names per class in the last run.
- `blokir_verify_probes_total{resolver, class}`: probes (queries) classified, a counter over
  every run since the start.
- `blokir_verify_learned_landing{resolver, address}`: 1 per learned landing address.
- `blokir_verify_last_run_timestamp_seconds`, `blokir_verify_last_run_duration_seconds`,
  `blokir_verify_runs_total`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from resolver.verify.audit import Audit
from resolver.verify.classify import Verdict
from resolver.verify.stats import Group

ALL = "all"


class VerifyCollector(Collector):
    """Holds the last audit and the running probe counters; `collect` reads them under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: Audit | None = None
        self._probes: Counter[tuple[str, str]] = Counter()
        self._runs = 0

    def update(self, audit: Audit) -> None:
        with self._lock:
            self._last = audit
            self._runs += 1
            for result in audit.resolvers:
                for verdict, count in result.overall.probe_counts.items():
                    self._probes[(result.label, verdict.value)] += count

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            audit = self._last
            probes = dict(self._probes)
            runs = self._runs
        labels = ["resolver", "category"]
        ratio = GaugeMetricFamily(
            "blokir_verify_enforcement_ratio",
            "Share of sampled listed names the resolver blocked (answered names only)",
            labels=labels,
        )
        low = GaugeMetricFamily(
            "blokir_verify_ci_low", "Lower bound of the 95% Wilson interval", labels=labels
        )
        high = GaugeMetricFamily(
            "blokir_verify_ci_high", "Upper bound of the 95% Wilson interval", labels=labels
        )
        subtree = GaugeMetricFamily(
            "blokir_verify_subtree_ratio",
            "Share of sampled names whose www. and random-label probes were all blocked",
            labels=labels,
        )
        names = GaugeMetricFamily(
            "blokir_verify_names",
            "Sampled names per class in the last run",
            labels=[*labels, "class"],
        )
        learned = GaugeMetricFamily(
            "blokir_verify_learned_landing",
            "Landing addresses learned in the last run (1 each)",
            labels=["resolver", "address"],
        )
        counter = CounterMetricFamily(
            "blokir_verify_probes",
            "Probes (one query each) per resolver and class, over all runs",
            labels=["resolver", "class"],
        )
        for (resolver, verdict), count in sorted(probes.items()):
            counter.add_metric([resolver, verdict], float(count))
        last_run = GaugeMetricFamily(
            "blokir_verify_last_run_timestamp_seconds", "When the last audit finished (Unix time)"
        )
        duration = GaugeMetricFamily(
            "blokir_verify_last_run_duration_seconds", "How long the last audit took"
        )
        run_count = CounterMetricFamily("blokir_verify_runs", "Audits finished since the start")
        run_count.add_metric([], float(runs))
        if audit is not None:
            last_run.add_metric([], audit.finished)
            duration.add_metric([], audit.finished - audit.started)
            for result in audit.resolvers:
                groups: list[tuple[str, Group]] = [(ALL, result.overall)]
                groups += list(result.categories.items())
                for category, group in groups:
                    key = [result.label, category]
                    rate = group.enforcement
                    if rate.rate is not None:
                        ratio.add_metric(key, rate.rate)
                        ci_low, ci_high = rate.interval
                        low.add_metric(key, ci_low)
                        high.add_metric(key, ci_high)
                    if group.subtree.rate is not None:
                        subtree.add_metric(key, group.subtree.rate)
                    for verdict in Verdict:
                        names.add_metric([*key, verdict.value], float(group.counts[verdict]))
                for address in result.learned.landing:
                    learned.add_metric([result.label, address], 1.0)
        yield from (ratio, low, high, subtree, names, learned, counter, run_count)
        if audit is not None:
            yield last_run
            yield duration
