"""Index benchmark: compile time, file size, open time, peak RSS while compiling, lookup cost.

Prints figures; asserts nothing. With Unbound installed it loads the same 1M list as an RPZ zone
exported by blokir and prints Unbound's load time and RSS beside blokir's, from the same run.

    python bench/index_bench.py              # 1M and 10M names
    python bench/index_bench.py --quick      # 100k names, seconds (CI smoke)
    python bench/index_bench.py --sizes 10000000 --containers plain,xz,7z,parts --repeat 3
        # the largest list also as .xz, .7z and ten parts: compile time and peak RSS of each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.rcode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.containers import CONTAINERS, container_rows, print_rows  # noqa: E402
from bench.workload import write_list  # noqa: E402
from resolver.index import open_index  # noqa: E402

LOOKUP_SAMPLE = 200_000
REPEATS = 5


# Runs `python -m resolver` and, at exit, writes the process's own peak RSS (VmHWM, kB) to the
# file named by $BLOKIR_BENCH_HWM. wait4's ru_maxrss would not do: Linux starts a child's
# ru_maxrss at the high-water mark of the process it was spawned from, so every compile would
# report at least the benchmark's own peak (which holds a 10M-line list in memory).
_HWM_WRAPPER = """
import atexit, os, runpy, sys
def hwm():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BLOKIR_BENCH_HWM"], "w") as out:
        out.write(kib)
