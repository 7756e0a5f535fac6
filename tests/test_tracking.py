"""`integrations:` for real: small sweeps of a stdlib program, run in this process (the engine's
checks, the study, one worker), log each finished trial to an offline W&B run and an MLflow file
store, read back with the libraries' own readers; a tracker that fails never fails a trial; a
package that is missing is named in one line before the sweep starts."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from engine.storage import Store, default_url
from tests.conftest import invoke

pytestmark = [
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("wandb", "mlflow")),
                       reason="needs the wandb and mlflow extras: pip install -e '.[wandb,mlflow]'"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage"),  # the worker runs its own, as in a sweep
    pytest.mark.xdist_group("tracking"),  # one process imports mlflow and wandb (seconds) for all of them
]

States = optuna.trial.TrialState

# One line per epoch; trial 0 fails after its first, so the runs hold both a failed and a complete trial.
PROGRAM = """
import json, os, sys
lr = float(os.environ["TUI_HPO_PARAM_LR"])
for epoch in range(1, int(os.environ["TUI_HPO_PARAM_EPOCHS"]) + 1):  # steps from 1: not W&B's own count
    print(json.dumps({"epoch": epoch, "score": lr * epoch, "loss": 1 / epoch}))
    if os.environ["TUI_HPO_TRIAL"] == "0":
        sys.exit("trial 0 fails on purpose")
