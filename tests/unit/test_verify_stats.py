"""The Wilson interval against published values, and the per-name counting behind the rates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver.verify.classify import Verdict
from resolver.verify.stats import Z_95, Group, Rate, subtree_verdict, wilson_interval

# Newcombe, "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Statistics in Medicine 17 (1998) 857-872, Table II, method 3 (Wilson score
# interval without continuity correction), to four decimals.
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE)
def test_wilson_matches_newcombe(k: int, n: int, low: float, high: float) -> None:
    got_low, got_high = wilson_interval(k, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_known_small_cases() -> None:
    # Closed forms: at k = 0 the upper bound is z^2 / (n + z^2); at k = n the lower is n/(n+z^2).
    z2 = Z_95 * Z_95
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(0, 10)[1] == pytest.approx(z2 / (10 + z2))
    assert wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + z2))
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=5e-5)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=5e-5) and high == pytest.approx(0.7634, abs=5e-5)
    # 100 of 200: the interval a 50% RPZ audit should produce, symmetric about one half.
    low, high = wilson_interval(100, 200)
    assert low == pytest.approx(0.4314, abs=5e-5) and high == pytest.approx(1 - low)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_rejects_impossible_counts() -> None:
    for k, n in ((-1, 5), (6, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(k, n)


@given(st.integers(min_value=1, max_value=5000).flatmap(lambda n: st.tuples(
    st.integers(min_value=0, max_value=n), st.just(n))))  # fmt: skip
def test_wilson_properties(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    mirror_low, mirror_high = wilson_interval(n - k, n)
    assert math.isclose(low, 1 - mirror_high, abs_tol=1e-12)
    assert math.isclose(high, 1 - mirror_low, abs_tol=1e-12)
    # Never wider than the whole range, and narrower with more trials at the same proportion.
    wider_low, wider_high = wilson_interval(k, n)
    more_low, more_high = wilson_interval(4 * k, 4 * n)
    assert more_high - more_low <= wider_high - wider_low + 1e-12


def test_rate_json() -> None:
    rate = Rate()
    for blocked in (True, True, False):
        rate.add(blocked)
    data = rate.to_json()
    assert data["rate"] == round(2 / 3, 6) and data["blocked"] == 2 and data["denominator"] == 3
    assert Rate().rate is None and Rate().to_json()["ci_low"] == 0.0


def test_group_denominator_leaves_out_dead_and_error() -> None:
    group = Group()
    verdicts = [Verdict.LANDING, Verdict.NXDOMAIN, Verdict.NOT_BLOCKED, Verdict.DEAD, Verdict.ERROR]
    for verdict in verdicts:
        group.add_name(verdict, None)
    assert group.enforcement.successes == 2 and group.enforcement.trials == 3
    data = group.to_json()
    assert data["enforcement_rate"] == round(2 / 3, 6)
    assert data["counts"] == {
        "landing": 1, "nxdomain": 1, "ede": 0, "cname": 0, "refused": 0, "nodata": 0,
        "not_blocked": 1, "dead": 1, "error": 1,
    }  # fmt: skip
    assert data["subtree_rate"] is None  # no subtree probe was made


def test_subtree_verdict() -> None:
    assert subtree_verdict([]) is None
    assert subtree_verdict([Verdict.LANDING, Verdict.NOT_BLOCKED]) is Verdict.NOT_BLOCKED
    assert subtree_verdict([Verdict.LANDING, Verdict.DEAD]) is Verdict.LANDING
    assert subtree_verdict([Verdict.DEAD, Verdict.ERROR]) is Verdict.DEAD
    assert subtree_verdict([Verdict.ERROR]) is Verdict.ERROR
