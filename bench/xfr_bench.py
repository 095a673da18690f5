"""Zone-transfer benchmark: blokir as the RPZ primary of a large policy.

One run, all on 127.0.0.1:

1. A seeded block list of N names (bench/workload.py; reused from --workdir) and `blokir serve`
   with `[rpz] listen`, one worker, NSD (a wildcard zone) as the upstream.
2. Start-up: the index build, the zone snapshot (`rpz: serial ... built in S s` in the log),
   then its packing into message bodies (`packed for AXFR in S s`).
3. AXFR: a raw TCP client takes the whole zone, counting records without decoding them (so the
   client is not the bottleneck; the last message is decoded to check it ends with the SOA).
   A sampler reads the supervisor's RSS (where the primary runs) 20 times a second: the
   figure is its peak during the transfer minus its RSS just before.
4. IXFR: a real Unbound is the secondary (`rpz:` with `primary:`); once it enforces the
   policy, 1,000 new names are written to a second list and the clock runs from that write
   (blokir's watcher sees it, reloads, builds the next zone version, sends NOTIFY; Unbound
   takes the IXFR) until Unbound answers NXDOMAIN for the last of them.

Prints the figures and exits 1 only when the run itself broke. --quick: 100k names (CI).

    python bench/xfr_bench.py --quick          # ~30 s
    python bench/xfr_bench.py                  # 10M names (several minutes and ~6 GB)
    python bench/xfr_bench.py --no-ixfr        # the AXFR figures only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench.servers import (  # noqa: E402 - after the path set-up, as the other benchmarks
    LOOPBACK,
    BenchError,
    Deadline,
    ManagedProcess,
    free_port,
    require_binary,
    smaps_rollup_kib,
    start_blokir,
    start_nsd,
    unbound_secondary_conf,
)
from bench.workload import write_list  # noqa: E402

ZONE = "rpz.blokir."
CHANGED = 1000


def rss_mib(pid: int) -> float:
    return smaps_rollup_kib(pid)[0] / 1024


class Sampler:
    """Peak RSS of one process, sampled every 50 ms while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(0.05)


def soa_serial(port: int) -> int | None:
    query = dns.message.make_query(ZONE, "SOA")
    try:
        reply = dns.query.udp(query, LOOPBACK, port=port, timeout=1)
    except (OSError, dns.exception.DNSException):
        return None
    return int(reply.answer[0][0].serial) if reply.answer else None


def axfr(port: int, expected: int, deadline: Deadline) -> tuple[float, int, int]:
    """(seconds, records, bytes) of one AXFR; stops once `expected` records arrived."""
    query = dns.message.make_query(ZONE, "AXFR").to_wire()
    records = size = 0
    started = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), timeout=deadline.cap(120)) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        reader = sock.makefile("rb", buffering=1 << 20)
        last = b""
        while records < expected:
            head = reader.read(2)
            if len(head) < 2:
                raise BenchError(f"the AXFR stream ended after {records} of {expected} records")
            last = reader.read(struct.unpack("!H", head)[0])
            records += struct.unpack("!H", last[6:8])[0]
            size += len(last) + 2
            if deadline.remaining() <= 0:
                raise BenchError("deadline reached during the AXFR")
    seconds = time.perf_counter() - started
    final = dns.message.from_wire(last, xfr=True, origin=None, one_rr_per_rrset=True)
    if final.rcode() != dns.rcode.NOERROR or final.answer[-1].rdtype != 6:
        raise BenchError("the last AXFR message does not end with the SOA")
    return seconds, records, size


def log_seconds(log: Path, marker: str) -> float | None:
    """The seconds in blokir's log line containing `marker`, written as `... in S s`."""
    for line in log.read_text(errors="replace").splitlines():
        if marker in line and " in " in line:
            return float(line.rsplit(" in ", 1)[1].split()[0])
    return None


def wait_packed(blokir: ManagedProcess, serial: int, deadline: Deadline) -> float:
    """Until the version is packed into message bodies (what an AXFR then sends)."""
    marker = f"rpz: serial {serial} packed for AXFR"
    while (seconds := log_seconds(blokir.log, marker)) is None:
        blokir.check_alive()
        time.sleep(0.2)
        deadline.cap(1)
    return seconds


def wait_serial(port: int, after: int | None, deadline: Deadline, blokir: ManagedProcess) -> int:
    while True:
        blokir.check_alive()
        serial = soa_serial(port)
        if serial is not None and serial != after:
            return serial
        time.sleep(0.1)
        deadline.cap(1)


def nxdomain(port: int, name: str) -> bool:
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), LOOPBACK, port=port, timeout=1)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NXDOMAIN


