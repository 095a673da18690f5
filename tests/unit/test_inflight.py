"""In-flight caps, coalescing and serve-stale: the zone heuristic, the table, and
Resolver.forward against a scripted upstream (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolver import metrics
from resolver.config import Config, ConfigError, parse_config
from resolver.dns.query import Query
from resolver.inflight import InflightTable, zone_of
from resolver.pipeline import Resolver
from tests.unit.resolvers import make_resolver

# -- zone_of ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qname", "zone"),
    [
        (b"x1.y2.victim.example", b"victim.example"),
        (b"victim.example", b"victim.example"),
        (b"example", b"example"),
        (b"", b""),
        (b"a.b.tokopedia.co.id", b"tokopedia.co.id"),
        (b"www.ui.ac.id", b"ui.ac.id"),
        (b"www.kominfo.go.id", b"kominfo.go.id"),
        (b"x.toko.my.id", b"toko.my.id"),
        (b"co.id", b"co.id"),
        (b"a.bbc.co.uk", b"bbc.co.uk"),
        (b"deep.sub.example.com", b"example.com"),  # "example" is not a short label
        (b"www.example.id", b"example.id"),
    ],
)
def test_zone_of(qname: bytes, zone: bytes) -> None:
    assert zone_of(qname) == zone


# -- the table ----------------------------------------------------------------------------


def test_table_caps_per_zone_and_in_total_and_forgets_finished_queries() -> None:
    async def body() -> None:
        table: InflightTable[str, int] = InflightTable(max_total=3, max_per_zone=2)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(asyncio.sleep(0, result=i)) for i in range(3)]
        assert table.over_cap(b"a.example") is None
        table.add("q1", b"a.example", tasks[0])
        table.add("q2", b"a.example", tasks[1])
        assert table.over_cap(b"a.example") == "zone" and table.rejected_zone == 1
        assert table.over_cap(b"b.example") is None
        table.add("q3", b"b.example", tasks[2])
        assert table.over_cap(b"c.example") == "total" and table.rejected_total == 1
        assert table.find("q2") is tasks[1] and table.coalesced == 1
        assert table.find("nope") is None and table.coalesced == 1
        with pytest.raises(KeyError):
            table.add("q1", b"a.example", tasks[0])
        table.remove("q1", b"a.example")
        table.remove("q3", b"b.example")
        assert len(table) == 1 and table.zone_count(b"b.example") == 0
        assert table._per_zone == {b"a.example": 1}  # no empty zones left behind
        assert table.over_cap(b"a.example") is None
        assert table.peak == 3
        await asyncio.gather(*tasks)

    asyncio.run(body())


def test_table_rejects_caps_below_one() -> None:
    with pytest.raises(ValueError):
        InflightTable(0, 1)
    with pytest.raises(ValueError):
        InflightTable(1, 0)


# -- Resolver.forward ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedUpstream:
    """Stands in for UpstreamPool: answers every query with `answer(request)` once `release` is
    set (None: the upstreams failed). Counts the queries it was asked."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []
        self.release = asyncio.Event()
        self.answer: Callable[[bytes], bytes | None] = lambda request: reply(request)
        self.stats = ()

    async def query(self, request: bytes) -> bytes | None:
        self.asked.append(request)
        await self.release.wait()
        return self.answer(request)


def reply(request: bytes, address: str = "198.51.100.7", ttl: int = 300) -> bytes:
    message = dns.message.from_wire(request)
    response = dns.message.make_response(message)
    name = message.question[0].name
    response.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", address))
    return response.to_wire()


def make_clocked_resolver(
    tmp_path: Path, upstream_extra: str = "", cache_extra: str = ""
) -> Resolver:
    resolver = make_resolver(tmp_path, upstream=upstream_extra, cache=cache_extra)
    clock = FakeClock()
    resolver._clock = clock
    resolver.cache._clock = clock
    return resolver


def query(name: str, qid: int, edns: int = -1) -> bytes:
    message = dns.message.make_query(name, "A", use_edns=edns)
    message.id = qid
    return message.to_wire()


