"""Writes the digits as the two CSV files trainer.py reads: data/digits_train.csv (1,438 rows)
and data/digits_val.csv (359 rows), a seeded 80/20 split; columns pixel_0..pixel_63 (0-16) and
label. The source is the UCI handwritten digits scikit-learn ships inside its package (found
without importing it: it is installed with tui-hpo). Standard library only; run it once with the
venv's Python:

    .venv/bin/python configs/examples/prepare_data.py            # -> configs/examples/data/
    .venv/bin/python configs/examples/prepare_data.py --out DIR
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        sys.exit("scikit-learn is not installed: its package holds the digits (pip install scikit-learn)")
    with gzip.open(Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz", "rt", encoding="ascii") as fh:
        rows = [[str(int(float(v))) for v in row] for row in csv.reader(fh) if row]
    random.Random(0).shuffle(rows)
    n_val = len(rows) // 5
    args.out.mkdir(parents=True, exist_ok=True)
    header = [*(f"pixel_{i}" for i in range(len(rows[0]) - 1)), "label"]
    for name, part in (("digits_train.csv", rows[n_val:]), ("digits_val.csv", rows[:n_val])):
        with open(args.out / name, "w", newline="", encoding="ascii") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(part)
        print(f"{args.out / name}: {len(part)} rows")


if __name__ == "__main__":
    main()
