"""What a resolver's answer to one probe means: the verdict classes, and how they are decided.

A probe is one query (name, type) sent to one resolver. Its answer is reduced to a `Response`
(rcode, addresses, CNAME chain, Extended DNS Errors) and then classified, in this order (the
first rule that applies wins):

1. `error`: no answer (timeout after every retry, network error), or an RCODE other than
   NOERROR, NXDOMAIN or REFUSED (SERVFAIL, FORMERR, NOTIMP...) without a blocking EDE.
2. `refused`: RCODE REFUSED (a blokir `refused` list, or a resolver that refuses listed names).
3. `landing`: NOERROR with an A/AAAA address that is a landing address: given with `--landing`,
   taken from the config or index, learned from the answers (`learn_block_targets`), or a null
   address (0.0.0.0, ::), which sinkhole hosts files use.
4. `cname`: an answer whose CNAME chain goes through a known block host (given or learned).
5. `nxdomain`: NXDOMAIN, unless the control resolver says NXDOMAIN too; an NXDOMAIN carrying
   EDE 15/16/17 is always `nxdomain` (the resolver said it blocked).
6. `dead`: NXDOMAIN at the resolver and at the control: the name does not exist, so the answer
   says nothing about enforcement. Not counted as blocked, and left out of the rate.
7. `ede`: any other answer carrying EDE 15 Blocked, 16 Censored or 17 Filtered (NODATA or
   SERVFAIL with a blocking EDE, for example). The EDE code and EXTRA-TEXT are recorded for
   every probe, whatever its class.
8. `nodata`: NOERROR with no address of the asked type. Alone it means little (many names have
   no AAAA); see `name_verdict` for when a name answered only with NODATA counts as blocked.
9. `not_blocked`: NOERROR with real addresses. With a control resolver, `Response.addresses`
   is compared with the control's, and the probe records whether they matched.

The rate is computed per sampled name, not per probe: `name_verdict` folds the A and AAAA probes
of one name into one verdict.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

# EDE codes that say "this answer is a block" (RFC 8914 sections 4.16-4.18).
BLOCKING_EDE = frozenset({15, 16, 17})
NULL_ADDRESSES = frozenset({"0.0.0.0", "::"})
# An address (or CNAME target) returned for at least this many distinct registrable names of
# the sample, and never by the control for them, is taken to be a landing address.
DEFAULT_LEARN_THRESHOLD = 5


class Verdict(enum.StrEnum):
    """How one probe (or one name, after `name_verdict`) was answered. See the module doc."""

    LANDING = "landing"
    NXDOMAIN = "nxdomain"
    EDE = "ede"
    CNAME = "cname"
    REFUSED = "refused"
    NODATA = "nodata"
    NOT_BLOCKED = "not_blocked"
    DEAD = "dead"
    ERROR = "error"

    @property
    def blocked(self) -> bool:
        return self in BLOCKED_VERDICTS

    @property
    def answered(self) -> bool:
        """Counts in the rate's denominator: blocked or not blocked, never dead or error."""
        return self not in (Verdict.DEAD, Verdict.ERROR)

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self]


BLOCKED_VERDICTS = frozenset(
    {Verdict.LANDING, Verdict.NXDOMAIN, Verdict.EDE, Verdict.CNAME, Verdict.REFUSED, Verdict.NODATA}
)

DESCRIPTIONS: dict[Verdict, str] = {
    Verdict.LANDING: "blocked: answered with a landing address (given, learned or 0.0.0.0/::)",
    Verdict.NXDOMAIN: "blocked: NXDOMAIN where the control resolver has the name (or no control)",
    Verdict.EDE: "blocked: another answer with Extended DNS Error 15, 16 or 17",
    Verdict.CNAME: "blocked: a CNAME to a known block host",
    Verdict.REFUSED: "blocked: REFUSED",
    Verdict.NODATA: "blocked: no address of either type where the control has one (or no control)",
    Verdict.NOT_BLOCKED: "not blocked: real addresses (compared with the control's when given)",
    Verdict.DEAD: "dead: NXDOMAIN (or no address) at the control too; not in the rate",
    Verdict.ERROR: "error: timeout, SERVFAIL or another failure; not in the rate",
}


