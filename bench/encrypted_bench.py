"""Encrypted DNS benchmark: queries/s over DoT and DoH against plain UDP and TCP, blokir beside
Unbound's DoT listener, in one run.

One seeded workload (bench/resolver_bench.py's: a block list, a zone of allowed names served by
NSD on 127.0.0.1, 30% blocked names and 70% allowed ones with a Zipf popularity, so that after
the warm-up most allowed queries are cache hits), one throw-away CA (tests/support/tlsca.py),
and per run, alternating between the servers:

    blokir    workers = 1; dnsperf -m udp, tcp, dot, doh (HTTP/2, GET)
    unbound   num-threads 1, the list as RPZ; dnsperf -m udp, tcp, dot (tls-port),
              doh (https-port; Debian's unbound is built with libnghttp2)

dnsperf keeps its connections open (`-c` clients, each one connection for the whole run), so
the figures are per-query costs on a persistent connection, not handshakes. With two or more
CPUs the servers run on one CPU and dnsperf and NSD on the other (--no-pin: all anywhere).
Prints a table of median queries/s, the server's CPU per answer (user + system, its whole
process tree), latency and loss per server and transport, the ratio of each encrypted transport
to UDP on the same server, and blokir against Unbound per transport; asserts nothing. Writes
bench/results/encrypted-latest.json and .md and appends the figures to
bench/results/history.csv (with --quick: neither, the smoke run's figures mean little).

    python bench/encrypted_bench.py                 # 100k names, 10 s x 3 runs per cell
    python bench/encrypted_bench.py --quick         # 2k names, 1.5 s x 1, < 60 s: does it work
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import history  # noqa: E402
from bench.resolver_bench import (  # noqa: E402
    DEFAULT_SEED,
    LANDING_IPV4,
    LANDING_IPV6,
    ZONE,
    dnsperf_statistics,
    host_name,
    list_file,
    machine_info,
    pin_split,
    write_queries,
    write_rpz_fallback,
    write_zone,
)
from bench.servers import (  # noqa: E402
    LOOPBACK,
    REPO,
    BenchError,
    Deadline,
    ManagedProcess,
    blokir_config,
    free_port,
    require_binary,
    start_blokir,
    start_nsd,
    start_unbound,
    tree_cpu_times,
    unbound_conf,
    wait_for_answer,
)
from tests.support.tlsca import make_ca  # noqa: E402

MODES = {"blokir": ("udp", "tcp", "dot", "doh"), "unbound": ("udp", "tcp", "dot", "doh")}
RESULTS = HERE / "results"
RESULT_STEM = "encrypted-latest"


def add_encrypted_listeners(config: Path, tls_port: int, https_port: int, ca_dir: Path) -> None:
    """blokir_config's file with DoT and DoH listeners in [server]."""
    text = config.read_text()
    extra = (
        f'tls_listen = ["{LOOPBACK}:{tls_port}"]\nhttps_listen = ["{LOOPBACK}:{https_port}"]\n'
        f'certificate = "{ca_dir / "server.pem"}"\nkey = "{ca_dir / "server.key"}"\n'
        "https_max_streams = 1000\n"
    )
    config.write_text(text.replace("[upstream]", extra + "\n[upstream]", 1))


def add_unbound_tls(conf: Path, tls_port: int, https_port: int, ca_dir: Path) -> None:
    """Unbound's DoT and DoH listeners: an `interface` line per port; tls-port names the DoT
    one, https-port the DoH one (both use tls-service-key/pem)."""
    text = conf.read_text()
    port_line = next(line for line in text.splitlines() if line.strip().startswith("port:"))
    udp_port = port_line.split(":")[1].strip()
    text = text.replace(
        f"    interface: {LOOPBACK}\n",
        f"    interface: {LOOPBACK}@{udp_port}\n    interface: {LOOPBACK}@{tls_port}\n"
        f"    interface: {LOOPBACK}@{https_port}\n"
        f"    tls-port: {tls_port}\n    https-port: {https_port}\n"
        f"    http-endpoint: /dns-query\n    http-max-streams: 1000\n"
        f"    tls-service-key: {ca_dir / 'server.key'}\n"
        f"    tls-service-pem: {ca_dir / 'server.pem'}\n    incoming-num-tcp: 1024\n",
        1,
    )
    conf.write_text(text)


