"""The configuration schema: every section and key, declared once.

Each section is a frozen dataclass and each TOML key a field of it whose `metadata` holds a
`Setting`: the type as a person writes it, the allowed range or choices, how the default is shown
when the field's default is not what one would write, and a one-line description. The validator
(validate.py) takes each key's default, range and choices from here, the known keys of each
section come from here (`SECTION_KEYS`), and docs.py writes docs/configuration.md from here.

A field without a `Setting` is not a TOML key (`ListConfig.source` gathers `refresh`,
`max_shrink` and `max_rejected_ratio`, whose Settings are on `ListSource`; `ListSource.url`
comes from `path`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from resolver.config.addresses import (
    RESOLV_CONF,
    Address,
    Network,
    TlsServer,
    format_address,
    own_listener,
    resolv_conf_servers,
)
from resolver.config.locator import ConfigError
from resolver.dns.constants import MAX_TTL
from resolver.lists import FORMATS as LIST_FORMATS
from resolver.lists.model import KINDS as LIST_KINDS
from resolver.lists.model import ListSpec
from resolver.lists.quality import DEFAULT_MAX_REJECTED_RATIO
from resolver.policy import Action, Ede, MatchMode
from resolver.ratelimit import RateLimitAction
from resolver.xfr.source import TSIG_ALGORITHMS, TsigKey, XfrSource

__all__ = [
    "ARRAY_SECTIONS",
    "DEFAULT_ALLOW",
    "LIST_ACTIONS",
    "MAX_SDE_TEXT",
    "MAX_TTL",
    "SCHEMA",
    "SECTIONS",
    "SECTION_KEYS",
    "TABLE_SECTIONS",
    "AllowlistConfig",
    "BlockingConfig",
    "CacheConfig",
    "Config",
    "KeySpec",
    "LandingConfig",
    "ListConfig",
    "ListSource",
    "MetricsConfig",
    "QueryLogConfig",
    "RpzConfig",
    "Section",
    "ServerConfig",
    "Setting",
    "TsigKey",
    "UpdatesConfig",
    "UpstreamConfig",
    "keys_of",
]

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

# Value types the validator has a generic rule for (validate.py's _Table getters); any other
# `type` text names a value parsed by its own function there (addresses, paths, ...).
INTEGER = "integer"
SECONDS = "seconds"  # a finite number > 0; integers are accepted
FRACTION = "fraction"
BOOLEAN = "boolean"
STRING = "string"

_SETTING = "blokir"  # the metadata key a Setting is stored under
_KEYS_FROM = "blokir.keys_from"  # a field whose class's keys belong to this table
_SECTION = "blokir.section"


@dataclass(frozen=True, slots=True)
class Setting:
    """What the schema says about one TOML key (the field's default is its default)."""

    doc: str
    type: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    allowed: str = ""  # the allowed values in words, when low, high and choices do not say it
    shown_default: str = ""  # the default as the docs show it, when the field's is not that


def setting(
    doc: str,
    type: str,
    *,
    low: int | None = None,
    high: int | None = None,
    choices: tuple[str, ...] = (),
    allowed: str = "",
    default: str = "",
) -> Mapping[str, Setting]:
    """Field metadata declaring a TOML key: `field(default=..., metadata=setting(...))`."""
    return {_SETTING: Setting(doc, type, low, high, choices, allowed, default)}


def _in_networks(client: str, networks: Iterable[Network]) -> bool:
    """Whether an address (text) falls in one of `networks`; False for what is no address."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _values(choices: Iterable[StrEnum]) -> tuple[str, ...]:
    return tuple(choice.value for choice in choices)


# --------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`[server]`: where blokir listens and whom it answers."""

    listen: tuple[Address, ...] = field(
        default=(("127.0.0.1", 5353),),
        metadata=setting(
            "Addresses to answer DNS on (UDP and TCP). The host must be an IP address; put IPv6 "
            'in brackets: `"[::1]:5353"`. At least one.',
            'array of `"host:port"`',
            allowed="port 0..65535",
        ),
    )
    workers: int = field(
        default=1, metadata=setting("Worker processes answering queries.", INTEGER, low=1)
    )
    tcp_idle_timeout: float = field(
        default=10.0,
        metadata=setting("Seconds an idle DNS-over-TCP connection stays open.", SECONDS),
    )
    tcp_max_connections: int = field(
        default=1024,
        metadata=setting("Concurrent TCP connections before new ones are refused.", INTEGER, low=1),
    )
    allow: tuple[Network, ...] = field(
        default=DEFAULT_ALLOW,
        metadata=setting(
            "Client networks that get answers; everyone else is refused. A bare address means "
            'a single host. Must not be empty; `["0.0.0.0/0", "::/0"]` makes an open resolver.',
            "array of CIDR strings",
            default="loopback, RFC 1918, RFC 6598, RFC 4193, link-local ("
            + ", ".join(f"`{n}`" for n in DEFAULT_ALLOW)
            + ")",
        ),
    )
    udp_payload_size: int = field(
        default=1232,  # DNS flag day 2020
        metadata=setting(
            "EDNS(0) UDP payload size advertised and used (the DNS flag day 2020 value).",
            INTEGER,
            low=512,
            high=4096,
        ),
    )
    ratelimit: int = field(
        default=0,
        metadata=setting(
            "Queries per second per client prefix (/24 IPv4, /56 IPv6, token bucket); over the "
            "limit: `ratelimit_action`, counted as `ratelimited`.",
            INTEGER,
            low=0,
            default="`0` (off)",
        ),
    )
    ratelimit_burst: int = field(
        default=0,
        metadata=setting(
            "Bucket size: how many queries a prefix may send at once.",
            INTEGER,
            low=0,
            default="`0` (= `ratelimit`)",
        ),
    )
    ratelimit_action: RateLimitAction = field(
        default=RateLimitAction.REFUSE,
        metadata=setting(
            "Over the limit: REFUSED; silence (the choice under a reflection attack: a forged "
            "source gains nothing); or `slip`: an empty TC=1 answer no larger than the query, "
            "so a real client retries over TCP (never limited under `slip`), as BIND/NSD RRL "
            "slip.",
            STRING,
            choices=_values(RateLimitAction),
        ),
    )
    tls_listen: tuple[Address, ...] = field(
        default=(),
        metadata=setting(
            "Addresses to answer DNS over TLS on (RFC 7858; port 853 by convention). Needs "
            "`certificate` and `key`. Same pipeline, ACL and rate limits as `listen`.",
            'array of `"host:port"`',
            default="`[]` (off)",
        ),
    )
    https_listen: tuple[Address, ...] = field(
        default=(),
        metadata=setting(
            "Addresses to answer DNS over HTTPS on (RFC 8484; HTTP/2, and HTTP/1.1 for older "
            "clients, chosen by ALPN). Needs `certificate` and `key`.",
            'array of `"host:port"`',
            default="`[]` (off)",
        ),
    )
    https_path: str = field(
        default="/dns-query",
        metadata=setting(
            "The DoH endpoint's path (the URI template is `https://HOST:PORT<path>{?dns}`).",
            STRING,
            allowed="starts with `/`, no `?`",
        ),
    )
    certificate: str = field(
        default="",
        metadata=setting(
            "PEM certificate chain for `tls_listen` and `https_listen` (relative to the "
            "config file). Read again on SIGHUP: new connections get the new one, open ones "
            "keep theirs.",
            "path",
            default='`""`',
        ),
    )
    key: str = field(
        default="",
        metadata=setting("The certificate's PEM private key.", "path", default='`""`'),
    )
    tls_handshake_timeout: float = field(
        default=5.0,
        metadata=setting(
            "Seconds a TLS handshake may take; a slower (or stalled) client is dropped.", SECONDS
        ),
    )
    tls_max_connections: int = field(
        default=1024,
        metadata=setting(
            "Concurrent DoT connections per worker, and as many DoH connections, handshakes "
            "in progress included; over it new connections are closed at accept. Idle "
            "connections close after `tcp_idle_timeout`.",
            INTEGER,
            low=1,
        ),
    )
    https_max_streams: int = field(
        default=100,
        metadata=setting(
            "HTTP/2 streams one DoH connection may have open at once "
            "(SETTINGS_MAX_CONCURRENT_STREAMS).",
            INTEGER,
            low=1,
            high=10_000,
        ),
    )
    # Started as root: the account to switch to once the sockets are bound (resolver/
    # privileges.py).
    user: str = field(
        default="",
        metadata=setting(
            "When started as root (to bind port 53): switch to this user after binding, before "
            "the workers start. Empty: stay as started (a warning when that is root).",
            "user name or uid",
        ),
    )
    group: str = field(
        default="",
        metadata=setting(
            "The group to switch to; needs `user`.",
            "group name or gid",
            default='`""` (the user\'s primary group)',
        ),
    )

    def allows(self, client: str) -> bool:
        """Whether a client address falls in one of the `allow` networks."""
        return _in_networks(client, self.allow)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """`[upstream]`: the recursive resolvers queries are forwarded to. Empty `servers` means the
    nameservers of /etc/resolv.conf; use `Config.upstream_servers()` to get the effective list."""

    servers: tuple[Address, ...] = field(
        default=(),
        metadata=setting(
            "Recursive resolvers to forward to; port 53 if left out. Empty: the `nameserver` "
            "lines of `/etc/resolv.conf`, read when the servers are needed, not when the config "
            "is parsed (nameservers that are blokir's own listen address are skipped). A server "
            "that is blokir's own listen address is an error (it would loop). "
            '`"tls://ip[:port]#name"` forwards over DNS over TLS (RFC 7858, port 853 if left '
            "out), verifying the server's certificate for `name` (RFC 8310 authentication "
            "name); connections are kept open and reused.",
            'array of `"ip"`, `"ip:port"`, `"[ipv6]:port"` or `"tls://ip:port#name"`',
            allowed="port 1..65535",
        ),
    )
    tls_ca: str = field(
        default="",
        metadata=setting(
            "PEM file of the CAs that sign the `tls://` upstreams' certificates (a private "
            "CA); empty: the system's trust store.",
            "path",
            default='`""`',
        ),
    )
    timeout: float = field(
        default=2.0, metadata=setting("Seconds to wait for one upstream answer.", SECONDS)
    )
    attempts: int = field(
        default=2,
        metadata=setting("Tries per query before answering SERVFAIL.", INTEGER, low=1),
    )
    max_inflight: int = field(
        default=2048,
        metadata=setting(
            "Most upstream queries open at once, per worker. Identical cache misses (same name, "
            "type, class, EDNS, DO and CD) share one upstream query, so this counts distinct "
            "questions. Over it: a stale answer (`[cache] serve_stale`) or SERVFAIL with EDE 0 "
            '"too many queries in flight for this server".',
            INTEGER,
            low=1,
        ),
    )
    max_inflight_per_zone: int = field(
        default=100,
        metadata=setting(
            "Of those, most under one zone (resolver.inflight.zone_of): the last two labels of "
            "the name, or three when the second-level label is a short registry label (`co`, "
            "`ac`, `go`, `or`, `web`, `sch`, `my`, `biz`, `com`, `net`, `org`, ... as in "
            "`co.id`, `ac.id`, `co.uk`). A heuristic, not the Public Suffix List: all of "
            '`*.github.io` shares one cap. Over it: stale or SERVFAIL with EDE 0 "too many '
            'queries in flight for <zone>".',
            INTEGER,
            low=1,
        ),
    )
    # Filled from the `tls://` entries of `servers` (no TOML key of its own).
    tls_servers: tuple[TlsServer, ...] = ()


@dataclass(frozen=True, slots=True)
class BlockingConfig:
    """`[blocking]`: how blocked names are answered."""

    landing_ipv4: str | None = field(
        default=None,
        metadata=setting(
            'A answer for names on `landing` lists: your landing web server. `""` means none.',
            "IPv4 address string",
        ),
    )
    landing_ipv6: str | None = field(
        default=None,
        metadata=setting(
            'AAAA answer for names on `landing` lists. `""` means none.', "IPv6 address string"
        ),
    )
    ttl: int = field(
        default=60,
        metadata=setting("TTL of blocked answers, in seconds.", INTEGER, low=0, high=86_400),
    )
    index_path: Path = field(
        default=Path("blokir.blkx"),  # made absolute against the config's directory
        metadata=setting(
            "The compiled blocklist index that `blokir compile` writes and the server loads.",
            "path",
            default='`"blokir.blkx"` (next to the config file)',
        ),
    )
    # The structured DNS error fields (draft-ietf-dnsop-structured-dns-error "c", "j", "o").
    contact: str | None = field(
        default=None,
        metadata=setting(
            "Structured DNS error (draft-ietf-dnsop-structured-dns-error) contact, e.g. "
            '`"mailto:abuse@isp.example"`, `"tel:+62-21-555-0100"`, '
            '`"https://isp.example/blocked"`.',
            "URI string",
            allowed=f"at most {MAX_SDE_TEXT} characters",
        ),
    )
    justification: str | None = field(
        default=None,
        metadata=setting(
            "Structured DNS error: why names are blocked.",
            STRING,
            allowed=f"at most {MAX_SDE_TEXT} characters",
        ),
    )
    organisation: str | None = field(
        default=None,
        metadata=setting(
            "Structured DNS error: who blocks them.",
            STRING,
            allowed=f"at most {MAX_SDE_TEXT} characters",
        ),
    )
    soa_mname: str = field(
        default="blokir.invalid.",
        metadata=setting(
            "SOA MNAME in the authority section of blocked NXDOMAIN/NODATA answers (a trailing "
            "dot is added if missing).",
            "domain name",
        ),
    )
    soa_rname: str = field(
        default="hostmaster.blokir.invalid.",
        metadata=setting("SOA RNAME (mailbox) of those answers.", "domain name"),
    )


LANGUAGES = ("en", "id")  # the landing page's built-in languages (resolver/landing/templates)


@dataclass(frozen=True, slots=True)
class LandingConfig:
    """`[landing]`: the block-notice web server at the landing address (docs/landing.md)."""

    listen: tuple[Address, ...] = field(
        default=(),
        metadata=setting(
            "Addresses to serve the block notice on over HTTP, normally port 80 of "
            "`[blocking] landing_ipv4`/`landing_ipv6`. Empty: no landing server.",
            'array of `"host:port"`',
            allowed="port 0..65535",
        ),
    )
    tls_listen: tuple[Address, ...] = field(
        default=(),
        metadata=setting(
            "Addresses for HTTPS (normally port 443). Needs `certificate`, `key` and "
            "`server_names`; a handshake for any other name is refused with a TLS alert.",
            'array of `"host:port"`',
            allowed="port 0..65535",
        ),
    )
    certificate: Path | None = field(
        default=None,
        metadata=setting(
            "PEM certificate chain for `server_names` (your own landing name, never a blocked "
            "one); read once at start, as the user blokir starts as, and again on each reload.",
            "path",
        ),
    )
    key: Path | None = field(
        default=None, metadata=setting("PEM private key of `certificate`.", "path")
    )
    server_names: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            "The names `certificate` is valid for: the only TLS server names (SNI) whose "
            "handshake is completed.",
            "array of domain names",
        ),
    )
    default_language: str = field(
        default="en",
        metadata=setting(
            "Page language when the browser's `Accept-Language` names none of the built-in "
            "ones (`en` English, `id` Indonesian).",
            STRING,
            choices=LANGUAGES,
        ),
    )
    template_dir: Path | None = field(
        default=None,
        metadata=setting(
            "A directory of your own page templates (`blocked.en.html`, `unblocked.id.html`, "
            "...; string.Template `$placeholders`); a file not there is the built-in one.",
            "path",
        ),
    )
    appeal_url: str | None = field(
        default=None,
        metadata=setting(
            "Where a customer asks for a review of a block (shown on the page; a list's own "
            '`appeal_url` wins). Also the RFC 7725 `Link: rel="blocked-by"` target.',
            "http(s) URL",
        ),
    )
    log_clients: bool = field(
        default=False,
        metadata=setting(
            "Log client addresses of refused TLS handshakes and bad requests (personal data: "
            "off unless your policy allows it).",
            BOOLEAN,
        ),
    )
    max_connections: int = field(
        default=512,
        metadata=setting("Open connections before new ones are closed at once.", INTEGER, low=1),
    )
    header_timeout: float = field(
        default=10.0,
        metadata=setting(
            "Seconds a client has to send a complete request head (a slow-headers client is "
            "answered 408 and closed); also the keep-alive idle time.",
            SECONDS,
        ),
    )
    max_header_bytes: int = field(
        default=8192,
        metadata=setting(
            "Largest request head accepted; more is answered 431.", INTEGER, low=1024, high=65536
        ),
    )


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`[cache]`: the answer cache in front of the upstreams."""

    max_entries: int = field(
        default=100_000,
        metadata=setting("Most answers kept in the cache.", INTEGER, low=0),
    )
    max_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=setting(
            "Most bytes of answers kept in the cache.",
            INTEGER,
            low=0,
            default="`67108864` (64 MiB)",
        ),
    )
    min_ttl: int = field(
        default=0,
        metadata=setting(
            "Cached TTLs are raised to at least this many seconds.", INTEGER, low=0, high=MAX_TTL
        ),
    )
    max_ttl: int = field(
        default=86_400,
        metadata=setting(
            "Cached TTLs are cut to at most this many seconds; at least `min_ttl`.",
            INTEGER,
            low=0,
            high=MAX_TTL,
        ),
    )
    negative_ttl_max: int = field(
        default=3_600,
        metadata=setting(
            "Longest time an NXDOMAIN/NODATA answer is cached (RFC 2308).",
            INTEGER,
            low=0,
            high=MAX_TTL,
        ),
    )
    servfail_ttl: int = field(
        default=5,
        metadata=setting("Seconds a SERVFAIL is cached.", INTEGER, low=0, high=300),
    )
    serve_stale: bool = field(
        default=False,  # RFC 8767: an operator's choice, off unless asked for
        metadata=setting(
            "RFC 8767: when every upstream try fails or times out, or an in-flight cap is full, "
            'answer from an expired entry (TTLs set to `stale_answer_ttl`, EDE 3 "Stale '
            'Answer" if the client sent EDNS) instead of SERVFAIL. A cached SERVFAIL is never '
            "served stale.",
            BOOLEAN,
        ),
    )
    stale_answer_ttl: int = field(
        default=30,
        metadata=setting(
            "TTL of stale answers (RFC 8767 section 5 recommends 30).",
            INTEGER,
            low=1,
            high=3600,
        ),
    )
    max_stale: int = field(
        default=86_400,
        metadata=setting(
            "How long past expiry an entry is kept and may be served stale (RFC 8767 suggests 1 "
            "to 3 days). Kept entries count against `max_entries` and `max_bytes` and are "
            "evicted like any other.",
            INTEGER,
            low=1,
            high=7 * 86_400,
        ),
    )
    stale_client_timeout: float = field(
        default=1.8,  # RFC 8767 section 5 client response timer
        metadata=setting(
            "With `serve_stale`: answer stale after this many seconds while the upstream query "
            "goes on and refreshes the cache (RFC 8767 client response timer); 0 waits for "
            "`timeout x attempts`.",
            SECONDS,
            allowed="or 0 (off)",
        ),
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: the Prometheus endpoint."""

    enabled: bool = field(
        default=True, metadata=setting("Serve Prometheus metrics at `/metrics`.", BOOLEAN)
    )
    listen: Address = field(
        default=("127.0.0.1", 9153),
        metadata=setting(
            "Where the metrics endpoint listens (IPv6 in brackets).",
            '`"host:port"`',
            allowed="port 0..65535",
        ),
    )
    top_k: int = field(
        default=20,
        metadata=setting(
            "How many most-blocked names the metrics report.", INTEGER, low=0, high=1000
        ),
    )
    textfile: Path | None = field(
        default=None,
        metadata=setting(
            "Plugin mode (`blokir plugin unbound`): the Prometheus textfile the resolver plugin "
            "writes its metrics to, for node_exporter's textfile collector (a `.prom` file in its "
            "`--collector.textfile.directory`). Not used by `blokir serve`.",
            "path",
            default='`""` (none)',
        ),
    )
    textfile_interval: float = field(
        default=15.0,
        metadata=setting("Plugin mode: how often the metrics textfile is rewritten.", SECONDS),
    )


