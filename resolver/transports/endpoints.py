"""A worker's encrypted listeners: DoT and DoH on the sockets the supervisor bound, wired to
the worker's pipeline. The worker makes one `Endpoints` and calls `start`, `reload` (on every
swap: certificate renewals reach new handshakes), `counters` (for its metrics slot) and
`close`; everything else about DoT and DoH lives in this package.

DoT reuses the worker's DNS-over-TCP loop (`StreamLoop`: framing, pipelining, idle and write
limits, RFC 7766) on the TLS stream, with `padded` as the answer shaping; DoH answers through
`Resolver.handle`/`forward` like the other transports, under the `https` metrics label.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from resolver import metrics as m
from resolver.config import Address, Config
from resolver.transports.context import ALPN_DOH, ALPN_DOT, ServerTls
from resolver.transports.https import HttpLimits, HttpsServer
from resolver.transports.listener import EncryptedListener
from resolver.transports.shaping import padded

__all__ = ["Endpoints", "StreamLoop", "bind_stream_sockets"]

# The worker's TCP loop: (reader, writer, client address, transport label, answer shaping).
StreamLoop = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, str, int, Callable[[bytes], bytes] | None],
    Awaitable[None],
]
# Answers one DoH query for a client: the pipeline, HTTPS transport label (transports/https.py:
# the answer at once, or an awaitable of it when upstream is asked).
Answer = Callable[[bytes, str], bytes | Awaitable[bytes | None] | None]


def bind_stream_sockets(addresses: tuple[Address, ...]) -> list[socket.socket]:
    """Listening TCP sockets (SO_REUSEPORT, one set per worker as for port 53). Raises OSError
    with the address in its text."""
    socks: list[socket.socket] = []
    try:
        for host, port in addresses:
            ipv6 = ipaddress.ip_address(host).version == 6
            sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if ipv6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                hint = (
                    " (is another server running there?)" if exc.errno == errno.EADDRINUSE else ""
                )
                raise OSError(exc.errno, f"{host}:{port}: {exc.strerror}{hint}") from exc
            sock.listen(1024)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class Endpoints:
    def __init__(self, config: Config, stream_loop: StreamLoop, answer: Answer) -> None:
        server = config.server
        self.dot: EncryptedListener | None = None
        self.doh: EncryptedListener | None = None
        self.https: HttpsServer | None = None
        if server.tls_listen:
            tls = ServerTls(server.certificate, server.key, ALPN_DOT)

            async def serve_dot(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str, _: str
            ) -> None:
                await stream_loop(reader, writer, client, m.TLS, padded)

            self.dot = EncryptedListener(
                tls, serve_dot, server.tls_max_connections, server.tls_handshake_timeout
            )
        if server.https_listen:
            limits = HttpLimits(
                path=server.https_path.encode(),
                idle_timeout=server.tcp_idle_timeout,
                max_streams=server.https_max_streams,
            )
            self.https = HttpsServer(answer, limits)
            self.doh = EncryptedListener(
                ServerTls(server.certificate, server.key, ALPN_DOH),
                self.https.serve,
                server.tls_max_connections,
                server.tls_handshake_timeout,
            )

    async def start(self, tls_socks: list[socket.socket], https_socks: list[socket.socket]) -> None:
        if self.dot is not None:
            await self.dot.start(tls_socks)
        if self.doh is not None:
            await self.doh.start(https_socks)

    def reload(self, config: Config) -> None:
        """The certificate and key files read again (or new paths): for new handshakes."""
        for listener in (self.dot, self.doh):
            if listener is not None:
                listener.tls.reload(config.server.certificate, config.server.key)

    def close(self) -> None:
        for listener in (self.dot, self.doh):
            if listener is not None:
                listener.close()

    def counters(self) -> dict[str, object]:
        """For the worker's metrics slot (resolver/metrics.py reads them)."""
        out: dict[str, object] = {}
        for name, listener in (("tls", self.dot), ("https", self.doh)):
            if listener is None:
                continue
            stats = listener.stats
            out[f"{name}_connections"] = stats.active
            out[f"{name}_accepted"] = stats.accepted
            out[f"{name}_rejected"] = stats.rejected
            out[f"{name}_handshake_timeouts"] = stats.handshake_timeouts
            out[f"{name}_handshake_failures"] = stats.handshake_failures
        if self.https is not None:
            http = self.https.stats
            for status, count in http.http_errors.items():
                out[f"https_status_{status}"] = count
            out["https_idle_closed"] = http.idle_closed
            out["https_protocol_errors"] = http.protocol_errors
        return out
