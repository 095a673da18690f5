"""resolver.export: every action x scope in every format, golden outputs for a nested example,
counting of what a format cannot express, the RPZ zone re-parsed by dnspython, and a randomised
check that each engine's matching (simulated here, as documented and as observed with Unbound
1.17 and dnsmasq 2.90) gives every name the answer blokir gives it, for the rules written."""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import dns.name
import dns.rdatatype
import dns.zone
import pytest

from resolver.compile import ListResult, NamedEntries
from resolver.export import FORMATS, ExportStats, export
from resolver.lists.model import ListSpec, ParseReport
from resolver.policy import Action, Policy, PolicyTable

NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
V4 = "192.0.2.10"
V6 = "2001:db8::10"
COMMENT = {"rpz": ";", "unbound": "#", "hosts": "#", "dnsmasq": "#"}


def policies() -> tuple[PolicyTable, dict[Action, int]]:
    table = PolicyTable()
    pids = {
        action: table.intern(Policy(f"l-{action.value}", "test", action, list_index=i))
        for i, action in enumerate(Action)
    }
    return table, pids


def run(
    table: PolicyTable,
    entries: dict[bytes, tuple[int, int]],
    fmt: str,
    *,
    landing_ipv4: str | None = V4,
    landing_ipv6: str | None = V6,
    lists: list[ListResult] | None = None,
    **kwargs: object,
) -> tuple[str, ExportStats]:
    out = io.StringIO()
    stats = export(
        NamedEntries(table, entries, lists or []),
        fmt,
        out,
        landing_ipv4=landing_ipv4,
        landing_ipv6=landing_ipv6,
        now=NOW,
        **kwargs,  # type: ignore[arg-type]
    )
    return out.getvalue(), stats


def body(text: str, fmt: str) -> list[str]:
    """Record lines and not-expressible comments: no header, zone preamble or summary."""
    c = COMMENT[fmt]
    keep = []
    for line in text.splitlines():
        if line.startswith(c):
            if "not expressible (" in line:
                keep.append(line)
            continue
        if line.startswith(("$ORIGIN", "$TTL", "@ ", "server:")):
            continue
        keep.append(line)
    return keep


# -- every action x scope, one name, nothing above it -------------------------------------------

N = "x.test"
SCOPES = ("subtree", "self", "below")


def _scope_pids(pid: int, scope: str) -> tuple[int, int]:
    return {"subtree": (pid, pid), "self": (pid, 0), "below": (0, pid)}[scope]


def _ne(fmt: str, reason: str, action: str, *scopes: str) -> list[str]:
    c = COMMENT[fmt]
    return [f"{c} not expressible ({reason}): {N} {s} {action} (list l-{action})" for s in scopes]


def _rpz(action: Action, scope: str) -> list[str]:
    rdata = {
        Action.LANDING: [f"A {V4}", f"AAAA {V6}"],
        Action.NXDOMAIN: ["CNAME ."],
        Action.NODATA: ["CNAME *."],
        Action.DROP: ["CNAME rpz-drop."],
        Action.ALLOW: ["CNAME rpz-passthru."],
    }
    if action is Action.REFUSED:
        scopes = ("self", "below") if scope == "subtree" else (scope,)
        return _ne("rpz", "action_refused", "refused", *scopes)
    lines = []
    if scope != "below":
        lines += [f"{N} {r}" for r in rdata[action]]
    if scope != "self":
        lines += [f"*.{N} {r}" for r in rdata[action]]
    return lines


_UNBOUND_TYPE = {
    Action.NXDOMAIN: "always_nxdomain",
    Action.NODATA: "always_nodata",
    Action.REFUSED: "always_refuse",
    Action.DROP: "always_deny",
    Action.ALLOW: "always_transparent",
}
_UNBOUND_DATA = [f'local-data: "{N}. 60 IN A {V4}"', f'local-data: "{N}. 60 IN AAAA {V6}"']


def _unbound(action: Action, scope: str) -> list[str]:
    if action is Action.ALLOW:  # nothing above it: the exception covers the whole subtree
        return [f'local-zone: "{N}." always_transparent']
    if action is Action.LANDING:
        if scope == "subtree":
            return [f'local-zone: "{N}." redirect', *_UNBOUND_DATA]
        if scope == "self":
            return [f'local-zone: "{N}." transparent', *_UNBOUND_DATA]
        return _ne("unbound", "below_scope", "landing", "below")
    if scope == "subtree":
        return [f'local-zone: "{N}." {_UNBOUND_TYPE[action]}']
    reason = "exact_scope" if scope == "self" else "below_scope"
    return _ne("unbound", reason, action.value, scope)


