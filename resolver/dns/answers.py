"""Block answers: what a blocked name gets, prebuilt once per (policy, query shape).

A template is the response minus its header and question: answer, authority and additional
records with names compressed to the question (question_record). Per query the
server only packs a header and concatenates: no message objects on the hot path.

Answers per action (README "Block answers"):
- landing: A -> the landing IPv4 address(es), AAAA -> the landing IPv6 address(es); any other
  type, or no address configured for that family -> NODATA with a synthesized SOA, so HTTPS,
  SVCB, MX or TXT data of a blocked name never leaks from upstream.
- nxdomain / nodata: that RCODE with the SOA in the authority section (RFC 2308 section 3, so
  resolvers can cache the negative answer for the block TTL).
- refused: RCODE 5, nothing else.
- drop: no answer at all.
With EDNS in the query, the answer carries an OPT record with the list's RFC 8914 Extended DNS
Error (15 Blocked, 16 Censored, 17 Filtered) whose EXTRA-TEXT names the list and category, or,
when the operator configured contact/justification/organisation, the JSON object of
draft-ietf-dnsop-structured-dns-error.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resolver.dns.constants import (
    CD,
    CLASS_IN,
    NOERROR,
    NXDOMAIN,
    OPCODE_MASK,
    RD,
    REFUSED,
    TYPE_A,
    TYPE_AAAA,
    TYPE_SOA,
)
from resolver.dns.names import encode_name
from resolver.dns.query import Query
from resolver.dns.response import ede_option, opt_record, question_record, response_flags
from resolver.policy import Action, Policy

if TYPE_CHECKING:
    from resolver.config import Config

# SOA timers (RFC 1912 2.2 ranges); only MINIMUM matters to resolvers caching the block.
_SOA_REFRESH, _SOA_RETRY, _SOA_EXPIRE = 3600, 600, 86400
_SOA_SERIAL = 1
# EXTRA-TEXT is for people and logs; a bound keeps answers well under 512 octets.
MAX_EXTRA_TEXT = 300


@dataclass(frozen=True, slots=True)
class BlockSettings:
    ttl: int = 60
    landing_ipv4: str | None = None
    landing_ipv6: str | None = None
    soa_mname: str = "blokir.invalid."
    soa_rname: str = "hostmaster.blokir.invalid."
    contact: str | None = None
    justification: str | None = None
    organisation: str | None = None
    udp_payload_size: int = 1232

    @classmethod
    def from_config(cls, config: Config) -> BlockSettings:
        """`[blocking]` and the advertised UDP size: the same answers in every mode."""
        blocking = config.blocking
        return cls(
            ttl=blocking.ttl,
            landing_ipv4=blocking.landing_ipv4,
            landing_ipv6=blocking.landing_ipv6,
            soa_mname=blocking.soa_mname,
            soa_rname=blocking.soa_rname,
            contact=blocking.contact,
            justification=blocking.justification,
            organisation=blocking.organisation,
            udp_payload_size=config.server.udp_payload_size,
        )


# (rcode, ancount, nscount, arcount, records after the question), or None for "drop"
Template = tuple[int, int, int, int, bytes] | None
# (header after the ID, records after the question), or None for "drop"
Answer = tuple[bytes, bytes] | None
_HEADER_AFTER_ID = struct.Struct("!HHHHH")  # flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT
_ID = struct.Struct("!H")
# The query flags a response copies (response_flags): part of the answer cache's key.
_COPIED_FLAGS = OPCODE_MASK | RD | CD


class BlockResponder:
    """Builds and caches block-answer templates for one index's policy table."""

    def __init__(self, policies: list[Policy], settings: BlockSettings) -> None:
        self._policies = policies
        self._settings = settings
        self._templates: dict[tuple[int, int, bool, bool], Template] = {}
        # Per template and copied query flags, the header is fixed too: a blocked query costs
        # one dict lookup and three concatenations (bounded: the parser accepts opcode QUERY
        # only, so four flag combinations per template).
        self._answers: dict[tuple[int, int, bool, bool, int], Answer] = {}
        self._soa = _soa_rdata(settings)

    def answer(self, query: Query, policy_id: int) -> bytes | None:
        """The response for a query whose name matched block policy `policy_id` (its number in
        the index's policy table); None means drop."""
        qtype = query.qtype
        shape = 1 if qtype == TYPE_A else 28 if qtype == TYPE_AAAA else 0
        flags = query.flags & _COPIED_FLAGS
        key = (policy_id, shape, query.edns, query.do, flags)
        made = self._answers.get(key)
        if made is None:
            if key in self._answers:
                return None
            made = self._answers[key] = self._answer_for(
                policy_id, shape, query.edns, query.do, flags
            )
            if made is None:
                return None
        head, records = made
        return _ID.pack(query.id) + head + query.question + records

    def _answer_for(self, policy_id: int, shape: int, edns: bool, do: bool, flags: int) -> Answer:
        key = (policy_id, shape, edns, do)
        template = self._templates.get(key)
        if template is None:
            if key in self._templates:
                return None
            template = self._templates[key] = self._build(policy_id, shape, edns, do)
            if template is None:
                return None
        rcode, ancount, nscount, arcount, records = template
        flags = response_flags(flags, rcode)
        return _HEADER_AFTER_ID.pack(flags, 1, ancount, nscount, arcount), records

    def _build(self, policy_id: int, shape: int, edns: bool, do: bool) -> Template:
        policy = self._policies[policy_id - 1]
        action = policy.action
        if action is Action.DROP:
            return None
        ttl = self._settings.ttl
        answers: list[bytes] = []
        authority: list[bytes] = []
        rcode = NOERROR
        if action is Action.LANDING:
            addresses = self._landing(policy, shape)
            for packed in addresses:
                rtype = TYPE_A if len(packed) == 4 else TYPE_AAAA
                answers.append(question_record(rtype, CLASS_IN, ttl, packed))
            if not answers:
                authority.append(question_record(TYPE_SOA, CLASS_IN, ttl, self._soa))
        elif action is Action.NXDOMAIN:
            rcode = NXDOMAIN
            authority.append(question_record(TYPE_SOA, CLASS_IN, ttl, self._soa))
        elif action is Action.NODATA:
            authority.append(question_record(TYPE_SOA, CLASS_IN, ttl, self._soa))
        elif action is Action.REFUSED:
            rcode = REFUSED
        else:  # pragma: no cover - ALLOW never reaches the responder
            raise ValueError(f"not a block action: {action}")
        additional = b""
        if edns:
            options = b""
            code = policy.ede.code
            if code is not None:
                options = ede_option(code, self.extra_text(policy))
            additional = opt_record(self._settings.udp_payload_size, do, 0, options)
        records = b"".join(answers) + b"".join(authority) + additional
        return (rcode, len(answers), len(authority), 1 if edns else 0, records)

    def _landing(self, policy: Policy, shape: int) -> list[bytes]:
        """Per-list landing addresses override the global ones (README "Block answers")."""
        if shape == TYPE_A:
            texts = policy.landing_ipv4 or _single(self._settings.landing_ipv4)
        elif shape == TYPE_AAAA:
            texts = policy.landing_ipv6 or _single(self._settings.landing_ipv6)
        else:
            return []
        return [ipaddress.ip_address(t).packed for t in texts]

    def extra_text(self, policy: Policy) -> str:
        settings = self._settings
        # The action too: dnstap-read prints a logged answer's EDE but not the dnstap policy
        # field, so this text is how the query log shows list, category and action to it.
        where = f"list {policy.list_name}, category {policy.category}, action {policy.action}"
        if settings.contact or settings.justification or settings.organisation:
            # draft-ietf-dnsop-structured-dns-error: c = contact URIs, j = justification,
            # o = organisation. The list and category ride in the justification.
            payload: dict[str, object] = {}
            if settings.contact:
                payload["c"] = [settings.contact]
            justification = settings.justification or "blocked"
            payload["j"] = f"{justification} ({where})"
            if settings.organisation:
                payload["o"] = settings.organisation
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        else:
            text = f"blocked by blokir: {where}"
        return text[:MAX_EXTRA_TEXT]


def _single(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _soa_rdata(settings: BlockSettings) -> bytes:
    """SOA RDATA (RFC 1035 3.3.13). MINIMUM = the block TTL: RFC 2308 5 caps negative caching
    at min(SOA TTL, MINIMUM), so resolvers keep a block exactly as long as a positive one."""
    return (
        encode_name(settings.soa_mname)
        + encode_name(settings.soa_rname)
        + struct.pack("!IIIII", _SOA_SERIAL, _SOA_REFRESH, _SOA_RETRY, _SOA_EXPIRE, settings.ttl)
    )
