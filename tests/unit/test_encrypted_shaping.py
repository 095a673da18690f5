"""RFC 8484 request parsing (resolver/transports/doh.py), RFC 8467 padding and the DoH
Cache-Control lifetime (resolver/transports/shaping.py)."""

from __future__ import annotations

import base64

import dns.edns
import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolver.transports.doh import MAX_MESSAGE, HttpError, decode_base64url, dns_query
from resolver.transports.shaping import BLOCK_LENGTH, OPTION_PADDING, max_age, padded

PATH = b"/dns-query"
QUERY = dns.message.make_query("example.com", "A").to_wire()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_get_and_post_carry_the_query() -> None:
    assert dns_query(b"GET", PATH + b"?ct&dns=" + _b64(QUERY), None, b"", PATH) == QUERY
    post = dns_query(b"POST", PATH, b"application/dns-message", QUERY, PATH)
    assert post == QUERY


@pytest.mark.parametrize(
    ("method", "target", "ctype", "body", "status"),
    [
        (b"GET", PATH + b"?dns=%%%", None, b"", 400),  # not base64url
        (b"GET", PATH + b"?dns=AAAAA", None, b"", 400),  # a length no octet ends at
        (b"GET", PATH + b"?dns=" + base64.b64encode(b"\xfb" * 12), None, b"", 400),  # + and /
        (b"GET", PATH + b"?name=x", None, b"", 400),  # no dns parameter
        (b"GET", PATH + b"?dns=" + _b64(b"short"), None, b"", 400),  # shorter than a header
        (b"GET", b"/other?dns=" + _b64(QUERY), None, b"", 404),
        (b"PUT", PATH, b"application/dns-message", QUERY, 405),
        (b"POST", PATH, b"text/plain", QUERY, 415),
        (b"POST", PATH, b"application/dns-message", bytes(MAX_MESSAGE + 1), 413),
        (b"GET", PATH + b"?dns=" + b"A" * 90_000, None, b"", 414),
    ],
)
def test_bad_requests_get_their_status(
    method: bytes, target: bytes, ctype: bytes | None, body: bytes, status: int
) -> None:
    with pytest.raises(HttpError) as caught:
        dns_query(method, target, ctype, body, PATH)
    assert caught.value.status == status


def test_base64url_padding_is_optional() -> None:
    data = b"\x00\x01\x02\x03\xfe"
    assert decode_base64url(_b64(data)) == data
    assert decode_base64url(base64.urlsafe_b64encode(data)) == data


def _response(use_edns: bool, answers: int = 1) -> dns.message.Message:
    query = dns.message.make_query("example.com", "A", use_edns=0 if use_edns else False)
    response = dns.message.make_response(query)
    for i in range(answers):
        response.answer.append(
            dns.rrset.from_text("example.com.", 300 - i, "IN", "A", f"192.0.2.{i + 1}")
        )
    return response


@pytest.mark.parametrize("answers", [0, 1, 40, 120])
def test_edns_answers_are_padded_to_the_block_length(answers: int) -> None:
    wire = _response(True, answers).to_wire(max_size=65535)
    out = padded(wire)
    assert len(out) % BLOCK_LENGTH == 0 and len(out) > len(wire)
    message = dns.message.from_wire(out)
    assert [o.otype for o in message.options] == [OPTION_PADDING]
    assert message.answer == dns.message.from_wire(wire).answer
    assert padded(out) == out  # padded once


def test_answers_without_edns_are_not_padded() -> None:
    wire = _response(False).to_wire()
    assert padded(wire) == wire


def test_max_age_is_the_smallest_ttl() -> None:
    assert max_age(_response(True, 3).to_wire()) == 298
    query = dns.message.make_query("nx.example", "A")
    negative = dns.message.make_response(query)
    negative.set_rcode(dns.rcode.NXDOMAIN)
    negative.authority.append(
        dns.rrset.from_text("example.", 900, "IN", "SOA", "ns. host. 1 2 3 4 120")
    )
    assert max_age(negative.to_wire()) == 120  # SOA MINIMUM (RFC 2308)
    servfail = dns.message.make_response(query)
    servfail.set_rcode(dns.rcode.SERVFAIL)
    assert max_age(servfail.to_wire()) == 0
