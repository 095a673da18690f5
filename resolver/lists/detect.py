"""Guessing a list's format from its first 64 KiB and its file name, for `format = "auto"`.

Strong signals decide at once: a `.rpz`/`.zone` file name, a `$ORIGIN`/`$TTL`/`$INCLUDE`
directive or an SOA record (RPZ), an `[Adblock Plus 2.0]`-style header (adblock). Otherwise each
of the first `MAX_LINES` meaningful lines votes for the format it looks like, and the plurality
wins, so a few junk lines cannot flip the answer:

- a dnsmasq directive (`local=/name/`, `address=/name/...`, `server=/name/`) -> dnsmasq
- an Unbound option (`local-zone:`, `local-data:`, `server:`) -> unbound
- `||`, `@@`, `|`, `!` or a cosmetic filter (`##`, `#@#`, ...) -> adblock
- an IP address followed by a name -> hosts
- a record with a type (`name CNAME .`, `name 300 IN A 10.0.0.1`) -> rpz
- anything else (names, URLs, junk) -> plain

Blank lines and `#`/`;` comments do not vote. Ties go to the more specific format (rpz, unbound,
dnsmasq, adblock, hosts, then plain). Detection is advisory: operators should set `format` for
production lists.
"""

from __future__ import annotations

import ipaddress

MAX_HEAD = 64 << 10
MAX_LINES = 200

_RPZ_SUFFIXES = (".rpz", ".zone")
_RPZ_DIRECTIVES = ("$ORIGIN", "$TTL", "$INCLUDE")
_RR_TYPES = frozenset(
    {"A", "AAAA", "CNAME", "DNAME", "TXT", "NS", "MX", "PTR", "SRV", "SOA", "HTTPS", "SVCB"}
)
_CLASSES = frozenset({"IN", "CH", "HS"})
_COSMETIC_MARKERS = ("##", "#@#", "#?#", "#$#", "#%#")
_ORDER = ("rpz", "unbound", "dnsmasq", "adblock", "hosts", "plain")  # ties: most specific first
_DNSMASQ_PREFIXES = ("local=/", "address=/", "server=/", "--local=/", "--address=/", "--server=/")
_UNBOUND_PREFIXES = ("local-zone:", "local-data:", "local-data-ptr:")


def detect_format(head: bytes, path: str) -> str:
    """Return "plain", "hosts", "adblock", "rpz", "dnsmasq" or "unbound"."""
    if path.lower().endswith(_RPZ_SUFFIXES):
        return "rpz"
    head = head[:MAX_HEAD]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    lines = head.decode("utf-8", "replace").splitlines()
    if len(head) >= MAX_HEAD and lines and not head.endswith(b"\n"):
        lines.pop()  # cut mid-line
    votes = dict.fromkeys(_ORDER, 0)
    counted = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        vote = _vote(line)
        if vote in ("rpz!", "adblock!"):
            return vote[:-1]
        if vote is None:
            continue
        votes[vote] += 1
        counted += 1
        if counted >= MAX_LINES:
            break
    if counted == 0:
        return "plain"
    best = max(votes.values())
    return next(fmt for fmt in _ORDER if votes[fmt] == best)


def _vote(line: str) -> str | None:
    """The format one non-blank line points to; a `!` suffix means decisive; None: no vote."""
    upper = line.upper()
    if upper.startswith(_RPZ_DIRECTIVES):
        return "rpz!"
    if line.startswith("[") and line.endswith("]") and "ADBLOCK" in upper:
        return "adblock!"
    if line.startswith(_DNSMASQ_PREFIXES):
        return "dnsmasq"
    if line.startswith(_UNBOUND_PREFIXES) or line == "server:":
        return "unbound"
    if line.startswith(("||", "@@", "!")) or any(m in line for m in _COSMETIC_MARKERS):
        return "adblock"
    if line.startswith(("#", ";")):
        return None
    if line.startswith("|") and len(line) > 1:
        return "adblock"
    tokens = line.split(";", 1)[0].split()
    if len(tokens) >= 2:
        if _is_ip(tokens[0]):
            return "plain" if tokens[1].startswith("#") else "hosts"
        rtype = _record_type(tokens)
        if rtype == "SOA":
            return "rpz!"
        if rtype is not None:
            return "rpz"
    return "plain"


def _record_type(tokens: list[str]) -> str | None:
    """The type of `name [ttl] [class] TYPE data...`, or None when the line is no record. Data
    must follow the type, so a plain line such as `a.example a` is not read as one."""
    for i in range(1, min(len(tokens) - 1, 4)):
        field = tokens[i].upper()
        if field in _RR_TYPES:
            return field
        if not (field.isdigit() or field in _CLASSES):
            return None
    return None


def _is_ip(token: str) -> bool:
    if not token or not (token[0].isdigit() or ":" in token):
        return False
    try:
        ipaddress.ip_address(token)
    except ValueError:
        return False
    return True