def parsed(resolver: Resolver, data: bytes) -> Query:
    result = resolver.handle(data, "127.0.0.1")[0]
    assert isinstance(result, Query), "expected a cache miss"
    return result


def forward_all(
    resolver: Resolver, upstream: ScriptedUpstream, datas: list[bytes], release_after: float = 0
) -> list[bytes | None]:
    """Starts a forward per query at once, releases the upstream, returns the answers."""

    async def body() -> list[bytes | None]:
        queries = [parsed(resolver, data) for data in datas]
        tasks = [
            asyncio.ensure_future(resolver.forward(q, d, metrics.UDP))
            for q, d in zip(queries, datas, strict=True)
        ]
        await asyncio.sleep(release_after)
        upstream.release.set()
        return [answer for answer, _ in await asyncio.gather(*tasks)]

    return asyncio.run(asyncio.wait_for(body(), 5))


def scripted(resolver: Resolver) -> ScriptedUpstream:
    fake = ScriptedUpstream()
    resolver.upstream = fake  # type: ignore[assignment]
    return fake


def test_identical_misses_share_one_upstream_query_each_with_its_own_id_and_case(
    tmp_path: Path,
) -> None:
    resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)
    spellings = ["www.shared.example", "WWW.Shared.example", "www.SHARED.EXAMPLE"]
    datas = [query(spellings[i % 3], qid=100 + i) for i in range(6)]
    answers = forward_all(resolver, upstream, datas)
    assert len(upstream.asked) == 1
    for i, answer in enumerate(answers):
        assert answer is not None
        message = dns.message.from_wire(answer)
        assert message.id == 100 + i
        assert message.question[0].name.to_text() == spellings[i % 3] + "."
        assert [rd.address for rd in message.answer[0]] == ["198.51.100.7"]
    assert resolver.stats.upstream_coalesced == 5
    assert resolver.stats.outcome_total(metrics.ALLOWED) == 6
    assert len(resolver.inflight) == 0 and resolver.stats.upstream_inflight == 0
    assert resolver.stats.upstream_inflight_peak == 1
    assert resolver.cache.inserts == 1  # stored once, by the shared query
    hit = resolver.handle(query("www.shared.example", 7), "127.0.0.1")[0]
    assert isinstance(hit, bytes)  # the next asker is a cache hit


def test_different_questions_are_not_coalesced(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)
    datas = [query("a.example", 1), query("b.example", 2), query("a.example", 3, edns=0)]
    dnssec = dns.message.make_query("a.example", "A", want_dnssec=True)  # DO is in the key
    datas.append(dnssec.to_wire())
    forward_all(resolver, upstream, datas)
    assert len(upstream.asked) == 4  # EDNS, DO and the name all make a question distinct


def test_per_zone_cap_answers_servfail_with_ede_and_spares_other_zones(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path, "max_inflight = 10\nmax_inflight_per_zone = 2")
    upstream = scripted(resolver)
    datas = [query(f"r{i}.victim.example", i, edns=0) for i in range(4)]
    datas.append(query("www.other.example", 9, edns=0))
    answers = forward_all(resolver, upstream, datas)
    assert len(upstream.asked) == 3  # two victim names and the other zone
    rcodes = [dns.message.from_wire(a).rcode() for a in answers if a is not None]
    assert rcodes == [dns.rcode.NOERROR] * 2 + [dns.rcode.SERVFAIL] * 2 + [dns.rcode.NOERROR]
    refused = dns.message.from_wire(answers[2] or b"")
    (ede,) = refused.options
    assert isinstance(ede, dns.edns.EDEOption) and ede.code == dns.edns.EDECode.OTHER
    assert ede.text == "too many queries in flight for victim.example"
    assert resolver.stats.inflight_rejected_zone == 2
    assert resolver.stats.inflight_rejected_total == 0
    assert resolver.stats.outcome_total(metrics.SERVFAIL) == 2
    assert resolver.stats.upstream_inflight_peak == 3


