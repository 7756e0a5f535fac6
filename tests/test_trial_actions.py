"""Trial actions: enqueue with chosen params, fail and retry, copy params (OSC 52), notes in
optuna-dashboard's format, and two trials compared; on fixture studies, plus one real sweep that
runs a trial enqueued while it goes."""

from __future__ import annotations

import base64
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from textual.widgets import Input, Static, TextArea

from engine.config import SweepConfig
from engine.config.space import ParamSpec, RangeOverride, suggest
from engine.storage import Store, load_study, optuna_storage
from tests.studies import make_study
from tests.test_tui import run, text_of, wait_for
from tui_hpo import notes
from tui_hpo.app import make_app
from tui_hpo.clipboard import as_flags, as_yaml
from tui_hpo.control import FAILED_FROM_TUI, Control, Queued
from tui_hpo.db import Reader
from tui_hpo.enqueue import ConfigSpace, TrialSpace, domains_of
from tui_hpo.screens.actions import ConfirmScreen, CopyScreen, EnqueueScreen, NoteScreen
from tui_hpo.screens.compare import CompareScreen, diff_table
from tui_hpo.screens.trial import TrialScreen
from tui_hpo.widgets.trial_table import TrialTable

States = optuna.trial.TrialState


def demo(tmp_path: Path) -> tuple[str, Reader, object]:
    """The fixture sweep: 12 finished trials (one failed) and 2 running, a budget of 14."""
    url = make_study(tmp_path, n_trials=12, running=2)
    reader = Reader(url)
    return url, reader, reader.studies()[0]


def space_of(reader: Reader, study, params: dict) -> ConfigSpace:
    sweep = SweepConfig.model_validate(reader.sweep_config(study.study_id))
    return ConfigSpace(sweep.search_space, sweep.fixed(), params)


def test_enqueue_checks_the_space_and_writes_a_waiting_trial_a_worker_takes(tmp_path: Path) -> None:
    url, reader, study = demo(tmp_path)
    space = space_of(reader, study, {"model": "test_resnet", "lr": 0.001})
    assert [f.name for f in space.fields] == ["model", "lr", "batch_size", "weight_decay", "label_smoothing"]
    assert [f.value for f in space.fields][:3] == ["test_resnet", "0.001", ""]  # prefilled; empty: the sampler's
    typed = {"model": "test_convnext", "lr": "2e-3", "batch_size": "128"}
    for bad, said in [({"lr": "0.5"}, "lr: 0.5 is outside the space (3.00e-04 .. 0.01 log)"),
                      ({"model": "resnet99"}, "model: 'resnet99' is not one of test_resnet | test_efficientnet | "
                                              "test_convnext"),
                      ({"batch_size": "96"}, "batch_size: '96' is not one of 64 | 128"),
                      ({"weight_decay": "a lot"}, "weight_decay: 'a lot' is not a number (the space: 1.00e-05 .. "
                                                  "0.1 log)"),
                      ({"model": "", "lr": "", "batch_size": ""}, "give at least one value")]:
        with pytest.raises(ValueError) as refused:
            space.check({**typed, **bad})
        assert str(refused.value).startswith(said), refused.value
    point = space.check(typed)
    assert point == {"model": "test_convnext", "lr": 0.002, "batch_size": 128}
    assert type(point["batch_size"]) is int  # the choice itself: Optuna finds it by equality

    control = Control(url)
    first = control.enqueue(study.name, study.study_id, point)
    assert (first.number, first.n_trials, first.raised) == (14, 14, False)  # 11 done + 2 running + 1 queued
    second = control.enqueue(study.name, study.study_id, {"lr": 0.003})
    assert (second.number, second.n_trials, second.raised) == (15, 15, True), "no slot left: the budget grows"
    assert Store(url).sweep("demo").n_trials == 15
    events = [e.message for e in reader.events(study.study_id)]
    assert "trial 14 queued from the TUI: model=test_convnext lr=0.002 batch_size=128" in events
    assert "trial 15 queued from the TUI: lr=0.003; budget raised to 15 trials" in events

    optuna_study = load_study(url, "demo")
    waiting = optuna_study.get_trials(states=(States.WAITING,))
    assert [t.number for t in waiting] == [14, 15]
    assert waiting[0].system_attrs["fixed_params"] == point and waiting[0].user_attrs == {"enqueued": "from the TUI"}
    # What a worker does next (engine.sweep.worker.run_one): ask, then sample the space.
    taken = optuna_study.ask()
    sweep = SweepConfig.model_validate(reader.sweep_config(study.study_id))
    sampled = suggest(taken, sweep.search_space, sweep.fixed())
    assert taken.number == 14 and {k: sampled[k] for k in point} == point
    reader.close()
    control.close()


