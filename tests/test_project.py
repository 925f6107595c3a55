"""Checks on the project itself: generated stubs, proto style, schema, settings."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from session_grpc import migrations
from session_grpc.testing import database_url_for
from session_grpc.settings import Settings, SettingsError, asyncpg_url, parse_duration
from session_grpc.storage.tables import Base

from .test_server import buf

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_protos():
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_protos_pass_buf_standard_lint():
    result = subprocess.run([buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _not_a_partition(item, name, kind, reflected, compare_to) -> bool:
    """The partitions of messages (migration 0017) and their indexes are PostgreSQL's copies of
    the parent's: the models describe the parent."""
    table = item if kind == "table" else getattr(item, "table", None)
    return table is None or not re.fullmatch(r"messages_p\d+", table.name)


async def test_migrated_schema_matches_the_models(database_url):
    engine = create_async_engine(asyncpg_url(database_url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"include_object": _not_a_partition}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    # The title's trigram index exists only where pg_trgm does (migration 0005), so the models
    # leave it out.
    diff = [d for d in diff if not (d[0] == "remove_index" and d[1].name == "ix_sessions_title_trgm")]
    assert diff == []


async def test_migrations_downgrade_to_base_and_upgrade_again(server_url):
    name = f"session_grpc_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url_for(server_url, name)
    try:
        await migrations.upgrade(url)
        await migrations.downgrade(url, "base")
        conn = await asyncpg.connect(url)
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        await conn.close()
        assert tables == 0
        await migrations.upgrade(url)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_settings_defaults_and_environment():
    assert Settings.from_env({}).port == 8203
    assert Settings.from_env({}).database_url is None
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "DATABASE_URL": "postgresql://app@db:5432/sessions",
            "SESSION_DB_POOL_SIZE": "3",
            "SESSION_EXPIRY_INTERVAL": "0",
            "SESSION_EXPIRY_IDLE": "2h",
            "SESSION_MIGRATE_ON_START": "true",
            "SESSION_LOG_LEVEL": "debug",
        }
    )
    assert settings.port == 9000
    assert settings.sqlalchemy_url == "postgresql+asyncpg://app@db:5432/sessions"
    assert settings.db_pool_size == 3
    assert settings.expiry_interval == 0
    assert settings.expiry_idle == 7200
    assert settings.migrate_on_start is True
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    "env",
    [{"PORT": "eighty"}, {"SESSION_EXPIRY_IDLE": "soon"}, {"SESSION_MIGRATE_ON_START": "maybe"},
     {"DATABASE_URL": "mysql://x@y/z"}],
)
def test_bad_settings_fail_loudly(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env).sqlalchemy_url if "DATABASE_URL" in env else Settings.from_env(env)


def test_durations_accept_units():
    assert parse_duration("250ms") == 0.25
    assert parse_duration("90") == 90
    assert parse_duration("5m") == 300
    assert parse_duration("1d") == 86400


def test_account_settings_come_from_the_environment():
    assert Settings.from_env({}).account is None
    account = Settings.from_env(
        {
            "SESSION_ACCOUNT_ADDRESS": "accounts:9000",
            "SESSION_ACCOUNT_DEADLINE": "250ms",
            "SESSION_ACCOUNT_FAIL_OPEN": "false",
            "SESSION_ACCOUNT_CACHE_SIZE": "5",
        }
    ).account
    assert account is not None
    assert (account.address, account.deadline, account.fail_open, account.cache_size) == ("accounts:9000", 0.25, False, 5)
    assert (account.positive_ttl, account.negative_ttl, account.retries) == (300, 30, 2)


def test_mode_none_listens_on_loopback_unless_an_address_is_set():
    assert Settings.from_env({}).host == "localhost"
    assert Settings.from_env({"SESSION_HOST": "0.0.0.0"}).host == "0.0.0.0"
    token = {
        "SESSION_AUTH_MODE": "token", "SESSION_AUTH_ADDRESS": "auth:9000",
        "SESSION_PAGE_TOKEN_SECRET": "a-secret-of-this-deployment", "SESSION_ALLOW_PLAINTEXT": "true",
    }
    assert Settings.from_env(token).host == "0.0.0.0"
    assert Settings.from_env(token).auth.address == "auth:9000"


@pytest.mark.parametrize(
    "env",
    [{"SESSION_AUTH_MODE": "token"}, {"SESSION_AUTH_MODE": "magic"}, {"SESSION_TLS_CERT": "/nonexistent.pem"}],
)
def test_incomplete_trust_settings_fail_at_start_up(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)