@dataclass(frozen=True, slots=True)
class UpdatesConfig:
    """`[updates]`: keeping lists current while serving (README "Live list updates")."""

    state_dir: Path = field(
        default=Path("blokir-state"),  # parsing puts it next to [blocking] index_path
        metadata=setting(
            "Where downloaded list copies (with their ETag, Last-Modified and sha256) and the "
            "control socket live; must be writable by the server's user.",
            "path",
            default="`blokir-state` next to `[blocking] index_path`",
        ),
    )
    control_socket: Path | None = field(
        default=None,  # None: state_dir / "control.sock"
        metadata=setting(
            "The Unix socket `blokir reload` and `blokir status` use; mode 0600 (the owner and "
            "root).",
            "path",
            allowed="at most 107 bytes (the Unix socket limit)",
            default='`""` (`<state_dir>/control.sock`)',
        ),
    )
    watch: bool = field(
        default=True,
        metadata=setting(
            "Reload when the config file or a local list file changes (a changed file must look "
            "the same on two checks in a row, so a file still being written is not read).",
            BOOLEAN,
        ),
    )
    watch_interval: float = field(
        default=2.0,
        metadata=setting("How often files and refresh timers are checked.", SECONDS),
    )
    refresh: float = field(
        default=3600.0,
        metadata=setting(
            "Time between downloads of a URL list (conditional requests, so an unchanged list "
            "costs a 304).",
            SECONDS,
        ),
    )
    max_shrink: float = field(
        default=0.5,
        metadata=setting(
            "A list that loses more than this fraction of its names is not applied; the old "
            "index keeps serving until `blokir reload --force`.",
            FRACTION,
            low=0,
            high=1,
        ),
    )
    download_timeout: float = field(
        default=30.0,
        metadata=setting("Per attempt (connect and each read).", SECONDS),
    )
    download_retries: int = field(
        default=3,
        metadata=setting(
            "Retries after a network error, a timeout, a 5xx or a truncated body, with backoff "
            "doubling from 1 s; a 4xx is not retried.",
            INTEGER,
            low=0,
            high=10,
        ),
    )
    max_download_bytes: int = field(
        default=512 * 1024 * 1024,
        metadata=setting(
            "The largest list accepted (512 MiB; the 2025 TRUST+ Positif file is 144 MB).",
            INTEGER,
            low=1,
        ),
    )

    @property
    def socket_path(self) -> Path:
        return self.control_socket or self.state_dir / "control.sock"


