"""bench/reload_bench.py's own logic: the list versions and the split of probe latencies into
"during a reload" and "outside" (the figures the zero-loss claim rests on)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.reload_bench import ListVersions, latency_figures, parse_log_time, split_probe


def test_versions_differ_by_the_extras_and_keep_the_base(tmp_path: Path) -> None:
    base = tmp_path / "base.txt"
    base.write_text("".join(f"listed{i}.example.com\n" for i in range(100)))
    versions = ListVersions(base, size=100, diff=30, seed=7)
    target = tmp_path / "list.txt"
    versions.write(target, 0, "marker-0.bench.example.")
    first = set(target.read_text().split())
    versions.write(target, 1, "marker-1.bench.example.")
    second = set(target.read_text().split())
    base_names = set(base.read_text().split())
    assert base_names <= first and base_names <= second  # nothing blocked is ever dropped
    assert len(first) == len(second) == 100 + 30 + 1
    assert len(first ^ second) == 2 * (30 + 1)  # two extra sets and two markers, disjoint
    assert "marker-1.bench.example" in second and "marker-0.bench.example" not in second
    assert not list(tmp_path.glob(".list.txt.tmp-*"))  # the temporary file was renamed away


def test_split_probe_by_windows() -> None:
    # Ten queries sent one second apart; the 4th is lost, the 6th is slow.
    sent_at = [float(t) for t in range(10)]
    latency: list[float | None] = [0.001] * 10
    latency[3] = None
    latency[5] = 0.250
    probe = {
        "rate": 1.0,
        "sent_at": sent_at,
        "latency": latency,
        "wrong": [7],
        "blocked": [1, 5],
    }
    figures = split_probe(probe, [(2.5, 5.5)])  # sends at 3, 4 and 5 fall inside
    assert figures["sent"] == 10 and figures["lost"] == 1 and figures["wrong"] == 1
    assert figures["during"]["count"] == 3 and figures["during"]["lost"] == 1
    assert math.isclose(figures["during"]["max_ms"], 250.0)
    assert figures["outside"]["count"] == 7 and figures["outside"]["lost"] == 0
    assert math.isclose(figures["outside"]["max_ms"], 1.0)
    window = figures["per_reload"][0]
    assert math.isclose(window["max_sent_s"], 5 - 2.5)
    assert figures["during_blocked"]["count"] == 1


def test_latency_figures_all_lost() -> None:
    figures = latency_figures(np.array([math.nan, math.nan]))
    assert figures == {"count": 2, "lost": 2}


def test_parse_log_time_round_trip() -> None:
    import time

    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    millis = int(now * 1000) % 1000
    assert abs(parse_log_time(f"{stamp},{millis:03d}") - now) < 0.002
