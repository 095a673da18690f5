"""RPZ zone files: golden files, a cross-check against dnspython's zone reader, fast path versus
slow path, and the sample list operators are pointed at."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.lists.model import ListSpec, ParseReport
from resolver.lists.rpz import MAX_GROUP_LINES, parse_rpz
from resolver.policy import MATCH_BELOW, MATCH_IP, MATCH_SELF, Action, Ede, MatchMode, PolicyTable

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "lists" / "rpz"
SAMPLE = ROOT / "blocklists" / "sample-rpz.rpz"
GOLDEN_INPUTS = sorted(GOLDEN.glob("*.rpz"))

MATCH_NAMES = {MATCH_SELF: "self", MATCH_BELOW: "below", MATCH_IP: "ip"}

# Deliberately unlike the defaults of an RPZ policy: the parser must not use them.
SPEC = ListSpec(
    name="contoh-rpz",
    path="contoh.rpz",
    category="gambling",
    action=Action.REFUSED,
    ede=Ede.CENSORED,
    match=MatchMode.EXACT,
    format="rpz",
    landing_ipv4=("203.0.113.1",),
    list_index=3,
)

Entry = tuple[str, str, str, list[str], list[str]]


@dataclass
class Parsed:
    report: ParseReport
    policies: PolicyTable
    names: list[Entry] = field(default_factory=list)

    def triggers(self) -> set[tuple[str, str, str]]:
        return {(name, match, action) for name, match, action, _, _ in self.names}


def parse(data: bytes | str, chunk_bytes: int | None = None) -> Parsed:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    policies = PolicyTable()
    report = ParseReport(path=SPEC.path)
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    parsed = Parsed(report, policies)
    for batch in parse_rpz(io.BytesIO(raw), SPEC, policies, report, **kwargs):
        policy = policies.get(batch.pid)
        for name in batch.names:
            parsed.names.append(
                (
                    name.decode("ascii"),
                    MATCH_NAMES[batch.match],
                    policy.action.value,
                    list(policy.landing_ipv4),
                    list(policy.landing_ipv6),
                )
            )
    parsed.names.sort()
    return parsed


def summary(parsed: Parsed) -> dict[str, object]:
    report = parsed.report
    return {
        "lines": report.lines,
        "entries": report.entries,
        "rejected": dict(report.rejected),
        "skipped": dict(report.skipped),
        "ip_entries": report.ip_entries,
        "names": [list(entry) for entry in parsed.names],
    }


# -- golden files --------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN_INPUTS, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text())
    parsed = parse(path.read_bytes())
    assert parsed.report.format == "rpz"
    assert summary(parsed) == expected
    assert parsed.report.entries == len(parsed.names)


@pytest.mark.parametrize("path", GOLDEN_INPUTS, ids=lambda p: p.stem)
def test_golden_does_not_depend_on_chunk_size(path: Path) -> None:
    # Tiny chunks put chunk boundaries inside parentheses, between owners and inherited lines,
    # and split every fast-path batch.
    data = path.read_bytes()
    assert summary(parse(data, chunk_bytes=7)) == summary(parse(data))


def test_golden_inputs_cover_the_syntax() -> None:
    assert {p.stem for p in GOLDEN_INPUTS} >= {
        "feed_style",
        "origin",
        "local_data",
        "garbage",
        "idn_crlf_bom",
    }
    # A checkout that rewrote line endings or dropped the BOM would pass the golden test for the
    # wrong reason.
    raw = (GOLDEN / "idn_crlf_bom.rpz").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == raw.count(b"\n") > 0


def test_policies_follow_the_records_not_the_list() -> None:
    parsed = parse((GOLDEN / "feed_style.rpz").read_bytes())
    by_action = {p.action: p for p in parsed.policies.policies}
    assert set(by_action) == {
        Action.NXDOMAIN,
        Action.NODATA,
        Action.DROP,
        Action.ALLOW,
        Action.LANDING,
    }
    for policy in parsed.policies.policies:
        assert policy.list_name == "contoh-rpz"
        assert policy.category == "gambling"
        assert policy.list_index == 3
        assert policy.ede is (Ede.NONE if policy.action is Action.ALLOW else Ede.CENSORED)
        if policy.action is not Action.LANDING:
            assert policy.landing_ipv4 == () and policy.landing_ipv6 == ()
    landing = by_action[Action.LANDING]
    assert landing.landing_ipv4 == ("192.0.2.10",)
    assert landing.landing_ipv6 == ("2001:db8::10",)


def test_examples_point_at_the_line() -> None:
    parsed = parse((GOLDEN / "garbage.rpz").read_bytes())
    examples = parsed.report.examples
    assert examples["include_unsupported"] == ["contoh.rpz:4: $INCLUDE /etc/passwd"]
    assert examples["no_owner"] == ["contoh.rpz:1: CNAME ."]
    assert examples["unbalanced_parens"] == [
        "contoh.rpz:28: ) stray.example CNAME .",
        'contoh.rpz:33: open.example TXT ( "never closed"',
    ]
    assert examples["hyphen"] == ["contoh.rpz:14: -hyphen.example CNAME ."]


# -- behaviour not worth a golden file --------------------------------------------------------


def test_unclosed_parenthesis_swallows_a_bounded_number_of_lines() -> None:
    body = [f"name{i}.example CNAME ." for i in range(3 * MAX_GROUP_LINES)]
    parsed = parse("\n".join(["broken.example TXT ( oops", *body]) + "\n")
    assert dict(parsed.report.rejected) == {"unbalanced_parens": 1}
    assert parsed.report.entries == len(body)


def test_parenthesis_spanning_chunks_in_a_large_file() -> None:
    body = [f"name{i}.example CNAME ." for i in range(5000)]
    text = "\n".join(["@ SOA a. b. (", "1", "2", "3", "4", "5 )", *body, "z.example TXT ( a", ")"])
    parsed = parse(text, chunk_bytes=1000)
    assert parsed.report.entries == 5000
    assert dict(parsed.report.skipped) == {"rpz_unsupported_type": 1}
    assert not parsed.report.rejected


def test_inherited_owner_follows_a_fast_path_line() -> None:
    parsed = parse("judi.example CNAME .\n  TXT x\nslot.example CNAME .\n\tA 192.0.2.1\n")
    assert parsed.triggers() == {
        ("judi.example", "self", "nxdomain"),
        ("slot.example", "self", "nxdomain"),
        ("slot.example", "self", "landing"),
    }
    assert dict(parsed.report.skipped) == {"rpz_unsupported_type": 1}


def test_inherited_lines_of_a_rejected_owner_line_are_rejected_too() -> None:
    parsed = parse(
        b'ok.example CNAME .\n"bad CNAME .\n  A 192.0.2.1\n\xff.example CNAME .\n  TXT x\n'
    )
    assert parsed.triggers() == {("ok.example", "self", "nxdomain")}
    assert dict(parsed.report.rejected) == {"unbalanced_quotes": 1, "encoding": 1, "no_owner": 2}


def test_legacy_passthru_is_a_cname_to_the_trigger_itself() -> None:
    parsed = parse(
        "$ORIGIN rpz.example.\nok.example CNAME ok.example.\n*.x.example CNAME *.x.example.\n"
    )
    assert parsed.triggers() == {("ok.example", "self", "allow"), ("x.example", "below", "allow")}


def test_absolute_owners_with_root_origin() -> None:
    parsed = parse("judi.example. CNAME .\n. CNAME .\n")
    assert parsed.triggers() == {("judi.example", "self", "nxdomain")}
    assert dict(parsed.report.skipped) == {"rpz_apex_record": 1}


def test_relative_soa_owner_leaves_the_origin_at_the_root() -> None:
    parsed = parse("rpz.local SOA a. b. 1 2 3 4 5\n  NS ns.\njudi.example CNAME .\n")
    assert parsed.triggers() == {("judi.example", "self", "nxdomain")}
    assert not parsed.report.rejected and not parsed.report.skipped


def test_absolute_soa_owner_sets_the_origin() -> None:
    parsed = parse(
        "rpz.local. SOA a. b. 1 2 3 4 5\n"
        "judi.example CNAME .\n"
        "slot.example.rpz.local. CNAME .\n"
        "slot.example. CNAME .\n"
    )
    assert parsed.triggers() == {
        ("judi.example", "self", "nxdomain"),
        ("slot.example", "self", "nxdomain"),
    }
    assert dict(parsed.report.rejected) == {"outside_origin": 1}


def test_no_trailing_newline_and_empty_input() -> None:
    assert parse("judi.example CNAME .").triggers() == {("judi.example", "self", "nxdomain")}
    empty = parse(b"")
    assert empty.names == [] and empty.report.lines == 0


def test_nothing_is_interned_for_an_empty_zone() -> None:
    parsed = parse("$TTL 300\n@ SOA a. b. 1 2 3 4 5\n@ NS ns.\n")
    assert len(parsed.policies) == 0


# -- fast path and slow path agree ------------------------------------------------------------

_OWNER_CHARS = "abcXYZ019-_.*éü"
_OWNERS = st.one_of(
    st.text(alphabet=_OWNER_CHARS, min_size=1, max_size=24),
    st.builds(
        lambda a, b: f"{a}.{b}",
        st.text(alphabet="abcXZ09-_*", min_size=1, max_size=10),
        st.sampled_from(["example", "EXAMPLE", "rpz-ip", "rpz-nsdname", "x.rpz-client-ip", "1"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(owner=_OWNERS, absolute=st.booleans(), origin=st.sampled_from(["", "rpz.example."]))
def test_fast_and_slow_paths_agree(owner: str, absolute: bool, origin: str) -> None:
    head = f"$ORIGIN {origin}\n" if origin else ""
    written = owner + "." + origin if absolute and origin else owner + ("." if absolute else "")
    fast = parse(f"{head}{written} CNAME .\n")  # the fast path, when the owner allows it
    slow = parse(f"{head}{written} IN CNAME . ; a comment sends the line to the tokenizer\n")
    assert summary(fast) == summary(slow)


# -- cross-check against dnspython's zone reader -------------------------------------------

CLEAN_ZONE = """\
$ORIGIN rpz.contoh.example.
$TTL 300
@ IN SOA ns.contoh.example. hostmaster.contoh.example. (
    2024060101 3600 600 86400 60 )
  IN NS ns.contoh.example.
