"""`blokir reload`'s exit codes against a control socket that answers as the server does, and the
command line's documentation of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resolver import cli
from resolver.control import ControlServer


def config_with_socket(tmp_path: Path) -> Path:
    (tmp_path / "block.txt").write_text("judi-contoh.example\n")
    path = tmp_path / "blokir.toml"
    path.write_text(
        f"""
[updates]
control_socket = "{tmp_path / "c.sock"}"
[[lists]]
name = "t"
path = "block.txt"
"""
    )
    return path


@pytest.mark.parametrize(("ok", "code"), [(True, 0), (False, 1)])
def test_reload_exits_0_when_applied_and_1_when_refused(
    tmp_path: Path, ok: bool, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with_socket(tmp_path)
    outcome = {"ok": ok, "result": "applied" if ok else "rejected_shrink"}

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        assert request["command"] == "reload"
        return {"ok": ok, "outcome": outcome}

    server = ControlServer(tmp_path / "c.sock", handler)
    server.start()
    try:
        assert cli.main(["reload", "-c", str(config), "--json"]) == code
    finally:
        server.close()
    assert json.loads(capsys.readouterr().out) == outcome


def test_reload_exits_2_when_no_server_answers(tmp_path: Path) -> None:
    assert cli.main(["reload", "-c", str(config_with_socket(tmp_path))]) == 2


def test_the_documented_exit_codes_include_reloads_refusal() -> None:
    """The module's summary of exit codes is what `blokir reload --help` says too."""
    doc = " ".join((cli.__doc__ or "").split())
    assert "`reload` (0 applied or unchanged, 1 refused or failed, 2 no server answered)" in doc
