"""An embedded PostgreSQL from the `pgserver` wheel, for `make run` and tests without a server."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """`settings` with a database: DATABASE_URL when it is set; otherwise an embedded PostgreSQL in
    SESSION_EMBEDDED_DATA_DIR, started for the block and stopped after it (serve, workers, the CLI)."""
    if settings.database_url is not None:
        yield settings
        return
    with postgres(settings.embedded_data_dir) as url:
        yield replace(settings, database_url=url)


def _pgserver() -> ModuleType:
    """Imported only when needed. Its import asks platformdirs for a runtime directory, which warns
    that XDG_RUNTIME_DIR is unset on servers and in containers (and then uses /tmp, which is fine)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pgserver
    return pgserver


@contextlib.contextmanager
def postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL whose data lives in `data_dir`; yield its URL; stop it after."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = _pgserver().get_server(data_dir, cleanup_mode="stop")
    url = server.get_uri()
    log.info("embedded PostgreSQL running in %s", data_dir)
    try:
        yield url
    finally:
        server.cleanup()
        # pgserver stops it only when no other process still uses it (it counts their handles).
        if (data_dir / "postmaster.pid").exists():
            log.info("embedded PostgreSQL in %s left running: another process still uses it", data_dir)
        else:
            log.info("embedded PostgreSQL stopped")


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
        pgserver = _pgserver()
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        info = self._server.get_postmaster_info()
        self._socket_dir = info.socket_dir
        self._user = self._server.system_user
        self._pg_ctl = str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl")
        self.port = _free_port()
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
        import asyncpg

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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
