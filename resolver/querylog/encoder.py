"""dnstap encoding of the query log's records, by hand: the writer process's per-record work.

A module of its own so that the build compiles it with the query hot path (setup.py
HOT_MODULES): the writer shares the machine's cores with the workers, so its microseconds per
record are taken from answering. resolver/querylog/writer.py feeds it the worker's batches.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from resolver.querylog.client import cut_address
from resolver.querylog.schema import ENUMS

__all__ = ["Encoder"]

# blokir action -> dnstap Policy.Action (REFUSED has none: the rule text says it).
_ACTIONS = {
    "nxdomain": "NXDOMAIN",
    "nodata": "NODATA",
    "drop": "DROP",
    "landing": "LOCAL_DATA",
    "allow": "PASS",
}


def _varint(value: int) -> bytes:
    """A protobuf base-128 varint (lowest 7 bits first, high bit set on all but the last)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths below 2**14 (every DNS message over UDP, most over TCP): precomputed varints.
_LENGTHS = [_varint(n) for n in range(1 << 14)]


def _length(value: int) -> bytes:
    return _LENGTHS[value] if value < 16384 else _varint(value)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag byte, length, bytes."""
    return bytes([tag]) + _length(len(payload)) + payload


# Message fields (dnstap.proto), as tag bytes: field number << 3 | wire type.
_QUERY_TIME_SEC = b"\x40"  # 8, varint
_QUERY_TIME_NSEC = b"\x4d"  # 9, fixed32
_QUERY_MESSAGE = b"\x52"  # 10, bytes
_RESPONSE_TIME_SEC = b"\x60"  # 12, varint
_RESPONSE_TIME_NSEC = b"\x6d"  # 13, fixed32
_RESPONSE_MESSAGE = b"\x72"  # 14, bytes
_POLICY = 0x7A  # 15, message
_ENVELOPE_MESSAGE = b"\x72"  # Dnstap.message: 14, message
_FIXED32 = struct.Struct("<I")
_FRAME = struct.Struct(">I")


class Encoder:
    """Records -> framed dnstap messages, encoded by hand.

    Why not the protobuf library: its per-message cost (about 7 us per record for the two
    messages, measured by bench/hotpath_bench.py --querylog writer) is CPU taken from the
    workers on a machine where the writers share the cores. The fields are written in field
    number order, as the library writes them, so the bytes are the same
    (tests/unit/test_querylog.py compares them); the constant parts (envelope head and tail,
    the client's address fields, the policy) are built once and reused.

    Privacy: the client address is cut here, before anything is written to the sink (the
    worker hands the address over as it came): allowed queries to bits4/bits6 bits, blocked
    ones to blocked_bits."""

    def __init__(
        self,
        identity: bytes,
        version: bytes,
        bits: tuple[int, int] = (32, 128),
        blocked_bits: tuple[int, int] = (32, 128),
    ) -> None:
        self.identity = identity
        self.version = version
        self.bits = bits
        self.blocked_bits = blocked_bits
        self.policies: list[tuple[str, str, str]] = []
        self._policy_cache: dict[tuple[int, int, bytes], bytes] = {}
        # (client, udp, blocked) -> (CLIENT_QUERY's type and address fields, CLIENT_RESPONSE's)
        self._clients: dict[tuple[str, bool, bool], tuple[bytes, bytes]] = {}
        # The record's whole seconds, and the fields that hold them: query_time_sec (8) with
        # the tag of query_time_nsec (9) after it; the same for the response times (12, 13).
        self._seconds = -1
        self._query_seconds = b""
        self._response_seconds = b""
        # Dnstap: identity (1), version (2), then message (14) and type (15) = MESSAGE.
        self._head = _field(0x0A, identity) + _field(0x12, version) + _ENVELOPE_MESSAGE
        self._tail = b"\x78" + _varint(ENUMS["Dnstap.Type"]["MESSAGE"])
        self._overhead = len(self._head) + len(self._tail)  # a frame's envelope, bar the length
        self._query_type = b"\x08" + _varint(ENUMS["Message.Type"]["CLIENT_QUERY"])
        self._response_type = b"\x08" + _varint(ENUMS["Message.Type"]["CLIENT_RESPONSE"])

    def encode_batch(self, batch: list[Any]) -> bytes:
        """One batch from the worker (resolver/querylog/client.py): policy tables applied in
        order, records encoded; the frames of the records, joined once for the batch."""
        parts: list[bytes] = []
        for record in batch:
            if record[0] == "P":
                self.set_policies(record[1])
            else:
                self._append(parts, record)
        return b"".join(parts)

    def encode(self, record: tuple[Any, ...]) -> bytes:
        """Two framed messages: CLIENT_QUERY with the query, CLIENT_RESPONSE with the answer
        and, for a blocked query, the policy."""
        parts: list[bytes] = []
        self._append(parts, record)
        return b"".join(parts)

    def set_policies(self, table: list[tuple[str, str, str]]) -> None:
        self.policies = [tuple(row) for row in table]  # type: ignore[misc]
        self._policy_cache = {}

    def _policy(self, pid: int, match: int, value: bytes) -> bytes:
        """The Policy message's fields: type (1), rule (2), action (3), match (4), value (5)."""
        key = (pid, match, value)
        found = self._policy_cache.get(key)
        if found is None:
            name, category, action = (
                self.policies[pid - 1] if 0 < pid <= len(self.policies) else ("?", "?", "?")
            )
            rule = f"list={name} category={category} action={action}".encode()
            fields = _field(0x0A, b"blokir") + _field(0x12, rule)
            if action in _ACTIONS:
                fields += b"\x18" + _varint(ENUMS["Policy.Action"][_ACTIONS[action]])
            fields += b"\x20" + _varint(match) + _field(0x2A, value)
            found = _field(_POLICY, fields)
            if len(self._policy_cache) > 4096:
                self._policy_cache.clear()
            self._policy_cache[key] = found
        return found

    def _client(self, client: str, udp: bool, blocked: bool) -> tuple[bytes, bytes]:
        """Each message's type (1), then socket_family (2), socket_protocol (3) and
        query_address (4), the address cut."""
        key = (client, udp, blocked)
        found = self._clients.get(key)
        if found is None:
            bits4, bits6 = self.blocked_bits if blocked else self.bits
            cut = cut_address(client, bits4, bits6) if client else ""
            fields = b"\x18" + (b"\x01" if udp else b"\x02")
            if cut:
                packed = socket.inet_pton(socket.AF_INET6 if ":" in cut else socket.AF_INET, cut)
                family = b"\x10\x02" if len(packed) == 16 else b"\x10\x01"
                fields = family + fields + _field(0x22, packed)
            found = (self._query_type + fields, self._response_type + fields)
            if len(self._clients) > 65536:
                self._clients.clear()
            self._clients[key] = found
        return found

    def _append(self, parts: list[bytes], record: tuple[Any, ...]) -> None:
        """The parts of the record's two frames onto `parts`. Both messages carry the query
        time (the response also as its response time: the record has one time, when the
        answer was sent). Lengths are summed, not measured on joined pieces: one join per batch
        (encode_batch) instead of three per record."""
        when, client, udp, query, answer, pid, match, value = record
        seconds = int(when)
        if seconds != self._seconds:  # once per second of records, not per record
            sec = _varint(seconds)
            self._seconds = seconds
            self._query_seconds = _QUERY_TIME_SEC + sec + _QUERY_TIME_NSEC
            self._response_seconds = _RESPONSE_TIME_SEC + sec + _RESPONSE_TIME_NSEC
        query_seconds, response_seconds = self._query_seconds, self._response_seconds
        nsec = _FIXED32.pack(int((when - seconds) * 1e9))
        query_head, response_head = self._client(client, udp, pid != 0)
        query_length = _length(len(query))
        first = len(query_head) + len(query_seconds) + 5 + len(query_length) + len(query)
        second = len(response_head) + len(query_seconds) + len(response_seconds) + 8
        if answer is not None:
            answer_length = _length(len(answer))
            second += 1 + len(answer_length) + len(answer)
        policy = self._policy(pid, match, value) if pid else b""
        second += len(policy)
        head, tail, overhead = self._head, self._tail, self._overhead
        first_length, second_length = _length(first), _length(second)
        parts += (
            _FRAME.pack(overhead + len(first_length) + first),
            head,
            first_length,
            query_head,
            query_seconds,
            nsec,
            _QUERY_MESSAGE,
            query_length,
            query,
            tail,
            _FRAME.pack(overhead + len(second_length) + second),
            head,
            second_length,
            response_head,
            query_seconds,
            nsec,
            response_seconds,
            nsec,
        )
        if answer is not None:
            parts += (_RESPONSE_MESSAGE, answer_length, answer)
        if pid:
            parts.append(policy)
        parts.append(tail)
