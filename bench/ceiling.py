"""The ceiling: the fastest shape a DNS server written in Python can have on this machine.

A non-blocking UDP socket, drained in batches from `loop.add_reader`, answering every datagram
with a fixed A record. The reply is built by byte concatenation: the query's 2-byte ID, then a
constant header and answer. Nothing else of the query is read: no question, no type, no EDNS, no
block list, no cache, no upstream. A real server must do all of these, so its queries/s can only
be lower; the benchmark reports blokir's queries/s as a share of this one.

The reply has no question section (QDCOUNT 0) and one answer, `ceiling.bench. 60 IN A 192.0.2.1`.
dnsperf matches replies by ID only, so it counts them; a strict client (dnspython's
`dns.query.udp`) would reject them as not matching its question, which is why the benchmark
probes this server with a raw socket.

    python bench/ceiling.py --port 5300                 # one process, 127.0.0.1 only
    python bench/ceiling.py --port 5300 --workers 2     # SO_REUSEPORT, one process per worker
    python bench/ceiling.py --port 5300 --batched       # recvmmsg/sendmmsg (resolver._udpbatch)

`--batched` is the same server with the worker's batched UDP path (resolver/_udpbatch.c): one
recvmmsg for a wake-up's datagrams and one sendmmsg for their replies, so the ceiling of that
path, with the per-packet system calls gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable

LOOPBACKS = ("127.0.0.1", "::1")
BATCH = 64  # datagrams per wake-up before giving the loop back
# Flags: QR, RD, RA, NOERROR. Counts: QD 0, AN 1, NS 0, AR 0.
HEADER = b"\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00"
ANSWER = (
    b"\x07ceiling\x05bench\x00"  # owner ceiling.bench.
    b"\x00\x01\x00\x01"  # A IN
    b"\x00\x00\x00\x3c"  # TTL 60
    b"\x00\x04\xc0\x00\x02\x01"  # RDLENGTH 4, 192.0.2.1
)
REPLY_TAIL = HEADER + ANSWER


def reply_to(query: bytes) -> bytes:
    """The whole reply to `query` (what the server sends, for tests and the probe)."""
    return query[:2] + REPLY_TAIL


def open_socket(address: str, port: int, reuse_port: bool) -> socket.socket:
    if address not in LOOPBACKS:
        raise SystemExit(f"ceiling: {address} is not a loopback address (127.0.0.1 or ::1)")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Room for a burst: dnsperf keeps up to 100 queries in flight per run.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def plain_drain(sock: socket.socket) -> Callable[[], None]:
    """One recvfrom and one sendto per datagram."""
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    tail = REPLY_TAIL
    batch = range(BATCH)

    def drain() -> None:
        for _ in batch:
            try:
                data, peer = recvfrom(512)
            except BlockingIOError:
                return
            try:  # noqa: SIM105 (a plain try is cheaper than contextlib.suppress here)
                sendto(data[:2] + tail, peer)
            except (BlockingIOError, ConnectionRefusedError):
                pass  # a full send buffer or a client gone: drop it, as UDP does

    return drain


def batched_drain(sock: socket.socket) -> Callable[[], None]:
    """One recvmmsg and one sendmmsg per wake-up (failed sends are counted by the batcher)."""
    from resolver._udpbatch import Batcher  # the checkout's build (pip install -e .)

    batcher = Batcher(BATCH)
    fd = sock.fileno()
    tail = REPLY_TAIL

    def drain() -> None:
        datagrams = batcher.recv(fd)[0]
        if datagrams:
            batcher.send(fd, [data[:2] + tail for data in datagrams])

    return drain


def serve(sock: socket.socket, batched: bool = False) -> None:
    """Answer on `sock` until SIGTERM or SIGINT."""
    loop = asyncio.new_event_loop()
    drain = batched_drain(sock) if batched else plain_drain(sock)
    loop.add_reader(sock.fileno(), drain)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    try:
        loop.run_forever()
    finally:
        loop.remove_reader(sock.fileno())
        loop.close()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default="127.0.0.1", help="127.0.0.1 (default) or ::1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes (SO_REUSEPORT)")
    parser.add_argument(
        "--batched", action="store_true", help="recvmmsg/sendmmsg through resolver._udpbatch"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    reuse = args.workers > 1
    # Bind every socket before forking, so the port is taken before anyone is told it is ready.
    sockets = [open_socket(args.address, args.port, reuse) for _ in range(args.workers)]
    children = []
    for sock in sockets[1:]:
        pid = os.fork()
        if pid == 0:
            for other in sockets:
                if other is not sock:
                    other.close()
            serve(sock, args.batched)
            os._exit(0)
        children.append(pid)
        sock.close()
    print(
        f"ceiling: answering on {args.address}:{args.port} with {args.workers} process(es)"
        + (", batched" if args.batched else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        serve(sockets[0], args.batched)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
