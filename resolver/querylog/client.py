"""The worker's end of the query log: what the query path calls, one encoder call per record.

Per logged query the query path calls its encoder's `add` (time, client, transport, query bytes,
answer bytes, policy id, match, trigger), which writes the record's two dnstap frames into a
buffer: in C where the install built resolver/querylog/_dnstap.c, else in Python
(resolver/querylog/encoder.py). At BATCH records, or at the worker's next flush tick, the frames
go to the writer process in one non-blocking pipe write; the writer only forwards them to the
sink (resolver/querylog/writer.py). When the pipe is full (the sink is slow or down) records
wait up to `[querylog] queue`; past that new ones are dropped and counted (`dropped`), and the
query path never waits.

Privacy: the encoder cuts the client address before the record leaves the worker: allowed
queries to `client_prefix_v4`/`client_prefix_v6` bits, blocked ones too unless
`blocked_full_address` (the default) keeps them whole.

Policies: a record is encoded with the policy table in force when it was logged, so records
logged before a reload keep their list's name after it (ids mean other policies afterwards).

Sampling: the query path counts allowed answers down from `sample_every` and calls `allowed`
for the one that reaches 0, so an allowed query that is not logged costs one decrement.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from resolver import __version__
from resolver.config import QueryLogConfig
from resolver.policy import Policy

if TYPE_CHECKING:
    from resolver.querylog.encoder import EncoderLike

# Records per pipe write. Each write costs a syscall and a wake-up of the writer process, and a
# batch's bytes pass through the caches of the core that answers queries (the encoder's buffer,
# the copy handed over, the pipe): big batches evict the memo and the index between writes,
# small ones pay the per-batch costs more often. In the hot path replay with its writer on the
# same CPU (bench/hotpath_bench.py --querylog writer, 2026-12-06) the query log cost 9% of the
# time per query with 1,024-record batches, 4-5% with 128 or 256 and 11% with 16
# (docs/querylog.md, "What it costs"). A batch is at most BYTES_PER_RECORD per record of the
# pipe's size, so a few fit in the pipe at once and a write is seldom split.
BATCH = 256
PIPE_BYTES = 1 << 20  # asked of the kernel (F_SETPIPE_SZ); the default is 64 KiB
BYTES_PER_RECORD = 1024  # a typical record is ~300 bytes: two frames, the query and the answer
_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032
MATCH_QNAME = 1  # dnstap Policy.Match
MATCH_RESPONSE_IP = 3
NEVER = 1 << 62  # `left` when allowed queries are not logged at all
_U32 = struct.Struct(">I")


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
        self.limit = config.queue
        self.every = min(BATCH, self.limit)  # records per write attempt
        # Imported here: the encoder needs the dnstap schema (the protobuf library), which a
        # worker without a query log never loads (resolver/pipeline.py imports this module).
        from resolver.querylog.encoder import new_encoder

        bits = (config.client_prefix_v4, config.client_prefix_v6)
        self.encoder: EncoderLike = new_encoder(
            (config.identity or socket.gethostname()).encode(),
            f"blokir {__version__}".encode(),
            bits,
            (32, 128) if config.blocked_full_address else bits,
            self.limit,
        )
        self.pending = b""  # the unwritten end of the last pipe write
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
            "queue": self.limit,
            "max_bytes": self.config.file_max_bytes,
            "keep": self.config.file_keep,
        }
        self._process = subprocess.Popen(
            [*self.command, json.dumps(settings)],
            stdin=subprocess.PIPE,
            close_fds=True,
        )
        assert self._process.stdin is not None
        self._fd = self._process.stdin.fileno()
        os.set_blocking(self._fd, False)
        # Above the system's pipe-max-size this fails: the default size works, only sooner full,
        # with smaller batches.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_BYTES)
        with contextlib.suppress(OSError):
            pipe_bytes = fcntl.fcntl(self._fd, _F_GETPIPE_SZ)
            self.every = max(1, min(self.every, pipe_bytes // BYTES_PER_RECORD))

    # -- the query path -------------------------------------------------------------------

    # The query path calls `encoder.add` itself (in compiled code: pipeline's
    # Resolver._log_block) and `full` each time `add` says another `every` records wait.

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
        waiting = self.encoder.add(time.time(), client, udp, query, answer, pid, match, value)
        if waiting and not waiting % self.every:
            self.full()

    def allowed(self, client: str, udp: bool, query: bytes, answer: bytes) -> None:
        """A sampled allowed query (the query path's countdown reached 0), for callers without
        the query path's shortcut (Resolver._log_allowed)."""
        waiting = self.encoder.add(time.time(), client, udp, query, answer, 0, 0, b"")
        if waiting and not waiting % self.every:
            self.full()

    def full(self) -> None:
        """Another `every` records wait: write them, when the pipe takes them. The query path
        calls this once per `every` records, not once per record: while the pipe is full (the
        writer or its sink behind) records pile up to `limit` without a call here, and the
        encoder drops past it (`add` returns 0). The worker's flush tick retries meanwhile."""
        self.flush()

    @property
    def logged(self) -> int:
        """Records handed to the writer or waiting for it (dropped ones not counted)."""
        return self.handed + self.encoder.count

    @property
    def dropped(self) -> int:
        """Records dropped: the queue was full, or the writer died with them waiting."""
        return self.encoder.dropped

    # -- off the query path ---------------------------------------------------------------

    def set_policies(self, policies: Sequence[Policy]) -> None:
        """After a (re)load: the policy ids of the records that follow mean these policies."""
        from resolver.querylog.encoder import policy_fields

        table = [(p.list_name, p.category, p.action.value) for p in policies]
        self.encoder.set_policies(*policy_fields(table))

    def flush(self) -> None:
        """Write what waits, without blocking: first the rest of an earlier write, then the
        waiting frames as one batch. What the pipe does not take stays for the next call."""
        if self._fd < 0:
            return
        if self.pending and not self._write_pending():
            return
        encoder = self.encoder
        if not encoder.count:
            return
        self.handed += encoder.count
        blob = encoder.take()
        # The length and the batch in one writev: no copy of the batch to join them.
        self._write([_U32.pack(len(blob)), blob])

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
                self.limit = self.encoder.limit = 0
                self.encoder.clear()
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
            # Non-blocking writes as the pipe drains, until the deadline: a blocking write to a
            # writer stuck on a dead sink would wait for ever.
            poller = select.poll()
            poller.register(self._fd, select.POLLOUT)
            self.flush()
            while (self.pending or self.encoder.count) and self._fd >= 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.encoder.clear()  # lost with the writer: counted as dropped
                    break
                poller.poll(left * 1000)
                self.flush()
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
