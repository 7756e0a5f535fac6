"""Pilot tests of every screen and key, on fixture databases and on a real finished sweep."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from textual.widgets import DataTable, Input, RadioButton, Static

from engine.config import resolve
from engine.storage import Store
from tests.studies import DIGITS_SPLIT, SMALL_SPLIT, make_study
from tui_hpo.app import make_app
from tui_hpo.screens.analysis import AnalysisScreen
from tui_hpo.screens.dashboard import DashboardScreen
from tui_hpo.screens.dialogs import HelpScreen, QuitScreen
from tui_hpo.screens.studies import StudiesScreen
from tui_hpo.screens.system import SystemScreen
from tui_hpo.screens.trial import TrialScreen
from tui_hpo.screens.wizard import WizardScreen
from tui_hpo.widgets.trial_table import TrialTable


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text (its content may be any rich renderable)."""
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.export_text()


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"condition not met in time; worker errors: {pilot.app.worker_errors}")


def run(coro) -> None:
    import asyncio

    asyncio.run(coro)


def sweep_row(workdir: Path, name: str = "demo"):
    store = Store(f"sqlite:///{workdir.resolve() / 'hpo.db'}")
    try:
        return store.sweep(name)
    finally:
        store.close()


def test_dashboard_shows_the_study_and_steers_it(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=2)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            table = screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 14)
            header = text_of(screen.query_one("#dash-header", Static))
            assert "demo" in header and "running" in header and "best val_f1" in header
            assert "2 running" in header
            assert "GPU busy 87%" in header, "the last 30 s of GPU samples, live"
            assert "CPU" in text_of(screen.query_one("#gauges", Static))
            assert "GPU0" in text_of(screen.query_one("#gauges", Static))
            # p pauses, p resumes, + and - change the budget, through the database
            await pilot.press("p")
            await wait_for(pilot, lambda: sweep_row(tmp_path).state == "paused")
            await wait_for(pilot, lambda: screen.study.state == "paused", 5)
            await pilot.press("p")
            await wait_for(pilot, lambda: sweep_row(tmp_path).state == "running")
            before = sweep_row(tmp_path).n_trials
            await pilot.press("plus")
            assert sweep_row(tmp_path).n_trials == before + 1
            await pilot.press("minus", "minus")
            assert sweep_row(tmp_path).n_trials == before - 1
            # k prunes the selected running trial
            table.move_cursor(row=table.get_row_index("13"))
            await pilot.press("k")
            store = Store(app.url)
            assert store.take_command(1, "prune", 13)
            store.close()
            # f filters by state; s sorts by the column under the cursor (a metric: best first)
            await pilot.press("f")
            assert table.row_count == 2  # running only
            await pilot.press("f", "f", "f", "f")
            assert table.row_count == 14
            await pilot.press(*["right"] * table.visible_columns().index("val_f1"), "s")
            assert (table.view.sort, table.view.reverse) == ("val_f1", True)
            # enter opens the trial detail
            table.move_cursor(row=0)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen))
            detail = app.screen
            await wait_for(pilot, lambda: "trial" in text_of(detail.query_one("#trial-header", Static)))
            await pilot.press("escape")
            assert isinstance(app.screen, DashboardScreen)
            # x stops the sweep
            await pilot.press("x")
            assert sweep_row(tmp_path).state == "stopping"

    run(scenario())


def header_lines(widget: Static, width: int) -> int:
    """How many lines the header's text takes at `width` columns (the bar's padding taken off)."""
    import io

    from rich.console import Console

    console = Console(width=width - 2, file=io.StringIO(), color_system=None)
    return len(console.render_lines(widget.content, pad=False))


def test_header_shows_the_validation_split_as_soon_as_the_engine_stored_it(tmp_path: Path) -> None:
    """The engine stores the split after the app may have opened: the dashboard reads it until it is
    there. A set too small to rank trials is marked, within the header's three lines at 80 columns;
    the trial detail shows the F1 per class, worst first."""
    url = make_study(tmp_path, n_trials=10, running=2)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            header = app.screen.query_one("#dash-header", Static)
            await wait_for(pilot, lambda: "best val_f1" in text_of(header))
            assert "val " not in text_of(header).replace("best val_f1", "")
            optuna.load_study(study_name="demo", storage=url).set_user_attr("tui_hpo", {"data": SMALL_SPLIT})
            await wait_for(pilot, lambda: "val 39 (13/13/13) too small" in text_of(header), 5)
            assert header_lines(header, 80) <= 3, "the GPU and best line must not be pushed out of the bar"
            optuna.load_study(study_name="demo", storage=url).set_user_attr("tui_hpo", {"data": DIGITS_SPLIT})

    run(scenario())

    async def digits() -> None:  # a fresh app: the split is read once it is there
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            header = app.screen.query_one("#dash-header", Static)
            await wait_for(pilot, lambda: "val 359 (35-36/class)" in text_of(header))
            assert "too small" not in text_of(header)

    run(digits())


