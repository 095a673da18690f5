"""Differential test: a seeded corpus of a few thousand queries sent to blokir and to Unbound,
both forwarding to the same NSD upstream (tests/integration/peers.py), and the answers compared.

The corpus mixes query types (A, AAAA, TXT, MX, NS, SOA, CNAME, SRV, unknown types, ANY), header
bits (RD, CD, AD, Z on and off), EDNS (none, or UDP sizes 512..4096 and a few below 512, DO on
and off, an unknown option, NSID, COOKIE), 0x20 letter case, names behind CNAME chains,
wildcards, NXDOMAIN, NODATA, answers too large for UDP at any size or at some, and blocked
names. Every query goes over UDP, a tenth of them and every ANY over TCP too.

Compared after normalising what the RFCs let servers differ in: TTLs (each cache counts them
down on its own clock; RFC 1035 3.2.1, RFC 2181 8), the order of records within a section
(RFC 2181 5: an RRset has no order, and sections are sets of RRsets), the letter case of names
other than the echoed question (RFC 4343; the question must be echoed exactly, RFC 1035 4.1.1,
which is compared), the contents of a truncated answer (RFC 2181 9: the client retries over TCP)
and the UDP size each server advertises (its own setting, RFC 6891 6.2.3). Every other
difference is a failure unless `intended` names a reason for it from INTENDED.

BLOKIR_DIFF_QUERIES sets the corpus size (default 3000), BLOKIR_DIFF_SEED its seed.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.integration.peers import (
    BLOCKED,
    LANDING_V4,
    LANDING_V6,
    NX_ONLY,
    OPTION_EDE,
    Z_BIT,
    ZONE,
    ZONE_TTL,
    Peers,
    exchange_tcp,
    exchange_udp,
    parse,
)

pytestmark = pytest.mark.integration

CORPUS_SIZE = int(os.environ.get("BLOKIR_DIFF_QUERIES", "3000"))
SEED = int(os.environ.get("BLOKIR_DIFF_SEED", "8906"))
TCP_SHARE = 10  # one query in TCP_SHARE goes over TCP as well
TIME_BUDGET = 120.0  # seconds for the whole exchange, both servers, both transports
OPTION_UNKNOWN = 65001  # local/experimental (RFC 6891 9)
OPTION_NSID = 3
COOKIE = b"\x11\x22\x33\x44\x55\x66\x77\x88"

# Names under the test zone (zone_text in peers.py), by what they exercise.
POSITIVE = ["www", "@", "mail", "ns", "only4", "only6", "unk", *(f"h{i}" for i in range(40))]
CHAINS = ["c1", "c2", "c3", "short"]
BLOCKED_NAMES = [
    *BLOCKED,
    f"www.{BLOCKED[0]}",
    f"deep.sub.{BLOCKED[1]}",
    NX_ONLY,
    f"x.{NX_ONLY}",
    f"alias-blocked.{ZONE}".rstrip("."),
]
QTYPES = [
    ("A", 25),
    ("AAAA", 14),
    ("TXT", 12),
    ("MX", 8),
    ("NS", 5),
    ("SOA", 5),
    ("CNAME", 6),
    ("SRV", 4),
    ("TYPE666", 4),
    ("TYPE65280", 2),
    ("ANY", 5),
]
PAYLOADS = [512, 1232, 1400, 4096]

# Differences blokir makes on purpose, each with its reason.
INTENDED = {
    "policy": "a blocked name gets each server's own policy answer: blokir's synthesized "
    "landing/NODATA/NXDOMAIN answer (AA clear, its SOA for negative answers, EDE) against "
    "Unbound's RPZ local data (AA set, no SOA, the CNAME to a blocked target kept). blokir's is "
    "checked on its own; of Unbound's, the RCODE and the landing addresses must agree, except "
    "that Unbound 1.17 answers SERVFAIL to most queries for a name whose CNAME target the RPZ "
    "covers",
    "any-tcp": "ANY over TCP: blokir relays the upstream's answer (NSD gives one RRset, as RFC "
    "8482 4.1 allows); Unbound answers from its cache, with every RRset of the name it holds. "
    "The RCODE and header must agree and blokir's answer must not be empty",
    "rfc8482": "ANY over UDP: blokir answers one synthesized HINFO (RFC 8482 4.2, against "
    "amplification); Unbound relays the upstream's answer. Over TCP both relay it",
    "minimal-responses": "blokir relays the upstream's authority NS and glue with a positive "
    "answer as it came; Unbound strips them (its minimal-responses default). Both are allowed "
    "(RFC 2181 5.4.1: additional data is optional)",
    "ede": "blokir adds Extended DNS Errors (RFC 8914): 16/15 on policy answers, 18 on the "
    "REFUSED answer to RD=0; Unbound's ede option is off by default",
}


@dataclass(frozen=True)
class Probe:
    qname: str  # as sent, 0x20 case applied
    qtype: str
    rd: bool
    cd: bool
    ad: bool
    z: bool
    payload: int | None  # None: no EDNS
    do: bool
    options: tuple[int, ...]
    blocked: bool

    def wire(self, qid: int) -> bytes:
        options: list[dns.edns.Option] = []
        for code in self.options:
            if code == dns.edns.OptionType.COOKIE:
                options.append(dns.edns.CookieOption(COOKIE, b""))
            else:
                options.append(dns.edns.GenericOption(dns.edns.OptionType.make(code), b""))
        message = dns.message.make_query(
            self.qname,
            self.qtype,
            use_edns=0 if self.payload is not None else False,
            payload=self.payload or 0,
            want_dnssec=self.do,
            options=options,
            id=qid,
        )
        flags = message.flags & ~dns.flags.RD
        flags |= (dns.flags.RD if self.rd else 0) | (dns.flags.CD if self.cd else 0)
        flags |= (dns.flags.AD if self.ad else 0) | (Z_BIT if self.z else 0)
        message.flags = flags
        return message.to_wire()


def weighted(rng: random.Random, choices: list[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def name_for(rng: random.Random) -> tuple[str, bool]:
    """A name and whether a blokir list blocks it."""
    kind = weighted(
        rng,
        [
            ("positive", 45),
            ("chain", 12),
            ("wild", 8),
            ("nx", 15),
            ("big", 3),
            ("mid", 5),
            ("blocked", 8),
        ],
    )
    if kind == "blocked":
        return rng.choice(BLOCKED_NAMES), True
    if kind == "positive":
        label = rng.choice(POSITIVE)
    elif kind == "chain":
        label = rng.choice(CHAINS)
    elif kind == "wild":
        label = f"w{rng.randrange(10_000)}.wild"
    elif kind == "nx":
        label = f"nx{rng.randrange(10_000)}" + (".deep" if rng.random() < 0.3 else "")
    else:
        label = kind
    return (ZONE if label == "@" else f"{label}.{ZONE}").rstrip("."), False


def mixed_case(rng: random.Random, name: str) -> str:
    """0x20: each letter's case at random, as resolvers do against spoofing."""
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in name)