# ---- [rpz]: policy zones over zone transfer (resolver/xfr/) ----------------------------------

LOOPBACK_NETWORKS: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


@dataclass(frozen=True, slots=True)
class RpzConfig:
    """`[rpz]`: policy zones over zone transfer (docs/rpz-transfer.md). As a primary, blokir
    serves its merged policy as an RPZ zone over AXFR/IXFR with NOTIFY; as a secondary, it
    takes `axfr://` lists and obeys NOTIFY for them."""

    listen: tuple[Address, ...] = field(
        default=(),
        metadata=setting(
            "Where the primary answers SOA, AXFR and IXFR queries (TCP and UDP). Empty: no "
            "primary.",
            'array of `"host:port"`',
            allowed="port 0..65535",
        ),
    )
    zone: str = field(
        default="rpz.blokir.",
        metadata=setting("The RPZ zone's name, as the secondaries configure it.", STRING),
    )
    allow_transfer: tuple[Network, ...] = field(
        default=LOOPBACK_NETWORKS,
        metadata=setting(
            "Client networks that may query and transfer the zone; everyone else is REFUSED.",
            "array of CIDR strings",
            default="loopback (`127.0.0.0/8`, `::1/128`)",
        ),
    )
    notify: tuple[Address, ...] = field(
        default=(),
        metadata=setting(
            "Secondaries sent a NOTIFY (RFC 1996) after each applied reload.",
            'array of `"host:port"`',
            allowed="port 1..65535",
        ),
    )
    tsig: tuple[TsigKey, ...] = field(
        default=(),
        metadata=setting(
            "TSIG keys (RFC 8945) a transfer may be signed with; NOTIFYs are signed with the "
            "first.",
            "array of `{ name, algorithm, secret }`",
            allowed="algorithm one of " + ", ".join(TSIG_ALGORITHMS) + "; secret in base64",
        ),
    )
    require_tsig: bool = field(
        default=False,
        metadata=setting(
            "Refuse queries and transfers that are not signed with one of the `tsig` keys.",
            BOOLEAN,
        ),
    )
    history: int = field(
        default=10,
        metadata=setting(
            "Zone versions kept for IXFR (RFC 1995); a secondary further behind gets the whole "
            "zone.",
            INTEGER,
            low=0,
            high=1000,
        ),
    )

    # -- end of [rpz] primary keys
    # -- the secondary side: receiving NOTIFY for `axfr://` lists (resolver/xfr/notify.py)
    notify_listen: Address | None = field(
        default=None,
        metadata=setting(
            "Where blokir receives NOTIFY (RFC 1996) for its `axfr://` lists, UDP; a NOTIFY "
            "for a list's zone from an address in `notify_from` starts a transfer at once. A "
            "socket of its own in the process that runs the transfers, not the DNS port. Needs "
            "a restart to change.",
            '`"host:port"`',
            allowed="port 0..65535",
            default='`""` (off: transfers follow the SOA refresh timer only)',
        ),
    )
    notify_from: tuple[Network, ...] = field(
        default=LOOPBACK_NETWORKS,
        metadata=setting(
            "Primaries whose NOTIFY is obeyed; others are answered REFUSED. A bare address "
            "means a single host.",
            "array of CIDR strings",
            default='loopback (`["127.0.0.0/8", "::1/128"]`)',
        ),
    )

    def notify_allowed(self, client: str) -> bool:
        return _in_networks(client, self.notify_from)


