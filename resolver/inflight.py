"""Upstream queries in flight: one per question (coalescing) and a bounded number in all.

A random-subdomain flood ("water torture": unique names under one victim domain, each a cache
miss) would otherwise open one upstream query per packet, and a slow or dead victim zone would
keep them all waiting for the full timeout: sockets, memory and upstream capacity all go to the
attacker. Two caps bound that (in the spirit of Unbound's per-zone `ratelimit`, but counting
open queries rather than a rate: a zone that answers in 10 ms gets 100 open queries' worth of
10,000 queries/s before its cap bites, a zone that does not answer gets 100 and no more):

* `max_total`: upstream queries open at once in this worker;
* `max_per_zone`: of those, how many may be under one zone (see `zone_of`).

A query that would go over a cap is not sent; the caller answers it from stale cache data or
with SERVFAIL. Identical questions that miss the cache at the same time share the first one's
upstream query (as Unbound's mesh joins identical queries): a name that becomes popular the
moment its TTL runs out costs one upstream query, not one per client.

The table is single-threaded (one event loop per worker) and never blocks; callers keep the
`asyncio.Task` it holds for each question (see `Resolver.forward`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["SHORT_SECOND_LEVEL_LABELS", "InflightTable", "zone_of"]

# Second-level labels under which registrations commonly sit one level deeper ("co.id",
# "co.uk", "com.au", "ac.id" ...). Indonesia's registry uses ac, biz, co, desa, go, mil, my,
# net, or, ponpes, sch and web under .id; the others are the usual generic ones elsewhere.
SHORT_SECOND_LEVEL_LABELS = frozenset(
    b"ac biz co com desa edu go gob gov mil my ne net or org ponpes sch web".split()
)

_T = TypeVar("_T")
_K = TypeVar("_K", bound=Hashable)


def zone_of(qname: bytes) -> bytes:
    """The zone a lower-case dotted name is capped under: its last two labels, or three when
    the second-level label is one of `SHORT_SECOND_LEVEL_LABELS` ("a.b.example.co.id" ->
    "example.co.id", "x.y.example.com" -> "example.com").

    A heuristic, not the Public Suffix List: it is meant only to keep one flooded domain from
    taking every upstream slot. It groups too much where a suffix it does not know hosts many
    registrants (all of "*.github.io" is one zone, so they share one cap), and too little
    where a real domain is named like a suffix ("*.co.example" becomes many zones). Both cost
    only a little sharing or a little less protection, never a wrong answer."""
    end = len(qname)
    second = qname.rfind(b".")
    if second <= 0:
        return qname
    first = qname.rfind(b".", 0, second)
    if first < 0:
        return qname
    if qname[first + 1 : second] in SHORT_SECOND_LEVEL_LABELS:
        third = qname.rfind(b".", 0, first)
        return qname[third + 1 : end]
    return qname[first + 1 : end]


class InflightTable(Generic[_K, _T]):
    """Open upstream queries by question key, counted per zone and in total.

    `find(key)` gives the open task for the same question (to wait on it, `coalesced` counts
    those); `over_cap(zone)` says whether a new one may start ("total", "zone" or None, and
    counts the refusal); `add` registers a started task and `remove` must follow when it ends.
    `peak` is the largest number open at once since the start."""

    def __init__(self, max_total: int, max_per_zone: int) -> None:
        if max_total < 1 or max_per_zone < 1:
            raise ValueError("in-flight caps must be >= 1")
        self.max_total = max_total
        self.max_per_zone = max_per_zone
        self._open: dict[_K, asyncio.Task[_T]] = {}
        self._per_zone: dict[bytes, int] = {}
        self.peak = 0
        self.coalesced = 0
        self.rejected_total = 0
        self.rejected_zone = 0

    def __len__(self) -> int:
        return len(self._open)

    def zone_count(self, zone: bytes) -> int:
        return self._per_zone.get(zone, 0)

    def is_open(self, key: _K) -> bool:
        """Whether a query for `key` is open (not counted as coalescing, unlike `find`)."""
        return key in self._open

    def find(self, key: _K) -> asyncio.Task[_T] | None:
        task = self._open.get(key)
        if task is not None:
            self.coalesced += 1
        return task

    def over_cap(self, zone: bytes) -> str | None:
        """ "total" or "zone" when a new query would go over that cap, else None."""
        if len(self._open) >= self.max_total:
            self.rejected_total += 1
            return "total"
        if self._per_zone.get(zone, 0) >= self.max_per_zone:
            self.rejected_zone += 1
            return "zone"
        return None

    def add(self, key: _K, zone: bytes, task: asyncio.Task[_T]) -> None:
        if key in self._open:
            raise KeyError("a query for this question is already open")
        self._open[key] = task
        self._per_zone[zone] = self._per_zone.get(zone, 0) + 1
        if len(self._open) > self.peak:
            self.peak = len(self._open)

    def remove(self, key: _K, zone: bytes) -> None:
        del self._open[key]
        left = self._per_zone[zone] - 1
        if left:
            self._per_zone[zone] = left
        else:
            del self._per_zone[zone]  # keeps the table as small as what is open
