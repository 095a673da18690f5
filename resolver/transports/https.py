"""DNS over HTTPS (RFC 8484): HTTP/2 (the `h2` library) and HTTP/1.1 (`h11`) over TLS.

Both libraries are sans-I/O state machines; this module feeds them octets from the TLS stream
the listener (resolver/transports/listener.py) handshook, with ALPN choosing between them
("h2" or "http/1.1"; no ALPN means HTTP/1.1). The request itself is parsed by
resolver/transports/doh.py and answered by the pipeline through `Answer`.

Bounds, each a way one client could otherwise hold server resources:
- HTTP/2 streams: SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 5.1.2) is announced and enforced
  (a HEADERS frame past it is a protocol error to h2, ending the connection);
- header size: SETTINGS_MAX_HEADER_LIST_SIZE for HTTP/2 (RFC 9113 6.5.2), h11's
  max_incomplete_event_size for HTTP/1.1;
- body size: a POST past doh.MAX_MESSAGE gets 413 and is read no further;
- time: a connection with nothing in progress closes after `idle_timeout`, and a request must
  arrive whole within `idle_timeout` of its first octet (a slow client drips in vain);
- unread answers: past WRITE_LIMIT unsent octets the connection is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11

from resolver.transports.doh import CONTENT_TYPE, MAX_MESSAGE, HttpError, dns_query
from resolver.transports.shaping import max_age, padded

log = logging.getLogger("blokir")

__all__ = ["Answer", "HttpLimits", "HttpStats", "HttpsServer"]

# The pipeline's answer to one query from one client address; None: nothing to send (a
# `drop` policy, or a message that is not DNS), which becomes an HTTP error here. Answered at
# once (a block, a cache hit) it is the answer itself; an awaitable when it waits for upstream,
# so that most requests need no task of their own.
Answer = Callable[[bytes, str], bytes | Awaitable[bytes | None] | None]
# (status, body, max-age or None for an error)
Response = tuple[int, bytes, int | None]

READ_SIZE = 65_536
WRITE_LIMIT = 262_144  # unsent octets at which a client that does not read is cut off


@dataclass(frozen=True, slots=True)
class HttpLimits:
    path: bytes = b"/dns-query"
    idle_timeout: float = 10.0
    max_streams: int = 100  # HTTP/2 concurrent streams per connection
    max_header_bytes: int = 8_192


@dataclass(slots=True)
class HttpStats:
    requests: int = 0  # requests that reached the pipeline
    http_errors: dict[int, int] = field(default_factory=dict)  # status -> count (4xx, 5xx)
    idle_closed: int = 0  # connections closed idle, or a request too slow to arrive
    protocol_errors: int = 0  # HTTP/2 or HTTP/1.1 framing the libraries rejected
    overflows: int = 0  # aborted: answers left unread past WRITE_LIMIT


def _response_headers(status: int, body: bytes, age: int | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", CONTENT_TYPE if age is not None else b"text/plain"),
        (b"content-length", b"%d" % len(body)),
    ]
    if age is not None:
        headers.append((b"cache-control", b"max-age=%d" % age))
    return headers


# Our own response headers are well-formed by construction: h2's outbound checks and
# normalisation (lower-casing, stripping, a pass per header per response) only cost time. Inbound
# validation stays on: the client's headers are what RFC 9113 8.2 asks a server to check.
_H2_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
_STATUS = {status: b"%d" % status for status in (200, 400, 404, 405, 413, 414, 415)}


def _h2_headers(status: int, body: bytes, age: int | None) -> list[tuple[bytes, bytes]]:
    code = _STATUS.get(status) or b"%d" % status
    return [(b":status", code), *_response_headers(status, body, age)]


class _Stream:
    __slots__ = ("body", "content_type", "method", "started", "target", "too_large")

    def __init__(self, headers: list[tuple[bytes, bytes]], started: float) -> None:
        self.method = b""
        self.target = b""
        self.content_type: bytes | None = None
        for name, value in headers:
            if name == b":method":
                self.method = value
            elif name == b":path":
                self.target = value
            elif name == b"content-type":
                self.content_type = value
        self.body = bytearray()
        self.started = started
        self.too_large = False


class HttpsServer:
    """Serves DoH on connections the listener hands over (`serve`)."""

    def __init__(self, answer: Answer, limits: HttpLimits) -> None:
        self.answer = answer
        self.limits = limits
        self.stats = HttpStats()

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str, alpn: str
    ) -> None:
        if alpn == "h2":
            await _H2Connection(self, reader, writer, client).run()
        else:
            await self._http1(reader, writer, client)

    async def respond_to(self, stream: _Stream, client: str) -> Response:
        """The response to one complete request."""
        response = self.respond_now(stream, client)
        return response if isinstance(response, tuple) else await response

    def respond_now(self, stream: _Stream, client: str) -> Response | Awaitable[Response]:
        """The response to one complete request, or an awaitable of it when the pipeline has to
        wait for upstream."""
        try:
            if stream.too_large:
                raise HttpError(413, "DNS message too large")
            message = dns_query(
                stream.method,
                stream.target,
                stream.content_type,
                bytes(stream.body),
                self.limits.path,
            )
        except HttpError as error:
            return self._error(error.status, error.reason)
        self.stats.requests += 1
        answer = self.answer(message, client)
        if answer is None or isinstance(answer, bytes):
            return self._success(answer)
        return self._answered_later(answer)

    async def _answered_later(self, answer: Awaitable[bytes | None]) -> Response:
        return self._success(await answer)

    def _success(self, answer: bytes | None) -> Response:
        if answer is None:
            return self._error(400, "no DNS answer for this message")
        answer = padded(answer)  # RFC 8467: answers to EDNS queries padded to 468-octet blocks
        return 200, answer, max_age(answer)

    def _error(self, status: int, reason: str) -> Response:
        errors = self.stats.http_errors
        errors[status] = errors.get(status, 0) + 1
        return status, reason.encode() + b"\n", None

    # -- HTTP/1.1 ------------------------------------------------------------------------

    async def _http1(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        limits = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        loop = asyncio.get_running_loop()
        while True:
            # One request at a time (HTTP/1.1 answers in order anyway): the whole request,
            # waiting for it included, within idle_timeout.
            deadline = loop.time() + limits.idle_timeout
            stream: _Stream | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    while True:
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            data = await reader.read(READ_SIZE)
                            conn.receive_data(data)
                            continue
                        if isinstance(event, h11.Request):
                            headers = [(b":method", event.method), (b":path", event.target)]
                            headers += [(n.lower(), v) for n, v in event.headers]
                            stream = _Stream(headers, loop.time())
                        elif isinstance(event, h11.Data) and stream is not None:
                            if len(stream.body) + len(event.data) > MAX_MESSAGE:
                                stream.too_large = True  # answered 413, then closed
                                break
                            stream.body += event.data
                        elif event is h11.PAUSED or isinstance(
                            event, h11.EndOfMessage | h11.ConnectionClosed
                        ):
                            break
            except TimeoutError:
                self.stats.idle_closed += 1
                return
            except h11.RemoteProtocolError as exc:
                self.stats.protocol_errors += 1
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    await self._h1_send(writer, conn, status, f"{exc}\n".encode(), None, close=True)
                return
            except ConnectionError:
                return
            if stream is None or conn.their_state is h11.CLOSED:
                return
            status, body, age = await self.respond_to(stream, client)
            close = stream.too_large
            if not await self._h1_send(writer, conn, status, body, age, close=close):
                return
            if close or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _h1_send(
        self,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        status: int,
        body: bytes,
        age: int | None,
        *,
        close: bool,
    ) -> bool:
        headers = _response_headers(status, body, age)
        if close:
            headers.append((b"connection", b"close"))
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers))
            out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
            out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return False
        return await _write(writer, out, self.limits.idle_timeout, self.stats)


async def _write(
    writer: asyncio.StreamWriter, data: bytes, timeout: float, stats: HttpStats
) -> bool:
    """Queue `data`; wait (bounded) while the client is behind; False once the connection is
    gone or aborted."""
    if writer.is_closing():
        return False
    writer.write(data)
    if writer.transport.get_write_buffer_size() > WRITE_LIMIT:
        stats.overflows += 1
        writer.transport.abort()
        return False
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        stats.overflows += 1
        writer.transport.abort()
        return False
    except ConnectionError:
        return False
    return True


class _H2Connection:
    """One HTTP/2 connection: a read loop feeding h2, a task per complete request."""

    def __init__(
        self,
        server: HttpsServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.client = client
        limits = server.limits
        self.limits = limits
        conn = h2.connection.H2Connection(config=_H2_CONFIG)
        codes = h2.settings.SettingCodes
        # Initial values take effect at once (h2 enforces them from the first frame) and go
        # out in the connection preface's SETTINGS frame.
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: limits.max_streams,
                codes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
            },
        )
        self.conn = conn
        self.streams: dict[int, _Stream] = {}  # requests still arriving
        self.tasks: dict[int, asyncio.Task[None]] = {}  # requests being answered
        self.window_open = asyncio.Event()  # set on every WINDOW_UPDATE

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size() > WRITE_LIMIT:
                self.server.stats.overflows += 1
                self.writer.transport.abort()

    async def run(self) -> None:
        self.conn.initiate_connection()
        self._flush()
        loop = asyncio.get_running_loop()
        idle = self.limits.idle_timeout
        last_done = loop.time()
        try:
            while not self.writer.is_closing():
                # Nothing in progress: the connection may sit idle for idle_timeout since its
                # last answer. A request still arriving must be whole within idle_timeout of
                # its HEADERS. While answers are pending, only those bound the wait.
                deadlines = [s.started + idle for s in self.streams.values()]
                if not self.tasks:
                    deadlines.append(last_done + idle)
                try:
                    if deadlines:
                        async with asyncio.timeout_at(min(deadlines)):
                            data = await self.reader.read(READ_SIZE)
                    else:
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    now = loop.time()
                    late = any(s.started + idle <= now for s in self.streams.values())
                    if self.tasks and not late:
                        continue
                    self.server.stats.idle_closed += 1
                    self.conn.close_connection()
                    self._flush()
                    return
                if not data:
                    return
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self.server.stats.protocol_errors += 1
                    log.debug("HTTP/2 error from %s: %s", self.client, exc)
                    self._flush()  # h2 queued a GOAWAY
                    return
                for event in events:
                    self._on_event(event, loop.time())
                if self.tasks or not self.streams:
                    last_done = loop.time()
                self._flush()
        except ConnectionError:
            return
        finally:
            for task in self.tasks.values():
                task.cancel()

    def _on_event(self, event: h2.events.Event, now: float) -> None:
        conn = self.conn
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            headers = [(bytes(n), bytes(v)) for n, v in event.headers]
            self.streams[event.stream_id] = _Stream(headers, now)
            if event.stream_ended is not None:
                self._complete(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None and event.data:
                if len(stream.body) + len(event.data) > MAX_MESSAGE:
                    stream.too_large = True  # answered 413 now; the rest is not read
                    self._complete(event.stream_id)
                else:
                    stream.body += event.data
            if event.stream_ended is not None and event.stream_id in self.streams:
                self._complete(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id in self.streams:
                assert event.stream_id is not None
                self._complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id or 0, None)
            task = self.tasks.pop(event.stream_id or 0, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.writer.close()

    def _complete(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id)
        response = self.server.respond_now(stream, self.client)
        if isinstance(response, tuple) and self._send_now(stream_id, stream, response):
            return
        task = asyncio.get_running_loop().create_task(self._answer(stream_id, stream, response))
        self.tasks[stream_id] = task

    def _send_now(self, stream_id: int, stream: _Stream, response: Response) -> bool:
        """Send a response whose body fits the flow-control window and one frame (a DNS answer
        almost always does) without a task; False when it must wait for a WINDOW_UPDATE."""
        status, body, age = response
        conn = self.conn
        if len(body) > min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size):
            return False
        # A stream the client reset, or a connection it ended earlier in the same read: nothing
        # to answer (ProtocolError covers both; a task would have died of it unseen).
        with contextlib.suppress(h2.exceptions.ProtocolError):
            conn.send_headers(stream_id, _h2_headers(status, body, age))
            conn.send_data(stream_id, body, end_stream=True)
            if stream.too_large:  # the client may still be sending: stop it (RFC 9113 8.1)
                conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        self._flush()  # one write per answer: see _answer
        return True

    async def _answer(
        self, stream_id: int, stream: _Stream, response: Response | Awaitable[Response]
    ) -> None:
        try:
            status, body, age = response if isinstance(response, tuple) else await response
            conn = self.conn
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                conn.send_headers(stream_id, _h2_headers(status, body, age))
                await self._send_body(stream_id, body)
                if stream.too_large:  # the client may still be sending: stop it (RFC 9113 8.1)
                    conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
            # One write per answer, not one per turn of the event loop for all the answers done
            # in it: measured here, dnsperf 2.10's DoH client leaves every response but the first
            # of one TLS record unread until more data arrives (its queries time out).
            self._flush()
        finally:
            self.tasks.pop(stream_id, None)

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        """DATA frames within the peer's flow-control window and frame size, END_STREAM on the
        last; waits (idle_timeout at most) for WINDOW_UPDATE when the window is shut."""
        conn = self.conn
        view = memoryview(body)
        while True:
            window = conn.local_flow_control_window(stream_id)
            size = min(window, conn.max_outbound_frame_size, len(view))
            if size == 0 and len(view):
                self._flush()
                self.window_open.clear()
                async with asyncio.timeout(self.limits.idle_timeout):
                    await self.window_open.wait()
                continue
            last = size == len(view)
            conn.send_data(stream_id, bytes(view[:size]), end_stream=last)
            view = view[size:]
            if last:
                return
