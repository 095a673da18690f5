"""Started as root, `blokir serve` binds and then runs as `[server] user` (issue 6 item 9): the
supervisor and every worker have nobody's IDs, no capabilities, and still answer. Needs root
(this machine's CI runs as root); skipped otherwise."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_server import BLOCKED, LANDING_V4, Blokir
from tests.support.upstream import FakeUpstream

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root"),
]

USER = "nobody"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can read (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="blokir-priv-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def status_ids(pid: int) -> dict[str, list[int]]:
    """Uid/Gid (real, effective, saved, fs), Groups and the effective capabilities."""
    out: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
        elif key in ("CapEff", "CapPrm"):
            out[key] = [int(value.strip(), 16)]
    return out


def test_root_start_drops_to_nobody_in_supervisor_and_workers(shared_dir: Path) -> None:
    entry = pwd.getpwnam(USER)
    with FakeUpstream() as upstream:
        server = Blokir(shared_dir, upstream.port, workers=2, server_extra=f'user = "{USER}"')
        for path in shared_dir.iterdir():
            path.chmod(0o644)
        server.start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            assert len(children) == 2
            for process in [pid, *map(int, children)]:
                ids = status_ids(process)
                assert ids["Uid"] == [entry.pw_uid] * 4, (process, ids)
                assert ids["Gid"] == [entry.pw_gid] * 4, (process, ids)
                assert ids["Groups"] == [entry.pw_gid], (process, ids)
                assert ids["CapEff"] == [0] and ids["CapPrm"] == [0], (process, ids)
            reply = server.ask(BLOCKED[0])
            assert [rd.address for rd in reply.answer[0]] == [LANDING_V4]
            upstream.add("www.after-drop.example", "A", "198.51.100.9")
            forwarded = server.ask("www.after-drop.example")  # upstream sockets work too
            assert [rd.address for rd in forwarded.answer[0]] == ["198.51.100.9"]
        finally:
            assert server.stop() == 0


def test_unknown_user_is_a_clear_start_error(shared_dir: Path) -> None:
    with FakeUpstream() as upstream:
        server = Blokir(shared_dir, upstream.port, server_extra='user = "no-such-user-blokir"')
        root = Path(__file__).resolve().parents[2]
        result = subprocess.run(
            [sys.executable, "-m", "resolver", "serve", "-c", str(server.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "unknown user 'no-such-user-blokir'" in output
    assert "Traceback" not in output, output
