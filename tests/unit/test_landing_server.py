"""The landing server on a loopback socket: hostile and slow clients, the connection cap,
keep-alive, and the TLS server-name refusal. Each hostile case must get its status and leave
the server answering the next client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from resolver.config import Config
from resolver.landing.process import bind_listeners
from resolver.landing.server import (
    MAX_REQUESTS_PER_CONNECTION,
    Landing,
    Server,
    refuse_foreign_names,
    tls_context,
)
from tests.unit.landing_support import BLOCKED, OWN_NAME, landing_config

HOST = "127.0.0.1"


class Running:
    """A landing Server on its own event loop thread."""

    def __init__(self, config: Config) -> None:
        self.landing = Landing(config, str(config.blocking.index_path))
        self.context = tls_context(config)
        if self.context is not None:
            refuse_foreign_names(self.context, self.landing)
        self.plain = bind_listeners(((HOST, 0),))
        self.tls = bind_listeners(((HOST, 0),)) if self.context is not None else []
        self.port = self.plain[0].getsockname()[1]
        self.tls_port = self.tls[0].getsockname()[1] if self.tls else 0
        self.loop = asyncio.new_event_loop()
        self.server = Server(self.landing)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start(self.plain, self.tls, self.context))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.drain(0.5), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        for sock in self.plain + self.tls:
            sock.close()

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        return self.landing.stats


def running_with(tmp_path: Path, **landing: object) -> Iterator[Running]:
    config = landing_config(tmp_path)
    config = replace(config, landing=replace(config.landing, **landing))
    server = Running(config)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    yield from running_with(tmp_path, header_timeout=0.5, max_connections=4)


def exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send `data`, read until the server closes (or `timeout`)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def get(host: str, extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + extra + b"\r\n"


def still_serves(server: Running) -> None:
    reply = exchange(server.port, get(BLOCKED, b"Connection: close\r\n"))
    assert status_of(reply) == 451


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # Request smuggling: both framings, or two different lengths (RFC 9112 section 6.3).
        (get(BLOCKED, b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400),
        (get(BLOCKED, b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"), 400),
        (get(BLOCKED, b"Content-Length: 5\r\nContent-Length: 6\r\n"), 400),
        (get(BLOCKED, b"Transfer-Encoding : chunked\r\n"), 400),
        (get(BLOCKED, b"Host: second.example\r\n"), 400),
        (b"GET / HTTP/1.1\r\nHost: \xff\xfe\xc3(.example\r\n\r\n", 400),
        (get("x" * 2000 + ".example"), 400),
        (get("<script>.example"), 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n", 400),
        (b"GET /\x00 HTTP/1.1\r\nHost: a.example\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a.example\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (get(BLOCKED, method=b"DELETE"), 405),
    ],
)
def test_hostile_requests(server: Running, request_bytes: bytes, status: int) -> None:
    reply = exchange(server.port, request_bytes)
    assert status_of(reply) == status, reply[:200]
    assert b"Connection: close" in reply
    assert b"judi" not in reply  # no page for a request that was refused
    still_serves(server)
    reason = {400: "bad_request", 431: "header_too_large", 405: "method"}[status]
    assert server.stats.rejected[reason] == 1


def test_a_request_head_too_slow_gets_408(server: Running) -> None:
    started = time.monotonic()
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: ")
        time.sleep(0.2)
        sock.sendall(b"judi")  # trickling bytes does not extend the deadline
        reply = sock.recv(4096)
    assert status_of(reply) == 408 and time.monotonic() - started < 2
    assert server.stats.rejected["timeout"] == 1
    still_serves(server)


def test_an_idle_connection_is_closed_without_an_answer(server: Running) -> None:
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        assert sock.recv(4096) == b""  # closed after header_timeout, nothing sent


def test_connections_over_the_cap_are_closed_at_once(server: Running) -> None:
    held = [socket.create_connection((HOST, server.port)) for _ in range(4)]
    try:
        deadline = time.monotonic() + 2
        while server.stats.connections < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stats.connections == 4
        with socket.create_connection((HOST, server.port), timeout=2) as extra:
            extra.sendall(get(BLOCKED))
            with contextlib.suppress(ConnectionResetError):
                assert extra.recv(4096) == b""
        assert server.stats.rejected["connection_cap"] == 1
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 2
    while server.stats.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    still_serves(server)


def test_keep_alive_and_head(server: Running) -> None:
    with socket.create_connection((HOST, server.port), timeout=3) as sock:
        sock.sendall(get(BLOCKED) + get("www.example.org", method=b"HEAD"))
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
    first, second = data.split(b"HTTP/1.1 200", 1)
    assert first.startswith(b"HTTP/1.1 451 Unavailable For Legal Reasons\r\n")
    assert b"</html>" in first and b"Cache-Control: no-store" in first
    assert second.endswith(b"\r\n\r\n") and b"Content-Length: " in second  # HEAD: no body
    assert server.stats.requests == {("gambling", "http"): 1, ("not_blocked", "http"): 1}


def test_a_request_body_is_not_read_and_the_connection_closes(server: Running) -> None:
    smuggled = get("www.example.org", method=b"GET")
    body = b"x" * 10 + smuggled
    reply = exchange(server.port, get(BLOCKED, f"Content-Length: {len(body)}\r\n".encode()) + body)
    assert reply.count(b"HTTP/1.1 ") == 1 and status_of(reply) == 451
    assert b"Connection: close" in reply


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Running]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={OWN_NAME}",
            "-addext",
            f"subjectAltName=DNS:{OWN_NAME}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr[-200:]!r}")
    yield from running_with(
        tmp_path, tls_listen=((HOST, 0),), certificate=cert, key=key, server_names=(OWN_NAME,)
    )


def tls_get(server: Running, name: str) -> bytes:
    context = ssl.create_default_context(cafile=str(server.landing.config.landing.certificate))
    raw = socket.create_connection((HOST, server.tls_port), timeout=3)
    with raw, context.wrap_socket(raw, server_hostname=name) as sock:
        sock.sendall(get(name, b"Connection: close\r\n"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_tls_for_our_own_name_is_served(tls_server: Running) -> None:
    reply = tls_get(tls_server, OWN_NAME)
    assert status_of(reply) == 200 and b"Block notices" in reply
    assert tls_server.stats.requests == {("landing", "https"): 1}


def test_tls_for_a_blocked_name_ends_with_an_alert_at_once(tls_server: Running) -> None:
    started = time.monotonic()
    with pytest.raises(ssl.SSLError) as caught:
        tls_get(tls_server, f"www.{BLOCKED}")
    assert "UNRECOGNIZED_NAME" in str(caught.value).upper()
    assert time.monotonic() - started < 1.0
    assert tls_server.stats.tls_refused == {"gambling": 1}
    with pytest.raises(ssl.SSLError):
        tls_get(tls_server, "www.example.org")
    assert tls_server.stats.tls_refused == {"gambling": 1, "not_blocked": 1}
    assert status_of(tls_get(tls_server, OWN_NAME)) == 200  # and it still serves


def test_keep_alive_is_bounded_and_the_last_answer_says_close(server: Running) -> None:
    with socket.create_connection((HOST, server.port), timeout=3) as sock:
        sock.sendall(get("www.example.org", method=b"HEAD") * (MAX_REQUESTS_PER_CONNECTION + 5))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    answers = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == MAX_REQUESTS_PER_CONNECTION
    assert all(b"Connection: close" not in a for a in answers[:-1])
    assert b"Connection: close" in answers[-1]
