"""The shared normaliser and the bulk fast path (`chunks.split_clean`) must agree.

Example tables pin the documented behaviour; Hypothesis properties check the contract on any
text: only `Rejected` is ever raised, the result is idempotent and canonical, and a line the fast
path calls clean is exactly what the normaliser makes of it.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from resolver.lists.chunks import read_chunks, split_clean
from resolver.lists.normalise import Rejected, normalise

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ACCEPTED = [
    ("example.com", "example.com", False),
    ("Example.COM", "example.com", False),
    ("example.com.", "example.com", False),
    ("  example.com\r\n", "example.com", False),
    ("\ufeffexample.com", "example.com", False),
    ("*.example.com", "example.com", True),
    ("*.*.example.com", "example.com", True),
    (".example.com", "example.com", True),
    ("http://Example.com:8080/a?b", "example.com", False),
    ("https://user:pw@example.com/x#frag", "example.com", False),
    ("example.com:443", "example.com", False),
    ("example.com/path/page.html", "example.com", False),
    ("ad_server.example.com", "ad_server.example.com", False),
    ("bücher.example", "xn--bcher-kva.example", False),
    ("BÜCHER.example", "xn--bcher-kva.example", False),
    ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com", False),  # full width
    ("例え.テスト", "xn--r8jz45g.xn--zckzah", False),
    ("xn--bcher-kva.example", "xn--bcher-kva.example", False),
    ("a" * 63 + ".example", "a" * 63 + ".example", False),
    (".".join(["a" * 63] * 3) + "." + "b" * 61, ".".join(["a" * 63] * 3) + "." + "b" * 61, False),
]

REJECTED = [
    ("", "empty"),
    ("   ", "empty"),
    ("localhost", "no_dot"),
    ("a" * 64 + ".example", "label_too_long"),
    (".".join(["a" * 63] * 4) + ".example", "name_too_long"),
    ("bad!name.example", "bad_character"),
    ("spa ce.example", "bad_character"),
    ("example.co_m", "bad_character"),
    ("-lead.example", "hyphen"),
    ("trail-.example", "hyphen"),
    ("double..dot.example", "empty_label"),
    ("10.20.30", "numeric_tld"),
    ("emoji😀.example", "idna"),
    ("ad_server.例え.jp", "idna"),  # IDNA 2008 forbids `_` once the name goes through idna
]

IPS = [
    ("203.0.113.7", "203.0.113.7", False),
    ("2001:DB8::1", "2001:db8::1", False),
    ("[2001:db8::2]:443", "2001:db8::2", False),
    ("http://198.51.100.9/path", "198.51.100.9", False),
    ("*.200.10.104.174", "200.10.104.174", True),
]


@pytest.mark.parametrize(("token", "name", "wildcard"), ACCEPTED)
def test_accepted(token: str, name: str, wildcard: bool) -> None:
    result = normalise(token)
    assert (result.name, result.wildcard, result.is_ip) == (name, wildcard, False)


@pytest.mark.parametrize(("token", "reason"), REJECTED)
def test_rejected(token: str, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        normalise(token)
    assert info.value.reason == reason


@pytest.mark.parametrize(("token", "ip", "wildcard"), IPS)
def test_ip_literals(token: str, ip: str, wildcard: bool) -> None:
    result = normalise(token)
    assert (result.name, result.wildcard, result.is_ip) == (ip, wildcard, True)


def test_name_length_boundary() -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters: the maximum
    assert len(name) == 253
    assert normalise(name).name == name
    assert normalise(name + ".").name == name  # the trailing dot does not count
    with pytest.raises(Rejected):
        normalise(name + "b")


# --- properties ------------------------------------------------------------------------------

# Pieces real lists are made of, so random tokens often come close to valid names.
_PIECES = st.sampled_from(
    [
        "a", "Z", "0", "9", "-", "_", ".", "..", "*.", "*", "xn--", "http://", ":", ":8080",
        "/", "?", "#", "@", "[", "]", " ", "\t", "%", "ü", "ß", "例", "\uff21", "\u3002", "\uff0e",
        "\u200d", "\ufeff", "\x00", "example", "com", "0.0.0.0", "::1", "10.20.30", "a" * 63,
    ]
)  # fmt: skip
TOKENS = st.one_of(st.text(max_size=60), st.lists(_PIECES, max_size=25).map("".join))
LINES = st.one_of(
    TOKENS.map(lambda t: t.replace("\n", "").encode("utf-8", "surrogatepass")),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)


def _passes_fast_path(name: str) -> bool:
    clean, dirty = split_clean(name.encode("ascii") + b"\n")
    return clean == [name.encode("ascii")] and not dirty


@PROPERTY
@given(TOKENS)
@example("a.b\u3002")
@example("xn--99999999999999.ü")
@example("\ud800.example")
def test_normalise_never_raises_anything_but_rejected(token: str) -> None:
    try:
        normalise(token)
    except Rejected as rejected:
        assert rejected.reason


@PROPERTY
@given(TOKENS)
@example("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com")  # full-width EXAMPLE.com
@example("*.Bücher.example.")
def test_normalise_is_idempotent_and_canonical(token: str) -> None:
    try:
        first = normalise(token)
    except Rejected:
        return
    if first.is_ip:
        return
    second = normalise(first.name)
    assert second.name == first.name
    assert not second.wildcard and not second.is_ip
    assert _passes_fast_path(first.name)


@PROPERTY
@given(st.lists(LINES, max_size=12))
def test_fast_path_agrees_with_normaliser(lines: list[bytes]) -> None:
    chunk = b"\n".join(lines) + b"\n"
    clean, dirty = split_clean(chunk)
    dirty_at = {offset for offset, _ in dirty}
    assert all(chunk.split(b"\n")[offset] == raw for offset, raw in dirty)
    expected_clean = []
    for offset, line in enumerate(lines):
        if offset in dirty_at:
            assert line, "a blank line was flagged"
            continue
        if not line:
            continue  # blank lines are dropped, and only they are
        expected_clean.append(line.lower())
        result = normalise(line.decode("ascii"))
        assert (result.name.encode(), result.wildcard, result.is_ip) == (line.lower(), False, False)
    assert clean == expected_clean  # in order, and nothing dropped silently


@PROPERTY
@given(st.binary(max_size=300), st.integers(min_value=4, max_value=64))
def test_read_chunks_keeps_every_line(data: bytes, size: int) -> None:
    chunks = list(read_chunks(io.BytesIO(data), size))
    joined = b"".join(chunks_data for _, chunks_data in chunks)
    # CRLF and a lone CR both end a line.
    expected = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert joined == expected
    line_no = 1
    for first, chunk in chunks:
        assert first == line_no
        line_no += chunk.count(b"\n")
