"""What an `axfr://HOST:PORT/ZONE.` list names: the primary, the zone and its TSIG key.

Plain data with no DNS library behind it, so the config schema can hold it without importing
the transfer code. The secret is kept as the base64 text the operator wrote and is never shown
(`__repr__` hides it), so it cannot leak into a log line or `blokir status`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, field

__all__ = [
    "SCHEME",
    "TSIG_ALGORITHMS",
    "TsigKey",
    "XfrSource",
    "domain_name",
    "is_xfr_url",
    "parse_tsig",
    "parse_xfr_url",
]

SCHEME = "axfr"
# RFC 8945 section 6: the HMAC algorithms; hmac-sha256 is the one every engine supports.
TSIG_ALGORITHMS = (
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "hmac-sha224",
    "hmac-sha1",
)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class TsigKey:
    """A TSIG key (RFC 8945): its name, HMAC algorithm and base64 secret."""

    name: str  # absolute, lower case: "xfr-key."
    algorithm: str  # one of TSIG_ALGORITHMS
    secret: str = field(repr=False)  # base64, as written in the config

    def secret_bytes(self) -> bytes:
        return base64.b64decode(self.secret, validate=True)


@dataclass(frozen=True, slots=True)
class XfrSource:
    """The primary to transfer `zone` from."""

    host: str  # an IP address: a host name would need a resolver to find the primary
    port: int
    zone: str  # absolute, lower case: "rpz.example."
    tsig: TsigKey | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}://{host}:{self.port}/{self.zone}"


def is_xfr_url(text: str) -> bool:
    return text.strip().lower().startswith(f"{SCHEME}://")


def domain_name(text: str) -> str | None:
    """`text` as an absolute lower-case domain name, or None when it is not one."""
    name = text.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        return None
    return name + "."


def parse_xfr_url(text: str) -> XfrSource:
    """`axfr://192.0.2.1:53/rpz.example.` (port 53 when left out); ValueError says what is
    wrong."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme.lower() != SCHEME:
        raise ValueError(f"{text!r} is not an {SCHEME}:// URL")
    try:
        port = parts.port or 53
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number between 1 and 65535") from None
    host = parts.hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r}: {host!r} is not an IP address (write the primary's address)"
        ) from None
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r}: write only axfr://HOST:PORT/ZONE.")
    zone = domain_name(urllib.parse.unquote(parts.path.lstrip("/")))
    if zone is None:
        raise ValueError(f"{text!r}: the path must be the zone name, e.g. /rpz.example.")
    return XfrSource(str(address), port, zone)


def parse_tsig(raw: object) -> TsigKey:
    """`{ name = "...", algorithm = "hmac-sha256", secret = "base64" }`; ValueError if not."""
    if not isinstance(raw, dict):
        raise ValueError(
            'expected an inline table { name = "...", algorithm = "hmac-sha256", '
            'secret = "base64" }'
        )
    unknown = sorted(set(raw) - {"name", "algorithm", "secret"})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (name, algorithm, secret)")
    name, algorithm, secret = (
        raw.get("name"),
        raw.get("algorithm", "hmac-sha256"),
        raw.get("secret"),
    )
    if not isinstance(name, str) or domain_name(name) is None:
        raise ValueError(f'name: {name!r} is not a key name such as "xfr-key."')
    if not isinstance(algorithm, str) or algorithm.lower().rstrip(".") not in TSIG_ALGORITHMS:
        raise ValueError(f"algorithm: {algorithm!r} is not one of {', '.join(TSIG_ALGORITHMS)}")
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("secret: required, the key's base64 secret")
    try:
        decoded = base64.b64decode(secret.strip(), validate=True)
    except binascii.Error:
        raise ValueError("secret: not valid base64") from None
    if not decoded:
        raise ValueError("secret: empty")
    return TsigKey(str(domain_name(name)), algorithm.lower().rstrip("."), secret.strip())
