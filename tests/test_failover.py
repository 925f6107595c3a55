"""Running with a highly available PostgreSQL: the multi-host URL pg_auto_failover gives
(`pg_autoctl show uri`) is accepted as DATABASE_URL and with target_session_attrs=read-write the
service writes to whichever host is the primary. The failover itself, under load, is
`make chaos-failover` (reliability/failover.py: about a minute, so not in this suite; CI runs it)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from session_grpc import localpg, testing
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.localpg.standby import primary_and_standby
from session_grpc.settings import asyncpg_url

from .conftest import test_settings
from .helpers import serving


def test_a_multi_host_url_becomes_sqlalchemys_host_list():
    url = "postgresql://postgres@10.0.0.1:5432,10.0.0.2:5433/sessions?target_session_attrs=read-write"
    assert asyncpg_url(url) == (
        "postgresql+asyncpg://postgres@/sessions?host=10.0.0.1:5432&host=10.0.0.2:5433&target_session_attrs=read-write"
    )
    assert asyncpg_url("postgres://u:p@a,b:7/db") == "postgresql+asyncpg://u:p@/db?host=a:5432&host=b:7"
    assert asyncpg_url("postgresql://u@a:1/db?x=1") == "postgresql+asyncpg://u@a:1/db?x=1"


@pytest.mark.skipif(bool(localpg.missing("pg_basebackup")), reason=localpg.missing("pg_basebackup") or "")
async def test_with_target_session_attrs_read_write_the_service_writes_to_the_primary_whatever_the_order():
    with primary_and_standby() as pair:
        direct = await testing.create_database(pair.primary.url, "session_grpc_multi")
        database = direct.rsplit("/", 1)[1]
        await replayed_on_standby(pair)  # the standby must have the database, or connecting to it fails outright
        # The standby first: it answers, but read-only, so the connection moves on to the primary.
        url = (
            f"postgresql://postgres@127.0.0.1:{pair.standby.port},127.0.0.1:{pair.primary.port}/{database}"
            "?target_session_attrs=read-write"
        )
        async with serving(test_settings(url, db_pool_size=2)) as (server, channel):
            sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
            session = (await sessions.CreateSession(pb.CreateSessionRequest(user_id="ha"))).session
            added = await messages.AddMessage(
                pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_USER, content="to the primary")
            )
            assert added.message.sequence == 1
            await server.check_health()
            assert await server.db.ping()


async def replayed_on_standby(pair, timeout: float = 20.0) -> None:
    primary = await asyncpg.connect(pair.primary.url)
    lsn = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    await primary.close()
    standby = await asyncpg.connect(pair.standby.url)
    try:
        deadline = time.monotonic() + timeout
        while not await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await standby.close()


def test_missing_tools_name_the_apt_get_line(monkeypatch):
    monkeypatch.setattr(localpg, "program", lambda name: None)
    assert localpg.missing("pg_autoctl") == (
        "pg_autoctl not installed; as root: apt-get update && apt-get install -y postgresql-15-auto-failover"
    )
    assert localpg.missing("pgbouncer", "pg_autoctl").endswith(
        "apt-get install -y pgbouncer postgresql-15-auto-failover"
    )
