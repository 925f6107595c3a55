"""Alembic environment: async engine from DATABASE_URL, or a connection handed in by session_grpc.migrations."""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from session_grpc.settings import asyncpg_url
from session_grpc.storage.tables import Base

config = context.config
target_metadata = Base.metadata

# Any fixed number: replicas that start together migrate one after the other.
MIGRATION_LOCK_ID = 0x5E55_1047


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(asyncpg_url(url))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(url=os.environ.get("DATABASE_URL", "postgresql://"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    run_migrations(connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL to the PostgreSQL to migrate")
    asyncio.run(run_async_migrations(url))
