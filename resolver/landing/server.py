"""The landing web server: HTTP/1.1 (h11, sans-I/O) on asyncio, one process.

Every GET or HEAD, whatever the path, is answered for the name in the Host header (RFC 9112
section 3.2): a name a list blocks gets 451 Unavailable For Legal Reasons (RFC 7725) with the
notice; any other name 200 and a plain "not blocked" page (its client still has an old answer
cached); the server's own name or an address the about page. Nothing is ever redirected: a 301
would stay in browsers' caches long after a name is unblocked. Every answer says
`Cache-Control: no-store` for the same reason.

Defences (each counted in `blokir_landing_rejected_total`): a request head must arrive within
`header_timeout` (slow-headers clients get 408) and be at most `max_header_bytes` (431); at most
`max_connections` connections are open, the next ones are closed at once; anything h11 rejects
(bad syntax, duplicate or conflicting Content-Length, several Host headers), a request with both
Content-Length and Transfer-Encoding (the classic smuggling pair, RFC 9112 section 6.1), or a
Host that is not a valid name, gets 400 and the connection is closed. A request body is never
read: the answer says `Connection: close`, so no body bytes can be taken for a next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11

from resolver.config import Config
from resolver.index import Index, IndexError_, open_index
from resolver.landing.page import ABOUT, BLOCKED, UNBLOCKED, Pages, choose_language, notice_for
from resolver.landing.stats import NOT_BLOCKED, OWN_NAME, LandingStats
from resolver.landing.streams import Stream, TlsStream

log = logging.getLogger("blokir.landing")

MAX_REQUESTS_PER_CONNECTION = 100  # keep-alive is bounded too
INDEX_CHECK_SECONDS = 1.0  # how often the index file is looked at for a replacement
TLS_HANDSHAKE_TIMEOUT = 10.0
MAX_HOST = 253  # RFC 1035 section 2.3.4, without the trailing dot
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
ROBOTS = b"User-agent: *\nDisallow: /\n"
ALERT_UNRECOGNIZED_NAME = ssl.AlertDescription.ALERT_DESCRIPTION_UNRECOGNIZED_NAME


class BadRequest(Exception):
    """Answered with `status` and the connection closed."""

    def __init__(self, status: int, reason: str, counter: str = "bad_request") -> None:
        super().__init__(reason)
        self.status = status
        self.counter = counter


# -- the index, followed across reloads -----------------------------------------------------


class IndexFollower:
    """The mapped index, re-opened when the file at `path` is replaced (a reload writes a new
    file and renames it over the old one: a new inode), looked at most once a second."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.index: Index | None = None
        self._identity: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self.current()

    def current(self) -> Index | None:
        now = self.clock()
        if now - self._checked >= INDEX_CHECK_SECONDS:
            self._checked = now
            self._follow()
        return self.index

    def _follow(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self.index is None:
                log.error("landing: no index at %s (%s)", self.path, exc.strerror)
            return
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if identity == self._identity:
            return
        try:
            fresh = open_index(self.path)
        except IndexError_ as exc:
            log.error("landing: %s; keeping the index it had", exc)
            return
        old, self.index, self._identity = self.index, fresh, identity
        if old is not None:
            old.close()  # lookups are synchronous: nothing holds the old mapping across awaits
        log.info("landing: index %s mapped (%d names)", self.path, fresh.count)


# -- requests -------------------------------------------------------------------------------


def host_of(request: h11.Request) -> str:
    """The lower-case name (or bracket-less address) the request is for: the authority of an
    absolute-form target, else the Host header (RFC 9112 section 3.2.2), without port or
    trailing dot. BadRequest when it is not a plausible host."""
    target = bytes(request.target)
    raw: bytes | None = None
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        raw = target.split(b"//", 1)[1].split(b"/", 1)[0].split(b"?", 1)[0]
    else:
        hosts = [v for k, v in request.headers if k == b"host"]
        raw = hosts[0] if hosts else None
    if raw is None:
        raise BadRequest(400, "no Host")
    if len(raw) > MAX_HOST + 8 or not raw.isascii():
        raise BadRequest(400, "Host too long or not ASCII")
    text = raw.decode("ascii").strip().lower()
    if text.startswith("["):  # an IPv6 literal, with or without a port
        literal, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            raise BadRequest(400, "bad Host")
        try:
            return str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise BadRequest(400, "bad Host") from None
    name, colon, port = text.partition(":")
    if colon and not port.isdigit():
        raise BadRequest(400, "bad Host port")
    name = name.removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > MAX_HOST or not all(_LABEL.fullmatch(x) for x in labels):
        raise BadRequest(400, "bad Host")
    return name


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    category: str | None  # what the request counts as (None: not a page, not counted)


_REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
}


