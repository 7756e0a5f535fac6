"""Telling the user: what is news about a sweep (engine.sweep.notify.Watch), once each; the
terminal's bell and OSC 9/777 notifications the app writes for it (tui_hpo.notify), tmux's
passthrough; and the config's `notify: {command: ...}` hook, run for real, whose failure is one
warning and never the sweep's."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from engine.config.schema import validate
from engine.errors import ConfigError
from engine.storage import Store
from engine.sweep.notify import Event, Hook, Notice, Snapshot, Watch
from tests.studies import make_study
from tui_hpo import app as app_module
from tui_hpo.app import make_app
from tui_hpo.notify import sequences

RUNNING, FINISHED = "running", "finished"


def snap(complete: int, fail: int = 0, best: float | None = None, state: str = RUNNING) -> Snapshot:
    return Snapshot(state, {"COMPLETE": complete, "FAIL": fail}, best, 20)


def test_watch_tells_each_event_once() -> None:
    watch = Watch("demo")
    assert watch.see(snap(3, 1, 0.8)) == [], "the first look is the baseline, not news"
    assert watch.see(snap(3, 1, 0.8)) == []
    (best,) = watch.see(snap(4, 1, 0.9))
    assert best.event == Event.BEST and "new best 0.9" in best.message and best.best == 0.9
    assert watch.see(snap(5, 1, 0.9)) == [], "a trial that does not beat the best is no news"
    assert watch.see(snap(5, 3, 0.9)) == [], "two failures in a row are not yet news"
    (fails,) = watch.see(snap(5, 4, 0.9))
    assert fails.event == Event.FAILURES and "3 trials in a row failed" in fails.message
    assert watch.see(snap(5, 6, 0.9)) == [], "said once per run of failures"
    assert watch.see(snap(6, 6, 0.9)) == []
    (again,) = watch.see(snap(6, 9, 0.9))  # a trial finished between: a new run of failures
    assert again.event == Event.FAILURES
    (done,) = watch.see(snap(20, 9, 0.9, FINISHED))
    assert done.event == Event.FINISHED and "sweep 'demo' finished" in done.message and done.done == 20
    assert watch.see(snap(20, 9, 0.9, FINISHED)) == []
    minimize = Watch("loss", maximize=False)
    minimize.see(snap(1, best=0.5))
    assert minimize.see(snap(2, best=0.7)) == [] and minimize.see(snap(3, best=0.4))[0].event == Event.BEST
    attached_late = Watch("old")
    assert attached_late.see(snap(20, 5, 0.9, FINISHED)) == [] and attached_late.see(snap(20, 5, 0.9, FINISHED)) == []
    stopped = Watch("s")
    stopped.see(snap(2))
    assert [n.event for n in stopped.see(snap(2, state="stopped"))] == [Event.STOPPED]


def test_terminal_sequences_bell_osc9_osc777_and_tmux() -> None:
    plain = sequences("sweep 'demo' finished\x1b]evil\x07", {})
    assert plain == ("\x07\x1b]9;tui-hpo: sweep 'demo' finished ]evil \x07"
                     "\x1b]777;notify;tui-hpo;sweep 'demo' finished ]evil \x07"), "control characters cannot end it"
    tmux = sequences("done", {"TMUX": "/tmp/tmux-1000/default,1,0"})
    assert tmux == ("\x07\x1bPtmux;\x1b\x1b]9;tui-hpo: done\x07\x1b\\"
                    "\x1bPtmux;\x1b\x1b]777;notify;tui-hpo;done\x07\x1b\\"), "the bell plain, each OSC passed through"
    assert sequences("done", {"TUI_HPO_NOTIFY": "bell, OSC9"}) == "\x07\x1b]9;tui-hpo: done\x07"
    assert sequences("done", {"TUI_HPO_NOTIFY": "off"}) == ""


def test_the_app_rings_once_for_each_event_of_the_watched_sweep(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's own poll, on a live fixture study changed under it: a new best, three failures in
    a row and the sweep's end are each written to the terminal once, however many polls follow."""
    monkeypatch.setattr(app_module, "NEWS_POLL_S", 0.1)
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TUI_HPO_NOTIFY", raising=False)
    url = make_study(tmp_path, n_trials=12, running=2)
    study = optuna.load_study(study_name="demo", storage=url)
    store = Store(url)
    written: list[str] = []

    async def polls(app, n: int = 5) -> None:
        seen = app.news_polls
        while app.news_polls < seen + n:
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="system")
        app.terminal_write = written.append
        async with app.run_test(size=(80, 24)):
            await polls(app)
            assert written == [], "what was true before the app looked is no news"
            study.add_trial(optuna.trial.create_trial(value=0.999))
            await polls(app)
            for _ in range(3):
                study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
            await polls(app)
            store.update_sweep(store.sweep("demo").study_id, state="finished")
            await polls(app)
            assert [n.title for n in app._notifications] == ["sweep best", "sweep failures", "sweep finished"]

    asyncio.run(scenario())
    store.close()
    assert len(written) == 3, written
    best, fails, finished = written
    assert best.startswith("\x07\x1b]9;tui-hpo: new best 0.999 in sweep 'demo'") and "\x1b]777;notify;tui-hpo;" in best
    assert "3 trials in a row failed in sweep 'demo'" in fails
    assert "\x1b]777;notify;tui-hpo;sweep 'demo' finished: " in finished and "best 0.999" in finished


