"""Every metric blokir exports, and how N worker processes become one scrape.

On the hot path a worker only adds to plain Python integers (`WorkerStats`). Every
`FLUSH_SECONDS` it serialises them (JSON, a few kB) into its own slot of a shared anonymous
memory map that the supervisor created before forking. The supervisor's HTTP listener sums the
slots at scrape time in a custom prometheus-client collector, so one scrape covers every worker
(no per-worker endpoints). A slot is guarded by a sequence counter (a seqlock: odd while being
written), so a scrape never reads a half-written snapshot. When a worker dies, the supervisor
folds its last snapshot into "retired" totals, so the summed counters never go backwards
(Prometheus would read a drop as a counter reset).

Names follow Prometheus conventions: `blokir_` prefix, base units (seconds, bytes), `_total` for
counters. No client addresses or query names as labels, except the bounded top-K of blocked
domains (`blokir_top_blocked_domain_queries`, at most `[metrics] top_k` series).
"""

from __future__ import annotations

import heapq
import json
import mmap
import platform
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from resolver import NATIVE, __version__
from resolver.landing import stats as landing_stats

# Latency and the top-K see one query in SAMPLE, counted SAMPLE times (an unbiased estimate);
# every counter is exact. Timing every answer measured 10% fewer queries/s; 1 in 8, within noise.
SAMPLE = 8
SAMPLE_MASK = SAMPLE - 1
FLUSH_SECONDS = 0.5  # how stale a scrape may be; a flush costs about 0.1 ms
SLOT_BYTES = 256 << 10  # per worker; a snapshot is a few kB plus the top-K names
_SLOT_HEADER = struct.Struct("<QI")  # sequence (odd while writing), payload length

# The HTTP statuses blokir's DoH answers errors with (resolver/transports/doh.py).
DOH_ERROR_STATUSES = (400, 404, 405, 413, 414, 415)

# -- the layout of the hot-path counters -------------------------------------------------------

TRANSPORTS = ("udp", "tcp", "tls", "https")  # tls: DoT (RFC 7858); https: DoH (RFC 8484)
UDP, TCP, TLS, HTTPS = 0, 1, 2, 3
OUTCOMES = (
    "blocked",
    "blocked_cname",
    "allowed",
    "cached",
    "servfail",
    "refused",
    "ratelimited",
    "formerr",
    "notimp",
    "dropped",
    "stale",  # RFC 8767: an expired cache entry, because the upstreams could not answer
    "minimal_any",  # RFC 8482: ANY over UDP answered with one synthesized HINFO
)
(
    BLOCKED,
    BLOCKED_CNAME,
    ALLOWED,
    CACHED,
    SERVFAIL,
    REFUSED,
    RATELIMITED,
    FORMERR,
    NOTIMP,
    DROPPED,
    STALE,
    MINIMAL_ANY,
) = range(len(OUTCOMES))
# A bounded qtype label set (no cardinality explosion from random types).
QTYPES = ("A", "AAAA", "HTTPS", "SVCB", "CNAME", "MX", "TXT", "NS", "SOA", "PTR", "SRV", "ANY")
QTYPE_INDEX: dict[int, int] = {
    code: i for i, code in enumerate((1, 28, 65, 64, 5, 15, 16, 2, 6, 12, 33, 255))
}
QTYPE_OTHER = len(QTYPES)
N_QTYPES = len(QTYPES) + 1
N_OUTCOMES = len(OUTCOMES)
N_CELLS = len(TRANSPORTS) * N_QTYPES * N_OUTCOMES

# Latency buckets: powers of two microseconds, 1 us .. 2^22 us (4.2 s), then +Inf. The bucket
# of a duration is int(microseconds).bit_length(): no search on the hot path.
N_BUCKETS = 23
BUCKET_BOUNDS = tuple((1 << k) / 1e6 for k in range(N_BUCKETS))


def cell(transport: int, qtype: int, outcome: int) -> int:
    return (transport * N_QTYPES + QTYPE_INDEX.get(qtype, QTYPE_OTHER)) * N_OUTCOMES + outcome