def test_a_miss_over_a_full_cap_is_answered_by_handle_itself(tmp_path: Path) -> None:
    """With the victim zone's cap full, `handle` answers a new name under it at once (no Query,
    so no task): the cheap path under a random-subdomain flood. A question already open still
    waits on it, and other zones still go upstream."""
    resolver = make_clocked_resolver(tmp_path, "max_inflight = 10\nmax_inflight_per_zone = 2")
    upstream = scripted(resolver)

    async def body() -> None:
        opened = [query(f"r{i}.victim.example", i, edns=0) for i in range(2)]
        tasks = [
            asyncio.ensure_future(resolver.forward(parsed(resolver, d), d, metrics.UDP))
            for d in opened
        ]
        await asyncio.sleep(0)  # the two upstream queries are open now
        turned_away, outcome = resolver.handle(query("r9.victim.example", 9, edns=0), "127.0.0.1")
        assert isinstance(turned_away, bytes)
        message = dns.message.from_wire(turned_away)
        assert message.rcode() == dns.rcode.SERVFAIL and message.id == 9
        assert message.options[0].text == "too many queries in flight for victim.example"
        assert outcome == metrics.SERVFAIL
        assert resolver.stats.inflight_rejected_zone == 1
        assert isinstance(resolver.handle(opened[0], "127.0.0.1")[0], Query)  # coalesces
        assert isinstance(resolver.handle(query("www.other.example", 3), "127.0.0.1")[0], Query)
        upstream.release.set()
        await asyncio.gather(*tasks)

    asyncio.run(asyncio.wait_for(body(), 5))
    assert len(upstream.asked) == 2


def test_total_cap(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path, "max_inflight = 2\nmax_inflight_per_zone = 2")
    upstream = scripted(resolver)
    datas = [query(f"www.zone{i}.example", i) for i in range(3)]
    answers = forward_all(resolver, upstream, datas)
    assert len(upstream.asked) == 2
    assert dns.message.from_wire(answers[2] or b"").rcode() == dns.rcode.SERVFAIL
    assert resolver.stats.inflight_rejected_total == 1


def test_caps_free_up_when_queries_end(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path, "max_inflight = 1")
    upstream = scripted(resolver)
    upstream.release.set()
    for i in range(5):  # one after another: never more than one open
        answer = forward_all(resolver, upstream, [query(f"n{i}.example", i)])[0]
        assert dns.message.from_wire(answer or b"").rcode() == dns.rcode.NOERROR
    assert resolver.stats.inflight_rejected_total == 0


STALE_ON = "serve_stale = true\nstale_client_timeout = 0"


def expire(resolver: Resolver, seconds: float) -> None:
    clock = resolver.cache._clock
    assert isinstance(clock, FakeClock)
    clock.now += seconds


def test_failed_upstream_serves_stale_with_ede_3_and_ttl_30(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path, cache_extra=STALE_ON)
    upstream = scripted(resolver)
    forward_all(resolver, upstream, [query("old.example", 1), query("old.example", 5, edns=0)])
    expire(resolver, 301)  # the 300 s answers have expired
    upstream.answer = lambda request: None  # every upstream fails
    (stale,) = forward_all(resolver, upstream, [query("OLD.example", 2, edns=0)])
    message = dns.message.from_wire(stale or b"")
    assert message.rcode() == dns.rcode.NOERROR and message.id == 2
    assert message.question[0].name.to_text() == "OLD.example."
    assert [rd.address for rd in message.answer[0]] == ["198.51.100.7"]
    assert message.answer[0].ttl == 30
    (ede,) = message.options
    assert isinstance(ede, dns.edns.EDEOption) and ede.code == dns.edns.EDECode.STALE_ANSWER
    assert resolver.stats.outcome_total(metrics.STALE) == 1
    (plain,) = forward_all(resolver, upstream, [query("old.example", 3)])  # no EDNS: no OPT
    assert dns.message.from_wire(plain or b"").edns < 0
    expire(resolver, 86_400)  # past max_stale: gone
    (late,) = forward_all(resolver, upstream, [query("old.example", 4)])
    assert dns.message.from_wire(late or b"").rcode() == dns.rcode.SERVFAIL


