"""`python -m resolver.querylog.writer SETTINGS`: the process that takes a worker's encoded
dnstap frames and writes them to the sink.

The worker encodes (resolver/querylog/encoder.py, in C where built) and cuts client addresses;
this process only forwards. Why a process of its own: the sink may be a socket to a collector
that is slow, gone or reconnecting, and none of that may ever stall the worker's event loop;
here it stalls only this process.

Input: a stream of batches, each a 32-bit big-endian length and that many bytes of whole Frame
Streams data frames (each a 32-bit length and a Dnstap message). A batch reaches the sink
whole, never split across a reconnect or a file rotation.
Backpressure instead of drops here: while the sink is down, this process stops reading once
`queue` records wait, the pipe fills, and the worker drops and counts (the only place that
counts, so `blokir_querylog_dropped_total` is complete). The sink is reopened with backoff.
Exits when stdin closes, after finishing the stream (STOP, and FINISH from a receiver).
"""

from __future__ import annotations

import json
import logging
import queue
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from resolver.querylog.schema import CONTENT_TYPE
from resolver.querylog.sinks import make_sink

log = logging.getLogger("blokir.querylog")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
SHUTDOWN_GRACE = 3.0  # seconds of retries after the worker closed its end (QueryLog.close waits 5)
MAX_BATCH_BYTES = 64 << 20
_U32 = struct.Struct(">I")
_STOP = object()


def read_batches(stream: BinaryIO, put: Callable[[object], None]) -> None:
    """Reader thread: batches from the worker onto the bounded queue (put blocks when full)."""
    while True:
        head = stream.read(4)
        if len(head) < 4:
            break
        size = _U32.unpack(head)[0]
        if size > MAX_BATCH_BYTES:
            log.error("querylog: a batch of %d bytes from the worker; stopping", size)
            break
        blob = stream.read(size)
        if len(blob) < size:
            break
        put(blob)
    put(_STOP)


def run(settings: dict[str, Any], stream: BinaryIO) -> int:
    sink = make_sink(
        settings["sink"], CONTENT_TYPE, int(settings["max_bytes"]), int(settings["keep"])
    )
    # Batches of up to a few hundred records each: the bound in records, divided.
    waiting: queue.Queue[object] = queue.Queue(maxsize=max(2, int(settings["queue"]) // 256))
    reader = threading.Thread(target=read_batches, args=(stream, waiting.put), daemon=True)
    reader.start()
    backoff = BACKOFF_FIRST
    given_up: float | None = None  # when to stop retrying once the worker has stopped
    while True:
        blob = waiting.get()
        if blob is _STOP:
            break
        assert isinstance(blob, bytes)
        while blob:
            try:
                sink.write(blob)
                backoff = BACKOFF_FIRST
                break
            except OSError as exc:
                if not reader.is_alive():
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
    return run(json.loads(sys.argv[1]), sys.stdin.buffer)


if __name__ == "__main__":
    sys.exit(main())