judi-contoh.example CNAME .
*.judi-contoh.example CNAME .
slot-gacor.example.rpz.contoh.example. 300 IN CNAME .
pinjol-palsu.example IN 300 CNAME *.
*.pinjol-palsu.example CNAME *.
malware.example CNAME rpz-drop.
aman.judi-contoh.example CNAME rpz-passthru.
landing.example A 192.0.2.80
other.example CNAME .
landing.example AAAA 2001:db8::80
*.landing.example A 192.0.2.81
$ORIGIN co.id.rpz.contoh.example.
togel CNAME .
*.kasino CNAME .
"""

_CNAME_ACTIONS = {
    ".": "nxdomain",
    "*.": "nodata",
    "rpz-passthru.": "allow",
    "rpz-drop.": "drop",
}


def reference_triggers(text: str) -> tuple[set[tuple[str, str, str]], dict[str, set[str]]]:
    """Triggers as dnspython's zone reader sees them: (trigger, match, action) and the landing
    addresses per trigger."""
    zone = dns.zone.from_text(text, relativize=False)
    origin = zone.origin
    assert origin is not None
    triggers: set[tuple[str, str, str]] = set()
    addresses: dict[str, set[str]] = {}
    for name, node in zone.nodes.items():
        relative = name.relativize(origin)
        if relative == dns.name.empty:
            continue  # the apex: SOA and NS
        labels = [label.decode() for label in relative.labels]
        match = "self"
        if labels[0] == "*":
            match, labels = "below", labels[1:]
        trigger = ".".join(labels).lower()
        for rdataset in node.rdatasets:
            if rdataset.rdtype == dns.rdatatype.CNAME:
                target = rdataset[0].target.to_text().lower()
                triggers.add((trigger, match, _CNAME_ACTIONS[target]))
            elif rdataset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                triggers.add((trigger, match, "landing"))
                key = f"{match}:{trigger}"
                addresses.setdefault(key, set()).update(rd.address for rd in rdataset)
    return triggers, addresses


@pytest.mark.parametrize(
    "text",
    [
        CLEAN_ZONE,
        # The sample list has no $ORIGIN: dnspython needs one, and it does not change the triggers.
        "$ORIGIN rpz.blokir.example.\n" + SAMPLE.read_text(),
    ],
    ids=["clean-zone", "sample-list"],
)
def test_cross_check_with_dnspython_zone_reader(text: str) -> None:
    expected, expected_addresses = reference_triggers(text)
    parsed = parse(text)
    assert parsed.triggers() == expected
    addresses = {
        f"{match}:{name}": set(v4) | set(v6)
        for name, match, action, v4, v6 in parsed.names
        if action == "landing"
    }
    assert addresses == expected_addresses
    assert not parsed.report.rejected and not parsed.report.skipped


# -- the sample list for operators -----------------------------------------------------------


def test_sample_list_parses_without_rejects() -> None:
    parsed = parse(SAMPLE.read_bytes())
    assert not parsed.report.rejected
    assert not parsed.report.skipped
    assert parsed.report.entries == len(parsed.names) > 0
    assert ("judi-contoh.example", "below", "nxdomain") in parsed.triggers()
    assert ("pinjol-palsu.example", "self", "nxdomain") in parsed.triggers()
    assert {action for _, _, action, _, _ in parsed.names} == {
        "nxdomain",
        "nodata",
        "drop",
        "allow",
        "landing",
    }