# ---- end of [rpz] -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryLogConfig:
    """`[querylog]`: what was asked and blocked, streamed as dnstap (docs/querylog.md)."""

    dnstap: str = field(
        default="",
        metadata=setting(
            'Where dnstap goes: `"unix:/path"` or `"tcp:HOST:PORT"` (a Frame Streams receiver: '
            'dnstap-receiver, go-dnscollector, fstrm_capture), or `"file:/path"` (rotated by '
            'size). With more than one worker each writes its own file, `/path.N`. `""` is off.',
            "sink string",
            default='`""` (off)',
        ),
    )
    sample: int = field(
        default=1,
        metadata=setting(
            "Log 1 in this many allowed queries (per worker); blocked ones are always logged.",
            INTEGER,
            low=1,
        ),
    )
    only_blocked: bool = field(
        default=False,
        metadata=setting("Log blocked queries only (`sample` then does not matter).", BOOLEAN),
    )
    client_prefix_v4: int = field(
        default=24,
        metadata=setting(
            "IPv4 client addresses of logged allowed queries are cut to this prefix length "
            "before they leave the process (32 keeps them whole, 0 drops them).",
            INTEGER,
            low=0,
            high=32,
        ),
    )
    client_prefix_v6: int = field(
        default=48,
        metadata=setting("Likewise for IPv6 clients.", INTEGER, low=0, high=128),
    )
    blocked_full_address: bool = field(
        default=True,
        metadata=setting(
            "Keep the whole client address for blocked queries (an abuse or compliance team "
            "needs the subscriber); `false` cuts them like allowed ones.",
            BOOLEAN,
        ),
    )
    identity: str = field(
        default="",
        metadata=setting(
            "dnstap `identity` of this server.",
            STRING,
            default='`""` (the host name)',
        ),
    )
    queue: int = field(
        default=10_000,
        metadata=setting(
            "Messages waiting for the writer per worker; past that they are dropped and "
            "counted in `blokir_querylog_dropped_total` (the query path never waits).",
            INTEGER,
            low=1,
            high=10_000_000,
        ),
    )
    file_max_bytes: int = field(
        default=100 * 1024 * 1024,
        metadata=setting(
            "`file:` sink: rotate once a file is this large (`/path` -> `/path.1`, ...).",
            INTEGER,
            low=4096,
            default="`104857600` (100 MiB)",
        ),
    )
    file_keep: int = field(
        default=5,
        metadata=setting("`file:` sink: rotated files kept.", INTEGER, low=0, high=1000),
    )


