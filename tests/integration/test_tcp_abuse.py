"""DNS over TCP under abuse (issue 6 item 8): slow-loris clients, the connection cap, bad
length prefixes, zero-length messages, clients that never read, and no descriptor leak over
10,000 connections. A real `blokir serve` with tcp_idle_timeout = 1 s."""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.integration.test_server import LANDING_V4, LOOPBACK, Blokir
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.integration

IDLE = 1.0  # tcp_idle_timeout in these tests
MARGIN = 1.5  # scheduling slack on a shared 2-CPU machine
BLOCKED_NAME = "judi-contoh.example"


def start(tmp: Path, upstream: FakeUpstream, extra: str = "", idle: float = IDLE) -> Blokir:
    server = Blokir(tmp, upstream.port, server_extra=extra)
    server.config.write_text(
        server.config.read_text().replace("tcp_idle_timeout = 2.0", f"tcp_idle_timeout = {idle}")
    )
    server.start()
    return server


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.add("www.allowed.example", "A", "198.51.100.1")
        yield fake


@pytest.fixture
def blokir(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Blokir]:
    server = start(tmp_path, upstream)
    try:
        yield server
    finally:
        server.stop()


def worker_pid(server: Blokir) -> int:
    assert server.proc is not None
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def framed(name: str = BLOCKED_NAME, qid: int = 1) -> bytes:
    query = dns.message.make_query(name, "A")
    query.id = qid
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire


def connect(server: Blokir, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect((LOOPBACK, server.port))
    return sock


def seconds_until_closed(sock: socket.socket, limit: float) -> float:
    """How long until the server closes (EOF or reset); answers read meanwhile are skipped.
    Fails when the connection is still open after `limit` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready:
            continue
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    raise AssertionError(f"connection still open after {limit} s")


def read_answer(sock: socket.socket) -> dns.message.Message:
    size = struct.unpack("!H", recv_exact(sock, 2))[0]
    return dns.message.from_wire(recv_exact(sock, size))


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_idle_connection_closed_after_the_timeout(blokir: Blokir) -> None:
    with connect(blokir) as sock:
        elapsed = seconds_until_closed(sock, IDLE + MARGIN + 2)
    assert IDLE - 0.2 <= elapsed <= IDLE + MARGIN


def test_connection_stays_open_between_queries_within_the_timeout(blokir: Blokir) -> None:
    with connect(blokir) as sock:
        for qid in range(3):  # 3 x 0.6 s: longer than the timeout in total, never idle for it
            sock.sendall(framed(qid=qid))
            assert read_answer(sock).id == qid
            time.sleep(IDLE * 0.6)
        sock.sendall(framed(qid=9))
        assert [rd.address for rd in read_answer(sock).answer[0]] == [LANDING_V4]


def test_partial_length_prefix_is_closed(blokir: Blokir) -> None:
    with connect(blokir) as sock:
        sock.sendall(b"\x00")  # half of the length prefix, then nothing
        assert seconds_until_closed(sock, IDLE + MARGIN + 2) <= IDLE + MARGIN


def test_length_prefix_longer_than_the_data_is_closed(blokir: Blokir) -> None:
    message = framed()[2:]
    with connect(blokir) as sock:
        sock.sendall(struct.pack("!H", 4000) + message)  # promises 4000 octets, sends ~37
        assert seconds_until_closed(sock, IDLE + MARGIN + 2) <= IDLE + MARGIN


def test_dripping_one_octet_at_a_time_is_closed_by_the_message_deadline(blokir: Blokir) -> None:
    """Every octet arrives well within the timeout of the previous one, so a per-read timeout
    would never fire; the whole message must still arrive within the timeout of its first."""
    data = framed()
    interval = IDLE / 3
    with connect(blokir) as sock:
        started = time.monotonic()
        closed_after = None
        for octet in data:  # bounded: one message, ~40 octets
            try:
                sock.sendall(bytes([octet]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            ready, _, _ = select.select([sock], [], [], interval)
            if ready:
                try:
                    if not sock.recv(4096):
                        closed_after = time.monotonic() - started
                        break
                except ConnectionResetError:
                    closed_after = time.monotonic() - started
                    break
        assert closed_after is not None, "a dripping client kept its connection"
        assert closed_after <= IDLE + MARGIN
        assert interval * 2 <= closed_after  # it was the deadline, not the first octet


def test_zero_length_and_short_messages_close_the_connection(blokir: Blokir) -> None:
    for bogus in (b"\x00\x00", b"\x00\x05hello"):
        with connect(blokir) as sock:
            sock.sendall(bogus + framed())  # a valid query behind it is never read
            assert seconds_until_closed(sock, 2) < 0.5  # at once, not after the timeout
    with connect(blokir) as sock:  # the worker is fine
        sock.sendall(framed(qid=5))
        assert read_answer(sock).id == 5


def test_malformed_but_complete_message_is_answered_formerr(blokir: Blokir) -> None:
    query = bytearray(framed()[2:])
    query[5] = 2  # QDCOUNT = 2 with one question: FORMERR (RFC 1035 4.1.1)
    with connect(blokir) as sock:
        sock.sendall(struct.pack("!H", len(query)) + bytes(query) + framed(qid=8))
        size = struct.unpack("!H", recv_exact(sock, 2))[0]
        reply = recv_exact(sock, size)
        assert reply[3] & 0x0F == 1  # FORMERR, and the connection goes on:
        assert read_answer(sock).id == 8


def test_connection_cap_refuses_extra_connections_at_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    cap = 20
    server = start(tmp_path, upstream, f"tcp_max_connections = {cap}", idle=10.0)
    held: list[socket.socket] = []
    try:
        for _ in range(cap):
            sock = connect(server)
            sock.sendall(framed())
            read_answer(sock)  # accepted and being served
            held.append(sock)
        extra = connect(server)
        elapsed = seconds_until_closed(extra, 3)
        extra.close()
        assert elapsed < 0.5, f"an over-cap connection waited {elapsed:.2f} s"
        held.pop().close()
        time.sleep(0.2)
        with connect(server) as sock:  # a slot is free again
            sock.sendall(framed(qid=3))
            assert read_answer(sock).id == 3
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_client_that_never_reads_is_cut_off(blokir: Blokir) -> None:
    """Pipelined queries with a tiny receive window and no reads: the server's unsent answers
    would grow without bound; it must stop and close (reset) within the timeout."""
    batch = framed() * 1000  # ~40 kB of queries, ~100 kB of answers each time
    with connect(blokir, rcvbuf=4096) as sock:
        sock.setblocking(False)
        started = time.monotonic()
        cut_off = None
        sent = 0
        while time.monotonic() - started < 20:  # bounded in time and in volume
            try:
                sent += sock.send(batch)
            except BlockingIOError:
                time.sleep(0.02)
            except (ConnectionResetError, BrokenPipeError):
                cut_off = time.monotonic() - started
                break
            if sent > 64 * 1024 * 1024:
                break
        assert cut_off is not None, f"still open after sending {sent} octets"
    # Kernel buffers fill first (a few MB on loopback), then the timeout runs.
    assert cut_off < 10 + IDLE, cut_off
    blokir.ask(BLOCKED_NAME)  # the worker still answers


def test_no_descriptor_leak_over_ten_thousand_connections(blokir: Blokir) -> None:
    pid = worker_pid(blokir)
    with connect(blokir) as warm:  # lazily created objects exist before the baseline
        warm.sendall(framed("www.allowed.example"))
        read_answer(warm)
    time.sleep(0.2)
    baseline = open_fds(pid)
    total, batch_size = 10_000, 100
    kinds = {"closed": 0, "half": 0, "answered": 0, "idle": 0}
    idle_held: list[socket.socket] = []
    started = time.monotonic()
    for batch in range(total // batch_size):
        socks = [connect(blokir) for _ in range(batch_size)]
        for i, sock in enumerate(socks):
            kind = i % 4
            if kind == 1:
                sock.sendall(framed()[:9])  # half a query
                kinds["half"] += 1
            elif kind == 2:
                sock.sendall(framed(qid=i))
                kinds["answered"] += 1
            elif kind == 3 and batch % 20 == 0 and len(idle_held) < 200:
                idle_held.append(sock)  # left open: the server must time it out
                kinds["idle"] += 1
            else:
                kinds["closed"] += 1
        for i, sock in enumerate(socks):
            if i % 4 == 2:
                assert read_answer(sock).id == i
            if sock not in idle_held:
                sock.close()
    during = open_fds(pid)
    for sock in idle_held:
        assert seconds_until_closed(sock, IDLE + MARGIN + 5) < IDLE + MARGIN + 5
        sock.close()
    deadline = time.monotonic() + IDLE + MARGIN + 3
    after = open_fds(pid)
    while after > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        after = open_fds(pid)
    elapsed = time.monotonic() - started
    print(f"fds: baseline {baseline}, after the last batch {during}, settled {after}; {kinds}")
    print(f"10,000 connections in {elapsed:.1f} s")
    assert sum(kinds.values()) == total
    assert after <= baseline, f"worker holds {after - baseline} more descriptors"
    blokir.ask(BLOCKED_NAME)
