"""resolver.sources against a programmable HTTP server on 127.0.0.1 (real sockets, no sleeping).

Each test scripts the server's answers in order (the last one repeats), fetches, and checks the
outcome, the reason key, the saved state and, for every failure, that the last good copy is
byte for byte what it was and that no temporary file is left in the state directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import random
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import libarchive
import pytest

from resolver import __version__
from resolver.compile import compile_lists
from resolver.lists.model import ListSpec
from resolver.sources import (
    MAX_BACKOFF,
    FetchPolicy,
    FetchResult,
    fetch,
    is_url,
    load_state,
    source_paths,
)

NAME = "regulator"
LIST_V1 = b"judi-satu.example\njudi-dua.example\n"
LIST_V2 = b"judi-satu.example\njudi-dua.example\njudi-tiga.example\n"
ETAG_V1 = '"v1-abc"'
DATE_V1 = "Wed, 01 Jan 2025 00:00:00 GMT"
# Short timeouts keep the slow-server tests fast; the server's stalls are far longer.
FAST = FetchPolicy(timeout=0.3, retries=2, backoff=0.5)
STALL = 3.0  # seconds a stalling response waits (released at teardown)

Respond = Callable[["Handler"], None]


@dataclass
class Script:
    """The server's answers in order; the last one repeats. Records every request's headers."""

    answers: list[Respond] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self, headers: dict[str, str]) -> Respond:
        with self.lock:
            self.requests.append(headers)
            index = min(len(self.requests), len(self.answers)) - 1
            return self.answers[index]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked bodies need it
    server: Server

    def do_GET(self) -> None:
        headers = {key.lower(): value for key, value in self.headers.items()}
        headers["path"] = self.path
        self.server.script.next_answer(headers)(self)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    script: Script


# --- scripted answers ---------------------------------------------------------------------


def ok(
    body: bytes, *, etag: str | None = None, last_modified: str | None = None, gzipped: bool = False
) -> Respond:
    def respond(handler: Handler) -> None:
        payload = gzip.compress(body) if gzipped else body
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(payload)))
        if etag:
            handler.send_header("ETag", etag)
        if last_modified:
            handler.send_header("Last-Modified", last_modified)
        if gzipped:
            handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(payload)

    return respond


def raw_body(payload: bytes, headers: dict[str, str]) -> Respond:
    """200 with exactly these bytes and headers (for gzip edge cases)."""

    def respond(handler: Handler) -> None:
        handler.send_response(200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(payload)

    return respond


def conditional(body: bytes, etag: str, last_modified: str) -> Respond:
    """304 when the request carries both validators of the current version, else 200."""

    def respond(handler: Handler) -> None:
        if (
            handler.headers.get("If-None-Match") == etag
            and handler.headers.get("If-Modified-Since") == last_modified
        ):
            status(304)(handler)
        else:
            ok(body, etag=etag, last_modified=last_modified)(handler)

    return respond


def status(code: int, headers: dict[str, str] | None = None) -> Respond:
    def respond(handler: Handler) -> None:
        handler.send_response(code)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if code != 304:
            handler.send_header("Content-Length", "0")
        handler.send_header("Connection", "close")
        handler.end_headers()

    return respond


def lying_length(sent: bytes, declared: int) -> Respond:
    """Declares `declared` bytes, sends `sent`, closes: a connection lost mid-body."""

    def respond(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(declared))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(sent)
        handler.wfile.flush()
        handler.close_connection = True

    return respond


def chunked(chunks: list[bytes], *, finish: bool = True) -> Respond:
    """Chunked transfer coding (RFC 9112 section 7.1): no Content-Length at all."""

    def respond(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for chunk in chunks:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if finish:
            handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
        handler.close_connection = True

    return respond


def stall_before_headers(handler: Handler) -> None:
    handler.server.script.stop.wait(STALL)


def stall_mid_body(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(LIST_V2)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(LIST_V2[:10])
    handler.wfile.flush()
    handler.server.script.stop.wait(STALL)


def huge_declared_then_stall(handler: Handler) -> None:
    """Declares 10 MB and sends nothing: only a client that trusts the header fails fast."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(10_000_000))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.flush()
    handler.server.script.stop.wait(STALL)


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests go straight to loopback, whatever proxy the machine is configured with."""
    for variable in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)


@pytest.fixture
def server() -> Iterator[tuple[Script, str]]:
    script = Script()
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.script = script
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield script, f"http://127.0.0.1:{httpd.server_address[1]}/lists/domains_isp"
    finally:
        script.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class Sleeps:
    """Records the back-off delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def get(
    url: str, state_dir: Path, policy: FetchPolicy = FAST, sleeps: Sleeps | None = None
) -> FetchResult:
    return fetch(url, state_dir, NAME, policy, sleep=sleeps if sleeps is not None else Sleeps())