def _dnsmasq(action: Action, scope: str) -> list[str]:
    landing = [f"address=/{{p}}/{V4}", f"address=/{{p}}/{V6}", "local=/{p}/"]
    lines = {Action.LANDING: landing, Action.NXDOMAIN: ["address=/{p}/"]}
    if action is Action.ALLOW:
        return [f"server=/{N if scope != 'below' else '*.' + N}/#"]
    if action not in lines:
        scopes = ("self", "below") if scope == "subtree" else (scope,)
        return _ne("dnsmasq", f"action_{action.value}", action.value, *scopes)
    if scope == "subtree":
        return [t.format(p=N) for t in lines[action]]
    if scope == "self":  # /x.test/ covers the names below too: give them back to upstream
        return [*(t.format(p=N) for t in lines[action]), f"server=/*.{N}/#"]
    return [t.format(p="*." + N) for t in lines[action]]


def _hosts(action: Action, scope: str) -> list[str]:
    if action is Action.ALLOW:
        return []
    if scope == "below":
        return _ne("hosts", "below_scope", action.value, "below")
    if action is Action.LANDING:
        return [f"{V4} {N}", f"{V6} {N}"]
    return [f"0.0.0.0 {N}", f":: {N}"]


EXPECTED: dict[str, Callable[[Action, str], list[str]]] = {
    "rpz": _rpz,
    "unbound": _unbound,
    "dnsmasq": _dnsmasq,
    "hosts": _hosts,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("scope", SCOPES)
def test_action_by_scope(fmt: str, action: Action, scope: str) -> None:
    table, pids = policies()
    text, stats = run(table, {N.encode(): _scope_pids(pids[action], scope)}, fmt)
    lines = body(text, fmt)
    assert lines == EXPECTED[fmt](action, scope)
    rules = 2 if scope == "subtree" else 1
    comments = sum("not expressible (" in line for line in lines)
    if fmt == "hosts" and action is Action.ALLOW:
        assert stats.skipped == Counter(allow=rules)
        assert stats.total_written == stats.total_not_expressible == 0
    elif fmt == "hosts" and scope == "subtree":  # the name's line, the names below counted
        assert stats.written == Counter({action.value: 1})
        assert stats.not_expressible == Counter(below_scope=1)
        assert comments == 0
    else:
        assert stats.total_not_expressible == comments
        assert stats.total_written == rules - comments
        assert set(stats.written) <= {action.value}
    assert stats.names == 1
    assert stats.lines == len(text.splitlines())


def test_hosts_writes_blocks_as_null_addresses_and_counts_the_approximation() -> None:
    table, pids = policies()
    entries = {b"a.test": (pids[Action.NXDOMAIN], 0), b"b.test": (pids[Action.DROP], 0)}
    _, stats = run(table, entries, "hosts")
    assert stats.approximated == Counter(nxdomain_as_null_address=1, drop_as_null_address=1)


# -- golden outputs for a nested example ------------------------------------------------------


def nested() -> tuple[PolicyTable, dict[bytes, tuple[int, int]], list[ListResult]]:
    table, p = policies()
    own = table.intern(Policy("own", "test", Action.LANDING, landing_ipv4=("192.0.2.99",)))
    entries = {
        b"nx.test": (p[Action.NXDOMAIN], p[Action.NXDOMAIN]),
        b"land.test": (p[Action.LANDING], p[Action.LANDING]),
        b"ok.land.test": (p[Action.ALLOW], p[Action.ALLOW]),
        b"ex.land.test": (p[Action.NXDOMAIN], 0),
        b"a.b.land.test": (p[Action.NODATA], 0),
        b"ref.test": (p[Action.REFUSED], p[Action.REFUSED]),
        b"drop.test": (p[Action.DROP], 0),
        b"below.test": (0, p[Action.NODATA]),
        b"own.test": (own, 0),
        b"mix.test": (own, p[Action.NXDOMAIN]),
    }
    spec = ListSpec(name="gov", path="/lists/gov.txt", action=Action.LANDING)
    lists = [ListResult(spec, ParseReport(path=spec.path), sha256="ab" * 32)]
    return table, entries, lists


HEADER = """\
{c} Generated by blokir {version} (`blokir export --format {fmt}`)
{c} at 2024-01-02T03:04:05Z from 10 listed names.
{c} source: gov (landing) sha256 {sha}
"""

GOLDEN = {
    "rpz": """\
; RPZ: `name` is the name itself, `*.name` the names below it. REFUSED has no RPZ action.
$ORIGIN rpz.blokir.
$TTL 60
@ SOA localhost. hostmaster.localhost. 1704164645 3600 600 604800 60
@ NS localhost.
a.b.land.test CNAME *.
*.a.b.land.test A 192.0.2.10 ; inherited
*.a.b.land.test AAAA 2001:db8::10 ; inherited
*.b.land.test A 192.0.2.10 ; inherited
*.b.land.test AAAA 2001:db8::10 ; inherited
*.below.test CNAME *.
drop.test CNAME rpz-drop.
ex.land.test CNAME .
*.ex.land.test A 192.0.2.10 ; inherited
*.ex.land.test AAAA 2001:db8::10 ; inherited
land.test A 192.0.2.10
land.test AAAA 2001:db8::10
*.land.test A 192.0.2.10
*.land.test AAAA 2001:db8::10
mix.test A 192.0.2.99
mix.test AAAA 2001:db8::10
*.mix.test CNAME .
nx.test CNAME .
*.nx.test CNAME .
ok.land.test CNAME rpz-passthru.
*.ok.land.test CNAME rpz-passthru.
own.test A 192.0.2.99
own.test AAAA 2001:db8::10
; not expressible (action_refused): ref.test self refused (list l-refused)
; not expressible (action_refused): ref.test below refused (list l-refused)
; summary: names 10; rules written: allow 2, drop 1, landing 4, nodata 2, nxdomain 4; \
not expressible: action_refused 2; approximated: none; skipped: none; inherited records 3
""",
    "unbound": """\
# Unbound local zones: a local-zone covers its name and everything below it.
# Include this file from unbound.conf (it opens a `server:` clause).
server:
# not expressible (exact_scope): a.b.land.test self nodata (list l-nodata)
# not expressible (below_scope): below.test below nodata (list l-nodata)
# not expressible (exact_scope): drop.test self drop (list l-drop)
# not expressible (exact_scope): ex.land.test self nxdomain (list l-nxdomain)
local-zone: "land.test." redirect
local-data: "land.test. 60 IN A 192.0.2.10"
local-data: "land.test. 60 IN AAAA 2001:db8::10"
local-zone: "mix.test." static
local-data: "mix.test. 60 IN A 192.0.2.99"
local-data: "mix.test. 60 IN AAAA 2001:db8::10"
local-zone: "nx.test." always_nxdomain
local-zone: "ok.land.test." always_transparent
local-zone: "own.test." transparent
local-data: "own.test. 60 IN A 192.0.2.99"
local-data: "own.test. 60 IN AAAA 2001:db8::10"
local-zone: "ref.test." always_refuse
# summary: names 10; rules written: allow 2, landing 4, nxdomain 3, refused 2; \
not expressible: below_scope 1, exact_scope 3; approximated: none; skipped: none; \
inherited records 0
""",
    "dnsmasq": """\
# dnsmasq: /name/ is the name and everything below it, /*.name/ only the names below;
# the most specific domain wins. No NODATA, REFUSED or DROP answers. Answers use
# dnsmasq's local-ttl (0 unless set). Load with --conf-file or from conf-dir.
# not expressible (action_nodata): a.b.land.test self nodata (list l-nodata)
# not expressible (action_nodata): below.test below nodata (list l-nodata)
# not expressible (action_drop): drop.test self drop (list l-drop)
address=/ex.land.test/
address=/*.ex.land.test/192.0.2.10
address=/*.ex.land.test/2001:db8::10
local=/*.ex.land.test/
address=/land.test/192.0.2.10
address=/land.test/2001:db8::10
local=/land.test/
address=/mix.test/192.0.2.99
address=/mix.test/2001:db8::10
local=/mix.test/
address=/*.mix.test/
address=/nx.test/
server=/ok.land.test/#
address=/own.test/192.0.2.99
address=/own.test/2001:db8::10
local=/own.test/
server=/*.own.test/#
# not expressible (action_refused): ref.test self refused (list l-refused)
# not expressible (action_refused): ref.test below refused (list l-refused)
# summary: names 10; rules written: allow 2, landing 4, nxdomain 4; not expressible: \
action_drop 1, action_nodata 2, action_refused 2; approximated: none; skipped: none; \
inherited records 2
""",
    "hosts": """\
# hosts: exact names only; names below a listed name are not covered. NXDOMAIN, NODATA,
# REFUSED and DROP are written as the null addresses 0.0.0.0 and ::.
0.0.0.0 a.b.land.test
:: a.b.land.test
# not expressible (below_scope): below.test below nodata (list l-nodata)
0.0.0.0 drop.test
:: drop.test
0.0.0.0 ex.land.test
:: ex.land.test
192.0.2.10 land.test
2001:db8::10 land.test
192.0.2.99 mix.test
2001:db8::10 mix.test
0.0.0.0 nx.test
:: nx.test
192.0.2.99 own.test
2001:db8::10 own.test
0.0.0.0 ref.test
:: ref.test
# summary: names 10; rules written: drop 1, landing 3, nodata 1, nxdomain 2, refused 1; \
not expressible: below_scope 5; approximated: drop_as_null_address 1, \
nodata_as_null_address 1, nxdomain_as_null_address 2, refused_as_null_address 1; \
skipped: allow 2; inherited records 0
""",
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_golden(fmt: str) -> None:
    from resolver import __version__

    table, entries, lists = nested()
    text, stats = run(table, entries, fmt, lists=lists)
    header = HEADER.format(c=COMMENT[fmt], version=__version__, fmt=fmt, sha="ab" * 32)
    assert text == header + GOLDEN[fmt]
    assert str(stats).startswith(f"{fmt}: {stats.lines} lines; names 10;")
    assert stats.to_json()["format"] == fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_is_sorted_and_reproducible(fmt: str) -> None:
    table, entries, _ = nested()
    shuffled = list(entries.items())
    random.Random(7).shuffle(shuffled)
    first, _ = run(table, entries, fmt)
    second, _ = run(table, dict(shuffled), fmt)
    assert first == second
    owners = [_owner(line, fmt) for line in body(first, fmt)]
    owners = [o for o in owners if o]
    assert owners == sorted(owners)


def _owner(line: str, fmt: str) -> str:
    """The listed name a body line belongs to, without any `*.`."""
    if "not expressible (" in line:
        name = line.split(": ", 1)[1].split()[0]
    elif fmt == "rpz":
        name = line.split()[0]
    elif fmt == "unbound":
        name = line.split('"')[1].split()[0].rstrip(".")
    elif fmt == "dnsmasq":
        name = line.split("/")[1]
    else:
        name = line.split()[1]
    return name.removeprefix("*.")


# -- RPZ re-parsed -------------------------------------------------------------------------------


def test_rpz_loads_in_dnspython_with_the_expected_records() -> None:
    table, entries, lists = nested()
    text, _ = run(table, entries, "rpz", lists=lists, zone="rpz.example", ttl=300)
    zone = dns.zone.from_text(text, origin=None, relativize=True, check_origin=True)
    assert zone.origin == dns.name.from_text("rpz.example.")
    soa = zone.find_rdataset("@", "SOA")
    assert soa.ttl == 300
    assert soa[0].serial == int(NOW.timestamp())

    def rdata(owner: str, rdtype: str) -> list[str]:
        found = zone.get_rdataset(owner, rdtype)
        return sorted(r.to_text() for r in found) if found is not None else []

    assert rdata("land.test", "A") == [V4]
    assert rdata("land.test", "AAAA") == [V6]
    assert rdata("*.land.test", "A") == [V4]
    assert rdata("nx.test", "CNAME") == ["."]
    assert rdata("*.nx.test", "CNAME") == ["."]
    assert rdata("*.below.test", "CNAME") == ["*."]
    assert rdata("below.test", "CNAME") == []
    assert rdata("drop.test", "CNAME") == ["rpz-drop."]
    assert rdata("ok.land.test", "CNAME") == ["rpz-passthru."]
    assert rdata("*.ok.land.test", "CNAME") == ["rpz-passthru."]
    assert rdata("own.test", "A") == ["192.0.2.99"]  # the list's own address...
    assert rdata("own.test", "AAAA") == [V6]  # ...and the global one for the other family
    assert rdata("*.ex.land.test", "A") == [V4]  # a parent's rule repeated below a listed name
    assert zone.get_node("ref.test") is None
    assert zone.find_rdataset("land.test", "A").ttl == 300


def test_rpz_zone_name_gets_a_trailing_dot_and_bad_names_are_rejected() -> None:
    table, pids = policies()
    text, _ = run(table, {b"a.test": (pids[Action.NXDOMAIN], 0)}, "rpz", zone="Policy.Example")
    assert "$ORIGIN policy.example." in text
    for bad in ("", ".", "a..b", "bad zone."):
        with pytest.raises(ValueError, match="zone"):
            run(table, {}, "rpz", zone=bad)


def test_rpz_empty_policy_is_still_a_valid_zone() -> None:
    table, _ = policies()
    text, stats = run(table, {}, "rpz")
    zone = dns.zone.from_text(text, origin=None)
    assert len(zone.nodes) == 1
    assert stats.total_written == 0


def test_rpz_special_labels_are_not_written_as_qname_triggers() -> None:
    table, pids = policies()
    text, stats = run(table, {b"1.2.rpz-ip": (pids[Action.NXDOMAIN], 0)}, "rpz")
    assert stats.not_expressible == Counter(rpz_special_label=1)
    assert "1.2.rpz-ip CNAME" not in text


# -- landing addresses ---------------------------------------------------------------------------


def test_landing_without_any_address_is_approximated() -> None:
    table, pids = policies()
    entries = {b"a.test": (pids[Action.LANDING], 0)}
    expected = {
        "rpz": ["a.test CNAME *."],
        "unbound": [],  # NODATA at the name only: not expressible either way
        "hosts": ["0.0.0.0 a.test", ":: a.test"],
        "dnsmasq": ["address=/a.test/0.0.0.0", "address=/a.test/::", "local=/a.test/"],
    }
    for fmt, lines in expected.items():
        text, stats = run(table, entries, fmt, landing_ipv4=None, landing_ipv6=None)
        records = [line for line in body(text, fmt) if "not expressible (" not in line]
        assert records[: len(lines)] == lines, fmt
        if fmt != "unbound":
            assert stats.approximated == Counter(landing_without_address=1), fmt


def test_one_global_family_only() -> None:
    table, pids = policies()
    text, _ = run(table, {b"a.test": (pids[Action.LANDING], 0)}, "rpz", landing_ipv6=None)
    assert body(text, "rpz") == [f"a.test A {V4}"]  # AAAA then gets NODATA, as in blokir


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"landing_ipv4": "2001:db8::1"}, "not an IPv4"),
        ({"landing_ipv6": "192.0.2.1"}, "not an IPv6"),
        ({"landing_ipv4": "landing.example"}, "not an IP address"),
        ({"ttl": -1}, "ttl"),
        ({"ttl": 2**31}, "ttl"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    table, _ = policies()
    with pytest.raises(ValueError, match=message):
        run(table, {}, "rpz", **kwargs)  # type: ignore[arg-type]


def test_unknown_format() -> None:
    table, _ = policies()
    with pytest.raises(ValueError, match="unknown export format"):
        run(table, {}, "bind")


@pytest.mark.parametrize("fmt", FORMATS)
def test_names_that_could_break_the_syntax_are_not_written(fmt: str) -> None:
    table, pids = policies()
    entries = {b'ev"il\n.test': (pids[Action.NXDOMAIN], pids[Action.NXDOMAIN])}
    text, stats = run(table, entries, fmt)
    assert stats.not_expressible == Counter(unsafe_name=2)
    assert stats.total_written == 0
    assert all(line.startswith(COMMENT[fmt]) for line in body(text, fmt))
    assert len(text.splitlines()) == stats.lines


def test_comments_stay_on_one_ascii_line() -> None:
    table = PolicyTable()
    pid = table.intern(Policy("liste\nnoire \u00e9", "test", Action.REFUSED))
    text, _ = run(table, {b"a.test": (pid, 0)}, "rpz")
    assert text.isascii()
    assert (
        "; not expressible (action_refused): a.test self refused (list liste?noire \\xe9)" in text
    )


# -- engines simulated ---------------------------------------------------------------------------
#
# Answers are (kind, ipv4, ipv6): kind an Action value or "normal" (resolved from upstream).

Answer = tuple[str, tuple[str, ...], tuple[str, ...]]
NORMAL: Answer = ("normal", (), ())


def _parents(name: str) -> list[str]:
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


def model_answer(rules: dict[tuple[str, str], Answer], qname: str) -> Answer:
    """blokir's lookup: the name's own rule, else the nearest parent's below rule."""
    if (qname, "self") in rules:
        return rules[(qname, "self")]
    for parent in _parents(qname):
        if (parent, "below") in rules:
            return rules[(parent, "below")]
    return NORMAL


def _landing(records: list[tuple[str, str]]) -> Answer:
    return (
        "landing",
        tuple(sorted(v for t, v in records if t == "A")),
        tuple(sorted(v for t, v in records if t == "AAAA")),
    )


def rpz_engine(text: str, closest_encloser: bool) -> Callable[[str], Answer]:
    """BIND/PowerDNS (longest matching wildcard) or Unbound 1.17 (wildcard at the closest
    encloser, found from the trigger sorted just before the name in canonical order)."""
    zone = dns.zone.from_text(text, origin=None, relativize=False)
    cname_kind = {".": "nxdomain", "*.": "nodata", "rpz-passthru.": "normal", "rpz-drop.": "drop"}
    triggers: dict[dns.name.Name, Answer] = {}
    for owner, node in zone.nodes.items():
        if owner == zone.origin:
            continue
        records: list[tuple[str, str]] = []
        for rdataset in node.rdatasets:
            rdtype = dns.rdatatype.to_text(rdataset.rdtype)
            for rdata in rdataset:
                if rdtype == "CNAME":
                    target = rdata.target.to_text()
                    triggers[owner] = (cname_kind[target], (), ())
                else:
                    records.append((rdtype, rdata.to_text()))
        if records:
            triggers[owner] = _landing(records)
    ordered = sorted(triggers)
    assert zone.origin is not None
    origin = zone.origin

    def lookup(qname: str) -> Answer:
        name = dns.name.from_text(qname, origin=origin)
        if name in triggers:
            return triggers[name]
        if not closest_encloser:
            while len(name) > len(origin) + 1:
                name = name.parent()
                wildcard = dns.name.Name((b"*", *name.labels))
                if wildcard in triggers:
                    return triggers[wildcard]
            return NORMAL
        before = [t for t in ordered if t <= name]
        if not before:
            return NORMAL
        _, _, common = name.fullcompare(before[-1])
        encloser = name.split(common)[1]
        return triggers.get(dns.name.Name((b"*", *encloser.labels)), NORMAL)

    return lookup


def unbound_engine(text: str) -> Callable[[str], Answer]:
    """Unbound local zones: the closest enclosing zone decides (unbound.conf(5))."""
    zones: dict[str, str] = {}
    data: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("local-zone:"):
            name, kind = line.split('"')[1], line.split()[-1]
            zones[name.rstrip(".")] = kind
        elif line.startswith("local-data:"):
            owner, _, _, rdtype, value = line.split('"')[1].split()
            data.setdefault(owner.rstrip("."), []).append((rdtype, value))
    fixed = {
        "always_nxdomain": "nxdomain",
        "always_nodata": "nodata",
        "always_refuse": "refused",
        "always_deny": "drop",
        "always_transparent": "normal",
    }

    def lookup(qname: str) -> Answer:
        for zone in (qname, *_parents(qname)):
            kind = zones.get(zone)
            if kind is None:
                continue
            if kind in fixed:
                return (fixed[kind], (), ())
            if kind == "redirect":
                return _landing(data[zone])
            if qname == zone and zone in data:  # static, transparent: data at the name
                return _landing(data[zone])
            assert kind in ("static", "transparent"), kind
            return ("nxdomain", (), ()) if kind == "static" else NORMAL
        return NORMAL

    return lookup


def dnsmasq_engine(text: str) -> Callable[[str], Answer]:
    """dnsmasq(8) domain matching: the most specific domain wins, `*.d` before `d` for names
    below d (checked with dnsmasq 2.90)."""
    patterns: dict[str, Answer] = {}
    lines: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("address=", "local=", "server=")):
            key, _, rest = line.partition("=")
            _, pattern, value = rest.split("/")
            lines.setdefault(pattern, []).append(f"{key}={value}")
    for pattern, found in lines.items():
        addresses = [
            v.split("=", 1)[1] for v in found if v.startswith("address=") and v != "address="
        ]
        if "server=#" in found:
            patterns[pattern] = NORMAL
        elif addresses:
            assert "local=" in found  # else other types would be forwarded
            v4 = tuple(sorted(a for a in addresses if ":" not in a))
            v6 = tuple(sorted(a for a in addresses if ":" in a))
            patterns[pattern] = ("landing", v4, v6)
        else:
            patterns[pattern] = ("nxdomain", (), ())

    def lookup(qname: str) -> Answer:
        if qname in patterns:
            return patterns[qname]
        for parent in _parents(qname):
            for pattern in (f"*.{parent}", parent):
                if pattern in patterns:
                    return patterns[pattern]
        return NORMAL

    return lookup


