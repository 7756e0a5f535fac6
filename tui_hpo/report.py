"""Report metrics from your own training script to the tui-hpo trial running it:

    from tui_hpo.report import report
    report(epoch=3, val_f1=0.81, val_loss=0.4)

One JSON line per call, written to the metrics file tui-hpo gives the trial
(TUI_HPO_METRICS_FILE) or, outside a sweep, to stdout. Printing the same JSON line yourself
works just as well: this module is a convenience, with nothing but the standard library, so a
script may copy it instead of depending on tui-hpo.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

METRICS_FILE_ENV = "TUI_HPO_METRICS_FILE"


def report(**metrics: Any) -> None:
    """Report one step's metrics (`epoch` or `step` numbers the step; without one, each call is
    the next). Numbers are metrics; NaN and infinity are written as null, which tui-hpo skips."""
    line = json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()},
                      default=float)
    path = os.environ.get(METRICS_FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    else:
        print(line, file=sys.stdout, flush=True)
