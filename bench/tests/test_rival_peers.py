"""The resolver benchmark's pdns<N>, dnsdist<N> and blokirq<N> peers: their names, the configs
they are given, and (when the binaries are installed) each one started by the benchmark's own
code on a tiny list, answering a blocked and an allowed name as the benchmark expects."""

from __future__ import annotations

import argparse
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from bench import report as reporting
from bench.resolver_bench import (
    LANDING_IPV4,
    LANDING_IPV6,
    QUERYLOG_SAMPLE,
    Context,
    Load,
    Peer,
    host_name,
    load_check,
    parse_peers,
    prepare_blokir,
    prepare_rpz,
    querylog_bytes,
    querylog_path,
    start_peer,
    start_upstream,
    verify,
)
from bench.rival_servers import (
    dnsdist_conf,
    pdns_conf,
    pdns_counters,
    pdns_lua,
    pdns_socket_dir,
)
from bench.servers import (
    Deadline,
    addresses,
    ask,
    blokir_config,
    find_binary,
    free_port,
    wait_for_answer,
)
from resolver.config.validate import parse_config

LISTED = ("blocked.example", "www.bad.test", "third.example")


def test_new_peer_names_parse() -> None:
    peers = parse_peers("pdns1,pdns4,dnsdist1,dnsdist3,blokirq2")
    assert [(p.name, p.kind, p.threads, p.querylog) for p in peers] == [
        ("pdns1", "pdns", 1, False),
        ("pdns4", "pdns", 4, False),
        ("dnsdist1", "dnsdist", 1, False),
        ("dnsdist3", "dnsdist", 3, False),
        ("blokirq2", "blokir", 2, True),
    ]
    assert all(p.uses_list for p in peers)
    for bad in ("pdns0", "dnsdist1m", "pdns1p", "blokirq0", "blokirq", "pdns"):
        with pytest.raises(SystemExit, match="unknown peer"):
            parse_peers(bad)
    with pytest.raises(SystemExit, match="given twice"):
        parse_peers("blokirq1,blokirq1")


def test_a_list_too_slow_to_load_skips_the_peer() -> None:
    assert load_check("dnsdist", 1_000_000, 300.0) is None
    why = load_check("pdns", 10_000_000, 60.0)
    assert why is not None and why.startswith("skipped: 10,000,000 names would take about 150 s")
    assert load_check("blokir", 10**9, 1.0) is None  # no estimate: it always runs


def test_pdns_config_forwards_to_loopback_with_the_rpz(tmp_path: Path) -> None:
    text = pdns_conf(tmp_path, port=5300, threads=3, upstream_port=5301, tag="pdns3-run0")
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert settings["local-address"] == "127.0.0.1"
    assert settings["local-port"] == "5300"
    assert settings["threads"] == "3"
    assert settings["forward-zones-recurse"] == ".=127.0.0.1:5301"
    assert settings["dont-query"] == ""  # 127.0.0.0/8 is in its default, and NSD is there
    assert settings["allow-from"] == "127.0.0.0/8"
    assert settings["security-poll-suffix"] == ""  # no query off the machine
    assert settings["daemon"] == "no"
    assert settings["reuseport"] == "yes" and settings["pdns-distributes-queries"] == "no"
    assert settings["socket-dir"] == f"{tmp_path}/pdns3-run0"
    assert settings["lua-config-file"] == f"{tmp_path}/pdns3-run0.lua"
    assert "packetcache" not in text.replace("max-packetcache-entries", "")  # cache left on
    lua = pdns_lua(tmp_path / "bench.rpz")
    assert re.fullmatch(rf'rpzFile\("{tmp_path}/bench\.rpz", \{{ policyName = .*\}}\)\n', lua)


def test_dnsdist_config_listens_once_per_thread_and_spoofs_the_landing(tmp_path: Path) -> None:
    listed = tmp_path / "list.txt"
    text = dnsdist_conf(
        port=5300,
        threads=3,
        upstream_port=5301,
        list_path=listed,
        landing_ipv4="192.0.2.10",
        landing_ipv6="2001:db8::10",
    )
    local = r'"127\.0\.0\.1:5300", \{ reusePort = true \}'
    assert len(re.findall(rf"^setLocal\({local}\)$", text, re.M)) == 1
    assert len(re.findall(rf"^addLocal\({local}\)$", text, re.M)) == 2
    assert re.search(r'newServer\(\{ address = "127\.0\.0\.1:5301", sockets = 3\b', text)
    assert f'io.lines("{listed}")' in text and "newSuffixMatchNode()" in text
    assert 'SpoofAction({ "192.0.2.10", "2001:db8::10" }, { ttl = 60' in text
    assert "setCache(newPacketCache(" in text
    assert 'setSecurityPollSuffix("")' in text
    for off in ("controlSocket", "webserver", "carbonServer"):
        assert off not in text
    with pytest.raises(ValueError, match="not a plain Lua string"):
        dnsdist_conf(
            port=1,
            threads=1,
            upstream_port=2,
            list_path=Path('/tmp/a"b'),
            landing_ipv4="192.0.2.10",
            landing_ipv6="2001:db8::10",
        )