def dnsperf(
    mode: str, port: int, query_file: Path, seconds: float, clients: int, deadline: Deadline
) -> dict[str, Any]:
    argv = [require_binary("dnsperf"), "-m", mode, "-s", LOOPBACK, "-p", str(port)]
    argv += ["-d", str(query_file), "-l", f"{seconds:g}", "-c", str(clients), "-t", "5"]
    if mode == "doh":
        argv += ["-O", f"doh-uri=https://{LOOPBACK}:{port}/dns-query", "-O", "doh-method=GET"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=deadline.cap(seconds + 60))
    if done.returncode != 0:
        raise BenchError(f"dnsperf -m {mode} failed: {done.stderr.strip()[-500:]}")
    return dnsperf_statistics(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k names, 1.5 s x 1 run (CI smoke)")
    parser.add_argument("--size", type=int, default=100_000, help="listed names")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8, help="dnsperf -c: connections")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-pin", action="store_true", help="servers and load on any CPU")
    parser.add_argument(
        "--results", type=Path, default=RESULTS,
        help="where encrypted-latest.* and history.csv go (not with --quick)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # The smoke run (scripts/test) must stay under a minute: a tiny list and zone, short cells,
    # a short warm-up; its figures only show that every transport answers.
    hosts, queries, warm_up = 20_000, 200_000, 2.0
    if args.quick:
        args.size, args.runs, args.seconds = 2_000, 1, 1.5
        hosts, queries, warm_up = 2_000, 20_000, 1.0
    deadline = Deadline(120 if args.quick else 1800)
    info = machine_info(require_binary("dnsperf"))
    cpus = os.sched_getaffinity(0)
    if not args.no_pin and len(cpus) >= 2:
        load_cpus, server_cpus = pin_split(set(cpus))
        os.sched_setaffinity(0, load_cpus)  # dnsperf and NSD inherit it from this process
        ManagedProcess.server_cpus = server_cpus
        info["pinned"] = {"load": sorted(load_cpus), "servers": sorted(server_cpus)}
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    work = Path(tempfile.mkdtemp(prefix="blokir-encbench-"))
    ca_dir = work / "tls"
    ca_dir.mkdir()
    make_ca(ca_dir)
    zonefile = work / "bench.zone"
    write_zone(zonefile, hosts)
    list_path = list_file(work, args.size, DEFAULT_SEED)
    query_file, _ = write_queries(
        work, list_path, size=args.size, seed=DEFAULT_SEED, count=queries, hosts=hosts,
        blocked_share=0.3, subdomain_share=0.25, zipf=1.0,
    )  # fmt: skip
    processes: list[ManagedProcess] = []
    try:
        nsd, nsd_port = start_nsd(work, ZONE, zonefile, host_name(0), deadline)
        processes.append(nsd)
        ports: dict[str, dict[str, int]] = {}
        # blokir
        udp, tls, https = free_port(), free_port(), free_port()
        config = blokir_config(
            work / "blokir.toml", port=udp, workers=1, upstream_port=nsd_port,
            list_path=list_path, index_path=work / "index.blkx",
            landing_ipv4=LANDING_IPV4, landing_ipv6=LANDING_IPV6,
        )  # fmt: skip
        add_encrypted_listeners(config, tls, https, ca_dir)
        subprocess.run(
            [sys.executable, "-m", "resolver", "compile", "-c", str(config)],
            cwd=REPO, check=True, capture_output=True, timeout=deadline.cap(600),
        )  # fmt: skip
        blokir = start_blokir(config, "blokir")
        processes.append(blokir)
        wait_for_answer(blokir, udp, host_name(1), time.monotonic() + deadline.cap(120))
        ports["blokir"] = {"udp": udp, "tcp": udp, "dot": tls, "doh": https}
        # unbound, the same list as RPZ
        rpz = work / "bench.rpz"
        write_rpz_fallback(list_path, rpz)
        uport, utls, uhttps = free_port(), free_port(), free_port()
        conf = unbound_conf(work, uport, 1, rpz, nsd_port, "unbound1")
        add_unbound_tls(conf, utls, uhttps, ca_dir)
        unbound = start_unbound(conf, "unbound1")
        processes.append(unbound)
        wait_for_answer(unbound, uport, host_name(1), time.monotonic() + deadline.cap(300))
        ports["unbound"] = {"udp": uport, "tcp": uport, "dot": utls, "doh": uhttps}
        pids = {"blokir": blokir.pid, "unbound": unbound.pid}

        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            server: {mode: [] for mode in modes} for server, modes in MODES.items()
        }
        for server in MODES:  # warm both caches over UDP
            dnsperf("udp", ports[server]["udp"], query_file, warm_up, args.clients, deadline)
        for run in range(args.runs):
            for server, modes in MODES.items():
                for mode in modes:
                    user, system = tree_cpu_times(pids[server])
                    stats = dnsperf(
                        mode, ports[server][mode], query_file, args.seconds, args.clients,
                        deadline,
                    )  # fmt: skip
                    user_after, system_after = tree_cpu_times(pids[server])
                    answers = max(stats["completed"], 1)
                    stats["user_us_per_answer"] = (user_after - user) / answers * 1e6
                    stats["system_us_per_answer"] = (system_after - system) / answers * 1e6
                    results[server][mode].append(stats)
                    print(
                        f"run {run + 1} {server:8} {mode:4} {stats['qps']:>9,.0f} q/s  "
                        f"{stats['user_us_per_answer'] + stats['system_us_per_answer']:6.1f} "
                        f"us/answer  avg {stats['avg_latency_s'] * 1e3:.2f} ms  "
                        f"lost {stats['lost']}",
                        flush=True,
                    )
        summary = summarise(results)
        print_summary(summary)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        report = {
            "benchmark": "encrypted",
            "started": started,
            "machine": info,
            "settings": settings,
            "summary": summary,
            "runs": results,
        }
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        if not args.quick:
            for line in write_results(report, args.results):
                print(line)
    finally:
        for process in reversed(processes):
            process.stop()
    return 0


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for server, modes in results.items():
        for mode, runs in modes.items():
            summary.setdefault(server, {})[mode] = {
                "qps": statistics.median(r["qps"] for r in runs),
                "user_us_per_answer": statistics.median(r["user_us_per_answer"] for r in runs),
                "system_us_per_answer": statistics.median(r["system_us_per_answer"] for r in runs),
                "avg_latency_ms": statistics.median(r["avg_latency_s"] for r in runs) * 1e3,
                "lost": sum(r["lost"] for r in runs),
                "runs": len(runs),
            }
    return summary


