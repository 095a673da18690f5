"""Child processes for tests, the fuzz and fault suites and the benchmarks: a time budget, free
loopback ports, executables in the sbin directories, and a child in its own session that is
always stopped together with everything it forked.

Every wait here is bounded; everything binds to 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class SetupError(Exception):
    """A step failed in a way a person can act on; the message says what and where to look."""


class Deadline:
    """A whole run's time budget: every wait is cut to what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def cap(self, seconds: float) -> float:
        """`seconds`, or less when the deadline comes first; raises when it has passed."""
        left = self.remaining()
        if left <= 0:
            raise SetupError(f"overall deadline of {self.seconds:.0f} s reached (--deadline)")
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
        raise SetupError(f"{name} is not installed (scripts/install-test-deps installs it)")
    return path


# Ports this process has handed out: two servers of one run never get the same one, even when
# the first has not bound it yet.
_ISSUED_PORTS: set[int] = set()


@functools.cache
def _listening_ports() -> tuple[int, ...]:
    """Ports 10000-65535 outside the kernel's range for outgoing source ports
    (net.ipv4.ip_local_port_range)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(v) for v in text.split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return tuple(p for p in range(10000, 65536) if not low <= p <= high)


def free_port(attempts: int = 200) -> int:
    """A port on 127.0.0.1 free for both UDP and TCP right now (racy by nature).

    Chosen outside the kernel's ephemeral range: a port from bind(0) lies inside it, and in the
    time between choosing it and the server binding it, any outgoing socket (a resolver's own
    upstream queries) may be given that same port, and the server then fails with "Address
    already in use". That happened in CI (fault suite, a metrics port). Random, not sequential,
    so that concurrent test processes rarely try the same port."""
    pool = _listening_ports()
    for _ in range(attempts):
        port = random.choice(pool) if pool else 0
        if port in _ISSUED_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((LOOPBACK, port))
            except OSError:
                continue
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
        if port in _ISSUED_PORTS:
            continue
        _ISSUED_PORTS.add(port)
        return port
    raise SetupError("no free loopback port for both UDP and TCP")


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty log)"


class ManagedProcess:
    """A child in its own session, its output in `log`. `stop` sends SIGTERM to the child,
    waits, then SIGKILLs whatever is left of its process group. `stop_all` stops every one
    still running (a run's last `finally`)."""

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
        """`under_test`: a server being measured (pinned with `server_cpus`); False for helpers
        (the NSD upstream), which stay with the load generator. `env`: variables set for the
        process on top of this one's."""
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
            raise SetupError(
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
