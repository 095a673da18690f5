"""The query log's C encoder (resolver/querylog/_dnstap.c) against its pure-Python twin
(resolver/querylog/encoder.py PyEncoder), which tests/unit/test_querylog.py holds to the
protobuf library: the same bytes for the same records, including the edges the library test
does not reach (odd prefix lengths, scoped and malformed addresses, unknown policy ids, long
messages), and the same queue bound."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.querylog.encoder import _NATIVE, MODE, EncoderLike, PyEncoder, pieces, policy_fields

if _NATIVE is None:
    if os.environ.get("CI") == "true" and os.environ.get("BLOKIR_COMPILE", "1") != "0":
        pytest.fail(f"the C encoder did not build: {MODE.why}", pytrace=False)
    pytest.skip(f"resolver.querylog._dnstap not built: {MODE.why}", allow_module_level=True)

TABLE = [("regulator", "gambling", "nxdomain"), ("trade", "fintech", "refused")]
CLIENTS = [
    "192.0.2.77",
    "198.51.100.255",
    "2001:db8:abcd:ef01::99",
    "::ffff:192.0.2.1",
    "fe80::1%eth0",  # scoped: no address written
    "not-an-address",
    "",
    "1.2.3",
    "192.0.2.1\x00junk",  # the fuzz target found both encoders wrong here (docs/security.md)
    "\u00e9::1",
]


def pair(bits: tuple[int, int, int, int], limit: int = 1000) -> tuple[EncoderLike, EncoderLike]:
    made = []
    for kind in (PyEncoder, _NATIVE):
        encoder: EncoderLike = kind(*pieces(b"edge-host", b"blokir 9"), *bits, limit)
        encoder.set_policies(*policy_fields(TABLE))
        made.append(encoder)
    return made[0], made[1]


record = st.tuples(
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.sampled_from(CLIENTS),
    st.booleans(),
    st.binary(max_size=300),
    st.one_of(st.none(), st.binary(max_size=70_000)),
    st.integers(min_value=0, max_value=5),  # ids 3-5 are not in the table
    st.integers(min_value=0, max_value=1 << 40),
    st.binary(max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(
    bits=st.tuples(
        st.integers(0, 40), st.integers(0, 140), st.integers(0, 40), st.integers(0, 140)
    ),
    records=st.lists(record, max_size=8),
)
def test_c_and_python_write_the_same_bytes(
    bits: tuple[int, int, int, int],
    records: list[tuple],  # type: ignore[type-arg]
) -> None:
    python, c = pair(bits)
    for number, fields in enumerate(records):
        assert python.add(*fields) == c.add(*fields) == number + 1
    assert python.count == c.count == len(records)
    assert python.take() == c.take()
    assert python.count == c.count == 0


def test_the_queue_bound_drops_and_counts_new_records() -> None:
    python, c = pair((24, 48, 32, 128), limit=3)
    for encoder in (python, c):
        record = (1.7e9, "192.0.2.1", True, b"q" * 12, b"a" * 12, 1, 1, b"x")
        counts = [encoder.add(*record) for _ in range(5)]
        assert counts == [1, 2, 3, 0, 0]
        assert (encoder.count, encoder.dropped) == (3, 2)
        assert encoder.clear() == 3  # the writer died: what waited is given up
        assert (encoder.count, encoder.dropped) == (0, 5)
        assert encoder.add(1.7e9, "192.0.2.1", True, b"q", None, 0, 0, b"") == 1


def test_bad_arguments_raise_and_leave_the_buffer_alone() -> None:
    _, c = pair((24, 48, 32, 128))
    c.add(1.7e9, "192.0.2.1", True, b"q" * 12, None, 0, 0, b"")
    before = c.count
    for bad in (
        ("x", "192.0.2.1", True, b"q", None, 0, 0, b""),
        (1.0, 7, True, b"q", None, 0, 0, b""),
        (1.0, "192.0.2.1", True, "q", None, 0, 0, b""),
        (1.0, "192.0.2.1", True, b"q", 5, 0, 0, b""),
        (-1.0, "192.0.2.1", True, b"q", None, 0, 0, b""),
        (1.0, "192.0.2.1", True, b"q", None, 0, -1, b""),
    ):
        with pytest.raises((TypeError, ValueError)):
            c.add(*bad)
    with pytest.raises(TypeError):
        c.add(1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        c.set_policies([b"x", "y"], b"")  # type: ignore[list-item]
    assert c.count == before


def test_taken_batches_are_handed_over_whole_and_never_written_again() -> None:
    """take() hands over the bytes the C encoder wrote into (no copy): a taken batch must not
    change when later records are added, and batches across growth (a record bigger than the
    last batch's buffer) and after clear() stay the Python encoder's bytes."""
    python, c = pair((24, 48, 32, 128), limit=10_000)
    taken: list[tuple[bytes, bytes]] = []
    sizes = [(20, 60, 300), (20, 60, 1), (300, 65_000, 3), (12, 40, 500), (12, None, 0)]
    for query_len, answer_len, records in sizes:
        for n in range(records):
            answer = None if answer_len is None else bytes([n % 251]) * answer_len
            fields = (1.7e9 + n, "192.0.2.1", True, b"q" * query_len, answer, 1, 1, b"x")
            assert python.add(*fields) == c.add(*fields)
        expected, got = python.take(), c.take()
        snapshot = bytes(got)
        taken.append((expected, got))
        assert got == expected == snapshot
        c.add(1.7e9, "198.51.100.1", False, b"later" * 50, b"z" * 900, 2, 1, b"y")
        c.clear()
        python.add(1.7e9, "198.51.100.1", False, b"later" * 50, b"z" * 900, 2, 1, b"y")
        python.clear()
        assert got == snapshot  # the encoder wrote into a new buffer, not into this one
    assert all(expected == got for expected, got in taken)
    assert c.take() == python.take() == b""