atexit.register(hwm)
runpy.run_module("resolver", run_name="__main__", alter_sys=True)
"""


def compile_in_child(list_path: Path, index_path: Path) -> dict[str, float]:
    """Compile in a separate process; its peak RSS as the process itself saw it (VmHWM)."""
    cmd = [
        sys.executable,
        "-c",
        _HWM_WRAPPER,
        "compile",
        str(list_path),
        "-o",
        str(index_path),
        "--json",
    ]
    hwm_file = index_path.with_name(index_path.name + ".hwm")
    env = {**os.environ, "BLOKIR_BENCH_HWM": str(hwm_file)}
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, cwd=HERE.parent, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"compile failed: {done.stderr.decode()}")
    summary = json.loads(done.stdout)
    peak_kib = int(hwm_file.read_text())
    hwm_file.unlink()
    return {
        "wall_seconds": wall,
        "compile_seconds": summary["compile_seconds"],
        "peak_rss_mib": peak_kib / 1024,
        "entries": summary["entries"],
        "bytes": summary["bytes"],
    }


def lookup_figures(index_path: Path, names: list[bytes]) -> dict[str, float]:
    started = time.perf_counter()
    index = open_index(index_path)
    open_seconds = time.perf_counter() - started
    match = index.match_policy_id
    sample = names[:LOOKUP_SAMPLE]
    workloads = {
        # 4 labels, not listed: the common ISP case (3 probes: name, parent, grandparent)
        "miss_4_labels": [b"www.tidakada%d.co.id" % i for i in range(len(sample))],
        # listed names as they are (1 probe for 2-label entries)
        "hit_listed": sample,
        # 4+ labels under a listed name (walks up to the entry)
        "hit_below_4_labels": [
            b"cdn.www." + n if n.count(b".") < 2 else b"cdn." + n for n in sample
        ],
    }
    figures: dict[str, float] = {"open_seconds": open_seconds}
    for label, queries in workloads.items():
        runs = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for q in queries:
                match(q)
            runs.append((time.perf_counter() - t0) / len(queries) * 1e6)
        figures[f"{label}_us"] = statistics.median(runs)
    index.close()
    return figures


def unbound_figures(list_path: Path, workdir: Path, probe_name: str) -> dict[str, float] | None:
    """Load the same list into Unbound as an RPZ exported by blokir; time until the first
    blocked answer and RSS after load."""
    unbound = shutil.which("unbound") or (
        "/usr/sbin/unbound" if Path("/usr/sbin/unbound").exists() else None
    )
    if unbound is None:
        print("  unbound: not installed, skipped (scripts/install-test-deps installs it)")
        return None
    rpz = workdir / f"{list_path.stem}.rpz"
    config_path = workdir / "export.toml"
    config_path.write_text(
        f'[blocking]\nlanding_ipv4 = "192.0.2.10"\n[[lists]]\nname = "bench"\n'
        f'path = "{list_path}"\nformat = "plain"\naction = "nxdomain"\n'
    )
    if not rpz.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "resolver",
                "export",
                "-c",
                str(config_path),
                "--format",
                "rpz",
                "-o",
                str(rpz),
            ],
            check=True,
            cwd=HERE.parent,
        )
    port = _free_port()
    conf = workdir / "unbound.conf"
    conf.write_text(f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: "{workdir}/unbound.log"
    num-threads: 1
    module-config: "respip iterator"
    do-not-query-localhost: no
rpz:
    name: rpz.blokir.
    zonefile: "{rpz}"
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@9
""")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [unbound, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ready = _wait_for_block(port, probe_name, started + 120)
        load_seconds = time.perf_counter() - started
        rss = _rss_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not ready:
        print("  unbound: did not answer the blocked probe within 120 s")
        return None
    return {"first_block_seconds": load_seconds, "rss_mib": rss, "rpz_bytes": rpz.stat().st_size}


def _wait_for_block(port: int, name: str, deadline: float) -> bool:
    query = dns.message.make_query(name, "A")
    while time.perf_counter() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(query.to_wire(), ("127.0.0.1", port))
                reply = dns.message.from_wire(sock.recv(4096))
                if reply.rcode() == dns.rcode.NXDOMAIN:
                    return True
            except (TimeoutError, ConnectionRefusedError, OSError):
                time.sleep(0.05)
    return False


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k names only (CI smoke)")
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--no-unbound", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--containers",
        default=",".join(CONTAINERS),
        help="for the largest size, compile the list as each of these (plain, xz, 7z, parts); "
        "empty: none (default: %(default)s)",
    )
    parser.add_argument("--parts", type=int, default=10, help="parts of the split list (10)")
    parser.add_argument("--repeat", type=int, default=1, help="container runs; median (1)")
    parser.add_argument("--level", type=int, default=6, help="LZMA preset of .xz and .7z (6)")
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    results = {}
    for size in sizes:
        list_path = write_list(args.workdir / f"list-{size}.txt", size, seed=20251)
        index_path = args.workdir / f"list-{size}.blkx"
        built = compile_in_child(list_path, index_path)
        names = [line.encode() for line in list_path.read_text().splitlines()[:LOOKUP_SAMPLE]]
        looked = lookup_figures(index_path, names)
        row = {**built, **looked}
        print(
            f"{size:>10,} names: compile {built['compile_seconds']:.2f} s "
            f"(process {built['wall_seconds']:.2f} s), peak RSS {built['peak_rss_mib']:.0f} MiB, "
            f"index {built['bytes'] / 1e6:.1f} MB, open {looked['open_seconds'] * 1e3:.1f} ms"
        )
        print(
            f"{'':>17}lookup (median of {REPEATS}): "
            f"4-label miss {looked['miss_4_labels_us']:.2f} us, "
            f"listed hit {looked['hit_listed_us']:.2f} us, "
            f"4+-label hit below an entry {looked['hit_below_4_labels_us']:.2f} us"
        )
        if (
            not args.no_unbound
            and size <= 1_000_000
            and size == max(s for s in sizes if s <= 1_000_000)
        ):
            with tempfile.TemporaryDirectory() as tmp:
                unbound = unbound_figures(list_path, Path(tmp), names[0].decode())
            if unbound:
                row["unbound"] = unbound
                print(
                    f"{'':>17}unbound (same list as RPZ, 1 thread): first blocked answer "
                    f"after {unbound['first_block_seconds']:.2f} s, RSS "
                    f"{unbound['rss_mib']:.0f} MiB (blokir index: "
                    f"{built['bytes'] / 2**20:.0f} MiB mapped)"
                )
        if args.containers and size == max(sizes):
            chosen = [c for c in args.containers.split(",") if c]
            rows = container_rows(
                list_path, chosen, args.parts, args.repeat, compile_in_child, args.level
            )
            print_rows(rows, size, args.parts, args.repeat)
            row["containers"] = rows
        results[size] = row
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
