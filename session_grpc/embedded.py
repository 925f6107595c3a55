"""An embedded PostgreSQL from the `pgserver` wheel, for `make run` and tests without a server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL whose data lives in `data_dir`; yield its URL; stop it after."""
    import pgserver  # imported here: only the embedded mode needs it

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    url = server.get_uri()
    log.info("embedded PostgreSQL running in %s", data_dir)
    try:
        yield url
    finally:
        server.cleanup()
