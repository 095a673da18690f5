"""A list that gives no entry, or mostly rejected ones, fails compile and check, and stops serve
from starting unless forced."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from resolver.cli import main
from resolver.lists.quality import list_problem

# A dnsmasq list forced to be read as plain: every line is junk to the plain reader.
DNSMASQ = "# dnsmasq\nlocal=/judi-contoh.example/\nlocal=/slot-gacor88.example/\n"


def _config(tmp: Path, list_extra: str = "") -> Path:
    config = tmp / "blokir.toml"
    config.write_text(
        f"""
[blocking]
index_path = "idx.blkx"
[[lists]]
name = "good"
path = "good.txt"
[[lists]]
name = "mirror"
path = "mirror.conf"
{list_extra}
"""
    )
    (tmp / "good.txt").write_text("ok.example\n")
    (tmp / "mirror.conf").write_text(DNSMASQ)
    return config


def test_compile_fails_naming_the_list_and_its_top_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, 'format = "plain"')
    assert main(["compile", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "blokir: list mirror: no entry from 3 lines; top reasons: no_dot x2" in err
    assert f"{tmp_path / 'mirror.conf'}:2: local=/judi-contoh.example/" in err
    assert "list good" not in err.replace("list                     format", "")
    assert not (tmp_path / "idx.blkx").exists()
    assert main(["compile", "-c", str(config), "--force"]) == 0
    assert (tmp_path / "idx.blkx").exists()


def test_the_same_list_detected_as_dnsmasq_compiles(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert main(["compile", "-c", str(config)]) == 0
    assert main(["check", "-c", str(config), "www.judi-contoh.example"]) == 0


def test_compile_of_paths_fails_on_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "domains_isp.txt"
    empty.write_text("# header only\n\n")
    assert main(["compile", str(empty), "-o", str(tmp_path / "x.blkx")]) == 2
    assert "list domains_isp: no entry from 2 lines" in capsys.readouterr().err


def test_check_fails_on_a_mostly_rejected_list_and_honours_the_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    (tmp_path / "mirror.conf").write_text("a.example\n" + "bad!name.example\n" * 2)
    assert main(["check", "-c", str(config), "a.example"]) == 2
    err = capsys.readouterr().err
    assert "list mirror: 2 of 3 entries rejected (66.7%, more than max_rejected_ratio 0.5)" in err
    assert "top reasons: bad_character x2" in err
    config = _config(tmp_path, "max_rejected_ratio = 0.7")
    (tmp_path / "mirror.conf").write_text("a.example\n" + "bad!name.example\n" * 2)
    assert main(["check", "-c", str(config), "a.example"]) == 0


def test_check_refuses_a_current_index_built_with_force(tmp_path: Path) -> None:
    config = _config(tmp_path, 'format = "plain"')
    assert main(["compile", "-c", str(config), "--force"]) == 0
    assert main(["check", "-c", str(config), "ok.example"]) == 2
    index = str(tmp_path / "idx.blkx")
    assert main(["check", "--index", index, "ok.example"]) == 2


def test_serve_force_reaches_the_supervisor(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with mock.patch("resolver.supervisor.serve", return_value=0) as serve:
        assert main(["serve", "-c", str(config), "--force"]) == 0
        assert main(["serve", "-c", str(config)]) == 0
    assert [call.kwargs["force"] for call in serve.call_args_list] == [True, False]


def test_ratio_counts_only_entries_tried() -> None:
    source = {
        "list": "adblock",
        "lines": 1000,
        "entries": 10,
        "rejected": {"bad_character": 10},
        "skipped": {"adblock_cosmetic": 900},  # skipped rules are not held against a list
        "spec": {"max_rejected_ratio": 0.5},
    }
    assert list_problem(source) is None
    source["rejected"] = {"bad_character": 11}
    assert list_problem(source) == (
        "list adblock: 11 of 21 entries rejected (52.4%, more than max_rejected_ratio 0.5); "
        "top reasons: bad_character x11"
    )
    source["entries"], source["rejected"] = 0, {}
    assert list_problem(source) == (
        "list adblock: no entry from 1,000 lines; top reasons: adblock_cosmetic x900"
    )
