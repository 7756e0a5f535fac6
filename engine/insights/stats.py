"""Can I trust the winner? Means, spreads and 95% intervals over seeds, and Welch's t-test between
configs or models, with the verdict said in plain words.

Welch's test does not assume equal variances, which matters when one model is less stable across
seeds than another. Intervals use the t distribution: with three seeds a normal interval would be
far too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Described:
    name: str
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single value
    min: float
    max: float
    ci_low: float | None  # the 95% interval of the mean; None from a single value
    ci_high: float | None


@dataclass(frozen=True)
class Test:
    better: str
    worse: str
    t: float | None
    p: float | None  # None when the test cannot be made; `verdict` says why
    significant: bool
    verdict: str


def describe(values: Sequence[float], name: str = "") -> Described:
    """n, mean, sample std, range and the 95% t interval of the mean. One value has no spread,
    so no interval (None) rather than a zero-width one that would look certain."""
    if not values:
        raise ValueError("describe() needs at least one value")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        low: float | None = mean - half
        high: float | None = mean + half
    else:
        low = high = None
    return Described(name, n, mean, std, min(values), max(values), low, high)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None, str]:
    """(t, two-sided p, why there is none). scipy answers NaN where the test is undefined (fewer
    than two values on a side, or no spread on either); we say why instead."""
    if len(a) < 2 or len(b) < 2:
        return None, None, "needs at least two runs of each (more seeds)"
    if max(a) == min(a) and max(b) == min(b):
        if a[0] == b[0]:
            return 0.0, 1.0, ""
        return None, None, "every run gave the same value on each side: no spread to test against"
    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue), ""


def verdict(best: str, other: str, p: float | None, why: str, alpha: float) -> str:
    """The result in the words a user acts on: which is better, or that more seeds are needed."""
    if p is None:
        return f"cannot tell {best} from {other}: {why}"
    if p < alpha:
        return f"{best} is better than {other} (p={p:.3g}, significant at {alpha:g})"
    return f"no significant difference between {best} and {other} (p={p:.3g}): more seeds would tell"


def compare_groups(groups: dict[str, list[float]], maximize: bool,
                   alpha: float = ALPHA) -> tuple[list[Described], list[Test]]:
    """The groups best first (by mean), and the best tested against each of the others: the
    question asked is "is the winner really better?", not every pair (which would need a
    multiple-testing correction to mean anything)."""
    described = sorted((describe(values, name) for name, values in groups.items() if values),
                       key=lambda d: -d.mean if maximize else d.mean)
    if not described:
        return [], []
    best = described[0]
    tests = []
    for other in described[1:]:
        t, p, why = welch(groups[best.name], groups[other.name])
        significant = p is not None and p < alpha
        tests.append(Test(best.name, other.name, t, p, significant, verdict(best.name, other.name, p, why, alpha)))
    return described, tests
