"""Files a sweep leaves in `DIR/<study>/`: resolved config, best checkpoint, best config and
params, trials CSV. Every file is written to a temporary name and renamed, so a crash never
leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHECKPOINT = "best_model.pt"


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
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return f"{header.rstrip()}\n{text}" if header else text


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save_best_checkpoint(folder: Path, model: Any, meta: dict[str, Any]) -> bool:
    """Keep one checkpoint: this model's, if it beats the one on disk. Safe across workers."""
    import torch

    path = folder / CHECKPOINT
    with _locked(folder / f".{CHECKPOINT}.lock"):
        if path.exists():
            try:
                current = torch.load(path, map_location="cpu", weights_only=False)["meta"]
                better = meta["value"] > current["value"] if meta["maximize"] else meta["value"] < current["value"]
                if not better:
                    return False
            except Exception:  # an unreadable checkpoint is replaced
                pass
        buffer = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in getattr(model, "_orig_mod", model).state_dict().items()}
        torch.save({"meta": meta, "state_dict": state}, buffer)
        write_atomic(path, buffer.getvalue())
    return True
