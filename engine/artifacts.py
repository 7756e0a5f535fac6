"""Writing the files a sweep leaves in `DIR/<study>/` (config, report, best config and params,
trials CSV, checkpoints). Every file is written to a temporary name and renamed, so a crash never
leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from engine.config import SafeDumper  # the loader's twin: what is written reads back the same


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def dump_yaml(data: Any, header: str | None = None) -> str:
    text = yaml.dump(data, Dumper=SafeDumper, sort_keys=False, allow_unicode=True)
    return f"{header.rstrip()}\n{text}" if header else text


def ensure_writable(folder: Path) -> None:
    """Fail before anything starts when the workspace cannot be written (read-only, full): the
    OSError says which, and the CLI turns it into one line."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-check.")
    try:
        os.write(fd, b"x" * 4096)
    finally:
        os.close(fd)
        os.unlink(tmp)


def user_cache_dir() -> Path:
    """Where tui-hpo keeps what any workspace may reuse ($XDG_CACHE_HOME/tui-hpo, else
    ~/.cache/tui-hpo): losing it costs time, never results."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tui-hpo"


def tta_path(package: str | Path) -> Path:
    """Where `tui-hpo evaluate` keeps its TTA comparison on a package's own validation split,
    beside the package (the Analysis screen shows the best model's)."""
    return Path(f"{package}.tta.json")
