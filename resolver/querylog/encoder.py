"""dnstap encoding of the query log's records, in the worker: the pure-Python twin of
resolver/querylog/_dnstap.c, and the pieces both are built from.

The worker encodes each logged query as it logs it (`add`) and hands whole frames to its writer
process, which only forwards them to the sink (resolver/querylog/writer.py). Where the install
built the C extension, `new_encoder` returns its Encoder (a few hundred nanoseconds per record);
otherwise this module's PyEncoder, the same bytes, compiled with the hot path where mypyc ran
(setup.py HOT_MODULES). BLOKIR_DNSTAP_C=0 picks PyEncoder on purpose.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from resolver import native
from resolver.querylog.schema import ENUMS

__all__ = [
    "MODE",
    "EncoderLike",
    "Pieces",
    "PyEncoder",
    "cut_address",
    "new_encoder",
    "pieces",
    "policy_fields",
]


def cut_address(client: str, bits4: int, bits6: int) -> str:
    """`client` with only its first bits4 (IPv4) or bits6 (IPv6) bits kept; "" for 0 bits."""
    family, bits, width = (
        (socket.AF_INET6, bits6, 128) if ":" in client else (socket.AF_INET, bits4, 32)
    )
    if bits >= width:
        return client
    if bits <= 0:
        return ""
    try:
        value = int.from_bytes(socket.inet_pton(family, client))
    except (OSError, ValueError):  # not an address (ValueError: a NUL or non-ASCII in it)
        return ""
    value &= ((1 << bits) - 1) << (width - bits)
    return socket.inet_ntop(family, value.to_bytes(width // 8))


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


class Pieces(NamedTuple):
    """The constant parts of every frame, handed to either encoder."""

    head: bytes  # Dnstap: identity (1), version (2), then the tag of message (14)
    tail: bytes  # Dnstap.type (15) = MESSAGE
    query_type: bytes  # Message.type (1) = CLIENT_QUERY
    response_type: bytes  # Message.type (1) = CLIENT_RESPONSE


def pieces(identity: bytes, version: bytes) -> Pieces:
    return Pieces(
        _field(0x0A, identity) + _field(0x12, version) + _ENVELOPE_MESSAGE,
        b"\x78" + _varint(ENUMS["Dnstap.Type"]["MESSAGE"]),
        b"\x08" + _varint(ENUMS["Message.Type"]["CLIENT_QUERY"]),
        b"\x08" + _varint(ENUMS["Message.Type"]["CLIENT_RESPONSE"]),
    )


def _rule_fields(name: str, category: str, action: str) -> bytes:
    """The Policy message's type (1), rule (2) and action (3); match and value follow per
    record."""
    rule = f"list={name} category={category} action={action}".encode()
    fields = _field(0x0A, b"blokir") + _field(0x12, rule)
    if action in _ACTIONS:
        fields += b"\x18" + _varint(ENUMS["Policy.Action"][_ACTIONS[action]])
    return fields


def policy_fields(table: Sequence[tuple[str, str, str]]) -> tuple[list[bytes], bytes]:
    """Per policy id (entry n-1 for id n) its Policy fields, and those for an unknown id."""
    return [_rule_fields(*row) for row in table], _rule_fields("?", "?", "?")


class EncoderLike(Protocol):
    """resolver.querylog._dnstap.Encoder and PyEncoder, as the worker uses them."""

    limit: int  # records that may wait; new ones past it are dropped (and counted)

    @property
    def count(self) -> int: ...

    @property
    def dropped(self) -> int: ...

    def add(
        self,
        when: float,
        client: str,
        udp: bool,
        query: bytes,
        answer: bytes | None,
        policy_id: int,
        match: int,
        value: bytes,
        /,
    ) -> int: ...

    def set_policies(self, fields: list[bytes], unknown: bytes, /) -> None: ...

    def take(self) -> bytes: ...

    def clear(self) -> int: ...


class PyEncoder:
    """Records -> framed dnstap messages, encoded by hand; resolver/querylog/_dnstap.c in
    Python (the same constructor, methods and bytes).

    Why not the protobuf library: its per-message cost (about 7 us per record for the two
    messages) is CPU taken from answering. The fields are written in field number order, as
    the library writes them, so the bytes are the same (tests/unit/test_querylog.py compares
    them); the constant parts (envelope head and tail, the client's address fields, the
    policy) are built once and reused.

    Privacy: the client address is cut here, before anything leaves the worker: allowed
    queries to bits4/bits6 bits, blocked ones to blocked_bits4/blocked_bits6."""

    def __init__(
        self,
        head: bytes,
        tail: bytes,
        query_type: bytes,
        response_type: bytes,
        bits4: int,
        bits6: int,
        blocked_bits4: int,
        blocked_bits6: int,
        limit: int,
    ) -> None:
        self._head = head
        self._tail = tail
        self._overhead = len(head) + len(tail)  # a frame's envelope, bar the length
        self._query_type = query_type
        self._response_type = response_type
        self.bits = (bits4, bits6)
        self.blocked_bits = (blocked_bits4, blocked_bits6)
        self.limit = limit
        self.count = 0
        self.dropped = 0
        self._parts: list[bytes] = []
        self._policies: list[bytes] = []
        self._unknown = b""
        self._policy_cache: dict[tuple[int, int, bytes], bytes] = {}
        # (client, udp, blocked) -> (CLIENT_QUERY's type and address fields, CLIENT_RESPONSE's)
        self._clients: dict[tuple[str, bool, bool], tuple[bytes, bytes]] = {}
        # The record's whole seconds, and the fields that hold them: query_time_sec (8) with
        # the tag of query_time_nsec (9) after it; the same for the response times (12, 13).
        self._seconds = -1
        self._query_seconds = b""
        self._response_seconds = b""

    def set_policies(self, fields: list[bytes], unknown: bytes) -> None:
        self._policies = list(fields)
        self._unknown = unknown
        self._policy_cache = {}

    def take(self) -> bytes:
        blob = b"".join(self._parts)
        self._parts = []
        self.count = 0
        return blob

    def clear(self) -> int:
        gone = self.count
        self.dropped += gone
        self._parts = []
        self.count = 0
        return gone

    def _policy(self, pid: int, match: int, value: bytes) -> bytes:
        """The Policy message: type, rule, action, then match (4) and value (5)."""
        key = (pid, match, value)
        found = self._policy_cache.get(key)
        if found is None:
            rule = self._policies[pid - 1] if 0 < pid <= len(self._policies) else self._unknown
            found = _field(_POLICY, rule + b"\x20" + _varint(match) + _field(0x2A, value))
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
            packed = b""
            if cut:
                try:
                    family = socket.AF_INET6 if ":" in cut else socket.AF_INET
                    packed = socket.inet_pton(family, cut)
                except (OSError, ValueError):  # not an address (a scoped IPv6 one): none
                    packed = b""
            if packed:
                family_field = b"\x10\x02" if len(packed) == 16 else b"\x10\x01"
                fields = family_field + fields + _field(0x22, packed)
            found = (self._query_type + fields, self._response_type + fields)
            if len(self._clients) > 65536:
                self._clients.clear()
            self._clients[key] = found
        return found

    def add(
        self,
        when: float,
        client: str,
        udp: bool,
        query: bytes,
        answer: bytes | None,
        pid: int,
        match: int,
        value: bytes,
    ) -> int:
        """The record's two frames: CLIENT_QUERY with the query, CLIENT_RESPONSE with the answer
        and, for a blocked query, the policy. Both carry the query time (the response also as
        its response time: the record has one time, when the answer was sent). The records
        waiting after this one; 0 when `limit` already waited and this one was dropped."""
        if self.count >= self.limit:
            self.dropped += 1
            return 0
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
        answer_length = b""
        if answer is not None:
            answer_length = _length(len(answer))
            second += 1 + len(answer_length) + len(answer)
        policy = self._policy(pid, match, value) if pid else b""
        second += len(policy)
        head, tail, overhead = self._head, self._tail, self._overhead
        first_length, second_length = _length(first), _length(second)
        parts = self._parts
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
        self.count += 1
        return self.count


def _load_native() -> tuple[native.Mode, type | None]:
    mode = native.dnstap_mode(os.environ)
    if not mode.compiled:
        return mode, None
    try:
        from resolver.querylog._dnstap import Encoder
    except ImportError as error:
        return native.Mode(False, f"{native.DNSTAP.off} (import failed: {error})"), None
    return mode, Encoder


MODE, _NATIVE = _load_native()


def new_encoder(
    identity: bytes,
    version: bytes,
    bits: tuple[int, int],
    blocked_bits: tuple[int, int],
    limit: int,
) -> EncoderLike:
    """The C encoder where the install built it (and BLOKIR_DNSTAP_C is not 0), else PyEncoder."""
    parts = pieces(identity, version)
    kind = _NATIVE if _NATIVE is not None else PyEncoder
    encoder: EncoderLike = kind(*parts, *bits, *blocked_bits, limit)
    return encoder
