"""Transfers streamed to disk (resolver/xfr/stream.py, resolver/xfr/zonefile.py) without a
network: a scripted primary hands a Secondary its answer as dnspython messages, which go through
the same dns.xfr.Inbound path as a real transfer. AXFR written record by record with bounded
memory; IXFR merged into the copy with RFC 1995 section 4 semantics (steps in order, deletions
before additions, a record deleted and re-added kept), AXFR when the difference does not fit the
copy; a cut stream leaves the copy byte for byte as it was."""

from __future__ import annotations

import errno
import hashlib
import logging
import socket
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

import resolver.xfr.secondary as secondary_module
from resolver.xfr.secondary import Secondary, _classify, keyring_of
from resolver.xfr.source import TsigKey, XfrSource
from resolver.xfr.stream import MIN_RATE, CopyTransfer, _Budget, _messages, _read, apply
from resolver.xfr.zonefile import CopyWriter, DiffMismatch, IxfrDiff, copy_serial, merge

ZONE = "rpz.example."
ORIGIN = dns.name.from_text(ZONE)
Answer = Callable[[dns.message.Message], list[dns.message.Message]]


def soa(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        ZONE, 60, "IN", "SOA", f"ns.{ZONE} hostmaster.{ZONE} {serial} 3600 600 86400 60"
    )


def rr(owner: str, rdtype: str = "CNAME", rdata: str = ".", ttl: int = 60) -> dns.rrset.RRset:
    return dns.rrset.from_text(f"{owner}.{ZONE}", ttl, "IN", rdtype, rdata)


BASE = [rr("a"), rr("b"), rr("c"), rr("land", "A", "192.0.2.1")]


def messages(query: dns.message.Message, rrsets: list[dns.rrset.RRset], per: int) -> list[Any]:
    """The answer to `query`, `per` RRsets a message."""
    out = []
    for start in range(0, len(rrsets), per):
        message = dns.message.make_response(query)
        message.answer = list(rrsets[start : start + per])
        out.append(message)
    return out


def axfr(serial: int, records: list[dns.rrset.RRset], per: int = 2) -> Answer:
    return lambda query: messages(query, [soa(serial), *records, soa(serial)], per)


Step = tuple[int, list[dns.rrset.RRset], int, list[dns.rrset.RRset]]


def ixfr(steps: list[Step], per: int = 3) -> Answer:
    """An IXFR answer (RFC 1995 section 4): the new SOA, each step as old SOA, deletions, new
    SOA, additions, then the new SOA again."""
    final = steps[-1][2] if steps else 0
    rrsets = [soa(final)]
    for old, deleted, new, added in steps:
        rrsets += [soa(old), *deleted, soa(new), *added]
    return lambda query: messages(query, [*rrsets, soa(final)], per)


def cut(answer: Answer, keep: int) -> Answer:
    """The answer's first `keep` messages only: the stream stops there."""
    return lambda query: answer(query)[:keep]


class Primary:
    """Answers a Secondary's SOA queries with `serial` and its transfers from `answers`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, secondary: Secondary) -> None:
        self.serial = 1
        self.answers: list[Answer] = []
        self.asked: list[str] = []
        monkeypatch.setattr(secondary_module, "receive", self.receive)
        monkeypatch.setattr(secondary, "_primary_serial", lambda timeout: self.serial)

    def receive(
        self,
        host: str,
        port: int,
        query: dns.message.Message,
        manager: CopyTransfer,
        timeout: float,
        lifetime: float,
    ) -> None:
        self.asked.append(dns.rdatatype.to_text(query.question[0].rdtype))
        apply(manager, query, iter(self.answers.pop(0)(query)))


@pytest.fixture
def feed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Secondary, Primary]:
    """A Secondary with a copy at serial 1 (BASE), taken by AXFR from the scripted primary."""
    secondary = Secondary("feed", XfrSource("127.0.0.1", 53, ZONE), tmp_path)
    primary = Primary(monkeypatch, secondary)
    primary.answers.append(axfr(1, BASE))
    result = secondary.transfer(1.0)
    assert (result.outcome, result.kind) == ("updated", "AXFR"), result
    primary.asked.clear()
    return secondary, primary


def records(copy: Path) -> list[tuple[str, int, str, str]]:
    """The copy's records as (owner, TTL, type, rdata), in file order."""
    out = []
    for line in copy.read_text().splitlines():
        owner, ttl, _, rdtype, rdata = line.split(None, 4)
        out.append((owner.lower(), int(ttl), rdtype, rdata))
    return out


