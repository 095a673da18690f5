"""Servers for the resolver benchmark: the peers blokir, Unbound, dnsmasq and the Python ceiling
(bench/ceiling.py), each a child process on a free 127.0.0.1 port, plus the small tools around
them (process-tree memory and CPU from /proc, machine load). The NSD upstream, the process
handling (a deadline, `ManagedProcess`, free ports) and the DNS probes are shared with the test
suites and live in tests/support; they are re-exported here for the benchmark modules.

Everything binds to and queries 127.0.0.1 only. Every process is started in its own session, so
`ManagedProcess.stop` can end it and anything it forked by its process group id, and is stopped
in a `finally` (or by leaving the `with` block).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdataclass

# BenchError is the benchmarks' name for the shared SetupError (a step failed in a way a person
# can act on), so `except BenchError` also catches what the shared helpers raise.
from tests.support.processes import LOOPBACK as LOOPBACK
from tests.support.processes import REPO as REPO
from tests.support.processes import Deadline as Deadline
from tests.support.processes import ManagedProcess as ManagedProcess
from tests.support.processes import SetupError as BenchError
from tests.support.processes import find_binary as find_binary
from tests.support.processes import free_port as free_port
from tests.support.processes import process_tree as process_tree
from tests.support.processes import require_binary as require_binary
from tests.support.processes import tail as tail
from tests.support.servers import addresses as addresses
from tests.support.servers import ask as ask
from tests.support.servers import describe as describe
from tests.support.servers import metric_sum as metric_sum
from tests.support.servers import scrape_metrics as scrape_metrics
from tests.support.servers import start_blokir as start_blokir
from tests.support.servers import start_nsd as start_nsd
from tests.support.servers import start_unbound as start_unbound
from tests.support.servers import unbound_conf as unbound_conf
from tests.support.servers import unbound_secondary_conf as unbound_secondary_conf
from tests.support.servers import wait_for_answer as wait_for_answer

# -- process trees -----------------------------------------------------------------------------


def smaps_rollup_kib(pid: int) -> tuple[int, int]:
    """RSS and PSS of one process in KiB (/proc/PID/smaps_rollup); (0, 0) once it is gone."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def tree_memory_mib(pid: int) -> dict[str, float]:
    """Resident memory of the process tree: RSS summed (counts shared pages, e.g. a mapped index,
    once per process) and PSS summed (shares them out: the tree's real footprint)."""
    rss = pss = 0
    for member in process_tree(pid):
        member_rss, member_pss = smaps_rollup_kib(member)
        rss, pss = rss + member_rss, pss + member_pss
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "processes": len(process_tree(pid))}


def tree_cpu_times(pid: int, command: bytes = b"") -> tuple[float, float]:
    """(user, system) CPU seconds of the live process tree. The split tells a server's own work
    (user) from the kernel's (system: socket calls and, on loopback, delivering the packets).
    With `command`, only the members whose command line contains it (blokir's query log
    writers: b"resolver.querylog.writer")."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for member in process_tree(pid):
        if command:
            try:
                if command not in Path(f"/proc/{member}/cmdline").read_bytes():
                    continue
            except OSError:
                continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime (field 14)
            system += int(fields[12])  # stime (field 15)
    return user / ticks, system / ticks


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the live process tree."""
    return sum(tree_cpu_times(pid))


def cpu_ticks(proc_stat: str | None = None) -> dict[str, list[int]]:
    """The cpu lines of /proc/stat (or of `proc_stat`, its text): "cpu" (all cores), "cpu0", ...
    to their tick counts: user nice system idle iowait irq softirq steal (guest ones after)."""
    ticks: dict[str, list[int]] = {}
    for line in (proc_stat or Path("/proc/stat").read_text()).splitlines():
        name, *values = line.split()
        if not name.startswith("cpu"):
            break
        ticks[name] = [int(value) for value in values]
    return ticks


