"""The Unbound plugin side by side, in one run: Unbound alone, Unbound + the blokir module,
Unbound + the same list as RPZ; q/s (dnsperf, the mixed workload of bench/resolver_bench.py),
RSS and the time to the first blocked answer. With --big, the module alone at a second size
(RPZ at 10M names does not fit in this machine's memory).

    python -m bench.plugin_bench                   # 1M names, 10M module only
    python -m bench.plugin_bench --quick           # CI smoke: 10k names, 3 s per peer

Goals: the module keeps >= 85% of Unbound's q/s and uses <= 0.1x the RSS of the RPZ setup.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.resolver_bench import (
    DEFAULT_SEED,
    LANDING_IPV4,
    Load,
    host_name,
    list_file,
    run_dnsperf,
    start_upstream,
    write_queries,
)
from bench.servers import (
    BenchError,
    Deadline,
    ManagedProcess,
    free_port,
    require_binary,
    start_unbound,
    tree_memory_mib,
    unbound_conf,
    wait_for_answer,
)
from resolver.plugins.unbound_setup import plugin_setup

REPO = Path(__file__).resolve().parents[1]
HOSTS = 10_000


def blokir(*args: str, timeout: float) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "resolver", *args], check=True, timeout=timeout, cwd=REPO)
    return time.perf_counter() - started


def write_config(tmp: Path, list_path: Path, size: int) -> Path:
    config = tmp / f"plugin-{size}.toml"
    config.write_text(
        f'[blocking]\nindex_path = "plugin-{size}.blkx"\nlanding_ipv4 = "{LANDING_IPV4}"\n'
        f'[[lists]]\nname = "bench"\npath = "{list_path}"\ncategory = "bench"\n'
        'action = "landing"\n'
    )
    return config


def first_blocked(list_path: Path) -> str:
    with list_path.open() as names:
        return next(line.strip() for line in names if line.strip())


def measure(
    name: str,
    tmp: Path,
    nsd_port: int,
    load: Load,
    seconds: float,
    probe: str,
    deadline: Deadline,
    *,
    modules: str,
    rpz: Path | None = None,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    port = free_port()
    conf = unbound_conf(tmp, port, 1, rpz, nsd_port, name, modules=modules, extra=extra, env=env)
    server: ManagedProcess = start_unbound(conf, name, env=env)
    try:
        want = LANDING_IPV4 if (rpz or env) else None
        asked = probe if want else host_name(1)  # Unbound alone: the first allowed answer
        first = wait_for_answer(server, port, asked, time.monotonic() + deadline.cap(600), want)
        stats = run_dnsperf(load, port, seconds, deadline)
        memory = tree_memory_mib(server.pid)
    finally:
        server.stop()
    return {
        "peer": name,
        "qps": stats["qps"],
        "lost": stats["lost"],
        "rss_mib": memory["rss_mib"],
        "first_blocked_s": first if want else None,
        "rcodes": stats["rcodes"],
    }


def run(
    size: int, big: int, seconds: float, clients: int, deadline: Deadline
) -> list[dict[str, Any]]:
    dnsperf = require_binary("dnsperf")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="blokir-plugin-bench-") as name:
        tmp = Path(name)
        nsd, nsd_port = start_upstream(tmp, HOSTS, deadline)
        try:
            for n, with_peers in ((size, True), (big, False)):
                if not n:
                    continue
                list_path = list_file(tmp, n, DEFAULT_SEED)
                queries, _ = write_queries(
                    tmp,
                    list_path,
                    size=n,
                    seed=DEFAULT_SEED,
                    count=200_000,
                    hosts=HOSTS,
                    blocked_share=0.1,
                    subdomain_share=0.3,
                    zipf=1.0,
                )
                load = Load(dnsperf, queries, clients, 2.0, None)
                config = write_config(tmp, list_path, n)
                compile_s = blokir("compile", "-c", str(config), timeout=deadline.cap(3600))
                setup = plugin_setup(config)
                probe = first_blocked(list_path)
                python = f'python:\n    python-script: "{setup.script}"\n'
                peers: list[tuple[str, dict[str, Any]]] = []
                if with_peers:
                    peers.append((f"unbound-{n}", {"modules": "iterator"}))
                peers.append(
                    (
                        f"unbound+blokir-{n}",
                        {"modules": "python iterator", "extra": python, "env": setup.environment()},
                    )
                )
                if with_peers:
                    rpz = tmp / f"list-{n}.rpz"
                    blokir(
                        "export",
                        "-c",
                        str(config),
                        "--format",
                        "rpz",
                        "-o",
                        str(rpz),
                        timeout=deadline.cap(3600),
                    )
                    peers.append((f"unbound+rpz-{n}", {"modules": "respip iterator", "rpz": rpz}))
                for peer, options in peers:
                    row = measure(peer, tmp, nsd_port, load, seconds, probe, deadline, **options)
                    row["names"] = n
                    row["compile_s"] = compile_s if "blokir" in peer else None
                    rows.append(row)
                    print(format_row(row), flush=True)
        finally:
            nsd.stop()
    return rows


def format_row(row: dict[str, Any]) -> str:
    first = row["first_blocked_s"]
    return (
        f"{row['peer']:<24} {row['qps']:>10,.0f} q/s  RSS {row['rss_mib']:>8,.1f} MiB  "
        f"first blocked {'-' if first is None else f'{first:.2f} s':>8}  lost {row['lost']}"
    )


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    by = {
        row["peer"].rsplit("-", 1)[0]: row
        for row in rows
        if row["peer"].endswith(f"-{rows[0]['names']}")
    }
    lines = []
    alone, module, rpz = by.get("unbound"), by.get("unbound+blokir"), by.get("unbound+rpz")
    if alone and module:
        share = module["qps"] / alone["qps"]
        lines.append(f"module q/s = {share:.2f} x Unbound alone (goal >= 0.85)")
    if module and rpz:
        ratio = module["rss_mib"] / rpz["rss_mib"]
        lines.append(f"module RSS = {ratio:.2f} x the RPZ setup (goal <= 0.10)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=10_000_000, help="module only; 0 skips")
    parser.add_argument("--seconds", type=float, default=15.0, help="dnsperf run per peer")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=3600.0)
    parser.add_argument("--quick", action="store_true", help="10k names, 3 s, no --big")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.big, args.seconds = 10_000, 0, 3.0
    try:
        rows = run(args.size, args.big, args.seconds, args.clients, Deadline(args.deadline))
    except BenchError as exc:
        print(f"plugin_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        ManagedProcess.stop_all()  # whatever ended the run, no server is left behind
    for line in verdict(rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
