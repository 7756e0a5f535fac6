"""Notes on studies and trials, stored as optuna-dashboard stores them, so both tools show the same
notes (optuna_dashboard/_note.py, v0.21, which defines the format; we do not depend on it).

Every note lives in its study's system attributes, the trial's ones too (a finished trial's
attributes can no longer be written):

- `dashboard:note_ver` (study) or `dashboard:<trial_id>:note_ver` (trial): the version, an int
  that each save increments; a save whose version is not the stored one plus one is refused
  (optuna-dashboard answers 409), so two editors cannot silently overwrite each other;
- `dashboard:note_str:<i>` or `dashboard:<trial_id>:note_str:<i>`: the Markdown body cut into
  chunks of 2045 characters, i = 0, 1, ...; a shorter body blanks the chunks it no longer needs.

`trial_id` is Optuna's storage id of the trial (`trial._trial_id`), not its number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHUNK = 2045  # optuna-dashboard's SYSTEM_ATTR_MAX_LENGTH


@dataclass(frozen=True)
class Note:
    version: int  # 0: never written
    body: str


class NoteConflict(Exception):
    """The note was saved elsewhere (optuna-dashboard, another TUI) after it was read."""

    def __init__(self, current: Note) -> None:
        super().__init__(f"the note was changed elsewhere meanwhile (now version {current.version})")
        self.current = current


def version_key(trial_id: int | None) -> str:
    return "dashboard:note_ver" if trial_id is None else f"dashboard:{trial_id}:note_ver"


def chunk_prefix(trial_id: int | None) -> str:
    return "dashboard:note_str:" if trial_id is None else f"dashboard:{trial_id}:note_str:"


def read(system_attrs: dict[str, Any], trial_id: int | None) -> Note:
    """The note of the study (trial_id None) or of one trial, from the study's system attributes."""
    if version_key(trial_id) not in system_attrs:
        return Note(0, "")
    prefix = chunk_prefix(trial_id)
    count = sum(1 for key in system_attrs if key.startswith(prefix))
    return Note(int(system_attrs[version_key(trial_id)]), "".join(system_attrs.get(f"{prefix}{i}", "")
                                                                  for i in range(count)))


def load(url: str, study_id: int, trial_id: int | None) -> Note:
    """The note as stored now, read through a read-only storage (a viewer never writes)."""
    from engine.storage import optuna_storage

    return read(optuna_storage(url, heartbeat=False, readonly=True).get_study_system_attrs(study_id), trial_id)


def attrs_to_save(system_attrs: dict[str, Any], trial_id: int | None, version: int, body: str) -> dict[str, Any]:
    """The system attributes that store `body` as version `version`: its chunks, and blanks for
    the chunks of a longer earlier body (optuna-dashboard blanks them rather than deleting)."""
    prefix = chunk_prefix(trial_id)
    chunks = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]
    before = sum(1 for key in system_attrs if key.startswith(prefix))
    return {version_key(trial_id): version,
            **{f"{prefix}{i}": (chunks[i] if i < len(chunks) else "") for i in range(max(len(chunks), before))}}
