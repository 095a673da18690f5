"""The configuration file: TOML in, frozen and validated dataclasses out.

Every problem is reported as one `ConfigError` a person can act on, in the form
`<file>:<line> <key path>: <why>`, for example

    blokir.toml:12 lists[2].action: 'nxdomian' is not one of landing, nxdomain, nodata, refused

`tomllib` gives no line numbers for values, so `_Locator` scans the TOML text once (table headers,
arrays of tables with their index, `key = ` lines, dotted keys, array elements, inline tables) and
maps a key path such as `lists[2].action` to its line. A key that is missing points at the header
of the table it belongs in. Array indices in key paths count from 0, in document order.

Every section except the lists has defaults, so a file holding only `[[lists]]` is a full config.
Relative paths (list files, the index) resolve against the directory of the config file. Nothing
here touches the network or the list files themselves; `/etc/resolv.conf` is read only when the
upstream servers are asked for (`Config.upstream_servers`), never at parse time.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from resolver.control import MAX_PATH_BYTES
from resolver.dns.constants import MAX_TTL
from resolver.lists import FORMATS as LIST_FORMATS
from resolver.lists.model import ListSpec
from resolver.policy import Action, Ede, MatchMode
from resolver.ratelimit import RateLimitAction
from resolver.sources import source_paths

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "RESOLV_CONF",
    "AllowlistConfig",
    "BlockingConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ListConfig",
    "MetricsConfig",
    "ServerConfig",
    "UpdatesConfig",
    "UpstreamConfig",
    "load_config",
    "load_default_config",
    "parse_config",
    "resolv_conf_servers",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "blokir.toml"
RESOLV_CONF = "/etc/resolv.conf"

Address = tuple[str, int]  # (IP address text without brackets, port)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KeyPath = tuple[str | int, ...]

# Clients allowed by default: loopback and the private, shared (CGNAT, RFC 6598), unique-local
# (RFC 4193) and link-local ranges. An ISP resolver must not be an open resolver.
DEFAULT_ALLOW: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fe80::/10",
    )
)

LIST_ACTIONS = (Action.LANDING, Action.NXDOMAIN, Action.NODATA, Action.REFUSED)
MAX_SDE_TEXT = 256  # keeps the structured DNS error JSON (EDE EXTRA-TEXT) well inside a UDP answer

_URL_RE = re.compile(r"\s*https?://", re.IGNORECASE)
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_SCALAR_RE = re.compile(r"[^,\]}#\r\n]+")  # numbers, booleans, dates: up to a delimiter
_TOML_POSITION_RE = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")


# --------------------------------------------------------------------------------------------
# Errors


class ConfigError(Exception):
    """A configuration problem; `str()` is the whole message, `<file>:<line> <key>: <why>`.

    `file`, `line` and `key` are also kept apart (any may be None) for callers that want them."""

    def __init__(
        self,
        why: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.why = why
        self.file = file
        self.line = line
        self.key = key
        where = file or ""
        if file and line is not None:
            where = f"{file}:{line}"
        if key:
            where = f"{where} {key}" if where else key
        super().__init__(f"{where}: {why}" if where else why)


def format_key_path(path: Sequence[str | int]) -> str:
    """`("lists", 2, "action")` -> `lists[2].action`; keys that are not bare are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY_RE.fullmatch(part) else json.dumps(part)
            out += f".{text}" if out else text
    return out


# --------------------------------------------------------------------------------------------
# Line locator


class _StopScan(Exception):
    pass