def names(copy: Path) -> set[str]:
    return {owner for owner, _, rdtype, _ in records(copy) if rdtype != "SOA"}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix not in (".list", ".json"))


# -- AXFR ------------------------------------------------------------------------------------


def test_axfr_is_written_record_by_record_soa_first(
    feed: tuple[Secondary, Primary], tmp_path: Path
) -> None:
    secondary, _ = feed
    got = records(secondary.copy)
    assert got[0][2] == "SOA" and got[0][0] == ZONE and got[0][3].split()[2] == "1"
    assert got[1:] == [
        ("a.rpz.example.", 60, "CNAME", "."),
        ("b.rpz.example.", 60, "CNAME", "."),
        ("c.rpz.example.", 60, "CNAME", "."),
        ("land.rpz.example.", 60, "A", "192.0.2.1"),
    ]
    data = secondary.copy.read_bytes()
    assert secondary.state.serial == 1 and secondary.state.kind == "AXFR"
    assert secondary.state.size == len(data)
    assert secondary.state.sha256 == hashlib.sha256(data).hexdigest()
    assert copy_serial(secondary.copy, ORIGIN) == 1
    # Master-file text a zone parser takes whole, as the RPZ parser does.
    zone = dns.zone.from_file(
        str(secondary.copy), origin=ZONE, relativize=False, check_origin=False
    )
    assert len(zone.nodes) == 5
    assert leftovers(tmp_path) == []


def lazy_axfr(query: dns.message.Message, count: int, per: int) -> Iterator[dns.message.Message]:
    """An AXFR of `count` names made message by message, as they would arrive."""
    yield from messages(query, [soa(9)], 1)
    target = rr("n")[0]
    for start in range(0, count, per):
        batch = []
        for i in range(start, min(start + per, count)):
            name = dns.name.Name((f"n{i}".encode(), *ORIGIN.labels))
            batch.append(dns.rrset.from_rdata(name, 60, target))
        yield from messages(query, batch, per)
    yield from messages(query, [soa(9)], 1)


def test_axfr_memory_does_not_grow_with_the_zone(tmp_path: Path) -> None:
    count = 10_000  # held as a dnspython zone: about 10 MB
    manager = CopyTransfer(ORIGIN, tmp_path / "big.list")
    query = dns.message.make_query(ZONE, "AXFR")
    tracemalloc.start()
    try:
        apply(manager, query, lazy_axfr(query, count, 250))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manager.full is not None and manager.full.writer is not None
    writer = manager.full.writer
    assert writer.records == count + 1
    writer.install()
    assert len(names(tmp_path / "big.list")) == count
    assert peak < 3 * 1024 * 1024, f"peak {peak:,} bytes while streaming {count:,} names"


# -- IXFR ------------------------------------------------------------------------------------


