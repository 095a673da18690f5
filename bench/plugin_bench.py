"""The Unbound plugin side by side, in one run: Unbound alone, Unbound + a pass-through Python
module (the floor any pythonmod script pays), Unbound + the blokir module, and Unbound + the
same list as RPZ, each on three workloads, with q/s, Unbound's CPU per answer,
its cache-hit share, RSS and PSS, and the time from start to the first blocked answer.

Why three workloads. The module runs only when Unbound has no cached answer (its message cache
answers repeats before any module is called), and the setups do different work for listed
names by design (Unbound alone forwards them to an upstream that refuses them). So:

    allowed         unique names under a wildcard of the NSD zone, none on the list: every
                    query is a cache miss, every setup forwards it and gets the same answer, the
                    only difference is the module's lookup: its pure cost per query
    allowed-cached  allowed names only, Zipf-popular over the zone's hosts (as the resolver
                    benchmark's allowed share): after the warm-up nearly all cache hits, which
                    never reach the module: what most of a resolver's traffic costs
    mixed           the resolver benchmark's workload (30% listed names, a quarter of them below
                    a listed name; 70% Zipf-popular allowed names): the goal reads from it

Every setup runs with the same Unbound settings (one thread, default cache sizes, forwarding to
the same NSD), pinned: Unbound on one CPU, dnsperf, NSD and this script on the other. One start
per setup and run measures the three workloads in that order; setups alternate across runs and
the figures are medians. The largest list sizes run the module (and Unbound alone, its
reference) only: RPZ there needs more memory than the machine has.

    python bench/plugin_bench.py                        # 1M and 10M names, 3 runs x 15 s
    python bench/plugin_bench.py --sizes 1M --runs 3 --seconds 5
    python bench/plugin_bench.py --quick                # CI smoke: 10k names, ~30 s

Writes bench/results/plugin-latest.json and .md (with --quick: a temporary folder) and appends
the figures to bench/results/history.csv. Goals: the module keeps >= 85% of Unbound's q/s on the
mixed workload and uses <= 0.1x the RSS of the RPZ setup; the allowed workload's ratio is the
module's own overhead, reported beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import history  # noqa: E402
from bench.report import cpu_list, size_label  # noqa: E402
from bench.resolver_bench import (  # noqa: E402
    ALLOWED_NET,
    DEFAULT_SEED,
    LANDING_IPV4,
    QTYPE_WEIGHTS,
    QTYPES,
    ZONE,
    Context,
    Load,
    add_output_options,
    arm_deadline,
    clean_up,
    host_name,
    list_file,
    machine_info,
    median,
    memory_check,
    parse_size,
    pin_split,
    prepare_blokir,
    prepare_rpz,
    results_folder,
    run_dnsperf,
    write_queries,
    write_zone,
)
from bench.servers import (  # noqa: E402
    LOOPBACK,
    BenchError,
    Deadline,
    ManagedProcess,
    addresses,
    ask,
    free_port,
    machine_busy_pct,
    require_binary,
    start_nsd,
    start_unbound,
    tree_cpu_times,
    tree_memory_mib,
    unbound_conf,
    unbound_stats,
    wait_for_answer,
)
from resolver.plugins.unbound_setup import plugin_setup  # noqa: E402

RESULT_STEM = "plugin-latest"
SETUPS = ("unbound", "unbound+python", "unbound+blokir", "unbound+rpz")
# unbound+python: a pythonmod script that passes every query on (no lookup), the floor any
# Python module pays per cache miss (Unbound's calls into the interpreter, the SWIG objects):
# the module's cost above it is blokir's own.
PASS_SCRIPT = """\
from unboundmodule import (MODULE_ERROR, MODULE_EVENT_MODDONE, MODULE_EVENT_NEW,
                           MODULE_EVENT_PASS, MODULE_FINISHED, MODULE_WAIT_MODULE)


def init_standard(id, env):
    return True


def deinit(id):
    return True


def inform_super(id, qstate, superqstate, qdata):
    return True


def operate(id, event, qstate, qdata):
    if event == MODULE_EVENT_NEW or event == MODULE_EVENT_PASS:
        qstate.ext_state[id] = MODULE_WAIT_MODULE
    elif event == MODULE_EVENT_MODDONE:
        qstate.ext_state[id] = MODULE_FINISHED
    else:
        qstate.ext_state[id] = MODULE_ERROR
    return True
