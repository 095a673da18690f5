"""The per-worker query pipeline without sockets: memo, cache patching, ACL, CNAME blocking."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolver import NATIVE, metrics, pipeline
from resolver.compile import compile_lists, write_index
from resolver.dns.query import Query
from resolver.index import open_index
from resolver.pipeline import Resolver
from tests.unit.resolvers import make_resolver


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    resolver = make_resolver(tmp_path)
    clock = FakeClock()
    resolver._clock = clock
    resolver.cache._clock = clock
    return resolver


def query(name: str, qid: int = 1, rdtype: str = "A", **kw: object) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    message.id = qid
    return message.to_wire()


def test_blocked_answers_are_remembered_per_exact_question(resolver: Resolver) -> None:
    first = resolver.handle(query("judi-contoh.example", 1), "127.0.0.1")[0]
    second = resolver.handle(query("judi-contoh.example", 2), "127.0.0.1")[0]
    assert isinstance(first, bytes) and isinstance(second, bytes)
    assert first[2:] == second[2:] and second[:2] == b"\x00\x02"
    assert resolver.stats.outcome_total(metrics.BLOCKED) == 2
    assert sum(resolver.stats.blocked_by_policy_id.values()) == 2
    for qid in range(3, 9):
        resolver.handle(query("judi-contoh.example", qid), "127.0.0.1")[0]
    # The top-K sees one block in metrics.SAMPLE, weighted: 8 blocks, one sample of weight 8.
    assert resolver.stats.top.interval == {(b"judi-contoh.example", 1): metrics.SAMPLE}
    assert resolver.stats.outcome_total(metrics.BLOCKED) == 8
    assert len(resolver._memo) == 1
    for qid in (30, 31):  # remembered from its second sighting on (test_blocked_doorkeeper)
        upper = resolver.handle(query("JUDI-contoh.example", qid), "127.0.0.1")[0]
        assert isinstance(upper, bytes)
        assert str(dns.message.from_wire(upper).question[0].name) == "JUDI-contoh.example."
    assert len(resolver._memo) == 2  # case is part of the remembered question


def test_blocked_doorkeeper_remembers_names_asked_twice_only(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(50):  # a scan, or random labels under a blocked zone: each name once
        answer = resolver.handle(query(f"r{i}.judi-contoh.example"), "127.0.0.1")[0]
        assert isinstance(answer, bytes)
    assert resolver._memo == {}
    assert resolver.stats.outcome_total(metrics.BLOCKED) == 50
    again = query("r7.judi-contoh.example", 99)
    assert isinstance(resolver.handle(again, "127.0.0.1")[0], bytes)
    assert list(resolver._memo) == [again[2:]]
    # The seen-once bits are cleared after SEEN_CLEAR_AFTER names: a third sighting is needed.
    monkeypatch.setattr(pipeline, "SEEN_CLEAR_AFTER", 3)
    resolver._seen_count = 0
    for name in ("a.judi-contoh.example", "b.judi-contoh.example", "c.judi-contoh.example"):
        resolver.handle(query(name), "127.0.0.1")[0]
    assert resolver._seen_count == 0 and not any(resolver._seen)
    resolver.handle(query("a.judi-contoh.example"), "127.0.0.1")[0]
    assert query("a.judi-contoh.example")[2:] not in resolver._memo
    resolver.handle(query("a.judi-contoh.example"), "127.0.0.1")[0]
    assert query("a.judi-contoh.example")[2:] in resolver._memo


def test_cache_hits_patch_id_and_case_and_age_their_ttls(resolver: Resolver) -> None:
    asked = resolver.handle(query("www.allowed.example", 7), "127.0.0.1")[0]
    assert isinstance(asked, Query)  # a miss: to be forwarded
    reply = dns.message.make_response(dns.message.from_wire(query("www.allowed.example", 7)))
    reply.answer.append(dns.rrset.from_text("www.allowed.example.", 300, "IN", "A", "198.51.100.1"))
    resolver.cache.put(resolver._cache_key(asked), reply.to_wire())

    hit = resolver.handle(query("WWW.allowed.example", 8), "127.0.0.1")[0]
    assert isinstance(hit, bytes)
    message = dns.message.from_wire(hit)
    assert message.id == 8 and str(message.question[0].name) == "WWW.allowed.example."
    assert message.answer[0].ttl == 300
    again = resolver.handle(query("WWW.allowed.example", 9), "127.0.0.1")[0]
    assert isinstance(again, bytes) and again[2:] == hit[2:]  # from the memo
    assert resolver.stats.outcome_total(metrics.CACHED) == 2

    resolver._clock.now += 2.5  # type: ignore[attr-defined]
    aged = resolver.handle(query("WWW.allowed.example", 10), "127.0.0.1")[0]
    assert isinstance(aged, bytes)
    message = dns.message.from_wire(aged)
    assert message.answer[0].ttl == 298  # the memo entry went stale
    assert message.id == 10 and str(message.question[0].name) == "WWW.allowed.example."
    assert resolver.stats.outcome_total(metrics.CACHED) == 3
    assert (resolver.cache.hits, resolver.cache.misses) == (2, 1)  # the memo hit skips it

    resolver._clock.now += 400  # type: ignore[attr-defined]
    assert isinstance(resolver.handle(query("WWW.allowed.example", 11), "127.0.0.1")[0], Query)
    assert resolver.cache.misses == 2  # the renewal's miss is counted once, by the full path


# Compiled, pipeline.py calls parse_query directly and never sees the patch below, so this
# runs in the pure-Python pass of scripts/test (BLOKIR_PURE_PYTHON=1).
@pytest.mark.skipif(NATIVE.compiled, reason="spies on a module function: pure-Python pass only")
def test_a_remembered_cache_answer_is_renewed_without_a_parse(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = resolver.handle(query("www.allowed.example", 7), "127.0.0.1")[0]
    assert isinstance(asked, Query)
    reply = dns.message.make_response(dns.message.from_wire(query("www.allowed.example", 7)))
    reply.answer.append(dns.rrset.from_text("www.allowed.example.", 300, "IN", "A", "198.51.100.1"))
    resolver.cache.put(resolver._cache_key(asked), reply.to_wire())
    assert isinstance(resolver.handle(query("www.allowed.example", 8), "127.0.0.1")[0], bytes)

    def no_parse(data: bytes) -> Query:
        raise AssertionError("parsed")

    monkeypatch.setattr(pipeline, "parse_query", no_parse)
    for second in range(1, 4):
        resolver._clock.now += 1.0  # type: ignore[attr-defined]
        aged = resolver.handle(query("www.allowed.example", 20 + second), "127.0.0.1")[0]
        assert isinstance(aged, bytes)
        assert dns.message.from_wire(aged).answer[0].ttl == 300 - second
    # Gone from the cache (evicted): the renewal gives up and the full path forwards it.
    monkeypatch.undo()
    resolver.cache.discard(resolver._cache_key(asked))
    resolver._clock.now += 1.0  # type: ignore[attr-defined]
    assert isinstance(resolver.handle(query("www.allowed.example", 30), "127.0.0.1")[0], Query)


def test_a_renewed_answer_that_no_longer_fits_takes_the_full_path(resolver: Resolver) -> None:
    name = "big.allowed.example"
    asked = resolver.handle(query(name, 1, "TXT"), "127.0.0.1")[0]
    assert isinstance(asked, Query)
    small = dns.message.make_response(dns.message.from_wire(query(name, 1, "TXT")))
    small.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "TXT", '"short"'))
    resolver.cache.put(resolver._cache_key(asked), small.to_wire())
    assert isinstance(resolver.handle(query(name, 2, "TXT"), "127.0.0.1")[0], bytes)
    big = dns.message.make_response(dns.message.from_wire(query(name, 1, "TXT")))
    big.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "TXT", '"' + "x" * 250 + '"'))
    big.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "TXT", '"' + "y" * 250 + '"'))
    resolver.cache.put(resolver._cache_key(asked), big.to_wire())  # replaced (a refetch)
    resolver._clock.now += 1.0  # type: ignore[attr-defined]
    answer = resolver.handle(query(name, 3, "TXT"), "127.0.0.1")[0]
    assert isinstance(answer, bytes)
    assert dns.message.from_wire(answer).flags & dns.flags.TC  # over 512 octets: truncated
    assert resolver.stats.truncated == 1


def test_acl_refuses_outsiders_and_never_remembers_for_them(resolver: Resolver) -> None:
    resolver.handle(query("judi-contoh.example"), "127.0.0.1")[0]
    refused = resolver.handle(query("judi-contoh.example"), "203.0.113.9")[0]
    assert isinstance(refused, bytes)
    assert dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
    assert resolver.stats.outcome_total(metrics.REFUSED) == 1


def test_tcp_answers_are_neither_remembered_nor_truncated(resolver: Resolver) -> None:
    answer = resolver.handle(query("judi-contoh.example"), "127.0.0.1", udp=False)[0]
    assert isinstance(answer, bytes) and resolver._memo == {}


def test_reload_forgets_remembered_answers(resolver: Resolver, tmp_path: Path) -> None:
    resolver.handle(query("judi-contoh.example"), "127.0.0.1")[0]
    resolver.handle(query("judi-contoh.example"), "127.0.0.1")[0]
    assert resolver._memo
    (tmp_path / "block.txt").write_text("other.example\n")
    write_index(compile_lists(resolver.config.list_specs()), tmp_path / "j.blkx")
    resolver.use_index(open_index(tmp_path / "j.blkx"))
    assert isinstance(resolver.handle(query("judi-contoh.example"), "127.0.0.1")[0], Query)


def test_memo_generations_keep_hot_entries(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "MEMO_GENERATION", 3)
    hot = query("judi-contoh.example")
    resolver.handle(hot, "127.0.0.1")[0]
    resolver.handle(hot, "127.0.0.1")[0]
    for i in range(5):  # cold blocked names (asked twice: remembered) rotate the generations
        resolver.handle(query(f"n{i}.judi-contoh.example"), "127.0.0.1")[0]
        resolver.handle(query(f"n{i}.judi-contoh.example"), "127.0.0.1")[0]
        resolver.handle(hot, "127.0.0.1")[0]  # used each time: copied forward
    assert hot[2:] in resolver._memo or hot[2:] in resolver._memo_old
    assert len(resolver._memo) <= 3 and len(resolver._memo_old) <= 3


def test_cname_to_a_blocked_name_gets_the_block_answer(resolver: Resolver) -> None:
    asked = resolver.handle(query("alias.example", use_edns=0), "127.0.0.1")[0]
    assert isinstance(asked, Query)
    reply = dns.message.make_response(dns.message.from_wire(query("alias.example", use_edns=0)))
    reply.answer.append(
        dns.rrset.from_text("alias.example.", 60, "IN", "CNAME", "cdn.judi-contoh.example.")
    )
    reply.answer.append(
        dns.rrset.from_text("cdn.judi-contoh.example.", 60, "IN", "A", "203.0.113.5")
    )
    blocked = resolver._cname_block(asked, reply.to_wire())
    assert blocked is not None
    message = dns.message.from_wire(blocked)
    assert [rd.address for rrset in message.answer for rd in rrset] == ["192.0.2.10"]
    assert resolver.stats.blocked_by_policy_id == {1: 1}
    clean = dns.message.make_response(dns.message.from_wire(query("alias.example")))
    clean.answer.append(dns.rrset.from_text("alias.example.", 60, "IN", "CNAME", "fine.example."))
    assert resolver._cname_block(asked, clean.to_wire()) is None


def test_large_udp_answers_are_truncated_for_the_client(resolver: Resolver) -> None:
    asked = resolver.handle(query("big.example", rdtype="TXT"), "127.0.0.1")[0]
    assert isinstance(asked, Query)
    reply = dns.message.make_response(dns.message.from_wire(query("big.example", rdtype="TXT")))
    reply.answer.append(
        dns.rrset.from_text_list(
            "big.example.", 60, "IN", "TXT", [f'"{"x" * 200}{i}"' for i in range(5)]
        )
    )
    resolver.cache.put(resolver._cache_key(asked), reply.to_wire())
    small = resolver.handle(query("big.example", rdtype="TXT"), "127.0.0.1")[0]
    assert isinstance(small, bytes) and dns.message.from_wire(small).flags & dns.flags.TC
    full = resolver.handle(query("big.example", rdtype="TXT"), "127.0.0.1", udp=False)[0]
    assert isinstance(full, bytes) and not dns.message.from_wire(full).flags & dns.flags.TC


def test_rate_limit_refuses_over_the_limit_per_prefix(tmp_path: Path) -> None:
    resolver = make_resolver(tmp_path, server="ratelimit = 5")
    clock = FakeClock()
    assert resolver.ratelimiter is not None
    resolver.ratelimiter._clock = clock
    rcodes = [
        dns.message.from_wire(
            resolver.handle(query("judi-contoh.example", i), "10.1.2.3")[0]  # type: ignore[arg-type]
        ).rcode()
        for i in range(8)
    ]
    assert rcodes == [dns.rcode.NOERROR] * 5 + [dns.rcode.REFUSED] * 3
    # The same /24 shares the bucket; another /24 has its own.
    assert resolver.handle(query("judi-contoh.example"), "10.1.2.99")[0][3] & 0x0F == 5  # type: ignore[index]
    assert resolver.handle(query("judi-contoh.example"), "10.1.3.1")[0][3] & 0x0F == 0  # type: ignore[index]
    clock.now += 1.0  # five tokens a second
    assert resolver.handle(query("judi-contoh.example"), "10.1.2.3")[0][3] & 0x0F == 0  # type: ignore[index]
    assert resolver.stats.outcome_total(metrics.RATELIMITED) == 4


def test_a_reload_rechecks_cached_aliases_against_the_new_lists(
    resolver: Resolver, tmp_path: Path
) -> None:
    """An answer cached while its CNAME target was allowed must not outlive a reload that
    blocks the target: the next use drops it and the query goes upstream (and is blocked by
    the CNAME check there)."""
    asked = resolver.handle(query("alias.allowed.example", 7), "127.0.0.1")[0]
    assert isinstance(asked, Query)
    reply = dns.message.make_response(dns.message.from_wire(query("alias.allowed.example", 7)))
    reply.answer.append(
        dns.rrset.from_text("alias.allowed.example.", 300, "IN", "CNAME", "later.example.")
    )
    reply.answer.append(dns.rrset.from_text("later.example.", 300, "IN", "A", "198.51.100.9"))
    key = resolver._cache_key(asked)
    resolver.cache.put(key, reply.to_wire())
    resolver._remember_aliases(key, resolver._alias_targets(reply.to_wire()))
    assert isinstance(resolver.handle(query("alias.allowed.example", 8), "127.0.0.1")[0], bytes)

    unrelated = tmp_path / "other.blkx"
    (tmp_path / "block.txt").write_text("judi-contoh.example\nunrelated.example\n")
    write_index(compile_lists(resolver.config.list_specs()), unrelated)
    resolver.use_index(open_index(unrelated))
    assert isinstance(resolver.handle(query("alias.allowed.example", 9), "127.0.0.1")[0], bytes)

    blocking = tmp_path / "blocking.blkx"
    (tmp_path / "block.txt").write_text("judi-contoh.example\nlater.example\n")
    write_index(compile_lists(resolver.config.list_specs()), blocking)
    resolver.use_index(open_index(blocking))
    again = resolver.handle(query("alias.allowed.example", 10), "127.0.0.1")[0]
    assert isinstance(again, Query)  # not served from the cache: forwarded, then CNAME-blocked
    assert resolver._cname_block(again, reply.to_wire()) is not None


def test_a_reload_retires_the_memo_and_frees_it_in_small_steps(
    resolver: Resolver, tmp_path: Path
) -> None:
    for qid in range(600):
        for _ in range(2):  # the second sighting is remembered
            resolver.handle(query(f"x{qid}.judi-contoh.example", qid), "127.0.0.1")[0]
    assert resolver.memo_size() == 600
    write_index(compile_lists(resolver.config.list_specs()), tmp_path / "again.blkx")
    resolver.use_index(open_index(tmp_path / "again.blkx"))
    assert resolver.memo_size() == 0  # nothing remembered from the old lists is answered
    assert sum(len(m) for m in resolver.retired_memos) == 600
    resolver.free_retired(budget=256)
    assert sum(len(m) for m in resolver.retired_memos) == 344
    for _ in range(3):
        resolver.free_retired(budget=256)
    assert resolver.retired_memos == []


def test_a_reload_applies_upstream_and_cache_settings(tmp_path: Path) -> None:
    """`[upstream]` and `[cache]` change on reconfigure (a reload), not only at start: a new
    pool when the servers change, keeping what it knew of a server it still has; cache bounds
    that evict at once; in-flight caps and serve-stale from the next query."""
    resolver = make_resolver(tmp_path, servers='["127.0.0.1:9", "127.0.0.1:10"]')
    old_pool = resolver.upstream
    kept = old_pool.stats[1]
    kept.requests, kept.up = 7, False
    for i in range(5):
        resolver.cache.put((f"n{i}.example".encode(), 1, 1, 0), _answer(f"n{i}.example"))
    assert len(resolver.cache) == 5
    (tmp_path / "next").mkdir()
    new_config = make_resolver(
        tmp_path / "next",
        servers='["127.0.0.1:10", "127.0.0.1:11"]',
        upstream="max_inflight = 7",
        cache="max_entries = 2\nserve_stale = true",
    ).config
    resolver.reconfigure(new_config, resolver.index)
    pool = resolver.upstream
    assert pool is not old_pool
    assert [s.address for s in pool.stats] == [("127.0.0.1", 10), ("127.0.0.1", 11)]
    assert pool.stats[0] is kept and pool.stats[0].requests == 7 and not pool.stats[0].up
    assert pool.stats[1].requests == 0
    assert len(resolver.cache) == 2 and resolver.cache.max_entries == 2
    assert resolver.cache.get((b"n4.example", 1, 1, 0)) is not None  # the newest stay
    assert resolver.inflight.max_total == 7 and resolver._serve_stale
    resolver.reconfigure(new_config, resolver.index)
    assert resolver.upstream is pool  # nothing changed: the same pool


def _answer(name: str) -> bytes:
    request = dns.message.make_query(name, "A")
    response = dns.message.make_response(request)
    response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "A", "192.0.2.1"))
    return response.to_wire()
