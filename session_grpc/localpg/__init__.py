"""Debian's PostgreSQL tools run on loopback for the tests, `make bench` and `make chaos`:
pgbouncer, a streaming-replication standby, a pg_auto_failover formation. Nothing the running
service uses.

Every process runs as the `postgres` OS user when we are root (initdb and pgbouncer refuse
root), as ourselves otherwise, in a scratch folder that user owns, on ports from
testing.free_port; each helper stops its processes and removes its folder however the block ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path(os.environ.get("SESSION_PG_BIN", "/usr/lib/postgresql/15/bin"))
"""Debian's PostgreSQL 15 programs (initdb, pg_ctl, pg_basebackup, postgres)."""

PACKAGES = {
    "pgbouncer": "pgbouncer",
    "pg_autoctl": "postgresql-15-auto-failover",
    "pg_basebackup": "postgresql-15",
}
"""The Debian package that brings each program; .ci/run installs them when missing."""

OWNER = "postgres"


def program(name: str) -> str | None:
    """Where `name` is installed, or None."""
    if name == "pg_basebackup":
        path = PG_BIN / name
        return str(path) if path.exists() else None
    return shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/usr/bin") if (Path(d) / name).exists()), None
    )


def missing(*names: str) -> str | None:
    """Why these programs cannot run here (the apt-get line that installs them), or None."""
    absent = [name for name in names if program(name) is None]
    if not absent:
        return None
    packages = " ".join(sorted({PACKAGES[name] for name in absent}))
    return f"{', '.join(absent)} not installed; as root: apt-get update && apt-get install -y {packages}"


def as_owner(command: list[str], owner: str = OWNER) -> list[str]:
    """`command` run as `owner` (the postgres OS user) when we are root (runuser is exec'd
    cleanly, unlike subprocess's user=, which forks a process with gRPC's threads in it)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", owner, "--", *command]
    return command


def give_to_owner(path: Path, owner: str = OWNER) -> None:
    """Make `owner` the owner of `path` (when we are root; otherwise we are the owner)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def scratch(prefix: str, owner: str = OWNER) -> Iterator[Path]:
    """A temporary folder `owner` owns; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        give_to_owner(folder, owner)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def owned_file(path: Path, text: str, owner: str = OWNER) -> Path:
    path.write_text(text)
    give_to_owner(path, owner)
    return path


def run(
    command: list[str], *, timeout: float = 120, env: dict[str, str] | None = None, owner: str = OWNER
) -> str:
    """Run `command` as `owner`; its output; CalledProcessError (with the output) on failure."""
    done = subprocess.run(
        as_owner(command, owner), capture_output=True, text=True, timeout=timeout, env=env, cwd="/",
    )
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    return done.stdout
