"""Fixtures of the ADK adapter's tests, run in .venv-adk by tests/test_adk.py against its live server.

SESSION_GRPC_TARGET is the server ("host:port"), SESSION_GRPC_DATABASE_URL its database (emptied
before each test, as tests/conftest.py does for the main suite), ADK_PEER_DATABASE_URL an empty
database of the same PostgreSQL for ADK's own DatabaseSessionService, the peer some tests compare with.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from session_client import SessionClient
from session_client.adk import SessionGrpcService


@pytest.fixture(scope="session")
def target() -> str:
    return os.environ["SESSION_GRPC_TARGET"]


@pytest.fixture(autouse=True)
async def clean_database() -> None:
    """Every test starts from empty tables (all but Alembic's)."""
    conn = await asyncpg.connect(os.environ["SESSION_GRPC_DATABASE_URL"])
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        await conn.execute("TRUNCATE " + ", ".join(f'"{row["tablename"]}"' for row in tables))
    finally:
        await conn.close()


@pytest.fixture
async def service(target: str) -> AsyncIterator[SessionGrpcService]:
    async with SessionGrpcService(target) as adk_service:
        yield adk_service


@pytest.fixture
async def client(target: str) -> AsyncIterator[SessionClient]:
    """The plain client, to look at what the adapter stored."""
    async with SessionClient(target) as plain:
        yield plain


@pytest.fixture
def peer_database_url() -> str:
    return os.environ["ADK_PEER_DATABASE_URL"]
