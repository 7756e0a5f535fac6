"""The tui-hpo engine: everything but the UI. It never imports textual or tui_hpo.

Packages, by what they hold:
- `config`: the sweep config (schema, layers, formats, search space, study names).
- `storage`: the database (our tables beside Optuna's, the one study opener, URLs).
- `system`: the machine (platform report and profile, NVML, monitor samples).
- `datasets`: what images a data path holds, and the splits.
- `training`: models, tensors and the training loop; the only package that imports torch.
- `sweep`: the engine process, workers, recovery, samplers, checkpoints, cleanup, repeat.
- `insights`: summary, importance, results files, recommendations, plots, statistics.
Shared by all: `errors` (what the user can fix, said in one line) and `artifacts` (atomic file
writes in the workspace).
"""
