"""Client groups (`[[groups]]`): which lists apply to which clients, over the one shared index.

A group is a set of policy ids, kept as a bytes table `allowed[pid]` (1: the policy's list is one
the group takes). Policy ids belong to an index, so a `GroupTable` is made per index, in
microseconds (one pass over the policy table); the index itself is shared by every group. A
lookup for a group walks the name's suffixes as the default lookup does and passes over entries
of lists outside the group (`Index.match_policy_id_in`), so a family tier's extra list adds no
copy of the national list.

A client takes the group whose `clients` network matches it with the longest prefix (as a
routing table does), else the default group 0, which takes every list through the unchanged
fast path (`Index.match_policy_id`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from resolver.config import GroupConfig, Network
from resolver.policy import Policy

__all__ = ["DEFAULT", "DEFAULT_NAME", "GroupTable", "allowed_pids"]

DEFAULT = 0  # the group id of clients in no group
DEFAULT_NAME = "default"
CLIENT_CACHE_MAX = 65_536  # client address -> group id, as the ACL's cache


def allowed_pids(group: GroupConfig, policies: Sequence[Policy]) -> bytes:
    """`allowed[pid]` for pid 0..len(policies): 1 where the policy's list is in the group's
    `lists` (block policies) or `allowlists` (allow policies); a key left out takes all."""
    table = bytearray(len(policies) + 1)
    for pid, policy in enumerate(policies, start=1):
        chosen = group.allowlists if policy.is_allow else group.lists
        if chosen is None or policy.list_name in chosen:
            table[pid] = 1
    return bytes(table)


class GroupTable:
    """The groups of one config over one index's policy table."""

    def __init__(self, groups: Sequence[GroupConfig], policies: Sequence[Policy]) -> None:
        self.names: tuple[str, ...] = (DEFAULT_NAME, *(g.name for g in groups))
        # allowed[gid] (gid 0, the default, takes everything and is never consulted)
        self.allowed: tuple[bytes, ...] = (b"", *(allowed_pids(g, policies) for g in groups))
        # Longest prefix first, so the first network that contains a client is its group's.
        self._networks: list[tuple[Network, int]] = sorted(
            ((net, gid) for gid, g in enumerate(groups, start=1) for net in g.clients),
            key=lambda item: -item[0].prefixlen,
        )
        self._of: dict[str, int] = {}

    def __bool__(self) -> bool:
        return len(self.names) > 1

    def group_of(self, client: str) -> int:
        """The group id of a client address (DEFAULT when in none, or not an address)."""
        gid = self._of.get(client)
        if gid is None:
            gid = self._lookup(client)
            if len(self._of) >= CLIENT_CACHE_MAX:
                self._of.clear()
            self._of[client] = gid
        return gid

    def _lookup(self, client: str) -> int:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return DEFAULT
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
        for network, gid in self._networks:
            if address.version == network.version and address in network:
                return gid
        return DEFAULT