def test_stale_answer_keeps_an_upstream_opt_and_adds_the_ede_to_it(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path, cache_extra=STALE_ON)
    upstream = scripted(resolver)
    forward_all(resolver, upstream, [query("opt.example", 1, edns=0)])  # answer with an OPT
    expire(resolver, 301)
    upstream.answer = lambda request: None
    (stale,) = forward_all(resolver, upstream, [query("opt.example", 2, edns=0)])
    assert stale is not None and stale[10:12] == b"\x00\x01"  # still one additional record
    message = dns.message.from_wire(stale)
    assert message.edns == 0 and len(message.options) == 1
    assert isinstance(message.options[0], dns.edns.EDEOption)
    assert message.options[0].code == dns.edns.EDECode.STALE_ANSWER


def test_without_serve_stale_a_failed_upstream_is_servfail_with_ede_22(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)
    forward_all(resolver, upstream, [query("old.example", 1, edns=0)])
    expire(resolver, 301)
    upstream.answer = lambda request: None
    (answer,) = forward_all(resolver, upstream, [query("old.example", 2, edns=0)])
    message = dns.message.from_wire(answer or b"")
    assert message.rcode() == dns.rcode.SERVFAIL
    assert isinstance(message.options[0], dns.edns.EDEOption)
    assert message.options[0].code == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    assert len(resolver.cache) == 0  # and the expired entry was not kept


def test_full_cap_serves_stale_when_it_can(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path, "max_inflight_per_zone = 1", STALE_ON)
    upstream = scripted(resolver)
    forward_all(resolver, upstream, [query("a.victim.example", 1, edns=0)])
    expire(resolver, 301)
    upstream.release.clear()
    answers = forward_all(
        resolver, upstream, [query("b.victim.example", 2), query("a.victim.example", 3, edns=0)]
    )
    message = dns.message.from_wire(answers[1] or b"")
    assert message.rcode() == dns.rcode.NOERROR and message.answer[0].ttl == 30
    assert "too many queries in flight for victim.example" in str(message.options[0].text)
    assert resolver.stats.inflight_rejected_zone == 1


def test_client_timer_answers_stale_and_the_upstream_query_still_refreshes_the_cache(
    tmp_path: Path,
) -> None:
    resolver = make_clocked_resolver(
        tmp_path, cache_extra="serve_stale = true\nstale_client_timeout = 0.1"
    )
    upstream = scripted(resolver)
    upstream.release.set()
    forward_all(resolver, upstream, [query("slow.example", 1, edns=0)])
    expire(resolver, 301)
    upstream.release.clear()
    upstream.answer = lambda request: reply(request, "198.51.100.99")

    async def body() -> None:
        data = query("slow.example", 2, edns=0)
        started = asyncio.get_running_loop().time()
        answer, outcome = await resolver.forward(parsed(resolver, data), data, metrics.UDP)
        waited = asyncio.get_running_loop().time() - started
        message = dns.message.from_wire(answer or b"")
        assert [rd.address for rd in message.answer[0]] == ["198.51.100.7"]  # the stale one
        assert message.answer[0].ttl == 30 and 0.09 <= waited < 1.0
        assert outcome == metrics.STALE
        assert len(resolver.inflight) == 1  # the upstream query goes on
        upstream.release.set()
        for _ in range(100):
            if not len(resolver.inflight):
                break
            await asyncio.sleep(0.01)
        fresh = resolver.handle(query("slow.example", 3, edns=0), "127.0.0.1")[0]
        assert isinstance(fresh, bytes)
        assert [rd.address for rd in dns.message.from_wire(fresh).answer[0]] == ["198.51.100.99"]

    asyncio.run(asyncio.wait_for(body(), 5))


