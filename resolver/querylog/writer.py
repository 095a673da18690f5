"""`python -m resolver.querylog.writer SETTINGS`: the process that takes a worker's encoded
dnstap frames and writes them to the sink.

The worker encodes (resolver/querylog/encoder.py, in C where built) and cuts client addresses;
this process only forwards. Why a process of its own: the sink may be a socket to a collector
that is slow, gone or reconnecting, and none of that may ever stall the worker's event loop;
here it stalls only this process.

Input: a stream of batches, each a 32-bit big-endian length and that many bytes of whole Frame
Streams data frames (each a 32-bit length and a Dnstap message). A batch reaches the sink
whole, never split across a reconnect or a file rotation.
One thread, no queue of its own: it reads the next batch only once the last one is written. While
the sink is down it retries with backoff, the pipe fills, the worker's encoder holds up to
`[querylog] queue` records and then drops and counts them (the only place that counts, so
`blokir_querylog_dropped_total` is complete). A reader thread and a queue here cost a thread
hand-off per batch, on the core that also answers queries (docs/querylog.md), and buffered
nothing the worker's own bound does not.
A file sink takes each batch straight from the pipe with splice(2): the bytes never pass
through this process, whose copy and buffers would otherwise churn the caches of the core that
also answers queries (bench/hotpath_bench.py, docs/querylog.md). Where the file system cannot
splice, it reads and writes as for a socket.
Exits when stdin closes, after finishing the stream (STOP, and FINISH from a receiver).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import struct
import sys
import time
from typing import Any

from resolver.querylog.schema import CONTENT_TYPE
from resolver.querylog.sinks import FileSink, Sink, make_sink

log = logging.getLogger("blokir.querylog")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
SHUTDOWN_GRACE = 3.0  # seconds of retries after the worker closed its end (QueryLog.close waits 5)
MAX_BATCH_BYTES = 64 << 20
_U32 = struct.Struct(">I")


def read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes from the pipe, or None at its end (the worker closed it)."""
    chunk = os.read(fd, size)
    if len(chunk) == size or not chunk:
        return chunk or None
    parts = [chunk]
    left = size - len(chunk)
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_length(fd: int) -> int | None:
    """The next batch's length, or None once the worker has closed the pipe (or sent a length
    that cannot be one of its batches)."""
    head = read_exactly(fd, 4)
    if head is None:
        return None
    size: int = _U32.unpack(head)[0]
    if size > MAX_BATCH_BYTES:
        log.error("querylog: a batch of %d bytes from the worker; stopping", size)
        return None
    return size


def worker_gone(fd: int) -> bool:
    """True once the worker has closed its end of the pipe (POLLHUP on ours): it is stopping."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


class Retry:
    """Backoff between attempts while the sink fails; once the worker has closed the pipe, a
    short grace only, then what waits is lost (the worker does not wait much longer)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.backoff = BACKOFF_FIRST
        self.given_up: float | None = None

    def succeeded(self) -> None:
        self.backoff = BACKOFF_FIRST

    def again(self, exc: OSError) -> bool:
        """After a failed attempt: wait and return True to try again, False to stop."""
        if worker_gone(self.fd):
            if self.given_up is None:
                self.given_up = time.monotonic() + SHUTDOWN_GRACE
            if time.monotonic() > self.given_up:
                log.warning("querylog: %s; stopping with records unsent", exc)
                return False
            self.backoff = min(self.backoff, BACKOFF_FIRST)
        log.warning("querylog: %s; retrying in %.1f s", exc, self.backoff)
        time.sleep(self.backoff)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        return True


def write_batch(sink: Sink, blob: bytes, retry: Retry) -> bool:
    """One batch to the sink, retried until it is written: False when it never will be."""
    while True:
        try:
            sink.write(blob)
            retry.succeeded()
            return True
        except OSError as exc:
            if not retry.again(exc):
                return False


def splice_batch(sink: FileSink, fd: int, size: int, retry: Retry) -> bool | None:
    """One batch of `size` bytes moved from the pipe into the file by splice(2). True when it
    is in; False when it never will be (the pipe ended inside it, or the sink failed for
    good: `run` cuts off the part in the file); None when this file system cannot splice
    (nothing of the batch moved: read it instead)."""
    left = size
    while left:
        try:
            moved = sink.splice_from(fd, left)
        except OSError as exc:
            if exc.errno == errno.EINVAL and left == size:
                return None
            if not retry.again(exc):
                return False
            continue
        retry.succeeded()
        if not moved:  # the worker went away inside a batch (a full pipe at its close)
            return False
        left -= moved
    sink.end_batch()
    return True


def run(settings: dict[str, Any], fd: int) -> int:
    sink = make_sink(
        settings["sink"], CONTENT_TYPE, int(settings["max_bytes"]), int(settings["keep"])
    )
    retry = Retry(fd)
    splicing = isinstance(sink, FileSink)
    while (size := read_length(fd)) is not None:
        if not size:
            continue
        if splicing:
            assert isinstance(sink, FileSink)
            done = splice_batch(sink, fd, size, retry)
            if done is not None:
                if not done:
                    break
                continue
            splicing = False  # the file system cannot: read and write from now on
            log.info("querylog: %s cannot splice; reading and writing instead", sink.path)
        blob = read_exactly(fd, size)
        if blob is None or not write_batch(sink, blob, retry):
            break
    if isinstance(sink, FileSink):
        try:
            sink.drop_partial_batch()  # a batch given up on: the file ends with whole frames
        except OSError as exc:
            log.warning("querylog: cutting off a batch given up on: %s", exc)
    try:
        sink.close()
    except OSError as exc:
        log.warning("querylog: closing the sink: %s", exc)
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s blokir[%(process)d] %(message)s")
    return run(json.loads(sys.argv[1]), sys.stdin.fileno())


if __name__ == "__main__":
    sys.exit(main())
