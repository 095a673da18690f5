"""Hosts and AdBlock parsers, format detection, golden files and the sample lists.

Golden files: tests/data/lists/<format>/quirks.txt holds every quirk a real list has, and
quirks.expected.json the hand-checked result: the sorted (name, match, action) entries, the report
counters and the IP entries. They are compared exactly, also with tiny read chunks so that every
chunk boundary falls somewhere inside the file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.lists import adblock, chunks, hosts, plain
from resolver.lists.adblock import parse_adblock
from resolver.lists.detect import detect_format
from resolver.lists.hosts import parse_hosts
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.plain import parse_plain
from resolver.policy import (
    MATCH_BELOW,
    MATCH_SELF,
    MATCH_SUBTREE,
    Action,
    Ede,
    MatchMode,
    Policy,
    PolicyTable,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "lists"
SAMPLES = ROOT / "blocklists"

Parser = Callable[[BinaryIO, ListSpec, PolicyTable, ParseReport], Iterator[Batch]]
PARSERS: dict[str, Parser] = {"plain": parse_plain, "hosts": parse_hosts, "adblock": parse_adblock}
MODULES = {"plain": plain, "hosts": hosts, "adblock": adblock}
MATCH_NAMES = {MATCH_SUBTREE: "subtree", MATCH_SELF: "self", MATCH_BELOW: "below"}

Entry = tuple[str, str, str]


class Parsed:
    def __init__(self, entries: list[Entry], report: ParseReport, policies: PolicyTable) -> None:
        self.entries = entries
        self.report = report
        self.policies = policies


def parse(fmt: str, data: bytes, spec: ListSpec | None = None, chunk: int | None = None) -> Parsed:
    spec = spec or ListSpec(name="test", path="test.txt")
    policies = PolicyTable()
    report = ParseReport(path=spec.path)
    module = MODULES[fmt]
    reader = partial(chunks.read_chunks, chunk_bytes=chunk) if chunk else chunks.read_chunks
    with mock.patch.object(module, "read_chunks", reader):
        batches = list(PARSERS[fmt](io.BytesIO(data), spec, policies, report))
    entries = [
        (name.decode("ascii"), MATCH_NAMES[b.match], policies.get(b.pid).action.value)
        for b in batches
        for name in b.names
    ]
    assert report.entries == len(entries)
    return Parsed(sorted(entries), report, policies)


# --- golden files ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 5, 61])
@pytest.mark.parametrize("fmt", ["plain", "hosts", "adblock"])
def test_golden(fmt: str, chunk: int | None) -> None:
    expected = json.loads((GOLDEN / fmt / "quirks.expected.json").read_text("utf-8"))
    spec = ListSpec(
        name="golden",
        path=f"{fmt}/quirks.txt",
        action=Action(expected["spec"]["action"]),
        match=MatchMode(expected["spec"]["match"]),
    )
    got = parse(fmt, (GOLDEN / fmt / "quirks.txt").read_bytes(), spec, chunk)
    assert got.report.format == fmt
    assert [list(e) for e in got.entries] == expected["names"]
    assert got.report.lines == expected["lines"]
    assert got.report.entries == expected["entries"]
    assert dict(got.report.rejected) == expected["rejected"]
    assert dict(got.report.skipped) == expected["skipped"]
    assert sorted(got.report.ip_entries) == expected["ip_entries"]
    assert expected["names"] == sorted(expected["names"])  # the file itself stays sorted


def test_golden_inputs_have_the_byte_level_quirks() -> None:
    for fmt in ("plain", "hosts", "adblock"):
        data = (GOLDEN / fmt / "quirks.txt").read_bytes()
        assert data.startswith(b"\xef\xbb\xbf"), fmt
        assert b"\r\n" in data and b"\t" in data and b"\xff\xfe" in data, fmt
        assert not data.endswith(b"\n"), fmt  # the last line has no newline


# --- hosts -----------------------------------------------------------------------------------


def test_hosts_basic_and_policy() -> None:
    spec = ListSpec(name="h", path="h", category="judi", action=Action.NXDOMAIN, list_index=3)
    got = parse("hosts", b"0.0.0.0 a.example b.example\n127.0.0.1 c.example\n:: d.example\n", spec)
    assert [e[0] for e in got.entries] == ["a.example", "b.example", "c.example", "d.example"]
    assert got.policies.policies == [
        Policy(
            list_name="h", category="judi", action=Action.NXDOMAIN, ede=Ede.BLOCKED, list_index=3
        )
    ]


def test_hosts_local_names_are_skipped_with_line_numbers() -> None:
    data = (
        b"0.0.0.0 a.example\n"
        b"0.0.0.0 localhost.localdomain\n"  # clean after the bulk strip: caught anyway
        b"0.0.0.0 LOCALHOST.LOCALDOMAIN\n"
        b"127.0.0.1 localhost.localdomain\n"
        b"::1 ip6-localhost ip6-loopback\n"
        b"0.0.0.0 0.0.0.0\n"
        b":: ::\n"
        b"0.0.0.0 \n"
    )
    got = parse("hosts", data)
    assert got.entries == [("a.example", "subtree", "landing")]
    assert dict(got.report.skipped) == {"hosts_local_name": 7}
    assert dict(got.report.rejected) == {"hosts_no_name": 1}
    lines = sorted(int(e.split(":")[1]) for e in got.report.examples["hosts_local_name"])
    assert lines == [2, 3, 4, 5, 5]  # examples keep 5 per reason
    assert got.report.examples["hosts_no_name"] == ["test.txt:8: 0.0.0.0"]


def test_hosts_mixed_list_accepts_bare_names() -> None:
    got = parse("hosts", b"0.0.0.0 a.example\nb.example\nc.example, d.example\nnot a name\n")
    assert [e[0] for e in got.entries] == ["a.example", "b.example", "c.example", "d.example"]
    assert dict(got.report.rejected) == {"no_dot": 3}


def test_hosts_fast_path_takes_the_bulk_of_a_big_file() -> None:
    lines = [f"0.0.0.0 host{i}.judi-contoh.example" for i in range(20_000)]
    lines[100] = "127.0.0.1 localhost.localdomain"
    lines[15_000] = "0.0.0.0\tTab-Host.example # comment"
    data = ("\n".join(lines) + "\n").encode()
    calls = 0
    original = hosts._HostsLines.line

    def counting(self: Any, raw: bytes, line_no: int) -> None:
        nonlocal calls
        calls += 1
        original(self, raw, line_no)

    with mock.patch.object(hosts._HostsLines, "line", counting):
        got = parse("hosts", data)
    assert calls == 2  # only the two odd lines took the per-line path
    assert got.report.entries == 19_999
    assert ("tab-host.example", "subtree", "landing") in got.entries
    assert got.report.examples["hosts_local_name"] == [
        "test.txt:101: 127.0.0.1 localhost.localdomain"
    ]


def test_strip_null_prefix_keeps_line_offsets() -> None:
    chunk = b"0.0.0.0 a.example\n0.0.0.0\tb.example\n127.0.0.1 c\n0.0.0.0 0.0.0.0 d\nx 0.0.0.0 e\n"
    stripped = hosts.strip_null_prefix(chunk)
    assert stripped == b"a.example\nb.example\n127.0.0.1 c\n0.0.0.0 d\nx 0.0.0.0 e\n"
    assert stripped.count(b"\n") == chunk.count(b"\n")


# Lines built from the pieces hosts files are made of, to check the bulk fast path against the
# per-line path: forcing every line through `_HostsLines.line` must give the same result.
_HOSTS_PREFIX = ["0.0.0.0 ", "0.0.0.0\t", "0.0.0.0  ", "127.0.0.1 ", ":: ", "", "# ", " "]
_HOSTS_NAME = [
    "a.example", "B.Example", "localhost.localdomain", "LOCALHOST.localdomain", "localhost",
    "0.0.0.0", "1.2.3.4", "x..y", "*.w.example", "ü.example", "ok_.example", "c.ex_ample", "",
    "a.example b.example", "-h.example", "nodot",
]  # fmt: skip
_HOSTS_SUFFIX = ["", " # c", ".", " ", "\r", "\t"]
HOSTS_LINES = st.one_of(
    st.tuples(
        st.sampled_from(_HOSTS_PREFIX),
        st.sampled_from(_HOSTS_NAME),
        st.sampled_from(_HOSTS_SUFFIX),
    ).map(lambda t: "".join(t).encode()),
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
)


def _all_dirty(chunk: bytes) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """`split_clean` with no fast path: every non-blank line goes to the per-line code."""
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    return [], [(i, line) for i, line in enumerate(lines) if line]


def _outcome(got: Parsed) -> tuple[object, ...]:
    report = got.report
    return (
        got.entries,
        report.lines,
        dict(report.rejected),
        dict(report.skipped),
        sorted(report.ip_entries),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(HOSTS_LINES, max_size=15), st.booleans(), st.sampled_from([None, 4, 23]))
def test_hosts_fast_path_agrees_with_per_line_path(
    lines: list[bytes], final_newline: bool, chunk: int | None
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    fast = parse("hosts", data, chunk=chunk)
    with mock.patch.object(hosts, "split_clean", _all_dirty):
        slow = parse("hosts", data)
    assert _outcome(fast) == _outcome(slow)


def test_hosts_exact_match_mode() -> None:
    spec = ListSpec(name="h", path="h", match=MatchMode.EXACT)
    got = parse("hosts", b"0.0.0.0 a.example *.b.example\n0.0.0.0 c.example\n", spec)
    assert got.entries == [
        ("a.example", "self", "landing"),
        ("b.example", "below", "landing"),
        ("c.example", "self", "landing"),
    ]


# --- adblock ---------------------------------------------------------------------------------


def test_adblock_exception_policy() -> None:
    spec = ListSpec(name="ab", path="ab", category="judi", ede=Ede.CENSORED, list_index=2)
    got = parse("adblock", b"||a.example^\n@@||b.a.example^\n", spec)
    assert got.entries == [("a.example", "subtree", "landing"), ("b.a.example", "subtree", "allow")]
    block, allow = got.policies.policies
    assert block.action is Action.LANDING and block.ede is Ede.CENSORED
    assert allow == Policy(
        list_name="ab", category="judi", action=Action.ALLOW, ede=Ede.NONE, list_index=2
    )


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("||example.com/ads", "adblock_path"),
        ("||example.com^/ads", "adblock_path"),
        ("||example.com^*ads", "adblock_path"),
        ("||example.com:8080^", "adblock_path"),
        ("||example.com^$third-party", "adblock_options"),
        ("||example.com^$important", "adblock_options"),
        ("@@||example.com^$document", "adblock_options"),
        ("##.ad-banner", "adblock_cosmetic"),
        ("example.com##.ad", "adblock_cosmetic"),
        ("example.com#@#.ad", "adblock_cosmetic"),
        ("example.com#?#div:has(> .ad)", "adblock_cosmetic"),
        ("example.com#$#body { color: red }", "adblock_cosmetic"),
        ("example.com#%#//scriptlet('abort-on-property-read', 'x')", "adblock_cosmetic"),
        ("example.com$$script[tag-content='ad']", "adblock_cosmetic"),
        ("/ads[0-9]+\\.example/", "adblock_regex"),
        ("/^ad\\./$third-party", "adblock_regex"),
        ("@@/^ok\\./", "adblock_regex"),
        ("-ads-", "adblock_unanchored"),
        ("example.com", "adblock_unanchored"),
        ("|https://example.com/", "adblock_unanchored"),
        ("||example.com", "adblock_unanchored"),
        ("0.0.0.0 example.com", "adblock_unanchored"),
        ("$important", "adblock_unanchored"),
        ("||ads*.example.com^", "adblock_glob"),
        ("||*example.com^", "adblock_glob"),
        ("@@||192.0.2.1^", "adblock_ip_exception"),
    ],
)
def test_adblock_skips_are_counted(rule: str, reason: str) -> None:
    got = parse("adblock", rule.encode() + b"\n")
    assert got.entries == []
    assert dict(got.report.skipped) == {reason: 1}
    assert not got.report.rejected and not got.report.ip_entries


@pytest.mark.parametrize(
    ("rule", "entry"),
    [
        ("||Example.COM^", ("example.com", "subtree", "landing")),
        ("||example.com^|", ("example.com", "subtree", "landing")),
        ("||*.example.com^", ("example.com", "subtree", "landing")),
        ("||example.com.^", ("example.com", "subtree", "landing")),
        ("  ||example.com^  ", ("example.com", "subtree", "landing")),
        ("||example.com^ # a note", ("example.com", "subtree", "landing")),
        ("@@||example.com^|", ("example.com", "subtree", "allow")),
        ("||bücher.example^", ("xn--bcher-kva.example", "subtree", "landing")),
    ],
)
def test_adblock_accepted(rule: str, entry: Entry) -> None:
    got = parse("adblock", rule.encode() + b"\n")
    assert got.entries == [entry]
    assert not got.report.skipped and not got.report.rejected


@pytest.mark.parametrize(
    "line", ["! comment", "# comment", "[Adblock Plus 2.0]", "[AdGuard]", "", "   "]
)
def test_adblock_comments_and_headers_are_ignored(line: str) -> None:
    got = parse("adblock", line.encode() + b"\n")
    assert got.entries == [] and not got.report.skipped and not got.report.rejected


def test_adblock_ip_rules() -> None:
    got = parse("adblock", b"||192.0.2.1^\n||[2001:db8::1]^\n||*.198.51.100.7^\n")
    assert got.entries == []
    assert got.report.ip_entries == ["192.0.2.1", "2001:db8::1", "198.51.100.7"]


def test_adblock_exact_match_mode() -> None:
    spec = ListSpec(name="ab", path="ab", match=MatchMode.EXACT)
    got = parse("adblock", b"||a.example^\n||*.b.example^\n@@||*.c.b.example^\n", spec)
    assert got.entries == [
        ("a.example", "self", "landing"),
        ("b.example", "below", "landing"),
        ("c.b.example", "below", "allow"),
    ]


_ADBLOCK_LINES = st.one_of(
    st.tuples(
        st.sampled_from(["||", "@@||", "", "|", "||*.", " ||", "##"]),
        st.sampled_from(
            ["a.example", "B.Example", "1.2.3.4", "x..y", "ü.example", "ok_.example", "nodot", ""]
        ),
        st.sampled_from(["^", "^|", "", "^$important", "/p", "^ # c", ".^", "^\r", "*^"]),
    ).map(lambda t: "".join(t).encode()),
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ADBLOCK_LINES, max_size=15), st.sampled_from([None, 4, 23]))
def test_adblock_fast_path_agrees_with_per_line_path(lines: list[bytes], chunk: int | None) -> None:
    data = b"\n".join(lines) + b"\n"
    fast = parse("adblock", data, chunk=chunk)
    with mock.patch.object(adblock, "split_clean", _all_dirty):
        slow = parse("adblock", data)
    assert _outcome(fast) == _outcome(slow)


# --- format detection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "path", "fmt"),
    [
        (b"a.example\nb.example\n", "list.txt", "plain"),
        (b"", "list.txt", "plain"),
        (b"# only comments\n\n", "list.txt", "plain"),
        (b"a.example\n" * 50 + b"0.0.0.0 b.example\n" * 3, "list.txt", "plain"),
        (b"0.0.0.0 a.example\n" * 50 + b"junk\n<html>\n", "list.txt", "hosts"),
        (b"# hosts\n127.0.0.1 localhost\n::1 localhost\n0.0.0.0 a.example\n", "h", "hosts"),
        (b"||a.example^\n@@||b.example^\n", "list.txt", "adblock"),
        (b"! Title: x\n! Expires: 1 day\n||a.example^\n", "list.txt", "adblock"),
        (b"[Adblock Plus 2.0]\na.example\nb.example\nc.example\n", "list.txt", "adblock"),
        (b"$TTL 300\na.example CNAME .\n", "list.txt", "rpz"),
        (b"; zone\n$ORIGIN rpz.example.\n", "list.txt", "rpz"),
        (b"@ 3600 IN SOA ns. admin. 1 3600 600 86400 60\n", "list.txt", "rpz"),
        (b"a.example CNAME .\n*.a.example CNAME .\nb.example 300 IN A 10.0.0.1\n", "x", "rpz"),
        (b"a.example\n", "feed.RPZ", "rpz"),
        (b"a.example\n", "db.policy.zone", "rpz"),
        (b"a.example a\nb.example ns\n", "list.txt", "plain"),  # no record data after the type
        (b"\xef\xbb\xbf0.0.0.0 a.example\r\n0.0.0.0 b.example\r\n", "list.txt", "hosts"),
        (b"\xff\xfe\xfd\n" * 3 + b"a.example\n" * 5, "list.txt", "plain"),
    ],
)
def test_detect_format(head: bytes, path: str, fmt: str) -> None:
    assert detect_format(head, path) == fmt


def test_detect_format_uses_the_first_lines_only() -> None:
    head = b"||a.example^\n" * 250 + b"0.0.0.0 b.example\n" * 400
    assert detect_format(head, "x") == "adblock"
    truncated = (b"0.0.0.0 a.example\n" * 5000)[: 64 << 10]
    assert detect_format(truncated, "x") == "hosts"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["list.txt", "x.rpz", "hosts", ""]))
def test_detect_format_never_fails(head: bytes, path: str) -> None:
    assert detect_format(head, path) in ("plain", "hosts", "adblock", "rpz", "dnsmasq", "unbound")


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("plain/quirks.txt", "plain"),
        ("hosts/quirks.txt", "hosts"),
        ("adblock/quirks.txt", "adblock"),
    ],
)
def test_detect_golden(path: str, fmt: str) -> None:
    assert detect_format((GOLDEN / path).read_bytes()[: 64 << 10], path) == fmt


# --- sample lists for operators --------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "fmt", "action", "lines", "entries", "rejected", "skipped", "ips"),
    [
        ("sample-domains.txt", "plain", Action.LANDING, 45, 39, {"bad_character": 1}, {}, 1),
        ("sample-hosts.txt", "hosts", Action.LANDING, 22, 14, {}, {"hosts_local_name": 6}, 0),
        (
            "sample-adblock.txt",
            "adblock",
            Action.LANDING,
            20,
            10,
            {},
            {
                "adblock_path": 1,
                "adblock_options": 1,
                "adblock_cosmetic": 1,
                "adblock_regex": 1,
                "adblock_unanchored": 1,
            },
            0,
        ),
        ("sample-allow.txt", "plain", Action.ALLOW, 7, 4, {}, {}, 0),
    ],
)
def test_sample_lists(
    file: str,
    fmt: str,
    action: Action,
    lines: int,
    entries: int,
    rejected: dict[str, int],
    skipped: dict[str, int],
    ips: int,
) -> None:
    data = (SAMPLES / file).read_bytes()
    assert detect_format(data[: 64 << 10], file) == fmt
    got = parse(fmt, data, ListSpec(name=file, path=file, action=action))
    assert (got.report.lines, got.report.entries) == (lines, entries)
    assert dict(got.report.rejected) == rejected
    assert dict(got.report.skipped) == skipped
    assert len(got.report.ip_entries) == ips


def test_sample_allowlist_sits_under_blocked_parents() -> None:
    blocked = {e[0] for e in parse("plain", (SAMPLES / "sample-domains.txt").read_bytes()).entries}
    allowed = parse("plain", (SAMPLES / "sample-allow.txt").read_bytes()).entries
    for name, _, _ in allowed:
        parents = {name.split(".", i)[-1] for i in range(1, name.count(".") + 1)}
        assert parents & blocked, name


def test_every_configurable_format_has_a_parser() -> None:
    """FORMATS is written out (the parsers are imported on first use): each name but "auto"
    must load the parser of that format, and parse_list must dispatch to it."""
    from resolver.lists import FORMATS, parse_list, parser_for
    from resolver.lists.dnsmasq import parse_dnsmasq
    from resolver.lists.rpz import parse_rpz
    from resolver.lists.unbound import parse_unbound

    assert FORMATS[0] == "auto"
    expected = {**PARSERS, "rpz": parse_rpz, "dnsmasq": parse_dnsmasq, "unbound": parse_unbound}
    assert set(FORMATS[1:]) == set(expected)
    for fmt in FORMATS[1:]:
        assert parser_for(fmt) is expected[fmt]
    report = ParseReport(path="l.txt")
    spec = ListSpec(name="l", path="l.txt", format="auto")
    batches = list(parse_list(io.BytesIO(b"0.0.0.0 ads.example\n"), spec, PolicyTable(), report))
    assert report.format == "hosts"
    assert [n for b in batches for n in b.names] == [b"ads.example"]
