"""The query log's parts: Frame Streams framing, the dnstap descriptor against the public schema,
client address truncation, and a worker's QueryLog through the real writer process to a file
(decoded here with the protobuf classes; tests/integration/test_querylog.py has dnstap-read)."""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path

import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.config import QueryLogConfig
from resolver.policy import Action, Policy
from resolver.querylog import framestream as fs
from resolver.querylog.client import QueryLog
from resolver.querylog.encoder import (
    _NATIVE,
    EncoderLike,
    PyEncoder,
    cut_address,
    pieces,
    policy_fields,
)
from resolver.querylog.schema import ENUMS, FIELDS, message_classes
from resolver.querylog.sinks import FileSink
from tests.support.framestream import Receiver

PROTO = Path(__file__).resolve().parents[2] / "resolver" / "querylog" / "dnstap.proto"
# Both encoders: the C extension where the install built it (scripts/test insists it did) and
# its pure-Python twin; every encoding test runs on each.
ENCODERS = [PyEncoder] + ([_NATIVE] if _NATIVE is not None else [])
ENCODER_IDS = ["python"] + (["c"] if _NATIVE is not None else [])


def make_encoder(kind: type, table: list[tuple[str, str, str]], limit: int = 10_000) -> EncoderLike:
    encoder: EncoderLike = kind(*pieces(b"resolver-1", b"blokir test"), 24, 48, 32, 128, limit)
    encoder.set_policies(*policy_fields(table))
    return encoder


def test_frames_round_trip_fed_in_any_pieces() -> None:
    stream = (
        fs.control_frame(fs.START, [b"protobuf:dnstap.Dnstap"])
        + fs.data_frame(b"one")
        + fs.data_frame(b"x" * 1000)
        + fs.control_frame(fs.STOP)
    )
    expected = [
        fs.Control(fs.START, (b"protobuf:dnstap.Dnstap",)),
        b"one",
        b"x" * 1000,
        fs.Control(fs.STOP, ()),
    ]
    for step in (1, 3, 7, len(stream)):
        reader = fs.FrameReader()
        got: list[bytes | fs.Control] = []
        for start in range(0, len(stream), step):
            got += reader.feed(stream[start : start + step])
        assert got == expected


def test_control_frame_bytes() -> None:
    # escape, length 4 + 4 + 4 + 3, READY, content type field (1), length 3, "abc"
    assert fs.control_frame(fs.READY, [b"abc"]) == bytes.fromhex(
        "000000000000000f000000040000000100000003616263"
    )
    with pytest.raises(fs.FrameError):
        fs.FrameReader().feed(bytes.fromhex("00000000 00100000"))
    with pytest.raises(ValueError):
        fs.data_frame(b"")  # a zero length is the control frame escape


def test_descriptor_agrees_with_the_public_schema() -> None:
    """Every field declared in schema.py has the label, type, name and number dnstap.proto
    gives it inside the same message; every enum value too."""
    text = re.sub(r"//[^\n]*", "", PROTO.read_text())
    blocks: dict[str, str] = {}
    for match in re.finditer(r"(message|enum)\s+(\w+)\s*\{", text):
        depth, pos = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            pos += 1
        blocks.setdefault(match.group(2), text[match.end() : pos])
    for message, fields in FIELDS.items():
        for label, kind, name, number in fields:
            pattern = rf"{label}\s+{kind.rpartition('.')[2]}\s+{name}\s*=\s*{number}\s*;"
            assert re.search(pattern, blocks[message]), (message, name)
    for enum, values in ENUMS.items():
        for name, number in values.items():
            owner, _, short = enum.rpartition(".")
            block = blocks[owner] if owner else blocks[short]  # nested: inside its message
            assert re.search(rf"\b{name}\s*=\s*{number}\s*;", block), (enum, name)


@settings(max_examples=200)
@given(st.ip_addresses(), st.integers(0, 32), st.integers(0, 128))
def test_cut_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, b4: int, b6: int
) -> None:
    bits = b4 if address.version == 4 else b6
    got = cut_address(str(address), b4, b6)
    if bits == 0:
        assert got == ""
    else:
        expected = ipaddress.ip_network((address, bits), strict=False).network_address
        assert ipaddress.ip_address(got) == expected


def read_messages(path: Path) -> list[object]:
    dnstap, _, _ = message_classes()
    frames = fs.FrameReader().feed(path.read_bytes())
    assert frames[0] == fs.Control(fs.START, (b"protobuf:dnstap.Dnstap",))
    assert frames[-1] == fs.Control(fs.STOP, ())
    return [dnstap.FromString(frame) for frame in frames[1:-1]]