def test_ixfr_steps_apply_in_order_with_rfc1995_semantics(feed: tuple[Secondary, Primary]) -> None:
    secondary, primary = feed
    primary.serial = 3
    primary.answers.append(
        ixfr(
            [
                # 1 -> 2: a and the landing address go, d and e come.
                (1, [rr("a"), rr("land", "A", "192.0.2.1")], 2, [rr("d"), rr("e")]),
                # 2 -> 3: d goes again; a comes back (new TTL); another landing address.
                (2, [rr("d")], 3, [rr("a", ttl=300), rr("land", "A", "192.0.2.2")]),
            ]
        )
    )
    result = secondary.transfer(1.0)
    assert (result.outcome, result.kind) == ("updated", "IXFR"), result
    assert primary.asked == ["IXFR"]
    got = records(secondary.copy)
    assert got[0][2] == "SOA" and got[0][3].split()[2] == "3"
    assert sorted(got[1:]) == [
        ("a.rpz.example.", 300, "CNAME", "."),
        ("b.rpz.example.", 60, "CNAME", "."),
        ("c.rpz.example.", 60, "CNAME", "."),
        ("e.rpz.example.", 60, "CNAME", "."),
        ("land.rpz.example.", 60, "A", "192.0.2.2"),
    ]
    assert secondary.state.serial == 3 and secondary.state.kind == "IXFR"
    assert secondary.state.sha256 == hashlib.sha256(secondary.copy.read_bytes()).hexdigest()


def test_ixfr_matches_owners_without_regard_to_case(feed: tuple[Secondary, Primary]) -> None:
    secondary, primary = feed
    primary.serial = 2
    primary.answers.append(ixfr([(1, [rr("B"), rr("LAND", "A", "192.0.2.1")], 2, [])]))
    assert secondary.transfer(1.0).kind == "IXFR"
    assert names(secondary.copy) == {"a.rpz.example.", "c.rpz.example."}


def test_ixfr_changing_only_the_soa_keeps_every_record(feed: tuple[Secondary, Primary]) -> None:
    secondary, primary = feed
    before = secondary.copy.read_text().splitlines()
    primary.serial = 2
    primary.answers.append(ixfr([(1, [], 2, [])]))
    result = secondary.transfer(1.0)
    assert (result.outcome, result.kind) == ("updated", "IXFR"), result
    after = secondary.copy.read_text().splitlines()
    assert after[1:] == before[1:]
    assert after[0].split()[6] == "2" and before[0].split()[6] == "1"


def test_ixfr_answered_with_our_serial_changes_nothing(feed: tuple[Secondary, Primary]) -> None:
    secondary, primary = feed
    data = secondary.copy.read_bytes()
    primary.serial = 2  # the primary went back to 1 between the SOA query and the IXFR
    primary.answers.append(lambda query: messages(query, [soa(1)], 1))
    result = secondary.transfer(1.0)
    assert (result.outcome, result.kind) == ("not_modified", "IXFR"), result
    assert secondary.copy.read_bytes() == data and secondary.state.serial == 1


@pytest.mark.parametrize(
    "steps",
    [
        [(1, [rr("zzz")], 2, [])],  # the copy has no zzz
        [(1, [rr("a")], 2, []), (2, [rr("a")], 3, [])],  # a deleted twice
        [(1, [rr("land", "A", "192.0.2.9")], 2, [])],  # another address than the copy's
    ],
)
def test_ixfr_that_does_not_fit_the_copy_falls_back_to_axfr(
    feed: tuple[Secondary, Primary], caplog: pytest.LogCaptureFixture, steps: list[Step]
) -> None:
    secondary, primary = feed
    final = steps[-1][2]
    primary.serial = final
    primary.answers += [ixfr(steps), axfr(final, [rr("a"), rr("new")])]
    with caplog.at_level(logging.WARNING, logger="blokir"):
        result = secondary.transfer(1.0)
    assert (result.outcome, result.kind) == ("updated", "AXFR"), result
    assert primary.asked == ["IXFR", "AXFR"]
    assert "trying AXFR" in caplog.text
    assert names(secondary.copy) == {"a.rpz.example.", "new.rpz.example."}
    assert secondary.state.serial == final


def test_ixfr_answered_axfr_style_replaces_the_copy(feed: tuple[Secondary, Primary]) -> None:
    secondary, primary = feed
    primary.serial = 2
    primary.answers.append(axfr(2, [rr("x")]))  # RFC 1995 section 4: the whole zone
    result = secondary.transfer(1.0)
    assert (result.outcome, result.kind) == ("updated", "AXFR"), result
    assert primary.asked == ["IXFR"]
    assert names(secondary.copy) == {"x.rpz.example."}


