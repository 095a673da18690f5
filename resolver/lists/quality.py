"""Whether a compiled list is fit to serve: it yielded entries, and not mostly rejected lines.

A list that yields nothing is almost never what the operator meant: a list in a syntax read
wrongly, an HTML error page saved as the list, a glob that matched the wrong files. Serving the
index anyway would silently stop blocking everything that list should block. So `blokir
compile` and `blokir check` fail, `blokir serve` will not start on it (unless `--force`), and a
live reload keeps the old index (unless `blokir reload --force`).

The rule works on a list's report as the index header stores it (`ListResult.to_json`), so the
reloader, which only reads headers, applies the same one. The share of rejected entries is
counted among the entries a list tried to give (accepted + rejected): comments, blank lines and
skipped rules (well-formed, but not enforceable by a resolver) are not held against it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_MAX_REJECTED_RATIO = 0.5
TOP_REASONS = 3


def list_problem(source: Mapping[str, Any]) -> str | None:
    """Why a list must not be served, or None. `source` is one `sources` item of an index
    header (the list's report and settings)."""
    name = source.get("list", "?")
    entries = int(source.get("entries", 0))
    rejected: Counter[str] = Counter(source.get("rejected", {}))
    skipped: Counter[str] = Counter(source.get("skipped", {}))
    examples: Mapping[str, list[str]] = source.get("examples", {})
    lines = int(source.get("lines", 0))
    spec = source.get("spec", {})
    limit = float(spec.get("max_rejected_ratio", DEFAULT_MAX_REJECTED_RATIO))
    total_rejected = sum(rejected.values())
    if entries == 0:
        ips = int(source.get("ip_entries", 0))
        what = f"{lines:,} lines" + (f", {ips:,} IP entries (not enforced)" if ips else "")
        reasons = _top(rejected + skipped, examples)
        return f"list {name}: no entry from {what}" + (f"; {reasons}" if reasons else "")
    tried = entries + total_rejected
    if tried and total_rejected / tried > limit:
        return (
            f"list {name}: {total_rejected:,} of {tried:,} entries rejected "
            f"({100 * total_rejected / tried:.1f}%, more than max_rejected_ratio {limit:g}); "
            + _top(rejected, examples)
        )
    return None


def list_problems(sources: Iterable[Mapping[str, Any]]) -> list[str]:
    return [p for p in map(list_problem, sources) if p is not None]


def _top(counts: Counter[str], examples: Mapping[str, list[str]]) -> str:
    parts = []
    for reason, count in counts.most_common(TOP_REASONS):
        example = (examples.get(reason) or [""])[0]
        parts.append(f"{reason} x{count:,}" + (f" (e.g. {example})" if example else ""))
    return "top reasons: " + ", ".join(parts) if parts else ""
