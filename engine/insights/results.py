"""Results of a study as files: report.json, the best config (trainable as it is), best params, all trials."""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from engine.artifacts import dump_yaml, write_atomic
from engine.config import SweepConfig
from engine.config.space import train_key, train_params
from engine.errors import UserError
from engine.insights.summary import importance, metric_names, summary


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial, or the Pareto front of a multi-objective study; empty when none completed."""
    try:
        return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]
    except ValueError:
        return []


def best_config(config: SweepConfig, params: dict[str, Any]) -> dict[str, Any]:
    """A complete config that `tui-hpo train --config` trains: the winning params set in `train`,
    no search space, and batch sizes taken as they are (the profile already scaled them). `params`
    may be a trial's own (Optuna names): they are folded into training keys here."""
    out = config.to_dict()
    if config.runs_command:  # the program's fixed values and the winning ones: a sweep of one trial runs it again
        out["train"] = {**config.params, **train_params(params)}
    else:
        out["train"] = config.train.model_copy(update=train_params(params)).model_dump(mode="json",
                                                                                       exclude_none=True)
    out["search_space"] = {}
    out["budget"] = {**out.get("budget", {}), "n_trials": 1}
    out.setdefault("resources", {})["batch_multiplier"] = 1.0
    return out


# Completed trials before report.json ranks the parameters: from fewer the ranking is noise
# (PED-ANOVA's quantiles select the same trials), not worth scikit-learn's import at every
# sweep's end. `tui-hpo importance` ranks from two on request.
IMPORTANCE_IN_REPORT = 5


def report(study: optuna.Study, url: str, n_top: int = 10) -> dict[str, Any]:
    """Everything a script or a notebook wants from a study, as one JSON document: the summary,
    the top trials, and parameter importance (when IMPORTANCE_IN_REPORT trials completed)."""
    out = summary(study, url)
    out["top"] = top_rows(study, n_top)
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    try:
        if complete < IMPORTANCE_IN_REPORT:
            raise UserError(f"{complete} completed trial(s): the report ranks parameters from "
                            f"{IMPORTANCE_IN_REPORT} (`tui-hpo importance` from two)")
        out["importance"] = importance(study)
    except UserError as exc:
        out["importance"] = None
        out["importance_note"] = str(exc)
    out["exported"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def export_results(study: optuna.Study, config: SweepConfig | None, folder: Path, url: str) -> list[Path]:
    """Write report.json, trials.csv, best_params.yaml (when a trial completed) and
    best_config.yaml (also needs the sweep's config: a plain Optuna study has none); returns the
    paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    report_json = folder / "report.json"
    write_atomic(report_json, json.dumps(report(study, url), indent=2, default=str) + "\n")
    written = [report_json]
    trials_csv = folder / "trials.csv"
    frame = study.trials_dataframe(attrs=("number", "value", "values", "params", "state", "duration",
                                          "datetime_start", "datetime_complete", "user_attrs"))
    write_atomic(trials_csv, _fold_param_columns(frame).to_csv(index=False))
    written.append(trials_csv)
    best = best_trials(study)
    if not best:
        return written
    metrics = metric_names(config.to_dict() if config else {}, len(study.directions))
    if len(study.directions) == 1:  # a front of one trial is still a front: its file says so
        trial = best[0]
        header = (f"# Best trial {trial.number} of study '{study.study_name}': "
                  + ", ".join(f"{m}={v:.4f}" for m, v in zip(metrics, trial.values, strict=True))
                  + ("\n# Run it again: tui-hpo run --config best_config.yaml --study NAME"
                     + (f"\n# Its command was: {shlex.join(trial.user_attrs['command'])}"
                        if "command" in trial.user_attrs else "")
                     if config is not None and config.runs_command
                     else "\n# Train it again: tui-hpo train --config best_config.yaml"))
        write_atomic(folder / "best_params.yaml", dump_yaml({
            "study": study.study_name, "trial": trial.number,
            "values": dict(zip(metrics, trial.values, strict=True)), "params": train_params(trial.params)}))
        written.append(folder / "best_params.yaml")
        if config is not None:
            write_atomic(folder / "best_config.yaml", dump_yaml(best_config(config, trial.params), header))
            written.append(folder / "best_config.yaml")
    else:
        front = [{"trial": t.number, "values": dict(zip(metrics, t.values, strict=True)),
                  "params": train_params(t.params)} for t in best]
        write_atomic(folder / "best_params.yaml", dump_yaml({"study": study.study_name, "pareto_front": front}))
        written.append(folder / "best_params.yaml")
    return written


def _fold_param_columns(frame: Any) -> Any:
    """trials.csv with one column per training key: Optuna's frame has one per Optuna name, so a
    per-case choice list (`params_batch_size[model=test_vit]`) is merged into its key's column.
    Columns are taken by position: a multi-objective frame names `values_0` twice (from `value`
    and `values`), and keeps both, as Optuna wrote them."""
    import pandas as pd  # loaded already: Optuna built the frame with it

    keys = [f"params_{train_key(c.removeprefix('params_'))}" if c.startswith("params_") else c for c in frame.columns]
    if keys == list(frame.columns):
        return frame
    names: list[str] = []
    columns: list[Any] = []
    for position, key in enumerate(keys):
        column = frame.iloc[:, position]
        if key.startswith("params_") and key in names:
            at = names.index(key)
            columns[at] = columns[at].combine_first(column)
        else:
            names.append(key)
            columns.append(column)
    return pd.concat(columns, axis=1, keys=names)


def top_rows(study: optuna.Study, n: int = 10) -> list[dict[str, Any]]:
    """The n best completed trials (by the first objective) as plain rows."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    reverse = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: t.values[0], reverse=reverse)[:n]
    return [{
        "number": t.number, "values": list(t.values), "params": train_params(t.params),
        "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
        "seconds": t.duration.total_seconds() if t.duration else None,
    } for t in ranked]
