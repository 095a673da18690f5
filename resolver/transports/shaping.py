"""What an encrypted answer gets that a plain one does not.

Padding (RFC 7830, policy RFC 8467 section 4.1): an answer whose query carried EDNS is padded
to a multiple of 468 octets, the block length RFC 8467 recommends for responses, so its size
says little about which name was asked. An answer carries an OPT record exactly when its query
did (RFC 6891 section 7), so the OPT record in the answer is the test. A query without EDNS
cannot be padded (the option lives in the OPT record) and is sent as it is.

Cache-Control (RFC 8484 section 5.1): a DoH answer's freshness lifetime must not exceed the
smallest TTL in its answer and authority sections, nor, for a negative answer, the SOA
MINIMUM (RFC 2308).
"""

from __future__ import annotations

from resolver.cache import with_edns_option
from resolver.dns.constants import MAX_TTL
from resolver.dns.message import ADDITIONAL, ANSWER, negative_ttl, walk
from resolver.dns.names import MessageError

__all__ = ["BLOCK_LENGTH", "OPTION_PADDING", "max_age", "padded"]

OPTION_PADDING = 12  # RFC 7830 section 3
BLOCK_LENGTH = 468  # RFC 8467 section 4.1: responses padded to a multiple of this
TYPE_OPT = 41
MAX_AGE_CAP = 86_400  # a day: what a missing TTL on an odd answer may not turn into
_OPTION_HEADER = 4  # OPTION-CODE, OPTION-LENGTH


def padded(answer: bytes, block: int = BLOCK_LENGTH) -> bytes:
    """`answer` with an RFC 7830 Padding option that brings its length to a multiple of
    `block`, when it has an OPT record; otherwise (or when it does not parse, or would pass
    the 65535 octets a DNS message may have over a stream) unchanged. An answer that already
    carries padding gets no second option."""
    try:
        _, records = walk(answer)
    except MessageError:
        return answer
    for record in records:
        if record.section != ADDITIONAL or record.rtype != TYPE_OPT:
            continue
        if _has_padding(answer, record.rdata_offset, record.rdlength):
            return answer
        fill = -(len(answer) + _OPTION_HEADER) % block
        if len(answer) + _OPTION_HEADER + fill > 0xFFFF:
            return answer
        option = OPTION_PADDING.to_bytes(2, "big") + fill.to_bytes(2, "big") + bytes(fill)
        return with_edns_option(answer, option, 0, False)  # appended to this OPT record
    return answer


def _has_padding(msg: bytes, start: int, length: int) -> bool:
    pos, end = start, start + length
    while pos + _OPTION_HEADER <= end:
        code = int.from_bytes(msg[pos : pos + 2], "big")
        if code == OPTION_PADDING:
            return True
        pos += _OPTION_HEADER + int.from_bytes(msg[pos + 2 : pos + 4], "big")
    return False


def max_age(answer: bytes) -> int:
    """Seconds a DoH answer may be cached by HTTP caches (RFC 8484 5.1): the smallest TTL of
    the answer and authority records, the negative-caching TTL for a negative answer, and 0
    for an answer that does not parse or has neither (SERVFAIL, REFUSED)."""
    try:
        _, records = walk(answer)
        negative = negative_ttl(answer, records)
    except MessageError:
        return 0
    ttls = [r.ttl for r in records if r.section != ADDITIONAL]
    if negative is not None and not any(r.section == ANSWER for r in records):
        ttls.append(negative)
    if not ttls:
        return 0
    return min(min(ttl if ttl <= MAX_TTL else 0 for ttl in ttls), MAX_AGE_CAP)
