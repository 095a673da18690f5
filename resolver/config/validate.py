"""Parsed TOML in, the frozen and validated `Config` out.

Each key's default, range and choices come from the schema (schema.py); the rules no schema field
can say (an address, a URI, a list whose `path` is a URL, keys that depend on each other) are
here. Every section except the lists has defaults, so a file holding only `[[lists]]` is a full
config. Relative paths (list files, the index) resolve against the directory of the config file.
Nothing here touches the network or the list files themselves; `/etc/resolv.conf` is read only
when the upstream servers are asked for (`Config.upstream_servers`), never at parse time.

`ValueParsers` is the part other sources of settings reuse (resolver/envconfig.py): the address
and network rules, with errors made by an `error` method a subclass can word differently.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from resolver.config.addresses import Address, Network, TlsServer, format_address, own_listener
from resolver.config.locator import ConfigError, KeyPath, Locator, format_key_path
from resolver.config.schema import (
    ARRAY_SECTIONS,
    MAX_SDE_TEXT,
    SCHEMA,
    SECTION_KEYS,
    TABLE_SECTIONS,
    AllowlistConfig,
    BlockingConfig,
    CacheConfig,
    Config,
    GroupConfig,
    KeySpec,
    LandingConfig,
    ListConfig,
    ListSource,
    MetricsConfig,
    QueryLogConfig,
    RpzConfig,
    ServerConfig,
    TsigKey,
    UpdatesConfig,
    UpstreamConfig,
)
from resolver.control import MAX_PATH_BYTES
from resolver.lists import IP_FORMATS
from resolver.policy import Action, Ede, MatchMode
from resolver.ratelimit import RateLimitAction
from resolver.sources import source_paths
from resolver.xfr.source import XfrSource, is_xfr_url, parse_tsig, parse_xfr_url

# A zone name as the RPZ export accepts it (resolver/export.py).
_ZONE = re.compile(r"(?:[a-z0-9_-]+\.)+")

__all__ = ["ValueParsers", "load_config", "parse_config"]

_URL_RE = re.compile(r"\s*https?://", re.IGNORECASE)
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_TOML_POSITION_RE = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")


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
    ctx = _Context(file, Locator(text), source.parent)
    return ctx.build(raw, source)


_T = TypeVar("_T")
_U = TypeVar("_U")
_E = TypeVar("_E", bound=StrEnum)
_D = TypeVar("_D", float, None)
_MISSING = object()

# Keys of [[lists]] that have no meaning in [[allowlists]]: say why rather than "unknown key".
_ALLOWLIST_HINTS = {
    key: "not used in an allowlist (its names are always allowed; move the list to [[lists]] "
    "to block them)"
    for key in SECTION_KEYS["lists"]
    if key not in SECTION_KEYS["allowlists"]
}


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


def _show_server(server: Address | TlsServer) -> str:
    return str(server) if isinstance(server, TlsServer) else format_address(server)


class ValueParsers:
    """The value rules other sources of settings share with the file (resolver/envconfig.py).

    `path` names the value in errors; `error` words them (here: the key path alone)."""

    def error(self, path: KeyPath, why: str) -> ConfigError:
        return ConfigError(why, key=format_key_path(path))

    def host_port(self, path: KeyPath, value: object, *, required_port: bool) -> Address:
        """`"ip:port"`, `"[ipv6]:port"`, or (without `required_port`) a bare IP, port 53."""
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

    def network(self, path: KeyPath, value: object) -> Network:
        """A CIDR string; host bits may be set (`"192.0.2.7/24"`); a bare address is one host."""
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

    def address(self, path: KeyPath, value: object, version: int) -> str:
        """An IPv4 or IPv6 address (`version`), in its canonical text form."""
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


class _Context(ValueParsers):
    """Carries the file name, the locator and the base directory through validation."""

    def __init__(self, file: str, locator: Locator, base_dir: Path) -> None:
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
        sections = (*TABLE_SECTIONS, *ARRAY_SECTIONS)
        for key, value in raw.items():
            if key in sections:
                continue
            is_table = isinstance(value, dict) or (
                isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
            )
            if not is_table:
                owners = [s for s, keys in SECTION_KEYS.items() if key in keys]
                if owners:
                    raise self.error(
                        (key,),
                        f"unknown top-level key (did you mean to put it under [{owners[0]}]?)",
                    )
                raise self.error((key,), _unknown("top-level key", key, sections))
            raise self.error((key,), _unknown("section", key, sections))

        tables = {name: self._table_section(raw, name) for name in TABLE_SECTIONS}
        server = self._server(tables["server"])
        upstream = self._upstream(tables["upstream"], server)
        blocking = self._blocking(tables["blocking"])
        cache = self._cache(tables["cache"])
        metrics = self._metrics(tables["metrics"])
        landing = self._landing(tables["landing"])
        self.updates = updates = self._updates(tables["updates"], blocking.index_path)
        querylog = self._querylog(tables["querylog"])
        rpz = self._rpz(tables["rpz"])
        allowlists = tuple(self._allowlist(t) for t in self._array_section(raw, "allowlists"))
        lists = tuple(self._list(t) for t in self._array_section(raw, "lists"))
        self._check_unique_names(allowlists, lists)
        groups = self._groups(self._array_section(raw, "groups"), lists, allowlists)
        return Config(
            groups=groups,
            source=source,
            server=server,
            upstream=upstream,
            blocking=blocking,
            cache=cache,
            metrics=metrics,
            landing=landing,
            updates=updates,
            querylog=querylog,
            rpz=rpz,
            lists=lists,
            allowlists=allowlists,
        )

    def _table_section(self, raw: dict[str, object], name: str) -> _Table:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise self.error((name,), f"expected a table ([{name}]), got {_describe(value)}")
        return _Table(self, (name,), value, name)

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
            tables.append(_Table(self, (name, index), item, name, hints))
        return tables

    # -- sections ----------------------------------------------------------------------------

    def _server(self, t: _Table) -> ServerConfig:
        listen = t.get_list("listen", lambda p, v: self.host_port(p, v, required_port=True))
        if listen is not None:
            if not listen:
                raise t.error("listen", "must name at least one address")
            self._check_no_duplicates(t, "listen", listen, format_address)
        allow = t.get_list("allow", self.network)
        if allow is not None and not allow:
            raise t.error(
                "allow",
                "an empty list refuses every client; to answer everyone (an open resolver) "
                'write allow = ["0.0.0.0/0", "::/0"]',
            )
        user = t.get_str("user").strip()
        group = t.get_str("group").strip()
        if group and not user:
            raise t.error("group", "switching only the group is not supported: set user too")
        encrypted: dict[str, tuple[Address, ...]] = {}
        for key in ("tls_listen", "https_listen"):
            addresses = t.get_list(key, lambda p, v: self.host_port(p, v, required_port=True))
            self._check_no_duplicates(t, key, addresses or [], format_address)
            encrypted[key] = tuple(addresses or ())
        certificate, key_file = t.get_str("certificate").strip(), t.get_str("key").strip()
        if encrypted["tls_listen"] or encrypted["https_listen"]:
            for name, value in (("certificate", certificate), ("key", key_file)):
                if not value:
                    raise t.error(name, "tls_listen and https_listen need a certificate and key")
        certificate = str(self.resolve_path(certificate)) if certificate else ""
        key_file = str(self.resolve_path(key_file)) if key_file else ""
        https_path = t.get_str("https_path").strip()
        if not https_path.startswith("/") or "?" in https_path or "#" in https_path:
            raise t.error("https_path", f"{https_path!r} must start with '/' and hold no '?'")
        defaults = ServerConfig()
        return ServerConfig(
            listen=tuple(listen) if listen is not None else defaults.listen,
            tls_listen=encrypted["tls_listen"],
            https_listen=encrypted["https_listen"],
            https_path=https_path,
            certificate=certificate,
            key=key_file,
            tls_handshake_timeout=t.get_float("tls_handshake_timeout"),
            tls_max_connections=t.get_int("tls_max_connections"),
            https_max_streams=t.get_int("https_max_streams"),
            workers=t.get_int("workers"),
            tcp_idle_timeout=t.get_float("tcp_idle_timeout"),
            tcp_max_connections=t.get_int("tcp_max_connections"),
            allow=tuple(allow) if allow is not None else defaults.allow,
            udp_payload_size=t.get_int("udp_payload_size"),
            ratelimit=t.get_int("ratelimit"),
            ratelimit_burst=t.get_int("ratelimit_burst"),
            ratelimit_action=t.get_enum("ratelimit_action", RateLimitAction),
            user=user,
            group=group,
        )

    def _upstream(self, t: _Table, server: ServerConfig) -> UpstreamConfig:
        entries = t.get_list("servers", self._upstream_server) or []
        self._check_no_duplicates(t, "servers", entries, _show_server)
        tls_servers = [e for e in entries if isinstance(e, TlsServer)]
        servers = [e for e in entries if not isinstance(e, TlsServer)]
        tls_ca = t.get_str("tls_ca").strip()
        for index, address in enumerate(servers):
            own = own_listener(address, server.listen)
            if own is not None:
                raise self.error(
                    ("upstream", "servers", index),
                    f"'{format_address(address)}' is blokir's own listen address "
                    f"(server.listen[{own}]); forwarding to it would loop",
                )
        return UpstreamConfig(
            servers=tuple(servers),
            tls_servers=tuple(tls_servers),
            tls_ca=str(self.resolve_path(tls_ca)) if tls_ca else "",
            timeout=t.get_float("timeout"),
            attempts=t.get_int("attempts"),
            max_inflight=t.get_int("max_inflight"),
            max_inflight_per_zone=t.get_int("max_inflight_per_zone"),
        )

    def _blocking(self, t: _Table) -> BlockingConfig:
        index_path = t.get_str("index_path", str(t.default("index_path", Path)))
        return BlockingConfig(
            landing_ipv4=self._optional_address(t, "landing_ipv4", 4),
            landing_ipv6=self._optional_address(t, "landing_ipv6", 6),
            ttl=t.get_int("ttl"),
            index_path=self.resolve_path(index_path),
            contact=self._sde_text(t, "contact", uri=True),
            justification=self._sde_text(t, "justification"),
            organisation=self._sde_text(t, "organisation"),
            soa_mname=self._domain(t, "soa_mname"),
            soa_rname=self._domain(t, "soa_rname"),
        )

    def _cache(self, t: _Table) -> CacheConfig:
        min_ttl = t.get_int("min_ttl")
        max_ttl = t.get_int("max_ttl")
        if max_ttl < min_ttl:
            raise t.error("max_ttl", f"must be >= cache.min_ttl ({min_ttl}), got {max_ttl}")
        return CacheConfig(
            max_entries=t.get_int("max_entries"),
            max_bytes=t.get_int("max_bytes"),
            min_ttl=min_ttl,
            max_ttl=max_ttl,
            negative_ttl_max=t.get_int("negative_ttl_max"),
            servfail_ttl=t.get_int("servfail_ttl"),
            serve_stale=t.get_bool("serve_stale"),
            stale_answer_ttl=t.get_int("stale_answer_ttl"),
            max_stale=t.get_int("max_stale"),
            stale_client_timeout=self._stale_client_timeout(t),
        )

    @staticmethod
    def _stale_client_timeout(t: _Table) -> float:
        """Seconds, or 0 (off): get_float accepts only > 0, and 0 is a meaningful value here."""
        value = t.raw("stale_client_timeout")
        if value == 0 and not isinstance(value, bool):
            return 0.0
        return t.get_float("stale_client_timeout")

    def _metrics(self, t: _Table) -> MetricsConfig:
        listen = t.get(
            "listen", MetricsConfig().listen, lambda p, v: self.host_port(p, v, required_port=True)
        )
        textfile = t.get_str("textfile")
        return MetricsConfig(
            enabled=t.get_bool("enabled"),
            listen=listen,
            top_k=t.get_int("top_k"),
            textfile=self.resolve_path(textfile) if textfile.strip() else None,
            textfile_interval=t.get_float("textfile_interval"),
        )

    def _querylog(self, t: _Table) -> QueryLogConfig:
        sink = t.get_str("dnstap").strip()
        if sink:
            kind, _, rest = sink.partition(":")
            if kind in ("unix", "file"):
                if not rest.strip():
                    raise t.error("dnstap", f"{kind}: needs a path")
                path = self.resolve_path(rest.strip())
                if kind == "unix" and len(os.fsencode(path)) > MAX_PATH_BYTES:
                    raise t.error("dnstap", f"the socket path is over {MAX_PATH_BYTES} bytes")
                sink = f"{kind}:{path}"
            elif kind == "tcp":
                host, port = self.host_port(("querylog", "dnstap"), rest, required_port=True)
                sink = f"tcp:{format_address((host, port))}"
            else:
                raise t.error(
                    "dnstap", f'{sink!r}: expected "unix:/path", "tcp:HOST:PORT" or "file:/path"'
                )
        return QueryLogConfig(
            dnstap=sink,
            sample=t.get_int("sample"),
            only_blocked=t.get_bool("only_blocked"),
            client_prefix_v4=t.get_int("client_prefix_v4"),
            client_prefix_v6=t.get_int("client_prefix_v6"),
            blocked_full_address=t.get_bool("blocked_full_address"),
            identity=t.get_str("identity"),
            queue=t.get_int("queue"),
            file_max_bytes=t.get_int("file_max_bytes"),
            file_keep=t.get_int("file_keep"),
        )

    def _landing(self, t: _Table) -> LandingConfig:
        listen: dict[str, tuple[Address, ...]] = {}
        for key in ("listen", "tls_listen"):
            found = t.get_list(key, lambda p, v: self.host_port(p, v, required_port=True)) or []
            self._check_no_duplicates(t, key, found, format_address)
            listen[key] = tuple(found)
        paths: dict[str, Path | None] = {}
        for key in ("certificate", "key", "template_dir"):
            text = t.get_str(key).strip()
            paths[key] = self.resolve_path(text) if text else None
        names = tuple(
            self._domain_value((*t.path, "server_names", i), v)
            for i, v in enumerate(t.get_list("server_names", lambda p, v: v) or [])
        )
        if listen["tls_listen"]:
            for key in ("certificate", "key"):
                if paths[key] is None:
                    raise t.error(key, "required with tls_listen")
            if not names:
                raise t.error(
                    "server_names", "required with tls_listen: the names the certificate is for"
                )
        return LandingConfig(
            listen=listen["listen"],
            tls_listen=listen["tls_listen"],
            certificate=paths["certificate"],
            key=paths["key"],
            server_names=names,
            default_language=t.get_choice("default_language"),
            template_dir=paths["template_dir"],
            appeal_url=self._http_url(t, "appeal_url"),
            log_clients=t.get_bool("log_clients"),
            max_connections=t.get_int("max_connections"),
            header_timeout=t.get_float("header_timeout"),
            max_header_bytes=t.get_int("max_header_bytes"),
        )

    def _http_url(self, t: _Table, key: str) -> str | None:
        """An absolute http(s) URL with no spaces, quotes or angle brackets: it goes into an
        href and into the Link header (RFC 8288), where `>` would end it."""
        value = t.get_str(key).strip()
        if not value:
            return None
        parts = urllib.parse.urlsplit(value)
        if (
            parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or any(c in value for c in " <>\"'\\")
            or not value.isascii()
            or not value.isprintable()
        ):
            raise t.error(key, f"{value!r} is not an http:// or https:// URL")
        return value

    def _domain_value(self, path: KeyPath, value: object) -> str:
        """A host name as written in a certificate (no trailing dot), in lower case."""
        text = value.strip().lower().rstrip(".") if isinstance(value, str) else ""
        labels = text.split(".")
        valid = all(_DNS_LABEL_RE.fullmatch(x) for x in labels)
        if len(text) > 253 or len(labels) < 2 or not valid:
            raise self.error(path, 'expected a domain name such as "blocked.isp.example"')
        return text

    def _updates(self, t: _Table, index_path: Path) -> UpdatesConfig:
        # By default next to the index: both are written by blokir, so a deployment makes one
        # directory writable (systemd StateDirectory=, the container's /var/lib/blokir).
        state_text = t.get_str("state_dir", "")
        state_dir = (
            self.resolve_path(state_text)
            if state_text.strip()
            else index_path.parent / "blokir-state"
        )
        socket_text = t.get_str("control_socket")
        socket_path = self.resolve_path(socket_text) if socket_text.strip() else None
        updates = UpdatesConfig(
            state_dir=state_dir,
            control_socket=socket_path,
            watch=t.get_bool("watch"),
            watch_interval=t.get_float("watch_interval"),
            refresh=t.get_float("refresh"),
            max_shrink=t.get_fraction("max_shrink", t.default("max_shrink", float)),
            download_timeout=t.get_float("download_timeout"),
            download_retries=t.get_int("download_retries"),
            max_download_bytes=t.get_int("max_download_bytes"),
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

    def _rpz(self, t: _Table) -> RpzConfig:
        """`[rpz]`: the primary's keys (serving the policy, resolver/xfr/primary.py) and the
        secondary's (NOTIFY for `axfr://` lists, resolver/xfr/notify.py)."""
        defaults = RpzConfig()
        notify_listen = None
        if t.raw("notify_listen") not in (_MISSING, ""):
            notify_listen = self.host_port(
                (*t.path, "notify_listen"), t.raw("notify_listen"), required_port=True
            )
        notify_from = t.get_list("notify_from", self.network)
        listen = t.get_list("listen", lambda p, v: self.host_port(p, v, required_port=True))
        notify = t.get_list("notify", lambda p, v: self.host_port(p, v, required_port=True))
        allow = t.get_list("allow_transfer", self.network)
        tsig = t.get_list("tsig", self.tsig_key) or []
        if len({k.name for k in tsig}) != len(tsig):
            raise t.error("tsig", "two keys have the same name")
        require = t.get_bool("require_tsig")
        if require and not tsig:
            raise t.error("require_tsig", "is true but no [rpz] tsig key is configured")
        zone = t.get_str("zone").strip().lower()
        zone = zone if zone.endswith(".") else zone + "."
        if not _ZONE.fullmatch(zone) or len(zone) > 254:
            raise t.error("zone", f"{zone!r} is not a usable zone name")
        return RpzConfig(
            listen=tuple(listen or ()),
            zone=zone,
            allow_transfer=tuple(allow) if allow is not None else defaults.allow_transfer,
            notify=tuple(notify or ()),
            tsig=tuple(tsig),
            require_tsig=require,
            history=t.get_int("history"),
            notify_listen=notify_listen,
            notify_from=tuple(notify_from) if notify_from is not None else defaults.notify_from,
        )

    def tsig_key(self, path: KeyPath, value: object) -> TsigKey:
        """An `[rpz] tsig` entry, checked as an `axfr://` list's key is (parse_tsig)."""
        try:
            return parse_tsig(value)
        except ValueError as exc:
            raise self.error(path, str(exc)) from None

    def _xfr_source(self, t: _Table, path_text: str, fmt: str) -> XfrSource:
        """An `axfr://` list: the URL, its optional TSIG key, and the implied rpz format."""
        try:
            xfr = parse_xfr_url(path_text)
        except ValueError as exc:
            raise t.error("path", str(exc)) from None
        if fmt not in ("auto", "rpz"):
            raise t.error("format", f"an axfr:// list is an RPZ zone; {fmt!r} cannot apply")
        raw_tsig = t.raw("tsig")
        if raw_tsig is _MISSING:
            return xfr
        try:
            return XfrSource(xfr.host, xfr.port, xfr.zone, parse_tsig(raw_tsig))
        except ValueError as exc:
            raise t.error("tsig", str(exc)) from None

    def _list_common(self, t: _Table) -> tuple[str, Path, str, MatchMode, str, ListSource, str]:
        name = t.get_str("name")
        if not _NAME_RE.fullmatch(name) or name in (".", ".."):
            raise t.error("name", f"{name!r} may only contain letters, digits, '_', '.' and '-'")
        path_text = t.get_str("path")
        if not path_text.strip():
            raise t.error("path", "must not be empty")
        category = t.get_str("category")
        if not category.strip():
            raise t.error("category", "must not be empty")
        match = t.get_enum("match", MatchMode)
        fmt = t.get_choice("format")
        kind = t.get_choice("kind")
        if kind == "ip" and fmt not in IP_FORMATS:
            raise t.error(
                "format",
                f'an IP list (kind = "ip") is read one address or prefix per line; format '
                f"{fmt!r} does not apply (use {' or '.join(repr(f) for f in IP_FORMATS)}; "
                "an RPZ file's rpz-ip triggers are read from a domain list)",
            )
        url: str | None = None
        xfr: XfrSource | None = None
        if is_xfr_url(path_text):
            xfr = self._xfr_source(t, path_text, fmt)
            fmt = "rpz"
            # The last good transfer, written as a zone file (resolver/xfr/secondary.py).
            path = source_paths(self.updates.state_dir, name)[0]
        elif _URL_RE.match(path_text):
            parts = urllib.parse.urlsplit(path_text.strip())
            if not parts.hostname:
                raise t.error("path", f"{path_text!r} has no host name")
            url = path_text.strip()
            # The last good download; `blokir serve` fetches it (README "Live list updates").
            path = source_paths(self.updates.state_dir, name)[0]
        else:
            if "://" in path_text:
                raise t.error("path", "only http://, https:// and axfr:// URLs are supported")
            path = self.resolve_path(path_text)
        refresh: float | None = None
        if t.raw("refresh") is not _MISSING:
            refresh = t.get_float("refresh")
        if refresh is not None and url is None and xfr is None:
            raise t.error("refresh", "only used with a URL path (local files are watched)")
        if t.raw("tsig") is not _MISSING and xfr is None:
            raise t.error("tsig", "only used with an axfr:// path")
        source = ListSource(
            url=url,
            xfr=xfr,
            refresh=refresh,
            tsig=xfr.tsig if xfr is not None else None,
            max_shrink=t.get_fraction("max_shrink", None),
            max_rejected_ratio=t.get_fraction(
                "max_rejected_ratio", t.default("max_rejected_ratio", float)
            ),
        )
        return name, path, category, match, fmt, source, kind

    def _upstream_server(self, path: KeyPath, value: object) -> Address | TlsServer:
        """A plain upstream (host_port) or `tls://ip[:port]#name` (RFC 7858 over port 853)."""
        if not (isinstance(value, str) and value.strip().startswith("tls://")):
            return self.host_port(path, value, required_port=False)
        rest, _, name = value.strip()[len("tls://") :].partition("#")
        name = name.strip().rstrip(".")
        if not name or any(c in name for c in "/:# ") or name.startswith("."):
            raise self.error(
                path, f"{value!r} needs '#name', the name the server's certificate is for"
            )
        host, port = self.host_port(path, rest, required_port=False)
        if ":" not in rest.rpartition("]")[2]:
            port = 853  # RFC 7858 3.1
        return TlsServer(host, port, name)

    def _groups(
        self,
        tables: list[_Table],
        config_lists: Sequence[ListConfig],
        allowlists: Sequence[AllowlistConfig],
    ) -> tuple[GroupConfig, ...]:
        known = {
            "lists": {c.name for c in config_lists},
            "allowlists": {a.name for a in allowlists},
        }
        groups: list[GroupConfig] = []
        for t in tables:
            name = t.get_str("name").strip()
            if not name or name == "default":
                raise t.error("name", "a group needs a name other than 'default'")
            if any(g.name == name for g in groups):
                raise t.error("name", f"'{name}' is already the name of another group")
            clients = t.get_list("clients", self.network)
            if not clients:
                raise t.error("clients", "a group needs at least one client network")
            for other in groups:
                for network in clients:
                    if network in other.clients:
                        raise t.error("clients", f"{network} is in group '{other.name}' too")
            chosen: dict[str, tuple[str, ...] | None] = {}
            for key in ("lists", "allowlists"):
                parse = functools.partial(self._list_name, kind=key, known=known[key])
                names = t.get_list(key, parse)
                chosen[key] = tuple(names) if names is not None else None
            groups.append(GroupConfig(name, tuple(clients), chosen["lists"], chosen["allowlists"]))
        return tuple(groups)

    def _list_name(self, path: KeyPath, value: object, *, known: set[str], kind: str) -> str:
        if not isinstance(value, str) or value not in known:
            raise self.error(path, f"{value!r} is not the name of one of the [[{kind}]]")
        return value

    def _allowlist(self, t: _Table) -> AllowlistConfig:
        name, path, category, match, fmt, source, kind = self._list_common(t)
        return AllowlistConfig(
            name=name,
            path=path,
            category=category,
            match=match,
            format=fmt,
            source=source,
            kind=kind,
        )

    def _list(self, t: _Table) -> ListConfig:
        name, path, category, match, fmt, source, kind = self._list_common(t)
        action = t.get_enum("action", Action)
        ede = t.get_enum("ede", Ede)
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
            kind=kind,
            landing_ipv4=landing[4],
            landing_ipv6=landing[6],
            justification=self._sde_text(t, "justification"),
            contact=self._sde_text(t, "contact", uri=True),
            organisation=self._sde_text(t, "organisation"),
            appeal_url=self._http_url(t, "appeal_url"),
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

    def _optional_address(self, t: _Table, key: str, version: int) -> str | None:
        value = t.raw(key)
        if value is _MISSING or value == "":  # "" switches a landing address off explicitly
            return None
        return self.address((*t.path, key), value, version)

    def _landing_override(self, t: _Table, key: str, version: int) -> tuple[str, ...]:
        value = t.raw(key)
        path = (*t.path, key)
        if value is _MISSING:
            return ()
        if isinstance(value, str):
            return (self.address(path, value, version),)
        if not isinstance(value, list):
            raise self.error(
                path,
                f"expected an IPv{version} address string or an array of them, "
                f"got {_describe(value)}",
            )
        out: list[str] = []
        for index, item in enumerate(value):
            address = self.address((*path, index), item, version)
            if address not in out:
                out.append(address)
        return tuple(out)

    def _sde_text(self, t: _Table, key: str, *, uri: bool = False) -> str | None:
        value = t.get_str(key)
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

    def _domain(self, t: _Table, key: str) -> str:
        default = t.default(key, str)
        value = t.get_str(key).strip()
        name = value[:-1] if value.endswith(".") else value
        if (
            not name
            or len(name) > 253
            or not all(_DNS_LABEL_RE.fullmatch(p) for p in name.split("."))
        ):
            raise t.error(key, f"{value!r} is not a domain name such as {default!r}")
        return name + "."