@dataclass(frozen=True, slots=True)
class ListSource:
    """Where a list comes from, how it is refreshed and what it must yield; `url` and `xfr` None
    mean a local file. `refresh` and `max_shrink` None mean `[updates]`'s."""

    url: str | None = None  # not a key: a `path` that is a URL
    xfr: XfrSource | None = None  # not a key: a `path` that is an axfr:// URL (resolver/xfr/)
    refresh: float | None = field(
        default=None,
        metadata=setting(
            "URL lists only: time between downloads of this list. For an `axfr://` list: "
            "checks the primary this often instead of at the zone's SOA refresh timer.",
            SECONDS,
            default="`[updates] refresh` (`axfr://`: the SOA refresh)",
        ),
    )
    tsig: TsigKey | None = field(
        default=None,
        metadata=setting(
            "`axfr://` lists only: sign the SOA, IXFR and AXFR queries with this TSIG key "
            "(RFC 8945) and accept only a transfer signed with it.",
            '`{ name = "key.", algorithm = "hmac-sha256", secret = "base64" }`',
            allowed="algorithm hmac-sha256 (default), hmac-sha384, hmac-sha512, hmac-sha224, "
            "hmac-sha1",
            default="none",
        ),
    )
    max_shrink: float | None = field(
        default=None,
        metadata=setting(
            "This list's shrink guard (1 turns it off).",
            FRACTION,
            low=0,
            high=1,
            default="`[updates] max_shrink`",
        ),
    )
    max_rejected_ratio: float = field(
        default=DEFAULT_MAX_REJECTED_RATIO,
        metadata=setting(
            "A list whose rejected entries are more than this share of the entries it gives "
            "(accepted + rejected), or that gives no entry at all, fails `blokir compile` and "
            "`blokir check`, stops `blokir serve` from starting (unless `--force`) and is not "
            "applied by a reload (unless `blokir reload --force`); 1 allows any share.",
            FRACTION,
            low=0,
            high=1,
        ),
    )