@dataclass(frozen=True, slots=True)
class Response:
    """The parts of an answer that classification looks at. `rcode` None means no answer."""

    rcode: int | None
    addresses: tuple[str, ...] = ()  # A/AAAA rdata anywhere in the answer section, sorted
    cnames: tuple[str, ...] = ()  # CNAME targets in answer order, lower case, no final dot
    ede: tuple[tuple[int, str], ...] = ()  # (code, EXTRA-TEXT)
    error: str = ""  # why there is no answer
    attempts: int = 1
    elapsed_ms: float = 0.0

    @property
    def rcode_text(self) -> str:
        return "NOANSWER" if self.rcode is None else dns.rcode.to_text(dns.rcode.Rcode(self.rcode))

    @property
    def blocking_ede(self) -> tuple[int, str] | None:
        for code, text in self.ede:
            if code in BLOCKING_EDE:
                return code, text
        return None

    @property
    def nxdomain(self) -> bool:
        return self.rcode == dns.rcode.NXDOMAIN


def response_from_message(
    message: dns.message.Message, rdtype: str, *, attempts: int = 1, elapsed_ms: float = 0.0
) -> Response:
    """Reduce a dnspython answer to a `Response`. Addresses are those of the asked type only."""
    wanted = dns.rdatatype.from_text(rdtype)
    addresses: list[str] = []
    cnames: list[str] = []
    for rrset in message.answer:
        if not isinstance(rrset, dns.rrset.RRset):
            continue
        if rrset.rdtype == wanted:
            addresses.extend(_canonical_address(rdata.to_text()) for rdata in rrset)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            cnames.extend(rdata.target.to_text(omit_final_dot=True).lower() for rdata in rrset)
    ede: list[tuple[int, str]] = []
    for option in message.extended_errors():
        ede.append((int(option.code), option.text or ""))
    return Response(
        rcode=int(message.rcode()),
        addresses=tuple(sorted(set(addresses))),
        cnames=tuple(cnames),
        ede=tuple(ede),
        attempts=attempts,
        elapsed_ms=elapsed_ms,
    )


def _canonical_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def canonical_addresses(values: Iterable[str]) -> frozenset[str]:
    """Addresses as `ipaddress` prints them, so `2001:DB8::0010` and `2001:db8::10` are one."""
    return frozenset(str(ipaddress.ip_address(v.strip())) for v in values)


@dataclass(frozen=True, slots=True)
class BlockTargets:
    """What marks an answer as a block: landing addresses and CNAME block hosts."""

    landing: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()

    def with_learned(self, learned: LearnedTargets) -> BlockTargets:
        return BlockTargets(
            self.landing | frozenset(learned.landing), self.hosts | frozenset(learned.hosts)
        )


def classify(
    response: Response, control: Response | None, targets: BlockTargets
) -> tuple[Verdict, bool | None]:
    """The verdict for one probe, and for a `not_blocked` one whether its addresses match the
    control's (None when there is no control answer to compare with)."""
    blocking_ede = response.blocking_ede
    rcode = response.rcode
    if rcode is None:
        return Verdict.ERROR, None
    if rcode == dns.rcode.REFUSED:
        return Verdict.REFUSED, None
    if rcode == dns.rcode.NOERROR:
        if any(a in targets.landing or a in NULL_ADDRESSES for a in response.addresses):
            return Verdict.LANDING, None
        if any(c in targets.hosts for c in response.cnames):
            return Verdict.CNAME, None
    if rcode == dns.rcode.NXDOMAIN:
        if any(c in targets.hosts for c in response.cnames):
            return Verdict.CNAME, None
        if blocking_ede is None and control is not None and control.nxdomain:
            return Verdict.DEAD, None
        return Verdict.NXDOMAIN, None
    if blocking_ede is not None:
        return Verdict.EDE, None
    if rcode != dns.rcode.NOERROR:
        return Verdict.ERROR, None
    if not response.addresses:
        return Verdict.NODATA, None
    matches: bool | None = None
    if control is not None and control.rcode == dns.rcode.NOERROR and control.addresses:
        matches = bool(set(response.addresses) & set(control.addresses))
    return Verdict.NOT_BLOCKED, matches


