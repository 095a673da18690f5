"""What a worker's query log holds before any writer runs: the encoder's frames, decoded with
the protobuf classes of dnstap.proto, one Logged per query (its CLIENT_QUERY and
CLIENT_RESPONSE messages joined)."""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from resolver.querylog import framestream as fs
from resolver.querylog.client import QueryLog
from resolver.querylog.schema import message_classes


class Logged(NamedTuple):
    time: float
    client: str  # as written: cut per the privacy settings; "" when none was written
    udp: bool
    query: bytes
    answer: bytes | None
    rule: bytes  # the policy's rule text; b"" for an allowed query
    match: int
    value: bytes


def decode(frames: bytes) -> list[Logged]:
    dnstap, _, _ = message_classes()
    messages: list[Any] = [dnstap.FromString(f).message for f in fs.FrameReader().feed(frames)]
    assert len(messages) % 2 == 0
    logged = []
    for query, response in zip(messages[::2], messages[1::2], strict=True):
        assert (query.type, response.type) == (5, 6)  # CLIENT_QUERY, CLIENT_RESPONSE
        address = query.query_address
        logged.append(
            Logged(
                query.query_time_sec + query.query_time_nsec / 1e9,
                str(ipaddress.ip_address(address)) if address else "",
                query.socket_protocol == 1,
                query.query_message,
                response.response_message if response.HasField("response_message") else None,
                response.policy.rule if response.HasField("policy") else b"",
                response.policy.match,
                response.policy.value,
            )
        )
    return logged


def drain(qlog: QueryLog) -> list[Logged]:
    """The records waiting in `qlog` (taken: the next drain returns only newer ones)."""
    return decode(qlog.encoder.take())
