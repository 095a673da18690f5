"""The query path's query log hooks (Resolver.use_querylog): every blocked answer is logged, 1 in
`sample` allowed ones, nothing once the log is off; the writer process is not started here, so
records stay in the log's encoder (decoded by tests/support/dnstap.py)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import dns.message
import dns.rrset

from resolver.config import QueryLogConfig
from resolver.querylog.client import QueryLog
from tests.support.dnstap import drain
from tests.unit.resolvers import make_resolver


def query(name: str, ident: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p for p in name.encode().split(b".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def test_blocked_always_allowed_sampled(tmp_path: Path) -> None:
    resolver = make_resolver(tmp_path, ["judi.example"])
    qlog = QueryLog(QueryLogConfig(dnstap="file:/nonexistent", sample=3))
    resolver.use_querylog(qlog)
    # An allowed name in the cache, as an upstream answer would have put it there.
    response = dns.message.make_response(dns.message.from_wire(query("ok.example", 1)))
    response.answer.append(dns.rrset.from_text("ok.example.", 300, "IN", "A", "198.51.100.1"))
    first, _ = resolver.handle(query("ok.example", 1), "127.0.0.1")
    assert not isinstance(first, bytes)  # a miss: forwarded
    resolver.cache.put(resolver._cache_key(first), response.to_wire())

    for n in range(4):  # parsed, then memo hits (from the second sighting on)
        assert isinstance(resolver.handle(query("judi.example", 100 + n), "127.0.0.1")[0], bytes)
    for n in range(7):  # cache, then memo hits
        assert isinstance(resolver.handle(query("ok.example", 200 + n), "127.0.0.1")[0], bytes)
    records = drain(qlog)
    blocked = [r for r in records if r.rule]
    allowed = [r for r in records if not r.rule]
    assert [(r.client, r.value) for r in blocked] == [("127.0.0.1", b"judi.example")] * 4
    assert {r.rule for r in blocked} == {b"list=t category=uncategorised action=landing"}
    assert [struct.unpack("!H", r.query[:2])[0] for r in blocked] == [100, 101, 102, 103]
    assert all(r.answer is not None and r.answer[:2] == r.query[:2] for r in records)
    assert [struct.unpack("!H", r.query[:2])[0] for r in allowed] == [202, 205]
    # Cut in the worker, before the record leaves it (client_prefix_v4 = 24 by default).
    assert {r.client for r in allowed} == {"127.0.0.0"}

    resolver.use_querylog(None)
    resolver.handle(query("judi.example", 300), "127.0.0.1")
    resolver.handle(query("ok.example", 301), "127.0.0.1")
    assert drain(qlog) == []


def test_only_blocked(tmp_path: Path) -> None:
    resolver = make_resolver(tmp_path, ["judi.example"])
    qlog = QueryLog(QueryLogConfig(dnstap="file:/nonexistent", sample=1, only_blocked=True))
    resolver.use_querylog(qlog)
    resolver.handle(query("judi.example", 1), "127.0.0.1")
    records = drain(qlog)
    assert len(records) == 1 and records[0].rule


def test_udp_records_take_the_wake_up_time(tmp_path: Path) -> None:
    """UDP answers given in handle carry the time the worker set for its wake-up (no clock read
    per logged query); a stream's answer reads the clock itself."""
    resolver = make_resolver(tmp_path, ["judi.example"])
    qlog = QueryLog(QueryLogConfig(dnstap="file:/nonexistent", sample=1))
    resolver.use_querylog(qlog)
    resolver.log_now = 12345.5
    for n in range(3):  # parsed, then from the memo
        resolver.handle(query("judi.example", n), "127.0.0.1")
    before = time.time()
    resolver.handle(query("judi.example", 9), "127.0.0.1", False)
    records = drain(qlog)
    assert [r.time for r in records[:3]] == [12345.5] * 3
    assert before <= records[3].time <= time.time()


def test_the_query_path_calls_back_once_per_batch(tmp_path: Path) -> None:
    """While the writer cannot take them (here: no writer at all) records pile up in the
    encoder; the query path calls QueryLog.full once per `every` records, not per record."""
    resolver = make_resolver(tmp_path, ["judi.example"])
    qlog = QueryLog(QueryLogConfig(dnstap="file:/nonexistent", sample=1000, queue=100_000))
    calls: list[int] = []
    qlog.full = lambda: calls.append(qlog.encoder.count)  # type: ignore[method-assign]
    resolver.use_querylog(qlog)
    for n in range(3 * qlog.every + 5):
        resolver.handle(query("judi.example", n), "127.0.0.1")
    assert calls == [qlog.every, 2 * qlog.every, 3 * qlog.every]