def test_per_model_cases_and_plain_optuna_studies() -> None:
    space = {"model": ParamSpec(choices=["test_resnet", "test_vit"]),
             "batch_size": ParamSpec(choices=[64, 128], by={"model": {"test_vit": RangeOverride(choices=[16, 32])}}),
             "momentum": ParamSpec(low=0.8, high=0.99, when={"model": "test_resnet"})}
    cases = ConfigSpace(space, {}, {"model": "test_vit", "batch_size": 16})
    assert [f.hint for f in cases.fields] == ["test_resnet | test_vit", "16 | 32", "not searched with these values"]
    assert cases.check({"model": "test_vit", "batch_size": "32"}) == {"model": "test_vit",
                                                                       "batch_size[model=test_vit]": 32}
    for typed, said in [({"batch_size": "32"}, "batch_size: depends on model: give model too, or leave batch_size "
                                               "empty"),
                        ({"model": "test_vit", "batch_size": "64"}, "batch_size: '64' is not one of 16 | 32"),
                        ({"model": "test_vit", "momentum": "0.9"}, "momentum: not searched with these values "
                                                                   "(model=test_resnet): leave it empty")]:
        with pytest.raises(ValueError, match=None) as refused:
            cases.check(typed)
        assert str(refused.value) == said
    # A study plain Optuna made: the space is a trial's own distributions.
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1, step=0.25) + t.suggest_int("n", 2, 8, log=True), n_trials=1)
    trial = study.trials[0]
    plain = TrialSpace(domains_of(trial.distributions), trial.params)
    assert [(f.name, f.hint) for f in plain.fields] == [("x", "0 .. 1 step 0.25"), ("n", "2 .. 8 log (int)")]
    assert plain.check({"x": "0.75", "n": "3"}) == {"x": 0.75, "n": 3}
    for typed, said in [({"x": "0.3"}, "x: 0.3 is outside the space (0 .. 1 step 0.25)"),
                        ({"n": "2.5"}, "n: 2.5 is not a whole number"), ({"n": "9"}, "n: 9 is outside the space")]:
        with pytest.raises(ValueError) as refused:
            plain.check(typed)
        assert str(refused.value).startswith(said)


def dashboard_note(system_attrs: dict, trial_id: int | None) -> str:
    """A note as optuna-dashboard reads it (its documented keys, its own reading): the version key
    must exist, the chunks are joined by index, as many as there are."""
    ver = "dashboard:note_ver" if trial_id is None else f"dashboard:{trial_id}:note_ver"
    prefix = "dashboard:note_str:" if trial_id is None else f"dashboard:{trial_id}:note_str:"
    if ver not in system_attrs:
        return ""
    chunks = {k: v for k, v in system_attrs.items() if k.startswith(prefix)}
    return "".join(chunks[f"{prefix}{i}"] for i in range(len(chunks)))


