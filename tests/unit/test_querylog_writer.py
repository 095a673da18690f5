"""The query log writer's file path: batches spliced from the pipe into the file, the fallback
where splice(2) is refused, and a file that never holds half a batch or a batch twice, whatever
fails (a sink write that stops halfway, a worker gone inside a batch)."""

from __future__ import annotations

import errno
import os
import struct
import threading
from pathlib import Path

import pytest

from resolver.querylog import framestream as fs
from resolver.querylog import writer
from resolver.querylog.schema import CONTENT_TYPE
from resolver.querylog.sinks import FileSink

START = fs.control_frame(fs.START, [CONTENT_TYPE])
WRITE = os.write  # the feeding thread's, whatever a test swaps in for the writer's
STOP = fs.control_frame(fs.STOP)


def batch(number: int, size: int = 3000) -> bytes:
    """A batch of bytes that says which one it is everywhere (the writer does not parse it)."""
    return bytes([number % 251]) * size


def framed(*batches: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(b)) + b for b in batches)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "BACKOFF_FIRST", 0.01)


def run_writer(path: Path, stream: bytes) -> None:
    """The writer on a pipe that carries `stream` and then closes (a feeding thread: the
    stream may be larger than the pipe)."""
    read_end, write_end = os.pipe()

    def feed() -> None:
        view = memoryview(stream)
        while view:
            view = view[WRITE(write_end, view) :]
        os.close(write_end)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        settings = {"sink": f"file:{path}", "max_bytes": 1 << 40, "keep": 1}
        assert writer.run(settings, read_end) == 0
    finally:
        feeder.join(10)
        os.close(read_end)


def test_batches_spliced_from_the_pipe_arrive_whole_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    splice = os.splice

    def counted(src: int, dst: int, count: int, *args: int) -> int:
        calls.append(count)
        return splice(src, dst, count, *args)

    monkeypatch.setattr(os, "splice", counted)
    batches = [batch(n, 1000 + 7000 * n) for n in range(12)]  # some larger than a pipe's 64 KiB
    run_writer(tmp_path / "q.dnstap", framed(*batches))
    assert (tmp_path / "q.dnstap").read_bytes() == START + b"".join(batches) + STOP
    assert calls  # the file path spliced


def test_where_splice_is_refused_the_writer_reads_and_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: int) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "splice", refuse)
    batches = [batch(n) for n in range(5)]
    run_writer(tmp_path / "q.dnstap", framed(*batches))
    assert (tmp_path / "q.dnstap").read_bytes() == START + b"".join(batches) + STOP


class FillsOnce:
    """A disk that fills once: calls pass until `after` bytes went through; the call that
    would cross that mark moves only up to it, the next one fails with ENOSPC, and from then
    on all pass (the space came back)."""

    def __init__(self, after: int) -> None:
        self.left = after
        self.failed = False

    def allowed(self, size: int) -> int:
        """How much of `size` bytes this call may move; raises on the call after the mark."""
        if self.failed:
            return size
        if self.left == 0:
            self.failed = True
            raise OSError(errno.ENOSPC, "No space left on device")
        part = min(size, self.left)
        self.left -= part
        return part


def test_a_splice_that_fails_halfway_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FillsOnce(after=4500)
    splice = os.splice

    def filling(src: int, dst: int, count: int, *args: int) -> int:
        return splice(src, dst, disk.allowed(count), *args)

    monkeypatch.setattr(os, "splice", filling)
    batches = [batch(n) for n in range(4)]
    run_writer(tmp_path / "q.dnstap", framed(*batches))
    assert disk.failed
    assert (tmp_path / "q.dnstap").read_bytes() == START + b"".join(batches) + STOP


def test_a_write_that_fails_halfway_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FileSink(str(tmp_path / "q.dnstap"), CONTENT_TYPE, 1 << 40, 1)
    sink.write(batch(1))
    disk = FillsOnce(after=1000)
    write = os.write

    def filling(fd: int, data: bytes | memoryview) -> int:
        return write(fd, memoryview(data)[: disk.allowed(len(data))])

    monkeypatch.setattr(os, "write", filling)
    second = batch(2)
    with pytest.raises(OSError, match="No space"):
        sink.write(second)
    sink.write(second)  # the writer's retry: the same batch again
    sink.close()
    assert (tmp_path / "q.dnstap").read_bytes() == START + batch(1) + second + STOP


def test_a_worker_gone_inside_a_batch_leaves_no_half_batch(tmp_path: Path) -> None:
    whole = [batch(n) for n in range(3)]
    cut = framed(batch(9, 5000))[:2004]  # its length says 5,000 bytes; 2,000 came
    run_writer(tmp_path / "q.dnstap", framed(*whole) + cut)
    assert (tmp_path / "q.dnstap").read_bytes() == START + b"".join(whole) + STOP


def test_the_file_reads_back_as_frame_streams(tmp_path: Path) -> None:
    frames = [struct.pack(">I", 5) + b"hello", struct.pack(">I", 3) + b"abc"]
    run_writer(tmp_path / "q.dnstap", framed(*frames))
    items = list(fs.FrameReader().feed((tmp_path / "q.dnstap").read_bytes()))
    assert [getattr(item, "kind", None) for item in (items[0], items[-1])] == [fs.START, fs.STOP]
    assert items[1:-1] == [b"hello", b"abc"]


@pytest.mark.parametrize("splicing", [True, False])
def test_a_batch_given_up_on_is_cut_off_and_the_stream_still_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, splicing: bool
) -> None:
    """The disk stays full and the worker has stopped: after the grace the writer gives up on
    the batch it was writing, and the file ends with the whole batches before it and STOP."""
    monkeypatch.setattr(writer, "SHUTDOWN_GRACE", 0.05)
    disk = FillsOnce(after=2 * 3000 + 1000)  # two batches and a third of the third
    splice, write = os.splice, os.write
    target = tmp_path / "q.dnstap"

    def full_for_ever(size: int) -> int:
        allowed = disk.allowed(size)
        if disk.failed:
            raise OSError(errno.ENOSPC, "No space left on device")
        return allowed

    if splicing:

        def filling_splice(src: int, dst: int, count: int, *args: int) -> int:
            return splice(src, dst, full_for_ever(count), *args)

        monkeypatch.setattr(os, "splice", filling_splice)
    else:

        def refuse(*_args: int) -> int:
            raise OSError(errno.EINVAL, "Invalid argument")

        def filling_write(fd: int, data: bytes | memoryview) -> int:
            if len(data) == len(STOP) and bytes(data) == STOP:
                return write(fd, data)  # the STOP frame: the test's space for it
            return write(fd, memoryview(data)[: full_for_ever(len(data))])

        monkeypatch.setattr(os, "splice", refuse)
        monkeypatch.setattr(os, "write", filling_write)
    disk.left += len(START)
    run_writer(target, framed(*[batch(n) for n in range(4)]))
    assert target.read_bytes() == START + batch(0) + batch(1) + STOP