"""


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Offline W&B with its settings and caches under tmp_path; no tracking server of the user's."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # as the tracker sets it, but undone after the test
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    yield
    if "wandb" in sys.modules and sys.modules["wandb"] is not None:
        sys.modules["wandb"].teardown()  # the W&B service this process started


def write_sweep(tmp_path: Path, integrations: dict[str, Any], n_trials: int = 1) -> Path:
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM).lstrip())
    config = {"objective": {"command": [sys.executable, "prog.py"], "metric": "score", "direction": "maximize"},
              "train": {"epochs": 3, "note": "fixed"}, "search_space": {"lr": {"low": 0.001, "high": 0.1, "log": True}},
              "budget": {"n_trials": n_trials}, "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
              "integrations": integrations}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_sweep(tmp_path: Path, integrations: dict[str, Any], n_trials: int = 1,
              missing_on_worker: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> optuna.Study:
    """What `tui-hpo run` does, in this process with one worker: the checks, the study, the trials.
    `missing_on_worker`: a package the worker's machine lacks (the engine's had it)."""
    from engine.sweep.engine import Engine, create_or_resume
    from engine.sweep.resolve import resolve_run
    from engine.sweep.worker import Worker

    resolved = resolve_run(None, str(write_sweep(tmp_path, integrations, n_trials)), {}, environ={})
    workdir = tmp_path / "runs"
    workdir.mkdir()
    url = default_url(workdir)
    Engine(resolved, url, workdir, "sweep", reporter=None).prepare()  # type: ignore[arg-type]
    create_or_resume(resolved.config, url, "sweep", workdir)
    if missing_on_worker and monkeypatch:
        monkeypatch.setitem(sys.modules, missing_on_worker, None)
    Worker(url, "sweep", workdir, "cpu", 0, threading.Event()).run()
    return optuna.load_study(study_name="sweep", storage=url)


# ---------------------------------------------------------------- W&B's offline run files


def wandb_records(path: Path) -> list[Any]:
    """The records of an offline run's `run-<id>.wandb` file, as `wandb sync` reads them. wandb
    0.31 writes no config.yaml or wandb-summary.json offline and has no Python reader of its own
    left: the file is LevelDB's log format (32 KiB blocks of [crc32c, length, type] chunks) after
    a 7-byte header, each record one of wandb's own protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, chunk, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST: a record is whole
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def wandb_run(folder: Path) -> dict[str, Any]:
    """An offline run: its name, tags, group, config, steps, summary and exit code."""
    (path,) = folder.glob("run-*.wandb")
    run: dict[str, Any] = {"steps": {}, "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run |= {"name": r.display_name, "tags": list(r.tags), "group": r.run_group, "project": r.project,
                    "config": {i.key: json.loads(i.value_json) for i in r.config.update if i.key != "_wandb"}}
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            run["steps"][items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif kind == "summary":
            run["summary"] |= {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update}
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


# ---------------------------------------------------------------- the tests


def expected_steps(trial: optuna.trial.FrozenTrial) -> dict[int, dict[str, float]]:
    lr, epochs = trial.params["lr"], 1 if trial.state == States.FAIL else 3
    return {e: {"score": lr * e, "loss": 1 / e} for e in range(1, epochs + 1)}


def test_each_finished_trial_is_one_run_in_wandb_and_mlflow(tmp_path: Path) -> None:
    """Every trial, complete or failed, is one run in each tracker: the sampled and the fixed
    parameters, every epoch's metrics at its step, the objective's final value, the state and
    duration, the study and trial number; read back with W&B's and MLflow's own record formats."""
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    study = run_sweep(tmp_path, {"wandb": {"project": "tui-hpo-test", "mode": "offline"},
                                 "mlflow": {"tracking_uri": uri, "experiment": "tracked"}})
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [States.FAIL, States.COMPLETE]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    by_number = {int(r.data.tags["trial_number"]): r for r in runs}
    assert sorted(by_number) == [0, 1], "one run per finished trial"
    for trial in trials:
        run = by_number[trial.number]
        assert run.info.run_name == f"sweep-trial-{trial.number}"
        assert run.data.tags["study"] == "sweep" and run.data.tags["state"] == trial.state.name
        assert run.info.status == ("FINISHED" if trial.state == States.COMPLETE else "FAILED")
        assert run.data.params == {"lr": repr(trial.params["lr"]), "epochs": "3", "note": "fixed"}
        for name in ("score", "loss"):
            history = client.get_metric_history(run.info.run_id, name)
            assert {m.step: m.value for m in history} == {s: v[name] for s, v in expected_steps(trial).items()}
        assert run.data.metrics["duration_s"] == trial.user_attrs["duration_s"]
        if trial.state == States.COMPLETE:
            assert run.data.metrics["objective/score"] == trial.value
        else:
            assert "objective/score" not in run.data.metrics
            assert "fails on purpose" in run.data.tags["fail_reason"]

    folders = sorted((tmp_path / "runs" / "sweep" / "wandb").glob("offline-run-*"))
    wandb_runs = sorted((wandb_run(f) for f in folders), key=lambda r: r["summary"]["trial_number"])
    assert len(wandb_runs) == 2, "one W&B run per finished trial, under DIR/<study>/wandb"
    for trial, run in zip(trials, wandb_runs, strict=True):
        assert run["name"] == f"sweep-trial-{trial.number}" and run["group"] == "sweep"
        assert run["project"] == "tui-hpo-test" and trial.state.name in run["tags"]
        assert run["config"] == {"lr": trial.params["lr"], "epochs": 3, "note": "fixed"}
        assert run["steps"] == expected_steps(trial)
        assert run["summary"]["state"] == trial.state.name
        assert run["summary"]["duration_s"] == trial.user_attrs["duration_s"]
        assert run["summary"].get("objective/score") == trial.value
        assert run["exit_code"] == (0 if trial.state == States.COMPLETE else 1)


def test_a_tracker_that_fails_never_fails_a_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow cannot write its store (its folder is under a file) and this worker has no wandb:
    every trial still completes; each failure is a warning event, MLflow's until it gives up
    after three in a row, W&B's once."""
    from engine.sweep.tracking import MAX_FAILURES

    (tmp_path / "a-file").write_text("not a folder")
    study = run_sweep(tmp_path, {"mlflow": {"tracking_uri": (tmp_path / "a-file" / "mlruns").as_uri()},
                                 "wandb": {"project": "p"}},
                      n_trials=3, missing_on_worker="wandb", monkeypatch=monkeypatch)
    assert [t.state for t in study.trials] == [States.FAIL] + [States.COMPLETE] * 3
    store = Store(default_url(tmp_path / "runs"))
    warnings = [e["message"] for e in store.events_of(study._study_id, 0, 1000)
                if e["level"] == "warning" and "not logged" in e["message"]]
    mlflow = [w for w in warnings if "to MLflow" in w]
    wandb = [w for w in warnings if "to W&B" in w]
    assert len(mlflow) == MAX_FAILURES and "off on this worker after 3 failures" in mlflow[-1], warnings
    assert len(wandb) == 1 and "pip install 'tui-hpo[wandb]'" in wandb[0], warnings


@pytest.mark.parametrize("key", ["wandb", "mlflow"])
def test_a_missing_package_is_one_line_before_the_sweep(key: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, key, None)  # `import wandb` fails as if it were not installed
    section = {"wandb": {"project": "p"}, "mlflow": {"tracking_uri": (tmp_path / "mlruns").as_uri()}}[key]
    config = write_sweep(tmp_path, {key: section})
    result = invoke("run", "--config", str(config), "--workdir", str(tmp_path / "runs"), "--no-tui")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"integrations.{key}" in lines[0] and f"pip install 'tui-hpo[{key}]'" in lines[0], lines
    assert not (tmp_path / "runs" / "hpo.db").exists(), "checked before the study is made"


def test_integrations_are_not_part_of_a_studys_identity(tmp_path: Path) -> None:
    """Adding, changing or dropping the trackers resumes the study; an unknown key is refused."""
    from engine.config.schema import validate
    from engine.errors import ConfigError
    from engine.sweep.engine import create_or_resume
    from engine.sweep.resolve import resolve_run

    url = default_url(tmp_path)
    first = resolve_run(None, str(write_sweep(tmp_path, {})), {}, environ={}).config
    assert not create_or_resume(first, url, "sweep", tmp_path).resumed
    logged = resolve_run(None, str(write_sweep(tmp_path, {"mlflow": {"experiment": "x"}})), {}, environ={}).config
    assert create_or_resume(logged, url, "sweep", tmp_path).resumed
    with pytest.raises(ConfigError, match=r"integrations\.wandb\.projekt: unknown key"):
        validate({"integrations": {"wandb": {"project": "p", "projekt": "p"}}}, None)


def test_folds_share_their_epochs_steps() -> None:
    """k-fold's epoch rows become one step per epoch, each fold's metrics under `fold<k>/` (W&B
    takes a run's steps in order only); unset built-in columns are left out."""
    from engine.sweep.tracking import steps

    row = {"trial_id": 1, "study_id": 1, "val_loss": None}
    rows = [{**row, "fold": f, "epoch": e, "ts": 10.0 * f + e, "val_f1": f + e / 10} for f in (0, 1) for e in (0, 1)]
    assert [(s.step, s.metrics) for s in steps(rows)] == [
        (0, {"fold0/val_f1": 0.0, "fold1/val_f1": 1.0}), (1, {"fold0/val_f1": 0.1, "fold1/val_f1": 1.1})]
    assert [s.metrics for s in steps(rows[:2])] == [{"val_f1": 0.0}, {"val_f1": 0.1}], "one fold: plain names"
