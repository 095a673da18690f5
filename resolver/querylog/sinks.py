"""Where framed dnstap goes: a file (unidirectional Frame Streams, rotated by size) or a socket
(bidirectional: READY/ACCEPT/START ... STOP/FINISH). A sink raises OSError when it cannot
write; the writer then reopens it with backoff (resolver/querylog/writer.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from resolver.querylog import framestream as fs

HANDSHAKE_TIMEOUT = 5.0  # seconds a receiver has to answer READY and STOP


class Sink:
    def open(self) -> None:
        raise NotImplementedError

    def write(self, frames: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class FileSink(Sink):
    """`file:/path`. Past `max_bytes` the file is finished (STOP) and renamed `/path.1`, older
    ones shifted up to `/path.<keep>` (the oldest removed), and a new file started: each file
    is a complete stream that dnstap-read reads on its own.

    A batch reaches the file whole even when a write fails halfway (ENOSPC, EIO): the writer
    retries and the sink goes on from the first byte not written, never writing a frame twice;
    a batch the writer gives up on is cut off again (`drop_partial_batch`), never left half.
    The writer moves batches from its pipe with `splice_from` (splice(2): the kernel copies
    the pipe's pages into the file, and no copy passes through this process and its caches,
    on the core that also answers queries); `write` takes bytes (a batch already read)."""

    def __init__(self, path: str, content_type: bytes, max_bytes: int, keep: int) -> None:
        self.path = Path(path)
        self.content_type = content_type
        self.max_bytes = max_bytes
        self.keep = keep
        self._file: int | None = None
        self._size = 0
        self._batch: bytes | None = None  # the batch `write` is writing (or failed halfway)
        self._batch_start: int | None = None  # where the batch being written began

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            self._rotate()  # a file from an earlier run may lack its STOP: start a fresh one
        # No O_APPEND: splice(2) refuses a file opened for appending (EINVAL). This process is
        # the file's only writer and starts it empty, so its offset is its end.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        self._file = fd
        self._size = 0
        self._put(fs.control_frame(fs.START, [self.content_type]))

    def _put(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            written = os.write(self._file, view)
            self._size += written
            view = view[written:]

    def write(self, frames: bytes) -> None:
        if self._file is None:
            self.open()
        if frames is not self._batch or self._batch_start is None:
            self._batch, self._batch_start = frames, self._size
        # The same batch again after a failed write: only what did not reach the file (`_put`
        # counts each write into `_size`, so an OSError leaves it where the write stopped).
        self._put(memoryview(frames)[self._size - self._batch_start :])
        self._batch = None
        self.end_batch()

    def splice_from(self, pipe: int, count: int) -> int:
        """Move up to `count` bytes of a batch from `pipe` into the file: how many moved (0: the
        pipe is at its end). OSError as `write`; EINVAL where the file system cannot splice.
        The caller calls `end_batch` once the whole batch is in."""
        if self._file is None:
            self.open()
        assert self._file is not None
        if self._batch_start is None:
            self._batch_start = self._size
        moved = os.splice(pipe, self._file, count)
        self._size += moved
        return moved

    def drop_partial_batch(self) -> None:
        """The batch being written will never be whole (the writer gives up on it, or the pipe
        ended inside it): cut the file back to where it began, so the stream never holds half
        a frame. OSError as ftruncate's."""
        start, self._batch_start = self._batch_start, None
        self._batch = None
        if start is None or self._file is None or start == self._size:
            return
        os.ftruncate(self._file, start)
        os.lseek(self._file, start, os.SEEK_SET)
        self._size = start

    def end_batch(self) -> None:
        """A batch is whole in the file: rotate here, never inside one."""
        self._batch_start = None
        if self._size >= self.max_bytes:
            self.close()
            self._rotate()
            self.open()

    def _rotate(self) -> None:
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._put(fs.control_frame(fs.STOP))
        finally:
            os.close(self._file)
            self._file = None


class SocketSink(Sink):
    """`unix:/path` or `tcp:HOST:PORT`: a Frame Streams receiver."""

    def __init__(self, target: str, content_type: bytes) -> None:
        self.target = target
        self.content_type = content_type
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        kind, _, rest = self.target.partition(":")
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = rest
        else:
            host, _, port = rest.rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            address = (host, int(port))
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock

    def open(self) -> None:
        sock = self._connect()
        try:
            sock.sendall(fs.control_frame(fs.READY, [self.content_type]))
            reply = _read_control(sock)
            if reply.kind != fs.ACCEPT or self.content_type not in reply.content_types:
                raise ConnectionError("the receiver did not accept dnstap")
            sock.sendall(fs.control_frame(fs.START, [self.content_type]))
        except (OSError, fs.FrameError) as exc:
            sock.close()
            raise ConnectionError(f"Frame Streams handshake with {self.target}: {exc}") from exc
        self._sock = sock

    def write(self, frames: bytes) -> None:
        if self._sock is None:
            self.open()
        assert self._sock is not None
        try:
            self._sock.sendall(frames)
        except OSError:
            self._drop()
            raise

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendall(fs.control_frame(fs.STOP))
            _read_control(sock)  # FINISH; whatever it says, the stream is over
        except (OSError, fs.FrameError):
            pass
        finally:
            self._drop()


def _read_control(sock: socket.socket) -> fs.Control:
    reader = fs.FrameReader()
    for _ in range(64):  # bounded: a control frame is at most a few hundred bytes
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the receiver closed the connection")
        for frame in reader.feed(chunk):
            if isinstance(frame, fs.Control):
                return frame
            raise fs.FrameError("data frame where a control frame was expected")
    raise fs.FrameError("no control frame")


def make_sink(target: str, content_type: bytes, max_bytes: int, keep: int) -> Sink:
    kind, _, rest = target.partition(":")
    if kind == "file":
        return FileSink(rest, content_type, max_bytes, keep)
    if kind in ("unix", "tcp"):
        return SocketSink(target, content_type)
    raise ValueError(f"unknown dnstap sink {target!r}")
