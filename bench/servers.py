"""Servers for the resolver benchmark: NSD (the authoritative upstream), and the peers blokir,
Unbound, dnsmasq and the Python ceiling (bench/ceiling.py), each a child process on a free
127.0.0.1 port, plus the small tools around them (a deadline, process-tree memory and CPU from
/proc, DNS probes).

Everything binds to and queries 127.0.0.1 only. Every process is started in its own session, so
`ManagedProcess.stop` can end it and anything it forked by its process group id, and is stopped
in a `finally` (or by leaving the `with` block).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class BenchError(Exception):
    """A step failed in a way a person can act on; the message says what and where to look."""


class Deadline:
    """The whole run's time budget: every wait is cut to what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def cap(self, seconds: float) -> float:
        """`seconds`, or less when the deadline comes first; raises when it has passed."""
        left = self.remaining()
        if left <= 0:
            raise BenchError(f"overall deadline of {self.seconds:.0f} s reached (--deadline)")
        return min(seconds, left)


def find_binary(name: str) -> str | None:
    """The path of an executable, also looking in the sbin directories."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise BenchError(f"{name} is not installed (scripts/install-test-deps installs it)")
    return path


def free_port(attempts: int = 50) -> int:
    """A port on 127.0.0.1 free for both UDP and TCP right now (racy by nature)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise BenchError("no free loopback port for both UDP and TCP")


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty log)"


# -- processes --------------------------------------------------------------------------------


class ManagedProcess:
    """A child in its own session, its output in `log`. `stop` sends SIGTERM to the child,
    waits, then SIGKILLs whatever is left of its process group. `stop_all` stops every one
    still running (the benchmark's last `finally`)."""

    running: ClassVar[set[ManagedProcess]] = set()
    # `scripts/bench --pin`: the CPUs every server under test is confined to (its workers and
    # threads inherit them). None: wherever the kernel schedules it.
    server_cpus: ClassVar[frozenset[int] | None] = None

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path | None = None,
        *,
        under_test: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        """`under_test`: a server being measured (pinned with `server_cpus`); False for the
        benchmark's own helpers (the NSD upstream), which stay with the load generator. `env`:
        variables set for the process on top of this one's."""
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.started = time.perf_counter()
        cpus = ManagedProcess.server_cpus if under_test else None
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,
                # Set in the child before exec, so no worker it forks escapes the pinning.
                preexec_fn=None
                if cpus is None
                else functools.partial(os.sched_setaffinity, 0, cpus),
            )
        self.pid = self.proc.pid
        ManagedProcess.running.add(self)

    @classmethod
    def stop_all(cls) -> None:
        for process in list(cls.running):
            process.stop()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with status {self.proc.returncode}; "
                f"last lines of {self.log}:\n{tail(self.log)}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        ManagedProcess.running.discard(self)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        # Workers the child forked and did not take down with it: the group is ours alone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


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


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the live process tree. The split tells a server's own work
    (user) from the kernel's (system: socket calls and, on loopback, delivering the packets)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for member in process_tree(pid):
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


def ask(port: int, name: str, rdtype: str = "A", timeout: float = 1.0) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, LOOPBACK, port=port, timeout=timeout)


def addresses(reply: dns.message.Message, rdtype: str = "A") -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return [rd.to_text() for rrset in reply.answer if rrset.rdtype == wanted for rd in rrset]


def describe(reply: dns.message.Message) -> str:
    answer = "; ".join(rrset.to_text().replace("\n", "; ") for rrset in reply.answer)
    return f"{dns.rcode.to_text(reply.rcode())} [{answer or 'no answer'}]"


def wait_for_answer(
    server: ManagedProcess,
    port: int,
    name: str,
    deadline: float,
    want_address: str | None = None,
    rdtype: str = "A",
) -> float:
    """Poll until `name` gets NOERROR (and `want_address` among the answers, if given); the
    seconds since the server was started. Raises when the server dies or time runs out."""
    last = "no reply"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            reply = ask(port, name, rdtype, timeout=0.2)
        except (dns.exception.Timeout, OSError) as exc:
            last = type(exc).__name__
            time.sleep(0.02)
            continue
        last = describe(reply)
        if reply.rcode() == dns.rcode.NOERROR and (
            want_address is None or want_address in addresses(reply, rdtype)
        ):
            return time.perf_counter() - server.started
        time.sleep(0.02)
    raise BenchError(
        f"{server.name} did not answer {name} {rdtype} as expected in time (last: {last}); "
        f"last lines of {server.log}:\n{tail(server.log)}"
    )


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


# -- NSD --------------------------------------------------------------------------------------