def corpus(size: int, seed: int) -> list[Probe]:
    rng = random.Random(seed)
    probes = []
    for _ in range(size):
        name, blocked = name_for(rng)
        edns = rng.random() < 0.8
        payload = None
        if edns:
            roll = rng.random()
            payload = rng.choice(PAYLOADS) if roll < 0.7 else rng.randint(512, 4096)
            if roll > 0.95:  # below the floor, which means 512 (RFC 6891 6.2.5)
                payload = rng.randint(0, 511)
            elif name.startswith("mid.") and roll > 0.4:
                # Around the mid answer's size, with and without the upstream's referral data:
                # TC only where the answer itself does not fit (RFC 2181 9).
                payload = rng.randint(1000, 1300)
        options: tuple[int, ...] = ()
        if edns:
            roll = rng.random()
            if roll < 0.1:
                options = (OPTION_UNKNOWN,)
            elif roll < 0.2:
                options = (OPTION_NSID,)
            elif roll < 0.3:
                options = (int(dns.edns.OptionType.COOKIE),)
        probes.append(
            Probe(
                qname=mixed_case(rng, name),
                qtype=weighted(rng, QTYPES),
                rd=rng.random() < 0.9,
                cd=rng.random() < 0.2,
                ad=rng.random() < 0.2,
                z=rng.random() < 0.05,
                payload=payload,
                do=edns and rng.random() < 0.3,
                options=options,
                blocked=blocked,
            )
        )
    return probes


# -- normalising and comparing --------------------------------------------------------------------

Records = tuple[tuple[str, str, str], ...]


def records(section: list[dns.rrset.RRset]) -> Records:
    """A section as a sorted tuple of (owner, type, rdata): no TTL, no order, names in lower
    case (RFC 4343); TXT strings keep their case (they are data, not names)."""
    out = []
    for rrset in section:
        rdtype = dns.rdatatype.to_text(rrset.rdtype)
        for rdata in rrset:
            text = rdata.to_text()
            if rrset.rdtype != dns.rdatatype.TXT:
                text = text.lower()
            out.append((rrset.name.to_text().lower(), rdtype, text))
    return tuple(sorted(out))


FIELDS = (
    "rcode",
    "flags",
    "ttl",
    "question",
    "edns",
    "options",
    "answer",
    "authority",
    "additional",
)


