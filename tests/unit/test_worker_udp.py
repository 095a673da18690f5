"""A worker's UDP listener (resolver/worker.py) on loopback, on both of its paths: batched
(recvmmsg/sendmmsg through resolver._udpbatch) and plain (recvfrom/sendto, BLOKIR_UDP_BATCH=0).
Both must give the same answers to the same queries, forwarded ones included, and neither may
let one client's flood starve another's queries or skip the rate limit."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolver import metrics as m
from resolver.compile import compile_lists, write_index
from resolver.config import QueryLogConfig, parse_config
from resolver.querylog.client import QueryLog
from resolver.worker import UDP_BATCH, Worker
from tests.support.dnstap import drain

TIMEOUT = 3.0
BLOCKED = "judi-contoh.example"
PATHS = ("batched", "plain")


class EchoUpstream:
    """Stands in for UpstreamPool: answers every forwarded query with one A record."""

    timeout, attempts, query_bound = 0.5, 1, 0.5
    stats = ()

    async def query(self, request: bytes) -> bytes | None:
        await asyncio.sleep(0)
        response = dns.message.make_response(dns.message.from_wire(request))
        name = response.question[0].name
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "198.51.100.7"))
        return response.to_wire()


def make_worker(directory: Path, path: str, sock: socket.socket, extra: str = "") -> Worker:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "block.txt").write_text(f"{BLOCKED}\n")
    config = parse_config(
        f"""
[server]
allow = ["127.0.0.0/8", "::1"]
{extra}
[upstream]
servers = ["127.0.0.1:9"]
[[lists]]
name = "t"
path = "block.txt"
""",
        directory / "blokir.toml",
    )
    write_index(compile_lists(config.list_specs()), directory / "i.blkx")
    worker = Worker(config, str(directory / "i.blkx"), [sock], [])
    worker.resolver.upstream = EchoUpstream()  # type: ignore[assignment]
    worker.timing = True  # the latency histogram, as with metrics on
    if path == "plain":
        worker.udp_batcher = None
    elif worker.udp_batcher is None:
        pytest.skip("resolver._udpbatch not built or BLOKIR_UDP_BATCH=0: only the plain path")
    return worker


def udp(address: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def serve_and_collect(
    directory: Path,
    path: str,
    listen: str,
    sends: Sequence[tuple[socket.socket, bytes]],
    expected: int,
    extra: str = "",
) -> tuple[list[tuple[tuple[str, int], bytes]], Worker]:
    """Start a worker on `listen`, send every query at once (so they wait in the socket
    together, as under load), and read answers until `expected` arrived or the time is up:
    ((client host, port), answer) in arrival order."""
    server = udp(listen)
    worker = make_worker(directory, path, server, extra)
    target = server.getsockname()
    clients = list(dict.fromkeys(sock for sock, _ in sends))
    answers: list[tuple[tuple[str, int], bytes]] = []

    async def body() -> None:
        task = asyncio.get_running_loop().create_task(worker.run())
        await asyncio.sleep(0.05)  # run() registers its readers
        for sock, data in sends:
            sock.sendto(data, target)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        try:
            while len(answers) < expected and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
                for sock in clients:
                    for _ in range(len(sends) + 1):  # bounded: at most one answer per query
                        try:
                            answers.append((sock.getsockname()[:2], sock.recv(65535)))
                        except BlockingIOError:
                            break
            await asyncio.sleep(0.05)  # anything past the expected count shows up too
            for sock in clients:
                for _ in range(len(sends) + 1):
                    try:
                        answers.append((sock.getsockname()[:2], sock.recv(65535)))
                    except BlockingIOError:
                        break
        finally:
            worker.stopping.set()
            await asyncio.wait_for(task, TIMEOUT)

    try:
        asyncio.run(body())
    finally:
        for sock in clients:
            sock.close()
        server.close()
    return answers, worker


def query(name: str, rdtype: str, qid: int, edns: bool = False) -> bytes:
    message = dns.message.make_query(name, rdtype, use_edns=0 if edns else None)
    message.id = qid
    wire: bytes = message.to_wire()
    return wire


def mixed_queries(clients: Sequence[socket.socket]) -> list[tuple[socket.socket, bytes]]:
    """Blocked (first and memo repeats), forwarded, EDNS, malformed and short datagrams, more
    than one batch of them, from several clients."""
    sends = []
    for n in range(UDP_BATCH + 20):
        client = clients[n % len(clients)]
        kind = n % 6
        if kind == 0:
            data = query(BLOCKED, "A", n)
        elif kind == 1:
            data = query(f"www.{BLOCKED}", "AAAA", n, edns=True)
        elif kind == 2:
            data = query(f"host{n}.allowed.example", "A", n)  # forwarded
        elif kind == 3:
            data = n.to_bytes(2, "big") + b"\x01\x00\x00\x01garbage"  # malformed: FORMERR
        elif kind == 4:
            data = b"\x00"  # shorter than a header: dropped
        else:
            data = query("allowed.example", "TXT", n, edns=True)
        sends.append((client, data))
    return sends


def by_client_and_id(answers: list[tuple[tuple[str, int], bytes]]) -> list[tuple[str, bytes]]:
    """Ports differ from run to run: the client's host and the DNS ID tell answers apart."""
    return sorted(
        ((address[0], answer) for address, answer in answers), key=lambda a: (a[0], a[1][:2])
    )