def bucket_of(seconds: float) -> int:
    index = int(seconds * 1e6).bit_length()
    return index if index < N_BUCKETS else N_BUCKETS


class TopCounter:
    """Blocked names counted exactly within a flush interval (bounded), then folded into a
    space-saving sketch (Metwally et al. 2005) of `capacity` names at flush time, so the hot path
    pays one dict update and the O(capacity) eviction runs twice a second at most."""

    INTERVAL_CAP = 20_000  # distinct names per interval; more are counted as untracked

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.interval: dict[tuple[bytes, int], int] = {}
        self.sketch: dict[tuple[str, str], int] = {}
        self.untracked = 0

    def fold(self, list_of: Any) -> None:
        """Merge the interval into the sketch; `list_of(policy_id)` names the list."""
        if not self.capacity:
            self.interval.clear()
            return
        # Only the interval's largest counts can change the top of the sketch: taking them with
        # a heap keeps a flood of unique blocked names (tens of thousands an interval) from
        # costing a full sort and an eviction per name. Measured: a full fold of 12k names took
        # about 36 ms every flush, 7% of a worker's time under the benchmark load.
        items = heapq.nlargest(self.capacity, self.interval.items(), key=lambda kv: kv[1])
        self.untracked += len(self.interval) - len(items)
        self.interval = {}
        sketch = self.sketch
        for (name, policy_id), count in items:
            key = (name.decode("ascii", "replace"), list_of(policy_id))
            if key in sketch:
                sketch[key] += count
            elif len(sketch) < self.capacity:
                sketch[key] = count
            else:  # space-saving: the newcomer takes the smallest entry's place and count
                smallest = min(sketch, key=sketch.__getitem__)
                sketch[key] = sketch.pop(smallest) + count


@dataclass(slots=True)
class WorkerStats:
    """A worker's counters: plain ints and lists, updated inline by the server."""

    cells: list[int] = field(default_factory=lambda: [0] * N_CELLS)
    blocked_by_policy_id: dict[int, int] = field(default_factory=dict)
    # (list, category, action, group) -> count; groups: resolver/groups.py ("default" if none)
    blocked_by_labels: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=lambda: [0] * (N_OUTCOMES * (N_BUCKETS + 1)))
    duration_sum: list[float] = field(default_factory=lambda: [0.0] * N_OUTCOMES)
    truncated: int = 0
    send_errors: int = 0
    # Upstream queries in flight (resolver.inflight): open now and the most at once (gauges,
    # written by Resolver.forward), queries that waited on an identical open one (coalesced),
    # and queries not sent because a cap was full, by cap.
    upstream_inflight: int = 0
    upstream_inflight_peak: int = 0
    upstream_coalesced: int = 0
    inflight_rejected_total: int = 0
    inflight_rejected_zone: int = 0
    top: TopCounter = field(default_factory=lambda: TopCounter(80))

    def observe(self, outcome: int, seconds: float) -> None:
        self.histogram[outcome * (N_BUCKETS + 1) + bucket_of(seconds)] += 1
        self.duration_sum[outcome] += seconds

    def outcome_total(self, outcome: int) -> int:
        return sum(self.cells[i] for i in range(outcome, N_CELLS, N_OUTCOMES))


# -- shared memory between the workers and the supervisor ------------------------------------