class Landing:
    """Everything a request needs: the settings, the templates, the index and the counters.
    `answer` is the whole decision, without sockets (unit tested directly)."""

    def __init__(self, config: Config, index_path: str, stats: LandingStats | None = None) -> None:
        self.config = config
        self.pages = Pages(config.landing.template_dir)
        self.index = IndexFollower(index_path)
        self.stats = stats or LandingStats()
        self.own_names = frozenset(config.landing.server_names)

    def answer(self, request: h11.Request) -> Reply:
        method = bytes(request.method)
        if method not in (b"GET", b"HEAD"):
            raise BadRequest(405, "method", counter="method")
        name = host_of(request)
        path = bytes(request.target).split(b"?", 1)[0]
        if path.startswith((b"http://", b"https://")):
            path = b"/" + path.split(b"/", 3)[3] if path.count(b"/") >= 3 else b"/"
        if path == b"/robots.txt":
            return Reply(200, ROBOTS, (("Content-Type", "text/plain"),), None)
        if path == b"/favicon.ico":
            return Reply(204, b"", (), None)
        language = choose_language(
            _header(request, b"accept-language"), self.config.landing.default_language
        )
        notice, category = self._notice(name)
        status = 451 if notice.kind == BLOCKED else 200
        headers: list[tuple[str, str]] = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Language", language),
            ("Vary", "Accept-Language"),
        ]
        if status == 451 and notice.appeal_url:
            # RFC 7725 section 4: who implements the block.
            headers.append(("Link", f'<{notice.appeal_url}>; rel="blocked-by"'))
        return Reply(status, self.pages.render(notice, language), tuple(headers), category)

    def _notice(self, name: str) -> tuple[Any, str]:
        if name in self.own_names or _is_address(name):
            return notice_for(self.config, ABOUT, name), OWN_NAME
        index = self.index.current()
        policy_id = index.match_policy_id(name.encode("ascii")) if index is not None else 0
        if policy_id and index is not None:
            policy = index.policy(policy_id)
            if not policy.is_allow:
                notice = notice_for(self.config, BLOCKED, name, policy.list_name, policy.category)
                return notice, policy.category
        return notice_for(self.config, UNBLOCKED, name), NOT_BLOCKED

    def category_of(self, name: str) -> str:
        """For a refused TLS server name: the category the metrics count it under."""
        return self._notice(name)[1] if name else NOT_BLOCKED


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# -- connections ----------------------------------------------------------------------------


