"""An embedded PostgreSQL from the `pgserver` wheel, for `make run` and tests without a server."""

from __future__ import annotations

import contextlib
import logging
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


def pgserver_module() -> ModuleType:
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
    server = pgserver_module().get_server(data_dir, cleanup_mode="stop")
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