def hosts_engine(text: str) -> Callable[[str], Answer]:
    found: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            address, name = line.split()
            found.setdefault(name, []).append(("AAAA" if ":" in address else "A", address))

    def lookup(qname: str) -> Answer:
        return _landing(found[qname]) if qname in found else NORMAL

    return lookup


ENGINES: dict[str, list[Callable[[str], Callable[[str], Answer]]]] = {
    "rpz": [lambda t: rpz_engine(t, False), lambda t: rpz_engine(t, True)],
    "unbound": [unbound_engine],
    "dnsmasq": [dnsmasq_engine],
    "hosts": [hosts_engine],
}


def _policy_answer(policy: Policy, fmt: str) -> Answer:
    if policy.action is Action.ALLOW:
        return NORMAL
    if policy.action is Action.LANDING:
        return ("landing", policy.landing_ipv4 or (V4,), policy.landing_ipv6 or (V6,))
    if fmt == "hosts":
        return ("landing", ("0.0.0.0",), ("::",))
    return (policy.action.value, (), ())


def random_entries(rng: random.Random, table: PolicyTable) -> dict[bytes, tuple[int, int]]:
    pids = list(range(1, len(table) + 1))
    entries: dict[bytes, tuple[int, int]] = {}
    for _ in range(rng.randint(1, 9)):
        labels = [rng.choice("abc") for _ in range(rng.randint(1, 4))]
        name = ".".join([*labels, "test"]).encode()
        shape = rng.random()
        first = rng.choice(pids)
        if shape < 0.4:
            entries[name] = (first, first)
        elif shape < 0.6:
            entries[name] = (first, 0)
        elif shape < 0.8:
            entries[name] = (0, first)
        else:
            entries[name] = (first, rng.choice(pids))
    return entries


