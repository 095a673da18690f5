"""The audit as one self-contained HTML page: inline CSS, inline SVG charts, a little inline
JavaScript (sortable tables, a filter box). Nothing is fetched: it opens from a file, offline."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TextIO

from resolver import __version__
from resolver.verify.audit import Audit
from resolver.verify.classify import DESCRIPTIONS, Verdict
from resolver.verify.report import headline, iso, percent
from resolver.verify.stats import Group, Rate

MAX_LEAK_ROWS = 500  # not-blocked names listed per report
MAX_DISAGREEMENT_ROWS = 500

CLASS_COLOURS: dict[Verdict, str] = {
    Verdict.LANDING: "#1b7837",
    Verdict.NXDOMAIN: "#5aae61",
    Verdict.EDE: "#a6dba0",
    Verdict.CNAME: "#3f8f9f",
    Verdict.REFUSED: "#7fbfce",
    Verdict.NODATA: "#b8e0d2",
    Verdict.NOT_BLOCKED: "#c2352b",
    Verdict.DEAD: "#9e9e9e",
    Verdict.ERROR: "#e6a532",
}

CSS = """
:root { font-family: "DejaVu Sans", system-ui, sans-serif; color: #1d232a; }
body { margin: 0 auto; max-width: 1120px; padding: 24px 32px 48px; background: #fbfbfa; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h3 { font-size: 1em; margin: 20px 0 6px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 2px solid #d8dde3; padding-bottom: 4px; }
p.lead { color: #47525e; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #d8dde3; border-radius: 6px; padding: 12px 16px;
        min-width: 220px; }
.card .label { font-size: .85em; color: #47525e; word-break: break-all; }
.card .big { font-size: 2em; font-weight: bold; }
.card .ci { font-size: .85em; color: #47525e; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: .88em; }
th, td { border: 1px solid #d8dde3; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f4; cursor: pointer; user-select: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
.warn { background: #fff4e0; border-left: 4px solid #e6a532; padding: 8px 12px; margin: 8px 0; }
.legend span { display: inline-block; margin-right: 14px; font-size: .85em; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
            vertical-align: -1px; border-radius: 2px; }
svg text { font-family: "DejaVu Sans", system-ui, sans-serif; }
input[type=search] { padding: 4px 8px; margin: 4px 0 8px; width: 320px; }
.muted { color: #6b7682; }
code { background: #eef1f4; padding: 0 3px; border-radius: 3px; }
"""

JS = """
(function () {
  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) { return ""; }
    var sort = cell.getAttribute("data-sort");
    return sort !== null ? sort : cell.textContent.trim();
  }
  function sortTable(table, index, numeric, ascending) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index), y = cellValue(b, index);
      if (numeric) {
        var fx = parseFloat(x), fy = parseFloat(y);
        if (isNaN(fx)) { fx = -1; }
        if (isNaN(fy)) { fy = -1; }
        return ascending ? fx - fy : fy - fx;
      }
      return ascending ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, index) {
      th.title = "sort";
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("data-dir") !== "asc";
        th.setAttribute("data-dir", ascending ? "asc" : "desc");
        sortTable(table, index, th.classList.contains("num"), ascending);
      });
    });
  });
  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-filter"));
    if (!table || !table.tBodies[0]) { return; }
    input.addEventListener("input", function () {
      var needle = input.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.style.display = row.textContent.toLowerCase().indexOf(needle) >= 0 ? "" : "none";
      });
    });
  });
  document.documentElement.setAttribute("data-report-ready", "yes");
})();
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


class _Row:
    """One bar of a rate chart."""

    def __init__(self, label: str, rate: Rate, strong: bool) -> None:
        self.label = label
        self.rate = rate
        self.strong = strong


