"""Supervisor.start forks the workers before it starts a thread: a process forked while another
thread holds a lock (logging's, the allocator's) inherits that lock held, by no one, forever."""

from __future__ import annotations

import threading
from pathlib import Path

from resolver.config import load_config
from resolver.supervisor import Supervisor


def test_workers_are_forked_before_any_supervisor_thread_starts(tmp_path: Path) -> None:
    (tmp_path / "main.txt").write_text("judi-contoh.example\n")
    config_path = tmp_path / "blokir.toml"
    config_path.write_text(
        """
[server]
listen = ["127.0.0.1:0"]
workers = 2
[upstream]
servers = ["127.0.0.1:9"]
[metrics]
enabled = true
listen = "127.0.0.1:0"
[updates]
state_dir = "state"
[[lists]]
name = "main"
path = "main.txt"
"""
    )
    config = load_config(config_path)
    supervisor = Supervisor(config, lambda: load_config(config_path))
    before = set(threading.enumerate())
    at_fork: list[set[str]] = []

    def start_worker(number: int) -> None:  # instead of os.fork
        at_fork.append({t.name for t in set(threading.enumerate()) - before})

    supervisor._start_worker = start_worker  # type: ignore[method-assign]
    try:
        supervisor.start()
        started = {t.name for t in set(threading.enumerate()) - before}
    finally:
        supervisor.reloader.stop()
        if supervisor.control is not None:
            supervisor.control.close()
        http = getattr(supervisor, "http", None)
        if http is not None:
            http.shutdown()
            http.server_close()
    assert at_fork == [set(), set()]
    assert {"metrics-http", "blokir-control", "reloader"} <= started
