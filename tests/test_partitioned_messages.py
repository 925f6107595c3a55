"""messages partitioned by hash of session_id (migration 0017, docs/scaling.md): the table's shape,
partition pruning of every hot statement (EXPLAIN ANALYZE on the real partitioned table: exactly
the session's partition is read, in the custom plan of a statement's first executions and in the
generic plan a long-lived connection may settle on), both uniqueness rules still refused, and the
migration itself on a database populated through the public API (every row, total, feed entry and
id survives; writes, reads, retries, search, usage and the feed work after it, and after its
downgrade)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from session_grpc import migrations, testing
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.storage import messages as message_sql
from bench.partitions import partitioning_migration
from session_grpc.testing import database_url_for

from .helpers import add, new_session, serving_with

ROOT = Path(__file__).resolve().parents[1]


MIGRATION = partitioning_migration()


@contextlib.contextmanager
def message_partitions(count: int | str) -> Iterator[None]:
    """SESSION_MESSAGE_PARTITIONS=`count` for the migrations run inside."""
    before = os.environ.get("SESSION_MESSAGE_PARTITIONS")
    os.environ["SESSION_MESSAGE_PARTITIONS"] = str(count)
    try:
        yield
    finally:
        if before is None:
            del os.environ["SESSION_MESSAGE_PARTITIONS"]
        else:
            os.environ["SESSION_MESSAGE_PARTITIONS"] = before


@pytest.fixture(scope="session")
async def partitioned_url(server_url: str) -> AsyncIterator[str]:
    """A database of these tests' own, migrated to head with messages in PARTITIONS partitions."""
    with message_partitions(MIGRATION.PARTITIONS):
        url = await testing.create_database(server_url, "session_grpc_partitioned")
    yield url
    await testing.drop_database(server_url, url)


@pytest.fixture(scope="session")
async def partitioned_channel(partitioned_url: str) -> AsyncIterator[grpc.aio.Channel]:
    async with serving_with(partitioned_url) as (_, channel):
        yield channel