def rate_chart(rows: Sequence[_Row], title: str, colour: str = "#2f6f9f") -> str:
    """A horizontal bar chart of rates from 0 to 100% with the 95% interval as a whisker."""
    label_w, plot_w, row_h, top, bottom = 300, 560, 26, 30, 34
    width = label_w + plot_w + 110
    height = top + row_h * max(1, len(rows)) + bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
        f'<text x="0" y="16" font-size="14" font-weight="bold">{_e(title)}</text>',
    ]
    for tick in range(0, 101, 10):
        x = label_w + plot_w * tick / 100
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - bottom + 4}" '
            f'stroke="{"#9aa5b1" if tick in (0, 50, 100) else "#e1e5ea"}" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 20}" font-size="11" '
            f'text-anchor="middle" fill="#47525e">{tick}%</text>'
        )
    for i, row in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        weight = ' font-weight="bold"' if row.strong else ""
        indent = 0 if row.strong else 14
        parts.append(
            f'<text x="{indent}" y="{mid + 4:.1f}" font-size="12"{weight}>'
            f"{_e(_clip(row.label, 44))}</text>"
        )
        rate = row.rate.rate
        if rate is None:
            parts.append(
                f'<text x="{label_w + 4}" y="{mid + 4:.1f}" font-size="11" fill="#6b7682">'
                "no answered names</text>"
            )
            continue
        low, high = row.rate.interval
        bar = plot_w * rate
        fill = colour if row.strong else colour + "b0"
        parts.append(
            f'<rect x="{label_w}" y="{y + 5}" width="{bar:.1f}" height="{row_h - 10}" '
            f'fill="{fill}"><title>{_e(row.label)}: {percent(rate)} '
            f"(95% CI {percent(low)} to {percent(high)}, "
            f"{row.rate.successes}/{row.rate.trials})</title></rect>"
        )
        x1, x2 = label_w + plot_w * low, label_w + plot_w * high
        parts.append(
            f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}" '
            'stroke="#1d232a" stroke-width="1.5"/>'
        )
        for x in (x1, x2):
            parts.append(
                f'<line x1="{x:.1f}" y1="{mid - 6:.1f}" x2="{x:.1f}" y2="{mid + 6:.1f}" '
                'stroke="#1d232a" stroke-width="1.5"/>'
            )
        parts.append(
            f'<text x="{label_w + plot_w + 8}" y="{mid + 4:.1f}" font-size="11">'
            f"{percent(rate)} ({row.rate.successes}/{row.rate.trials})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def class_chart(audit: Audit) -> str:
    """Per resolver, one stacked bar of its sampled names by class."""
    label_w, plot_w, row_h, top = 300, 560, 28, 30
    rows = audit.resolvers
    width = label_w + plot_w + 20
    height = top + row_h * max(1, len(rows)) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="names by class">',
        '<text x="0" y="16" font-size="14" font-weight="bold">Sampled names by class</text>',
    ]
    for i, result in enumerate(rows):
        y = top + i * row_h
        total = sum(result.overall.counts.values())
        parts.append(
            f'<text x="0" y="{y + row_h / 2 + 4:.1f}" font-size="12" font-weight="bold">'
            f"{_e(_clip(result.label, 44))}</text>"
        )
        x = float(label_w)
        for verdict in Verdict:
            count = result.overall.counts[verdict]
            if not count or not total:
                continue
            w = plot_w * count / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" '
                f'fill="{CLASS_COLOURS[verdict]}"><title>{_e(verdict.value)}: {count} of '
                f"{total}</title></rect>"
            )
            if w > 28:
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + row_h / 2 + 4:.1f}" font-size="11" '
                    f'text-anchor="middle" fill="#fff">{count}</text>'
                )
            x += w
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{CLASS_COLOURS[v]}"></i>{_e(v.value)}</span>' for v in Verdict
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _rate_rows(audit: Audit, subtree: bool) -> list[_Row]:
    rows = []
    for result in audit.resolvers:
        rows.append(
            _Row(
                result.label,
                result.overall.subtree if subtree else result.overall.enforcement,
                True,
            )
        )
        if len(result.categories) > 1:
            for category, group in result.categories.items():
                rows.append(_Row(category, group.subtree if subtree else group.enforcement, False))
    return rows


def _rate_td(rate: Rate) -> str:
    if rate.trials == 0:
        return '<td class="num" data-sort="-1">-</td><td class="num">-</td>'
    low, high = rate.interval
    value = rate.rate or 0.0
    return (
        f'<td class="num" data-sort="{value:.6f}">{percent(value)}</td>'
        f'<td class="num" data-sort="{low:.6f}">{100 * low:.1f}\u2013{percent(high)}</td>'
    )


def _groups(audit: Audit) -> list[tuple[str, str, Group]]:
    rows = []
    for result in audit.resolvers:
        rows.append((result.label, "(all)", result.overall))
        if len(result.categories) > 1:
            rows += [(result.label, c, g) for c, g in result.categories.items()]
    return rows


