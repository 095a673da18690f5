"""The server-side TLS context of the encrypted listeners, reloadable while serving.

A listener asks `ServerTls.context` for each new connection, so a SIGHUP that loads a renewed
certificate changes what the next handshake presents and leaves connections already open on
the old context alone (an SSLContext is only read during the handshake and by the connections
it made). A certificate or key that does not load keeps the one in use: a typo in a renewal
must not take the encrypted listeners down.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

log = logging.getLogger("blokir")

__all__ = ["ALPN_DOH", "ALPN_DOT", "ServerTls", "server_context"]

ALPN_DOT = ("dot",)  # RFC 7858 has none; "dot" is the IANA-registered ALPN id (RFC 9461 2)
ALPN_DOH = ("h2", "http/1.1")  # RFC 8484 5.2: HTTP/2 is the minimum; HTTP/1.1 accepted too


def server_context(certificate: str, key: str, alpn: Sequence[str]) -> ssl.SSLContext:
    """A TLS 1.2+ server context (RFC 8310 and RFC 8484 both ask for 1.2 at least) holding
    `certificate` (a PEM chain) and `key`. Raises OSError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    # Session tickets let a client resume without a full handshake (RFC 8446 2.2): cheaper
    # reconnects for phones that drop idle connections (RFC 7858 3.4 asks servers to allow it).
    context.options |= ssl.OP_NO_COMPRESSION  # CRIME; off in modern OpenSSL, said for clarity
    return context


class ServerTls:
    """The current context for one listener kind (`alpn`), loaded from `certificate`/`key`."""

    def __init__(self, certificate: str, key: str, alpn: Sequence[str]) -> None:
        self.certificate = certificate
        self.key = key
        self.alpn = tuple(alpn)
        self.context = server_context(certificate, key, self.alpn)  # errors stop the start
        self.loads = 1

    def reload(self, certificate: str | None = None, key: str | None = None) -> bool:
        """Load the files again (or new ones); True when the new context is in use."""
        certificate = certificate or self.certificate
        key = key or self.key
        try:
            context = server_context(certificate, key, self.alpn)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS reload: %s; keeping the certificate in use", exc)
            return False
        self.certificate, self.key = certificate, key
        self.context = context
        self.loads += 1
        return True
