"""DNS over TLS to an upstream (RFC 7858, authenticated as RFC 8310 section 8 describes): one
persistent connection per server, reused by every query of the worker.

Queries are pipelined on the connection, each with a fresh random ID that no other open query
on it holds, and answers are matched by ID and question as they arrive, in any order (RFC 7858
3.3, RFC 7766 6.2.1.1). A connection the server closes (idle timeout, restart) is opened again
by the next query; the queries open on it when it closed fail at once (the pool's next attempt
takes them), rather than waiting out their timeout.

The server's certificate must chain to the trust store, or to `tls_ca`, and be valid for the
configured authentication name (`tls://ip:port#name`): the name, not the IP address, is what
is verified, and it is sent as SNI.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from typing import Protocol

__all__ = ["MAX_OPEN_QUERIES", "TlsConnection", "client_context"]

MAX_OPEN_QUERIES = 4096  # per connection; the pool's in-flight caps are far lower by default
_MAX_ID_TRIES = 64


class Question(Protocol):
    def matches(self, response: bytes, qid: bytes) -> bool: ...


def client_context(cafile: str = "") -> ssl.SSLContext:
    """Verifying client context: the system's CAs, or only `cafile` (a private CA)."""
    context = ssl.create_default_context(cafile=cafile or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8310 9
    context.set_alpn_protocols(["dot"])
    return context


class TlsConnection:
    """The connection to one DoT upstream; `query` opens it when needed."""

    def __init__(self, host: str, port: int, name: str, context: ssl.SSLContext) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.context = context
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._open: dict[bytes, tuple[asyncio.Future[bytes], Question]] = {}
        self._connecting = asyncio.Lock()
        self.connects = 0  # connections opened (1 while one is reused; tests read it)

    async def query(self, request: bytes, question: Question, deadline: float) -> bytes:
        """The answer to `request` (any ID; the ID sent is fresh) with the ID sent; raises
        TimeoutError, OSError or ssl.SSLError (a subclass of OSError)."""
        async with asyncio.timeout_at(deadline):
            writer = await self._connection()
            qid = self._fresh_id()
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._open[qid] = (future, question)
            try:
                data = qid + request[2:]
                writer.write(len(data).to_bytes(2, "big") + data)
                return await future
            finally:
                self._open.pop(qid, None)

    def _fresh_id(self) -> bytes:
        if len(self._open) >= MAX_OPEN_QUERIES:
            raise ConnectionError("too many queries open on one upstream TLS connection")
        for _ in range(_MAX_ID_TRIES):
            qid = secrets.randbits(16).to_bytes(2, "big")
            if qid not in self._open:
                return qid
        raise ConnectionError("no free message ID on the upstream TLS connection")

    async def _connection(self) -> asyncio.StreamWriter:
        async with self._connecting:  # one handshake at a time; the others reuse its result
            writer = self._writer
            if writer is not None and not writer.is_closing():
                return writer
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.context, server_hostname=self.name
            )
            self.connects += 1
            self._writer = writer
            self._reading = asyncio.get_running_loop().create_task(self._read(reader, writer))
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hands each answer to the query with its ID; on close fails the open queries."""
        error: Exception = ConnectionResetError("the upstream closed the TLS connection")
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(length)
                entry = self._open.get(data[:2])
                if entry is not None and not entry[0].done() and entry[1].matches(data, data[:2]):
                    entry[0].set_result(data)
        except (asyncio.IncompleteReadError, OSError) as exc:
            if isinstance(exc, OSError):
                error = exc
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            for future, _ in list(self._open.values()):
                if not future.done():
                    future.set_exception(error)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None
