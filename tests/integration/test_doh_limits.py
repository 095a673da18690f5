"""The encrypted listener and the DoH server under abuse, on real TLS sockets: a handshake
flood, a slow client, idle connections, the HTTP/2 stream limit, an oversized body and bad
base64url. The pipeline is a stand-in here (it answers every A query); the end-to-end tests
with real clients are in test_encrypted.py."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path

import dns.message
import dns.rrset
import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest

from resolver.transports.context import ALPN_DOH, ServerTls
from resolver.transports.https import HttpLimits, HttpsServer
from resolver.transports.listener import EncryptedListener
from tests.support.tlsca import TestCa, make_ca

pytestmark = pytest.mark.integration

QUERY = dns.message.make_query("example.com.", "A").to_wire()


class Served:
    def __init__(self, ca: TestCa, port: int, listener: EncryptedListener, server: HttpsServer):
        self.ca, self.port, self.listener, self.server = ca, port, listener, server
        self.url = f"https://127.0.0.1:{port}/dns-query"
        self.in_progress = 0
        self.most_in_progress = 0
        self.delay = 0.0
        self.at_once = False

    def client_context(self, alpn: list[str]) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.ca))
        context.set_alpn_protocols(alpn)
        return context


@asynccontextmanager
async def doh(tmp_path: Path, **limits: float) -> AsyncIterator[Served]:
    ca = make_ca(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    served: Served

    def reply(data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
        return response.to_wire()

    async def later(data: bytes) -> bytes:
        served.in_progress += 1
        served.most_in_progress = max(served.most_in_progress, served.in_progress)
        try:
            await asyncio.sleep(served.delay)
            return reply(data)
        finally:
            served.in_progress -= 1

    def answer(data: bytes, client: str) -> bytes | Coroutine[None, None, bytes]:
        """As the worker's: the answer at once (`at_once`: for queries with an even ID), else a
        coroutine (upstream)."""
        if served.at_once and int.from_bytes(data[:2]) % 2 == 0:
            return reply(data)
        return later(data)

    http_limits = HttpLimits(
        idle_timeout=float(limits.get("idle", 2.0)), max_streams=int(limits.get("streams", 100))
    )
    server = HttpsServer(answer, http_limits)
    listener = EncryptedListener(
        ServerTls(str(ca.certificate), str(ca.key), ALPN_DOH),
        server.serve,
        int(limits.get("connections", 100)),
        float(limits.get("handshake", 2.0)),
    )
    await listener.start([sock])
    served = Served(ca, sock.getsockname()[1], listener, server)
    try:
        yield served
    finally:
        listener.close()


async def _tls(
    served: Served, alpn: list[str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", served.port, ssl=served.client_context(alpn), server_hostname="127.0.0.1"
    )


def test_handshake_flood_is_bounded(tmp_path: Path) -> None:
    async def main() -> None:
        async with doh(tmp_path, connections=5, handshake=1.0) as served:
            stalled = []
            for _ in range(20):  # connect, never say hello
                stalled.append(await asyncio.open_connection("127.0.0.1", served.port))
            await asyncio.sleep(0.3)
            stats = served.listener.stats
            assert stats.active == 5 and stats.rejected == 15
            await asyncio.sleep(1.2)  # the five handshakes run out of time
            assert stats.handshake_timeouts == 5 and stats.active == 0
            async with httpx.AsyncClient(verify=served.client_context(["http/1.1"])) as client:
                response = await client.post(
                    served.url, content=QUERY, headers={"content-type": "application/dns-message"}
                )
            assert response.status_code == 200
            for _, writer in stalled:
                writer.close()

    asyncio.run(main())


def test_slow_client_is_cut_off(tmp_path: Path) -> None:
    async def main() -> None:
        async with doh(tmp_path, idle=1.0) as served:
            reader, writer = await _tls(served, ["http/1.1"])
            request = b"GET /dns-query?dns=" + base64.urlsafe_b64encode(QUERY).rstrip(b"=")
            request += b" HTTP/1.1\r\nhost: x\r\n\r\n"
            started = time.monotonic()
            closed_after = None
            for octet in request:  # one octet every 0.2 s: 9 s for the whole request
                try:
                    writer.write(bytes([octet]))
                    await writer.drain()
                    if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except (ConnectionError, ssl.SSLError):
                    closed_after = time.monotonic() - started
                    break
            assert closed_after is not None and closed_after < 2.0
            assert served.server.stats.idle_closed == 1
            assert served.server.stats.requests == 0

    asyncio.run(main())


def _h2_client(writer: asyncio.StreamWriter) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    return conn


async def _h2_events(
    conn: h2.connection.H2Connection, reader: asyncio.StreamReader, seconds: float
) -> list[h2.events.Event]:
    events: list[h2.events.Event] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except TimeoutError:
            break
        if not data:
            events.append(h2.events.ConnectionTerminated())
            break
        events += conn.receive_data(data)
    return events


def test_idle_http2_connection_is_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with doh(tmp_path, idle=0.8) as served:
            reader, writer = await _tls(served, ["h2"])
            conn = _h2_client(writer)
            started = time.monotonic()
            events = await _h2_events(conn, reader, 3.0)
            assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
            assert time.monotonic() - started < 2.0
            assert served.server.stats.idle_closed == 1

    asyncio.run(main())


def test_http2_stream_limit(tmp_path: Path) -> None:
    async def main() -> None:
        async with doh(tmp_path, streams=3) as served:
            served.delay = 0.5
            reader, writer = await _tls(served, ["h2"])
            conn = _h2_client(writer)
            events = await _h2_events(conn, reader, 0.3)
            settings = [e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)]
            code = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
            assert settings and settings[0].changed_settings[code].new_value == 3
            path = "/dns-query?dns=" + base64.urlsafe_b64encode(QUERY).rstrip(b"=").decode()
            headers = [(":method", "GET"), (":path", path), (":scheme", "https"),
                       (":authority", "127.0.0.1")]  # fmt: skip
            # h2 as a client would refuse a fourth stream itself: lift its own bound to act
            # like a client that ignores the server's setting.
            conn.remote_settings[code] = 100
            conn.remote_settings.acknowledge()
            for i in range(6):
                conn.send_headers(1 + 2 * i, headers, end_stream=True)
            writer.write(conn.data_to_send())
            events = await _h2_events(conn, reader, 2.0)
            assert served.most_in_progress <= 3
            assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
            # The connection limit was for that connection only: a new one is served.
            async with httpx.AsyncClient(http2=True, verify=served.client_context(["h2"])) as c:
                served.delay = 0.0
                assert (await c.get(f"https://127.0.0.1:{served.port}{path}")).status_code == 200

    asyncio.run(main())


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
def test_oversized_body_and_bad_base64url(tmp_path: Path, http2: bool) -> None:
    async def main() -> None:
        async with doh(tmp_path) as served:
            alpn = ["h2"] if http2 else ["http/1.1"]
            async with httpx.AsyncClient(http2=http2, verify=served.client_context(alpn)) as c:
                big = await c.post(
                    served.url,
                    content=QUERY + bytes(70_000),
                    headers={"content-type": "application/dns-message"},
                )
                assert big.status_code == 413
                assert (await c.get(served.url + "?dns=$$$")).status_code == 400
                assert (await c.get(served.url + "?dns=AAAAA")).status_code == 400
            async with httpx.AsyncClient(http2=http2, verify=served.client_context(alpn)) as c:
                ok = await c.post(
                    served.url, content=QUERY, headers={"content-type": "application/dns-message"}
                )
                assert ok.status_code == 200 and ok.http_version == (
                    "HTTP/2" if http2 else "HTTP/1.1"
                )
            assert served.server.stats.http_errors == {413: 1, 400: 2}

    asyncio.run(main())


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
def test_answers_at_once_and_later_reach_their_own_requests(tmp_path: Path, http2: bool) -> None:
    """Answers the pipeline has at once go out without a task, answers from upstream later; on
    one connection, interleaved, each request gets the answer to its own query."""

    async def main() -> None:
        async with doh(tmp_path) as served:
            served.at_once, served.delay = True, 0.05
            verify = served.client_context(["h2" if http2 else "http/1.1"])
            async with httpx.AsyncClient(http2=http2, verify=verify) as client:

                async def ask(query_id: int) -> int:
                    query = dns.message.make_query(f"q{query_id}.example.", "A")
                    query.id = query_id
                    dns_param = base64.urlsafe_b64encode(query.to_wire()).rstrip(b"=").decode()
                    reply = await client.get(served.url, params={"dns": dns_param})
                    assert reply.status_code == 200
                    assert reply.headers["content-type"] == "application/dns-message"
                    answer = dns.message.from_wire(reply.content)
                    assert answer.question[0].name == query.question[0].name
                    return int(answer.id)

                ids = list(range(100, 140))
                assert await asyncio.gather(*(ask(i) for i in ids)) == ids
                assert served.server.stats.requests == len(ids)
                assert served.most_in_progress >= 1  # the odd ones went the long way

    asyncio.run(main())
