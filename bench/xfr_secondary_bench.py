"""Zone-transfer benchmark: blokir as the secondary of a large RPZ zone served by NSD.

One run, all on 127.0.0.1:

1. A policy zone of N names (`name CNAME .`, the seeded names of bench/workload.py) at serial 1,
   served by NSD with provide-xfr to loopback and IXFR data made on every reload (create-ixfr,
   store-ixfr).
2. AXFR: a fresh process runs blokir's secondary code (resolver/xfr/secondary.py,
   `Secondary.transfer`) into an empty state directory: wall time, the process's peak resident
   memory (VmHWM) and what it still holds once the transfer is done (VmRSS; the secondary keeps
   its `Secondary` alive, as the supervisor does between transfers).
3. IXFR: the zone moves to serial 2 with `--changes` names removed and as many new ones added;
   NSD reloads (SIGHUP) and makes the difference; a second fresh process brings the same copy
   up to date: the same figures. The copy is then checked: serial 2, the new names in, the
   removed ones out, the line count right.

Memory is that of the transferring process alone (NSD is not counted); `import` shows the
process before any transfer (Python, dnspython, blokir's modules). Prints the figures and, with
`--json FILE`, writes them there. It asserts nothing about the figures: the exit status is 1
only when the run itself broke (NSD did not start, a transfer failed, the copy is wrong).

    python bench/xfr_secondary_bench.py                # 1M names, 1,000 changed
    python bench/xfr_secondary_bench.py --names 10000000
    python bench/xfr_secondary_bench.py --quick        # CI: 50k names
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rdatatype  # noqa: E402

from bench.workload import synthetic_names  # noqa: E402
from tests.support.processes import Deadline, ManagedProcess  # noqa: E402
from tests.support.servers import start_nsd  # noqa: E402

ZONE = "rpz.bench."
SEED = 20251
PROBE = f"probe.{ZONE}"


def zone_lines(serial: int, names: list[str]) -> list[str]:
    head = [
        f"$ORIGIN {ZONE}",
        "$TTL 300",
        f"@ SOA ns.{ZONE} hostmaster.{ZONE} {serial} 3600 600 86400 300",
        "@ NS localhost.",
        "probe A 192.0.2.1",
    ]
    return head + [f"{name} CNAME ." for name in names]


def write_zone(path: Path, serial: int, names: list[str]) -> None:
    temp = path.with_suffix(".tmp")
    with temp.open("w") as out:
        step = 100_000
        lines = zone_lines(serial, [])
        out.write("\n".join(lines) + "\n")
        for start in range(0, len(names), step):
            out.write("".join(f"{name} CNAME .\n" for name in names[start : start + step]))
    temp.replace(path)


def primary_serial(port: int) -> int | None:
    query = dns.message.make_query(ZONE, "SOA")
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1.0)
    except Exception:  # not answering yet (reloading)
        return None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def memory_kib() -> dict[str, int]:
    wanted = {"VmHWM", "VmRSS"}
    found: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in wanted:
                found[key] = int(value.split()[0])
    return found


def child(args: argparse.Namespace) -> None:
    """One transfer in this (fresh) process; its figures as one JSON line on stdout."""
    from resolver.xfr.secondary import Secondary
    from resolver.xfr.source import XfrSource

    before = memory_kib()
    secondary = Secondary("bench", XfrSource("127.0.0.1", args.port, ZONE), args.state)
    started = time.perf_counter()
    cpu = time.process_time()
    result = secondary.transfer(args.timeout)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    after = memory_kib()
    figures = {
        "outcome": result.outcome,
        "kind": result.kind,
        "detail": result.detail,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "import_rss_mib": before["VmRSS"] / 1024,
        "peak_rss_mib": after["VmHWM"] / 1024,
        "held_rss_mib": after["VmRSS"] / 1024,
        "serial": secondary.state.serial,
    }
    print(json.dumps(figures))


def run_child(script: Path, port: int, state: Path, timeout: float) -> dict[str, Any]:
    argv = [sys.executable, str(script), "--child", "--port", str(port), "--state", str(state)]
    argv += ["--timeout", str(timeout)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout * 20)
    if done.returncode != 0:
        raise SystemExit(f"transfer process failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["outcome"] != "updated":
        raise SystemExit(f"transfer did not update the copy: {figures}")
    return figures


def check_copy(copy: Path, serial: int, present: list[str], gone: list[str], records: int) -> None:
    """The copy after IXFR: the new serial, the added names in, the removed ones out."""
    want_in = {f"{name}.{ZONE}".lower() for name in present}
    want_out = {f"{name}.{ZONE}".lower() for name in gone}
    lines = 0
    found_in: set[str] = set()
    soa_serial = None
    with copy.open("rb") as text:
        for raw in text:
            line = raw.decode()
            if not line.strip() or line.startswith(("$", ";")):
                continue
            lines += 1
            owner, _, _, rdtype, *rest = line.split()
            owner = owner.lower()
            if rdtype == "SOA":
                soa_serial = int(rest[2])
            if owner in want_out:
                raise SystemExit(f"{copy}: {owner} was removed at the primary but is still here")
            if owner in want_in:
                found_in.add(owner)
    if soa_serial != serial:
        raise SystemExit(f"{copy}: serial {soa_serial}, not {serial}")
    if found_in != want_in:
        raise SystemExit(f"{copy}: {len(want_in - found_in)} added names missing")
    if lines != records:
        raise SystemExit(f"{copy}: {lines} records, not {records}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="50k names (CI smoke)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per read, as in blokir")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.names = 50_000
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xfr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    changes = min(args.changes, args.names)
    names = synthetic_names(args.names, SEED)
    added = synthetic_names(changes, SEED + 1, first_serial=args.names)
    removed = names[:changes]
    zonefile = workdir / "rpz.zone"
    write_zone(zonefile, 1, names)
    primary: ManagedProcess | None = None
    figures: dict[str, Any] = {"names": args.names, "changes": changes}
    try:
        started = time.perf_counter()
        primary, port = start_nsd(
            workdir,
            ZONE,
            zonefile,
            PROBE,
            Deadline(600),
            zone_options="    provide-xfr: 127.0.0.1 NOKEY\n"
            "    store-ixfr: yes\n    create-ixfr: yes\n",
            load_within=600,
        )
        figures["nsd_load_s"] = time.perf_counter() - started
        state = workdir / "state"
        script = Path(__file__).resolve()
        figures["axfr"] = run_child(script, port, state, args.timeout)

        names = names[changes:] + added
        write_zone(zonefile, 2, names)
        os.kill(primary.pid, signal.SIGHUP)
        deadline = time.monotonic() + 600
        while primary_serial(port) != 2:
            primary.check_alive()
            if time.monotonic() > deadline:
                raise SystemExit("NSD did not load serial 2 within 600 s")
            time.sleep(0.2)
        figures["ixfr"] = run_child(script, port, state, args.timeout)
        if figures["ixfr"]["kind"] != "IXFR":
            raise SystemExit(f"expected an IXFR: {figures['ixfr']}")
        check_copy(state / "bench.list", 2, added, removed, len(names) + 3)
    finally:
        if primary is not None:
            primary.stop()
        if args.workdir is None:  # a temporary one: zone, copy and NSD's files go
            shutil.rmtree(workdir, ignore_errors=True)
    for kind in ("axfr", "ixfr"):
        got = figures[kind]
        print(
            f"{kind.upper()} of {args.names:,} names"
            + (f" ({changes:,} changed)" if kind == "ixfr" else "")
            + f": {got['seconds']:.2f} s ({got['cpu_seconds']:.2f} s CPU), "
            f"peak RSS {got['peak_rss_mib']:.0f} MiB, "
            f"held after {got['held_rss_mib']:.0f} MiB (process at start "
            f"{got['import_rss_mib']:.0f} MiB)"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
