"""Resolver benchmark: blokir side by side with Unbound, dnsmasq and the Python ceiling, with the
same block list, the same upstream and the same load, in one run.

A seeded workload per list size: a block list of N names (bench/workload.py), a zone of 20k
allowed names served by NSD on 127.0.0.1, and a dnsperf query file mixing 30% blocked names (a
quarter of them as subdomains of a listed name) with 70% allowed names drawn with a Zipf
popularity, so that after a warm-up most allowed queries are cache hits. Query types: A mostly,
~10% AAAA, ~5% HTTPS.

Peers, each started on a free 127.0.0.1 port, checked with a few probes, warmed up, measured with
dnsperf and stopped, alternating, `--runs` times per list size:

    blokir<N>   `python -m resolver serve` with workers = N (the index compiled beforehand)
    unbound<N>  Unbound with num-threads N and the same list as RPZ (`blokir export --format rpz`)
    dnsmasq1    dnsmasq with the same list as address=/local= lines (`--format dnsmasq`)
    ceiling<N>  bench/ceiling.py: a fixed answer to every query, the fastest Python server shape
    ceilingb<N> the same with recvmmsg/sendmmsg (ceiling.py --batched); blokir<N>plain: blokir
                on its plain recvfrom/sendto UDP path (BLOKIR_UDP_BATCH=0)
    base<N>     blokir<N> from another checkout (--baseline DIR, run with DIR/.venv/bin/python):
                the code before a change against the code after it, in one run; baseq<N>
                the same with the query log on (as blokirq<N>)
    blokirq<N>  blokir<N> with the dnstap query log on (a file, 1 in 100 allowed queries and
                every blocked one): the log's cost next to blokir<N>
    pdns<N>     PowerDNS Recursor with threads N and the same RPZ as Unbound (bench/rival_servers)
    dnsdist<N>  dnsdist with N listeners, the list as a SuffixMatchNode and SpoofAction

Prints figures (median queries/s, ratios against Unbound with 1 thread and the ceiling, latency,
loss, CPU, memory, seconds from start to the first blocked answer), blokir's index figures per
size, and the goals; asserts nothing. Writes bench/results/resolver-latest.json, .md and .png
(the chart needs matplotlib), replacing the previous run's, and appends the run's figures to
bench/results/history.csv (bench/history.py). See bench/README.md.

    python bench/resolver_bench.py                  # 1M and 10M names, 30 s x 3 runs per peer
    python bench/resolver_bench.py --quick          # 100k names, 3 s x 1: does it work (~2 min)
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.exception
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import history  # noqa: E402
from bench import report as reporting  # noqa: E402
from bench.report import size_label  # noqa: E402
from bench.rival_servers import (  # noqa: E402
    dnsdist_conf,
    pdns_counters,
    pdns_socket_dir,
    start_dnsdist,
    start_pdns,
    write_pdns_conf,
)
from bench.servers import (  # noqa: E402
    LOOPBACK,
    REPO,
    BenchError,
    Deadline,
    ManagedProcess,
    addresses,
    ask,
    blokir_config,
    blokir_hot_path,
    blokir_serve_available,
    cpu_steal_seconds,
    describe,
    dnsmasq_cache_counters,
    find_binary,
    free_port,
    machine_busy_pct,
    machine_busy_seconds,
    require_binary,
    start_blokir,
    start_ceiling,
    start_dnsmasq,
    start_nsd,
    start_unbound,
    tree_cpu_times,
    tree_memory_mib,
    unbound_conf,
    unbound_stats,
    wait_for_answer,
    wait_for_any_reply,
)
from bench.workload import write_list  # noqa: E402

WRITER = b"resolver.querylog.writer"  # the query log writer's command line (querylog/client.py)

DEFAULT_SEED = 20251  # the seed bench/index_bench.py uses: the same list files are shared
ZONE = "bench.example."
ALLOWED_NET = "198.51.100."  # RFC 5737 documentation addresses for the allowed names
LANDING_IPV4 = "192.0.2.10"
LANDING_IPV6 = "2001:db8::10"
QTYPES = ("A", "AAAA", "HTTPS")
QTYPE_WEIGHTS = (0.85, 0.10, 0.05)
# Resident memory per listed name, to skip a peer that would not fit (measured on this machine).
KIB_PER_NAME = {
    "unbound": 3.5,  # Unbound 1.17.1, 1M names as RPZ: 3.3 GiB
    "dnsmasq": 0.3,  # dnsmasq 2.90, 1M names as address=/local= lines: 250 MiB
    "pdns": 0.85,  # pdns-recursor 4.8.8, the same RPZ: 810 MiB at 1M (15 s to load)
    "dnsdist": 0.55,  # dnsdist 1.7.3, the list as a SuffixMatchNode: 533 MiB at 1M (15 s)
}
# Seconds per listed name to the first blocked answer, to skip a peer that would not load within
# --start-timeout (measured on this machine, busy, at 1M names).
LOAD_S_PER_NAME = {
    "pdns": 15e-6,  # pdns-recursor 4.8.8, the RPZ: 15 s at 1M
    "dnsdist": 15e-6,  # dnsdist 1.7.3, the SuffixMatchNode filled from Lua: 15 s at 1M
}
# The query log of a blokirq<N> peer: 1 in this many allowed queries, every blocked one.
QUERYLOG_SAMPLE = 100
DNSMASQ_CACHE_SIZE = 10_000
RESULT_STEM = "resolver-latest"  # the latest run in full; every run's figures: history.csv


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

DNSPERF_FIELDS = {
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


def dnsperf_argv(load: Load, port: int, length: str, rate: float | None) -> list[str]:
    """dnsperf against 127.0.0.1:port for `length` seconds (-l, as text), at `rate` queries/s
    (-Q) when given."""
    argv = [
        load.dnsperf,
        "-s",
        LOOPBACK,
        "-p",
        str(port),
        "-d",
        str(load.query_file),
        "-l",
        length,
        "-c",
        str(load.clients),
        "-t",
        f"{load.timeout:g}",
    ]
    if rate:
        argv += ["-Q", str(max(1, int(rate)))]
    return argv


def dnsperf_statistics(text: str, keys: tuple[str, ...] = tuple(DNSPERF_FIELDS)) -> dict[str, Any]:
    """The DNSPERF_FIELDS named by `keys` from dnsperf's closing statistics, and the response
    codes it counted; raises BenchError when a field is missing (dnsperf broke off)."""
    stats: dict[str, Any] = {}
    for key in keys:
        found = re.search(DNSPERF_FIELDS[key], text)
        if found is None:
            raise BenchError(f"dnsperf output lacks {key!r}:\n{text[-2000:]}")
        value = float(found.group(1))
        stats[key] = int(value) if key in ("sent", "completed", "lost") else value
    codes = re.search(r"Response codes:\s+(.*)", text)
    stats["rcodes"] = (
        {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+) (\d+) \(", codes.group(1))}
        if codes
        else {}
    )
    return stats


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
    argv = dnsperf_argv(load, port, f"{seconds:g}", rate)
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
    stats: dict[str, Any] = {"argv": " ".join(argv), **dnsperf_statistics(stdout)}
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

KINDS = ("blokir", "unbound", "dnsmasq", "ceiling", "pdns", "dnsdist")
# The binary each server kind other than blokir and the ceiling needs (run_size checks it).
BINARIES = {
    "unbound": "unbound",
    "dnsmasq": "dnsmasq",
    "pdns": "pdns_recursor",
    "dnsdist": "dnsdist",
}
# Kinds that load the list as the RPZ zone file `blokir export --format rpz` writes.
RPZ_KINDS = ("unbound", "pdns")


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # one of KINDS
    threads: int  # workers, threads or processes
    metrics: bool = False  # blokir only: with its Prometheus endpoint on (blokir<N>m)
    pure: bool = False  # blokir only: the plain sources, not the compiled build (blokir<N>p)
    baseline: str | None = None  # blokir only: the checkout it runs from (base<N>), else this one
    querylog: bool = False  # blokir only: with the dnstap query log on (blokirq<N>)
    # The UDP path: None each's default (ceiling plain, blokir as built); True ceilingb<N>;
    # False blokir<N>plain (BLOKIR_UDP_BATCH=0).
    batched: bool | None = None

    @property
    def uses_list(self) -> bool:
        return self.kind != "ceiling"


def parse_peers(text: str, baseline: str | None = None) -> list[Peer]:
    """Peers from `--peers`; base<N> needs `baseline`, the checkout (--baseline) it runs."""
    peers: list[Peer] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if any(p.name == item for p in peers):
            raise SystemExit(f"resolver_bench: peer {item!r} given twice")
        based = re.fullmatch(r"base(q?)(\d+)", item)
        if based:
            if baseline is None:
                raise SystemExit(f"resolver_bench: peer {item!r} needs --baseline DIR")
            logs = bool(based.group(1))  # baseq<N>: the baseline with the query log on
            peers.append(
                Peer(item, "blokir", int(based.group(2)), baseline=baseline, querylog=logs)
            )
            continue
        logged = re.fullmatch(r"blokirq(\d+)", item)
        if logged and int(logged.group(1)) >= 1:
            peers.append(Peer(item, "blokir", int(logged.group(1)), querylog=True))
            continue
        # ceilingb<N>: the ceiling batched; blokir<N>plain: blokir with BLOKIR_UDP_BATCH=0.
        udp = re.fullmatch(r"(ceilingb|blokir)(\d+)(plain)?", item)
        if udp and int(udp.group(2)) >= 1 and (udp.group(1) == "ceilingb") != bool(udp.group(3)):
            kind = "ceiling" if udp.group(1) == "ceilingb" else "blokir"
            peers.append(Peer(item, kind, int(udp.group(2)), batched=kind == "ceiling"))
            continue
        found = re.fullmatch(rf"({'|'.join(KINDS)})(\d+)(m?)(p?)", item)
        if (
            not found
            or int(found.group(2)) < 1
            or ((found.group(3) or found.group(4)) and found.group(1) != "blokir")
        ):
            raise SystemExit(
                f"resolver_bench: unknown peer {item!r} (blokir<N>, blokir<N>m with metrics on, "
                "blokir<N>p on the plain sources, blokirq<N> with the query log on, unbound<N>, "
                "dnsmasq1, ceiling<N>, pdns<N> or dnsdist<N>)"
            )
        kind, threads = found.group(1), int(found.group(2))
        if kind == "dnsmasq" and threads != 1:
            raise SystemExit("resolver_bench: dnsmasq answers from a single thread: use dnsmasq1")
        peers.append(
            Peer(item, kind, threads, metrics=bool(found.group(3)), pure=bool(found.group(4)))
        )
    if not peers:
        raise SystemExit("resolver_bench: no peers")
    return peers


def parse_size(text: str) -> int:
    """100000, 100k, 1M, 10M."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not found:
        raise SystemExit(f"resolver_bench: bad list size {text!r} (e.g. 100000, 100k, 1M)")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[found.group(2).lower()]
    size = int(float(found.group(1)) * scale)
    if size < 1:
        raise SystemExit(f"resolver_bench: bad list size {text!r}")
    return size


