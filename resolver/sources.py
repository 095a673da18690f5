"""Download blocklists from http(s) URLs without ever leaving a broken copy behind.

Regulators publish their lists by URL and ISPs must follow them, but a half-downloaded or empty
list must never replace the copy that is serving ("keep the last good state"). So for each
source, named like its `[[lists]]` entry, blokir keeps two files in a state directory:

    <state_dir>/<name>.list   the last good copy, byte for byte what the server sent
    <state_dir>/<name>.json   its SourceState: URL, validators, sha256, size, times, last result

A fetch streams the body into a temporary file in the same directory (so the final rename is
atomic, POSIX rename(2)), hashing it on the way, and only when the whole body arrived (length as
declared, not empty, under the size cap) is it fsynced and renamed over the copy, after which the
state file is replaced the same way. Any failure deletes the temporary file and leaves the copy
alone; the state records the failure and keeps describing the copy.

Conditional requests (RFC 9110 section 13.1.1 If-None-Match with the stored ETag, section
13.1.3 If-Modified-Since with the stored Last-Modified) are sent only when a verified copy
exists, so a 304 Not Modified (section 15.4.5) can always be answered from that copy. A 200 with
the same bytes as the copy is reported as not modified too and the copy is not rewritten, so
its mtime (which decides whether the index is recompiled) stays put.

Only the standard library is used. The opener is built per call (no global state, safe from a
background thread): HTTP and HTTPS (default certificate verification) with the environment's
proxies, and redirects (urllib follows up to 10) only to http or https URLs.
"""

from __future__ import annotations

import contextlib
import email.utils
import glob
import hashlib
import http.client
import json
import logging
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from resolver import __version__

__all__ = [
    "MAX_BACKOFF",
    "FetchPolicy",
    "FetchResult",
    "SourceState",
    "fetch",
    "fsync_dir",
    "is_url",
    "load_state",
    "source_paths",
    "write_json",
]

log = logging.getLogger("blokir")

MAX_BACKOFF = 30.0  # seconds: a regulator's server that is down for minutes is retried next time
CHUNK = 1 << 20  # bytes read per call: few syscalls, little memory
# A temporary file untouched for this long belongs to a process that died mid-download (a
# running download writes at least once per `timeout`), so the next fetch of that name removes it.
STALE_TEMP_AGE = 3600.0
_SCHEMES = ("http", "https")
_RETRYABLE = frozenset({"timeout", "network", "truncated"})  # and every http_5xx
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """How hard one fetch tries, and the most it accepts."""

    timeout: float = 30.0  # seconds per attempt: connect, and each read of the body
    retries: int = 3  # extra attempts after the first, for transient failures only
    backoff: float = 1.0  # first retry delay in seconds, doubling each retry up to MAX_BACKOFF
    max_bytes: int = 512 * 1024 * 1024  # cap of one list (decompressed), against a runaway body
    user_agent: str = f"blokir/{__version__}"
    # Ask for gzip (RFC 9110 section 8.4.1.3): plain domain lists shrink about 4-5x. The cap
    # applies to the decompressed bytes too, so a small bomb cannot fill the disk.
    accept_gzip: bool = True


@dataclass(slots=True)
class SourceState:
    """What is known about one source's last good copy, persisted as `<name>.json`."""

    url: str
    path: str  # absolute path of the last good copy: <state_dir>/<name>.list
    etag: str | None = None
    last_modified: str | None = None
    sha256: str = ""  # of the copy's bytes (after gzip decoding): checked before it is trusted
    size: int = 0
    fetched_at: float = 0.0  # time.time() when the copy was written
    checked_at: float = 0.0  # last attempt (success, 304 or failure)
    last_result: str = ""  # "updated" | "not_modified" | a failure reason key
    last_error: str = ""  # human text of the last failure ("" after a success)


@dataclass(slots=True)
class FetchResult:
    """The outcome of one `fetch`, with the state as saved afterwards."""

    outcome: str  # "updated" | "not_modified" | "failed"
    # "" on success, else a stable key: http_<status>, timeout, network, truncated, too_large,
    # empty, bad_url, bad_encoding, io
    reason: str
    detail: str  # human-readable, for logs and `blokir reload` output
    state: SourceState
    attempts: int


class _Failure(Exception):
    """One failed attempt: a reason key and a human text."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    @property
    def retryable(self) -> bool:
        return self.reason in _RETRYABLE or self.reason.startswith("http_5")


@dataclass(slots=True)
class _Download:
    """A complete body in a temporary file, not yet renamed into place."""

    temp: Path
    sha256: str
    size: int
    etag: str | None
    last_modified: str | None


def is_url(text: str) -> bool:
    """True for an http:// or https:// URL (scheme case-insensitive); list paths are not."""
    return text[:8].lower().startswith(("http://", "https://"))