def prime(script: Script, url: str, state_dir: Path) -> bytes:
    """A first good copy (LIST_V1); returns its bytes as read back from disk."""
    script.answers = [ok(LIST_V1, etag=ETAG_V1, last_modified=DATE_V1)]
    result = get(url, state_dir)
    assert result.outcome == "updated", result.detail
    script.requests.clear()
    return Path(result.state.path).read_bytes()


def assert_copy_intact(state_dir: Path, url: str, expected: bytes) -> None:
    copy, _ = source_paths(state_dir, NAME)
    assert copy.read_bytes() == expected
    state = load_state(state_dir, NAME, url)
    assert state is not None, "the last good copy is no longer usable"
    assert state.sha256 == hashlib.sha256(expected).hexdigest()
    assert state.size == len(expected)


def assert_no_temporaries(state_dir: Path) -> None:
    leftovers = sorted(p.name for p in state_dir.iterdir() if p.name.startswith("."))
    assert leftovers == []


# --- success, conditional requests ------------------------------------------------------------


def test_first_fetch_writes_copy_and_state(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    state_dir = tmp_path / "state" / "lists"  # created on demand
    script.answers = [ok(LIST_V1, etag=ETAG_V1, last_modified=DATE_V1)]
    before = time.time()
    result = get(url, state_dir)
    assert (result.outcome, result.reason, result.attempts) == ("updated", "", 1)
    copy, state_file = source_paths(state_dir, NAME)
    assert copy.read_bytes() == LIST_V1
    assert result.state.path == str(copy)
    assert result.state.sha256 == hashlib.sha256(LIST_V1).hexdigest()
    assert result.state.size == len(LIST_V1)
    assert (result.state.etag, result.state.last_modified) == (ETAG_V1, DATE_V1)
    assert result.state.fetched_at >= before and result.state.checked_at >= before
    assert (result.state.last_result, result.state.last_error) == ("updated", "")
    saved = json.loads(state_file.read_text())
    assert saved["sha256"] == result.state.sha256 and saved["url"] == url
    assert load_state(state_dir, NAME, url) == result.state
    # Nothing conditional without a copy; our User-Agent; gzip offered.
    (request,) = script.requests
    assert "if-none-match" not in request and "if-modified-since" not in request
    assert request["user-agent"] == f"blokir/{__version__}"
    assert request["accept-encoding"] == "gzip"
    assert_no_temporaries(state_dir)


def test_conditional_request_and_304(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    copy, _ = source_paths(tmp_path, NAME)
    os.utime(copy, (1_000_000, 1_000_000))  # a 304 must not touch the copy, mtime included
    checked_before = load_state(tmp_path, NAME, url)
    assert checked_before is not None
    script.answers = [conditional(LIST_V2, ETAG_V1, DATE_V1)]
    result = get(url, tmp_path)
    assert (result.outcome, result.reason, result.attempts) == ("not_modified", "", 1)
    (request,) = script.requests
    assert request["if-none-match"] == ETAG_V1
    assert request["if-modified-since"] == DATE_V1
    assert copy.read_bytes() == first and copy.stat().st_mtime == 1_000_000
    assert result.state.checked_at > checked_before.checked_at
    assert result.state.fetched_at == checked_before.fetched_at
    assert load_state(tmp_path, NAME, url) == result.state


def test_304_updates_validators(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    prime(script, url, tmp_path)
    script.answers = [status(304, {"ETag": '"v1-renamed"'})]
    result = get(url, tmp_path)
    assert result.outcome == "not_modified"
    assert result.state.etag == '"v1-renamed"' and result.state.last_modified == DATE_V1


def test_new_content_replaces_copy(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    prime(script, url, tmp_path)
    script.answers = [ok(LIST_V2)]  # no validators this time: the old ones must go
    result = get(url, tmp_path)
    assert result.outcome == "updated"
    assert_copy_intact(tmp_path, url, LIST_V2)
    assert result.state.etag is None and result.state.last_modified is None


def test_same_bytes_without_304_is_not_modified(server: tuple[Script, str], tmp_path: Path) -> None:
    """A server that ignores validators: same bytes must not rewrite the copy (its mtime decides
    whether the index is recompiled)."""
    script, url = server
    prime(script, url, tmp_path)
    copy, _ = source_paths(tmp_path, NAME)
    os.utime(copy, (1_000_000, 1_000_000))
    script.answers = [ok(LIST_V1, etag='"v1-other-etag"')]
    result = get(url, tmp_path)
    assert result.outcome == "not_modified"
    assert copy.stat().st_mtime == 1_000_000
    assert result.state.etag == '"v1-other-etag"'
    assert_no_temporaries(tmp_path)


def test_redirect_followed(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    script.answers = [status(302, {"Location": "/moved/here"}), ok(LIST_V1)]
    result = get(url, tmp_path)
    assert result.outcome == "updated", result.detail
    assert [r["path"] for r in script.requests] == ["/lists/domains_isp", "/moved/here"]
    assert result.state.url == url  # the configured URL, not where it led


def test_redirect_to_file_url_refused(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [status(302, {"Location": "file:///etc/passwd"})]
    result = get(url, tmp_path)
    assert (result.outcome, result.reason, result.attempts) == ("failed", "bad_url", 1)
    assert_copy_intact(tmp_path, url, first)


# --- retries ----------------------------------------------------------------------------------


def test_500_then_success_retries_with_backoff(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    script.answers = [status(500), status(503), ok(LIST_V1)]
    sleeps = Sleeps()
    result = get(url, tmp_path, sleeps=sleeps)
    assert (result.outcome, result.attempts) == ("updated", 3)
    assert sleeps.delays == [0.5, 1.0]
    assert_copy_intact(tmp_path, url, LIST_V1)


def test_500_forever_keeps_old_copy(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [status(500)]
    sleeps = Sleeps()
    policy = FetchPolicy(timeout=0.3, retries=3, backoff=20.0)
    result = get(url, tmp_path, policy, sleeps)
    assert (result.outcome, result.reason, result.attempts) == ("failed", "http_500", 4)
    assert len(script.requests) == 4
    assert sleeps.delays == [20.0, MAX_BACKOFF, MAX_BACKOFF]  # doubling, capped
    assert "500" in result.detail and "4 attempts" in result.detail
    assert_copy_intact(tmp_path, url, first)
    state = load_state(tmp_path, NAME, url)
    assert state is not None
    assert (state.last_result, state.etag) == ("http_500", ETAG_V1)
    assert "500" in state.last_error
    assert_no_temporaries(tmp_path)
    # The next success clears the error.
    script.answers = [ok(LIST_V2)]
    assert get(url, tmp_path).state.last_error == ""


def test_404_is_not_retried(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [status(404)]
    sleeps = Sleeps()
    result = get(url, tmp_path, sleeps=sleeps)
    assert (result.outcome, result.reason, result.attempts) == ("failed", "http_404", 1)
    assert len(script.requests) == 1 and sleeps.delays == []
    assert_copy_intact(tmp_path, url, first)


# --- broken bodies ----------------------------------------------------------------------------


def test_truncated_by_content_length(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [lying_length(LIST_V2[:20], declared=len(LIST_V2))]
    result = get(url, tmp_path)
    assert (result.outcome, result.reason) == ("failed", "truncated")
    assert result.attempts == FAST.retries + 1  # truncation is worth retrying
    assert "20 of" in result.detail
    assert_copy_intact(tmp_path, url, first)
    assert_no_temporaries(tmp_path)


def test_truncated_chunked_body(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [chunked([LIST_V2[:30], LIST_V2[30:]], finish=False)]
    result = get(url, tmp_path)
    assert (result.outcome, result.reason) == ("failed", "truncated")
    assert_copy_intact(tmp_path, url, first)
    assert_no_temporaries(tmp_path)


def test_complete_chunked_body(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    script.answers = [chunked([LIST_V2[:30], LIST_V2[30:]])]
    assert get(url, tmp_path).outcome == "updated"
    assert_copy_intact(tmp_path, url, LIST_V2)


def test_too_large_by_header_fails_before_reading(
    server: tuple[Script, str], tmp_path: Path
) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [huge_declared_then_stall]
    result = get(url, tmp_path, FetchPolicy(timeout=0.3, retries=2, max_bytes=1_000_000))
    # Reading the (never sent) body would have ended in a timeout instead.
    assert (result.outcome, result.reason, result.attempts) == ("failed", "too_large", 1)
    assert_copy_intact(tmp_path, url, first)


def test_too_large_while_streaming(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [chunked([b"a.example\n" * 60] * 3)]  # 1800 bytes, no Content-Length
    result = get(url, tmp_path, FetchPolicy(timeout=0.3, retries=2, max_bytes=1000))
    assert (result.outcome, result.reason, result.attempts) == ("failed", "too_large", 1)
    assert_copy_intact(tmp_path, url, first)
    assert_no_temporaries(tmp_path)


def test_exactly_max_bytes_is_accepted(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    body = b"a.example\n" * 100
    script.answers = [chunked([body])]
    result = get(url, tmp_path, FetchPolicy(timeout=0.3, max_bytes=len(body)))
    assert result.outcome == "updated", result.detail


def test_empty_body(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [ok(b"")]
    result = get(url, tmp_path)
    assert (result.outcome, result.reason, result.attempts) == ("failed", "empty", 1)
    assert_copy_intact(tmp_path, url, first)
    assert_no_temporaries(tmp_path)


# --- timeouts ---------------------------------------------------------------------------------


def test_timeout_before_headers(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [stall_before_headers]
    started = time.monotonic()
    result = get(url, tmp_path, FetchPolicy(timeout=0.3, retries=1))
    elapsed = time.monotonic() - started
    assert (result.outcome, result.reason, result.attempts) == ("failed", "timeout", 2)
    assert elapsed < STALL  # it gave up on its own, long before the server would answer
    assert_copy_intact(tmp_path, url, first)


def test_timeout_mid_body(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [stall_mid_body]
    started = time.monotonic()
    result = get(url, tmp_path, FetchPolicy(timeout=0.3, retries=0))
    assert (result.outcome, result.reason, result.attempts) == ("failed", "timeout", 1)
    assert time.monotonic() - started < STALL
    assert_copy_intact(tmp_path, url, first)
    assert_no_temporaries(tmp_path)


def test_connection_refused_is_network(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    result = get(f"http://127.0.0.1:{port}/x", tmp_path, sleeps=sleeps)
    assert (result.outcome, result.reason, result.attempts) == ("failed", "network", 3)
    assert len(sleeps.delays) == 2


# --- gzip -------------------------------------------------------------------------------------


def test_gzip_body_is_stored_decoded(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    script.answers = [ok(LIST_V2, gzipped=True)]
    result = get(url, tmp_path)
    assert result.outcome == "updated", result.detail
    assert_copy_intact(tmp_path, url, LIST_V2)


def test_gzip_multi_member(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    payload = gzip.compress(LIST_V1) + gzip.compress(b"judi-tiga.example\n")
    script.answers = [raw_body(payload, {"Content-Encoding": "gzip"})]
    assert get(url, tmp_path).outcome == "updated"
    assert_copy_intact(tmp_path, url, LIST_V2)


def test_gzip_bomb_is_too_large(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [ok(b"\n" * 5_000_000, gzipped=True)]  # about 5 KB on the wire
    result = get(url, tmp_path, FetchPolicy(timeout=0.3, max_bytes=100_000))
    assert (result.outcome, result.reason) == ("failed", "too_large")
    assert_copy_intact(tmp_path, url, first)
    assert_no_temporaries(tmp_path)


def test_gzip_cut_short_is_truncated(server: tuple[Script, str], tmp_path: Path) -> None:
    """Content-Length matches, but the gzip stream itself ends early (no trailer)."""
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [raw_body(gzip.compress(LIST_V2)[:-6], {"Content-Encoding": "gzip"})]
    result = get(url, tmp_path)
    assert (result.outcome, result.reason) == ("failed", "truncated")
    assert_copy_intact(tmp_path, url, first)


def test_corrupt_gzip_and_unknown_encoding(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [raw_body(b"not gzip at all", {"Content-Encoding": "gzip"})]
    assert get(url, tmp_path).reason == "bad_encoding"
    script.answers = [raw_body(b"x", {"Content-Encoding": "br"})]
    assert get(url, tmp_path).reason == "bad_encoding"
    assert_copy_intact(tmp_path, url, first)


def test_gzip_can_be_turned_off(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    script.answers = [ok(LIST_V1)]
    get(url, tmp_path, FetchPolicy(timeout=0.3, accept_gzip=False))
    assert script.requests[0]["accept-encoding"] == "identity"


# --- state ------------------------------------------------------------------------------------


def test_load_state_rejects_damage(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    prime(script, url, tmp_path)
    copy, state_file = source_paths(tmp_path, NAME)
    good_json = state_file.read_text()
    assert load_state(tmp_path, NAME, url) is not None
    assert load_state(tmp_path, NAME, url + "?other") is None  # written for another URL

    state_file.write_text(good_json[: len(good_json) // 2])  # cut short
    assert load_state(tmp_path, NAME, url) is None
    state_file.write_text("[]")
    assert load_state(tmp_path, NAME, url) is None
    wrong_type = json.loads(good_json)
    wrong_type["size"] = "35"
    state_file.write_text(json.dumps(wrong_type))
    assert load_state(tmp_path, NAME, url) is None
    state_file.write_text(good_json)
    assert load_state(tmp_path, NAME, url) is not None

    copy.write_bytes(LIST_V1.replace(b"satu", b"SATU"))  # same size, other bytes
    assert load_state(tmp_path, NAME, url) is None
    assert load_state(tmp_path, NAME, url, verify=False) is not None  # the cheap check misses it
    copy.write_bytes(LIST_V1 + b"x.example\n")
    assert load_state(tmp_path, NAME, url) is None
    assert load_state(tmp_path, NAME, url, verify=False) is None
    copy.unlink()
    assert load_state(tmp_path, NAME, url) is None
    state_file.unlink()
    assert load_state(tmp_path, NAME, url) is None


def test_damaged_copy_is_fetched_unconditionally(
    server: tuple[Script, str], tmp_path: Path
) -> None:
    """A 304 must never bless a copy that is not the one the validators belong to."""
    script, url = server
    prime(script, url, tmp_path)
    copy, _ = source_paths(tmp_path, NAME)
    copy.write_bytes(b"garbage\n")
    script.answers = [conditional(LIST_V1, ETAG_V1, DATE_V1)]
    result = get(url, tmp_path)
    assert result.outcome == "updated"
    assert "if-none-match" not in script.requests[0]
    assert_copy_intact(tmp_path, url, LIST_V1)


def test_failing_new_url_keeps_old_urls_state(server: tuple[Script, str], tmp_path: Path) -> None:
    """A typo in a changed URL: reverting the config finds the old copy still usable."""
    script, url = server
    first = prime(script, url, tmp_path)
    script.answers = [status(404)]
    result = get(url + "-typo", tmp_path)
    assert (result.outcome, result.reason) == ("failed", "http_404")
    assert result.state.url == url + "-typo" and result.state.sha256 == ""
    assert_copy_intact(tmp_path, url, first)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://lists.example/domains",
        "FILE:///etc/hosts",
        "http://",
        "https:///no-host",
        "http://lists.example:99999/x",
        "http://lists.example/a b",
        "/etc/blokir/lists/domains.txt",
        "",
    ],
)
def test_bad_url(url: str, tmp_path: Path) -> None:
    sleeps = Sleeps()
    result = get(url, tmp_path, sleeps=sleeps)
    assert (result.outcome, result.reason, result.attempts) == ("failed", "bad_url", 0)
    assert sleeps.delays == []
    assert load_state(tmp_path, NAME, url) is None


def test_is_url() -> None:
    assert is_url("http://a.example/x") and is_url("HTTPS://a.example/x")
    assert not is_url("ftp://a.example/x")
    assert not is_url("lists/http.txt") and not is_url("/srv/https://x") and not is_url("")


def test_source_paths_stay_inside_state_dir(tmp_path: Path) -> None:
    assert source_paths(tmp_path, "trustpositif.domains_isp-2") == (
        tmp_path / "trustpositif.domains_isp-2.list",
        tmp_path / "trustpositif.domains_isp-2.json",
    )
    seen: set[Path] = set()
    for name in ["../../etc/passwd", "..", ".", "a/b", "a_b", "a b", "ünïcode", ""]:
        copy, state_file = source_paths(tmp_path, name)
        assert copy.parent == tmp_path and state_file.parent == tmp_path, name
        assert not copy.name.startswith("."), name  # would look like our temporary files
        assert copy not in seen, name  # different names never share a file
        seen.add(copy)


def test_stale_temporaries_removed(server: tuple[Script, str], tmp_path: Path) -> None:
    script, url = server
    copy, state_file = source_paths(tmp_path, NAME)
    stale = tmp_path / f".{copy.name}.dead.part"
    stale_state = tmp_path / f".{state_file.name}.dead.part"
    fresh = tmp_path / f".{copy.name}.running.part"  # another fetch still writing: left alone
    for leftover in (stale, stale_state, fresh):
        leftover.write_bytes(b"half")
    os.utime(stale, (1_000_000, 1_000_000))
    os.utime(stale_state, (1_000_000, 1_000_000))
    script.answers = [ok(LIST_V1)]
    assert get(url, tmp_path).outcome == "updated"
    assert not stale.exists() and not stale_state.exists() and fresh.exists()


# --- https ------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Script, str, Path]]:
    """An https server on 127.0.0.1 with a fresh self-signed certificate for that address."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    script = Script()
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.script = script
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield script, f"https://127.0.0.1:{httpd.server_address[1]}/domains", cert
    finally:
        script.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_https_verifies_the_certificate(
    tls_server: tuple[Script, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, url, cert = tls_server
    script.answers = [ok(LIST_V1)]
    state_dir = tmp_path / "state"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))  # only the default store
    untrusted = get(url, state_dir)
    assert (untrusted.outcome, untrusted.reason) == ("failed", "network")
    assert "certificate" in untrusted.detail
    assert script.requests == []  # nothing was sent over the unverified connection
    # Trusting that certificate (as an operator does for a re-signing proxy's CA) works.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusted = get(url, state_dir)
    assert trusted.outcome == "updated", trusted.detail
    assert_copy_intact(state_dir, url, LIST_V1)


def test_gzip_decoder_random_splits() -> None:
    """Any split of the wire bytes decodes to the same list, in bounded pieces."""
    from resolver.sources import CHUNK, _Gunzip

    rng = random.Random(5)
    for _ in range(12):
        size = rng.choice([1, 999, CHUNK - 1, CHUNK, CHUNK + 7, 2 * CHUNK + 3])
        members = [rng.randbytes(size // 4) + b"a" * (size - size // 4) for _ in range(2)]
        payload = b"".join(gzip.compress(member, rng.choice([1, 9])) for member in members)
        decoder, pieces, offset = _Gunzip("test"), [], 0
        while offset < len(payload):
            step = rng.randint(1, 100_000)
            pieces += list(decoder.inflate(payload[offset : offset + step]))
            offset += step
        assert b"".join(pieces) == b"".join(members)
        assert decoder.complete and max(map(len, pieces)) <= CHUNK


@pytest.mark.parametrize("kind", ["xz", "7z", "gzip-file"])
def test_compressed_list_by_url_is_kept_as_sent_and_compiles(
    server: tuple[Script, str], tmp_path: Path, kind: str
) -> None:
    """A mirror serving `domains_isp.7z` (or .xz, or a .gz file without Content-Encoding): the
    copy is the archive byte for byte, and compiling it reads the list inside."""
    script, url = server
    if kind == "xz":
        body = lzma.compress(LIST_V2)
    elif kind == "gzip-file":
        body = gzip.compress(LIST_V2)
    else:
        archive = tmp_path / "domains_isp.7z"
        with libarchive.file_writer(str(archive), "7zip") as writer:
            writer.add_file_from_memory("domains_isp.txt", len(LIST_V2), LIST_V2)
        body = archive.read_bytes()
    script.answers = [raw_body(body, {"Content-Type": "application/octet-stream"})]
    result = get(url, tmp_path / "state")
    assert result.outcome == "updated"
    copy = Path(result.state.path)
    assert copy.read_bytes() == body
    compiled = compile_lists([ListSpec(name=NAME, path=str(copy))])
    assert compiled.lists[0].report.entries == 3
    assert compiled.lists[0].sha256 == hashlib.sha256(LIST_V2).hexdigest()  # of the list inside
