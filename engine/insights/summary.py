"""Answers about a finished (or running) study: how it went, which trials won.

Plain functions over an Optuna study and our tables, shared by the CLI commands and, later, the
TUI's Analysis screen, so both show the same numbers.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from typing import Any

import optuna
import sqlalchemy as sa

from engine.config import SweepConfig
from engine.config.space import train_key, train_params
from engine.errors import UserError
from engine.insights.gpu import gpu_usage
from engine.insights.validation import judge
from engine.storage import Store, SweepRow, study_facts
from engine.storage.states import ACTIVE, WORKER_LIVE_S, SweepState

States = optuna.trial.TrialState


def sweep_row(url: str, name: str) -> SweepRow | None:
    """Our record of the sweep, or None for a study Optuna wrote without tui-hpo (no tables of ours)."""
    store = Store(url, readonly=True)
    try:
        return store.sweep(name)
    except sa.exc.DBAPIError:
        return None
    finally:
        store.close()


def saved_config(url: str, name: str) -> SweepConfig | None:
    """The resolved config the sweep ran with, as saved in the storage (None for a plain Optuna study)."""
    row = sweep_row(url, name)
    return row.sweep_config() if row else None


def metric_names(config: dict[str, Any], n_objectives: int) -> list[str]:
    """The objectives' names from the saved config; value, value1, ... for a plain Optuna study."""
    metric = (config.get("objective") or {}).get("metric")
    names = metric if isinstance(metric, list) else [metric] if metric else []
    return names if len(names) == n_objectives else [f"value{i}" if i else "value" for i in range(n_objectives)]


def _seconds(trial: optuna.trial.FrozenTrial) -> float:
    return trial.duration.total_seconds() if trial.duration else 0.0


def shown_state(url: str, row: SweepRow | None) -> str:
    """The sweep's state as stored, except a running or paused one that nothing has touched for
    WORKER_LIVE_S (no worker seen, the sweep row not updated): its engine was killed, and the
    stored word would say "running" forever. EXTERNAL for a study tui-hpo did not make."""
    if row is None:
        return SweepState.EXTERNAL.value
    if row.state not in ACTIVE or row.updated > time.time() - WORKER_LIVE_S:
        return str(row.state)
    store = Store(url, readonly=True)
    try:
        return str(row.state) if store.alive(row.study_id) else SweepState.INTERRUPTED.value
    finally:
        store.close()


def sweep_gpu_usage(url: str, row: SweepRow | None, trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
    """GPU busy share, GPU-hours and peak memory over the sweep's span (its first trial's start to
    its last trial's end, or now while it runs), from the engine's system samples; None on a
    machine without NVIDIA GPUs, or for a study tui-hpo did not run (no samples of its own)."""
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
    if row is None or not starts:
        return None
    running = any(t.state == States.RUNNING for t in trials)
    ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
    end = time.time() if running or not ends else max(ends)
    store = Store(url, readonly=True)
    try:
        return gpu_usage(store.samples_between(min(starts), end))
    finally:
        store.close()


def summary(study: optuna.Study, url: str) -> dict[str, Any]:
    """Counts by state, best value(s) and params, compute time, compute saved by pruning,
    failures grouped by reason, and how busy the GPUs were; with what a result is judged by: the
    data split (None for a plain Optuna study), whether its validation set can tell trials apart,
    the best trial's F1 per class, and how many trials early stopping ended."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    row = sweep_row(url, study.study_name)
    config = row.config if row else {}
    metrics = metric_names(config, len(study.directions))
    total_steps = int((config.get("train") or {}).get("epochs", 0)) * int((config.get("data") or {}).get("folds", 1))
    saved = 0.0
    for trial in trials:
        if trial.state == States.PRUNED and trial.intermediate_values and total_steps:
            done = len(trial.intermediate_values)
            saved += _seconds(trial) * (total_steps / done - 1) if done < total_steps else 0.0
    failures = Counter(str(t.user_attrs.get("fail_reason", "unknown")) for t in trials if t.state == States.FAIL)
    out: dict[str, Any] = {
        "study": study.study_name,
        "state": shown_state(url, row),
        "n_trials": row.n_trials if row else None,
        "counts": {state.name: counts.get(state.name, 0) for state in States},
        "metrics": metrics,
        "directions": [d.name.lower() for d in study.directions],
        "compute_seconds": round(sum(_seconds(t) for t in trials), 3),
        "pruning_saved_seconds": round(saved, 3),
        "failures": [{"reason": reason, "count": n} for reason, n in failures.most_common()],
        # Reruns of trials whose worker died, and trials that ran out of memory and went on smaller.
        "retried": [{"trial": t.number, "retry_of": t.user_attrs["retry_of"], "state": t.state.name}
                    for t in trials if "retry_of" in t.user_attrs],
        "oom_retries": [{"trial": t.number, "steps": t.user_attrs["oom_retries"]}
                        for t in trials if t.user_attrs.get("oom_retries")],
        "gpu": sweep_gpu_usage(url, row, trials),
        "data": study_facts(study).get("data"),
        # data.test's figures for the best trial, measured once when the sweep ended (never used to choose)
        "test": study_facts(study).get("test"),
        "stopped_early": sum(1 for t in trials if "stopped_early" in t.user_attrs),
    }
    complete = [t for t in trials if t.state == States.COMPLETE]
    out["best"], out["class_f1"] = None, None
    if complete and len(study.directions) > 1:
        out["pareto_front"] = [{"trial": t.number, "values": dict(zip(metrics, t.values, strict=False)),
                                "params": train_params(t.params)} for t in study.best_trials]
    elif complete:
        best = study.best_trial
        out["best"] = {"trial": best.number, "value": best.value, "params": train_params(best.params)}
        out["class_f1"] = best.user_attrs.get("class_f1")
    out["validation"] = judge(out["data"], out["best"]["value"] if out["best"] else None, metrics[0])
    return out


EVALUATORS = ("ped-anova", "fanova")


def importance(study: optuna.Study, evaluator: str = "ped-anova") -> dict[str, float]:
    """Parameter importance of the first objective, most important first, by training key.

    PED-ANOVA (Optuna's default) needs nothing more; fANOVA needs scikit-learn. Raises UserError
    when the study cannot tell (fewer than two completed trials, or nothing varied). PED-ANOVA
    scores each Optuna name: the parts of a per-case choice list (`batch_size[model=test_vit]`
    beside `batch_size`) are added up under their key, so the scores still sum to one. (fANOVA
    scores only the names every completed trial has, so it has at most one of them.)"""
    complete = study.get_trials(deepcopy=False, states=(States.COMPLETE,))
    if len(complete) < 2:
        raise UserError(f"study '{study.study_name}' has {len(complete)} completed trial(s): importance needs two "
                        "or more", key="--study")
    if evaluator == "fanova":
        try:
            chosen: Any = optuna.importance.FanovaImportanceEvaluator(seed=0)
        except ImportError:
            raise UserError("fANOVA needs scikit-learn: pip install scikit-learn", key="--evaluator") from None
    else:
        chosen = optuna.importance.PedAnovaImportanceEvaluator()
    # PED-ANOVA asks which params lead to LOW target values: a maximised objective is negated.
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*computes the importances of params to achieve low")
            scores = optuna.importance.get_param_importances(study, evaluator=chosen,
                                                             target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"importance cannot be computed: {exc}", key="--study") from None
    folded: dict[str, float] = {}
    for name, score in scores.items():
        folded[train_key(name)] = folded.get(train_key(name), 0.0) + score
    return dict(sorted(folded.items(), key=lambda item: item[1], reverse=True))
