"""Lists as publishers ship them, through a real `blokir serve`: a dnsmasq-syntax list, an
Unbound-syntax list and a regulator list split into compressed parts answer their blocked names;
a list that gives nothing keeps the server from starting."""

from __future__ import annotations

import gzip
import lzma
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import libarchive
import pytest
import zstandard

from tests.integration.test_server import LANDING_V4, Blokir, upstream
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration
__all__ = ["upstream"]  # the fixture, shared with test_server

DNSMASQ = (
    "# Title: multi - dnsmasq format\r\n"
    "local=/dnsmasq-judi.example/\r\n"
    "address=/dnsmasq-slot.example/dnsmasq-togel.example/#\r\n"
    "address=/dnsmasq-null.example/0.0.0.0\r\n"
    "server=/corp.example/10.0.0.53\r\n"
)
UNBOUND = (
    "server:\n"
    '  local-zone: "unbound-judi.example." always_nxdomain\n'
    '  local-zone: "unbound-redirect.example." redirect\n'
    '  local-data: "unbound-redirect.example. A 0.0.0.0"\n'
)
PARTS = {
    "domains_isp_001.txt.gz": ["part1-judi.example", "part1-slot.example"],
    "domains_isp_002.txt.xz": ["part2-pinjol.example"],
    "domains_isp_003.txt.zst": ["part3-toko.example"],
    "domains_isp_004.txt.7z": ["part4-kasino.example"],
    "domains_isp_010.txt": ["part10-last.example"],
}


def _write_part(path: Path, names: list[str]) -> None:
    data = ("\ufeff" + "\r\n".join(names)).encode()  # BOM, CRLF, no final newline
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".xz":
        path.write_bytes(lzma.compress(data))
    elif path.suffix == ".zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    elif path.suffix == ".7z":
        with libarchive.file_writer(str(path), "7zip") as archive:
            archive.add_file_from_memory("domains_isp_004.txt", len(data), data)
    else:
        path.write_bytes(data)


def _add_lists(server: Blokir) -> None:
    tmp = server.tmp
    (tmp / "mirror.dnsmasq.conf").write_text(DNSMASQ)
    (tmp / "unbound-blocklist.conf").write_text(UNBOUND)
    (tmp / "parts").mkdir()
    for name, entries in PARTS.items():
        _write_part(tmp / "parts" / name, entries)
    with server.config.open("a") as config:
        config.write(
            '[[lists]]\nname = "dnsmasq-mirror"\npath = "mirror.dnsmasq.conf"\n'
            '[[lists]]\nname = "unbound-mirror"\npath = "unbound-blocklist.conf"\n'
            '[[lists]]\nname = "regulator"\npath = "parts/domains_isp_*"\n'
        )


@pytest.fixture
def served(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Blokir]:
    server = Blokir(tmp_path, upstream.port)
    _add_lists(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "name",
    [
        "dnsmasq-judi.example",
        "www.dnsmasq-judi.example",  # dnsmasq entries cover the subtree
        "dnsmasq-togel.example",  # the second name of one directive
        "m.dnsmasq-null.example",
        "unbound-redirect.example",
        "x.unbound-redirect.example",
        *[n for entries in PARTS.values() for n in entries],
        "www.part4-kasino.example",
    ],
)
def test_listed_names_get_the_landing_answer(served: Blokir, name: str) -> None:
    reply = served.ask(name)
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rrset in reply.answer for rr in rrset] == [LANDING_V4]


def test_unbound_zone_type_keeps_its_answer(served: Blokir) -> None:
    for name in ("unbound-judi.example", "a.b.unbound-judi.example"):
        reply = served.ask(name)
        assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer


def test_forwarding_rule_is_not_a_block(served: Blokir) -> None:
    reply = served.ask("corp.example")
    assert [rr.to_text() for rrset in reply.answer for rr in rrset] != [LANDING_V4]


def test_serve_refuses_a_list_that_gives_nothing(tmp_path: Path) -> None:
    server = Blokir(tmp_path, 9)  # never started: the upstream is not reached
    (tmp_path / "mirror.dnsmasq.conf").write_text(DNSMASQ)
    with server.config.open("a") as config:
        config.write(
            '[[lists]]\nname = "dnsmasq-mirror"\npath = "mirror.dnsmasq.conf"\nformat = "plain"\n'
        )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "resolver", "serve", "-c", str(server.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert done.returncode == 2
    assert "refusing to start: list dnsmasq-mirror: no entry from 5 lines" in done.stderr
    assert "--force" in done.stderr
    assert not (tmp_path / "index.blkx").exists()