def source_paths(state_dir: Path, name: str) -> tuple[Path, Path]:
    """(copy, state json) of source `name`.

    Config names are already `A-Z a-z 0-9 _ . -`; anything else is replaced by `_` and a hash of
    the original name is appended, so two different names never share files and no name can
    point outside `state_dir` (no `/`, and no name made only of dots)."""
    safe = _UNSAFE_NAME.sub("_", name)
    if safe != name or not safe.strip("."):
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe.strip('.')[:64] or 'source'}-{digest}"
    base = Path(state_dir).absolute()
    return base / f"{safe}.list", base / f"{safe}.json"


def load_state(state_dir: Path, name: str, url: str, *, verify: bool = True) -> SourceState | None:
    """The state of source `name` if its copy is usable for `url`, else None.

    None when the state file is missing or not a valid SourceState, when it was written for
    another URL, or when the copy is missing or its size or sha256 differs from the state. The
    whole copy is hashed (about 0.3 s for 280 MB), cheap next to compiling it; `verify=False`
    checks only the size, for displays such as `blokir status` that run often."""
    copy, state_file = source_paths(state_dir, name)
    state = _read_state(state_file, copy)
    if state is None or state.url != url or not state.sha256:
        return None
    try:
        if copy.stat().st_size != state.size:
            return None
        if verify and _sha256_of(copy) != state.sha256:
            return None
    except OSError:
        return None
    return state


