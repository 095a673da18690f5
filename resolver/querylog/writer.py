"""`python -m resolver.querylog.writer SETTINGS`: the process that turns a worker's query records
into dnstap and writes them to the sink.

Why a process of its own: encoding two dnstap messages costs a microsecond or two, about as
much as answering a query, and a thread in the worker would take that time from the query path
(one interpreter lock). The worker appends a tuple per logged query and, every
few hundred, writes the batch to this process's stdin with `marshal` (resolver/querylog/client.py).

Input: a stream of batches, each a 32-bit big-endian length and a `marshal`ed list of records:
`("P", [(list, category, action), ...])` sets the policy table (policy id n is entry n-1; sent
again after each reload), and `(time, client, udp, query, answer, pid, match, value)` is one
logged query (pid 0: allowed; match 1: QNAME, 3: RESPONSE_IP; value: what triggered it).

Each record becomes a CLIENT_QUERY and a CLIENT_RESPONSE message, the latter with the policy;
the client address is cut here (Encoder), before the sink sees it.
Backpressure instead of drops here: while the sink is down, this process stops reading once
`queue` records wait, the pipe fills, and the worker drops and counts (the only place that
counts, so `blokir_querylog_dropped_total` is complete). The sink is reopened with backoff.
Exits when stdin closes, after finishing the stream (STOP, and FINISH from a receiver).
"""

from __future__ import annotations

import json
import logging
import marshal
import queue
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from resolver.querylog.client import cut_address
from resolver.querylog.schema import CONTENT_TYPE, ENUMS
from resolver.querylog.sinks import make_sink

log = logging.getLogger("blokir.querylog")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
SHUTDOWN_GRACE = 3.0  # seconds of retries after the worker closed its end (QueryLog.close waits 5)
MAX_BATCH_BYTES = 64 << 20
_U32 = struct.Struct(">I")
_STOP = object()

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
        self._clients: dict[tuple[str, bool, bool], bytes] = {}
        self._seconds = -1
        self._seconds_varint = b""
        # Dnstap: identity (1), version (2), then message (14) and type (15) = MESSAGE.
        self._head = _field(0x0A, identity) + _field(0x12, version)
        self._tail = b"\x78" + _varint(ENUMS["Dnstap.Type"]["MESSAGE"])
        self._query_type = b"\x08" + _varint(ENUMS["Message.Type"]["CLIENT_QUERY"])
        self._response_type = b"\x08" + _varint(ENUMS["Message.Type"]["CLIENT_RESPONSE"])

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

    def _client(self, client: str, udp: bool, blocked: bool) -> bytes:
        """socket_family (2), socket_protocol (3) and query_address (4), the address cut."""
        key = (client, udp, blocked)
        found = self._clients.get(key)
        if found is None:
            bits4, bits6 = self.blocked_bits if blocked else self.bits
            cut = cut_address(client, bits4, bits6) if client else ""
            found = b"\x18" + (b"\x01" if udp else b"\x02")
            if cut:
                packed = socket.inet_pton(socket.AF_INET6 if ":" in cut else socket.AF_INET, cut)
                family = b"\x10\x02" if len(packed) == 16 else b"\x10\x01"
                found = family + found + _field(0x22, packed)
            if len(self._clients) > 65536:
                self._clients.clear()
            self._clients[key] = found
        return found

    def encode(self, record: tuple[Any, ...]) -> bytes:
        """Two framed messages: CLIENT_QUERY with the query, CLIENT_RESPONSE with the answer
        and, for a blocked query, the policy. Both carry the query time (the response also as
        its response time: the record has one time, when the answer was sent)."""
        when, client, udp, query, answer, pid, match, value = record
        seconds = int(when)
        if seconds != self._seconds:  # one varint per second of records, not per record
            self._seconds, self._seconds_varint = seconds, _varint(seconds)
        sec = self._seconds_varint
        nsec = _FIXED32.pack(int((when - seconds) * 1e9))
        address = self._client(client, udp, pid != 0)
        first = b"".join(
            (
                self._query_type,
                address,
                _QUERY_TIME_SEC,
                sec,
                _QUERY_TIME_NSEC,
                nsec,
                _QUERY_MESSAGE,
                _length(len(query)),
                query,
            )
        )
        parts = [
            self._response_type,
            address,
            _QUERY_TIME_SEC,
            sec,
            _QUERY_TIME_NSEC,
            nsec,
            _RESPONSE_TIME_SEC,
            sec,
            _RESPONSE_TIME_NSEC,
            nsec,
        ]
        if answer is not None:
            parts += (_RESPONSE_MESSAGE, _length(len(answer)), answer)
        if pid:
            parts.append(self._policy(pid, match, value))
        second = b"".join(parts)
        head, tail = self._head, self._tail
        first_length, second_length = _length(len(first)), _length(len(second))
        overhead = len(head) + 1 + len(tail)
        return b"".join(
            (
                _FRAME.pack(overhead + len(first_length) + len(first)),
                head,
                _ENVELOPE_MESSAGE,
                first_length,
                first,
                tail,
                _FRAME.pack(overhead + len(second_length) + len(second)),
                head,
                _ENVELOPE_MESSAGE,
                second_length,
                second,
                tail,
            )
        )


