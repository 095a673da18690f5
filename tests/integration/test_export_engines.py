"""Exports loaded into the real engines: the RPZ zone and the local-zone include in Unbound, the
dnsmasq config in dnsmasq. Each engine runs on a free 127.0.0.1 port and forwards to a fake
upstream on 127.0.0.1, so no query leaves the machine; each test checks what a client gets."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from resolver.compile import NamedEntries, collect_names
from resolver.export import ExportStats, export
from resolver.lists.model import ListSpec
from resolver.policy import Action, MatchMode
from tests.integration.dnsutil import (
    UPSTREAM_IPV4,
    UPSTREAM_IPV6,
    addresses,
    free_port,
    query,
    require_binary,
    serving,
    unbound_config,
)
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

LANDING_V4 = "192.0.2.10"
LANDING_V6 = "2001:db8::10"
EXACT_V4 = "192.0.2.20"  # the exact-match list's own landing address
ZONE = "rpz.blokir."


def build_lists(tmp: Path) -> NamedEntries:
    """A blocked parent with an allowed child, an exact-match list (one name of it inside the
    blocked parent), and an NXDOMAIN list, as plain lists."""
    files = {
        "allow.txt": "ok.blocked.test\n",
        "blocked.txt": "# a regulator list\nblocked.test\n",
        "exact.txt": "exact.test\ndeep.blocked.test\n",
        "nx.txt": "nx.test\n",
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    specs = [
        ListSpec("allow", str(tmp / "allow.txt"), action=Action.ALLOW, format="plain"),
        ListSpec("blocked", str(tmp / "blocked.txt"), format="plain", list_index=1),
        ListSpec(
            "exact",
            str(tmp / "exact.txt"),
            match=MatchMode.EXACT,
            landing_ipv4=(EXACT_V4,),
            format="plain",
            list_index=2,
        ),
        ListSpec("nx", str(tmp / "nx.txt"), action=Action.NXDOMAIN, format="plain", list_index=3),
    ]
    return collect_names(specs)


def write_export(named: NamedEntries, fmt: str, path: Path) -> ExportStats:
    with path.open("w", encoding="ascii") as out:
        return export(named, fmt, out, landing_ipv4=LANDING_V4, landing_ipv6=LANDING_V6, zone=ZONE)


@dataclass
class Expect:
    """What a client must get for one query; `ipv4` None means NXDOMAIN."""

    name: str
    ipv4: str | None
    upstream: bool  # whether the engine may ask upstream for it


def expectations(deep_exact: bool) -> list[Expect]:
    return [
        Expect("blocked.test", LANDING_V4, False),
        Expect("www.blocked.test", LANDING_V4, False),
        Expect("ok.blocked.test", UPSTREAM_IPV4, True),  # the allowed child
        Expect("x.ok.blocked.test", UPSTREAM_IPV4, True),
        Expect("unlisted.test", UPSTREAM_IPV4, True),
        Expect("exact.test", EXACT_V4, False),
        Expect("sub.exact.test", UPSTREAM_IPV4, True),  # exact-match: the name only
        # An exact entry inside a blocked subtree; below it the parent's rule still applies.
        Expect("deep.blocked.test", EXACT_V4 if deep_exact else LANDING_V4, False),
        Expect("x.deep.blocked.test", LANDING_V4, False),
        Expect("nx.test", None, False),
        Expect("a.b.nx.test", None, False),
    ]


def check(port: int, upstream: FakeUpstream, expected: list[Expect]) -> None:
    failures = []
    for want in expected:
        response = query(port, want.name, "A")
        got = _summary(response)
        wanted = "NXDOMAIN" if want.ipv4 is None else f"NOERROR {want.ipv4}"
        if got != wanted:
            failures.append(f"{want.name}: got {got}, want {wanted}")
        if not want.upstream and upstream.seen(want.name):
            failures.append(f"{want.name}: a blocked name reached upstream")
    # Landing names answer AAAA with the IPv6 landing address, not upstream's.
    aaaa = addresses(query(port, "www.blocked.test", "AAAA"), "AAAA")
    if aaaa != [LANDING_V6]:
        failures.append(f"www.blocked.test AAAA: got {aaaa}, want {[LANDING_V6]}")
    if addresses(query(port, "unlisted.test", "AAAA"), "AAAA") != [UPSTREAM_IPV6]:
        failures.append("unlisted.test AAAA: not answered from upstream")
    # Other types at a landing name: NODATA, never forwarded.
    mx = query(port, "blocked.test", "MX")
    if mx.rcode() != dns.rcode.NOERROR or mx.answer:
        failures.append(f"blocked.test MX: got {_summary(mx)}, want NODATA")
    assert not failures, "\n".join(failures)


def _summary(response: dns.message.Message) -> str:
    rcode = dns.rcode.to_text(response.rcode())
    return " ".join([rcode, *addresses(response, "A")])


# -- Unbound ------------------------------------------------------------------------------------


def checkconf(config: Path) -> None:
    checker = require_binary("unbound-checkconf")
    result = subprocess.run(
        [checker, str(config)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run_unbound(tmp: Path, upstream: FakeUpstream, body: str, test: Callable[[int], None]) -> None:
    unbound = require_binary("unbound")
    port = free_port()
    config = unbound_config(tmp, port, upstream.port, body)
    checkconf(config)
    with serving([unbound, "-d", "-c", str(config)], port, tmp / "unbound.out"):
        test(port)


def test_rpz_export_in_unbound(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    zonefile = tmp_path / "blokir.rpz"
    stats = write_export(build_lists(tmp_path), "rpz", zonefile)
    assert stats.total_not_expressible == 0
    assert stats.inherited == 1  # *.deep.blocked.test repeats blocked.test's rule
    body = f'rpz:\n    name: "{ZONE}"\n    zonefile: "{zonefile}"\n    rpz-log: yes'

    def test(port: int) -> None:
        check(port, fake_upstream, expectations(deep_exact=True))

    run_unbound(tmp_path, fake_upstream, body, test)


def test_unbound_export_in_unbound(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    include = tmp_path / "blokir.conf"
    stats = write_export(build_lists(tmp_path), "unbound", include)
    # A local zone at deep.blocked.test would take the names below it out of blocked.test's:
    # the exact entry is left out, and deep.blocked.test gets its parent's landing address.
    assert stats.not_expressible == {"exact_scope": 1}
    assert "not expressible (exact_scope): deep.blocked.test self landing" in include.read_text()

    def test(port: int) -> None:
        check(port, fake_upstream, expectations(deep_exact=False))

    run_unbound(tmp_path, fake_upstream, f'include: "{include}"', test)


# -- dnsmasq ------------------------------------------------------------------------------------


def test_dnsmasq_export_in_dnsmasq(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    dnsmasq = require_binary("dnsmasq")
    conf = tmp_path / "blokir.dnsmasq.conf"
    stats = write_export(build_lists(tmp_path), "dnsmasq", conf)
    assert stats.total_not_expressible == 0
    port = free_port()
    argv = [
        dnsmasq,
        "--no-daemon",
        f"--conf-file={conf}",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        f"--server=127.0.0.1#{fake_upstream.port}",
        f"--pid-file={tmp_path / 'dnsmasq.pid'}",
        # dnsmasq drops privileges to `nobody` by default; stay the user running the tests.
        f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
        "--log-queries",
    ]
    syntax = subprocess.run(
        [*argv, "--test"], capture_output=True, text=True, timeout=30, check=False
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    with serving(argv, port, tmp_path / "dnsmasq.out"):
        check(port, fake_upstream, expectations(deep_exact=True))
