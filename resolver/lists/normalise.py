"""The one normaliser every list format shares.

Real government lists mix upper case, trailing dots, `*.` prefixes, URLs with schemes, ports and
paths, several names on one line, a BOM, CRLF, tabs, IDN in Unicode, IP literals and plain junk.
`normalise` turns one token into a canonical name (ASCII, lower case, no trailing dot, IDN as
punycode per IDNA 2008 with UTS 46 mapping) or raises `Rejected` with a short reason that reports
count by.

The checks follow RFC 1035 section 2.3.4 (label <= 63 octets, name <= 255 octets on the wire, so
<= 253 characters in text without the trailing dot) and RFC 952/1123 hostname rules for hyphens.
Underscores are accepted inside labels below the TLD: they are legal in DNS (RFC 2181 section 11)
and real lists block names such as `ad_server.example.com`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

from resolver.dns.constants import MAX_LABEL, MAX_NAME_TEXT

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_TLD_RE = re.compile(r"[a-z0-9-]+")
_ALL_DIGITS_RE = re.compile(r"[0-9]+")
_URL_SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_WHITESPACE = " \t\r\n\f\v\ufeff"


class Rejected(Exception):
    """A token that is not a usable domain; `reason` is a short stable key for counting."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Name:
    """A normalised list token. `wildcard` is true when it was written `*.name` or `.name`;
    `is_ip` marks IP literals (kept apart from the domain index)."""

    name: str
    wildcard: bool = False
    is_ip: bool = False


def normalise(token: str) -> Name:
    """Normalise one token or raise `Rejected`. Never raises anything else."""
    text = token.strip(_WHITESPACE)
    if not text:
        raise Rejected("empty")
    text = _strip_url(text)
    wildcard = False
    while text.startswith("*."):
        text = text[2:]
        wildcard = True
    if text.startswith(".") and not text.startswith(".."):
        text = text[1:]  # `.example.com`: the hosts-file way to say "and everything below"
        wildcard = True
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    ip = _as_ip(text)
    if ip is not None:
        return Name(ip, wildcard=wildcard, is_ip=True)
    return Name(_check_name(_to_ascii(text)), wildcard=wildcard)


def without_scheme(text: str) -> tuple[str, bool]:
    """`http://host/path` -> (`host/path`, True); text without a URL scheme as it is."""
    match = _URL_SCHEME_RE.match(text)
    return (text[match.end() :], True) if match else (text, False)


def before_path(text: str) -> str:
    """The part before a URL's path, query or fragment."""
    for stop in "/?#":
        cut = text.find(stop)
        if cut != -1:
            text = text[:cut]
    return text


def _strip_url(text: str) -> str:
    """`http://user@Example.com:8080/a?b#c` -> `Example.com`; bare `example.com/path` too."""
    text = before_path(without_scheme(text)[0])
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    if text.startswith("["):  # [2001:db8::1]:443
        end = text.find("]")
        return text[1:end] if end != -1 else text
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit() or not port:
            return host
    return text


def _as_ip(text: str) -> str | None:
    if not text or not (text[0].isdigit() or ":" in text):
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _to_ascii(text: str) -> str:
    if text.isascii():
        return text.lower()
    try:
        # UTS 46 mapping folds case and compatibility forms before IDNA 2008 validation.
        return idna.encode(text, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        raise Rejected("idna") from None


def _check_name(name: str) -> str:
    if not name:
        raise Rejected("empty")
    if len(name) > MAX_NAME_TEXT:
        raise Rejected("name_too_long")
    labels = name.split(".")
    if len(labels) < 2:
        raise Rejected("no_dot")
    for label in labels:
        if not label:
            raise Rejected("empty_label")
        if len(label) > MAX_LABEL:
            raise Rejected("label_too_long")
        if not _LABEL_CHARS.issuperset(label):
            raise Rejected("bad_character")
        if label[0] == "-" or label[-1] == "-":
            raise Rejected("hyphen")
    tld = labels[-1]
    if not _TLD_RE.fullmatch(tld):
        raise Rejected("bad_character")
    if _ALL_DIGITS_RE.fullmatch(tld):
        raise Rejected("numeric_tld")  # an incomplete IP such as 10.1.2, never a real TLD
    return name
