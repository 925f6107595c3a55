"""pgbouncer in front of a PostgreSQL server, in transaction pooling mode (or another)."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from ..testing import free_port
from . import OWNER, as_owner, owned_file, program, scratch

STATEMENT_TIMEOUT_MS = 31_000
"""What the service sets at connect time without pgbouncer (SESSION_DEFAULT_DEADLINE + 1 s);
behind pgbouncer the pooler sets it on each server connection (connect_query)."""


class Pgbouncer:
    """A running pgbouncer; `url_for(database_url)` is the same database through it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def url_for(self, database_url: str) -> str:
        url = make_url(database_url)
        query = {k: v for k, v in url.query.items() if k != "host"}
        return url.set(host="127.0.0.1", port=self.port, query=query).render_as_string(hide_password=False)


def config(server_url: str, port: int, folder: Path, *, pool_mode: str, pool_size: int) -> str:
    """The pgbouncer.ini: every database of the server at `server_url`, trust authentication on
    loopback, the statement_timeout set by connect_query (pgbouncer 1.18 refuses startup
    parameters it does not know, statement_timeout among them)."""
    url = make_url(server_url)
    host = url.query.get("host") or url.host or "127.0.0.1"
    backend = f"host={host} port={url.port or 5432}"
    return f"""[databases]
* = {backend} connect_query='SET statement_timeout = {STATEMENT_TIMEOUT_MS}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "userlist.txt"}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
"""


@contextlib.contextmanager
def pgbouncer(server_url: str, *, pool_mode: str = "transaction", pool_size: int = 20) -> Iterator[Pgbouncer]:
    """pgbouncer in front of the server of `server_url` for the block; stopped and removed after."""
    binary = program("pgbouncer")
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed")
    user = make_url(server_url).username or "postgres"
    owner = _socket_owner(server_url)
    with scratch("session-grpc-pgbouncer-", owner) as folder:
        port = free_port()
        owned_file(folder / "userlist.txt", f'"{user}" ""\n', owner)
        ini = owned_file(
            folder / "pgbouncer.ini", config(server_url, port, folder, pool_mode=pool_mode, pool_size=pool_size), owner
        )
        # Its own process group: runuser does not pass signals on, so stopping signals the group.
        process = subprocess.Popen(
            as_owner([binary, str(ini)], owner), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        log = folder / "pgbouncer.log"
        try:
            _wait_for(port, process, log)
            yield Pgbouncer(process, port, log)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)  # pgbouncer's "safe shutdown"
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _socket_owner(server_url: str) -> str:
    """Who runs pgbouncer: the postgres OS user, or for a server on a Unix socket (the embedded
    PostgreSQL) the owner of the socket's folder, the one user sure to reach it."""
    socket_dir = make_url(server_url).query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return pwd.getpwuid(Path(socket_dir).stat().st_uid).pw_name
    return OWNER


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {log.read_text() if log.exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pgbouncer not listening on {port} after {timeout}s") from None
            time.sleep(0.05)