def test_trial_detail_shows_the_f1_per_class_worst_first(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=5, running=0, state="finished", live_worker=False, data=SMALL_SPLIT)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 5)
            await pilot.press("enter")  # trial 0: completed, and stopped early
            await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen))
            classes = app.screen.query_one("#trial-classes", Static)
            await wait_for(pilot, lambda: "bird=" in text_of(classes))
            shown = text_of(classes)
            assert shown.index("bird=") < shown.index("dog=") < shown.index("cat="), "worst first"
            header = text_of(app.screen.query_one("#trial-header", Static))
            assert "stopped early after epoch 4, valued at its best epoch 2" in header
            await pilot.press("escape", "down", "down", "down", "down", "enter")  # trial 4: pruned, no classes
            await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen) and "trial 4" in text_of(
                app.screen.query_one("#trial-header", Static)))
            assert not app.screen.query_one("#trial-classes", Static).display

    run(scenario())


def test_number_keys_help_and_every_screen(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=20, running=0, state="finished", live_worker=False)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="system")
        async with app.run_test(size=(120, 40)) as pilot:
            assert isinstance(app.screen, SystemScreen)
            await wait_for(pilot, lambda: "cores" in text_of(app.screen.query_one("#system-info", Static)))
            assert "platform" in text_of(app.screen.query_one("#system-profile", Static))
            await pilot.press("2")
            assert isinstance(app.screen, WizardScreen)
            await pilot.press("3")
            assert isinstance(app.screen, DashboardScreen)
            await pilot.press("5")
            assert isinstance(app.screen, StudiesScreen)
            studies = app.screen.query_one(DataTable)
            await wait_for(pilot, lambda: studies.row_count == 1)
            await pilot.press("6")
            assert isinstance(app.screen, AnalysisScreen)
            analysis = app.screen
            await wait_for(pilot, lambda: analysis.analysis is not None)
            assert analysis.query_one(DataTable).row_count > 0
            assert "lr" in text_of(analysis.query_one("#importance", Static))
            await pilot.press("e")
            await wait_for(pilot, lambda: (tmp_path / "demo" / "best_config.yaml").exists())
            best = yaml.safe_load((tmp_path / "demo" / "best_config.yaml").read_text())
            assert best["search_space"] == {} and best["train"]["model"] in ("test_resnet", "test_efficientnet",
                                                                          "test_convnext")
            # n writes the next sweep, narrowed, as a config `tui-hpo run` accepts
            await pilot.press("n")
            recommended = tmp_path / "demo" / "recommended.yaml"
            await wait_for(pilot, recommended.exists)
            narrowed = resolve({}, config_file=str(recommended), environ={})
            lr = narrowed.search_space["lr"]
            assert 0.0003 <= lr.low < lr.high <= 0.01 and (lr.low, lr.high) != (0.0003, 0.01)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            await pilot.press("3")
            table = app.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 20)
            await pilot.press("4")
            assert isinstance(app.screen, TrialScreen)
            await pilot.press("escape")
            await pilot.press("q")  # finished: no question asked
        assert app.return_code in (0, None)

    run(scenario())


def test_studies_screen_switches_the_watched_study(tmp_path: Path) -> None:
    make_study(tmp_path, name="first", n_trials=3, running=0, state="finished", live_worker=False)
    url = f"sqlite:///{tmp_path.resolve() / 'hpo.db'}"
    import optuna

    optuna.create_study(study_name="external", storage=url)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="studies")
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(DataTable)
            await wait_for(pilot, lambda: table.row_count == 2)
            table.move_cursor(row=table.get_row_index("first"))
            await pilot.press("enter")
            assert isinstance(app.screen, DashboardScreen)
            assert app.study_name == "first"
            header = app.screen.query_one("#dash-header", Static)
            await wait_for(pilot, lambda: "first" in text_of(header))

    run(scenario())


def test_quit_while_running_asks_and_can_stop(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=3, running=1)

    async def leave() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
            await pilot.press("escape")
            assert isinstance(app.screen, DashboardScreen)
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
            await pilot.press("l")
        assert sweep_row(tmp_path).state == "running"

    async def stop() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
            await pilot.press("s")
        assert sweep_row(tmp_path).state == "stopping"

    run(leave())
    run(stop())


