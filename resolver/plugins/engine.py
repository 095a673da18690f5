"""The plugin's decision, independent of the resolver that hosts it.

Per query the host hands over the question name in wire form and the query type; the engine
answers None (not blocked: resolve as usual) or a `BlockReply`, the block answer as text
records the host can load (Unbound's pythonmod builds messages from presentation-format RRs).
The lookup is the one `blokir serve` uses (`Index.match_policy_id` over the mapped file) and the
records come from the same answer builder (`BlockResponder`), parsed once per policy and query
shape, so a list's landing addresses, SOA, TTL and EDE are the same in both modes.

Reload: the index path is stat()ed at most once per `RELOAD_CHECK_SECONDS` on the query path.
A changed file (inode, size or mtime: `blokir compile` and a `blokir serve` reload both write a
temporary file and rename it over the index) is opened with its checksum verified; a file that
does not verify is refused and logged, the old index keeps serving, and the same file is not
tried again until it changes. The old mapping is not closed: a query another thread is
matching against it finishes, and the mapping goes when its last reference does.

Metrics: `blokir_blocked_total{list,category,action}` and the index gauges, written to a
Prometheus textfile (node_exporter's textfile collector) by the query path every
`[metrics] textfile_interval` seconds, atomically (temporary file, then rename). No thread and
no listening socket inside the host resolver: see docs/plugin-unbound.md.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from resolver.config import Config
from resolver.dns.answers import BlockResponder, BlockSettings
from resolver.dns.constants import CLASS_IN, HEADER_SIZE, REFUSED, TYPE_A, TYPE_AAAA
from resolver.dns.query import ParseError, parse_query
from resolver.index import Index, IndexError_, open_index
from resolver.policy import Action, Policy

log = logging.getLogger("blokir.plugin")

RELOAD_CHECK_SECONDS = 1.0
_QUERY_HEADER = bytes(4) + b"\x00\x01" + bytes(HEADER_SIZE - 6)  # ID, flags 0, QDCOUNT 1
_QTAIL = struct.Struct("!HH")
_EDE_INFO = struct.Struct("!H")
# A stand-in query type per answer shape (BlockResponder: A, AAAA, anything else).
_SHAPE_QTYPE = {TYPE_A: TYPE_A, TYPE_AAAA: TYPE_AAAA, 0: 16}
_TEMPLATE_NAME = b"\x06blokir\x07invalid\x00"


@dataclass(frozen=True, slots=True)
class BlockReply:
    """A block answer: the RCODE, records as "TTL CLASS TYPE RDATA" (the host prepends the
    owner, the question name), the RFC 8914 option data (INFO-CODE and EXTRA-TEXT, b"" for
    none) and the metric labels."""

    rcode: int
    answer: tuple[str, ...]
    authority: tuple[str, ...]
    ede: bytes
    labels: tuple[str, str, str]
    ttl: int

    def records(self, owner: str) -> tuple[list[str], list[str]]:
        return [f"{owner} {rr}" for rr in self.answer], [f"{owner} {rr}" for rr in self.authority]


@dataclass(frozen=True, slots=True)
class PluginSettings:
    index_path: Path
    block: BlockSettings
    textfile: Path | None
    textfile_interval: float


def plugin_settings(config: Config) -> PluginSettings:
    return PluginSettings(
        index_path=config.blocking.index_path,
        block=BlockSettings.from_config(config),
        textfile=config.metrics.textfile,
        textfile_interval=config.metrics.textfile_interval,
    )


def wire_question(qname_wire: bytes, qtype: int) -> bytes:
    """A query message around a question name in wire form, for `parse_query`: the same
    lower-casing and the same "unmatchable" verdict on odd labels as `blokir serve`."""
    return _QUERY_HEADER + qname_wire + _QTAIL.pack(qtype, CLASS_IN)


class _Generation:
    """One opened index with its matcher and its block answers."""

    __slots__ = (
        "index",
        "loaded_at",
        "match_policy_id",
        "policies",
        "replies",
        "responder",
        "stat",
    )

    def __init__(self, index: Index, settings: BlockSettings, stat: tuple[int, int, int]) -> None:
        self.index = index
        self.match_policy_id: Callable[[bytes], int] = index.match_policy_id
        self.policies: list[Policy] = index.policies
        self.responder = BlockResponder(index.policies, settings)
        self.replies: dict[tuple[int, int], BlockReply] = {}
        self.stat = stat
        self.loaded_at = time.time()


def _file_stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class PluginEngine:
    """Thread-safe under the GIL: Unbound calls into Python from each of its threads."""

    def __init__(
        self, settings: PluginSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        path = settings.index_path
        stat = _file_stat(path)
        self._gen = _Generation(open_index(path), settings.block, stat)
        self._next_check = clock() + RELOAD_CHECK_SECONDS
        self._refused_stat: tuple[int, int, int] | None = None
        self._reload_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.blocked: dict[tuple[str, str, str], int] = {}
        self.reloads: dict[str, int] = {"applied": 0, "rejected": 0}
        self._next_write = 0.0
        self.write_textfile()

    @property
    def index(self) -> Index:
        return self._gen.index

    # -- the query path ----------------------------------------------------------------------

    def decide(self, qname_wire: bytes, qtype: int) -> BlockReply | None:
        """The block answer for this question, or None to resolve it as usual."""
        now = self._clock()
        if now >= self._next_check:
            self._periodic(now)
        gen = self._gen
        try:
            query = parse_query(wire_question(qname_wire, qtype))
        except ParseError:
            return None
        if query.unmatchable:
            return None
        policy_id = gen.match_policy_id(query.qname)
        if not policy_id or gen.policies[policy_id - 1].action is Action.ALLOW:
            return None
        return self._reply(gen, policy_id, qtype)

    def decide_chain(self, names: Iterable[bytes], qtype: int) -> BlockReply | None:
        """CNAME/DNAME inspection: the block answer (for the question) of the first name of an
        answer's chain that is blocked; an allowed name in the chain does not end the walk,
        each name is judged on its own, as `blokir serve` does."""
        for name in names:
            reply = self.decide(name, qtype)
            if reply is not None:
                return reply
        return None

    def count(self, reply: BlockReply) -> None:
        """One blocked answer sent (the host calls this once the answer is on its way)."""
        with self._count_lock:
            self.blocked[reply.labels] = self.blocked.get(reply.labels, 0) + 1

    def _reply(self, gen: _Generation, policy_id: int, qtype: int) -> BlockReply:
        shape = qtype if qtype in (TYPE_A, TYPE_AAAA) else 0
        reply = gen.replies.get((policy_id, shape))
        if reply is None:
            reply = gen.replies[(policy_id, shape)] = self._build(gen, policy_id, shape)
        return reply

    def _build(self, gen: _Generation, policy_id: int, shape: int) -> BlockReply:
        """The answer builder's response for a stand-in question, read back as records."""
        import dns.message  # dnspython: once per policy and shape, never per query

        policy = gen.policies[policy_id - 1]
        labels = (policy.list_name, policy.category, policy.action.value)
        ttl = self.settings.block.ttl
        query = parse_query(wire_question(_TEMPLATE_NAME, _SHAPE_QTYPE[shape]))
        response = gen.responder.answer(query, policy_id)
        code = policy.ede.code
        ede = (
            b""
            if code is None
            else _EDE_INFO.pack(code) + gen.responder.extra_text(policy).encode("utf-8")
        )
        if response is None:  # drop (RPZ rpz-drop): a module cannot leave a client unanswered
            return BlockReply(REFUSED, (), (), ede, labels, ttl)
        message = dns.message.from_wire(response)
        sections = []
        for section in (message.answer, message.authority):
            sections.append(
                tuple(
                    f"{rrset.ttl} IN {rdata.rdtype.name} {rdata.to_text()}"
                    for rrset in section
                    for rdata in rrset
                )
            )
        return BlockReply(message.rcode(), sections[0], sections[1], ede, labels, ttl)

    # -- reload and metrics, at most once a second from the query path ------------------------

    def _periodic(self, now: float) -> None:
        if not self._reload_lock.acquire(blocking=False):
            return  # another thread is at it; this query goes on with the current index
        try:
            if now < self._next_check:
                return
            self.check_reload()
            self._next_check = self._clock() + RELOAD_CHECK_SECONDS
            if now >= self._next_write:
                self.write_textfile()
        finally:
            self._reload_lock.release()

    def check_reload(self) -> bool:
        """Swap in the index file when it changed and verifies; True when swapped."""
        path = self.settings.index_path
        try:
            stat = _file_stat(path)
        except OSError as exc:
            log.error("blokir: index %s: %s; the loaded index keeps serving", path, exc)
            return False
        if stat == self._gen.stat or stat == self._refused_stat:
            return False
        try:
            index = open_index(path)
        except IndexError_ as exc:
            self._refused_stat = stat
            self.reloads["rejected"] += 1
            log.error("blokir: new index refused, the loaded one keeps serving: %s", exc)
            return False
        self._gen = _Generation(index, self.settings.block, stat)  # one reference swap
        self._refused_stat = None
        self.reloads["applied"] += 1
        log.info("blokir: index %s loaded (%d names)", path, index.count)
        return True

    def write_textfile(self) -> None:
        target = self.settings.textfile
        self._next_write = self._clock() + self.settings.textfile_interval
        if target is None:
            return
        try:
            _write_atomically(target, self.exposition())
        except OSError as exc:
            log.error("blokir: metrics textfile %s: %s", target, exc)

    def exposition(self) -> bytes:
        from resolver.plugins.textfile import exposition

        with self._count_lock:
            blocked = dict(self.blocked)
        gen = self._gen
        return exposition(blocked, gen.index.header, gen.loaded_at, dict(self.reloads))


def _write_atomically(target: Path, data: bytes) -> None:
    """node_exporter must never read a half-written file: temporary file, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
