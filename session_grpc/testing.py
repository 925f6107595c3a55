"""Support for the tests, `make bench` and `make chaos`: nothing the running service uses.

Kept in the package (not under tests/) so bench/ and reliability/ import the same helpers as the
tests do: a free port, a database of one's own, migrated to head, on a PostgreSQL server, and an
embedded PostgreSQL that can be crashed and restarted.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from . import migrations
from .embedded import pgserver_module


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for a server process started next)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host.strip("[]"), 0))
        return int(probe.getsockname()[1])


def database_url_for(server_url: str, name: str) -> str:
    """`server_url` with its database replaced by `name` (socket and query parameters kept)."""
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def create_database(server_url: str, prefix: str) -> str:
    """A new database on the server of `server_url`, migrated to head; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url_for(server_url, name)
    await migrations.upgrade(url)
    return url


async def drop_database(server_url: str, url: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


class EmbeddedCluster:
    """An embedded PostgreSQL that can be stopped and started again at the same address,
    for fault tests and `make chaos` (what a database restart looks like to the service).

    It listens on a loopback TCP port, and `url` uses it: a service reaches its database over
    TCP, and a fault looks different there. After a backend sends its FATAL message its
    connection's end (FIN) follows a few milliseconds later over TCP (up to 8 ms measured; over
    the Unix socket pgserver uses it is usually there within microseconds), and a client sees
    that window.
    """

    def __init__(self, data_dir: Path) -> None:
        pgserver = pgserver_module()
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        info = self._server.get_postmaster_info()
        self._socket_dir = info.socket_dir
        self._user = self._server.system_user
        self._pg_ctl = str(Path(pgserver.__file__ or "").parent / "pginstall" / "bin" / "pg_ctl")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.stop("fast")  # pgserver started it on the socket only
        self.start()

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (`pg_ctl stop -m mode`) and wait until it is down.

        "immediate" is a crash as far as clients can tell: backends quit without a word and
        their connections just close. "fast" is a clean shutdown: every backend sends its
        client a FATAL 57P01 (admin_shutdown), idle ones too, then closes the connection.
        "smart" waits for every client to disconnect first, which a pooled server never does
        by itself; see stop_smart().
        """
        self._run("-m", mode, "stop")

    def stop_smart(self) -> None:
        """Begin a smart shutdown and return: PostgreSQL refuses new connections (57P03,
        cannot_connect_now) while the open ones keep working until they disconnect."""
        self._run("-m", "smart", "-W", "stop")

    async def terminate_backends(self, database: str) -> int:
        """`pg_terminate_backend` every backend connected to `database` (each gets a FATAL 57P01
        and its connection closes); how many there were."""
        admin = await asyncpg.connect(self.url)
        try:
            return await admin.fetchval(
                """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = $1 AND pid <> pg_backend_pid()""",
                database,
            )
        finally:
            await admin.close()

    def start(self) -> None:
        self._run(
            "-o", f"-h 127.0.0.1 -p {self.port}", "-o", f"-k {self._socket_dir}", "-l", str(self.data_dir / "log"), "start"
        )

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("fast")

    def _run(self, *args: str) -> None:
        command = [self._pg_ctl, "-D", str(self.data_dir), "-w", *args]
        if self._user is not None:
            # As root, pgserver runs PostgreSQL as its own user. Not subprocess's user=: that forks
            # a process with gRPC's threads in it (the child can crash); runuser is exec'd cleanly.
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