def _figures_table(audit: Audit) -> str:
    rows = []
    for label, category, group in _groups(audit):
        counts = group.counts
        rows.append(
            f"<tr><td>{_e(label)}</td><td>{_e(category)}</td>"
            f'<td class="num">{sum(counts.values())}</td>'
            f"{_rate_td(group.enforcement)}"
            f'<td class="num">{group.enforcement.trials}</td>'
            f'<td class="num">{counts[Verdict.DEAD]}</td>'
            f'<td class="num">{counts[Verdict.ERROR]}</td>'
            f"{_rate_td(group.subtree)}"
            f'<td class="num">{group.subtree.trials}</td></tr>'
        )
    return (
        '<div class="scroll"><table class="sortable" id="figures"><thead><tr><th>resolver</th>'
        '<th>category</th><th class="num">names</th><th class="num">rate</th>'
        '<th class="num">95% CI</th><th class="num">denominator</th><th class="num">dead</th>'
        '<th class="num">error</th><th class="num">subtree rate</th>'
        '<th class="num">subtree 95% CI</th><th class="num">subtree denominator</th>'
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def _counts_table(audit: Audit) -> str:
    head = "".join(f'<th class="num">{_e(v.value)}</th>' for v in Verdict)
    rows = []
    for label, category, group in _groups(audit):
        names = "".join(f'<td class="num">{group.counts[v]}</td>' for v in Verdict)
        probes = "".join(f'<td class="num">{group.probe_counts[v]}</td>' for v in Verdict)
        rows.append(
            f"<tr><td>{_e(label)}</td><td>{_e(category)}</td><td>names</td>{names}</tr>"
            f"<tr><td>{_e(label)}</td><td>{_e(category)}</td><td>probes</td>{probes}</tr>"
        )
    return (
        '<div class="scroll"><table class="sortable" id="counts"><thead><tr><th>resolver</th>'
        f"<th>category</th><th>per</th>{head}</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _landing_section(audit: Audit) -> str:
    given = ", ".join(f"<code>{_e(a)}</code>" for a in sorted(audit.given.landing)) or "none"
    hosts = ", ".join(f"<code>{_e(h)}</code>" for h in sorted(audit.given.hosts)) or "none"
    rows = []
    for result in audit.resolvers:
        for address, count in result.learned.landing.items():
            rows.append(
                f"<tr><td>{_e(result.label)}</td><td>address</td><td><code>{_e(address)}</code>"
                f'</td><td class="num">{count}</td></tr>'
            )
        for host, count in result.learned.hosts.items():
            rows.append(
                f"<tr><td>{_e(result.label)}</td><td>CNAME target</td><td><code>{_e(host)}</code>"
                f'</td><td class="num">{count}</td></tr>'
            )
    if audit.learn_threshold is None:
        learned = "<p>Learning was off (<code>--no-learn</code>).</p>"
    elif rows:
        learned = (
            '<table class="sortable"><thead><tr><th>resolver</th><th>kind</th><th>learned</th>'
            '<th class="num">distinct registrable names</th></tr></thead><tbody>'
            + "".join(rows)
            + "</tbody></table>"
        )
    else:
        learned = "<p>None learned.</p>"
    threshold = audit.learn_threshold
    rule = (
        f"An address or CNAME target that a resolver returned for at least {threshold} distinct "
        "registrable names of the sample, and that the control did not return for them, is "
        "treated as a landing address."
        if threshold is not None
        else ""
    )
    return (
        f"<p>Given landing addresses: {given}. Given block hosts: {hosts}. "
        f"0.0.0.0 and :: always count as landing addresses. {_e(rule)}</p>{learned}"
    )


def _disagreements(audit: Audit) -> str:
    if len(audit.resolvers) < 2:
        return "<p>One resolver audited: nothing to compare.</p>"
    found = audit.disagreements()
    if not found:
        return "<p>None: every resolver gave every answered name the same verdict.</p>"
    labels = [r.label for r in audit.resolvers]
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    rows = []
    for d in found[:MAX_DISAGREEMENT_ROWS]:
        cells = "".join(
            f'<td style="color:{CLASS_COLOURS[d.verdicts[label]]}">{_e(d.verdicts[label].value)}'
            "</td>"
            for label in labels
        )
        rows.append(f"<tr><td>{_e(d.name)}</td><td>{_e(d.category)}</td>{cells}</tr>")
    more = (
        f"<p class='muted'>{len(found) - MAX_DISAGREEMENT_ROWS} more in the JSON report.</p>"
        if len(found) > MAX_DISAGREEMENT_ROWS
        else ""
    )
    return (
        f"<p>{len(found)} sampled name(s) blocked by one resolver and answered unblocked by "
        "another.</p>"
        '<table class="sortable"><thead><tr><th>name</th><th>category</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
    )


def _leaks(audit: Audit) -> str:
    rows: list[str] = []
    total = 0
    for result in audit.resolvers:
        for outcome in result.domains:
            subtree_leak = outcome.subtree is Verdict.NOT_BLOCKED
            if outcome.verdict is not Verdict.NOT_BLOCKED and not subtree_leak:
                continue
            total += 1
            if len(rows) >= MAX_LEAK_ROWS:
                continue
            leaked = [k for k, v in outcome.names.items() if v is Verdict.NOT_BLOCKED]
            rows.append(
                f"<tr><td>{_e(result.label)}</td><td>{_e(outcome.domain.name)}</td>"
                f"<td>{_e(outcome.domain.list_name)}</td><td>{_e(outcome.domain.category)}</td>"
                f"<td>{_e(outcome.verdict.value)}</td><td>{_e(', '.join(leaked))}</td></tr>"
            )
    if not rows:
        return "<p>None.</p>"
    more = (
        f"<p class='muted'>{total - MAX_LEAK_ROWS} more in the CSV report.</p>"
        if total > MAX_LEAK_ROWS
        else ""
    )
    return (
        '<input type="search" placeholder="filter" data-filter="leaks" aria-label="filter">'
        '<table class="sortable" id="leaks"><thead><tr><th>resolver</th><th>name</th>'
        "<th>list</th><th>category</th><th>name verdict</th><th>unblocked probes</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
    )


def _strata(audit: Audit) -> str:
    rows = "".join(
        f"<tr><td>{_e(s.list_name)}</td><td>{_e(s.category)}</td><td>{_e(s.path)}</td>"
        f'<td class="num">{s.entries}</td><td class="num">{s.eligible}</td>'
        f'<td class="num">{s.ineligible}</td><td class="num">{s.sampled}</td>'
        f"<td>{_e(s.status)}</td></tr>"
        for s in audit.sample.strata
    )
    return (
        '<table class="sortable"><thead><tr><th>list</th><th>category</th><th>path</th>'
        '<th class="num">entries</th><th class="num">eligible (reservoir)</th>'
        '<th class="num">not blocked by index</th><th class="num">sampled</th>'
        f"<th>file</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _cards(audit: Audit) -> str:
    cards = []
    for result in audit.resolvers:
        rate = result.overall.enforcement
        if rate.trials:
            low, high = rate.interval
            big = percent(rate.rate)
            ci = f"95% CI {percent(low)} to {percent(high)}; {rate.successes}/{rate.trials}"
        else:
            big, ci = "-", "no answered names"
        sub = result.overall.subtree
        sub_text = (
            f"subtree {percent(sub.rate)} ({sub.successes}/{sub.trials})" if sub.trials else ""
        )
        cards.append(
            f'<div class="card"><div class="label">{_e(result.label)}</div>'
            f'<div class="big">{big}</div><div class="ci">{_e(ci)}</div>'
            f'<div class="ci">{_e(sub_text)}</div></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def render_html(audit: Audit) -> str:
    warnings = "".join(f'<div class="warn">{_e(w)}</div>' for w in audit.warnings)
    classes = "".join(
        f'<tr><td><i style="display:inline-block;width:12px;height:12px;'
        f'background:{CLASS_COLOURS[v]}"></i> <code>{_e(v.value)}</code></td>'
        f"<td>{_e(DESCRIPTIONS[v])}</td></tr>"
        for v in Verdict
    )
    settings = audit.settings
    meta = (
        f"Started {iso(audit.started)}, finished {iso(audit.finished)}. "
        f"Control resolver: {_e(audit.control or 'none')}. Seed {audit.sample.seed}. "
        f"Limits per resolver: {settings.rate:g} queries/s, {settings.concurrency} in flight, "
        f"timeout {settings.timeout:g} s, {settings.retries} retries."
    )
    body = f"""
<h1>blokir verify: enforcement report</h1>
<p class="lead">{_e(headline(audit))}</p>
<p class="muted">{meta}</p>
{warnings}
{_cards(audit)}
<h2>Enforcement rate</h2>
<p>Share of sampled listed names that each resolver blocked, over the names it answered
(dead and error names left out), with the 95% Wilson score interval as a whisker.</p>
{rate_chart(_rate_rows(audit, subtree=False), "Enforcement rate (95% Wilson CI)")}
<h2>Subtree enforcement</h2>
<p>Share of sampled names whose <code>www.</code> and random-label probes were all blocked.</p>
{rate_chart(_rate_rows(audit, subtree=True), "Subtree enforcement rate (95% Wilson CI)", "#7a5195")}
<h2>Classes</h2>
{class_chart(audit)}
<h2>Figures</h2>
{_figures_table(audit)}
<h3>Counts per class</h3>
<p>Per sampled name (A and AAAA of the name folded into one verdict) and per probe (one query
each, the <code>www.</code> and random-label probes included).</p>
{_counts_table(audit)}
<h2>Landing addresses</h2>
{_landing_section(audit)}
<h2>Disagreements between resolvers</h2>
{_disagreements(audit)}
<h2>Names not blocked</h2>
{_leaks(audit)}
<h2>Sample</h2>
{_strata(audit)}
<h2>What the classes mean</h2>
<table><tbody>{classes}</tbody></table>
<p class="muted">blokir {_e(__version__)}</p>
"""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>blokir verify report</title>"
        f"<style>{CSS}</style></head><body>{body}<script>{JS}</script></body></html>\n"
    )


def write_html(audit: Audit, out: TextIO) -> None:
    out.write(render_html(audit))