def read_batches(stream: BinaryIO, put: Callable[[object], None]) -> None:
    """Reader thread: batches from the worker onto the bounded queue (put blocks when full)."""
    while True:
        head = stream.read(4)
        if len(head) < 4:
            break
        size = _U32.unpack(head)[0]
        if size > MAX_BATCH_BYTES:
            log.error("querylog: a batch of %d bytes from the worker; stopping", size)
            break
        blob = stream.read(size)
        if len(blob) < size:
            break
        put(marshal.loads(blob))
    put(_STOP)


def run(settings: dict[str, Any], stream: BinaryIO) -> int:
    encoder = Encoder(
        settings["identity"].encode(),
        settings["version"].encode(),
        (int(settings["bits"][0]), int(settings["bits"][1])),
        (int(settings["blocked_bits"][0]), int(settings["blocked_bits"][1])),
    )
    sink = make_sink(
        settings["sink"], CONTENT_TYPE, int(settings["max_bytes"]), int(settings["keep"])
    )
    # Batches of up to a few hundred records each: the bound in records, divided.
    waiting: queue.Queue[object] = queue.Queue(maxsize=max(2, int(settings["queue"]) // 256))
    reader = threading.Thread(target=read_batches, args=(stream, waiting.put), daemon=True)
    reader.start()
    backoff = BACKOFF_FIRST
    given_up: float | None = None  # when to stop retrying once the worker has stopped
    while True:
        batch = waiting.get()
        if batch is _STOP:
            break
        assert isinstance(batch, list)
        frames = []
        for record in batch:
            if record[0] == "P":
                encoder.set_policies(record[1])
            else:
                frames.append(encoder.encode(record))
        blob = b"".join(frames)
        while blob:
            try:
                sink.write(blob)
                backoff = BACKOFF_FIRST
                break
            except OSError as exc:
                if not reader.is_alive():
                    # The worker is stopping: retry for a short grace only, then what waits
                    # is lost (the worker does not wait for this process much longer).
                    if given_up is None:
                        given_up = time.monotonic() + SHUTDOWN_GRACE
                    if time.monotonic() > given_up:
                        log.warning("querylog: %s; stopping with records unsent", exc)
                        return 0
                    backoff = min(backoff, BACKOFF_FIRST)
                log.warning("querylog: %s; retrying in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
    try:
        sink.close()
    except OSError as exc:
        log.warning("querylog: closing the sink: %s", exc)
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s blokir[%(process)d] %(message)s")
    return run(json.loads(sys.argv[1]), sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main())