"""
WORKLOADS = ("allowed", "allowed-cached", "mixed")
MISS_LABEL = "miss"  # *.miss.bench.example.: the wildcard that answers any unique name
MISS_ADDRESS = f"{ALLOWED_NET}250"
# The resolver benchmark's defaults (bench/resolver_bench.py), so `mixed` is its workload.
HOSTS = 20_000
BLOCKED_SHARE = 0.30
SUBDOMAIN_SHARE = 0.25
ZIPF = 1.0
MISS_RATE_CEILING = 40_000  # q/s no setup here reaches: the unique file must outlast a run
QPS_GOAL, RSS_GOAL = 0.85, 0.10
BLOCKING = ("unbound+blokir", "unbound+rpz")  # the setups that answer listed names themselves


# -- workloads ----------------------------------------------------------------------------------


def miss_names(count: int) -> list[str]:
    """`count` distinct names under the zone's wildcard: each one new to Unbound's cache."""
    return [f"q{i}.{MISS_LABEL}.{ZONE}" for i in range(count)]


def cached_names(count: int, hosts: int, zipf: float, seed: int) -> list[str]:
    """`count` draws of the zone's `hosts` names with a Zipf popularity (a few hosts take most
    queries), as the allowed share of the resolver benchmark's workload."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, hosts + 1) ** zipf
    ranks = rng.choice(hosts, size=count, p=weights / weights.sum())
    popular = rng.permutation(hosts)
    return [host_name(int(h)) for h in popular[ranks]]


def with_types(names: list[str], seed: int) -> list[str]:
    """dnsperf lines: each name with a type drawn from the resolver benchmark's mix."""
    rng = np.random.default_rng(seed)
    types = np.array(QTYPES)[rng.choice(len(QTYPES), size=len(names), p=QTYPE_WEIGHTS)]
    return [f"{name} {qtype}" for name, qtype in zip(names, types.tolist(), strict=True)]


def _suffixes(name: str) -> list[str]:
    labels = name.rstrip(".").lower().split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def listed_among(names: list[str], list_path: Path) -> set[str]:
    """The names of `names` that the list blocks: listed themselves or below a listed name
    (the bench's lists match subtrees). Streams the list, so a 10M-name list costs no memory
    beyond the names' own suffixes."""
    owners: dict[str, list[str]] = {}
    for name in set(names):
        for suffix in _suffixes(name):
            owners.setdefault(suffix, []).append(name)
    blocked: set[str] = set()
    with list_path.open() as lines:
        for line in lines:
            hit = owners.get(line.strip().rstrip(".").lower())
            if hit:
                blocked.update(hit)
    return blocked


