"""Text for `blokir status` and `blokir reload`: what an operator reads on a terminal."""

from __future__ import annotations

import time
from typing import Any


def age(seconds_since_epoch: float, now: float | None = None) -> str:
    """'3m ago', '2h ago', '4d ago'; 'never' for 0."""
    if not seconds_since_epoch:
        return "never"
    elapsed = max(0.0, (now if now is not None else time.time()) - seconds_since_epoch)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if elapsed >= size:
            return f"{elapsed / size:.0f}{unit} ago"
    return f"{elapsed:.0f}s ago"


def format_outcome(outcome: dict[str, Any]) -> str:
    """One reload outcome (reload.ReloadOutcome.to_json()) as a few lines."""
    lines = [
        f"reload {outcome['result']} ({outcome['trigger']}, {outcome['seconds']:.2f} s): "
        f"{outcome['detail']}"
    ]
    lines += [f"  - {problem}" for problem in outcome.get("problems", [])]
    restart = outcome.get("restart_needed") or []
    if restart:
        lines.append("  changed settings that need a restart: " + ", ".join(restart))
    return "\n".join(lines)


def _serving_lines(status: dict[str, Any]) -> list[str]:
    """Upstream health and the cache, summed over the workers (metrics.serving_summary)."""
    if "upstreams" not in status:
        return ["", "upstreams and cache: not shown ([metrics] enabled = false)"]
    lines = [""]
    for up in status["upstreams"]:
        average = f", avg {up['avg_ms']:.1f} ms" if up["avg_ms"] is not None else ""
        lines.append(
            f"upstream {up['address']}: {'up' if up['up'] else 'DOWN'}, "
            f"{up['responses']:,} of {up['requests']:,} answered, {up['timeouts']:,} timeouts, "
            f"{up['errors']:,} errors{average}"
        )
    cache = status["cache"]
    asked = cache["hits"] + cache["misses"]
    share = f", {100 * cache['hits'] / asked:.0f}% of cache lookups hit" if asked else ""
    lines.append(
        f"cache    {cache['entries']:,} entries{share} "
        f"({status['workers_reporting']} worker(s) reporting)"
    )
    return lines


def _transfer_line(entry: dict[str, Any], now: float | None) -> str:
    """An axfr list: its serial, how the copy last changed, what the last attempt did."""
    serial = entry.get("serial")
    have = (
        f"serial {serial} by {entry.get('transfer') or '?'} {age(entry['updated_at'], now)}"
        if serial is not None
        else "no transfer yet"
    )
    last = entry.get("last_transfer") or "-"
    return (
        f"{entry['name']}: {have}; last attempt {last} {entry['last_result'] or '-'} "
        f"{age(entry['checked_at'], now)}"
    )


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """The supervisor's status (Supervisor.status()) as a table."""
    index = status["index"]
    workers = ", ".join(str(w["pid"]) for w in status.get("workers", []))
    lines = [
        f"blokir pid {status.get('pid', '?')} on {', '.join(status.get('listen', []))}"
        f" (workers {workers or 'none'})",
        f"config   {status['config']}",
        f"index    {index['path']}: {index['names']:,} names, checksum {index['checksum']}, "
        f"built {age(index['built_at'], now)}, loaded {age(index['loaded_at'], now)}",
        "",
    ]
    rows = [("list", "kind", "names", "rejected", "sha256", "updated", "last check", "source")]
    for entry in status["lists"]:
        check = "-"
        if entry["kind"] != "file":
            check = f"{entry['last_result'] or '-'} {age(entry['checked_at'], now)}"
        rows.append(
            (
                entry["name"],
                entry["kind"],
                f"{entry['names']:,}",
                f"{entry['rejected']:,}",
                entry["sha256"][:12],
                age(entry["updated_at"], now),
                check,
                entry["source"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    for entry in status["lists"]:
        if entry["kind"] == "axfr":
            lines.append("  " + _transfer_line(entry, now))
    errors = [e for e in status["lists"] if e.get("last_error")]
    for entry in errors:
        what = "transfer" if entry["kind"] == "axfr" else "download"
        lines.append(f"  {entry['name']}: last {what} failed: {entry['last_error']}")
    lines += _serving_lines(status)
    last = status.get("last_reload")
    lines.append("")
    if last:
        lines.append(f"last reload {age(last['started_at'], now)}:")
        lines.append(format_outcome(last))
    counts = ", ".join(f"{k} {v}" for k, v in status.get("reloads", {}).items() if v)
    lines.append(f"reloads since start: {counts or 'none'}")
    return "\n".join(lines)
