"""The fuzz targets: what each one feeds its input to, and the invariants checked on every
output (see tests/fuzz/campaign.py for the list). A target is a `Target` in TARGETS: its name,
how to build its check (and clean up after), its input count in a quick run, and whether it
takes list text or DNS packets. Invariants on handle_udp/handle_tcp answers are the functions
in ANSWER_INVARIANTS."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.seeds import ROOT

Check = Callable[[bytes], None]
Cleanup = Callable[[], None]


class Violation(Exception):
    """An invariant broken by a target's output (as opposed to an exception it raised)."""


# -- targets ----------------------------------------------------------------------------------


def parse_query_check() -> Check:
    import dns.flags
    import dns.message

    from resolver.dns.constants import BADVERS, FORMERR, NOTIMP
    from resolver.dns.query import ParseError, parse_query, upstream_request
    from resolver.dns.response import error_response

    rcodes = {FORMERR, NOTIMP, BADVERS}

    def check(data: bytes) -> None:
        try:
            query = parse_query(data)
        except ParseError as error:
            if error.rcode is None:
                if len(data) >= 12 and not data[2] & 0x80:
                    raise Violation("dropped a well-formed header without QR") from None
                return
            if len(data) < 12 or data[2] & 0x80:
                raise Violation("answers a short packet or a response") from None
            if error.rcode not in rcodes:
                raise Violation(f"unexpected rcode {error.rcode}") from None
            answer = error_response(data, error.rcode, error.query, 1232)
            message = dns.message.from_wire(answer)
            if message.id != int.from_bytes(data[:2], "big") or not message.flags & dns.flags.QR:
                raise Violation("error response ID or QR") from None
            return
        if query.id != int.from_bytes(data[:2], "big"):
            raise Violation("query ID")
        if data[12 : query.question_end] != query.question or data[2] & 0x80:
            raise Violation("question or QR")
        if query.qname != query.qname.lower():
            raise Violation("qname not lower case")
        if not query.unmatchable and (len(query.qname) > 253 or b"\\" in query.qname):
            raise Violation("qname longer than 253 or escaped without being unmatchable")
        # What goes upstream: parses the same way, asks the same, holds no hop option, and asks
        # for recursion and AD (RFC 6840 5.7) with the asker's CD, unless signed (RFC 8945).
        sent = upstream_request(data, query)
        signed = int.from_bytes(data[10:12], "big") > query.edns
        wanted = query.flags if signed else 0x0120 | (query.flags & 0x7810)  # RD AD | OPCODE CD
        if int.from_bytes(sent[2:4], "big") != wanted:
            raise Violation("upstream request's header flags")
        if not query.hop_options:
            if sent[:2] + sent[4:] != data[:2] + data[4:]:
                raise Violation("a query without hop options was changed beyond its flags")
            return
        again = parse_query(sent)  # a ParseError here is a crash: it must parse
        if again.question != query.question or again.hop_options or len(sent) >= len(data):
            raise Violation("upstream request: question changed or hop options left")
        if (again.edns, again.do, again.payload) != (query.edns, query.do, query.payload):
            raise Violation("upstream request: EDNS settings changed")

    return check


def answer_options_check() -> Check:
    """message.without_options over hostile upstream answers: never raises; a changed answer
    is shorter, still walks, and holds none of the removed options."""
    import struct

    from resolver.dns.constants import TYPE_OPT
    from resolver.dns.message import ADDITIONAL, walk, without_options
    from resolver.dns.query import HOP_BY_HOP_OPTIONS

    def check(data: bytes) -> None:
        cleaned = without_options(data, HOP_BY_HOP_OPTIONS)
        if cleaned is data:
            return
        if len(cleaned) >= len(data):
            raise Violation("removing options did not shorten the answer")
        for record in walk(cleaned)[1]:  # a MessageError here is a crash
            if record.section != ADDITIONAL or record.rtype != TYPE_OPT:
                continue
            pos, end = record.rdata_offset, record.rdata_offset + record.rdlength
            while pos + 4 <= end:
                code, length = struct.unpack_from("!HH", cleaned, pos)
                if code in HOP_BY_HOP_OPTIONS:
                    raise Violation(f"option {code} left in the answer")
                pos += 4 + length

    return check