def cpu_steal_seconds(cpus: Collection[int] | None = None, proc_stat: str | None = None) -> float:
    """CPU seconds the hypervisor gave `cpus` (all when None) to other guests: the steal
    column of /proc/stat. On a shared VM this is host noise the server's own figures cannot
    show, so the benchmark reports it per run."""
    ticks = cpu_ticks(proc_stat)
    names = ["cpu"] if cpus is None else [f"cpu{cpu}" for cpu in cpus]
    return sum(ticks[name][7] for name in names if name in ticks) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; /proc/stat: all but idle, iowait)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = cpu_ticks()["cpu"][:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def machine_busy_pct(seconds: float = 1.0) -> float:
    """Percent of one core the whole machine was busy over the next `seconds` (it sleeps that
    long): a check, before a run, that nothing else is using the cores the figures depend on."""
    busy = machine_busy_seconds()
    time.sleep(seconds)
    return 100 * (machine_busy_seconds() - busy) / seconds


# -- DNS probe --------------------------------------------------------------------------------


def wait_for_any_reply(server: ManagedProcess, port: int, deadline: float) -> float:
    """Poll with a raw query until a datagram with its ID comes back, whatever it holds; the
    seconds since the server was started. For the ceiling, whose replies carry no question, so a
    strict client rejects them."""
    query = dns.message.make_query("first-answer.bench.", "A").to_wire()
    while time.monotonic() < deadline:
        server.check_alive()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(query, (LOOPBACK, port))
                reply = sock.recv(4096)
            except OSError:  # a timeout, or refused while the port is not bound yet
                time.sleep(0.02)
                continue
            if reply[:2] == query[:2]:
                return time.perf_counter() - server.started
    raise BenchError(
        f"{server.name} did not answer in time; last lines of {server.log}:\n{tail(server.log)}"
    )


# -- Unbound ----------------------------------------------------------------------------------


def unbound_stats(conf: Path, reset: bool) -> dict[str, float]:
    """Unbound's total.* counters via unbound-control ({} when unavailable)."""
    control = find_binary("unbound-control")
    if control is None:
        return {}
    command = "stats" if reset else "stats_noreset"
    done = subprocess.run(
        [control, "-c", str(conf), command], capture_output=True, text=True, timeout=20
    )
    if done.returncode != 0:
        return {}
    stats = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("total.") and value:
            with contextlib.suppress(ValueError):
                stats[key] = float(value)
    return stats


# -- blokir -----------------------------------------------------------------------------------


def blokir_serve_available() -> str | None:
    """None when `python -m resolver serve` exists in this checkout, else why not."""
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    if done.returncode == 0:
        return None
    why = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return (
        f"`python -m resolver serve` is not available in this checkout ({why}); "
        f"benchmark the other peers with e.g. --peers unbound1,unbound2"
    )


def blokir_hot_path() -> str:
    """How `python -m resolver` runs in this checkout, as the servers will start it: "compiled
    with mypyc", or plain Python and why (docs/architecture.md, "Compiled hot path"); read off
    `--version`, so the benchmark still starts when blokir cannot be imported."""
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    # argparse wraps --version's line: one line of words for reports and history.csv notes.
    _, found, mode = " ".join(done.stdout.split()).partition("hot path ")
    return mode if done.returncode == 0 and found else "unknown (`blokir --version` says no more)"


def blokir_config(
    path: Path,
    *,
    port: int,
    workers: int,
    upstream_port: int,
    list_path: Path,
    index_path: Path,
    landing_ipv4: str,
    landing_ipv6: str,
    metrics_port: int | None = None,
    querylog: Path | None = None,
    querylog_sample: int = 1,
) -> Path:
    """A blokir config for the benchmark; `querylog`: the dnstap query log on, to this file, 1 in
    `querylog_sample` allowed queries (blocked ones always), never rotated during a run."""
    # file_max_bytes: 1 TiB, so no rotation (a rename and reopen) lands inside a measured run.
    logged = (
        f'\n[querylog]\ndnstap = "file:{querylog}"\nsample = {querylog_sample}\n'
        f"file_max_bytes = {2**40}\n"
        if querylog
        else ""
    )
    metrics = (
        f'enabled = true\nlisten = "{LOOPBACK}:{metrics_port}"'
        if metrics_port
        else "enabled = false"
    )
    path.write_text(f"""# Written by bench/resolver_bench.py
[server]
listen = ["{LOOPBACK}:{port}"]
workers = {workers}

[upstream]
servers = ["{LOOPBACK}:{upstream_port}"]

[blocking]
landing_ipv4 = "{landing_ipv4}"
landing_ipv6 = "{landing_ipv6}"
index_path = "{index_path}"

[metrics]
{metrics}
{logged}
[[lists]]
name = "bench"
path = "{list_path}"
format = "plain"
action = "landing"
match = "subtree"
""")
    return path


# -- dnsmasq ----------------------------------------------------------------------------------


def start_dnsmasq(
    workdir: Path,
    *,
    port: int,
    upstream_port: int,
    list_path: Path,
    list_format: str,
    cache_size: int,
    tag: str,
) -> ManagedProcess:
    """dnsmasq in the foreground on 127.0.0.1:port, forwarding everything else to the upstream.
    `list_format` "dnsmasq" loads `address=`/`local=` lines (--conf-file), "hosts" loads a hosts
    file (--addn-hosts). No /etc/resolv.conf, no /etc/hosts, no DHCP, no other config file."""
    dnsmasq = require_binary("dnsmasq")
    if list_format == "dnsmasq":
        load = f"--conf-file={list_path}"
    elif list_format == "hosts":
        load = f"--addn-hosts={list_path}"
    else:
        raise BenchError(f"unknown dnsmasq list format {list_format!r} (dnsmasq or hosts)")
    argv = [
        dnsmasq,
        "--keep-in-foreground",
        "--log-facility=-",  # to our log file: start-up lines and errors
        f"--conf-file={os.devnull}",  # read no /etc/dnsmasq.conf
        f"--port={port}",
        f"--listen-address={LOOPBACK}",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--server={LOOPBACK}#{upstream_port}",
        f"--cache-size={cache_size}",
        "--cache-rr=HTTPS",  # 2.90 caches A, AAAA, CNAME, ... only unless told
        f"--pid-file={workdir}/dnsmasq-{tag}.pid",
        # As root dnsmasq would switch to `nobody`; stay who we are (it reads nothing later).
        f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
        load,
    ]
    return ManagedProcess(tag, argv, workdir / f"dnsmasq-{tag}.log")


def dnsmasq_cache_counters(port: int) -> dict[str, int]:
    """dnsmasq's cache counters from its CHAOS TXT names (hits.bind, misses.bind, ...), {} if it
    does not answer."""
    counters = {}
    for name in ("hits", "misses", "insertions", "evictions", "cachesize"):
        query = dns.message.make_query(f"{name}.bind.", "TXT", dns.rdataclass.CH)
        try:
            reply = dns.query.udp(query, LOOPBACK, port=port, timeout=1.0)
        except (dns.exception.DNSException, OSError):
            return {}
        for rrset in reply.answer:
            for rd in rrset:
                found = re.search(r"\d+", rd.to_text())
                if found:
                    counters[name] = int(found.group())
    return counters


# -- the ceiling ------------------------------------------------------------------------------


def start_ceiling(
    workdir: Path, *, port: int, workers: int, tag: str, batched: bool = False
) -> ManagedProcess:
    """bench/ceiling.py on 127.0.0.1:port: the fastest Python UDP responder (see its doc);
    `batched`: its recvmmsg/sendmmsg form."""
    return ManagedProcess(
        tag,
        [
            sys.executable,
            str(REPO / "bench" / "ceiling.py"),
            "--port",
            str(port),
            "--workers",
            str(workers),
            *(["--batched"] if batched else []),
        ],
        workdir / f"{tag}.log",
        cwd=REPO,
    )
