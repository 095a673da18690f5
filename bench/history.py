"""The benchmarks' history: one CSV row per figure of every run, in bench/results/history.csv.

bench/results/ keeps only the latest run of each benchmark in full (resolver-latest.*,
reload-latest.*, plugin-latest.*, encrypted-latest.*); the figures of every run go here instead,
so runs stay comparable without a file per run. resolver_bench.py, reload_bench.py,
plugin_bench.py and encrypted_bench.py call `record` when they write their results. Add the
rows of result files written earlier (a run already in the CSV is replaced, not repeated):

    python bench/history.py bench/results/*.json
    python bench/history.py old-run.json --csv /tmp/history.csv --commit 1a2b3c4
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HISTORY_NAME = "history.csv"
COLUMNS = ("date", "commit", "benchmark", "size", "server", "figure", "value", "unit", "note")

# Per server and list size, from the summary resolver_bench.py writes for each peer.
RESOLVER_FIGURES = (
    ("qps_median", "q/s"),
    ("spread_pct", "%"),
    ("queries_per_cpu_s", "q/CPU-s"),
    ("user_us_per_answer", "us"),
    ("system_us_per_answer", "us"),
    ("p50_ms", "ms"),
    ("p95_ms", "ms"),
    ("p99_ms", "ms"),
    ("lost_total", "queries"),
    ("rss_mib", "MiB"),
    ("pss_mib", "MiB"),
    ("first_block_s", "s"),
    ("cachehit_pct", "%"),
    ("querylog_bytes", "bytes"),
    ("querylog_bytes_per_answer", "bytes"),
    ("querylog_writer_us_per_answer", "us"),
)
# From reload_bench.py's summary over its runs.
RELOAD_FIGURES = (
    ("peak_qps", "q/s"),
    ("load_rate", "q/s"),
    ("reloads", "reloads"),
    ("reloads_applied", "reloads"),
    ("dnsperf_lost", "queries"),
    ("probe_lost", "queries"),
    ("probe_wrong", "answers"),
    ("reload_total_s", "s"),
    ("build_s", "s"),
    ("build_peak_rss_mib", "MiB"),
    ("worker_swap_ms", "ms"),
    ("worker_swap_max_ms", "ms"),
    ("during_p50_ms", "ms"),
    ("during_p99_ms", "ms"),
    ("outside_p99_ms", "ms"),
    ("rss_before_mib", "MiB"),
    ("rss_during_mib", "MiB"),
    ("rss_after_mib", "MiB"),
)


def _value(value: float) -> str:
    """At most three decimals, no trailing zeros: 111606.495125 -> 111606.495, 0.0 -> 0."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


# From plugin_bench.py's summary per setup: per workload, then the setup's own figures.
PLUGIN_WORKLOAD_FIGURES = (
    ("qps_median", "q/s"),
    ("cpu_us_per_answer_median", "us"),
    ("cachehit_pct_median", "%"),
    ("lost_total", "queries"),
)
PLUGIN_SETUP_FIGURES = (("rss_mib", "MiB"), ("pss_mib", "MiB"), ("first_block_s", "s"))


# From encrypted_bench.py's summary per server and transport: `<transport> <figure>`.
ENCRYPTED_FIGURES = (
    ("qps", "q/s"),
    ("user_us_per_answer", "us"),
    ("system_us_per_answer", "us"),
    ("avg_latency_ms", "ms"),
    ("lost", "queries"),
)


def benchmark_of(report: dict[str, Any]) -> str:
    """The report's own `benchmark` (plugin_bench.py), else `resolver` for resolver_bench.py's
    results (figures per list size), `reload` for reload_bench.py's (one summary)."""
    named = report.get("benchmark")
    if isinstance(named, str):
        return named
    return "resolver" if "sizes" in report else "reload"


def _run_note(report: dict[str, Any], base: dict[str, str], *extra: str) -> str:
    """A row's note: pinned or not, `extra`, runs x seconds, --quick, then the caller's note."""
    settings = report.get("settings", {})
    notes = ["pinned" if report.get("machine", {}).get("pinned") else "unpinned", *extra]
    notes.append(f"{settings.get('runs', '?')} x {settings.get('seconds', '?')} s")
    if settings.get("quick"):
        notes.append("--quick")
    return "; ".join(notes + ([base["note"]] if base["note"] else []))


def _resolver_rows(report: dict[str, Any], base: dict[str, str]) -> list[dict[str, str]]:
    hot_path = report.get("machine", {}).get("blokir_hot_path") or "not recorded"
    querylog_dir = report.get("settings", {}).get("querylog_dir")
    where = [f"query log in {querylog_dir}"] if querylog_dir else []
    note = _run_note(report, base, f"hot path: {hot_path}", *where)
    out: list[dict[str, str]] = []
    for size_key in sorted(report.get("sizes", {}), key=int):
        entry = report["sizes"][size_key]
        for server, peer in entry.get("peers", {}).items():
            summary = peer.get("summary") or {}
            for figure, unit in RESOLVER_FIGURES:
                value = summary.get(figure)
                if figure == "first_block_s" and value is None:
                    value, figure = summary.get("first_answer_s"), "first_answer_s"
                if value is not None:
                    row = dict(size=size_key, server=server, figure=figure, value=_value(value))
                    out.append(base | row | dict(unit=unit, note=note))
        built = entry.get("blokir_compile") or {}
        looked = entry.get("blokir_index") or {}
        index = [
            ("compile_wall_s", built.get("compile_wall_s"), "s"),
            ("compile_peak_rss_mib", built.get("compile_peak_rss_mib"), "MiB"),
            ("index_mib", (built.get("index_bytes") or 0) / 2**20 or None, "MiB"),
            ("open_ms", looked.get("open_ms"), "ms"),
        ] + [
            (f"lookups_per_s_{kind}", rate, "lookups/s")
            for kind, rate in sorted(looked.get("lookups_per_s", {}).items())
        ]
        for figure, value, unit in index:
            if value is not None:
                row = dict(size=size_key, server="blokir index", figure=figure, value=_value(value))
                out.append(base | row | dict(unit=unit, note=note))
    return out


