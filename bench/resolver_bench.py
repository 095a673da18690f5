"""Resolver benchmark: blokir against Unbound, same block list, same upstream, same load.

A seeded workload: a block list of N names (bench/workload.py), a zone of 20k allowed names served
by NSD on 127.0.0.1, and a dnsperf query file mixing 30% blocked names (some as subdomains of a
listed name) with 70% allowed names drawn with a Zipf-like popularity, so that after a warm-up
most allowed queries are cache hits. Query types: A mostly, ~10% AAAA, ~5% HTTPS.

Peers, each started on a free 127.0.0.1 port, checked with a few probes, warmed up, measured with
dnsperf and stopped, alternating, `--runs` times:

    blokir<N>   `python -m resolver serve` with workers = N (the index compiled beforehand)
    unbound<N>  Unbound with num-threads N and the same list as RPZ (`blokir export --format rpz`)

Prints figures (median queries/s, ratio against Unbound with 1 thread, latency, loss, CPU,
memory, seconds from start to the first blocked answer); asserts nothing. See bench/README.md.

    python bench/resolver_bench.py                          # 1M names, 30 s x 3 runs per peer
    python bench/resolver_bench.py --quick --peers unbound1  # 100k names, 5 s x 1: does it work
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.servers import (  # noqa: E402
    LOOPBACK,
    REPO,
    BenchError,
    Deadline,
    ManagedProcess,
    addresses,
    ask,
    blokir_config,
    blokir_serve_available,
    describe,
    find_binary,
    free_port,
    machine_busy_seconds,
    require_binary,
    start_blokir,
    start_nsd,
    start_unbound,
    tree_cpu_seconds,
    tree_memory_mib,
    unbound_conf,
    unbound_stats,
    wait_for_answer,
)
from bench.workload import write_list  # noqa: E402

DEFAULT_SEED = 20251  # the seed bench/index_bench.py uses: the same list files are shared
ZONE = "bench.example."
ALLOWED_NET = "198.51.100."  # RFC 5737 documentation addresses for the allowed names
LANDING_IPV4 = "192.0.2.10"
LANDING_IPV6 = "2001:db8::10"
QTYPES = ("A", "AAAA", "HTTPS")
QTYPE_WEIGHTS = (0.85, 0.10, 0.05)
UNBOUND_KIB_PER_NAME = 3.5  # measured: Unbound 1.17.1, 1M names as RPZ, 3.3 GiB RSS


# -- workload ---------------------------------------------------------------------------------


def host_name(i: int) -> str:
    return f"host{i}.{ZONE}"


def write_zone(path: Path, hosts: int) -> None:
    """host<i>.bench.example.: an A record each, an AAAA for every third, an HTTPS record for
    every twentieth (the rest answer NODATA to HTTPS, as most of the web does)."""
    lines = [
        f"$ORIGIN {ZONE}",
        "$TTL 3600",
        f"@ IN SOA ns.{ZONE} hostmaster.{ZONE} 1 3600 900 604800 300",
        "@ IN NS ns",
        f"ns IN A {LOOPBACK}",
    ]
    for i in range(hosts):
        lines.append(f"host{i} IN A {ALLOWED_NET}{i % 254 + 1}")
        if i % 3 == 0:
            lines.append(f"host{i} IN AAAA 2001:db8:100::{i:x}")
        if i % 20 == 0:
            lines.append(f'host{i} IN HTTPS 1 . alpn="h2,h3"')
    path.write_text("\n".join(lines) + "\n")


def list_file(workdir: Path, size: int, seed: int) -> Path:
    name = f"list-{size}.txt" if seed == DEFAULT_SEED else f"list-{size}-s{seed}.txt"
    return write_list(workdir / name, size, seed)


def write_queries(
    workdir: Path,
    list_path: Path,
    *,
    size: int,
    seed: int,
    count: int,
    hosts: int,
    blocked_share: float,
    subdomain_share: float,
    zipf: float,
) -> tuple[Path, dict[str, Any]]:
    """The dnsperf query file for these parameters, written once and reused, and its summary."""
    stem = f"queries-{size}-s{seed}-q{count}-h{hosts}-b{blocked_share:g}-z{zipf:g}"
    path = workdir / f"{stem}.txt"
    meta_path = workdir / f"{stem}.json"
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    rng = np.random.default_rng(seed + 7)
    blocked = rng.random(count) < blocked_share
    qtypes = np.array(QTYPES)[rng.choice(len(QTYPES), size=count, p=QTYPE_WEIGHTS)]

    n_blocked = int(blocked.sum())
    picks = rng.integers(0, size, n_blocked)
    below = rng.random(n_blocked) < subdomain_share
    wanted = set(picks.tolist())
    listed: dict[int, str] = {}
    with list_path.open() as lines:
        for number, line in enumerate(lines):
            if number in wanted:
                listed[number] = line.strip()
    blocked_names = []
    for pick, sub in zip(picks.tolist(), below.tolist(), strict=True):
        name = listed[pick]
        if sub:
            name = ("cdn." if name.startswith("www.") else "www.") + name
        blocked_names.append(name)

    n_allowed = count - n_blocked
    weights = 1.0 / np.arange(1, hosts + 1) ** zipf
    ranks = rng.choice(hosts, size=n_allowed, p=weights / weights.sum())
    popular = rng.permutation(hosts)  # rank -> host number
    allowed_hosts = popular[ranks]

    out = []
    b = a = 0
    for i in range(count):
        if blocked[i]:
            out.append(f"{blocked_names[b]} {qtypes[i]}")
            b += 1
        else:
            out.append(f"{host_name(int(allowed_hosts[a]))} {qtypes[i]}")
            a += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(out) + "\n")
    tmp.replace(path)
    distinct = len(set(allowed_hosts.tolist()))
    top1 = np.sort(np.bincount(allowed_hosts, minlength=hosts))[::-1][: max(1, hosts // 100)]
    meta = {
        "queries": count,
        "blocked": n_blocked,
        "blocked_as_subdomain": int(below.sum()),
        "allowed": n_allowed,
        "allowed_distinct_hosts": distinct,
        "allowed_share_of_top_1pct_hosts": round(float(top1.sum()) / max(1, n_allowed), 3),
        "qtypes": dict(Counter(qtypes.tolist())),
        "zipf_exponent": zipf,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return path, meta


# -- dnsperf ----------------------------------------------------------------------------------

_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "run_seconds": r"Run time \(s\):\s+([\d.]+)",
    "avg_latency_s": r"Average Latency \(s\):\s+([\d.]+)",
    "min_latency_s": r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+)",
    "max_latency_s": r"Average Latency \(s\):.*max ([\d.]+)\)",
    "stddev_latency_s": r"Latency StdDev \(s\):\s+([\d.]+)",
}
_VERBOSE_LINE = re.compile(r"^> (\S+) (\S+) (\S+) ([\d.]+)$", re.MULTILINE)


@dataclass
class Load:
    dnsperf: str
    query_file: Path
    clients: int
    timeout: float
    rate: float | None


def dnsperf_version(dnsperf: str) -> str:
    done = subprocess.run([dnsperf, "-h"], capture_output=True, text=True)
    found = re.search(r"Version (\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


def run_dnsperf(
    load: Load,
    port: int,
    seconds: float,
    deadline: Deadline,
    *,
    rate: float | None = None,
    verbose_to: Path | None = None,
) -> dict[str, Any]:
    """One dnsperf run against 127.0.0.1:port; its statistics, and with `verbose_to` the
    latency percentiles from its per-query lines (-v)."""
    rate = rate if rate is not None else load.rate
    argv = [
        load.dnsperf,
        "-s",
        LOOPBACK,
        "-p",
        str(port),
        "-d",
        str(load.query_file),
        "-l",
        f"{seconds:g}",
        "-c",
        str(load.clients),
        "-t",
        f"{load.timeout:g}",
    ]
    if rate:
        argv += ["-Q", str(max(1, int(rate)))]
    if verbose_to is not None:
        argv.append("-v")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    timeout = deadline.cap(seconds + load.timeout + 60)
    if verbose_to is not None:
        with verbose_to.open("w") as out:
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.PIPE, text=True, timeout=timeout
            )
        stdout = verbose_to.read_text()
    else:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        stdout = done.stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"dnsperf failed ({done.returncode}): {done.stderr.strip()}")
    stats: dict[str, Any] = {"argv": " ".join(argv)}
    for key, pattern in _FIELDS.items():
        found = re.search(pattern, stdout)
        if found is None:
            raise BenchError(f"dnsperf output lacks {key!r}:\n{stdout[-2000:]}")
        value = float(found.group(1))
        stats[key] = int(value) if key in ("sent", "completed", "lost") else value
    codes = re.search(r"Response codes:\s+(.*)", stdout)
    stats["rcodes"] = (
        {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+) (\d+) \(", codes.group(1))}
        if codes
        else {}
    )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats["dnsperf_cpu_pct"] = 100 * cpu / max(stats["run_seconds"], 1e-9)
    if verbose_to is not None:
        latencies = np.array([float(m.group(4)) for m in _VERBOSE_LINE.finditer(stdout)])
        if latencies.size:
            p50, p95, p99, p999 = np.percentile(latencies, [50, 95, 99, 99.9]) * 1e3
            stats["percentiles_ms"] = {
                "p50": p50,
                "p95": p95,
                "p99": p99,
                "p99.9": p999,
                "samples": int(latencies.size),
            }
        verbose_to.unlink(missing_ok=True)
    return stats


# -- peers ------------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    kind: str  # "blokir" or "unbound"
    threads: int


def parse_peers(text: str) -> list[Peer]:
    peers = []
    for item in text.split(","):
        item = item.strip()
        found = re.fullmatch(r"(blokir|unbound)(\d+)", item)
        if not found or int(found.group(2)) < 1:
            raise SystemExit(f"resolver_bench: unknown peer {item!r} (blokir<N> or unbound<N>)")
        peers.append(Peer(item, found.group(1), int(found.group(2))))
    return peers


@dataclass
class Context:
    tmp: Path
    nsd_port: int
    list_path: Path
    load: Load
    deadline: Deadline
    args: argparse.Namespace
    blocked_probe: str
    rpz: Path | None = None
    blokir_index: Path | None = None


def verify(port: int, ctx: Context) -> dict[str, str]:
    """A few probes before the load: allowed names resolve through NSD, blocked names (and names
    below them) get the landing address. Raises BenchError on the first wrong answer."""
    blocked = ctx.blocked_probe
    below = ("cdn." if blocked.startswith("www.") else "www.") + blocked
    checks = [
        (host_name(1), "A", lambda r: any(a.startswith(ALLOWED_NET) for a in addresses(r))),
        (host_name(3), "AAAA", lambda r: bool(addresses(r, "AAAA"))),
        (host_name(20), "HTTPS", lambda r: r.rcode() == 0 and bool(r.answer)),
        (host_name(1), "HTTPS", lambda r: r.rcode() == 0 and not r.answer),
        (f"nx-probe.{ZONE}", "A", lambda r: r.rcode() == 3),
        (blocked, "A", lambda r: addresses(r) == [LANDING_IPV4]),
        (blocked, "AAAA", lambda r: addresses(r, "AAAA") == [LANDING_IPV6]),
        (below, "A", lambda r: addresses(r) == [LANDING_IPV4]),
    ]
    seen = {}
    for name, rdtype, good in checks:
        reply = ask(port, name, rdtype, timeout=ctx.load.timeout)
        seen[f"{name} {rdtype}"] = describe(reply)
        if not good(reply):
            raise BenchError(f"wrong answer to {name} {rdtype}: {describe(reply)}")
    return seen


def start_peer(peer: Peer, port: int, ctx: Context, tag: str) -> tuple[ManagedProcess, Path]:
    if peer.kind == "unbound":
        assert ctx.rpz is not None
        conf = unbound_conf(ctx.tmp, port, peer.threads, ctx.rpz, ctx.nsd_port, tag)
        return start_unbound(conf, tag), conf
    assert ctx.blokir_index is not None
    conf = blokir_config(
        ctx.tmp / f"{tag}.toml",
        port=port,
        workers=peer.threads,
        upstream_port=ctx.nsd_port,
        list_path=ctx.list_path,
        index_path=ctx.blokir_index,
        landing_ipv4=LANDING_IPV4,
        landing_ipv6=LANDING_IPV6,
    )
    return start_blokir(conf, tag), conf


def measure(peer: Peer, ctx: Context, run: int) -> dict[str, Any]:
    """Start the peer, time it to its first blocked answer, verify, warm up, measure, stop."""
    args = ctx.args
    tag = f"{peer.name}-run{run}"
    port = free_port()
    server, conf = start_peer(peer, port, ctx, tag)
    result: dict[str, Any] = {"run": run, "port": port}
    try:
        result["first_block_s"] = wait_for_answer(
            server,
            port,
            ctx.blocked_probe,
            time.monotonic() + ctx.deadline.cap(args.start_timeout),
            want_address=LANDING_IPV4,
        )
        result["memory_loaded"] = tree_memory_mib(server.pid)
        result["verified"] = verify(port, ctx)
        if args.warmup > 0:
            warm = run_dnsperf(ctx.load, port, args.warmup, ctx.deadline)
            result["warmup_qps"] = warm["qps"]
        if peer.kind == "unbound":
            unbound_stats(conf, reset=True)
        cpu_before = tree_cpu_seconds(server.pid)
        busy_before = machine_busy_seconds()
        stats = run_dnsperf(ctx.load, port, args.seconds, ctx.deadline)
        busy = machine_busy_seconds() - busy_before
        cpu = tree_cpu_seconds(server.pid) - cpu_before
        result.update(stats)
        wall = stats["run_seconds"]
        result["server_cpu_pct"] = 100 * cpu / wall
        # Everything else the machine did meanwhile: other processes (another test run skews
        # the figures), and kernel work charged to neither process.
        result["other_cpu_pct"] = (
            100 * busy / wall - result["server_cpu_pct"] - stats["dnsperf_cpu_pct"]
        )
        result["queries_per_cpu_s"] = stats["completed"] / cpu if cpu > 0 else None
        result["memory"] = tree_memory_mib(server.pid)
        if peer.kind == "unbound":
            counters = unbound_stats(conf, reset=False)
            queries = counters.get("total.num.queries", 0)
            if queries:
                result["unbound_cachehit_pct"] = (
                    100 * counters.get("total.num.cachehits", 0) / queries
                )
        servfail = stats["rcodes"].get("SERVFAIL", 0)
        if servfail > 0.001 * max(1, stats["completed"]):
            result["warning"] = f"{servfail} SERVFAIL answers"
        if args.latency_seconds > 0:
            half = stats["qps"] / 2
            lat = run_dnsperf(
                ctx.load,
                port,
                args.latency_seconds,
                ctx.deadline,
                rate=half,
                verbose_to=ctx.tmp / f"{tag}-latency.txt",
            )
            result["latency_run"] = {
                "rate": int(half),
                "qps": lat["qps"],
                "lost": lat["lost"],
                "avg_latency_s": lat["avg_latency_s"],
                **lat.get("percentiles_ms", {}),
            }
        server.check_alive()
    finally:
        server.stop()
    return result


def prepare_blokir(ctx: Context, list_path: Path) -> dict[str, Any]:
    """Compile the index once (timed); every blokir run loads it."""
    ctx.blokir_index = ctx.tmp / "bench.blkx"
    config = blokir_config(
        ctx.tmp / "compile.toml",
        port=53,
        workers=1,
        upstream_port=ctx.nsd_port,
        list_path=list_path,
        index_path=ctx.blokir_index,
        landing_ipv4=LANDING_IPV4,
        landing_ipv6=LANDING_IPV6,
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "compile", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=ctx.deadline.cap(1800),
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"blokir compile failed: {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout)
    return {
        "compile_wall_s": wall,
        "compile_s": summary.get("compile_seconds"),
        "index_bytes": summary.get("bytes"),
        "entries": summary.get("entries"),
    }


def write_rpz_fallback(list_path: Path, rpz: Path) -> None:
    """The landing policy as RPZ, for when `blokir export` is missing: each name and everything
    below it answers A/AAAA with the landing address."""
    with rpz.open("w") as out:
        out.write("$TTL 60\n@ IN SOA localhost. hostmaster.localhost. 1 3600 900 604800 60\n")
        out.write("@ IN NS localhost.\n")
        with list_path.open() as names:
            for line in names:
                name = line.strip()
                if not name:
                    continue
                for owner in (name, "*." + name):
                    out.write(f"{owner} A {LANDING_IPV4}\n{owner} AAAA {LANDING_IPV6}\n")


def prepare_unbound(ctx: Context, list_path: Path) -> dict[str, Any]:
    """Export the list as RPZ with `blokir export` (timed)."""
    ctx.rpz = ctx.tmp / "bench.rpz"
    config = blokir_config(
        ctx.tmp / "export.toml",
        port=53,
        workers=1,
        upstream_port=ctx.nsd_port,
        list_path=list_path,
        index_path=ctx.tmp / "unused.blkx",
        landing_ipv4=LANDING_IPV4,
        landing_ipv6=LANDING_IPV6,
    )
    export = [sys.executable, "-m", "resolver", "export", "-c", str(config)]
    started = time.perf_counter()
    done = subprocess.run(
        [*export, "--format", "rpz", "-o", str(ctx.rpz)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=ctx.deadline.cap(1800),
    )
    info: dict[str, Any] = {"export_s": time.perf_counter() - started}
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(
            f"  note: `blokir export --format rpz` failed ({why}); the RPZ is written by the "
            "benchmark's own writer instead (A/AAAA landing records for each name and *.name)"
        )
        started = time.perf_counter()
        write_rpz_fallback(list_path, ctx.rpz)
        info = {"export_s": time.perf_counter() - started, "exporter": "bench fallback"}
    else:
        info["exporter"] = "blokir export"
    info["rpz_bytes"] = ctx.rpz.stat().st_size
    return info


def unbound_memory_check(size: int) -> str | None:
    """None when Unbound can likely hold `size` names as RPZ here, else why not. Unbound 1.17
    took about 3.3 GiB for 1M names (4 records each: A and AAAA for the name and for *.name)."""
    needed_kib = size * UNBOUND_KIB_PER_NAME
    available_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available_kib = int(line.split()[1])
    if available_kib and needed_kib > 0.8 * available_kib:
        return (
            f"skipped: {size:,} names as RPZ would need about {needed_kib / 2**20:.1f} GiB in "
            f"Unbound and {available_kib / 2**20:.1f} GiB is available"
        )
    return None


# -- report -----------------------------------------------------------------------------------


def median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str, sub: str | None = None) -> float | None:
        if sub is None:
            return median([r.get(key) for r in runs])
        return median([r.get(key, {}).get(sub) for r in runs])

    return {
        "runs": len(runs),
        "qps_median": col("qps"),
        "qps_all": [r["qps"] for r in runs],
        "avg_latency_ms": (col("avg_latency_s") or 0) * 1e3,
        "stddev_latency_ms": (col("stddev_latency_s") or 0) * 1e3,
        "lost_pct_max": max(100 * r["lost"] / max(1, r["sent"]) for r in runs),
        "server_cpu_pct": col("server_cpu_pct"),
        "dnsperf_cpu_pct": col("dnsperf_cpu_pct"),
        "other_cpu_pct": col("other_cpu_pct"),
        "queries_per_cpu_s": col("queries_per_cpu_s"),
        "rss_mib": col("memory", "rss_mib"),
        "pss_mib": col("memory", "pss_mib"),
        "first_block_s": col("first_block_s"),
        "p50_ms": col("latency_run", "p50"),
        "p95_ms": col("latency_run", "p95"),
        "p99_ms": col("latency_run", "p99"),
        "unbound_cachehit_pct": col("unbound_cachehit_pct"),
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    base = results.get("unbound1", {}).get("summary", {}).get("qps_median")
    header = (
        f"{'peer':<10} {'q/s':>9} {'spread%':>7} {'vs ub1':>6} {'avg ms':>7} {'sd ms':>6} "
        f"{'p50/p95/p99 ms @half':>20} {'lost%':>6} {'srv CPU%':>8} {'q/CPU-s':>8} "
        f"{'other%':>6} {'RSS MiB':>7} {'PSS MiB':>7} {'1st block s':>11}"
    )
    print(header)
    print("-" * len(header))
    notes = []
    for name, entry in results.items():
        if "summary" not in entry:
            print(f"{name:<10} FAILED: {entry.get('error', '?').splitlines()[0]}")
            continue
        s = entry["summary"]
        if "error" in entry:
            notes.append(f"{name}: a run failed, figures from {s['runs']} run(s): {entry['error']}")
        ratio = s["qps_median"] / base if base else None
        spread = 100 * (max(s["qps_all"]) - min(s["qps_all"])) / s["qps_median"]
        pct = (
            f"{s['p50_ms']:.2f}/{s['p95_ms']:.2f}/{s['p99_ms']:.2f}"
            if s["p50_ms"] is not None
            else "-"
        )
        print(
            f"{name:<10} {fmt(s['qps_median'], ',.0f'):>9} {spread:>7.0f} {fmt(ratio, '.2f'):>6} "
            f"{s['avg_latency_ms']:>7.3f} {s['stddev_latency_ms']:>6.3f} {pct:>20} "
            f"{s['lost_pct_max']:>6.2f} {fmt(s['server_cpu_pct'], '.0f'):>8} "
            f"{fmt(s['queries_per_cpu_s'], ',.0f'):>8} {fmt(s['other_cpu_pct'], '.0f'):>6} "
            f"{fmt(s['rss_mib'], '.0f'):>7} {fmt(s['pss_mib'], '.0f'):>7} "
            f"{fmt(s['first_block_s'], '.2f'):>11}"
        )
        if (s["other_cpu_pct"] or 0) > 25:
            notes.append(
                f"{name}: {s['other_cpu_pct']:.0f}% of a core went to other work during its "
                "runs (kernel softirq, or other processes: check that nothing else ran)"
            )
    for note in notes:
        print("note: " + note)


def machine_info(dnsperf: str) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"dnsperf": dnsperf_version(dnsperf)}
    for tool, flag, pattern in (
        ("nsd", "-v", r"NSD version (\S+)"),
        ("unbound", "-V", r"Version (\S+)"),
    ):
        binary = find_binary(tool)
        if binary:
            done = subprocess.run([binary, flag], capture_output=True, text=True)
            found = re.search(pattern, done.stdout + done.stderr)
            versions[tool] = found.group(1) if found else "unknown"
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


# -- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cpus = os.cpu_count() or 1
    default_peers = ["unbound1", "blokir1"]
    if cpus > 1:
        default_peers += [f"unbound{cpus}", f"blokir{cpus}"]
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100k names, 5 s per run, 1 run: checks the script, not the numbers",
    )
    parser.add_argument(
        "--peers",
        default=",".join(default_peers),
        help="comma-separated: blokir<N> (workers) and unbound<N> (threads); default %(default)s",
    )
    parser.add_argument("--size", type=int, help="names in the block list (default 1M)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--allowed", type=int, default=20_000, help="names in the NSD zone")
    parser.add_argument("--queries", type=int, help="lines in the query file (default 1M)")
    parser.add_argument("--blocked-share", type=float, default=0.30)
    parser.add_argument(
        "--subdomain-share",
        type=float,
        default=0.25,
        help="share of blocked queries asking for a name below a listed one",
    )
    parser.add_argument("--zipf", type=float, default=1.0, help="popularity exponent of allowed")
    parser.add_argument("--runs", type=int, help="measured runs per peer (default 3)")
    parser.add_argument("--seconds", type=float, help="dnsperf -l per measured run (default 30)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each run (10)")
    parser.add_argument(
        "--latency-seconds",
        type=float,
        help="seconds of the latency run at half the measured rate (5; 0: skip)",
    )
    parser.add_argument("--clients", type=int, default=16, help="dnsperf -c")
    parser.add_argument("--rate", type=float, help="dnsperf -Q for the measured runs (no limit)")
    parser.add_argument("--timeout", type=float, default=2.0, help="dnsperf -t")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="seconds a peer may take to its first blocked answer",
    )
    parser.add_argument("--deadline", type=float, help="overall seconds (default 3600; quick 600)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / "work",
        help="where list and query files are kept between runs",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    quick = args.quick
    defaults = {
        "size": 100_000 if quick else 1_000_000,
        "queries": 200_000 if quick else 1_000_000,
        "runs": 1 if quick else 3,
        "seconds": 5.0 if quick else 30.0,
        "warmup": 2.0 if quick else 10.0,
        "latency_seconds": 2.0 if quick else 5.0,
        "deadline": 600.0 if quick else 3600.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> int:
    args = parse_args()
    peers = parse_peers(args.peers)
    deadline = Deadline(args.deadline)

    def on_alarm(signum: int, frame: object) -> None:
        raise BenchError(f"overall deadline of {args.deadline:.0f} s reached (--deadline)")

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    # A hard stop a little after the deadline, for a wait the deadline does not cover.
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(args.deadline) + 60)

    dnsperf = require_binary("dnsperf")
    info = machine_info(dnsperf)
    print(
        f"machine: {info['nproc']} CPUs ({info['usable_cpus']} usable), {info['cpu_model']}, "
        f"Linux {info['kernel']}, Python {info['python']}"
    )
    print("tools: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(
        "  dnsperf prints mean/stddev/min/max latency only (no histogram option); p50/p95/p99 "
        "come from its per-query (-v) lines in a separate run at half the measured rate"
    )

    busy = machine_busy_seconds()
    time.sleep(1.0)
    idle_check = 100 * (machine_busy_seconds() - busy)
    print(f"machine busy before the run: {idle_check:.0f}% of a core over 1 s", end="")
    print(" (not idle: the figures will be low and noisy)" if idle_check > 20 else "")
    info["busy_before_pct"] = idle_check

    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    list_path = list_file(args.workdir, args.size, args.seed)
    query_file, workload = write_queries(
        args.workdir,
        list_path,
        size=args.size,
        seed=args.seed,
        count=args.queries,
        hosts=args.allowed,
        blocked_share=args.blocked_share,
        subdomain_share=args.subdomain_share,
        zipf=args.zipf,
    )
    with list_path.open() as names:
        blocked_probe = names.readline().strip()
    print(
        f"workload: {args.size:,} listed names (seed {args.seed}), {args.allowed:,} allowed names "
        f"under {ZONE}, {workload['queries']:,} queries: {workload['blocked']:,} blocked "
        f"({workload['blocked_as_subdomain']:,} below a listed name), {workload['allowed']:,} "
        f"allowed over {workload['allowed_distinct_hosts']:,} hosts (top 1% of hosts: "
        f"{100 * workload['allowed_share_of_top_1pct_hosts']:.0f}% of them); types "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(workload["qtypes"].items()))
        + f" [{time.perf_counter() - started:.1f} s]"
    )
    print(
        f"load: dnsperf -c {args.clients} -t {args.timeout:g} -l {args.seconds:g}"
        + (f" -Q {args.rate:g}" if args.rate else "")
        + f", {args.warmup:g} s warm-up, {args.runs} run(s) per peer, peers alternate"
    )

    report: dict[str, Any] = {
        "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "workload": workload,
        "query_file": str(query_file),
        "list_file": str(list_path),
    }
    results: dict[str, dict[str, Any]] = {p.name: {"runs": []} for p in peers}
    tmp = Path(tempfile.mkdtemp(prefix="blokir-bench-"))
    nsd: ManagedProcess | None = None
    try:
        zonefile = tmp / "bench.example.zone"
        write_zone(zonefile, args.allowed)
        nsd, nsd_port = start_nsd(tmp, ZONE, zonefile, host_name(1), deadline)
        print(f"upstream: NSD on {LOOPBACK}:{nsd_port} serving {ZONE} ({args.allowed:,} hosts)")
        load = Load(dnsperf, query_file, args.clients, args.timeout, args.rate)
        ctx = Context(tmp, nsd_port, list_path, load, deadline, args, blocked_probe)

        if any(p.kind == "blokir" for p in peers):
            why = blokir_serve_available()
            if why is None:
                prepared = prepare_blokir(ctx, list_path)
                report["blokir_compile"] = prepared
                print(
                    f"blokir: compiled {prepared['entries']:,} names in "
                    f"{prepared['compile_wall_s']:.2f} s (process), index "
                    f"{prepared['index_bytes'] / 2**20:.1f} MiB"
                )
            else:
                print(f"blokir: {why}")
                for p in peers:
                    if p.kind == "blokir":
                        results[p.name]["error"] = why
        if any(p.kind == "unbound" for p in peers):
            require_binary("unbound")
            too_big = unbound_memory_check(args.size)
            if too_big is None:
                prepared = prepare_unbound(ctx, list_path)
                report["unbound_rpz"] = prepared
                print(
                    f"unbound: RPZ {prepared['rpz_bytes'] / 2**20:.1f} MiB from "
                    f"{prepared['exporter']} in {prepared['export_s']:.2f} s"
                )
            else:
                print(f"unbound: {too_big}")
                for p in peers:
                    if p.kind == "unbound":
                        results[p.name]["error"] = too_big

        runnable = [p for p in peers if "error" not in results[p.name]]
        for run in range(args.runs):
            shift = run % max(1, len(runnable))
            for peer in runnable[shift:] + runnable[:shift]:
                if "error" in results[peer.name]:
                    continue
                try:
                    measured = measure(peer, ctx, run)
                except BenchError as exc:
                    results[peer.name]["error"] = str(exc)
                    print(f"  run {run + 1} {peer.name}: FAILED: {exc}")
                    continue
                results[peer.name]["runs"].append(measured)
                lat = measured.get("latency_run", {})
                extra = (
                    f", p50/p95/p99 {lat['p50']:.2f}/{lat['p95']:.2f}/{lat['p99']:.2f} ms "
                    f"at {lat['rate']:,} q/s"
                    if "p50" in lat
                    else ""
                )
                hits = measured.get("unbound_cachehit_pct")
                print(
                    f"  run {run + 1} {peer.name}: {measured['qps']:,.0f} q/s, "
                    f"avg {measured['avg_latency_s'] * 1e3:.3f} ms, lost {measured['lost']}, "
                    f"server CPU {measured['server_cpu_pct']:.0f}%, dnsperf CPU "
                    f"{measured['dnsperf_cpu_pct']:.0f}%, other CPU "
                    f"{measured['other_cpu_pct']:.0f}%, RSS {measured['memory']['rss_mib']:.0f}"
                    f" MiB, first block {measured['first_block_s']:.2f} s"
                    + (f", cache hits {hits:.0f}%" if hits is not None else "")
                    + extra
                    + (f" [{measured['warning']}]" if "warning" in measured else "")
                )
    finally:
        signal.alarm(0)
        if nsd is not None:
            nsd.stop()
        ManagedProcess.stop_all()
        if args.keep_tmp:
            print(f"kept configs and logs in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    for entry in results.values():
        if entry["runs"]:
            entry["summary"] = summarise(entry["runs"])
    print()
    print_table(results)
    print(
        "q/s: median of the runs, spread: (max - min) / median; vs ub1: against unbound1; avg/sd:"
        " dnsperf's mean and standard deviation at full load;\np50/p95/p99: from a run at half "
        "the measured rate; CPU in % of one core; other: machine CPU used by neither server nor "
        "dnsperf;\nRSS sums the process tree (shared pages once per process), PSS shares them "
        "out; 1st block: seconds from start to the first blocked answer."
    )
    report["peers"] = results
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"figures written to {args.json}")
    return 0 if all("summary" in e and "error" not in e for e in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