@pytest.fixture
async def psql(partitioned_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(partitioned_url)
    yield conn
    await conn.close()


@pytest.fixture
async def a_session(partitioned_channel: grpc.aio.Channel) -> pb.Session:
    """A session on the partitioned database with 30 messages, every other one with a request_id."""
    messages = rpc.MessageServiceStub(partitioned_channel)
    session = await new_session(rpc.SessionServiceStub(partitioned_channel), user_id="pruned")
    for n in range(30):
        await add(messages, session.session_id, f"message {n}", request_id=str(uuid.uuid4()) if n % 2 else "")
    return session


async def test_by_default_messages_stays_one_table(sql):
    """Without SESSION_MESSAGE_PARTITIONS the migration changes nothing (the suite's own database)."""
    kind = await sql.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'messages'::regclass")
    assert kind == ("p" if MIGRATION.partitions() else "r")


def test_the_partition_count_is_checked():
    for bad in ("1", "x", "-3", "2000"):
        with message_partitions(bad), pytest.raises(RuntimeError, match="SESSION_MESSAGE_PARTITIONS"):
            MIGRATION.partitions()
    with message_partitions(0):
        assert MIGRATION.partitions() == 0


async def test_messages_is_hash_partitioned_on_session_id_with_session_id_in_every_unique_key(psql):
    strategy, key = await psql.fetchrow(
        """SELECT p.partstrat::text, a.attname FROM pg_partitioned_table p
           JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
           WHERE p.partrelid = 'messages'::regclass"""
    )
    assert (strategy, key) == ("h", "session_id")
    partitions = await psql.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages'::regclass")
    assert partitions == MIGRATION.PARTITIONS
    unique = await psql.fetch(
        """SELECT c.relname, array_agg(a.attname ORDER BY k.n) AS columns FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = 'messages'::regclass AND i.indisunique GROUP BY c.relname ORDER BY c.relname"""
    )
    assert {row["relname"]: row["columns"] for row in unique} == {
        "pk_messages": ["session_id", "id"],
        "uq_messages_session_id_request_id": ["session_id", "request_id"],
        "uq_messages_session_id_sequence": ["session_id", "sequence"],
    }


# ---- uniqueness ----------------------------------------------------------------------------------


async def test_a_duplicate_sequence_or_request_id_in_a_session_is_refused(psql, a_session):
    sql = psql
    session_id = uuid.UUID(a_session.session_id)
    existing = await sql.fetchrow(
        "SELECT sequence, request_id FROM messages WHERE session_id = $1 AND request_id IS NOT NULL LIMIT 1", session_id
    )
    insert = """INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost,
                                      request_id) VALUES ($1, $2, 'pruned', $3, 'user', 'chat', 'x', 0, 0, $4)"""
    with pytest.raises(asyncpg.UniqueViolationError) as sequence:
        await sql.execute(insert, uuid.uuid4(), session_id, existing["sequence"], None)
    assert "(session_id, sequence)" in sequence.value.detail
    with pytest.raises(asyncpg.UniqueViolationError) as request:
        await sql.execute(insert, uuid.uuid4(), session_id, 1000, existing["request_id"])
    assert message_sql.request_id_taken(request.value)
    # The same request_id in another session is another request: accepted.
    other = await sql.fetchval("SELECT id FROM sessions WHERE id <> $1 LIMIT 1", session_id)
    if other is None:
        other = uuid.uuid4()
        await sql.execute("INSERT INTO sessions (id, user_id, status) VALUES ($1, 'pruned', 'active')", other)
    await sql.execute(insert, uuid.uuid4(), other, 1, existing["request_id"])


async def test_concurrent_appends_with_one_request_id_store_one_message(partitioned_channel):
    """The loser of the race hits the partition's unique index, whose name is the partition's:
    it still answers with the winner's message (storage/messages.py request_id_taken)."""
    stub = rpc.MessageServiceStub(partitioned_channel)
    sessions = rpc.SessionServiceStub(partitioned_channel)
    session = await new_session(sessions, user_id="racer")
    request = pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_USER, content="once",
                                   tokens_used=3, request_id=str(uuid.uuid4()))
    answers = await asyncio.gather(*(stub.AddMessage(request) for _ in range(12)))
    assert len({a.message.message_id for a in answers}) == 1
    assert (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session.message_count == 1


# ---- the migration on a populated database --------------------------------------------------------


async def _populate(channel: grpc.aio.Channel) -> dict[str, Any]:
    """Sessions of three users written through the API: plain and idempotent appends, batches,
    payloads, event times, metadata, a memory, a fork, a rewind."""
    s, m, mem = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel), rpc.MemoryServiceStub(channel)
    made: dict[str, Any] = {"sessions": [], "request_ids": {}}
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    for u in range(3):
        for k in range(4):
            session = (await s.CreateSession(pb.CreateSessionRequest(user_id=f"mig-{u}", app_name=f"app{k % 2}",
                                                                     title=f"s{u}.{k}"))).session
            made["sessions"].append(session.session_id)
            for n in range(6):
                request_id = str(uuid.uuid4()) if n % 3 == 0 else ""
                reply = await m.AddMessage(pb.AddMessageRequest(
                    session_id=session.session_id, role=pb.ROLE_USER if n % 2 == 0 else pb.ROLE_ASSISTANT,
                    content=f"train to porto {u} {k} {n}", tokens_used=n + 1, cost=f"0.000{n + 1}",
                    metadata=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=n)}), request_id=request_id,
                ))
                if request_id:
                    made["request_ids"][request_id] = reply.message.message_id
            await m.AddMessages(pb.AddMessagesRequest(
                session_id=session.session_id, request_id=str(uuid.uuid4()),
                messages=[pb.NewMessage(role=pb.ROLE_TOOL, message_type=pb.MESSAGE_TYPE_TOOL_RESULT, content="{}",
                                        payload=b"\x00\x01" * 10, payload_type="application/octet-stream",
                                        event_time=when),
                          pb.NewMessage(role=pb.ROLE_ASSISTANT, content="done", tokens_used=2, cost="0.01")],
            ))
    first = made["sessions"][0]
    await mem.CreateMemory(pb.CreateMemoryRequest(session_id=first, facts=["likes trains"]))
    fork = (await s.ForkSession(pb.ForkSessionRequest(session_id=first, last_sequence=4))).session
    made["sessions"].append(fork.session_id)
    await s.TruncateSession(pb.TruncateSessionRequest(session_id=made["sessions"][1], last_sequence=3,
                                                     request_id=str(uuid.uuid4())))
    return made


