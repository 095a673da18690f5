"""The `blokir` command line: compile, check (grep-like exit codes), export, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resolver.cli import main


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    (tmp_path / "block.txt").write_text(
        "judi-contoh.example\nBAD..name\n1.2.3.4\njudi-contoh.example\n"
    )
    (tmp_path / "allow.txt").write_text("berita.judi-contoh.example\n")
    (tmp_path / "blokir.toml").write_text(
        """
[blocking]
index_path = "idx.blkx"
[[allowlists]]
name = "exceptions"
path = "allow.txt"
[[lists]]
name = "trustpositif"
path = "block.txt"
category = "gambling"
action = "nxdomain"
"""
    )
    return tmp_path


def test_compile_paths_json_summary(lists: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = lists / "x.blkx"
    assert main(["compile", str(lists / "block.txt"), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entries"] == 1 and out.exists()
    (listed,) = summary["lists"]
    assert listed["rejected"] == {"empty_label": 1}
    assert listed["duplicates"] == 1 and listed["ip_entries"] == 1


def test_compile_config_text_summary_names_file_and_line(
    lists: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", "-c", str(lists / "blokir.toml")]) == 0
    text = capsys.readouterr().out
    assert "trustpositif" in text and "rejected 1 x empty_label" in text
    assert f"{lists / 'block.txt'}:2: BAD..name" in text
    assert (lists / "idx.blkx").exists()


def test_check_exit_codes_like_grep(lists: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(lists / "blokir.toml")
    assert main(["check", "-c", config, "judi-contoh.example", "www.judi-contoh.example"]) == 0
    out = capsys.readouterr().out
    assert "blocked  www.judi-contoh.example  list=trustpositif rule=*.judi-contoh.example" in out
    assert "action=nxdomain" in out
    assert main(["check", "-c", config, "judi-contoh.example", "berita.judi-contoh.example"]) == 1
    assert "allowed  berita.judi-contoh.example  list=exceptions" in capsys.readouterr().out
    assert main(["check", "-c", config, "not a name!"]) == 2
    assert main(["check", "-c", config, "http://Judi-Contoh.example/path"]) == 0  # normalised


def test_check_uses_a_current_index_and_rebuilds_a_stale_one(lists: Path) -> None:
    config = str(lists / "blokir.toml")
    assert main(["compile", "-c", config]) == 0
    assert main(["check", "-c", config, "judi-contoh.example"]) == 0
    (lists / "block.txt").write_text("other.example\n")  # the compiled index is now stale
    assert main(["check", "-c", config, "judi-contoh.example"]) == 1
    assert main(["check", "-c", config, "other.example"]) == 0


def test_export_rpz_to_file(lists: Path) -> None:
    out = lists / "out.rpz"
    assert (
        main(["export", "-c", str(lists / "blokir.toml"), "--format", "rpz", "-o", str(out)]) == 0
    )
    records = [line for line in out.read_text().splitlines() if not line.startswith(";")]
    assert "judi-contoh.example CNAME ." in records
    assert "*.judi-contoh.example CNAME ." in records
    assert "berita.judi-contoh.example CNAME rpz-passthru." in records


def test_errors_exit_2_with_a_message(lists: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(lists / "missing.txt"), "-o", str(lists / "m.blkx")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    (lists / "bad.toml").write_text(
        "[[lists]]\nname = 'x'\npath = 'block.txt'\naction = 'nxdomian'\n"
    )
    assert main(["compile", "-c", str(lists / "bad.toml")]) == 2
    assert "bad.toml:4 lists[0].action: 'nxdomian' is not one of" in capsys.readouterr().err
    (lists / "junk.blkx").write_bytes(b"junk" * 100)
    assert main(["check", "--index", str(lists / "junk.blkx"), "a.example"]) == 2
    assert "not a blokir index" in capsys.readouterr().err


def test_blokir_config_names_the_file_when_c_is_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`BLOKIR_CONFIG` (set in the container image) stands in for `-c`; `-c` still wins."""
    for name, listed in (("env", "only-in-env.example"), ("flag", "only-in-flag.example")):
        (tmp_path / f"{name}.txt").write_text(listed + "\n")
        (tmp_path / f"{name}.toml").write_text(
            f'[blocking]\nindex_path = "{name}.blkx"\n[[lists]]\nname = "{name}"\n'
            f'path = "{name}.txt"\n'
        )
    assert main(["check", "only-in-env.example"]) == 1  # the embedded default does not list it
    monkeypatch.setenv("BLOKIR_CONFIG", str(tmp_path / "env.toml"))
    assert main(["check", "only-in-env.example"]) == 0
    assert main(["check", "-c", str(tmp_path / "flag.toml"), "only-in-env.example"]) == 1
    assert main(["check", "-c", str(tmp_path / "flag.toml"), "only-in-flag.example"]) == 0
    monkeypatch.setenv("BLOKIR_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["check", "only-in-env.example"]) == 2  # a named file that is not there


def test_check_client_shows_its_groups_lists(
    lists: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (lists / "family.txt").write_text("adult-contoh.example\n")
    config = lists / "blokir.toml"
    config.write_text(
        config.read_text()
        + """
[[lists]]
name = "family"
path = "family.txt"
[[groups]]
name = "plain"
clients = ["127.0.0.2/32"]
lists = ["trustpositif"]
allowlists = []
[[groups]]
name = "family"
clients = ["127.0.0.0/24"]
lists = ["trustpositif", "family"]
"""
    )
    c = str(config)
    assert main(["check", "-c", c, "--client", "127.0.0.3", "adult-contoh.example"]) == 0
    assert "group=family" in capsys.readouterr().out
    assert main(["check", "-c", c, "--client", "127.0.0.2", "adult-contoh.example"]) == 1
    # plain takes no allowlist: the exception under the blocked zone does not apply to it.
    assert main(["check", "-c", c, "--client", "127.0.0.2", "berita.judi-contoh.example"]) == 0
    assert main(["check", "-c", c, "--client", "127.0.0.3", "berita.judi-contoh.example"]) == 1
    out = capsys.readouterr().out
    assert "group=plain" in out and "list=trustpositif rule=*.judi-contoh.example" in out
    assert main(["check", "-c", c, "--client", "192.0.2.1", "adult-contoh.example"]) == 0
    assert "group=default" in capsys.readouterr().out
    assert main(["check", "-c", c, "--client", "nope", "adult-contoh.example"]) == 2