def doh_request_check() -> Check:
    """resolver/transports/doh.dns_query over hostile requests: the first octet picks the
    method and where the rest goes (a GET's dns parameter, raw or base64url-encoded, or a POST
    body); only HttpError with an RFC status escapes, and what is accepted is the DNS message
    that was sent."""
    import base64

    from resolver.transports.doh import MAX_MESSAGE, HttpError, dns_query

    path = b"/dns-query"
    statuses = {400, 404, 405, 413, 414, 415}

    def check(data: bytes) -> None:
        if not data:
            return
        mode, rest = data[0] % 4, data[1:]
        expected: bytes | None = None
        if mode == 0:  # GET with the octets themselves as the parameter (mostly not base64url)
            method, target, body = b"GET", path + b"?dns=" + rest, b""
        elif mode == 1:  # GET with a well-formed parameter
            encoded = base64.urlsafe_b64encode(rest).rstrip(b"=")
            method, target, body, expected = b"GET", path + b"?x=1&dns=" + encoded, b"", rest
        elif mode == 2:
            method, target, body, expected = b"POST", path, rest, rest
        else:  # anything as the target
            method, target, body = b"GET", rest, b""
        try:
            message = dns_query(method, target, b"application/dns-message", body, path)
        except HttpError as error:
            if error.status not in statuses:
                raise Violation(f"status {error.status} for a bad request") from None
            if expected is not None and 12 <= len(expected) <= MAX_MESSAGE:
                raise Violation(f"a well-formed request refused with {error.status}") from None
            return
        if not 12 <= len(message) <= MAX_MESSAGE:
            raise Violation(f"accepted a message of {len(message)} octets")
        if expected is not None and message != expected:
            raise Violation("the accepted message is not the one sent")

    return check


def padding_check() -> Check:
    """resolver/transports/shaping.padded over hostile answers: never raises; a changed answer
    is a multiple of the block length, longer, and still walks."""
    from resolver.dns import message
    from resolver.transports.shaping import BLOCK_LENGTH, padded

    def check(data: bytes) -> None:
        out = padded(data)
        if out is data or out == data:
            return
        if len(out) % BLOCK_LENGTH or len(out) <= len(data):
            raise Violation(f"padded to {len(out)} octets from {len(data)}")
        message.walk(out)  # a MessageError here is a crash

    return check


