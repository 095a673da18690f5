"""IP lists and rpz-ip triggers: the regulator's quirks, RPZ's reversed-label syntax, and what
the compiled index answers for an address."""

from __future__ import annotations

import io
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.cli import check_names
from resolver.compile import collect_names, compile_lists, write_index
from resolver.export import export, rpz_ip_owner
from resolver.index import open_index
from resolver.lists import parse_list
from resolver.lists.iplist import parse_ip, prefixes_of
from resolver.lists.model import Batch, ListSpec, ParseReport
from resolver.lists.normalise import Rejected
from resolver.lists.rpz import parse_rpz, rpz_ip_prefix
from resolver.policy import MATCH_IP, Action, PolicyTable

SPEC = ListSpec(name="ips", path="ipaddress_isp.txt", category="regulator", kind="ip")


def parse(data: bytes) -> tuple[list[str], ParseReport, list[Batch]]:
    report = ParseReport(path=SPEC.path)
    batches = list(parse_ip(io.BytesIO(data), SPEC, PolicyTable(), report))
    assert all(b.match == MATCH_IP for b in batches)
    return [n.decode() for b in batches for n in b.names], report, batches


def test_regulator_quirks() -> None:
    data = (
        "\ufeff# ipaddress_isp\r\n"
        "192.0.2.1\r\n"
        "\r\n"
        "  198.51.100.7:80  # a port\r\n"
        "[2001:db8::1]:443\n"
        "203.0.113.0/24, 2001:db8:1::/48\n"
        "http://192.0.2.9/landing.html\n"
        "192.0.2.77/24\n"
        "*.1.2.3.4\n"
        "situs.example\n"
        "010.1.2.3\n"
        "192.0.2.0/33\n"
        "fe80::1%eth0\n"
        "192.0.2.10-192.0.2.13\n"
    ).encode()
    names, report, _ = parse(data)
    assert names == [
        "192.0.2.1/32",
        "198.51.100.7/32",
        "2001:db8::1/128",
        "203.0.113.0/24",
        "2001:db8:1::/48",
        "192.0.2.9/32",
        "192.0.2.0/24",  # host bits set: the prefix it names
        "192.0.2.10/31",
        "192.0.2.12/31",
    ]
    assert report.lines == 14 and report.entries == len(names)
    assert dict(report.rejected) == {
        "wildcard_address": 1,
        "not_an_address": 1,
        "bad_address": 1,
        "bad_prefix_length": 1,
        "zone_id": 1,
    }
    assert report.examples["wildcard_address"] == ["ipaddress_isp.txt:9: *.1.2.3.4"]
    assert report.examples["not_an_address"] == ["ipaddress_isp.txt:10: situs.example"]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("1.2.3", "bad_address"),
        ("1.2.3.4/x", "bad_prefix_length"),
        ("1.2.3.9-1.2.3.1", "bad_range"),
    ],
)
def test_rejections(token: str, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        prefixes_of(token)
    assert caught.value.reason == reason


def test_kind_ip_selects_the_ip_parser_whatever_the_content() -> None:
    report = ParseReport(path="x")
    batches = list(parse_list(io.BytesIO(b"192.0.2.1\n"), SPEC, PolicyTable(), report))
    assert report.format == "ip" and batches[0].names == [b"192.0.2.1/32"]


@pytest.mark.parametrize(
    ("labels", "prefix"),
    [
        ("32.4.3.2.1", "1.2.3.4/32"),
        ("24.0.2.0.192", "192.0.2.0/24"),
        ("128.1.zz.db8.2001", "2001:db8::1/128"),
        ("48.zz.db8.2001", "2001:db8::/48"),
        ("64.0.0.0.0.0.db8.2001", None),  # 6 groups and no zz: not an address
        ("128.1.0.0.0.0.0.db8.2001", "2001:db8::1/128"),
        ("128.1.zz", "::1/128"),
        ("24.4.3.2.1", None),  # host bits set
        ("33.4.3.2.1", None),
        ("0.0.0.0.0", None),
        ("*.24.0.2.0.192", None),
        ("32.3.2.1", None),
        ("64.zz.1.zz.db8.2001", None),
    ],
)
def test_rpz_ip_labels(labels: str, prefix: str | None) -> None:
    parts = tuple(labels.split("."))
    if prefix is None:
        with pytest.raises(Rejected):
            rpz_ip_prefix(parts)
    else:
        assert rpz_ip_prefix(parts) == prefix


RPZ = """$TTL 300
@ SOA ns.rpz.example. hostmaster.rpz.example. 1 3600 600 86400 300
  NS ns.rpz.example.
judi.example CNAME .
32.9.2.0.192.rpz-ip CNAME .
24.0.2.0.192.rpz-ip CNAME *.
48.zz.db8.2001.rpz-ip CNAME rpz-passthru.
16.0.0.0.10.rpz-ip A 203.0.113.80
*.24.0.2.0.198.rpz-ip CNAME .
24.1.2.0.198.rpz-ip CNAME .
32.1.0.0.127.rpz-nsip CNAME .
"""


@pytest.mark.parametrize("chunk", [None, 64])
def test_rpz_ip_triggers(chunk: int | None) -> None:
    spec = ListSpec(name="rpz", path="rpz.zone", format="rpz", category="regulator")
    policies = PolicyTable()
    report = ParseReport(path=spec.path)
    kwargs = {} if chunk is None else {"chunk_bytes": chunk}
    batches = list(parse_rpz(io.BytesIO(RPZ.encode()), spec, policies, report, **kwargs))
    ip = {
        (n.decode(), policies.get(b.pid).action.value, policies.get(b.pid).landing_ipv4)
        for b in batches
        if b.match == MATCH_IP
        for n in b.names
    }
    assert ip == {
        ("192.0.2.9/32", "nxdomain", ()),
        ("192.0.2.0/24", "nodata", ()),
        ("2001:db8::/48", "allow", ()),
        ("10.0.0.0/16", "landing", ("203.0.113.80",)),
    }
    assert report.rejected == {"rpz_ip_wildcard": 1, "rpz_ip_prefix": 1}
    assert report.skipped == {"rpz_nsip_trigger": 1}
    names = [n for b in batches if b.match != MATCH_IP for n in b.names]
    assert names == [b"judi.example"]


def test_compiled_index_answers_addresses(tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("192.0.2.128/25\n")
    block = tmp_path / "block.txt"
    block.write_text("192.0.2.0/24\n2001:db8::/32\n192.0.2.200\n")
    domains = tmp_path / "domains.txt"
    domains.write_text("judi.example\n")
    specs = [
        ListSpec("allow-ip", str(allow), action=Action.ALLOW, kind="ip", list_index=0),
        ListSpec("block-ip", str(block), action=Action.NXDOMAIN, kind="ip", list_index=1),
        ListSpec("domains", str(domains), list_index=2),
    ]
    result = compile_lists(specs)
    assert [(r.unique, r.duplicates) for r in result.lists] == [(1, 0), (3, 0), (1, 0)]
    write_index(result, tmp_path / "i.blkx")
    with open_index(tmp_path / "i.blkx") as index:
        match = index.ip_match

        def verdict(text: str) -> str:
            pid = match.match_packed(ipaddress.ip_address(text).packed)
            return index.policy(pid).list_name if pid else "-"

        assert verdict("192.0.2.1") == "block-ip"
        assert verdict("192.0.2.129") == "allow-ip"
        assert verdict("192.0.2.200") == "block-ip"  # a /32 is more specific than the /25
        assert verdict("192.0.3.1") == "-"
        assert verdict("2001:db8:ffff::1") == "block-ip"
        assert verdict("2001:db9::1") == "-"
        assert index.match_policy_id(b"judi.example") and not index.match_policy_id(b"192.0.2.1")
        assert match.locate(ipaddress.ip_address("192.0.2.7").packed)[1] == 24


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(1, 128), st.booleans())
def test_rpz_ip_owner_round_trips(address: int, length: int, v4: bool) -> None:
    if v4:
        network = ipaddress.ip_network((address >> 96, min(length, 32)), strict=False)
    else:
        network = ipaddress.ip_network((address, length), strict=False)
    owner = rpz_ip_owner(str(network))
    assert owner.endswith(".rpz-ip")
    assert rpz_ip_prefix(tuple(owner.split(".")[:-1])) == str(network)


def test_export_and_check(tmp_path: Path) -> None:
    block = tmp_path / "ips.txt"
    block.write_text("192.0.2.0/24\n2001:db8::/32\n")
    landing = tmp_path / "landing.txt"
    landing.write_text("198.51.100.7\n")
    specs = [
        ListSpec("ips", str(block), action=Action.NXDOMAIN, kind="ip", category="c1"),
        ListSpec("land", str(landing), kind="ip", landing_ipv4=("203.0.113.9",), list_index=1),
    ]
    out = io.StringIO()
    stats = export(
        collect_names(specs), "rpz", out, landing_ipv4=None, landing_ipv6=None, zone="rpz.test."
    )
    lines = out.getvalue().splitlines()
    assert "24.0.2.0.192.rpz-ip CNAME ." in lines
    assert "32.zz.db8.2001.rpz-ip CNAME ." in lines
    assert "32.7.100.51.198.rpz-ip A 203.0.113.9" in lines
    assert stats.written == {"nxdomain": 2, "landing": 1}
    # What RPZ wrote, RPZ reads back as the same triggers.
    policies = PolicyTable()
    batches = list(
        parse_rpz(
            io.BytesIO(out.getvalue().encode()),
            ListSpec("back", "x", format="rpz"),
            policies,
            ParseReport(path="x"),
        )
    )
    assert {n for b in batches if b.match == MATCH_IP for n in b.names} == {
        b"192.0.2.0/24",
        b"2001:db8::/32",
        b"198.51.100.7/32",
    }
    unbound = io.StringIO()
    other = export(collect_names(specs), "unbound", unbound, landing_ipv4=None, landing_ipv6=None)
    assert other.not_expressible == {"ip_trigger": 3}

    write_index(compile_lists(specs), tmp_path / "i.blkx")
    with open_index(tmp_path / "i.blkx") as index:
        shown = io.StringIO()
        status = check_names(index, ["192.0.2.55", "::ffff:192.0.2.1", "192.0.3.1"], shown)
    got = shown.getvalue().splitlines()
    assert got[0].split() == [
        "blocked",
        "192.0.2.55",
        "list=ips",
        "rule=192.0.2.0/24",
        "category=c1",
        "action=nxdomain",
        "(in",
        "answers)",
    ]
    assert "rule=192.0.2.0/24" in got[1]
    assert got[2].startswith("allowed  192.0.3.1")
    assert status == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_input_is_read_or_rejected_never_raised(data: bytes) -> None:
    names, report, _ = parse(data)
    assert report.entries == len(names)
    for prefix in names:  # whatever is kept is a canonical prefix
        assert str(ipaddress.ip_network(prefix)) == prefix
