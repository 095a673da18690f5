"""The per-query pipeline: what to answer for one query, with no sockets (resolver/worker.py
owns those).

Per query (README "How a query flows"):

    bytes -> parse_query -> ACL -> index.match_policy_id(qname)
        blocked -> BlockResponder template, ID and question patched        -> send
        allowed -> cache hit: stored wire, ID and question patched         -> send
                   cache miss: upstream pool (fresh ID/port, validated), CNAME targets checked
                   against the index, stored in the cache                  -> send

`Resolver.handle` answers what it can at once and returns a Query for a cache miss, which
`Resolver.forward` completes asynchronously. Both return the metrics outcome with the answer
(the worker's latency histogram is kept per outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from resolver import metrics as m
from resolver.answer_ips import address_text, answer_addresses, blocked_address
from resolver.cache import CacheKey, CacheLimits, ResponseCache, with_edns_option
from resolver.config import CacheConfig, Config, ConfigError
from resolver.dns.answers import BlockResponder, BlockSettings
from resolver.dns.constants import (
    AD,
    CD,
    CLASS_IN,
    EDE_NO_REACHABLE_AUTHORITY,
    EDE_OTHER,
    EDE_PROHIBITED,
    EDE_STALE_ANSWER,
    HEADER_SIZE,
    MIN_UDP_PAYLOAD,
    NOTIMP,
    RD,
    REFUSED,
    SERVFAIL,
    TYPE_ANY,
)
from resolver.dns.message import cname_targets, within_limit, without_options
from resolver.dns.names import MessageError
from resolver.dns.query import HOP_BY_HOP_OPTIONS, ParseError, Query, parse_query, upstream_request
from resolver.dns.response import (
    ANY_TTL,
    any_minimal_answer,
    ede_option,
    error_response,
    relay_flags,
    truncated,
)
from resolver.groups import GroupTable
from resolver.index import Index
from resolver.inflight import InflightTable, zone_of
from resolver.metrics import TopCounter, WorkerStats
from resolver.querylog.client import MATCH_QNAME, MATCH_RESPONSE_IP, QueryLog
from resolver.ratelimit import RateLimiter
from resolver.upstream import UpstreamPool

log = logging.getLogger("blokir")

ACL_CACHE_MAX = 65536  # distinct client addresses remembered by the ACL fast path
# Remembered UDP answers per generation (two generations; measured with tracemalloc: about
# 340 bytes for a blocked answer, 470 for a cache answer, which keeps its cache key for
# renewal; so at most about 47 MB): see Resolver.handle and Resolver._remember.
MEMO_GENERATION = 50_000
# Blocked answers enter the memo on their second sighting (Resolver._remember_block): a bit per
# query hash, cleared once SEEN_CLEAR_AFTER bits were set (false admissions stay under ~6%).
SEEN_BITS = 1 << 21  # 256 KiB
SEEN_CLEAR_AFTER = SEEN_BITS // 16
_FOREVER = float("inf")
CNAME_CHECK_MAX = 16  # CNAME/DNAME targets checked per answer (RFC 1034 chains are short)
# How a remembered cache answer is renewed when its TTLs tick: (cache key, end of the question
# in the query, the client's UDP size limit).
Renewal = tuple[CacheKey, int, int]
_KEY_DO: Final = 0b10  # the DO bit in a cache key's last field (Resolver._cache_key)
_FOREVER_COUNT: Final = 1 << 62  # the query log's countdown when nothing allowed is logged
# The query log encoder's add: (time, client, over UDP, query, answer, policy id, dnstap match,
# trigger) -> records waiting (resolver/querylog/encoder.py).
LogAdd = Callable[[float, str, bool, bytes, bytes | None, int, int, bytes], int]


class Memo:
    """A remembered UDP answer (see Resolver.handle). A plain class, not a NamedTuple: compiled,
    its attributes are C struct fields, read without a lookup or a type check per field."""

    __slots__ = ("policy_id", "qcell", "qname", "renewal", "tail", "valid_until")

    def __init__(
        self,
        tail: bytes,
        policy_id: int,
        valid_until: float,
        qcell: int,
        qname: bytes,
        renewal: Renewal | None,
    ) -> None:
        self.tail = tail  # the answer after its ID
        self.policy_id = policy_id  # the block policy of a blocked answer; 0 for a cache answer
        self.valid_until = valid_until  # monotonic clock; a blocked answer: until the next index
        self.qcell = qcell  # the metrics cell of the query's transport and type
        self.qname = qname
        self.renewal = renewal  # for a cache answer that still fits the client's UDP limit


# What `Resolver.handle` returns: bytes to send, a Query to forward (await `Resolver.forward`)
# or None to send nothing; and the metrics outcome (m.BLOCKED, m.CACHED, ...). A tuple, which
# compiled callers get as a C struct: no object is allocated per query.
Handled = tuple[bytes | Query | None, int]


class Resolver:
    """One worker's query pipeline. Socket-free: `handle` turns query bytes into an answer, or
    into a Query that `forward` completes asynchronously."""

    def __init__(self, config: Config, index: Index) -> None:
        self.config = config
        self.stats = WorkerStats(top=TopCounter(4 * config.metrics.top_k))
        self.track_top = config.metrics.enabled and config.metrics.top_k > 0
        self._block_tick = 0
        self._clock = time.monotonic
        self.ratelimiter: RateLimiter | None = None
        self._apply_settings(config)
        self.cache = ResponseCache(_cache_limits(config.cache))
        self._apply_cache(config.cache)
        upstream = config.upstream
        servers = config.upstream_servers()  # ConfigError at start: nothing to forward to
        self.upstream = _pool(config, servers)
        # Open upstream queries by cache key (see forward and resolver.inflight).
        self.inflight: InflightTable[CacheKey, bytes | None] = InflightTable(
            upstream.max_inflight, upstream.max_inflight_per_zone
        )
        # Cached key -> (CNAME/DNAME targets, A/AAAA addresses, the lists generation they were
        # checked against): what a reload must check again (_alias_now_blocked).
        self._aliases: dict[CacheKey, tuple[tuple[bytes, ...], tuple[bytes, ...], int]] = {}
        # The dnstap query log (resolver/querylog/): see use_querylog.
        self.querylog: QueryLog | None = None
        self._log_add: LogAdd | None = None
        self._log_every = 0
        self._log_left = _FOREVER_COUNT  # allowed answers until the next one is logged
        # The query log's time for UDP answers given in handle: set by the worker once per UDP
        # wake-up (Worker._on_udp_readable, at most UDP_BATCH datagrams, well under a
        # millisecond), as a time.time() per logged query cost half the logging (75 of 170 ns
        # per blocked memo hit, compiled). Answers sent later (forwarded, TCP) take their own.
        self.log_now = time.time()
        self._log_sample = _FOREVER_COUNT
        # What blocked the last answer forward returned: (policy id, trigger, dnstap match).
        self.last_block: tuple[int, bytes, int] = (0, b"", 0)
        self._lists_generation = 0  # +1 per reload
        self.retired_memos: list[dict[bytes, Memo]] = []  # old memo generations to free
        self.use_index(index)

    def _apply_settings(self, config: Config) -> None:
        """Settings a reload may change while serving: the ACL, rate limits, and how blocked
        names are answered (`[upstream]` and `[cache]`: reconfigure; resolver/reload.py
        RESTART_ONLY lists what needs a restart)."""
        old: Config | None = getattr(self, "_settings_from", None)
        self._settings_from = config
        self.config = config
        self._payload = config.server.udp_payload_size
        self._allow = config.server.allows
        self._acl: dict[str, bool] = {}  # client address -> allowed
        # RFC 8914 4.19 Prohibited, on the REFUSED answer to a query without RD (handle).
        self._norec_ede = ede_option(EDE_PROHIBITED, "recursion desired (RD) is not set")
        server_config = config.server
        limits = (server_config.ratelimit, server_config.ratelimit_burst)
        action = server_config.ratelimit_action
        if (
            old is None
            or (old.server.ratelimit, old.server.ratelimit_burst) != limits
            or (old.server.ratelimit_action != action)
        ):  # a changed limit starts new buckets; an unchanged one keeps the clients' buckets
            previous = self.ratelimiter
            self.ratelimiter = RateLimiter(*limits, action=action) if limits[0] else None
            if previous is not None and self.ratelimiter is not None:  # counters stay monotonic
                self.ratelimiter.refused = previous.refused
                self.ratelimiter.dropped = previous.dropped
                self.ratelimiter.slipped = previous.slipped
        self._settings = BlockSettings.from_config(config)

    def reconfigure(self, config: Config, index: Index) -> None:
        """A reload: new settings (when they changed) and a new index, from the next query on."""
        old = self.config
        if config != old:
            self._apply_settings(config)
            if config.cache != old.cache:
                self.cache.set_limits(_cache_limits(config.cache))
                self._apply_cache(config.cache)
        self._apply_upstream(config)  # also when only /etc/resolv.conf changed
        self.use_index(index)

    def _apply_cache(self, cache: CacheConfig) -> None:
        """RFC 8767 serve-stale settings (the cache's own bounds: ResponseCache.set_limits)."""
        self._serve_stale = cache.serve_stale
        self._stale_ttl = cache.stale_answer_ttl
        self._stale_timer = cache.stale_client_timeout if cache.serve_stale else 0.0

    def _apply_upstream(self, config: Config) -> None:
        """A reload's `[upstream]`: a new pool when the servers (from the config, or from
        /etc/resolv.conf read again), the timeout or the attempts changed. Servers in both pools
        keep their health and counters; queries already sent finish on the old pool. The
        in-flight caps change in place, so the open queries stay counted."""
        upstream = config.upstream
        try:
            servers = config.upstream_servers()
        except ConfigError as exc:  # resolv.conf changed under us; the reloader checked it too
            log.error("reload: %s; forwarding to the same upstreams as before", exc)
            return
        tls = (upstream.tls_servers, upstream.tls_ca)
        if not self.upstream.configured_as(servers, upstream.timeout, upstream.attempts, *tls):
            pool = _pool(config, servers)
            pool.keep_health_of(self.upstream)
            self.upstream.close()
            self.upstream = pool
            log.info("upstream servers now %s", ", ".join(map(format_address, servers)))
        self.inflight.max_total = upstream.max_inflight
        self.inflight.max_per_zone = upstream.max_inflight_per_zone

    def use_index(self, index: Index) -> None:
        """Swap the index (reload). Single-threaded event loop: the next query sees the new one.
        Counts kept by policy id are settled first: ids mean other lists in the new index."""
        if getattr(self, "index", None) is not None:
            self.settle_counts()
            # Cached answers that alias other names were checked against the old lists only:
            # each is checked again on its next use (lazily, so a reload never stalls the loop
            # for a scan of the cache).
            self._lists_generation += 1
            # The memo's answers belong to the old lists. Dropping 100k entries at once stalls
            # the loop ~20 ms (measured by bench/reload_bench.py), so they are freed a few
            # hundred at a time between packets (free_retired).
            self.retired_memos += [self._memo, self._memo_old]
        self.index = index
        self.match_policy_id = index.match_policy_id
        # Client groups (resolver/groups.py): policy ids are the index's, so a table per index.
        self.groups = GroupTable(self.config.groups, index.policies)
        self.grouped = bool(self.config.groups)
        self.match_policy_id_in = index.match_policy_id_in
        self.last_group = 0  # of the last handle() call: forward() takes it for CNAME checks
        # Response-IP triggers: None when the index has none, so answers are not even walked.
        self.match_ip = index.ip_match.match_packed if index.ip_match.count else None
        if self.querylog is not None:
            self.querylog.set_policies(index.policies)  # ids mean other policies from now on
        # is_block[policy_id]: a list index is cheaper than a Policy attribute chain per query.
        self.is_block: list[bool] = [False] + [not p.is_allow for p in index.policies]
        # Per group, which policy ids block an answer address (the default takes every list).
        self.ip_is_block: list[list[bool]] = [self.is_block] + [
            [blocks and bool(allowed[policy_id]) for policy_id, blocks in enumerate(self.is_block)]
            for allowed in self.groups.allowed[1:]
        ]
        self.responder = BlockResponder(index.policies, self._settings)
        # Remembered UDP answers (see handle): query bytes after the ID -> Memo.
        self._memo: dict[bytes, Memo] = {}
        self._memo_old: dict[bytes, Memo] = {}
        self._seen = bytearray(SEEN_BITS // 8)  # blocked queries seen once (_remember_block)
        self._seen_count = 0

    def settle_counts(self) -> None:
        """Turn counts kept by policy id into counts by list labels (at flush and reload)."""
        stats = self.stats
        policies = self.index.policies
        names = self.groups.names
        for key, count in stats.blocked_by_policy_id.items():  # the policy id | group id << 16
            policy = policies[(key & 0xFFFF) - 1]
            labels = (policy.list_name, policy.category, policy.action.value, names[key >> 16])
            stats.blocked_by_labels[labels] = stats.blocked_by_labels.get(labels, 0) + count
        stats.blocked_by_policy_id = {}
        stats.top.fold(lambda key: policies[(key & 0xFFFF) - 1].list_name)

    def acl_allows(self, client: str) -> bool:
        allowed = self._acl.get(client)
        if allowed is None:
            if len(self._acl) >= ACL_CACHE_MAX:
                self._acl.clear()
            allowed = self._acl[client] = self._allow(client)
        return allowed

    def handle(self, data: bytes, client: str, udp: bool = True, transport: int = m.TCP) -> Handled:
        """The answer and its outcome (see Handled). A Query's outcome is m.ALLOWED for now:
        `forward` returns the real one. `transport`: the metrics label of a stream (TCP, TLS
        or HTTPS) when not `udp`.

        UDP answers are final (truncated to the client's limit) and remembered in the answer
        memo, keyed by the query's bytes after its ID: the same question with the same flags
        and EDNS record gets the same answer, so a repeat skips parsing, the index and the
        cache (a packet cache, as dnsdist has). Blocked answers stay valid until the index
        changes; cache hits until their TTLs next tick or the entry expires."""
        allowed = self._acl.get(client)
        if allowed is None:
            allowed = self.acl_allows(client)
        stats = self.stats
        limited = (
            allowed and self.ratelimiter is not None and not self.ratelimiter.allow(client, udp)
        )
        key = data[2:]  # the memo's key; made once, so its hash is computed once
        gid = 0
        if self.grouped:  # a group's answers are its own: the memo key says whose
            gid = self.last_group = self.groups.group_of(client)
            if gid:
                key += b"\x00" + gid.to_bytes(2, "big")
        if udp and allowed and not limited:
            hit = self._memo.get(key)
            if hit is None:
                hit = self._memo_old.get(key)
                if hit is not None and len(self._memo) < MEMO_GENERATION:
                    self._memo[key] = hit  # still in use: keep it through the next rotation
            if hit is not None:
                qcell = hit.qcell
                policy_id = hit.policy_id
                if policy_id:
                    stats.cells[qcell + m.BLOCKED] += 1
                    self._count_block(policy_id, hit.qname)
                    if self._log_add is not None:
                        reply = data[:2] + hit.tail
                        self._log_block(
                            self.log_now, client, udp, data, reply, policy_id, hit.qname
                        )
                        return reply, m.BLOCKED
                    return data[:2] + hit.tail, m.BLOCKED
                if hit.valid_until > self._clock():
                    stats.cells[qcell + m.CACHED] += 1
                    self._log_left -= 1
                    if self._log_left <= 0:
                        self._log_allowed(self.log_now, client, udp, data, data[:2] + hit.tail)
                    return data[:2] + hit.tail, m.CACHED
                # A cache answer whose TTLs ticked: the same question, so no parse, no index.
                renewal = hit.renewal
                renewed = self._renewed(key, qcell, hit.qname, renewal) if renewal else None
                if renewed is not None:
                    stats.cells[qcell + m.CACHED] += 1
                    self._log_left -= 1
                    if self._log_left <= 0:
                        self._log_allowed(self.log_now, client, udp, data, data[:2] + renewed)
                    return data[:2] + renewed, m.CACHED
        if udp:
            transport = m.UDP
        try:
            query = parse_query(data)
        except ParseError as error:
            return self._error(data, error, transport)
        qcell = (transport * m.N_QTYPES + m.QTYPE_INDEX.get(query.qtype, m.QTYPE_OTHER)) * (
            m.N_OUTCOMES
        )
        if not allowed:
            stats.cells[qcell + m.REFUSED] += 1
            return error_response(data, REFUSED, query, self._payload), m.REFUSED
        if limited:
            stats.cells[qcell + m.RATELIMITED] += 1
            assert self.ratelimiter is not None  # `limited` is only ever set by it
            # REFUSED, silence or TC=1 per [server] ratelimit_action (resolver/ratelimit.py).
            limiter = self.ratelimiter
            return limiter.over_limit_answer(data, query, self._payload, udp), m.RATELIMITED
        if query.qclass == CLASS_IN and not query.unmatchable:
            if gid:
                policy_id = self.match_policy_id_in(query.qname, self.groups.allowed[gid])
            else:
                policy_id = self.match_policy_id(query.qname)
            if policy_id and self.is_block[policy_id]:
                stats.cells[qcell + m.BLOCKED] += 1
                self._count_block(policy_id | gid << 16, query.qname)
                answer = self.responder.answer(query, policy_id)
                if answer is not None and udp:
                    answer = self.fit_udp(answer, query)
                    self._remember_block(key, answer, policy_id | gid << 16, qcell, query.qname)
                if self._log_add is not None:
                    when = self.log_now if udp else time.time()
                    self._log_block(when, client, udp, data, answer, policy_id, query.qname)
                return answer, m.BLOCKED
        if not query.flags & RD:
            # A forwarder has nothing to say to a query that does not ask for recursion but what
            # its cache holds, and answering from the cache tells anyone which names its clients
            # visit (cache snooping). Refused, as Unbound refuses it for clients without
            # allow_snoop; a blocked name above still gets its block answer.
            stats.cells[qcell + m.REFUSED] += 1
            options = self._norec_ede if query.edns else b""
            return error_response(data, REFUSED, query, self._payload, options), m.REFUSED
        if udp and query.qtype == TYPE_ANY:
            # RFC 8482 4.2: ANY over UDP is an amplification tool, so one small HINFO record
            # instead; over TCP the client's address is proven and ANY is forwarded as before.
            stats.cells[qcell + m.MINIMAL_ANY] += 1
            return any_minimal_answer(data, query, self._payload, ANY_TTL), m.MINIMAL_ANY
        cache_key = self._cache_key(query)
        cached = self.cache.get_fresh(cache_key)
        if cached is not None and self._lists_generation and self._alias_now_blocked(cache_key):
            cached = None
        if cached is not None and gid:  # cached answers are shared: this group's CNAME check
            blocked = self._cname_block(query, cached[0], gid)
            if blocked is not None:
                stats.cells[qcell + m.BLOCKED_CNAME] += 1
                if not blocked:  # a drop list: no answer at all
                    return None, m.BLOCKED_CNAME
                return (self.fit_udp(blocked, query) if udp else blocked), m.BLOCKED_CNAME
        if cached is not None:
            stats.cells[qcell + m.CACHED] += 1
            stored, fresh_until = cached
            answer = data[:2] + _reply_tail(stored, query)
            if udp:
                limit = self.udp_limit(query)  # 512 at least, so fit_udp agrees
                renewal = (cache_key, query.question_end, limit)
                if len(answer) > limit:
                    renewal = None  # truncated: a renewal would not fit either
                    answer = self.fit_udp(answer, query)
                self._remember(key, Memo(answer[2:], 0, fresh_until, qcell, query.qname, renewal))
            self._log_left -= 1
            if self._log_left <= 0:
                self._log_allowed(self.log_now if udp else time.time(), client, udp, data, answer)
            return answer, m.CACHED
        if not self.inflight.is_open(cache_key):
            # A miss the in-flight caps turn away is answered here rather than from a task:
            # under a random-subdomain flood most queries end this way, and with a task each
            # cost 17 us instead of 5 (20k names under one capped zone, handle and forward
            # timed together). forward checks again, for the caps may fill before its task runs.
            turned_away = self._over_cap(query, data, transport, cache_key, zone_of(query.qname))
            if turned_away is not None:
                answer, outcome = turned_away
                return (self.fit_udp(answer, query) if udp else answer), outcome
        return query, m.ALLOWED

    def use_querylog(self, querylog: QueryLog | None) -> None:
        """Start (or stop, with None) logging to a dnstap query log. The query path calls the
        log's encoder directly (one C call per logged query where the extension is built) and
        counts allowed answers down to the next sampled one."""
        self.querylog = querylog
        if querylog is None:
            self._log_add = None
            self._log_left = self._log_sample = _FOREVER_COUNT
            return
        self._log_add = querylog.encoder.add
        self.log_now = time.time()
        self._log_every = querylog.every
        self._log_sample = querylog.sample_every
        self._log_left = self._log_sample
        querylog.set_policies(self.index.policies)

    def _log_block(
        self,
        when: float,
        client: str,
        udp: bool,
        data: bytes,
        answer: bytes | None,
        policy_id: int,
        trigger: bytes,
        match: int = MATCH_QNAME,
    ) -> None:
        add = self._log_add
        assert add is not None and self.querylog is not None
        waiting = add(when, client, udp, data, answer, policy_id, match, trigger)
        if waiting and not waiting % self._log_every:  # a batch is complete (0: dropped)
            self.querylog.full()

    def _log_allowed(self, when: float, client: str, udp: bool, data: bytes, answer: bytes) -> None:
        """The sampled allowed query: a record as for a block (policy id 0); the encoder cuts
        the address (resolver/querylog/encoder.py)."""
        self._log_left = self._log_sample
        add = self._log_add
        if add is not None and self.querylog is not None:
            waiting = add(when, client, udp, data, answer, 0, 0, b"")
            if waiting and not waiting % self._log_every:  # a batch is complete (0: dropped)
                self.querylog.full()

    def _count_block(self, policy_id: int, qname: bytes) -> None:
        """Exact per-list counts; the top-K sketch sees every SAMPLE-th block, weighted."""
        stats = self.stats
        by_policy = stats.blocked_by_policy_id
        by_policy[policy_id] = by_policy.get(policy_id, 0) + 1
        if not self.track_top:
            return
        self._block_tick += 1
        if self._block_tick & m.SAMPLE_MASK:
            return
        interval = stats.top.interval
        key = (qname, policy_id)
        count = interval.get(key)
        if count is not None:
            interval[key] = count + m.SAMPLE
        elif len(interval) < TopCounter.INTERVAL_CAP:
            interval[key] = m.SAMPLE
        else:
            stats.top.untracked += m.SAMPLE

    def free_retired(self, budget: int = 256) -> None:
        """Free up to `budget` entries of retired memo generations (called between packets)."""
        retired = self.retired_memos
        while budget > 0 and retired:
            memo = retired[-1]
            count = min(budget, len(memo))
            for _ in range(count):
                memo.popitem()
            budget -= count
            if not memo:
                retired.pop()

    def memo_size(self) -> int:
        return len(self._memo) + len(self._memo_old)

    def _remember(self, key: bytes, memo: Memo) -> None:
        """Two generations instead of an LRU: when the young one fills, it becomes the old one
        and the previous old one is dropped. Entries used since the last rotation are copied
        forward on their next hit, so hot answers survive and the bound holds without any
        per-hit bookkeeping."""
        if len(self._memo) >= MEMO_GENERATION and key not in self._memo:
            self.retired_memos.append(self._memo_old)
            self._memo_old = self._memo
            self._memo = {}
        self._memo[key] = memo

    def _remember_block(
        self, key: bytes, answer: bytes, policy_id: int, qcell: int, qname: bytes
    ) -> None:
        """Remember a blocked answer from its second sighting on. A scan through a list, or
        random labels under a blocked zone, asks each name once: remembering those would only
        push the answers clients do repeat out of the memo (a doorkeeper, as in TinyLFU). A bit
        per hash of the query bytes; `key` is the object the memo lookups hashed, and bytes cache
        their hash, so `hash(key)` costs nothing here. `answer` is sliced past its ID only when
        it is remembered: most first sightings are not."""
        bit = hash(key) & (SEEN_BITS - 1)
        seen = self._seen
        mask = 1 << (bit & 7)
        byte = bit >> 3
        if seen[byte] & mask:
            self._remember(key, Memo(answer[2:], policy_id, _FOREVER, qcell, qname, None))
            return
        seen[byte] |= mask
        self._seen_count += 1
        if self._seen_count >= SEEN_CLEAR_AFTER:
            self._seen = bytearray(SEEN_BITS // 8)
            self._seen_count = 0

    def _renewed(self, key: bytes, qcell: int, qname: bytes, renewal: Renewal) -> bytes | None:
        """A remembered cache answer with the TTLs the cache now has, remembered again; None
        sends the query down the full path (expired or evicted, an alias a reload now blocks,
        or too long for the client now)."""
        cache_key, question_end, limit = renewal
        if self._lists_generation and self._alias_now_blocked(cache_key):
            return None
        cached = self.cache.renew(cache_key)
        if cached is None:
            return None
        stored, fresh_until = cached
        if len(stored) > limit:
            return None
        # key is the query after its ID: its question (letter case as asked) goes in the answer.
        query_flags = (key[0] << 8) | key[1]  # key is the query after its ID
        wants_ad = bool(query_flags & AD or cache_key[3] & _KEY_DO)
        question = key[HEADER_SIZE - 2 : question_end - 2]
        tail = _relayed(stored, query_flags, wants_ad, question, question_end)
        self._remember(key, Memo(tail, 0, fresh_until, qcell, qname, renewal))
        return tail

    def fit_udp(self, answer: bytes, query: Query) -> bytes:
        limit = self.udp_limit(query)
        if len(answer) <= MIN_UDP_PAYLOAD or len(answer) <= limit:
            return answer
        trimmed = within_limit(answer, limit)  # TC only if a required RRset does not fit
        if trimmed is not None:
            return trimmed
        self.stats.truncated += 1
        return truncated(answer, query, self._payload)

    @staticmethod
    def _cache_key(query: Query) -> tuple[bytes, int, int, int]:
        # DO and CD change what an upstream returns (RFC 4035 3.2), so they are part of the key;
        # so is EDNS itself: an answer to an EDNS query carries an OPT record, which a client
        # that sent none must not get (RFC 6891 section 7).
        return (
            query.qname,
            query.qtype,
            query.qclass,
            (query.edns << 2) | (query.do * _KEY_DO) | bool(query.flags & CD),
        )

    def _error(self, data: bytes, error: ParseError, transport: int) -> Handled:
        query = error.query
        qtype = query.qtype if query is not None else -1
        if error.rcode is None:
            outcome = m.DROPPED
        elif error.rcode == NOTIMP:
            outcome = m.NOTIMP
        else:
            outcome = m.FORMERR
        self.stats.cells[m.cell(transport, qtype, outcome)] += 1
        if error.rcode is None:
            return None, outcome
        return error_response(data, error.rcode, query, self._payload), outcome

    async def forward(
        self, query: Query, data: bytes, transport: int, group: int = 0, client: str = ""
    ) -> tuple[bytes | None, int]:
        """Answer a cache miss from upstream; count and return the outcome with the answer
        (allowed, blocked_cname, stale or servfail). `group`: the client's (`last_group` after
        its handle call), whose lists decide whether a CNAME target is blocked.

        Identical misses share one upstream query (coalescing); a new one must fit the
        in-flight caps, else the answer is stale data or SERVFAIL (resolver.inflight). The
        upstream query runs in a task of its own, so a client that stops waiting (the RFC 8767
        client response timer, or a closed TCP connection) does not cancel it: its answer
        still reaches the cache and every other waiting client."""
        key = self._cache_key(query)
        inflight = self.inflight
        stats = self.stats
        task = inflight.find(key)
        if task is not None:
            stats.upstream_coalesced = inflight.coalesced
        else:
            zone = zone_of(query.qname)
            turned_away = self._over_cap(query, data, transport, key, zone)
            if turned_away is not None:
                return turned_away
            request = upstream_request(data, query)  # without the client's own options
            task = asyncio.get_running_loop().create_task(self._fetch(key, zone, request))
            inflight.add(key, zone, task)
            stats.upstream_inflight = len(inflight)
            stats.upstream_inflight_peak = inflight.peak
        if self._stale_timer:
            try:
                async with asyncio.timeout(self._stale_timer):
                    response = await asyncio.shield(task)
            except TimeoutError:
                stale = self._stale(query, data, key, "upstream is slow")
                if stale is not None:
                    self._count(transport, query, m.STALE)
                    return stale, m.STALE
                response = await asyncio.shield(task)  # nothing stale: wait for upstream
        else:
            response = await asyncio.shield(task)
        if response is None:
            return self._stale_or_servfail(
                query, data, transport, key, EDE_NO_REACHABLE_AUTHORITY, "upstream did not answer"
            )
        blocked = self._cname_block(query, response, group)
        if blocked is not None:
            self._count(transport, query, m.BLOCKED_CNAME)
            if self._log_add is not None:
                policy_id, trigger, match = self.last_block
                udp = transport == m.UDP
                answer = blocked or None
                self._log_block(time.time(), client, udp, data, answer, policy_id, trigger, match)
            return blocked or None, m.BLOCKED_CNAME  # b"": a drop list, no answer at all
        self._count(transport, query, m.ALLOWED)
        answer = data[:2] + _reply_tail(response, query)
        self._log_left -= 1
        if self._log_left <= 0:
            self._log_allowed(time.time(), client, transport == m.UDP, data, answer)
        return answer, m.ALLOWED

    def _over_cap(
        self, query: Query, data: bytes, transport: int, key: CacheKey, zone: bytes
    ) -> tuple[bytes, int] | None:
        """Stale data or SERVFAIL (EDE 0 naming the cap), with the outcome, for a new upstream
        query the in-flight caps do not admit; None when they do."""
        inflight = self.inflight
        scope = inflight.over_cap(zone)
        if scope is None:
            return None
        self.stats.inflight_rejected_total = inflight.rejected_total
        self.stats.inflight_rejected_zone = inflight.rejected_zone
        where = zone.decode("ascii", "replace") if scope == "zone" else "this server"
        reason = f"too many queries in flight for {where}"
        return self._stale_or_servfail(query, data, transport, key, EDE_OTHER, reason)

    async def _fetch(self, key: CacheKey, zone: bytes, data: bytes) -> bytes | None:
        """The one upstream query for everyone waiting on `key`. A cacheable answer is stored
        before the query leaves the in-flight table, so no later miss falls between the two."""
        try:
            try:
                response = await self.upstream.query(data)
            except MessageError:  # parse_query accepted it, so this is a bug: answer, do not die
                log.exception("upstream refused a query blokir parsed")
                return None
            if response is not None:
                # Whatever an upstream says about one hop's options is not for the cache
                # (HOP_BY_HOP_OPTIONS); a compliant one says nothing, as none were sent.
                response = without_options(response, HOP_BY_HOP_OPTIONS)
                targets = self._alias_targets(response)
                addresses = answer_addresses(response) if self.match_ip is not None else ()
                if not self._any_blocked(targets, addresses):
                    self.cache.put(key, response)
                    if targets or addresses:
                        self._remember_aliases(key, targets, addresses)
            return response
        finally:
            self.inflight.remove(key, zone)
            self.stats.upstream_inflight = len(self.inflight)

    @staticmethod
    def _alias_targets(response: bytes) -> tuple[bytes, ...]:
        try:
            return tuple(cname_targets(response)[:CNAME_CHECK_MAX])
        except MessageError:
            return ()

    def _any_blocked(self, targets: tuple[bytes, ...], addresses: tuple[bytes, ...] = ()) -> bool:
        """Whether a CNAME/DNAME target or an A/AAAA address is blocked: such an answer must not
        be cached, or a cache hit would skip the check in `_cname_block`."""
        if self._blocked_target(targets) is not None:
            return True
        match_ip = self.match_ip
        if match_ip is None or not addresses:
            return False
        return blocked_address(match_ip, self.is_block, addresses) is not None

    def _blocked_target(
        self, targets: tuple[bytes, ...], group: int = 0
    ) -> tuple[int, bytes] | None:
        """The first target a blocking list covers, with its policy id."""
        for target in targets:
            if group:
                policy_id = self.match_policy_id_in(target, self.groups.allowed[group])
            else:
                policy_id = self.match_policy_id(target)
            if policy_id and self.is_block[policy_id]:
                return policy_id, target
        return None

    def _remember_aliases(
        self, key: CacheKey, targets: tuple[bytes, ...], addresses: tuple[bytes, ...] = ()
    ) -> None:
        """Keep the targets and addresses of a cached answer for the check after a reload;
        bounded like the cache (the oldest go first; a forgotten entry keeps its old verdict)."""
        aliases = self._aliases
        aliases.pop(key, None)
        if len(aliases) >= max(self.config.cache.max_entries, 1):
            del aliases[next(iter(aliases))]
        aliases[key] = (targets, addresses, self._lists_generation)

    def _alias_now_blocked(self, key: CacheKey) -> bool:
        """After a reload: drop a cached answer whose CNAME/DNAME targets the new lists block,
        so the query goes upstream again and `_cname_block` answers it."""
        entry = self._aliases.get(key)
        if entry is None or entry[2] == self._lists_generation:
            return False
        targets, addresses, _ = entry
        if self._any_blocked(targets, addresses):
            self.cache.discard(key)
            del self._aliases[key]
            return True
        self._aliases[key] = (targets, addresses, self._lists_generation)
        return False

    def _count(self, transport: int, query: Query, outcome: int) -> None:
        self.stats.cells[m.cell(transport, query.qtype, outcome)] += 1

    def _stale(self, query: Query, data: bytes, key: CacheKey, why: str) -> bytes | None:
        """An expired cached answer (RFC 8767) for this client, with EDE 3 "Stale Answer" when
        it sent EDNS, or None (serve_stale off, or nothing recent enough in the cache)."""
        if not self._serve_stale:
            return None
        if self._lists_generation and self._alias_now_blocked(key):
            return None
        stale = self.cache.get_stale(key, self._stale_ttl)
        if stale is None:
            return None
        answer = data[:2] + _reply_tail(stale, query)
        if query.edns:
            option = ede_option(EDE_STALE_ANSWER, why)
            with contextlib.suppress(MessageError):  # the cache only holds responses that parse
                answer = with_edns_option(answer, option, self._payload, query.do)
        return answer

    def _stale_or_servfail(
        self,
        query: Query,
        data: bytes,
        transport: int,
        key: CacheKey,
        info_code: int,
        why: str,
    ) -> tuple[bytes, int]:
        stale = self._stale(query, data, key, why)
        if stale is not None:
            self._count(transport, query, m.STALE)
            return stale, m.STALE
        self._count(transport, query, m.SERVFAIL)
        options = ede_option(info_code, why) if query.edns else b""
        return error_response(data, SERVFAIL, query, self._payload, options), m.SERVFAIL

    def _cname_block(self, query: Query, response: bytes, group: int = 0) -> bytes | None:
        """An allowed name whose answer aliases (CNAME/DNAME) a blocked name, or holds an
        address an IP list covers (docs/ip-triggers.md), gets that list's block answer:
        otherwise any CNAME alias, or any new name for a listed server, would reach it. Only
        the lists of the asker's `group` count. None: not blocked; b"": blocked by a list
        whose action is to drop the query (RPZ `rpz-drop.`), so nothing may be sent."""
        blocked = self._blocked_target(self._alias_targets(response), group)
        match = MATCH_QNAME
        if blocked is None and self.match_ip is not None:
            is_block = self.ip_is_block[group]
            found = blocked_address(self.match_ip, is_block, answer_addresses(response))
            if found is not None:
                blocked = (found[0], address_text(found[1]))
                match = MATCH_RESPONSE_IP
        if blocked is None:
            return None
        policy_id, target = blocked
        self._count_block(policy_id | group << 16, target)
        self.last_block = (policy_id, target, match)
        answer = self.responder.answer(query, policy_id)
        return b"" if answer is None else answer

    def udp_limit(self, query: Query) -> int:
        return min(query.payload, self._payload) if query.edns else MIN_UDP_PAYLOAD


# -- helpers -------------------------------------------------------------------------------------


def _cache_limits(cache: CacheConfig) -> CacheLimits:
    """ResponseCache's bounds and clamps from `[cache]`; nothing is kept past expiry for
    serve-stale when it is off."""
    return CacheLimits(
        cache.max_entries,
        cache.max_bytes,
        cache.min_ttl,
        cache.max_ttl,
        cache.negative_ttl_max,
        cache.servfail_ttl,
        cache.max_stale if cache.serve_stale else 0,
    )


def _reply_tail(stored: bytes, query: Query) -> bytes:
    """A stored upstream response after its ID, relayed to `query`'s asker: see _relayed."""
    wants_ad = bool(query.do or query.flags & AD)
    return _relayed(stored, query.flags, wants_ad, query.question, query.question_end)


def _relayed(
    stored: bytes, query_flags: int, wants_ad: bool, question: bytes, question_end: int
) -> bytes:
    """A stored response after its ID, with the header flags this asker's query calls for
    (relay_flags: cached, shared and stale answers carry another query's RD, CD and ID,
    and the upstream's AA) and `question` (this asker's, letter case as asked, 0x20
    randomisation) in place of the first asker's; the caller puts this asker's ID in front."""
    flags = relay_flags(query_flags, wants_ad, (stored[2] << 8) | stored[3])
    header = flags.to_bytes(2, "big") + stored[4:HEADER_SIZE]
    return header + question + stored[question_end:]


def _pool(config: Config, servers: list[tuple[str, int]]) -> UpstreamPool:
    upstream = config.upstream
    return UpstreamPool(
        servers,
        upstream.timeout,
        upstream.attempts,
        tls_servers=upstream.tls_servers,
        tls_ca=upstream.tls_ca,
    )


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
