"""Parts of the Ray tier in this process, without a Ray cluster (tests/test_tune.py runs them on
real Ray): Tune's state files kept whole through a kill, and the trainable out of memory."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from tests.conftest import ROOT, invoke, tight_memory

pytest.importorskip("ray.tune")
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
States = optuna.trial.TrialState


class FakeTune:
    """`ray.tune`'s session functions for one trial: its id, the checkpoint it starts from, and
    the reports it makes (each with a copy of its checkpoint's folder, which the trainable removes)."""

    def __init__(self, trial_id: str, keep: Path, checkpoint: Path | None = None) -> None:
        self.trial_id, self.keep, self.checkpoint = trial_id, keep, checkpoint
        self.reports: list[dict[str, Any]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from ray import tune

        monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: self.trial_id))
        monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(self.checkpoint))
                            if self.checkpoint else None)
        monkeypatch.setattr(tune, "report", self.report)

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        saved = None
        if checkpoint is not None:
            saved = self.keep / f"{self.trial_id}-{len(self.reports)}"
            shutil.copytree(checkpoint.path, saved)
        self.reports.append({**metrics, "checkpoint": saved})


def ray_sweep(workdir: Path, overrides: dict[str, Any]) -> tuple[str, Any, Any, Any]:
    """The tiny sweep with `overrides`, created as `run --backend ray` creates it: (its storage
    URL, the study's link, Tune's round and the study's searcher, as the runner makes them)."""
    from engine.storage import default_url
    from engine.sweep.engine import Engine, create_or_resume
    from engine.sweep.resolve import resolve_run
    from engine.tune.searcher import Round, StudyLink, StudySearcher

    resolved = resolve_run(None, str(TINY), overrides)
    url = default_url(workdir)
    Engine(resolved, url, workdir, "tiny", reporter=None).prepare()
    study = create_or_resume(resolved.config, url, "tiny", workdir)
    link, round_ = StudyLink(url, "tiny"), Round()
    return url, link, round_, StudySearcher(link, round_, "val_f1", "max", study.folder.resolve())


def test_a_restored_trial_whose_checkpoint_tune_had_deleted_runs_again(tmp_path: Path) -> None:
    """Killed after Tune replaced a trial's checkpoint but before it saved its state: the restored
    state names a checkpoint that is gone, and Ray fails the trial. Not the trial's fault: it is
    queued again with the same params, using up no retry, and the sweep goes on."""
    from engine.tune.record import Recorder

    url, link, round_, searcher = ray_sweep(tmp_path, {"budget": {"n_trials": 2, "max_retries": 0}})
    params = searcher.suggest("ray-b")
    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\n  ...\nValueError: Could not recover from checkpoint as "
                     "it does not exist on storage anymore. Got storage fs type `local` and path: /x\n")
    recorder = Recorder(link, round_, "val_f1", [str(d) for d in range(10)], searcher.folder)
    ray_trial = SimpleNamespace(trial_id="ray-b", config=params, last_result={}, error_file=str(error))
    recorder.on_trial_start(0, [], ray_trial)
    recorder.on_trial_error(0, [], ray_trial)
    failed, retry = optuna.load_study(study_name="tiny", storage=url).trials
    assert failed.state == States.FAIL and "its checkpoint was gone" in failed.user_attrs["fail_reason"]
    assert retry.state == States.WAITING and retry.params == failed.params and retry.user_attrs["retries"] == 0
    assert link.store.sweep_state(link.study_id) == "running", "no failure counted towards stopping the sweep"


def test_a_state_file_cut_short_by_a_kill_is_put_back_from_its_last_whole_copy(tmp_path: Path) -> None:
    from engine.tune.state import StateKeeper, repair

    state, search = tmp_path / "experiment_state-1.json", tmp_path / "search_gen_state-1.json"
    state.write_text(json.dumps({"trials": [1]}))
    search.write_text("{}")
    keeper = StateKeeper(tmp_path)
    keeper.keep()
    state.write_text(json.dumps({"trials": [1, 2]}))
    keeper.keep()  # the newer state, copied in its turn
    state.write_text('{"trials": [1, 2')  # Tune killed mid-write
    keeper.keep()  # a torn file is never copied
    search.write_text("")  # killed as it opened the file
    assert sorted(repair(tmp_path)) == [state.name, search.name]
    assert json.loads(state.read_text()) == {"trials": [1, 2]} and search.read_text() == "{}"
    assert repair(tmp_path) == [], "whole files are left alone"
    assert pickle.loads(pickle.dumps(keeper)).experiment == tmp_path, "Tune pickles its callbacks"