async def _snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    return {
        "messages": [tuple(r) for r in await conn.fetch("SELECT * FROM messages ORDER BY session_id, sequence")],
        "sessions": [tuple(r) for r in await conn.fetch("SELECT * FROM sessions ORDER BY id")],
        "changes": await conn.fetchval("SELECT count(*) FROM session_changes"),
        "feeds": [tuple(r) for r in await conn.fetch("SELECT * FROM user_feeds ORDER BY user_id")],
        "rewound": await conn.fetchval("SELECT count(*) FROM rewound_requests"),
        # Kept by a trigger on messages (migration 0016): the copy must not count the messages again.
        "role_totals": [tuple(r) for r in await conn.fetch("SELECT * FROM session_role_totals ORDER BY 1, 2")],
    }


async def _api_views(channel: grpc.aio.Channel, ids: list[str]) -> dict[str, Any]:
    s, m, usage = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel), rpc.UsageServiceStub(channel)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(datetime.now(timezone.utc) - timedelta(days=2))
    end.FromDatetime(datetime.now(timezone.utc) + timedelta(days=2))
    views: dict[str, Any] = {"pages": [], "summaries": [], "usage": [], "search": []}
    for session_id in ids:
        page = await m.ListMessages(pb.ListMessagesRequest(session_id=session_id, page_size=100))
        views["pages"].append([(x.message_id, x.sequence, x.content) for x in page.messages])
        summary = (await s.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session_id))).summary
        views["summaries"].append((summary.message_count, summary.total_tokens, summary.total_cost))
    for u in range(3):
        got = await usage.GetUsage(pb.GetUsageRequest(user_id=f"mig-{u}", bucket=pb.USAGE_BUCKET_DAY, start_time=start,
                                                      end_time=end, by_role=True))
        views["usage"].append([(b.role, b.message_count, b.total_tokens, b.total_cost) for b in got.buckets])
        found = await m.SearchMessages(pb.SearchMessagesRequest(query="porto", user_id=f"mig-{u}", page_size=100))
        views["search"].append(sorted(r.message.message_id for r in found.results))
    return views