def test_querylog_to_a_file(tmp_path: Path) -> None:
    sink = tmp_path / "log.fstrm"
    config = QueryLogConfig(dnstap=f"file:{sink}", sample=3, identity="resolver-1")
    qlog = QueryLog(config)
    qlog.start()
    query = dns.message.make_query("judi.example", "A").to_wire()
    answer = dns.message.make_response(dns.message.from_wire(query)).to_wire()
    policies = [Policy("regulator", "gambling", Action.NXDOMAIN)]
    try:
        qlog.set_policies(policies)
        qlog.blocked("192.0.2.77", True, query, answer, 1, b"judi.example")
        for n in (2, 5):  # sampled allowed queries (the countdown is the query path's)
            qlog.allowed(f"198.51.100.{n}", False, query, answer)
        qlog.blocked("2001:db8::1", True, query, None, 1, b"192.0.2.5", match=3)
    finally:
        qlog.close()
    messages = read_messages(sink)
    assert len(messages) == 2 * 4  # CLIENT_QUERY and CLIENT_RESPONSE per logged query
    assert {m.identity for m in messages} == {b"resolver-1"}  # type: ignore[attr-defined]
    responses = [m.message for m in messages if m.message.type == 6]  # type: ignore[attr-defined]
    first, second, third, last = responses
    assert first.policy.rule == b"list=regulator category=gambling action=nxdomain"
    assert (first.policy.action, first.policy.match, first.policy.value) == (1, 1, b"judi.example")
    assert ipaddress.ip_address(first.query_address) == ipaddress.ip_address("192.0.2.77")
    # Allowed queries: client cut to /24, no policy, over TCP.
    assert [str(ipaddress.ip_address(r.query_address)) for r in (second, third)] == [
        "198.51.100.0",
        "198.51.100.0",
    ]
    assert not second.HasField("policy") and second.socket_protocol == 2
    # A blocked query keeps its whole address by default; no answer (drop) is no message.
    assert str(ipaddress.ip_address(last.query_address)) == "2001:db8::1"
    assert last.policy.match == 3 and not last.HasField("response_message")
    assert qlog.dropped == 0 and qlog.logged == 4


def test_a_stuck_sink_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    """Nobody listens on the socket: the writer retries with backoff and stops reading, the
    pipe fills, and the worker drops (and counts) instead of waiting, also when it closes."""
    config = QueryLogConfig(dnstap=f"unix:{tmp_path / 'nobody.sock'}", queue=1000)
    qlog = QueryLog(config)
    qlog.start()
    query = b"q" * 40
    answer = b"a" * 200
    total = 30_000
    started = time.perf_counter()
    try:
        for _ in range(total):
            qlog.blocked("192.0.2.1", True, query, answer, 1, b"x.example")
        elapsed = time.perf_counter() - started
    finally:
        closing = time.perf_counter()
        qlog.close(timeout=1.0)
        closed_in = time.perf_counter() - closing
    assert qlog.dropped > 0
    # The pipe is full and the writer will never drain it: close gives up at its deadline
    # (and counts what still waited) instead of blocking on a write.
    assert closed_in < 5, f"close took {closed_in:.1f} s"
    assert qlog.logged + qlog.dropped == total
    assert elapsed < 10, "the query path waited for the sink"


def test_the_writer_reconnects_once_the_receiver_is_up(tmp_path: Path) -> None:
    """Records logged while nobody listens wait in the writer; after its backoff it connects,
    does the handshake and delivers them all, then ends the stream with STOP/FINISH."""
    path = tmp_path / "late.sock"
    qlog = QueryLog(QueryLogConfig(dnstap=f"unix:{path}"))
    qlog.start()
    receiver = None
    try:
        for n in range(5):
            qlog.blocked("192.0.2.1", True, b"q" * 20, b"a" * 20, 1, f"n{n}.example".encode())
        qlog.flush()
        time.sleep(0.8)  # the writer has failed to connect at least once by now
        receiver = Receiver(path)
        qlog.close(timeout=20)
    finally:
        qlog.close()
        if receiver is not None:
            receiver.close()
    assert receiver is not None
    assert receiver.controls == [fs.READY, fs.START, fs.STOP]
    dnstap, _, _ = message_classes()
    values = [dnstap.FromString(f).message.policy.value for f in receiver.frames]
    assert [v for v in values if v] == [f"n{n}.example".encode() for n in range(5)]


