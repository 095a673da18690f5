"""resolver._udpbatch (recvmmsg/sendmmsg) over real loopback sockets, and how the worker's UDP
path is chosen (resolver/udpbatch.py, resolver/native.py)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import resolver
from resolver import native, udpbatch

PACKAGE = Path(resolver.__file__).resolve().parent
BUILT = native.decide_udp_batch(PACKAGE, {})
if not BUILT.compiled:  # an install without a C compiler: the plain path is what runs
    pytest.skip(f"resolver._udpbatch not built: {BUILT.why}", allow_module_level=True)

from resolver._udpbatch import MAX_DATAGRAM, Batcher  # noqa: E402

TIMEOUT = 2.0


def udp(address: str, port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind((address, port))
    return sock


@pytest.fixture
def server() -> Iterator[socket.socket]:
    sock = udp("127.0.0.1")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def wait_readable(sock: socket.socket) -> None:
    """Loopback delivery is synchronous, but be sure before a non-blocking read."""
    import select

    assert select.select([sock], [], [], TIMEOUT)[0], "nothing arrived"


def test_order_hosts_and_ports_of_ipv4_clients(server: socket.socket) -> None:
    clients = [udp("127.0.0.2"), udp("127.0.0.3"), udp("127.0.0.2")]
    target = server.getsockname()
    sent = []
    try:
        for n in range(9):
            client = clients[n % 3]
            payload = b"query-%d" % n
            client.sendto(payload, target)
            sent.append((payload, client.getsockname()))
        wait_readable(server)
        batcher = Batcher(16)
        datagrams, hosts = batcher.recv(server.fileno())
        assert datagrams == [p for p, _ in sent]
        assert hosts == [a[0] for _, a in sent]
        assert [batcher.address(i) for i in range(len(sent))] == [a for _, a in sent]
        assert batcher.count == batcher.received == 9
    finally:
        for client in clients:
            client.close()


def test_ipv6_addresses_as_recvfrom_gives_them() -> None:
    try:
        server = udp("::1")
    except OSError as error:
        pytest.skip(f"no IPv6 loopback: {error}")
    client = udp("::1")
    try:
        client.sendto(b"six", server.getsockname())
        server.setblocking(False)
        wait_readable(server)
        batcher = Batcher(4)
        datagrams, hosts = batcher.recv(server)  # anything with fileno() will do
        assert datagrams == [b"six"] and hosts == ["::1"]
        assert batcher.address(0) == client.getsockname()  # (host, port, flowinfo, scope_id)
        assert batcher.send(server, [b"answer"]) == 0
        assert client.recvfrom(64) == (b"answer", server.getsockname())
    finally:
        server.close()
        client.close()


def test_the_largest_datagram_arrives_whole(server: socket.socket) -> None:
    # 65535 octets of UDP less the UDP (8) and IPv4 (20) headers: the most a query can be.
    client = udp("127.0.0.2")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    payload = bytes(range(256)) * (65507 // 256) + b"x" * (65507 % 256)
    try:
        client.sendto(payload, server.getsockname())
        client.sendto(b"small", server.getsockname())
        wait_readable(server)
        batcher = Batcher(2)
        datagrams, _ = batcher.recv(server.fileno())
        assert datagrams == [payload, b"small"]
        assert batcher.truncated == 0 and MAX_DATAGRAM == 65535
    finally:
        client.close()


def test_an_empty_socket_gives_an_empty_batch(server: socket.socket) -> None:
    batcher = Batcher(8)
    assert batcher.recv(server.fileno()) == ([], [])
    assert batcher.count == 0 and batcher.recv_errors == 0
    with pytest.raises(IndexError):
        batcher.address(0)
    with pytest.raises(IndexError):
        batcher.send(server.fileno(), [b"no one asked"])


def test_more_datagrams_than_one_batch_come_in_order_over_several(server: socket.socket) -> None:
    client = udp("127.0.0.2")
    try:
        for n in range(100):
            client.sendto(n.to_bytes(2, "big"), server.getsockname())
        wait_readable(server)
        batcher = Batcher(32)
        sizes, seen = [], []
        for _ in range(10):  # bounded: four batches hold them all
            datagrams, _ = batcher.recv(server.fileno())
            if not datagrams:
                break
            sizes.append(len(datagrams))
            seen.extend(int.from_bytes(d, "big") for d in datagrams)
        assert sizes == [32, 32, 32, 4]
        assert seen == list(range(100))
        assert batcher.batches == 4 and batcher.received == 100  # the empty read is no batch
    finally:
        client.close()


def test_replies_reach_the_right_clients(server: socket.socket) -> None:
    clients = [udp("127.0.0.2"), udp("127.0.0.3"), udp("127.0.0.4")]
    try:
        for n, client in enumerate(clients):
            client.sendto(b"q%d" % n, server.getsockname())
        wait_readable(server)
        batcher = Batcher(8)
        hosts = batcher.recv(server.fileno())[1]
        assert hosts == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        # The second client gets nothing (a dropped query); the others their own answer.
        assert batcher.send(server.fileno(), [b"a0", None, b"a2"]) == 0
        assert clients[0].recv(64) == b"a0"
        assert clients[2].recv(64) == b"a2"
        clients[1].setblocking(False)
        with pytest.raises(BlockingIOError):
            clients[1].recv(64)
        assert batcher.sent == 2 and batcher.send_errors == 0
    finally:
        for client in clients:
            client.close()


def test_a_failing_destination_is_counted_and_the_rest_still_sent(server: socket.socket) -> None:
    clients = [udp("127.0.0.2"), udp("127.0.0.3"), udp("127.0.0.4"), udp("127.0.0.5")]
    try:
        for client in clients:
            client.sendto(b"q", server.getsockname())
        wait_readable(server)
        batcher = Batcher(8)
        assert len(batcher.recv(server.fileno())[0]) == 4
        # No IPv4 datagram holds 70000 octets: sendmmsg stops at the second with EMSGSIZE.
        too_big = b"x" * 70000
        failed = batcher.send(server.fileno(), [b"a0", too_big, b"a2", too_big])
        assert failed == 2
        assert batcher.send_errors == 2 and batcher.sent == 2
        assert batcher.last_errno == errno.EMSGSIZE
        assert clients[0].recv(64) == b"a0"
        assert clients[2].recv(64) == b"a2"
    finally:
        for client in clients:
            client.close()


def test_an_icmp_error_on_the_socket_is_counted_and_reading_goes_on(
    server: socket.socket,
) -> None:
    # Unconnected sockets hear of ICMP errors only with IP_RECVERR; a worker's socket may be
    # set up so by an operator's tooling, and the error must cost no query.
    server.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11), 1)  # Linux: 11
    gone, staying = udp("127.0.0.2"), udp("127.0.0.3")
    try:
        gone.sendto(b"q", server.getsockname())
        wait_readable(server)
        batcher = Batcher(4)
        assert len(batcher.recv(server.fileno())[0]) == 1
        gone.close()  # the answer will meet a closed port: ICMP port unreachable
        batcher.send(server.fileno(), [b"late"])
        staying.sendto(b"next", server.getsockname())
        wait_readable(server)
        datagrams, hosts = batcher.recv(server.fileno())
        assert (datagrams, hosts) == ([b"next"], ["127.0.0.3"])
        assert batcher.recv_errors >= 1 and batcher.last_errno == errno.ECONNREFUSED
    finally:
        staying.close()


def test_bad_arguments_are_refused(server: socket.socket) -> None:
    with pytest.raises(ValueError):
        Batcher(0)
    client = udp("127.0.0.2")
    try:
        client.sendto(b"q", server.getsockname())
        wait_readable(server)
        batcher = Batcher(2)
        batcher.recv(server.fileno())
        with pytest.raises(TypeError):
            batcher.send(server.fileno(), ["text"])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            batcher.send(server.fileno(), (b"a",))  # type: ignore[arg-type]
    finally:
        client.close()


def test_the_plain_path_is_chosen_when_asked_or_not_built(tmp_path: Path) -> None:
    assert udpbatch.new_batcher(4, {native.UDP_BATCH.env: "0"}) is None
    assert udpbatch.new_batcher(4, {}) is not None
    mode = native.decide_udp_batch(PACKAGE, {native.UDP_BATCH.env: "0"})
    assert not mode.compiled and "BLOKIR_UDP_BATCH=0" in mode.why
    assert "not built" in native.decide_udp_batch(tmp_path, {}).why
    source = tmp_path / native.UDP_BATCH.source
    source.write_text("/* v1 */\n")
    native.write_c_status(
        tmp_path, source, "C build: CompileError: no gcc", native.UDP_BATCH.status
    )
    mode = native.decide_udp_batch(tmp_path, {})
    assert not mode.compiled and "no gcc" in mode.why
    native.write_c_status(tmp_path, source, None, native.UDP_BATCH.status)
    assert native.decide_udp_batch(tmp_path, {}).compiled
    source.write_text("/* v2 */\n")  # edited after the build: the library is stale
    mode = native.decide_udp_batch(tmp_path, {})
    assert not mode.compiled and "changed since the build" in mode.why