def run(args: argparse.Namespace) -> dict[str, float]:
    deadline = Deadline(args.deadline)
    args.workdir.mkdir(parents=True, exist_ok=True)
    listed = write_list(args.workdir / f"list-{args.names}-{args.seed}.txt", args.names, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="blokir-xfr-bench-"))
    figures: dict[str, float] = {"names": args.names}
    zonefile = tmp / "example.zone"
    zonefile.write_text(
        "$ORIGIN example.\n$TTL 30\n@ SOA ns h 1 60 60 600 30\n@ NS ns\nns A 127.0.0.1\n"
        "* A 198.51.100.9\n"
    )
    nsd, nsd_port = start_nsd(tmp, "example.", zonefile, "probe.example", deadline)
    processes: list[ManagedProcess] = [nsd]
    try:
        rpz_port, unbound_port = free_port(), free_port()
        changes = tmp / "changes.txt"
        changes.write_text("seed.xfr-bench.example\n")  # a list that yields nothing is refused
        config = tmp / "blokir.toml"
        config.write_text(f"""[server]
listen = ["{LOOPBACK}:{free_port()}"]
workers = 1
[upstream]
servers = ["{LOOPBACK}:{nsd_port}"]
[blocking]
index_path = "{tmp}/index.blkx"
landing_ipv4 = "192.0.2.10"
[metrics]
enabled = false
[updates]
watch_interval = 0.2
max_shrink = 1.0
[[lists]]
name = "changes"
path = "{changes}"
action = "nxdomain"
[[lists]]
name = "bench"
path = "{listed}"
format = "plain"
[rpz]
listen = ["{LOOPBACK}:{rpz_port}"]
notify = ["{LOOPBACK}:{unbound_port}"]
""")
        started = time.perf_counter()
        blokir = start_blokir(config, "blokir-primary", tmp / "blokir.log")
        processes.append(blokir)
        serial = wait_serial(rpz_port, None, deadline, blokir)
        figures["startup_s"] = time.perf_counter() - started
        figures["snapshot_build_s"] = log_seconds(blokir.log, f"rpz: serial {serial}: ") or 0.0
        figures["pack_s"] = wait_packed(blokir, serial, deadline)
        state = json.loads((tmp / "blokir-state" / "rpz" / "state.json").read_text())
        expected = int(state["records"]) + 3  # SOA, NS, records, SOA
        baseline = rss_mib(blokir.pid)
        with Sampler(blokir.pid) as sampler:
            seconds, records, size = axfr(rpz_port, expected, deadline)
        figures.update(
            axfr_s=seconds,
            axfr_records=records,
            axfr_mib=size / 2**20,
            primary_rss_before_mib=baseline,
            primary_rss_peak_mib=sampler.peak,
            primary_rss_extra_mib=max(0.0, sampler.peak - baseline),
        )
        if args.ixfr:
            figures.update(
                ixfr(tmp, blokir, rpz_port, unbound_port, nsd_port, changes, deadline, processes)
            )
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def ixfr(
    tmp: Path,
    blokir: ManagedProcess,
    rpz_port: int,
    unbound_port: int,
    nsd_port: int,
    changes: Path,
    deadline: Deadline,
    processes: list[ManagedProcess],
) -> dict[str, float]:
    unbound = require_binary("unbound")
    conf = unbound_secondary_conf(tmp, unbound_port, rpz_port, nsd_port, ZONE)
    started = time.perf_counter()
    secondary = ManagedProcess("unbound", [unbound, "-d", "-c", str(conf)], tmp / "unbound.out")
    processes.append(secondary)
    canary = "canary.example."
    changes.write_text(canary.rstrip(".") + "\n")  # proves the secondary is in step first
    while not nxdomain(unbound_port, canary):
        secondary.check_alive()
        blokir.check_alive()
        time.sleep(0.05)
        deadline.cap(1)
    loaded = time.perf_counter() - started
    serial = soa_serial(rpz_port)
    names = [f"chg{i}.xfr-bench.example" for i in range(CHANGED)]
    temporary = changes.with_suffix(".new")
    temporary.write_text(canary.rstrip(".") + "\n" + "\n".join(names) + "\n")
    written = time.perf_counter()
    os.replace(temporary, changes)
    probe = 0
    while not nxdomain(unbound_port, f"p{probe}.{names[-1]}."):
        probe += 1
        secondary.check_alive()
        blokir.check_alive()
        time.sleep(0.02)
        deadline.cap(1)
    latency = time.perf_counter() - written
    new_serial = soa_serial(rpz_port) or 0
    text = blokir.log.read_text(errors="replace")
    return {
        "secondary_first_load_s": loaded,
        "ixfr_latency_s": latency,
        "ixfr_build_s": log_seconds(blokir.log, f"rpz: serial {new_serial}: ") or 0.0,
        "ixfr_transfers": float(text.count("rpz: IXFR to ")),
        "serial_steps": float(new_serial != serial),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="100k names (CI)")
    parser.add_argument("--seed", type=int, default=20251)
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    parser.add_argument("--no-ixfr", dest="ixfr", action="store_false")
    parser.add_argument("--deadline", type=float, default=3600.0)
    args = parser.parse_args()
    if args.quick:
        args.names = 100_000
        args.deadline = min(args.deadline, 300.0)
    try:
        figures = run(args)
    except BenchError as exc:
        print(f"xfr_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        ManagedProcess.stop_all()
    for key, value in figures.items():
        print(f"{key:24} {value:,.2f}" if isinstance(value, float) else f"{key:24} {value:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