def write_lines(path: Path, lines: list[str]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


@dataclass
class Workload:
    name: str
    query_file: Path
    queries: int
    warmup: bool  # a warm-up run first (the cached workloads); the unique names need none


def allowed_workloads(
    tmp: Path, list_path: Path, *, seconds: float, queries: int, seed: int
) -> list[Workload]:
    """`allowed` (unique names, enough that one run never repeats one) and `allowed-cached`;
    raises BenchError when a name of either is blocked by the list."""
    unique = miss_names(max(queries, int(MISS_RATE_CEILING * seconds)))
    cached = cached_names(queries, HOSTS, ZIPF, seed)
    blocked = listed_among(unique + cached, list_path)
    if blocked:
        raise BenchError(f"{len(blocked)} allowed names are on the list, e.g. {min(blocked)}")
    return [
        Workload(
            "allowed",
            write_lines(tmp / "allowed.txt", with_types(unique, seed)),
            len(unique),
            False,
        ),
        Workload(
            "allowed-cached",
            write_lines(tmp / "allowed-cached.txt", with_types(cached, seed + 1)),
            len(cached),
            True,
        ),
    ]


def upstream(tmp: Path, deadline: Deadline) -> tuple[ManagedProcess, int]:
    """NSD with the resolver benchmark's zone plus a wildcard that answers the unique names."""
    zonefile = tmp / "bench.example.zone"
    write_zone(zonefile, HOSTS)
    with zonefile.open("a") as zone:
        zone.write(f"*.{MISS_LABEL} IN A {MISS_ADDRESS}\n")
    return start_nsd(tmp, ZONE, zonefile, host_name(1), deadline)


# -- one setup, one run -------------------------------------------------------------------------


@dataclass
class Size:
    """What the runs at one list size share."""

    ctx: Context
    workloads: list[Workload]
    module_env: dict[str, str]
    module_script: Path | None
    pass_script: Path
    seconds: float
    warmup: float
    clients: int


def start_setup(setup: str, size: Size, port: int, tag: str) -> tuple[ManagedProcess, Path]:
    ctx = size.ctx
    options: dict[str, Any] = {"modules": "iterator"}
    env = None
    if setup in ("unbound+python", "unbound+blokir"):
        env = size.module_env
        script = size.module_script if setup == "unbound+blokir" else size.pass_script
        extra = f'python:\n    python-script: "{script}"\n'
        options = {"modules": "python iterator", "extra": extra, "env": env}
    elif setup == "unbound+rpz":
        options = {"modules": "respip iterator"}
    rpz = ctx.rpz if setup == "unbound+rpz" else None
    conf = unbound_conf(ctx.tmp, port, 1, rpz, ctx.nsd_port, tag, **options)
    return start_unbound(conf, tag, env=env), conf


def check_answers(setup: str, port: int, blocked: str) -> None:
    """Before the load: an allowed host and a unique name resolve through NSD; the listed name
    gets the landing address from the module and RPZ (the others forward it: refused)."""
    checks = [(host_name(1), f"{ALLOWED_NET}2"), (f"probe.{MISS_LABEL}.{ZONE}", MISS_ADDRESS)]
    if setup in BLOCKING:
        checks.append((blocked, LANDING_IPV4))
    for name, want in checks:
        got = addresses(ask(port, name, "A", timeout=2.0))
        if want not in got:
            raise BenchError(f"{setup}: {name} A answered {got}, expected {want}")


def measure_workload(
    server: ManagedProcess, conf: Path, port: int, load: Load, seconds: float, deadline: Deadline
) -> dict[str, Any]:
    """One dnsperf run: its figures, Unbound's CPU per answer and its cache-hit share."""
    unbound_stats(conf, reset=True)
    user0, system0 = tree_cpu_times(server.pid)
    stats = run_dnsperf(load, port, seconds, deadline)
    user1, system1 = tree_cpu_times(server.pid)
    counters = unbound_stats(conf, reset=False)
    cpu = (user1 - user0) + (system1 - system0)
    done = max(1, stats["completed"])
    queries = counters.get("total.num.queries", 0)
    return {
        "qps": stats["qps"],
        "sent": stats["sent"],
        "completed": stats["completed"],
        "lost": stats["lost"],
        "avg_latency_s": stats["avg_latency_s"],
        "rcodes": stats["rcodes"],
        "server_cpu_pct": 100 * cpu / max(stats["run_seconds"], 1e-9),
        "cpu_us_per_answer": 1e6 * cpu / done,
        # RPZ answers count as cache hits too (Unbound answers them before any module).
        "cachehit_pct": 100 * counters.get("total.num.cachehits", 0) / queries if queries else None,
    }


def measure(setup: str, size: Size, run: int) -> dict[str, Any]:
    """Start one setup, time it to its first blocked answer (Unbound alone: its first answer),
    check answers, run every workload, read its memory, stop it."""
    ctx = size.ctx
    tag = f"{setup.replace('+', '-')}-run{run}"
    port = free_port()
    server, conf = start_setup(setup, size, port, tag)
    result: dict[str, Any] = {"run": run, "workloads": {}}
    try:
        until = time.monotonic() + ctx.deadline.cap(900)
        blocks = setup in BLOCKING
        name = ctx.blocked_probe if blocks else host_name(1)
        first = wait_for_answer(server, port, name, until, LANDING_IPV4 if blocks else None)
        result["first_block_s" if blocks else "first_answer_s"] = first
        result["memory_loaded"] = tree_memory_mib(server.pid)
        check_answers(setup, port, ctx.blocked_probe)
        for workload in size.workloads:
            load = Load(ctx.load.dnsperf, workload.query_file, size.clients, ctx.load.timeout, None)
            if workload.warmup and size.warmup > 0:
                run_dnsperf(load, port, size.warmup, ctx.deadline)
            figures = measure_workload(server, conf, port, load, size.seconds, ctx.deadline)
            if figures["sent"] > workload.queries:
                figures["warning"] = "the query file wrapped: later names were cache hits"
            result["workloads"][workload.name] = figures
        result["memory"] = tree_memory_mib(server.pid)
        server.check_alive()
    finally:
        server.stop()
    return result


# -- figures ------------------------------------------------------------------------------------

WORKLOAD_FIGURES = ("qps", "cpu_us_per_answer", "server_cpu_pct", "cachehit_pct", "avg_latency_s")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over a setup's runs: per workload, and its memory and start-up."""
    workloads: dict[str, Any] = {}
    for name in WORKLOADS:
        cells = [r["workloads"][name] for r in runs if name in r.get("workloads", {})]
        if not cells:
            continue
        summary = {f"{key}_median": median([c.get(key) for c in cells]) for key in WORKLOAD_FIGURES}
        summary["qps_all"] = [c["qps"] for c in cells]
        summary["lost_total"] = sum(c["lost"] for c in cells)
        summary["warnings"] = sorted({c["warning"] for c in cells if "warning" in c})
        workloads[name] = summary
    return {
        "runs": len(runs),
        "workloads": workloads,
        "rss_mib": median([r["memory"]["rss_mib"] for r in runs if "memory" in r]),
        "pss_mib": median([r["memory"]["pss_mib"] for r in runs if "memory" in r]),
        "first_block_s": median([r.get("first_block_s") for r in runs]),
        "first_answer_s": median([r.get("first_answer_s") for r in runs]),
    }


def _cell(entry: dict[str, Any], setup: str, workload: str, key: str) -> float | None:
    summary = entry.get("setups", {}).get(setup, {}).get("summary") or {}
    value = summary.get("workloads", {}).get(workload, {}).get(key)
    return None if value is None else float(value)


def _setup_figure(entry: dict[str, Any], setup: str, key: str) -> float | None:
    value = (entry.get("setups", {}).get(setup, {}).get("summary") or {}).get(key)
    return None if value is None else float(value)


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals per list size, from the medians: the module's q/s against Unbound alone on
    each workload (the goal reads `mixed`; `allowed` is the module's own cost), its extra CPU
    per answer on `allowed`, and its RSS against the RPZ setup's."""
    rows: list[dict[str, Any]] = []
    for key in sorted(report.get("sizes", {}), key=int):
        entry = report["sizes"][key]
        size = int(key)
        for workload in WORKLOADS:
            alone = _cell(entry, "unbound", workload, "qps_median")
            module = _cell(entry, "unbound+blokir", workload, "qps_median")
            if alone and module:
                goal = QPS_GOAL if workload == "mixed" else None
                rows.append(
                    {
                        "size": size,
                        "figure": f"{workload} q/s, module / Unbound alone",
                        "value": module / alone,
                        "goal": goal,
                        "met": None if goal is None else module / alone >= goal,
                    }
                )
        module_cpu = _cell(entry, "unbound+blokir", "allowed", "cpu_us_per_answer_median")
        for base, what in (("unbound", "Unbound alone"), ("unbound+python", "a pass-through")):
            base_cpu = _cell(entry, base, "allowed", "cpu_us_per_answer_median")
            if base_cpu is not None and module_cpu is not None:
                rows.append(
                    {
                        "size": size,
                        "figure": f"allowed: module's Unbound CPU per answer above {what} (us)",
                        "value": module_cpu - base_cpu,
                        "goal": None,
                        "met": None,
                    }
                )
        module_rss = _setup_figure(entry, "unbound+blokir", "rss_mib")
        rpz_rss = _setup_figure(entry, "unbound+rpz", "rss_mib")
        if module_rss and rpz_rss:
            rows.append(
                {
                    "size": size,
                    "figure": "RSS, module / RPZ",
                    "value": module_rss / rpz_rss,
                    "goal": RSS_GOAL,
                    "met": module_rss / rpz_rss <= RSS_GOAL,
                }
            )
    return rows


def goal_line(row: dict[str, Any]) -> str:
    size = size_label(row["size"])
    if row["goal"] is None:
        return f"{size}: {row['figure']}: {row['value']:.2f} (reported)"
    sign = ">=" if row["figure"].endswith("Unbound alone") else "<="
    verdict = "met" if row["met"] else "NOT met"
    return f"{size}: {row['figure']}: {row['value']:.2f} (goal {sign} {row['goal']:.2f}: {verdict})"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(entry: dict[str, Any]) -> list[str]:
    """One Markdown table per list size: a row per setup, the medians."""
    head = ["setup"]
    for workload in WORKLOADS:
        head += [f"{workload} q/s", f"{workload} us/answer", f"{workload} hits %"]
    head += ["RSS MiB", "PSS MiB", "first blocked s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setup, result in entry.get("setups", {}).items():
        summary = result.get("summary")
        if summary is None:
            why = result.get("skipped") or "FAILED: " + result.get("error", "?")
            lines.append(f"| {setup} | {why.splitlines()[0]} |")
            continue
        cells = [setup]
        for workload in WORKLOADS:
            cells += [
                _num(_cell(entry, setup, workload, "qps_median"), ",.0f"),
                _num(_cell(entry, setup, workload, "cpu_us_per_answer_median"), ".1f"),
                _num(_cell(entry, setup, workload, "cachehit_pct_median"), ".0f"),
            ]
        cells += [
            _num(summary["rss_mib"], ",.1f"),
            _num(summary["pss_mib"], ",.1f"),
            _num(summary["first_block_s"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    pinned = machine.get("pinned")
    out = [
        f"# Unbound plugin benchmark, {report['started']}",
        "",
        f"Machine: {machine['nproc']} CPUs, {machine['cpu_model']}, {machine['memory_gib']} GiB; "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + ". "
        + (
            f"Unbound on CPU {cpu_list(pinned['servers'])}, dnsperf and NSD on CPU "
            f"{cpu_list(pinned['load'])}."
            if pinned
            else "Unpinned."
        ),
        f"Load: dnsperf -c {settings['clients']}, {settings['runs']} run(s) of "
        f"{settings['seconds']:g} s per setup and workload (medians), setups alternating; "
        "Unbound with one thread and default cache sizes in every setup.",
        "",
        "Workloads: `allowed` unique names (all cache misses: the module's own cost), "
        "`allowed-cached` Zipf-popular allowed names (nearly all cache hits), `mixed` the "
        "resolver benchmark's workload. us/answer: Unbound's CPU (user + system) per answer.",
        "",
        "## Goals",
        "",
        *[f"- {goal_line(row)}" for row in report["goals"]],
    ]
    for key in sorted(report["sizes"], key=int):
        entry = report["sizes"][key]
        out += ["", f"## {size_label(int(key))} names", ""]
        if "error" in entry:
            out.append(f"FAILED: {entry['error']}")
            continue
        built = entry.get("blokir_compile") or {}
        if built:
            out.append(
                f"Index compiled in {built['compile_wall_s']:.1f} s (peak RSS "
                f"{built['compile_peak_rss_mib']:,.0f} MiB, "
                f"{(built.get('index_bytes') or 0) / 2**20:,.1f} MiB file)."
            )
        if entry.get("rpz"):
            out.append(f"RPZ exported in {entry['rpz']['export_s']:.1f} s.")
        out += ["", *table(entry)]
        for setup, result in entry.get("setups", {}).items():
            for workload, cell in (result.get("summary") or {}).get("workloads", {}).items():
                for warning in cell["warnings"]:
                    out.append(f"\nnote: {setup}, {workload}: {warning}")
    return "\n".join(out) + "\n"


def write_results(report: dict[str, Any], directory: Path) -> list[str]:
    return history.write_latest(report, directory, RESULT_STEM, markdown(report))


# -- one list size ------------------------------------------------------------------------------


def setups_at(size: int, wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The setups to run at `size`, and those left out with why (RPZ that would not fit)."""
    skipped: dict[str, str] = {}
    if "unbound+rpz" in wanted:
        why = memory_check("unbound", size)
        if why:
            skipped["unbound+rpz"] = why
    return [s for s in wanted if s not in skipped], skipped


def run_size(
    n: int,
    args: argparse.Namespace,
    tmp_root: Path,
    nsd_port: int,
    dnsperf: str,
    deadline: Deadline,
) -> dict[str, Any]:
    started = time.perf_counter()
    setups, skipped = setups_at(n, args.setup_list)
    print(f"\n== {size_label(n)} names: {', '.join(setups)}")
    tmp = tmp_root / f"size-{n}"
    tmp.mkdir()
    list_path = list_file(args.workdir, n, args.seed)
    mixed_file, mixed_meta = write_queries(
        args.workdir,
        list_path,
        size=n,
        seed=args.seed,
        count=args.queries,
        hosts=HOSTS,
        blocked_share=BLOCKED_SHARE,
        subdomain_share=SUBDOMAIN_SHARE,
        zipf=ZIPF,
    )
    workloads = allowed_workloads(
        tmp, list_path, seconds=args.seconds, queries=args.queries, seed=args.seed
    )
    workloads.append(Workload("mixed", mixed_file, args.queries, True))
    workloads = [w for w in workloads if w.name in args.workload_list]
    with list_path.open() as names:
        probe = names.readline().strip()
    load = Load(dnsperf, mixed_file, args.clients, args.timeout, None)
    ctx = Context(tmp, nsd_port, n, list_path, load, deadline, args, probe)
    entry: dict[str, Any] = {
        "size": n,
        "workloads": {w.name: {"queries": w.queries, "warmup": w.warmup} for w in workloads},
        "mixed_workload": mixed_meta,
        "setups": {s: {"runs": []} for s in setups},
    }
    for setup, why in skipped.items():
        entry["setups"][setup] = {"runs": [], "skipped": why}
        print(f"{setup}: {why}")
    print(
        f"workloads ready [{time.perf_counter() - started:.1f} s]: "
        + ", ".join(f"{w.name} {w.queries:,} queries" for w in workloads)
    )
    if "unbound+blokir" in setups:
        entry["blokir_compile"] = prepare_blokir(ctx)
        built = entry["blokir_compile"]
        print(
            f"blokir compile: {built['entries']:,} names in {built['compile_wall_s']:.1f} s, peak "
            f"RSS {built['compile_peak_rss_mib']:,.0f} MiB"
        )
    if "unbound+rpz" in setups:
        entry["rpz"] = prepare_rpz(ctx)
        print(f"RPZ: exported in {entry['rpz']['export_s']:.1f} s")
    if "unbound+blokir" in setups:
        plugin = plugin_setup(tmp / "compile.toml")
        env, script = plugin.environment(), plugin.script
    else:  # the pass-through script needs the same interpreter paths, not blokir's config
        env, script = plugin_setup(None).environment(), None
    size = Size(
        ctx,
        workloads,
        env,
        script,
        write_lines(tmp / "pass.py", PASS_SCRIPT.splitlines()),
        args.seconds,
        args.warmup,
        args.clients,
    )
    for run in range(args.runs):
        shift = run % len(setups)
        for setup in setups[shift:] + setups[:shift]:
            result = entry["setups"][setup]
            if "error" in result:
                continue
            try:
                measured = measure(setup, size, run)
            except BenchError as exc:
                result["error"] = str(exc)
                print(f"  run {run + 1} {setup}: FAILED: {exc}")
                continue
            result["runs"].append(measured)
            print(f"  run {run + 1} {run_line(setup, measured)}", flush=True)
    for result in entry["setups"].values():
        if result["runs"]:
            result["summary"] = summarise(result["runs"])
    entry["elapsed_s"] = time.perf_counter() - started
    return entry


def run_line(setup: str, measured: dict[str, Any]) -> str:
    first = measured.get("first_block_s", measured.get("first_answer_s"))
    cells = ", ".join(
        f"{name} {cell['qps']:,.0f} q/s {cell['cpu_us_per_answer']:.1f} us/answer "
        f"hits {_num(cell['cachehit_pct'], '.0f')}%"
        for name, cell in measured["workloads"].items()
    )
    return (
        f"{setup}: {cells}; RSS {measured['memory']['rss_mib']:,.1f} MiB, first "
        f"{'blocked' if 'first_block_s' in measured else 'answer'} {first:.2f} s"
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke: 10k names, 1 x 2 s")
    parser.add_argument("--sizes", help="comma-separated list sizes (default 1M,10M; quick 10k)")
    parser.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help="comma-separated, of %(default)s (RPZ is left out where it would not fit)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated, of %(default)s (e.g. allowed alone for a before/after check)",
    )
    parser.add_argument("--runs", type=int, help="starts per setup (default 3; quick 1)")
    parser.add_argument("--seconds", type=float, help="dnsperf -l per workload (15; quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up of the cached workloads (5; 1)")
    parser.add_argument("--queries", type=int, help="lines of the cached query files (1M; 20k)")
    parser.add_argument("--clients", type=int, default=16, help="dnsperf -c")
    parser.add_argument("--timeout", type=float, default=2.0, help="dnsperf -t")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-pin", action="store_true", help="do not pin Unbound and dnsperf")
    parser.add_argument("--deadline", type=float, help="overall seconds (default 5400; quick 120)")
    parser.add_argument("--workdir", type=Path, default=HERE / "work", help="lists, query files")
    add_output_options(parser, f"{RESULT_STEM}.json and .md")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "runs": 1 if quick else 3,
        "seconds": 2.0 if quick else 15.0,
        "warmup": 1.0 if quick else 5.0,
        "queries": 20_000 if quick else 1_000_000,
        "deadline": 120.0 if quick else 5400.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.size_list = [
        parse_size(s) for s in (args.sizes or ("10k" if quick else "1M,10M")).split(",")
    ]
    args.setup_list = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(args.setup_list) - set(SETUPS)
    if unknown or not args.setup_list:
        parser.error(f"--setups: unknown {sorted(unknown)}; choose from {', '.join(SETUPS)}")
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workload_list) - set(WORKLOADS)
    if unknown or not args.workload_list:
        parser.error(f"--workloads: unknown {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = arm_deadline(args.deadline)
    began = time.perf_counter()
    dnsperf = require_binary("dnsperf")
    require_binary("unbound")
    info = machine_info(dnsperf)
    cpus = os.sched_getaffinity(0)
    if not args.no_pin and len(cpus) >= 2:
        load_cpus, server_cpus = pin_split(cpus)
        os.sched_setaffinity(0, load_cpus)  # dnsperf and NSD inherit it from this process
        ManagedProcess.server_cpus = server_cpus
        info["pinned"] = {"load": sorted(load_cpus), "servers": sorted(server_cpus)}
        print(
            f"pinned: Unbound on CPU {cpu_list(server_cpus)}, "
            f"dnsperf and NSD on {cpu_list(load_cpus)}"
        )
    info["busy_before_pct"] = machine_busy_pct()
    print(f"machine busy before the run: {info['busy_before_pct']:.0f}% of a core")
    args.workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "plugin",
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sizes": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="blokir-plugin-bench-"))
    nsd: ManagedProcess | None = None
    failed = False
    try:
        nsd, nsd_port = upstream(tmp, deadline)
        print(f"upstream: NSD on {LOOPBACK}:{nsd_port}, {HOSTS:,} hosts and *.{MISS_LABEL}.{ZONE}")
        for n in args.size_list:
            try:
                entry = run_size(n, args, tmp, nsd_port, dnsperf, deadline)
            except BenchError as exc:
                print(f"{size_label(n)} names: FAILED: {exc}")
                report["sizes"][str(n)] = {"size": n, "error": str(exc), "setups": {}}
                failed = True
                continue
            report["sizes"][str(n)] = entry
            failed = failed or any(
                "error" in s or ("summary" not in s and "skipped" not in s)
                for s in entry["setups"].values()
            )
            print()
            print("\n".join(table(entry)))
        report["goals"] = goals(report)
        report["elapsed_s"] = time.perf_counter() - began
        print()
        for row in report["goals"]:
            print(goal_line(row))
        for line in write_results(report, results_folder(args.results, args.quick, tmp)):
            print(line)
    finally:
        clean_up(nsd, tmp, args.keep_tmp)
    print(f"elapsed: {time.perf_counter() - began:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
