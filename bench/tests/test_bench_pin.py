"""`scripts/bench --pin`: the split of CPUs between the load generator and the servers, and
that a managed server (and what it forks) really runs on the servers' CPUs while the NSD
upstream stays with the load generator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import report as reporting
from bench import servers
from bench.resolver_bench import parse_peers, pin_split
from bench.servers import ManagedProcess
from resolver import native

# The child prints its own CPUs and those of a grandchild it forks, then exits.
REPORT_CPUS = (
    "import os, sys\n"
    "print('self', sorted(os.sched_getaffinity(0)), flush=True)\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    print('child', sorted(os.sched_getaffinity(0)), flush=True)\n"
    "    os._exit(0)\n"
    "os.waitpid(pid, 0)\n"
)


def test_split_gives_the_lowest_cpu_to_the_load() -> None:
    assert pin_split({0, 1}) == (frozenset({0}), frozenset({1}))
    assert pin_split({2, 5, 3}) == (frozenset({2}), frozenset({3, 5}))
    with pytest.raises(SystemExit, match="2 usable CPUs"):
        pin_split({4})


@pytest.fixture
def server_cpus() -> Iterator[frozenset[int]]:
    usable = os.sched_getaffinity(0)
    if len(usable) < 2:
        pytest.skip("pinning needs 2 CPUs")
    _, servers = pin_split(usable)
    ManagedProcess.server_cpus = servers
    try:
        yield servers
    finally:
        ManagedProcess.server_cpus = None


def run_and_read(tmp_path: Path, name: str, *, under_test: bool) -> list[str]:
    log = tmp_path / f"{name}.log"
    process = ManagedProcess(name, [sys.executable, "-c", REPORT_CPUS], log, under_test=under_test)
    try:
        process.proc.wait(timeout=20)
    finally:
        process.stop()
    assert process.proc.returncode == 0, log.read_text()
    return log.read_text().splitlines()


def test_a_server_and_its_children_run_on_the_server_cpus(
    tmp_path: Path, server_cpus: frozenset[int]
) -> None:
    lines = run_and_read(tmp_path, "server", under_test=True)
    assert lines == [f"self {sorted(server_cpus)}", f"child {sorted(server_cpus)}"]


def test_the_upstream_keeps_the_cpus_it_was_started_with(
    tmp_path: Path, server_cpus: frozenset[int]
) -> None:
    inherited = sorted(os.sched_getaffinity(0))
    assert inherited != sorted(server_cpus)  # else this test could not tell the two apart
    lines = run_and_read(tmp_path, "nsd", under_test=False)
    assert lines == [f"self {inherited}", f"child {inherited}"]


PROC_STAT = """cpu  2205040 140157 1078269 3985559 7964 0 199355 26227 0 0
cpu0 685012 64599 499843 2459038 1477 0 98024 9060 0 0
cpu1 1520027 75557 578425 1526520 6487 0 101331 17167 0 0
intr 1 2 3
"""


def test_steal_is_read_per_cpu_and_for_the_machine() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    assert servers.cpu_steal_seconds({1}, PROC_STAT) == 17167 / ticks
    assert servers.cpu_steal_seconds({0, 1}, PROC_STAT) == (9060 + 17167) / ticks
    assert servers.cpu_steal_seconds(None, PROC_STAT) == 26227 / ticks
    assert servers.cpu_steal_seconds({7}, PROC_STAT) == 0.0  # a CPU the file does not list


def test_steal_is_the_eighth_count_of_this_machines_proc_stat() -> None:
    """The parser against this kernel's /proc/stat, read once (the counts move while it runs):
    the first line is the machine's, and its steal is the eighth count (proc(5)). A kernel
    that lays the file out otherwise fails here, where the known text above cannot tell."""
    real = Path("/proc/stat").read_text()
    name, *counts = real.splitlines()[0].split()
    assert name == "cpu" and len(counts) >= 8
    ticks = os.sysconf("SC_CLK_TCK")
    assert servers.cpu_steal_seconds(None, real) == int(counts[7]) / ticks


def test_goal_row_gives_the_run_pairs() -> None:
    """The q/s goal says how the alternating runs compare pair by pair, not only in median."""
    from bench import report

    def summary(qps: list[float]) -> dict[str, object]:
        median = sorted(qps)[len(qps) // 2]
        return {"runs": len(qps), "qps_median": median, "qps_all": qps, "rss_mib": 1.0}

    peers = {"blokir1": summary([90.0, 60.0, 100.0]), "unbound1": summary([80.0, 80.0, 80.0])}
    fake = {"sizes": {"1000000": {"peers": {k: {"summary": v} for k, v in peers.items()}}}}
    row = next(r for r in report.goals(fake) if "vs Unbound, 1 thread" in r["goal"])
    assert "run pairs: median 1.12x, ahead in 2 of 3" in row["measured"]
    assert report.run_pairs([2.0, 3.0], [1.0, 0.0]) == [2.0]


def test_pure_python_peers_run_blokir_on_its_sources(tmp_path: Path) -> None:
    peers = parse_peers("blokir1,blokir1p,blokir2mp")
    assert [(p.name, p.pure, p.metrics) for p in peers] == [
        ("blokir1", False, False),
        ("blokir1p", True, False),
        ("blokir2mp", True, True),
    ]
    with pytest.raises(SystemExit, match="unknown peer"):
        parse_peers("unbound1p")
    # What a pure peer's process sees: BLOKIR_PURE_PYTHON on top of this environment.
    log = tmp_path / "env.log"
    code = "import os; print(os.environ.get('BLOKIR_PURE_PYTHON'), 'PATH' in os.environ)"
    process = ManagedProcess("env", [sys.executable, "-c", code], log, env={native.PURE_ENV: "1"})
    try:
        process.proc.wait(timeout=20)
    finally:
        process.stop()
    assert log.read_text().split() == ["1", "True"]


def test_base_peers_run_another_checkout(tmp_path: Path) -> None:
    """base<N>: blokir from the --baseline checkout, with that checkout's own interpreter."""
    with pytest.raises(SystemExit, match="needs --baseline"):
        parse_peers("base1")
    (peer,) = parse_peers("base2", str(tmp_path))
    assert (peer.kind, peer.threads, peer.baseline, peer.querylog) == (
        "blokir", 2, str(tmp_path), False,
    )  # fmt: skip
    (logged,) = parse_peers("baseq1", str(tmp_path))  # the baseline with the query log on
    assert (logged.threads, logged.baseline, logged.querylog) == (1, str(tmp_path), True)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$PWD $*"\n')
    python.chmod(0o755)
    process = servers.start_blokir(tmp_path / "b.toml", "base", checkout=str(tmp_path))
    try:
        process.proc.wait(timeout=10)
    finally:
        process.stop()
    assert process.log.read_text().split() == [str(tmp_path), "-m", "resolver", "serve", "-c",
                                               str(tmp_path / "b.toml")]  # fmt: skip