def _reload_rows(report: dict[str, Any], base: dict[str, str]) -> list[dict[str, str]]:
    settings = report.get("settings", {})
    summary = report.get("summary") or {}
    notes = [f"{summary.get('runs', '?')} runs of {settings.get('reloads', '?')} reloads"]
    if settings.get("quick"):
        notes.append("--quick")
    note = "; ".join(notes + ([base["note"]] if base["note"] else []))
    server = f"blokir{settings.get('workers', '')}"
    size = str(settings.get("size", ""))
    where = dict(size=size, server=server, note=note)
    return [
        base | where | dict(figure=figure, value=_value(summary[figure]), unit=unit)
        for figure, unit in RELOAD_FIGURES
        if summary.get(figure) is not None
    ]


def _plugin_rows(report: dict[str, Any], base: dict[str, str]) -> list[dict[str, str]]:
    """Per list size and setup: `<workload> <figure>` for each workload, its memory and start,
    and the index's compile time (server `blokir index`)."""
    note = _run_note(report, base)
    out: list[dict[str, str]] = []

    def add(size: str, server: str, figure: str, value: Any, unit: str) -> None:
        if value is not None:
            row = dict(size=size, server=server, figure=figure, value=_value(value))
            out.append(base | row | dict(unit=unit, note=note))

    for size in sorted(report.get("sizes", {}), key=int):
        entry = report["sizes"][size]
        for setup, result in entry.get("setups", {}).items():
            summary = result.get("summary") or {}
            for workload, cells in summary.get("workloads", {}).items():
                for figure, unit in PLUGIN_WORKLOAD_FIGURES:
                    add(size, setup, f"{workload} {figure}", cells.get(figure), unit)
            for figure, unit in PLUGIN_SETUP_FIGURES:
                add(size, setup, figure, summary.get(figure), unit)
        add(
            size,
            "blokir index",
            "compile_wall_s",
            entry.get("blokir_compile", {}).get("compile_wall_s"),
            "s",
        )
    return out


def _encrypted_rows(report: dict[str, Any], base: dict[str, str]) -> list[dict[str, str]]:
    settings = report.get("settings", {})
    note = _run_note(report, base, f"dnsperf -c {settings.get('clients', '?')}")
    size = str(settings.get("size", ""))
    out: list[dict[str, str]] = []
    for server, modes in (report.get("summary") or {}).items():
        for mode, figures in modes.items():
            for figure, unit in ENCRYPTED_FIGURES:
                if figures.get(figure) is not None:
                    row = dict(size=size, server=server, figure=f"{mode} {figure}")
                    value = dict(value=_value(figures[figure]), unit=unit, note=note)
                    out.append(base | row | value)
    return out


def rows(report: dict[str, Any], commit: str = "", note: str = "") -> list[dict[str, str]]:
    """The CSV rows of one run's results: one per server, list size and figure."""
    benchmark = benchmark_of(report)
    base = dict(date=str(report.get("started", "")), commit=commit, benchmark=benchmark, note=note)
    if benchmark == "resolver":
        return _resolver_rows(report, base)
    if benchmark == "plugin":
        return _plugin_rows(report, base)
    if benchmark == "encrypted":
        return _encrypted_rows(report, base)
    return _reload_rows(report, base)


def read(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def merge(old: Iterable[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """`old` without the runs `new` holds (same date and benchmark), then `new`; in date order,
    so re-adding a run replaces its rows instead of repeating them."""
    runs = {(row["date"], row["benchmark"]) for row in new}
    kept = [row for row in old if (row["date"], row["benchmark"]) not in runs]
    # sorted is stable: each run's rows keep their order.
    return sorted(kept + new, key=lambda row: (row["date"], row["benchmark"]))


def write(path: Path, table: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    tmp.replace(path)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=HERE, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def git_commit() -> str:
    """The checkout's commit, with `+` when it has uncommitted changes; "" outside git."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if dirty else "")


def write_latest(report: dict[str, Any], directory: Path, stem: str, markdown: str) -> list[str]:
    """A benchmark's latest run in full (`stem`.json and `stem`.md in `directory`), and its
    figures appended to history.csv there; what was done."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    md_path.write_text(markdown)
    return [f"wrote {json_path}", f"wrote {md_path}", record(report, directory)]


def record(report: dict[str, Any], directory: Path, commit: str | None = None) -> str:
    """Append one run's rows to `directory`/history.csv; what was done."""
    path = directory / HISTORY_NAME
    new = rows(report, git_commit() if commit is None else commit)
    write(path, merge(read(path), new))
    return f"history: {len(new)} rows in {path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path, nargs="+", help="results files of either benchmark")
    parser.add_argument(
        "--csv", type=Path, default=HERE / "results" / HISTORY_NAME, help="the history file"
    )
    parser.add_argument("--commit", default="", help="the commit measured, when known")
    parser.add_argument("--note", default="", help="added to every row's note")
    args = parser.parse_args(argv)
    table = read(args.csv)
    for path in args.json:
        report = json.loads(path.read_text())
        note = "; ".join(filter(None, (args.note, f"from {path.name}")))
        new = rows(report, args.commit, note=note)
        table = merge(table, new)
        print(f"{path.name}: {len(new)} rows ({benchmark_of(report)}, {report.get('started')})")
    write(args.csv, table)
    print(f"wrote {args.csv} ({len(table)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