_NAME_DOC = "string of `A-Z a-z 0-9 _ . -`"
_PATH_DOC = "path, `http(s)://` URL or `axfr://HOST:PORT/ZONE.`"


@dataclass(frozen=True, slots=True)
class ListConfig:
    """One `[[lists]]` entry: a blocklist file and what its entries mean. `landing_ipv4` and
    `landing_ipv6` override `[blocking]`'s addresses for this list; empty means the global ones.
    For a URL list, `path` is its last good downloaded copy under `[updates] state_dir`."""

    name: str = field(
        metadata=setting(
            "Unique across lists and allowlists; appears in logs and metrics.", _NAME_DOC
        )
    )
    path: Path = field(
        metadata=setting(
            'The list file, or a URL blokir downloads (README, "Live list updates"), or '
            "`axfr://HOST:PORT/ZONE.`: an RPZ zone blokir takes by zone transfer "
            "(docs/rpz-transfer.md; `format` rpz is implied).",
            _PATH_DOC,
        )
    )
    category: str = field(
        default="uncategorised",
        metadata=setting('Free-form label for reports and metrics, e.g. `"gambling"`.', STRING),
    )
    action: Action = field(
        default=Action.LANDING,
        metadata=setting(
            "What a blocked name gets: `landing` answers A/AAAA with the landing address "
            "(NODATA for other types), `nxdomain` says the name does not exist, `nodata` says "
            "it has no records of that type, `refused` refuses the query.",
            STRING,
            choices=_values(LIST_ACTIONS),
        ),
    )
    ede: Ede = field(
        default=Ede.BLOCKED,
        metadata=setting(
            "RFC 8914 Extended DNS Error: 15 Blocked (operator policy), 16 Censored (a legal "
            "requirement), 17 Filtered (the client asked for it), or none.",
            STRING,
            choices=_values(Ede),
        ),
    )
    match: MatchMode = field(
        default=MatchMode.SUBTREE,
        metadata=setting(
            "`subtree` blocks the name and every name below it; `exact` only the name itself.",
            STRING,
            choices=_values(MatchMode),
        ),
    )
    kind: str = field(
        default="domain",
        metadata=setting(
            "`domain`: the entries are names, matched against the query name. `ip`: they are "
            "addresses and CIDR prefixes, matched against the A/AAAA records of answers "
            "(response-IP triggers; docs/ip-triggers.md); `format` must then be `auto` or "
            "`plain`. RPZ lists of either kind also carry `rpz-ip` triggers.",
            STRING,
            choices=LIST_KINDS,
        ),
    )
    format: str = field(
        default="auto",
        metadata=setting(
            "File format; `auto` detects it from the content.", STRING, choices=LIST_FORMATS
        ),
    )
    landing_ipv4: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            'Landing address(es) for this list only. Only with `action = "landing"`.',
            "IPv4 string or array of them",
            default="`[]` (use `[blocking]`'s)",
        ),
    )
    landing_ipv6: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            "Likewise for AAAA.",
            "IPv6 string or array of them",
            default="`[]` (use `[blocking]`'s)",
        ),
    )
    justification: str | None = field(
        default=None,
        metadata=setting(
            "The landing page's legal basis for this list's names.",
            STRING,
            default="`[blocking] justification`",
        ),
    )
    contact: str | None = field(
        default=None,
        metadata=setting(
            "The landing page's contact for this list's names.",
            "URI string",
            default="`[blocking] contact`",
        ),
    )
    organisation: str | None = field(
        default=None,
        metadata=setting(
            "The landing page's blocking organisation for this list's names (e.g. the "
            "regulator whose order it is).",
            STRING,
            default="`[blocking] organisation`",
        ),
    )
    appeal_url: str | None = field(
        default=None,
        metadata=setting(
            "Where to appeal a block by this list.", "http(s) URL", default="`[landing] appeal_url`"
        ),
    )
    source: ListSource = field(default=ListSource(), metadata={_KEYS_FROM: ListSource})