def test_file_sink_rotates_into_complete_streams(tmp_path: Path) -> None:
    path = tmp_path / "log.fstrm"
    path.write_bytes(b"left over from an earlier run")
    sink = FileSink(str(path), b"protobuf:dnstap.Dnstap", max_bytes=4096, keep=2)
    frame = fs.data_frame(b"m" * 1000)
    for _ in range(20):
        sink.write(frame)
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["log.fstrm", "log.fstrm.1", "log.fstrm.2"]  # older ones removed
    for name in files:
        frames = fs.FrameReader().feed((tmp_path / name).read_bytes())
        assert frames[0] == fs.Control(fs.START, (b"protobuf:dnstap.Dnstap",))
        assert frames[-1] == fs.Control(fs.STOP, ())
        assert all(f == b"m" * 1000 for f in frames[1:-1])


def library_encoding(
    record: tuple[object, ...], cut: str, policy: tuple[bytes, int] | None
) -> bytes:
    """The two framed messages as the protobuf library writes them (the reference the hand
    encoder must match byte for byte)."""
    dnstap, _, _ = message_classes()
    when, _client, udp, query, answer, _pid, match, value = record
    assert isinstance(when, float)
    envelope = dnstap(type=1, identity=b"resolver-1", version=b"blokir test")
    message = envelope.message
    message.type = ENUMS["Message.Type"]["CLIENT_QUERY"]
    message.socket_protocol = 1 if udp else 2
    if cut:
        packed = ipaddress.ip_address(cut).packed
        message.socket_family = 2 if len(packed) == 16 else 1
        message.query_address = packed
    seconds = int(when)
    message.query_time_sec = seconds
    message.query_time_nsec = int((when - seconds) * 1e9)
    message.query_message = query
    first = envelope.SerializeToString()
    message.ClearField("query_message")
    message.type = ENUMS["Message.Type"]["CLIENT_RESPONSE"]
    message.response_time_sec = seconds
    message.response_time_nsec = int((when - seconds) * 1e9)
    if answer is not None:
        message.response_message = answer
    if policy is not None:
        rule, action = policy
        message.policy.type = "blokir"
        message.policy.rule = rule
        message.policy.action = action
        message.policy.match = match
        message.policy.value = value
    return fs.data_frame(first) + fs.data_frame(envelope.SerializeToString())


@pytest.mark.parametrize("kind", ENCODERS, ids=ENCODER_IDS)
@settings(max_examples=150, deadline=None)
@given(
    when=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    v6=st.booleans(),
    host=st.integers(min_value=0, max_value=(1 << 32) - 1),
    udp=st.booleans(),
    query=st.binary(min_size=12, max_size=300),
    answer=st.one_of(st.none(), st.binary(min_size=12, max_size=20_000)),
    blocked=st.booleans(),
    match=st.sampled_from([1, 3]),
    value=st.binary(max_size=60),
)
def test_hand_encoder_writes_what_the_protobuf_library_writes(
    kind: type,
    when: float,
    v6: bool,
    host: int,
    udp: bool,
    query: bytes,
    answer: bytes | None,
    blocked: bool,
    match: int,
    value: bytes,
) -> None:
    address = ipaddress.ip_address(host if not v6 else (0x20010DB8 << 96) | host)
    encoder = make_encoder(kind, [("regulator", "gambling", "nxdomain")])
    record = (when, str(address), udp, query, answer, 1 if blocked else 0, match, value)
    cut = str(address) if blocked else cut_address(str(address), 24, 48)
    policy = (b"list=regulator category=gambling action=nxdomain", 1) if blocked else None
    assert encoder.add(*record) == 1
    assert encoder.take() == library_encoding(record, cut, policy)
    assert encoder.count == 0 and encoder.take() == b""


def test_the_writer_cuts_addresses_before_the_sink(tmp_path: Path) -> None:
    """The worker hands whole addresses over; what reaches the file has none of an allowed
    query's host bits, nor of a blocked one's with blocked_full_address = false."""
    sink = tmp_path / "log.fstrm"
    config = QueryLogConfig(
        dnstap=f"file:{sink}", client_prefix_v4=16, client_prefix_v6=32, blocked_full_address=False
    )
    qlog = QueryLog(config)
    qlog.start()
    try:
        qlog.set_policies([Policy("regulator", "gambling", Action.NXDOMAIN)])
        qlog.allowed("198.51.177.77", True, b"q" * 20, b"a" * 20)
        qlog.blocked("2001:db8:abcd:ef01::99", True, b"q" * 20, b"a" * 20, 1, b"x.example")
    finally:
        qlog.close()
    raw = sink.read_bytes()
    assert ipaddress.ip_address("198.51.177.77").packed not in raw
    assert ipaddress.ip_address("2001:db8:abcd:ef01::99").packed not in raw
    addresses = [str(ipaddress.ip_address(m.message.query_address)) for m in read_messages(sink)]  # type: ignore[attr-defined]
    assert addresses == ["198.51.0.0"] * 2 + ["2001:db8::"] * 2