@dataclass
class Context:
    """What the runs at one list size share."""

    tmp: Path
    nsd_port: int
    size: int
    list_path: Path
    load: Load
    deadline: Deadline
    args: argparse.Namespace
    blocked_probe: str
    rpz: Path | None = None
    blokir_index: Path | None = None
    dnsmasq_list: Path | None = None


def verify(peer: Peer, port: int, ctx: Context) -> dict[str, str]:
    """A few probes before the load: allowed names resolve through NSD, blocked names (and names
    below them) get the landing address. Raises BenchError on the first wrong answer. The
    ceiling answers everything alike, so it has none."""
    if peer.kind == "ceiling":
        return {}
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
    ]
    if not (peer.kind == "dnsmasq" and ctx.args.dnsmasq_format == "hosts"):
        # A hosts file covers exact names only: that is one reason it is not the default.
        checks.append((below, "A", lambda r: addresses(r) == [LANDING_IPV4]))
    seen = {}
    for name, rdtype, good in checks:
        try:
            reply = ask(port, name, rdtype, timeout=ctx.load.timeout)
        except (dns.exception.DNSException, OSError) as exc:
            raise BenchError(f"no good answer to {name} {rdtype}: {exc!r}") from exc
        seen[f"{name} {rdtype}"] = describe(reply)
        if not good(reply):
            raise BenchError(f"wrong answer to {name} {rdtype}: {describe(reply)}")
    return seen


