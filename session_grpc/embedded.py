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
    for fault tests and `make chaos` (what a database restart looks like to the service)."""

    def __init__(self, data_dir: Path) -> None:
        import pgserver

        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        info = self._server.get_postmaster_info()
        self.url = self._server.get_uri()
        self._socket_dir = info.socket_dir
        self._user = self._server.system_user
        self._pg_ctl = str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; "immediate" is a crash as far as clients can tell."""
        self._run("-m", mode, "stop")

    def start(self) -> None:
        self._run("-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.data_dir / "log"), "start")

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