class _Table:
    """One TOML table being validated: rejects unknown keys up front, then getters that take
    each key's default, range and choices from the schema."""

    def __init__(
        self,
        ctx: _Context,
        path: KeyPath,
        data: dict[str, object],
        section: str,
        hints: dict[str, str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.data = data
        self.specs = SCHEMA[section]
        known = SECTION_KEYS[section]
        for key in data:
            if key not in known:
                hint = (hints or {}).get(key)
                raise ctx.error((*path, key), hint or _unknown("key", key, known))

    def error(self, key: str, why: str) -> ConfigError:
        return self.ctx.error((*self.path, key), why)

    def raw(self, key: str) -> object:
        return self.data.get(key, _MISSING)

    def spec(self, key: str) -> KeySpec:
        return self.specs[key]

    def default(self, key: str, kind: type[_T]) -> _T:
        """The schema's default for `key`, which must be a `kind`."""
        value = self.specs[key].default
        if not isinstance(value, kind):
            raise TypeError(f"the schema's default of {key} is {value!r}, not a {kind.__name__}")
        return value

    def get(self, key: str, default: _T, parse: Callable[[KeyPath, object], _T]) -> _T:
        value = self.raw(key)
        return default if value is _MISSING else parse((*self.path, key), value)

    def get_int(self, key: str) -> int:
        value = self.raw(key)
        if value is _MISSING:
            return self.default(key, int)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_describe(value)}")
        setting = self.spec(key).setting
        self._check_range(key, value, setting.low, setting.high)
        return value

    def get_float(self, key: str) -> float:
        """A number of seconds: > 0 and finite; integers are accepted."""
        value = self.raw(key)
        if value is _MISSING:
            return self.default(key, float)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number (seconds), got {_describe(value)}")
        number = float(value)
        if not math.isfinite(number) or number <= 0:
            raise self.error(key, f"must be a finite number > 0, got {value}")
        return number

    def get_fraction(self, key: str, default: _D) -> float | _D:
        """A fraction between the schema's low and high (0 and 1); integers are accepted."""
        value = self.raw(key)
        if value is _MISSING:
            return default
        setting = self.spec(key).setting
        low, high = setting.low, setting.high
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(
                key, f"expected a fraction between {low} and {high}, got {_describe(value)}"
            )
        if low is None or high is None or not low <= float(value) <= high:
            raise self.error(
                key, f"must be between {low} and {high} (0.5 = half the names), got {value}"
            )
        return float(value)

    def get_bool(self, key: str) -> bool:
        value = self.raw(key)
        if value is _MISSING:
            return self.default(key, bool)
        if not isinstance(value, bool):
            raise self.error(key, f"expected a boolean (true or false), got {_describe(value)}")
        return value

    def get_str(self, key: str, absent: str | None = None) -> str:
        """A string. When the key is absent: `absent` if given, else the schema's default when
        that is a string, "" when the schema's default is something else (None, a path the
        caller derives), and an error when the schema has no default (a required key)."""
        value = self.raw(key)
        required = self.spec(key).required
        if value is _MISSING:
            if required:
                raise self.error(key, "required key is missing")
            if absent is not None:
                return absent
            default = self.spec(key).default
            return str(default) if isinstance(default, str) else ""
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_describe(value)}")
        if required and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def get_choice(self, key: str) -> str:
        """One of the schema's choices, in any case; returned in lower case."""
        choices = self.spec(key).setting.choices
        value = self.get_str(key)
        if value.lower() not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    def get_enum(self, key: str, enum: type[_E]) -> _E:
        return enum(self.get_choice(key))

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
