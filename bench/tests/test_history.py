"""bench/history.py: the rows a run adds to bench/results/history.csv, and that adding a run
again replaces its rows instead of repeating them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import history


def resolver_report(started: str, qps: float) -> dict[str, Any]:
    summary = {"qps_median": qps, "rss_mib": 140.25, "p99_ms": None, "first_answer_s": 0.2}
    return {
        "started": started,
        "machine": {"pinned": {"servers": [1], "load": [0]}, "blokir_hot_path": "compiled"},
        "settings": {"runs": 5, "seconds": 10.0},
        "sizes": {
            "1000000": {
                "peers": {
                    "blokir1": {"summary": summary},
                    "unbound1": {"skipped": "would not fit"},
                },
                "blokir_compile": {"compile_wall_s": 1.1, "index_bytes": 15 * 2**20},
            }
        },
    }


def reload_report(started: str) -> dict[str, Any]:
    return {
        "started": started,
        "settings": {"size": 1_000_000, "workers": 1, "reloads": 5},
        "summary": {"runs": 3, "dnsperf_lost": 0, "worker_swap_ms": 4.5},
    }


def test_resolver_rows() -> None:
    rows = history.rows(resolver_report("2026-11-29T04:02:34Z", 111606.495125), commit="abc")
    got = {(r["server"], r["figure"]): (r["value"], r["unit"]) for r in rows}
    assert got == {
        ("blokir1", "qps_median"): ("111606.495", "q/s"),
        ("blokir1", "rss_mib"): ("140.25", "MiB"),
        ("blokir1", "first_answer_s"): ("0.2", "s"),  # no blocked answer timed: the first answer
        ("blokir index", "compile_wall_s"): ("1.1", "s"),
        ("blokir index", "index_mib"): ("15", "MiB"),
    }
    assert {r["commit"] for r in rows} == {"abc"}
    assert {r["size"] for r in rows} == {"1000000"}
    assert rows[0]["note"].startswith("pinned; hot path: compiled; 5 x 10.0 s")
    assert set(rows[0]) == set(history.COLUMNS)


def test_reload_rows() -> None:
    rows = history.rows(reload_report("2026-11-28T16:41:17Z"))
    assert [(r["benchmark"], r["server"], r["figure"], r["value"]) for r in rows] == [
        ("reload", "blokir1", "dnsperf_lost", "0"),
        ("reload", "blokir1", "worker_swap_ms", "4.5"),
    ]


def test_record_appends_runs_and_replaces_a_run_added_again(tmp_path: Path) -> None:
    history.record(resolver_report("2026-11-29T04:02:34Z", 100.0), tmp_path, commit="a")
    history.record(reload_report("2026-11-28T16:41:17Z"), tmp_path, commit="a")
    history.record(resolver_report("2026-11-29T04:02:34Z", 200.0), tmp_path, commit="b")
    table = history.read(tmp_path / history.HISTORY_NAME)
    assert [r["date"] for r in table] == sorted(r["date"] for r in table)  # oldest first
    qps = [(r["value"], r["commit"]) for r in table if r["figure"] == "qps_median"]
    assert qps == [("200", "b")]
    assert sum(r["benchmark"] == "reload" for r in table) == 2


def test_encrypted_rows() -> None:
    figures = {"qps": 23353.4, "user_us_per_answer": 30.5, "avg_latency_ms": 4.14, "lost": 0}
    report = {
        "benchmark": "encrypted",
        "started": "2026-12-05T08:20:00Z",
        "machine": {"pinned": {"servers": [1], "load": [0]}},
        "settings": {"size": 100_000, "runs": 3, "seconds": 5.0, "clients": 8},
        "summary": {"blokir": {"dot": figures}, "unbound": {"doh": {"qps": 9000.0}}},
    }
    rows = history.rows(report, commit="abc")
    got = {(r["server"], r["figure"]): (r["value"], r["unit"]) for r in rows}
    assert got == {
        ("blokir", "dot qps"): ("23353.4", "q/s"),
        ("blokir", "dot user_us_per_answer"): ("30.5", "us"),
        ("blokir", "dot avg_latency_ms"): ("4.14", "ms"),
        ("blokir", "dot lost"): ("0", "queries"),
        ("unbound", "doh qps"): ("9000", "q/s"),
    }
    assert {(r["benchmark"], r["size"]) for r in rows} == {("encrypted", "100000")}
    assert rows[0]["note"] == "pinned; dnsperf -c 8; 3 x 5.0 s"