def start_peer(peer: Peer, port: int, ctx: Context, tag: str) -> tuple[ManagedProcess, Path | None]:
    if peer.kind == "unbound":
        assert ctx.rpz is not None
        conf = unbound_conf(ctx.tmp, port, peer.threads, ctx.rpz, ctx.nsd_port, tag)
        return start_unbound(conf, tag), conf
    if peer.kind == "dnsmasq":
        assert ctx.dnsmasq_list is not None
        server = start_dnsmasq(
            ctx.tmp,
            port=port,
            upstream_port=ctx.nsd_port,
            list_path=ctx.dnsmasq_list,
            list_format=ctx.args.dnsmasq_format,
            cache_size=ctx.args.dnsmasq_cache_size,
            tag=tag,
        )
        return server, None
    if peer.kind == "ceiling":
        server = start_ceiling(
            ctx.tmp, port=port, workers=peer.threads, tag=tag, batched=peer.batched is True
        )
        return server, None
    if peer.kind == "pdns":
        assert ctx.rpz is not None
        conf = write_pdns_conf(
            ctx.tmp, tag, port=port, threads=peer.threads, upstream_port=ctx.nsd_port, rpz=ctx.rpz
        )
        return start_pdns(conf, tag), conf
    if peer.kind == "dnsdist":
        conf = ctx.tmp / f"{tag}.dnsdist.lua"
        conf.write_text(
            dnsdist_conf(
                port=port,
                threads=peer.threads,
                upstream_port=ctx.nsd_port,
                list_path=ctx.list_path,
                landing_ipv4=LANDING_IPV4,
                landing_ipv6=LANDING_IPV6,
            )
        )
        return start_dnsdist(conf, tag), conf
    assert ctx.blokir_index is not None
    # A base<N> peer runs other code, whose index format or provenance may differ: it gets a
    # file of its own, which its `serve` compiles at its first start and reuses after.
    index_path = ctx.tmp / "base.blkx" if peer.baseline else ctx.blokir_index
    conf = blokir_config(
        ctx.tmp / f"{tag}.toml",
        port=port,
        workers=peer.threads,
        upstream_port=ctx.nsd_port,
        list_path=ctx.list_path,
        index_path=index_path,
        landing_ipv4=LANDING_IPV4,
        landing_ipv6=LANDING_IPV6,
        metrics_port=free_port() if peer.metrics else None,
        querylog=querylog_path(ctx, tag) if peer.querylog else None,
        querylog_sample=QUERYLOG_SAMPLE,
    )
    server = start_blokir(
        conf,
        tag,
        pure_python=peer.pure,
        checkout=peer.baseline,
        udp_batch=peer.batched is not False,
    )
    return server, conf


def querylog_path(ctx: Context, tag: str) -> Path:
    """The dnstap file of a blokirq<N> run (with more than one worker, `<path>.N` each): in the
    run's temporary folder, or in --querylog-dir (a tmpfs there leaves the disk's writeback out
    of the query log's cost)."""
    folder = ctx.args.querylog_dir or ctx.tmp
    return Path(folder) / f"{tag}-q.dnstap"


def querylog_bytes(ctx: Context, tag: str) -> int:
    """Bytes the run's query log files hold now (every worker's, rotated ones too)."""
    path = querylog_path(ctx, tag)
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*") if f.is_file())