class _Locator:
    """Maps key paths to the line they are written on by scanning the TOML text.

    Only run on text tomllib has accepted, so it can be lenient; if it still gets confused it
    stops and keeps what it found (errors then point at the nearest known parent)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        self._text = text
        self._pos = 0
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._aot_index: dict[KeyPath, int] = {}
        with contextlib.suppress(_StopScan, IndexError, tomllib.TOMLDecodeError):
            self._scan()

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of `path`, or of its nearest ancestor that is written down."""
        key = tuple(path)
        while key:
            line = self.lines.get(key)
            if line is not None:
                return line
            key = key[:-1]
        return None

    # -- scanning --------------------------------------------------------------------------

    def _line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _record(self, path: KeyPath, pos: int) -> None:
        line = self._line_at(pos)
        for k in range(1, len(path) + 1):
            self.lines.setdefault(path[:k], line)

    def _peek(self, n: int = 1) -> str:
        return self._text[self._pos : self._pos + n]

    def _skip_blanks(self) -> None:
        text, n = self._text, len(self._text)
        while self._pos < n and text[self._pos] in " \t":
            self._pos += 1

    def _skip_blanks_lines_comments(self) -> None:
        text, n = self._text, len(self._text)
        while self._pos < n:
            c = text[self._pos]
            if c in " \t\r\n":
                self._pos += 1
            elif c == "#":
                self._skip_to_eol()
            else:
                break

    def _skip_to_eol(self) -> None:
        end = self._text.find("\n", self._pos)
        self._pos = len(self._text) if end < 0 else end

    def _scan(self) -> None:
        text, n = self._text, len(self._text)
        table: KeyPath = ()
        while self._pos < n:
            self._skip_blanks()
            if self._pos >= n:
                break
            c = text[self._pos]
            if c in "\r\n":
                self._pos += 1
            elif c == "#":
                self._skip_to_eol()
            elif c == "[":
                start = self._pos
                is_aot = self._peek(2) == "[["
                self._pos += 2 if is_aot else 1
                keys = self._key()
                self._skip_blanks()
                self._pos += 2 if is_aot else 1
                if is_aot:
                    array = (*self._resolve(keys[:-1]), keys[-1])
                    index = self._aot_index.get(array, -1) + 1
                    self._aot_index[array] = index
                    table = (*array, index)
                else:
                    table = self._resolve(keys)
                self._record(table, start)
            else:
                start = self._pos
                keys = self._key()
                self._skip_blanks()
                if self._peek() != "=":
                    raise _StopScan
                self._pos += 1
                self._skip_blanks()
                path = table + tuple(keys)
                self._record(path, start)
                self._value(path)

    def _resolve(self, keys: Sequence[str]) -> KeyPath:
        """A header's key path, with the current index inserted after each array of tables."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self._aot_index:
                path = (*path, self._aot_index[path])
        return path

    def _key(self) -> list[str]:
        text = self._text
        keys: list[str] = []
        while True:
            self._skip_blanks()
            c = self._peek()
            if c in ('"', "'"):
                start = self._pos
                self._string_single(c)
                raw = text[start : self._pos]
                keys.append(str(tomllib.loads(f"k = {raw}")["k"]))
            else:
                match = _BARE_KEY_RE.match(text, self._pos)
                if match is None:
                    raise _StopScan
                keys.append(match.group())
                self._pos = match.end()
            self._skip_blanks()
            if self._peek() != ".":
                return keys
            self._pos += 1

    def _value(self, path: KeyPath) -> None:
        text = self._text
        c = self._peek()
        if c == "[":
            self._pos += 1
            index = 0
            while True:
                self._skip_blanks_lines_comments()
                if self._peek() == "]":
                    self._pos += 1
                    return
                before = self._pos
                element = (*path, index)
                self._record(element, self._pos)
                self._value(element)
                self._skip_blanks_lines_comments()
                if self._peek() == ",":
                    self._pos += 1
                elif self._peek() != "]" or self._pos == before:
                    raise _StopScan
                index += 1
        elif c == "{":
            self._pos += 1
            while True:
                self._skip_blanks_lines_comments()
                if self._peek() == "}":
                    self._pos += 1
                    return
                start = self._pos
                sub = (*path, *self._key())
                self._skip_blanks()
                if self._peek() != "=":
                    raise _StopScan
                self._pos += 1
                self._skip_blanks()
                self._record(sub, start)
                self._value(sub)
                self._skip_blanks_lines_comments()
                if self._peek() == ",":
                    self._pos += 1
                elif self._peek() != "}":
                    raise _StopScan
        elif self._peek(3) in ('"""', "'''"):
            quote = self._peek(3)
            self._pos += 3
            while True:
                end = text.find(quote, self._pos)
                if end < 0:
                    raise _StopScan
                if quote == '"""':
                    # A quote run preceded by an odd number of backslashes is escaped.
                    slashes = 0
                    while text[end - 1 - slashes] == "\\":
                        slashes += 1
                    if slashes % 2:
                        self._pos = end + 1
                        continue
                self._pos = end + 3
                # Up to two more quotes belong to the content (`"""a""""`).
                extra = 0
                while extra < 2 and self._peek() == quote[0]:
                    self._pos += 1
                    extra += 1
                return
        elif c in ('"', "'"):
            self._string_single(c)
        else:
            match = _SCALAR_RE.match(text, self._pos)
            if match is None:
                raise _StopScan
            self._pos = match.end()

    def _string_single(self, quote: str) -> None:
        text, n = self._text, len(self._text)
        self._pos += 1
        while self._pos < n:
            c = text[self._pos]
            if c == "\\" and quote == '"':
                self._pos += 2
                continue
            self._pos += 1
            if c == quote:
                return
            if c == "\n":
                break
        raise _StopScan


