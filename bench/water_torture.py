"""Random-subdomain flood ("water torture") against blokir: do cached names keep answering fast,
and do the cache and the upstream in-flight count stay within their bounds?

Set-up, all on 127.0.0.1, each part its own process:

* a slow upstream (this script with --serve-upstream): NXDOMAIN for every name under the victim
  zone after `--delay` seconds, as an overloaded authoritative server would; an immediate A
  answer (TTL 3600) for the warm names under good.example;
* blokir with workers = 1, [cache] max_entries = 20000 and max_bytes = 8 MiB, the default
  in-flight caps (2048 in total, 100 per zone), metrics on;
* dnsperf sending unique random names under the victim zone at `--rate` queries/s for
  `--seconds` (a generated query file, never repeated);
* this script as the probe: one query at a time for the ~200 warm (cached) names, every
  `--probe-interval` seconds, timing each answer.

Prints per run: the flood sent and answered, SERVFAILs and how many came from the in-flight
caps, the in-flight peak, blokir's RSS and cache entries/bytes before and after (from /metrics),
and the probe's p50/p95/p99 against the 5 ms target; then the medians over `--runs`.

    python bench/water_torture.py            # 3 runs of 30 s at 3000 queries/s
    python bench/water_torture.py --quick    # 1 run of 8 s at 1500 queries/s (CI smoke)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import dns.message
import dns.query
import dns.rcode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.servers import (  # noqa: E402
    LOOPBACK,
    BenchError,
    ManagedProcess,
    free_port,
    metric_sum,
    require_binary,
    scrape_metrics,
    start_blokir,
    tree_cpu_seconds,
    tree_memory_mib,
    wait_for_answer,
)

VICTIM = "victim.example"
GOOD = "good.example"
WARM_NAMES = 200
P99_TARGET_MS = 5.0

# -- the slow upstream --------------------------------------------------------------------------


def _question_end(data: bytes) -> int:
    """End of the (uncompressed) question of a query; raises ValueError if malformed."""
    pos = 12
    while data[pos]:
        if data[pos] >= 0x40:
            raise ValueError("compressed or bad label in a query")
        pos += data[pos] + 1
    return pos + 5


def upstream_reply(data: bytes) -> tuple[bytes, bool]:
    """The reply to a query and whether it is for the victim zone (to be delayed). Built from
    bytes: dnspython would cost more CPU than the flood leaves on a 2-CPU machine."""
    end = _question_end(data)
    question = data[12:end]
    flags = 0x8180 | (data[2] << 8 & 0x0100)  # QR, RA, RD copied
    name = question[:-4].lower()
    if name.endswith(b"\x04good\x07example\x00"):
        header = data[:2] + (flags).to_bytes(2, "big") + b"\x00\x01\x00\x01\x00\x00\x00\x00"
        record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x63"
        return header + question + record, False
    # NXDOMAIN with the victim zone's SOA: owner = the question name minus its first label.
    apex = 12 + 1 + data[12]
    pointer = (0xC000 | apex).to_bytes(2, "big")
    timers = b"".join(n.to_bytes(4, "big") for n in (1, 3600, 600, 86400, 300))  # serial..minimum
    rdata = b"\x02ns" + pointer + b"\x01h" + pointer + timers
    soa = pointer + b"\x00\x06\x00\x01" + (300).to_bytes(4, "big")
    soa += len(rdata).to_bytes(2, "big") + rdata
    header = data[:2] + (flags | 3).to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x01\x00\x00"
    return header + question + soa, True


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.DatagramTransport | None = None
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply, slow = upstream_reply(data)
        except (ValueError, IndexError):
            return
        assert self.transport is not None
        if slow:
            asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, reply, addr)
        else:
            self.transport.sendto(reply, addr)


async def _serve_upstream(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Upstream(delay), local_addr=(LOOPBACK, port))
    await asyncio.Event().wait()


# -- blokir ------------------------------------------------------------------------------------


def blokir_config(workdir: Path, port: int, upstream_port: int, metrics_port: int) -> Path:
    (workdir / "block.txt").write_text("blocked.example\n")
    path = workdir / "blokir.toml"
    path.write_text(f"""# Written by bench/water_torture.py
[server]
listen = ["{LOOPBACK}:{port}"]
workers = 1

[upstream]
servers = ["{LOOPBACK}:{upstream_port}"]
timeout = 2.0
attempts = 2

[cache]
max_entries = 20000
max_bytes = 8388608

[blocking]
landing_ipv4 = "192.0.2.10"
index_path = "{workdir / "index.blkx"}"

[metrics]
enabled = true
listen = "{LOOPBACK}:{metrics_port}"

