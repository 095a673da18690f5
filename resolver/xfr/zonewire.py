"""Zone transfer wire: records of the served RPZ zone as DNS wire, fast.

A large AXFR is mostly this: each snapshot line `owner TYPE data` becomes a resource record
whose owner is the relative name's labels followed by a compression pointer to the question's
name (every transfer message carries the zone as its question, right after the 12-byte
header), and whose type, class, TTL and data are one of the zone's few record shapes,
converted by dnspython once and cached.

The snapshot child (resolver/xfr/snapshot.py) packs the whole zone this way into a block file
of ready message bodies, so an AXFR only reads and sends them; the primary uses the same code
for the few records of an IXFR.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

MESSAGE_BUDGET = 64000  # bytes of records per transfer message; 65535 is the TCP maximum
# SOA timers (refresh, retry, expire), as `blokir export --format rpz` writes them; NOTIFY
# makes the refresh a fallback. MNAME/RNAME: the zone has no real server names.
SOA_TIMERS = (3600, 600, 604800)
SOA_NAMES = "localhost. hostmaster.localhost."
NS_TARGET = "localhost."

_RR_HEADER = struct.Struct("!HHIH")
_POINTER_TO_QNAME = b"\xc0\x0c"  # the question's name starts right after the 12-byte header
_LENGTH_BYTES = [bytes((n,)) for n in range(256)]
BLOCK_HEADER = struct.Struct("!HI")  # records in the block, bytes of the block


class ZoneWire:
    """Record wire for one zone: owners relative to the zone, compressed to the question."""

    def __init__(self, zone: str, ttl: int) -> None:
        self.zone = dns.name.from_text(zone)
        self.zone_length = len(self.zone.to_digestable())
        self.ttl = ttl
        self._tails: dict[str, bytes] = {}
        self.skipped = 0

    def _tail(self, rtype_data: str) -> bytes:
        """TYPE, CLASS, TTL, RDLENGTH and RDATA for `TYPE data` (cached: a zone has few)."""
        tail = self._tails.get(rtype_data)
        if tail is None:
            rtype, _, data = rtype_data.partition(" ")
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, data).to_digestable()
            code = dns.rdatatype.from_text(rtype)
            tail = _RR_HEADER.pack(code, dns.rdataclass.IN, self.ttl, len(rdata)) + rdata
            self._tails[rtype_data] = tail
        return tail

    def records(self, lines: Iterable[str]) -> Iterator[bytes]:
        """`record` over many lines, inlined: this loop is the whole cost of a large AXFR."""
        tails = self._tails
        lengths = _LENGTH_BYTES
        limit = 254 - self.zone_length
        for line in lines:
            owner, _, rest = line.partition(" ")
            tail = tails.get(rest) or self._tail(rest)
            if owner == "@":
                yield _POINTER_TO_QNAME + tail
            elif len(owner) > limit:
                self.skipped += 1
            else:
                yield (
                    b"".join([lengths[len(label)] + label for label in owner.encode().split(b".")])
                    + _POINTER_TO_QNAME
                    + tail
                )

    def soa_text(self, serial: int) -> str:
        refresh, retry, expire = SOA_TIMERS
        return f"{SOA_NAMES} {serial} {refresh} {retry} {expire} {self.ttl}"

    def soa(self, serial: int) -> bytes:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, "SOA", self.soa_text(serial))
        wire = rdata.to_digestable()
        return _POINTER_TO_QNAME + _RR_HEADER.pack(6, 1, self.ttl, len(wire)) + wire

    def soa_rrset(self, serial: int) -> dns.rrset.RRset:
        return dns.rrset.from_text(self.zone, self.ttl, "IN", "SOA", self.soa_text(serial))

    def ns_rrset(self) -> dns.rrset.RRset:
        return dns.rrset.from_text(self.zone, self.ttl, "IN", "NS", NS_TARGET)


def write_blocks(records: Iterable[bytes], out: BinaryIO) -> int:
    """Record wire into `out` as blocks, each one message body: `BLOCK_HEADER` (record count,
    length), then the records. Returns the number of blocks."""
    blocks = 0
    for count, body in batches(records):
        out.write(BLOCK_HEADER.pack(count, len(body)))
        out.write(body)
        blocks += 1
    return blocks


def read_blocks(source: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(record count, body) per block of a block file, streamed."""
    with source:
        while head := source.read(BLOCK_HEADER.size):
            count, length = BLOCK_HEADER.unpack(head)
            body = source.read(length)
            if len(body) != length:
                raise OSError("truncated zone block file")
            yield count, body


def batches(records: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Record wire grouped into (count, body) message bodies of at most MESSAGE_BUDGET."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        if size + len(record) > MESSAGE_BUDGET and batch:
            yield len(batch), b"".join(batch)
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield len(batch), b"".join(batch)
