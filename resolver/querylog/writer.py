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
Exits when stdin closes, after finishing the stream (STOP, and FINISH from a receiver).
"""

from __future__ import annotations

import json
import logging
import os
import select
import struct
import sys
import time
from typing import Any

from resolver.querylog.schema import CONTENT_TYPE
from resolver.querylog.sinks import make_sink

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


def read_batch(fd: int) -> bytes | None:
    """The next batch of frames, or None once the worker has closed the pipe (or sent a length
    that cannot be one of its batches)."""
    head = read_exactly(fd, 4)
    if head is None:
        return None
    size = _U32.unpack(head)[0]
    if size > MAX_BATCH_BYTES:
        log.error("querylog: a batch of %d bytes from the worker; stopping", size)
        return None
    return read_exactly(fd, size) if size else b""


def worker_gone(fd: int) -> bool:
    """True once the worker has closed its end of the pipe (POLLHUP on ours): it is stopping."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def run(settings: dict[str, Any], fd: int) -> int:
    sink = make_sink(
        settings["sink"], CONTENT_TYPE, int(settings["max_bytes"]), int(settings["keep"])
    )
    backoff = BACKOFF_FIRST
    given_up: float | None = None  # when to stop retrying once the worker has stopped
    while (blob := read_batch(fd)) is not None:
        while blob:
            try:
                sink.write(blob)
                backoff = BACKOFF_FIRST
                break
            except OSError as exc:
                if worker_gone(fd):
                    # The worker is stopping: retry for a short grace only, then what waits
                    # is lost (the worker does not wait for this process much longer).
                    if given_up is None:
                        given_up = time.monotonic() + SHUTDOWN_GRACE
                    if time.monotonic() > given_up:
                        log.warning("querylog: %s; stopping with records unsent", exc)
                        return 0
                    backoff = min(backoff, BACKOFF_FIRST)
                log.warning("querylog: %s; retrying in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
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