def normal(reply: dns.message.Message) -> dict[str, object]:
    truncated = bool(reply.flags & dns.flags.TC)
    sections = (reply.answer, reply.authority, reply.additional)
    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "flags": " ".join(  # every header bit but the RCODE's
            [dns.opcode.to_text(reply.opcode()), dns.flags.to_text(reply.flags)]
            + (["Z"] if reply.flags & Z_BIT else [])
        ),
        # Each cache counts TTLs down on its own clock; neither may stretch them past the zone's.
        "ttl": all(rrset.ttl <= ZONE_TTL for section in sections for rrset in section),
        "question": tuple(rrset.to_text() for rrset in reply.question),  # case kept
        "edns": None if reply.edns < 0 else (reply.edns, reply.ednsflags),
        "options": tuple(sorted(int(o.otype) for o in reply.options)),
        "answer": () if truncated else records(reply.answer),
        "authority": () if truncated else records(reply.authority),
        "additional": () if truncated else records(reply.additional),
    }


def addresses(section: Records) -> set[str]:
    return {rdata for _, rdtype, rdata in section if rdtype in ("A", "AAAA")}


def intended(
    probe: Probe, udp: bool, blokir: dict[str, object], unbound: dict[str, object]
) -> str | None:
    """The INTENDED reason that explains every difference between the two answers, or None."""
    differing = {f for f in FIELDS if blokir[f] != unbound[f]}
    reasons = set()
    if "options" in differing:
        ours = tuple(c for c in blokir["options"] if c != OPTION_EDE)  # type: ignore[attr-defined]
        if ours == unbound["options"]:
            reasons.add("ede")
            differing.discard("options")
    if udp and probe.qtype == "ANY" and differing and not listed(probe):
        return "rfc8482"  # for an alias of a blocked name too: no upstream query, no CNAME
    if probe.blocked and differing:
        return "policy" if policy_answer(probe, blokir, unbound) else None
    if probe.qtype == "ANY" and differing:
        if differing != {"answer"} or not blokir["answer"]:
            return None
        reasons.add("any-tcp")
        differing.clear()
    if differing & {"authority", "additional"}:
        if not minimal_responses(blokir, unbound):
            return None
        reasons.add("minimal-responses")
        differing -= {"authority", "additional"}
    if differing:
        return None
    return ",".join(sorted(reasons)) or None


def is_alias(probe: Probe) -> bool:
    """An allowed name whose CNAME target is blocked (blokir blocks it after the upstream's
    answer, resolver/pipeline.py _cname_block)."""
    return probe.qname.lower().startswith("alias-blocked.")


def listed(probe: Probe) -> bool:
    """A name a blokir list covers itself."""
    return probe.blocked and not is_alias(probe)


def policy_answer(probe: Probe, blokir: dict[str, object], unbound: dict[str, object]) -> bool:
    """blokir's answer for a blocked name is its policy answer (checked on its own: the
    "nx" list's NXDOMAIN, else the landing address of the query's family or NODATA, with the
    policy SOA for negative answers, RFC 2308 3), and Unbound's RPZ agrees on the RCODE and the
    addresses, or answered SERVFAIL for an alias of a blocked name (see INTENDED)."""
    answer: Records = blokir["answer"]  # type: ignore[assignment]
    negative = NX_ONLY in probe.qname.lower()
    want = (
        {"A": {LANDING_V4}, "AAAA": {LANDING_V6}}.get(probe.qtype, set()) if not negative else set()
    )
    soa = any(rdtype == "SOA" for _, rdtype, _ in blokir["authority"])  # type: ignore[attr-defined]
    own = (
        blokir["rcode"] == ("NXDOMAIN" if negative else "NOERROR")
        and addresses(answer) == want
        and len(answer) == len(want)
        and (soa or bool(want))
    )
    agrees = blokir["rcode"] == unbound["rcode"] and addresses(answer) == addresses(
        unbound["answer"]  # type: ignore[arg-type]
    )
    return own and (agrees or (is_alias(probe) and unbound["rcode"] == "SERVFAIL"))


def minimal_responses(blokir: dict[str, object], unbound: dict[str, object]) -> bool:
    """blokir's authority and additional sections are Unbound's plus the NS and address glue
    records of a positive answer."""
    if not blokir["answer"] or blokir["rcode"] != "NOERROR":
        return False
    for section, extra_types in (("authority", {"NS"}), ("additional", {"A", "AAAA"})):
        ours = set(blokir[section])  # type: ignore[call-overload]
        theirs = set(unbound[section])  # type: ignore[call-overload]
        if not theirs <= ours or any(rdtype not in extra_types for _, rdtype, _ in ours - theirs):
            return False
    return True