# --------------------------------------------------------------------------------------------
# The configuration dataclasses


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`[server]`: where blokir listens and whom it answers."""

    listen: tuple[Address, ...] = (("127.0.0.1", 5353),)
    workers: int = 1
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1024
    allow: tuple[Network, ...] = DEFAULT_ALLOW
    udp_payload_size: int = 1232  # DNS flag day 2020
    ratelimit: int = 0  # queries/s per client prefix (/24 IPv4, /56 IPv6); 0 = no limit
    ratelimit_burst: int = 0  # bucket size; 0 = the same as ratelimit
    ratelimit_action: RateLimitAction = RateLimitAction.REFUSE  # refuse | drop | slip
    # Started as root: the account to switch to once the sockets are bound (resolver/
    # privileges.py). Empty user: keep running as whoever started it; empty group: the user's
    # primary group.
    user: str = ""
    group: str = ""

    def allows(self, client: str) -> bool:
        """Whether a client address falls in one of the `allow` networks."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self.allow)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """`[upstream]`: the recursive resolvers queries are forwarded to. Empty `servers` means the
    nameservers of /etc/resolv.conf; use `Config.upstream_servers()` to get the effective list."""

    servers: tuple[Address, ...] = ()
    timeout: float = 2.0
    attempts: int = 2
    max_inflight: int = 2048  # upstream queries open at once, per worker
    max_inflight_per_zone: int = 100  # of those, under one zone (resolver.inflight.zone_of)


@dataclass(frozen=True, slots=True)
class BlockingConfig:
    """`[blocking]`: how blocked names are answered."""

    landing_ipv4: str | None = None
    landing_ipv6: str | None = None
    ttl: int = 60
    index_path: Path = Path("blokir.blkx")  # made absolute against the config's directory
    contact: str | None = None  # draft-ietf-dnsop-structured-dns-error "c"
    justification: str | None = None  # "j"
    organisation: str | None = None  # "o"
    soa_mname: str = "blokir.invalid."
    soa_rname: str = "hostmaster.blokir.invalid."


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`[cache]`: the answer cache in front of the upstreams."""

    max_entries: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_ttl_max: int = 3_600
    servfail_ttl: int = 5
    serve_stale: bool = False  # RFC 8767: an operator's choice, off unless asked for
    stale_answer_ttl: int = 30  # RFC 8767 section 5 recommends 30 s
    max_stale: int = 86_400  # seconds past expiry it may still be served (RFC 8767: 1-3 days)
    stale_client_timeout: float = 1.8  # RFC 8767 section 5 client response timer; 0 = off


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: the Prometheus endpoint."""

    enabled: bool = True
    listen: Address = ("127.0.0.1", 9153)
    top_k: int = 20


@dataclass(frozen=True, slots=True)
class UpdatesConfig:
    """`[updates]`: keeping lists current while serving (README "Live list updates")."""

    state_dir: Path = Path("blokir-state")  # downloads; default: next to [blocking] index_path
    control_socket: Path | None = None  # None: state_dir / "control.sock"
    watch: bool = True  # reload when the config file or a local list file changes
    watch_interval: float = 2.0  # seconds between checks of files and refresh timers
    refresh: float = 3600.0  # seconds between conditional downloads of a URL list
    max_shrink: float = 0.5  # a list losing more than this fraction of its names is not applied
    download_timeout: float = 30.0
    download_retries: int = 3
    max_download_bytes: int = 512 * 1024 * 1024

    @property
    def socket_path(self) -> Path:
        return self.control_socket or self.state_dir / "control.sock"


@dataclass(frozen=True, slots=True)
class ListSource:
    """Where a list comes from and how it is refreshed; `url` None means a local file.
    `refresh` and `max_shrink` None mean `[updates]`'s."""

    url: str | None = None
    refresh: float | None = None
    max_shrink: float | None = None


@dataclass(frozen=True, slots=True)
class ListConfig:
    """One `[[lists]]` entry: a blocklist file and what its entries mean. `landing_ipv4` and
    `landing_ipv6` override `[blocking]`'s addresses for this list; empty means the global ones.
    For a URL list, `path` is its last good downloaded copy under `[updates] state_dir`."""

    name: str
    path: Path
    category: str = "uncategorised"
    action: Action = Action.LANDING
    ede: Ede = Ede.BLOCKED
    match: MatchMode = MatchMode.SUBTREE
    format: str = "auto"
    landing_ipv4: tuple[str, ...] = ()
    landing_ipv6: tuple[str, ...] = ()
    source: ListSource = ListSource()