@pytest.mark.parametrize("listen", ["127.0.0.1", "::1"])
def test_both_paths_give_the_same_answers(tmp_path: Path, listen: str) -> None:
    results = {}
    for path in PATHS:
        sources = ("127.0.0.2", "127.0.0.3") if listen != "::1" else ("::1", "::1")
        clients = [udp(source) for source in sources]
        sends = mixed_queries(clients)
        expected = sum(1 for _, data in sends if len(data) > 1)  # all but the 1-octet ones
        answers, worker = serve_and_collect(tmp_path / path, path, listen, sends, expected)
        assert len(answers) == expected, f"{path}: {len(answers)} answers of {expected}"
        if path == "batched":
            assert worker.udp_batcher is not None
        results[path] = by_client_and_id(answers)
    assert results["batched"] == results["plain"]
    forwarded = [
        dns.message.from_wire(a) for _, a in results["batched"] if int.from_bytes(a[:2]) % 6 == 2
    ]
    assert len(forwarded) == (UDP_BATCH + 20 + 3) // 6
    assert all(m.answer[0][0].address == "198.51.100.7" for m in forwarded)


@pytest.mark.parametrize("path", PATHS)
def test_the_answer_goes_back_to_the_port_that_asked(tmp_path: Path, path: str) -> None:
    """Two clients on one host: each gets the answers to its own queries only."""
    first, second = udp("127.0.0.2"), udp("127.0.0.2")
    ports = {first.getsockname()[1]: "first", second.getsockname()[1]: "second"}
    sends = [(first if n % 2 else second, query(BLOCKED, "A", n)) for n in range(40)]
    answers, _ = serve_and_collect(tmp_path, path, "127.0.0.1", sends, len(sends))
    got: dict[str, list[int]] = {"first": [], "second": []}
    for (_, port), answer in answers:
        got[ports[port]].append(int.from_bytes(answer[:2], "big"))
    assert got == {"first": list(range(1, 40, 2)), "second": list(range(0, 40, 2))}


@pytest.mark.parametrize("path", PATHS)
def test_a_flood_from_one_client_does_not_starve_another(tmp_path: Path, path: str) -> None:
    """127.0.0.3's few queries, sent in the middle of 127.0.0.2's flood of several batches,
    are all answered, in the order they were sent."""
    flooder, other = udp("127.0.0.2"), udp("127.0.0.3")
    sends = [(flooder, query(BLOCKED, "A", n)) for n in range(3 * UDP_BATCH)]
    for k in range(5):
        sends.insert(40 * k + 7, (other, query(BLOCKED, "AAAA", 1000 + k)))
    answers, worker = serve_and_collect(tmp_path, path, "127.0.0.1", sends, len(sends))
    mine = [int.from_bytes(a[:2], "big") for (host, _), a in answers if host == "127.0.0.3"]
    assert mine == [1000, 1001, 1002, 1003, 1004]
    assert sum(1 for (host, _), _ in answers if host == "127.0.0.2") == 3 * UDP_BATCH
    # Every SAMPLE-th answer is timed and counted SAMPLE times: the histogram holds as many
    # answers as were sampled, whichever path sent them.
    sampled = len(sends) // m.SAMPLE * m.SAMPLE
    assert sum(worker.resolver.stats.histogram) == sampled


@pytest.mark.parametrize("path", PATHS)
def test_the_rate_limit_applies_to_each_datagram_of_a_batch(tmp_path: Path, path: str) -> None:
    """The limiter's buckets are per /24, so the second client is on another one: the flooder
    gets REFUSED past its burst within the same batch, the other client is untouched."""
    flooder, other = udp("127.0.0.2"), udp("127.0.1.3")
    sends = [(flooder, query(BLOCKED, "A", n)) for n in range(UDP_BATCH)]
    for k in range(4):
        sends.insert(10 * k + 5, (other, query(BLOCKED, "A", 1000 + k)))
    extra = 'ratelimit = 1\nratelimit_burst = 10\nratelimit_action = "refuse"'
    answers, worker = serve_and_collect(tmp_path, path, "127.0.0.1", sends, len(sends), extra)
    rcodes: dict[str, list[int]] = {"127.0.0.2": [], "127.0.1.3": []}
    for (host, _), answer in answers:
        rcodes[host].append(dns.message.from_wire(answer).rcode())
    assert len(rcodes["127.0.1.3"]) == 4 and dns.rcode.REFUSED not in rcodes["127.0.1.3"]
    refused = rcodes["127.0.0.2"].count(dns.rcode.REFUSED)
    assert len(rcodes["127.0.0.2"]) == UDP_BATCH
    # The burst of 10 plus at most a token or two earned while the test ran.
    assert UDP_BATCH - 12 <= refused <= UDP_BATCH - 10
    limiter = worker.resolver.ratelimiter
    assert limiter is not None and limiter.refused == refused


@pytest.mark.parametrize("path", PATHS)
def test_query_log_records_carry_the_time_of_their_wake_up(tmp_path: Path, path: str) -> None:
    """Both UDP paths set the query log's clock once per wake-up (Resolver.log_now): a record's
    time is when its batch was read, not a value left from an earlier wake-up."""
    client = udp("127.0.0.2")
    sends = [(client, query(BLOCKED, "A", n)) for n in range(5)]
    server = udp("127.0.0.1")
    worker = make_worker(tmp_path, path, server)
    qlog = QueryLog(QueryLogConfig(dnstap="file:/nonexistent", sample=1))
    worker.resolver.use_querylog(qlog)  # records stay in qlog's encoder: no writer is started
    worker.resolver.log_now = 1.0  # stale: an answer stamped with it was not re-clocked
    readable = worker._on_udp_readable if path == "plain" else None
    before = time.time()
    for sock, data in sends:
        sock.sendto(data, server.getsockname())
    time.sleep(0.05)
    if readable is not None:
        readable(server)
    else:
        assert worker.udp_batcher is not None
        worker._on_udp_batch(server, worker.udp_batcher)
    after = time.time()
    client.close()
    server.close()
    records = drain(qlog)
    assert len(records) == len(sends)
    assert all(before <= record.time <= after for record in records)
