"""Answers about a study, shared by the CLI and the Analysis screen so both show the same numbers.

- `summary`: counts, best trial or Pareto front, compute, pruning savings, failures; importance.
- `results`: report.json, best config and params, trials.csv.
- `recommend`: the next sweep, narrowed to where the best trials fell.
- `plots`: PNG figures and one HTML report.
- `stats`: means, intervals and Welch's t-test over seeds.
- `gpu_verdicts`: `tui-hpo gpu benchmark`'s figures in plain words.
"""
