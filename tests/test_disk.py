"""A full disk and a read-only workspace, on a real tiny filesystem (a 6 MB tmpfs): one clear line,
exit code 2, a database that passes its integrity check, and a resume that finishes the sweep."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A 6 MB tmpfs. Mounting needs root (the CI machine runs as root): elsewhere the test is skipped."""
    mount = Path("/tmp") / f"tui-hpo-fs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        mount.rmdir()
        message = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["pkill", "-f", str(mount)], capture_output=True)
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        mount.rmdir()


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def completed(db: Path) -> dict[int, float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT t.number, v.value FROM trials t JOIN trial_values v "
                                 "ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE'").fetchall())


def finished_so_far(db: Path) -> dict[int, float]:
    """As completed(), while the engine may still be creating its tables."""
    try:
        return completed(db)
    except sqlite3.OperationalError:
        return {}


def test_a_full_disk_stops_with_one_line_and_resume_finishes(tiny_fs: Path) -> None:
    workdir = tiny_fs / "runs"
    # The disk fills once a trial has finished, with work left (waiting for two, all four had once
    # ended by then)
    args = [sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui",
            "--n-trials", "4"]
    env = {**os.environ, "TUI_HPO__TRAIN__EPOCHS": "4"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = workdir / "hpo.db"
    deadline = time.time() + 90
    while time.time() < deadline and not (db.exists() and len(finished_so_far(db)) >= 1):
        time.sleep(0.3)
    before = completed(db)
    assert 1 <= len(before) < 4, "the sweep never got going, or ended before the disk filled"
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last byte (unbuffered: no flush at close)
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [err.strip()], f"one line, not a traceback: {err}"
    assert err.startswith(f"tui-hpo: error: {workdir}: no space left on the device: the sweep stopped")
    filler.unlink()
    assert integrity(db) == "ok"
    after = completed(db)
    assert all(after[n] == v for n, v in before.items()), "a finished trial was lost"
    try:
        resumed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        log = (workdir / "tiny" / "engine.log").read_text(errors="replace")
        pytest.fail(f"the resumed sweep hung; engine.log ends:\n{log[-6000:]}")
    assert resumed.returncode == 0, resumed.stderr
    assert len(completed(db)) == 4 and integrity(db) == "ok"


def test_a_read_only_workspace_is_one_line(tiny_fs: Path) -> None:
    workdir = tiny_fs / "runs"
    first = run_cli("run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui", "--n-trials", "1")
    assert first.returncode == 0, first.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    for target in (workdir, tiny_fs / "elsewhere"):
        result = run_cli("run", "--config", str(TINY), "--workdir", str(target), "--no-tui", "--n-trials", "2")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == (f"tui-hpo: error: {target}: read-only file system: the sweep stopped "
                                         "(every finished trial is safe in the database); choose a writable "
                                         "--workdir and run the same command to resume")
    # Read-only media hold no lock files: SQLite reads the database as immutable.
    with sqlite3.connect(f"file:{workdir / 'hpo.db'}?immutable=1", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0] == 1