def test_client_timer_without_stale_data_waits_for_upstream(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(
        tmp_path, cache_extra="serve_stale = true\nstale_client_timeout = 0.05"
    )
    upstream = scripted(resolver)
    (answer,) = forward_all(resolver, upstream, [query("new.example", 1)], release_after=0.2)
    assert dns.message.from_wire(answer or b"").rcode() == dns.rcode.NOERROR


def test_a_client_that_goes_away_does_not_cancel_the_shared_query(tmp_path: Path) -> None:
    resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)

    async def body() -> None:
        first, second = query("x.example", 1), query("x.example", 2)
        leader = asyncio.ensure_future(resolver.forward(parsed(resolver, first), first, 0))
        follower = asyncio.ensure_future(resolver.forward(parsed(resolver, second), second, 0))
        await asyncio.sleep(0.01)
        leader.cancel()
        upstream.release.set()
        answer = (await follower)[0]
        assert dns.message.from_wire(answer or b"").id == 2
        assert resolver.cache.inserts == 1

    asyncio.run(asyncio.wait_for(body(), 5))


def test_answers_aliasing_a_blocked_name_are_blocked_for_everyone_and_not_cached(
    tmp_path: Path,
) -> None:
    resolver = make_clocked_resolver(tmp_path)
    upstream = scripted(resolver)

    def alias(request: bytes) -> bytes:
        message = dns.message.from_wire(request)
        response = dns.message.make_response(message)
        name = message.question[0].name
        response.answer.append(
            dns.rrset.from_text(name, 60, "IN", "CNAME", "cdn.judi-contoh.example.")
        )
        return response.to_wire()

    upstream.answer = alias
    answers = forward_all(
        resolver, upstream, [query("alias.example", 1), query("alias.example", 2)]
    )
    for answer in answers:
        message = dns.message.from_wire(answer or b"")
        assert [rd.address for rrset in message.answer for rd in rrset] == ["192.0.2.10"]
    assert len(upstream.asked) == 1 and len(resolver.cache) == 0
    assert resolver.stats.outcome_total(metrics.BLOCKED_CNAME) == 2


# -- configuration ------------------------------------------------------------------------


def _parse(tmp_path: Path, upstream: str = "", cache: str = "") -> Config:
    text = f'[upstream]\nservers = ["127.0.0.1:9"]\n{upstream}\n[cache]\n{cache}\n'
    return parse_config(text, tmp_path / "blokir.toml")


def test_config_defaults_and_values(tmp_path: Path) -> None:
    defaults = _parse(tmp_path)
    assert (defaults.upstream.max_inflight, defaults.upstream.max_inflight_per_zone) == (2048, 100)
    cache = defaults.cache
    assert (cache.serve_stale, cache.stale_answer_ttl, cache.max_stale) == (False, 30, 86_400)
    assert cache.stale_client_timeout == 1.8
    chosen = _parse(
        tmp_path,
        "max_inflight = 10\nmax_inflight_per_zone = 3",
        "serve_stale = true\nstale_answer_ttl = 5\nmax_stale = 60\nstale_client_timeout = 0",
    )
    assert (chosen.upstream.max_inflight, chosen.upstream.max_inflight_per_zone) == (10, 3)
    assert chosen.cache.serve_stale and chosen.cache.stale_answer_ttl == 5
    assert chosen.cache.max_stale == 60 and chosen.cache.stale_client_timeout == 0.0


@pytest.mark.parametrize(
    ("upstream", "cache", "message"),
    [
        ("max_inflight = 0", "", "max_inflight"),
        ("max_inflight_per_zone = -1", "", "max_inflight_per_zone"),
        ("", "serve_stale = 1", "serve_stale"),
        ("", "stale_answer_ttl = 0", "stale_answer_ttl"),
        ("", "max_stale = 0", "max_stale"),
        ("", "stale_client_timeout = false", "stale_client_timeout"),
        ("", "stale_client_timeout = -1.0", "stale_client_timeout"),
    ],
)
def test_config_errors(tmp_path: Path, upstream: str, cache: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(tmp_path, upstream, cache)
