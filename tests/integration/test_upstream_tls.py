"""Upstreams over DNS over TLS (resolver/upstream_tls.py, through UpstreamPool): a TLS server
on loopback with a test CA answers; the pool verifies its certificate for the configured name,
reuses one connection for many queries, takes answers out of order, and reconnects after the
server closed the connection."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from resolver.config import TlsServer
from resolver.upstream import UpstreamPool
from tests.support.tlsca import SERVER_NAME, make_ca

pytestmark = pytest.mark.integration


class DotServer:
    """Answers A queries with 192.0.2.<last label's length>, later queries first (each batch
    read from the connection is answered in reverse), and can close every connection."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.connections = 0
        self.queries = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk
                queries = []
                while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                    size = int.from_bytes(buffer[:2], "big")
                    queries.append(buffer[2 : 2 + size])
                    buffer = buffer[2 + size :]
                for data in reversed(queries):  # out of order
                    self.queries += 1
                    query = dns.message.from_wire(data)
                    response = dns.message.make_response(query)
                    name = query.question[0].name
                    response.answer.append(
                        dns.rrset.from_text(name, 60, "IN", "A", f"192.0.2.{len(name.labels[0])}")
                    )
                    wire = response.to_wire()
                    writer.write(len(wire).to_bytes(2, "big") + wire)
        except (ConnectionError, ssl.SSLError):
            return

    def drop_connections(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()


def _query(name: str) -> bytes:
    return dns.message.make_query(name, "A").to_wire()


def _address(response: bytes | None) -> str:
    assert response is not None
    return str(dns.message.from_wire(response).answer[0][0])


async def _run(tmp_path: Path, name: str, use_ca: bool) -> tuple[DotServer, UpstreamPool, int]:
    ca = make_ca(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.certificate, ca.key)
    server = DotServer(context)
    port = await server.start()
    pool = UpstreamPool(
        [],
        1.0,
        1,
        tls_servers=(TlsServer("127.0.0.1", port, name),),
        tls_ca=str(ca.ca) if use_ca else "",
    )
    return server, pool, port


def test_one_connection_pipelined_out_of_order_and_reopened(tmp_path: Path) -> None:
    async def main() -> None:
        server, pool, _ = await _run(tmp_path, SERVER_NAME, use_ca=True)
        names = [f"{'x' * n}.example" for n in range(1, 31)]
        answers = await asyncio.gather(*(pool.query(_query(n)) for n in names))
        assert [_address(a) for a in answers] == [f"192.0.2.{n}" for n in range(1, 31)]
        assert server.connections == 1  # 30 queries, one handshake
        server.drop_connections()
        await asyncio.sleep(0.05)
        assert _address(await pool.query(_query("abcd.example"))) == "192.0.2.4"
        assert server.connections == 2  # reopened after the server closed it
        pool.close()
        server.server.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("name", "use_ca"), [("wrong.name.test", True), (SERVER_NAME, False)], ids=["name", "ca"]
)
def test_certificate_is_verified(tmp_path: Path, name: str, use_ca: bool) -> None:
    async def main() -> None:
        server, pool, _ = await _run(tmp_path, name, use_ca)
        assert await pool.query(_query("abc.example")) is None
        assert server.queries == 0
        assert pool.stats[0].errors == 1
        pool.close()
        server.server.close()

    asyncio.run(main())
