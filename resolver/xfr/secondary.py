"""blokir as a secondary: take an RPZ zone by AXFR, then IXFR, and keep the last good copy.

A list whose `path` is `axfr://HOST:PORT/ZONE.` is one `Secondary`. Like a URL list
(resolver/sources.py) it has two files in `[updates] state_dir`:

    <state_dir>/<name>.list      the last good transfer, written as an RPZ zone file that the
                                 ordinary RPZ parser (resolver/lists/rpz.py) compiles
    <state_dir>/<name>.xfr.json  its XfrState: zone, serial, SOA timers, last transfer and result

A refresh follows what a secondary name server does (RFC 1034 section 4.3.5, RFC 1996):

1. With a copy, ask the primary for its SOA. The same serial: nothing to do. An older serial
   (RFC 1982 serial arithmetic): reported, and the copy keeps serving.
2. Newer: IXFR (RFC 1995) from our serial, merged into the copy on disk. A primary that cannot
   do IXFR answers an error rcode, or the whole zone AXFR-style (RFC 1995 section 4): the first
   is retried as AXFR, the second is taken as the full replacement it is. An IXFR that does not
   fit the copy (it deletes a record the copy lacks) is retried as AXFR too.
3. Without a copy, or after that fallback: AXFR (RFC 5936).

Transfers are signed with the list's TSIG key (RFC 8945) when it has one, and dnspython rejects
an answer that is not signed with it. Nothing is renamed over the copy before the final SOA has
arrived and every check has passed, so a stream cut short, a bad signature, garbage on the wire
or a serial that goes backwards leave the copy (and so the serving index) as they were; the
failure is kept for `blokir status`.

No zone is held in memory: a transfer is read message by message (resolver/xfr/stream.py) and
written line by line into a new copy, an IXFR's difference merged into the old copy as it is
read (resolver/xfr/zonefile.py). Memory is one message and the IXFR's difference, whatever the
size of the zone. Timers: the zone's SOA refresh (retry after a failure), or the list's
`refresh` when set; a NOTIFY from the primary makes it due at once.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.serial
import dns.tsig
import dns.xfr

from resolver.sources import source_paths, write_json
from resolver.xfr.source import TsigKey, XfrSource
from resolver.xfr.stream import CopyTransfer, CopyWriteError, receive
from resolver.xfr.zonefile import CopyWriter, DiffMismatch, copy_serial, merge

__all__ = [
    "AXFR",
    "IXFR",
    "Secondaries",
    "Secondary",
    "TransferResult",
    "XfrState",
    "keyring_of",
]

log = logging.getLogger("blokir")

AXFR = "AXFR"
IXFR = "IXFR"
SOA_CHECK = "SOA"  # a refresh that only asked for the SOA: the copy was current
UPDATED = "updated"
NOT_MODIFIED = "not_modified"
FAILED = "failed"
MIN_INTERVAL = 1.0  # seconds: an SOA refresh of 0 must not make the reloader spin
NO_SOA_RETRY = 60.0  # seconds between tries while no transfer ever worked (no SOA timers yet)
# A whole transfer may take this many `timeout`s (each read: one), and more as data keeps
# arriving (resolver/xfr/stream.py MIN_RATE): a 10M-name AXFR takes half an hour.
LIFETIME_FACTOR = 10
# Reasons an IXFR failed for which an AXFR may work: an error rcode (RFC 1995 section 4, a
# primary without IXFR) or an IXFR answer that does not fit our version. A bad signature, a
# network failure or a serial going backwards would fail the AXFR the same way.
_FALLBACK_PREFIXES = ("rcode_", "bad_data", "ixfr_mismatch")


@dataclass(slots=True)
class XfrState:
    """What is known about one zone-transfer list's copy, persisted as `<name>.xfr.json`."""

    url: str
    path: str  # the copy: <state_dir>/<name>.list
    serial: int | None = None  # of the copy
    kind: str = ""  # AXFR | IXFR: how the copy was last changed
    size: int = 0
    sha256: str = ""
    transferred_at: float = 0.0  # when the copy last changed
    checked_at: float = 0.0  # last attempt, successful or not
    refresh: float = 0.0  # the copy's SOA timers (RFC 1035 section 3.3.13)
    retry: float = 0.0
    expire: float = 0.0
    last_result: str = ""  # updated | not_modified | a failure key
    last_kind: str = ""  # AXFR | IXFR | SOA: what the last attempt did
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class TransferResult:
    outcome: str  # updated | not_modified | failed
    # "" on success, else: timeout, network, truncated, tsig, serial_backwards, bad_data,
    # rcode_<NAME>, io
    reason: str
    detail: str
    kind: str  # AXFR | IXFR | SOA


