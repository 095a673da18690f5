"""One zone transfer received message by message into files, never into a zone in memory.

dnspython's state machine (dns.xfr.Inbound) reads the transfer: it checks the rcode, the SOA
that opens and closes it (RFC 5936 section 2.2), the serial chain of an IXFR and whether the
primary answered an IXFR AXFR-style (RFC 1995 section 4), and it hands every record to a
"transaction" of the transaction manager it is given. `CopyTransfer` is that manager: a full
zone goes line by line into a `CopyWriter` (resolver/xfr/zonefile.py), an IXFR's steps into an
`IxfrDiff`; neither holds more than the message being read and the difference.

`receive` drives it over one TCP connection: each message is parsed with the TSIG context of
the ones before it (RFC 8945 section 5.3.1: every message is covered by a MAC, the first and the
last carry one), and the memory in use is one message at a time (at most 64 KB on the wire).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.transaction
import dns.xfr

from resolver.xfr.zonefile import CopyWriter, IxfrDiff

__all__ = ["BadTransfer", "CopyTransfer", "CopyWriteError", "apply", "receive"]

# Bytes a second a transfer must bring on average beyond its base lifetime: far below what
# reading a zone costs here (about 300 KB/s of wire for dnspython's parsing), far above a
# primary that trickles to hold the update loop.
MIN_RATE = 16 * 1024


class BadTransfer(Exception):
    """The transfer breaks the protocol in a way dns.xfr.Inbound leaves to its transaction."""


class CopyWriteError(Exception):
    """Writing the new copy failed (disk full, permissions): not the primary's fault."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


