"""Support for the tests, `make bench` and `make chaos`: nothing the running service uses.

Kept in the package (not under tests/) so bench/ and reliability/ import the same helpers as the
tests do: a free port, and a database of one's own, migrated to head, on a PostgreSQL server.
"""

from __future__ import annotations

import socket
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from . import migrations


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
