"""Enforcement rates and their confidence intervals.

The rate of a resolver (or of one category on it) is

    enforcement_rate = blocked / (blocked + not_blocked)

counted over sampled names, one verdict per name (`classify.name_verdict`). The denominator is
the answered sample: names that are `dead` (they do not exist at the control either, so the
answer says nothing about enforcement) and names whose every query failed (`error`) are left
out, and reported in the counts. The subtree rate is the same fraction over sampled names
whose `www.` and random-label probes were made: a name's subtree counts as enforced only when
every answered subtree probe was blocked.

The 95% interval is the Wilson score interval (E. B. Wilson, "Probable inference, the law of
succession, and statistical inference", JASA 22 (1927) 209-212; recommended over the Wald
interval by Newcombe, Statistics in Medicine 17 (1998) 857-872, and Brown, Cai and DasGupta,
Statistical Science 16 (2001) 101-133). With k of n names blocked, p = k/n and z the standard
normal quantile (1.959964 for 95%):

    centre     = (p + z^2 / (2n)) / (1 + z^2 / n)
    half-width = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    interval   = [centre - half-width, centre + half-width]

It stays inside [0, 1] and is sensible at p = 0 or 1 and for small n, where the Wald interval
p +- z sqrt(p(1-p)/n) collapses to a point. The names are drawn without replacement; the interval
ignores the finite-population correction, so it is conservative when the sample is a large part
of the list (and with `--all` the rate is exact; the interval then describes the process, not
the list).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from resolver.verify.classify import Verdict

Z_95 = 1.959963984540054  # the 0.975 quantile of the standard normal distribution


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion; (0, 1) when there are no trials."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return 0.0, 1.0
    n = float(trials)
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(slots=True)
class Rate:
    """k of n, with its Wilson interval. `rate` is None when n is 0 (nothing answered)."""

    successes: int = 0
    trials: int = 0

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.trials)

    def add(self, success: bool) -> None:
        self.trials += 1
        self.successes += int(success)

    def to_json(self, prefix: str = "") -> dict[str, object]:
        low, high = self.interval
        rate = self.rate
        return {
            f"{prefix}rate": None if rate is None else round(rate, 6),
            f"{prefix}ci_low": round(low, 6),
            f"{prefix}ci_high": round(high, 6),
            f"{prefix}blocked": self.successes,
            f"{prefix}denominator": self.trials,
        }


@dataclass(slots=True)
class Group:
    """The figures of one resolver, or one category on one resolver."""

    enforcement: Rate = field(default_factory=Rate)
    subtree: Rate = field(default_factory=Rate)
    counts: Counter[Verdict] = field(default_factory=Counter)  # one per sampled name
    subtree_counts: Counter[Verdict] = field(default_factory=Counter)
    probe_counts: Counter[Verdict] = field(default_factory=Counter)  # one per query
    control_mismatch: int = 0  # not_blocked probes whose addresses differ from the control's

    def add_name(self, verdict: Verdict, subtree: Verdict | None) -> None:
        self.counts[verdict] += 1
        if verdict.answered:
            self.enforcement.add(verdict.blocked)
        if subtree is not None:
            self.subtree_counts[subtree] += 1
            if subtree.answered:
                self.subtree.add(subtree.blocked)

    def add_probe(self, verdict: Verdict, matches_control: bool | None) -> None:
        self.probe_counts[verdict] += 1
        if matches_control is False:
            self.control_mismatch += 1

    def to_json(self) -> dict[str, object]:
        main = self.enforcement.to_json()
        rate = main.pop("rate")
        return {
            "enforcement_rate": rate,
            **main,
            "counts": _counts(self.counts),
            "subtree": {
                **self.subtree.to_json(),
                "counts": _counts(self.subtree_counts),
            },
            "subtree_rate": self.subtree.to_json()["rate"],
            "probe_counts": _counts(self.probe_counts),
            "not_blocked_differing_from_control": self.control_mismatch,
        }


def _counts(counter: Counter[Verdict]) -> dict[str, int]:
    return {v.value: counter.get(v, 0) for v in Verdict}


def subtree_verdict(verdicts: Iterable[Verdict]) -> Verdict | None:
    """A name's subtree outcome from the verdicts of its subtree probe names: not blocked when
    any was answered unblocked, blocked when every answered one was, else dead or error; None
    when there was no subtree probe."""
    seen = list(verdicts)
    if not seen:
        return None
    if Verdict.NOT_BLOCKED in seen:
        return Verdict.NOT_BLOCKED
    for verdict in seen:
        if verdict.blocked:
            return verdict
    return Verdict.DEAD if Verdict.DEAD in seen else Verdict.ERROR