class _Failure(Exception):
    def __init__(self, reason: str, detail: str, kind: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.kind = kind


def keyring_of(keys: Iterable[TsigKey]) -> dict[dns.name.Name, dns.tsig.Key]:
    """A dnspython keyring of these keys (by name)."""
    return {
        dns.name.from_text(key.name): dns.tsig.Key(key.name, key.secret_bytes(), key.algorithm)
        for key in keys
    }


class Secondary:
    """One `axfr://` list: its state file, the zone held for IXFR, its timers."""

    def __init__(
        self, name: str, source: XfrSource, state_dir: Path, refresh: float | None = None
    ) -> None:
        self.name = name
        self.source = source
        self.refresh_override = refresh
        self.copy, plain_state = source_paths(state_dir, name)
        self.state_file = plain_state.with_suffix(".xfr.json")
        self.origin = dns.name.from_text(source.zone)
        self.state = self._load_state() or XfrState(url=source.url, path=str(self.copy))
        self.counts: dict[str, int] = {}  # "AXFR updated" -> n, since start (metrics)
        self._notified = False
        self._check_now = True  # after a start, ask the primary once serving has begun
        self._lock = threading.Lock()

    # -- timers ---------------------------------------------------------------------------

    def has_copy(self) -> bool:
        return self.state.serial is not None and self.copy.is_file()

    def notify(self) -> None:
        """A NOTIFY (RFC 1996) for this zone: check the primary at the next chance."""
        with self._lock:
            self._notified = True

    def due(self, now: float) -> bool:
        with self._lock:
            if self._notified or self._check_now:
                return True
        return now - self.state.checked_at >= self.interval()

    def interval(self) -> float:
        """Seconds between checks: SOA refresh, or SOA retry while failing (RFC 1034 4.3.5)."""
        failing = self.state.last_result not in ("", UPDATED, NOT_MODIFIED)
        if failing:
            seconds = self.state.retry or self.refresh_override or NO_SOA_RETRY
        else:
            seconds = self.refresh_override or self.state.refresh or NO_SOA_RETRY
        return max(seconds, MIN_INTERVAL)

    # -- one refresh ----------------------------------------------------------------------

    def transfer(self, timeout: float) -> TransferResult:
        """Bring the copy up to date with the primary; never damage the last good copy."""
        with self._lock:
            self._notified = False
            self._check_now = False
        try:
            result = self._refresh(timeout)
        except _Failure as exc:
            result = TransferResult(FAILED, exc.reason, exc.detail, exc.kind)
        self.state.checked_at = time.time()
        self.state.last_result = result.reason or result.outcome
        self.state.last_kind = result.kind
        self.state.last_error = result.detail if result.outcome == FAILED else ""
        key = f"{result.kind} {result.reason or result.outcome}"
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            write_json(self.state_file, self.state.to_json())
        except OSError as exc:
            log.error("list %s: cannot write %s: %s", self.name, self.state_file, exc)
        return result

    def _refresh(self, timeout: float) -> TransferResult:
        # The copy's serial: even when it cannot be read back for IXFR, nothing older replaces it.
        ours = self.state.serial if self.has_copy() else None
        if ours is not None:
            theirs = self._primary_serial(timeout)
            if theirs == ours:
                return TransferResult(
                    NOT_MODIFIED, "", f"{self.source.url}: serial {ours} is current", SOA_CHECK
                )
            if not dns.serial.Serial(theirs) > ours:
                raise _Failure(
                    "serial_backwards",
                    f"{self.source.url}: the primary's serial {theirs} is not newer than ours "
                    f"({ours}, RFC 1982); keeping serial {ours}",
                    SOA_CHECK,
                )
            try:
                # IXFR applies to the copy on disk only when it is the version we think it is.
                if copy_serial(self.copy, self.origin) == ours:
                    return self._ixfr(ours, timeout)
                log.warning("list %s: %s is not serial %d; next: AXFR", self.name, self.copy, ours)
            except _Failure as exc:
                if not exc.reason.startswith(_FALLBACK_PREFIXES):
                    raise
                log.warning(
                    "list %s: IXFR from serial %d failed (%s); trying AXFR",
                    self.name,
                    ours,
                    exc.detail,
                )
        return self._axfr(ours, timeout)

    def _ixfr(self, ours: int, timeout: float) -> TransferResult:
        manager = CopyTransfer(self.origin, self.copy)
        query, _ = dns.xfr.make_query(manager, serial=ours, **self._tsig_args())
        try:
            self._inbound(manager, query, timeout, IXFR)
            if manager.full is not None:  # answered AXFR-style (RFC 1995 section 4)
                return self._adopt(manager, manager.full.writer, AXFR, ours)
            if manager.incremental is None:  # the primary's serial fell back to ours meanwhile
                return TransferResult(NOT_MODIFIED, "", f"{self.source.url}: serial {ours}", IXFR)
            writer = self._new_copy(IXFR)
            manager.written.append(writer)
            try:
                merge(self.copy, manager.incremental, ours, writer)
                writer.finish()
            except DiffMismatch as exc:
                raise _Failure("ixfr_mismatch", f"IXFR of {self.source.url}: {exc}", IXFR) from exc
            except OSError as exc:
                raise _io_failure(self.copy, exc, IXFR) from exc
            return self._adopt(manager, writer, IXFR, ours)
        finally:
            manager.discard()

    def _axfr(self, ours: int | None, timeout: float) -> TransferResult:
        manager = CopyTransfer(self.origin, self.copy)
        query, _ = dns.xfr.make_query(manager, serial=None, **self._tsig_args())
        try:
            self._inbound(manager, query, timeout, AXFR)
            writer = manager.full.writer if manager.full is not None else None
            return self._adopt(manager, writer, AXFR, ours)
        finally:
            manager.discard()

    def _adopt(
        self, manager: CopyTransfer, writer: CopyWriter | None, kind: str, ours: int | None
    ) -> TransferResult:
        """Install a transfer's finished copy unless its serial is not newer than ours."""
        soa = manager.soa
        if writer is None or soa is None:  # Inbound commits only after the final SOA
            raise _Failure("bad_data", f"{kind} of {self.source.url}: no final SOA", kind)
        serial = int(soa[0].serial)
        if ours is not None and serial == ours:
            return TransferResult(NOT_MODIFIED, "", f"{self.source.url}: serial {ours}", kind)
        if ours is not None and not dns.serial.Serial(serial) > ours:
            raise _Failure(
                "serial_backwards",
                f"{self.source.url}: {kind} brought serial {serial}, not newer than ours ({ours}, "
                f"RFC 1982); keeping serial {ours}",
                kind,
            )
        return self._save(writer, soa[0], kind, ours)

    def _new_copy(self, kind: str) -> CopyWriter:
        try:
            return CopyWriter(self.copy)
        except OSError as exc:
            raise _io_failure(self.copy, exc, kind) from exc

    def _inbound(
        self, manager: CopyTransfer, query: dns.message.Message, timeout: float, kind: str
    ) -> None:
        try:
            receive(
                self.source.host,
                self.source.port,
                query,
                manager,
                timeout=timeout,
                lifetime=timeout * LIFETIME_FACTOR,
            )
        except DiffMismatch as exc:
            raise _Failure("ixfr_mismatch", f"{kind} of {self.source.url}: {exc}", kind) from exc
        except CopyWriteError as exc:
            raise _io_failure(self.copy, exc.error, kind) from exc
        except Exception as exc:  # dnspython raises many kinds; each is a failed transfer
            raise _classify(exc, f"{kind} of {self.source.url}", kind) from exc

    def _primary_serial(self, timeout: float) -> int:
        query = dns.message.make_query(self.origin, dns.rdatatype.SOA)
        args = self._tsig_args()
        if args:
            query.use_tsig(args["keyring"], args["keyname"], algorithm=args["keyalgorithm"])
        what = f"SOA query to {self.source.url}"
        try:
            reply, _ = dns.query.udp_with_fallback(
                query, self.source.host, timeout=timeout, port=self.source.port
            )
        except Exception as exc:
            raise _classify(exc, what, SOA_CHECK) from exc
        if reply.rcode() != dns.rcode.NOERROR:
            name = dns.rcode.to_text(reply.rcode())
            raise _Failure(f"rcode_{name}", f"{what}: {name}", SOA_CHECK)
        for rrset in reply.answer:
            if rrset.name == self.origin and rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        raise _Failure("bad_data", f"{what}: the answer has no SOA for the zone", SOA_CHECK)

    def _tsig_args(self) -> dict[str, Any]:
        key = self.source.tsig
        if key is None:
            return {}
        return {
            "keyring": keyring_of([key]),
            "keyname": dns.name.from_text(key.name),
            "keyalgorithm": key.algorithm,
        }

    # -- the copy -------------------------------------------------------------------------

    def _save(self, writer: CopyWriter, soa: Any, kind: str, before: int | None) -> TransferResult:
        """Rename the new copy over the old one (atomically) and adopt it."""
        try:
            size, digest = writer.install()
        except OSError as exc:
            raise _io_failure(self.copy, exc, kind) from exc
        state = self.state
        state.serial = int(soa.serial)
        state.kind = kind
        state.size, state.sha256 = size, digest
        state.transferred_at = time.time()
        state.refresh, state.retry, state.expire = (
            float(soa.refresh),
            float(soa.retry),
            float(soa.expire),
        )
        was = f" (was {before})" if before is not None else ""
        return TransferResult(
            UPDATED,
            "",
            f"{kind} of {self.source.url}: serial {soa.serial}{was}, {writer.records:,} records, "
            f"written to {self.copy}",
            kind,
        )

    def _load_state(self) -> XfrState | None:
        """The saved state when it describes this source and the copy next to it."""
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
            state = XfrState(**{f.name: raw[f.name] for f in fields(XfrState)})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if state.url != self.source.url or not isinstance(state.serial, int):
            return None
        try:
            if self.copy.stat().st_size != state.size:
                return None
        except OSError:
            return None
        state.path = str(self.copy)
        return state


class Secondaries:
    """The `Secondary` of every `axfr://` list, kept across reloads while its source stays."""

    def __init__(self) -> None:
        self._by_name: dict[str, Secondary] = {}
        self._lock = threading.Lock()

    def sync(self, lists: Iterable[tuple[str, XfrSource, float | None]], state_dir: Path) -> None:
        """Match the config: new lists get a Secondary, changed ones a new one, gone ones go."""
        with self._lock:
            current: dict[str, Secondary] = {}
            for name, source, refresh in lists:
                old = self._by_name.get(name)
                copy = source_paths(state_dir, name)[0]
                if old is not None and old.source == source and old.copy == copy:
                    old.refresh_override = refresh
                    current[name] = old
                else:
                    current[name] = Secondary(name, source, state_dir, refresh)
            self._by_name = current

    def get(self, name: str) -> Secondary | None:
        with self._lock:
            return self._by_name.get(name)

    def all(self) -> list[Secondary]:
        with self._lock:
            return list(self._by_name.values())

    def due(self, now: float) -> bool:
        return any(secondary.due(now) for secondary in self.all())

    def notify(self, zone: dns.name.Name) -> list[str]:
        """Mark the lists of `zone` due; their names (none: not a zone of ours)."""
        marked = []
        for secondary in self.all():
            if secondary.origin == zone:
                secondary.notify()
                marked.append(secondary.name)
        return marked

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """The TSIG keys of all lists: a NOTIFY signed with one of them is checked with it."""
        return keyring_of(s.source.tsig for s in self.all() if s.source.tsig is not None)


def _io_failure(copy: Path, exc: OSError, kind: str) -> _Failure:
    return _Failure("io", f"cannot write {copy}: {exc.strerror or exc}", kind)


def _classify(exc: Exception, what: str, kind: str) -> _Failure:
    """A dnspython or socket exception as a stable reason key and a sentence."""
    if isinstance(exc, dns.xfr.SerialWentBackwards):
        return _Failure("serial_backwards", f"{what}: the primary's serial went backwards", kind)
    if isinstance(exc, dns.xfr.TransferError):
        name = dns.rcode.to_text(exc.rcode)
        return _Failure(f"rcode_{name}", f"{what}: the primary answered {name}", kind)
    if isinstance(exc, dns.tsig.PeerError | dns.tsig.BadSignature | dns.tsig.BadTime) or (
        isinstance(exc, dns.exception.FormError) and "TSIG" in str(exc)
    ):
        return _Failure("tsig", f"{what}: TSIG check failed: {exc}", kind)
    if isinstance(exc, dns.message.UnknownTSIGKey | dns.tsig.BadAlgorithm):
        return _Failure("tsig", f"{what}: TSIG check failed: {exc}", kind)
    if isinstance(exc, dns.exception.Timeout | TimeoutError | socket.timeout):
        return _Failure("timeout", f"{what}: timed out", kind)
    if isinstance(exc, EOFError | ConnectionResetError | BrokenPipeError):
        return _Failure("truncated", f"{what}: the stream ended before the final SOA", kind)
    if isinstance(exc, OSError):
        return _Failure("network", f"{what}: {exc.strerror or exc}", kind)
    return _Failure("bad_data", f"{what}: {type(exc).__name__}: {exc}", kind)
