"""The local control channel: `blokir reload` and `blokir status` talk to the running supervisor.

A Unix stream socket, not a TCP port: only processes on this machine can reach it, and the
file's permissions (0600 by default: the owner, and root) decide who may reload. The protocol is
one JSON object per line each way: the client sends a request line, the server answers with one
response line and closes. Every connection is served in its own thread, so a `status` is
answered while a slow `reload` (a download and a compile) is still running.

The server defends itself against its own clients only as far as a local, owner-only channel
needs: a request is at most MAX_REQUEST bytes and must arrive within READ_TIMEOUT, at most
MAX_CONNECTIONS are served at once, and nothing a request or the handler does can stop the
accept loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_REPLY",
    "MAX_REQUEST",
    "ControlError",
    "ControlServer",
    "request",
]

log = logging.getLogger("blokir")

# sockaddr_un.sun_path is 108 bytes on Linux, NUL included (unix(7)).
MAX_PATH_BYTES = 107
MAX_REQUEST = 64 * 1024  # a request is a command and a few arguments
MAX_REPLY = 16 * 1024 * 1024  # a status reply lists every list source; generous, but bounded
READ_TIMEOUT = 5.0  # seconds for a client to deliver its request line (and to take the reply)
MAX_CONNECTIONS = 32  # served at once; more are answered "busy" at once
PROBE_TIMEOUT = 1.0  # seconds to wait when checking whether a socket file has a live server
CONFIG_KEY = "[updates] control_socket"

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """The control channel cannot be used; the text says why, for the operator."""


class ControlServer:
    """Serves `handler` on a Unix socket at `path` until `close`."""

    def __init__(self, path: Path, handler: Handler, *, mode: int = 0o600) -> None:
        self.path = Path(path)
        self._handler = handler
        self._mode = mode
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._wake_read, self._wake_write = -1, -1
        self._closing = threading.Event()

    def start(self) -> None:
        """Bind (replacing a stale socket file) and serve in a daemon thread."""
        self.listen()
        self.serve()

    def listen(self) -> None:
        """Bind (replacing a stale socket file), not serving yet: the supervisor binds before it
        forks its workers and starts the thread (`serve`) after."""
        _check_path_length(self.path)
        _make_parent(self.path.parent)
        _remove_if_stale(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            # Before listen(): until then nobody can connect, so a looser umask never shows.
            os.chmod(self.path, self._mode)
            listener.listen(MAX_CONNECTIONS)
            info = os.stat(self.path)
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot listen on control socket {self.path}: {exc}") from exc
        self._identity = (info.st_dev, info.st_ino)
        self._listener = listener
        self._wake_read, self._wake_write = os.pipe()

    def serve(self) -> None:
        """Serve in a daemon thread (after `listen`)."""
        self._thread = threading.Thread(target=self._serve, name="blokir-control", daemon=True)
        self._thread.start()
        log.info("control socket on %s", self.path)

    def close(self) -> None:
        """Stop accepting and remove the socket file (if it is still ours). Requests already
        being handled finish in their own threads."""
        if self._listener is None:
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        if self._thread is not None:
            self._thread.join(5)
        self._listener.close()
        self._listener = None
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                self.path.unlink()

    def close_in_child(self) -> None:
        """In a forked worker: drop the inherited descriptors without touching the socket file
        or the thread, both of which belong to the parent."""
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _serve(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is not self._listener or self._closing.is_set():
                        continue
                    try:
                        connection, _ = self._listener.accept()
                    except OSError as exc:  # e.g. EMFILE; keep serving
                        log.warning("control socket accept failed: %s", exc)
                        time.sleep(0.1)
                        continue
                    self._dispatch(connection)

    def _dispatch(self, connection: socket.socket) -> None:
        if not self._slots.acquire(blocking=False):
            with connection, contextlib.suppress(OSError):
                connection.settimeout(READ_TIMEOUT)
                _send(connection, {"ok": False, "error": "busy: too many control requests"})
            return
        try:
            threading.Thread(
                target=self._answer, args=(connection,), name="blokir-control-request", daemon=True
            ).start()
        except RuntimeError:  # cannot start a thread: answer nothing rather than die
            self._slots.release()
            connection.close()

    def _answer(self, connection: socket.socket) -> None:
        try:
            with connection:
                connection.settimeout(READ_TIMEOUT)
                reply = self._reply_to(connection)
                if reply is not None:
                    _send(connection, reply)
        except OSError as exc:  # the client went away or is too slow to take the reply
            log.debug("control connection: %s", exc)
        finally:
            self._slots.release()

    def _reply_to(self, connection: socket.socket) -> dict[str, Any] | None:
        try:
            # One deadline for the whole line: a client dripping a byte at a time gets no longer.
            line = _read_line(connection, MAX_REQUEST, time.monotonic() + READ_TIMEOUT)
        except TimeoutError:
            return {"ok": False, "error": f"no complete request within {READ_TIMEOUT:g} s"}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        if line is None:
            return None  # connected and closed without a word (e.g. the stale-socket probe)
        try:
            message = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(message, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        try:
            reply = self._handler(message)
            if not isinstance(reply, dict):
                raise TypeError(f"handler returned {type(reply).__name__}, not a dict")
            json.dumps(reply)  # fail here, with a logged reason, not half-way through sending
        except Exception as exc:
            log.exception("control request %.200r failed", message)
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        return reply


def request(path: Path, message: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Send `message` to the blokir serving `path` and return its reply.

    `timeout` bounds the whole exchange: a reload that downloads and compiles lists may take a
    while, a blokir that is hung must not hang the command for ever."""
    path = Path(path)
    _check_path_length(path)
    if not path.exists():
        raise ControlError(f"no blokir is running with this config: {path} does not exist")
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.settimeout(timeout)
            client.connect(str(path))
            client.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(client, MAX_REPLY, deadline)
        except FileNotFoundError as exc:  # removed since we looked: blokir just stopped
            raise ControlError(
                f"no blokir is running with this config: {path} does not exist"
            ) from exc
        except ConnectionRefusedError as exc:
            raise ControlError(
                f"no blokir is running with this config: connection refused on {path} "
                "(a stale socket file left by a blokir that stopped)"
            ) from exc
        except PermissionError as exc:
            raise ControlError(
                f"permission denied on {path}: run this as the user blokir runs as, or as root"
            ) from exc
        except TimeoutError as exc:
            raise ControlError(f"blokir did not answer within {timeout:g} s on {path}") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ControlError(
                f"bad reply from blokir on {path}: it closed without answering ({exc.strerror})"
            ) from exc
        except ValueError as exc:
            raise ControlError(f"bad reply from blokir on {path}: {exc}") from exc
        except OSError as exc:
            raise ControlError(f"cannot talk to blokir on {path}: {exc}") from exc
    if line is None:
        raise ControlError(f"bad reply from blokir on {path}: it closed without answering")
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"bad reply from blokir on {path}: not JSON ({exc})") from exc
    if not isinstance(reply, dict):
        raise ControlError(f"bad reply from blokir on {path}: not a JSON object")
    return reply


