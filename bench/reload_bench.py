"""Reload benchmark ("proof: zero loss"): live list reloads of a 1M-name list under DNS load.

One run, all on 127.0.0.1:

1. The workload of bench/resolver_bench.py (same seed, same files in bench/work/): a block list
   of N names, NSD serving 20k allowed names with rate limiting off, and the mixed dnsperf query
   file (30% blocked names, 70% allowed names with a Zipf popularity).
2. `blokir serve` with `--workers` workers, metrics on, a temporary directory, NSD as its only
   upstream, and `[updates] watch = false`, so the only reloads are the ones this script asks
   for.
3. The peak: a short unlimited dnsperf run (or `--rate`). Then dnsperf at half of it (`-Q`)
   from `--lead` s before the first reload until `--tail` s after the last one (ended with
   SIGINT, which dnsperf 2.x answers with its statistics), while, in parallel,
   - a probe client (a separate process, `--probe-rate` queries/s of cached allowed names and
     blocked names) records each query's send time and latency; no answer within
     `--timeout` is lost. dnsperf 2.10 has no latency histogram and its `-v` lines carry no
     timestamps, so the probe is what says when a slow answer happened;
   - this script triggers `--reloads` reloads of the list, `--interval` s apart and at least
     `--gap` s after the previous one's window: it writes the next version (two
     versions alternate, differing by `--diff` names, plus a marker name unique to each reload)
     atomically (a temporary file renamed over the list), runs `blokir reload`, checks that the
     outcome is "applied", and that the reload's marker is now blocked and the previous one is
     not (so each reload really rebuilt the index and swapped it in every worker);
   - a sampler reads the serving processes' RSS and PSS (/proc/PID/smaps_rollup) four times a
     second and the build process's (`python -m resolver.build`) high-water mark (VmHWM) twenty
     times a second.
4. Probe latencies are split into "during a reload" (from writing the new list until 1 s after
   `blokir reload` returned) and "outside"; p50, p99 and max of each.

Prints the figures, writes bench/results/reload-latest.json and .md (replacing the previous
run's) and appends the run's figures to bench/results/history.csv. It asserts nothing about
the figures: the exit status is 1 only when the run itself broke (blokir died, a reload was not
applied or not seen in the answers, a worker was restarted, dnsperf or the probe failed).

    python bench/reload_bench.py               # 1M names, 5 reloads under load (~1.5 min a run)
    python bench/reload_bench.py --runs 3      # three runs, medians
    python bench/reload_bench.py --quick       # CI: 100k names, 2 reloads, ~10 s of load
    python bench/reload_bench.py --reloads 0   # control: the same load and probe, no reload
    python bench/reload_bench.py --build-nice 10   # experiment: the build at a lower priority
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import history  # noqa: E402
from bench.report import size_label  # noqa: E402
from bench.resolver_bench import (  # noqa: E402
    DEFAULT_SEED,
    LANDING_IPV4,
    LANDING_IPV6,
    ZONE,
    Load,
    add_output_options,
    arm_deadline,
    clean_up,
    dnsperf_argv,
    dnsperf_statistics,
    exit_status,
    fmt,
    host_name,
    list_file,
    machine_info,
    median,
    parse_size,
    results_folder,
    run_dnsperf,
    start_upstream,
    write_queries,
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
    describe,
    free_port,
    machine_busy_pct,
    process_tree,
    require_binary,
    scrape_metrics,
    smaps_rollup_kib,
    start_blokir,
    tail,
    wait_for_answer,
)
from bench.workload import synthetic_names  # noqa: E402

WINDOW_AFTER = 1.0  # seconds after `blokir reload` returns that still count as "during"
LATENCY_TARGET_MS = 10.0  # the project's target for p99 during reloads (reported, not asserted)
MEMORY_INTERVAL = 0.25  # seconds between samples of the serving processes' RSS/PSS
BUILD_INTERVAL = 0.05  # seconds between samples of the build process's VmHWM
BUILD_MODULE = "resolver.build"
PROBE_ALLOWED = 40  # distinct cached allowed names the probe asks for
PROBE_BLOCKED = 40  # distinct blocked names (half of them below a listed name)
LANDING_A = bytes(int(part) for part in LANDING_IPV4.split("."))


# -- list versions ----------------------------------------------------------------------------


@dataclass
class ListVersions:
    """Two versions of the list: the base list plus one of two sets of `diff` extra names, and
    a marker name per reload. Only names are added, never removed from the base, so every
    blocked name in the query file stays blocked and the shrink guard never fires."""

    base: Path
    size: int
    diff: int
    seed: int
    extras: tuple[str, str] = ("", "")

    def __post_init__(self) -> None:
        sets = []
        for version in (0, 1):
            # Serial numbers past the base list's, so no extra name collides with a listed one.
            names = synthetic_names(
                self.diff, self.seed + 1000 + version, first_serial=self.size + version * self.diff
            )
            sets.append("\n".join(names) + "\n")
        self.extras = (sets[0], sets[1])

    def write(self, path: Path, version: int, marker: str) -> float:
        """Write this version over `path` atomically (temporary file in the same folder, then
        rename): the server never reads half a list. Returns the seconds it took."""
        started = time.perf_counter()
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.copyfile(self.base, temporary)
        with temporary.open("a") as out:
            out.write(self.extras[version % 2])
            out.write(marker.rstrip(".") + "\n")
        os.replace(temporary, path)
        return time.perf_counter() - started


def marker_name(run: int, reload: int) -> str:
    """A name in the NSD zone (NXDOMAIN there) listed only in the version of one reload."""
    return f"reload-marker-{run}-{reload}.{ZONE}"


# -- the probe (a child process) ----------------------------------------------------------------


def probe_child(spec_path: Path) -> int:
    """Entry point of the probe process: read the spec, warm the cache, say ready, measure."""
    spec = json.loads(spec_path.read_text())
    port = int(spec["port"])
    names: list[tuple[str, bool]] = [(n, False) for n in spec["allowed"]]
    names += [(n, True) for n in spec["blocked"]]
    templates = []
    for name, _ in names:
        wire = dns.message.make_query(name, "A").to_wire()
        templates.append(wire[2:])  # everything after the ID
    # Alternate allowed and blocked names so both kinds are spread over every window.
    allowed_count, blocked_count = len(spec["allowed"]), len(spec["blocked"])
    order: list[int] = []
    for i in range(max(allowed_count, blocked_count)):
        order += [i] if i < allowed_count else []
        order += [allowed_count + i] if i < blocked_count else []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        for i in range(len(names)):  # one round first, unrecorded: allowed names into the cache
            with contextlib.suppress(OSError):
                sock.settimeout(float(spec["timeout"]))
                sock.send(struct.pack("!H", i) + templates[i])
                sock.recv(4096)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError, OSError):
            while sock.recv(4096):
                pass
        Path(spec["ready"]).write_text(str(time.monotonic()))
        result = measure_probe(
            sock,
            templates=[templates[i] for i in order],
            blocked=[names[i][1] for i in order],
            rate=float(spec["rate"]),
            seconds=float(spec["seconds"]),
            timeout=float(spec["timeout"]),
            stop_file=Path(spec["stop"]),
        )
    Path(spec["output"]).write_text(json.dumps(result))
    return 0


def measure_probe(
    sock: socket.socket,
    *,
    templates: list[bytes],
    blocked: list[bool],
    rate: float,
    seconds: float,
    timeout: float,
    stop_file: Path,
) -> dict[str, Any]:
    """Send `rate` queries/s until `stop_file` exists, for `seconds` at most (a bounded count),
    cycling through the names; record
    each one's send time (time.monotonic(): CLOCK_MONOTONIC, the same clock in every process on
    the machine, so the parent can compare it with its reload times) and latency. A query not
    answered within `timeout` is lost (its latency stays NaN). A late process does not burst to
    catch up: sends are rescheduled from now, and the recorded send time is the real one."""
    total = max(1, int(rate * seconds))
    interval = 1.0 / rate
    sent_at = np.full(total, np.nan)
    latency = np.full(total, np.nan)
    wrong = np.zeros(total, dtype=bool)
    kind = np.array([blocked[i % len(blocked)] for i in range(total)], dtype=bool)
    pending: dict[int, int] = {}  # query id -> sample number
    sent = 0
    next_send = time.monotonic()
    stop_at = next_send + seconds + timeout + 2.0  # a hard bound on the whole loop
    last_expiry = last_stop_check = next_send
    while time.monotonic() < stop_at:
        now = time.monotonic()
        if sent < total and now - last_stop_check > 0.1:
            last_stop_check = now
            if stop_file.exists():
                total = sent  # send no more; wait for the answers in flight
        if sent < total and now >= next_send:
            query_id = sent & 0xFFFF  # at most rate * timeout ids in flight, far below 65536
            pending.pop(query_id, None)
            # OSError: e.g. ECONNREFUSED from an earlier ICMP error; the query counts as lost.
            with contextlib.suppress(OSError):
                sock.send(struct.pack("!H", query_id) + templates[sent % len(templates)])
            sent_at[sent] = time.monotonic()
            pending[query_id] = sent
            sent += 1
            next_send += interval
            if next_send < now - 0.05:
                next_send = now
            continue
        if sent >= total and not pending:
            break
        wait = max(0.0, next_send - now) if sent < total else 0.05
        try:
            ready = sock_wait(sock, min(wait, 0.05))
        except InterruptedError:
            ready = False
        while ready:
            try:
                reply = sock.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                continue
            received = time.monotonic()
            if len(reply) < 12:
                continue
            number = pending.pop(struct.unpack_from("!H", reply)[0], None)
            if number is None:
                continue  # an answer after its query was counted as lost
            latency[number] = received - sent_at[number]
            rcode = reply[3] & 0x0F
            answers = struct.unpack_from("!H", reply, 6)[0]
            if rcode != 0 or answers == 0 or (kind[number] and LANDING_A not in reply[12:]):
                wrong[number] = True
        if now - last_expiry > 0.1:
            last_expiry = now
            for query_id, number in list(pending.items()):
                if now - sent_at[number] > timeout:
                    del pending[query_id]
    return {
        "rate": rate,
        "timeout": timeout,
        "sent_at": sent_at[:sent].tolist(),
        # None for a lost query: JSON has no NaN.
        "latency": [None if np.isnan(v) else float(v) for v in latency[:sent]],
        "wrong": np.flatnonzero(wrong[:sent]).tolist(),
        "blocked": np.flatnonzero(kind[:sent]).tolist(),
    }


def sock_wait(sock: socket.socket, seconds: float) -> bool:
    import select

    readable, _, _ = select.select([sock], [], [], seconds)
    return bool(readable)


# -- memory sampling ---------------------------------------------------------------------------


def _is_build(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return BUILD_MODULE.encode() in argv


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (/proc/PID/task/TID/children, one file per thread: the build
    is started from the supervisor's reloader thread)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found.extend(int(v) for v in text.split())
    return found


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def serving_memory(supervisor: int) -> dict[str, float]:
    """RSS and PSS summed over the supervisor and its workers (not a running build), and the
    supervisor's own, to tell which side grows."""
    rss = pss = count = 0
    own = (0, 0)
    for pid in process_tree(supervisor):
        if pid != supervisor and _is_build(pid):
            continue
        r, p = smaps_rollup_kib(pid)
        rss, pss, count = rss + r, pss + p, count + 1
        if pid == supervisor:
            own = (r, p)
    return {
        "rss_mib": rss / 1024,
        "pss_mib": pss / 1024,
        "processes": count,
        "supervisor_rss_mib": own[0] / 1024,
        "supervisor_pss_mib": own[1] / 1024,
    }


