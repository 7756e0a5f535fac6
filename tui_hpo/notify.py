"""Telling the user in the terminal that a watched sweep finished, keeps failing or found a new
best (engine.sweep.notify decides what is news): a bell and a desktop notification.

All are plain output, so they reach the user's own terminal over SSH: the bell (BEL), OSC 9
(e.g. iTerm2, WezTerm, Ghostty) and OSC 777 (e.g. foot, urxvt, WezTerm, Ghostty). A terminal
ignores a sequence it does not know, so both are sent; one that knows both may show the notice
twice: `TUI_HPO_NOTIFY=bell,osc9` picks the channels, `off` silences them.

tmux swallows OSC sequences it does not know. Inside it (`$TMUX`), each is wrapped in tmux's DCS
passthrough (every ESC doubled), which tmux 3.3+ hands to the outer terminal when the user has
`set -g allow-passthrough on` (off by default: then tmux drops it silently). The bell is never
wrapped: tmux handles bells itself (`monitor-bell`, `bell-action`) and passes them on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

CHANNELS = ("bell", "osc9", "osc777")
CHANNELS_ENV = "TUI_HPO_NOTIFY"  # a comma list of CHANNELS, or off; unset: all of them
TITLE = "tui-hpo"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # would end or corrupt the sequence


def channels(environ: Mapping[str, str]) -> tuple[str, ...]:
    value = environ.get(CHANNELS_ENV)
    if value is None:
        return CHANNELS
    return tuple(c for c in (part.strip().lower() for part in value.split(",")) if c in CHANNELS)


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text)


def tmux_passthrough(sequence: str) -> str:
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def sequences(message: str, environ: Mapping[str, str]) -> str:
    """What to write to the terminal for one notice: the bell, then the desktop notifications."""
    chosen = channels(environ)
    body = _clean(message)
    osc = []
    if "osc9" in chosen:  # the title in the text: OSC 9 has no title field
        osc.append(f"\x1b]9;{TITLE}: {body}\x07")
    if "osc777" in chosen:
        osc.append(f"\x1b]777;notify;{TITLE};{body}\x07")
    if environ.get("TMUX"):
        osc = [tmux_passthrough(s) for s in osc]
    return ("\x07" if "bell" in chosen else "") + "".join(osc)
