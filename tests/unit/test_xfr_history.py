"""The RPZ primary's versions: serial arithmetic (RFC 1982), the difference of two snapshots,
the kept history and the [rpz] settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from resolver.config import ConfigError, parse_config
from resolver.xfr.history import ZoneHistory, next_serial, serial_gt
from resolver.xfr.snapshot import diff, read_records


def test_serial_arithmetic_wraps() -> None:
    assert serial_gt(1, 0) and not serial_gt(0, 1)
    assert serial_gt(0, 2**32 - 1)  # RFC 1982: 0 follows 4294967295
    assert not serial_gt(5, 5)
    assert not serial_gt(2**31 + 5, 5)  # exactly half way round is undefined: never "greater"
    assert next_serial(None, now=1000) == 1000
    assert next_serial(1000, now=1000) == 1001  # the clock did not move on: + 1
    assert next_serial(1000, now=5000) == 5000  # the clock is ahead: take it
    assert next_serial(2**32 - 1, now=10) == 10  # wrapped: still greater
    assert next_serial(9000, now=5000) == 9001  # the clock went back: + 1
    for current in (0, 7, 2**31, 2**32 - 1):
        assert serial_gt(next_serial(current), current)


def snapshot(path: Path, records: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{r}\n" for name in sorted(records) for r in records[name]))
    return path


def test_diff_is_records_deleted_and_added(tmp_path: Path) -> None:
    old = snapshot(
        tmp_path / "old",
        {
            "a.test": ["a.test CNAME .", "*.a.test CNAME ."],
            "b.test": ["b.test CNAME ."],
            "d.test": ["d.test A 192.0.2.1"],
        },
    )
    new = snapshot(
        tmp_path / "new",
        {
            "a.test": ["a.test CNAME ."],
            "c.test": ["c.test CNAME rpz-passthru."],
            "d.test": ["d.test A 192.0.2.2"],
        },
    )
    deleted, added = tmp_path / "del", tmp_path / "add"
    assert diff(old, new, deleted, added) == (3, 2)
    assert set(read_records(deleted)) == {
        "*.a.test CNAME .",
        "b.test CNAME .",
        "d.test A 192.0.2.1",
    }
    assert set(read_records(added)) == {"c.test CNAME rpz-passthru.", "d.test A 192.0.2.2"}
    assert diff(new, new, deleted, added) == (0, 0)


def commit(history: ZoneHistory, tmp: Path, text: str, digest: str) -> int | None:
    zone = history.scratch("zone")
    zone.write_text(text)
    deleted, added = history.scratch("del"), history.scratch("add")
    deleted.write_text("")
    added.write_text(text)
    version = history.commit(zone, digest, 1, deleted, added)
    return None if version is None else version.serial


def test_history_keeps_the_last_steps(tmp_path: Path) -> None:
    history = ZoneHistory(tmp_path, keep=2)
    serials = [commit(history, tmp_path, f"n{i} CNAME .\n", f"sha{i}") for i in range(4)]
    assert all(s is not None for s in serials)
    assert commit(history, tmp_path, "same", "sha3") is None  # same content: no new serial
    first, second, third, fourth = serials
    assert history.steps_since(fourth) == []  # type: ignore[arg-type]
    assert [s.serial for s in history.steps_since(second) or []] == [third, fourth]
    assert history.steps_since(first) is None  # beyond the 2 kept steps: AXFR
    # A restart reads the same state back, and old files are gone.
    again = ZoneHistory(tmp_path, keep=2)
    assert again.current is not None and again.current.serial == fourth
    assert [s.serial for s in again.steps_since(second) or []] == [third, fourth]
    files = sorted(p.name for p in (tmp_path / "rpz").iterdir() if p.suffix == ".txt")
    assert len(files) == 1 + 2 * 2  # the current zone and two steps of two files
    # A packed block file is installed for the current version only.
    wire = again.scratch("wire")
    wire.write_bytes(b"")
    assert again.current is not None and again.install_wire(again.current, wire)
    assert again.current.wire.is_file()
    stale = again.scratch("wire")
    stale.write_bytes(b"")
    assert not again.install_wire(dataclasses.replace(again.current), stale)  # not current
    assert not stale.exists()


@pytest.mark.parametrize(
    ("rpz", "message"),
    [
        ('allow_transfer = ["not-a-net"]', "not a CIDR"),
        ("require_tsig = true", "no .rpz. tsig key"),
        ('tsig = [{ name = "k", algorithm = "md5", secret = "AAAA" }]', "algorithm"),
        ('tsig = [{ name = "k", algorithm = "hmac-sha256", secret = "***" }]', "base64"),
        ('tsig = [{ name = "k", secret = "AAAA", key = "x" }]', "unknown key.s. key"),
        ('notify = ["127.0.0.1"]', "no port"),
        ("history = -1", "between 0 and 1000"),
        ('zone = "bad zone"', "zone name"),
    ],
)
def test_rpz_settings_rejected(rpz: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"[rpz]\n{rpz}\n", "blokir.toml")


def test_rpz_defaults_serve_loopback_only() -> None:
    rpz = parse_config(
        '[rpz]\nlisten = ["127.0.0.1:5300"]\nzone = "Policy.Example"\n', "x.toml"
    ).rpz
    assert [str(n) for n in rpz.allow_transfer] == ["127.0.0.0/8", "::1/128"]
    assert rpz.zone == "policy.example." and rpz.history == 10 and not rpz.require_tsig


def test_a_version_from_its_step_keeps_the_previous_snapshot_until_written(
    tmp_path: Path,
) -> None:
    history = ZoneHistory(tmp_path, keep=3)
    first = history.scratch("zone")
    first.write_text("a.test CNAME .\n")
    old = history.commit(first, "one", 1, None, None)
    assert old is not None and not old.pending
    deleted, added = history.scratch("del"), history.scratch("add")
    deleted.write_text("a.test CNAME .\n")
    added.write_text("b.test CNAME .\n")
    new = history.commit(None, "two", 1, deleted, added)
    assert new is not None and new.pending and new.base == old.snapshot
    assert old.snapshot.is_file() and not new.snapshot.exists()
    history.clean()  # the base is still needed
    assert old.snapshot.is_file()
    # A restart before the snapshot is written serves the same pending version.
    again = ZoneHistory(tmp_path, keep=3)
    assert again.current is not None and again.current.pending
    assert again.current.serial == new.serial
    with pytest.raises(ValueError):  # no step on top of a version without its snapshot
        again.commit(None, "three", 1, deleted, added)
    written = again.scratch("zone")
    written.write_text("b.test CNAME .\n")
    assert again.install_snapshot(again.current, written, 1)
    assert not again.current.pending and not old.snapshot.exists()
    assert ZoneHistory(tmp_path, keep=3).current.base is None  # type: ignore[union-attr]
