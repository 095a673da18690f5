"""dnsmasq and Unbound syntaxes: the lines as large list maintainers publish them, their quirks,
the scope and answer each directive means, the reasons for what cannot be enforced, and the
fast path agreeing with the per-line path."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.cli import main
from resolver.compile import NamedEntries, collect_names
from resolver.config import load_config
from resolver.lists import directives, parse_list
from resolver.lists.detect import detect_format
from resolver.lists.model import ListSpec, ParseReport
from resolver.policy import Action, MatchMode, PolicyTable
from tests.unit import test_parsers as parsers


class Parsed(parsers.Parsed):
    def outcome(self) -> tuple[object, ...]:
        r = self.report
        return (self.entries, r.lines, dict(r.rejected), dict(r.skipped))


def parse(fmt: str, data: bytes, chunk: int | None = None, **spec_args: object) -> Parsed:
    spec = ListSpec(name="t", path="t.conf", format=fmt, **spec_args)  # type: ignore[arg-type]
    policies = PolicyTable()
    report = ParseReport(path=spec.path)
    reader = partial(directives.read_chunks, chunk_bytes=chunk) if chunk else directives.read_chunks
    with mock.patch.object(directives, "read_chunks", reader):
        batches = list(parse_list(io.BytesIO(data), spec, policies, report))
    entries = [
        (name.decode("ascii"), parsers.MATCH_NAMES[b.match], policies.get(b.pid).action.value)
        for b in batches
        for name in b.names
    ]
    assert report.entries == len(entries)
    return Parsed(sorted(entries), report, policies)


_all_dirty = parsers._all_dirty


# --- dnsmasq ---------------------------------------------------------------------------------

# A dnsmasq-format blocklist the way the big maintainers publish one: a comment header, one
# `local=/name/` per line; BOM and CRLF from a Windows mirror.
DNSMASQ = (
    "\ufeff# Title: Multi PRO - dnsmasq format\r\n"
    "# Homepage: https://lists.example/dns-blocklists\r\n"
    "# Number of entries: 6\r\n"
    "#\r\n"
    "local=/0-0-0-0-0-0proxy.judi-contoh.example/\r\n"
    "local=/SLOT-Gacor88.example/\r\n"
    "\r\n"
    "local=/ads.example/track.example/\r\n"
    "local=/pinjol-cepat.example.com./\r\n"
    "local=/kasino-daring.テスト/\r\n"
).encode()


def test_dnsmasq_local_list_as_published() -> None:
    got = parse("dnsmasq", DNSMASQ)
    assert got.entries == [
        ("0-0-0-0-0-0proxy.judi-contoh.example", "subtree", "landing"),
        ("ads.example", "subtree", "landing"),
        ("kasino-daring.xn--zckzah", "subtree", "landing"),
        ("pinjol-cepat.example.com", "subtree", "landing"),
        ("slot-gacor88.example", "subtree", "landing"),
        ("track.example", "subtree", "landing"),
    ]
    assert got.report.format == "dnsmasq"
    assert got.report.lines == 10
    assert not got.report.rejected and not got.report.skipped


@pytest.mark.parametrize(
    "line",
    [
        "address=/judi-contoh.example/0.0.0.0",
        "address=/judi-contoh.example/::",
        "address=/judi-contoh.example/#",
        "address=/judi-contoh.example/",
        "address=/judi-contoh.example/127.0.0.1",
        "server=/judi-contoh.example/",
        "local=/judi-contoh.example/",
        "--address=/judi-contoh.example/#",
        "  address=/judi-contoh.example/0.0.0.0   # inline comment after a blank",
    ],
)
def test_dnsmasq_block_directives_cover_the_subtree(line: str) -> None:
    got = parse("dnsmasq", line.encode() + b"\n", action=Action.NXDOMAIN)
    # The answer named in the file gives way to the list's policy, as in a hosts file.
    assert got.entries == [("judi-contoh.example", "subtree", "nxdomain")]


def test_dnsmasq_several_names_per_directive_and_exceptions() -> None:
    data = (
        b"address=/a.judi.example/b.judi.example/c.judi.example/#\n"
        b"server=/ok.a.judi.example/#\n"
        b"address=/*.wild.example/0.0.0.0\n"
    )
    got = parse("dnsmasq", data, match=MatchMode.EXACT)
    assert got.entries == [
        ("a.judi.example", "subtree", "landing"),
        ("b.judi.example", "subtree", "landing"),
        ("c.judi.example", "subtree", "landing"),
        ("ok.a.judi.example", "subtree", "allow"),
        ("wild.example", "below", "landing"),
    ]


@pytest.mark.parametrize(
    ("line", "kind", "reason"),
    [
        ("server=/corp.example/10.0.0.53", "skipped", "dnsmasq_forward"),
        ("server=/corp.example/10.0.0.53#5353", "skipped", "dnsmasq_forward"),
        ("server=1.1.1.1", "skipped", "dnsmasq_forward"),
        ("address=/#/0.0.0.0", "skipped", "dnsmasq_all_domains"),
        ("address=/ads*.example/#", "skipped", "dnsmasq_wildcard"),
        ("conf-file=/etc/dnsmasq.d/extra.conf", "skipped", "dnsmasq_other_option"),
        ("cache-size=10000", "skipped", "dnsmasq_other_option"),
        ("judi-contoh.example", "rejected", "dnsmasq_syntax"),
        ("0.0.0.0 judi-contoh.example", "rejected", "dnsmasq_syntax"),
        ("local=", "rejected", "dnsmasq_no_domain"),
        ("address=//0.0.0.0", "rejected", "dnsmasq_no_domain"),
        ("address=/judi-contoh.example/landing-page", "rejected", "dnsmasq_bad_target"),
        ("local=/bad!name.example/", "rejected", "bad_character"),
        ("local=/localhost/", "rejected", "no_dot"),
    ],
)
def test_dnsmasq_reasons_name_the_real_problem(line: str, kind: str, reason: str) -> None:
    got = parse("dnsmasq", line.encode() + b"\r\n")
    assert got.entries == []
    assert dict(getattr(got.report, kind)) == {reason: 1}
    assert got.report.examples[reason] == [f"t.conf:1: {line}"]


_DNSMASQ_LINES = st.tuples(
    st.sampled_from(["local=/", "server=/", "address=/", "address=", "--local=/", "#", ""]),
    st.sampled_from(["a.example", "B.Example.", "x..y", "nodot", "*.w.example", "", "ü.example"]),
    st.sampled_from(["/", "/#", "/0.0.0.0", "/::", "/10.0.0.1", "/b.example/", "", "/\r"]),
).map(lambda t: "".join(t).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_DNSMASQ_LINES, max_size=15), st.sampled_from([None, 4, 23]))
def test_dnsmasq_fast_path_agrees_with_per_line_path(lines: list[bytes], chunk: int | None) -> None:
    data = b"\n".join(lines) + b"\n"
    fast = parse("dnsmasq", data, chunk=chunk)
    with mock.patch.object(directives, "split_clean", _all_dirty):
        slow = parse("dnsmasq", data)
    assert fast.outcome() == slow.outcome()


# --- Unbound ---------------------------------------------------------------------------------

UNBOUND = (
    "\ufeff# Title: Multi PRO - unbound format\r\n"
    "server:\r\n"
    '  local-zone: "judi-contoh.example." always_nxdomain\r\n'
    '  local-zone: "Slot-Gacor88.example." always_nxdomain\r\n'
    "\r\n"
    '  local-zone: "track.example" redirect\r\n'
    '  local-data: "track.example. A 0.0.0.0"\r\n'
    '  local-data: "pixel.example. 3600 IN AAAA ::"   # one name only\r\n'
    "  local-zone: pinjol.example. always_refuse\r\n"
    '  local-zone: "toko-palsu.example." static\r\n'
    '  local-zone: "iklan.example." inform_deny\r\n'
    '  local-zone: "null.example." always_null\r\n'
    '  local-zone: "nodata.example." always_nodata\r\n'
).encode()


def test_unbound_zone_types_keep_their_answers() -> None:
    got = parse("unbound", UNBOUND, action=Action.REFUSED, match=MatchMode.EXACT)
    assert got.entries == [
        ("iklan.example", "subtree", "drop"),
        ("judi-contoh.example", "subtree", "nxdomain"),
        ("nodata.example", "subtree", "nodata"),
        ("null.example", "subtree", "landing"),
        ("pinjol.example", "subtree", "refused"),
        ("pixel.example", "self", "landing"),
        ("slot-gacor88.example", "subtree", "nxdomain"),
        ("toko-palsu.example", "subtree", "nxdomain"),
        ("track.example", "self", "landing"),
        ("track.example", "subtree", "landing"),
    ]
    assert got.report.format == "unbound"
    assert not got.report.rejected and not got.report.skipped
    null = [got.policies.get(p) for p in range(1, len(got.policies) + 1)]
    assert any(p.landing_ipv4 == ("0.0.0.0",) and p.landing_ipv6 == ("::",) for p in null)


@pytest.mark.parametrize("zone_type", ["transparent", "typetransparent", "always_transparent"])
def test_unbound_pass_through_zone_is_an_exception(zone_type: str) -> None:
    data = (
        f'local-zone: "judi.example." always_nxdomain\nlocal-zone: "ok.judi.example." {zone_type}\n'
    )
    got = parse("unbound", data.encode())
    assert got.entries == [
        ("judi.example", "subtree", "nxdomain"),
        ("ok.judi.example", "subtree", "allow"),
    ]


def test_unbound_local_data_wins_at_its_own_name() -> None:
    """`static` with local data: the name answers its data (landing), the names below NXDOMAIN.
    The landing policy has the lower id, which wins a tie at one name when the index is built."""
    data = b'local-zone: "t.example." static\nlocal-data: "t.example. A 0.0.0.0"\n'
    got = parse("unbound", data)
    pids = range(1, len(got.policies) + 1)
    landing = min(p for p in pids if got.policies.get(p).action is Action.LANDING)
    nxdomain = min(p for p in pids if got.policies.get(p).action is Action.NXDOMAIN)
    assert landing < nxdomain
    assert got.entries == [("t.example", "self", "landing"), ("t.example", "subtree", "nxdomain")]


@pytest.mark.parametrize(
    ("line", "kind", "reason"),
    [
        ('local-zone: "localhost." nodefault', "skipped", "unbound_not_blocking"),
        ('local-data: "c.example. CNAME landing.example."', "skipped", "unbound_data_type"),
        ("local-data: 't.example. TXT \"blocked\"'", "skipped", "unbound_data_type"),
        ('local-data-ptr: "192.0.2.1 t.example"', "skipped", "unbound_other_option"),
        ('include: "/etc/unbound/extra.conf"', "skipped", "unbound_other_option"),
        ('local-zone: "x.example." deflect', "rejected", "unbound_zone_type"),
        ('local-zone: "x.example."', "rejected", "unbound_syntax"),
        ("judi-contoh.example", "rejected", "unbound_syntax"),
        ('local-data: "x.example. A"', "rejected", "unbound_bad_data"),
        ('local-data: "x.example. A ::"', "rejected", "unbound_bad_data"),
        ('local-zone: "*.x.example." always_nxdomain', "rejected", "unbound_not_a_name"),
        ('local-zone: "bad!name.example." always_nxdomain', "rejected", "bad_character"),
    ],
)
def test_unbound_reasons_name_the_real_problem(line: str, kind: str, reason: str) -> None:
    got = parse("unbound", line.encode() + b"\n")
    assert got.entries == []
    assert dict(getattr(got.report, kind)) == {reason: 1}


_UNBOUND_LINES = st.tuples(
    st.sampled_from(['local-zone: "', 'local-data: "', "  local-zone: ", "local-zone:", "#"]),
    st.sampled_from(["a.example", "B.Example.", "x..y", "*.w.example", "", "1.2.3.4"]),
    st.sampled_from(
        ['" always_nxdomain', '" static', '" bogus', ' A 0.0.0.0"', ' AAAA ::"', ' A ::"', '"']
    ),
).map(lambda t: "".join(t).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_UNBOUND_LINES, max_size=15), st.sampled_from([None, 4, 23]))
def test_unbound_fast_path_agrees_with_per_line_path(lines: list[bytes], chunk: int | None) -> None:
    data = b"\n".join(lines) + b"\n"
    fast = parse("unbound", data, chunk=chunk)
    with mock.patch.object(directives, "split_clean", _all_dirty):
        slow = parse("unbound", data)
    assert fast.outcome() == slow.outcome()


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (DNSMASQ, "dnsmasq"),
        (b"address=/a.example/#\naddress=/b.example/0.0.0.0\n", "dnsmasq"),
        (b"# x\nserver=/a.example/\n", "dnsmasq"),
        (UNBOUND, "unbound"),
        (b'local-data: "a.example A 0.0.0.0"\n', "unbound"),
        (b"a.example\nb.example\nlocal=/c.example/\n", "plain"),  # the plurality wins
    ],
)
def test_detect_directive_formats(head: bytes, fmt: str) -> None:
    assert detect_format(head, "list.conf") == fmt


@pytest.mark.parametrize(
    ("file", "fmt", "lines", "entries", "skipped"),
    [
        (
            "sample-dnsmasq.conf",
            "dnsmasq",
            23,
            10,
            {"dnsmasq_forward": 1, "dnsmasq_all_domains": 1, "dnsmasq_other_option": 1},
        ),
        (
            "sample-unbound.conf",
            "unbound",
            19,
            9,
            {"unbound_data_type": 1},
        ),
    ],
)
def test_sample_lists(
    file: str, fmt: str, lines: int, entries: int, skipped: dict[str, int]
) -> None:
    data = (parsers.SAMPLES / file).read_bytes()
    assert detect_format(data, file) == fmt
    got = parse(fmt, data)
    assert (got.report.lines, got.report.entries) == (lines, entries)
    assert not got.report.rejected and dict(got.report.skipped) == skipped


@pytest.mark.parametrize("fmt", ["dnsmasq", "unbound"])
def test_blokirs_own_export_reads_back_to_the_same_verdicts(tmp_path: Path, fmt: str) -> None:
    """`blokir export` writes dnsmasq and Unbound configs; read back as lists they must block and
    allow exactly the names the original lists do (answers may be approximated by the export)."""
    samples = parsers.SAMPLES
    config = tmp_path / "blokir.toml"
    config.write_text(
        f'[blocking]\nindex_path = "{tmp_path / "i.blkx"}"\n'
        f'[[allowlists]]\nname = "allow"\npath = "{samples / "sample-allow.txt"}"\n'
        f'[[lists]]\nname = "d"\npath = "{samples / "sample-domains.txt"}"\n'
        f'[[lists]]\nname = "h"\npath = "{samples / "sample-hosts.txt"}"\naction = "nxdomain"\n'
    )
    exported = tmp_path / f"export.{fmt}"
    assert main(["export", "-c", str(config), "--format", fmt, "-o", str(exported)]) == 0
    original = collect_names(load_config(config).list_specs())
    back = collect_names([ListSpec(name="back", path=str(exported))])
    assert back.lists[0].report.format == fmt

    def verdicts(named: NamedEntries) -> dict[bytes, tuple[bool | None, bool | None]]:
        def allowed(pid: int) -> bool | None:
            return None if pid == 0 else named.policies.get(pid).is_allow

        return {n: (allowed(s), allowed(b)) for n, (s, b) in named.entries.items()}

    assert verdicts(back) == verdicts(original)
