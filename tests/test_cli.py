"""The `session-grpc` console script, run as users run it, against the test database."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from session_grpc import migrations
from session_grpc.testing import database_url_for, free_port
from session_grpc.settings import format_duration, parse_duration

from .helpers import new_session

SCRIPT = Path(sys.executable).with_name("session-grpc")


async def run_cli(*args: str, database_url: str | None = None, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        environ["DATABASE_URL"] = database_url
    environ.update(env)
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, output.decode()


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ((), ["serve", "migrate", "expire", "prune", "check"]),
        (("prune",), ["--dry-run", "SESSION_PRUNE_BATCH"]),
        (("serve",), ["--migrate"]),
        (("migrate",), ["upgrade", "downgrade", "current"]),
        (("expire",), ["--idle", "24h"]),
        (("check",), ["database", "account service", "auth service"]),
    ],
)
async def test_every_command_has_help(command, mentions):
    code, output = await run_cli(*command, "--help")
    assert code == 0, output
    for word in mentions:
        assert word in output


async def test_migrate_upgrade_current_downgrade_on_a_fresh_database(server_url):
    name = f"session_grpc_cli_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url_for(server_url, name)
    _, (head,) = await migrations.current(url)
    try:
        code, output = await run_cli("migrate", "current", database_url=url)
        assert code == 0 and "no revision" in output, output
        code, output = await run_cli("migrate", "upgrade", database_url=url)
        assert code == 0 and f"database at {head} (head)" in output, output
        code, output = await run_cli("migrate", "current", database_url=url)
        assert f"database at {head} (head)" in output, output
        code, output = await run_cli("migrate", "downgrade", database_url=url)  # one step
        assert code == 0 and f"head is {head}" in output and "no revision" not in output, output
        assert f"database at {head}" not in output, output
        code, output = await run_cli("migrate", "downgrade", "base", database_url=url)
        assert code == 0 and "no revision" in output and f"head is {head}" in output, output
        conn = await asyncpg.connect(url)
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'sessions'")
        await conn.close()
        assert tables == 0
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_expire_moves_only_sessions_idle_longer_than_the_threshold(database_url, sessions, sql):
    idle = await new_session(sessions, "alice")
    recent = await new_session(sessions, "alice")
    await sql.execute(
        "UPDATE sessions SET last_activity_time = now() - interval '25 hours' WHERE id = $1", idle.session_id
    )
    await sql.execute(
        "UPDATE sessions SET last_activity_time = now() - interval '23 hours' WHERE id = $1", recent.session_id
    )
    code, output = await run_cli("expire", "--idle", "24h", database_url=database_url)
    assert code == 0 and "expired 1 sessions idle for more than 24h" in output, output
    statuses = dict(await sql.fetch("SELECT id::text, status FROM sessions"))
    assert statuses[idle.session_id].lower() == "expired"
    assert statuses[recent.session_id].lower() == "active"


async def test_expire_says_the_idle_time_as_it_is_typed_also_when_it_is_the_default(database_url, monkeypatch):
    code, output = await run_cli("expire", database_url=database_url, SESSION_EXPIRY_IDLE="90m")
    assert code == 0 and "idle for more than 90m" in output, output
    monkeypatch.delenv("SESSION_EXPIRY_IDLE", raising=False)
    code, output = await run_cli("expire", database_url=database_url)
    assert code == 0 and output.strip().endswith("idle for more than 24h"), output


@pytest.mark.parametrize(
    ("typed", "printed"), [("24h", "24h"), ("2d", "48h"), ("90m", "90m"), ("30s", "30s"), ("250ms", "250ms"), ("0", "0s")]
)
def test_durations_print_in_the_units_they_are_typed_in_and_read_back_the_same(typed, printed):
    assert format_duration(parse_duration(typed)) == printed
    assert parse_duration(printed) == parse_duration(typed)


async def test_expire_refuses_a_malformed_duration(database_url):
    code, output = await run_cli("expire", "--idle", "soon", database_url=database_url)
    assert code == 2 and "--idle" in output


async def test_check_says_the_database_answers_and_the_schema_is_at_head(database_url):
    code, output = await run_cli("check", database_url=database_url)
    assert code == 0, output
    assert "database         ok" in output and "(head)" in output
    assert "account service  not configured" in output and "auth service     not configured" in output


async def test_check_asks_the_account_service_and_fails_when_it_does_not_answer(database_url):
    from session_grpc.devservices import DevAccountService, start

    server, port = await start(DevAccountService({}))
    try:
        code, output = await run_cli("check", database_url=database_url, SESSION_ACCOUNT_ADDRESS=f"127.0.0.1:{port}")
        assert code == 0, output
        assert "account service  ok" in output and f"127.0.0.1:{port}" in output
    finally:
        await server.stop(0)
    code, output = await run_cli("check", database_url=database_url, SESSION_ACCOUNT_ADDRESS=f"127.0.0.1:{port}")
    assert code == 1 and "account service  FAILED" in output, output


async def test_check_fails_when_the_database_does_not_answer():
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    code, output = await run_cli("check", database_url=dead, SESSION_DB_POOL_TIMEOUT="2s")
    assert code == 1, output
    assert "database         FAILED" in output