def fetch(
    url: str,
    state_dir: Path,
    name: str,
    policy: FetchPolicy = FetchPolicy(),  # frozen, so one shared default is safe
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Bring the copy of source `name` up to date with `url`; never damage the last good copy.

    Transient failures (network errors, timeouts, 5xx, truncated bodies) are retried up to
    `policy.retries` times, waiting `backoff`, then twice that, and so on (at most MAX_BACKOFF);
    others (4xx, too large, empty, a bad URL, a local I/O error) fail at once."""
    state_dir = Path(state_dir).absolute()
    copy, state_file = source_paths(state_dir, name)
    good = load_state(state_dir, name, url)
    # Without a usable copy for this URL the old state describes nothing we can use.
    state = good if good is not None else SourceState(url=url, path=str(copy))
    attempts = 0
    failure: _Failure | None = None
    result: tuple[str, str] | None = None
    try:
        _check_url(url)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _Failure("io", f"cannot create {state_dir}: {exc.strerror or exc}") from exc
        _remove_stale_temps(state_dir, copy.name, state_file.name)
        while True:
            attempts += 1
            try:
                result = _attempt(url, copy, state, good, policy)
                failure = None
                break
            except _Failure as exc:
                failure = exc
            if not failure.retryable or attempts > policy.retries:
                break
            delay = min(policy.backoff * 2 ** (attempts - 1), MAX_BACKOFF)
            log.warning(
                "list %s: %s; retry %d of %d in %.1f s",
                name,
                failure.detail,
                attempts,
                policy.retries,
                delay,
            )
            sleep(delay)
    except _Failure as exc:  # bad_url, or the state directory cannot be used
        failure = exc
    state.checked_at = time.time()
    if failure is not None:
        state.last_result = failure.reason
        state.last_error = failure.detail
        outcome, reason, detail = "failed", failure.reason, failure.detail
        if attempts > 1:
            detail = f"{detail} (after {attempts} attempts)"
    else:
        assert result is not None
        outcome, detail = result
        reason = ""
        state.last_result = outcome
        state.last_error = ""
    if failure is not None and good is None and _describes_other_url(state_file, copy, url):
        # A failing new URL (a typo in the config, say) must not cost the copy of the old one
        # its state: with the config reverted, that copy is still good without a download.
        return FetchResult(outcome, reason, detail, state, attempts)
    try:
        _write_state(state_file, state)
    except OSError as exc:
        if failure is None:  # the copy is in place, but its state is not: report it
            outcome, reason = "failed", "io"
            detail = f"cannot write {state_file}: {exc.strerror or exc}"
        else:
            log.error("list %s: cannot write %s: %s", name, state_file, exc)
    return FetchResult(outcome, reason, detail, state, attempts)


def _attempt(
    url: str, copy: Path, state: SourceState, good: SourceState | None, policy: FetchPolicy
) -> tuple[str, str]:
    """One request; updates `state` on success and returns (outcome, detail)."""
    download = _download(url, copy, good, policy)
    if download is None:  # 304: only possible when `good` exists, since only then we asked
        return "not_modified", f"{url}: not modified (HTTP 304), keeping {copy.name}"
    try:
        if good is not None and download.sha256 == good.sha256:
            state.etag, state.last_modified = download.etag, download.last_modified
            return "not_modified", f"{url}: same content as {copy.name} (sha256 {_short(good)})"
        try:
            os.replace(download.temp, copy)
            fsync_dir(copy.parent)
        except OSError as exc:
            raise _Failure("io", f"cannot write {copy}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            download.temp.unlink()
    state.etag, state.last_modified = download.etag, download.last_modified
    state.sha256, state.size = download.sha256, download.size
    state.fetched_at = time.time()
    return "updated", f"{url}: {download.size} bytes, sha256 {_short(state)}, written to {copy}"


def _download(
    url: str, copy: Path, good: SourceState | None, policy: FetchPolicy
) -> _Download | None:
    """The whole body in a temporary file next to `copy`, or None for a 304."""
    headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity"}
    if policy.accept_gzip:
        headers["Accept-Encoding"] = "gzip"
    if good is not None:
        if good.etag:
            headers["If-None-Match"] = good.etag
        if good.last_modified:
            headers["If-Modified-Since"] = good.last_modified
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _opener().open(request, timeout=policy.timeout)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            if exc.code == 304 and good is not None:
                # RFC 9111 section 4.3.4: a 304 carries the current validators; keep them.
                good.etag = exc.headers.get("ETag") or good.etag
                good.last_modified = exc.headers.get("Last-Modified") or good.last_modified
                return None
            raise _Failure(f"http_{exc.code}", f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _network_failure(url, exc.reason) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _network_failure(url, exc) from exc
    except ValueError as exc:  # e.g. a port out of range, found only when connecting
        raise _Failure("bad_url", f"{url}: {exc}") from exc
    with response:
        return _stream_body(url, response, copy, policy)


def _stream_body(url: str, response: Any, copy: Path, policy: FetchPolicy) -> _Download:
    declared = _content_length(response.headers.get("Content-Length"))
    if declared is not None and declared > policy.max_bytes:
        raise _Failure(
            "too_large",
            f"{url}: Content-Length {declared} is over the limit of {policy.max_bytes} bytes",
        )
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise _Failure("bad_encoding", f"{url}: unsupported Content-Encoding {encoding!r}")
    gunzip = _Gunzip(url) if encoding != "identity" else None
    digest = hashlib.sha256()
    received = 0  # bytes on the wire, to compare with Content-Length
    size = 0  # bytes of the list (after gzip decoding)
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{copy.name}.", suffix=".part", dir=copy.parent)
    except OSError as exc:
        raise _Failure("io", f"cannot create a file in {copy.parent}: {exc.strerror}") from exc
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # a list is no secret; mkstemp makes it 0600
            while True:
                chunk = _read_chunk(url, response, received)
                if not chunk:
                    break
                received += len(chunk)
                for data in gunzip.inflate(chunk) if gunzip else (chunk,):
                    size += len(data)
                    if size > policy.max_bytes:
                        raise _Failure(
                            "too_large",
                            f"{url}: body is over the limit of {policy.max_bytes} bytes",
                        )
                    digest.update(data)
                    _write(out, data, temp)
            if declared is not None and received < declared:
                raise _Failure(
                    "truncated",
                    f"{url}: connection closed after {received} of {declared} bytes",
                )
            if gunzip is not None and not gunzip.complete:
                raise _Failure("truncated", f"{url}: the gzip body ends before its trailer")
            if size == 0:
                raise _Failure("empty", f"{url}: the server sent an empty body")
            try:
                out.flush()
                os.fsync(out.fileno())  # the data is on disk before the rename makes it the copy
            except OSError as exc:
                raise _Failure("io", f"cannot write {temp}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return _Download(
        temp=temp,
        sha256=digest.hexdigest(),
        size=size,
        etag=response.headers.get("ETag"),
        last_modified=_valid_http_date(response.headers.get("Last-Modified")),
    )


def _read_chunk(url: str, response: Any, received: int) -> bytes:
    try:
        chunk: bytes = response.read(CHUNK)
    except http.client.IncompleteRead as exc:  # a chunked body that stopped early
        raise _Failure(
            "truncated", f"{url}: connection closed mid-body after {received} bytes"
        ) from exc
    except TimeoutError as exc:
        raise _Failure("timeout", f"{url}: no data for too long after {received} bytes") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Failure(
            "truncated", f"{url}: body broken off after {received} bytes: {exc}"
        ) from exc
    return chunk


class _Gunzip:
    """Content-Encoding gzip (RFC 9110 section 8.4.1.3, RFC 1952), inflated piece by piece.

    Deflate can expand about 1000 times, so one 1 MiB read may hold a gigabyte: the output comes
    in pieces of at most CHUNK bytes, and the caller stops at the size cap. A gzip stream may
    hold several members one after the other (RFC 1952 section 2.2); each is inflated in turn,
    so `cat a.gz b.gz` is both lists, not silently only the first."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._member = self._new_member()

    @staticmethod
    def _new_member() -> Any:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: the gzip wrapper, not zlib's

    @property
    def complete(self) -> bool:
        """True when the input so far ends exactly at the end of a member."""
        return bool(self._member.eof)

    def inflate(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of `data`, in pieces of at most CHUNK bytes."""
        try:
            while True:
                if self._member.eof:
                    if not data:
                        return
                    self._member = self._new_member()
                member = self._member
                piece: bytes = member.decompress(data, CHUNK)
                if piece:
                    yield piece
                data = member.unused_data if member.eof else member.unconsumed_tail
                # A full piece may leave output inside zlib even with no input left: ask again.
                if not data and (member.eof or len(piece) < CHUNK):
                    return
        except zlib.error as exc:
            raise _Failure("bad_encoding", f"{self._url}: corrupt gzip body: {exc}") from exc


def _write(out: IO[bytes], data: bytes, temp: Path) -> None:
    try:
        out.write(data)
    except OSError as exc:
        raise _Failure("io", f"cannot write {temp}: {exc.strerror or exc}") from exc


def _network_failure(url: str, reason: object) -> _Failure:
    if isinstance(reason, TimeoutError):
        return _Failure("timeout", f"{url}: timed out")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return _Failure("network", f"{url}: TLS certificate not trusted: {reason.verify_message}")
    return _Failure("network", f"{url}: {reason}")


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only: urllib's own handler also follows ftp:, and turns
    file: into an HTTP 302 error that would not say what went wrong."""

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
    ) -> Any:
        location = headers.get("Location") or headers.get("URI")
        if location:
            target = urllib.parse.urljoin(req.full_url, location)
            if urllib.parse.urlsplit(target).scheme.lower() not in _SCHEMES:
                fp.close()
                raise _Failure("bad_url", f"{req.full_url}: redirected to a non-http URL {target}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener() -> urllib.request.OpenerDirector:
    # Only the handlers we want: no file:, ftp: or data: (build_opener adds those).
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # http_proxy / https_proxy / no_proxy from the environment
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
        urllib.request.HTTPDefaultErrorHandler(),
        _SafeRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _check_url(url: str) -> None:
    if not is_url(url):
        raise _Failure("bad_url", f"{url!r}: only http:// and https:// URLs are fetched")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or too big
    except ValueError as exc:
        raise _Failure("bad_url", f"{url!r}: {exc}") from exc
    if not parts.hostname:
        raise _Failure("bad_url", f"{url!r}: no host name")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise _Failure("bad_url", f"{url!r}: contains spaces or control characters")


def _content_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None  # absent or unparsable: read to the end and rely on the size cap
    return int(value.strip())


def _valid_http_date(value: str | None) -> str | None:
    """The Last-Modified value if it is a date (RFC 9110 section 5.6.7), to echo verbatim."""
    if not value:
        return None
    try:
        email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return value


def _short(state: SourceState) -> str:
    return state.sha256[:12]


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _read_state(state_file: Path, copy: Path) -> SourceState | None:
    """The saved state if the file holds one with the right field types, else None."""
    try:
        raw = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {}
    for field in fields(SourceState):
        value: Any = raw.get(field.name)
        if isinstance(value, bool):  # JSON true is no number here
            return None
        if field.name in ("etag", "last_modified"):
            valid = value is None or isinstance(value, str)
        elif field.name == "size":
            valid = isinstance(value, int) and value >= 0
        elif field.name in ("fetched_at", "checked_at"):
            valid = isinstance(value, int | float)
            value = float(value) if valid else value
        else:
            valid = isinstance(value, str)
        if not valid:
            return None
        values[field.name] = value
    values["path"] = str(copy)  # where the copy is now, even if the directory was moved
    return SourceState(**values)


def _describes_other_url(state_file: Path, copy: Path, url: str) -> bool:
    state = _read_state(state_file, copy)
    return state is not None and state.url != url and bool(state.sha256)


def _write_state(state_file: Path, state: SourceState) -> None:
    write_json(state_file, asdict(state))


def write_json(state_file: Path, data: dict[str, Any]) -> None:
    """Replace a state file atomically: a crash leaves the old one or the new one."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{state_file.name}.", suffix=".part", dir=state_file.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o644)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, state_file)
        fsync_dir(state_file.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (the directory entry is data too)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(state_dir: Path, *names: str) -> None:
    now = time.time()
    for name in names:
        for leftover in state_dir.glob(f".{glob.escape(name)}.*.part"):
            with contextlib.suppress(OSError):
                if now - leftover.stat().st_mtime > STALE_TEMP_AGE:
                    leftover.unlink()
