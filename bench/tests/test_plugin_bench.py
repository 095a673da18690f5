"""bench/plugin_bench.py: the workloads (the allowed ones really hold no listed name, the unique
one never repeats a name) and the assembly of runs into medians, goals, Markdown and history."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from bench import history, plugin_bench
from bench.servers import BenchError
from bench.workload import write_list


def test_unique_names_are_distinct_and_under_the_wildcard() -> None:
    names = plugin_bench.miss_names(5000)
    assert len(set(names)) == 5000
    assert all(name.endswith(f".{plugin_bench.MISS_LABEL}.{plugin_bench.ZONE}") for name in names)


def test_cached_names_are_zone_hosts_with_a_popular_few() -> None:
    names = plugin_bench.cached_names(20_000, hosts=1000, zipf=1.0, seed=3)
    hosts = {f"host{i}.{plugin_bench.ZONE}" for i in range(1000)}
    assert set(names) <= hosts
    counts = sorted((names.count(h) for h in set(names)), reverse=True)
    assert sum(counts[:10]) > 0.25 * len(names)  # 1% of the hosts: a Zipf head, not uniform


def test_listed_among_finds_listed_names_and_names_below_them(tmp_path: Path) -> None:
    listed = tmp_path / "list.txt"
    listed.write_text("Bad.Example\nother.test.\n")
    names = ["bad.example.", "www.bad.example.", "notbad.example.", "x.other.test.", "test."]
    assert plugin_bench.listed_among(names, listed) == {
        "bad.example.",
        "www.bad.example.",
        "x.other.test.",
    }


def test_allowed_workloads_hold_no_listed_name(tmp_path: Path) -> None:
    list_path = write_list(tmp_path / "list.txt", 20_000, seed=5)
    workloads = plugin_bench.allowed_workloads(
        tmp_path, list_path, seconds=0.05, queries=3000, seed=5
    )
    assert [w.name for w in workloads] == ["allowed", "allowed-cached"]
    unique, cached = workloads
    assert not unique.warmup and cached.warmup
    names = []
    for workload in workloads:
        lines = workload.query_file.read_text().splitlines()
        assert len(lines) == workload.queries
        names += [line.split()[0] for line in lines]
    assert len(set(unique.query_file.read_text().splitlines())) == unique.queries
    assert plugin_bench.listed_among(names, list_path) == set()


def test_allowed_workloads_refuse_a_list_that_blocks_them(tmp_path: Path) -> None:
    list_path = tmp_path / "list.txt"
    list_path.write_text(f"judi1.com\n{plugin_bench.MISS_LABEL}.{plugin_bench.ZONE}\n")
    with pytest.raises(BenchError, match="on the list"):
        plugin_bench.allowed_workloads(tmp_path, list_path, seconds=0.01, queries=100, seed=1)


def run(qps: dict[str, float], us: float, rss: float, first: float | None) -> dict[str, Any]:
    cells = {
        name: {
            "qps": value,
            "lost": 1,
            "cpu_us_per_answer": us,
            "server_cpu_pct": 99.0,
            "cachehit_pct": 0.0 if name == "allowed" else 97.0,
            "avg_latency_s": 0.001,
        }
        for name, value in qps.items()
    }
    result: dict[str, Any] = {"workloads": cells, "memory": {"rss_mib": rss, "pss_mib": rss / 2}}
    result["first_block_s" if first is not None else "first_answer_s"] = first or 0.1
    return result


def build_report() -> dict[str, Any]:
    alone = [
        run({"allowed": q, "allowed-cached": 50_000, "mixed": 30_000}, 30.0, 28.0, None)
        for q in (20_000, 21_000, 25_000)
    ]
    module = [
        run({"allowed": q, "allowed-cached": 49_000, "mixed": 24_000}, 36.0, rss, 0.4)
        for q, rss in ((15_000, 60.0), (17_000, 70.0), (18_000, 65.0))
    ]
    module[2]["workloads"]["allowed"]["warning"] = "the query file wrapped"
    rpz = [run({"allowed": 20_000, "mixed": 40_000}, 31.0, 3000.0, 70.0)]
    passing = [run({"allowed": 18_000}, 33.5, 30.0, None)]
    setups: dict[str, Any] = {}
    for name, runs in (
        ("unbound", alone),
        ("unbound+python", passing),
        ("unbound+blokir", module),
        ("unbound+rpz", rpz),
    ):
        setups[name] = {"runs": runs, "summary": plugin_bench.summarise(runs)}
    big = {"unbound+blokir": {"runs": module, "summary": plugin_bench.summarise(module)}}
    big["unbound+rpz"] = {"runs": [], "skipped": "skipped: would not fit"}
    out: dict[str, Any] = {
        "benchmark": "plugin",
        "started": "2026-12-04T18:00:00Z",
        "machine": {
            "nproc": 2,
            "cpu_model": "x",
            "memory_gib": 23.5,
            "versions": {"unbound": "1.17.1"},
            "pinned": {"servers": [1], "load": [0]},
        },
        "settings": {"runs": 3, "seconds": 5.0, "clients": 16, "quick": False},
        "sizes": {
            "1000000": {
                "setups": setups,
                "blokir_compile": {
                    "compile_wall_s": 2.5,
                    "compile_peak_rss_mib": 300.0,
                    "index_bytes": 15 * 2**20,
                },
            },
            "10000000": {"setups": big},
        },
    }
    out["goals"] = plugin_bench.goals(out)
    return out


def test_summary_takes_medians_per_workload() -> None:
    summary = build_report()["sizes"]["1000000"]["setups"]["unbound+blokir"]["summary"]
    allowed = summary["workloads"]["allowed"]
    assert allowed["qps_median"] == 17_000
    assert allowed["qps_all"] == [15_000, 17_000, 18_000]
    assert allowed["lost_total"] == 3
    assert allowed["warnings"] == ["the query file wrapped"]
    assert summary["workloads"]["mixed"]["warnings"] == []
    assert summary["rss_mib"] == 65.0 and summary["pss_mib"] == 32.5
    assert summary["first_block_s"] == 0.4 and summary["first_answer_s"] is None


def test_goals_read_mixed_and_report_the_allowed_overhead() -> None:
    got = {(row["size"], row["figure"]): row for row in build_report()["goals"]}
    mixed = got[(1_000_000, "mixed q/s, module / Unbound alone")]
    assert mixed["value"] == pytest.approx(24_000 / 30_000)
    assert mixed["goal"] == 0.85 and mixed["met"] is False
    allowed = got[(1_000_000, "allowed q/s, module / Unbound alone")]
    assert allowed["value"] == pytest.approx(17_000 / 21_000) and allowed["goal"] is None
    extra = got[(1_000_000, "allowed: module's Unbound CPU per answer above Unbound alone (us)")]
    assert extra["value"] == pytest.approx(6.0)
    own = got[(1_000_000, "allowed: module's Unbound CPU per answer above a pass-through (us)")]
    assert own["value"] == pytest.approx(2.5)
    rss = got[(1_000_000, "RSS, module / RPZ")]
    assert rss["value"] == pytest.approx(65 / 3000) and rss["met"] is True
    # 10M: no Unbound alone and no RPZ in the report, so no ratio is made up.
    assert not [key for key in got if key[0] == 10_000_000]


def test_markdown_has_a_row_per_setup_and_the_goals() -> None:
    text = plugin_bench.markdown(build_report())
    assert "| unbound+blokir | 17,000 | 36.0 | 0 | 49,000 |" in text
    assert "| unbound+rpz | skipped: would not fit |" in text
    assert "Index compiled in 2.5 s (peak RSS 300 MiB, 15.0 MiB file)." in text
    assert "1M: mixed q/s, module / Unbound alone: 0.80 (goal >= 0.85: NOT met)" in text
    assert "1M: RSS, module / RPZ: 0.02 (goal <= 0.10: met)" in text
    assert "note: unbound+blokir, allowed: the query file wrapped" in text


def test_history_rows_of_a_plugin_run() -> None:
    rows = history.rows(build_report(), commit="abc")
    assert {row["benchmark"] for row in rows} == {"plugin"}
    got = {(r["size"], r["server"], r["figure"]): r["value"] for r in rows}
    assert got[("1000000", "unbound+blokir", "allowed qps_median")] == "17000"
    assert got[("1000000", "unbound", "mixed cpu_us_per_answer_median")] == "30"
    assert got[("1000000", "unbound+rpz", "rss_mib")] == "3000"
    assert got[("10000000", "unbound+blokir", "first_block_s")] == "0.4"
    assert got[("1000000", "blokir index", "compile_wall_s")] == "2.5"
    assert ("1000000", "unbound", "first_block_s") not in got  # Unbound alone blocks nothing
    assert all(row["note"].startswith("pinned; 3 x 5.0 s") for row in rows)


def test_pass_through_script_hands_every_query_on(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("unboundmodule")
    names = ("MODULE_EVENT_NEW", "MODULE_EVENT_PASS", "MODULE_EVENT_MODDONE", "MODULE_EVENT_ERROR")
    for value, name in enumerate(names):
        setattr(fake, name, value)
    fake.MODULE_WAIT_MODULE, fake.MODULE_FINISHED, fake.MODULE_ERROR = 10, 11, 12  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "unboundmodule", fake)
    script: dict[str, Any] = {}
    exec(compile(plugin_bench.PASS_SCRIPT, "pass.py", "exec"), script)
    qstate = types.SimpleNamespace(ext_state=[None, None])
    for event, want in ((0, 10), (1, 10), (2, 11), (3, 12)):
        assert script["operate"](1, event, qstate, None) is True
        assert qstate.ext_state[1] == want


def test_options_quick_defaults_and_unknown_names() -> None:
    quick = plugin_bench.parse_args(["--quick"])
    assert quick.size_list == [10_000] and quick.runs == 1 and quick.seconds == 2.0
    assert quick.setup_list == list(plugin_bench.SETUPS)
    assert quick.workload_list == list(plugin_bench.WORKLOADS)
    full = plugin_bench.parse_args(["--sizes", "1M,10M", "--workloads", "allowed"])
    assert full.size_list == [1_000_000, 10_000_000] and full.runs == 3
    assert full.workload_list == ["allowed"]
    for bad in (["--setups", "unbound,bind"], ["--workloads", "random"]):
        with pytest.raises(SystemExit):
            plugin_bench.parse_args(bad)


def test_rpz_is_left_out_where_it_would_not_fit() -> None:
    setups, skipped = plugin_bench.setups_at(10**12, list(plugin_bench.SETUPS))
    assert "unbound+rpz" not in setups and "would need" in skipped["unbound+rpz"]
    assert setups == ["unbound", "unbound+python", "unbound+blokir"]
    setups, skipped = plugin_bench.setups_at(1000, list(plugin_bench.SETUPS))
    assert setups == list(plugin_bench.SETUPS) and skipped == {}
