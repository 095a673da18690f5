"""Tables and a chart from the resolver benchmark's figures (bench/resolver_bench.py).

`resolver_bench.py` calls `write` at the end of a run: `<stem>.json` (every figure), `<stem>.md`
(the goals, a table per list size, blokir's index figures) and `<stem>.png` (queries/s and memory
per server and list size). The chart needs matplotlib (`pip install -e '.[bench]'`); without it
the chart is skipped with a message and everything else is written.

Redraw the table and the chart from a JSON file of an earlier run:

    python bench/report.py bench/results/2026-11-28.json                 # Markdown on stdout
    python bench/report.py bench/results/2026-11-28.json --md x.md --png x.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GOAL_SIZE = 1_000_000  # the q/s and memory goals are stated for the 1M list
START_GOAL_SIZE = 10_000_000  # the start-up goal for the 10M list
NOISY_SPREAD_PCT = 10  # runs further apart than this: the machine was not quiet
# The order of the servers in tables and the chart; others follow in the order they ran.
ORDER = (
    "blokir1",
    "blokir2",
    "blokirq1",
    "blokirq2",
    "unbound1",
    "unbound2",
    "pdns1",
    "pdns2",
    "dnsdist1",
    "dnsdist2",
    "dnsmasq1",
    "ceiling1",
    "ceiling2",
)
# Ratio columns besides "vs unbound1" and "vs ceiling1", shown when that peer ran at the size.
EXTRA_REFERENCES = ("pdns1", "dnsdist1")
MATPLOTLIB_MISSING = (
    "chart skipped: matplotlib is not installed (pip install -e '.[bench]', or pip install "
    "matplotlib)"
)


def querylog_figures(figures: dict[str, Any]) -> str:
    """What a blokirq peer's query log wrote in a run (or the median of its runs): its size,
    bytes per answer and, where measured, the writer process's CPU per answer. One text for
    the run lines and the report."""
    writer = figures.get("querylog_writer_us_per_answer")
    return (
        f"{figures['querylog_bytes'] / 2**20:,.1f} MiB "
        f"({figures['querylog_bytes_per_answer']:.1f} B per answer"
        + (f", writer {writer:.2f} us CPU per answer" if writer is not None else "")
        + ")"
    )


def size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size % 1_000 == 0:
        return f"{size // 1_000}k"
    return f"{size:,}"


def _sizes(report: dict[str, Any]) -> list[int]:
    return sorted(int(s) for s in report.get("sizes", {}))


def _peers(report: dict[str, Any], size: int) -> dict[str, dict[str, Any]]:
    peers: dict[str, dict[str, Any]] = report["sizes"][str(size)].get("peers", {})
    return peers


def _summary(report: dict[str, Any], size: int, peer: str) -> dict[str, Any] | None:
    entry = report.get("sizes", {}).get(str(size), {}).get("peers", {}).get(peer, {})
    summary: dict[str, Any] | None = entry.get("summary")
    return summary


def _server_names(report: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for size in _sizes(report):
        for name in _peers(report, size):
            if name not in seen:
                seen.append(name)
    ranked = [n for n in ORDER if n in seen]
    return ranked + [n for n in seen if n not in ranked]


def _first_s(summary: dict[str, Any]) -> float | None:
    value = summary.get("first_block_s")
    return summary.get("first_answer_s") if value is None else value


def _num(value: float | None, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


# -- goals ------------------------------------------------------------------------------------


def _goal_size(report: dict[str, Any], wanted: int, peers: tuple[str, ...]) -> int | None:
    """`wanted` when every peer has figures there, else the largest size where they all do."""
    usable = [s for s in _sizes(report) if all(_summary(report, s, p) for p in peers)]
    if wanted in usable:
        return wanted
    return max(usable) if usable else None


def run_pairs(first: list[float], second: list[float]) -> list[float]:
    """q/s ratios of the i-th run of one server to the i-th run of another. The runs alternate
    (bench/resolver_bench.py), so each pair ran minutes apart, in the same phase of a noisy
    host; the ratio of medians can hide that one server wins only in the host's good phases."""
    return [a / b for a, b in zip(first, second, strict=False) if b]


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's goals, each with its measured value and whether it was met. Reported, never
    asserted. A goal measured at another size than the one it is stated for says so."""
    out: list[dict[str, Any]] = []

    def add(
        goal: str,
        wanted: int,
        peers: tuple[str, ...],
        target: str,
        compute: Any,
        better: str,
        threshold: float,
    ) -> None:
        size = _goal_size(report, wanted, peers)
        row: dict[str, Any] = {"goal": goal, "target": target, "stated_at": wanted, "size": size}
        if size is None:
            row.update(value=None, measured="not measured", met=None)
        else:
            summaries = [_summary(report, size, p) for p in peers]
            value, detail = compute(*summaries)
            if compute is qps_ratio:  # the spread is of q/s: it says nothing of memory or start
                spreads = [x.get("spread_pct") or 0 for x in summaries if x and x["runs"] > 1]
                row["spread_pct"] = max(spreads) if spreads else None
            met = (
                None
                if value is None
                else (value >= threshold if better == "higher" else value <= threshold)
            )
            row.update(value=value, measured=detail, met=met)
        out.append(row)

    def qps_ratio(a: dict[str, Any], b: dict[str, Any]) -> tuple[float | None, str]:
        if not a["qps_median"] or not b["qps_median"]:
            return None, "-"
        ratio = a["qps_median"] / b["qps_median"]
        detail = f"{ratio:.2f}x ({a['qps_median']:,.0f} / {b['qps_median']:,.0f} q/s"
        if a.get("queries_per_cpu_s") and b.get("queries_per_cpu_s"):
            # Less sensitive to dnsperf and other processes sharing the cores.
            per_cpu = a["queries_per_cpu_s"] / b["queries_per_cpu_s"]
            detail += f"; per server CPU-second {per_cpu:.2f}x"
        pairs = run_pairs(a.get("qps_all") or [], b.get("qps_all") or [])
        if len(pairs) > 1:
            ahead = sum(pair > 1.0 for pair in pairs)
            detail += (
                f"; run pairs: median {statistics.median(pairs):.2f}x, ahead in {ahead} of "
                f"{len(pairs)}"
            )
        return ratio, detail + ")"

    def rss_ratio(a: dict[str, Any], b: dict[str, Any]) -> tuple[float | None, str]:
        if not a["rss_mib"] or not b["rss_mib"]:
            return None, "-"
        ratio = a["rss_mib"] / b["rss_mib"]
        pss = (
            f"; PSS {a['pss_mib'] / b['pss_mib']:.3f}x"
            if a.get("pss_mib") and b.get("pss_mib")
            else ""
        )
        return ratio, f"{ratio:.3f}x ({a['rss_mib']:,.0f} / {b['rss_mib']:,.0f} MiB RSS{pss})"

    def start(a: dict[str, Any]) -> tuple[float | None, str]:
        value = a.get("first_block_s")
        return value, _num(value, ".2f") + " s"

    add(
        "blokir, 1 worker: q/s vs Unbound, 1 thread",
        GOAL_SIZE,
        ("blokir1", "unbound1"),
        ">= 1.0x",
        qps_ratio,
        "higher",
        1.0,
    )
    add(
        "blokir, 1 worker: q/s vs the Python ceiling",
        GOAL_SIZE,
        ("blokir1", "ceiling1"),
        ">= 0.8x",
        qps_ratio,
        "higher",
        0.8,
    )
    add(
        "blokir, 1 worker: RSS vs Unbound, 1 thread, same list",
        GOAL_SIZE,
        ("blokir1", "unbound1"),
        "<= 0.15x",
        rss_ratio,
        "lower",
        0.15,
    )
    if any(_summary(report, size, "blokirq1") for size in _sizes(report)):
        add(
            "blokir, 1 worker: q/s with the dnstap query log on (1 in 100 allowed) vs off",
            GOAL_SIZE,
            ("blokirq1", "blokir1"),
            ">= 0.95x",
            qps_ratio,
            "higher",
            0.95,
        )
    add(
        "blokir: first blocked answer after start, compiled index",
        START_GOAL_SIZE,
        ("blokir1",),
        "<= 2 s",
        start,
        "lower",
        2.0,
    )
    return out


def _verdict(row: dict[str, Any]) -> str:
    if row["met"] is None:
        return "not measured"
    text = "met" if row["met"] else "not met"
    if row["size"] != row["stated_at"]:
        text += f" (at {size_label(row['size'])}; stated for {size_label(row['stated_at'])})"
    if (row.get("spread_pct") or 0) > NOISY_SPREAD_PCT:
        text += f"; noisy: runs spread up to {row['spread_pct']:.0f}%"
    return text


def goals_text(rows: list[dict[str, Any]]) -> str:
    lines = ["goals (reported, not asserted):"]
    for row in rows:
        if row["met"] is None:
            lines.append(f"  {row['goal']}: not measured (target {row['target']})")
            continue
        where = f" [{size_label(row['size'])} names]"
        lines.append(
            f"  {row['goal']}{where}: {row['measured']}, target {row['target']}: {_verdict(row)}"
        )
    return "\n".join(lines)


# -- Markdown ---------------------------------------------------------------------------------


def _size_table(report: dict[str, Any], size: int) -> list[str]:
    entry = report["sizes"][str(size)]
    if "error" in entry and not entry.get("peers"):
        return [f"The run at this size failed: {entry['error']}", ""]
    peers = entry["peers"]
    unbound1 = (_summary(report, size, "unbound1") or {}).get("qps_median")
    ceiling1 = (_summary(report, size, "ceiling1") or {}).get("qps_median")
    extra = {
        name: qps
        for name in EXTRA_REFERENCES
        if (qps := (_summary(report, size, name) or {}).get("qps_median"))
    }
    columns = 13 + len(extra)
    lines = [
        "| server | q/s | spread | vs unbound1 | vs ceiling1 | "
        + "".join(f"vs {name} | " for name in extra)
        + "q/CPU-s | user / system us "
        "| p50 / p95 / p99 ms @ half rate | lost | RSS MiB | PSS MiB | first block s "
        "| cache hits |",
        "|---|" + "--:|" * (columns - 1),
    ]
    notes = []
    for name in [n for n in _server_names(report) if n in peers]:
        peer = peers[name]
        s = peer.get("summary")
        if s is None:
            why = peer.get("skipped") or "failed: " + str(peer.get("error", "no figures"))
            lines.append(f"| {name} | {why.splitlines()[0]} |" + " |" * (columns - 2))
            continue
        if "error" in peer:
            notes.append(f"{name}: a run failed, figures from {s['runs']} run(s): {peer['error']}")
        qps = s["qps_median"]
        pct = (
            f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f} / {s['p99_ms']:.2f}"
            if s.get("p50_ms") is not None
            else "-"
        )
        first = _first_s(s)
        first_text = _num(first, ".2f")
        if s.get("first_block_s") is None and first is not None:
            first_text += " (first answer)"
        lost = f"{s['lost_total']:,}" + (
            f" ({100 * s['lost_total'] / s['sent_total']:.2f}%)" if s["lost_total"] else ""
        )
        lines.append(
            f"| {name} | {qps:,.0f} | {_num(s.get('spread_pct'), '.0f')}% "
            f"| {_num(qps / unbound1 if unbound1 else None, '.2f')} "
            f"| {_num(qps / ceiling1 if ceiling1 else None, '.2f')} "
            + "".join(f"| {qps / other:.2f} " for other in extra.values())
            + f"| {_num(s.get('queries_per_cpu_s'), ',.0f')} "
            f"| {_num(s.get('user_us_per_answer'), '.2f')} / "
            f"{_num(s.get('system_us_per_answer'), '.2f')} | {pct} | {lost} "
            f"| {_num(s['rss_mib'], ',.0f')} | {_num(s['pss_mib'], ',.0f')} | {first_text} "
            f"| {_num(s.get('cachehit_pct'), '.0f', '-')}{'%' if s.get('cachehit_pct') else ''} |"
        )
    lines.append("")
    steal = [
        f"{name} {peers[name]['summary']['steal_pct']:.1f}%"
        for name in _server_names(report)
        if name in peers and peers[name].get("summary", {}).get("steal_pct") is not None
    ]
    if steal:
        lines += [
            "Steal (time the hypervisor ran other guests on the servers' CPUs, as a share of "
            "it), median of the runs: " + ", ".join(steal) + ".",
            "",
        ]
    logged = []
    for name in [n for n in _server_names(report) if n in peers]:
        figures = peers[name].get("summary") or {}
        if figures.get("querylog_bytes") is not None:
            logged.append(f"{name} {querylog_figures(figures)}")
    if logged:
        lines += [
            "Query log written during a measured run (dnstap file, 1 in 100 allowed queries and "
            "every blocked one), median of the runs: " + ", ".join(logged) + ".",
            "",
        ]
    for note in notes:
        lines += [f"Note: {note}", ""]
    return lines


def _index_table(report: dict[str, Any]) -> list[str]:
    rows = []
    for size in _sizes(report):
        entry = report["sizes"][str(size)]
        built, looked = entry.get("blokir_compile"), entry.get("blokir_index")
        if not built:
            continue
        per_s = (looked or {}).get("lookups_per_s", {})
        rows.append(
            f"| {size_label(size)} | {built['compile_wall_s']:.1f} "
            f"| {_num(built.get('compile_peak_rss_mib'), ',.0f')} "
            f"| {built['index_bytes'] / 2**20:,.1f} | {_num((looked or {}).get('open_ms'), '.1f')} "
            f"| {_num(per_s.get('miss_4_labels'), ',.0f')} "
            f"| {_num(per_s.get('hit_listed'), ',.0f')} "
            f"| {_num(per_s.get('hit_below_4_labels'), ',.0f')} |"
        )
    if not rows:
        return []
    return [
        "## blokir's index",
        "",
        "Compile: `python -m resolver compile` as a process (wall seconds, its peak RSS). "
        "Lookups: `bench/index_bench.py`'s `lookup_figures` on the served index, in one Python "
        "thread (median of 5 passes): a 4-label name that is not listed, a listed name, and a "
        "name below a listed one.",
        "",
        "| names | compile s | compile peak RSS MiB | index MiB | open ms | lookups/s: miss "
        "| listed | below a listed name |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
        "",
    ]


def cpu_list(cpus: Iterable[int]) -> str:
    """CPU numbers as `taskset -c` writes them: "1" or "1,2,3"."""
    return ",".join(str(cpu) for cpu in sorted(cpus))


def markdown(report: dict[str, Any], chart_name: str | None = None) -> str:
    machine = report.get("machine", {})
    settings = report.get("settings", {})
    tools = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    lines = [
        f"# Resolver benchmark, {report.get('started', '?')}",
        "",
        f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('memory_gib', '?')} GiB, Linux {machine.get('kernel', '?')}, Python "
        f"{machine.get('python', '?')}; {tools}. Busy before the run: "
        f"{_num(machine.get('busy_before_pct'), '.0f')}% of a core. blokir's hot path: "
        f"{machine.get('blokir_hot_path', 'not recorded')}.",
        "",
        f"Load: `dnsperf -c {settings.get('clients')} -t {_num(settings.get('timeout'), 'g')} "
        f"-l {_num(settings.get('seconds'), 'g')}` from the same machine, "
        f"{_num(settings.get('warmup'), 'g')} s warm-up, {settings.get('runs')} run(s) per "
        "server, servers alternating; q/s is the median of the runs. Percentiles come from a "
        f"{_num(settings.get('latency_seconds'), 'g')} s run at half the measured rate. "
        'Everything on 127.0.0.1: read docs/performance.md, "Limits".',
        "",
    ]
    pinned = machine.get("pinned")
    if pinned:
        lines += [
            f"Pinned (`--pin`): every server on CPU {cpu_list(pinned['servers'])}; dnsperf, NSD "
            f"and the script on CPU {cpu_list(pinned['load'])}.",
            "",
        ]
    if settings.get("quick"):
        lines += ["**--quick run: it checks that the script works, not the numbers.**", ""]
    sizes = _sizes(report)
    if sizes:
        workload = report["sizes"][str(sizes[0])].get("workload")
        if workload:
            lines += [
                f"Workload (seed {settings.get('seed')}): {workload['queries']:,} queries, "
                f"{100 * workload['blocked'] / workload['queries']:.0f}% blocked names (a "
                "quarter of them below a listed name), the rest over "
                f"{workload['allowed_distinct_hosts']:,} allowed names with a Zipf popularity "
                f"(exponent {workload['zipf_exponent']:g}); "
                "types "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(workload["qtypes"].items()))
                + ".",
                "",
            ]
    if chart_name:
        lines += [f"![queries/s and memory per server and list size]({chart_name})", ""]
    rows = report.get("goals") or goals(report)
    lines += [
        "## Goals",
        "",
        "Reported, not asserted.",
        "",
        "| goal | list | measured | target | result |",
        "|---|--:|---|---|---|",
    ]
    for row in rows:
        where = size_label(row["size"]) if row["size"] else "-"
        lines.append(
            f"| {row['goal']} | {where} | {row['measured']} | {row['target']} | {_verdict(row)} |"
        )
    lines.append("")
    for size in sizes:
        lines += [f"## {size_label(size)} names", ""]
        lines += _size_table(report, size)
        entry = report["sizes"][str(size)]
        prepared = []
        if entry.get("unbound_rpz"):
            u = entry["unbound_rpz"]
            prepared.append(
                f"Unbound and pdns-recursor: RPZ of {u['rpz_bytes'] / 2**20:,.0f} MiB from "
                f"{u['exporter']} ({u['export_s']:.1f} s)"
            )
        if entry.get("dnsmasq_list"):
            d = entry["dnsmasq_list"]
            prepared.append(
                f"dnsmasq: `--format {d['format']}` file of {d['file_bytes'] / 2**20:,.0f} MiB "
                f"({d['export_s']:.1f} s), `--cache-size={d['cache_size']}`"
            )
        if prepared:
            lines += ["; ".join(prepared) + ".", ""]
    lines += _index_table(report)
    lines += [
        "Columns: q/s is dnsperf's queries per second (answers received), median of the runs; "
        "spread is (max - min) / median; q/CPU-s is answers per CPU-second of the server's "
        "process tree (less sensitive than q/s to dnsperf and other processes sharing the "
        "cores); user / system us: the server's CPU time per answer in its own code and in "
        "the kernel (socket calls, and on loopback the delivery of the packets it sends); "
        "lost counts queries unanswered within 2 s, all runs; "
        "RSS sums the server's process tree after the load (blokir's mapped index counts once "
        "per process), PSS shares shared pages out; first block is seconds from starting the "
        "server to its first blocked answer (the ceiling: to its first answer); cache hits: "
        "Unbound's cachehits counter (it counts RPZ answers too), PowerDNS Recursor's "
        "packetcache-hits over its questions (likewise), dnsmasq's hits.bind, as a "
        "share of the answers.",
        "",
    ]
    return "\n".join(lines)


# -- chart ------------------------------------------------------------------------------------


def _short(value: float, unit: str = "") -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M{unit}"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k{unit}"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k{unit}"
    return f"{value:.0f}{unit}"


def _mib(value: float) -> str:
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value:.0f} MiB"


def _mib_short(value: float) -> str:
    return f"{value / 1024:.1f}G" if value >= 1024 else f"{value:.0f}M"


def chart(report: dict[str, Any], path: Path) -> str:
    """Draw queries/s and RSS per server and list size to `path` (PNG); what happened."""
    try:
        import matplotlib
    except ImportError:
        return MATPLOTLIB_MISSING
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = _server_names(report)
    sizes = _sizes(report)
    if not servers or not sizes:
        return "chart skipped: no figures"
    colours = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
    fig, (ax_qps, ax_rss) = plt.subplots(1, 2, figsize=(13, 5.2))
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        offsets = [x - 0.4 + width * (i + 0.5) for x in range(len(servers))]
        peers = _peers(report, size)
        for ax, key, label in ((ax_qps, "qps_median", _short), (ax_rss, "rss_mib", _mib_short)):
            values = []
            for name in servers:
                s = _summary(report, size, name)
                values.append(s.get(key) if s else None)
            bars = ax.bar(
                offsets,
                [v or 0 for v in values],
                width * 0.92,
                color=colours[i % len(colours)],
                label=f"{size_label(size)} names",
            )
            for bar, value, name in zip(bars, values, servers, strict=True):
                x = bar.get_x() + bar.get_width() / 2
                if value:
                    ax.annotate(
                        label(value),
                        (x, value),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7.5,
                    )
                elif name in peers:
                    why = "skipped" if peers[name].get("skipped") else "failed"
                    ax.annotate(
                        why,
                        (x, 0.01),
                        xycoords=ax.get_xaxis_transform(),  # at the bottom, also on a log axis
                        ha="center",
                        va="bottom",
                        rotation=90,
                        fontsize=7.5,
                        color="#777777",
                    )
    for ax in (ax_qps, ax_rss):
        ax.set_xticks(range(len(servers)))
        ax.set_xticklabels(servers)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ax_qps.set_title("Queries per second (median of runs, higher is better)")
    ax_qps.set_ylabel("answers / s")
    top = ax_qps.get_ylim()[1]
    ax_qps.set_ylim(0, top * 1.08)
    ax_qps.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _short(v)))
    ax_rss.set_title("RSS after the load (log scale; G = GiB, M = MiB; lower is better)")
    ax_rss.set_ylabel("MiB")
    ax_rss.set_yscale("log")
    low, high = ax_rss.get_ylim()
    ax_rss.set_ylim(max(low, 8), high * 1.6)  # room for the labels above the bars
    ax_rss.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _mib(v)))
    ax_rss.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_qps.legend(frameon=False, loc="upper left")
    machine = report.get("machine", {})
    settings = report.get("settings", {})
    fig.suptitle(
        f"blokir vs Unbound, dnsmasq and the Python ceiling: {report.get('started', '')[:10]}, "
        f"{machine.get('nproc')} CPUs shared with dnsperf, loopback, "
        f"{settings.get('runs')} x {_num(settings.get('seconds'), 'g')} s per server"
        + (" (--quick)" if settings.get("quick") else ""),
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


# -- files ------------------------------------------------------------------------------------


def write(report: dict[str, Any], directory: Path, stem: str) -> list[str]:
    """Write <stem>.json, <stem>.png (when matplotlib is there) and <stem>.md; what was done."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    png_path = directory / f"{stem}.png"
    drawn = chart(report, png_path)
    md_path = directory / f"{stem}.md"
    md_path.write_text(markdown(report, png_path.name if png_path.exists() else None))
    return [f"results: {json_path}, {md_path}", drawn]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path, help="a results file written by resolver_bench.py")
    parser.add_argument("--md", type=Path, help="write the Markdown here (default: stdout)")
    parser.add_argument("--png", type=Path, help="draw the chart here")
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text())
    report["goals"] = goals(report)
    chart_name = None
    if args.png:
        print(chart(report, args.png), file=sys.stderr)
        if args.png.exists():
            chart_name = args.png.name
    text = markdown(report, chart_name)
    if args.md:
        args.md.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
