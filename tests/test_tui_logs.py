"""A program's trials in the app: the output log (tail, follow, search, hostile output), the curves
of the program's own metrics, and the dashboard's output panel. One small study of a program,
written straight into a database (as tests/studies.py does for the built-in trainer), serves
every test of the module."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from textual.widgets import Static

from engine.config import resolve
from engine.storage import Store, default_url, optuna_storage, study_id
from tests.test_tui import header_lines, run, text_of, wait_for
from tui_hpo.app import make_app
from tui_hpo.screens import trial
from tui_hpo.screens.dashboard import DashboardScreen
from tui_hpo.screens.trial import TrialScreen
from tui_hpo.widgets.chart import Chart
from tui_hpo.widgets.log_pane import LogPane, LogView, SearchInput
from tui_hpo.widgets.log_tail import MAX_LINE_BYTES, MAX_LINE_CHARS, LogTail, clean, tail_lines, trial_log
from tui_hpo.widgets.trial_table import TrialTable

STEPS = 10
LR = optuna.distributions.FloatDistribution(0.001, 0.1, log=True)
# What hostile programs print: a 1 MB line, colours, a screen clear and cursor moves, a window title
# (OSC), a C1 CSI (U+009B), bytes that are not UTF-8, and a progress bar redrawn with \r.
HOSTILE = (b"x" * (1 << 20) + b"\n\x1b[31mred\x1b[0m \x1b[2J\x1b[H\x1b]0;owned\x07title \x9b\xc2\x9b6n c1 "
           b"\xff\xfe bad\nprogress 10%\rprogress 55%\rprogress 100%\n")
RED = "red title �6n c1 �� bad"  # HOSTILE's second line, as shown
NEEDLE = "needle"


def _trial(study: optuna.Study, state: str, value: float | None, attrs: dict) -> int:
    trial = optuna.trial.create_trial(params={"lr": 0.01}, distributions={"lr": LR}, value=value,
                                      state=getattr(optuna.trial.TrialState, state), user_attrs=attrs)
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1]._trial_id


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Study `prog` of `python3 train.py`, objective `score`: trial 0 complete (10 steps of score,
    loss and a throughput in the hundreds), trial 1 failed (exit code 2, ANSI in its stderr),
    trial 2 running (3 steps so far, its log still growing). Returns the workdir."""
    workdir = tmp_path_factory.mktemp("program") / "runs"
    workdir.mkdir()
    sweep = workdir / "prog.yaml"
    sweep.write_text("name: prog\nobjective: {command: [python3, train.py], metric: score, direction: maximize}\n"
                     f"train: {{epochs: {STEPS}}}\nsearch_space: {{lr: {{low: 0.001, high: 0.1, log: true}}}}\n")
    config = resolve({}, config_file=str(sweep), environ={})
    url = default_url(workdir)
    storage = optuna_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="prog", storage=storage, direction="maximize")
    store = Store(url)
    sid = study_id(storage, "prog")
    store.create_sweep(sid, "prog", config.to_dict(), 3)
    argv = ["python3", "train.py", f"--epochs={STEPS}", "--lr=0.01"]
    logs = [workdir / "prog" / "trials" / str(n) / "output.log" for n in range(3)]
    for log in logs:
        log.parent.mkdir(parents=True)
    logs[0].write_bytes(b"".join(b"epoch %d\n" % e for e in range(STEPS)) + HOSTILE)
    logs[1].write_bytes(b"usage: train.py [-h]\n\x1b[31mtrain.py: error: bad --epochs\x1b[0m\n")
    logs[2].write_bytes(b"training 2\n")
    final = {"score": 0.95, "loss": 0.1, "throughput": 109.0}
    done = _trial(study, "COMPLETE", 0.95, {"log": str(logs[0]), "command": argv, "exit_code": 0, "metrics": final,
                                            "worker": "host:1", "device": "cpu"})
    _trial(study, "FAIL", None, {"log": str(logs[1]), "command": argv, "exit_code": 2, "worker": "host:1",
                                 "fail_reason": "RuntimeError: the program ended with exit code 2; its last stderr "
                                                "lines:\nusage: train.py [-h]\n\x1b[31mtrain.py: error: bad "
                                                "--epochs\x1b[0m"})
    running = study.ask({"lr": LR})
    for key, value in {"log": str(logs[2]), "command": argv, "worker": "host:1", "device": "cpu"}.items():
        running.set_user_attr(key, value)
    for step in range(STEPS):
        score = 0.95 * (1 - math.exp(-(step + 1) / 2))
        store.set_epoch(sid, done, 0, step, {"score": score, "loss": 1 - score, "throughput": 100.0 + step})
    for step in range(3):
        store.set_epoch(sid, running._trial_id, 0, step, {"score": 0.2 * step, "loss": 1 - 0.2 * step,
                                                          "throughput": 90.0})
    store.update_sweep(sid, state="running", claimed=3)
    store.close()
    return workdir


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Polls ten times as often: each step of a scenario waits for the next read."""
    monkeypatch.setattr(LogPane, "POLL_S", 0.1)
    monkeypatch.setattr(DashboardScreen, "POLL_S", 0.1)
    monkeypatch.setattr(trial, "RELOAD_S", 30.0)  # the running trial's details: not read again meanwhile


def log_of(workdir: Path, number: int) -> Path:
    return workdir / "prog" / "trials" / str(number) / "output.log"


def shown(view: LogView) -> list[str]:
    """What the view holds, as drawn (the unfinished line last)."""
    return [view.line(i) for i in range(view.line_count)]


def drawn(view: LogView, row: int) -> str:
    """Row `row` of the view on screen, as the terminal gets it."""
    return "".join(segment.text for segment in view.render_line(row))


# ---------------------------------------------------------------- the file side, without the app

def test_hostile_output_is_cleaned_and_bounded(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(HOSTILE)
    tail = LogTail(log, tail_bytes=2 << 20)
    chunk = tail.read()
    huge, red, progress = chunk.lines
    assert red == RED, "escape sequences and C1 controls dropped, bad bytes replaced"
    assert progress == "progress 100%", "a line redrawn with \\r shows its last state"
    assert huge.startswith("x" * MAX_LINE_CHARS) and huge.endswith(f"[line cut: {(1 << 20) - MAX_LINE_CHARS:,} "
                                                                    "more bytes]")
    assert all(ord(c) >= 32 or c == "\t" for line in chunk.lines for c in line)
    # a line still being written is kept only up to MAX_LINE_BYTES, however long it grows
    with log.open("ab") as fh:
        fh.write(b"y" * (3 << 20))
    chunk = tail.read()
    assert chunk.lines == [] and chunk.pending is not None and len(tail._partial) == MAX_LINE_BYTES
    assert chunk.pending.endswith(f"[line cut: {(3 << 20) - MAX_LINE_CHARS:,} more bytes]")
    assert clean(b"tab\there") == "tab here"


def test_following_reads_only_what_was_appended(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    tail = LogTail(log, tail_bytes=64)
    assert tail.read().missing and tail.offset == -1, "no file yet: said, and tried again later"
    log.write_bytes(b"".join(b"line %02d\n" % i for i in range(20)))  # 160 bytes: the tail is the last 64
    first = tail.read()
    assert first.lines[0] == "[… the first 96 bytes are not shown]"
    assert first.lines[1:] == [f"line {i:02d}" for i in range(12, 20)], "the tail starts on a whole line"
    assert LogTail(log, tail_bytes=60).read().lines[1:3] == ["… e 12", "line 13"], "or shows where it was cut"
    with log.open("ab") as fh:
        fh.write(b"line 20\nline 2")
    assert tail.read().lines == ["line 20"] and tail.offset == log.stat().st_size
    with log.open("ab") as fh:
        fh.write(b"1\n")
    assert tail.read().lines == ["line 21"], "a line split across reads is one line"
    assert tail.read().lines == []
    log.write_bytes(b"again\n")  # replaced by a shorter file: read afresh
    again = tail.read()
    assert again.reset and again.lines == ["again"]
    assert tail_lines(log, 5) == ["again"]


def test_a_log_is_found_in_this_workspace_when_its_stored_path_is_not_there(program: Path) -> None:
    assert trial_log("elsewhere/runs/prog/trials/0/output.log", program, "prog", 0) == log_of(program, 0)
    assert trial_log(str(log_of(program, 1)), program, "prog", 1) == log_of(program, 1)
    assert trial_log(None, program, "prog", 0) is None, "a built-in trial has no log"


# ---------------------------------------------------------------- the trial screen

async def open_trial(pilot, number: int) -> TrialScreen:
    app = pilot.app
    table = app.screen.query_one(TrialTable)
    await wait_for(pilot, lambda: table.row_count == 3)
    app.push_screen(TrialScreen(app.screen.study, number))
    await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen) and app.screen.row is not None)
    return app.screen


def test_trial_log_tail_follow_search_and_cap(program: Path) -> None:
    """At 80x24: the running trial's log is shown and followed as lines arrive, only the last
    MAX_LINES are kept, and search marks matches and jumps between them with n/N."""
    log_of(program, 2).write_bytes(b"training 2\n")  # as the fixture left it, whichever test ran before

    async def scenario() -> None:
        app = make_app(workdir=program, study="prog")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_trial(pilot, 2)
            pane = screen.query_one(LogPane)
            view = pane.view
            await wait_for(pilot, lambda: shown(view) == ["training 2"])
            await pilot.pause()
            assert pane.display and not screen.query_one("#trial-body").display
            assert pane.region.height >= 8 and pane.region.bottom <= 23, "room for the log at 80x24, above the footer"
            assert "python3 train.py --epochs=10" in str(pane.border_title)
            assert view.has_focus, "the arrows scroll the log"
            with log_of(program, 2).open("ab") as fh:  # the program goes on writing
                fh.write(b"".join(b"step %d\n" % i for i in range(40)) + f"{NEEDLE} A\nquiet\nNeedle B\n"
                         .encode() + b"partial")
            await wait_for(pilot, lambda: shown(view)[-2:] == ["Needle B", "partial"])
            assert shown(view).count("training 2") == 1, "only new bytes are read"
            assert view.scroll_offset.y == view.max_scroll_y > 0, "following: the newest line on screen"
            assert drawn(view, view.size.height - 1).startswith("partial")
            # search: matches marked, n and N go round them
            await pilot.press("slash")
            search = pane.query_one(SearchInput)
            assert search.has_focus
            search.value = NEEDLE
            await pilot.press("enter")
            assert pane.found == (1, 2) and "match 1/2" in pane.border_subtitle
            assert view.line(view.current - view.first) == f"{NEEDLE} A"
            await pilot.press("n")
            assert pane.found == (2, 2) and view.line(view.current - view.first) == "Needle B"
            await pilot.press("n")
            assert pane.found == (1, 2), "round the end"
            await pilot.press("N")
            assert pane.found == (2, 2), "and back"
            row = view.current - view.first - view.scroll_offset.y
            assert 0 <= row < view.size.height, "the match is on screen"
            segments = list(view.render_line(row))
            marked = [s.text for s in segments if s.style and s.style.bold]
            assert marked == ["Needle"], "the match itself is marked"
            # a program printing fast: only the newest MAX_LINES lines are kept, the screen keeps up
            view.scroll_end(animate=False, immediate=True)
            with log_of(program, 2).open("ab") as fh:
                fh.write(b"".join(b"flood %d\n" % i for i in range(6000)))
            await wait_for(pilot, lambda: shown(view)[-1] == "flood 5999")
            assert len(view.lines) == 5000 and view.first > 0
            assert view.scroll_offset.y == view.max_scroll_y
            # l switches to the details: the program's own metrics per step
            await pilot.press("l")
            assert not pane.display and screen.query_one("#trial-body").display
            assert "throughput" in text_of(screen.query_one("#trial-epochs", Static))

    run(scenario())


def test_trial_program_metrics_chart_and_hostile_log(program: Path) -> None:
    """At 120x40: a finished program trial's curves are its objective with the metrics of its scale
    (m: each one alone), its log's hostile lines arrive cleaned, and a failed trial's header
    quotes its stderr within the bar, without escape sequences."""
    async def scenario() -> None:
        app = make_app(workdir=program, study="prog")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_trial(pilot, 0)
            chart = screen.query_one("#trial-curves", Chart)
            await wait_for(pilot, lambda: "step" in text_of(chart))
            assert str(chart.border_title) == "score (objective), loss", "a throughput of 100 would flatten both"
            assert screen.views == [("score", "loss"), ("score",), ("loss",), ("throughput",)]
            await pilot.press("m", "m", "m")
            assert str(chart.border_title) == "throughput" and "throughput" in text_of(chart)
            params = text_of(screen.query_one("#trial-params", Static))
            assert "reported" in params and "throughput" in params
            view = screen.query_one(LogPane).view
            await wait_for(pilot, lambda: "progress 100%" in shown(view))
            note, huge, red = shown(view)[:3]  # the tail: inside the 1 MB line, cut
            assert note.startswith("[… the first ") and red == RED
            assert huge.startswith("… xxx") and "more bytes]" in huge and len(huge) < MAX_LINE_CHARS + 50
            for row in range(view.size.height):
                assert "\x1b" not in drawn(view, row) and "\x9b" not in drawn(view, row)
            await pilot.press("escape")
            screen = await open_trial(pilot, 1)
            header = screen.query_one("#trial-header", Static)
            await wait_for(pilot, lambda: "exit code 2" in text_of(header))
            said = text_of(header)
            assert "train.py: error: bad --epochs" in said and "\x1b" not in said
            assert header.region.height <= 3 and header_lines(header, 120) <= 3
            assert screen.query_one("#trial-curves", Chart).border_title == "reported per step", "none yet"

    run(scenario())


# ---------------------------------------------------------------- the dashboard

def test_dashboard_shows_the_selected_trials_output(program: Path) -> None:
    """At 80x24: `o` (a program's sweep only) shows the selected trial's last lines in place of the
    charts, follows the cursor and the file, and never passes an escape sequence on."""
    log_of(program, 2).write_bytes(b"training 2\n")

    async def scenario() -> None:
        app = make_app(workdir=program, study="prog")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            table = screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count == 3 and screen.program)
            box = screen.query_one("#dash-output", Static)
            assert not box.display
            table.move_cursor(row=table.get_row_index("2"))
            await pilot.press("o")
            assert box.display and not screen.query_one("#history").display
            await wait_for(pilot, lambda: "training 2" in text_of(box))
            assert "output of trial 2 (running)" in str(box.border_title)
            with log_of(program, 2).open("ab") as fh:
                fh.write(b"\x1b[2Jfresh line\n")
            await wait_for(pilot, lambda: "fresh line" in text_of(box))
            assert "\x1b" not in text_of(box)
            assert box.region.right <= 80 and box.region.bottom <= 23
            table.move_cursor(row=table.get_row_index("0"))  # the panel follows the cursor
            await wait_for(pilot, lambda: "progress 100%" in text_of(box))
            assert "output of trial 0 (complete)" in str(box.border_title)
            await pilot.press("o")
            assert not box.display and screen.query_one("#history").display

    run(scenario())
