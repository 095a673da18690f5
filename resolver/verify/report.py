"""The audit as a terminal table, as JSON and as CSV (one row per probe)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from typing import TextIO

from resolver import __version__
from resolver.verify.audit import Audit
from resolver.verify.classify import DESCRIPTIONS, Verdict
from resolver.verify.stats import Group, Rate

MAX_LISTED_DISAGREEMENTS = 10

CSV_FIELDS = (
    "resolver",
    "name",
    "list",
    "category",
    "probe",
    "qname",
    "qtype",
    "class",
    "rcode",
    "addresses",
    "cnames",
    "ede_code",
    "ede_text",
    "error",
    "attempts",
    "elapsed_ms",
    "control_rcode",
    "control_addresses",
    "matches_control",
)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def rate_cells(rate: Rate) -> tuple[str, str]:
    if rate.trials == 0:
        return "-", "-"
    low, high = rate.interval
    return percent(rate.rate), f"[{100 * low:.1f}, {100 * high:.1f}]"


def headline(audit: Audit) -> str:
    sample = audit.sample
    lists = sum(1 for s in sample.strata if s.sampled)
    control = f", control {audit.control}" if audit.control else ", no control resolver"
    return (
        f"blokir verify: {len(sample.domains)} names from {lists} list(s) (seed {sample.seed}), "
        f"{len(audit.resolvers)} resolver(s){control}; {audit.queries} queries in "
        f"{audit.finished - audit.started:.1f} s"
    )


def table(audit: Audit) -> str:
    """The terminal summary: a row per resolver and per category on it, then the learned
    landing addresses, disagreements and warnings."""
    head = (
        f"{'resolver':<22} {'category':<18} {'names':>6} {'blocked':>7} {'not':>5} {'dead':>5}"
        f" {'error':>5} {'rate':>7} {'95% CI':>14} {'subtree':>8} {'95% CI':>14}"
    )
    lines = [headline(audit), "", head, "-" * len(head)]

    def row(resolver: str, category: str, group: Group) -> str:
        counts = group.counts
        rate, ci = rate_cells(group.enforcement)
        sub, sub_ci = rate_cells(group.subtree)
        names = sum(counts.values())
        return (
            f"{resolver[:22]:<22} {category[:18]:<18} {names:>6} {group.enforcement.successes:>7}"
            f" {counts[Verdict.NOT_BLOCKED]:>5} {counts[Verdict.DEAD]:>5}"
            f" {counts[Verdict.ERROR]:>5} {rate:>7} {ci:>14} {sub:>8} {sub_ci:>14}"
        )

    for result in audit.resolvers:
        lines.append(row(result.label, "(all)", result.overall))
        if len(result.categories) > 1:
            for category, group in result.categories.items():
                lines.append(row("", category, group))
    lines.append("")
    lines.append("sampled names by class:")
    for result in audit.resolvers:
        counts = ", ".join(
            f"{v.value} {result.overall.counts[v]}" for v in Verdict if result.overall.counts[v]
        )
        lines.append(f"  {result.label}: {counts or 'none'}")
    for result in audit.resolvers:
        learned = result.learned
        if learned.landing or learned.hosts:
            found = [f"{a} ({n} names)" for a, n in learned.landing.items()]
            found += [f"CNAME {h} ({n} names)" for h, n in learned.hosts.items()]
            lines.append(f"learned block targets on {result.label}: {', '.join(found)}")
    disagreements = audit.disagreements()
    if len(audit.resolvers) > 1:
        lines.append(f"disagreements between resolvers: {len(disagreements)} name(s)")
        for d in disagreements[:MAX_LISTED_DISAGREEMENTS]:
            lines.append(
                f"  {d.name} ({d.category}): blocked by {', '.join(d.blocked_by)}; "
                f"not by {', '.join(d.not_blocked_by)}"
            )
        if len(disagreements) > MAX_LISTED_DISAGREEMENTS:
            lines.append(f"  ... and {len(disagreements) - MAX_LISTED_DISAGREEMENTS} more")
    for warning in audit.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def to_json(audit: Audit) -> dict[str, object]:
    """Everything but the probes: per resolver and per category the rate, its interval, the
    counts per class and the subtree rate; the sample; learned targets; disagreements."""
    return {
        "tool": f"blokir {__version__} verify",
        "started": iso(audit.started),
        "finished": iso(audit.finished),
        "seconds": round(audit.finished - audit.started, 3),
        "queries": audit.queries,
        "control": audit.control,
        "settings": {
            "rate_per_resolver": audit.settings.rate,
            "concurrency": audit.settings.concurrency,
            "timeout": audit.settings.timeout,
            "retries": audit.settings.retries,
            "learn_threshold": audit.learn_threshold,
        },
        "denominator": "sampled names answered: blocked + not_blocked (dead and error left out)",
        "interval": "95% Wilson score interval",
        "classes": {v.value: DESCRIPTIONS[v] for v in Verdict},
        "sample": audit.sample.to_json(),
        "landing": {
            "given": sorted(audit.given.landing),
            "block_hosts_given": sorted(audit.given.hosts),
            "learned": {
                r.label: {"landing": r.learned.landing, "block_hosts": r.learned.hosts}
                for r in audit.resolvers
            },
        },
        "resolvers": {
            r.label: {
                **r.overall.to_json(),
                "categories": {c: g.to_json() for c, g in r.categories.items()},
            }
            for r in audit.resolvers
        },
        "disagreements": [
            {
                "name": d.name,
                "list": d.list_name,
                "category": d.category,
                "verdicts": {k: v.value for k, v in d.verdicts.items()},
            }
            for d in audit.disagreements()
        ],
        "warnings": audit.warnings,
    }


def write_json(audit: Audit, out: TextIO) -> None:
    json.dump(to_json(audit), out, indent=2)
    out.write("\n")


def write_csv(audit: Audit, out: TextIO) -> int:
    """One row per probe (resolver, name, type); returns the number of rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    rows = 0
    for result in audit.resolvers:
        for p in result.probes:
            response = p.response
            ede = response.ede[0] if response.ede else None
            control = p.control
            writer.writerow(
                [
                    result.label,
                    p.domain.name,
                    p.domain.list_name,
                    p.domain.category,
                    p.kind,
                    p.qname,
                    p.qtype,
                    p.verdict.value,
                    response.rcode_text,
                    " ".join(response.addresses),
                    " ".join(response.cnames),
                    "" if ede is None else ede[0],
                    "" if ede is None else ede[1],
                    response.error,
                    response.attempts,
                    f"{response.elapsed_ms:.1f}",
                    "" if control is None else control.rcode_text,
                    "" if control is None else " ".join(control.addresses),
                    "" if p.matches_control is None else str(p.matches_control).lower(),
                ]
            )
            rows += 1
    return rows