[[lists]]
name = "bench"
path = "{workdir / "block.txt"}"
""")
    return path


def metrics(port: int) -> dict[str, float]:
    """The figures this benchmark reads from blokir's /metrics."""
    text = scrape_metrics(port, timeout=5)

    def value(name: str, **labels: str) -> float:
        return metric_sum(text, name, **labels)

    return {
        "cache_entries": value("blokir_cache_entries"),
        "cache_bytes": value("blokir_cache_bytes"),
        "cache_evictions": value("blokir_cache_evictions_total"),
        "inflight_peak": value("blokir_upstream_inflight_peak"),
        "rejected_zone": value("blokir_upstream_inflight_rejected_total", scope="zone"),
        "rejected_total": value("blokir_upstream_inflight_rejected_total", scope="total"),
        "servfail": value("blokir_queries_total", outcome="servfail"),
        "coalesced": value("blokir_upstream_coalesced_total"),
    }


# -- load and probe ----------------------------------------------------------------------------


def flood_file(path: Path, count: int) -> Path:
    """`count` unique random names under the victim zone, in dnsperf's format."""
    with path.open("w") as out:
        for _ in range(count):
            out.write(f"{secrets.token_hex(8)}.{VICTIM} A\n")
    return path


def parse_dnsperf(text: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for key, pattern in (
        ("sent", r"Queries sent:\s+(\d+)"),
        ("completed", r"Queries completed:\s+(\d+)"),
        ("lost", r"Queries lost:\s+(\d+)"),
        ("qps", r"Queries per second:\s+([\d.]+)"),
    ):
        match = re.search(pattern, text)
        figures[key] = float(match.group(1)) if match else 0.0
    codes = re.search(r"Response codes:\s+(.*)", text)
    for code, count in re.findall(r"([A-Z]+) (\d+)", codes.group(1) if codes else ""):
        figures[code.lower()] = float(count)
    return figures


def probe(port: int, names: list[str], until: float, interval: float) -> list[float]:
    """One query at a time for the warm names until `until`; milliseconds per answer (a lost
    probe counts as its 1 s timeout, so loss shows in the tail)."""
    latencies: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.connect((LOOPBACK, port))
        wires = [dns.message.make_query(name, "A").to_wire() for name in names]
        i = 0
        while time.monotonic() < until:
            wire = wires[i % len(wires)]
            i += 1
            started = time.perf_counter()
            sock.send(wire)
            try:
                while True:
                    reply = sock.recv(4096)
                    if reply[:2] == wire[:2]:
                        break
                latencies.append((time.perf_counter() - started) * 1000)
            except TimeoutError:
                latencies.append(1000.0)
            time.sleep(interval)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def one_run(args: argparse.Namespace, workdir: Path, run: int) -> dict[str, Any]:
    dnsperf = require_binary("dnsperf")
    upstream_port, port, metrics_port = free_port(), free_port(), free_port()
    upstream = ManagedProcess(
        "upstream",
        [sys.executable, __file__, "--serve-upstream", str(upstream_port), str(args.delay)],
        workdir / f"upstream-{run}.log",
    )
    config = blokir_config(workdir, port, upstream_port, metrics_port)
    blokir = start_blokir(config, "blokir", workdir / f"blokir-{run}.log")
    try:
        wait_for_answer(blokir, port, f"w0.{GOOD}", time.monotonic() + 60, "192.0.2.99")
        names = [f"w{i}.{GOOD}" for i in range(WARM_NAMES)]
        for name in names:  # warm: every probe name is a cache hit from now on
            reply = dns.query.udp(dns.message.make_query(name, "A"), LOOPBACK, port=port, timeout=2)
            if reply.rcode() != dns.rcode.NOERROR:
                raise BenchError(f"warming {name} failed: {reply}")
        time.sleep(0.6)  # one metrics flush
        before = metrics(metrics_port)
        rss_before = tree_memory_mib(blokir.pid)["rss_mib"]
        baseline = probe(port, names, time.monotonic() + 1.5, args.probe_interval)
        queries = flood_file(workdir / f"flood-{run}.txt", int(args.rate * args.seconds) + 1000)
        flood = subprocess.Popen(
            [
                *(dnsperf, "-s", LOOPBACK, "-p", str(port), "-d", str(queries)),
                *(
                    "-l",
                    str(args.seconds),
                    "-Q",
                    str(args.rate),
                    "-q",
                    "20000",
                    "-c",
                    "4",
                    "-t",
                    "5",
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        cpu_started, flood_started = tree_cpu_seconds(blokir.pid), time.monotonic()
        time.sleep(1.0)  # let the flood build up before the probe counts
        latencies = probe(port, names, time.monotonic() + args.seconds - 1.5, args.probe_interval)
        rss_during = tree_memory_mib(blokir.pid)["rss_mib"]
        output, _ = flood.communicate(timeout=args.seconds + 30)
        cpu = (tree_cpu_seconds(blokir.pid) - cpu_started) / (time.monotonic() - flood_started)
        time.sleep(0.6)
        after = metrics(metrics_port)
        rss_after = tree_memory_mib(blokir.pid)["rss_mib"]
        blokir.check_alive()
    finally:
        blokir.stop()
        upstream.stop()
    sent = parse_dnsperf(output)
    return {
        "rate_asked": args.rate,
        "flood_sent": sent["sent"],
        "flood_answered": sent["completed"],
        "flood_qps": sent["qps"],
        "flood_nxdomain": sent.get("nxdomain", 0.0),
        "flood_servfail": sent.get("servfail", 0.0),
        "servfail_from_caps": after["rejected_zone"]
        + after["rejected_total"]
        - before["rejected_zone"]
        - before["rejected_total"],
        "inflight_peak": after["inflight_peak"],
        "coalesced": after["coalesced"] - before["coalesced"],
        "blokir_cpu_percent": 100 * cpu,
        "rss_mib_before": rss_before,
        "rss_mib_during": rss_during,
        "rss_mib_after": rss_after,
        "cache_entries_before": before["cache_entries"],
        "cache_entries_after": after["cache_entries"],
        "cache_bytes_before": before["cache_bytes"],
        "cache_bytes_after": after["cache_bytes"],
        "cache_evictions": after["cache_evictions"] - before["cache_evictions"],
        "probe_count": len(latencies),
        "probe_baseline_p99_ms": percentile(baseline, 99),
        "probe_p50_ms": percentile(latencies, 50),
        "probe_p95_ms": percentile(latencies, 95),
        "probe_p99_ms": percentile(latencies, 99),
        "probe_lost": sum(1 for value in latencies if value >= 1000.0),
    }


ROWS = (
    ("flood rate asked (q/s)", "rate_asked", "{:.0f}"),
    ("flood sent", "flood_sent", "{:.0f}"),
    ("flood answered", "flood_answered", "{:.0f}"),
    ("flood NXDOMAIN (from upstream)", "flood_nxdomain", "{:.0f}"),
    ("flood SERVFAIL", "flood_servfail", "{:.0f}"),
    ("  of which in-flight caps", "servfail_from_caps", "{:.0f}"),
    ("upstream in-flight peak", "inflight_peak", "{:.0f}"),
    ("blokir CPU during the flood (% of one core)", "blokir_cpu_percent", "{:.0f}"),
    ("blokir RSS before / during / after (MiB)", "rss", ""),
    ("cache entries before -> after", "entries", ""),
    ("cache bytes before -> after", "bytes", ""),
    ("cache evictions during the flood", "cache_evictions", "{:.0f}"),
    ("probe answers", "probe_count", "{:.0f}"),
    ("probe p99 before the flood (ms)", "probe_baseline_p99_ms", "{:.2f}"),
    ("probe p50 / p95 / p99 during (ms)", "probe", ""),
    ("probe lost", "probe_lost", "{:.0f}"),
)


def show(result: dict[str, Any]) -> str:
    special = {
        "rss": "{rss_mib_before:.0f} / {rss_mib_during:.0f} / {rss_mib_after:.0f}",
        "entries": "{cache_entries_before:.0f} -> {cache_entries_after:.0f}",
        "bytes": "{cache_bytes_before:.0f} -> {cache_bytes_after:.0f}",
        "probe": "{probe_p50_ms:.2f} / {probe_p95_ms:.2f} / {probe_p99_ms:.2f}",
    }
    lines = []
    for label, key, spec in ROWS:
        text = special[key].format(**result) if key in special else spec.format(result[key])
        lines.append(f"  {label:<42} {text}")
    verdict = "meets" if result["probe_p99_ms"] <= P99_TARGET_MS else "MISSES"
    lines.append(f"  {'p99 target ' + str(P99_TARGET_MS) + ' ms':<42} {verdict}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run of 8 s at 1500 q/s (CI)")
    parser.add_argument("--rate", type=int, default=3000, help="flood queries/s (dnsperf -Q)")
    parser.add_argument("--seconds", type=float, default=30.0, help="flood duration")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are printed")
    parser.add_argument("--delay", type=float, default=0.2, help="upstream delay for the victim")
    parser.add_argument("--probe-interval", type=float, default=0.005, help="seconds")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument(
        "--serve-upstream", nargs=2, metavar=("PORT", "DELAY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rate, args.seconds, args.runs = 1500, 8.0, 1
    if not 1 <= args.runs <= 10 or not 3 <= args.seconds <= 600 or not 1 <= args.rate <= 100_000:
        parser.error("--runs 1..10, --seconds 3..600 and --rate 1..100000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream:
        port, delay = args.serve_upstream
        asyncio.run(_serve_upstream(int(port), float(delay)))
        return 0
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="water-torture-") as tmp:
            for run in range(1, args.runs + 1):
                result = one_run(args, Path(tmp), run)
                results.append(result)
                print(
                    f"run {run}/{args.runs} ({args.seconds:.0f} s, upstream delay {args.delay} s):"
                )
                print(show(result), flush=True)
    except BenchError as exc:
        print(f"water_torture: {exc}", file=sys.stderr)
        return 1
    finally:
        ManagedProcess.stop_all()
    if len(results) > 1:
        medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(f"median of {len(results)} runs:")
        print(show(medians))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
