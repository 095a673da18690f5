"""One programmable fake upstream resolver for every test suite: UDP and TCP on the same loopback
port (chosen by the OS unless given), on 127.0.0.1 or ::1.

What it answers comes from two places:

* zone data: `add(name, rdtype, *rdata)` and `cname(name, target)`. A name with no data is
  NXDOMAIN, a name with data of other types NODATA, both with an SOA (RFC 2308 3); CNAMEs are
  followed (bounded).
* rules: `program(name, rdtype, transport, ...)` sets, for the queries a rule matches, the
  answer records (a list, or a function of the name and type), the RCODE, header flags (AA, ...),
  a delay, a drop, a TC=1 reply without records (RFC 2181 9), a reply cut short, EDNS options
  echoed or added, the question in lower case, and forged answers raced around the real one
  (RFC 5452). Every rule that matches a query applies, newer ones overriding the fields they set,
  so a catch-all rule and a per-name one combine. A rule with `times` applies to that many
  queries and is then spent.

Every query is recorded (`queries`: transport, name, type, wire, source, arrival time, EDNS option
codes), so a test can assert on what reached the upstream. Nothing is sent anywhere but back to
the loopback peer that asked (and, for the "address" forgery, from 127.0.0.2 to it)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

LOOPBACK = "127.0.0.1"
FORGED = "203.0.113.66"  # the address forged answers carry by default (RFC 5737)
SOA = "ns.example. host.example. 1 3600 600 86400 30"
CNAME_LIMIT = 8
IDLE = 0.1  # seconds a serving thread waits before looking at the stop flag again

Answer = Sequence[str] | Callable[[str, str], Sequence[str]]

# Forged answers a rule can race around the real one (RFC 5452 5 lists what a resolver must
# check): "id" another ID, "name" another question name, "type" another QTYPE, "class" another
# QCLASS, "same" the right ID and question with the forged address (after the real one: late),
# "query" the query itself echoed back (QR=0), "junk" one octet; over UDP only, the right answer
# with the forged address from "port" another port on this host and "address" 127.0.0.2.
FORGERIES = ("id", "name", "type", "class", "same", "query", "junk", "port", "address")


@dataclass
class Rule:
    """Which queries (None: any) and what to do with them (None: not set by this rule)."""

    name: str | None = None
    rdtype: str | None = None
    transport: str | None = None  # "udp" or "tcp"
    subtree: bool = False  # `name` and every name below it
    times: int | None = None  # applies to this many more queries, then is spent
    answer: Answer | None = None  # rdata of the question's type; replaces the zone data
    ttl: int | None = None
    rcode: int | None = None
    flags: int | None = None  # header flags added to the reply (dns.flags.AA, ...)
    delay: float | None = None  # seconds before the real answer
    drop: bool | None = None  # no answer at all
    tc: bool | None = None  # TC=1 and no records, as a server that cannot fit the answer
    cut: int | None = None  # the reply cut to this many octets
    forge: tuple[str, ...] | None = None  # forgeries sent before the real answer
    forge_after: tuple[str, ...] | None = None  # and after it
    forged_address: str | None = None
    lower_question: bool | None = None  # the reply's question in lower case
    echo_options: bool | None = None  # EDNS options answered as servers in the wild do
    add_options: tuple[dns.edns.Option, ...] | None = None  # added to every EDNS reply
    respond: Callable[[bytes], bytes | None] | None = None  # builds the whole reply itself

    def matches(self, name: str, rdtype: str, transport: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.rdtype is not None and self.rdtype != rdtype:
            return False
        if self.transport is not None and self.transport != transport:
            return False
        if self.name is None or self.name == name:
            return True
        return self.subtree and name.endswith("." + self.name)


_MATCH = {"name", "rdtype", "transport", "subtree", "times"}
_ACTIONS = [f.name for f in fields(Rule) if f.name not in _MATCH]


@dataclass
class Request:
    """One query as it reached the upstream."""

    transport: str
    wire: bytes
    source: tuple[Any, ...]
    name: str  # lower case, no final dot; "" when the question cannot be read
    rdtype: str
    time: float = field(default_factory=time.monotonic)

    @cached_property
    def message(self) -> dns.message.Message:
        return dns.message.from_wire(self.wire)

    @cached_property
    def options(self) -> tuple[int, ...]:
        """The EDNS option codes the query carried, in order."""
        return tuple(int(option.otype) for option in self.message.options)


def read_question(wire: bytes) -> tuple[str, str]:
    """The question's name (lower case, no final dot) and type, read from the octets without a
    DNS library (a flood must not make the upstream the bottleneck); ("", "") when it cannot be
    read (compressed, cut short)."""
    labels: list[bytes] = []
    pos = 12
    try:
        while wire[pos]:
            if wire[pos] >= 0x40:
                return "", ""
            labels.append(wire[pos + 1 : pos + 1 + wire[pos]])
            pos += wire[pos] + 1
        rdtype = struct.unpack_from("!H", wire, pos + 1)[0]
    except (IndexError, struct.error):
        return "", ""
    name = b".".join(labels).decode("ascii", "replace").lower()
    return name, dns.rdatatype.to_text(rdtype)


class FakeUpstream:
    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.records: dict[tuple[str, str], list[str]] = {}  # (name, type) -> rdata texts
        self.cnames: dict[str, str] = {}
        self.rules: list[Rule] = []
        self.queries: list[Request] = []
        self.forged = 0  # forged answers sent
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.udp, self.tcp = self._bind(port)
        self.port = int(self.udp.getsockname()[1])
        self._spoofers: dict[str, socket.socket] = {}
        self._threads = [
            threading.Thread(target=self._serve_udp, name="fake-upstream-udp", daemon=True),
            threading.Thread(target=self._serve_tcp, name="fake-upstream-tcp", daemon=True),
        ]

    # -- programming ------------------------------------------------------------------------

    def add(self, name: str, rdtype: str, *rdata: str) -> None:
        with self._lock:
            self.records.setdefault((_key(name), rdtype), []).extend(rdata)

    def cname(self, name: str, target: str) -> None:
        with self._lock:
            self.cnames[_key(name)] = _key(target)

    def program(self, name: str | None = None, rdtype: str | None = None, **settings: Any) -> Rule:
        """Add a rule (see `Rule` for the settings); newer rules override older ones."""
        rule = Rule(name=None if name is None else _key(name), rdtype=rdtype, **settings)
        for kind in (rule.forge or ()) + (rule.forge_after or ()):
            if kind not in FORGERIES:
                raise ValueError(f"unknown forgery {kind!r} (one of {', '.join(FORGERIES)})")
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget every rule (the zone data stays)."""
        with self._lock:
            self.rules.clear()

    # -- what it saw ------------------------------------------------------------------------

    def seen(self, name: str) -> int:
        """How many queries (any type, any transport) for `name` reached this upstream."""
        wanted = _key(name)
        with self._lock:
            return sum(1 for query in self.queries if query.name == wanted)

    def counts(self) -> Counter[str]:
        """Queries per name."""
        with self._lock:
            return Counter(query.name for query in self.queries)

    def requests(self, transport: str | None = None) -> list[Request]:
        with self._lock:
            return [q for q in self.queries if transport is None or q.transport == transport]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def label(self) -> str:
        """host:port, as blokir's config and `blokir verify` name a server."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -- running ----------------------------------------------------------------------------

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FakeUpstream:
        """Serve from now on (once; `with` starts it too)."""
        for thread in self._threads:
            if thread.ident is None:
                thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close the sockets: from now on the kernel answers ICMP port
        unreachable. Idempotent."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(2)
        for sock in (self.udp, self.tcp, *self._spoofers.values()):
            sock.close()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def _bind(self, port: int) -> tuple[socket.socket, socket.socket]:
        udp, tcp = udp_tcp_pair(self.host, port)
        udp.settimeout(IDLE)
        tcp.settimeout(IDLE)
        tcp.listen(16)
        return udp, tcp

    def _spoofer(self, source: str) -> socket.socket:
        with self._lock:
            if source not in self._spoofers:
                sock = socket.socket(self.family, socket.SOCK_DGRAM)
                sock.bind((source, 0))
                self._spoofers[source] = sock
            return self._spoofers[source]

    # -- answering --------------------------------------------------------------------------

    def _record(self, wire: bytes, transport: str, source: tuple[Any, ...]) -> Rule:
        """Record the query and merge the rules that match it (spending their `times`)."""
        name, rdtype = read_question(wire)
        settings: dict[str, Any] = {}
        with self._lock:
            self.queries.append(Request(transport, wire, source, name, rdtype))
            for rule in self.rules:  # oldest first: newer rules override what they set
                if rule.matches(name, rdtype, transport):
                    if rule.times is not None:
                        rule.times -= 1
                    for action in _ACTIONS:
                        value = getattr(rule, action)
                        if value is not None:
                            settings[action] = value
        return Rule(**settings)

    def reply(self, wire: bytes, transport: str, rule: Rule) -> bytes | None:
        """The real answer to a query under `rule`; None for none at all."""
        if rule.drop:
            return None
        if rule.respond is not None:
            return rule.respond(wire)
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # anything unparsable is dropped, as a real server would
            return None
        if not query.question:
            return None
        question = query.question[0]
        if rule.lower_question:
            lowered = dns.message.make_query(
                question.name.to_text().lower(), question.rdtype, question.rdclass
            )
            lowered.id = query.id
            lowered.flags = query.flags
            query, question = lowered, lowered.question[0]
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA | (rule.flags or 0)
        if rule.echo_options and query.options:
            response.use_edns(0, payload=1232, options=[_echo(o) for o in query.options])
        if rule.add_options and query.edns >= 0:
            response.use_edns(0, payload=1232, options=[*response.options, *rule.add_options])
        if rule.tc:
            response.flags |= dns.flags.TC
        else:
            self._fill(response, question, rule)
        reply: bytes = response.to_wire()
        if rule.cut is not None:
            reply = reply[: rule.cut]
        return reply

    def _fill(self, response: dns.message.Message, question: dns.rrset.RRset, rule: Rule) -> None:
        """The answer section from the rule or the zone data, the RCODE, and the SOA of a
        negative answer."""
        rdtype = dns.rdatatype.to_text(question.rdtype)
        if rule.answer is not None:
            name = question.name.to_text(omit_final_dot=True).lower()
            rdata = rule.answer(name, rdtype) if callable(rule.answer) else rule.answer
            if rdata:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, rule.ttl or 300, "IN", rdtype, rdata)
                )
        else:
            self._from_zone(response, question.name, rdtype, rule.ttl or 300)
        if rule.rcode is not None:
            response.set_rcode(dns.rcode.Rcode(rule.rcode))
        if not response.answer and response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            response.authority.append(dns.rrset.from_text("example.", 300, "IN", "SOA", SOA))

    def _from_zone(
        self, response: dns.message.Message, owner: dns.name.Name, rdtype: str, ttl: int
    ) -> None:
        with self._lock:
            records = dict(self.records)
            cnames = dict(self.cnames)
        for _ in range(CNAME_LIMIT):
            target = cnames.get(owner.to_text(omit_final_dot=True).lower())
            if target is None:
                break
            response.answer.append(dns.rrset.from_text(owner, ttl, "IN", "CNAME", target + "."))
            owner = dns.name.from_text(target)
        text = owner.to_text(omit_final_dot=True).lower()
        if (text, rdtype) in records:
            response.answer.append(
                dns.rrset.from_text_list(owner, ttl, "IN", rdtype, records[(text, rdtype)])
            )
        elif not response.answer and not any(name == text for name, _ in records):
            response.set_rcode(dns.rcode.NXDOMAIN)

    def forgery(self, wire: bytes, kind: str, rule: Rule) -> bytes:
        """A forged answer of `kind` (see FORGERIES) to the query `wire`."""
        if kind == "junk":
            return b"\x00"
        if kind == "query":
            return wire
        query = dns.message.from_wire(wire)
        question = query.question[0]
        qname, rdtype, rdclass = question.name, question.rdtype, question.rdclass
        if kind == "name":
            qname = dns.name.from_text("forged-other.example.")
        elif kind == "type":
            rdtype = dns.rdatatype.AAAA if rdtype == dns.rdatatype.A else dns.rdatatype.A
        elif kind == "class":
            rdclass = dns.rdataclass.CH
        forged_query = dns.message.make_query(qname, rdtype, rdclass)
        forged_query.id = query.id ^ 0x5A5A if kind == "id" else query.id
        forged = dns.message.make_response(forged_query)
        address = rule.forged_address or FORGED
        forged.answer.append(dns.rrset.from_text(qname, 300, "IN", "A", address))
        return forged.to_wire()

    def _respond(
        self, wire: bytes, transport: str, rule: Rule, send: Callable[[bytes, str], None]
    ) -> None:
        """Forgeries, the delay, the real answer, late forgeries: in that order. `send` takes
        the octets and the forgery kind ("" for the real answer)."""
        for kind in rule.forge or ():
            send(self.forgery(wire, kind, rule), kind)
        if rule.delay:
            time.sleep(rule.delay)
        reply = self.reply(wire, transport, rule)
        if reply is None:
            return
        send(reply, "")
        for kind in rule.forge_after or ():
            send(self.forgery(wire, kind, rule), kind)

    def _count_forgery(self) -> None:
        with self._lock:
            self.forged += 1

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, source = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            rule = self._record(wire, "udp", source)
            if rule.delay or rule.forge or rule.forge_after:
                # Not in this loop: other queries are answered meanwhile.
                threading.Thread(
                    target=self._answer_udp, args=(wire, source, rule), daemon=True
                ).start()
            else:
                self._answer_udp(wire, source, rule)

    def _answer_udp(self, wire: bytes, source: tuple[Any, ...], rule: Rule) -> None:
        def send(data: bytes, kind: str) -> None:
            if kind:
                self._count_forgery()
            sock = self.udp
            if kind == "port":
                sock = self._spoofer(self.host)
            elif kind == "address":
                sock = self._spoofer("127.0.0.2")
            elif not kind:
                data = _fit(data, wire)
            with contextlib.suppress(OSError):
                sock.sendto(data, source)

        try:
            self._respond(wire, "udp", rule, send)
        except Exception:  # a broken query gets no answer; the upstream keeps serving
            return

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, source = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn, source), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket, source: tuple[Any, ...]) -> None:
        def send(data: bytes, kind: str) -> None:
            if kind in ("port", "address"):
                return  # no other source on a connection
            if kind:
                self._count_forgery()
            conn.sendall(struct.pack("!H", len(data)) + data)

        conn.settimeout(2)
        with conn:
            try:
                for _ in range(1000):  # bounded: no test sends more on one connection
                    prefix = _recv_exact(conn, 2)
                    if not prefix:
                        return
                    wire = _recv_exact(conn, struct.unpack("!H", prefix)[0])
                    self._respond(wire, "tcp", self._record(wire, "tcp", source), send)
            except Exception:
                return


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _fit(reply: bytes, query: bytes) -> bytes:
    """Over UDP, a client without EDNS gets at most 512 octets: a longer answer goes out as
    TC=1 without records (RFC 1035 4.2.1, RFC 2181 9)."""
    if len(reply) <= 512 or b"\x00\x00\x29" in query[-11:]:
        return reply
    message = dns.message.from_wire(reply)
    message.answer = []
    message.flags |= dns.flags.TC
    fitted: bytes = message.to_wire()
    return fitted


def _echo(option: dns.edns.Option) -> dns.edns.Option:
    """The option a server that answers options would send back for `option`: a COOKIE with a
    server cookie added (RFC 7873 5.2.3), ECS with its scope set (RFC 7871 7.2.1), anything
    else as it came (the non-compliance RFC 6891 6.1.2 forbids)."""
    if isinstance(option, dns.edns.CookieOption):
        return dns.edns.CookieOption(option.client, b"upstream")  # client cookie + our 8 octets
    if isinstance(option, dns.edns.ECSOption):
        return dns.edns.ECSOption(option.address, option.srclen, option.srclen)
    return option


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = conn.recv(remaining)
        if not chunk:
            return b""
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def udp_tcp_pair(host: str, port: int = 0, tries: int = 50) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same port on `host`: the kernel picks the UDP port
    (unless `port` is given), and another test may hold that number over TCP, so try again
    (bounded)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1 if port else tries):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind((host, port))
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise OSError(f"no port on {host} free for both UDP and TCP after {tries} tries")