def test_a_ray_trial_out_of_memory_halves_its_batch_and_the_study_says_so(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune's session functions are stood in for; everything else is real: the study's searcher
    asks the trial, `fit` trains on the digits, the recorder writes the study. As in the Optuna
    tier (tests/test_crashes.py) the trial goes on at half the batch with twice the gradient
    accumulation; Tune hears each epoch once; a run restored from its checkpoint starts at the
    batch that fitted."""
    from engine.tune import trainable
    from engine.tune.record import Recorder
    from engine.tune.trainable import train

    monkeypatch.setattr(trainable, "CHECKPOINT_EVERY_S", 0.0)  # every epoch's, as PBT has them
    url, link, round_, searcher = ray_sweep(tmp_path, {"budget": {"n_trials": 1}, "train": {"epochs": 3},
                                                       "search_space": {"batch_size": {"choices": [128]}}})
    folder = searcher.folder
    params = searcher.suggest("ray-a")
    assert params is not None and params["batch_size"] == 128
    seen = tight_memory(monkeypatch)
    sweep = link.config.to_dict()
    first = FakeTune("ray-a", tmp_path / "reports-1")
    first.install(monkeypatch)
    train(params, sweep, "tiny", str(folder), "cpu", 1)
    reports = first.reports
    assert [r["epoch"] for r in reports] == [0, 1, 2], "each epoch once, though epoch 0 trained three times"
    assert "oom" not in reports[0] and "oom" not in reports[2]
    assert reports[1]["oom"] == [{"from": 128, "batch_size": 64, "accum_steps": 2},
                                 {"from": 64, "batch_size": 32, "accum_steps": 4}]
    assert [r["final"] for r in reports] == [False, False, True] and reports[2]["val_f1"] > 0.3
    assert (128, 1, 1) in seen and (64, 2, 1) in seen and (32, 4, 2) in seen

    # The recorder writes what the reports say into the trial, as Tune would call it.
    recorder = Recorder(link, round_, "val_f1", [str(d) for d in range(10)], folder)
    ray_trial = SimpleNamespace(trial_id="ray-a", config=params, last_result=None, is_finished=lambda: False)
    recorder.on_trial_start(0, [], ray_trial)
    for i, report in enumerate(reports):
        result = {k: v for k, v in report.items() if k != "checkpoint"} | {
            "training_iteration": i + 1, "hostname": "node", "pid": 7}
        recorder.on_trial_result(0, [], ray_trial, result)
        ray_trial.last_result = result
    recorder.on_trial_complete(0, [], ray_trial)
    trial = optuna.load_study(study_name="tiny", storage=url).trials[0]
    assert trial.state == States.COMPLETE and trial.value == pytest.approx(reports[2]["objective"])
    assert trial.user_attrs["oom_retries"] == [{"batch_size": 64, "accum_steps": 2},
                                               {"batch_size": 32, "accum_steps": 4}]
    events = [e["message"] for e in link.store.events_of(link.study_id)]
    assert "trial 0: out of memory at batch 64; again with batch 32 x 4 accumulation steps (same effective " \
           "batch)" in events
    summary = invoke("summary", "--workdir", str(tmp_path))
    assert "went on with batch 32 x 4 accumulation steps" in summary.stdout

    # Restored from its checkpoint after epoch 1 (a killed engine, a PBT pause): it starts at the
    # batch that fitted, goes on from epoch 2, and never runs out of memory again.
    seen.clear()
    again = FakeTune("ray-a", tmp_path / "reports-2", checkpoint=reports[1]["checkpoint"])
    again.install(monkeypatch)
    train(params, sweep, "tiny", str(folder), "cpu", 1)
    assert [(r["epoch"], r.get("resumed_from"), r["final"]) for r in again.reports] == [(2, 2, True)]
    assert "oom" not in again.reports[0] and seen == [(32, 4, 2)]


def test_every_epoch_checkpointed_only_where_the_scheduler_acts_on_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """PBT and PB2 clone the checkpoint of the epoch they act on, HyperBand pauses a trial there:
    every report carries one. Under ASHA (and median, FIFO) a checkpoint is only what a restore
    goes on from: the first epoch's, the last's, and one every CHECKPOINT_EVERY_S between, so
    that the three Tune keeps span more than its experiment's state lags behind (with one every
    epoch of a fraction of a second, a killed engine's state named a checkpoint already gone)."""
    from engine.config import SweepConfig
    from engine.tune.schedulers import checkpoints_every_epoch
    from engine.tune.trainable import train

    def every_epoch(scheduler: dict[str, Any] | None) -> bool:
        return checkpoints_every_epoch(SweepConfig.model_validate({"backend": "ray", "scheduler": scheduler}))

    assert every_epoch({"name": "pbt"}) and every_epoch({"name": "pb2"}) and every_epoch({"name": "hyperband"})
    assert not every_epoch(None) and not every_epoch({"name": "asha"}) and not every_epoch({"name": "median"})
    assert not every_epoch({"name": "fifo"})

    _url, link, _round, searcher = ray_sweep(tmp_path, {"budget": {"n_trials": 1}, "train": {"epochs": 4},
                                                        "data": {"subset": 400}})
    tune = FakeTune("ray-a", tmp_path / "reports")
    tune.install(monkeypatch)
    train(searcher.suggest("ray-a"), link.config.to_dict(), "tiny", str(searcher.folder), "cpu", 1)
    assert [r["checkpoint"] is not None for r in tune.reports] == [True, False, False, True]