def test_notes_round_trip_with_optuna_dashboards_format(tmp_path: Path) -> None:
    url, reader, study = demo(tmp_path)
    control = Control(url)
    storage = optuna_storage(url, heartbeat=False)
    long = "## lr too high\n" + "x" * 5000  # three chunks of 2045 characters
    assert control.save_note(study.study_id, 5, long, seen=0) == notes.Note(1, long)
    control.save_note(study.study_id, None, "**the study**", seen=0)
    attrs = storage.get_study_system_attrs(study.study_id)
    assert attrs["dashboard:5:note_ver"] == 1 and len(attrs["dashboard:5:note_str:0"]) == 2045
    assert dashboard_note(attrs, 5) == long and dashboard_note(attrs, None) == "**the study**"
    # Shorter again: the chunks no longer needed are blanked, and their reader gets the new body.
    control.save_note(study.study_id, 5, "short", seen=1)
    attrs = storage.get_study_system_attrs(study.study_id)
    assert attrs["dashboard:5:note_str:2"] == "" and dashboard_note(attrs, 5) == "short"
    assert notes.load(url, study.study_id, 5) == notes.Note(2, "short")
    # The reverse: a note optuna-dashboard saved (version 3, two chunks), read by us; and a save
    # from a version read before it is refused, as optuna-dashboard refuses it.
    for key, value in {"dashboard:7:note_ver": 3, "dashboard:7:note_str:0": "a" * 2045,
                       "dashboard:7:note_str:1": "b"}.items():
        storage.set_study_system_attr(study.study_id, key, value)
    assert notes.load(url, study.study_id, 7) == notes.Note(3, "a" * 2045 + "b")
    with pytest.raises(notes.NoteConflict):
        control.save_note(study.study_id, 7, "mine", seen=2)
    assert notes.load(url, study.study_id, 7).body == "a" * 2045 + "b"
    reader.close()
    control.close()
    # A database plain Optuna wrote: a note and an enqueued trial write Optuna's tables, none of ours.
    plain_url = f"sqlite:///{tmp_path / 'plain.db'}"
    plain = optuna.create_study(study_name="plain", storage=plain_url)
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    other = Control(plain_url)
    other.save_note(plain._study_id, None, "from the TUI", seen=0)
    assert other.enqueue("plain", plain._study_id, {"x": 0.5}, sweep=False) == Queued(1, None, False)
    other.close()
    assert plain.trials[1].system_attrs["fixed_params"] == {"x": 0.5}
    assert not [t for t in sa.inspect(sa.create_engine(plain_url)).get_table_names() if t.startswith("hpo_")]


