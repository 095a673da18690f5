"""Byte streams under the HTTP layer: plain TCP, and TLS driven through memory BIOs.

TLS is not left to asyncio's SSL transport because of one case that matters here: when the
server-name callback refuses a handshake, OpenSSL writes a fatal alert into its outgoing buffer,
and asyncio's transport closes the socket without sending it, so the browser sees a reset
instead of `unrecognized_name`. Driving the SSLObject here flushes every byte OpenSSL produces,
the alert included, before closing. OpenSSL still does all of TLS; this only moves bytes.
"""

from __future__ import annotations

import asyncio
import ssl

READ_CHUNK = 4096
WRITE_TIMEOUT = 10.0  # a client that does not read its (small) answer is dropped


class Stream:
    """Plain TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def peer(self) -> object:
        return self.writer.get_extra_info("peername")

    async def start(self) -> bool:
        """Ready for HTTP (after a TLS handshake); False: close."""
        return True

    async def read(self) -> bytes:
        """Some bytes, or b"" at the end."""
        return await self.reader.read(READ_CHUNK)

    async def write(self, data: bytes) -> None:
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT)

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        if self.writer.transport.is_closing():
            self.writer.transport.abort()
        else:
            self.writer.close()


class TlsStream(Stream):
    """TLS over the plain stream, with OpenSSL's output always flushed (see the module doc)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(reader, writer)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    async def start(self) -> bool:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._receive():
                    return False
                continue
            except ssl.SSLError:
                await self._flush()  # the alert, e.g. unrecognized_name from the SNI callback
                return False
            await self._flush()
            return True

    async def read(self) -> bytes:
        while True:
            try:
                return self.tls.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()  # e.g. a TLS 1.3 key update answer
                if not await self._receive():
                    return b""
            except ssl.SSLZeroReturnError:  # close_notify
                return b""

    async def write(self, data: bytes) -> None:
        self.tls.write(data)
        await self._flush()

    async def _receive(self) -> bool:
        data = await self.reader.read(READ_CHUNK)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    async def _flush(self) -> None:
        await self._send(self.outgoing.read())