def test_every_record_under_the_limit_arrives_in_order(tmp_path: Path) -> None:
    """Many batches (several pipe writes, ticks between some): nothing dropped, nothing lost,
    the order kept, blocked and sampled allowed records interleaved as logged."""
    sink = tmp_path / "log.fstrm"
    qlog = QueryLog(QueryLogConfig(dnstap=f"file:{sink}", queue=100_000))
    qlog.start()
    total = 5_000
    try:
        qlog.set_policies([Policy("regulator", "gambling", Action.NXDOMAIN)])
        for n in range(total):
            name = f"n{n}.example".encode()
            if n % 3:
                qlog.blocked("192.0.2.1", True, name, name, 1, name)
            else:
                qlog.allowed("192.0.2.1", True, name, name)
            if n % 1000 == 999:
                qlog.flush()  # the worker's tick
    finally:
        qlog.close(timeout=20)
    messages = read_messages(sink)
    assert qlog.dropped == 0 and qlog.logged == total
    queries = [m.message.query_message for m in messages if m.message.type == 5]  # type: ignore[attr-defined]
    assert queries == [f"n{n}.example".encode() for n in range(total)]
    policies = [m.message.HasField("policy") for m in messages if m.message.type == 6]  # type: ignore[attr-defined]
    assert policies == [bool(n % 3) for n in range(total)]


@pytest.mark.parametrize("kind", ENCODERS, ids=ENCODER_IDS)
@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.floats(min_value=1.7e9, max_value=1.7e9 + 3, allow_nan=False),  # seconds repeat
            st.sampled_from(["192.0.2.1", "192.0.2.77", "2001:db8::5", ""]),
            st.booleans(),
            st.binary(min_size=12, max_size=80),
            st.one_of(st.none(), st.binary(min_size=12, max_size=200)),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_a_batch_encodes_as_its_records_one_by_one(
    kind: type,
    records: list[tuple[float, str, bool, bytes, bytes | None, bool]],
) -> None:
    """Many records before one take (per-second and per-client fields reused across records, a
    policy table replaced in the middle) write what the library writes per record."""
    table = [("regulator", "gambling", "nxdomain")]
    encoder = make_encoder(kind, table)
    expected = b""
    for number, (when, client, udp, query, answer, blocked) in enumerate(records):
        if number == len(records) // 2:  # a reload: the same ids mean another policy now
            table = [("trade", "fintech", "nodata")]
            encoder.set_policies(*policy_fields(table))
        record = (when, client, udp, query, answer, 1 if blocked else 0, 1, b"\x01x\x00")
        assert encoder.add(*record) == number + 1
        name, category, action = table[0]
        rule = f"list={name} category={category} action={action}".encode()
        code = ENUMS["Policy.Action"]["NXDOMAIN" if action == "nxdomain" else "NODATA"]
        cut = client if blocked or not client else cut_address(client, 24, 48)
        expected += library_encoding(record, cut, (rule, code) if blocked else None)
    assert encoder.take() == expected


def test_records_logged_before_a_reload_keep_the_policy_they_were_logged_under(
    tmp_path: Path,
) -> None:
    """Policy id 1 means one list before a reload and another after it: a record still waiting
    in the worker when the new table arrives is written with the table it was logged under."""
    sink = tmp_path / "log.fstrm"
    qlog = QueryLog(QueryLogConfig(dnstap=f"file:{sink}"))
    qlog.start()
    try:
        qlog.set_policies([Policy("regulator", "gambling", Action.NXDOMAIN)])
        qlog.blocked("192.0.2.1", True, b"q" * 20, b"a" * 20, 1, b"\x04judi\x00")
        qlog.set_policies([Policy("trade", "fintech", Action.NODATA)])  # before any flush
        qlog.blocked("192.0.2.1", True, b"q" * 20, b"a" * 20, 1, b"\x04loan\x00")
    finally:
        qlog.close()
    rules = [
        m.message.policy.rule  # type: ignore[attr-defined]
        for m in read_messages(sink)
        if m.message.HasField("policy")  # type: ignore[attr-defined]
    ]
    assert rules == [
        b"list=regulator category=gambling action=nxdomain",
        b"list=trade category=fintech action=nodata",
    ]
