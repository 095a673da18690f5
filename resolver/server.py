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

Processes: a supervisor compiles the index when the lists changed (in a child process, so its
peak memory is returned to the system), then forks `workers` processes that each bind the
listen addresses with SO_REUSEPORT and map the same index file (shared pages). The supervisor
restarts a worker that dies, drains on SIGTERM/SIGINT, and reloads on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine

from resolver import metrics as m
from resolver import wire
from resolver.answers import BlockResponder, BlockSettings
from resolver.cache import ResponseCache
from resolver.compile import compile_lists, current_index, write_index
from resolver.config import Config
from resolver.index import Index, IndexError_, open_index
from resolver.message import MessageError, cname_targets
from resolver.metrics import TopCounter, WorkerStats
from resolver.ratelimit import RateLimiter
from resolver.upstream import UpstreamPool

log = logging.getLogger("blokir")

UDP_BATCH = 64  # packets per wake-up before yielding to TCP, timers and upstream replies
MAX_UDP_MESSAGE = 65535
ACL_CACHE_MAX = 65536  # distinct client addresses remembered by the ACL fast path
DRAIN_SECONDS = 3.0  # SIGTERM: how long in-flight upstream queries may finish
RESTART_BACKOFF = 0.2  # seconds between restarts of a crashing worker (bounded spin)
# Remembered UDP answers per generation (two generations; about 300 bytes each, so at most
# about 30 MB): see Resolver.handle and Resolver._remember.
MEMO_GENERATION = 50_000
_FOREVER = float("inf")
CNAME_CHECK_MAX = 16
GC_GEN0_THRESHOLD = 100_000  # allocations between young-generation collections (default 700)
# A remembered answer: (answer after its ID, block pid or 0, valid until, qtype cell, qname)
Memo = tuple[
    bytes, int, float, int, bytes
]  # CNAME/DNAME targets checked per answer (RFC 1034 chains are short)
EDE_NO_REACHABLE_AUTHORITY = 22  # RFC 8914 4.22: upstreams did not answer


