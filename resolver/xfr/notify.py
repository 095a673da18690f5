"""Receive NOTIFY (RFC 1996) for the `axfr://` lists on `[rpz] notify_listen`.

Why a socket of its own, in the supervisor, and not blokir's DNS port: a NOTIFY only makes a
transfer due, and transfers run on the reloader's thread in the supervisor. On the DNS port the
workers would have to pass every NOTIFY up to the supervisor, and the query path (which answers
opcode NOTIFY with NOTIMP today) would carry code for a message it never answers itself. Here one
thread reads one UDP socket; BIND (`also-notify { ADDR port P; }`) and NSD (`notify: ADDR@P`)
both send to any port.

A NOTIFY is obeyed when it comes from an address in `[rpz] notify_from`, asks about the zone of
an `axfr://` list, and, when it carries a TSIG, that signature verifies with one of the lists'
keys. The answer is the NOTIFY response of RFC 1996 section 4.7 (same id, QR and AA set, the
question echoed; signed when the NOTIFY was); REFUSED for a sender not allowed, NOTAUTH for a
zone that is not ours, FORMERR/NOTIMP for what is not a NOTIFY of an SOA. A NOTIFY whose TSIG does
not verify gets no answer (it cannot be signed back) and is logged. The SOA serial a NOTIFY may
carry is only a hint (section 3.7): the transfer asks the primary itself.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig

from resolver.config import Address

__all__ = ["NotifyListener"]

log = logging.getLogger("blokir")

MAX_MESSAGE = 65535
POLL = 0.5  # seconds: how often the thread looks at the stop flag

# (zone, sender address) -> whether the zone is one of ours (and was marked due).
OnNotify = Callable[[dns.name.Name, str], bool]
Allowed = Callable[[str], bool]
Keyring = Callable[[], dict[dns.name.Name, dns.tsig.Key]]


class NotifyListener:
    """One UDP socket and one daemon thread. `bind()` (may need root for a low port) comes
    before `start()`; `close()` stops the thread."""

    def __init__(
        self, address: Address, allowed: Allowed, on_notify: OnNotify, keyring: Keyring
    ) -> None:
        self.address = address
        self._allowed = allowed
        self._on_notify = on_notify
        self._keyring = keyring
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.received = 0  # NOTIFYs obeyed (tests and logs)

    def bind(self) -> tuple[str, int]:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(POLL)
        self._sock = sock
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    def start(self) -> None:
        if self._sock is None:
            self.bind()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL + 1)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                wire, sender = sock.recvfrom(MAX_MESSAGE)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                reply = self.answer(wire, str(sender[0]))
            except Exception:  # one odd packet must not end the listener
                log.exception("NOTIFY from %s: unexpected error", sender[0])
                continue
            if reply is not None:
                try:
                    sock.sendto(reply, sender)
                except OSError as exc:
                    log.warning("NOTIFY from %s: cannot answer: %s", sender[0], exc)

    def answer(self, wire: bytes, client: str) -> bytes | None:
        """The reply to one datagram (None: none is sent)."""
        try:
            message = dns.message.from_wire(wire, keyring=self._keyring())
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime) as exc:
            log.warning("NOTIFY from %s: TSIG check failed (%s); ignored", client, exc)
            return None
        except dns.message.UnknownTSIGKey:
            log.warning("NOTIFY from %s: signed with a key we do not have; ignored", client)
            return None
        except dns.exception.DNSException:
            return None  # not a DNS message worth an answer
        if message.flags & dns.flags.QR:
            return None  # a response: never answer one (no loops)
        reply = dns.message.make_response(message)
        reply.flags |= dns.flags.AA
        if message.opcode() != dns.opcode.NOTIFY:
            reply.set_rcode(dns.rcode.NOTIMP)
            return reply.to_wire()
        if len(message.question) != 1 or message.question[0].rdtype != dns.rdatatype.SOA:
            reply.set_rcode(dns.rcode.FORMERR)
            return reply.to_wire()
        zone = message.question[0].name
        if not self._allowed(client):
            log.warning("NOTIFY for %s from %s: not in [rpz] notify_from; refused", zone, client)
            reply.set_rcode(dns.rcode.REFUSED)
            return reply.to_wire()
        if not self._on_notify(zone, client):
            reply.set_rcode(dns.rcode.NOTAUTH)
            return reply.to_wire()
        self.received += 1
        log.info("NOTIFY for %s from %s: transfer due", zone, client)
        return reply.to_wire()