def stale_index_maps(supervisor: int, index_path: Path) -> int:
    """Mappings of an index file that has been replaced (unlinked) still held by the serving
    processes: a swap that did not let go of the old index (/proc/PID/maps says "(deleted)")."""
    found = 0
    for pid in process_tree(supervisor):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if str(index_path) in line and line.endswith("(deleted)"):
                    found += 1
    return found


@dataclass
class Sampler:
    """A thread sampling the serving processes' memory and each build's VmHWM."""

    supervisor: int
    build_nice: int | None = None  # an experiment: renice each build process to this
    memory: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    builds: dict[int, dict[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        next_memory = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            for pid in _children(self.supervisor):
                build = self.builds.get(pid)
                if build is None:
                    if not _is_build(pid):
                        continue
                    build = self.builds[pid] = {"first_seen": now, "hwm_kib": 0.0}
                    if self.build_nice is not None:
                        with contextlib.suppress(OSError):
                            os.setpriority(os.PRIO_PROCESS, pid, self.build_nice)
                hwm = _hwm_kib(pid)
                if hwm is not None:
                    build["hwm_kib"] = max(build["hwm_kib"], hwm)
                    build["last_seen"] = now
            if now >= next_memory:
                next_memory = now + MEMORY_INTERVAL
                self.memory.append((now, serving_memory(self.supervisor)))
            self._stop.wait(BUILD_INTERVAL)


# -- statistics ---------------------------------------------------------------------------------


def latency_figures(latencies: np.ndarray) -> dict[str, Any]:
    """Count, lost, p50/p99/max in ms of a latency array (NaN = lost)."""
    answered = latencies[~np.isnan(latencies)]
    figures: dict[str, Any] = {
        "count": int(latencies.size),
        "lost": int(latencies.size - answered.size),
    }
    if answered.size:
        p50, p99 = np.percentile(answered, [50, 99]) * 1e3
        figures.update(p50_ms=float(p50), p99_ms=float(p99), max_ms=float(answered.max() * 1e3))
    return figures


def split_probe(probe: dict[str, Any], windows: list[tuple[float, float]]) -> dict[str, Any]:
    sent_at = np.array(probe["sent_at"], dtype=float)
    latency = np.array([np.nan if v is None else v for v in probe["latency"]], dtype=float)
    inside = np.zeros(sent_at.size, dtype=bool)
    per_reload = []
    for start, end in windows:
        mask = (sent_at >= start) & (sent_at <= end)
        inside |= mask
        figures = latency_figures(latency[mask])
        if "max_ms" in figures:
            # When the slowest answer was asked, from the reload's start: tells a stall at the
            # swap (the end of the reload) from one during the build.
            slowest = np.nanargmax(np.where(mask, latency, np.nan))
            figures["max_sent_s"] = float(sent_at[slowest] - start)
        per_reload.append(figures)
    blocked = np.zeros(sent_at.size, dtype=bool)
    blocked[probe["blocked"]] = True
    return {
        "rate": probe["rate"],
        "sent": int(sent_at.size),
        "lost": int(np.isnan(latency).sum()),
        "wrong": len(probe["wrong"]),
        "all": latency_figures(latency),
        "during": latency_figures(latency[inside]),
        "outside": latency_figures(latency[~inside]),
        "during_blocked": latency_figures(latency[inside & blocked]),
        "during_allowed": latency_figures(latency[inside & ~blocked]),
        "per_reload": per_reload,
    }


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What every run shares."""

    tmp: Path
    nsd_port: int
    size: int
    versions: ListVersions
    load: Load
    deadline: Deadline
    args: argparse.Namespace
    blocked_probe: str
    probe_blocked: list[str]


def blokir_cli(config: Path, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resolver", command, "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def server_status(config: Path, deadline: Deadline) -> dict[str, Any]:
    done = blokir_cli(config, "status", deadline.cap(60))
    if done.returncode != 0:
        raise BenchError(f"blokir status failed ({done.returncode}): {done.stderr.strip()}")
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def write_config(
    setup: Setup, directory: Path, port: int, list_path: Path, metrics_port: int
) -> Path:
    config = blokir_config(
        directory / "blokir.toml",
        port=port,
        workers=setup.args.workers,
        upstream_port=setup.nsd_port,
        list_path=list_path,
        index_path=directory / "index.blkx",
        landing_ipv4=LANDING_IPV4,
        landing_ipv6=LANDING_IPV6,
        metrics_port=metrics_port,
    )
    with config.open("a") as out:
        # After [[lists]]: a new table header ends the array-of-tables entry (TOML 1.0).
        out.write(f'\n[updates]\nstate_dir = "{directory / "state"}"\nwatch = false\n')
    return config


SWAP_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) blokir\[\d+\] INFO swapped to .*? in ([\d.]+) ms$",
    re.MULTILINE,
)


def parse_log_time(text: str) -> float:
    """blokir's log time stamp (logging's asctime: local time, milliseconds) as time.time()."""
    stamp, _, millis = text.partition(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1e3


# What BackgroundLoad reads from dnsperf's statistics (keys of resolver_bench.DNSPERF_FIELDS).
LOAD_FIELDS = ("sent", "completed", "lost", "qps", "run_seconds", "avg_latency_s", "max_latency_s")


class BackgroundLoad:
    """dnsperf at a fixed rate until `stop`. It gets SIGINT, which ends a dnsperf 2.x run early
    and still prints the statistics; queries in flight at that moment are counted apart as
    "interrupted", not "lost". So the load lasts exactly as long as the reloads need."""

    def __init__(self, load: Load, port: int, rate: float, limit: float, output: Path) -> None:
        self.output = output
        # -l is an upper bound only; -Q at least 1 (always a fixed rate, never flat out).
        argv = dnsperf_argv(load, port, f"{limit:.0f}", max(rate, 1.0))
        self.argv = " ".join(argv)
        with output.open("w") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self, timeout: float) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise BenchError(f"dnsperf did not stop on SIGINT: {self.argv}") from None
        text = self.output.read_text(errors="replace")
        if self.proc.returncode != 0:
            raise BenchError(f"dnsperf failed ({self.proc.returncode}): {text[-1500:]}")
        stats: dict[str, Any] = {"argv": self.argv, **dnsperf_statistics(text, LOAD_FIELDS)}
        interrupted = re.search(r"Queries interrupted:\s+(\d+)", text)
        stats["interrupted"] = int(interrupted.group(1)) if interrupted else 0
        return stats

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def memo_entries(metrics_port: int) -> int | None:
    """The workers' remembered answers (blokir_answer_memo_entries): a swap drops them all, so
    its pause grows with this number."""
    try:
        text = scrape_metrics(metrics_port, timeout=2)
    except OSError:
        return None
    found = re.search(r"^blokir_answer_memo_entries (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else None


def check_marker(port: int, name: str, want_blocked: bool, timeout: float) -> str | None:
    """None when `name` is blocked (landing address) or not, as wanted; else what came back."""
    try:
        reply = ask(port, name, "A", timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        return f"{name}: no answer ({type(exc).__name__})"
    blocked = addresses(reply) == [LANDING_IPV4]
    if blocked != want_blocked:
        return f"{name}: {describe(reply)}, expected {'blocked' if want_blocked else 'allowed'}"
    return None


def run_once(setup: Setup, run: int) -> dict[str, Any]:
    args, deadline = setup.args, setup.deadline
    directory = setup.tmp / f"run{run}"
    directory.mkdir()
    list_path = directory / "list.txt"
    setup.versions.write(list_path, 0, marker_name(run, 0))
    port = free_port()
    metrics_port = free_port()
    config = write_config(setup, directory, port, list_path, metrics_port)
    result: dict[str, Any] = {"run": run, "port": port, "problems": []}
    problems: list[str] = result["problems"]
    server = start_blokir(config, f"blokir-run{run}")
    sampler: Sampler | None = None
    probe: ManagedProcess | None = None
    loader: BackgroundLoad | None = None
    try:
        until = time.monotonic() + deadline.cap(args.start_timeout)
        result["first_block_s"] = wait_for_answer(
            server, port, setup.blocked_probe, until, LANDING_IPV4
        )
        status = server_status(config, deadline)
        start_outcome = status.get("last_reload") or {}
        result["start_build_s"] = start_outcome.get("seconds")
        workers_before = sorted(w["pid"] for w in status["workers"])
        if (problem := check_marker(port, marker_name(run, 0), True, 2.0)) is not None:
            raise BenchError(f"the first version is not served: {problem}")

        warm = run_dnsperf(setup.load, port, args.warmup, deadline)
        if args.rate:
            result["peak_qps"] = None
            rate = args.rate
        else:
            peak = run_dnsperf(setup.load, port, args.peak_seconds, deadline)
            result["peak_qps"] = peak["qps"]
            rate = peak["qps"] * args.load_share
        result["warmup_qps"] = warm["qps"]
        result["load_rate"] = int(rate)
        server.check_alive()
        result["memory_before"] = serving_memory(server.pid)

        # The schedule: reload k starts `lead + (k - 1) * interval` s into the load, or `gap`
        # s after the previous reload's window when that ends later (a slow build), so there is
        # always time outside the windows between them. The load and the probe run until `tail`
        # s after the last window, however long the builds take (bounded by `limit`).
        limit = deadline.cap(args.lead + args.reloads * (args.interval + 600) + args.tail)

        spec = {
            "port": port,
            "allowed": [host_name(i) for i in range(1, PROBE_ALLOWED + 1)],
            "blocked": setup.probe_blocked,
            "rate": args.probe_rate,
            "seconds": limit,
            "timeout": args.timeout,
            "stop": str(directory / "probe.stop"),
            "ready": str(directory / "probe.ready"),
            "output": str(directory / "probe.json"),
        }
        spec_path = directory / "probe-spec.json"
        spec_path.write_text(json.dumps(spec))
        probe = ManagedProcess(
            f"probe-run{run}",
            [sys.executable, str(HERE / "reload_bench.py"), "--probe-child", str(spec_path)],
            directory / "probe.log",
            cwd=REPO,
        )
        ready_by = time.monotonic() + deadline.cap(60)
        while not Path(spec["ready"]).exists():
            probe.check_alive()
            if time.monotonic() > ready_by:
                raise BenchError(f"the probe did not start; {tail(probe.log)}")
            time.sleep(0.02)

        sampler = Sampler(server.pid, args.build_nice)
        sampler.start()
        load_started = time.monotonic()
        wall_offset = time.time() - time.monotonic()  # log timestamps -> this clock
        loader = BackgroundLoad(setup.load, port, rate, limit, directory / "dnsperf.txt")

        reloads: list[dict[str, Any]] = []
        windows: list[tuple[float, float]] = []
        for k in range(1, args.reloads + 1):
            planned = load_started + args.lead + (k - 1) * args.interval
            if windows:
                planned = max(planned, windows[-1][1] + args.gap)
            time.sleep(max(0.0, planned - time.monotonic()))
            server.check_alive()
            memo_before = memo_entries(metrics_port)
            started = time.monotonic()
            write_s = setup.versions.write(list_path, k, marker_name(run, k))
            cli_started = time.monotonic()
            done = blokir_cli(config, "reload", deadline.cap(args.reload_timeout))
            finished = time.monotonic()
            windows.append((started, finished + WINDOW_AFTER))
            entry: dict[str, Any] = {
                "reload": k,
                "version": k % 2,
                "start_s": started - load_started,
                "write_s": write_s,
                "cli_s": finished - cli_started,
                "total_s": finished - started,
                "exit": done.returncode,
                "memo_entries_before": memo_before,
            }
            try:
                outcome = json.loads(done.stdout)
            except json.JSONDecodeError:
                outcome = {}
            entry["result"] = outcome.get("result", "?")
            entry["server_s"] = outcome.get("seconds")
            entry["names_before"] = outcome.get("names_before")
            entry["names_after"] = outcome.get("names_after")
            entry["detail"] = outcome.get("detail", done.stderr.strip())
            entry["problems"] = outcome.get("problems", [])
            built = re.search(r"rebuilt in ([\d.]+) s", entry["detail"] or "")
            entry["build_s"] = float(built.group(1)) if built else None
            if done.returncode != 0 or entry["result"] != "applied":
                problems.append(
                    f"reload {k}: {entry['result']} (exit {done.returncode}): {entry['detail']}"
                )
            problems.extend(f"reload {k}: {p}" for p in entry["problems"])
            for name, wanted in ((marker_name(run, k), True), (marker_name(run, k - 1), False)):
                if (problem := check_marker(port, name, wanted, 2.0)) is not None:
                    problems.append(f"reload {k} not seen in the answers: {problem}")
            reloads.append(entry)
            print(
                f"    reload {k}: {entry['result']} in {entry['total_s']:.2f} s "
                f"(build {entry['build_s'] if entry['build_s'] is not None else '?'} s, "
                f"server {entry['server_s']} s), {entry['names_after']} names",
                flush=True,
            )
            server.check_alive()
        end = (windows[-1][1] if windows else load_started + args.lead) + args.tail
        time.sleep(max(0.0, end - time.monotonic()))
        Path(spec["stop"]).write_text("")
        dnsperf_result = loader.stop(timeout=deadline.cap(args.timeout + 30))
        result["load_seconds"] = time.monotonic() - load_started
        if probe.proc.wait(timeout=deadline.cap(args.timeout + 30)) != 0:
            raise BenchError(f"the probe failed: {tail(probe.log)}")
        sampler.stop()
        server.check_alive()
        if time.monotonic() - load_started > limit:
            result["warning"] = f"the reloads outlasted the load's bound of {limit:.0f} s"

        time.sleep(0.5)
        result["memory_after"] = serving_memory(server.pid)
        result["stale_index_maps"] = stale_index_maps(server.pid, directory / "index.blkx")
        if result["stale_index_maps"]:
            # Not a broken run, but a leak: each one keeps a replaced index resident.
            print(f"  note: {result['stale_index_maps']} mapping(s) of replaced index files")
        status = server_status(config, deadline)
        workers_after = sorted(w["pid"] for w in status["workers"])
        if workers_after != workers_before:
            problems.append(f"workers restarted: pids {workers_before} -> {workers_after}")
        result["reload_counts"] = status.get("reloads", {})
        result["index_names"] = status["index"]["names"]
        result["reloads"] = reloads
        result["dnsperf"] = {
            k: dnsperf_result.get(k)
            for k in (
                "argv",
                "sent",
                "completed",
                "lost",
                "interrupted",
                "qps",
                "run_seconds",
                "avg_latency_s",
            )
        }
        result["dnsperf"]["max_latency_ms"] = dnsperf_result["max_latency_s"] * 1e3
        result["dnsperf"]["rcodes"] = dnsperf_result.get("rcodes", {})
        probe_data = json.loads(Path(spec["output"]).read_text())
        result["probe"] = split_probe(probe_data, windows)
        during = [m for t, m in sampler.memory if any(a <= t <= b for a, b in windows)]
        if during:
            top = max(during, key=lambda m: m["rss_mib"])
            result["memory_during_max"] = {
                "rss_mib": top["rss_mib"],
                "pss_mib": max(m["pss_mib"] for m in during),
                "processes": top["processes"],
                "samples": len(during),
            }
        builds = sorted(sampler.builds.values(), key=lambda b: b["first_seen"])
        for entry, (start, end) in zip(reloads, windows, strict=True):
            seen = [b for b in builds if start <= b["first_seen"] <= end]
            if seen:
                entry["build_seen_s"] = [
                    seen[0]["first_seen"] - start,
                    seen[0].get("last_seen", seen[0]["first_seen"]) - start,
                ]
                entry["build_hwm_mib"] = seen[0]["hwm_kib"] / 1024
        result["builds_seen"] = len(builds)
        result["build_peak_rss_mib"] = max(b["hwm_kib"] for b in builds) / 1024 if builds else None
        log_text = config.with_suffix(".log").read_text(errors="replace")
        result["log_errors"] = [
            line
            for line in log_text.splitlines()
            if (" ERROR " in line or " WARNING " in line or "Traceback" in line)
            and "running as root" not in line
        ][:20]
        swaps = [
            (parse_log_time(found.group(1)) - wall_offset, float(found.group(2)))
            for found in SWAP_LINE.finditer(log_text)
        ]
        result["worker_swap_ms"] = [ms for _, ms in swaps]
        for entry, (start, end) in zip(reloads, windows, strict=True):
            # The log line is written when the swap is done: it began `ms` earlier.
            entry["swaps"] = [
                {"at_s": at - ms / 1e3 - start, "ms": ms} for at, ms in swaps if start <= at <= end
            ]
    finally:
        if loader is not None:
            loader.kill()
        if sampler is not None:
            sampler.stop()
        if probe is not None:
            probe.stop()
        server.stop()
    return result


# -- output -------------------------------------------------------------------------------------


def swap_text(entry: dict[str, Any]) -> str:
    return ", ".join(f"{s['ms']:.1f} ({s['at_s']:.2f})" for s in entry.get("swaps", [])) or "-"


def reload_lines(run: dict[str, Any]) -> list[str]:
    """One line per reload: its times, the worker swaps and the probe's view of it."""
    lines = []
    for entry, window in zip(run["reloads"], run["probe"]["per_reload"], strict=False):
        build = entry.get("build_seen_s")
        lines.append(
            f"reload {entry['reload']}: {entry['result']}, total {entry['total_s']:.2f} s, build "
            f"{fmt(entry['build_s'], '.2f')} s"
            + (f" (process seen {build[0]:.2f}-{build[1]:.2f} s)" if build else "")
            + f", swap ms (at s) {swap_text(entry)} with {fmt(entry.get('memo_entries_before'))}"
            f" memo entries; probe n={window['count']} lost "
            f"{window['lost']} p99 {fmt(window.get('p99_ms'), '.1f')} ms max "
            f"{fmt(window.get('max_ms'), '.1f')} ms at {fmt(window.get('max_sent_s'), '.2f')} s"
        )
    return lines


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def col(*path: str) -> float | None:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return median(values)

    reloads = [r for run in runs for r in run.get("reloads", [])]
    return {
        "runs": len(runs),
        "peak_qps": col("peak_qps"),
        "load_rate": col("load_rate"),
        "dnsperf_sent": sum(r["dnsperf"]["sent"] for r in runs),
        "dnsperf_completed": sum(r["dnsperf"]["completed"] for r in runs),
        "dnsperf_lost": sum(r["dnsperf"]["lost"] for r in runs),
        "dnsperf_interrupted": sum(r["dnsperf"]["interrupted"] for r in runs),
        "probe_sent": sum(r["probe"]["sent"] for r in runs),
        "probe_lost": sum(r["probe"]["lost"] for r in runs),
        "probe_wrong": sum(r["probe"]["wrong"] for r in runs),
        "during_p50_ms": col("probe", "during", "p50_ms"),
        "during_p99_ms": col("probe", "during", "p99_ms"),
        "during_max_ms": col("probe", "during", "max_ms"),
        "outside_p50_ms": col("probe", "outside", "p50_ms"),
        "outside_p99_ms": col("probe", "outside", "p99_ms"),
        "outside_max_ms": col("probe", "outside", "max_ms"),
        "reloads": len(reloads),
        "reloads_applied": sum(1 for r in reloads if r["result"] == "applied"),
        "build_s": median([r["build_s"] for r in reloads]),
        "reload_total_s": median([r["total_s"] for r in reloads]),
        "reload_total_max_s": max((r["total_s"] for r in reloads), default=None),
        "worker_swap_ms": median([v for r in runs for v in r.get("worker_swap_ms", [])]),
        "worker_swap_max_ms": max(
            (v for r in runs for v in r.get("worker_swap_ms", [])), default=None
        ),
        "rss_before_mib": col("memory_before", "rss_mib"),
        "pss_before_mib": col("memory_before", "pss_mib"),
        "rss_during_mib": col("memory_during_max", "rss_mib"),
        "pss_during_mib": col("memory_during_max", "pss_mib"),
        "rss_after_mib": col("memory_after", "rss_mib"),
        "pss_after_mib": col("memory_after", "pss_mib"),
        "build_peak_rss_mib": col("build_peak_rss_mib"),
    }


def summary_lines(s: dict[str, Any], runs: int) -> list[str]:
    label = "median of " + str(runs) + " runs" if runs > 1 else "1 run"
    target = "no reloads"
    if s["during_p99_ms"] is not None:
        target = "met" if s["during_p99_ms"] <= LATENCY_TARGET_MS else "not met"
    zero = "zero loss" if s["dnsperf_lost"] == 0 and s["probe_lost"] == 0 else "QUERIES LOST"
    return [
        f"peak {fmt(s['peak_qps'])} q/s; load {fmt(s['load_rate'])} q/s ({label})",
        f"dnsperf: {s['dnsperf_sent']:,} sent, {s['dnsperf_completed']:,} completed, "
        f"{s['dnsperf_lost']:,} lost ({s['dnsperf_interrupted']:,} in flight when it was "
        f"stopped); probe: {s['probe_sent']:,} sent, {s['probe_lost']:,} lost, "
        f"{s['probe_wrong']:,} wrong answers ({zero})",
        f"probe latency during reloads: p50 {fmt(s['during_p50_ms'], '.2f')} ms, p99 "
        f"{fmt(s['during_p99_ms'], '.2f')} ms (target <= {LATENCY_TARGET_MS:g} ms: {target}), "
        f"max {fmt(s['during_max_ms'], '.1f')} ms",
        f"probe latency outside reloads: p50 {fmt(s['outside_p50_ms'], '.2f')} ms, p99 "
        f"{fmt(s['outside_p99_ms'], '.2f')} ms, max {fmt(s['outside_max_ms'], '.1f')} ms",
        f"reloads: {s['reloads_applied']} of {s['reloads']} applied; build "
        f"{fmt(s['build_s'], '.2f')} s, write + `blokir reload` {fmt(s['reload_total_s'], '.2f')}"
        f" s (max {fmt(s['reload_total_max_s'], '.2f')} s), worker swap "
        f"{fmt(s['worker_swap_ms'], '.1f')} ms (max {fmt(s['worker_swap_max_ms'], '.1f')} ms)",
        f"serving RSS/PSS MiB: before {fmt(s['rss_before_mib'])}/{fmt(s['pss_before_mib'])}, "
        f"during (max) {fmt(s['rss_during_mib'])}/{fmt(s['pss_during_mib'])}, after "
        f"{fmt(s['rss_after_mib'])}/{fmt(s['pss_after_mib'])}; build process peak RSS "
        f"{fmt(s['build_peak_rss_mib'])} MiB",
    ]


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    m = report["machine"]
    a = report["settings"]
    lines = [
        f"# Reload benchmark, {report['started']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux "
        f"{m['kernel']}, Python {m['python']}; dnsperf {m['versions'].get('dnsperf')}, nsd "
        f"{m['versions'].get('nsd')}. Busy before the run: {m['busy_before_pct']:.0f}% of a core.",
        "",
        f"{size_label(a['size'])} names, {a['workers']} worker(s), metrics on. dnsperf "
        f"`-c {a['clients']} -t {a['timeout']:g}` at {a['load_share']:g} of the peak; a probe "
        f"client at {a['probe_rate']:g} q/s (cached allowed and blocked names, A); "
        f"{a['reloads']} reloads per run alternating two versions of the list that differ by "
        f'{a["diff"]:,} names (written atomically, then `blokir reload`). "During" is from '
        f"writing the list until {WINDOW_AFTER:g} s after `blokir reload` returned."
        + (
            f" Experiment: the benchmark reniced each build process to {a['build_nice']}."
            if a.get("build_nice") is not None
            else ""
        ),
        "",
        "## Summary",
        "",
        *[f"- {line}" for line in summary_lines(s, s["runs"])],
        "",
        "## Runs",
        "",
        "| run | peak q/s | load q/s | dnsperf sent | lost | probe sent | lost | "
        "p50 / p99 / max ms during | p50 / p99 / max ms outside | "
        "RSS MiB before / during / after | build peak RSS MiB |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in report["runs"]:
        if "error" in run:
            lines.append(f"| {run['run'] + 1} | failed: {run['error']} |")
            continue
        d, o, p = run["probe"]["during"], run["probe"]["outside"], run["probe"]
        lines.append(
            f"| {run['run'] + 1} | {fmt(run['peak_qps'])} | {fmt(run['load_rate'])} | "
            f"{run['dnsperf']['sent']:,} | {run['dnsperf']['lost']:,} | {p['sent']:,} | "
            f"{p['lost']:,} | {fmt(d.get('p50_ms'), '.2f')} / {fmt(d.get('p99_ms'), '.2f')} / "
            f"{fmt(d.get('max_ms'), '.1f')} | {fmt(o.get('p50_ms'), '.2f')} / "
            f"{fmt(o.get('p99_ms'), '.2f')} / {fmt(o.get('max_ms'), '.1f')} | "
            f"{fmt(run['memory_before']['rss_mib'])} / "
            f"{fmt(run.get('memory_during_max', {}).get('rss_mib'))} / "
            f"{fmt(run['memory_after']['rss_mib'])} | {fmt(run['build_peak_rss_mib'])} |"
        )
    lines += [
        "",
        "## Reloads",
        "",
        "| run | reload | result | start s | build s | server s | total s | names | worker "
        "swap ms (at s) | probe p99 / max ms (max at s) | probe lost |",
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in report["runs"]:
        for entry, window in zip(
            run.get("reloads", []), run.get("probe", {}).get("per_reload", []), strict=False
        ):
            lines.append(
                f"| {run['run'] + 1} | {entry['reload']} | {entry['result']} | "
                f"{entry['start_s']:.1f} | {fmt(entry['build_s'], '.2f')} | "
                f"{fmt(entry['server_s'], '.2f')} | {entry['total_s']:.2f} | "
                f"{fmt(entry['names_after'])} | {swap_text(entry)} | "
                f"{fmt(window.get('p99_ms'), '.2f')} / {fmt(window.get('max_ms'), '.1f')} "
                f"({fmt(window.get('max_sent_s'), '.2f')}) | {window['lost']} |"
            )
    lines += [
        "",
        "Start s: seconds into the load. At s: seconds after that reload's start (writing "
        "the list). "
        "Build s: the index compile in its own process, from the reload outcome; server s: the "
        "whole reload in the server (compile, checks, swap in every worker); total s: writing "
        "the list plus `blokir reload` as a command (its interpreter start included). RSS/PSS: "
        "the supervisor and its workers (/proc/PID/smaps_rollup), before the load, the highest "
        "sample during reloads, and after; the build process is counted apart (its VmHWM, "
        f"sampled every {BUILD_INTERVAL * 1e3:.0f} ms). The machine is shared: latency "
        "figures, the tail above all, move with whatever else runs on its cores.",
        "",
    ]
    problems = [p for run in report["runs"] for p in run.get("problems", [])]
    if problems:
        lines += ["## Problems", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI: 100k names, 2 reloads, ~15 s of load; checks the reload path end to end",
    )
    parser.add_argument("--size", help="list size, e.g. 1M, 100k (default 1M; quick 100k)")
    parser.add_argument("--workers", type=int, default=1, help="blokir workers (default 1)")
    parser.add_argument("--runs", type=int, default=1, help="runs, each with a fresh blokir")
    parser.add_argument(
        "--reloads",
        type=int,
        help="reloads per run (default 5; quick 2); 0 is a control run: the same load, no reload",
    )
    parser.add_argument(
        "--diff", type=int, help="names that differ between the two versions (5000; quick 2000)"
    )
    parser.add_argument("--rate", type=float, help="dnsperf -Q during the reloads (skip the peak)")
    parser.add_argument(
        "--load-share", type=float, default=0.5, help="load as a share of the peak (0.5)"
    )
    parser.add_argument("--peak-seconds", type=float, help="peak dnsperf run (5 s; quick 2 s)")
    parser.add_argument("--warmup", type=float, help="cache warm-up dnsperf run (3 s; quick 1 s)")
    parser.add_argument(
        "--interval",
        type=float,
        help="seconds between reload starts (8; quick 4), or --gap s after the previous "
        "reload's window when that ends later",
    )
    parser.add_argument(
        "--gap", type=float, help="load seconds outside any window between reloads (3; quick 1)"
    )
    parser.add_argument("--lead", type=float, help="load seconds before the first reload (4; 2)")
    parser.add_argument("--tail", type=float, help="load seconds after the last reload (4; 2)")
    parser.add_argument("--probe-rate", type=float, default=500.0, help="probe queries/s (500)")
    parser.add_argument("--clients", type=int, default=16, help="dnsperf -c")
    parser.add_argument("--timeout", type=float, default=2.0, help="dnsperf -t and probe timeout")
    parser.add_argument("--reload-timeout", type=float, default=600.0, help="per `blokir reload`")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--allowed", type=int, default=20_000, help="names in the NSD zone")
    parser.add_argument("--queries", type=int, help="query file lines (1M; quick 200k)")
    parser.add_argument("--deadline", type=float, help="overall seconds (1800; quick 300)")
    parser.add_argument("--workdir", type=Path, default=HERE / "work")
    add_output_options(parser, "reload-<date>.json and .md")
    parser.add_argument(
        "--build-nice",
        type=int,
        help="experiment: renice each `python -m resolver.build` to this as soon as it is seen "
        "(measures a low-priority build; blokir itself does not do this)",
    )
    parser.add_argument("--probe-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "size": "100k" if quick else "1M",
        "reloads": 2 if quick else 5,
        "diff": 2000 if quick else 5000,
        "peak_seconds": 2.0 if quick else 5.0,
        "warmup": 1.0 if quick else 3.0,
        "interval": 4.0 if quick else 8.0,
        "gap": 1.0 if quick else 3.0,
        "lead": 2.0 if quick else 4.0,
        "tail": 2.0 if quick else 4.0,
        "queries": 200_000 if quick else 1_000_000,
        "deadline": 300.0 if quick else 1800.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.size = parse_size(args.size)
    if args.workers < 1 or args.runs < 1 or args.reloads < 0 or args.probe_rate <= 0:
        parser.error("--workers, --runs and --probe-rate must be positive, --reloads >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe_child is not None:
        return probe_child(args.probe_child)
    deadline = arm_deadline(args.deadline)
    began = time.perf_counter()
    when = datetime.now(UTC)
    dnsperf = require_binary("dnsperf")
    info = machine_info(dnsperf)
    info["busy_before_pct"] = machine_busy_pct()
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu_model']}; busy before the run: "
        f"{info['busy_before_pct']:.0f}% of a core"
        + (" (not idle: figures will be noisy)" if info["busy_before_pct"] > 20 else "")
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    list_path = list_file(args.workdir, args.size, args.seed)
    query_file, workload = write_queries(
        args.workdir,
        list_path,
        size=args.size,
        seed=args.seed,
        count=args.queries,
        hosts=args.allowed,
        blocked_share=0.30,
        subdomain_share=0.25,
        zipf=1.0,
    )
    with list_path.open() as lines:
        head = [next(lines).strip() for _ in range(PROBE_BLOCKED)]
    probe_blocked = [("www." + n if i % 2 else n) for i, n in enumerate(head)]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report: dict[str, Any] = {
        "started": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": info,
        "settings": settings,
        "workload": workload,
        "runs": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="blokir-reload-bench-"))
    nsd: ManagedProcess | None = None
    failed = False
    try:
        nsd, nsd_port = start_upstream(tmp, args.allowed, deadline)
        print(
            f"upstream: NSD on {LOOPBACK}:{nsd_port}; list {size_label(args.size)} names "
            f"({list_path}), {args.workers} worker(s), {args.reloads} reloads per run, "
            f"probe {args.probe_rate:g} q/s"
        )
        setup = Setup(
            tmp=tmp,
            nsd_port=nsd_port,
            size=args.size,
            versions=ListVersions(list_path, args.size, args.diff, args.seed),
            load=Load(dnsperf, query_file, args.clients, args.timeout, None),
            deadline=deadline,
            args=args,
            blocked_probe=head[0],
            probe_blocked=probe_blocked,
        )
        for run in range(args.runs):
            print(f"run {run + 1}:", flush=True)
            try:
                result = run_once(setup, run)
            except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
                print(f"  run {run + 1}: FAILED: {exc}")
                report["runs"].append({"run": run, "error": str(exc)})
                failed = True
                continue
            report["runs"].append(result)
            if result["problems"]:
                failed = True
            for line in reload_lines(result) + summary_lines(summarise([result]), 1):
                print("  " + line)
            for problem in result["problems"]:
                print(f"  PROBLEM: {problem}")
            if "warning" in result:
                print(f"  warning: {result['warning']}")
        signal.alarm(0)
        good = [r for r in report["runs"] if "error" not in r]
        if good:
            report["summary"] = summarise(good)
            print()
            print(f"{size_label(args.size)} names, {len(good)} run(s):")
            for line in summary_lines(report["summary"], len(good)):
                print("  " + line)
            report["elapsed_s"] = time.perf_counter() - began
            results_dir = results_folder(args.results, args.quick, tmp)
            stem = "reload-latest"  # the latest run in full; every run's figures: history.csv
            (results_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))
            (results_dir / f"{stem}.md").write_text(markdown(report))
            print(f"wrote {results_dir / stem}.json and .md")
            print(history.record(report, results_dir))
            if args.quick and args.results is None:
                print("  (--quick: they go with the temporary folder; --results DIR keeps them)")
    except BenchError as exc:
        print(f"FAILED: {exc}")
        failed = True
    finally:
        clean_up(nsd, tmp, args.keep_tmp)
    return exit_status(failed, began)


if __name__ == "__main__":
    sys.exit(main())