class Resolver:
    """One worker's query pipeline. Socket-free: `handle` turns query bytes into an answer, or
    into a Query that `forward` completes asynchronously."""

    def __init__(self, config: Config, index: Index) -> None:
        self.config = config
        self.stats = WorkerStats(top=TopCounter(4 * config.metrics.top_k))
        self.last_outcome = m.DROPPED  # of the last handle() call, for the latency histogram
        self.track_top = config.metrics.enabled and config.metrics.top_k > 0
        self._block_tick = 0
        self._payload = config.server.udp_payload_size
        self._allow = config.server.allows
        self._acl: dict[str, bool] = {}
        self._clock = time.monotonic
        server_config = config.server
        self.ratelimiter = (
            RateLimiter(server_config.ratelimit, server_config.ratelimit_burst)
            if server_config.ratelimit
            else None
        )
        cache = config.cache
        self.cache = ResponseCache(
            cache.max_entries,
            cache.max_bytes,
            cache.min_ttl,
            cache.max_ttl,
            cache.negative_ttl_max,
            cache.servfail_ttl,
        )
        self.upstream = UpstreamPool(
            config.upstream_servers(), config.upstream.timeout, config.upstream.attempts
        )
        blocking = config.blocking
        self._settings = BlockSettings(
            ttl=blocking.ttl,
            landing_ipv4=blocking.landing_ipv4,
            landing_ipv6=blocking.landing_ipv6,
            soa_mname=blocking.soa_mname,
            soa_rname=blocking.soa_rname,
            contact=blocking.contact,
            justification=blocking.justification,
            organisation=blocking.organisation,
            udp_payload_size=self._payload,
        )
        self.use_index(index)

    def use_index(self, index: Index) -> None:
        """Swap the index (reload). Single-threaded event loop: the next query sees the new one.
        Counts kept by policy id are settled first: ids mean other lists in the new index."""
        if getattr(self, "index", None) is not None:
            self.settle_counts()
        self.index = index
        self.match_pid = index.match_pid
        # is_block[pid]: a list index is cheaper than a Policy attribute chain per query.
        self.is_block = [False] + [not p.is_allow for p in index.policies]
        self.responder = BlockResponder(index.policies, self._settings)
        # Remembered UDP answers (see handle): query bytes after the ID -> (answer bytes after
        # the ID, block policy id or 0 for a cache hit, valid until this clock time, the
        # counter cell of its query type, the query name).
        self._memo: dict[bytes, Memo] = {}
        self._memo_old: dict[bytes, Memo] = {}

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
        limited = allowed and self.ratelimiter is not None and not self.ratelimiter.allow(client)
        if udp and allowed and not limited:
            key = data[2:]
            hit = self._memo.get(key)
            if hit is None:
                hit = self._memo_old.get(key)
                if hit is not None and len(self._memo) < MEMO_GENERATION:
                    self._memo[key] = hit  # still in use: keep it through the next rotation
            if hit is not None:
                tail, pid, valid_until, qcell, qname = hit
                if pid:
                    stats.cells[qcell + m.BLOCKED] += 1
                    self._count_block(pid, qname)
                    self.last_outcome = m.BLOCKED
                    return data[:2] + tail
                if valid_until > self._clock():
                    stats.cells[qcell + m.CACHED] += 1
                    self.last_outcome = m.CACHED
                    return data[:2] + tail
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
            return wire.error_response(data, wire.REFUSED, query, self._payload)
        if query.qclass == wire.CLASS_IN and not query.unmatchable:
            pid = self.match_pid(query.qname)
            if pid and self.is_block[pid]:
                stats.cells[qcell + m.BLOCKED] += 1
                self._count_block(pid, query.qname)
                self.last_outcome = m.BLOCKED
                answer = self.responder.answer(query, pid)
                if answer is not None and udp:
                    answer = self.fit_udp(answer, query)
                    self._remember(data, answer, pid, _FOREVER, qcell, query.qname)
                return answer
        cached = self.cache.get_fresh(self._cache_key(query))
        if cached is not None:
            stats.cells[qcell + m.CACHED] += 1
            self.last_outcome = m.CACHED
            stored, fresh_until = cached
            # The stored answer carries the first asker's ID and letter case: patch both.
            answer = (
                data[:2]
                + stored[2 : wire.HEADER_SIZE]
                + query.question
                + stored[query.question_end :]
            )
            if udp:
                answer = self.fit_udp(answer, query)
                self._remember(data, answer, 0, fresh_until, qcell, query.qname)
            return answer
        return query

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

    def memo_size(self) -> int:
        return len(self._memo) + len(self._memo_old)

    def _remember(
        self, data: bytes, answer: bytes, pid: int, valid_until: float, qcell: int, qname: bytes
    ) -> None:
        """Two generations instead of an LRU: when the young one fills, it becomes the old one
        and the previous old one is dropped. Entries used since the last rotation are copied
        forward on their next hit, so hot answers survive and the bound holds without any
        per-hit bookkeeping."""
        if len(self._memo) >= MEMO_GENERATION:
            self._memo_old = self._memo
            self._memo = {}
        self._memo[data[2:]] = (answer[2:], pid, valid_until, qcell, qname)

    def fit_udp(self, answer: bytes, query: wire.Query) -> bytes:
        if len(answer) <= wire.MIN_UDP_PAYLOAD or len(answer) <= self.udp_limit(query):
            return answer
        self.stats.truncated += 1
        return wire.truncated(answer, query, self._payload)

    @staticmethod
    def _cache_key(query: wire.Query) -> tuple[bytes, int, int, int]:
        # DO and CD change what an upstream returns (RFC 4035 3.2), so they are part of the key.
        return (
            query.qname,
            query.qtype,
            query.qclass,
            (query.do << 1) | bool(query.flags & wire.CD),
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

    async def forward(self, query: wire.Query, data: bytes, transport: int) -> bytes | None:
        """Ask upstream; count the outcome (allowed, blocked_cname or servfail)."""
        try:
            response = await self.upstream.query(data)
        except MessageError:  # parse_query accepted it, so this is a bug: answer, do not die
            log.exception("upstream refused a query blokir parsed")
            response = None
        cells = self.stats.cells
        if response is None:
            cells[m.cell(transport, query.qtype, m.SERVFAIL)] += 1
            self.last_outcome = m.SERVFAIL
            options = b""
            if query.edns:
                options = wire.ede_option(EDE_NO_REACHABLE_AUTHORITY, "upstream did not answer")
            return wire.error_response(data, wire.SERVFAIL, query, self._payload, options)
        blocked = self._cname_block(query, response)
        if blocked is not None:
            cells[m.cell(transport, query.qtype, m.BLOCKED_CNAME)] += 1
            self.last_outcome = m.BLOCKED_CNAME
            return blocked
        cells[m.cell(transport, query.qtype, m.ALLOWED)] += 1
        self.last_outcome = m.ALLOWED
        self.cache.put(self._cache_key(query), response)
        return response

    def _cname_block(self, query: wire.Query, response: bytes) -> bytes | None:
        """An allowed name whose answer aliases (CNAME/DNAME) a blocked name gets that list's
        block answer: otherwise any CNAME alias would reach a blocked site."""
        try:
            targets = cname_targets(response)
        except MessageError:
            return None
        for target in targets[:CNAME_CHECK_MAX]:
            pid = self.match_pid(target)
            if pid and self.is_block[pid]:
                self._count_block(pid, target)
                return self.responder.answer(query, pid)
        return None

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
    ) -> None:
        self.config = config
        self.index_path = index_path
        self.slots = slots  # where this worker publishes its counters (None: metrics off)
        self.slot = slot
        self.timing = slots is not None  # the latency histogram costs two clock reads a query
        self._tick = 0  # UDP answers so far: every SAMPLE-th synchronous answer is timed
        self.resolver = Resolver(config, open_index(index_path))
        self.udp_socks = udp_socks
        self.tcp_socks = tcp_socks
        self.tasks: set[asyncio.Task[None]] = set()
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
        if self.slots is not None:
            self.publish()
            loop.call_later(m.FLUSH_SECONDS, self._flush_tick)
        await self.stopping.wait()
        await self.drain()
        if self.slots is not None:
            self.publish()  # the last counts reach the supervisor before this process ends

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
        }
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
        try:
            index = open_index(self.index_path)
        except IndexError_ as exc:
            log.error("reload refused, keeping the loaded index: %s", exc)
            return
        old = self.resolver.index
        self.resolver.use_index(index)
        old.close()
        log.info("reloaded index: %d names", index.count)

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
            forward_started = started if sampled else clock()
            self._spawn(self._udp_forward(sock, result, data, address, forward_started))
        self._tick = tick

    async def _udp_forward(
        self,
        sock: socket.socket,
        query: wire.Query,
        data: bytes,
        address: tuple[str, int],
        started: float,
    ) -> None:
        resolver = self.resolver
        response = await resolver.forward(query, data, m.UDP)
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

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = self.config.server
        if self.tcp_active >= server.tcp_max_connections:
            writer.close()
            return
        self.tcp_active += 1
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        pending: set[asyncio.Task[None]] = set()
        try:
            while not self.stopping.is_set():
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), server.tcp_idle_timeout)
                    size = int.from_bytes(prefix, "big")
                    data = await asyncio.wait_for(reader.readexactly(size), server.tcp_idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                result = self.resolver.handle(data, client, udp=False)
                if result is None:
                    continue
                if isinstance(result, bytes):
                    writer.write(len(result).to_bytes(2, "big") + result)
                    continue
                # Pipelining: answer out of order as upstream replies arrive (RFC 7766 6.2.1.1).
                task = asyncio.get_running_loop().create_task(
                    self._tcp_forward(writer, result, data)
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending, timeout=self.config.upstream.timeout * 2)
        finally:
            self.tcp_active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _tcp_forward(
        self, writer: asyncio.StreamWriter, query: wire.Query, data: bytes
    ) -> None:
        response = await self.resolver.forward(query, data, m.TCP)
        if response is not None and not writer.is_closing():
            writer.write(len(response).to_bytes(2, "big") + response)


# -- sockets and processes ----------------------------------------------------------------------


def bind_sockets(config: Config) -> tuple[list[socket.socket], list[socket.socket]]:
    """One UDP and one TCP socket per listen address, with SO_REUSEPORT so every worker binds
    its own and the kernel spreads queries across them."""
    udp: list[socket.socket] = []
    tcp: list[socket.socket] = []
    for host, port in config.server.listen:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        for kind, bucket in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)):
            sock = socket.socket(family, kind)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(1024)
                else:
                    # Room for bursts while the loop is busy with other work.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                for s in udp + tcp:
                    s.close()
                what = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                hint = (
                    " (is another server running there?)" if exc.errno == errno.EADDRINUSE else ""
                )
                raise ServeError(
                    f"cannot listen on {what} {host}:{port}: {exc.strerror}{hint}"
                ) from exc
            bucket.append(sock)
    return udp, tcp


