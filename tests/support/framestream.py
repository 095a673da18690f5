"""A Frame Streams receiver for tests: a Unix socket that answers the bidirectional handshake
(READY -> ACCEPT, STOP -> FINISH), keeps the data frames, and can write them out as a
unidirectional stream, as fstrm_capture does, for dnstap-read."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from resolver.querylog import framestream as fs
from resolver.querylog.schema import CONTENT_TYPE

SERVE_SECONDS = 120  # the receiver's thread ends by then whatever happens


class Receiver:
    """A Frame Streams receiver on a Unix socket (bidirectional handshake), writing what it
    takes to a file as a unidirectional stream, as fstrm_capture does."""

    def __init__(self, path: Path, out: Path | None = None) -> None:
        self.path = path
        self.out = out
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.frames: list[bytes] = []
        self.controls: list[int] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + SERVE_SECONDS
        while not self.done.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(30)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        reader = fs.FrameReader()
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for frame in reader.feed(data):
                if isinstance(frame, bytes):
                    self.frames.append(frame)
                    continue
                self.controls.append(frame.kind)
                if frame.kind == fs.READY:
                    conn.sendall(fs.control_frame(fs.ACCEPT, [CONTENT_TYPE]))
                elif frame.kind == fs.STOP:
                    conn.sendall(fs.control_frame(fs.FINISH))
                    return

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()
        if self.out is None:
            return
        self.out.write_bytes(
            fs.control_frame(fs.START, [CONTENT_TYPE])
            + b"".join(fs.data_frame(f) for f in self.frames)
            + fs.control_frame(fs.STOP)
        )