_BLOCK_ORDER = (Verdict.EDE, Verdict.REFUSED, Verdict.NXDOMAIN, Verdict.CNAME, Verdict.LANDING)


def name_verdict(probes: Iterable[Verdict], control_has_address: bool | None) -> Verdict:
    """Fold the probes of one name (its A and AAAA) into one verdict.

    - Any `not_blocked` probe makes the name `not_blocked`: a client of that address family
      reaches the site, so a block of only A or only AAAA is a leak.
    - Else any blocking probe makes it blocked, with the first blocking class of the probes in
      the order given (A before AAAA).
    - Else a `dead` probe makes it dead.
    - Else, when every answered probe is `nodata`: dead if the control has no address for the
      name either (`control_has_address` False), otherwise blocked by `nodata` (with no control,
      a listed name that has neither an A nor an AAAA record is taken to be blocked).
    - Else (only errors) `error`.
    """
    seen = list(probes)
    if Verdict.NOT_BLOCKED in seen:
        return Verdict.NOT_BLOCKED
    for verdict in seen:
        if verdict in _BLOCK_ORDER:
            return verdict
    if Verdict.DEAD in seen:
        return Verdict.DEAD
    if Verdict.NODATA in seen:
        return Verdict.DEAD if control_has_address is False else Verdict.NODATA
    return Verdict.ERROR


# -- learning ---------------------------------------------------------------------------------

# Second-level labels under which country-code TLDs register names (co.id, ac.uk, com.au...):
# enough to tell unrelated sites apart without shipping the Public Suffix List.
_SECOND_LEVEL = frozenset(
    {
        *("ac", "co", "com", "edu", "gov", "go", "govt", "mil", "net", "or", "org", "sch"),
        *("web", "my", "biz", "desa", "ponpes", "ne", "gr", "lg", "ltd", "plc", "nic"),
        *("info", "name", "nom", "int"),
    }
)


def registrable_name(name: str) -> str:
    """An approximation of the registrable domain ("eTLD+1") without the Public Suffix List:
    the last two labels, or three when the name ends in a known second-level label under a
    two-letter country TLD (`x.co.id`, `x.ac.uk`)."""
    labels = name.lower().rstrip(".").split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


@dataclass(slots=True)
class LearnedTargets:
    """Landing addresses and block hosts learned for one resolver, with the number of distinct
    registrable names each was seen for."""

    landing: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """One probe's answer as learning sees it: the sampled domain it belongs to, what the
    resolver returned, and what the control returned for the same query (None: no control)."""

    domain: str
    response: Response
    control: Response | None


def learn_block_targets(
    observations: Iterable[Observation],
    known: BlockTargets,
    threshold: int = DEFAULT_LEARN_THRESHOLD,
) -> LearnedTargets:
    """Addresses (and CNAME targets) that one resolver returned for at least `threshold`
    distinct registrable names of the sample. Unrelated sites rarely share one address, a
    landing page always does. An address counts for a name only when the control did not
    return it for the same query: a CDN address shared by many listed sites is answered by the
    control as well, a landing address is not. Known targets are not reported again."""
    by_address: dict[str, set[str]] = defaultdict(set)
    by_host: dict[str, set[str]] = defaultdict(set)
    for obs in observations:
        response = obs.response
        if response.rcode != dns.rcode.NOERROR:
            continue
        owner = registrable_name(obs.domain)
        control_addresses: set[str] = set()
        control_cnames: set[str] = set()
        if obs.control is not None:
            control_addresses.update(obs.control.addresses)
            control_cnames.update(obs.control.cnames)
        for address in response.addresses:
            if address not in control_addresses and address not in known.landing:
                by_address[address].add(owner)
        for host in response.cnames:
            # A CNAME inside the name's own site (www.x -> x) says nothing.
            if host in control_cnames or host in known.hosts or registrable_name(host) == owner:
                continue
            by_host[host].add(owner)
    return LearnedTargets(
        landing=_over(by_address, threshold, NULL_ADDRESSES),
        hosts=_over(by_host, threshold, frozenset()),
    )


def _over(found: Mapping[str, set[str]], threshold: int, skip: frozenset[str]) -> dict[str, int]:
    return {
        key: len(owners)
        for key, owners in sorted(found.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        if len(owners) >= threshold and key not in skip
    }
