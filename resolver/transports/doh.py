"""RFC 8484 requests: from an HTTP method, target and body to the DNS query they carry.

Pure (no I/O), so the fuzz campaign can drive it directly. Every failure is an `HttpError`
with the status RFC 8484 and RFC 9110 call for: 404 for another path, 405 for another method,
415 for a POST body that is not application/dns-message, 413 for one past MAX_MESSAGE, 414
for a GET whose `dns` parameter would decode past it, 400 for a missing or malformed `dns`
parameter (base64url without padding, RFC 8484 4.1 and RFC 4648 5) or a message too short to
be DNS.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = [
    "CONTENT_TYPE",
    "MAX_MESSAGE",
    "MAX_TARGET",
    "HttpError",
    "decode_base64url",
    "dns_query",
]

CONTENT_TYPE = b"application/dns-message"
MAX_MESSAGE = 65_535  # a DNS message's own limit over a stream (RFC 1035 4.2.2)
# The longest request target accepted: `?dns=` plus MAX_MESSAGE in base64url, and the path.
MAX_TARGET = 256 + (MAX_MESSAGE * 4 + 2) // 3
_HEADER_SIZE = 12
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def decode_base64url(text: bytes) -> bytes:
    """RFC 4648 section 5 base64url; padding may be left out (RFC 8484 4.1 asks clients to) but
    is tolerated when present and correct. Raises HttpError(400) on anything else."""
    stripped = text.rstrip(b"=")
    if len(text) - len(stripped) > 2 or not _BASE64URL.fullmatch(stripped):
        raise HttpError(400, "dns parameter is not base64url")
    if len(stripped) % 4 == 1:  # no whole octet ends there
        raise HttpError(400, "dns parameter has an impossible base64url length")
    try:
        return base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise HttpError(400, "dns parameter is not base64url") from exc


def _dns_parameter(query: bytes) -> bytes:
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"dns":
            return value
    raise HttpError(400, "GET needs a dns parameter")


def dns_query(
    method: bytes, target: bytes, content_type: bytes | None, body: bytes, path: bytes
) -> bytes:
    """The DNS query of one DoH request, or HttpError. `body` is what arrived (the caller stops
    reading at MAX_MESSAGE + 1 octets)."""
    if len(target) > MAX_TARGET:
        raise HttpError(414, "request target too long")
    target_path, _, query = target.partition(b"?")
    if target_path != path:
        raise HttpError(404, "no DNS endpoint here")
    if method == b"GET":
        value = _dns_parameter(query)
        if (len(value) * 3) // 4 > MAX_MESSAGE:
            raise HttpError(414, "dns parameter too long")
        message = decode_base64url(value)
    elif method == b"POST":
        mime = (content_type or b"").split(b";")[0].strip().lower()
        if mime != CONTENT_TYPE:
            raise HttpError(415, "POST body must be application/dns-message")
        if len(body) > MAX_MESSAGE:
            raise HttpError(413, "DNS message too large")
        message = body
    else:
        raise HttpError(405, "GET or POST only")
    if len(message) < _HEADER_SIZE:
        raise HttpError(400, "not a DNS message")
    return message
