"""The Studies screen with several studies: the live list (counts, best, ETA, a sparkline of
trials finished over time; compact at 80 columns), studies marked with space overlaid in one
chart, and empty states that say what will appear. Also the app-wide polish seen from there: the
help lists the keys of the screen in view, and ctrl+t switches the theme and remembers it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from tests.studies import make_study
from tests.test_tui import text_of, wait_for
from tui_hpo.app import DARK, LIGHT, make_app
from tui_hpo.format import BLOCKS
from tui_hpo.screens.dialogs import HelpScreen
from tui_hpo.screens.studies import NARROW_COLUMNS, StudiesScreen, best_so_far
from tui_hpo.widgets.chart import Chart


@pytest.fixture(autouse=True)
def still(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")


def cell(table: DataTable, row: str, column: str) -> str:
    value = table.get_cell(row, column)
    return value.plain if hasattr(value, "plain") else str(value)


def test_marked_studies_overlay_their_histories_and_the_list_is_live(tmp_path: Path) -> None:
    make_study(tmp_path, name="first", n_trials=20, running=0, state="finished", live_worker=False)
    make_study(tmp_path, name="second", n_trials=12, running=2, offset=-0.05)
    settings = tmp_path / "config" / "tui.json"

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="studies", settings=settings)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            assert isinstance(screen, StudiesScreen)
            table = screen.query_one(DataTable)
            chart = screen.query_one("#studies-chart", Chart)
            await wait_for(pilot, lambda: table.row_count == 2 and chart.display)
            # the live columns: counts, best, ETA while running, a sparkline of finished trials
            assert [cell(table, "second", c) for c in ("state", "done", "running", "pruned", "failed")] == \
                ["running", "11/14", "2", "2", "1"]
            assert cell(table, "first", "best") == "0.9594" and cell(table, "first", "eta") == "-"
            assert cell(table, "second", "eta") not in ("", "-"), "a running sweep has an ETA"
            trend = cell(table, "first", "progress")
            assert len(trend) == 12 and set(trend) <= set(BLOCKS) and "█" in trend
            # nothing marked: the chart follows the cursor
            table.move_cursor(row=table.get_row_index("first"))
            await wait_for(pilot, lambda: chart.border_title == "history of first")
            # space marks two studies: one chart with both, each in its own colour (the list's bullet)
            await pilot.press("space")
            table.move_cursor(row=table.get_row_index("second"))
            await pilot.press("space")
            await wait_for(pilot, lambda: chart.border_title == "histories: first, second")
            await wait_for(pilot, lambda: "second" in text_of(chart))
            drawn = text_of(chart)
            assert "first" in drawn and "second" in drawn and "trial" in drawn
            assert cell(table, "first", "name").startswith("● ") and cell(table, "second", "name").startswith("● ")
            assert str(table.get_cell("first", "name").spans[0].style) != str(table.get_cell("second", "name")
                                                                               .spans[0].style)
            assert "•" in drawn, "each trial's value as a dot"
            await pilot.press("v")
            await wait_for(pilot, lambda: "•" not in text_of(chart))
            await pilot.press("space")  # unmark the second
            await wait_for(pilot, lambda: chart.border_title == "history of first")
            assert cell(table, "second", "name").startswith("  ")
            # ? lists this screen's keys, with their descriptions, and the app's
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            help_text = text_of(app.screen.query_one("#help-text", Static))
            assert "This screen (studies)" in help_text and "mark or unmark the study" in help_text
            assert "space" in help_text and "Everywhere" in help_text and "light/dark theme" in help_text
            assert "its own process" in help_text and "pause" not in help_text
            await pilot.press("escape")
            await pilot.press("3")
            await pilot.press("question_mark")
            help_text = text_of(app.screen.query_one("#help-text", Static))
            assert "This screen (dashboard)" in help_text and "pause" in help_text and "mark or unmark" not in help_text
            await pilot.press("escape", "5")
            # 80 columns: the state as a symbol, the counts in one column, no start time
            await pilot.resize_terminal(80, 24)
            await wait_for(pilot, lambda: screen.columns == NARROW_COLUMNS and table.row_count == 2)
            assert cell(table, "second", "state") == "▶" and cell(table, "second", "counts") == "2/2/1"
            # ctrl+t: the light theme, remembered for the next start
            assert app.theme == DARK
            await pilot.press("ctrl+t")
            assert app.theme == LIGHT
            await wait_for(pilot, lambda: settings.exists())
        assert json.loads(settings.read_text()) == {"theme": LIGHT}

        again = make_app(workdir=tmp_path / "empty", mode="studies", settings=settings)
        async with again.run_test(size=(80, 24)) as pilot:
            assert again.theme == LIGHT
            empty = again.screen.query_one("#studies-empty", Static)
            await wait_for(pilot, lambda: "Nothing to chart yet" in text_of(empty))
            assert "No study in" in text_of(again.screen.query_one("#studies-header", Static))
            assert not again.screen.query_one("#studies-chart", Chart).display
            await pilot.press("ctrl+t")
            assert again.theme == DARK
        assert json.loads(settings.read_text()) == {"theme": DARK}

    asyncio.run(scenario())


def test_under_no_color_studies_differ_by_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR: Textual greys every colour, so the overlay tells studies apart by their markers."""
    monkeypatch.setenv("NO_COLOR", "1")
    make_study(tmp_path, name="first", n_trials=8, running=0, state="finished", live_worker=False)
    make_study(tmp_path, name="second", n_trials=8, running=0, state="finished", live_worker=False, offset=-0.05)

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="studies")
        async with app.run_test(size=(120, 40)) as pilot:
            assert app.no_color
            table = app.screen.query_one(DataTable)
            chart = app.screen.query_one("#studies-chart", Chart)
            await wait_for(pilot, lambda: table.row_count == 2)
            await pilot.press("space", "down", "space")
            await wait_for(pilot, lambda: "second" in text_of(chart))
            assert cell(table, "first", "name").startswith("⣿ ") and cell(table, "second", "name").startswith("+ ")
            assert "+" in text_of(chart)

    asyncio.run(scenario())


def test_best_so_far_is_a_few_steps() -> None:
    assert best_so_far([(0, 0.5), (1, 0.4), (2, 0.7), (5, 0.6), (9, 0.8)], maximize=True) == \
        ([0, 1, 2, 8, 9], [0.5, 0.5, 0.7, 0.7, 0.8])
    assert best_so_far([(0, 0.5), (3, 0.7)], maximize=False) == ([0, 3], [0.5, 0.5])
    assert best_so_far([], maximize=True) == ([], [])
