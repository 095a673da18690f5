"""blokir and Unbound side by side, both forwarding to one NSD upstream on 127.0.0.1, for the
suites that compare them (test_compliance.py, test_differential.py); plus a raw exchange of
many queries at once and the grading helpers both suites share.

Unbound gets the same policy as blokir's test lists (tests/integration/test_server.py) as an
RPZ zone: landing addresses for the blocked names and everything under them, NXDOMAIN for the
"nx" list, passthru for the allowlisted name. Every server is a child process stopped in a
`finally`; every wait is bounded.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message

from tests.integration.test_server import (
    ALLOWED_CHILD,
    BLOCKED,
    LANDING_V4,
    LANDING_V6,
    LOOPBACK,
    Blokir,
)
from tests.support.processes import Deadline, ManagedProcess, find_binary, free_port
from tests.support.servers import (
    start_nsd,
    start_unbound,
    unbound_conf,
    wait_for_answer,
)

__all__ = [
    "ALLOWED_CHILD",
    "BLOCKED",
    "LANDING_V4",
    "LANDING_V6",
    "NX_ONLY",
    "OPTION_EDE",
    "ZONE",
    "ZONE_TTL",
    "Z_BIT",
    "Peers",
    "exchange_tcp",
    "exchange_udp",
    "parse",
    "run_peers",
    "skip_reason",
]

ZONE = "peer.example."
NX_ONLY = "nx-only.example"  # the "nx" list of the Blokir helper's configuration
BIG_TXT = 24  # TXT records of 200 octets at big.peer.example.: about 5 KB, truncated over UDP
MID_TXT = 5  # at mid.peer.example.: about 1.1 KB, truncated or not by the client's UDP size
ZONE_TTL = 300  # the longest TTL in the zone
START_SECONDS = 60.0
Z_BIT = 0x0040  # the header's reserved bit (RFC 1035 4.1.1: must be zero)
OPTION_EDE = 15  # RFC 8914


def zone_text() -> str:
    """The test zone: addresses, TXT, MX, CNAME chains (two and three links, one to a blocked
    name), a wildcard, a record of an unknown type (RFC 3597 syntax), an answer too large for
    UDP, and names with data of one type only (NODATA for the others)."""
    lines = [
        f"$ORIGIN {ZONE}",
        f"$TTL {ZONE_TTL}",
        "@ SOA ns hostmaster 1 3600 600 86400 60",
        "@ NS ns",
        "@ MX 10 mail",
        '@ TXT "v=spf1 -all"',
        "ns A 127.0.0.1",
        "mail A 198.51.100.25",
        "www A 198.51.100.80",
        "www AAAA 2001:db8:80::1",
        'www TXT "hello from www"',
        "only4 A 198.51.100.4",
        "only6 AAAA 2001:db8:6::6",
        "c1 CNAME c2",
        "c2 CNAME c3",
        "c3 CNAME www",
        "short CNAME only4",
        f"alias-blocked CNAME {BLOCKED[0]}.",
        "*.wild A 198.51.100.99",
        '*.wild TXT "wildcard"',
        "unk TYPE666 \\# 4 0a0b0c0d",
    ]
    for i in range(40):
        lines.append(f"h{i} A 198.51.100.{100 + i}")
        if i % 2 == 0:
            lines.append(f"h{i} AAAA 2001:db8:1::{i + 1:x}")
        if i % 3 == 0:
            lines.append(f'h{i} TXT "host {i}" "second string"')
        if i % 5 == 0:
            lines.append(f"h{i} MX {i} mail")
    for i in range(BIG_TXT):
        lines.append(f'big TXT "{i:03d}{"x" * 197}"')
    for i in range(MID_TXT):
        lines.append(f'mid TXT "{i:03d}{"y" * 197}"')
    return "\n".join(lines) + "\n"


def rpz_text() -> str:
    """blokir's test lists as an RPZ zone (landing addresses, NXDOMAIN, passthru)."""
    lines = ["$TTL 77", "@ SOA localhost. root.localhost. 1 3600 600 86400 77", "@ NS localhost."]
    for name in BLOCKED:
        for owner in (name, f"*.{name}"):
            lines += [f"{owner} A {LANDING_V4}", f"{owner} AAAA {LANDING_V6}"]
    lines += [f"{NX_ONLY} CNAME .", f"*.{NX_ONLY} CNAME ."]
    lines.append(f"{ALLOWED_CHILD} CNAME rpz-passthru.")
    return "\n".join(lines) + "\n"


# Unbound as a plain forwarder to the same upstream: no validator (blokir does not validate
# either); `example.` is not one of Unbound's default local zones, but say so in case a build
# adds it; minimal responses stay at Unbound's default (yes).
UNBOUND_EXTRA = """server:
    local-zone: "example." nodefault
    qname-minimisation: no
    harden-glue: no
"""


