"""resolver.control: the Unix-socket control channel, with real sockets in a private directory.

Socket paths are kept short on purpose (Linux allows 107 bytes), so the tests use their own
directory under /tmp rather than pytest's long tmp_path. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resolver import control
from resolver.control import MAX_PATH_BYTES, MAX_REQUEST, ControlError, ControlServer, request

WAIT = 5.0  # seconds: upper bound of every wait in these tests


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="blkctl-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def echo(message: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "echo": message}


@pytest.fixture
def served(short_dir: Path) -> Iterator[tuple[ControlServer, Path]]:
    path = short_dir / "control.sock"
    server = ControlServer(path, echo)
    server.start()
    try:
        yield server, path
    finally:
        server.close()


def raw_exchange(path: Path, payload: bytes) -> dict[str, Any]:
    """Send bytes as they are, read the one reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.connect(str(path))
        client.sendall(payload)
        reply = b""
        while not reply.endswith(b"\n"):
            block = client.recv(65536)
            if not block:
                break
            reply += block
    result: dict[str, Any] = json.loads(reply)
    return result


def stale_socket_file(path: Path) -> None:
    """What a killed blokir leaves: a socket file with nobody listening."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


# --- the server -------------------------------------------------------------------------------


def test_round_trip_and_close_removes_socket(served: tuple[ControlServer, Path]) -> None:
    server, path = served
    message = {"command": "status", "verbose": True, "names": ["é.example"]}
    assert request(path, message, timeout=WAIT) == {"ok": True, "echo": message}
    # Many requests, one after the other, on fresh connections.
    for number in range(20):
        assert request(path, {"n": number}, timeout=WAIT)["echo"] == {"n": number}
    server.close()
    assert not path.exists()
    server.close()  # twice is fine


def test_socket_mode_is_owner_only(served: tuple[ControlServer, Path]) -> None:
    _, path = served
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_socket_mode_can_be_chosen(short_dir: Path) -> None:
    server = ControlServer(short_dir / "c.sock", echo, mode=0o660)
    server.start()
    try:
        assert stat.S_IMODE(os.stat(short_dir / "c.sock").st_mode) == 0o660
    finally:
        server.close()


def test_status_answered_while_reload_runs(short_dir: Path) -> None:
    release = threading.Event()
    reload_started = threading.Event()

    def handler(message: dict[str, Any]) -> dict[str, Any]:
        if message["command"] == "reload":
            reload_started.set()
            release.wait(WAIT)
            return {"ok": True, "reloaded": release.is_set()}
        return {"ok": True, "status": "serving"}

    path = short_dir / "c.sock"
    server = ControlServer(path, handler)
    server.start()
    replies: list[dict[str, Any]] = []
    reloader = threading.Thread(
        target=lambda: replies.append(request(path, {"command": "reload"}, timeout=WAIT))
    )
    try:
        reloader.start()
        assert reload_started.wait(WAIT)
        started = time.monotonic()
        assert request(path, {"command": "status"}, timeout=WAIT)["status"] == "serving"
        assert time.monotonic() - started < 1.0  # not queued behind the reload
        assert replies == []  # the reload is really still running
        release.set()
        reloader.join(WAIT)
        assert replies == [{"ok": True, "reloaded": True}]
    finally:
        release.set()
        reloader.join(WAIT)
        server.close()


def test_stale_socket_file_is_replaced(short_dir: Path) -> None:
    path = short_dir / "c.sock"
    stale_socket_file(path)
    server = ControlServer(path, echo)
    server.start()
    try:
        assert request(path, {"command": "status"}, timeout=WAIT)["ok"] is True
    finally:
        server.close()


def test_second_server_is_refused(served: tuple[ControlServer, Path]) -> None:
    _, path = served
    second = ControlServer(path, echo)
    with pytest.raises(ControlError, match="another blokir is already running") as refused:
        second.start()
    assert str(path) in str(refused.value)
    # The first one is untouched and still answers.
    assert request(path, {"command": "status"}, timeout=WAIT)["ok"] is True


def test_path_that_is_not_a_socket_is_not_replaced(short_dir: Path) -> None:
    path = short_dir / "c.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(path, echo).start()
    assert path.read_text() == "precious"


def test_missing_parent_created_private(short_dir: Path) -> None:
    path = short_dir / "run" / "blokir" / "c.sock"
    server = ControlServer(path, echo)
    server.start()
    try:
        for directory in (short_dir / "run", short_dir / "run" / "blokir"):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert request(path, {}, timeout=WAIT)["ok"] is True
    finally:
        server.close()


def test_existing_parent_mode_left_alone(short_dir: Path) -> None:
    os.chmod(short_dir, 0o755)
    server = ControlServer(short_dir / "c.sock", echo)
    server.start()
    server.close()
    assert stat.S_IMODE(os.stat(short_dir).st_mode) == 0o755


def test_bad_requests_get_an_error_reply(served: tuple[ControlServer, Path]) -> None:
    _, path = served
    reply = raw_exchange(path, b"{not json\n")
    assert reply["ok"] is False and "not JSON" in reply["error"]
    reply = raw_exchange(path, b'["status"]\n')
    assert reply["ok"] is False and "JSON object" in reply["error"]
    reply = raw_exchange(path, b"\xff\xfe\n")
    assert reply["ok"] is False and "UTF-8" in reply["error"]
    reply = raw_exchange(path, b'{"pad": "' + b"x" * (MAX_REQUEST + 10) + b'"}\n')
    assert reply["ok"] is False and "over" in reply["error"]
    # A request line without its newline, then end of stream, is still a request.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.connect(str(path))
        client.sendall(b'{"command": "status"}')
        client.shutdown(socket.SHUT_WR)
        assert json.loads(client.recv(65536))["echo"] == {"command": "status"}
    # And the server still serves normal requests.
    assert request(path, {"command": "status"}, timeout=WAIT)["ok"] is True


def test_slow_client_times_out(
    served: tuple[ControlServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = served
    monkeypatch.setattr(control, "READ_TIMEOUT", 0.2)
    started = time.monotonic()
    reply = raw_exchange(path, b'{"command": ')  # never finished
    assert reply["ok"] is False and "no complete request" in reply["error"]
    assert time.monotonic() - started < WAIT
    # Dripping a byte at a time does not buy more time: the deadline is for the whole line.
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(0.05)
        client.connect(str(path))
        answer = b""
        for _ in range(100):  # 5 s at most
            client.sendall(b" ")
            try:
                answer = client.recv(65536)
                break
            except TimeoutError:
                continue
    assert b"no complete request" in answer
    assert time.monotonic() - started < 2.0


def test_handler_failures_do_not_kill_the_server(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(message: dict[str, Any]) -> dict[str, Any]:
        if message["command"] == "explode":
            raise RuntimeError("compile blew up")
        if message["command"] == "unserialisable":
            return {"ok": True, "value": object()}
        if message["command"] == "not-a-dict":
            return ["ok"]  # type: ignore[return-value]
        return {"ok": True}

    path = short_dir / "c.sock"
    server = ControlServer(path, handler)
    server.start()
    try:
        reply = request(path, {"command": "explode"}, timeout=WAIT)
        assert reply["ok"] is False and "compile blew up" in reply["error"]
        assert "compile blew up" in caplog.text
        for command in ("unserialisable", "not-a-dict"):
            assert request(path, {"command": command}, timeout=WAIT)["ok"] is False
        assert request(path, {"command": "status"}, timeout=WAIT) == {"ok": True}
    finally:
        server.close()


def test_close_leaves_someone_elses_socket(short_dir: Path) -> None:
    path = short_dir / "c.sock"
    server = ControlServer(path, echo)
    server.start()
    path.unlink()  # e.g. an operator removed it and another blokir now owns the path
    stale_socket_file(path)
    server.close()
    assert path.exists()


def test_too_long_path_names_the_config_key(short_dir: Path) -> None:
    path = short_dir / ("x" * (MAX_PATH_BYTES + 1 - len(str(short_dir)) - 1))
    assert len(os.fsencode(path)) == MAX_PATH_BYTES + 1
    with pytest.raises(ControlError, match=r"\[updates\] control_socket"):
        ControlServer(path, echo).start()
    with pytest.raises(ControlError, match=r"\[updates\] control_socket"):
        request(path, {}, timeout=WAIT)
    # One byte less is fine.
    server = ControlServer(Path(str(path)[:-1]), echo)
    server.start()
    server.close()


# --- request() when something is wrong ---------------------------------------------------------


def test_request_without_server(short_dir: Path) -> None:
    path = short_dir / "c.sock"
    with pytest.raises(ControlError) as missing:
        request(path, {"command": "reload"}, timeout=WAIT)
    assert str(missing.value) == (f"no blokir is running with this config: {path} does not exist")
    stale_socket_file(path)
    with pytest.raises(ControlError, match="connection refused"):
        request(path, {"command": "reload"}, timeout=WAIT)


class FakeServer:
    """A listener that answers each connection with `reply` bytes, or never, then closes."""

    def __init__(self, path: Path, reply: bytes | None, *, read_first: bool = True) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.listener.settimeout(WAIT)
        self.reply = reply
        self.read_first = read_first
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve)
        self.thread.start()

    def serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(WAIT)
            if self.read_first:
                connection.recv(65536)
            if self.reply is not None:
                connection.sendall(self.reply)
            else:
                self.done.wait(WAIT)

    def close(self) -> None:
        self.done.set()
        self.thread.join(WAIT)
        self.listener.close()


@pytest.mark.parametrize(
    ("reply", "read_first", "expected"),
    [
        (None, True, "did not answer within 0.3 s"),
        (b"", True, "closed without answering"),
        (b"", False, "closed without answering"),  # unread request: a reset, not an EOF
        (b"<html>\n", True, "bad reply from blokir on .*: not JSON"),
        (b'"ok"\n', True, "not a JSON object"),
    ],
)
def test_request_error_texts(
    short_dir: Path, reply: bytes | None, read_first: bool, expected: str
) -> None:
    path = short_dir / "c.sock"
    fake = FakeServer(path, reply, read_first=read_first)
    try:
        started = time.monotonic()
        with pytest.raises(ControlError, match=expected):
            request(path, {"command": "status"}, timeout=0.3)
        assert time.monotonic() - started < WAIT
    finally:
        fake.close()
