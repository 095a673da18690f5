"""What an index header records about the lists it was compiled from, and the check against it.

These are the parts of compiling that processes which never compile need: the supervisor's
reloader decides whether the serving index is current and hands list settings to the build
process, and the CLI reports a list it cannot read. They live apart from `resolver.compile`
(which re-exports them) because that module imports numpy and every list parser, about 25 MiB in
each `blokir serve` process that only maps an index.
"""

from __future__ import annotations

import enum
from dataclasses import asdict
from typing import Any

from resolver.lists.files import list_signature
from resolver.lists.model import ListSpec
from resolver.lists.quality import DEFAULT_MAX_REJECTED_RATIO
from resolver.policy import Action, Ede, MatchMode


class CompileError(Exception):
    """A list that cannot be read at all (missing file, permission): the message names it."""


def spec_json(spec: ListSpec) -> dict[str, object]:
    """A list's settings as stored in the index header, for provenance and staleness checks."""
    return {
        key: (
            value.value
            if isinstance(value, enum.Enum)
            else list(value)
            if isinstance(value, tuple)
            else value
        )
        for key, value in asdict(spec).items()
    }


def spec_from_json(data: dict[str, Any]) -> ListSpec:
    """The inverse of `spec_json` (the reload builder gets its lists this way)."""
    return ListSpec(
        name=str(data["name"]),
        path=str(data["path"]),
        category=str(data["category"]),
        action=Action(data["action"]),
        ede=Ede(data["ede"]),
        match=MatchMode(data["match"]),
        format=str(data["format"]),
        landing_ipv4=tuple(data["landing_ipv4"]),
        landing_ipv6=tuple(data["landing_ipv6"]),
        list_index=int(data["list_index"]),
        max_rejected_ratio=float(data.get("max_rejected_ratio", DEFAULT_MAX_REJECTED_RATIO)),
        kind=str(data.get("kind", "domain")),
    )


def header_is_current(header: dict[str, Any], specs: list[ListSpec]) -> bool:
    """Whether an index header says it was built from exactly these list settings, in this order,
    from files unchanged since (same size and mtime). Any change to a list's action, category,
    scope or landing addresses in the config means a rebuild, not a stale policy. The reloader
    keeps the serving index's header and checks it every watch interval."""
    sources = header.get("sources", [])
    if len(sources) != len(specs):
        return False
    for spec, source in zip(specs, sources, strict=True):
        signature = list_signature(spec.path)
        if (
            signature is None
            or source.get("spec") != spec_json(spec)
            or source.get("size") != signature[0]
            or source.get("mtime") != signature[1]
        ):
            return False
    return True
