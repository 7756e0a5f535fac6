"""What a program reports, without any library on its side: JSON lines on stdout or in a metrics
file (`{"epoch": 3, "val_f1": 0.81}`; every other line is just output), and a results JSON
written at the end, read by key paths (`best_metrics.rouge_l`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP_KEYS = ("epoch", "step", "iteration", "_step")
MAX_JSON_LINE = 1 << 20  # a longer line is output, never parsed: a program printing a huge blob is not reporting


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"best_metrics": {"rouge_l": 0.4}}` -> `{"best_metrics.rouge_l": 0.4}`."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def numbers(tree: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a report, by (dotted) name; booleans, text and NaN are not metrics."""
    return {k: float(v) for k, v in flatten(tree).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def parse_line(line: str) -> dict[str, Any] | None:
    """A report, if this output line is a JSON object; None for any other line."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")) or len(text) > MAX_JSON_LINE:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Reports:
    """Everything a trial's program reported, merged per step. A report without a step key is
    the next step after the last one that carried any of its metrics (a program printing one
    line per epoch needs no `epoch` field)."""

    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)

    def add(self, report: dict[str, Any]) -> tuple[int, dict[str, float]] | None:
        """Record one report: (its step, its metrics), or None when it holds no number."""
        values = numbers(report)
        step_value = next((values.pop(k) for k in STEP_KEYS if k in values), None)
        for k in STEP_KEYS:
            values.pop(k, None)
        if not values:
            return None
        step = int(step_value) if step_value is not None else max((self._next.get(k, 0) for k in values), default=0)
        for k in values:
            self._next[k] = max(self._next.get(k, 0), step + 1)
        self.steps.setdefault(step, {}).update(values)
        self.last |= values
        return step, self.steps[step]


def read_result(path: Path) -> dict[str, float]:
    """A results JSON's numbers by key path. Raises ValueError with a reason the trial fails with."""
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"the program wrote no {path}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path} holds no JSON object")
    return numbers(tree)