def test_every_action_by_its_keys(tmp_path: Path) -> None:
    """One app run: on the dashboard `v`, `v` compares two trials and `N` writes the study's note;
    on a trial's screen `y` copies, `n` writes its note, `a` enqueues, `r` fails and retries."""
    url, reader, study = demo(tmp_path)
    rows = {r.number: r for r in reader.trials(study.study_id)}
    claimed_before = Store(url).sweep("demo").claimed

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            written: list[str] = []
            app._driver.write = written.append  # what reaches the terminal
            dashboard = app.screen
            table = dashboard.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 14)
            # v marks trial 3 (v again keeps it marked), v on trial 8 opens the two side by side
            await pilot.press("down", "down", "down", "v", "v")
            assert app.screen is dashboard
            await pilot.press(*["down"] * 5, "v")
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
            compare = app.screen
            assert (compare.a.number, compare.b.number) == (3, 8)
            assert "2 param(s) differ" in text_of(compare.query_one("#compare-header", Static))
            await wait_for(pilot, lambda: compare.query_one("#compare-curves").border_title == "val_f1 by epoch")
            # N: the study's note
            await pilot.press("escape", "N")
            await wait_for(pilot, lambda: isinstance(app.screen, NoteScreen))
            await pilot.press(*"v2", "ctrl+s")
            await wait_for(pilot, lambda: notes.load(url, study.study_id, None).body == "v2")
            await app.push_screen(TrialScreen(study, 3))
            note_box = app.screen.query_one("#trial-note", Static)
            await wait_for(pilot, lambda: "no note" in text_of(note_box))
            # y, then f: CLI flags on the clipboard, as OSC 52 with the text in base64
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, CopyScreen))
            await pilot.press("f")
            await wait_for(pilot, lambda: any("\x1b]52;c;" in w for w in written))
            flags = as_flags(rows[3].params)
            assert flags == f"--model=test_resnet --lr={rows[3].params['lr']}"
            osc52 = f"\x1b]52;c;{base64.b64encode(flags.encode()).decode()}\a"
            assert [w for w in written if "\x1b]52;" in w] == [osc52]
            await pilot.press("y", "y")
            await wait_for(pilot, lambda: app.clipboard == as_yaml(rows[3].params))
            assert any(n.title == "copied trial 3's params as YAML" for n in app._notifications)
            # n: the trial's note, typed and saved with ctrl+s, then shown on its screen
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, NoteScreen))
            await pilot.press(*"slow")
            Control(url).save_note(study.study_id, rows[3].trial_id, "theirs", seen=0)  # optuna-dashboard, meanwhile
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, NoteScreen) and app.screen.warning is not None)
            assert app.screen.query_one(TextArea).text == "slow", "what was typed is kept"
            assert "it now reads: 'theirs'" in app.screen.warning
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: "slow" in text_of(note_box))
            assert notes.load(url, study.study_id, rows[3].trial_id) == notes.Note(2, "slow")
            # a: the form, prefilled; a value outside the space is said in one line, and enter refuses it
            await pilot.press("a")
            await wait_for(pilot, lambda: isinstance(app.screen, EnqueueScreen))
            form = app.screen
            lr = form.query_one("#field-1", Input)
            assert form.query_one("#field-0", Input).value == "test_resnet" and float(lr.value) == rows[3].params["lr"]
            lr.value = "0.5"
            await pilot.pause()
            assert text_of(form.query_one("#enqueue-check", Static)).strip() == \
                "lr: 0.5 is outside the space (3.00e-04 .. 0.01 log)"
            await pilot.press("enter")
            assert app.screen is form
            lr.value = "0.004"
            await pilot.press("enter")
            await wait_for(pilot, lambda: any(n.title == "enqueued" for n in app._notifications))
            queued = load_study(url, "demo").get_trials(states=(States.WAITING,))
            assert [t.system_attrs["fixed_params"] for t in queued] == [{"model": "test_resnet", "lr": 0.004}]
            # r on a running trial: confirmed, it fails with its reason and its params are queued again
            await pilot.press("escape")
            await app.push_screen(TrialScreen(study, 13))
            await wait_for(pilot, lambda: app.screen.row is not None)
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: any(n.title == "retried" for n in app._notifications))
            assert app.worker_errors == []

    run(scenario())
    trials = {t.number: t for t in load_study(url, "demo").trials}
    assert trials[13].state == States.FAIL and trials[13].user_attrs["fail_reason"] == FAILED_FROM_TUI
    rerun = max(trials.values(), key=lambda t: t.number)
    assert rerun.state == States.WAITING and rerun.params == trials[13].params
    assert rerun.user_attrs["retry_of"] == 13 and rerun.system_attrs["retry_history"] == [13]
    assert Store(url).sweep("demo").claimed == claimed_before - 1, "the failed trial's slot is given back"
    reader.close()


def test_compare_table_marks_the_params_that_differ_and_the_better_value() -> None:
    from tui_hpo.db import TrialRow

    a = TrialRow(1, 3, "COMPLETE", (0.9,), {"model": "m1", "lr": 0.001, "wd": 0.1}, 0.0, 5.0, epoch=4)
    b = TrialRow(2, 8, "PRUNED", (0.7,), {"model": "m1", "lr": 0.002, "drop": 0.2}, 0.0, 3.0, epoch=2)
    table = diff_table(a, b, ("val_f1",), (True,))
    rows = {str(name): (str(mark), cells) for mark, name, *cells in
            zip(*(column._cells for column in table.columns), strict=True)}
    assert [name for name, (mark, _) in rows.items() if mark == "≠"] == ["lr", "wd", "drop"]
    assert [str(c) for c in rows["wd"][1]] == ["0.1", "-"] and [str(c) for c in rows["model"][1]] == ["m1", "m1"]
    better, worse = rows["val_f1"][1]
    assert better.style == "bold green" and worse.style == "", "the higher value of a maximised objective"
    assert diff_table(a, b, ("loss",), (False,)).columns[3]._cells[1].style == "bold green"