def measure(peer: Peer, ctx: Context, run: int) -> dict[str, Any]:
    """Start the peer, time it to its first blocked answer (the ceiling: its first answer),
    verify, warm up, measure, read its memory, run the latency run, stop."""
    args = ctx.args
    tag = f"{peer.name}-run{run}"
    port = free_port()
    server, conf = start_peer(peer, port, ctx, tag)
    result: dict[str, Any] = {"run": run, "port": port}
    try:
        until = time.monotonic() + ctx.deadline.cap(args.start_timeout)
        if peer.uses_list:
            first = wait_for_answer(server, port, ctx.blocked_probe, until, LANDING_IPV4)
            result["first_block_s"] = first
        else:
            first = wait_for_any_reply(server, port, until)
        result["first_answer_s"] = first
        result["memory_loaded"] = tree_memory_mib(server.pid)
        result["verified"] = verify(peer, port, ctx)
        if args.warmup > 0:
            warm = run_dnsperf(ctx.load, port, args.warmup, ctx.deadline)
            result["warmup_qps"] = warm["qps"]
        if peer.kind == "unbound" and conf is not None:
            unbound_stats(conf, reset=True)
        hits_before = dnsmasq_cache_counters(port) if peer.kind == "dnsmasq" else {}
        pdns_control = pdns_socket_dir(ctx.tmp, tag)
        pdns_before = pdns_counters(pdns_control) if peer.kind == "pdns" else {}
        user_before, system_before = tree_cpu_times(server.pid)
        writer_before = sum(tree_cpu_times(server.pid, WRITER)) if peer.querylog else 0.0
        busy_before = machine_busy_seconds()
        steal_cpus = ManagedProcess.server_cpus  # None unpinned: the whole machine
        steal_before = cpu_steal_seconds(steal_cpus)
        logged_before = querylog_bytes(ctx, tag) if peer.querylog else 0
        stats = run_dnsperf(ctx.load, port, args.seconds, ctx.deadline)
        if peer.querylog:
            # What the measured run added (the writer may still hold its last buffer).
            logged = querylog_bytes(ctx, tag) - logged_before
            result["querylog_bytes"] = logged
            result["querylog_bytes_per_answer"] = logged / max(1, stats["completed"])
        busy = machine_busy_seconds() - busy_before
        stolen = cpu_steal_seconds(steal_cpus) - steal_before
        user_after, system_after = tree_cpu_times(server.pid)
        writer_cpu = sum(tree_cpu_times(server.pid, WRITER)) - writer_before
        user, system = user_after - user_before, system_after - system_before
        cpu = user + system
        result.update(stats)
        wall = stats["run_seconds"]
        result["server_cpu_pct"] = 100 * cpu / wall
        # Everything else the machine did meanwhile: other processes (another test run skews
        # the figures), and kernel work charged to neither process.
        result["other_cpu_pct"] = (
            100 * busy / wall - result["server_cpu_pct"] - stats["dnsperf_cpu_pct"]
        )
        result["queries_per_cpu_s"] = stats["completed"] / cpu if cpu > 0 else None
        # Time the hypervisor ran other guests on the server's CPUs, as a share of that time.
        counted = len(steal_cpus) if steal_cpus else (os.cpu_count() or 1)
        result["steal_pct"] = 100 * stolen / (wall * counted)
        if stats["completed"]:
            # Microseconds per answer in the server's own code and in the kernel for it.
            result["user_us_per_answer"] = 1e6 * user / stats["completed"]
            result["system_us_per_answer"] = 1e6 * system / stats["completed"]
            if peer.querylog:
                # Of that, the query log's writer processes (on the same cores when pinned).
                result["querylog_writer_us_per_answer"] = 1e6 * writer_cpu / stats["completed"]
        result["memory"] = tree_memory_mib(server.pid)
        if peer.kind == "unbound" and conf is not None:
            counters = unbound_stats(conf, reset=False)
            queries = counters.get("total.num.queries", 0)
            if queries:
                # Unbound counts the answers RPZ gives as cache hits too.
                result["cachehit_pct"] = 100 * counters.get("total.num.cachehits", 0) / queries
        if pdns_before:
            pdns_after = pdns_counters(pdns_control)
            asked = pdns_after.get("questions", 0) - pdns_before["questions"]
            if asked > 0:
                # Its packet cache answers RPZ-rewritten answers too, as Unbound's counter does.
                hits = pdns_after["packetcache-hits"] - pdns_before["packetcache-hits"]
                result["cachehit_pct"] = 100 * hits / asked
        if hits_before:
            hits_after = dnsmasq_cache_counters(port)
            if "hits" in hits_after:
                result["dnsmasq_counters"] = {
                    k: hits_after[k] - hits_before.get(k, 0) for k in ("hits", "misses")
                }
                # Answers from the cache (local address= answers are not counted as hits).
                result["cachehit_pct"] = (
                    100 * result["dnsmasq_counters"]["hits"] / max(1, stats["completed"])
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
        if peer.querylog and args.querylog_dir:  # outside the run's folder: not removed with it
            path = querylog_path(ctx, tag)
            for written in path.parent.glob(path.name + "*"):
                written.unlink(missing_ok=True)
    return result


# -- preparation ------------------------------------------------------------------------------


def _config_for_tools(ctx: Context, name: str, index_path: Path) -> Path:
    """A blokir config naming the list, for `compile` and `export` (the port is not used)."""
    return blokir_config(
        ctx.tmp / name,
        port=53,
        workers=1,
        upstream_port=ctx.nsd_port,
        list_path=ctx.list_path,
        index_path=index_path,
        landing_ipv4=LANDING_IPV4,
        landing_ipv6=LANDING_IPV6,
    )


def prepare_blokir(ctx: Context) -> dict[str, Any]:
    """Compile the index once (timed, with the compiler's peak RSS); every blokir run maps it."""
    ctx.blokir_index = ctx.tmp / "bench.blkx"
    config = _config_for_tools(ctx, "compile.toml", ctx.blokir_index)
    out_path, err_path = ctx.tmp / "compile.out", ctx.tmp / "compile.err"
    started = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "resolver", "compile", "-c", str(config), "--json"],
            stdout=out,
            stderr=err,
            cwd=REPO,
        )
    limit = time.monotonic() + ctx.deadline.cap(1800)
    while True:  # wait4 rather than wait: it gives this child's own peak RSS
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > limit:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError("blokir compile took too long (--deadline)")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"blokir compile failed: {err_path.read_text().strip()[-2000:]}")
    summary = json.loads(out_path.read_text())
    return {
        "compile_wall_s": wall,
        "compile_s": summary.get("compile_seconds"),
        "compile_peak_rss_mib": usage.ru_maxrss / 1024,
        "index_bytes": summary.get("bytes"),
        "entries": summary.get("entries"),
    }


