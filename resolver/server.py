"""The DNS server: UDP and TCP listeners, the per-query pipeline, worker processes, signals.

Per query (README "How a query flows"):

    bytes -> wire.parse_query -> ACL -> index.match_pid(qname)
        blocked -> BlockResponder template, ID and question patched        -> send
        allowed -> cache hit: stored wire, ID and question patched         -> send
                   cache miss: upstream pool (fresh ID/port, validated), CNAME targets checked
                   against the index, stored in the cache                  -> send

The UDP path reads with a non-blocking socket drained in batches from one event-loop callback,
rather than asyncio's DatagramProtocol: one wake-up serves many packets, and blocked answers and
cache hits are sent before the callback returns, with no task or future per query. Only cache
misses become tasks.

Processes (resolver/supervisor.py): workers run `Worker` on sockets the supervisor bound, map
the same index file (shared pages) and swap to a new one when the supervisor says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Coroutine

from resolver import metrics as m
from resolver import wire
from resolver.answer_ips import address_text, answer_addresses, blocked_address
from resolver.answers import BlockResponder, BlockSettings
from resolver.cache import (
    EDE_STALE_ANSWER,
    CacheKey,
    CacheLimits,
    ResponseCache,
    with_edns_option,
)
from resolver.config import CacheConfig, Config, ConfigError
from resolver.index import Index, IndexError_, open_index
from resolver.inflight import EDE_OTHER, InflightTable, zone_of
from resolver.message import MessageError, cname_targets, within_limit, without_options
from resolver.metrics import TopCounter, WorkerStats
from resolver.querylog.client import MATCH_QNAME, MATCH_RESPONSE_IP, QueryLog
from resolver.ratelimit import RateLimiter
from resolver.upstream import UpstreamPool

log = logging.getLogger("blokir")

UDP_BATCH = 64  # packets per wake-up before yielding to TCP, timers and upstream replies
MAX_UDP_MESSAGE = 65535
ACL_CACHE_MAX = 65536  # distinct client addresses remembered by the ACL fast path
DRAIN_SECONDS = 3.0  # SIGTERM: how long in-flight upstream queries may finish
# Remembered UDP answers per generation (two generations; measured with tracemalloc: about
# 340 bytes for a blocked answer, 470 for a cache answer, which keeps its cache key for
# renewal; so at most about 47 MB): see Resolver.handle and Resolver._remember.
MEMO_GENERATION = 50_000
# Blocked answers enter the memo on their second sighting (Resolver._remember_block): a bit per
# query hash, cleared once SEEN_CLEAR_AFTER bits were set (false admissions stay under ~6%).
SEEN_BITS = 1 << 21  # 256 KiB
SEEN_CLEAR_AFTER = SEEN_BITS // 16
_FOREVER = float("inf")
_FOREVER_COUNT = 1 << 62  # the query log's countdown when nothing allowed is logged
# A query log record: (time, client, over UDP, query, answer, policy id, dnstap match, trigger).
LogRecord = tuple[float, str, bool, bytes, bytes | None, int, int, bytes]
CNAME_CHECK_MAX = 16  # CNAME/DNAME targets checked per answer (RFC 1034 chains are short)
# How a remembered cache answer is renewed when its TTLs tick: (cache key, end of the question
# in the query, the client's UDP size limit).
Renewal = tuple[CacheKey, int, int]
# A remembered answer: (answer after its ID, block pid or 0, valid until, qtype cell, qname,
# renewal for a cache answer or None).
Memo = tuple[bytes, int, float, int, bytes, Renewal | None]
_KEY_DO = 0b10  # the DO bit in a cache key's last field (Resolver._cache_key)
EDE_NO_REACHABLE_AUTHORITY = 22
EDE_PROHIBITED = 18  # RFC 8914 4.22: upstreams did not answer
QUERYLOG_FLUSH_SECONDS = 0.5  # the longest a logged query waits in the worker (querylog/client.py)


class Resolver:
    """One worker's query pipeline. Socket-free: `handle` turns query bytes into an answer, or
    into a Query that `forward` completes asynchronously."""

    def __init__(self, config: Config, index: Index) -> None:
        self.config = config
        self.stats = WorkerStats(top=TopCounter(4 * config.metrics.top_k))
        self.last_outcome = m.DROPPED  # of the last handle() call, for the latency histogram
        self.track_top = config.metrics.enabled and config.metrics.top_k > 0
        self._block_tick = 0
        self._clock = time.monotonic
        self.ratelimiter: RateLimiter | None = None
        self._apply_settings(config)
        self.cache = ResponseCache(_cache_limits(config.cache))
        self._apply_cache(config.cache)
        upstream = config.upstream
        servers = config.upstream_servers()  # ConfigError at start: nothing to forward to
        self.upstream = UpstreamPool(servers, upstream.timeout, upstream.attempts)
        # Open upstream queries by cache key (see forward and resolver.inflight).
        self.inflight: InflightTable[CacheKey, bytes | None] = InflightTable(
            upstream.max_inflight, upstream.max_inflight_per_zone
        )
        # Cached key -> (CNAME/DNAME targets, A/AAAA addresses, the lists generation they were
        # checked against): what a reload must check again (_alias_now_blocked).
        self._aliases: dict[CacheKey, tuple[tuple[bytes, ...], tuple[bytes, ...], int]] = {}
        # The dnstap query log (resolver/querylog/): see use_querylog.
        self.querylog: QueryLog | None = None
        self._log_records: list[LogRecord] | None = None
        self._log_every = 0
        self._log_left = _FOREVER_COUNT  # allowed answers until the next one is logged
        self._log_sample = _FOREVER_COUNT
        self._log_cut = False
        # What blocked the last answer forward returned: (pid, trigger, dnstap match).
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
        self._norec_ede = wire.ede_option(EDE_PROHIBITED, "recursion desired (RD) is not set")
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
        if not self.upstream.configured_as(servers, upstream.timeout, upstream.attempts):
            pool = UpstreamPool(servers, upstream.timeout, upstream.attempts)
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
        self.match_pid = index.match_pid
        # Response-IP triggers: None when the index has none, so answers are not even walked.
        self.match_ip = index.ip_match.match_packed if index.ip_match.count else None
        if self.querylog is not None:
            self.querylog.set_policies(index.policies)  # ids mean other policies from now on
        # is_block[pid]: a list index is cheaper than a Policy attribute chain per query.
        self.is_block = [False] + [not p.is_allow for p in index.policies]
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
        for pid, count in stats.blocked_by_pid.items():
            policy = policies[pid - 1]
            labels = (policy.list_name, policy.category, policy.action.value)
            stats.blocked_by_labels[labels] = stats.blocked_by_labels.get(labels, 0) + count
        stats.blocked_by_pid = {}
        stats.top.fold(lambda pid: policies[pid - 1].list_name)

    def acl_allows(self, client: str) -> bool:
        allowed = self._acl.get(client)
        if allowed is None:
            if len(self._acl) >= ACL_CACHE_MAX:
                self._acl.clear()
            allowed = self._acl[client] = self._allow(client)
        return allowed

    def handle(self, data: bytes, client: str, udp: bool = True) -> bytes | wire.Query | None:
        """bytes: send them; a Query: forward it (await `forward`); None: send nothing.

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
        if udp and allowed and not limited:
            hit = self._memo.get(key)
            if hit is None:
                hit = self._memo_old.get(key)
                if hit is not None and len(self._memo) < MEMO_GENERATION:
                    self._memo[key] = hit  # still in use: keep it through the next rotation
            if hit is not None:
                tail, pid, valid_until, qcell, qname, renewal = hit
                if pid:
                    stats.cells[qcell + m.BLOCKED] += 1
                    self._count_block(pid, qname)
                    self.last_outcome = m.BLOCKED
                    if self._log_records is not None:
                        reply = data[:2] + tail
                        self._log_block(client, udp, data, reply, pid, qname)
                        return reply
                    return data[:2] + tail
                if valid_until > self._clock():
                    stats.cells[qcell + m.CACHED] += 1
                    self.last_outcome = m.CACHED
                    self._log_left -= 1
                    if self._log_left <= 0:
                        self._log_allowed(client, udp, data, data[:2] + tail)
                    return data[:2] + tail
                # A cache answer whose TTLs ticked: the same question, so no parse, no index.
                renewed = self._renewed(key, qcell, qname, renewal) if renewal else None
                if renewed is not None:
                    stats.cells[qcell + m.CACHED] += 1
                    self.last_outcome = m.CACHED
                    self._log_left -= 1
                    if self._log_left <= 0:
                        self._log_allowed(client, udp, data, data[:2] + renewed)
                    return data[:2] + renewed
        transport = m.UDP if udp else m.TCP
        try:
            query = wire.parse_query(data)
        except wire.ParseError as error:
            return self._error(data, error, transport)
        qcell = (transport * m.N_QTYPES + m.QTYPE_INDEX.get(query.qtype, m.QTYPE_OTHER)) * (
            m.N_OUTCOMES
        )
        if not allowed:
            stats.cells[qcell + m.REFUSED] += 1
            self.last_outcome = m.REFUSED
            return wire.error_response(data, wire.REFUSED, query, self._payload)
        if limited:
            stats.cells[qcell + m.RATELIMITED] += 1
            self.last_outcome = m.RATELIMITED
            assert self.ratelimiter is not None  # `limited` is only ever set by it
            # REFUSED, silence or TC=1 per [server] ratelimit_action (resolver/ratelimit.py).
            return self.ratelimiter.over_limit_answer(data, query, self._payload, udp)
        if query.qclass == wire.CLASS_IN and not query.unmatchable:
            pid = self.match_pid(query.qname)
            if pid and self.is_block[pid]:
                stats.cells[qcell + m.BLOCKED] += 1
                self._count_block(pid, query.qname)
                self.last_outcome = m.BLOCKED
                answer = self.responder.answer(query, pid)
                if answer is not None and udp:
                    answer = self.fit_udp(answer, query)
                    self._remember_block(key, answer, pid, qcell, query.qname)
                if self._log_records is not None:
                    self._log_block(client, udp, data, answer, pid, query.qname)
                return answer
        if not query.flags & wire.RD:
            # A forwarder has nothing to say to a query that does not ask for recursion but what
            # its cache holds, and answering from the cache tells anyone which names its clients
            # visit (cache snooping). Refused, as Unbound refuses it for clients without
            # allow_snoop; a blocked name above still gets its block answer.
            stats.cells[qcell + m.REFUSED] += 1
            self.last_outcome = m.REFUSED
            options = self._norec_ede if query.edns else b""
            return wire.error_response(data, wire.REFUSED, query, self._payload, options)
        if udp and query.qtype == wire.TYPE_ANY:
            # RFC 8482 4.2: ANY over UDP is an amplification tool, so one small HINFO record
            # instead; over TCP the client's address is proven and ANY is forwarded as before.
            stats.cells[qcell + m.MINIMAL_ANY] += 1
            self.last_outcome = m.MINIMAL_ANY
            return wire.any_minimal_answer(data, query, self._payload, wire.ANY_TTL)
        cache_key = self._cache_key(query)
        cached = self.cache.get_fresh(cache_key)
        if cached is not None and self._lists_generation and self._alias_now_blocked(cache_key):
            cached = None
        if cached is not None:
            stats.cells[qcell + m.CACHED] += 1
            self.last_outcome = m.CACHED
            stored, fresh_until = cached
            answer = data[:2] + _reply_tail(stored, query, query.question, query.question_end)
            if udp:
                limit = self.udp_limit(query)  # 512 at least, so fit_udp agrees
                renewal = (cache_key, query.question_end, limit)
                if len(answer) > limit:
                    renewal = None  # truncated: a renewal would not fit either
                    answer = self.fit_udp(answer, query)
                memo = (answer[2:], 0, fresh_until, qcell, query.qname, renewal)
                self._remember(key, memo)
            self._log_left -= 1
            if self._log_left <= 0:
                self._log_allowed(client, udp, data, answer)
            return answer
        if not self.inflight.is_open(cache_key):
            # A miss the in-flight caps turn away is answered here rather than from a task:
            # under a random-subdomain flood most queries end this way, and with a task each
            # cost 17 us instead of 5 (20k names under one capped zone, handle and forward
            # timed together). forward checks again, for the caps may fill before its task runs.
            turned_away = self._over_cap(query, data, transport, cache_key, zone_of(query.qname))
            if turned_away is not None:
                return self.fit_udp(turned_away, query) if udp else turned_away
        return query

    def use_querylog(self, querylog: QueryLog | None) -> None:
        """Start (or stop, with None) logging to a dnstap query log. The query path appends
        records to the log's own list (compiled code, no call into the log per query) and
        counts allowed answers down to the next sampled one."""
        self.querylog = querylog
        if querylog is None:
            self._log_records = None
            self._log_left = self._log_sample = _FOREVER_COUNT
            return
        self._log_records = querylog.records
        self._log_every = querylog.every
        self._log_sample = querylog.sample_every
        self._log_left = self._log_sample
        self._log_cut = querylog.cut_blocked
        querylog.set_policies(self.index.policies)

    def _log_block(
        self,
        client: str,
        udp: bool,
        data: bytes,
        answer: bytes | None,
        pid: int,
        trigger: bytes,
        match: int = MATCH_QNAME,
    ) -> None:
        records = self._log_records
        assert records is not None and self.querylog is not None
        if self._log_cut:
            client = self.querylog.cut_blocked_address(client)
        records.append((time.time(), client, udp, data, answer, pid, match, trigger))
        if len(records) >= self._log_every:
            self.querylog.full()

    def _log_allowed(self, client: str, udp: bool, data: bytes, answer: bytes) -> None:
        self._log_left = self._log_sample
        if self.querylog is not None:
            self.querylog.allowed(client, udp, data, answer)

    def _count_block(self, pid: int, qname: bytes) -> None:
        """Exact per-list counts; the top-K sketch sees every SAMPLE-th block, weighted."""
        stats = self.stats
        by_pid = stats.blocked_by_pid
        by_pid[pid] = by_pid.get(pid, 0) + 1
        if not self.track_top:
            return
        self._block_tick += 1
        if self._block_tick & m.SAMPLE_MASK:
            return
        interval = stats.top.interval
        key = (qname, pid)
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
        self, key: bytes, answer: bytes, pid: int, qcell: int, qname: bytes
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
            self._remember(key, (answer[2:], pid, _FOREVER, qcell, qname, None))
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
        wants_ad = bool(query_flags & wire.AD or cache_key[3] & _KEY_DO)
        question = key[wire.HEADER_SIZE - 2 : question_end - 2]
        tail = _relayed(stored, query_flags, wants_ad, question, question_end)
        self._remember(key, (tail, 0, fresh_until, qcell, qname, renewal))
        return tail

    def fit_udp(self, answer: bytes, query: wire.Query) -> bytes:
        limit = self.udp_limit(query)
        if len(answer) <= wire.MIN_UDP_PAYLOAD or len(answer) <= limit:
            return answer
        trimmed = within_limit(answer, limit)  # TC only if a required RRset does not fit
        if trimmed is not None:
            return trimmed
        self.stats.truncated += 1
        return wire.truncated(answer, query, self._payload)

    @staticmethod
    def _cache_key(query: wire.Query) -> tuple[bytes, int, int, int]:
        # DO and CD change what an upstream returns (RFC 4035 3.2), so they are part of the key;
        # so is EDNS itself: an answer to an EDNS query carries an OPT record, which a client
        # that sent none must not get (RFC 6891 section 7).
        return (
            query.qname,
            query.qtype,
            query.qclass,
            (query.edns << 2) | (query.do * _KEY_DO) | bool(query.flags & wire.CD),
        )

    def _error(self, data: bytes, error: wire.ParseError, transport: int) -> bytes | None:
        query = error.query
        qtype = query.qtype if query is not None else -1
        if error.rcode is None:
            outcome = m.DROPPED
        elif error.rcode == wire.NOTIMP:
            outcome = m.NOTIMP
        else:
            outcome = m.FORMERR
        self.stats.cells[m.cell(transport, qtype, outcome)] += 1
        self.last_outcome = outcome
        if error.rcode is None:
            return None
        return wire.error_response(data, error.rcode, query, self._payload)

    async def forward(
        self, query: wire.Query, data: bytes, transport: int, client: str = ""
    ) -> bytes | None:
        """Answer a cache miss from upstream; count the outcome (allowed, blocked_cname, stale
        or servfail).

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
            request = wire.upstream_request(data, query)  # without the client's own options
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
                    return stale
                response = await asyncio.shield(task)  # nothing stale: wait for upstream
        else:
            response = await asyncio.shield(task)
        if response is None:
            return self._stale_or_servfail(
                query, data, transport, key, EDE_NO_REACHABLE_AUTHORITY, "upstream did not answer"
            )
        blocked = self._cname_block(query, response)
        if blocked is not None:
            self._count(transport, query, m.BLOCKED_CNAME)
            if self._log_records is not None:
                pid, trigger, match = self.last_block
                self._log_block(client, transport == m.UDP, data, blocked, pid, trigger, match)
            return blocked
        self._count(transport, query, m.ALLOWED)
        answer = data[:2] + _reply_tail(response, query, query.question, query.question_end)
        self._log_left -= 1
        if self._log_left <= 0:
            self._log_allowed(client, transport == m.UDP, data, answer)
        return answer

    def _over_cap(
        self, query: wire.Query, data: bytes, transport: int, key: CacheKey, zone: bytes
    ) -> bytes | None:
        """Stale data or SERVFAIL (EDE 0 naming the cap) for a new upstream query the in-flight
        caps do not admit; None when they do."""
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
                # (wire.HOP_BY_HOP_OPTIONS); a compliant one says nothing, as none were sent.
                response = without_options(response, wire.HOP_BY_HOP_OPTIONS)
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

    def _any_blocked(self, targets: tuple[bytes, ...], addresses: tuple[bytes, ...]) -> bool:
        """Whether a CNAME/DNAME target or an A/AAAA address is blocked: such an answer must not
        be cached, or a cache hit would skip the check in `_cname_block`."""
        if self._blocked_target(targets) is not None:
            return True
        match_ip = self.match_ip
        return (
            match_ip is not None and blocked_address(match_ip, self.is_block, addresses) is not None
        )

    def _blocked_target(self, targets: tuple[bytes, ...]) -> tuple[int, bytes] | None:
        """The first target a blocking list covers, with its policy id."""
        for target in targets:
            pid = self.match_pid(target)
            if pid and self.is_block[pid]:
                return pid, target
        return None

    def _remember_aliases(
        self, key: CacheKey, targets: tuple[bytes, ...], addresses: tuple[bytes, ...] = ()
    ) -> None:
        """Keep the targets of a cached aliasing answer for the check after a reload; bounded
        like the cache (the oldest go first; a forgotten entry keeps its old verdict)."""
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

    def _count(self, transport: int, query: wire.Query, outcome: int) -> None:
        self.stats.cells[m.cell(transport, query.qtype, outcome)] += 1
        self.last_outcome = outcome

    def _stale(self, query: wire.Query, data: bytes, key: CacheKey, why: str) -> bytes | None:
        """An expired cached answer (RFC 8767) for this client, with EDE 3 "Stale Answer" when
        it sent EDNS, or None (serve_stale off, or nothing recent enough in the cache)."""
        if not self._serve_stale:
            return None
        if self._lists_generation and self._alias_now_blocked(key):
            return None
        stale = self.cache.get_stale(key, self._stale_ttl)
        if stale is None:
            return None
        answer = data[:2] + _reply_tail(stale, query, query.question, query.question_end)
        if query.edns:
            option = wire.ede_option(EDE_STALE_ANSWER, why)
            with contextlib.suppress(MessageError):  # the cache only holds responses that parse
                answer = with_edns_option(answer, option, self._payload, query.do)
        return answer

    def _stale_or_servfail(
        self,
        query: wire.Query,
        data: bytes,
        transport: int,
        key: CacheKey,
        info_code: int,
        why: str,
    ) -> bytes:
        stale = self._stale(query, data, key, why)
        if stale is not None:
            self._count(transport, query, m.STALE)
            return stale
        self._count(transport, query, m.SERVFAIL)
        options = wire.ede_option(info_code, why) if query.edns else b""
        return wire.error_response(data, wire.SERVFAIL, query, self._payload, options)

    def _cname_block(self, query: wire.Query, response: bytes) -> bytes | None:
        """An allowed name whose answer aliases (CNAME/DNAME) a blocked name, or holds an
        address an IP list covers (docs/ip-triggers.md), gets that list's block answer:
        otherwise any CNAME alias, or any new name for a listed server, would reach it."""
        blocked = self._blocked_target(self._alias_targets(response))
        match = MATCH_QNAME
        if blocked is None and self.match_ip is not None:
            found = blocked_address(self.match_ip, self.is_block, answer_addresses(response))
            if found is not None:
                blocked = (found[0], address_text(found[1]))
                match = MATCH_RESPONSE_IP
        if blocked is None:
            return None
        pid, target = blocked
        self._count_block(pid, target)
        self.last_block = (pid, target, match)
        return self.responder.answer(query, pid)

    def udp_limit(self, query: wire.Query) -> int:
        return min(query.payload, self._payload) if query.edns else wire.MIN_UDP_PAYLOAD


class Worker:
    """One process: the resolver plus its sockets and event loop."""

    def __init__(
        self,
        config: Config,
        index_path: str,
        udp_socks: list[socket.socket],
        tcp_socks: list[socket.socket],
        slots: m.SharedSlots | None = None,
        slot: int = 0,
        channel: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.index_path = index_path
        self.channel = channel  # from the supervisor: index and settings swaps (supervisor.py)
        self.slots = slots  # where this worker publishes its counters (None: metrics off)
        self.slot = slot
        self.timing = slots is not None  # the latency histogram costs two clock reads a query
        self._tick = 0  # UDP answers so far: every SAMPLE-th synchronous answer is timed
        self.resolver = Resolver(config, open_index(index_path))
        if config.querylog.dnstap:
            querylog = QueryLog(config.querylog, slot, config.server.workers)
            querylog.start()
            self.resolver.use_querylog(querylog)
        self.udp_socks = udp_socks
        self.tcp_socks = tcp_socks
        self.tasks: set[asyncio.Task[None]] = set()
        # Starts forwarding a UDP query that needs its upstream. An attribute, not a method call,
        # so bench/hotpath_bench.py can take the forwarded queries over (a compiled class's
        # methods cannot be replaced).
        self.start_udp_forward: Callable[
            [socket.socket, wire.Query, bytes, tuple[str, int], float], None
        ] = self._start_udp_forward
        self.tcp_active = 0
        self.stopping = asyncio.Event()
        self.servers: list[asyncio.Server] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.udp_socks:
            loop.add_reader(sock.fileno(), self._on_udp_readable, sock)
        for sock in self.tcp_socks:
            self.servers.append(await asyncio.start_server(self._tcp_client, sock=sock))
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.channel is not None:
            loop.add_reader(self.channel.fileno(), self._on_control)
        if self.slots is not None:
            self.publish()
            loop.call_later(m.FLUSH_SECONDS, self._flush_tick)
        if self.resolver.querylog is not None:
            loop.call_later(QUERYLOG_FLUSH_SECONDS, self._querylog_tick)
        await self.stopping.wait()
        await self.drain()
        if self.resolver.querylog is not None:
            self.resolver.querylog.close()  # the writer finishes its stream (STOP, FINISH)
        if self.slots is not None:
            self.publish()  # the last counts reach the supervisor before this process ends

    def _querylog_tick(self) -> None:
        """Logged queries reach the writer within this interval even when few are logged."""
        if self.resolver.querylog is not None:
            self.resolver.querylog.flush()
        if not self.stopping.is_set():
            asyncio.get_running_loop().call_later(QUERYLOG_FLUSH_SECONDS, self._querylog_tick)

    def _flush_tick(self) -> None:
        self.publish()
        if not self.stopping.is_set():
            asyncio.get_running_loop().call_later(m.FLUSH_SECONDS, self._flush_tick)

    def publish(self) -> None:
        """Write this worker's cumulative counters to its shared slot."""
        assert self.slots is not None
        resolver = self.resolver
        resolver.settle_counts()
        cache = resolver.cache
        cache_stats = {
            "entries": len(cache),
            "bytes": cache.bytes_used,
            "hits": cache.hits,
            "misses": cache.misses,
            "evictions": cache.evictions,
            "expired": cache.expired,
            "inserts": cache.inserts,
        }
        upstreams = [
            {
                "address": format_address(stats.address),
                "requests": stats.requests,
                "responses": stats.responses,
                "timeouts": stats.timeouts,
                "errors": stats.errors,
                "failure_rcodes": stats.failure_rcodes,
                "tcp_fallbacks": stats.tcp_fallbacks,
                "up": stats.up,
                "buckets": stats.buckets,
                "duration_sum": stats.duration_sum,
            }
            for stats in resolver.upstream.stats
        ]
        extra = {
            "tcp_connections": self.tcp_active,
            "memo_entries": resolver.memo_size(),
            "tcp_rejected": self.tcp_rejected,
            "tcp_timeouts": self.tcp_timeouts,
            "tcp_overflows": self.tcp_overflows,
            "tcp_short": self.tcp_short,
        }
        if resolver.querylog is not None:
            extra["querylog_logged"] = resolver.querylog.logged
            extra["querylog_dropped"] = resolver.querylog.dropped
        limiter = resolver.ratelimiter
        if limiter is not None:
            extra["ratelimit_refused"] = limiter.refused
            extra["ratelimit_dropped"] = limiter.dropped
            extra["ratelimit_slipped"] = limiter.slipped
        self.slots.write(self.slot, m.snapshot_bytes(resolver.stats, cache_stats, upstreams, extra))

    async def drain(self) -> None:
        """Stop reading new queries, let in-flight ones finish (bounded), then close."""
        loop = asyncio.get_running_loop()
        for sock in self.udp_socks:
            loop.remove_reader(sock.fileno())
        for server in self.servers:
            server.close()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=DRAIN_SECONDS)
        for sock in self.udp_socks:
            sock.close()

    def reload(self) -> None:
        """SIGHUP sent to a worker directly: map the index file again (the supervisor's swap
        message is the normal way, see `_on_control`)."""
        try:
            self.swap(self.config, self.index_path, verify=True)
        except IndexError_ as exc:
            log.error("reload refused, keeping the loaded index: %s", exc)

    def swap(self, config: Config, index_path: str, verify: bool) -> Index:
        """Map `index_path` and answer from it (and `config`) from the next query on. The old
        mapping is closed once unused; pages of both are shared with the other workers."""
        index = open_index(index_path, verify=verify)
        old = self.resolver.index
        self.config = config
        self.index_path = index_path
        self.resolver.reconfigure(config, index)
        old.close()
        return index

    def _on_control(self) -> None:
        """A message from the supervisor. The supervisor verified the new index file before
        renaming it into place, so mapping it skips the checksum pass: the swap costs a
        header read, and queries wait in the socket buffers meanwhile (none are lost)."""
        from resolver.supervisor import recv_message, send_message

        assert self.channel is not None
        try:
            self.channel.setblocking(True)
            self.channel.settimeout(5.0)
            message = recv_message(self.channel)
        except (OSError, ValueError) as exc:
            log.error("supervisor channel failed: %s; stopping", exc)
            message = None
        if message is None:  # the supervisor is gone: do not linger as an orphan on the port
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
            self.stopping.set()
            return
        reply: dict[str, object] = {"ok": False, "error": f"unknown message {message.get('op')!r}"}
        if message.get("op") == "swap":
            started = time.perf_counter()
            try:
                index = self.swap(message["config"], message["index_path"], verify=False)
            except IndexError_ as exc:
                reply = {"ok": False, "error": str(exc)}
            else:
                seconds = time.perf_counter() - started
                reply = {"ok": True, "names": index.count, "seconds": seconds}
                log.info(
                    "swapped to %s: %d names in %.1f ms",
                    message["index_path"],
                    index.count,
                    seconds * 1e3,
                )
        with contextlib.suppress(OSError):
            send_message(self.channel, reply)

    # -- UDP -------------------------------------------------------------------------------

    def _on_udp_readable(self, sock: socket.socket) -> None:
        resolver = self.resolver
        handle = resolver.handle
        stats = resolver.stats
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        timing = self.timing
        clock = time.perf_counter
        histogram = stats.histogram
        duration_sum = stats.duration_sum
        row = m.N_BUCKETS + 1
        top_bucket = m.N_BUCKETS
        tick = self._tick
        for _ in range(UDP_BATCH):
            try:
                data, address = recvfrom(MAX_UDP_MESSAGE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. ICMP errors surfaced on the socket: nothing to answer
            tick += 1
            sampled = timing and not tick & m.SAMPLE_MASK
            started = clock() if sampled else 0.0
            try:
                result = handle(data, address[0])
            except Exception:  # a bug must cost one query, never the worker
                log.exception("query handling failed")
                continue
            if result is None:
                continue
            if isinstance(result, bytes):
                try:
                    sendto(result, address)
                except OSError:
                    stats.send_errors += 1
                if sampled:  # WorkerStats.observe, written out, with the sample's weight
                    elapsed = clock() - started
                    bucket = int(elapsed * 1e6).bit_length()
                    outcome = resolver.last_outcome
                    histogram[outcome * row + (bucket if bucket < top_bucket else top_bucket)] += (
                        m.SAMPLE
                    )
                    duration_sum[outcome] += elapsed * m.SAMPLE
                continue
            self.start_udp_forward(sock, result, data, address, started if sampled else clock())
        self._tick = tick
        if resolver.retired_memos:
            resolver.free_retired()

    def _start_udp_forward(
        self,
        sock: socket.socket,
        query: wire.Query,
        data: bytes,
        address: tuple[str, int],
        started: float,
    ) -> None:
        self._spawn(self._udp_forward(sock, query, data, address, started))

    async def _udp_forward(
        self,
        sock: socket.socket,
        query: wire.Query,
        data: bytes,
        address: tuple[str, int],
        started: float,
    ) -> None:
        resolver = self.resolver
        response = await resolver.forward(query, data, m.UDP, address[0])
        outcome = resolver.last_outcome
        if response is None:
            return
        response = resolver.fit_udp(response, query)
        with contextlib.suppress(OSError):
            sock.sendto(response, address)
        if self.timing:  # every forwarded answer is timed (weight 1): there are few
            resolver.stats.observe(outcome, time.perf_counter() - started)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("query task failed", exc_info=task.exception())

    # -- TCP (RFC 7766) --------------------------------------------------------------------
    #
    # Every way a TCP client can hold server resources has a bound (README "Security and
    # reliability"): the connection count (tcp_max_connections), the time between messages
    # (tcp_idle_timeout, RFC 7766 6.2.3), the time a started message may take to arrive (the
    # same timeout, counted from its first octet, so dripping one octet at a time does not
    # keep a connection forever: RFC 7766 10 asks servers to resist exactly this), queries in
    # flight (TCP_MAX_PIPELINED) and answers the client does not read (TCP_WRITE_HIGH_WATER,
    # TCP_WRITE_LIMIT). The counters below are per worker.

    # Unsent answer octets at which reading stops until the client catches up; a client that
    # stays behind for tcp_idle_timeout is cut off.
    TCP_WRITE_HIGH_WATER = 65_536  # 64 KiB; a literal: mypyc takes no expression as a default
    # Answers from upstream still land while reading is paused; past this many unsent octets
    # the connection is aborted at once (RST), whatever the timeout.
    TCP_WRITE_LIMIT = 262_144  # 256 KiB
    # Forwarded queries in flight per connection; the next message is read when one finishes.
    TCP_MAX_PIPELINED = 32
    tcp_rejected = 0  # connections closed at accept: tcp_max_connections were open
    tcp_timeouts = 0  # closed idle, or a message did not arrive within the timeout
    tcp_overflows = 0  # aborted: the client did not read its answers
    tcp_short = 0  # closed: a message shorter than a DNS header (zero-length included)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = self.config.server
        if self.tcp_active >= server.tcp_max_connections:
            # Refused at once rather than left in the backlog: the client learns now and the
            # descriptor is released on this loop iteration.
            self.tcp_rejected += 1
            writer.transport.abort()
            return
        self.tcp_active += 1
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        idle = server.tcp_idle_timeout
        transport = writer.transport
        transport.set_write_buffer_limits(high=self.TCP_WRITE_HIGH_WATER)
        pending: set[asyncio.Task[None]] = set()
        aborted = False
        try:
            while not self.stopping.is_set():
                if transport.get_write_buffer_size() > self.TCP_WRITE_HIGH_WATER:
                    try:
                        async with asyncio.timeout(idle):
                            await writer.drain()  # until the client reads below the mark
                    except TimeoutError:
                        self.tcp_overflows += 1
                        aborted = True
                        transport.abort()
                        break
                    except ConnectionError:
                        break
                if len(pending) >= self.TCP_MAX_PIPELINED:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                try:
                    async with asyncio.timeout(idle):  # idle: waiting for the next message
                        prefix = await reader.readexactly(1)
                    # The rest of the message, length octet included, within the timeout of
                    # its first octet: a per-message deadline, not a per-read one.
                    async with asyncio.timeout(idle):
                        prefix += await reader.readexactly(1)
                        data = await reader.readexactly(int.from_bytes(prefix, "big"))
                except TimeoutError:
                    self.tcp_timeouts += 1
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if len(data) < wire.HEADER_SIZE:
                    # A message shorter than the 12-octet header (RFC 1035 4.1.1), zero-length
                    # included, carries no ID to put in a FORMERR: nothing can be answered.
                    # Close instead of reading on: a client that frames messages like this is
                    # broken or hostile (RFC 7766 6.2.4 lets servers close at any time).
                    self.tcp_short += 1
                    self.resolver.handle(data, client, udp=False)  # counted as dropped
                    break
                try:
                    result = self.resolver.handle(data, client, udp=False)
                except Exception:  # a bug must cost one query, never the worker
                    log.exception("query handling failed")
                    continue
                if result is None:
                    continue
                if isinstance(result, bytes):
                    if not self._tcp_send(writer, result):
                        aborted = True
                        break
                    continue
                # Pipelining: answer out of order as upstream replies arrive (RFC 7766 6.2.1.1).
                task = asyncio.get_running_loop().create_task(
                    self._tcp_forward(writer, result, data, client)
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending and not aborted:
                await asyncio.wait(pending, timeout=self.config.upstream.timeout * 2)
        finally:
            self.tcp_active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _tcp_send(self, writer: asyncio.StreamWriter, answer: bytes) -> bool:
        """Queue one length-prefixed answer; False (and the connection aborted) when the client
        has left more than TCP_WRITE_LIMIT octets unread."""
        if writer.is_closing():
            return False
        writer.write(len(answer).to_bytes(2, "big") + answer)
        if writer.transport.get_write_buffer_size() > self.TCP_WRITE_LIMIT:
            self.tcp_overflows += 1
            writer.transport.abort()
            return False
        return True

    async def _tcp_forward(
        self, writer: asyncio.StreamWriter, query: wire.Query, data: bytes, client: str = ""
    ) -> None:
        response = await self.resolver.forward(query, data, m.TCP, client)
        if response is not None:
            self._tcp_send(writer, response)


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


def _reply_tail(stored: bytes, query: wire.Query, question: bytes, question_end: int) -> bytes:
    """A stored upstream response after its ID, relayed to `query`'s asker: see _relayed."""
    wants_ad = bool(query.do or query.flags & wire.AD)
    return _relayed(stored, query.flags, wants_ad, question, question_end)


def _relayed(
    stored: bytes, query_flags: int, wants_ad: bool, question: bytes, question_end: int
) -> bytes:
    """A stored response after its ID, with the header flags this asker's query calls for
    (wire.relay_flags: cached, shared and stale answers carry another query's RD, CD and ID,
    and the upstream's AA) and `question` (this asker's, letter case as asked, 0x20
    randomisation) in place of the first asker's; the caller puts this asker's ID in front."""
    flags = wire.relay_flags(query_flags, wants_ad, (stored[2] << 8) | stored[3])
    header = flags.to_bytes(2, "big") + stored[4 : wire.HEADER_SIZE]
    return header + question + stored[question_end:]


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
