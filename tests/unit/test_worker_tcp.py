"""A worker's TCP listener (resolver/worker.py) on loopback: a connection the client closes with
forwarded queries still open gets their answers as long as the upstream pool may take."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.message
import dns.rrset

from resolver.compile import compile_lists, write_index
from resolver.config import parse_config
from resolver.worker import Worker

TIMEOUT, ATTEMPTS = 0.1, 4  # the pool's bound: 0.4 s


class SlowUpstream:
    """Stands in for UpstreamPool: answers after `delay` seconds, within the pool's bound."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.timeout, self.attempts = TIMEOUT, ATTEMPTS
        self.query_bound = TIMEOUT * ATTEMPTS
        self.stats = ()

    async def query(self, request: bytes) -> bytes | None:
        await asyncio.sleep(self.delay)
        response = dns.message.make_response(dns.message.from_wire(request))
        name = response.question[0].name
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "198.51.100.7"))
        return response.to_wire()


def make_worker(directory: Path) -> Worker:
    (directory / "block.txt").write_text("judi-contoh.example\n")
    config = parse_config(
        f"""
[server]
allow = ["127.0.0.0/8"]
[upstream]
servers = ["127.0.0.1:9"]
timeout = {TIMEOUT}
attempts = {ATTEMPTS}
[[lists]]
name = "t"
path = "block.txt"
""",
        directory / "blokir.toml",
    )
    write_index(compile_lists(config.list_specs()), directory / "i.blkx")
    return Worker(config, str(directory / "i.blkx"), [], [])


def test_a_closed_connection_still_gets_a_slow_forward_within_the_pool_bound(
    tmp_path: Path,
) -> None:
    """The answer takes 0.3 s: longer than twice the per-try timeout (what the connection used
    to wait), shorter than timeout x attempts (what a forward may take)."""
    worker = make_worker(tmp_path)
    worker.resolver.upstream = SlowUpstream(delay=0.3)  # type: ignore[assignment]
    query = dns.message.make_query("www.allowed.example", "A")
    query.id = 4321
    data = query.to_wire()

    async def body() -> bytes:
        server = await asyncio.start_server(worker._tcp_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(len(data).to_bytes(2, "big") + data)
            writer.write_eof()  # no more queries: the server ends the connection when done
            answer = await reader.read()
            writer.close()
            return answer
        finally:
            server.close()

    answer = asyncio.run(asyncio.wait_for(body(), 5))
    assert len(answer) >= 2, "the connection closed before the upstream answered"
    message = dns.message.from_wire(answer[2:])
    assert message.id == 4321 and message.answer[0][0].address == "198.51.100.7"
