"""A worker process: the pipeline (resolver/pipeline.py) behind UDP and TCP listeners, the
supervisor's control channel and signals, on one event loop.

The UDP path reads with a non-blocking socket drained in batches from one event-loop callback,
rather than asyncio's DatagramProtocol: one wake-up serves many packets, and blocked answers and
cache hits are sent before the callback returns, with no task or future per query. Only cache
misses become tasks. Where the install built resolver/_udpbatch.c, a wake-up reads its batch
with one recvmmsg and sends the immediate answers with one sendmmsg (resolver/udpbatch.py);
otherwise, or with BLOKIR_UDP_BATCH=0, one recvfrom and one sendto per query.

Processes (resolver/supervisor.py): workers run `Worker` on sockets the supervisor bound, map
the same index file (shared pages) and swap to a new one when the supervisor says so
(resolver/channel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Final

from resolver import metrics as m
from resolver.channel import recv_message, send_message
from resolver.config import Config
from resolver.dns.constants import HEADER_SIZE
from resolver.dns.query import Query
from resolver.index import Index, IndexError_, open_index
from resolver.pipeline import Resolver, format_address
from resolver.querylog.client import QueryLog
from resolver.transports.endpoints import Endpoints
from resolver.udpbatch import Address, BatcherLike, new_batcher

log = logging.getLogger("blokir")

# Packets per wake-up before yielding to TCP, timers and upstream replies; with the batched path
# also the recvmmsg/sendmmsg batch. 64: a load generator keeps ~100 queries in flight, so a busy
# wake-up finds tens waiting; past ~32 the two system calls' share per answer is already below
# 0.2 us, and 64 keeps one wake-up's work (~64 x 4 us) well under a millisecond of delay for
# the other sockets. The batched path's buffers: 64 x 64 KiB of address space per worker, of
# which only the pages datagrams touch become resident.
UDP_BATCH: Final = 64
MAX_UDP_MESSAGE: Final = 65535
DRAIN_SECONDS: Final = 3.0  # SIGTERM: how long in-flight upstream queries may finish
# A TCP connection the client ends with forwarded queries still open waits for their answers as
# long as a forward may take: the upstream pool's bound (UpstreamPool.query_bound; a coalesced
# query joins one that started earlier and ends no later) and this much for the event loop.
TCP_FORWARD_SLACK: Final = 0.5
QUERYLOG_FLUSH_SECONDS: Final = 0.5  # the longest a logged query waits in the worker


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
        *,
        tls_socks: list[socket.socket] | None = None,
        https_socks: list[socket.socket] | None = None,
    ) -> None:
        self.config = config
        self.index_path = index_path
        self.channel = channel  # from the supervisor: index and settings swaps (supervisor.py)
        self.slots = slots  # where this worker publishes its counters (None: metrics off)
        self.slot = slot
        self.timing = slots is not None  # the latency histogram costs two clock reads a query
        self._tick = 0  # UDP answers so far: every SAMPLE-th synchronous answer is timed
        self.resolver = Resolver(config, open_index(index_path))
        if config.querylog.dnstap:  # the dnstap query log (resolver/querylog/)
            querylog = QueryLog(config.querylog, slot, config.server.workers)
            querylog.start()
            self.resolver.use_querylog(querylog)
        self.udp_socks = udp_socks
        # recvmmsg/sendmmsg batches (None: the plain path); one for all UDP sockets, as a
        # wake-up receives and answers one batch before the next callback runs.
        self.udp_batcher: BatcherLike | None = new_batcher(UDP_BATCH) if udp_socks else None
        self.tcp_socks = tcp_socks
        self.tasks: set[asyncio.Task[None]] = set()
        # Starts forwarding a UDP query that needs its upstream. An attribute, not a method call,
        # so bench/hotpath_bench.py can take the forwarded queries over (a compiled class's
        # methods cannot be replaced).
        self.start_udp_forward: Callable[[socket.socket, Query, bytes, Address, float], None] = (
            self._start_udp_forward
        )
        self.tcp_active = 0
        self.stopping = asyncio.Event()
        self.servers: list[asyncio.Server] = []
        # DoT and DoH (resolver/transports): DoT runs the TCP loop below on a TLS stream.
        self.encrypted_socks = (tls_socks or [], https_socks or [])
        self.endpoints = Endpoints(config, self.serve_stream, self._answer_https)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        batcher = self.udp_batcher
        for sock in self.udp_socks:
            if batcher is not None:
                loop.add_reader(sock.fileno(), self._on_udp_batch, sock, batcher)
            else:
                loop.add_reader(sock.fileno(), self._on_udp_readable, sock)
        for sock in self.tcp_socks:
            self.servers.append(await asyncio.start_server(self._tcp_client, sock=sock))
        await self.endpoints.start(*self.encrypted_socks)
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
            **self.endpoints.counters(),
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
        self.endpoints.close()
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
        self.endpoints.reload(config)  # a renewed certificate: for the next handshakes
        old.close()
        return index

    def _on_control(self) -> None:
        """A message from the supervisor. The supervisor verified the new index file before
        renaming it into place, so mapping it skips the checksum pass: the swap costs a
        header read, and queries wait in the socket buffers meanwhile (none are lost)."""
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
        stats = resolver.stats
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        timing = self.timing
        clock = time.perf_counter
        tick = self._tick
        if resolver.querylog is not None:  # the query log's time for this wake-up's answers
            resolver.log_now = time.time()
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
                # Called on the typed local, not through a bound method saved before the loop: a
                # compiled call, whose (answer, outcome) result is a C struct, not a tuple object.
                result, outcome = resolver.handle(data, address[0])
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
                if sampled:
                    self._observe_sample(outcome, clock() - started)
                continue
            self.start_udp_forward(sock, result, data, address, started if sampled else clock())
        self._tick = tick
        if resolver.retired_memos:
            resolver.free_retired()

    def _on_udp_batch(self, sock: socket.socket, batcher: BatcherLike) -> None:
        """The same work as `_on_udp_readable` with two system calls per wake-up: the batch's
        datagrams in arrival order through the pipeline (each its own rate limit and ACL check),
        the immediate answers out in one sendmmsg, the forwarded ones on their own tasks."""
        resolver = self.resolver
        stats = resolver.stats
        fd = sock.fileno()
        datagrams, hosts = batcher.recv(fd)
        count = len(datagrams)
        if not count:
            return
        if resolver.querylog is not None:  # the query log's time for this wake-up's answers
            resolver.log_now = time.time()
        replies: list[bytes | None] = [None] * count
        answered = False
        timing = self.timing
        clock = time.perf_counter
        tick = self._tick
        # Sampled answers: timed to the end of the batch's send, the moment the client's answer
        # leaves (as the plain path times to its sendto).
        sampled_outcomes: list[int] = []
        sampled_starts: list[float] = []
        for i in range(count):
            data = datagrams[i]
            tick += 1
            sampled = timing and not tick & m.SAMPLE_MASK
            started = clock() if sampled else 0.0
            try:
                result, outcome = resolver.handle(data, hosts[i])
            except Exception:  # a bug must cost one query, never the worker
                log.exception("query handling failed")
                continue
            if result is None:
                continue
            if isinstance(result, bytes):
                replies[i] = result
                answered = True
                if sampled:
                    sampled_outcomes.append(outcome)
                    sampled_starts.append(started)
                continue
            address = batcher.address(i)
            self.start_udp_forward(sock, result, data, address, started if sampled else clock())
        self._tick = tick
        if answered:
            stats.send_errors += batcher.send(fd, replies)
        if sampled_outcomes:
            now = clock()
            for j in range(len(sampled_outcomes)):
                self._observe_sample(sampled_outcomes[j], now - sampled_starts[j])
        if resolver.retired_memos:
            resolver.free_retired()

    def _observe_sample(self, outcome: int, elapsed: float) -> None:
        """WorkerStats.observe, written out, with the sample's weight (m.SAMPLE): one answer in
        m.SAMPLE is timed."""
        stats = self.resolver.stats
        bucket = int(elapsed * 1e6).bit_length()
        top_bucket = m.N_BUCKETS
        slot = outcome * (m.N_BUCKETS + 1) + (bucket if bucket < top_bucket else top_bucket)
        stats.histogram[slot] += m.SAMPLE
        stats.duration_sum[outcome] += elapsed * m.SAMPLE

    def _start_udp_forward(
        self,
        sock: socket.socket,
        query: Query,
        data: bytes,
        address: Address,
        started: float,
    ) -> None:
        group = self.resolver.last_group  # handle() just set it for this query
        self._spawn(self._udp_forward(sock, query, data, address, started, group))

    async def _udp_forward(
        self,
        sock: socket.socket,
        query: Query,
        data: bytes,
        address: Address,
        started: float,
        group: int = 0,
    ) -> None:
        resolver = self.resolver
        response, outcome = await resolver.forward(query, data, m.UDP, group, address[0])
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
        if self.tcp_active >= self.config.server.tcp_max_connections:
            # Refused at once rather than left in the backlog: the client learns now and the
            # descriptor is released on this loop iteration.
            self.tcp_rejected += 1
            writer.transport.abort()
            return
        self.tcp_active += 1
        peer = writer.get_extra_info("peername")
        try:
            await self.serve_stream(reader, writer, peer[0] if peer else "", m.TCP, None)
        finally:
            self.tcp_active -= 1

    async def serve_stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
        transport: int,
        shape: Callable[[bytes], bytes] | None,
    ) -> None:
        """DNS over a stream (RFC 7766 framing) until the client leaves or a bound is hit:
        plain TCP, or a TLS stream for DoT (RFC 7858 3.3: the same framing). `transport` is
        the metrics label; `shape` changes each answer before it is sent (DoT: padding)."""
        idle = self.config.server.tcp_idle_timeout
        stream = writer.transport
        stream.set_write_buffer_limits(high=self.TCP_WRITE_HIGH_WATER)
        pending: set[asyncio.Task[None]] = set()
        aborted = False
        try:
            while not self.stopping.is_set():
                if stream.get_write_buffer_size() > self.TCP_WRITE_HIGH_WATER:
                    try:
                        async with asyncio.timeout(idle):
                            await writer.drain()  # until the client reads below the mark
                    except TimeoutError:
                        self.tcp_overflows += 1
                        aborted = True
                        stream.abort()
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
                if len(data) < HEADER_SIZE:
                    # A message shorter than the 12-octet header (RFC 1035 4.1.1), zero-length
                    # included, carries no ID to put in a FORMERR: nothing can be answered.
                    # Close instead of reading on: a client that frames messages like this is
                    # broken or hostile (RFC 7766 6.2.4 lets servers close at any time).
                    self.tcp_short += 1
                    self.resolver.handle(data, client, False, transport)  # counted as dropped
                    break
                try:
                    result = self.resolver.handle(data, client, False, transport)[0]
                except Exception:  # a bug must cost one query, never the worker
                    log.exception("query handling failed")
                    continue
                if result is None:
                    continue
                if isinstance(result, bytes):
                    if not self._tcp_send(writer, shape(result) if shape else result):
                        aborted = True
                        break
                    continue
                # Pipelining: answer out of order as upstream replies arrive (RFC 7766 6.2.1.1).
                task = asyncio.get_running_loop().create_task(
                    self._tcp_forward(writer, result, data, client, transport, shape)
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending and not aborted:
                wait = self.resolver.upstream.query_bound + TCP_FORWARD_SLACK
                await asyncio.wait(pending, timeout=wait)
        finally:
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
        self,
        writer: asyncio.StreamWriter,
        query: Query,
        data: bytes,
        client: str = "",
        transport: int = m.TCP,
        shape: Callable[[bytes], bytes] | None = None,
    ) -> None:
        group = self.resolver.last_group  # read before the first await: this query's
        response = (await self.resolver.forward(query, data, transport, group, client))[0]
        if response is not None:
            self._tcp_send(writer, shape(response) if shape else response)

    def _answer_https(
        self, data: bytes, client: str
    ) -> bytes | Coroutine[None, None, bytes | None] | None:
        """One DoH query through the pipeline (resolver/transports/https.py pads it): the answer
        itself when the pipeline has it (no task needed), a coroutine when it asks upstream."""
        resolver = self.resolver
        try:
            result = resolver.handle(data, client, False, m.HTTPS)[0]
        except Exception:  # a bug must cost one query, never the worker
            log.exception("query handling failed")
            return None
        if result is None or isinstance(result, bytes):
            return result
        # The group now: the coroutine's body runs later, after other queries have been handled.
        return self._forward_https(result, data, resolver.last_group, client)

    async def _forward_https(
        self, query: Query, data: bytes, group: int, client: str
    ) -> bytes | None:
        return (await self.resolver.forward(query, data, m.HTTPS, group, client))[0]