async def _still_works(channel: grpc.aio.Channel, made: dict[str, Any], sql: asyncpg.Connection) -> None:
    """Writes, an idempotent retry from before the migration, the uniqueness rules, the feed and
    search of a new message."""
    s, m = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    session_id = made["sessions"][2]
    before = (await s.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    watch = s.WatchSession(pb.WatchSessionRequest(session_id=session_id))
    async with asyncio.timeout(30):
        hello = await watch.read()
    added = await add(m, session_id, "a new message about lisbon", tokens_used=5, cost="0.5")
    assert added.sequence == before.message_count + 1
    after = (await s.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    assert after.total_tokens == before.total_tokens + 5
    async with asyncio.timeout(30):
        while True:
            response = await watch.read()
            if response.HasField("change"):
                break
    watch.cancel()
    assert response.change.message.message_id == added.message_id and response.cursor > hello.cursor
    found = await m.SearchMessages(pb.SearchMessagesRequest(query="lisbon", user_id=after.user_id))
    assert [r.message.message_id for r in found.results] == [added.message_id]
    # A retry of an append made before the migration answers with that message, appending nothing.
    request_id, message_id = next(iter(made["request_ids"].items()))
    owner = await sql.fetchval("SELECT session_id::text FROM messages WHERE id = $1", uuid.UUID(message_id))
    count = (await s.GetSession(pb.GetSessionRequest(session_id=owner))).session.message_count
    again = await m.AddMessage(pb.AddMessageRequest(session_id=owner, role=pb.ROLE_USER, content="retry",
                                                    request_id=request_id))
    assert again.message.message_id == message_id
    assert (await s.GetSession(pb.GetSessionRequest(session_id=owner))).session.message_count == count
    with pytest.raises(asyncpg.UniqueViolationError):
        await sql.execute(
            """INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost)
               SELECT gen_random_uuid(), session_id, user_id, sequence, role, message_type, content, 0, 0
               FROM messages WHERE session_id = $1 AND sequence = 1""",
            uuid.UUID(session_id),
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await sql.execute(
            """INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost,
                                     request_id)
               SELECT gen_random_uuid(), session_id, user_id, 1000, role, message_type, content, 0, 0, request_id
               FROM messages WHERE id = $1""",
            uuid.UUID(message_id),
        )


async def _shape(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'messages'::regclass")
    finally:
        await conn.close()


async def test_the_migration_keeps_every_row_on_a_populated_database_and_its_downgrade_too(server_url):
    name = f"session_grpc_partition_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url_for(server_url, name)
    try:
        await migrations.upgrade(url, MIGRATION.down_revision)
        async with serving_with(url) as (_, channel):
            made = await _populate(channel)
            views = await _api_views(channel, made["sessions"])
        assert await _shape(url) == "r"
        conn = await asyncpg.connect(url)
        try:
            before = await _snapshot(conn)
            assert len(before["messages"]) > 80 and before["rewound"] > 0
        finally:
            await conn.close()

        with message_partitions(MIGRATION.PARTITIONS):
            await migrations.upgrade(url)
        assert await _shape(url) == "p"
        conn = await asyncpg.connect(url)
        try:
            # Every message (id, sequence, contents, times, search vector), every session total, and no
            # change-feed entry made by the copy.
            assert await _snapshot(conn) == before
            async with serving_with(url) as (_, channel):
                assert await _api_views(channel, made["sessions"]) == views
                await _still_works(channel, made, conn)
            migrated = await _snapshot(conn)
        finally:
            await conn.close()

        await migrations.downgrade(url, MIGRATION.down_revision)
        assert await _shape(url) == "r"
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval(
                """SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE i.indrelid = 'messages'::regclass AND i.indisprimary"""
            ) == ["id"]
            assert await _snapshot(conn) == migrated
        finally:
            await conn.close()

        # Without SESSION_MESSAGE_PARTITIONS the migration leaves the table alone; the step taken
        # later, on a database at head (docs/scaling.md): stamp back, run this one migration, stamp head.
        with message_partitions(0):  # as by default (the suite may run with the variable set)
            await migrations.upgrade(url)
        assert await _shape(url) == "r"
        async with serving_with(url) as (_, channel):
            await add(rpc.MessageServiceStub(channel), made["sessions"][3], "after the downgrade")
        conn = await asyncpg.connect(url)
        try:
            unpartitioned = await _snapshot(conn)
        finally:
            await conn.close()
        await migrations.stamp(url, MIGRATION.down_revision)
        with message_partitions(MIGRATION.PARTITIONS):
            await migrations.upgrade(url, MIGRATION.revision)
        await migrations.stamp(url, "head")
        assert await _shape(url) == "p"
        conn = await asyncpg.connect(url)
        try:
            assert await _snapshot(conn) == unpartitioned
        finally:
            await conn.close()
        async with serving_with(url) as (_, channel):
            await add(rpc.MessageServiceStub(channel), made["sessions"][3], "partitioned again")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