def index_figures(ctx: Context, sample: int) -> dict[str, Any]:
    """bench/index_bench.py's lookup figures on the index the runs serve: open time and the cost
    of one lookup (median of its repeats) for a miss, a listed name and a name below one."""
    from bench.index_bench import lookup_figures

    assert ctx.blokir_index is not None
    names: list[bytes] = []
    with ctx.list_path.open("rb") as lines:
        for line in lines:
            names.append(line.strip())
            if len(names) >= sample:
                break
    figures = lookup_figures(ctx.blokir_index, names)
    kinds = ("miss_4_labels", "hit_listed", "hit_below_4_labels")
    return {
        "open_ms": figures["open_seconds"] * 1e3,
        "lookup_us": {k: figures[f"{k}_us"] for k in kinds},
        "lookups_per_s": {k: 1e6 / figures[f"{k}_us"] for k in kinds},
        "sample": len(names),
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


def blokir_export(ctx: Context, fmt: str, output: Path) -> tuple[float, str | None]:
    """`python -m resolver export --format FMT` of the list: (seconds, None) or (seconds, why
    it failed)."""
    config = _config_for_tools(ctx, "export.toml", ctx.tmp / "unused.blkx")
    started = time.perf_counter()
    argv = [sys.executable, "-m", "resolver", "export", "-c", str(config), "--format", fmt]
    done = subprocess.run(
        [*argv, "-o", str(output)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=ctx.deadline.cap(1800),
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return seconds, (done.stderr.strip().splitlines() or ["no output"])[-1]
    return seconds, None


def prepare_rpz(ctx: Context) -> dict[str, Any]:
    """Export the list as RPZ with `blokir export` (timed), for Unbound and pdns-recursor."""
    ctx.rpz = ctx.tmp / "bench.rpz"
    seconds, failed = blokir_export(ctx, "rpz", ctx.rpz)
    info: dict[str, Any] = {"export_s": seconds, "exporter": "blokir export"}
    if failed:
        print(
            f"  note: `blokir export --format rpz` failed ({failed}); the RPZ is written by the "
            "benchmark's own writer instead (A/AAAA landing records for each name and *.name)"
        )
        started = time.perf_counter()
        write_rpz_fallback(ctx.list_path, ctx.rpz)
        info = {"export_s": time.perf_counter() - started, "exporter": "bench fallback"}
    info["rpz_bytes"] = ctx.rpz.stat().st_size
    return info


def prepare_dnsmasq(ctx: Context) -> dict[str, Any]:
    """Export the list for dnsmasq with `blokir export` (timed): `--format dnsmasq` by default
    (address=/local= lines: the name and its subtree, NODATA for other types), or `hosts`."""
    fmt = ctx.args.dnsmasq_format
    ctx.dnsmasq_list = ctx.tmp / f"bench.{fmt}"
    seconds, failed = blokir_export(ctx, fmt, ctx.dnsmasq_list)
    if failed:
        raise BenchError(f"`blokir export --format {fmt}` failed: {failed}")
    return {
        "export_s": seconds,
        "format": fmt,
        "file_bytes": ctx.dnsmasq_list.stat().st_size,
        "cache_size": ctx.args.dnsmasq_cache_size,
    }


def memory_check(kind: str, size: int) -> str | None:
    """None when the peer can likely hold `size` names here, else why not."""
    per_name = KIB_PER_NAME.get(kind)
    if per_name is None:
        return None
    needed_kib = size * per_name
    available_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available_kib = int(line.split()[1])
    if available_kib and needed_kib > 0.8 * available_kib:
        return (
            f"skipped: {size:,} names would need about {needed_kib / 2**20:.1f} GiB in {kind} "
            f"({per_name:g} KiB per name, measured) and {available_kib / 2**20:.1f} GiB is "
            "available"
        )
    return None


def load_check(kind: str, size: int, start_timeout: float) -> str | None:
    """None when the peer likely loads `size` names within `start_timeout`, else why not."""
    per_name = LOAD_S_PER_NAME.get(kind)
    if per_name is None or size * per_name <= start_timeout:
        return None
    return (
        f"skipped: {size:,} names would take about {size * per_name:.0f} s to load in {kind} "
        f"({per_name * 1e6:g} s per million names, measured), more than --start-timeout "
        f"{start_timeout:g} s"
    )


# -- figures ----------------------------------------------------------------------------------


def median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str, sub: str | None = None) -> float | None:
        if sub is None:
            return median([r.get(key) for r in runs])
        return median([r.get(key, {}).get(sub) for r in runs])

    qps = [r["qps"] for r in runs]
    return {
        "runs": len(runs),
        "qps_median": col("qps"),
        "qps_all": qps,
        "spread_pct": 100 * (max(qps) - min(qps)) / statistics.median(qps) if qps else None,
        "avg_latency_ms": (col("avg_latency_s") or 0) * 1e3,
        "stddev_latency_ms": (col("stddev_latency_s") or 0) * 1e3,
        "lost_total": sum(r["lost"] for r in runs),
        "sent_total": sum(r["sent"] for r in runs),
        "lost_pct_max": max(100 * r["lost"] / max(1, r["sent"]) for r in runs),
        "server_cpu_pct": col("server_cpu_pct"),
        "dnsperf_cpu_pct": col("dnsperf_cpu_pct"),
        "other_cpu_pct": col("other_cpu_pct"),
        "queries_per_cpu_s": col("queries_per_cpu_s"),
        "steal_pct": col("steal_pct"),
        "user_us_per_answer": col("user_us_per_answer"),
        "system_us_per_answer": col("system_us_per_answer"),
        "rss_mib": col("memory", "rss_mib"),
        "pss_mib": col("memory", "pss_mib"),
        "rss_loaded_mib": col("memory_loaded", "rss_mib"),
        "first_block_s": col("first_block_s"),
        "first_answer_s": col("first_answer_s"),
        "p50_ms": col("latency_run", "p50"),
        "p95_ms": col("latency_run", "p95"),
        "p99_ms": col("latency_run", "p99"),
        "cachehit_pct": col("cachehit_pct"),
        "querylog_bytes": col("querylog_bytes"),
        "querylog_bytes_per_answer": col("querylog_bytes_per_answer"),
        "querylog_writer_us_per_answer": col("querylog_writer_us_per_answer"),
    }


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    def base(name: str) -> float | None:
        value = results.get(name, {}).get("summary", {}).get("qps_median")
        return float(value) if value else None

    unbound1, ceiling1 = base("unbound1"), base("ceiling1")
    # Ratios against the other servers' first peer, when it ran (reporting.EXTRA_REFERENCES).
    extra = {name: qps for name in reporting.EXTRA_REFERENCES if (qps := base(name))}
    header = (
        f"{'peer':<9} {'q/s':>8} {'spread%':>7} {'vs ub1':>6} {'vs ceil':>7} "
        + "".join(f"{'vs ' + name:>11} " for name in extra)
        + f"{'avg ms':>6} "
        f"{'p50/p95/p99 ms @half':>20} {'lost':>6} {'srv CPU%':>8} {'q/CPU-s':>8} "
        f"{'other%':>6} {'RSS MiB':>7} {'PSS MiB':>7} {'1st s':>6} {'hits%':>5}"
    )
    print(header)
    print("-" * len(header))
    notes = []
    for name, entry in results.items():
        if "summary" not in entry:
            why = entry.get("skipped") or "FAILED: " + entry.get("error", "?")
            print(f"{name:<9} {why.splitlines()[0]}")
            continue
        s = entry["summary"]
        if "error" in entry:
            notes.append(f"{name}: a run failed, figures from {s['runs']} run(s): {entry['error']}")
        pct = (
            f"{s['p50_ms']:.2f}/{s['p95_ms']:.2f}/{s['p99_ms']:.2f}"
            if s["p50_ms"] is not None
            else "-"
        )
        first = s["first_block_s"] if s["first_block_s"] is not None else s["first_answer_s"]
        print(
            f"{name:<9} {fmt(s['qps_median'], ',.0f'):>8} {s['spread_pct']:>7.0f} "
            f"{fmt(s['qps_median'] / unbound1 if unbound1 else None, '.2f'):>6} "
            f"{fmt(s['qps_median'] / ceiling1 if ceiling1 else None, '.2f'):>7} "
            + "".join(f"{s['qps_median'] / qps:>11.2f} " for qps in extra.values())
            + f"{s['avg_latency_ms']:>6.2f} {pct:>20} {s['lost_total']:>6} "
            f"{fmt(s['server_cpu_pct'], '.0f'):>8} {fmt(s['queries_per_cpu_s'], ',.0f'):>8} "
            f"{fmt(s['other_cpu_pct'], '.0f'):>6} {fmt(s['rss_mib'], '.0f'):>7} "
            f"{fmt(s['pss_mib'], '.0f'):>7} {fmt(first, '.2f'):>6} "
            f"{fmt(s['cachehit_pct'], '.0f'):>5}"
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
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    versions = {"dnsperf": dnsperf_version(dnsperf)}
    for tool, flag, pattern in (
        ("nsd", "-v", r"NSD version (\S+)"),
        ("unbound", "-V", r"Version (\S+)"),
        ("dnsmasq", "--version", r"Dnsmasq version (\S+)"),
        ("pdns_recursor", "--version", r"PowerDNS Recursor (\S+)"),
        ("dnsdist", "--version", r"dnsdist (\S+)"),
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
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "blokir_hot_path": blokir_hot_path(),
        "versions": versions,
    }


# -- one list size ----------------------------------------------------------------------------


def run_size(
    size: int,
    peers: list[Peer],
    *,
    tmp_root: Path,
    nsd_port: int,
    dnsperf: str,
    deadline: Deadline,
    args: argparse.Namespace,
    left_out: list[Peer],
) -> dict[str, Any]:
    """Every peer at one list size: the workload, the preparation, the alternating runs.
    `left_out`: peers of --peers that --peers-at leaves out at this size, listed as skipped."""
    started = time.perf_counter()
    print(f"\n== {size_label(size)} names: peers {', '.join(p.name for p in peers)}")
    list_path = list_file(args.workdir, size, args.seed)
    query_file, workload = write_queries(
        args.workdir,
        list_path,
        size=size,
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
        f"workload: {size:,} listed names (seed {args.seed}), {args.allowed:,} allowed names "
        f"under {ZONE}, {workload['queries']:,} queries: {workload['blocked']:,} blocked "
        f"({workload['blocked_as_subdomain']:,} below a listed name), {workload['allowed']:,} "
        f"allowed over {workload['allowed_distinct_hosts']:,} hosts (top 1% of hosts: "
        f"{100 * workload['allowed_share_of_top_1pct_hosts']:.0f}% of them); types "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(workload["qtypes"].items()))
        + f" [{time.perf_counter() - started:.1f} s]"
    )
    entry: dict[str, Any] = {
        "size": size,
        "workload": workload,
        "list_file": str(list_path),
        "query_file": str(query_file),
    }
    results: dict[str, dict[str, Any]] = {p.name: {"kind": p.kind, "runs": []} for p in peers}
    for peer in left_out:
        # Say why it is not here: it would not fit, or --peers-at left it out.
        why = memory_check(peer.kind, size)
        why = why or f"skipped: not run at {size_label(size)} (--peers-at)"
        print(f"{peer.name}: {why}")
        results[peer.name] = {"kind": peer.kind, "runs": [], "skipped": why}
    entry["peers"] = results
    tmp = tmp_root / f"size-{size}"
    tmp.mkdir()
    load = Load(dnsperf, query_file, args.clients, args.timeout, args.rate)
    ctx = Context(tmp, nsd_port, size, list_path, load, deadline, args, blocked_probe)

    def set_all(kind: str, key: str, why: str) -> None:
        for p in peers:
            if p.kind == kind:
                results[p.name][key] = why

    try:
        kinds = {p.kind for p in peers}
        if "blokir" in kinds:
            why = blokir_serve_available()
            if why is None:
                try:
                    prepared = prepare_blokir(ctx)
                    entry["blokir_compile"] = prepared
                    print(
                        f"blokir: compiled {prepared['entries']:,} names in "
                        f"{prepared['compile_wall_s']:.2f} s (process; compile "
                        f"{prepared['compile_s']:.2f} s), peak RSS "
                        f"{prepared['compile_peak_rss_mib']:.0f} MiB, index "
                        f"{prepared['index_bytes'] / 2**20:.1f} MiB"
                    )
                    looked = index_figures(ctx, args.lookup_sample)
                    entry["blokir_index"] = looked
                    per_s = looked["lookups_per_s"]
                    print(
                        f"blokir index: open {looked['open_ms']:.1f} ms; lookups/s (median of "
                        f"5 x {looked['sample']:,}): miss {per_s['miss_4_labels']:,.0f}, listed "
                        f"{per_s['hit_listed']:,.0f}, below a listed name "
                        f"{per_s['hit_below_4_labels']:,.0f}"
                    )
                except BenchError as exc:
                    print(f"blokir: {exc}")
                    set_all("blokir", "error", str(exc))
            else:
                print(f"blokir: {why}")
                set_all("blokir", "error", why)
        for kind in ("pdns", "dnsdist"):
            if kind in kinds:
                if find_binary(BINARIES[kind]) is None:  # these peers fail, the others run
                    missing = f"{BINARIES[kind]} is not installed (scripts/install-test-deps)"
                    print(f"{kind}: {missing}")
                    set_all(kind, "error", missing)
                    continue
                too_big = memory_check(kind, size) or load_check(kind, size, args.start_timeout)
                if too_big is not None:
                    print(f"{kind}: {too_big}")
                    set_all(kind, "skipped", too_big)
        if "unbound" in kinds:
            require_binary(BINARIES["unbound"])
            too_big = memory_check("unbound", size)
            if too_big is not None:
                print(f"unbound: {too_big}")
                set_all("unbound", "skipped", too_big)
        rpz_users = [
            p
            for p in peers
            if p.kind in RPZ_KINDS and not {"skipped", "error"} & results[p.name].keys()
        ]
        if rpz_users:  # one export for Unbound and pdns-recursor alike
            prepared = prepare_rpz(ctx)
            entry["unbound_rpz"] = prepared
            print(
                f"rpz: {prepared['rpz_bytes'] / 2**20:.1f} MiB from "
                f"{prepared['exporter']} in {prepared['export_s']:.2f} s"
            )
        if "dnsmasq" in kinds:
            require_binary(BINARIES["dnsmasq"])
            too_big = memory_check("dnsmasq", size)
            if too_big is None:
                try:
                    prepared = prepare_dnsmasq(ctx)
                    entry["dnsmasq_list"] = prepared
                    print(
                        f"dnsmasq: {prepared['format']} file {prepared['file_bytes'] / 2**20:.1f}"
                        f" MiB from blokir export in {prepared['export_s']:.2f} s; cache-size "
                        f"{prepared['cache_size']:,}"
                    )
                except BenchError as exc:
                    print(f"dnsmasq: {exc}")
                    set_all("dnsmasq", "error", str(exc))
            else:
                print(f"dnsmasq: {too_big}")
                set_all("dnsmasq", "skipped", too_big)

        runnable = [p for p in peers if "error" not in results[p.name]]
        runnable = [p for p in runnable if "skipped" not in results[p.name]]
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
                print_run(peer, run, measured)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    for result in results.values():
        if result["runs"]:
            result["summary"] = summarise(result["runs"])
    print()
    print(f"{size_label(size)} names:")
    print_table(results)
    entry["elapsed_s"] = time.perf_counter() - started
    return entry


def print_run(peer: Peer, run: int, measured: dict[str, Any]) -> None:
    lat = measured.get("latency_run", {})
    extra = (
        f", p50/p95/p99 {lat['p50']:.2f}/{lat['p95']:.2f}/{lat['p99']:.2f} ms "
        f"at {lat['rate']:,} q/s"
        if "p50" in lat
        else ""
    )
    hits = measured.get("cachehit_pct")
    first = "first block" if "first_block_s" in measured else "first answer"
    print(
        f"  run {run + 1} {peer.name}: {measured['qps']:,.0f} q/s, "
        f"avg {measured['avg_latency_s'] * 1e3:.3f} ms, lost {measured['lost']}, "
        f"server CPU {measured['server_cpu_pct']:.0f}%"
        + (
            f" (user {measured['user_us_per_answer']:.2f} + system "
            f"{measured['system_us_per_answer']:.2f} us per answer)"
            if "user_us_per_answer" in measured
            else ""
        )
        + ", dnsperf CPU "
        f"{measured['dnsperf_cpu_pct']:.0f}%, other CPU "
        f"{measured['other_cpu_pct']:.0f}%, steal {measured.get('steal_pct', 0):.1f}%, "
        f"RSS {measured['memory']['rss_mib']:.0f}"
        f" MiB, {first} {measured['first_answer_s']:.2f} s"
        + (f", cache hits {hits:.0f}%" if hits is not None else "")
        + extra
        + (
            f", query log {reporting.querylog_figures(measured)}"
            if "querylog_bytes" in measured
            else ""
        )
        + (f" [{measured['warning']}]" if "warning" in measured else "")
    )


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cpus = os.cpu_count() or 1
    default_peers = ["blokir1", "blokirq1", "unbound1", "pdns1", "dnsdist1", "dnsmasq1", "ceiling1"]
    if cpus > 1:
        default_peers += [f"blokir{cpus}", f"unbound{cpus}"]
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100k names, 3 s per run, 1 run: checks the script end to end, not the numbers",
    )
    parser.add_argument(
        "--peers",
        default=",".join(default_peers),
        help="comma-separated: blokir<N> (workers), blokirq<N> (with the query log), unbound<N> "
        "(threads), pdns<N> (threads), dnsdist<N> (listeners), dnsmasq1, ceiling<N> "
        "(processes); default %(default)s",
    )
    parser.add_argument(
        "--sizes",
        help="comma-separated list sizes, e.g. 1M,10M (default 1M,10M; quick 100k)",
    )
    parser.add_argument("--size", help="one list size (the same as --sizes SIZE)")
    parser.add_argument(
        "--peers-at",
        action="append",
        default=[],
        metavar="SIZE=PEERS",
        help="other peers at one size, e.g. 10M=blokir1,blokir2,ceiling1 (repeatable)",
    )
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
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout of blokir with its own .venv (e.g. a git worktree of the commit "
        "before a change), run by the base<N> peers",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the load generator, NSD and this script on the first usable CPU and every "
        "server under test on the others, so a server has its cores to itself and runs vary "
        "less (needs 2 CPUs at least; on 2 CPUs a server of N workers shares one core)",
    )
    parser.add_argument("--rate", type=float, help="dnsperf -Q for the measured runs (no limit)")
    parser.add_argument("--timeout", type=float, default=2.0, help="dnsperf -t")
    parser.add_argument(
        "--dnsmasq-format",
        choices=("dnsmasq", "hosts"),
        default="dnsmasq",
        help="how dnsmasq gets the list: `blokir export --format dnsmasq` (address=/local= "
        "lines: the name and its subtree; default) or `--format hosts` (exact names only)",
    )
    parser.add_argument(
        "--dnsmasq-cache-size",
        type=int,
        default=DNSMASQ_CACHE_SIZE,
        help="dnsmasq --cache-size (default %(default)s)",
    )
    parser.add_argument(
        "--lookup-sample",
        type=int,
        help="names per blokir index lookup figure (default 200000; quick 20000)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="seconds a peer may take to its first blocked answer",
    )
    parser.add_argument("--deadline", type=float, help="overall seconds (default 3600; quick 300)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / "work",
        help="where list and query files are kept between runs",
    )
    add_output_options(parser, "<date>.json, .md and .png")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "queries": 200_000 if quick else 1_000_000,
        "runs": 1 if quick else 3,
        "seconds": 3.0 if quick else 30.0,
        "warmup": 1.0 if quick else 10.0,
        "latency_seconds": 1.5 if quick else 5.0,
        "deadline": 300.0 if quick else 3600.0,
        "lookup_sample": 20_000 if quick else 200_000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.size and args.sizes:
        parser.error("give --size or --sizes, not both")
    sizes_text = args.sizes or args.size or ("100k" if quick else "1M,10M")
    args.size_list = [parse_size(s) for s in sizes_text.split(",") if s.strip()]
    if args.baseline is not None and not (Path(args.baseline) / ".venv/bin/python").exists():
        parser.error(f"--baseline {args.baseline}: no .venv/bin/python in it (pip install -e .)")
    peers = parse_peers(args.peers, args.baseline)
    args.peer_list = peers
    plan: dict[int, list[Peer]] = {size: peers for size in args.size_list}
    for item in args.peers_at:
        size_text, sep, peers_text = item.partition("=")
        if not sep:
            parser.error(f"--peers-at {item!r}: expected SIZE=PEERS")
        size = parse_size(size_text)
        if size not in plan:
            parser.error(f"--peers-at {item!r}: {size:,} is not one of the sizes")
        plan[size] = parse_peers(peers_text, args.baseline)
    args.plan = plan
    return args


def add_output_options(parser: argparse.ArgumentParser, files: str) -> None:
    """--results and --keep-tmp, read by results_folder and clean_up. `files`: what a run
    writes, for the help."""
    parser.add_argument(
        "--results",
        type=Path,
        help=f"folder for {files} (default bench/results; with --quick the temporary folder, "
        "removed at the end)",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    parser.add_argument(
        "--querylog-dir",
        type=Path,
        help="where blokirq<N> peers write their dnstap files (default: the run's temporary "
        "folder; e.g. /dev/shm to leave the disk out)",
    )


def results_folder(results: Path | None, quick: bool, tmp: Path) -> Path:
    """Where a run's result files go: --results, else bench/results, but with --quick the
    temporary folder (removed at the end: a smoke run leaves no figures behind)."""
    folder = results or (tmp / "results" if quick else HERE / "results")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def arm_deadline(seconds: float) -> Deadline:
    """The overall time budget: a Deadline every wait is cut to, and a hard stop (SIGALRM) a
    little after it for a wait the deadline does not cover. SIGTERM exits through the callers'
    `finally` blocks, so no server is left behind."""

    def on_alarm(signum: int, frame: object) -> None:
        raise BenchError(f"overall deadline of {seconds:.0f} s reached (--deadline)")

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(seconds) + 60)
    return Deadline(seconds)


def start_upstream(tmp: Path, allowed: int, deadline: Deadline) -> tuple[ManagedProcess, int]:
    """NSD serving the workload's zone of `allowed` names from `tmp`: (process, port)."""
    zonefile = tmp / "bench.example.zone"
    write_zone(zonefile, allowed)
    return start_nsd(tmp, ZONE, zonefile, host_name(1), deadline)


def clean_up(nsd: ManagedProcess | None, tmp: Path, keep_tmp: bool) -> None:
    """The end of every run, however it ended: no alarm, no server left, the temporary folder
    removed (or kept with --keep-tmp)."""
    signal.alarm(0)
    if nsd is not None:
        nsd.stop()
    ManagedProcess.stop_all()
    if keep_tmp:
        print(f"kept configs and logs in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def exit_status(failed: bool, began: float) -> int:
    """The process's exit status (1 when anything failed), after the run's wall time."""
    print(f"elapsed: {time.perf_counter() - began:.0f} s")
    return 1 if failed else 0


def pin_split(cpus: set[int]) -> tuple[frozenset[int], frozenset[int]]:
    """--pin: (the load generator's CPUs, the servers' CPUs): the lowest usable CPU for the
    first, the rest for the second."""
    if len(cpus) < 2:
        raise SystemExit("--pin needs 2 usable CPUs at least")
    first = min(cpus)
    return frozenset({first}), frozenset(cpus - {first})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = arm_deadline(args.deadline)
    began = time.perf_counter()
    when = datetime.now(UTC)
    dnsperf = require_binary("dnsperf")
    info = machine_info(dnsperf)
    print(
        f"machine: {info['nproc']} CPUs ({info['usable_cpus']} usable), {info['cpu_model']}, "
        f"{info['memory_gib']} GiB, Linux {info['kernel']}, Python {info['python']}"
    )
    print("tools: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    hot_path = info["blokir_hot_path"]
    print(
        f"blokir: hot path {hot_path}"
        + (
            ""
            if hot_path.startswith("compiled")
            else " [NOT the compiled build: any source edit since the install falls back to "
            "plain Python, so these are not the build's figures; reinstall first]"
        )
    )
    print(
        "  dnsperf prints mean/stddev/min/max latency only (no histogram option); p50/p95/p99 "
        "come from its per-query (-v) lines in a separate run at half the measured rate"
    )

    if args.pin:
        load_cpus, server_cpus = pin_split(os.sched_getaffinity(0))
        os.sched_setaffinity(0, load_cpus)  # dnsperf and NSD inherit it from this process
        ManagedProcess.server_cpus = server_cpus
        info["pinned"] = {"load": sorted(load_cpus), "servers": sorted(server_cpus)}
        print(
            f"pinned: servers on CPU {reporting.cpu_list(server_cpus)}, dnsperf and NSD on CPU "
            f"{reporting.cpu_list(load_cpus)}"
        )

    idle_check = machine_busy_pct()
    print(f"machine busy before the run: {idle_check:.0f}% of a core over 1 s", end="")
    print(" (not idle: the figures will be low and noisy)" if idle_check > 20 else "")
    info["busy_before_pct"] = idle_check
    print(
        f"load: dnsperf -c {args.clients} -t {args.timeout:g} -l {args.seconds:g}"
        + (f" -Q {args.rate:g}" if args.rate else "")
        + f", {args.warmup:g} s warm-up, {args.runs} run(s) per peer, peers alternate"
    )

    args.workdir.mkdir(parents=True, exist_ok=True)
    internal = ("plan", "peer_list")
    settings = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in internal
    }
    settings["plan"] = {str(size): [p.name for p in peers] for size, peers in args.plan.items()}
    report: dict[str, Any] = {
        "started": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": info,
        "settings": settings,
        "sizes": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="blokir-bench-"))
    nsd: ManagedProcess | None = None
    failed = False
    try:
        nsd, nsd_port = start_upstream(tmp, args.allowed, deadline)
        print(f"upstream: NSD on {LOOPBACK}:{nsd_port} serving {ZONE} ({args.allowed:,} hosts)")
        for size, peers in args.plan.items():
            try:
                entry = run_size(
                    size,
                    peers,
                    tmp_root=tmp,
                    nsd_port=nsd_port,
                    dnsperf=dnsperf,
                    deadline=deadline,
                    args=args,
                    left_out=[p for p in args.peer_list if p not in peers],
                )
            except BenchError as exc:
                print(f"{size_label(size)} names: FAILED: {exc}")
                report["sizes"][str(size)] = {"size": size, "error": str(exc), "peers": {}}
                failed = True
                continue
            report["sizes"][str(size)] = entry
            failed = failed or any(
                "error" in e or ("summary" not in e and "skipped" not in e)
                for e in entry["peers"].values()
            )
        signal.alarm(0)
        report["elapsed_s"] = time.perf_counter() - began
        report["goals"] = reporting.goals(report)
        print()
        print(reporting.goals_text(report["goals"]))
        results_dir = results_folder(args.results, args.quick, tmp)
        for line in reporting.write(report, results_dir, RESULT_STEM):
            print(line)
        print(history.record(report, results_dir))
        if args.quick and args.results is None:
            print("  (--quick: these files go with the temporary folder; --results DIR keeps them)")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
            print(f"figures written to {args.json}")
    finally:
        clean_up(nsd, tmp, args.keep_tmp)
    return exit_status(failed, began)


if __name__ == "__main__":
    sys.exit(main())