def table(summary: dict[str, Any]) -> list[str]:
    """A markdown table: per server and transport, the median q/s, CPU per answer, ratios."""
    out = [
        "| server | transport | q/s (median) | vs UDP, same server | blokir / Unbound "
        "| user / system us per answer | avg latency ms | lost |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for server, modes in summary.items():
        udp = modes["udp"]["qps"] or 1.0
        for mode, figures in modes.items():
            peer = summary.get("unbound", {}).get(mode)
            versus = (
                f"{figures['qps'] / max(peer['qps'], 1.0):.2f}x"
                if server == "blokir" and peer
                else ""
            )
            out.append(
                f"| {server} | {mode} | {figures['qps']:,.0f} | {figures['qps'] / udp:.2f} "
                f"| {versus} | {figures['user_us_per_answer']:.1f} / "
                f"{figures['system_us_per_answer']:.1f} | {figures['avg_latency_ms']:.2f} "
                f"| {figures['lost']} |"
            )
    return out


def print_summary(summary: dict[str, Any]) -> None:
    print("\nmedian per server and transport (persistent connections)")
    print("\n".join(table(summary)))


def markdown(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    versions = ", ".join(f"{tool} {v}" for tool, v in sorted(machine["versions"].items()))
    pinned = machine.get("pinned")
    where = (
        f"Servers on CPU {pinned['servers']}, dnsperf and NSD on CPU {pinned['load']}."
        if pinned
        else "Unpinned."
    )
    return "\n".join([
        f"# Encrypted DNS benchmark, {report['started']}",
        "",
        f"Machine: {machine['nproc']} CPUs, {machine['cpu_model']}, {machine['memory_gib']} GiB; "
        f"{versions}. {where}",
        f"Load: {settings['size']:,} listed names, dnsperf -c {settings['clients']} persistent "
        f"connections, {settings['runs']} run(s) of {settings['seconds']:g} s per cell "
        "(medians), servers alternating; one blokir worker, one Unbound thread (the list as RPZ).",
        "",
        *table(report["summary"]),
        "",
    ])  # fmt: skip


def write_results(report: dict[str, Any], directory: Path) -> list[str]:
    return history.write_latest(report, directory, RESULT_STEM, markdown(report))


if __name__ == "__main__":
    sys.exit(main())
