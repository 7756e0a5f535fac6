"""A program as the objective, for real: sweeps of small scripts run as subprocesses, each way
parameters go in and metrics come out, pruning by signals, and the ways a program misbehaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from engine.storage import Store, default_url
from tests.conftest import ROOT, invoke, run_cli

States = optuna.trial.TrialState


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def sweep(tmp_path: Path, config: dict[str, Any], program: str, name: str = "prog.py",
          env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, optuna.Study]:
    """Run `config` headless on `program` (written beside it); the CLI's result and the study."""
    write(tmp_path, name, program)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("run", "--config", str(path), "--workdir", str(tmp_path / "runs"), "--no-tui", env=env)
    return result, optuna.load_study(study_name="sweep", storage=default_url(tmp_path / "runs"))


def attrs(study: optuna.Study) -> list[dict[str, Any]]:
    return [t.user_attrs for t in sorted(study.trials, key=lambda t: t.number)]


# A program that reads its parameters every way tui-hpo passes them, and says which agree.
EVERY_WAY_IN = """
import argparse, json, os, sys, yaml
p = argparse.ArgumentParser()
p.add_argument("--config")
p.add_argument("--as-json")
p.add_argument("--json-file")
p.add_argument("--lr", type=float)
p.add_argument("--optimizer.momentum", type=float, dest="momentum")
p.add_argument("--epochs", type=int)
p.add_argument("--name")
p.add_argument("--seed")
a = p.parse_args()
from_yaml = yaml.safe_load(open(a.config))
from_json = json.loads(a.as_json)
from_file = json.load(open(a.json_file))
assert from_yaml == from_json == from_file, (from_yaml, from_json, from_file)
assert from_yaml["lr"] == a.lr and from_yaml["optimizer"]["momentum"] == a.momentum, (from_yaml, a)
assert float(os.environ["TUI_HPO_PARAM_LR"]) == a.lr
assert float(os.environ["TUI_HPO_PARAM_OPTIMIZER_MOMENTUM"]) == a.momentum
assert float(os.environ["LEARNING_RATE"]) == a.lr and os.environ["SEED"] == "7"
assert a.epochs == 2 and a.name == "fixed value" and from_yaml["epochs"] == 2
out = os.environ["TUI_HPO_OUTPUT_DIR"]
assert out.endswith(os.path.join("trials", os.environ["TUI_HPO_TRIAL"])) and os.path.isdir(out), out
assert os.environ["TUI_HPO_STUDY"] == "sweep" and "TUI_HPO_STORAGE" not in os.environ
print("parameters read four ways, all the same")
for epoch in range(a.epochs):
    print(json.dumps({"epoch": epoch, "score": 1 - abs(a.lr - 0.01) - a.momentum / 100}))
"""


