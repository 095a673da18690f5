"""Client groups (resolver/groups.py) over one shared index (Index.match_policy_id_in)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from resolver.compile import compile_temporary
from resolver.config import GroupConfig
from resolver.groups import DEFAULT, GroupTable
from resolver.lists.model import ListSpec
from resolver.policy import Action


def _group(
    name: str, clients: list[str], lists: list[str] | None, allow: list[str] | None = None
) -> GroupConfig:
    nets = tuple(ipaddress.ip_network(c) for c in clients)
    return GroupConfig(name, nets, tuple(lists) if lists is not None else None,
                       tuple(allow) if allow is not None else None)  # fmt: skip


def test_longest_prefix_wins() -> None:
    table = GroupTable(
        [_group("wide", ["10.0.0.0/8"], []), _group("narrow", ["10.1.0.0/16", "::1/128"], [])], []
    )
    assert table.group_of("10.2.3.4") == 1
    assert table.group_of("10.1.3.4") == 2
    assert table.group_of("::1") == 2
    assert table.group_of("::ffff:10.1.0.9") == 2  # IPv4 seen through a dual-stack socket
    assert table.group_of("192.0.2.1") == DEFAULT
    assert table.group_of("not an address") == DEFAULT


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    files = {
        "kids-ok": "edu.example\n",
        "national": "gambling.example\nnews.example\n",
        "family": "adult.example\nedu.example\nsub.gambling.example\n",
    }
    specs = []
    for i, (name, text) in enumerate(files.items()):
        path = tmp_path / f"{name}.txt"
        path.write_text(text)
        action = Action.ALLOW if name == "kids-ok" else Action.NXDOMAIN
        specs.append(
            ListSpec(name=name, path=str(path), action=action, list_index=i, format="plain")
        )
    index, file = compile_temporary(specs)
    yield index
    index.close()
    file.unlink()


def _list_of(index, table: GroupTable, gid: int, name: bytes) -> str | None:  # type: ignore[no-untyped-def]
    if gid == DEFAULT:
        policy_id = index.match_policy_id(name)
    else:
        policy_id = index.match_policy_id_in(name, table.allowed[gid])
    return index.policies[policy_id - 1].list_name if policy_id else None


def test_each_group_sees_only_its_lists(index) -> None:  # type: ignore[no-untyped-def]
    groups = [
        _group("plain", ["127.0.0.2"], ["national"], []),
        _group("family", ["127.0.0.3"], ["national", "family"]),
    ]
    table = GroupTable(groups, index.policies)
    plain, family = table.group_of("127.0.0.2"), table.group_of("127.0.0.3")
    assert _list_of(index, table, DEFAULT, b"www.adult.example") == "family"
    assert _list_of(index, table, plain, b"www.adult.example") is None
    assert _list_of(index, table, family, b"www.adult.example") == "family"
    # sub.gambling.example: family's entry is the more specific one; plain walks past it to
    # national's entry for the parent.
    assert _list_of(index, table, plain, b"a.sub.gambling.example") == "national"
    assert _list_of(index, table, family, b"a.sub.gambling.example") == "family"
    # The allowlist applies to the family group (allowlists left out: all of them).
    assert _list_of(index, table, family, b"edu.example") == "kids-ok"
    assert _list_of(index, table, plain, b"edu.example") is None
    assert _list_of(index, table, plain, b"example") is None