@dataclass
class Peers:
    blokir: int
    unbound: int
    nsd: int


def skip_reason() -> str | None:
    for binary in ("nsd", "unbound"):
        if find_binary(binary) is None:
            return f"{binary} not installed (scripts/install-test-deps installs it)"
    return None


def run_peers(tmp: Path) -> Iterator[Peers]:
    """Start NSD, Unbound and blokir (in that order); yield their ports; stop all three."""
    deadline = Deadline(START_SECONDS)
    nsd_dir = tmp / "nsd"
    nsd_dir.mkdir()
    zonefile = nsd_dir / "peer.zone"
    zonefile.write_text(zone_text())
    nsd, nsd_port = start_nsd(nsd_dir, ZONE, zonefile, f"www.{ZONE}", deadline)
    servers: list[ManagedProcess] = [nsd]
    blokir: Blokir | None = None
    try:
        unbound_dir = tmp / "unbound"
        unbound_dir.mkdir()
        rpz = unbound_dir / "blocked.rpz"
        rpz.write_text(rpz_text())
        unbound_port = free_port()
        conf = unbound_conf(unbound_dir, unbound_port, 1, rpz, nsd_port, "peer")
        conf.write_text(conf.read_text() + UNBOUND_EXTRA)
        unbound = start_unbound(conf, "unbound-peer")
        servers.append(unbound)
        wait_for_answer(unbound, unbound_port, f"www.{ZONE}", time.monotonic() + deadline.cap(30))
        blokir_dir = tmp / "blokir"
        blokir_dir.mkdir()
        blokir = Blokir(blokir_dir, nsd_port)
        blokir.start()
        yield Peers(blokir=blokir.port, unbound=unbound_port, nsd=nsd_port)
    finally:
        if blokir is not None and blokir.proc is not None:
            blokir.stop()
        for server in reversed(servers):
            server.stop()


# -- exchanging raw queries ---------------------------------------------------------------------


def exchange_udp(
    port: int, queries: Sequence[bytes], timeout: float = 2.0, window: int = 64
) -> list[bytes | None]:
    """Each query's reply over UDP (None: none within `timeout` of its window being sent). At
    most `window` queries are outstanding; replies are matched by ID, so each query in a window
    must carry its own."""
    replies: list[bytes | None] = [None] * len(queries)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        for start in range(0, len(queries), window):
            batch = range(start, min(start + window, len(queries)))
            waiting = {struct.unpack_from("!H", queries[i])[0]: i for i in batch}
            assert len(waiting) == len(batch), "IDs in a window must differ"
            for i in batch:
                sock.send(queries[i])
            end = time.monotonic() + timeout
            while waiting:
                left = end - time.monotonic()
                if left <= 0 or not select.select([sock], [], [], left)[0]:
                    break
                try:
                    data = sock.recv(65535)
                except ConnectionRefusedError:
                    continue
                if len(data) >= 2:
                    index = waiting.pop(struct.unpack_from("!H", data)[0], None)
                    if index is not None:
                        replies[index] = data
    return replies


def exchange_tcp(
    port: int, queries: Sequence[bytes], timeout: float = 3.0, window: int = 16
) -> list[bytes | None]:
    """Each query's reply over TCP: `window` queries pipelined per connection (RFC 7766 6.2.1),
    replies matched by ID (they may come out of order, RFC 7766 7)."""
    replies: list[bytes | None] = [None] * len(queries)
    for start in range(0, len(queries), window):
        batch = range(start, min(start + window, len(queries)))
        waiting = {struct.unpack_from("!H", queries[i])[0]: i for i in batch}
        end = time.monotonic() + timeout
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"".join(struct.pack("!H", len(queries[i])) + queries[i] for i in batch))
            buffer = b""
            while waiting and time.monotonic() < end:
                sock.settimeout(max(end - time.monotonic(), 0.01))
                try:
                    chunk = sock.recv(65535)
                except (TimeoutError, OSError):
                    break
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack_from("!H", buffer)[0]:
                    size = struct.unpack_from("!H", buffer)[0]
                    data, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                    if len(data) >= 2:
                        index = waiting.pop(struct.unpack_from("!H", data)[0], None)
                        if index is not None:
                            replies[index] = data
    return replies


def parse(data: bytes | None) -> dns.message.Message | None:
    """The reply as a message, None when there was none or it does not parse."""
    if data is None:
        return None
    try:
        return dns.message.from_wire(data, ignore_trailing=False)
    except dns.exception.DNSException:
        return None
