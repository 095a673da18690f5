"""Which names to probe: the lists to audit, and a reproducible sample stratified by list.

Where the names come from:

- `--list FILE...`: the files, compiled in memory (each list is its own stratum, category
  "uncategorised").
- `-c CONFIG`: the config's lists, with its categories and landing addresses; its compiled
  index when that is current, else one compiled into a temporary file.
- `--index FILE`: an index stores hashes, not names, so the names are read from the lists named
  in its header ("sources"). Each file's sha256 is checked against the header: a missing file is
  reported and skipped, a changed one is reported and sampled as it is now (only names the index
  still blocks are kept).

Every name drawn must be blocked by the reference index (its effective policy after allowlists
and precedence); names it does not block (allowlisted, below-only `*.name` entries) are dropped
and counted. The subtree probes (`www.` and a random label under the name) are only made where
the index blocks them too, so an exact-match list is not charged with leaving its subdomains
alone.

Sampling: one pass over each list keeps a uniform reservoir of up to N names (Algorithm R), then
N is allocated to the lists in proportion to their (eligible) sizes by largest remainder, with at
least one name per non-empty list when N allows, and each list's share is drawn from its
reservoir. Categories are per list, so strata by list are strata by category as well. Everything
random comes from one `random.Random(seed)`; the seed is in every report, so a run can be
repeated exactly against the same lists.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from resolver.compile import compile_temporary, current_index, open_list, specs_from_paths
from resolver.config import load_config
from resolver.index import Index, open_index
from resolver.lists.files import list_exists
from resolver.lists.model import ListSpec
from resolver.policy import MATCH_SELF, Action, Ede, MatchMode, Policy, PolicyTable

PROBE_NAME = "name"
PROBE_WWW = "www"
PROBE_RANDOM = "random"
PROBE_KINDS = (PROBE_NAME, PROBE_WWW, PROBE_RANDOM)
RANDOM_LABEL_PREFIX = "blokir-verify-"


class SampleError(Exception):
    """Nothing to sample from (no readable list, no eligible name): the message says why."""


@dataclass(frozen=True, slots=True)
class Domain:
    """One sampled listed name and the names probed for it: (kind, query name) pairs."""

    name: str
    list_name: str
    category: str
    probes: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Stratum:
    list_name: str
    category: str
    path: str
    entries: int = 0  # names read from the list (with duplicates)
    eligible: int = 0  # distinct names in the reservoir the index blocks
    ineligible: int = 0  # distinct names in the reservoir the index does not block
    sampled: int = 0
    sha256: str = ""
    status: str = "ok"  # ok | changed | missing

    def to_json(self) -> dict[str, object]:
        return {
            "list": self.list_name,
            "category": self.category,
            "path": self.path,
            "entries": self.entries,
            "eligible_seen": self.eligible,
            "not_blocked_by_index": self.ineligible,
            "sampled": self.sampled,
            "sha256": self.sha256,
            "status": self.status,
        }


@dataclass(slots=True)
class Sample:
    domains: list[Domain]
    strata: list[Stratum]
    seed: int
    requested: int | None  # None: --all
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "requested": "all" if self.requested is None else self.requested,
            "drawn": len(self.domains),
            "strata": [s.to_json() for s in self.strata],
        }


@dataclass(slots=True)
class Source:
    """The lists to audit and the reference index that says what they block."""

    specs: list[ListSpec]
    index: Index
    expected_sha256: dict[str, str] | None = None  # list name -> sha256 from an index header
    landing: set[str] = field(default_factory=set)  # landing addresses the policy names
    description: str = ""
    warnings: list[str] = field(default_factory=list)


@contextmanager
def open_source(
    *,
    lists: Sequence[str] = (),
    index: str | None = None,
    config: str | None = None,
) -> Iterator[Source]:
    """The audited lists with their reference index, from exactly one of the three inputs."""
    given = sum(1 for x in (bool(lists), index is not None, config is not None) if x)
    if given != 1:
        raise SampleError("give exactly one of --list FILE, --index FILE or -c CONFIG")
    temporary: Path | None = None
    source: Source
    if lists:
        specs = specs_from_paths(lists)
        for spec in specs:
            if not list_exists(spec.path):
                raise SampleError(f"{spec.path}: list file not found")
        built, temporary = compile_temporary(specs, prefix="blokir-verify-")
        source = Source(specs, built, description=f"lists {', '.join(lists)}")
    elif index is not None:
        source = _source_from_index(Path(index))
    else:
        assert config is not None
        cfg = load_config(config)
        specs = cfg.list_specs()
        current = current_index(cfg.blocking.index_path, specs)
        if current is None:
            current, temporary = compile_temporary(specs, prefix="blokir-verify-")
        source = Source(specs, current, description=f"config {cfg.source}")
        for address in (cfg.blocking.landing_ipv4, cfg.blocking.landing_ipv6):
            if address:
                source.landing.add(address)
    for policy in source.index.policies:
        source.landing.update(_policy_landing(policy))
    try:
        yield source
    finally:
        source.index.close()
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _policy_landing(policy: Policy) -> set[str]:
    if policy.action is not Action.LANDING:
        return set()
    return {*policy.landing_ipv4, *policy.landing_ipv6}


def _source_from_index(path: Path) -> Source:
    index = open_index(path)
    specs: list[ListSpec] = []
    expected: dict[str, str] = {}
    warnings: list[str] = []
    for i, record in enumerate(index.header.get("sources", [])):
        try:
            spec = spec_from_json(record["spec"], i)
        except (KeyError, TypeError, ValueError) as exc:
            index.close()
            raise SampleError(f"{path}: source record {i} is malformed: {exc}") from exc
        list_path = Path(spec.path)
        if not list_path.is_absolute() and not list_path.exists():
            list_path = path.parent / list_path
            spec = replace(spec, path=str(list_path))
        specs.append(spec)
        expected[spec.name] = str(record.get("sha256", ""))
    if not specs:
        index.close()
        raise SampleError(f"{path}: the index header names no source lists")
    return Source(specs, index, expected, description=f"index {path}", warnings=warnings)


def spec_from_json(raw: dict[str, object], position: int) -> ListSpec:
    """A ListSpec back from an index header's `spec` record (`compile.spec_json`)."""
    v4 = raw.get("landing_ipv4", [])
    v6 = raw.get("landing_ipv6", [])
    if not isinstance(v4, list) or not isinstance(v6, list):
        raise ValueError("landing addresses are not lists")
    index = raw.get("list_index", position)
    return ListSpec(
        name=str(raw["name"]),
        path=str(raw["path"]),
        category=str(raw.get("category", "uncategorised")),
        action=Action(str(raw.get("action", "landing"))),
        ede=Ede(str(raw.get("ede", "blocked"))),
        match=MatchMode(str(raw.get("match", "subtree"))),
        format=str(raw.get("format", "auto")),
        landing_ipv4=tuple(str(a) for a in v4),
        landing_ipv6=tuple(str(a) for a in v6),
        list_index=index if isinstance(index, int) else position,
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- drawing ----------------------------------------------------------------------------------


def blocked_by(index: Index, name: str) -> Policy | None:
    """The block policy the index applies to `name`, or None (not listed, or allowed)."""
    try:
        encoded = name.encode("ascii")
    except UnicodeEncodeError:
        return None
    found = index.match(encoded)
    if found is None:
        return None
    policy = index.policy(found.policy_id)
    return None if policy.is_allow else policy


def random_label(rng: random.Random) -> str:
    """A label no real site has: the `random` subtree probe. Drawn from the run's generator."""
    return f"{RANDOM_LABEL_PREFIX}{rng.getrandbits(48):012x}"


def draw_sample(
    source: Source,
    size: int | None,
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Sample:
    """A stratified sample of `size` names (None: every eligible name) from the source's block
    lists. Deterministic for a given seed and list content; a random seed is drawn and recorded
    when none is given."""
    if size is not None and size < 1:
        raise SampleError("the sample size must be at least 1")
    if seed is None:
        seed = random.SystemRandom().getrandbits(32)
    rng = random.Random(seed)
    strata: list[Stratum] = []
    pools: list[list[str]] = []
    warnings = list(source.warnings)
    for spec in source.specs:
        if spec.is_allowlist:
            continue
        stratum = Stratum(spec.name, spec.category, spec.path)
        strata.append(stratum)
        pools.append([])
        expected = None if source.expected_sha256 is None else source.expected_sha256[spec.name]
        if not list_exists(spec.path):
            stratum.status = "missing"
            warnings.append(
                f"list {spec.name!r}: {spec.path} is missing: it is not sampled"
                + (" (it was when the index was built)" if expected else "")
            )
            continue
        if progress is not None:
            progress(f"reading {spec.name}")
        reservoir, entries, sha = _reservoir(spec, size, rng)
        stratum.entries = entries
        stratum.sha256 = sha
        if expected is not None and expected and sha != expected:
            stratum.status = "changed"
            warnings.append(
                f"list {spec.name!r}: {spec.path} changed since the index was built "
                f"(sha256 {sha[:12]}... now, {expected[:12]}... in the index): sampled as it "
                "is now, keeping only names the index blocks"
            )
        pool: list[str] = []
        for name in dict.fromkeys(reservoir):  # distinct, in reservoir order
            if blocked_by(source.index, name) is None:
                stratum.ineligible += 1
            else:
                pool.append(name)
        stratum.eligible = len(pool)
        pools[-1] = pool
    if not any(pools):
        raise SampleError("no listed name to sample: every block list is missing or empty")
    weights = [
        s.entries * (s.eligible / (s.eligible + s.ineligible)) if s.eligible else 0.0
        for s in strata
    ]
    if size is None:
        shares = [len(p) for p in pools]
    else:
        shares = allocate(size, weights, [len(p) for p in pools])
    domains: list[Domain] = []
    for stratum, pool, share in zip(strata, pools, shares, strict=True):
        chosen = rng.sample(pool, share) if share < len(pool) else list(pool)
        stratum.sampled = len(chosen)
        for name in chosen:
            domains.append(_domain(source.index, name, stratum, rng))
    return Sample(domains, strata, seed, size, warnings)


def _domain(index: Index, name: str, stratum: Stratum, rng: random.Random) -> Domain:
    probes = [(PROBE_NAME, name)]
    www = f"www.{name}"
    label = f"{random_label(rng)}.{name}"
    if len(www) <= 253 and blocked_by(index, www) is not None:
        probes.append((PROBE_WWW, www))
    if len(label) <= 253 and blocked_by(index, label) is not None:
        probes.append((PROBE_RANDOM, label))
    return Domain(name, stratum.list_name, stratum.category, tuple(probes))


def _reservoir(spec: ListSpec, size: int | None, rng: random.Random) -> tuple[list[str], int, str]:
    """One pass over a list: a uniform sample of up to `size` of its entries that cover the name
    itself (every entry when `size` is None), the number of such entries, the file's sha256."""
    result, batches = open_list(spec, PolicyTable())
    reservoir: list[str] = []
    seen = 0
    for batch in batches:
        if not batch.match & MATCH_SELF:
            continue
        for raw in batch.names:
            seen += 1
            if size is None or len(reservoir) < size:
                reservoir.append(raw.decode("ascii"))
            else:
                slot = rng.randrange(seen)
                if slot < size:
                    reservoir[slot] = raw.decode("ascii")
    return reservoir, seen, result.sha256


def allocate(total: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Split `total` over strata in proportion to `weights` (largest remainder, ties to the
    earlier stratum), each at most its cap, each non-empty stratum at least one when `total`
    allows; whatever a capped stratum cannot take goes to the others."""
    n = len(weights)
    shares = [0] * n
    remaining = min(total, sum(caps))
    open_ = [i for i in range(n) if caps[i] > 0 and weights[i] > 0]
    if remaining >= len(open_):
        for i in open_:
            shares[i] = 1
        remaining -= len(open_)
    while remaining > 0 and open_:
        weight = sum(weights[i] for i in open_)
        quotas = {i: remaining * weights[i] / weight for i in open_}
        base = {i: min(math.floor(q), caps[i] - shares[i]) for i, q in quotas.items()}
        for i, b in base.items():
            shares[i] += b
        left = remaining - sum(base.values())
        order = sorted(open_, key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
        for i in order:
            if left == 0:
                break
            if shares[i] < caps[i]:
                shares[i] += 1
                left -= 1
        remaining = left
        open_ = [i for i in open_ if shares[i] < caps[i]]
    return shares