@dataclass(frozen=True, slots=True)
class AllowlistConfig:
    """One `[[allowlists]]` entry: names answered from upstream even if a list blocks them."""

    name: str = field(metadata=setting("Unique across lists and allowlists.", _NAME_DOC))
    path: Path = field(metadata=setting("The list file, or a URL.", _PATH_DOC))
    category: str = field(default="uncategorised", metadata=setting("Free-form label.", STRING))
    match: MatchMode = field(
        default=MatchMode.SUBTREE,
        metadata=setting(
            "`subtree` allows the name and every name below it; `exact` only the name itself.",
            STRING,
            choices=_values(MatchMode),
        ),
    )
    kind: str = field(
        default="domain",
        metadata=setting(
            "`domain`: names. `ip`: addresses and CIDR prefixes an answer may hold even when "
            'a `kind = "ip"` list covers them (the longest prefix wins, as for names).',
            STRING,
            choices=LIST_KINDS,
        ),
    )
    format: str = field(
        default="auto", metadata=setting("File format.", STRING, choices=LIST_FORMATS)
    )
    source: ListSource = field(default=ListSource(), metadata={_KEYS_FROM: ListSource})


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """One `[[groups]]` entry: clients that get their own selection of the lists."""

    name: str = field(
        metadata=setting(
            "Unique; the `group` label of the block counters. `default` is taken (clients in "
            "no group).",
            STRING,
        )
    )
    clients: tuple[Network, ...] = field(
        default=(),  # required in effect: the validator asks for at least one
        metadata=setting(
            "Client networks in this group. A client in several groups takes the one with the "
            "longest matching prefix. At least one.",
            "array of CIDR strings",
            default="(required)",
        ),
    )
    lists: tuple[str, ...] | None = field(
        default=None,
        metadata=setting(
            "Names of the `[[lists]]` that apply to these clients.",
            "array of list names",
            default="every list",
        ),
    )
    allowlists: tuple[str, ...] | None = field(
        default=None,
        metadata=setting(
            "Names of the `[[allowlists]]` that apply to these clients.",
            "array of allowlist names",
            default="every allowlist",
        ),
    )


@dataclass(frozen=True, slots=True)
class Section:
    """What the schema says about one section: its class, whether it is an array of tables."""

    title: str  # how the docs head it
    doc: str
    cls: type
    array: bool