class Server:
    """The asyncio side: listeners, the connection cap, one h11 connection per socket."""

    def __init__(self, landing: Landing) -> None:
        self.landing = landing
        self.settings = landing.config.landing
        self.stats = landing.stats
        self.servers: list[asyncio.Server] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.context: ssl.SSLContext | None = None

    async def start(self, plain: list[Any], tls: list[Any], context: ssl.SSLContext | None) -> None:
        self.context = context
        for sock in plain:
            self.servers.append(await asyncio.start_server(self._plain, sock=sock))
        for sock in tls:
            self.servers.append(await asyncio.start_server(self._tls, sock=sock))

    async def drain(self, seconds: float) -> None:
        """Stop accepting, give open connections `seconds` to finish, then cut them."""
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + seconds
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self.tasks):
            task.cancel()

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connection(Stream(reader, writer), "http")

    async def _tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.context is not None
        await self._connection(TlsStream(reader, writer, self.context), "https")

    async def _connection(self, stream: Stream, scheme: str) -> None:
        if self.stats.connections >= self.settings.max_connections:
            self.stats.reject("connection_cap")
            stream.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        self.stats.connections += 1
        try:
            if await asyncio.wait_for(stream.start(), TLS_HANDSHAKE_TIMEOUT):
                await self._serve(stream, scheme)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass
        finally:
            self.stats.connections -= 1
            if task is not None:
                self.tasks.discard(task)
            stream.close()

    async def _serve(self, stream: Stream, scheme: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.settings.max_header_bytes)
        for number in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
            try:
                request = await asyncio.wait_for(
                    self._read_request(conn, stream), self.settings.header_timeout
                )
                if request is None:
                    return  # the client closed between requests
                reply = self.landing.answer(request)
            except TimeoutError:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    return  # an idle keep-alive connection: just close
                await self._refuse(stream, BadRequest(408, "slow request head", "timeout"))
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint in _REASONS else 400
                counter = "header_too_large" if status == 431 else "bad_request"
                await self._refuse(stream, BadRequest(status, str(exc), counter))
                return
            except BadRequest as exc:
                await self._refuse(stream, exc)
                return
            if reply.category is not None:
                self.stats.count(reply.category, scheme)
            # The last answer on this connection says so (RFC 9112 section 9.6), as does one to
            # a request with a body: the body is not read.
            closing = _has_body(request) or number == MAX_REQUESTS_PER_CONNECTION
            headers = [
                ("Content-Length", str(len(reply.body))),
                ("Cache-Control", "no-store"),
                *reply.headers,
            ]
            if closing:
                headers.append(("Connection", "close"))
            response = h11.Response(
                status_code=reply.status, headers=headers, reason=_REASONS.get(reply.status, b"")
            )
            data = conn.send(response) or b""
            if request.method != b"HEAD":
                data += conn.send(h11.Data(data=reply.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.write(data)
            if closing or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(self, conn: h11.Connection, stream: Stream) -> h11.Request | None:
        received = 0
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                if any(k == b"transfer-encoding" for k, _ in event.headers) and any(
                    k == b"content-length" for k, _ in event.headers
                ):
                    raise BadRequest(400, "both Content-Length and Transfer-Encoding")
                if not _has_body(event):
                    conn.next_event()  # its EndOfMessage, so the connection can be reused
                return event
            if event is h11.NEED_DATA:
                if received > self.settings.max_header_bytes:
                    raise BadRequest(431, "request head too large", "header_too_large")
                data = await stream.read()
                received += len(data)
                if not data and conn.their_state is h11.IDLE and not received:
                    return None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            raise BadRequest(400, f"unexpected {type(event).__name__}")

    async def _refuse(self, stream: Stream, problem: BadRequest) -> None:
        """A short plain answer and close; written by hand because h11 may be in its error
        state by now."""
        self.stats.reject(problem.counter)
        if self.settings.log_clients:
            log.info("landing: %s to %s: %s", problem.status, stream.peer, problem)
        body = f"{problem.status} {_REASONS[problem.status].decode()}\n".encode()
        extra = "Allow: GET, HEAD\r\n" if problem.status == 405 else ""
        head = (
            f"HTTP/1.1 {problem.status} {_REASONS[problem.status].decode()}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n{extra}"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
            await stream.write(head.encode() + body)


def _has_body(request: h11.Request) -> bool:
    for key, value in request.headers:
        if key == b"transfer-encoding" or (key == b"content-length" and bytes(value) != b"0"):
            return True
    return False


# -- TLS --------------------------------------------------------------------------------------


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server context for `[landing] tls_listen`, or None without it. Raises OSError or
    ssl.SSLError when the certificate or key cannot be loaded."""
    settings = config.landing
    if not settings.tls_listen or settings.certificate is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certificate, settings.key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def refuse_foreign_names(context: ssl.SSLContext, landing: Landing) -> None:
    """Complete a handshake only for our own names. For any other server name (a blocked name,
    most likely: the browser was sent here by DNS) our certificate cannot be valid, so rather
    than make the browser show a certificate warning after a round trip, the handshake ends
    with a fatal unrecognized_name alert (RFC 6066 section 3): the browser fails at once. A
    client that sends no SNI gets the certificate and judges it itself."""
    settings = landing.config.landing

    def on_server_name(sock: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
        if name is None or name.lower().rstrip(".") in landing.own_names:
            return None
        try:
            host = host_of(h11.Request(method="GET", target="/", headers=[("Host", name)]))
            category = landing.category_of(host)
        except (BadRequest, h11.LocalProtocolError):
            category = NOT_BLOCKED
        landing.stats.refuse_tls(category)
        if settings.log_clients:  # asyncio's SSL objects do not know the peer's address here
            log.info("landing: TLS for server name %r refused (%s)", name, category)
        return int(ALERT_UNRECOGNIZED_NAME)

    context.sni_callback = on_server_name