class _Full:
    """The transaction of a full zone (AXFR, or an IXFR answered AXFR-style): each record
    becomes a line of the new copy as it arrives, after the opening SOA."""

    def __init__(self, manager: CopyTransfer) -> None:
        self.manager = manager
        self.writer: CopyWriter | None = None

    def _out(self) -> CopyWriter:
        if self.writer is None:
            soa = self.manager.first_soa
            if soa is None:  # dns.xfr.Inbound checks the opening SOA before any record
                raise BadTransfer("a record before the opening SOA")
            self.writer = CopyWriter(self.manager.copy)
            self.manager.written.append(self.writer)
            self.writer.write_rdataset(self.manager.origin, soa)
        return self.writer

    def add(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        try:
            self._out().write_rdataset(name, rdataset)
        except OSError as exc:  # told apart from the socket's errors
            raise CopyWriteError(exc) from exc

    def replace(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        if rdataset.rdtype == dns.rdatatype.SOA and name == self.manager.origin:
            # The closing SOA, equal to the opening one (Inbound checks): already written first.
            self.manager.soa = rdataset
        else:
            self.add(name, rdataset)

    def delete_exact(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        raise BadTransfer("a deletion in a full zone transfer")

    def commit(self) -> None:
        try:
            self._out().finish()
        except OSError as exc:
            raise CopyWriteError(exc) from exc
        self.manager.full = self

    def rollback(self) -> None:
        if self.writer is not None:
            self.writer.discard()


class _Incremental:
    """The transaction of an IXFR: its steps, collected as their net difference."""

    def __init__(self, manager: CopyTransfer) -> None:
        self.manager = manager
        self.diff = IxfrDiff(manager.origin)

    def add(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        self.diff.add(name, rdataset)

    def delete_exact(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        self.diff.delete(name, rdataset)

    def replace(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        # Inbound replaces only the apex SOA: at the start of each step's additions, and the
        # final one. The last one stands.
        if rdataset.rdtype != dns.rdatatype.SOA or name != self.manager.origin:
            raise BadTransfer(f"IXFR replaces {name} {rdataset.rdtype!r}")
        self.diff.soa = rdataset
        self.manager.soa = rdataset

    def commit(self) -> None:
        self.manager.incremental = self.diff

    def rollback(self) -> None:
        self.diff.changes.clear()


class CopyTransfer(dns.transaction.TransactionManager):
    """The transaction manager of one transfer of `origin` for the copy at `copy`. Afterwards
    exactly one of `full` (a finished, not yet installed copy) and `incremental` (the IXFR's
    difference) is set, or neither: the primary said our serial is current. `soa` is the
    transfer's final SOA."""

    def __init__(self, origin: dns.name.Name, copy: Path) -> None:
        self.origin = origin
        self.copy = copy
        self.first_soa: dns.rdataset.Rdataset | None = None
        self.soa: dns.rdataset.Rdataset | None = None
        self.full: _Full | None = None
        self.incremental: IxfrDiff | None = None
        self.written: list[CopyWriter] = []  # every new copy of this transfer (discard)

    def reader(self) -> dns.transaction.Transaction:
        raise NotImplementedError("a streamed transfer keeps no zone to read")

    def writer(self, replacement: bool = False) -> dns.transaction.Transaction:
        # dns.xfr.Inbound calls only add, replace, delete_exact, commit and rollback.
        if replacement:
            return cast(dns.transaction.Transaction, _Full(self))
        return cast(dns.transaction.Transaction, _Incremental(self))

    def origin_information(self) -> tuple[dns.name.Name | None, bool, dns.name.Name | None]:
        return self.origin, False, self.origin

    def get_class(self) -> dns.rdataclass.RdataClass:
        return dns.rdataclass.IN

    def saw_first(self, message: dns.message.Message) -> None:
        """The first message: its opening SOA goes first in a full copy."""
        if message.answer and message.answer[0].rdtype == dns.rdatatype.SOA:
            self.first_soa = message.answer[0]

    def discard(self) -> None:
        """Drop every file this transfer wrote and that was not installed."""
        for writer in self.written:
            writer.discard()


def receive(
    host: str,
    port: int,
    query: dns.message.Message,
    manager: CopyTransfer,
    timeout: float,
    lifetime: float,
) -> None:
    """Send the AXFR or IXFR `query` and read the answer into `manager` until the final SOA.
    Each read waits at most `timeout`; the whole transfer may take `lifetime` seconds plus one
    second for every MIN_RATE bytes received, so a zone of any size can arrive from a primary
    that keeps sending, and one that trickles is cut off."""
    budget = _Budget(time.monotonic() + lifetime)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        wire = query.to_wire()
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        apply(manager, query, _messages(sock, query, timeout, budget))


def apply(
    manager: CopyTransfer, query: dns.message.Message, messages: Iterator[dns.message.Message]
) -> None:
    """Feed the answer to `query`, message by message, through dns.xfr.Inbound into `manager`.
    Raises when the messages end before the final SOA (nothing is committed then)."""
    rdtype = query.question[0].rdtype
    serial = dns.xfr.extract_serial_from_query(query)
    with dns.xfr.Inbound(manager, rdtype, serial) as inbound:
        for index, message in enumerate(messages):
            if not query.is_response(message, xfr_continuation=index > 0):
                raise dns.query.BadResponse
            if index == 0:
                manager.saw_first(message)
            if inbound.process_message(message):
                return
    raise EOFError("the transfer ended before its final SOA")


def _messages(
    sock: socket.socket, query: dns.message.Message, timeout: float, budget: _Budget
) -> Iterator[dns.message.Message]:
    """The answer's messages as they arrive; each is checked against the TSIG of the query and
    the messages before it. Ends only by an exception (the reader stops at the final SOA)."""
    tsig_ctx = None
    while True:  # bounded: every read counts against the budget
        (length,) = struct.unpack("!H", _read(sock, 2, timeout, budget))
        message = dns.message.from_wire(
            _read(sock, length, timeout, budget),
            keyring=query.keyring,
            request_mac=query.mac,
            xfr=True,
            tsig_ctx=tsig_ctx,
            multi=True,
            # Order matters in an IXFR; in an AXFR, not merging the records of one RRset within
            # a message saves a sixth of the parsing, and each record is a line of the copy.
            one_rr_per_rrset=True,
        )
        yield message
        tsig_ctx = message.tsig_ctx


class _Budget:
    """The time a transfer may take: a base, and more for every byte that arrived."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def received(self, count: int) -> None:
        self.deadline += count / MIN_RATE


def _read(sock: socket.socket, size: int, timeout: float, budget: _Budget) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        left = budget.left()
        if left <= 0:
            raise dns.exception.Timeout
        sock.settimeout(min(timeout, left))
        count = sock.recv_into(view[got:])
        if count == 0:
            raise EOFError
        got += count
        budget.received(count)
    return bytes(buffer)