def test_wizard_flags_bad_fields_and_saves_a_valid_config(tmp_path: Path, image_folder: Path) -> None:
    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="wizard")
        async with app.run_test(size=(120, 40)) as pilot:
            wizard = app.screen
            check = wizard.query_one("#budget-check", Static)
            await wait_for(pilot, lambda: "ready" in text_of(check))
            wizard.query_one("#n-trials", Input).value = "0"
            await wait_for(pilot, lambda: "budget.n_trials" in text_of(check))
            assert wizard.query_one("#start").disabled
            wizard.query_one("#n-trials", Input).value = "3"
            wizard.query_one("#epochs", Input).value = "1"
            wizard.query_one("#name", Input).value = "from-wizard"
            wizard.query_one("#folder", RadioButton).value = True
            path = wizard.query_one("#data-path", Input)
            path.value = str(tmp_path / "nowhere")
            await wait_for(pilot, lambda: "no such file" in text_of(wizard.query_one("#data-check", Static)))
            assert "data.path" in text_of(check)
            path.value = str(image_folder)
            await wait_for(pilot, lambda: "imagefolder: 48 images in 2 classes" in
                           text_of(wizard.query_one("#data-check", Static)))
            assert "skipped 4 file(s)" in text_of(wizard.query_one("#data-check", Static))
            # What the sweep will decide from this data, and why, shown before it starts
            await wait_for(pilot, lambda: "small glyph-like images" in text_of(wizard.query_one("#data-check", Static)))
            assert "image_size 32, augment 0, hflip off" in text_of(wizard.query_one("#data-check", Static))
            assert "train.epochs 4 -> 100: min_steps 100" in text_of(wizard.query_one("#data-check", Static))
            await wait_for(pilot, lambda: "ready" in text_of(check))
            wizard.query_one("#tier-multi", RadioButton).value = True
            await wait_for(pilot, lambda: "nsga2" in text_of(wizard.query_one("#preview", Static)))
            await pilot.press("f2")
            saved = tmp_path / "configs" / "from-wizard.yaml"
            await wait_for(pilot, saved.exists)
        config = resolve({}, config_file=str(saved), environ={})
        assert config.budget.n_trials == 3 and config.train.epochs == 1
        assert config.data.path == str(image_folder) and config.sampler.name == "nsga2"
        assert config.objective.metrics() == ["val_f1", "train_time"]

    run(scenario())


def test_dashboard_on_an_empty_workspace(tmp_path: Path) -> None:
    async def scenario() -> None:
        app = make_app(workdir=tmp_path / "new")
        async with app.run_test(size=(80, 24)) as pilot:
            header = app.screen.query_one("#dash-header", Static)
            await wait_for(pilot, lambda: "No study" in text_of(header))
            await pilot.press("q")

    run(scenario())


def test_no_color_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_study(tmp_path, n_trials=8, running=0, state="finished", live_worker=False)
    monkeypatch.setenv("NO_COLOR", "1")

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            assert app.no_color
            table = app.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 8)
            chart = app.screen.query_one("#history")
            await wait_for(pilot, lambda: "trial" in text_of(chart))
            assert "\x1b[" not in text_of(chart)

    run(scenario())


def test_a_failed_read_is_shown_and_polling_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that raises (the engine still creating its tables, a locked file) must not freeze the
    dashboard: the error is shown and the next poll finds the study."""
    from tui_hpo import screens
    from tui_hpo.db import Reader

    monkeypatch.setattr(screens.base, "RETRY_S", 0.2)
    make_study(tmp_path, n_trials=3)
    real = Reader.studies
    failures = iter([RuntimeError("no such table: trials")] * 3)

    def flaky(self: Reader, **kwargs):
        for error in failures:
            raise error
        return real(self, **kwargs)

    monkeypatch.setattr(Reader, "studies", flaky)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: "demo" in text_of(screen.query_one("#dash-header", Static)))
            assert app.worker_errors and "no such table" in app.worker_errors[0]

    run(scenario())


def test_k_prunes_a_trial_of_a_live_engine(tmp_path: Path) -> None:
    """`k` against a real engine: the running trial stops after its current epoch, ends PRUNED with
    the user's reason, and the sweep (one trial) finishes."""
    import sqlite3

    from engine.storage import Workspace
    from tui_hpo.launch import RunArgs, start_engine

    config = tmp_path / "klive.yaml"
    config.write_text("name: klive\ntrain: {model: test_resnet, epochs: 200, image_size: 24, batch_size: 128}\n"
                      "pruner: {name: none}\nbudget: {n_trials: 1}\nresources: {parallel: 1, batch_multiplier: 1.0}\n")
    workdir = tmp_path / "runs"
    engine = start_engine(RunArgs(config_file=str(config)), Workspace(workdir), "klive")

    def db(sql: str) -> list[tuple]:
        try:
            with sqlite3.connect(f"file:{workdir / 'hpo.db'}?mode=ro", uri=True) as conn:
                return conn.execute(sql).fetchall()
        except sqlite3.Error:
            return []

    async def scenario() -> None:
        app = make_app(workdir=workdir, study="klive")
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: db("SELECT COUNT(*) FROM hpo_epoch") not in ([], [(0,)]), timeout=120)
            await wait_for(pilot, lambda: table.row_count == 1, timeout=10)
            table.move_cursor(row=0)
            await pilot.press("k")
            await wait_for(pilot, lambda: db("SELECT state FROM trials") == [("PRUNED",)], timeout=60)
            await wait_for(pilot, lambda: "1 pruned" in text_of(app.screen.query_one("#dash-header", Static)), 10)

    try:
        run(scenario())
        assert engine.popen.wait(timeout=60) == 0, engine.output.read_text()
    finally:
        if engine.exited() is None:
            engine.popen.kill()
    epochs = db("SELECT COUNT(*) FROM hpo_epoch")[0][0]
    assert 1 <= epochs < 200
    reasons = [m for (m,) in db("SELECT message FROM hpo_event WHERE kind = 'trial_pruned'")]
    assert len(reasons) == 1 and "pruned by the user in epoch" in reasons[0], reasons
    assert db("SELECT state FROM hpo_sweep") == [("finished",)]