def _section(title: str, doc: str, cls: type, *, array: bool = False) -> Mapping[str, Section]:
    return {_SECTION: Section(title, doc, cls, array)}


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. `source` is the absolute path of the file it came from."""

    source: Path
    server: ServerConfig = field(
        default_factory=ServerConfig,
        metadata=_section("`[server]`", "Where blokir listens and whom it answers.", ServerConfig),
    )
    upstream: UpstreamConfig = field(
        default_factory=UpstreamConfig,
        metadata=_section(
            "`[upstream]`", "The recursive resolvers queries are forwarded to.", UpstreamConfig
        ),
    )
    blocking: BlockingConfig = field(
        default_factory=BlockingConfig,
        metadata=_section("`[blocking]`", "How blocked names are answered.", BlockingConfig),
    )
    cache: CacheConfig = field(
        default_factory=CacheConfig,
        metadata=_section("`[cache]`", "The answer cache in front of the upstreams.", CacheConfig),
    )
    metrics: MetricsConfig = field(
        default_factory=MetricsConfig,
        metadata=_section("`[metrics]`", "The Prometheus endpoint.", MetricsConfig),
    )
    landing: LandingConfig = field(
        default_factory=LandingConfig,
        metadata=_section(
            "`[landing]`",
            "The built-in block-notice web server (docs/landing.md).",
            LandingConfig,
        ),
    )
    updates: UpdatesConfig = field(
        default_factory=UpdatesConfig,
        metadata=_section(
            "`[updates]`",
            'Keeping lists current while serving (README, "Live list updates").',
            UpdatesConfig,
        ),
    )
    querylog: QueryLogConfig = field(
        default_factory=QueryLogConfig,
        metadata=_section(
            "`[querylog]`",
            "What was asked and blocked, streamed as dnstap (docs/querylog.md).",
            QueryLogConfig,
        ),
    )
    rpz: RpzConfig = field(
        default_factory=RpzConfig,
        metadata=_section(
            "`[rpz]`",
            "Response policy zones over zone transfer (docs/rpz-transfer.md).",
            RpzConfig,
        ),
    )
    # Allowlists before lists: the order sections are named in messages and the docs, and the
    # order of list_specs().
    allowlists: tuple[AllowlistConfig, ...] = field(
        default=(),
        metadata=_section(
            "`[[allowlists]]` (one table per allowlist)",
            "Names on an allowlist are answered from upstream even when a blocklist covers "
            "them. Every allowlist takes precedence over every blocklist, wherever it appears "
            "in the file.",
            AllowlistConfig,
            array=True,
        ),
    )
    lists: tuple[ListConfig, ...] = field(
        default=(),
        metadata=_section(
            "`[[lists]]` (one table per blocklist, in order of precedence)",
            "When two lists cover the same name, the list that comes first wins.",
            ListConfig,
            array=True,
        ),
    )

    groups: tuple[GroupConfig, ...] = field(
        default=(),
        metadata=_section(
            "`[[groups]]` (one table per client group)",
            "Clients that get their own selection of the lists (docs/groups.md). Clients in "
            "no group get every list and allowlist.",
            GroupConfig,
            array=True,
        ),
    )

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
                    max_rejected_ratio=allow.source.max_rejected_ratio,
                    kind=allow.kind,
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
                    max_rejected_ratio=block.source.max_rejected_ratio,
                    kind=block.kind,
                )
            )
        return specs

    def upstream_servers(self, resolv_conf: str | Path = RESOLV_CONF) -> list[Address]:
        """The servers to forward to: `[upstream] servers`, or else resolv.conf's nameservers.

        Nameservers from resolv.conf that are one of blokir's own listen addresses are dropped
        (forwarding to ourselves would loop); ConfigError if none is left."""
        if self.upstream.servers or self.upstream.tls_servers:
            return list(self.upstream.servers)  # with tls_servers alone: none over UDP
        servers = resolv_conf_servers(resolv_conf)
        usable = [s for s in servers if own_listener(s, self.server.listen) is None]
        if not usable:
            raise ConfigError(
                f"every nameserver ({', '.join(format_address(s) for s in servers)}) is one of "
                "blokir's own listen addresses, so forwarding would loop; set [upstream] servers "
                "in the config",
                file=str(resolv_conf),
            )
        return usable


# --------------------------------------------------------------------------------------------
# What the rest of the package reads off the declarations above


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One TOML key: its section, name, Setting and default (`dataclasses.MISSING`: required)."""

    section: str
    name: str
    setting: Setting
    default: object

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def keys_of(cls: type, section: str) -> Iterator[KeySpec]:
    """The TOML keys of a section's class, in declaration order."""
    for f in dataclasses.fields(cls):
        if _SETTING in f.metadata:
            yield KeySpec(section, f.name, f.metadata[_SETTING], f.default)
        elif _KEYS_FROM in f.metadata:
            yield from keys_of(f.metadata[_KEYS_FROM], section)


SECTIONS: dict[str, Section] = {
    f.name: f.metadata[_SECTION] for f in dataclasses.fields(Config) if _SECTION in f.metadata
}
TABLE_SECTIONS = tuple(name for name, s in SECTIONS.items() if not s.array)
ARRAY_SECTIONS = tuple(name for name, s in SECTIONS.items() if s.array)
SCHEMA: dict[str, dict[str, KeySpec]] = {
    name: {spec.name: spec for spec in keys_of(s.cls, name)} for name, s in SECTIONS.items()
}
SECTION_KEYS: dict[str, tuple[str, ...]] = {name: tuple(keys) for name, keys in SCHEMA.items()}
