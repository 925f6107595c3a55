"""Fixtures in tiers: one database and one server per test session, a clean database per test.

The database is a real PostgreSQL: TEST_DATABASE_URL when set, otherwise an
embedded one (pgserver) in a temporary folder. Either way the tests get a fresh
database of their own, built by the real Alembic migrations.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from session_grpc import embedded, testing
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.server import SessionServer, build_server
from session_grpc.settings import Settings

# tests/adk/ needs google-adk, which lives in a virtualenv of its own: tests/test_adk.py runs it there.
collect_ignore = ["adk"]


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server to make the test database on."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    with embedded.postgres(Path(tmp_path_factory.mktemp("pgdata"))) as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A database of this test session's own, migrated to head, dropped at the end."""
    url = await testing.create_database(server_url, "session_grpc_test")
    yield url
    await testing.drop_database(server_url, url)


def test_settings(database_url: str, **overrides: object) -> Settings:
    base = {
        "port": 0,
        "host": "127.0.0.1",
        "database_url": database_url,
        "expiry_interval": 0.0,
        "prune_interval": 0.0,
        "health_interval": 1.0,
        "shutdown_grace": 2.0,
    }
    if overrides.get("auth_mode") == "token":
        # Token mode refuses plaintext and the public page-token secret unless told (settings.py).
        base.update(allow_plaintext=True, page_token_secret="page-token-secret-of-the-tests")
    base.update(overrides)
    return Settings(**base)


test_settings.__test__ = False


@pytest.fixture(scope="session")
async def service(database_url: str) -> AsyncIterator[SessionServer]:
    server = build_server(test_settings(database_url))
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture(scope="session")
async def channel(service: SessionServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
        yield chan


@pytest.fixture(scope="session")
def sessions(channel: grpc.aio.Channel) -> session_pb2_grpc.SessionServiceStub:
    return session_pb2_grpc.SessionServiceStub(channel)


@pytest.fixture(scope="session")
def messages(channel: grpc.aio.Channel) -> session_pb2_grpc.MessageServiceStub:
    return session_pb2_grpc.MessageServiceStub(channel)


@pytest.fixture(scope="session")
def memories(channel: grpc.aio.Channel) -> session_pb2_grpc.MemoryServiceStub:
    return session_pb2_grpc.MemoryServiceStub(channel)


@pytest.fixture(scope="session")
async def sql(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for checks the API cannot make (row counts, raw columns)."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(autouse=True)
async def clean_database(sql: asyncpg.Connection) -> None:
    """Every test starts from empty tables."""
    await sql.execute(
        "TRUNCATE sessions, messages, memories, session_rewinds, rewound_requests, user_states, app_states, "
        "state_updates, session_changes, user_feeds, budgets, retention_policies, user_erasures, session_role_totals"
    )
