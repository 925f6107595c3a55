"""Run the Alembic migrations from code (make run, tests, the CLI), on a connection we own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from .settings import asyncpg_url

ROOT = Path(__file__).resolve().parents[1]
Operation = Callable[[Config, str], None]
"""alembic.command.upgrade or downgrade."""


def alembic_config() -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    await _run(url, command.upgrade, revision)


async def downgrade(url: str, revision: str) -> None:
    await _run(url, command.downgrade, revision)


async def stamp(url: str, revision: str) -> None:
    """Record `revision` as the database's without running anything (the partitioning step of a
    database already past it, docs/scaling.md)."""
    await _run(url, command.stamp, revision)


async def _run(url: str, operation: Operation, revision: str) -> None:
    engine = create_async_engine(asyncpg_url(url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_with_connection, operation, revision)
    finally:
        await engine.dispose()


def _with_connection(connection: Connection, operation: Operation, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    operation(config, revision)


async def current(url: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the revisions the database is at, the head revisions of the scripts); () when unmigrated."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = create_async_engine(asyncpg_url(url))
    try:
        async with engine.connect() as conn:
            at = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    finally:
        await engine.dispose()
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    return tuple(sorted(at)), tuple(sorted(heads))
