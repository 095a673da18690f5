"""blokir in front of a real NSD upstream on loopback, queried with dnspython, dig and kdig."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.rcode
import pytest

from tests.integration.test_server import LANDING_V4, LOOPBACK, Blokir
from tests.support.processes import Deadline, find_binary
from tests.support.servers import start_nsd

pytestmark = pytest.mark.integration

ZONE = "nsd.example."
ZONEFILE = """$ORIGIN nsd.example.
$TTL 300
@       SOA ns.nsd.example. host.nsd.example. 1 3600 600 86400 60
@       NS  ns.nsd.example.
ns      A   127.0.0.1
www     A   198.51.100.21
www     AAAA 2001:db8:21::1
alias   CNAME judi-contoh.example.
"""


@pytest.fixture
def nsd_port(tmp_path: Path) -> Iterator[int]:
    if find_binary("nsd") is None:
        pytest.skip("nsd not installed (scripts/install-test-deps installs it)")
    workdir = tmp_path / "nsd"
    workdir.mkdir()
    zonefile = workdir / "nsd.example.zone"
    zonefile.write_text(ZONEFILE)
    server, port = start_nsd(workdir, ZONE, zonefile, "www.nsd.example", Deadline(60))
    try:
        yield port
    finally:
        server.stop()


@pytest.fixture
def blokir(tmp_path: Path, nsd_port: int) -> Iterator[Blokir]:
    server = Blokir(tmp_path, nsd_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_forwarding_to_nsd_with_dnspython(blokir: Blokir) -> None:
    reply = blokir.ask("www.nsd.example", use_edns=0, want_dnssec=True)
    assert [rd.address for rd in reply.answer[0]] == ["198.51.100.21"]
    assert reply.ednsflags & dns.flags.DO  # the upstream's answer, EDNS intact
    v6 = blokir.ask_tcp("www.nsd.example", "AAAA")
    assert [rd.address for rd in v6.answer[0]] == ["2001:db8:21::1"]
    missing = blokir.ask("nope.nsd.example")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority  # SOA for caching
    # An NSD CNAME to a listed name is blocked via CNAME inspection.
    alias = blokir.ask("alias.nsd.example")
    assert [rd.address for rrset in alias.answer for rd in rrset] == [LANDING_V4]


@pytest.mark.parametrize("client", ["dig", "kdig"])
def test_forwarding_to_nsd_with_dig_and_kdig(blokir: Blokir, client: str) -> None:
    binary = shutil.which(client)
    if binary is None:
        pytest.skip(f"{client} not installed (scripts/install-test-deps installs it)")
    limits = ["+tries=1", "+time=3"] if client == "dig" else ["+retry=0", "+timeout=3"]
    base = [binary, f"@{LOOPBACK}", "-p", str(blokir.port), *limits]
    allowed = subprocess.run(
        [*base, "www.nsd.example", "A"], capture_output=True, text=True, timeout=20, check=True
    ).stdout
    assert "198.51.100.21" in allowed and "NOERROR" in allowed
    over_tcp = subprocess.run(
        [*base, "+tcp", "judi-contoh.example", "A"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert LANDING_V4 in over_tcp
