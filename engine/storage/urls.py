"""Storage URLs: the workspace's default, read-only viewers, and passwords kept out of sight."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError


def default_url(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'hpo.db'}"


# How a parent process hands the storage URL to its children (the engine to its workers, the TUI
# to the engine): the environment, which only the same user can read, not the command line,
# which every user of the machine sees in `ps` (/proc/PID/cmdline), password included.
STORAGE_ENV = "TUI_HPO_STORAGE"


def _split_password(url: str) -> tuple[str, str, str] | None:
    """(what comes before the password, the password, what comes after) when the URL has one in
    its user part, else None. The password runs from the user name's ':' to the last '@' (before
    any query), as a person wrote it: one with an unescaped '@' (it should be %40) is found whole,
    and so is one in a URL without its scheme (`hpo:pw@db/hpo`, a typo)."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    location = rest.partition("?")[0]
    userinfo, at, _host = location.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon) or "/" in user:  # "/": a file path with ':' and '@' in it, not a user
        return None
    start = len(head) + len(sep) + len(user) + 1
    return url[:start], password, url[start + len(password):]


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for output, logs and saved configs (also a
    `?password=` query parameter, which the drivers accept too)."""
    parts = _split_password(url)
    masked = f"{parts[0]}***{parts[2]}" if parts else url
    return re.sub(r"([?&]password=)[^&]*", r"\1***", masked, flags=re.IGNORECASE)


def readonly_url(url: str) -> str:
    """A read-only SQLite URL for viewers; other databases are returned unchanged."""
    match = re.fullmatch(r"sqlite:///(.+)", url)
    if not match:
        return url
    return f"sqlite:///file:{match.group(1)}?mode=ro&uri=true"


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database, or one in memory."""
    match = re.fullmatch(r"sqlite:///([^?]+)(\?.*)?", url)
    if not match or match.group(1) == ":memory:":
        return None
    return Path(match.group(1).removeprefix("file:"))


def refuse_bare_at(url: str) -> None:
    """Refuse a password with an unescaped '@' before connecting: SQLAlchemy would cut it there
    and take the rest for the host name, which the driver's "cannot resolve host" error prints."""
    import sqlalchemy as sa

    try:
        host = sa.engine.make_url(url).host or ""
    except (sa.exc.ArgumentError, ValueError):
        return  # a URL that does not parse: creating the engine says so
    if "@" in host:
        raise UserError(f"the password in the storage URL {mask_url(url)} contains '@': write it as %40",
                        key="--storage")



@dataclass(frozen=True)
class Workspace:
    """Where sweeps live: a folder (a folder per study; `hpo.db` by default) and, optionally, a
    storage URL that replaces `sqlite:///WORKDIR/hpo.db` (PostgreSQL for several machines)."""

    workdir: Path
    storage: str | None = None

    @property
    def url(self) -> str:
        return self.storage or default_url(self.workdir)

    @property
    def label(self) -> str:
        """As the user named it (`runs/hpo.db`), or the URL with its password masked."""
        return mask_url(self.storage) if self.storage else str(self.workdir / "hpo.db")

    def require_database(self, then: str = "run a sweep first") -> None:
        """A missing SQLite file is bad input, not an empty workspace: opening it would create it
        (a typo in a --storage URL would leave a new empty database behind)."""
        path = self.workdir / "hpo.db" if self.storage is None else sqlite_path(self.storage)
        if path is not None and not path.exists():
            raise UserError(f"no database at {path}: {then}", key="--workdir" if self.storage is None else "--storage")