def start_nsd(
    workdir: Path, zone: str, zonefile: Path, probe: str, deadline: Deadline
) -> tuple[ManagedProcess, int]:
    """NSD serving `zonefile` on a free port, rate limiting off; returns once it answers."""
    nsd = require_binary("nsd")
    checkconf = find_binary("nsd-checkconf")
    port = free_port()
    conf = workdir / "nsd.conf"

    def render(rrl: bool) -> str:
        limits = "    rrl-ratelimit: 0\n    rrl-whitelist-ratelimit: 0\n" if rrl else ""
        return f"""server:
    ip-address: {LOOPBACK}@{port}
    port: {port}
    do-ip4: yes
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    xfrdfile: "{workdir}/nsd-xfrd.state"
    xfrd-reload-timeout: 1
    database: ""
    zonelistfile: "{workdir}/nsd-zone.list"
    logfile: "{workdir}/nsd.log"
    verbosity: 0
    server-count: 1
    hide-version: yes
{limits}remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: "{zonefile}"
"""

    conf.write_text(render(rrl=True))
    if checkconf:
        checked = subprocess.run([checkconf, str(conf)], capture_output=True, text=True)
        if checked.returncode != 0:
            # An NSD built without rate limiting rejects the rrl options, and has no RRL anyway.
            conf.write_text(render(rrl=False))
            checked = subprocess.run([checkconf, str(conf)], capture_output=True, text=True)
            if checked.returncode != 0:
                raise BenchError(f"nsd-checkconf rejected {conf}: {checked.stderr.strip()}")
    server = ManagedProcess(
        "nsd", [nsd, "-d", "-c", str(conf)], workdir / "nsd.stdout", under_test=False
    )
    try:
        wait_for_answer(server, port, probe, time.monotonic() + deadline.cap(60))
    except BaseException:
        server.stop()
        raise
    return server, port


# -- Unbound ----------------------------------------------------------------------------------


def unbound_conf(
    workdir: Path, port: int, threads: int, rpz: Path, upstream_port: int, tag: str
) -> Path:
    conf = workdir / f"unbound-{tag}.conf"
    conf.write_text(f"""server:
    interface: {LOOPBACK}
    port: {port}
    do-ip4: yes
    do-ip6: no
    num-threads: {threads}
    so-reuseport: yes
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound-{tag}.pid"
    use-syslog: no
    logfile: "{workdir}/unbound-{tag}.log"
    verbosity: 0
    module-config: "respip iterator"
    do-not-query-localhost: no
    statistics-cumulative: no
    extended-statistics: no
remote-control:
    control-enable: yes
    control-interface: "{workdir}/unbound-{tag}.ctl"
    control-use-cert: no
rpz:
    name: "rpz.blokir."
    zonefile: "{rpz}"
forward-zone:
    name: "."
    forward-addr: {LOOPBACK}@{upstream_port}
""")
    checkconf = find_binary("unbound-checkconf")
    if checkconf:
        checked = subprocess.run([checkconf, str(conf)], capture_output=True, text=True)
        if checked.returncode != 0:
            raise BenchError(f"unbound-checkconf rejected {conf}: {checked.stdout}{checked.stderr}")
    return conf


def unbound_secondary_conf(
    workdir: Path, port: int, primary_port: int, upstream_port: int, zone: str = "rpz.blokir."
) -> Path:
    """Unbound as an RPZ secondary of blokir's primary on 127.0.0.1:primary_port (AXFR, then
    IXFR on NOTIFY), forwarding everything else to 127.0.0.1:upstream_port."""
    conf = workdir / "unbound-secondary.conf"
    conf.write_text(f"""server:
    interface: {LOOPBACK}
    port: {port}
    do-ip6: no
    num-threads: 1
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound-secondary.pid"
    use-syslog: no
    logfile: "{workdir}/unbound-secondary.log"
    verbosity: 1
    module-config: "respip iterator"
    do-not-query-localhost: no
remote-control:
    control-enable: no
rpz:
    name: "{zone}"
    primary: {LOOPBACK}@{primary_port}
    allow-notify: {LOOPBACK}
forward-zone:
    name: "."
    forward-addr: {LOOPBACK}@{upstream_port}
""")
    return conf


def start_unbound(conf: Path, tag: str) -> ManagedProcess:
    unbound = require_binary("unbound")
    return ManagedProcess(tag, [unbound, "-d", "-c", str(conf)], conf.with_suffix(".stdout"))


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
    _, found, mode = done.stdout.strip().partition("hot path ")
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
) -> Path:
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

[[lists]]
name = "bench"
path = "{list_path}"
format = "plain"
action = "landing"
match = "subtree"
""")
    return path


def start_blokir(
    config: Path,
    tag: str,
    log: Path | None = None,
    *,
    pure_python: bool = False,
    checkout: str | None = None,
) -> ManagedProcess:
    """`python -m resolver serve -c config` from this checkout, or from `checkout` with its own
    .venv (the benchmark's base<N> peers); its output in `log` (default: the config's name with
    .log). `pure_python`: the plain sources even where the checkout has a compiled build
    (BLOKIR_PURE_PYTHON, docs/architecture.md "Compiled hot path")."""
    python = str(Path(checkout) / ".venv" / "bin" / "python") if checkout else sys.executable
    return ManagedProcess(
        tag,
        [python, "-m", "resolver", "serve", "-c", str(config)],
        log or config.with_suffix(".log"),
        cwd=Path(checkout) if checkout else REPO,
        env={"BLOKIR_PURE_PYTHON": "1"} if pure_python else None,
    )


def scrape_metrics(port: int, timeout: float) -> str:
    """The text of blokir's Prometheus endpoint on 127.0.0.1:port; raises OSError when it does
    not answer."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=timeout) as reply:
        text: str = reply.read().decode()
    return text


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` in a Prometheus text exposition whose labels
    include all of `labels` (0.0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, number = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(number)
    return total


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


def start_ceiling(workdir: Path, *, port: int, workers: int, tag: str) -> ManagedProcess:
    """bench/ceiling.py on 127.0.0.1:port: the fastest Python UDP responder (see its doc)."""
    return ManagedProcess(
        tag,
        [
            sys.executable,
            str(REPO / "bench" / "ceiling.py"),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        workdir / f"{tag}.log",
        cwd=REPO,
    )
