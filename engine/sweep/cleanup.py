"""`tui-hpo cleanup`: disk back from old and failed trials, without touching a live sweep.

For every study that is not running: checkpoints of trials that did not complete (failed,
pruned, or gone from the storage) go. For studies idle for `days` or more, the checkpoints are
also trimmed to the best K within the study's disk budget, and the leftovers of finished runs
(engine output, resume configs, temporary files of interrupted writes) are removed. Results
(config, report, best config and params, trials.csv, the best checkpoint) always stay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from engine.config import SweepConfig, check_study_name
from engine.errors import ConfigError, UserError
from engine.storage import Store
from engine.sweep import checkpoints

DAY_S = 86400.0


@dataclass(frozen=True)
class Removal:
    path: str
    bytes: int
    why: str


@dataclass
class CleanupReport:
    removed: list[Removal] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    samples: int = 0  # system samples deleted from the database
    dry_run: bool = False

    @property
    def freed(self) -> int:
        return sum(r.bytes for r in self.removed)


def _size(path: Path) -> int:
    """Bytes the file frees: nothing while another hard link (best_model.safetensors) keeps it."""
    stat = path.stat()
    return stat.st_size if stat.st_nlink == 1 else 0


def _leftovers(folder: Path, study: str, workdir: Path) -> list[tuple[Path, str]]:
    found = [(p, "temporary file of an interrupted write") for p in folder.rglob(".*.tmp")]
    found += [(p, "temporary link") for p in folder.glob(".*.link")]
    found += [(p, "resume config (the storage keeps the config)") for p in folder.glob("resume.yaml")]
    found += [(p, "engine output of a finished run") for p in workdir.glob(f".engine-{study}.out")]
    return found


def cleanup(url: str, workdir: Path, days: float, keep: int | None = None, only: str | None = None,
            dry_run: bool = False, now: float | None = None) -> CleanupReport:
    """Remove what the rules above say, or with `dry_run` only list it."""
    from engine.storage import optuna_storage

    now = time.time() if now is None else now
    report = CleanupReport(dry_run=dry_run)
    storage = optuna_storage(url, heartbeat=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    names = sorted(s.study_name for s in summaries)
    if only is not None and only not in names:
        raise UserError(f"no study named '{only}' (known: {', '.join(names[:10]) or 'none'})", key="--study")
    store = Store(url)
    try:
        for summary in summaries:
            name = summary.study_name
            if only is not None and name != only:
                continue
            row = store.sweep(name)
            if row is None:
                continue  # a plain Optuna study: no folder of ours
            try:
                check_study_name(name, "--study")  # its folder would not be under the workspace
            except ConfigError:
                report.skipped.append(f"{name!r}: not a folder name, so no folder of ours")
                continue
            if store.alive(row.study_id, now):  # a worker seen lately: its study is left alone
                report.skipped.append(f"{name}: running (workers alive)")
                continue
            _clean_study(report, store, row.study_id, name, SweepConfig.model_validate(row.config),
                         workdir, old=row.updated < now - days * DAY_S, keep=keep, dry_run=dry_run)
        if dry_run:
            report.samples = store.count_samples(before=now - days * DAY_S)
        else:
            report.samples = store.prune_samples(now - days * DAY_S)
    finally:
        store.close()
    return report


def _clean_study(report: CleanupReport, store: Store, study_id: int, name: str, config: SweepConfig,
                 workdir: Path, old: bool, keep: int | None, dry_run: bool) -> None:
    folder = workdir / name
    files = checkpoints.on_disk(folder)
    values = store.values_of(study_id, files)
    maximize = config.objective.directions()[0] == "maximize"
    k = config.checkpoints.keep if keep is None else keep
    budget = config.checkpoints.budget_mb
    taken = checkpoints.sizes(folder, files)
    kept = checkpoints.plan(values, {n: size for n, size in taken.items() if n in values}, maximize,
                            k if old else len(files), budget if old else None)
    doomed = []
    for number in files:
        why = ("checkpoint of a trial that did not complete" if number not in values else
               None if number in kept else f"not among the best {k}" + (f" within {budget:g} MB" if budget else ""))
        if why:
            doomed += [(path, why) for path in checkpoints.trial_files(folder, number)]
    if old:
        doomed += _leftovers(folder, name, workdir)
    for path, why in doomed:
        report.removed.append(Removal(str(path), _size(path), why))
    if dry_run or not doomed:
        return
    with checkpoints.locked(folder):
        for path, _why in doomed:
            path.unlink(missing_ok=True)
        if files:
            checkpoints.trim(folder, values, maximize, len(kept), None)  # best_model.safetensors follows the best kept