# A parent that idles and a child, named by its command line, that burns ~0.3 s of CPU.
BURNING_CHILD = (
    "import subprocess, sys, time\n"
    "burn = 'import time\\nend = time.process_time() + 0.3\\n'\n"
    "burn += 'while time.process_time() < end: pass'\n"
    "child = subprocess.Popen([sys.executable, '-c', burn, 'resolver.querylog.writer'])\n"
    "print('started', flush=True)\n"
    "sys.stdin.readline()\n"
    "child.wait()\n"
)


def test_tree_cpu_times_counts_the_members_a_command_line_names() -> None:
    """The resolver benchmark tells the query log writer's CPU from the worker's this way."""
    parent = subprocess.Popen(
        [sys.executable, "-c", BURNING_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        assert parent.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 10
        writer = 0.0
        while writer < 0.2 and time.monotonic() < deadline:  # the child burns, then idles
            writer = sum(servers.tree_cpu_times(parent.pid, b"resolver.querylog.writer"))
            time.sleep(0.02)
        whole = sum(servers.tree_cpu_times(parent.pid))
        assert writer >= 0.2  # the child's burn, seen while it lives
        assert whole >= writer  # the whole tree counts the child too
        assert sum(servers.tree_cpu_times(parent.pid, b"no such command")) == 0
        parent.stdin.write("\n")
        parent.stdin.flush()
    finally:
        parent.wait(10)


def test_the_query_log_figures_name_the_writer_cpu_only_where_measured() -> None:
    """One text for the run lines and the report (bench/report.py querylog_figures)."""
    figures = {"querylog_bytes": 3 * 2**20, "querylog_bytes_per_answer": 92.14}
    assert reporting.querylog_figures(figures) == "3.0 MiB (92.1 B per answer)"
    figures["querylog_writer_us_per_answer"] = 0.094
    assert reporting.querylog_figures(figures) == (
        "3.0 MiB (92.1 B per answer, writer 0.09 us CPU per answer)"
    )
