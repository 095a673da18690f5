"""The worker's end of the query log: what the query path calls, kept to a list append.

Per logged query the query path appends one tuple (time, client, transport, query bytes,
answer bytes, policy id, match, trigger) to `records`; at BATCH records, or at the worker's next
flush tick, the list goes to the writer process in one non-blocking pipe write
(resolver/querylog/writer.py encodes dnstap there). When the pipe is full (the sink is slow or
down) records wait up to `[querylog] queue`; past that new ones are dropped and counted
(`dropped`), and the query path never waits.

Privacy: the client address is cut in the writer process, the worker's own child, before
anything is written to the sink (resolver/querylog/encoder.py Encoder): allowed queries to
`client_prefix_v4`/`client_prefix_v6` bits, blocked ones too unless `blocked_full_address` (the
default) keeps them whole. The worker hands the address over as it came, so the query path
does no address arithmetic.

Sampling: the query path counts allowed answers down from `sample_every` and calls `allowed`
for the one that reaches 0, so an allowed query that is not logged costs one decrement.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import marshal
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from resolver import __version__
from resolver.config import QueryLogConfig
from resolver.policy import Policy

BATCH = 256  # records per pipe write: one syscall per this many logged queries
PIPE_BYTES = 1 << 20  # asked of the kernel (F_SETPIPE_SZ); the default is 64 KiB
_F_SETPIPE_SZ = 1031
MATCH_QNAME = 1  # dnstap Policy.Match
MATCH_RESPONSE_IP = 3
NEVER = 1 << 62  # `left` when allowed queries are not logged at all
_U32 = struct.Struct(">I")


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
    except OSError:
        return ""
    value &= ((1 << bits) - 1) << (width - bits)
    return socket.inet_ntop(family, value.to_bytes(width // 8))


def sink_for_worker(sink: str, worker: int, workers: int) -> str:
    """A file sink is one file per worker when there are several (`/path.N`)."""
    if sink.startswith("file:") and workers > 1:
        return f"{sink}.{worker}"
    return sink


class QueryLog:
    """One worker's query log. `start` spawns the writer process."""

    def __init__(self, config: QueryLogConfig, worker: int = 0, workers: int = 1) -> None:
        self.config = config
        # Allowed answers per logged one, counted down by the query path (Resolver._log_left).
        self.sample_every = NEVER if config.only_blocked else config.sample
        self.bits4 = config.client_prefix_v4
        self.bits6 = config.client_prefix_v6
        self.blocked_bits = (32, 128) if config.blocked_full_address else (self.bits4, self.bits6)
        self.limit = config.queue
        self.every = min(BATCH, self.limit)  # records per write attempt
        self.records: list[tuple[Any, ...]] = []
        # Policy tables not yet written (never dropped), each with the number of records that
        # waited when it came: those were logged under the table before it.
        self.tables: list[tuple[int, tuple[Any, ...]]] = []
        self.pending = b""  # the unwritten end of the last pipe write
        self.dropped = 0
        self.handed = 0  # records put into pipe writes so far
        self.sink = sink_for_worker(config.dnstap, worker, workers)
        # The writer's command line; bench/hotpath_bench.py swaps in a reader that discards,
        # to tell the query path's own cost from the writer's.
        self.command = [sys.executable, "-m", "resolver.querylog.writer"]
        self._process: subprocess.Popen[bytes] | None = None
        self._fd = -1

    def start(self) -> None:
        settings = {
            "sink": self.sink,
            "identity": self.config.identity or socket.gethostname(),
            "version": f"blokir {__version__}",
            "queue": self.limit,
            "max_bytes": self.config.file_max_bytes,
            "keep": self.config.file_keep,
            "bits": [self.bits4, self.bits6],
            "blocked_bits": list(self.blocked_bits),
        }
        self._process = subprocess.Popen(
            [*self.command, json.dumps(settings)],
            stdin=subprocess.PIPE,
            close_fds=True,
        )
        assert self._process.stdin is not None
        self._fd = self._process.stdin.fileno()
        os.set_blocking(self._fd, False)
        # Above the system's pipe-max-size this fails: the default size works, only sooner full.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_BYTES)

    # -- the query path -------------------------------------------------------------------

    # The query path appends blocked queries' records to `records` itself (in compiled code:
    # pipeline's Resolver._log_block) and calls `full` once `every` are waiting.

    def blocked(
        self,
        client: str,
        udp: bool,
        query: bytes,
        answer: bytes | None,
        pid: int,
        value: bytes,
        match: int = MATCH_QNAME,
    ) -> None:
        """What the query path does for a blocked query, for callers without its shortcut."""
        self.records.append((time.time(), client, udp, query, answer, pid, match, value))
        if len(self.records) >= self.every:
            self.full()

    def allowed(self, client: str, udp: bool, query: bytes, answer: bytes) -> None:
        """A sampled allowed query (the query path's countdown reached 0), for callers without
        the query path's shortcut (Resolver._log_allowed)."""
        self.records.append((time.time(), client, udp, query, answer, 0, 0, b""))
        if len(self.records) >= self.every:
            self.full()

    def full(self) -> None:
        """`every` or more records wait: write them, once per batch, when the pipe takes them;
        past `limit` the newest are dropped and counted. During an outage the pipe stays full
        and this costs a length check and a trim per record, no system call."""
        records = self.records
        if len(records) % self.every == 0:
            self.flush()
        if len(records) > self.limit:
            self.dropped += len(records) - self.limit
            del records[self.limit :]

    @property
    def logged(self) -> int:
        """Records handed to the writer or waiting for it (dropped ones not counted)."""
        return self.handed + len(self.records)

    # -- off the query path ---------------------------------------------------------------

    def set_policies(self, policies: Sequence[Policy]) -> None:
        """After a (re)load: the policy ids of the records that follow mean these policies."""
        table = [(p.list_name, p.category, p.action.value) for p in policies]
        self.tables.append((len(self.records), ("P", table)))
        self.flush()

    def flush(self) -> None:
        """Write what waits, without blocking: first the rest of an earlier write, then policy
        tables and records as one batch. What the pipe does not take stays for the next call."""
        if self._fd < 0:
            return
        if self.pending and not self._write_pending():
            return
        if not (self.records or self.tables):
            return
        batch = self._with_tables() if self.tables else self.records
        self.handed += len(self.records)
        blob = marshal.dumps(batch)
        self.tables = []
        self.records.clear()  # the same list: the query path holds it
        # The length and the batch in one writev: no copy of the batch to join them.
        self._write([_U32.pack(len(blob)), blob])

    def _with_tables(self) -> list[tuple[Any, ...]]:
        """The waiting records with each policy table at its place: after the records logged
        before the (re)load that brought it, before those logged after it. The writer reads a
        record's policy id against the last table it read."""
        batch: list[tuple[Any, ...]] = []
        done = 0
        for position, table in self.tables:
            position = min(position, len(self.records))  # records past the queue were dropped
            batch.extend(self.records[done:position])
            batch.append(table)
            done = max(done, position)
        batch.extend(self.records[done:])
        return batch

    def _write_pending(self) -> bool:
        """True when everything pending went out."""
        return self._write([self.pending])

    def _write(self, parts: list[bytes]) -> bool:
        """Write `parts` without blocking; what the pipe does not take becomes `pending`. True
        when everything went out."""
        try:
            written = os.writev(self._fd, parts)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                self._fd = -1  # the writer died: what waits and what comes is dropped
                self.limit = 0
                self.dropped += len(self.records)
                self.records.clear()
                self.pending = b""
                return False
            raise
        total = sum(len(part) for part in parts)
        if written < total:  # the rest waits (rare: the pipe is full or nearly)
            self.pending = b"".join(parts)[written:]
            return False
        self.pending = b""
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush (waiting, bounded), end the writer's input and let it finish its stream."""
        process = self._process
        if process is None:
            return
        deadline = time.monotonic() + timeout
        if self._fd >= 0:
            os.set_blocking(self._fd, True)
            self.flush()
            while self.pending and self._fd >= 0 and time.monotonic() < deadline:
                self._write_pending()
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None
        self._fd = -1