def dnstap_check() -> Check:
    """The query log's C encoder (resolver/querylog/_dnstap.c) over hostile records: the input
    is split into a client string, a query, an answer and a trigger, with its first octets as
    the flags; the C bytes must equal PyEncoder's (held to the protobuf library by
    tests/unit/test_querylog.py), and every frame must decode. Without the extension, PyEncoder
    against itself still checks the decoding."""
    from resolver.querylog import framestream as fs
    from resolver.querylog.encoder import _NATIVE, PyEncoder, pieces, policy_fields
    from resolver.querylog.schema import message_classes

    dnstap, _, _ = message_classes()
    made = []
    for kind in (PyEncoder, _NATIVE or PyEncoder):
        encoder = kind(*pieces(b"fuzz", b"blokir"), 24, 48, 32, 128, 1 << 20)
        encoder.set_policies(*policy_fields([("fuzz", "x", "nxdomain"), ("b", "y", "drop")]))
        made.append(encoder)

    def check(data: bytes) -> None:
        flags = data[:4].ljust(4, b"\0")
        rest = data[4:]
        cut = [len(rest) * n // 4 for n in range(5)]
        client, query, answer, value = (rest[cut[n] : cut[n + 1]] for n in range(4))
        record = (
            flags[0] * 16_000_000.0 + flags[1] / 7,
            client.decode("latin-1"),
            bool(flags[2] & 1),
            query,
            answer if flags[2] & 2 else None,
            flags[3] % 4,  # 0: allowed; 3: an id outside the table
            flags[2] >> 2,
            value,
        )
        outputs = []
        for encoder in made:
            encoder.add(*record)
            outputs.append(encoder.take())
        if outputs[0] != outputs[1]:
            raise Violation(f"C and Python encodings differ for {record!r:.200}")
        frames = fs.FrameReader().feed(outputs[0])
        if len(frames) != 2:
            raise Violation(f"{len(frames)} frames for one record")
        for frame in frames:
            assert isinstance(frame, bytes)
            dnstap.FromString(frame)  # a DecodeError here is a crash

    return check


@dataclass
class HandleTarget:
    """A resolver compiled from the sample lists, reused for every input; `cleanup` removes the
    temporary index and config directory."""

    resolver: Any
    paths: list[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        self.resolver.index.close()
        for path in self.paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def build_resolver() -> HandleTarget:
    """Every block action and an allowlist, ACL = loopback only, a rate limit for one client
    prefix, and a cache warmed with answers for some seed names (so cache hits get patched)."""
    import dns.flags
    import dns.message
    import dns.rrset

    from resolver.compile import compile_temporary
    from resolver.config import parse_config
    from resolver.dns.query import parse_query
    from resolver.pipeline import Resolver

    workdir = Path(tempfile.mkdtemp(prefix="blokir-fuzz-"))
    lists = ROOT / "blocklists"
    text = f"""
[server]
allow = ["127.0.0.0/8", "::1/128"]
[upstream]
servers = ["127.0.0.1:9"]
[blocking]
landing_ipv4 = "192.0.2.10"
landing_ipv6 = "2001:db8::10"
[[allowlists]]
name = "allow"
path = "{lists / "sample-allow.txt"}"
[[lists]]
name = "domains"
path = "{lists / "sample-domains.txt"}"
[[lists]]
name = "hosts"
path = "{lists / "sample-hosts.txt"}"
action = "nxdomain"
[[lists]]
name = "adblock"
path = "{lists / "sample-adblock.txt"}"
action = "refused"
[[lists]]
name = "rpz"
path = "{lists / "sample-rpz.rpz"}"
"""
    config = parse_config(text, workdir / "blokir.toml")
    index, index_path = compile_temporary(config.list_specs(), prefix="blokir-fuzz-")
    resolver = Resolver(config, index)
    for name, rdtype, value in (
        ("cached.example.net", "A", "192.0.2.44"),
        ("allowed.example.org", "AAAA", "2001:db8::44"),
    ):
        for edns in (-1, 0):
            query_wire = dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
            response = dns.message.make_response(dns.message.from_wire(query_wire))
            # An authoritative upstream's header, with Z set: never to reach a client.
            response.flags |= dns.flags.AA | 0x0040
            response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", rdtype, value))
            parsed = parse_query(query_wire)
            resolver.cache.put(resolver._cache_key(parsed), response.to_wire())
    return HandleTarget(resolver, [workdir, index_path])


CLIENTS = ("127.0.0.1", "127.0.0.1", "127.0.0.1", "::1", "192.0.2.200")  # the last one: REFUSED


@dataclass(frozen=True)
class Exchange:
    """A query and the answer Resolver.handle gave to it, as the answer invariants see them."""

    query: bytes
    answer: bytes
    message: Any  # the answer as dnspython parsed it (dns.message.Message)
    udp: bool
    resolver: Any


def answer_id_and_qr(exchange: Exchange) -> None:
    import dns.flags

    message = exchange.message
    if message.id != int.from_bytes(exchange.query[:2], "big") or not message.flags & dns.flags.QR:
        raise Violation("answer ID or QR")


def answer_question_is_the_querys(exchange: Exchange) -> None:
    answer, data = exchange.answer, exchange.query
    if answer[4:6] != b"\x00\x00":  # a question: byte for byte the query's (0x20 case)
        question_end = _question_end(answer)
        if answer[12:question_end] != data[12:question_end]:
            raise Violation("answer's question is not the query's")


def udp_answer_fits(exchange: Exchange) -> None:
    from resolver.dns.query import ParseError, parse_query

    if exchange.udp and len(exchange.answer) > 512:
        try:
            query = parse_query(exchange.query)
        except ParseError:
            raise Violation("large answer to an unparsable query") from None
        if len(exchange.answer) > exchange.resolver.udp_limit(query):
            raise Violation("UDP answer larger than the client's limit")


_OPCODE, _RD, _CD, _AA, _TC, _RA, _Z = 0x7800, 0x0100, 0x0010, 0x0400, 0x0200, 0x0080, 0x0040


def answer_header_bits(exchange: Exchange) -> None:
    """RFC 1035 4.1.1 and RFC 4035 3.2.2: OPCODE, RD and CD copied from the query into every
    answer, whatever path made it (block, cache, memo, error); AA never set (blokir is
    authoritative for nothing, and relays upstream answers: the cache here is warmed with
    answers that carry AA and Z); RA set exactly for a QUERY; Z clear; TC only over UDP."""
    asked = int.from_bytes(exchange.query[2:4], "big")
    flags = int.from_bytes(exchange.answer[2:4], "big")
    copied = _OPCODE | _RD | _CD
    if flags & copied != asked & copied:
        raise Violation("answer's OPCODE, RD or CD differ from the query's")
    if flags & (_AA | _Z):
        raise Violation("answer has AA or Z set")
    if bool(flags & _RA) != (not asked & _OPCODE):
        raise Violation("answer's RA does not say recursion for a QUERY only")
    if flags & _TC and not exchange.udp:
        raise Violation("TC set over TCP")


# Checked, in order, on every answer of handle_udp and handle_tcp that dnspython parses: one
# function per invariant, raising Violation; a new invariant on answers is one more entry.
ANSWER_INVARIANTS: list[Callable[[Exchange], None]] = [
    answer_id_and_qr,
    answer_header_bits,
    answer_question_is_the_querys,
    udp_answer_fits,
]


def handle_check(target: HandleTarget, udp: bool) -> Check:

    from resolver.dns.constants import QR
    from resolver.dns.query import Query

    resolver = target.resolver

    def check(data: bytes) -> None:
        client = CLIENTS[len(data) % len(CLIENTS)]
        result = resolver.handle(data, client, udp=udp)[0]
        if result is None:
            return
        if len(data) < 12 or data[2] & 0x80:
            raise Violation("answered a packet shorter than a header or with QR=1")
        if isinstance(result, Query):
            if result.id != int.from_bytes(data[:2], "big") or result.flags & QR:
                raise Violation("forwarded query ID or QR")
            if data[12 : result.question_end] != result.question:
                raise Violation("forwarded query's question")
            return
        if not isinstance(result, bytes):
            raise Violation(f"handle returned {type(result).__name__}")
        check_answer(data, result, udp, resolver)

    return check


def check_answer(query: bytes, answer: bytes, udp: bool, resolver: Any) -> None:
    """Every one of ANSWER_INVARIANTS on `answer` to `query`."""
    import dns.message

    try:
        message = dns.message.from_wire(answer)
    except Exception as exc:
        raise Violation(f"answer dnspython cannot parse: {type(exc).__name__}") from None
    exchange = Exchange(query, answer, message, udp, resolver)
    for invariant in ANSWER_INVARIANTS:
        invariant(exchange)


def udp_batch_check(target: HandleTarget) -> tuple[Check, Cleanup]:
    """The worker's batched UDP path (recvmmsg/sendmmsg, resolver/_udpbatch.c) over real
    loopback sockets: each input goes out as three datagrams from three clients, whole, cut
    short by one octet, and whole again (the answer memo's path), and one wake-up of the worker
    reads them as one batch. Each client may get at most one answer, and it must be an answer to
    its own datagram (the ANSWER_INVARIANTS); nothing may fail to send. Where the extension is
    not built this runs the plain path, which the same checks hold for."""
    import socket

    from resolver.worker import Worker

    resolver = target.resolver
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    clients = []
    for _ in range(3):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        clients.append(client)
    index_path = next(str(p) for p in target.paths if p.is_file())
    worker = Worker(resolver.config, index_path, [server], [])
    worker.resolver.index.close()
    worker.resolver = resolver  # the warmed resolver of the other handle targets
    forwarded: list[bytes] = []
    worker.start_udp_forward = lambda sock, query, data, address, started: forwarded.append(data)
    batcher = worker.udp_batcher
    address = server.getsockname()

    def check(data: bytes) -> None:
        packets = [data, data[:-1], data]
        for client, packet in zip(clients, packets, strict=True):
            client.sendto(packet, address)
        forwarded.clear()
        errors = resolver.stats.send_errors
        if batcher is not None:
            worker._on_udp_batch(server, batcher)
        else:
            worker._on_udp_readable(server)
        if resolver.stats.send_errors != errors:
            raise Violation("an answer failed to send")
        for client, packet in zip(clients, packets, strict=True):
            try:
                answer = client.recv(65535)
            except BlockingIOError:
                continue  # dropped, or forwarded (the forward is not run here)
            try:
                client.recv(65535)
                raise Violation("two answers to one datagram")
            except BlockingIOError:
                pass
            if packet in forwarded:
                raise Violation("a forwarded query was also answered at once")
            check_answer(packet, answer, True, resolver)

    def cleanup() -> None:
        server.close()
        for client in clients:
            client.close()
        target.cleanup()

    return check, cleanup


def _question_end(message: bytes) -> int:
    pos = 12
    while message[pos]:
        pos += message[pos] + 1
    return pos + 5


def lists_check() -> Check:
    from resolver.lists import FORMATS, parse_list
    from resolver.lists.model import ListSpec, ParseReport
    from resolver.lists.normalise import Rejected, normalise
    from resolver.policy import PolicyTable

    def check(data: bytes) -> None:
        if not data:
            return
        fmt = FORMATS[data[0] % len(FORMATS)]
        spec = ListSpec(name="fuzz", path="fuzz.txt", format=fmt)
        report = ParseReport(path="fuzz.txt")
        for batch in parse_list(io.BytesIO(data[1:]), spec, PolicyTable(), report):
            for name in batch.names:
                if not isinstance(name, bytes):
                    raise Violation("name is not bytes")
                try:
                    text = name.decode("ascii")
                    normal = normalise(text)
                except (UnicodeDecodeError, Rejected):
                    raise Violation("yielded a name normalise rejects") from None
                if normal.name != text or normal.wildcard or normal.is_ip:
                    raise Violation("yielded a name that is not normalised")

    return check


def _without_cleanup(make: Callable[[], Check]) -> Callable[[], tuple[Check, Cleanup]]:
    return lambda: (make(), lambda: None)


def _handle(udp: bool) -> Callable[[], tuple[Check, Cleanup]]:
    def make() -> tuple[Check, Cleanup]:
        built = build_resolver()
        return handle_check(built, udp=udp), built.cleanup

    return make


@dataclass(frozen=True)
class Target:
    name: str
    make: Callable[[], tuple[Check, Cleanup]]
    quick_inputs: int  # inputs in a --quick run (CI: about 20k over all targets)
    text: bool = False  # list text (list seeds and text mutations) rather than DNS packets


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("parse_query", _without_cleanup(parse_query_check), 8000),
        Target("handle_udp", _handle(udp=True), 5000),
        Target("handle_tcp", _handle(udp=False), 3000),
        Target("udp_batch", lambda: udp_batch_check(build_resolver()), 1500),
        Target("answer_options", _without_cleanup(answer_options_check), 3000),
        Target("lists", _without_cleanup(lists_check), 1500, text=True),
        Target("doh_request", _without_cleanup(doh_request_check), 2000),
        Target("padding", _without_cleanup(padding_check), 1500),
        Target("dnstap", _without_cleanup(dnstap_check), 2000),
    )
}


def make_check(target: str) -> tuple[Check, Cleanup]:
    if target not in TARGETS:
        raise SystemExit(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[target].make()