class SharedSlots:
    """One slot per worker in an anonymous shared mapping created before fork."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._map = mmap.mmap(-1, count * SLOT_BYTES)

    def write(self, slot: int, payload: bytes) -> None:
        if len(payload) > SLOT_BYTES - _SLOT_HEADER.size:
            raise ValueError(f"metrics snapshot of {len(payload)} bytes does not fit its slot")
        base = slot * SLOT_BYTES
        seq = _SLOT_HEADER.unpack_from(self._map, base)[0]
        _SLOT_HEADER.pack_into(self._map, base, seq + 1, len(payload))  # odd: writing
        start = base + _SLOT_HEADER.size
        self._map[start : start + len(payload)] = payload
        _SLOT_HEADER.pack_into(self._map, base, seq + 2, len(payload))

    def read(self, slot: int) -> dict[str, Any] | None:
        base = slot * SLOT_BYTES
        for _ in range(100):  # a writer holds a slot for microseconds
            seq, length = _SLOT_HEADER.unpack_from(self._map, base)
            if seq == 0:
                return None
            if seq % 2:
                time.sleep(0.0001)
                continue
            start = base + _SLOT_HEADER.size
            payload = bytes(self._map[start : start + length])
            if _SLOT_HEADER.unpack_from(self._map, base)[0] == seq:
                snapshot: dict[str, Any] = json.loads(payload)
                return snapshot
        return None

    def clear(self, slot: int) -> None:
        _SLOT_HEADER.pack_into(self._map, slot * SLOT_BYTES, 0, 0)


def snapshot_bytes(
    stats: WorkerStats,
    cache: dict[str, int],
    upstreams: list[dict[str, Any]],
    extra: dict[str, Any],
) -> bytes:
    """What a worker publishes: cumulative counters since it started."""
    top = sorted(stats.top.sketch.items(), key=lambda kv: kv[1], reverse=True)
    return json.dumps(
        {
            "cells": stats.cells,
            "blocked": [[*labels, n] for labels, n in stats.blocked_by_labels.items()],
            "histogram": stats.histogram,
            "duration_sum": stats.duration_sum,
            "truncated": stats.truncated,
            "send_errors": stats.send_errors,
            **{key: getattr(stats, key) for key in _INFLIGHT_FIELDS},
            "top": [[name, lst, n] for (name, lst), n in top],
            "top_untracked": stats.top.untracked,
            "cache": cache,
            "upstreams": upstreams,
            **extra,
        },
        separators=(",", ":"),
    ).encode()


# -- the supervisor side: merging and exposition ------------------------------------------------

# Counter-like fields summed across workers and kept from dead workers.
_INFLIGHT_GAUGES = ("upstream_inflight", "upstream_inflight_peak")
_INFLIGHT_COUNTERS = ("upstream_coalesced", "inflight_rejected_total", "inflight_rejected_zone")
_INFLIGHT_FIELDS = _INFLIGHT_GAUGES + _INFLIGHT_COUNTERS
_CACHE_COUNTERS = ("hits", "misses", "evictions", "expired", "inserts")
# Worker counters published as one labelled family each: (metric, label, help, {value: key}).
_LABELLED_COUNTERS = (
    (
        "blokir_ratelimited",
        "action",
        "Queries over the rate limit, by what they got ([server] ratelimit_action)",
        {"refuse": "ratelimit_refused", "drop": "ratelimit_dropped", "slip": "ratelimit_slipped"},
    ),
    (
        "blokir_tcp_closed",
        "reason",
        "DNS-over-TCP connections closed by blokir's defences (RFC 7766 section 10)",
        {
            "connection_cap": "tcp_rejected",
            "timeout": "tcp_timeouts",
            "unread_answers": "tcp_overflows",
            "short_message": "tcp_short",
        },
    ),
    (
        "blokir_tls_closed",
        "reason",
        "DNS-over-TLS connections closed by blokir's defences (connection cap, handshake)",
        {
            "connection_cap": "tls_rejected",
            "handshake_timeout": "tls_handshake_timeouts",
            "handshake_failed": "tls_handshake_failures",
        },
    ),
    (
        "blokir_https_closed",
        "reason",
        "DNS-over-HTTPS connections closed by blokir's defences",
        {
            "connection_cap": "https_rejected",
            "handshake_timeout": "https_handshake_timeouts",
            "handshake_failed": "https_handshake_failures",
            "idle": "https_idle_closed",
            "protocol_error": "https_protocol_errors",
        },
    ),
    (
        "blokir_doh_errors",
        "status",
        "DoH requests answered with an HTTP error, by status (RFC 8484; bounded set)",
        {str(status): f"https_status_{status}" for status in DOH_ERROR_STATUSES},
    ),
)
# Gauges a worker publishes and the hub sums: open encrypted connections by transport.
_CONNECTION_GAUGES = {"tls": "tls_connections", "https": "https_connections"}
# Worker counters published as one unlabelled counter each: (metric, key, help).
_PLAIN_COUNTERS = (
    (
        "blokir_querylog_dropped",
        "querylog_dropped",
        "Query log records dropped because the writer or its sink fell behind ([querylog] queue)",
    ),
    ("blokir_querylog_records", "querylog_logged", "Queries handed to the query log"),
)
_WORKER_COUNTERS = (
    *(key for *_, keys in _LABELLED_COUNTERS for key in keys.values()),
    *(key for _, key, _ in _PLAIN_COUNTERS),
)
_UPSTREAM_COUNTERS = (
    "requests",
    "responses",
    "timeouts",
    "errors",
    "failure_rcodes",
    "tcp_fallbacks",
)


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum worker snapshots. Gauges (cache entries, upstream up) are summed or or-ed as noted."""
    total: dict[str, Any] = {
        "cells": [0] * N_CELLS,
        "blocked": {},
        "histogram": [0] * (N_OUTCOMES * (N_BUCKETS + 1)),
        "duration_sum": [0.0] * N_OUTCOMES,
        "truncated": 0,
        "send_errors": 0,
        "top": {},
        "cache": {},
        "upstreams": {},
        "workers": 0,
        "tcp_connections": 0,
        "memo_entries": 0,
        **{key: 0 for key in _CONNECTION_GAUGES.values()},
        **{key: 0 for key in _INFLIGHT_FIELDS},
        **{key: 0 for key in _WORKER_COUNTERS},
    }
    for snap in snapshots:
        total["workers"] += 1 if snap.get("live") else 0
        for key in ("cells", "histogram", "duration_sum"):
            total[key] = [a + b for a, b in zip(total[key], snap[key], strict=True)]
        for lst, category, action, group, n in snap["blocked"]:
            labels = (lst, category, action, group)
            total["blocked"][labels] = total["blocked"].get(labels, 0) + n
        for key in ("truncated", "send_errors", "tcp_connections", "memo_entries",
                    *_CONNECTION_GAUGES.values()):  # fmt: skip
            total[key] += snap.get(key, 0)
        for key in _WORKER_COUNTERS:
            total[key] += snap.get(key, 0)
        for key in _INFLIGHT_FIELDS:  # gauges: a sum over workers (peaks: an upper bound)
            total[key] += snap.get(key, 0)
        for name, lst, n in snap["top"]:
            total["top"][(name, lst)] = total["top"].get((name, lst), 0) + n
        for key, value in snap["cache"].items():
            total["cache"][key] = total["cache"].get(key, 0) + value
        for up in snap["upstreams"]:
            merged = total["upstreams"].setdefault(
                up["address"],
                {
                    **{k: 0 for k in _UPSTREAM_COUNTERS},
                    "up": 0,
                    "live": 0,
                    "buckets": None,
                    "duration_sum": 0.0,
                },
            )
            for key in _UPSTREAM_COUNTERS:
                merged[key] += up[key]
            merged["duration_sum"] += up["duration_sum"]
            buckets = up["buckets"]
            merged["buckets"] = (
                buckets
                if merged["buckets"] is None
                else [a + b for a, b in zip(merged["buckets"], buckets, strict=True)]
            )
            if snap.get("live"):
                merged["live"] += 1
                merged["up"] = max(merged["up"], 1 if up["up"] else 0)
    return total