def test_blokirq_config_turns_the_query_log_on(tmp_path: Path) -> None:
    def config(logged: Path | None) -> Path:
        return blokir_config(
            tmp_path / "b.toml",
            port=5300,
            workers=2,
            upstream_port=5301,
            list_path=tmp_path / "list.txt",
            index_path=tmp_path / "i.blkx",
            landing_ipv4=LANDING_IPV4,
            landing_ipv6=LANDING_IPV6,
            querylog=logged,
            querylog_sample=QUERYLOG_SAMPLE,
        )

    path = config(tmp_path / "q.dnstap")
    parsed = parse_config(path.read_text(), path)
    assert parsed.querylog.dnstap == f"file:{tmp_path}/q.dnstap"
    assert parsed.querylog.sample == 100
    assert parsed.querylog.file_max_bytes >= 2**40  # never rotated inside a run
    path = config(None)
    assert parse_config(path.read_text(), path).querylog.dnstap == ""


def test_report_gives_ratio_columns_against_pdns_and_dnsdist() -> None:
    def summary(qps: float, **more: float) -> dict[str, object]:
        base = {"runs": 1, "qps_median": qps, "qps_all": [qps], "rss_mib": 10.0}
        return base | {"pss_mib": 9.0, "lost_total": 0, "sent_total": 10} | more

    peers = {
        "blokir1": {"summary": summary(120.0)},
        "blokirq1": {
            "summary": summary(117.0, querylog_bytes=2**20, querylog_bytes_per_answer=3.5)
        },
        "pdns1": {"summary": summary(60.0)},
        "dnsdist1": {"summary": summary(240.0)},
        "pdns2": {"skipped": "skipped: would not fit"},
    }
    fake = {"sizes": {"1000000": {"size": 1_000_000, "peers": peers}}}
    text = reporting.markdown(fake)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| server |"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    header = table[0].split(" | ")
    assert "vs pdns1" in header and "vs dnsdist1" in header
    rows = {line.split(" | ")[0][2:]: line for line in table[2:]}
    for line in rows.values():
        assert line.count("|") == table[0].count("|")
    cells = rows["blokir1"].split(" | ")
    assert cells[header.index("vs pdns1")] == "2.00"
    assert cells[header.index("vs dnsdist1")] == "0.50"
    assert "blokirq1 1.0 MiB (3.5 B per answer)" in text
    goal = next(g for g in reporting.goals(fake) if "query log" in g["goal"])
    assert goal["met"] is True and goal["value"] == pytest.approx(117 / 120)


# -- each new peer, started by the benchmark on a tiny list -------------------------------------


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    if find_binary("nsd") is None:
        pytest.skip("nsd is not installed")
    tmp = tmp_path_factory.mktemp("rivals")
    listed = tmp / "list.txt"
    listed.write_text("\n".join(LISTED) + "\n")
    deadline = Deadline(120)
    nsd, nsd_port = start_upstream(tmp, 30, deadline)
    try:
        load = Load("dnsperf", tmp / "unused-queries.txt", 1, 2.0, None)
        args = argparse.Namespace(dnsmasq_format="dnsmasq", start_timeout=60.0, querylog_dir=None)
        yield Context(tmp, nsd_port, len(LISTED), listed, load, deadline, args, LISTED[0])
    finally:
        nsd.stop()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "binary"),
    [("pdns1", "pdns_recursor"), ("dnsdist2", "dnsdist"), ("blokirq1", None)],
)
def test_new_peer_blocks_and_forwards(context: Context, name: str, binary: str | None) -> None:
    if binary and find_binary(binary) is None:
        pytest.skip(f"{binary} is not installed")
    (peer,) = parse_peers(name)
    if peer.kind == "pdns" and context.rpz is None:
        prepare_rpz(context)
    if peer.kind == "blokir" and context.blokir_index is None:
        prepare_blokir(context)
    port = free_port()
    tag = f"{name}-test"
    server, _conf = start_peer(peer, port, context, tag)
    try:
        wait_for_answer(server, port, LISTED[0], time.monotonic() + 60, LANDING_IPV4)
        # The benchmark's own probes: allowed names through NSD, listed names and names below.
        verify(peer, port, context)
        blocked = ask(port, "cdn." + LISTED[1], "AAAA")
        assert addresses(blocked, "AAAA") == [LANDING_IPV6]
        allowed = ask(port, host_name(7), "A")
        assert allowed.rcode() == dns.rcode.NOERROR and addresses(allowed) == ["198.51.100.8"]
        # Other types of a blocked name: NODATA, no address of any kind.
        other = ask(port, LISTED[2], "HTTPS")
        assert other.rcode() == dns.rcode.NOERROR and not other.answer
        if peer.querylog:
            _wait_for_log(context, tag, Peer(name, "blokir", 1))
        if peer.kind == "pdns" and find_binary("rec_control"):
            # The counters the cache-hit column is read from: the probes above went through.
            counters = pdns_counters(pdns_socket_dir(context.tmp, tag))
            assert counters["questions"] >= 10
            assert 0 <= counters["packetcache-hits"] < counters["questions"]
    finally:
        server.stop()


def _wait_for_log(context: Context, tag: str, peer: Peer) -> None:
    """The blocked queries above are always logged: the dnstap file fills within seconds."""
    limit = time.monotonic() + 10
    while querylog_bytes(context, tag) == 0:
        assert time.monotonic() < limit, f"{peer.name}: nothing in {querylog_path(context, tag)}"
        time.sleep(0.1)