def notice(event: str = Event.BEST) -> Notice:
    return Notice(event=event, study="demo", message="new best 0.93 in sweep 'demo' (\"quoted\")", best=0.93,
                  done=4, n_trials=20, failed=1)


def test_the_hook_runs_the_command_with_the_notice_in_its_environment(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    hook = Hook('printf "%s|%s|%s|%s|%s" "$TUI_HPO_EVENT" "$TUI_HPO_STUDY" "$TUI_HPO_BEST" "$TUI_HPO_DONE" '
                '"$TUI_HPO_N_TRIALS" > out.txt; printf "%s" "$TUI_HPO_JSON" > body.json; echo said', cwd=tmp_path,
                log=log)
    hook.run(notice())
    assert hook.wait(10) == []
    assert (tmp_path / "out.txt").read_text() == "best|demo|0.93|4|20"
    assert yaml.safe_load((tmp_path / "body.json").read_text()) == {"text": notice().message}
    assert log.read_text() == "said\n", "the command's own output goes to the engine's log"


def test_a_failing_or_hanging_hook_is_reported_never_raised(tmp_path: Path) -> None:
    hook = Hook("exit 3")
    hook.run(notice())
    assert hook.wait(10) == ["notify.command for 'best' failed with exit code 3"]
    hung = Hook("sleep 30", timeout_s=0.2)
    started = time.monotonic()
    hung.run(notice(Event.FINISHED))
    assert hung.poll() == [], "never waited on while the sweep runs"
    time.sleep(0.3)
    assert hung.poll() == ["notify.command for 'finished' did not end in time and was killed"]
    assert time.monotonic() - started < 5
    nowhere = Hook("true", cwd=tmp_path / "missing")
    nowhere.run(notice())
    assert nowhere.poll()[0].startswith("notify.command could not start for 'best': ")


@pytest.mark.parametrize(("section", "error"), [
    ({"command": "curl x", "comand": "y"}, "notify.comand: unknown key 'comand'"),
    ({"command": ["curl", "x"]}, "notify.command: input should be a valid string"),
    ({"command": ""}, "notify.command: string should have at least 1 character"),
    ("curl x", "notify: input should be a valid dictionary"),
])
def test_a_bad_notify_section_is_one_line(section: object, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")) as caught:
        validate({"notify": section}, "sweep.yaml")
    assert "\n" not in str(caught.value)


def test_a_headless_sweep_runs_its_hook_and_a_failing_one_is_one_warning(tmp_path: Path) -> None:
    """One real sweep of a stdlib program (two trials): the hook hears the new bests and the end,
    and although it fails every time, the sweep finishes with exit 0 and one warning event."""
    from tests.conftest import invoke

    (tmp_path / "prog.py").write_text("import json, os\nprint(json.dumps({'score': float(os.environ"
                                      "['TUI_HPO_PARAM_LR'])}))\n")
    events = tmp_path / "events.txt"
    config = {"name": "hooked", "objective": {"command": [sys.executable, "prog.py"], "metric": "score",
                                              "direction": "maximize"},
              "search_space": {"lr": {"low": 0.001, "high": 0.1}}, "sampler": {"name": "random", "seed": 0},
              "pruner": {"name": "none"}, "budget": {"n_trials": 2}, "resources": {"parallel": 1},
              "notify": {"command": f'echo "$TUI_HPO_EVENT $TUI_HPO_DONE" >> {events}; exit 1'}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    result = invoke("run", "--config", str(tmp_path / "sweep.yaml"), "--workdir", str(tmp_path / "runs"), "--no-tui")
    assert result.returncode == 0, result.stderr
    said = events.read_text().splitlines()
    assert said[-1] == "finished 2" and said.count("finished 2") == 1, said
    assert all(line.split()[0] in ("best", "finished") for line in said), said
    store = Store(f"sqlite:///{tmp_path / 'runs' / 'hpo.db'}")
    warnings = [e["message"] for e in store.events_of(store.sweep("hooked").study_id, 0, 1000)
                if e["level"] == "warning"]
    store.close()
    assert len(warnings) == 1 and "notify.command for '" in warnings[0] and "exit code 1" in warnings[0], warnings
