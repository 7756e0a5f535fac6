"""Long trials resume where they stopped (`checkpoints.every`): in-process, a run stopped after two
epochs and rebuilt from its saved state ends exactly as an uninterrupted one; end to end, a worker
SIGKILLed mid-trial is replaced and the rerun goes on from the saved epoch."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from engine.config import DataConfig, TrainConfig
from engine.datasets.scan import parts_of, scan, splits
from engine.errors import Interrupted
from engine.training.fit import EarlyStop, Runtime, fit
from engine.training.resume import ResumeFile, path_of
from engine.training.tensors import load
from tests.test_crashes import States, integrity, start, wait_until
from tests.test_crashes import load as load_study

CFG = TrainConfig(model="test_resnet", epochs=4, image_size=16, batch_size=64, augment=0.5, hflip=True,
                  dropout=0.2, lr=3e-3, seed=7)


def digits(cache: Path):
    data_cfg = DataConfig(subset=300)
    data = load(scan(data_cfg), data_cfg, 16, cache)
    return data, splits(data.labels.numpy(), data_cfg, parts_of(data.scan))[0]


@pytest.mark.parametrize("early", [False, True])
def test_a_stopped_run_resumed_ends_as_an_uninterrupted_one(tmp_path: Path, early: bool) -> None:
    torch.set_num_threads(1)
    stop = EarlyStop("val_f1", True, patience=3) if early else None
    data, split = digits(tmp_path / "cache")
    straight_model, straight = fit(CFG, data, split, Runtime(), early_stop=stop)

    seen: list[int] = []
    resume = ResumeFile(tmp_path / "resume" / "trial_0.pt", every=1)
    with pytest.raises(Interrupted):  # stopped after two epochs, as Ctrl-C stops a trial at its next batch
        fit(CFG, data, split, Runtime(), on_epoch=lambda m: seen.append(m.epoch), should_stop=lambda: len(seen) >= 2,
            early_stop=stop, resume=resume)
    assert seen == [0, 1] and resume.path.exists() and resume.resumed_from is None

    torch.manual_seed(12345)  # a fresh process: other random states, the images loaded again
    np.random.seed(54321)
    data, split = digits(tmp_path / "cache")
    again = ResumeFile(resume.path, every=1)
    replayed: list[int] = []
    model, history = fit(CFG, data, split, Runtime(), on_epoch=lambda m: replayed.append(m.epoch), early_stop=stop,
                         resume=again)
    assert again.resumed_from == 2 and replayed == [0, 1, 2, 3]
    assert [m.to_dict() | {"seconds": 0, "samples_per_s": 0, "peak_mem_mb": 0} for m in history] == \
           [m.to_dict() | {"seconds": 0, "samples_per_s": 0, "peak_mem_mb": 0} for m in straight]
    straight_state, state = straight_model.state_dict(), model.state_dict()
    assert all(torch.equal(straight_state[k], state[k]) for k in straight_state), "the same weights, bit for bit"


def test_a_state_saved_for_another_config_is_not_used(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data, split = digits(tmp_path / "cache")
    resume = ResumeFile(tmp_path / "r.pt", every=2)
    fit(CFG.model_copy(update={"epochs": 2}), data, split, Runtime(), resume=resume)
    other = ResumeFile(resume.path, every=2)
    smaller = CFG.model_copy(update={"epochs": 2, "batch_size": 32, "accum_steps": 2})  # an out-of-memory step down
    _model, history = fit(smaller, data, split, Runtime(), resume=other)
    assert other.resumed_from is None and len(history) == 2


def test_a_worker_killed_mid_trial_resumes_from_its_saved_epoch(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    proc = start(workdir, n_trials=1, parallel=1,
                 extra_env={"TUI_HPO__TRAIN__EPOCHS": "8", "TUI_HPO__CHECKPOINTS__EVERY": "1",
                            "TUI_HPO__DATA__SUBSET": "400"})
    saved = path_of(workdir / "tiny", 0)

    def worker_of_trial_0() -> str | None:
        try:
            return load_study(workdir).trials[0].user_attrs.get("worker")
        except Exception:
            return None

    try:  # eight epochs: a loaded machine's test may look late, and trial 0 must still be training
        wait_until(lambda: saved.exists() and worker_of_trial_0() is not None, 120, "trial 0's first saved epoch")
        os.kill(int(worker_of_trial_0().rsplit(":", 1)[1]), signal.SIGKILL)  # type: ignore[union-attr]
        epoch = torch.load(saved, weights_only=False)["epoch"]  # read before the replacement worker starts
        _out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    study = load_study(workdir)
    assert study.trials[0].state == States.FAIL and study.trials[0].user_attrs["fail_reason"] == "worker died"
    rerun = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert rerun.state == States.COMPLETE
    assert rerun.user_attrs["resumed_from_epoch"] == epoch + 1
    assert sorted(rerun.intermediate_values) == list(range(8)), "the rerun's record has every epoch"
    assert not list((workdir / "tiny" / "resume").glob("*.pt")), "a finished trial's resume file is deleted"
    assert integrity(workdir) == "ok"
    assert isinstance(study, optuna.Study)


def test_a_state_is_due_every_few_epochs_or_minutes(tmp_path: Path) -> None:
    """`checkpoints.every_minutes`: an epoch's end is a save point once the minutes have passed
    since the last save (or the start), whatever `every` says."""
    now = [100.0]
    by_time = ResumeFile(tmp_path / "r.pt", every_s=60.0, clock=lambda: now[0])
    now[0] = 150.0
    assert not by_time.due(0)
    now[0] = 161.0
    assert by_time.due(1)
    by_time.last_saved = now[0]  # as `resume.save` sets it
    now[0] = 200.0
    assert not by_time.due(2)
    both = ResumeFile(tmp_path / "r.pt", every=3, every_s=60.0, clock=lambda: now[0])
    assert [both.due(e) for e in range(6)] == [False, False, True, False, False, True]
    now[0] += 60
    assert both.due(0)
    assert [ResumeFile(tmp_path / "r.pt", every=2).due(e) for e in range(4)] == [False, True, False, True]