@pytest.mark.parametrize("fmt", FORMATS)
def test_engines_give_every_name_blokirs_answer_for_the_rules_written(fmt: str) -> None:
    """For random nested rule sets: drop the rules the export says it left out (a hosts file
    loses every below rule), then every name, listed or not, must get the same answer from the
    simulated engine as from blokir's lookup."""
    table, _ = policies()
    table.intern(Policy("other-landing", "test", Action.LANDING, landing_ipv4=("192.0.2.99",)))
    rng = random.Random(20240102)
    for _ in range(300):
        entries = random_entries(rng, table)
        text, _ = run(table, entries, fmt)
        left_out = set()
        for line in text.splitlines():
            if "not expressible (" in line:
                name, scope = line.split(": ", 1)[1].split()[:2]
                left_out.add((name, scope))
        rules: dict[tuple[str, str], Answer] = {}
        for raw, (self_pid, below_pid) in entries.items():
            name = raw.decode()
            for scope, pid in (("self", self_pid), ("below", below_pid)):
                if pid and (name, scope) not in left_out and (fmt, scope) != ("hosts", "below"):
                    rules[(name, scope)] = _policy_answer(table.get(pid), fmt)
        queries = {"other.test", "test"}
        for raw in entries:
            name = raw.decode()
            queries |= {name, f"z.{name}", f"a.z.{name}", f"c.{name}", *_parents(name)}
        for make in ENGINES[fmt]:
            engine = make(text)
            for qname in sorted(queries):
                assert engine(qname) == model_answer(rules, qname), (qname, entries, text)
