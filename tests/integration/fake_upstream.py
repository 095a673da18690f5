"""A programmable upstream resolver on 127.0.0.1 (UDP and TCP) for resolver integration tests.

Answers from a small table of records; names can be told to go silent, to answer only over TCP
(TC=1 over UDP), or to CNAME elsewhere. Every query it sees is recorded, so tests can prove that a
blocked name never left blokir or that a cached one was asked once; so are the EDNS option codes
each query carried. With `echo_options` it answers the options it was sent, the way servers in
the wild do: a COOKIE comes back with a server cookie added (RFC 7873 5.2.3), ECS with its scope
set (RFC 7871 7.2.1), anything else as it came (the EDNS non-compliance RFC 6891 6.1.2 forbids).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable

import dns.edns
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

LOOPBACK = "127.0.0.1"


class ProgrammableUpstream:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}  # (name, type) -> rdata texts
        self.cnames: dict[str, str] = {}
        self.silent: set[str] = set()
        self.tcp_only: set[str] = set()
        self.queries: list[tuple[str, str, str]] = []  # (transport, name, type)
        self.options: list[tuple[int, ...]] = []  # EDNS option codes of each query, in order
        self.echo_options = False
        self.always_options: list[dns.edns.Option] = []  # added to every EDNS answer, asked or not
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.udp, self.tcp = _bind_pair()
        self.port = int(self.udp.getsockname()[1])
        self.udp.settimeout(0.1)
        self.tcp.listen(16)
        self.tcp.settimeout(0.1)
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    def add(self, name: str, rdtype: str, *rdata: str) -> None:
        self.records.setdefault((name.lower().rstrip("."), rdtype), []).extend(rdata)

    def seen(self, name: str) -> int:
        with self._lock:
            return sum(1 for _, n, _ in self.queries if n == name)

    def __enter__(self) -> ProgrammableUpstream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.udp.close()
        self.tcp.close()

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((transport, name, rdtype))
            self.options.append(tuple(int(option.otype) for option in query.options))
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if self.echo_options and query.options:
            response.use_edns(0, payload=1232, options=[_echo(o) for o in query.options])
        if self.always_options and query.edns >= 0:
            response.use_edns(0, payload=1232, options=[*response.options, *self.always_options])
        if transport == "udp" and name in self.tcp_only:
            response.flags |= dns.flags.TC
            return response.to_wire()
        owner = question.name
        seen = 0
        while owner.to_text(omit_final_dot=True).lower() in self.cnames and seen < 8:
            target = self.cnames[owner.to_text(omit_final_dot=True).lower()]
            response.answer.append(dns.rrset.from_text(owner, 300, "IN", "CNAME", target + "."))
            owner = dns.name.from_text(target)
            seen += 1
        key = (owner.to_text(omit_final_dot=True).lower(), rdtype)
        if key in self.records:
            response.answer.append(
                dns.rrset.from_text_list(owner, 300, "IN", rdtype, self.records[key])
            )
        elif not response.answer and not _known(self.records, owner):
            response.set_rcode(dns.rcode.NXDOMAIN)
        if not response.answer:
            soa = dns.rrset.from_text(
                "example.", 300, "IN", "SOA", "ns.example. host.example. 1 3600 600 86400 30"
            )
            response.authority.append(soa)
        return response.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self.answer(data, "udp")
            except Exception:
                continue
            if reply is not None:
                # Honour a client without EDNS: over 512 octets it gets TC (RFC 1035 4.2.1).
                if len(reply) > 512 and b"\x00\x00\x29" not in data[-11:]:
                    message = dns.message.from_wire(reply)
                    message.answer = []
                    message.flags |= dns.flags.TC
                    reply = message.to_wire()
                self.udp.sendto(reply, address)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        with conn:
            try:
                while True:
                    prefix = _recv_exact(conn, 2)
                    if not prefix:
                        return
                    data = _recv_exact(conn, struct.unpack("!H", prefix)[0])
                    reply = self.answer(data, "tcp")
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return


def _bind_pair(tries: int = 50) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free loopback port: the kernel picks the UDP port,
    and another test may hold that number over TCP, so try again (bounded)."""
    for _ in range(tries):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((LOOPBACK, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((LOOPBACK, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise OSError(f"no loopback port free for both UDP and TCP after {tries} tries")


def _echo(option: dns.edns.Option) -> dns.edns.Option:
    """The option a server that answers options would send back for `option`."""
    if isinstance(option, dns.edns.CookieOption):
        return dns.edns.CookieOption(option.client, b"upstream")  # client cookie + our 8 octets
    if isinstance(option, dns.edns.ECSOption):
        return dns.edns.ECSOption(option.address, option.srclen, option.srclen)
    return option


def _known(records: dict[tuple[str, str], list[str]], owner: dns.name.Name) -> bool:
    text = owner.to_text(omit_final_dot=True).lower()
    return any(name == text for name, _ in records)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = conn.recv(remaining)
        if not chunk:
            return b""
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def names(items: Iterable[str]) -> str:
    return "\n".join(items) + "\n"