@pytest.mark.parametrize(
    ("answers", "asked"),
    [
        ([cut(ixfr([(1, [rr("a")], 2, [rr("d")])]), 1)], ["IXFR"]),
        ([cut(axfr(2, [rr("x"), rr("y"), rr("z")], per=1), 3)], ["IXFR"]),  # AXFR-style
        ([ixfr([(1, [rr("zzz")], 2, [])]), cut(axfr(2, BASE, per=1), 4)], ["IXFR", "AXFR"]),
    ],
)
def test_a_cut_stream_leaves_the_copy_byte_identical(
    feed: tuple[Secondary, Primary], tmp_path: Path, answers: list[Answer], asked: list[str]
) -> None:
    secondary, primary = feed
    data = secondary.copy.read_bytes()
    state = secondary.state.to_json()
    primary.serial = 2
    primary.answers += answers
    result = secondary.transfer(1.0)
    assert (result.outcome, result.reason) == ("failed", "truncated"), result
    assert primary.asked == asked
    assert secondary.copy.read_bytes() == data
    assert {k: v for k, v in secondary.state.to_json().items() if k in ("serial", "sha256")} == {
        "serial": state["serial"],
        "sha256": state["sha256"],
    }
    assert leftovers(tmp_path) == []


def test_a_copy_written_by_the_previous_version_takes_an_ixfr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies were dnspython's zone.to_file output (apex NS before SOA): they merge too."""
    secondary = Secondary("feed", XfrSource("127.0.0.1", 53, ZONE), tmp_path)
    zone = dns.zone.from_text(
        "@ 60 NS ns\n@ 60 SOA ns hostmaster 7 3600 600 86400 60\nbad 60 CNAME .\n",
        origin=ZONE,
        relativize=False,
    )
    zone.to_file(str(secondary.copy), relativize=False, sorted=True)
    secondary.state.serial = 7
    primary = Primary(monkeypatch, secondary)
    primary.serial = 8
    primary.answers.append(ixfr([(7, [rr("bad")], 8, [rr("worse")])]))
    result = secondary.transfer(1.0)
    assert (result.outcome, result.kind) == ("updated", "IXFR"), result
    got = records(secondary.copy)
    assert got[0][2] == "SOA" and got[0][3].split()[2] == "8"
    assert names(secondary.copy) == {ZONE, "worse.rpz.example."}  # the apex NS stays


# -- the merge on its own ----------------------------------------------------------------------


def base_copy(tmp_path: Path, serial: int) -> Path:
    copy = tmp_path / "feed.list"
    writer = CopyWriter(copy)
    writer.write_rdataset(ORIGIN, soa(serial))
    for rrset in BASE:
        writer.write_rdataset(rrset.name, rrset)
    writer.finish()
    writer.install()
    return copy


def test_merge_refuses_a_copy_at_another_serial(tmp_path: Path) -> None:
    copy = base_copy(tmp_path, 5)
    diff = IxfrDiff(ORIGIN)
    diff.soa = soa(7)
    out = CopyWriter(copy)
    with pytest.raises(DiffMismatch, match="serial 5"):
        merge(copy, diff, 6, out)
    out.discard()
    assert leftovers(tmp_path) == []


def test_a_difference_larger_than_the_limit_is_refused() -> None:
    diff = IxfrDiff(ORIGIN, limit=2)
    diff.add(rr("a").name, rr("a"))
    diff.delete(rr("b").name, rr("b"))
    diff.add(rr("a").name, rr("a", ttl=30))  # the same record: no new entry
    with pytest.raises(DiffMismatch, match="more than 2"):
        diff.add(rr("c").name, rr("c"))


