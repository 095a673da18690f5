"""Response-IP triggers on the query path: the addresses an upstream answer holds, and whether
an IP list blocks one of them (docs/ip-triggers.md).

Every A and AAAA record of the answer section counts, whatever its owner: in a CNAME chain the
addresses belong to the chain's last name, and the client connects to them all the same. An
address an IP allowlist covers (the longest listed prefix is an allow) is exempt; the answer is
blocked when any other address is covered by a blocking list. Only upstream answers are looked
at (blocked and cached answers never are), and only when the index has IP triggers at all.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

from resolver.dns.constants import TYPE_A, TYPE_AAAA
from resolver.dns.message import ANSWER, walk
from resolver.dns.names import MessageError

ADDRESS_CHECK_MAX = 64  # addresses checked per answer: round-robin sets are rarely larger


def answer_addresses(msg: bytes) -> tuple[bytes, ...]:
    """The RDATA of the answer section's A (4 bytes) and AAAA (16 bytes) records, in message
    order; records of the wrong length are skipped, a message that does not parse has none."""
    found: list[bytes] = []
    try:
        records = walk(msg)[1]
    except MessageError:
        return ()
    for record in records:
        if record.section != ANSWER:
            break
        rtype, length = record.rtype, record.rdlength
        if (rtype == TYPE_A and length == 4) or (rtype == TYPE_AAAA and length == 16):
            found.append(msg[record.rdata_offset : record.rdata_offset + length])
            if len(found) >= ADDRESS_CHECK_MAX:
                break
    return tuple(found)


def blocked_address(
    match_packed: Callable[[bytes], int], is_block: Sequence[bool], addresses: Sequence[bytes]
) -> tuple[int, bytes] | None:
    """(policy id, address) of the first address a blocking IP list covers, or None."""
    for packed in addresses:
        pid = match_packed(packed)
        if pid and is_block[pid]:
            return pid, packed
    return None


def address_text(packed: bytes) -> bytes:
    """`192.0.2.1` / `2001:db8::1` as ASCII bytes: the trigger in metrics and the query log."""
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed).encode("ascii")
