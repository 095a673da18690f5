"""Encrypted DNS benchmark: queries/s over DoT and DoH against plain UDP and TCP, blokir beside
Unbound's DoT listener, in one run.

One seeded workload (bench/resolver_bench.py's: a block list, a zone of allowed names served by
NSD on 127.0.0.1, 30% blocked names and 70% allowed ones with a Zipf popularity, so that after
the warm-up most allowed queries are cache hits), one throw-away CA (tests/support/tlsca.py),
and per run, alternating between the servers:

    blokir    workers = 1; dnsperf -m udp, tcp, dot, doh (HTTP/2, GET)
    unbound   num-threads 1, the list as RPZ; dnsperf -m udp, tcp, dot (tls-port)

dnsperf keeps its connections open (`-c` clients, each one connection for the whole run), so
the figures are per-query costs on a persistent connection, not handshakes. Prints a table of
median queries/s, latency and loss per server and transport, and the ratio of each encrypted
transport to UDP on the same server; asserts nothing.

    python bench/encrypted_bench.py                 # 100k names, 10 s x 3 runs per cell
    python bench/encrypted_bench.py --quick         # 2k names, 1.5 s x 1, < 60 s: does it work
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.resolver_bench import (  # noqa: E402
    DEFAULT_SEED,
    LANDING_IPV4,
    LANDING_IPV6,
    ZONE,
    dnsperf_statistics,
    host_name,
    list_file,
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
    unbound_conf,
    wait_for_answer,
)
from tests.support.tlsca import make_ca  # noqa: E402

MODES = {"blokir": ("udp", "tcp", "dot", "doh"), "unbound": ("udp", "tcp", "dot")}


def add_encrypted_listeners(config: Path, tls_port: int, https_port: int, ca_dir: Path) -> None:
    """blokir_config's file with DoT and DoH listeners in [server]."""
    text = config.read_text()
    extra = (
        f'tls_listen = ["{LOOPBACK}:{tls_port}"]\nhttps_listen = ["{LOOPBACK}:{https_port}"]\n'
        f'certificate = "{ca_dir / "server.pem"}"\nkey = "{ca_dir / "server.key"}"\n'
        "https_max_streams = 1000\n"
    )
    config.write_text(text.replace("[upstream]", extra + "\n[upstream]", 1))


def add_unbound_tls(conf: Path, tls_port: int, ca_dir: Path) -> None:
    """Unbound's DoT listener: an `interface` line per port, and tls-port names the TLS one."""
    text = conf.read_text()
    port_line = next(line for line in text.splitlines() if line.strip().startswith("port:"))
    udp_port = port_line.split(":")[1].strip()
    text = text.replace(
        f"    interface: {LOOPBACK}\n",
        f"    interface: {LOOPBACK}@{udp_port}\n    interface: {LOOPBACK}@{tls_port}\n"
        f"    tls-port: {tls_port}\n    tls-service-key: {ca_dir / 'server.key'}\n"
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
    args = parser.parse_args(argv)
    # The smoke run (scripts/test) must stay under a minute: a tiny list and zone, short cells,
    # a short warm-up; its figures only show that every transport answers.
    hosts, queries, warm_up = 20_000, 200_000, 2.0
    if args.quick:
        args.size, args.runs, args.seconds = 2_000, 1, 1.5
        hosts, queries, warm_up = 2_000, 20_000, 1.0
    deadline = Deadline(120 if args.quick else 1800)
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
        uport, utls = free_port(), free_port()
        conf = unbound_conf(work, uport, 1, rpz, nsd_port, "unbound1")
        add_unbound_tls(conf, utls, ca_dir)
        unbound = start_unbound(conf, "unbound1")
        processes.append(unbound)
        wait_for_answer(unbound, uport, host_name(1), time.monotonic() + deadline.cap(300))
        ports["unbound"] = {"udp": uport, "tcp": uport, "dot": utls}

        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            server: {mode: [] for mode in modes} for server, modes in MODES.items()
        }
        for server in MODES:  # warm both caches over UDP
            dnsperf("udp", ports[server]["udp"], query_file, warm_up, args.clients, deadline)
        for run in range(args.runs):
            for server, modes in MODES.items():
                for mode in modes:
                    stats = dnsperf(
                        mode, ports[server][mode], query_file, args.seconds, args.clients,
                        deadline,
                    )  # fmt: skip
                    results[server][mode].append(stats)
                    print(
                        f"run {run + 1} {server:8} {mode:4} {stats['qps']:>9,.0f} q/s  "
                        f"avg {stats['avg_latency_s'] * 1e3:.2f} ms  lost {stats['lost']}",
                        flush=True,
                    )
        summary = summarise(results)
        print_summary(summary)
        if args.json:
            args.json.write_text(json.dumps({"settings": vars(args) | {"json": None},
                                             "summary": summary, "runs": results},
                                            indent=2, default=str))  # fmt: skip
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
                "avg_latency_ms": statistics.median(r["avg_latency_s"] for r in runs) * 1e3,
                "lost": sum(r["lost"] for r in runs),
                "runs": len(runs),
            }
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print("\nmedian queries/s (persistent connections), and against UDP on the same server")
    print(f"{'server':8} {'mode':4} {'q/s':>10} {'vs udp':>7} {'avg ms':>7} {'lost':>6}")
    for server, modes in summary.items():
        udp = modes["udp"]["qps"] or 1.0
        for mode, figures in modes.items():
            print(
                f"{server:8} {mode:4} {figures['qps']:>10,.0f} {figures['qps'] / udp:>7.2f} "
                f"{figures['avg_latency_ms']:>7.2f} {figures['lost']:>6}"
            )
    if "dot" in summary.get("unbound", {}):
        ratio = summary["blokir"]["dot"]["qps"] / max(summary["unbound"]["dot"]["qps"], 1.0)
        print(f"\nblokir DoT / Unbound DoT: {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
