"""The pool of upstream recursive resolvers: UDP with TCP fallback, failover and health.

Every try sends a copy of the client's query with a fresh random ID from a fresh UDP socket,
so the ephemeral port is new as well (RFC 5452 section 9.2: ID and port together are the
entropy an off-path spoofer has to guess). The port is the kernel's choice for an unbound
socket, which Linux randomises. The socket is connected, so the kernel already drops datagrams
from anywhere but the server; each datagram is still checked for the server's address and
port, the ID, QR=1 and the same question (RFC 5452 section 9.1), and anything else is ignored
while the try's timer runs. A response with TC=1 is asked again over TCP of the same server
(RFC 7766 section 5; a 2-byte length prefix per message, section 8).

Server order per query: servers that are up, by smoothed RTT; then servers that are down. A
server goes down after `DOWN_AFTER` consecutive failed tries and is up again after one good
answer. A down server is probed with a real query once its back-off has run out (doubling from
`BACKOFF_INITIAL` to `BACKOFF_MAX` while it keeps failing); the probe goes first when the query
has a second try to fall back on, so recovery needs no traffic of its own and costs at most one
timeout per back-off interval. With `attempts = 1` and a server up, the query's only try must
not go to a server believed dead, so the probe is a copy of the query sent on the side (a task
the pool owns, bounded by one timeout; its answer only updates health): without it a down
server would never be asked again while another one answers, and would never come back.

No threads; a query owns its sockets and closes them in `finally`, so cancelling a query (the
client went away) leaves nothing behind. Side probes are the only tasks of the pool's own, at
most one per server per back-off interval; `close` cancels them.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from resolver.dns.constants import HEADER_SIZE, QR, REFUSED, SERVFAIL, TC
from resolver.dns.names import MessageError, skip_name
from resolver.metrics import N_BUCKETS, bucket_of

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "DOWN_AFTER",
    "UpstreamPool",
    "UpstreamStats",
]

DOWN_AFTER = 3  # consecutive failed tries before a server is marked down
BACKOFF_INITIAL = 1.0  # seconds before a down server is probed the first time
BACKOFF_MAX = 60.0  # at ISP query rates one probe a minute costs nothing and finds recovery fast
# Weight of a new RTT sample: a few answers follow a real change, one slow answer does not
# reorder the servers.
RTT_ALPHA = 0.3
MAX_UDP_RESPONSE = 65_535  # RFC 6891: the EDNS buffer size the client asked for may be this big
MAX_TCP_MESSAGE = 65_535  # RFC 7766 section 8: the length prefix is 16 bits

_QR = QR >> 8  # in the third header byte
_TC = TC >> 8


@dataclass(slots=True)
class UpstreamStats:
    """Counters and health of one upstream server, read by the metrics code.

    `requests` counts tries sent to it (a TCP fallback is part of its try and is counted in
    `tcp_fallbacks`), `responses` the answers accepted (SERVFAIL and REFUSED included, which
    `failure_rcodes` counts again), `timeouts` tries that got no acceptable answer in time,
    `errors` socket errors (ICMP unreachable, refused or reset TCP, malformed TCP framing)."""

    address: tuple[str, int]
    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    errors: int = 0
    failure_rcodes: int = 0
    tcp_fallbacks: int = 0
    consecutive_failures: int = 0
    rtt_ewma: float = 0.0  # seconds; 0 until the first sample
    up: bool = True
    # Histogram of answered tries' durations, in the metrics module's buckets.
    buckets: list[int] = field(default_factory=lambda: [0] * (N_BUCKETS + 1))
    duration_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bucket_of(seconds)] += 1
        self.duration_sum += seconds


@dataclass(slots=True)
class _Server:
    family: int
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    stats: UpstreamStats
    backoff: float = BACKOFF_INITIAL
    retry_at: float = 0.0  # pool clock; a down server is probed from then on


class _Question:
    """The question of the request, for matching responses: the name's wire form in lower case
    (label length octets are below 'A', so lower() touches only letters) and QTYPE/QCLASS."""

    __slots__ = ("end", "name_end", "name_lower", "type_class")

    def __init__(self, request: bytes) -> None:
        if len(request) < HEADER_SIZE or request[4:6] != b"\x00\x01":
            raise MessageError("the request must hold exactly one question")
        self.name_end = skip_name(request, HEADER_SIZE)
        self.end = self.name_end + 4
        if self.end > len(request):
            raise MessageError("the question runs past the end of the request")
        self.name_lower = request[HEADER_SIZE : self.name_end].lower()
        self.type_class = request[self.name_end : self.end]

    def matches(self, response: bytes, qid: bytes) -> bool:
        """Same ID, QR=1, one question, the same name (ignoring case), QTYPE and QCLASS. The
        response's name must be written out as in the request; the first name of a message has
        nothing before it to point at."""
        name_end = self.name_end
        return (
            len(response) >= self.end
            and response[:2] == qid
            and response[2] & _QR != 0
            and response[4:6] == b"\x00\x01"
            and response[HEADER_SIZE:name_end].lower() == self.name_lower
            and response[name_end : self.end] == self.type_class
        )


class UpstreamPool:
    """Forwards queries to `servers` (IPv4 or IPv6 address text, port) with `attempts` tries of
    `timeout` seconds each across them; see the module docstring. `clock` drives the back-off
    only (tests pass a fake one); timeouts use the event loop's clock."""

    def __init__(
        self,
        servers: list[tuple[str, int]],
        timeout: float,
        attempts: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ValueError("at least one upstream server is needed")
        if timeout <= 0 or attempts < 1:
            raise ValueError("timeout must be > 0 and attempts >= 1")
        self.timeout = timeout
        self.attempts = attempts
        # The longest `query` takes (scheduling aside): what anyone waiting on it should allow.
        self.query_bound = timeout * attempts
        self._clock = clock
        self._servers: list[_Server] = []
        for host, port in servers:
            # Numeric only: an upstream given by name would need DNS to find DNS.
            info = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
            )
            family, _, _, _, raw = info[0]
            sockaddr: tuple[str, int] | tuple[str, int, int, int]
            if family == socket.AF_INET6:
                sockaddr = (str(raw[0]), port, int(raw[2]), int(raw[3]))  # type: ignore[misc]
            else:
                sockaddr = (str(raw[0]), port)
            self._servers.append(_Server(family, sockaddr, UpstreamStats(address=(host, port))))
        self.stats: tuple[UpstreamStats, ...] = tuple(s.stats for s in self._servers)
        self._probes: set[asyncio.Task[bytes | None]] = set()

    def configured_as(self, servers: list[tuple[str, int]], timeout: float, attempts: int) -> bool:
        """Whether this pool was made with these settings (a reload that changed none of them
        keeps it)."""
        addresses = [stats.address for stats in self.stats]
        return (addresses, self.timeout, self.attempts) == (servers, timeout, attempts)

    def keep_health_of(self, previous: UpstreamPool) -> None:
        """After a reload changed the upstream settings: a server in both pools keeps its health,
        back-off, RTT and counters, so a server known to be down is not tried first again and
        the exported counters stay monotonic. Queries still open on `previous` finish there."""
        known = {server.sockaddr: server for server in previous._servers}
        for server in self._servers:
            old = known.get(server.sockaddr)
            if old is not None:
                server.stats = old.stats
                server.backoff = old.backoff
                server.retry_at = old.retry_at
        self.stats = tuple(server.stats for server in self._servers)

    def close(self) -> None:
        """Cancels side probes; other sockets belong to queries and close when each one ends."""
        for task in self._probes:
            task.cancel()

    # -- selection and health ----------------------------------------------------------------

    def _order(self) -> tuple[list[_Server], _Server | None]:
        """The servers in the order to try them, and a down server to probe on the side (see
        the module docstring) or None."""
        now = self._clock()
        up = sorted((s for s in self._servers if s.stats.up), key=lambda s: s.stats.rtt_ewma)
        down = sorted((s for s in self._servers if not s.stats.up), key=lambda s: s.retry_at)
        if down and down[0].retry_at <= now:
            probe = down.pop(0)
            # Claim the probe so concurrent queries do not all pile onto a dead server.
            probe.retry_at = now + probe.backoff
            if self.attempts > 1 or not up:
                return [probe, *up, *down], None
            return [*up, probe, *down], probe
        return up + down, None

    def _probe_on_the_side(self, server: _Server, request: bytes, question: _Question) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._try(server, request, question, loop.time() + self.timeout))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _success(self, server: _Server, rtt: float) -> None:
        stats = server.stats
        stats.responses += 1
        stats.consecutive_failures = 0
        if not stats.up:
            # Back from down: its smoothed RTT is mostly the timeouts that took it down, and
            # servers are ordered by it, so it would stay behind the others and never be asked
            # again to correct it. Start afresh from this answer.
            stats.rtt_ewma = 0.0
        stats.up = True
        server.backoff = BACKOFF_INITIAL
        self._rtt_sample(stats, rtt)

    def _failure(self, server: _Server) -> None:
        stats = server.stats
        stats.consecutive_failures += 1
        if stats.consecutive_failures < DOWN_AFTER:
            return
        if stats.up:
            stats.up = False
            server.backoff = BACKOFF_INITIAL
        else:  # a failed probe
            server.backoff = min(server.backoff * 2, BACKOFF_MAX)
        server.retry_at = self._clock() + server.backoff

    @staticmethod
    def _rtt_sample(stats: UpstreamStats, rtt: float) -> None:
        if stats.rtt_ewma == 0.0:
            stats.rtt_ewma = rtt
        else:
            stats.rtt_ewma += RTT_ALPHA * (rtt - stats.rtt_ewma)

    # -- queries -----------------------------------------------------------------------------

    async def query(self, request: bytes) -> bytes | None:
        """The upstream answer to `request` (the client's query, any ID) with the request's ID
        restored, or None when no try got an acceptable answer that is not SERVFAIL or REFUSED.
        Returns within `query_bound`, timeout x attempts (plus scheduling slack). Raises
        MessageError if the request does not hold exactly one well-formed question."""
        question = _Question(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.query_bound
        order, side_probe = self._order()
        if side_probe is not None:
            self._probe_on_the_side(side_probe, request, question)
        for attempt in range(self.attempts):
            now = loop.time()
            if now >= deadline:
                break
            server = order[attempt % len(order)]
            response = await self._try(server, request, question, min(now + self.timeout, deadline))
            if response is not None:
                return request[:2] + response[2:]
        return None

    async def _try(
        self, server: _Server, request: bytes, question: _Question, deadline: float
    ) -> bytes | None:
        """One try against one server, TCP fallback included; updates its health."""
        loop = asyncio.get_running_loop()
        stats = server.stats
        stats.requests += 1
        sent = loop.time()
        try:
            response = await self._udp(server, request, question, deadline)
            if response[2] & _TC:
                stats.tcp_fallbacks += 1
                response = await self._tcp(server, request, question, deadline)
        except TimeoutError:
            stats.timeouts += 1
            self._rtt_sample(stats, loop.time() - sent)  # a timeout is a slow answer
            self._failure(server)
            return None
        except OSError:  # ICMP unreachable, refused or reset TCP, EMFILE, ...
            stats.errors += 1
            self._failure(server)
            return None
        rcode = response[3] & 0x0F
        stats.observe(loop.time() - sent)
        if rcode in (SERVFAIL, REFUSED):
            stats.responses += 1
            stats.failure_rcodes += 1
            self._rtt_sample(stats, loop.time() - sent)
            self._failure(server)
            return None
        self._success(server, loop.time() - sent)
        return response

    async def _udp(
        self, server: _Server, request: bytes, question: _Question, deadline: float
    ) -> bytes:
        loop = asyncio.get_running_loop()
        qid = secrets.randbits(16).to_bytes(2, "big")
        wire = qid + request[2:]
        sock = socket.socket(server.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(server.sockaddr)  # binds a random ephemeral port
            # The kernel's own spelling of the peer, as recvfrom will report it.
            peer = sock.getpeername()[:2]
            future: asyncio.Future[bytes] = loop.create_future()

            def on_readable() -> None:
                while not future.done():
                    try:
                        data, source = sock.recvfrom(MAX_UDP_RESPONSE)
                    except (BlockingIOError, InterruptedError):
                        return
                    except OSError as error:  # ICMP unreachable on a connected socket
                        future.set_exception(error)
                        return
                    if source[:2] == peer and question.matches(data, qid):
                        future.set_result(data)

            fd = sock.fileno()
            loop.add_reader(fd, on_readable)
            try:
                sock.send(wire)
                async with asyncio.timeout_at(deadline):
                    return await future
            finally:
                loop.remove_reader(fd)
        finally:
            sock.close()

    async def _tcp(
        self, server: _Server, request: bytes, question: _Question, deadline: float
    ) -> bytes:
        loop = asyncio.get_running_loop()
        qid = secrets.randbits(16).to_bytes(2, "big")
        wire = qid + request[2:]
        sock = socket.socket(server.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            async with asyncio.timeout_at(deadline):
                await loop.sock_connect(sock, server.sockaddr)
                await loop.sock_sendall(sock, len(wire).to_bytes(2, "big") + wire)
                while True:  # skip anything that is not our answer, as over UDP
                    length = int.from_bytes(await _recv_exactly(loop, sock, 2), "big")
                    data = await _recv_exactly(loop, sock, length)
                    if question.matches(data, qid):
                        return data
        finally:
            sock.close()


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = await loop.sock_recv(sock, min(left, MAX_TCP_MESSAGE))
        if not chunk:
            raise ConnectionResetError("the server closed the TCP connection mid-message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