class ServeError(Exception):
    """A start-up problem a person can fix (port in use, unreadable lists)."""


def ensure_index(config: Config) -> str:
    """The index the workers map: compiled from the lists unless the file on disk is current.
    Compiling runs in a child process so the supervisor does not keep the build's peak memory."""
    path = config.blocking.index_path
    specs = config.list_specs()
    index = current_index(path, specs)
    if index is not None:
        index.close()
        return str(path)
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: compile, write, exit without running the parent's cleanup
        code = 1
        try:
            write_index(compile_lists(specs), path)
            code = 0
        except Exception as exc:
            print(f"blokir: compiling the index failed: {exc}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ServeError("the index could not be compiled (see the error above)")
    log.info("compiled %s in %.2f s", path, time.perf_counter() - started)
    return str(path)


def run_worker(config: Config, index_path: str, slots: m.SharedSlots | None, slot: int) -> None:
    """Worker process body: bind, serve until SIGTERM, exit."""
    udp, tcp = bind_sockets(config)
    asyncio.run(_worker_main(config, index_path, udp, tcp, slots, slot))


async def _worker_main(
    config: Config,
    index_path: str,
    udp: list[socket.socket],
    tcp: list[socket.socket],
    slots: m.SharedSlots | None,
    slot: int,
) -> None:
    worker = Worker(config, index_path, udp, tcp, slots, slot)
    # Every query allocates a few container objects, so the cyclic GC's default gen0 threshold
    # (700) runs collections thousands of times a second, and the older generations rescan
    # the large, long-lived memo and cache. Freezing start-up objects and collecting far less
    # often measured 20-35% more queries/s on the benchmark workload; reference counting still
    # frees almost everything at once, the GC only finds cycles (rare on this path).
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
    await worker.run()


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_index_header(path: str) -> dict[str, object]:
    with open_index(path, verify=False) as index:
        return dict(index.header)


def serve(config: Config, ready: Callable[[], None] | None = None) -> int:
    """Supervisor: compile if needed, check the ports, fork workers, restart the dead ones."""
    index_path = ensure_index(config)
    # Bind once in the supervisor to report a busy port before forking, then release.
    probe_udp, probe_tcp = bind_sockets(config)
    for sock in probe_udp + probe_tcp:
        sock.close()
    hub: m.MetricsHub | None = None
    if config.metrics.enabled:
        hub = m.MetricsHub(config.server.workers, config.metrics.top_k)
        hub.set_index(read_index_header(index_path))
        host, port = config.metrics.listen
        try:
            http = m.start_http(hub, host, port)
        except OSError as exc:
            raise ServeError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        log.info("metrics on http://%s:%d/metrics", *http.server_address[:2])
    slots = hub.slots if hub is not None else None
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False
    reload_requested = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, frame: object) -> None:
        nonlocal reload_requested
        reload_requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 0
            try:
                run_worker(config, index_path, slots, number)
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            finally:
                os._exit(code)
        children[pid] = number

    for number in range(config.server.workers):
        start(number)
    listen = ", ".join(f"{h}:{p}" for h, p in config.server.listen)
    log.info(
        "blokir serving on %s with %d worker(s), index %s",
        listen,
        config.server.workers,
        index_path,
    )
    if ready is not None:
        ready()
    while children:
        if stopping:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + DRAIN_SECONDS + 2
            while children and time.monotonic() < deadline:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid:
                    children.pop(pid, None)
                else:
                    time.sleep(0.05)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return 0
        if reload_requested:
            reload_requested = False
            try:
                index_path = ensure_index(config)
            except ServeError as exc:
                log.error("reload failed, workers keep the loaded index: %s", exc)
                if hub is not None:
                    hub.count_reload(ok=False)
            else:
                if hub is not None:
                    hub.count_reload(ok=True)
                    hub.set_index(read_index_header(index_path))
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGHUP)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
            continue
        number = children.pop(pid, -1)
        if number >= 0 and hub is not None:
            hub.retire_slot(number)  # its counters must not vanish from the sums
        if number >= 0 and not stopping:
            log.warning(
                "worker %d (pid %d) exited with %s; restarting",
                number,
                pid,
                os.waitstatus_to_exitcode(status),
            )
            time.sleep(RESTART_BACKOFF)
            start(number)
    return 0