def test_r_on_the_studies_screen_resumes_a_stopped_sweep(tmp_path: Path) -> None:
    """A real sweep stopped before its budget: `r` starts its engine again with the config saved
    in the storage, and the sweep finishes."""
    import sqlite3

    from tests.conftest import CONFIGS, run_cli

    workdir = tmp_path / "runs"
    first = run_cli("run", "--config", str(CONFIGS / "tiny.yaml"), "--workdir", str(workdir), "--no-tui",
                    "--n-trials", "1")
    assert first.returncode == 0, first.stderr
    store = Store(f"sqlite:///{workdir.resolve() / 'hpo.db'}")
    row = store.sweep("tiny")
    store.update_sweep(row.study_id, n_trials=2, state="stopped")  # as a stop, with a trial to go
    store.close()

    def db(sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{workdir / 'hpo.db'}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()

    async def scenario() -> None:
        app = make_app(workdir=workdir, mode="studies")
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(DataTable)
            await wait_for(pilot, lambda: table.row_count == 1)
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 5)
            await wait_for(pilot, lambda: db("SELECT state FROM hpo_sweep") == [("finished",)], timeout=120)
            assert app.engine is not None and app.engine.popen.wait(timeout=30) == 0
            header = app.screen.query_one("#dash-header", Static)
            await wait_for(pilot, lambda: "2/2 done" in text_of(header), 10)

    run(scenario())
    assert db("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'") == [(2,)]


def test_p_on_a_finished_trial_writes_its_package(tmp_path: Path) -> None:
    """A kept checkpoint is the package already; a trial whose model was not kept is trained again
    with its own params, in a child process, into DIR/<study>/packages/."""
    make_study(tmp_path, n_trials=5, running=0, state="finished", live_worker=False, epochs=1)
    store = Store(f"sqlite:///{tmp_path.resolve() / 'hpo.db'}")
    sweep = store.sweep("demo")
    quick = sweep.config  # one short epoch at 8 px, not the quick preset's 100 steps
    quick["train"].update(epochs=1, min_steps=None, max_steps=None, image_size=8, augment=0.0, hflip=False)
    quick["data"] = {**quick.get("data", {}), "subset": 300}
    store.update_sweep(sweep.study_id, config=quick)
    store.close()
    kept = tmp_path / "demo" / "checkpoints" / "trial_1.safetensors"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"kept by the sweep")

    def said(app) -> str:
        return " ".join(n.message for n in app._notifications)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 5)
            await pilot.press("down", "enter")  # trial 1: its checkpoint was kept
            await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen) and app.screen.row is not None)
            await pilot.press("p")
            await wait_for(pilot, lambda: "package was kept by the sweep" in said(app))
            await pilot.press("escape", "up", "enter")  # trial 0: completed, nothing kept
            await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen) and app.screen.row is not None
                           and app.screen.row.number == 0)
            await pilot.press("p")
            out = tmp_path / "demo" / "packages" / "trial_0.safetensors"
            await wait_for(pilot, lambda: "wrote" in said(app), timeout=120)
            assert out.is_file() and out.with_suffix(".yaml").is_file()

    run(scenario())
    from engine.training.package import read_meta

    package = read_meta(tmp_path / "demo" / "packages" / "trial_0.safetensors")
    assert package.image_size == 8 and package.model == "test_resnet"
    assert package.train["lr"] == pytest.approx(0.0003), "trial 0's own learning rate, not the config's"
