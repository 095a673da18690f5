"""A bounded TTL cache of upstream responses in wire format.

Entries are stored as the upstream sent them, with the offset and original value of every TTL
field, so a hit hands back bytes without parsing anything: a dict lookup, an LRU touch and, at
most once per entry per second, a rewrite of the TTL fields to what is left of them (RFC 1035
section 3.2.1 / RFC 2181 section 8: TTLs count down while cached). The caller patches the ID
and the question's case; those bytes are left alone here.

How long an entry lives:

* NOERROR with answers: the smallest TTL in the answer and authority sections, clamped to
  [min_ttl, max_ttl].
* NXDOMAIN, or NOERROR without answers (NODATA): min(SOA TTL, SOA MINIMUM) of the authority
  SOA (RFC 2308 section 5), and no longer than any answer record (the CNAME chain that led to
  the negative answer), capped at negative_ttl_max. Without an SOA it is not cached: RFC 2308
  section 5 says such answers SHOULD NOT be cached.
* SERVFAIL: servfail_ttl (RFC 2308 section 7.1 allows up to five minutes; 0 turns it off).
* Anything else (other RCODEs, TC=1, not a response, opcode other than QUERY, extended RCODE in
  OPT, TSIG-signed, malformed) is not cached. A lifetime of 0 means "do not cache".

Serve-stale (RFC 8767): with `max_stale` > 0 an expired entry is not dropped when `get` finds
it; it stays (still counted against both bounds, still in LRU order, so a flood of unique names
evicts it like any other entry) until `max_stale` seconds past its expiry. `get_stale` hands it
back with every TTL set to the stale answer TTL (RFC 8767 section 4), for the caller to use only
when the upstreams could not answer. A cached SERVFAIL is never served stale.

The clock is injectable (tests use a fake one); it must not go backwards.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, NamedTuple

from resolver.dns.constants import (
    HEADER_SIZE,
    MAX_TTL,
    NOERROR,
    NXDOMAIN,
    OPCODE_MASK,
    QR,
    SERVFAIL,
    TC,
    TYPE_OPT,
    TYPE_TSIG,
)
from resolver.dns.message import ADDITIONAL, ANSWER, negative_ttl, walk
from resolver.dns.names import MessageError
from resolver.dns.response import opt_record

__all__ = [
    "ENTRY_OVERHEAD",
    "CacheKey",
    "CacheLimits",
    "ResponseCache",
    "with_edns_option",
]

# (lower-case dotted qname, qtype, qclass, flags); flags packs DO and CD, built by the caller.
CacheKey = tuple[bytes, int, int, int]

# Bytes charged per entry on top of len(response), so that max_bytes bounds memory rather than
# payload alone. Measured with tracemalloc on CPython 3.11 (64-bit), qname of 34 characters:
# the whole entry (key tuple and qname, the entry object, its floats, the TTL tuples, the
# OrderedDict slot and link, the bytes object header) costs about 550 bytes beyond the payload
# with one TTL field, 590 with two, 680 with four, 860 with eight (about 45 per field). 640
# covers the common one-to-four-record answer. Not charged: the per-second rewritten copy,
# len(response) + 33 more for an entry that is hit after its first second.
ENTRY_OVERHEAD = 640

# The header flags in the third header byte, the high half of the flags word.
_QR: Final = QR >> 8
_OPCODE: Final = OPCODE_MASK >> 8
_TC: Final = TC >> 8

_pack_u32_into = struct.Struct("!I").pack_into


class _Entry:
    """One cached response. `wire` is the copy with TTLs as of the whole second that ends at
    `fresh_until`; `fresh_until` never passes `expires_at`, so one comparison serves a hit."""

    __slots__ = (
        "expires_at",
        "fresh_until",
        "offsets",
        "response",
        "size",
        "stored_at",
        "ttls",
        "wire",
    )

    def __init__(
        self,
        response: bytes,
        offsets: tuple[int, ...],
        ttls: tuple[int, ...],
        stored_at: float,
        lifetime: int,
        size: int,
    ) -> None:
        self.response = response
        self.offsets = offsets  # of every TTL field but OPT's
        self.ttls = ttls  # their original values; two flat tuples are smaller than pairs
        self.stored_at = stored_at
        self.expires_at = stored_at + lifetime
        self.fresh_until = min(stored_at + 1.0, self.expires_at)
        self.wire = response
        self.size = size


class CacheLimits(NamedTuple):
    """The bounds and TTL clamps of a ResponseCache (see the module docstring for each)."""

    max_entries: int
    max_bytes: int
    min_ttl: int
    max_ttl: int
    negative_ttl_max: int
    servfail_ttl: int
    max_stale: int = 0  # seconds past expiry an entry is kept for get_stale; 0 = off


class ResponseCache:
    """An LRU-bounded TTL cache of wire responses. Counters are plain ints for the metrics
    code: `hits`, `misses`, `evictions` (LRU), `expired` (dropped by `get` once past expiry
    plus `max_stale`), `inserts`, `stale_hits` (answers from `get_stale`); `bytes_used` is the
    charged size of every entry, see `ENTRY_OVERHEAD`. `max_stale` (seconds, 0 = off) is how
    long past its expiry an entry is kept for `get_stale`."""

    def __init__(self, limits: CacheLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self.bytes_used = 0
        self.set_limits(limits)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0
        self.inserts = 0
        self.stale_hits = 0

    def set_limits(self, limits: CacheLimits) -> None:
        """The bounds and TTL clamps (at start, and when a reload changes `[cache]`). Entries
        over new, smaller bounds are evicted at once, oldest first; stored entries keep the
        lifetime they were given, and new clamps apply from the next answer stored."""
        if min(limits) < 0:
            raise ValueError("cache limits and TTLs must not be negative")
        if limits.max_ttl < limits.min_ttl:
            raise ValueError(f"max_ttl ({limits.max_ttl}) must be >= min_ttl ({limits.min_ttl})")
        (
            self.max_entries,
            self.max_bytes,
            self.min_ttl,
            self.max_ttl,
            self.negative_ttl_max,
            self.servfail_ttl,
            self.max_stale,
        ) = limits
        self._evict_over_bounds()

    def __len__(self) -> int:
        return len(self._entries)

    # -- hot path ----------------------------------------------------------------------------

    def get(self, key: CacheKey) -> bytes | None:
        """The cached response with every TTL counted down by the whole seconds since it was
        stored, or None if absent or expired. Hits within one second return the same object."""
        entry = self._entries.get(key)
        if entry is not None:
            now = self._clock()
            if now < entry.fresh_until:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.wire
            return self._get_rewritten(key, entry, now)
        self.misses += 1
        return None

    def get_fresh(self, key: CacheKey) -> tuple[bytes, float] | None:
        """`get`, plus the clock time until which the returned bytes stay exact (the next
        whole-second TTL step or expiry): callers may reuse the bytes until then."""
        wire = self.get(key)
        if wire is None:
            return None
        return wire, self._entries[key].fresh_until

    def renew(self, key: CacheKey) -> tuple[bytes, float] | None:
        """`get_fresh` for a caller that remembered an earlier answer from this entry and, on
        None, takes the path that calls `get_fresh`: so a miss is not counted here."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now < entry.fresh_until:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.wire, entry.fresh_until
        if now >= entry.expires_at:
            return None
        return self._rewrite(key, entry, now), entry.fresh_until

    def _get_rewritten(self, key: CacheKey, entry: _Entry, now: float) -> bytes | None:
        if now >= entry.expires_at:
            if now >= entry.expires_at + self.max_stale:
                self._remove(key, entry)
                self.expired += 1
            # else: kept for get_stale, without an LRU touch (a miss is not a use)
            self.misses += 1
            return None
        return self._rewrite(key, entry, now)

    def _rewrite(self, key: CacheKey, entry: _Entry, now: float) -> bytes:
        """A hit on a live entry whose TTL fields are due their next whole-second step."""
        seconds = int(now - entry.stored_at)
        buf = bytearray(entry.response)
        # Once per entry per second on the hot path: zip without strict= (any keyword costs
        # ~0.12 us in CPython 3.11; offsets and ttls are built in one loop by _lifetime) and no
        # min() call, each a measurable share of it.
        for offset, ttl in zip(entry.offsets, entry.ttls):  # noqa: B905
            _pack_u32_into(buf, offset, ttl - seconds if ttl > seconds else 0)
        entry.wire = bytes(buf)
        fresh_until = entry.stored_at + seconds + 1
        expires_at = entry.expires_at
        entry.fresh_until = fresh_until if fresh_until < expires_at else expires_at
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.wire

    def get_stale(self, key: CacheKey, answer_ttl: int) -> bytes | None:
        """The expired entry under `key` with every TTL set to `answer_ttl`, if it expired less
        than `max_stale` seconds ago and is not a SERVFAIL (RFC 8767 section 4); else None.
        For when the upstreams failed: a fresh entry is `get`'s business and gives None here."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if not entry.expires_at <= now < entry.expires_at + self.max_stale:
            return None
        if entry.response[3] & 0x0F == SERVFAIL:
            return None
        buf = bytearray(entry.response)
        for offset in entry.offsets:
            _pack_u32_into(buf, offset, answer_ttl)
        self._entries.move_to_end(key)  # in use again: keep it over entries nobody asks for
        self.stale_hits += 1
        return bytes(buf)

    # -- filling -----------------------------------------------------------------------------

    def put(self, key: CacheKey, response: bytes) -> bool:
        """Stores `response` under `key` if it may be cached (see the module docstring);
        returns whether it did. A stored entry replaces any older one under the same key."""
        if self.max_entries == 0:
            return False
        size = len(response) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return False
        lifetime, offsets, ttls = self._lifetime(response)
        if lifetime <= 0:
            return False
        if any(value > MAX_TTL for value in ttls):
            # RFC 2181 section 8: a TTL with the top bit set means zero; send it out as zero.
            buf = bytearray(response)
            for offset, value in zip(offsets, ttls, strict=True):
                if value > MAX_TTL:
                    _pack_u32_into(buf, offset, 0)
            response = bytes(buf)
            ttls = tuple(value if value <= MAX_TTL else 0 for value in ttls)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes_used -= old.size
        self._entries[key] = _Entry(response, offsets, ttls, self._clock(), lifetime, size)
        self.bytes_used += size
        self.inserts += 1
        self._evict_over_bounds()
        return True

    def _evict_over_bounds(self) -> None:
        entries = self._entries
        while entries and (len(entries) > self.max_entries or self.bytes_used > self.max_bytes):
            _, evicted = entries.popitem(last=False)
            self.bytes_used -= evicted.size
            self.evictions += 1

    def _lifetime(self, response: bytes) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        """Seconds `response` may be cached (0: not at all), and the offsets and values of its
        TTL fields."""
        if len(response) < HEADER_SIZE:
            return 0, (), ()
        flags = response[2]
        if not flags & _QR or flags & (_OPCODE | _TC):
            return 0, (), ()
        try:
            _, records = walk(response)
        except MessageError:
            return 0, (), ()
        offsets: list[int] = []
        ttls: list[int] = []
        positive_min: int | None = None  # over the answer and authority sections
        answer_min: int | None = None
        for record in records:
            rtype = record.rtype
            if rtype == TYPE_OPT:
                if record.ttl >> 24:  # upper eight bits of the RCODE (RFC 6891 6.1.3)
                    return 0, (), ()
                continue
            if rtype == TYPE_TSIG:
                return 0, (), ()
            ttl = record.ttl if record.ttl <= MAX_TTL else 0
            offsets.append(record.ttl_offset)
            ttls.append(record.ttl)
            if record.section == ANSWER:
                answer_min = ttl if answer_min is None else min(answer_min, ttl)
            if record.section != ADDITIONAL and (positive_min is None or ttl < positive_min):
                positive_min = ttl
        rcode = response[3] & 0x0F
        ancount = response[6] << 8 | response[7]
        if rcode == NOERROR and ancount:
            assert positive_min is not None  # ancount > 0 and walk found that many records
            lifetime = min(max(positive_min, self.min_ttl), self.max_ttl)
        elif rcode in (NXDOMAIN, NOERROR):
            try:
                negative = negative_ttl(response, records)
            except MessageError:
                return 0, (), ()
            if negative is None:
                return 0, (), ()
            if answer_min is not None:
                negative = min(negative, answer_min)
            lifetime = min(negative, self.negative_ttl_max)
        elif rcode == SERVFAIL:
            lifetime = self.servfail_ttl
        else:
            return 0, (), ()
        return lifetime, tuple(offsets), tuple(ttls)

    # -- housekeeping ------------------------------------------------------------------------

    def _remove(self, key: CacheKey, entry: _Entry) -> None:
        del self._entries[key]
        self.bytes_used -= entry.size

    def discard(self, key: CacheKey) -> None:
        """Forget one answer (an alias that a reloaded list now blocks, see Resolver)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._remove(key, entry)

    def clear(self) -> None:
        """Drops every entry (for example after the blocklists change); counters are kept."""
        self._entries.clear()
        self.bytes_used = 0


def with_edns_option(response: bytes, option: bytes, payload: int, do: bool) -> bytes:
    """`response` with one more EDNS option (for example an RFC 8914 EDE): appended to the OPT
    record's RDATA if it has one, else in a new OPT record (RFC 6891 6.1.2) at the end of the
    additional section. Raises MessageError if the response does not parse."""
    _, records = walk(response)
    for record in records:
        if record.rtype == TYPE_OPT:
            end = record.rdata_offset + record.rdlength
            rdlength = record.rdlength + len(option)
            if rdlength > 0xFFFF:
                raise MessageError("the OPT record would outgrow its 16-bit RDLENGTH")
            return (
                response[: record.rdata_offset - 2]
                + rdlength.to_bytes(2, "big")
                + response[record.rdata_offset : end]
                + option
                + response[end:]
            )
    arcount = (response[10] << 8 | response[11]) + 1
    if arcount > 0xFFFF:
        raise MessageError("the additional section is full")
    return (
        response[:10]
        + arcount.to_bytes(2, "big")
        + response[12:]
        + opt_record(payload, do, 0, option)
    )