def test_a_transfer_may_take_longer_as_data_keeps_arriving() -> None:
    """The lifetime grows by a second per MIN_RATE bytes received; a primary that trickles runs
    into it long before the per-read timeout."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        budget = _Budget(time.monotonic() + 0.1)
        theirs.sendall(bytes(2 * MIN_RATE))
        assert _read(ours, 2 * MIN_RATE, 1.0, budget) == bytes(2 * MIN_RATE)
        assert 1.9 < budget.left() < 2.2
        budget = _Budget(time.monotonic() + 0.1)
        theirs.sendall(b"ab")  # half of what is awaited, then nothing
        started = time.monotonic()
        with pytest.raises((TimeoutError, dns.exception.Timeout)):
            _read(ours, 4, 5.0, budget)
        assert time.monotonic() - started < 1.0


# -- TSIG over the message stream ---------------------------------------------------------------

KEY = TsigKey("xfr-key.", "hmac-sha256", "c2VjcmV0LWZvci10aGUtdW5pdC10ZXN0cy0wMDE=")


def signed_answer(query: dns.message.Message, parts: list[list[dns.rrset.RRset]]) -> list[bytes]:
    """The messages of an answer to the signed `query`, each signed in one TSIG context
    (RFC 8945 section 5.3.1), as wire."""
    wires = []
    context = None
    for rrsets in parts:
        message = dns.message.make_response(query)
        message.answer = rrsets
        wires.append(message.to_wire(multi=True, tsig_ctx=context))
        context = message.tsig_ctx
    return wires


def take(query: dns.message.Message, wires: list[bytes], tmp_path: Path) -> str:
    """Read `wires` from a socket as a transfer does: its record count, or the failure key."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        for wire in wires:
            theirs.sendall(struct.pack("!H", len(wire)) + wire)
        theirs.shutdown(socket.SHUT_WR)
        manager = CopyTransfer(ORIGIN, tmp_path / "feed.list")
        try:
            apply(manager, query, _messages(ours, query, 1.0, _Budget(time.monotonic() + 5)))
        except Exception as exc:
            return _classify(exc, "AXFR", "AXFR").reason
        finally:
            manager.discard()
    assert manager.full is not None and manager.full.writer is not None
    return f"{manager.full.writer.records} records"


def test_every_message_of_a_signed_transfer_is_checked(tmp_path: Path) -> None:
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(keyring_of([KEY]), dns.name.from_text(KEY.name), algorithm=KEY.algorithm)
    query.to_wire()  # computes the request MAC the answer is signed over
    wires = signed_answer(query, [[soa(1), rr("a")], [rr("b")], [soa(1)]])
    assert take(query, wires, tmp_path) == "3 records"

    forged = bytearray(wires[1])
    forged[forged.index(b"\x01b") + 1] = ord("c")  # b.rpz.example. -> c.rpz.example.
    assert take(query, [wires[0], bytes(forged), wires[2]], tmp_path) == "tsig"

    unsigned = dns.message.make_response(query)
    unsigned.answer = [soa(1)]
    unsigned.tsig = None  # the last message must carry a TSIG
    assert take(query, [wires[0], wires[1], unsigned.to_wire()], tmp_path) == "tsig"
    assert take(query, wires[:2], tmp_path) == "truncated"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "answer",
    [axfr(2, [rr("x"), rr("y")]), ixfr([(1, [rr("a")], 2, [rr("d")])])],
    ids=["AXFR-style", "IXFR"],
)
def test_a_full_disk_is_an_io_failure_and_keeps_the_copy(
    feed: tuple[Secondary, Primary],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: Answer,
) -> None:
    secondary, primary = feed
    data = secondary.copy.read_bytes()

    def full_disk(self: CopyWriter, data: bytes, records: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CopyWriter, "write", full_disk)
    primary.serial = 2
    primary.answers.append(answer)
    result = secondary.transfer(1.0)
    assert (result.outcome, result.reason) == ("failed", "io"), result
    assert "No space left on device" in result.detail
    assert secondary.copy.read_bytes() == data and secondary.state.serial == 1
    assert leftovers(tmp_path) == []
