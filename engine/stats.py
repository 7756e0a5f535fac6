"""Can I trust the winner? Means, spreads and 95% intervals over seeds, and Welch's t-test between
configs or models, with the verdict said in plain words.

Welch's test does not assume equal variances, which matters when one model is less stable across
seeds than another. Intervals use the t distribution: with three seeds a normal interval would be
far too narrow.
"""

from __future__ import annotations

import math
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
    p: float | None
    significant: bool
    verdict: str


def describe(name: str, values: list[float]) -> Described:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    if n > 1:
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = None
    return Described(name, n, mean, std, min(values), max(values), low, high)


def welch(a: list[float], b: list[float]) -> tuple[float | None, float | None, str]:
    """(t, two-sided p, why there is none). Needs two values on each side and some variance."""
    if len(a) < 2 or len(b) < 2:
        return None, None, "needs at least two runs of each (more seeds)"
    if max(a) == min(a) and max(b) == min(b):
        if a[0] == b[0]:
            return 0.0, 1.0, ""
        return None, None, "every run gave the same value on each side: no spread to test against"
    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue), ""


def compare(groups: dict[str, list[float]], maximize: bool, alpha: float = ALPHA) -> tuple[list[Described], list[Test]]:
    """The groups best first (by mean), and the best tested against each of the others."""
    described = sorted((describe(name, values) for name, values in groups.items() if values),
                       key=lambda d: -d.mean if maximize else d.mean)
    if not described:
        return [], []
    best = described[0]
    tests = []
    for other in described[1:]:
        t, p, why = welch(groups[best.name], groups[other.name])
        if p is None:
            verdict = f"cannot tell {best.name} from {other.name}: {why}"
            significant = False
        elif p < alpha:
            verdict = f"{best.name} is better than {other.name} (p={p:.3g}, significant at {alpha:g})"
            significant = True
        else:
            verdict = (f"no significant difference between {best.name} and {other.name} (p={p:.3g}): "
                       "more seeds would tell")
            significant = False
        tests.append(Test(best.name, other.name, t, p, significant, verdict))
    return described, tests
