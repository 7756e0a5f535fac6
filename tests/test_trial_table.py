"""The dashboard's trial table: the filter grammar, sorting, the column chooser, the view kept per
study, paged loading, and the layouts at 80x24, 120x40 and 200x50, on fixture studies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from textual.widgets import Input, SelectionList, Static

from engine.storage import optuna_storage
from tests.studies import CHOICES, SMALL_SPLIT, make_study
from tui_hpo import clock
from tui_hpo.app import make_app
from tui_hpo.db import Reader, TrialFeed
from tui_hpo.query import Codes, Numbers, QueryError, evaluate, parse
from tui_hpo.screens.dashboard import DashboardScreen, _history
from tui_hpo.screens.table_dialogs import ColumnChooser, QueryDialog
from tui_hpo.widgets.trial_table import TrialTable, load_view, number_format, save_view


@pytest.fixture(autouse=True)
def no_animations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")


def run(coro) -> None:
    import asyncio

    asyncio.run(coro)


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"condition not met in time; worker errors: {pilot.app.worker_errors}")


def said(app) -> str:
    return " | ".join(n.message for n in app._notifications)


# ---------------------------------------------------------------- the query grammar

COLUMNS = {
    "lr": Numbers(np.array([1e-4, 5e-4, 2e-3, np.nan, 1e-2])),
    "value": Numbers(np.array([0.97, 0.91, 0.96, np.nan, 0.5])),
    "state": Codes(np.array([0, 0, 1, 2, 0], dtype=np.int32), ["complete", "pruned", "running"]),
    "model": Codes(np.array([0, 1, 2, -1, 0], dtype=np.int32), ["resnet18", "convnext_nano", "vit"]),
    "batch": Codes(np.array([0, 1, 0, 1, 1], dtype=np.int32), [32, 128]),
}


def hits(query: str) -> list[int]:
    return np.flatnonzero(evaluate(parse(query), COLUMNS, 5)).tolist()


def test_queries_select_the_trials_they_say() -> None:
    assert hits("") == [0, 1, 2, 3, 4]
    assert hits("lr < 1e-3 and state == complete") == [0, 1]
    assert hits("model in (resnet18, convnext_nano)") == [0, 1, 4]
    assert hits("model not in (resnet18)") == [1, 2], "a trial without the param is in no list"
    assert hits("value > 0.95") == [0, 2]
    assert hits("value > 0.95 or state == running") == [0, 2, 3]
    assert hits("not value > 0.95") == [1, 3, 4], "not includes trials without a value"
    assert hits("value != 0.5") == [0, 1, 2], "no value is not a value"
    assert hits("value > 0.95 or state == complete and lr > 1e-3") == [0, 2, 4], "and binds tighter than or"
    assert hits("(value > 0.95 or state == COMPLETE) and lr > 1e-3") == [2, 4]
    assert hits("'model' == 'VIT'") == [2], "quoted words, text compared ignoring case"
    assert hits("batch > 64") == [1, 3, 4], "choices that are numbers compare as numbers"
    assert hits("LR<=5e-4") == [0, 1], "column names in any case, no spaces needed"


@pytest.mark.parametrize(("query", "message"), [
    ("lr = 1", "use =="),
    ("lr <", "expected a value after '<', found the end"),
    ("(lr < 1", "expected ')'"),
    ("lr < abc", "lr holds numbers: 'abc' is not one"),
    ("lr < 1 value > 2", "unexpected 'value' after a complete query"),
    ("lrr < 1", "no column 'lrr': columns are lr, value, state"),
    ("model in resnet18", "expected '(' after 'in'"),
    ("lr ! 1", "unexpected '!' at column 4"),
    ("lr ~ 1", "expected an operator after 'lr' (== != < <= > >= in), found '~'"),
    ("and", "expected a column name, found 'and'"),
])
def test_a_bad_query_says_what_is_wrong_in_one_line(query: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        evaluate(parse(query), COLUMNS, 5)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_column_of_numbers_has_one_format() -> None:
    lr = number_format(np.array([3e-4, 1e-2, np.nan]))
    assert [lr(v) for v in (3e-4, 1e-2)] == ["3.00e-04", "1.00e-02"]
    score = number_format(np.array([0.8, 0.97123]))
    assert [score(v) for v in (0.8, 0.97123)] == ["0.8000", "0.9712"], "same decimals down the column"
    assert number_format(np.array([32.0, 128.0]))(64.0) == "64"
    assert number_format(np.array([12.5, 300.25]))(12.5) == "12.5"


def test_the_view_file_is_written_whole_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "demo" / "tui.json"
    assert load_view(path).sort == "#", "no file: the default view"
    view = load_view(path)
    view.query, view.sort, view.reverse, view.shown = "lr < 1e-3", "lr", True, {"worker": True}
    save_view(path, view)
    assert load_view(path) == view
    assert [p.name for p in path.parent.iterdir()] == ["tui.json"], "no temporary file left behind"
    path.write_text("{not json")
    assert load_view(path).query == "", "an unreadable file is the default view, not a crash"


# ---------------------------------------------------------------- paged loading

def test_the_backlog_is_read_in_pages_and_matches_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = make_study(tmp_path, n_trials=23, running=2)
    monkeypatch.setattr(TrialFeed, "FIRST_PAGE", 4)
    monkeypatch.setattr(TrialFeed, "PAGE", 7)
    reader = Reader(url)
    feed = TrialFeed(reader, 1)
    feed.poll()
    assert (feed.trials.n, feed.backlog, feed.total) == (4, True, 25)
    pages = 1
    while feed.backlog:
        feed.poll()
        pages += 1
    assert pages == 5 and feed.trials.n == 25  # 4 + 7 + 7 + 7, then the last 0
    assert [feed.trials.row_at(i) for i in range(25)] == reader.trials(1)
    version = feed.version
    feed.poll()
    assert feed.version == version, "a poll that read nothing new changes nothing"
    assert feed.trials.counts() == {"COMPLETE": 17, "PRUNED": 4, "FAIL": 2, "RUNNING": 2}
    assert feed.rows[3].params == {"model": CHOICES[0], "lr": pytest.approx(0.0003 * 1.3 ** 3)}
    reader.close()


def test_an_enqueued_trial_shows_its_params_while_it_waits(tmp_path: Path) -> None:
    """Optuna keeps a queued trial's params aside until a worker takes it; the row shows them."""
    url = make_study(tmp_path, n_trials=3, running=0)
    storage = optuna_storage(url, heartbeat=False)
    study = optuna.load_study(study_name="demo", storage=storage)
    study.enqueue_trial({"model": CHOICES[2], "lr": 0.002})
    feed = TrialFeed(Reader(url), 1)
    feed.poll()
    waiting = feed.rows[3]
    assert waiting.state == "WAITING" and waiting.params == {"model": CHOICES[2], "lr": 0.002}
    assert feed.rows[0].params["model"] == CHOICES[0], "the other trials' choices are untouched"