@dataclass(frozen=True, slots=True)
class AllowlistConfig:
    """One `[[allowlists]]` entry: names answered from upstream even if a list blocks them."""

    name: str
    path: Path
    category: str = "uncategorised"
    match: MatchMode = MatchMode.SUBTREE
    format: str = "auto"
    source: ListSource = ListSource()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. `source` is the absolute path of the file it came from."""

    source: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    blocking: BlockingConfig = field(default_factory=BlockingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)
    lists: tuple[ListConfig, ...] = ()
    allowlists: tuple[AllowlistConfig, ...] = ()

    def list_specs(self) -> list[ListSpec]:
        """Allowlists first, then lists, each with `list_index` = its position in that order.

        Global landing addresses are not copied in: an empty tuple means "use [blocking]'s"."""
        specs: list[ListSpec] = []
        for allow in self.allowlists:
            specs.append(
                ListSpec(
                    name=allow.name,
                    path=str(allow.path),
                    category=allow.category,
                    action=Action.ALLOW,
                    ede=Ede.NONE,
                    match=allow.match,
                    format=allow.format,
                    list_index=len(specs),
                )
            )
        for block in self.lists:
            specs.append(
                ListSpec(
                    name=block.name,
                    path=str(block.path),
                    category=block.category,
                    action=block.action,
                    ede=block.ede,
                    match=block.match,
                    format=block.format,
                    landing_ipv4=block.landing_ipv4,
                    landing_ipv6=block.landing_ipv6,
                    list_index=len(specs),
                )
            )
        return specs

    def upstream_servers(self, resolv_conf: str | Path = RESOLV_CONF) -> list[Address]:
        """The servers to forward to: `[upstream] servers`, or else resolv.conf's nameservers.

        Nameservers from resolv.conf that are one of blokir's own listen addresses are dropped
        (forwarding to ourselves would loop); ConfigError if none is left."""
        if self.upstream.servers:
            return list(self.upstream.servers)
        servers = resolv_conf_servers(resolv_conf)
        usable = [s for s in servers if _own_listener(s, self.server.listen) is None]
        if not usable:
            raise ConfigError(
                f"every nameserver ({', '.join(_format_address(s) for s in servers)}) is one of "
                "blokir's own listen addresses, so forwarding would loop; set [upstream] servers "
                "in the config",
                file=str(resolv_conf),
            )
        return usable


# --------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError for every kind of problem."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file: {exc.strerror or exc}", file=str(path)
        ) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            "not valid UTF-8 (TOML files must be UTF-8)", file=str(path), line=line
        ) from exc
    return parse_config(text, path)


def parse_config(text: str, path: str | Path) -> Config:
    """Validate config text. `path` names the file in messages and anchors relative paths."""
    file = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION_RE.search(message)
        # "at end of document" has no line: use the last line with anything on it.
        last = text.rstrip().count("\n") + 1
        line = int(match.group(1)) if match and match.group(1) else last
        raise ConfigError(f"TOML syntax error: {message}", file=file, line=line) from exc
    source = Path(path).expanduser().resolve()
    ctx = _Context(file, _Locator(text), source.parent)
    return ctx.build(raw, source)


def load_default_config() -> Config:
    """The config shipped in the repository (`config/blokir.toml`)."""
    if not DEFAULT_CONFIG_PATH.is_file():
        raise ConfigError(
            "the default config file is missing (it ships in the source tree, not in an "
            "installed wheel); pass a config file with --config, e.g. "
            "--config /etc/blokir/blokir.toml",
            file=str(DEFAULT_CONFIG_PATH),
        )
    return load_config(DEFAULT_CONFIG_PATH)


def resolv_conf_servers(path: str | Path = RESOLV_CONF) -> list[Address]:
    """The `nameserver` addresses of a resolv.conf, in order, each with port 53.

    Comments (`#` or `;`, whole-line or trailing) are ignored, as are nameserver lines whose
    address does not parse (glibc skips those too). IPv6 addresses may carry a `%scope`."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"cannot read ({exc.strerror or exc}); set [upstream] servers in the config",
            file=str(path),
        ) from exc
    servers: list[Address] = []
    for line in text.splitlines():
        words = re.split(r"[#;]", line, maxsplit=1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = str(ipaddress.ip_address(words[1]))
        except ValueError:
            continue
        if (address, 53) not in servers:
            servers.append((address, 53))
    if not servers:
        raise ConfigError(
            "no usable 'nameserver' lines; set [upstream] servers in the config, "
            'e.g. servers = ["192.0.2.53"]',
            file=str(path),
        )
    return servers


# --------------------------------------------------------------------------------------------
# Validation

_T = TypeVar("_T")
_U = TypeVar("_U")
_E = TypeVar("_E", bound=StrEnum)
_MISSING = object()

_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "server": (
        "listen",
        "workers",
        "tcp_idle_timeout",
        "tcp_max_connections",
        "allow",
        "udp_payload_size",
        "ratelimit",
        "ratelimit_burst",
        "ratelimit_action",
        "user",
        "group",
    ),
    "upstream": ("servers", "timeout", "attempts", "max_inflight", "max_inflight_per_zone"),
    "blocking": (
        "landing_ipv4",
        "landing_ipv6",
        "ttl",
        "index_path",
        "contact",
        "justification",
        "organisation",
        "soa_mname",
        "soa_rname",
    ),
    "cache": (
        "max_entries",
        "max_bytes",
        "min_ttl",
        "max_ttl",
        "negative_ttl_max",
        "servfail_ttl",
        "serve_stale",
        "stale_answer_ttl",
        "max_stale",
        "stale_client_timeout",
    ),
    "metrics": ("enabled", "listen", "top_k"),
    "updates": (
        "state_dir",
        "control_socket",
        "watch",
        "watch_interval",
        "refresh",
        "max_shrink",
        "download_timeout",
        "download_retries",
        "max_download_bytes",
    ),
    "allowlists": ("name", "path", "category", "match", "format", "refresh", "max_shrink"),
    "lists": (
        "name",
        "path",
        "category",
        "action",
        "ede",
        "match",
        "format",
        "landing_ipv4",
        "landing_ipv6",
        "refresh",
        "max_shrink",
    ),
}
# Keys of [[lists]] that have no meaning in [[allowlists]]: say why rather than "unknown key".
_ALLOWLIST_HINTS = {
    key: "not used in an allowlist (its names are always allowed; move the list to [[lists]] "
    "to block them)"
    for key in ("action", "ede", "landing_ipv4", "landing_ipv6")
}
_TABLE_SECTIONS = ("server", "upstream", "blocking", "cache", "metrics", "updates")
_ARRAY_SECTIONS = ("allowlists", "lists")


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__  # datetime, date, time


def _describe(value: object) -> str:
    """`string 'abc'`, `integer 5`, `boolean true`, `table`: what the user wrote, for messages."""
    name = _type_name(value)
    if isinstance(value, bool):
        return f"{name} {str(value).lower()}"
    if isinstance(value, (list, dict)):
        return name
    return f"{name} {value!r}" if isinstance(value, str) else f"{name} {value}"


