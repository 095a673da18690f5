"""The Unbound plugin in a real Debian Unbound forwarding to a real NSD, queried with dnspython:
each block action, an allowed name, a CNAME into a blocked name, a live reload and a corrupt
index (refused, the old one keeps serving)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from resolver.cli import main as blokir
from resolver.plugins.unbound_setup import check, plugin_setup
from tests.support.processes import Deadline, ManagedProcess, find_binary, free_port, tail
from tests.support.servers import start_nsd, start_unbound, unbound_conf

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
LANDING = "192.0.2.80"
ZONE = "nsd.example."
ZONEFILE = """$ORIGIN nsd.example.
$TTL 300
@        SOA ns.nsd.example. host.nsd.example. 1 3600 600 86400 60
@        NS  ns.nsd.example.
ns       A   127.0.0.1
www      A   198.51.100.21
listed   A   198.51.100.22
later    A   198.51.100.23
alias    CNAME listed.nsd.example.
"""
LISTS = {
    "landing": "listed.nsd.example\nland.example\n",
    "nxdomain": "nx.example\n",
    "nodata": "nd.example\n",
    "refused": "rf.example\n",
}


def _config(tmp: Path) -> Path:
    text = [
        "[blocking]",
        'index_path = "blokir.blkx"',
        f'landing_ipv4 = "{LANDING}"',
        "ttl = 30",
        "[metrics]",
        'textfile = "blokir.prom"',
        "textfile_interval = 1",
    ]
    for action, names in LISTS.items():
        (tmp / f"{action}.txt").write_text(names)
        text += [
            "[[lists]]",
            f'name = "{action}-list"',
            f'path = "{action}.txt"',
            'category = "test"',
            f'action = "{action}"',
            'ede = "censored"',
        ]
    config = tmp / "blokir.toml"
    config.write_text("\n".join(text) + "\n")
    return config


@dataclass
class Plugin:
    tmp: Path
    config: Path
    port: int
    server: ManagedProcess

    def ask(self, name: str, rdtype: str = "A") -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, use_edns=0)
        last: Exception | None = None
        for _ in range(3):
            try:
                return dns.query.udp(query, LOOPBACK, port=self.port, timeout=2)
            except dns.exception.Timeout as exc:
                last = exc
        raise AssertionError(f"no answer for {name}: {last}; log:\n{tail(self.server.log, 40)}")

    def compile(self) -> None:
        assert blokir(["compile", "-c", str(self.config)]) == 0


def _ede(reply: dns.message.Message) -> list[int]:
    return [o.code for o in reply.options if o.otype == dns.edns.EDE]


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Plugin]:
    if find_binary("nsd") is None or find_binary("unbound") is None:
        pytest.skip("nsd or unbound not installed (scripts/install-test-deps installs them)")
    nsd_dir = tmp_path / "nsd"
    nsd_dir.mkdir()
    zonefile = nsd_dir / "nsd.example.zone"
    zonefile.write_text(ZONEFILE)
    nsd, nsd_port = start_nsd(nsd_dir, ZONE, zonefile, "www.nsd.example", Deadline(60))
    unbound: ManagedProcess | None = None
    try:
        config = _config(tmp_path)
        assert blokir(["compile", "-c", str(config)]) == 0
        setup = plugin_setup(config)
        port = free_port()
        extra = f'python:\n    python-script: "{setup.script}"\n'
        conf = unbound_conf(
            tmp_path,
            port,
            1,
            None,
            nsd_port,
            "plugin",
            modules="python iterator",
            extra=extra,
            env=setup.environment(),
        )
        unbound = start_unbound(conf, "unbound-plugin", env=setup.environment())
        plugin = Plugin(tmp_path, config, port, unbound)
        deadline = time.monotonic() + 30
        while "start of service" not in _log(tmp_path):
            unbound.check_alive()
            assert time.monotonic() < deadline, tail(tmp_path / "unbound-plugin.log", 40)
            time.sleep(0.1)
        yield plugin
    finally:
        if unbound is not None:
            unbound.stop()
        nsd.stop()


def _log(tmp: Path) -> str:
    path = tmp / "unbound-plugin.log"
    return path.read_text() if path.exists() else ""


def test_each_block_action_through_unbound(plugin: Plugin) -> None:
    landing = plugin.ask("www.land.example")
    assert [rd.address for rrset in landing.answer for rd in rrset] == [LANDING]
    assert landing.answer[0].ttl == 30 and _ede(landing) == [16]  # RFC 8914 Censored
    v6 = plugin.ask("www.land.example", "AAAA")  # no landing IPv6: NODATA with the SOA
    assert v6.rcode() == dns.rcode.NOERROR and not v6.answer
    assert v6.authority[0].rdtype == dns.rdatatype.SOA
    nx = plugin.ask("a.nx.example")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    assert _ede(nx) == [16]
    nodata = plugin.ask("nd.example", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    refused = plugin.ask("rf.example")
    assert refused.rcode() == dns.rcode.REFUSED and _ede(refused) == [16]
    # Answered again from Unbound's cache: the same block.
    again = plugin.ask("www.land.example")
    assert [rd.address for rrset in again.answer for rd in rrset] == [LANDING]
    nx_again = plugin.ask("a.nx.example")
    assert nx_again.rcode() == dns.rcode.NXDOMAIN


def test_allowed_and_cname_into_blocked(plugin: Plugin) -> None:
    allowed = plugin.ask("www.nsd.example")
    assert [rd.address for rrset in allowed.answer for rd in rrset] == ["198.51.100.21"]
    assert not _ede(allowed)
    alias = plugin.ask("alias.nsd.example")  # CNAME into listed.nsd.example
    assert [rd.address for rrset in alias.answer for rd in rrset] == [LANDING]
    assert all(rrset.rdtype != dns.rdatatype.CNAME for rrset in alias.answer)
    assert _ede(alias) == [16]
    cached = plugin.ask("alias.nsd.example")  # the chain was replaced in the cache too
    assert [rd.address for rrset in cached.answer for rd in rrset] == [LANDING]
    # Metrics: the textfile names each list's blocked answers.
    deadline = time.monotonic() + 10
    prom = plugin.tmp / "blokir.prom"
    want = 'blokir_blocked_total{action="landing",category="test",list="landing-list"} 1.0'
    for n in range(1000):
        if want in (prom.read_text() if prom.exists() else ""):
            break
        plugin.ask(f"miss{n}.nsd.example")  # written from the query path: a cache miss
        assert time.monotonic() < deadline, prom.read_text() if prom.exists() else "no file"
        time.sleep(0.3)


def test_reload_picks_up_a_new_index_without_a_restart(plugin: Plugin) -> None:
    pid = plugin.server.pid
    (plugin.tmp / "nxdomain.txt").write_text("nx.example\nlater.nsd.example\n")
    plugin.compile()
    deadline = time.monotonic() + 10
    answers = 0
    for n in range(1000):  # cache misses reach the module; each is answered during the swap
        reply = plugin.ask(f"miss{n}.nsd.example")
        answers += 1
        assert reply.rcode() == dns.rcode.NXDOMAIN and not _ede(reply)
        if "loaded (" in _log(plugin.tmp):
            break
        assert time.monotonic() < deadline, _log(plugin.tmp)
        time.sleep(0.2)
    later = plugin.ask("later.nsd.example")
    assert later.rcode() == dns.rcode.NXDOMAIN and _ede(later) == [16]
    assert plugin.server.pid == pid and plugin.server.proc.poll() is None
    assert answers >= 1


def test_a_corrupt_index_is_refused_and_the_old_one_serves(plugin: Plugin) -> None:
    index = plugin.tmp / "blokir.blkx"
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the data: the checksum catches it
    _replace(index, bytes(data))
    deadline = time.monotonic() + 10
    for n in range(1000):
        if "refused" in _log(plugin.tmp):
            break
        plugin.ask(f"miss{n}.nsd.example")
        assert time.monotonic() < deadline, _log(plugin.tmp)
        time.sleep(0.2)
    fresh = plugin.ask("fresh.land.example")  # never asked before: decided by the old index
    assert [rd.address for rrset in fresh.answer for rd in rrset] == [LANDING]
    _replace(index, bytes(data[: len(data) // 2]))  # and half a file
    deadline = time.monotonic() + 10
    for n in range(1000):
        if _log(plugin.tmp).count("new index refused") >= 2:
            break
        plugin.ask(f"again{n}.nsd.example")
        assert time.monotonic() < deadline, _log(plugin.tmp)
        time.sleep(0.2)
    other = plugin.ask("other.land.example")
    assert [rd.address for rrset in other.answer for rd in rrset] == [LANDING]


def _replace(index: Path, data: bytes) -> None:
    """A bad file put in place by rename, as every writer of the index does (an in-place write
    would change the pages the serving mapping reads: docs/plugin-unbound.md, Limits)."""
    temporary = index.with_name(".incoming")
    temporary.write_bytes(data)
    os.replace(temporary, index)


def test_blokir_plugin_unbound_check(plugin: Plugin) -> None:
    ok, detail = check(plugin_setup(plugin.config))
    assert ok, detail
    broken = plugin.tmp / "broken.toml"
    broken.write_text(plugin.config.read_text().replace("blokir.blkx", "missing.blkx"))
    ok, detail = check(plugin_setup(broken))
    assert not ok and "missing.blkx" in detail