@dataclass
class Outcome:
    queries: int = 0
    identical: int = 0
    silent_both: int = 0
    reasons: Counter[str] = None  # type: ignore[assignment]
    failures: list[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.reasons = Counter()
        self.failures = []


def compare(
    probes: list[Probe],
    udp: bool,
    blokir: list[bytes | None],
    unbound: list[bytes | None],
    out: Outcome,
) -> None:
    for probe, ours, theirs in zip(probes, blokir, unbound, strict=True):
        out.queries += 1
        mine, other = parse(ours), parse(theirs)
        if mine is None and other is None:
            out.silent_both += 1
            continue
        if mine is None or other is None:
            out.failures.append(
                f"{describe(probe, udp)}: blokir {ours!r:.60} unbound {theirs!r:.60}"
            )
            continue
        a, b = normal(mine), normal(other)
        if a == b:
            out.identical += 1
            continue
        reason = intended(probe, udp, a, b)
        if reason is None:
            fields = [f for f in FIELDS if a[f] != b[f]]
            detail = "; ".join(f"{f}: blokir {a[f]} unbound {b[f]}" for f in fields)
            out.failures.append(f"{describe(probe, udp)}: {detail}")
        else:
            for key in reason.split(","):
                out.reasons[key] += 1


def describe(probe: Probe, udp: bool) -> str:
    bits = [
        n for n, on in (("rd", probe.rd), ("cd", probe.cd), ("ad", probe.ad), ("z", probe.z)) if on
    ]
    edns = "noedns" if probe.payload is None else f"edns{probe.payload}{'+do' if probe.do else ''}"
    opts = ",".join(str(o) for o in probe.options)
    return f"{'udp' if udp else 'tcp'} {probe.qname} {probe.qtype} {'+'.join(bits)} {edns} {opts}"


def test_blokir_answers_as_unbound_does(peers: Peers, capsys: pytest.CaptureFixture[str]) -> None:
    probes = corpus(CORPUS_SIZE, SEED)
    wires = [probe.wire(i & 0xFFFF) for i, probe in enumerate(probes)]
    tcp_index = [i for i, p in enumerate(probes) if i % TCP_SHARE == 0 or p.qtype == "ANY"]
    started = time.monotonic()
    out = Outcome()
    compare(
        probes, True, exchange_udp(peers.blokir, wires), exchange_udp(peers.unbound, wires), out
    )
    tcp_probes = [probes[i] for i in tcp_index]
    tcp_wires = [wires[i] for i in tcp_index]
    compare(
        tcp_probes,
        False,
        exchange_tcp(peers.blokir, tcp_wires),
        exchange_tcp(peers.unbound, tcp_wires),
        out,
    )
    elapsed = time.monotonic() - started
    lines = [
        f"differential: {len(probes)} UDP + {len(tcp_index)} TCP queries, seed {SEED}, "
        f"{elapsed:.1f} s",
        f"  identical after normalising: {out.identical}",
        f"  silent on both: {out.silent_both}",
        *(f"  intended ({key}): {count}" for key, count in sorted(out.reasons.items())),
        f"  failures: {len(out.failures)}",
        *(f"    {failure}" for failure in out.failures[:25]),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert elapsed < TIME_BUDGET
    assert out.silent_both <= len(probes) // 100, "too many queries neither server answered"
    assert not out.failures, "\n".join(out.failures[:25])


def test_corpus_is_deterministic_and_covers_the_cases() -> None:
    first, second = corpus(400, SEED), corpus(400, SEED)
    assert first == second
    assert corpus(400, SEED + 1) != first
    seen_types = {p.qtype for p in first}
    assert {"A", "AAAA", "TXT", "MX", "NS", "SOA", "CNAME", "ANY", "TYPE666"} <= seen_types
    assert any(p.blocked for p in first) and any(not p.rd for p in first)
    assert any(p.payload is None for p in first) and any(p.payload == 512 for p in first)
    assert any(p.qname != p.qname.lower() for p in first)
    assert {OPTION_UNKNOWN, OPTION_NSID, int(dns.edns.OptionType.COOKIE)} <= {
        o for p in first for o in p.options
    }


def test_comparison_flags_a_real_difference() -> None:
    """A relayed answer that differs from Unbound's in its flags or records is a failure, not
    an intended difference."""
    probe = corpus(1, SEED)[0]
    query = dns.message.from_wire(probe.wire(1))
    good = dns.message.make_response(query)
    bad = dns.message.make_response(query)
    bad.flags |= dns.flags.AA
    out = Outcome()
    compare([probe, probe], True, [good.to_wire(), bad.to_wire()], [good.to_wire()] * 2, out)
    assert out.identical == 1 and len(out.failures) == (0 if probe.blocked else 1)
    assert struct.unpack_from("!H", good.to_wire())[0] == 1
