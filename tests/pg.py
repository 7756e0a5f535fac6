"""A throwaway PostgreSQL server for the tests: started on 127.0.0.1 on a free port, with a random
password, in a temporary folder, and removed afterwards.

Debian's package puts `initdb` and `pg_ctl` in /usr/lib/postgresql/VERSION/bin (not on PATH), and
the server refuses to run as root: as root, every server command runs through `runuser` as the
`postgres` user the package creates (or a dedicated system user, made here when that is missing).
The database is reached over TCP with a password (scram-sha-256), as a worker on another machine
would reach it, so what the tests exercise is the password path the masking is about.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DB_USER = "hpo"
DB_NAME = "hpo"
OS_USER = "postgres"  # the user Debian's package creates
FALLBACK_OS_USER = "tui-hpo-pg"  # ours, on a machine that has the binaries but no such user
START_TIMEOUT_S = 60


class Unavailable(Exception):
    """No PostgreSQL server can be started here; the message says why (a skip, or a CI failure)."""


@dataclass(frozen=True)
class Server:
    url: str
    password: str
    port: int
    root: Path  # holds data/, the socket, and server.log
    bin_dir: Path
    os_user: str | None  # None: the server runs as this (non-root) process's user

    @property
    def data(self) -> Path:
        return self.root / "data"


def bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first (links resolved, so pg_ctl is found beside
    initdb), then the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: int(Path(p).parent.name)
                                           if Path(p).parent.name.isdigit() else 0, reverse=True)]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", "-u", name], capture_output=True).returncode == 0


def server_user() -> str | None:
    """Whom the server runs as: None when this process is not root (it runs as us), else the
    package's `postgres` user, else a dedicated system user created now."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        raise Unavailable("running as root without runuser: the server cannot be started as another user")
    if _user_exists(OS_USER):
        return OS_USER
    if not _user_exists(FALLBACK_OS_USER):
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               FALLBACK_OS_USER], capture_output=True, text=True)
        if made.returncode != 0:
            raise Unavailable(f"cannot create the user {FALLBACK_OS_USER}: {made.stderr.strip()}")
    return FALLBACK_OS_USER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user(user: str | None, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a server command as the server's user; its output is captured for the error message.
    cwd is the server's own folder, which that user can enter (the checkout may not be)."""
    command = ["runuser", "-u", user, "--", *args] if user else args
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=START_TIMEOUT_S)


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise Unavailable(f"{what} failed: {(result.stderr or result.stdout).strip()[-2000:]}")


def start() -> Server:
    """initdb, start, create the database; raises Unavailable when any step cannot be done."""
    found = bin_dir()
    if found is None:
        raise Unavailable("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)")
    user = server_user()
    # /tmp, not the default temp folder: the server's user must be able to reach it (not so /root).
    root = Path(tempfile.mkdtemp(prefix="tui-hpo-pg-", dir="/tmp"))
    try:
        password = secrets.token_hex(16)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if user is not None:
            shutil.chown(root, user)
            shutil.chown(pwfile, user)
        _check(_as_user(user, [str(found / "initdb"), "-D", str(root / "data"), "-U", DB_USER,
                               "--pwfile", str(pwfile), "--auth", "scram-sha-256", "-E", "UTF8",
                               "--locale", "C", "--no-sync"], root), "initdb")
        pwfile.unlink()
        port = free_port()
        # A test server: no durability needed, so no fsync (the 2-core machines are slow enough).
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
        server = Server(url=f"postgresql+psycopg://{DB_USER}:{password}@127.0.0.1:{port}/{DB_NAME}",
                        password=password, port=port, root=root, bin_dir=found, os_user=user)
        _check(_as_user(user, [str(found / "pg_ctl"), "-D", str(server.data), "-l", str(root / "server.log"),
                               "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"], root), "pg_ctl start")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        _create_database(server)
    except BaseException:
        stop(server)
        raise
    return server


def _create_database(server: Server) -> None:
    """CREATE DATABASE over TCP with the password: this also proves the URL's credentials work."""
    try:
        import psycopg
    except ImportError:
        raise Unavailable("the driver is missing: pip install -e '.[postgres]'") from None
    with psycopg.connect(host="127.0.0.1", port=server.port, user=DB_USER, password=server.password,
                         dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def stop(server: Server) -> None:
    """Stop the server (fast: open connections are closed) and delete its folder."""
    try:
        _as_user(server.os_user, [str(server.bin_dir / "pg_ctl"), "-D", str(server.data), "-m", "fast", "-w",
                                  "stop"], server.root)
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def start_for_test() -> Server:
    """A server for a test. Missing PostgreSQL skips the test, except under CI=true, where
    run_tests.sh was to install it: there it is a failure, as for tmux."""
    import pytest

    try:
        return start()
    except Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is needed under CI=true: {exc}")
        pytest.skip(f"PostgreSQL is not available: {exc}")


@contextmanager
def running() -> Iterator[Server]:
    server = start()
    try:
        yield server
    finally:
        stop(server)
