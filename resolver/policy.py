"""Policies: what a matched list entry means for a query.

A policy is interned once per distinct (list, action, addresses) combination; the compiled index
stores only small integer policy ids per name (0 means "no policy"), and the policy table travels
in the index header. This module is pure: no I/O, no sockets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.StrEnum):
    """What the resolver answers for a matched name."""

    LANDING = "landing"  # A/AAAA -> landing address, other types -> NODATA
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    REFUSED = "refused"
    DROP = "drop"  # no answer at all (RPZ `CNAME rpz-drop.`)
    ALLOW = "allow"  # an exception: answer from upstream even if a broader entry blocks


BLOCK_ACTIONS = frozenset(a for a in Action if a is not Action.ALLOW)


class Ede(enum.StrEnum):
    """RFC 8914 Extended DNS Error chosen per list (section 4.16-4.18)."""

    BLOCKED = "blocked"  # 15: operator policy
    CENSORED = "censored"  # 16: a legal requirement (regulator lists)
    FILTERED = "filtered"  # 17: the client asked for filtering
    NONE = "none"

    @property
    def code(self) -> int | None:
        return _EDE_CODES[self]


_EDE_CODES: dict[Ede, int | None] = {
    Ede.BLOCKED: 15,
    Ede.CENSORED: 16,
    Ede.FILTERED: 17,
    Ede.NONE: None,
}


class MatchMode(enum.StrEnum):
    SUBTREE = "subtree"  # the name and every name below it (the default)
    EXACT = "exact"  # only the name itself


# Which names an entry covers, as bit flags on each parsed entry.
MATCH_SELF = 1  # the entry's own name
MATCH_BELOW = 2  # every name strictly below it (RPZ `*.name`)
MATCH_SUBTREE = MATCH_SELF | MATCH_BELOW
# A response-IP trigger: the batch's "names" are canonical prefixes (`192.0.2.0/24`), matched
# against the addresses in answers, never against query names (resolver/iptrie.py).
MATCH_IP = 4


@dataclass(frozen=True, slots=True)
class Policy:
    """One row of the policy table. `list_index` is the list's position in config order
    (allowlists first), which decides precedence between lists."""

    list_name: str
    category: str
    action: Action
    ede: Ede = Ede.NONE
    landing_ipv4: tuple[str, ...] = ()
    landing_ipv6: tuple[str, ...] = ()
    list_index: int = 0

    @property
    def is_allow(self) -> bool:
        return self.action is Action.ALLOW

    def precedence(self) -> tuple[int, int]:
        """Lower wins at the same name: any allow beats any block (the exception is the point of
        an allowlist), then the first list in config order."""
        return (0 if self.is_allow else 1, self.list_index)

    def to_json(self) -> dict[str, object]:
        return {
            "list": self.list_name,
            "category": self.category,
            "action": self.action.value,
            "ede": self.ede.value,
            "landing_ipv4": list(self.landing_ipv4),
            "landing_ipv6": list(self.landing_ipv6),
            "list_index": self.list_index,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Policy:
        v4 = raw.get("landing_ipv4", [])
        v6 = raw.get("landing_ipv6", [])
        index = raw.get("list_index", 0)
        if not isinstance(v4, list) or not isinstance(v6, list) or not isinstance(index, int):
            raise ValueError(f"malformed policy record: {raw!r}")
        return cls(
            list_name=str(raw["list"]),
            category=str(raw["category"]),
            action=Action(str(raw["action"])),
            ede=Ede(str(raw.get("ede", "none"))),
            landing_ipv4=tuple(str(a) for a in v4),
            landing_ipv6=tuple(str(a) for a in v6),
            list_index=index,
        )


class PolicyTable:
    """Interns policies to small ids. Id 0 is reserved for "no policy", so ids start at 1 and a
    zeroed uint16 array means "nothing matched"."""

    MAX_POLICIES = 0xFFFF  # ids are stored as uint16 in the index

    def __init__(self) -> None:
        self._ids: dict[Policy, int] = {}
        self.policies: list[Policy] = []

    def intern(self, policy: Policy) -> int:
        pid = self._ids.get(policy)
        if pid is None:
            if len(self.policies) >= self.MAX_POLICIES:
                raise ValueError(f"more than {self.MAX_POLICIES} distinct policies")
            self.policies.append(policy)
            pid = len(self.policies)
            self._ids[policy] = pid
        return pid

    def get(self, pid: int) -> Policy:
        return self.policies[pid - 1]

    def __len__(self) -> int:
        return len(self.policies)