def _read_line(connection: socket.socket, limit: int, deadline: float | None = None) -> str | None:
    """One newline-terminated UTF-8 line (a final line without newline counts too); None when
    the peer closed before sending a byte. ValueError when over `limit` bytes or not UTF-8."""
    data = bytearray()
    received = False
    while True:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            connection.settimeout(remaining)
        block = connection.recv(65536)
        if not block:
            break
        received = True
        end = block.find(b"\n")
        data += block if end < 0 else block[:end]
        if len(data) > limit:
            raise ValueError(f"message is over {limit} bytes")
        if end >= 0:
            break
    if not received:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"message is not UTF-8: {exc}") from exc


def _send(connection: socket.socket, reply: dict[str, Any]) -> None:
    connection.sendall(json.dumps(reply).encode() + b"\n")


def _check_path_length(path: Path) -> None:
    length = len(os.fsencode(path))
    if length > MAX_PATH_BYTES:
        raise ControlError(
            f"{CONFIG_KEY}: {path} is {length} bytes long, but a Unix socket path can have at "
            f"most {MAX_PATH_BYTES} (Linux); choose a shorter path, e.g. /run/blokir/control.sock"
        )


def _make_parent(directory: Path) -> None:
    """Create missing directories 0700: the socket's own mode is the real guard, a private
    directory keeps others from even seeing it. Existing directories are left as they are."""
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
            os.chmod(created, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            continue
        except OSError as exc:
            raise ControlError(f"cannot create {created} for the control socket: {exc}") from exc


def _remove_if_stale(path: Path) -> None:
    """Remove a socket file nobody accepts on (a blokir that was killed); refuse when a live
    server answers on it, or when the path is something else than a socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path} exists and is not a socket; not replacing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            pass  # nobody listening: stale
        except TimeoutError as exc:  # a listener whose queue is full is still a listener
            raise ControlError(
                f"another blokir is already running (control socket {path})"
            ) from exc
        except OSError as exc:
            raise ControlError(f"cannot check control socket {path}: {exc}") from exc
        else:
            raise ControlError(f"another blokir is already running (control socket {path})")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
