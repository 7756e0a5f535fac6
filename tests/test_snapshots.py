"""Snapshot tests of the screens that show a study, on a fixed study at a fixed time.

Deterministic by construction: the study comes from tests/studies.py with fixed timestamps, the
viewer's clock (tui_hpo.clock.now) is pinned, times render in UTC, and no widget blinks. A change
in any of these screens shows up as a diff in the snapshot report; look at it, then update with
`./run_tests.sh tests/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.studies import DIGITS_SPLIT, SMALL_SPLIT, T0, make_study
from tui_hpo import clock
from tui_hpo.app import make_app
from tui_hpo.widgets.trial_table import TrialTable

NOW = T0 + 3600


@pytest.fixture(autouse=True)
def fixed_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # the workspace is "runs", relative, as it shows on screen
    monkeypatch.setattr(clock, "now", lambda: NOW)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def finished(tmp_path: Path) -> Path:
    make_study(tmp_path / "runs", n_trials=24, running=0, state="finished", live_worker=False, now=NOW,
               data=DIGITS_SPLIT)
    return Path("runs")


def running(tmp_path: Path) -> Path:
    make_study(tmp_path / "runs", n_trials=10, running=2, now=NOW, data=SMALL_SPLIT)
    return Path("runs")


async def settle(pilot, rows: int | None = None) -> None:
    """Wait for the first poll to be drawn (and the table to hold `rows` rows)."""
    app = pilot.app
    for _ in range(100):
        await pilot.pause(0.1)
        tables = app.screen.query(TrialTable)
        if rows is None or (tables and tables.first().row_count == rows):
            break
    await pilot.pause(0.5)


def test_dashboard_finished(snap_compare, tmp_path: Path) -> None:
    app = make_app(workdir=finished(tmp_path))
    assert snap_compare(app, terminal_size=(120, 40), run_before=lambda pilot: settle(pilot, 24))


def test_dashboard_finished_200x50(snap_compare, tmp_path: Path) -> None:
    """Wide: every column of the table (worker too) and the side panels at once."""
    app = make_app(workdir=finished(tmp_path))
    assert snap_compare(app, terminal_size=(200, 50), run_before=lambda pilot: settle(pilot, 24))


def test_dashboard_running_80x24(snap_compare, tmp_path: Path) -> None:
    app = make_app(workdir=running(tmp_path))
    assert snap_compare(app, terminal_size=(80, 24), run_before=lambda pilot: settle(pilot, 12))


def test_trial_detail(snap_compare, tmp_path: Path) -> None:
    app = make_app(workdir=finished(tmp_path))

    async def open_trial(pilot) -> None:
        await settle(pilot, 24)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(120, 40), run_before=open_trial)


def test_studies(snap_compare, tmp_path: Path) -> None:
    app = make_app(workdir=finished(tmp_path), mode="studies")
    assert snap_compare(app, terminal_size=(120, 40), run_before=settle)


def test_analysis(snap_compare, tmp_path: Path) -> None:
    app = make_app(workdir=finished(tmp_path), mode="analysis")

    async def computed(pilot) -> None:
        for _ in range(300):  # importance takes seconds on a busy machine (two test processes, 2 cores)
            await pilot.pause(0.1)
            if getattr(pilot.app.screen, "analysis", None) is not None:
                break
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=(120, 40), run_before=computed)


def test_quit_while_running(snap_compare, tmp_path: Path) -> None:
    app = make_app(workdir=running(tmp_path))

    async def ask(pilot) -> None:
        await settle(pilot, 12)
        await pilot.press("q")
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=(120, 40), run_before=ask)


def test_help(snap_compare, tmp_path: Path) -> None:
    app = make_app(workdir=finished(tmp_path))

    async def helped(pilot) -> None:
        await settle(pilot, 24)
        await pilot.press("question_mark")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(120, 40), run_before=helped)