def serving_summary(totals: dict[str, Any]) -> dict[str, Any]:
    """What `blokir status` shows of the workers' counters (merge() totals): each upstream the
    live workers forward to, with its health and answers, and the cache."""
    upstreams = []
    for address, up in sorted(totals["upstreams"].items()):
        if not up["live"]:
            continue  # only a dead worker's counters still name it (removed by a reload)
        answered = up["responses"]
        upstreams.append(
            {
                "address": address,
                "up": bool(up["up"]),
                "requests": up["requests"],
                "responses": answered,
                "timeouts": up["timeouts"],
                "errors": up["errors"],
                "avg_ms": 1e3 * up["duration_sum"] / answered if answered else None,
            }
        )
    cache = totals["cache"]
    return {
        "upstreams": upstreams,
        "cache": {
            "entries": cache.get("entries", 0),
            "hits": cache.get("hits", 0),
            "misses": cache.get("misses", 0),
        },
        "workers_reporting": totals["workers"],
    }


def retire(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A dead worker's snapshot with its gauges zeroed: only counters carry over."""
    kept = dict(snapshot)
    kept["live"] = False
    kept["cache"] = {k: v for k, v in snapshot["cache"].items() if k in _CACHE_COUNTERS}
    kept["tcp_connections"] = 0
    kept["memo_entries"] = 0
    for key in _INFLIGHT_GAUGES:
        kept[key] = 0
    return kept


class MetricsHub:
    """The supervisor's view: worker slots, retired totals, index and reload facts."""

    def __init__(self, workers: int, top_k: int, reload_results: Sequence[str] = ()) -> None:
        self.slots = SharedSlots(workers)
        self.top_k = top_k
        self.retired: list[dict[str, Any]] = []
        self.index_header: dict[str, Any] = {}
        self.index_loaded_at = 0.0
        # Every result starts at 0, so `increase(...{result="rejected_shrink"})` has a series.
        self.reloads: dict[str, int] = dict.fromkeys(reload_results, 0)
        self.lists: list[dict[str, Any]] = []  # reload.ListStatus.to_json() per list
        self.started_at = time.time()
        self._lock = threading.Lock()
        self.landing = SharedSlots(landing_stats.SLOTS)  # the landing process (resolver/landing)

    def set_index(self, header: dict[str, Any], loaded_at: float | None = None) -> None:
        with self._lock:
            self.index_header = header
            self.index_loaded_at = time.time() if loaded_at is None else loaded_at

    def set_lists(self, lists: list[dict[str, Any]]) -> None:
        with self._lock:
            self.lists = lists

    def count_reload(self, result: str) -> None:
        with self._lock:
            self.reloads[result] = self.reloads.get(result, 0) + 1

    def retire_slot(self, slot: int) -> None:
        snapshot = self.slots.read(slot)
        with self._lock:
            if snapshot is not None:
                self.retired.append(retire(snapshot))
                # Fold retired snapshots together so the list stays short under crash loops.
                if len(self.retired) > 8:
                    folded = merge(self.retired)
                    self.retired = [_as_snapshot(folded)]
        self.slots.clear(slot)

    def totals(self) -> dict[str, Any]:
        live = []
        for slot in range(self.slots.count):
            snap = self.slots.read(slot)
            if snap is not None:
                snap["live"] = True
                live.append(snap)
        with self._lock:
            return merge([*live, *self.retired])

    def ready(self) -> tuple[bool, str]:
        totals = self.totals()
        if not self.index_header:
            return False, "no index loaded"
        if totals["workers"] == 0:
            return False, "no worker has reported yet"
        if totals["upstreams"] and not any(u["up"] for u in totals["upstreams"].values()):
            return False, "no upstream is healthy"
        return True, "ready"

    def top(self, totals: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        totals = totals if totals is not None else self.totals()
        ranked = sorted(totals["top"].items(), key=lambda kv: kv[1], reverse=True)[: self.top_k]
        return [{"domain": d, "list": lst, "queries": n} for (d, lst), n in ranked]


def _as_snapshot(total: dict[str, Any]) -> dict[str, Any]:
    """Turn a merge() result back into snapshot shape (for folding retired workers)."""
    return {
        "live": False,
        "cells": total["cells"],
        "blocked": [[*labels, n] for labels, n in total["blocked"].items()],
        "histogram": total["histogram"],
        "duration_sum": total["duration_sum"],
        "truncated": total["truncated"],
        "send_errors": total["send_errors"],
        **{key: total[key] for key in _INFLIGHT_COUNTERS},
        **{key: total[key] for key in _WORKER_COUNTERS},
        "top": [[d, lst, n] for (d, lst), n in total["top"].items()],
        "cache": total["cache"],
        "upstreams": [
            {"address": address, **{k: v for k, v in up.items() if k != "live"}}
            for address, up in total["upstreams"].items()
        ],
    }


class BlokirCollector(Collector):
    """Publishes the hub's totals at scrape time."""

    def __init__(self, hub: MetricsHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        totals = hub.totals()
        yield from _query_metrics(totals)
        yield from _cache_metrics(totals)
        yield from _upstream_metrics(totals)
        yield from _list_metrics(hub)
        slots = hub.landing
        yield from landing_stats.landing_metrics(
            landing_stats.merge([slots.read(i) for i in range(slots.count)])
        )
        top = GaugeMetricFamily(
            "blokir_top_blocked_domain_queries",
            "Approximate queries for the most blocked names (space-saving sketch, top K only)",
            labels=["domain", "list"],
        )
        for row in hub.top(totals):
            top.add_metric([row["domain"], row["list"]], row["queries"])
        yield top
        workers = GaugeMetricFamily("blokir_workers", "Worker processes reporting")
        workers.add_metric([], totals["workers"])
        yield workers
        info = GaugeMetricFamily(
            "blokir_build_info",
            "Version information; compiled: whether the hot path runs compiled (setup.py)",
            labels=["version", "python", "compiled"],
        )
        info.add_metric([__version__, platform.python_version(), str(NATIVE.compiled).lower()], 1)
        yield info
        started = GaugeMetricFamily(
            "blokir_start_time_seconds", "When the supervisor started (Unix time)"
        )
        started.add_metric([], hub.started_at)
        yield started


def _query_metrics(totals: dict[str, Any]) -> Iterator[Metric]:
    queries = CounterMetricFamily(
        "blokir_queries",
        "DNS queries by transport, query type and outcome",
        labels=["transport", "qtype", "outcome"],
    )
    cells = totals["cells"]
    for t, transport in enumerate(TRANSPORTS):
        for q, qtype in enumerate((*QTYPES, "other")):
            for o, outcome in enumerate(OUTCOMES):
                value = cells[(t * N_QTYPES + q) * N_OUTCOMES + o]
                if value or (q == 0 and t == 0):  # keep every outcome present for dashboards
                    queries.add_metric([transport, qtype, outcome], value)
    yield queries
    blocked = CounterMetricFamily(
        "blokir_blocked",
        "Blocked answers by list, category, action and client group (including blocked via CNAME)",
        labels=["list", "category", "action", "group"],
    )
    for labels, n in sorted(totals["blocked"].items()):
        blocked.add_metric(list(labels), n)
    yield blocked
    histogram = HistogramMetricFamily(
        "blokir_query_duration_seconds",
        "Time from receiving a query to sending its answer, by outcome",
        labels=["outcome"],
    )
    for o, outcome in enumerate(OUTCOMES):
        row = totals["histogram"][o * (N_BUCKETS + 1) : (o + 1) * (N_BUCKETS + 1)]
        running, buckets = 0, []
        for bound, count in zip((*(repr(b) for b in BUCKET_BOUNDS), "+Inf"), row, strict=True):
            running += count
            buckets.append((bound, running))
        histogram.add_metric([outcome], buckets, totals["duration_sum"][o])
    yield histogram
    for name, key, text in (
        ("blokir_truncated_answers", "truncated", "UDP answers sent truncated (TC=1)"),
        ("blokir_send_errors", "send_errors", "Answers the kernel refused to send"),
    ):
        family = CounterMetricFamily(name, text)
        family.add_metric([], totals[key])
        yield family
    tcp = GaugeMetricFamily("blokir_tcp_connections", "Open DNS-over-TCP connections")
    tcp.add_metric([], totals["tcp_connections"])
    yield tcp
    encrypted = GaugeMetricFamily(
        "blokir_encrypted_connections",
        "Open DoT and DoH connections, TLS handshakes in progress included",
        labels=["transport"],
    )
    for transport, key in _CONNECTION_GAUGES.items():
        encrypted.add_metric([transport], totals.get(key, 0))
    yield encrypted
    for name, label, text, keys in _LABELLED_COUNTERS:
        family = CounterMetricFamily(name, text, labels=[label])
        for value, key in keys.items():
            family.add_metric([value], totals[key])
        yield family
    for name, key, text in _PLAIN_COUNTERS:
        family = CounterMetricFamily(name, text)
        family.add_metric([], totals[key])
        yield family


def _cache_metrics(totals: dict[str, Any]) -> Iterator[Metric]:
    cache = totals["cache"]
    entries = GaugeMetricFamily("blokir_cache_entries", "Answers in the cache")
    entries.add_metric([], cache.get("entries", 0))
    yield entries
    size = GaugeMetricFamily("blokir_cache_bytes", "Bytes charged to the cache")
    size.add_metric([], cache.get("bytes", 0))
    yield size
    memo = GaugeMetricFamily("blokir_answer_memo_entries", "Remembered UDP answers")
    memo.add_metric([], totals["memo_entries"])
    yield memo
    for name, key, text in (
        ("blokir_cache_hits", "hits", "Cache lookups that found a fresh answer"),
        ("blokir_cache_misses", "misses", "Cache lookups that found nothing fresh"),
        ("blokir_cache_evictions", "evictions", "Answers evicted to stay within bounds"),
    ):
        family = CounterMetricFamily(name, text)
        family.add_metric([], cache.get(key, 0))
        yield family


def _upstream_metrics(totals: dict[str, Any]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "blokir_upstream_requests",
        "Upstream tries by result",
        labels=["upstream", "result"],
    )
    up = GaugeMetricFamily(
        "blokir_upstream_up", "1 when the upstream is healthy", labels=["upstream"]
    )
    duration = HistogramMetricFamily(
        "blokir_upstream_duration_seconds",
        "Time until an upstream answered a try (answered tries only)",
        labels=["upstream"],
    )
    for address, stats in sorted(totals["upstreams"].items()):
        answered = stats["responses"] - stats["failure_rcodes"]
        for result, value in (
            ("answered", answered),
            ("servfail_or_refused", stats["failure_rcodes"]),
            ("timeout", stats["timeouts"]),
            ("error", stats["errors"]),
            ("tcp_fallback", stats["tcp_fallbacks"]),
        ):
            requests.add_metric([address, result], value)
        up.add_metric([address], stats["up"])
        running, buckets = 0, []
        row = stats["buckets"] or [0] * (N_BUCKETS + 1)
        for bound, count in zip((*(repr(b) for b in BUCKET_BOUNDS), "+Inf"), row, strict=True):
            running += count
            buckets.append((bound, running))
        duration.add_metric([address], buckets, stats["duration_sum"])
    yield requests
    yield up
    yield duration
    inflight = GaugeMetricFamily(
        "blokir_upstream_inflight", "Upstream queries open now (one per distinct question)"
    )
    inflight.add_metric([], totals["upstream_inflight"])
    yield inflight
    peak = GaugeMetricFamily(
        "blokir_upstream_inflight_peak",
        "Most upstream queries open at once since each worker started (summed over workers)",
    )
    peak.add_metric([], totals["upstream_inflight_peak"])
    yield peak
    coalesced = CounterMetricFamily(
        "blokir_upstream_coalesced",
        "Cache misses that waited on an identical upstream query already open",
    )
    coalesced.add_metric([], totals["upstream_coalesced"])
    yield coalesced
    rejected = CounterMetricFamily(
        "blokir_upstream_inflight_rejected",
        "Queries not sent upstream because an in-flight cap was full (answered stale or SERVFAIL)",
        labels=["scope"],
    )
    rejected.add_metric(["total"], totals["inflight_rejected_total"])
    rejected.add_metric(["zone"], totals["inflight_rejected_zone"])
    yield rejected


def index_metrics(header: dict[str, Any], loaded_at: float) -> Iterator[Metric]:
    """The serving index's size, load and build time: exported by `blokir serve` and by the
    Unbound plugin's textfile (resolver/plugins/textfile.py) under the same names."""
    total = GaugeMetricFamily("blokir_index_entries", "Distinct names in the loaded index")
    total.add_metric([], header.get("count", 0))
    yield total
    loaded = GaugeMetricFamily(
        "blokir_index_loaded_timestamp_seconds", "When the serving index was loaded (Unix time)"
    )
    loaded.add_metric([], loaded_at)
    yield loaded
    built = GaugeMetricFamily(
        "blokir_index_built_timestamp_seconds", "When the serving index was compiled (Unix time)"
    )
    built.add_metric([], header.get("created", 0))
    yield built


def _list_metrics(hub: MetricsHub) -> Iterator[Metric]:
    header = hub.index_header
    entries = GaugeMetricFamily(
        "blokir_blocklist_entries", "Distinct names per list in the loaded index", labels=["list"]
    )
    rejected = CounterMetricFamily(
        "blokir_blocklist_rejected_lines",
        "List lines rejected at compile time, by reason",
        labels=["list", "reason"],
    )
    for source in header.get("sources", []):
        entries.add_metric([source["list"]], source.get("unique", 0))
        reasons = source.get("rejected") or {"none": 0}
        for reason, count in sorted(reasons.items()):
            rejected.add_metric([source["list"], reason], count)
    yield entries
    yield rejected
    yield from index_metrics(header, hub.index_loaded_at)
    reloads = CounterMetricFamily(
        "blokir_reloads",
        "List reloads (start, timer, file change, SIGHUP, blokir reload) by result",
        labels=["result"],
    )
    for result, count in sorted(hub.reloads.items()):
        reloads.add_metric([result], count)
    yield reloads
    updated = GaugeMetricFamily(
        "blokir_list_updated_timestamp_seconds",
        "When the serving copy of a list last changed: file mtime or download time (Unix time)",
        labels=["list", "kind"],
    )
    checked = GaugeMetricFamily(
        "blokir_list_checked_timestamp_seconds",
        "When a URL list was last downloaded or checked, successfully or not (Unix time)",
        labels=["list"],
    )
    source_ok = GaugeMetricFamily(
        "blokir_list_source_ok",
        "1 when the last download of a URL list worked (or it is a local file), else 0",
        labels=["list", "kind"],
    )
    for status in hub.lists:
        labels = [status["name"], status["kind"]]
        updated.add_metric(labels, status["updated_at"])
        failed = status["kind"] != "file" and status["last_result"] not in (
            "",
            "updated",
            "not_modified",
        )
        source_ok.add_metric(labels, 0 if failed else 1)
        if status["kind"] != "file":
            checked.add_metric([status["name"]], status["checked_at"])
    yield updated
    yield checked
    yield source_ok
    yield from _transfer_metrics(hub.lists)


def _transfer_metrics(lists: list[dict[str, Any]]) -> Iterator[Metric]:
    """The axfr lists (resolver/xfr/secondary.py): serial of the copy, attempts by outcome."""
    serial = GaugeMetricFamily(
        "blokir_list_zone_serial",
        "SOA serial of the serving copy of a zone-transfer list",
        labels=["list"],
    )
    transfers = CounterMetricFamily(
        "blokir_list_transfers",
        "Zone-transfer attempts since start, by what was asked (AXFR, IXFR, SOA: only the "
        "serial) and the result (updated, not_modified, or a failure reason)",
        labels=["list", "kind", "result"],
    )
    for status in lists:
        if status["kind"] != "axfr":
            continue
        if status.get("serial") is not None:
            serial.add_metric([status["name"]], status["serial"])
        for key, count in status.get("transfers", {}).items():
            kind, _, result = key.partition(" ")
            transfers.add_metric([status["name"], kind, result], count)
    yield serial
    yield transfers


# -- HTTP: /metrics, /healthz, /readyz, /api/top -------------------------------------------------


def bind_http(hub: MetricsHub, host: str, port: int) -> ThreadingHTTPServer:
    """The endpoint, bound but not yet serving (`serve_http`): the supervisor binds before it
    drops privileges and forks, and starts the thread after."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BlokirCollector(hub))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif path == "/healthz":
                self._reply(200, b"ok\n", "text/plain")
            elif path == "/readyz":
                ok, why = hub.ready()
                self._reply(200 if ok else 503, why.encode() + b"\n", "text/plain")
            elif path == "/api/top":
                body = json.dumps({"top": hub.top()}, indent=2).encode()
                self._reply(200, body, "application/json")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_http(server: ThreadingHTTPServer) -> None:
    """Serve `server` (from bind_http) in a daemon thread of the supervisor."""
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