def _unknown(kind: str, key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown {kind} (did you mean '{close[0]}'?)"
    return f"unknown {kind} (expected one of {', '.join(known)})"


def _format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _own_listener(server: Address, listen: Sequence[Address]) -> int | None:
    """The index of the listen address `server` would reach, if it is one of ours."""
    host, port = server
    address = ipaddress.ip_address(host)
    for index, (lhost, lport) in enumerate(listen):
        if lport != port or lport == 0:
            continue
        laddress = ipaddress.ip_address(lhost)
        if laddress == address:
            return index
        # A wildcard listener answers on every local address; loopback is surely local.
        if laddress.is_unspecified and address.is_loopback and laddress.version == address.version:
            return index
    return None


class _Context:
    """Carries the file name, the locator and the base directory through validation."""

    def __init__(self, file: str, locator: _Locator, base_dir: Path) -> None:
        self.file = file
        self.locator = locator
        self.base_dir = base_dir
        self.updates = UpdatesConfig()  # set by build() before the lists that need state_dir

    def error(self, path: KeyPath, why: str) -> ConfigError:
        return ConfigError(
            why, file=self.file, line=self.locator.line_of(path), key=format_key_path(path)
        )

    def resolve_path(self, text: str) -> Path:
        return (self.base_dir / Path(text).expanduser()).resolve()

    # -- top level -------------------------------------------------------------------------

    def build(self, raw: dict[str, object], source: Path) -> Config:
        sections = (*_TABLE_SECTIONS, *_ARRAY_SECTIONS)
        for key, value in raw.items():
            if key in sections:
                continue
            is_table = isinstance(value, dict) or (
                isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
            )
            if not is_table:
                owners = [s for s, keys in _SECTION_KEYS.items() if key in keys]
                if owners:
                    raise self.error(
                        (key,),
                        f"unknown top-level key (did you mean to put it under [{owners[0]}]?)",
                    )
                raise self.error((key,), _unknown("top-level key", key, sections))
            raise self.error((key,), _unknown("section", key, sections))

        tables = {name: self._table_section(raw, name) for name in _TABLE_SECTIONS}
        server = self._server(tables["server"])
        upstream = self._upstream(tables["upstream"], server)
        blocking = self._blocking(tables["blocking"])
        cache = self._cache(tables["cache"])
        metrics = self._metrics(tables["metrics"])
        self.updates = updates = self._updates(tables["updates"], blocking.index_path)
        allowlists = tuple(self._allowlist(t) for t in self._array_section(raw, "allowlists"))
        lists = tuple(self._list(t) for t in self._array_section(raw, "lists"))
        self._check_unique_names(allowlists, lists)
        return Config(
            source=source,
            server=server,
            upstream=upstream,
            blocking=blocking,
            cache=cache,
            metrics=metrics,
            updates=updates,
            lists=lists,
            allowlists=allowlists,
        )

    def _table_section(self, raw: dict[str, object], name: str) -> _Table:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise self.error((name,), f"expected a table ([{name}]), got {_describe(value)}")
        return _Table(self, (name,), value, _SECTION_KEYS[name])

    def _array_section(self, raw: dict[str, object], name: str) -> list[_Table]:
        value = raw.get(name, [])
        if not isinstance(value, list):
            raise self.error(
                (name,), f"expected an array of tables ([[{name}]]), got {_describe(value)}"
            )
        tables = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error((name, index), f"expected a table, got {_describe(item)}")
            hints = _ALLOWLIST_HINTS if name == "allowlists" else None
            tables.append(_Table(self, (name, index), item, _SECTION_KEYS[name], hints))
        return tables

    # -- sections ----------------------------------------------------------------------------

    def _server(self, t: _Table) -> ServerConfig:
        listen = t.get_list("listen", lambda p, v: self._host_port(p, v, required_port=True))
        if listen is not None:
            if not listen:
                raise t.error("listen", "must name at least one address")
            self._check_no_duplicates(t, "listen", listen, _format_address)
        allow = t.get_list("allow", self._network)
        if allow is not None and not allow:
            raise t.error(
                "allow",
                "an empty list refuses every client; to answer everyone (an open resolver) "
                'write allow = ["0.0.0.0/0", "::/0"]',
            )
        user = t.get_str("user", "").strip()
        group = t.get_str("group", "").strip()
        if group and not user:
            raise t.error("group", "switching only the group is not supported: set user too")
        defaults = ServerConfig()
        return ServerConfig(
            listen=tuple(listen) if listen is not None else defaults.listen,
            workers=t.get_int("workers", defaults.workers, low=1),
            tcp_idle_timeout=t.get_float("tcp_idle_timeout", defaults.tcp_idle_timeout),
            tcp_max_connections=t.get_int("tcp_max_connections", defaults.tcp_max_connections, 1),
            allow=tuple(allow) if allow is not None else defaults.allow,
            udp_payload_size=t.get_int(
                "udp_payload_size", defaults.udp_payload_size, low=512, high=4096
            ),
            ratelimit=t.get_int("ratelimit", defaults.ratelimit, low=0),
            ratelimit_burst=t.get_int("ratelimit_burst", defaults.ratelimit_burst, low=0),
            ratelimit_action=t.get_enum(
                "ratelimit_action", defaults.ratelimit_action, list(RateLimitAction)
            ),
            user=user,
            group=group,
        )

    def _upstream(self, t: _Table, server: ServerConfig) -> UpstreamConfig:
        servers = (
            t.get_list("servers", lambda p, v: self._host_port(p, v, required_port=False)) or []
        )
        self._check_no_duplicates(t, "servers", servers, _format_address)
        for index, address in enumerate(servers):
            own = _own_listener(address, server.listen)
            if own is not None:
                raise self.error(
                    ("upstream", "servers", index),
                    f"'{_format_address(address)}' is blokir's own listen address "
                    f"(server.listen[{own}]); forwarding to it would loop",
                )
        defaults = UpstreamConfig()
        return UpstreamConfig(
            servers=tuple(servers),
            timeout=t.get_float("timeout", defaults.timeout),
            attempts=t.get_int("attempts", defaults.attempts, low=1),
            max_inflight=t.get_int("max_inflight", defaults.max_inflight, low=1),
            max_inflight_per_zone=t.get_int(
                "max_inflight_per_zone", defaults.max_inflight_per_zone, low=1
            ),
        )

    def _blocking(self, t: _Table) -> BlockingConfig:
        defaults = BlockingConfig()
        index_path = t.get_str("index_path", str(defaults.index_path))
        return BlockingConfig(
            landing_ipv4=self._optional_address(t, "landing_ipv4", 4),
            landing_ipv6=self._optional_address(t, "landing_ipv6", 6),
            ttl=t.get_int("ttl", defaults.ttl, low=0, high=86_400),
            index_path=self.resolve_path(index_path),
            contact=self._sde_text(t, "contact", uri=True),
            justification=self._sde_text(t, "justification"),
            organisation=self._sde_text(t, "organisation"),
            soa_mname=self._domain(t, "soa_mname", defaults.soa_mname),
            soa_rname=self._domain(t, "soa_rname", defaults.soa_rname),
        )

    def _cache(self, t: _Table) -> CacheConfig:
        d = CacheConfig()
        min_ttl = t.get_int("min_ttl", d.min_ttl, low=0, high=MAX_TTL)
        max_ttl = t.get_int("max_ttl", d.max_ttl, low=0, high=MAX_TTL)
        if max_ttl < min_ttl:
            raise t.error("max_ttl", f"must be >= cache.min_ttl ({min_ttl}), got {max_ttl}")
        return CacheConfig(
            max_entries=t.get_int("max_entries", d.max_entries, low=0),
            max_bytes=t.get_int("max_bytes", d.max_bytes, low=0),
            min_ttl=min_ttl,
            max_ttl=max_ttl,
            negative_ttl_max=t.get_int("negative_ttl_max", d.negative_ttl_max, 0, MAX_TTL),
            servfail_ttl=t.get_int("servfail_ttl", d.servfail_ttl, low=0, high=300),
            serve_stale=t.get_bool("serve_stale", d.serve_stale),
            stale_answer_ttl=t.get_int("stale_answer_ttl", d.stale_answer_ttl, low=1, high=3600),
            max_stale=t.get_int("max_stale", d.max_stale, low=1, high=7 * 86_400),
            stale_client_timeout=self._stale_client_timeout(t, d.stale_client_timeout),
        )

    @staticmethod
    def _stale_client_timeout(t: _Table, default: float) -> float:
        """Seconds, or 0 (off): get_float accepts only > 0, and 0 is a meaningful value here."""
        value = t.raw("stale_client_timeout")
        if value == 0 and not isinstance(value, bool):
            return 0.0
        return t.get_float("stale_client_timeout", default)

    def _metrics(self, t: _Table) -> MetricsConfig:
        d = MetricsConfig()
        listen = t.get("listen", d.listen, lambda p, v: self._host_port(p, v, required_port=True))
        return MetricsConfig(
            enabled=t.get_bool("enabled", d.enabled),
            listen=listen,
            top_k=t.get_int("top_k", d.top_k, low=0, high=1000),
        )

    def _updates(self, t: _Table, index_path: Path) -> UpdatesConfig:
        d = UpdatesConfig()
        # By default next to the index: both are written by blokir, so a deployment makes one
        # directory writable (systemd StateDirectory=, the container's /var/lib/blokir).
        state_text = t.get_str("state_dir", "")
        state_dir = (
            self.resolve_path(state_text)
            if state_text.strip()
            else index_path.parent / "blokir-state"
        )
        socket_text = t.get_str("control_socket", "")
        socket_path = self.resolve_path(socket_text) if socket_text.strip() else None
        updates = UpdatesConfig(
            state_dir=state_dir,
            control_socket=socket_path,
            watch=t.get_bool("watch", d.watch),
            watch_interval=t.get_float("watch_interval", d.watch_interval),
            refresh=t.get_float("refresh", d.refresh),
            max_shrink=self._fraction(t, "max_shrink", d.max_shrink),
            download_timeout=t.get_float("download_timeout", d.download_timeout),
            download_retries=t.get_int("download_retries", d.download_retries, low=0, high=10),
            max_download_bytes=t.get_int("max_download_bytes", d.max_download_bytes, low=1),
        )
        # Linux limits a Unix socket path to 107 bytes (sun_path is 108 with the NUL).
        if len(os.fsencode(updates.socket_path)) > MAX_PATH_BYTES:
            key = "control_socket" if socket_path is not None else "state_dir"
            raise t.error(
                key,
                f"the control socket path {str(updates.socket_path)!r} is longer than "
                f"{MAX_PATH_BYTES} bytes (the Unix socket limit); set a shorter "
                "[updates] control_socket",
            )
        return updates

    @staticmethod
    def _fraction(t: _Table, key: str, default: float) -> float:
        value = t.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise t.error(key, f"expected a fraction between 0 and 1, got {_describe(value)}")
        if not 0.0 <= float(value) <= 1.0:
            raise t.error(key, f"must be between 0 and 1 (0.5 = half the names), got {value}")
        return float(value)

    def _list_common(self, t: _Table) -> tuple[str, Path, str, MatchMode, str, ListSource]:
        name = t.get_str("name", None)
        if not _NAME_RE.fullmatch(name) or name in (".", ".."):
            raise t.error("name", f"{name!r} may only contain letters, digits, '_', '.' and '-'")
        path_text = t.get_str("path", None)
        if not path_text.strip():
            raise t.error("path", "must not be empty")
        category = t.get_str("category", "uncategorised")
        if not category.strip():
            raise t.error("category", "must not be empty")
        match = t.get_enum("match", MatchMode.SUBTREE, tuple(MatchMode))
        fmt = t.get_choice("format", "auto", LIST_FORMATS)
        url: str | None = None
        if _URL_RE.match(path_text):
            parts = urllib.parse.urlsplit(path_text.strip())
            if not parts.hostname:
                raise t.error("path", f"{path_text!r} has no host name")
            url = path_text.strip()
            # The last good download; `blokir serve` fetches it (README "Live list updates").
            path = source_paths(self.updates.state_dir, name)[0]
        else:
            if "://" in path_text:
                raise t.error("path", "only http:// and https:// URLs are supported")
            path = self.resolve_path(path_text)
        refresh: float | None = None
        if t.raw("refresh") is not _MISSING:
            refresh = t.get_float("refresh", self.updates.refresh)
        if refresh is not None and url is None:
            raise t.error("refresh", "only used with a URL path (local files are watched)")
        max_shrink = self._fraction(t, "max_shrink", -1.0)
        source = ListSource(url, refresh, max_shrink if max_shrink >= 0 else None)
        return name, path, category, match, fmt, source

    def _allowlist(self, t: _Table) -> AllowlistConfig:
        name, path, category, match, fmt, source = self._list_common(t)
        return AllowlistConfig(
            name=name, path=path, category=category, match=match, format=fmt, source=source
        )

    def _list(self, t: _Table) -> ListConfig:
        name, path, category, match, fmt, source = self._list_common(t)
        action = t.get_enum("action", Action.LANDING, LIST_ACTIONS)
        ede = t.get_enum("ede", Ede.BLOCKED, tuple(Ede))
        landing: dict[int, tuple[str, ...]] = {}
        for version in (4, 6):
            key = f"landing_ipv{version}"
            landing[version] = self._landing_override(t, key, version)
            if landing[version] and action is not Action.LANDING:
                raise t.error(
                    key,
                    f'only used with action = "landing" (this list\'s action is {action.value})',
                )
        return ListConfig(
            name=name,
            path=path,
            category=category,
            action=action,
            ede=ede,
            match=match,
            format=fmt,
            landing_ipv4=landing[4],
            landing_ipv6=landing[6],
            source=source,
        )

    def _check_unique_names(
        self, allowlists: Sequence[AllowlistConfig], lists: Sequence[ListConfig]
    ) -> None:
        seen: dict[str, KeyPath] = {}
        entries: list[tuple[KeyPath, str]] = [
            (("allowlists", i), a.name) for i, a in enumerate(allowlists)
        ]
        entries += [(("lists", i), b.name) for i, b in enumerate(lists)]
        for where, name in entries:
            first = seen.get(name)
            if first is not None:
                line = self.locator.line_of((*first, "name"))
                at = f" (line {line})" if line is not None else ""
                raise self.error(
                    (*where, "name"),
                    f"'{name}' is already the name of {format_key_path(first)}{at}; "
                    "list names must be unique across lists and allowlists",
                )
            seen[name] = where

    # -- value parsers -----------------------------------------------------------------------

    def _check_no_duplicates(
        self, t: _Table, key: str, values: Sequence[_T], show: Callable[[_T], str]
    ) -> None:
        for index, value in enumerate(values):
            if value in values[:index]:
                raise self.error(
                    (*t.path, key, index),
                    f"'{show(value)}' is listed twice (first at {key}[{values.index(value)}])",
                )

    def _host_port(self, path: KeyPath, value: object, *, required_port: bool) -> Address:
        example = (
            '"127.0.0.1:5353" or "[::1]:5353"'
            if required_port
            else '"192.0.2.53" or "[2001:db8::53]:53"'
        )
        if not isinstance(value, str):
            raise self.error(path, f"expected a string such as {example}, got {_describe(value)}")
        text = value.strip()
        host, port_text = text, None
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise self.error(path, f"{value!r} has '[' without ']' (write {example})")
            host, rest = text[1:close], text[close + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise self.error(path, f"{value!r} is not host:port (write {example})")
                port_text = rest[1:]
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        # More than one ':' without brackets: a bare IPv6 address, no port.
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise self.error(
                path, f"{value!r}: {host!r} is not an IP address (host names are not allowed)"
            ) from None
        if text.startswith("[") and address.version != 6:
            raise self.error(path, f"{value!r}: only IPv6 addresses go in brackets")
        if port_text is None:
            if required_port:
                raise self.error(path, f"{value!r} has no port (write {example})")
            port = 53
        else:
            if not port_text.isdigit() or not port_text.isascii():
                raise self.error(path, f"{value!r}: port {port_text!r} is not a number")
            port = int(port_text)
            low = 0 if required_port else 1
            if not low <= port <= 65535:
                raise self.error(path, f"{value!r}: port {port} is not between {low} and 65535")
        return str(address), port

    def _network(self, path: KeyPath, value: object) -> Network:
        if not isinstance(value, str):
            raise self.error(
                path, f'expected a CIDR string such as "10.0.0.0/8", got {_describe(value)}'
            )
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise self.error(
                path, f'{value!r} is not a CIDR network such as "10.0.0.0/8" or "fc00::/7"'
            ) from None

    def _address(self, path: KeyPath, value: object, version: int) -> str:
        if not isinstance(value, str):
            raise self.error(
                path, f"expected an IPv{version} address string, got {_describe(value)}"
            )
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise self.error(path, f"{value!r} is not an IPv{version} address") from None
        if address.version != version:
            raise self.error(
                path, f"{value!r} is an IPv{address.version} address, expected IPv{version}"
            )
        return str(address)

    def _optional_address(self, t: _Table, key: str, version: int) -> str | None:
        value = t.raw(key)
        if value is _MISSING or value == "":  # "" switches a landing address off explicitly
            return None
        return self._address((*t.path, key), value, version)

    def _landing_override(self, t: _Table, key: str, version: int) -> tuple[str, ...]:
        value = t.raw(key)
        path = (*t.path, key)
        if value is _MISSING:
            return ()
        if isinstance(value, str):
            return (self._address(path, value, version),)
        if not isinstance(value, list):
            raise self.error(
                path,
                f"expected an IPv{version} address string or an array of them, "
                f"got {_describe(value)}",
            )
        out: list[str] = []
        for index, item in enumerate(value):
            address = self._address((*path, index), item, version)
            if address not in out:
                out.append(address)
        return tuple(out)

    def _sde_text(self, t: _Table, key: str, *, uri: bool = False) -> str | None:
        value = t.get_str(key, "")
        if not value:
            return None
        if len(value) > MAX_SDE_TEXT:
            raise t.error(key, f"is {len(value)} characters long, at most {MAX_SDE_TEXT} fit")
        if uri and not _URI_RE.fullmatch(value):
            raise t.error(
                key,
                f'{value!r} is not a URI; write e.g. "mailto:abuse@example.net", '
                '"tel:+62-21-555-0100" or "https://example.net/blocked"',
            )
        return value

    def _domain(self, t: _Table, key: str, default: str) -> str:
        value = t.get_str(key, default).strip()
        name = value[:-1] if value.endswith(".") else value
        if (
            not name
            or len(name) > 253
            or not all(_DNS_LABEL_RE.fullmatch(p) for p in name.split("."))
        ):
            raise t.error(key, f"{value!r} is not a domain name such as {default!r}")
        return name + "."


class _Table:
    """One TOML table being validated: rejects unknown keys up front, then typed getters."""

    def __init__(
        self,
        ctx: _Context,
        path: KeyPath,
        data: dict[str, object],
        known: Sequence[str],
        hints: dict[str, str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.data = data
        for key in data:
            if key not in known:
                hint = (hints or {}).get(key)
                raise ctx.error((*path, key), hint or _unknown("key", key, known))

    def error(self, key: str, why: str) -> ConfigError:
        return self.ctx.error((*self.path, key), why)

    def raw(self, key: str) -> object:
        return self.data.get(key, _MISSING)

    def _required(self, key: str) -> ConfigError:
        return self.error(key, "required key is missing")

    def get(self, key: str, default: _T, parse: Callable[[KeyPath, object], _T]) -> _T:
        value = self.raw(key)
        return default if value is _MISSING else parse((*self.path, key), value)

    def get_int(
        self, key: str, default: int, low: int | None = None, high: int | None = None
    ) -> int:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_describe(value)}")
        self._check_range(key, value, low, high)
        return value

    def get_float(self, key: str, default: float) -> float:
        """A number of seconds: > 0 and finite; integers are accepted."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number (seconds), got {_describe(value)}")
        number = float(value)
        if not math.isfinite(number) or number <= 0:
            raise self.error(key, f"must be a finite number > 0, got {value}")
        return number

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected a boolean (true or false), got {_describe(value)}")
        return value

    def get_str(self, key: str, default: str | None) -> str:
        """A string; `default=None` makes the key required."""
        value = self.raw(key)
        if value is _MISSING:
            if default is None:
                raise self._required(key)
            return default
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_describe(value)}")
        if default is None and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def get_choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.get_str(key, default)
        if value.lower() not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    def get_enum(self, key: str, default: _E, choices: Sequence[_E]) -> _E:
        value = self.get_choice(key, default.value, [c.value for c in choices])
        return next(c for c in choices if c.value == value)

    def get_list(self, key: str, parse: Callable[[KeyPath, object], _U]) -> list[_U] | None:
        """An array whose elements `parse` validates one by one; None if the key is absent."""
        value = self.raw(key)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            raise self.error(key, f"expected an array, got {_describe(value)}")
        return [parse((*self.path, key, index), item) for index, item in enumerate(value)]

    def _check_range(self, key: str, value: int, low: int | None, high: int | None) -> None:
        if low is not None and high is not None and not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        if low is not None and value < low:
            raise self.error(key, f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise self.error(key, f"must be <= {high}, got {value}")