def test_parameters_go_in_every_way_and_agree(tmp_path: Path) -> None:
    """Flags, a YAML file, JSON on the command line and in a file, TUI_HPO_PARAM_*, the user's
    own variable names: one trial's parameters, the same in each; fixed values beside them; a
    dotted (nested) name nested in files. The program asserts it; a failed assert fails the trial."""
    config = {
        "objective": {"command": ["{python}", "prog.py", "--config", "{config}", "--as-json", "{args_json}",
                                  "--json-file", "{args_json_file}", "{args}"],
                      "metric": "score", "direction": "maximize",
                      "env": {"LEARNING_RATE": "lr", "SEED": "seed"}},
        "train": {"epochs": 2, "name": "fixed value", "seed": 7},
        "search_space": {"lr": {"low": 0.001, "high": 0.1, "log": True},
                         "optimizer.momentum": {"low": 0.5, "high": 0.99}},
        "budget": {"n_trials": 2}, "sampler": {"name": "random", "seed": 0},
    }
    result, study = sweep(tmp_path, config, EVERY_WAY_IN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [t.state for t in study.trials] == [States.COMPLETE] * 2, [a.get("fail_reason") for a in attrs(study)]
    for trial in study.trials:
        expected = 1 - abs(trial.params["lr"] - 0.01) - trial.params["optimizer.momentum"] / 100
        assert trial.value == pytest.approx(expected) and trial.intermediate_values.keys() == {0, 1}
        log = Path(trial.user_attrs["log"])
        assert log == tmp_path / "runs" / "sweep" / "trials" / str(trial.number) / "output.log"
        assert "parameters read four ways, all the same" in log.read_text()
        assert trial.user_attrs["command"][8:] == [
            "--epochs=2", "--name=fixed value", "--seed=7", f"--lr={trial.params['lr']}",
            f"--optimizer.momentum={trial.params['optimizer.momentum']}"], "fixed values, then the sampled ones"
    rows = Store(default_url(tmp_path / "runs")).epochs_of(study.trials[0]._trial_id)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["score"] == pytest.approx(study.trials[0].value)
    best = yaml.safe_load((tmp_path / "runs" / "sweep" / "best_config.yaml").read_text())
    assert best["train"] == {"epochs": 2, "name": "fixed value", "seed": 7, **study.best_trial.params}
    report = json.loads((tmp_path / "runs" / "sweep" / "report.json").read_text())
    assert report["importance"] is None and "ranks parameters from 5" in report["importance_note"], \
        "two trials rank nothing: no importance (nor scikit-learn's import) at this sweep's end"


REPORTS = """
import json, os, sys
how = os.environ["TUI_HPO_PARAM_HOW"]
lr = float(os.environ["TUI_HPO_PARAM_LR"])
for epoch in range(3):
    values = {"epoch": epoch, "score": lr * (epoch + 1), "note": "text is not a metric"}
    if how == "stdout":
        print(json.dumps(values))
    elif how == "file":
        print("{not json} and other output")
        with open(os.environ["TUI_HPO_METRICS_FILE"], "a") as fh:
            fh.write(json.dumps(values) + "\\n")
    else:
        from tui_hpo.report import report
        report(**values)
if how == "stdout":
    sys.stdout.write('{"score": ' + str(lr * 10) + ', "epoch": 2}')  # the last line without its newline
"""


def test_metrics_come_out_on_stdout_in_the_metrics_file_or_through_the_helper(tmp_path: Path) -> None:
    config = {
        "objective": {"command": ["{python}", "prog.py"], "metric": "score", "direction": "maximize", "flags": False},
        "search_space": {"how": {"choices": ["stdout", "file", "helper"]}, "lr": {"choices": [0.5]}},
        "sampler": {"name": "grid"}, "pruner": {"name": "none"},
    }
    result, study = sweep(tmp_path, config, REPORTS)
    assert result.returncode == 0, result.stdout + result.stderr
    by_how = {t.params["how"]: t for t in study.trials}
    assert {how: t.state for how, t in by_how.items()} == {h: States.COMPLETE for h in ("stdout", "file", "helper")}, \
        [a.get("fail_reason") for a in attrs(study)]
    assert by_how["stdout"].value == pytest.approx(5.0), "the last report wins, even without its newline"
    for how in ("file", "helper"):
        assert by_how[how].value == pytest.approx(1.5) and by_how[how].intermediate_values == \
            {0: pytest.approx(0.5), 1: pytest.approx(1.0), 2: pytest.approx(1.5)}
        assert by_how[how].user_attrs["metrics"] == {"score": 1.5}


ORIGIN_STYLE = """
import json, os, pathlib, sys, yaml
config = yaml.safe_load(open(sys.argv[sys.argv.index("--config") + 1]))
seed = int(os.environ["SEED"])
out = pathlib.Path(os.environ["TUI_HPO_OUTPUT_DIR"]) / "results"
out.mkdir()
rouge = 0.3 + config["learning_rate"] * 10 + seed / 1000
(out / "training_results.json").write_text(json.dumps({"best_metrics": {"rouge_l": rouge, "loss": 1.2},
                                                       "status": "ok"}))
"""


def test_a_results_file_read_by_its_key_path(tmp_path: Path) -> None:
    """The origin documents' trainer: a config file, SEED in the environment, and a results JSON
    at the end, whose nested metrics are the objectives (two here) by their key paths."""
    config = {
        "objective": {"command": ["{python}", "prog.py", "--config", "{config}"],
                      "metric": ["best_metrics.rouge_l", "best_metrics.loss"], "direction": ["maximize", "minimize"],
                      "env": {"SEED": "seed"},
                      "result_file": "{output_dir}/results/training_results.json"},
        "train": {"seed": 3},
        "search_space": {"learning_rate": {"choices": [0.01, 0.02]}},
        "sampler": {"name": "grid"}, "pruner": {"name": "none"},
    }
    result, study = sweep(tmp_path, config, ORIGIN_STYLE)
    assert result.returncode == 0, result.stdout + result.stderr
    values = sorted(t.values for t in study.trials)  # two objectives, both from the file
    assert values == [[pytest.approx(0.403), 1.2], [pytest.approx(0.503), 1.2]]
    best = study.best_trials
    assert len(best) == 1 and best[0].user_attrs["metrics"] == {"best_metrics.rouge_l": pytest.approx(0.503),
                                                                "best_metrics.loss": 1.2}
    # `repeat` runs the program again with other seeds (its `seed`, here in SEED): 3, then 4
    repeated = invoke("repeat", "--workdir", str(tmp_path / "runs"), "--study", "sweep", "--top", "1", "--seeds", "2",
                      "--json")
    assert repeated.returncode == 0, repeated.stdout + repeated.stderr
    runs = json.loads(repeated.stdout)["configs"][0]["runs"]
    assert runs == {"3": pytest.approx(0.503), "4": pytest.approx(0.504)}
    assert (tmp_path / "runs" / "sweep" / "repeats" / f"trial{best[0].number}-seed4" / "output.log").exists()


PRUNED = """
import json, os, signal, subprocess, sys, time
ignore = os.environ["TUI_HPO_PARAM_IGNORE"] == "True"
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(os.environ["TUI_HPO_OUTPUT_DIR"], "pids"), "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def stop(*_):
        print("got SIGTERM: saving and leaving", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
for epoch in range(100):
    print(json.dumps({"epoch": epoch, "score": 0.1}))
    time.sleep(0.2)
"""


def test_a_pruned_program_gets_sigterm_then_sigkill_and_leaves_nothing_running(tmp_path: Path) -> None:
    """Both trials report a score under the pruner's threshold: one program stops on SIGTERM,
    the other ignores it and is killed after the grace period. Each is PRUNED with its last
    value, and neither it nor the child it started outlives the trial."""
    config = {
        "objective": {"command": ["{python}", "prog.py"], "metric": "score", "direction": "maximize",
                      "grace_s": 1.0},
        "search_space": {"ignore": {"choices": [True, False]}},
        "sampler": {"name": "grid"},
        "pruner": {"name": "threshold", "options": {"lower": 0.5, "n_warmup_steps": 2}},
    }
    started = time.monotonic()
    result, study = sweep(tmp_path, config, PRUNED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60, "a program ignoring SIGTERM was not killed"
    for trial in study.trials:
        assert trial.state == States.PRUNED and trial.value == pytest.approx(0.1), trial.user_attrs
        assert sorted(trial.intermediate_values) == [0, 1, 2], "pruned at the first step past the warm-up"
        folder = tmp_path / "runs" / "sweep" / "trials" / str(trial.number)
        for pid in map(int, (folder / "pids").read_text().split()):
            assert not alive(pid), f"pid {pid} of trial {trial.number} outlived it"
        said = "got SIGTERM: saving and leaving" in (folder / "output.log").read_text()
        assert said == (not trial.params["ignore"])
        assert trial.user_attrs["exit_code"] == (-signal.SIGKILL if trial.params["ignore"] else 0)


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


MISBEHAVES = """
import json, os, sys, time
mode = os.environ["TUI_HPO_PARAM_MODE"]
if mode == "crash":
    for i in range(30):
        print(f"stderr line {i}", file=sys.stderr)
    print(json.dumps({"score": 0.5}))
    sys.exit(3)
if mode == "garbage":
    import subprocess  # a child left running when the program ends: it goes with the trial
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.path.join(os.environ["TUI_HPO_OUTPUT_DIR"], "pids"), "w") as fh:
        fh.write(str(child.pid))
    sys.stdout.buffer.write(b"\\xff\\xfe not utf-8 \\x1b[2J\\n")
    sys.stdout.write("{" + "x" * 3_000_000 + "}\\n")  # a huge line: output, not a report
    sys.stdout.write("{not json}\\n[1, 2]\\n" + "y" * 200_000 + "\\n")
    print(json.dumps({"score": float("nan"), "other": 1}))
    print(json.dumps({"epoch": 0, "score": 0.75}))
    sys.exit(0)
if not os.path.exists("hung_once"):  # the first time; its reruns (failed trials run again) fail at once
    open("hung_once", "w").close()
    time.sleep(600)  # hangs: the trial timeout ends it
sys.exit(1)
"""


def test_a_crash_garbage_and_a_hang(tmp_path: Path) -> None:
    config = {
        "objective": {"command": ["{python}", "prog.py"], "metric": "score", "direction": "maximize",
                      "grace_s": 0.5},
        "search_space": {"mode": {"choices": ["crash", "garbage", "hang"]}},
        "sampler": {"name": "grid"}, "pruner": {"name": "none"},
        "budget": {"trial_timeout": 3, "max_consecutive_failures": 3},
    }
    result, study = sweep(tmp_path, config, MISBEHAVES)
    by_mode = {t.params["mode"]: t for t in sorted(study.trials, key=lambda t: -t.number)}  # each mode's first
    crash = by_mode["crash"]
    assert crash.state == States.FAIL
    reason = crash.user_attrs["fail_reason"]
    assert "exit code 3" in reason and "stderr line 29" in reason and "stderr line 10" in reason
    assert "stderr line 9\n" not in reason, "the last 20 lines, not all"
    assert by_mode["garbage"].state == States.COMPLETE and by_mode["garbage"].value == 0.75
    folder = tmp_path / "runs" / "sweep" / "trials" / str(by_mode["garbage"].number)
    assert b"\xff\xfe not utf-8" in (folder / "output.log").read_bytes(), "output is kept as it came"
    assert (folder / "output.log").stat().st_size > 3_000_000
    assert not alive(int((folder / "pids").read_text())), "a child the program left running outlived its trial"
    hang = by_mode["hang"]
    assert hang.state == States.FAIL and "ran past budget.trial_timeout (3 s)" in hang.user_attrs["fail_reason"]
    assert hang.duration.total_seconds() < 15
    assert result.returncode == 0, result.stdout  # failed grid points run again until three finish
    assert "trial 0 failed: ProgramFailed: the program ended with exit code 3; its last stderr lines: (see " \
        in result.stdout, "an event is one line"


def test_a_program_that_never_reports_the_metric_stops_the_sweep_at_once(tmp_path: Path) -> None:
    program = 'import json\nprint("training...")\nprint(json.dumps({"val/acc": 0.9, "loss": 0.3}))\n'
    config = {"objective": {"command": ["{python}", "prog.py"], "metric": "val_accuracy"},
              "search_space": {"lr": {"low": 0.001, "high": 0.1}}, "budget": {"n_trials": 5}}
    result, study = sweep(tmp_path, config, program)
    assert result.returncode == 1
    assert [t.state for t in study.trials] == [States.FAIL]
    assert study.trials[0].user_attrs["fail_reason"] == ("MissingMetric: the program did not report 'val_accuracy' "
                                                         "(a JSON line on stdout or the metrics file); it reported: "
                                                         "loss, val/acc")
    assert "stopped: trial 0 the program did not report 'val_accuracy'" in result.stdout


WANDB_PROGRAM = """
import json, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
assert set(args) == {"lr", "optimizer.name", "optimizer.beta", "epochs"}, args
assert args["epochs"] == "2" and args["optimizer.name"] in ("adam", "sgd")
for step in range(int(args["epochs"])):
    print(json.dumps({"_step": step, "val loss": float(args["lr"]) + float(args["optimizer.beta"])}))
"""


def test_a_wandb_sweep_file_runs_its_program_unchanged(tmp_path: Path) -> None:
    """W&B's own file, macros and nested parameters included: the program gets `k=v` arguments
    (`${args_no_hyphens}`), a metric name with a space, and W&B's default goal."""
    write(tmp_path, "train.py", WANDB_PROGRAM)
    path = write(tmp_path, "sweep.yaml", """
        program: train.py
        project: demo
        method: random
        metric: {name: val loss}
        run_cap: 3
        parameters:
          lr: {distribution: log_uniform, min: -6.9, max: -2.3}
          epochs: {value: 2}
          optimizer:
            parameters:
              name: {values: [adam, sgd]}
              beta: {distribution: uniform, min: 0.8, max: 0.99}
        command:
          - ${env}
          - ${interpreter}
          - ${program}
          - ${args_no_hyphens}
    """)
    result = run_cli("run", "--config", str(path), "--workdir", str(tmp_path / "runs"), "--no-tui")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metric.goal is not given: W&B minimizes 'val loss'" in result.stdout
    study = optuna.load_study(study_name="sweep", storage=default_url(tmp_path / "runs"))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert [t.state for t in study.trials] == [States.COMPLETE] * 3, [a.get("fail_reason") for a in attrs(study)]
    for trial in study.trials:
        assert trial.value == pytest.approx(trial.params["lr"] + trial.params["optimizer.beta"])
        assert trial.user_attrs["command"][:2] == ["/usr/bin/env", sys.executable]


GPU_PROGRAM = """
import json, os, time
start = time.time()
time.sleep(1.5)
with open(os.path.join(os.environ["TUI_HPO_OUTPUT_DIR"], "ran"), "w") as fh:
    json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, fh)
print(json.dumps({"score": 1.0}))
"""


class Quiet:
    def event(self, row: dict[str, Any]) -> None:
        pass

    def progress(self, status: Any) -> None:
        pass


def test_command_trials_run_side_by_side_on_two_gpus(tmp_path: Path) -> None:
    """A machine with two (fake) GPUs: one worker per GPU, each trial's program sees only its
    worker's GPU in CUDA_VISIBLE_DEVICES, and trials on the two GPUs overlap in time."""
    from engine.sweep.engine import Engine
    from engine.sweep.resolve import resolve_run
    from tests.test_workers import machine

    write(tmp_path, "prog.py", GPU_PROGRAM)
    config = write(tmp_path, "sweep.yaml", """
        objective: {command: ["{python}", prog.py], metric: score, direction: maximize}
        search_space: {lr: {low: 0.001, high: 0.1}}
        budget: {n_trials: 4}
        resources: {trials_per_gpu: 1}
    """)
    resolved = resolve_run(None, str(config), {}, environ={}, info=machine([80_000, 80_000]))
    assert resolved.platform == "cuda" and resolved.config.resources.parallel == 2
    workdir = tmp_path / "runs"
    assert Engine(resolved, default_url(workdir), workdir, "gpus", Quiet()).run() == 0
    ran = [json.loads(p.read_text()) for p in sorted((workdir / "gpus" / "trials").glob("*/ran"))]
    assert len(ran) == 4 and {r["gpu"] for r in ran} == {"0", "1"}
    first = {gpu: min((r for r in ran if r["gpu"] == gpu), key=lambda r: r["start"]) for gpu in ("0", "1")}
    assert first["0"]["start"] < first["1"]["end"] and first["1"]["start"] < first["0"]["end"], "side by side"


STOPPABLE = """
import json, os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(os.environ["TUI_HPO_OUTPUT_DIR"], "pids"), "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
print(json.dumps({"epoch": 0, "score": 0}))
time.sleep(600)  # silent: no write to a closed pipe would end it
"""


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9 worker", "kill -9 all"])
def test_stopping_the_sweep_never_leaves_a_program_running(tmp_path: Path, how: str) -> None:
    """Ctrl-C, the worker killed with SIGKILL: the running trial's program and the child it
    started are gone, and the trial is queued to run again. Engine and workers killed at once: no
    code of ours runs, yet Linux kills the program with its worker, and what the program started
    goes when the sweep is resumed. (The engine alone killed: its workers stop as on Ctrl-C, the
    same path for a program's trial; tests/test_crashes.py kills it for built-in trials.)"""
    write(tmp_path, "prog.py", STOPPABLE)
    config = write(tmp_path, "sweep.yaml", """
        objective: {command: ["{python}", prog.py], metric: score, direction: maximize, grace_s: 1}
        search_space: {lr: {low: 0.001, high: 0.1}}
        budget: {n_trials: 1, max_retries: 0}
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUI_HPO__")}
    engine = subprocess.Popen([sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(config), "--workdir",
                               str(tmp_path / "runs"), "--no-tui"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    pids_file = tmp_path / "runs" / "sweep" / "trials" / "0" / "pids"
    deadline = time.monotonic() + 60
    while not pids_file.exists() or not pids_file.read_text():
        assert time.monotonic() < deadline and engine.poll() is None, "the trial never started"
        time.sleep(0.1)
    pids = [int(p) for p in pids_file.read_text().split()]
    if how == "ctrl-c":
        os.killpg(engine.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the engine and its workers
    elif how == "kill -9 worker":
        worker = next(int(p) for p in _children(engine.pid) if p not in pids)
        os.kill(worker, signal.SIGKILL)
    else:
        os.killpg(engine.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pids[0]):
            assert time.monotonic() < deadline, "the program outlived its worker"
            time.sleep(0.1)
        assert alive(pids[1]), "what the program started lives on until the sweep is resumed"
        engine.wait()
        engine = subprocess.Popen([sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(config), "--workdir",
                                   str(tmp_path / "runs"), "--no-tui"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"{[p for p in pids if alive(p)]} outlived the trial ({how})"
        time.sleep(0.2)
    if how in ("kill -9 worker", "kill -9 all"):  # the sweep goes on (a new worker, or resumed): Ctrl-C ends it
        os.killpg(engine.pid, signal.SIGINT)
    engine.wait(timeout=60)
    storage = default_url(tmp_path / "runs")
    deadline = time.monotonic() + 60  # a worker under load may take a while to record its stop
    while optuna.load_study(study_name="sweep", storage=storage).trials[0].state == States.RUNNING:
        assert time.monotonic() < deadline, "the stopped trial was never recorded"  # its worker records it
        time.sleep(0.2)
    first = optuna.load_study(study_name="sweep", storage=storage).trials[0]
    assert first.state == States.FAIL
    assert first.user_attrs["fail_reason"] == ("interrupted" if how == "ctrl-c" else "worker died")
    for later in (tmp_path / "runs" / "sweep" / "trials").glob("*/pids"):  # a rerun, stopped in turn
        assert not any(alive(int(p)) for p in later.read_text().split()), later


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_validate_checks_the_program_before_anything_runs(tmp_path: Path) -> None:
    """A dry run names the program and its folder; a script that is not there, a program not on
    PATH and a macro W&B does not have are one line each, exit 2, before any trial."""
    write(tmp_path, "train.py", "print('{\"score\": 1}')\n")

    def validate(command: list[str]) -> Any:
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump({"objective": {"command": command, "metric": "score", "direction": "maximize"},
                                        "search_space": {"lr": {"low": 0.1, "high": 0.2}}}))
        return invoke("validate", str(path), "--workdir", str(tmp_path / "runs"))

    result = validate(["python3", "train.py", "${args}"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"program: python3 train.py ${{args}} (in {tmp_path})" in result.stdout.replace("\n", " ")
    for command, error in ((["python3", "trian.py"], f"objective.command[1]: trian.py is not in {tmp_path}"),
                           (["pyhton3", "train.py"], "objective.command[0]: 'pyhton3' is not a program on PATH"),
                           (["python3", "train.py", "${arg}"], "objective.command[2]: unknown macro ${arg}"),
                           (["python3", "train.py", "--x=${args}"],
                            "objective.command[2]: {args} stands for whole arguments")):
        result = validate(command)
        assert result.returncode == 2 and error in result.stderr, (command, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
