"""A trial's params on the clipboard: as YAML (what a program's `{config}` file holds) or as
command-line flags (what `{args}` expands to, quoted for a shell), the same text a trial of a
program receives (`engine.command.argv`).

The copy itself is OSC 52 (`App.copy_to_clipboard`): an escape sequence the terminal emulator
decodes, so it reaches the clipboard of the machine the user sits at, over SSH too. tmux passes
it on only with `set -g set-clipboard on`, which the notification says inside tmux.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from engine.command.argv import arg_list, nested

PREVIEW_LINES = 6  # of the copied text, in the notification


def as_yaml(params: Mapping[str, Any]) -> str:
    return yaml.safe_dump(nested(params), sort_keys=False, allow_unicode=True)


def as_flags(params: Mapping[str, Any]) -> str:
    return " ".join(shlex.quote(arg) for arg in arg_list(params, "args"))


FORMATS: dict[str, tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    "yaml": ("YAML", as_yaml),
    "flags": ("CLI flags", as_flags),
}


def copy(app: Any, text: str, what: str) -> None:
    """Put `text` on the user's clipboard and say what was copied, with the start of it."""
    app.copy_to_clipboard(text)
    lines = text.rstrip("\n").splitlines()
    preview = "\n".join(lines[:PREVIEW_LINES]) + ("\n..." if len(lines) > PREVIEW_LINES else "")
    inside_tmux = "\n(inside tmux this needs `set -g set-clipboard on`)" if os.environ.get("TMUX") else ""
    app.notify(f"{preview}{inside_tmux}", title=f"copied {what}", markup=False)
