"""Accepting encrypted connections: a cap, a bounded handshake, then the protocol's loop.

Connections are accepted as plain TCP and upgraded with `StreamWriter.start_tls` rather than
handed to `asyncio.start_server(ssl=...)`, so a connection counts against the cap from its
first octet: a flood of connections that open a handshake and stall (the cheapest attack on a
TLS server, each costing the server a socket and handshake state) fills the cap and is turned
away at accept, and each stalled one is dropped after `handshake_timeout`. The context is read
per connection (`ServerTls.context`), so a reloaded certificate applies to the next handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from resolver.transports.context import ServerTls

log = logging.getLogger("blokir")

__all__ = ["EncryptedListener", "ListenerStats", "Serve"]

# What runs once the handshake is done: (reader, writer, client address, ALPN protocol or "").
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, str, str], Awaitable[None]]


@dataclass(slots=True)
class ListenerStats:
    """Per listener kind and worker; exported as blokir_encrypted_connections_* (metrics)."""

    active: int = 0  # open connections, handshaking ones included
    accepted: int = 0  # handshakes completed
    rejected: int = 0  # closed at accept: the cap was reached
    handshake_timeouts: int = 0
    handshake_failures: int = 0  # not TLS, wrong version, no shared cipher, reset, ...


class EncryptedListener:
    """One kind of encrypted listener (DoT or DoH) on sockets the supervisor bound."""

    def __init__(
        self,
        tls: ServerTls,
        serve: Serve,
        max_connections: int,
        handshake_timeout: float,
    ) -> None:
        self.tls = tls
        self.serve = serve
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.stats = ListenerStats()
        self.servers: list[asyncio.Server] = []

    async def start(self, socks: list[socket.socket]) -> None:
        for sock in socks:
            self.servers.append(await asyncio.start_server(self._accepted, sock=sock))

    def close(self) -> None:
        for server in self.servers:
            server.close()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.stats
        if stats.active >= self.max_connections:
            stats.rejected += 1
            writer.transport.abort()  # at once: the descriptor is free on this iteration
            return
        stats.active += 1
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        try:
            try:
                # asyncio's own handshake timeout surfaces as a ConnectionAbortedError,
                # indistinguishable from a reset; this one is counted as what it is.
                async with asyncio.timeout(self.handshake_timeout):
                    await writer.start_tls(self.tls.context)
            except TimeoutError:
                stats.handshake_timeouts += 1
                writer.transport.abort()
                return
            except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
                stats.handshake_failures += 1
                log.debug("TLS handshake with %s failed: %s", client, exc)
                writer.transport.abort()
                return
            stats.accepted += 1
            ssl_object = writer.get_extra_info("ssl_object")
            alpn = (ssl_object.selected_alpn_protocol() if ssl_object else None) or ""
            await self.serve(reader, writer, client, alpn)
        finally:
            stats.active -= 1
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):  # a TLS close_notify the peer never reads
                    await writer.wait_closed()