def test_a_first_trial_queued_with_a_choice_keeps_it_a_choice(tmp_path: Path) -> None:
    """A sweep's first trial is often queued (the preset's recipe): its `batch_size: 32` must stay
    the choice 32 once a worker takes it, not become the number 32.0 (which the enqueue form then
    refuses as a choice)."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = optuna.create_study(study_name="queued", storage=optuna_storage(url, heartbeat=False))
    study.enqueue_trial({"batch_size": 32})
    feed = TrialFeed(Reader(url), 1)
    feed.poll()
    assert feed.rows[0].state == "WAITING"
    trial = study.ask()
    trial.suggest_categorical("batch_size", [32, 64])
    feed.poll()
    taken = feed.rows[0].params["batch_size"]
    assert taken == 32 and isinstance(taken, int), taken


def test_the_history_chart_puts_every_trial_at_its_number(tmp_path: Path) -> None:
    """Pruned and failed trials are on the x axis too, so it matches the trial numbers."""
    url = make_study(tmp_path, n_trials=23, running=2)
    reader = Reader(url)
    feed = TrialFeed(reader, 1)
    while feed.backlog:
        feed.poll()
    series = _history(feed.trials, maximize=True)
    reader.close()
    assert series is not None
    by_marker = {marker: xs for xs, _, marker, _ in series.points}
    assert by_marker["+"] == [4, 9, 14, 19] and by_marker["x"] == [10, 21]
    assert series.best[0][-1] == 24, "the best-so-far line runs to the newest trial"
    ys = series.best[1]
    assert ys == sorted(ys), "best so far only improves"


# ---------------------------------------------------------------- on the dashboard

def header_text(table: TrialTable) -> str:
    return table.render_line(0).text


def elapsed_shown(row: str) -> int:
    """Seconds of the `m:ss` time in a rendered trial row."""
    match = re.search(r" (\d+):(\d\d)\b", row)
    assert match, row
    return int(match[1]) * 60 + int(match[2])


def test_sort_filter_columns_and_the_view_kept_per_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_study(tmp_path, n_trials=24, running=2)
    lrs = {n: 0.0003 * 1.3 ** (n % 13) for n in range(26)}
    view_file = tmp_path / "demo" / "tui.json"

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 26)
            # a running trial's time goes on between polls
            running = table.render_line(table.get_row_index(25) + 1).text
            later = clock.now() + 125
            monkeypatch.setattr(clock, "now", lambda: later)
            before = elapsed_shown(running)
            after = elapsed_shown(table.render_line(table.get_row_index(25) + 1).text)
            assert before < 60 and 125 <= after - before <= 127, (running, after)  # a loaded machine takes seconds
            # s sorts by the column under the cursor, ascending for a param; s again reverses
            await pilot.press(*["right"] * table.visible_columns().index("lr"), "s")
            shown = [int(table.trials.number[at]) for at in table.order]
            assert [lrs[n] for n in shown] == sorted(lrs.values())
            assert "lr▲" in header_text(table)
            await pilot.press("s")
            assert "lr▼" in header_text(table) and table.selected_number() == shown[0], "the cursor keeps its trial"
            assert lrs[int(table.trials.number[table.order[0]])] == max(lrs.values())
            # a click on a header sorts by that column
            x = 0
            for _, spec in table._shown_specs():
                if spec.key == "model":
                    break
                x += spec.width + 1
            await pilot.click(TrialTable, offset=(x + 2, 1))  # inside the border, on the header line
            assert (table.view.sort, table.view.reverse) == ("model", False)
            # / filters with a query; a bad one is one error line and changes nothing
            await pilot.press("slash")
            assert isinstance(app.screen, QueryDialog)
            app.screen.query_one(Input).value = "lr < 1e-3 and state == complete"
            await pilot.press("enter")
            expected = [n for n in range(24) if lrs[n] < 1e-3 and n % 5 != 4 and n % 11 != 10]
            assert sorted(int(table.trials.number[at]) for at in table.order) == expected
            assert json.loads(view_file.read_text())["query"] == "lr < 1e-3 and state == complete", "kept at once"
            await pilot.press("slash")
            app.screen.query_one(Input).value = "lr <"
            await pilot.press("enter")
            assert "expected a value after '<'" in said(app) and table.row_count == len(expected)
            assert table.view.query == "lr < 1e-3 and state == complete"
            # c chooses columns: lr hidden, the order of the others kept
            await pilot.press("c")
            assert isinstance(app.screen, ColumnChooser)
            app.screen.query_one(SelectionList).highlighted = table.all_columns().index("lr")
            await pilot.press("space", "enter")
            assert "lr" not in table.visible_columns() and "lr" not in header_text(table)
            assert table.visible_columns() == [k for k in table.all_columns() if k not in ("lr", "worker")]
        saved = json.loads(view_file.read_text())
        assert saved == {"shown": {k: k not in ("lr", "worker") for k in saved["shown"]}, "sort": "model",
                         "reverse": False, "query": "lr < 1e-3 and state == complete"}
        again = make_app(workdir=tmp_path)
        async with again.run_test(size=(120, 40)) as pilot:
            table = again.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.trials.n == 26 and table.row_count == len(expected))
            assert table.view.sort == "model" and "lr" not in table.visible_columns()
            assert f"{len(expected)} of 26" in str(table.border_subtitle)
            await pilot.press("slash")
            app_input = again.screen.query_one(Input)
            assert app_input.value == "lr < 1e-3 and state == complete"
            app_input.value = ""
            await pilot.press("enter")
            assert table.row_count == 26
            table.cursor_col = 0  # the number column: s, then s again, newest first
            await pilot.press("s", "s")
            assert [int(table.trials.number[at]) for at in table.order[:3]] == [25, 24, 23]

    run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)])
def test_layouts_fit_the_terminal(tmp_path: Path, size: tuple[int, int]) -> None:
    """80x24: the objective then the params first (epoch, time past them), state a symbol, no
    worker, the side panels behind g and e, a two-line header; 120x40: the side panels too;
    200x50 (160+): every column."""
    make_study(tmp_path, n_trials=24, running=2, data=SMALL_SPLIT)  # the split makes the first line long

    async def scenario() -> None:
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=size) as pilot:
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            table = screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 26 and screen.study is not None)
            await pilot.pause(0.1)
            header = header_text(table)
            first_row = table.render_line(1).text
            side = screen.query_one("#dash-side")
            bar = screen.query_one("#dash-header", Static)
            assert bar.size.height <= 2 and bar.region.bottom <= 2
            assert "best val_f1" in bar.render_line(1).text, "the best trial's line is the second, never pushed out"
            assert "model" in header and "lr" in header and "val_f1" in header
            if size[0] < 160:
                assert "worker" not in header and "complete" not in first_row and "✓" in first_row
                assert header.index("val_f1") < header.index("model") < header.index("epoch"), "params before epoch"
            else:
                assert "worker" in header and "host:1000" in first_row and "complete" in first_row
                assert header.index("val_f1") < header.index("model")
            if size[0] < 100:
                assert not side.display
                await pilot.press("g")
                assert side.display and screen.query_one("#gauges").display
                assert not screen.query_one("#events").display
                await pilot.press("e", "g")
                assert side.display and not screen.query_one("#gauges").display
            else:
                assert side.display and screen.query_one("#events").display
                await pilot.press("e", "g")
                assert not side.display

    run(scenario())
