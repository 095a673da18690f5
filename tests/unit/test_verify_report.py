"""Reports from a synthetic audit: JSON figures, CSV rows, a self-contained HTML page, the
terminal table, Prometheus metrics, and the CLI's option checks."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resolver.cli import main
from resolver.verify.audit import Audit, evaluate
from resolver.verify.classify import BlockTargets, Response, Verdict
from resolver.verify.metrics import VerifyCollector
from resolver.verify.probe import QTYPES, Settings
from resolver.verify.report import table, to_json, write_csv
from resolver.verify.report_html import render_html
from resolver.verify.sample import Domain, Sample, Stratum

LANDING = "192.0.2.10"
NX = 3


def domain(name: str, category: str) -> Domain:
    probes = (("name", name), ("www", f"www.{name}"), ("random", f"blokir-verify-1.{name}"))
    return Domain(name, f"list-{category}", category, probes)


def make_audit() -> Audit:
    """Two resolvers over 10 gambling and 10 phishing names: `strict` blocks all but one
    gambling name (landing) and answers phishing with NXDOMAIN; `leaky` blocks nothing. The
    control knows every name except phish-9, which is dead."""
    domains = [domain(f"judi-{i}.example", "gambling") for i in range(10)]
    domains += [domain(f"phish-{i}.test", "phishing") for i in range(10)]
    control: dict[tuple[str, str], Response] = {}
    strict: dict[tuple[str, str], Response] = {}
    leaky: dict[tuple[str, str], Response] = {}
    for d in domains:
        dead = d.name == "phish-9.test"
        for _, qname in d.probes:
            for qtype in QTYPES:
                real = "198.51.100.7" if qtype == "A" else "2001:db8:ffff::7"
                live = Response(0, (real,))
                control[(qname, qtype)] = Response(NX) if dead else live
                leaky[(qname, qtype)] = Response(NX) if dead else live
                if d.name == "judi-0.example":
                    strict[(qname, qtype)] = live  # the one it misses
                elif d.category == "gambling":
                    landing = LANDING if qtype == "A" else "2001:db8::10"
                    strict[(qname, qtype)] = Response(0, (landing,), ede=((16, "censored"),))
                else:
                    strict[(qname, qtype)] = Response(NX)
    sample = Sample(
        domains,
        [
            Stratum("list-gambling", "gambling", "/g", 10, 10, 0, 10),
            Stratum("list-phishing", "phishing", "/p", 10, 10, 0, 10),
        ],
        seed=99,
        requested=20,
    )
    given = BlockTargets(frozenset({LANDING}))
    results = [
        evaluate("127.0.0.1:5301", domains, strict, control, given, 5),
        evaluate("127.0.0.1:5302", domains, leaky, control, given, 5),
    ]
    return Audit(sample, results, "127.0.0.1:5300", given, Settings(), 5, 1.7e9, 1.7e9 + 3, 360)


def test_json_figures() -> None:
    data: Any = to_json(make_audit())
    json.dumps(data)  # serialisable
    strict = data["resolvers"]["127.0.0.1:5301"]
    # 20 names: 1 dead (phish-9) left out; of 19, 18 blocked.
    assert strict["denominator"] == 19 and strict["blocked"] == 18
    assert strict["enforcement_rate"] == pytest.approx(18 / 19, abs=1e-6)
    assert 0.7 < strict["ci_low"] < 18 / 19 < strict["ci_high"] < 1.0
    assert strict["counts"]["landing"] == 9 and strict["counts"]["nxdomain"] == 9
    assert strict["counts"]["dead"] == 1 and strict["counts"]["not_blocked"] == 1
    assert strict["subtree_rate"] == pytest.approx(18 / 19, abs=1e-6)
    assert strict["probe_counts"]["landing"] == 9 * 3 * 2
    gambling = strict["categories"]["gambling"]
    assert gambling["enforcement_rate"] == 0.9 and gambling["denominator"] == 10
    # The second landing address was learned (9 distinct names, never from the control).
    assert data["landing"]["learned"]["127.0.0.1:5301"]["landing"] == {"2001:db8::10": 9}
    leaky = data["resolvers"]["127.0.0.1:5302"]
    assert leaky["enforcement_rate"] == 0.0 and leaky["counts"]["not_blocked"] == 19
    assert len(data["disagreements"]) == 18
    assert data["sample"]["seed"] == 99
    assert set(data["classes"]) == {v.value for v in Verdict}


def test_csv_one_row_per_probe() -> None:
    out = io.StringIO()
    rows = write_csv(make_audit(), out)
    assert rows == 2 * 20 * 3 * 2
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(parsed) == rows
    first = parsed[6]  # judi-1, name, A on the strict resolver
    assert first["name"] == "judi-1.example" and first["qtype"] == "A"
    assert first["class"] == "landing" and first["ede_code"] == "16"
    assert first["ede_text"] == "censored" and first["control_addresses"] == "198.51.100.7"


def test_html_is_self_contained() -> None:
    page = render_html(make_audit())
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3
    # Nothing loaded from anywhere: no external scripts, styles, images or fonts.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    urls = set(re.findall(r"https?://[^\s\"'<]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "judi-0.example" in page  # listed as not blocked and as a disagreement
    assert "2001:db8::10" in page  # the learned landing address
    assert "<script>alert" not in render_html(make_audit_with_hostile_name())


def make_audit_with_hostile_name() -> Audit:
    audit = make_audit()
    hostile = Domain("<script>alert(1)</script>", "x", "<b>cat</b>", (("name", "x"),))
    audit.sample.domains.append(hostile)
    audit.resolvers[0].domains.append(audit.resolvers[0].domains[0].__class__(
        hostile, Verdict.NOT_BLOCKED, None, {"name": Verdict.NOT_BLOCKED}))  # fmt: skip
    audit.resolvers[1].domains.append(audit.resolvers[1].domains[0].__class__(
        hostile, Verdict.LANDING, None, {"name": Verdict.LANDING}))  # fmt: skip
    return audit


def test_terminal_table() -> None:
    text = table(make_audit())
    assert "127.0.0.1:5301" in text and "gambling" in text and "phishing" in text
    assert "94.7%" in text  # 18/19
    assert "disagreements between resolvers: 18 name(s)" in text


def test_metrics_collector() -> None:
    registry = CollectorRegistry(auto_describe=False)
    collector = VerifyCollector()
    registry.register(collector)
    before = generate_latest(registry).decode()
    assert "blokir_verify_enforcement_ratio{" not in before
    audit = make_audit()
    collector.update(audit)
    collector.update(audit)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    strict = (("category", "all"), ("resolver", "127.0.0.1:5301"))
    assert values[("blokir_verify_enforcement_ratio", strict)] == pytest.approx(18 / 19)
    assert (
        values[("blokir_verify_ci_low", strict)]
        < 18 / 19
        < values[("blokir_verify_ci_high", strict)]
    )
    gambling = (("category", "gambling"), ("resolver", "127.0.0.1:5301"))
    assert values[("blokir_verify_enforcement_ratio", gambling)] == pytest.approx(0.9)
    probes = (("class", "landing"), ("resolver", "127.0.0.1:5301"))
    assert values[("blokir_verify_probes_total", probes)] == 2 * 9 * 3 * 2  # two runs
    assert values[("blokir_verify_last_run_timestamp_seconds", ())] == audit.finished
    assert values[("blokir_verify_runs_total", ())] == 2


def test_cli_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = tmp_path / "l.txt"
    listed.write_text("a.example\n")
    with pytest.raises(SystemExit):
        main(["verify", "--resolver", "127.0.0.1"])  # no list, index or config
    with pytest.raises(SystemExit):
        main(["verify", "--list", str(listed), "--index", "x", "--resolver", "127.0.0.1"])
    assert main(["verify", "--list", str(listed), "--resolver", "resolver.example"]) == 2
    assert "not an IP address" in capsys.readouterr().err
    assert main(["verify", "--list", str(listed), "--resolver", "127.0.0.1", "--rate", "0"]) == 2
    assert main(["verify", "--list", str(tmp_path / "none"), "--resolver", "127.0.0.1"]) == 2
    assert "not found" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    from resolver.verify import ProgressBar

    tty = _Terminal()
    bar = ProgressBar(tty, total=10)
    for _ in range(10):
        bar(1)
    bar.close()
    assert "10/10 queries" in tty.getvalue() and tty.getvalue().endswith("\n")
    plain = io.StringIO()
    quiet = ProgressBar(plain, total=10)
    quiet(10)
    quiet.close()
    assert plain.getvalue() == ""
