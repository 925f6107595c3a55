"""Limits, deadlines, transient conflicts, draining and connection age: the service answers with
the right code, quickly, and leaves no half-written state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import grpc
import pytest
from google.protobuf import struct_pb2
from session_grpc.storage.units import transaction

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.domain.errors import Aborted
from session_grpc.domain.limits import Limits
from session_grpc.server import build_server

from .conftest import test_settings
from .helpers import add, expect_failure, new_session, serving_with, statements_waiting_for_a_lock

SMALL = Limits(
    content_bytes=1000, struct_bytes=200, struct_depth=4, title_length=10, summary_length=50,
    facts=3, fact_length=20, page_size=5,
)


def struct_of_size(size: int) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update({"blob": "x" * size})
    return message


# ---- limits ----------------------------------------------------------------------------------


async def test_default_content_limit_is_256_kib_in_utf8_bytes(sessions, messages):
    session = await new_session(sessions)
    await add(messages, session.session_id, "a" * 256 * 1024)
    failure = await expect_failure(add(messages, session.session_id, "a" * (256 * 1024 + 1)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "content" in failure.field_violations
    # 65,537 four-byte characters are 262,148 bytes: over the limit though far fewer characters.
    failure = await expect_failure(add(messages, session.session_id, "\U0001F600" * 65537))
    assert "content" in failure.field_violations


async def test_default_struct_limit_is_64_kib_serialized(sessions):
    await new_session(sessions, metadata=struct_of_size(60 * 1024))
    failure = await expect_failure(new_session(sessions, metadata=struct_of_size(65 * 1024)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "metadata" in failure.field_violations


async def test_configured_limits_are_enforced_naming_each_field(database_url):
    async with serving_with(database_url, limits=SMALL) as (_, channel):
        sessions, messages, memories = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel), rpc.MemoryServiceStub(channel)
        failure = await expect_failure(
            new_session(sessions, title="x" * 11, conversation_data=struct_of_size(300), metadata=struct_of_size(10))
        )
        assert set(failure.field_violations) == {"title", "conversation_data"}
        session = await new_session(sessions, title="x" * 10)
        failure = await expect_failure(add(messages, session.session_id, "y" * 1001))
        assert set(failure.field_violations) == {"content"}
        deep = struct_pb2.Struct()
        deep.update({"a": {"b": {"c": {"d": 1}}}})
        failure = await expect_failure(add(messages, session.session_id, "ok", metadata=deep))
        assert set(failure.field_violations) == {"metadata"}
        failure = await expect_failure(
            memories.CreateMemory(
                pb.CreateMemoryRequest(
                    session_id=session.session_id, conversation_summary="s" * 51, facts=["f"] * 4
                )
            )
        )
        assert set(failure.field_violations) == {"conversation_summary", "facts"}
        failure = await expect_failure(
            memories.CreateMemory(pb.CreateMemoryRequest(session_id=session.session_id, facts=["ok", "f" * 21]))
        )
        assert set(failure.field_violations) == {"facts[1]"}
        failure = await expect_failure(
            messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, page_size=6))
        )
        assert set(failure.field_violations) == {"page_size"}


async def test_request_larger_than_the_transport_limit_is_resource_exhausted(database_url):
    async with serving_with(database_url, limits=SMALL) as (server, channel):
        session = await new_session(rpc.SessionServiceStub(channel))
        too_big = "z" * (SMALL.max_request_bytes + 1)
        failure = await expect_failure(add(rpc.MessageServiceStub(channel), session.session_id, too_big))
        assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_list_page_of_big_messages_stops_before_4_mib_and_continues(sessions, messages):
    session = await new_session(sessions)
    big = "b" * 200 * 1024
    for _ in range(3):
        await asyncio.gather(*(add(messages, session.session_id, big) for _ in range(10)))
    seen: list[int] = []
    request = pb.ListMessagesRequest(session_id=session.session_id, page_size=1000)
    pages = 0
    while True:
        page = await messages.ListMessages(request)
        pages += 1
        assert page.ByteSize() < 4 * 1024 * 1024
        seen.extend(m.sequence for m in page.messages)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen == list(range(1, 31))
    assert pages >= 2


# ---- deadlines -------------------------------------------------------------------------------


@asynccontextmanager
async def row_locked(sql, session_id: str) -> AsyncIterator[None]:
    transaction = sql.transaction()
    await transaction.start()
    await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
    try:
        yield
    finally:
        await transaction.rollback()


async def until_no_statement_waits_for_a_lock(sql, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await statements_waiting_for_a_lock(sql):
        assert asyncio.get_running_loop().time() < deadline, "the server never cancelled its statement"
        await asyncio.sleep(0.05)


async def test_client_deadline_bounds_the_database_work_and_leaves_nothing_written(sessions, messages, sql):
    session = await new_session(sessions)
    async with row_locked(sql, session.session_id):
        started = asyncio.get_running_loop().time()
        failure = await expect_failure(
            messages.AddMessage(
                pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_USER, content="late"), timeout=0.5
            )
        )
        assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert asyncio.get_running_loop().time() - started < 1.5
        # The server's copy of the deadline runs a little behind the client's (it travels with the
        # request): hold the lock until the server has given up its blocked statement, then
        # nothing may have been written.
        await until_no_statement_waits_for_a_lock(sql)
    await asyncio.sleep(0.2)
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0
    assert await sql.fetchval("SELECT message_count FROM sessions WHERE id = $1", session.session_id) == 0
    # The pool is fine afterwards.
    assert (await add(messages, session.session_id, "on time")).sequence == 1


async def test_server_default_deadline_bounds_calls_without_a_deadline(database_url, sql):
    async with serving_with(database_url, default_deadline=0.5) as (_, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        session = await new_session(sessions)
        async with row_locked(sql, session.session_id):
            failure = await expect_failure(add(messages, session.session_id, "no deadline"))
        assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert failure.reason == "DEADLINE_EXCEEDED"
        assert await sql.fetchval("SELECT count(*) FROM messages") == 0


# ---- transient conflicts ---------------------------------------------------------------------


async def serializable_counter_bump(db, sql, session_id: str, conflicts: int, attempts: list[int]):
    """A SERIALIZABLE read-modify-write that a concurrent commit breaks `conflicts` times."""

    @transaction
    async def work(conn):
        attempts.append(1)
        await conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        title = await conn.fetchval("SELECT title FROM sessions WHERE id = $1", session_id)
        if len(attempts) <= conflicts:
            await sql.execute("UPDATE sessions SET title = title || '!' WHERE id = $1", session_id)
        await conn.execute("UPDATE sessions SET title = $1 WHERE id = $2", title + "+", session_id)

    await db.run(work)


async def test_serialization_failure_is_retried_inside_the_server(service, sessions, sql):
    session = await new_session(sessions, title="t")
    attempts: list[int] = []
    await serializable_counter_bump(service.db, sql, session.session_id, 1, attempts)
    assert len(attempts) == 2
    assert await sql.fetchval("SELECT title FROM sessions WHERE id = $1", session.session_id) == "t!+"


async def test_persistent_serialization_failure_is_aborted(service, sessions, sql):
    session = await new_session(sessions, title="t")
    attempts: list[int] = []
    with pytest.raises(Aborted):
        await serializable_counter_bump(service.db, sql, session.session_id, 99, attempts)
    assert len(attempts) == 3


# ---- draining and connection age ----------------------------------------------------------------


async def test_calls_arriving_while_draining_are_unavailable(database_url, sql):
    server = build_server(test_settings(database_url))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        session = await new_session(sessions)
        async with row_locked(sql, session.session_id):
            in_flight = asyncio.ensure_future(add(messages, session.session_id, "in flight"))
            await asyncio.sleep(0.3)
            stopping = asyncio.create_task(server.stop(grace=10))
            await asyncio.sleep(0.2)
            failure = await expect_failure(sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id)))
            assert failure.code == grpc.StatusCode.UNAVAILABLE
        assert (await in_flight).sequence == 1
        await stopping


async def test_connections_past_max_age_are_recycled_without_failing_calls(database_url):
    async with serving_with(database_url, max_connection_age=0.3, max_connection_age_grace=5.0) as (_, channel):
        sessions = rpc.SessionServiceStub(channel)
        session = await new_session(sessions)
        deadline = asyncio.get_running_loop().time() + 1.5
        calls = 0
        while asyncio.get_running_loop().time() < deadline:
            await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id), wait_for_ready=True)
            calls += 1
        assert calls > 10


# ---- concurrency -----------------------------------------------------------------------------


async def test_many_clients_on_many_sessions_and_one_hot_session_leave_exact_counters(database_url, sql):
    async with serving_with(database_url) as (_, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        cold = [await new_session(sessions, f"user-{i}") for i in range(10)]
        hot = await new_session(sessions, "hot")

        async def client(n: int) -> None:
            for i in range(10):
                target = hot if i % 2 else cold[(n + i) % len(cold)]
                await add(messages, target.session_id, f"c{n}-{i}", tokens_used=n + i, cost="0.0001")

        await asyncio.gather(*(client(n) for n in range(16)))
    rows = await sql.fetch(
        """SELECT s.id, s.message_count, s.total_tokens, s.total_cost,
                  count(m.id) AS n, coalesce(sum(m.tokens_used), 0) AS tokens, coalesce(sum(m.cost), 0) AS cost,
                  coalesce(max(m.sequence), 0) AS max_sequence, count(DISTINCT m.sequence) AS distinct_sequences
           FROM sessions s LEFT JOIN messages m ON m.session_id = s.id GROUP BY s.id"""
    )
    assert sum(r["n"] for r in rows) == 160
    for row in rows:
        assert row["message_count"] == row["n"] == row["max_sequence"] == row["distinct_sequences"]
        assert row["total_tokens"] == row["tokens"]
        assert row["total_cost"] == row["cost"] == Decimal("0.0001") * row["n"]
    assert next(r for r in rows if str(r["id"]) == hot.session_id)["n"] == 80


async def test_errors_about_huge_or_many_bad_fields_stay_small_enough_for_client_trailers(database_url):
    async with serving_with(database_url) as (_, channel):
        sessions, memories = rpc.SessionServiceStub(channel), rpc.MemoryServiceStub(channel)
        session = await new_session(sessions)
        failure = await expect_failure(
            memories.UpdateMemory(
                pb.UpdateMemoryRequest(
                    memory=pb.Memory(session_id=session.session_id, facts=["\x00" * 3000] * 400),
                    update_mask={"paths": ["p" * 5000] * 30},
                )
            )
        )
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert len(failure.field_violations) == 21
        assert failure.field_violations["memory.facts[0]"] == "must not contain NUL characters"
        assert failure.field_violations[""].endswith("more problems")
        assert len(failure.message) <= 1000


async def test_rewinds_and_forks_racing_appends_leave_the_session_exact(server_url):
    """reliability.history's scenario at a small size: nothing lost, moved or miscounted."""
    from reliability.history import rewinds_racing_appends

    outcome = await rewinds_racing_appends(server_url, appenders=4, batchers=2, rewinders=2, forkers=1, seconds=2.0)
    assert outcome.acknowledged > 50 and not outcome.failed, outcome
    assert (outcome.lost, outcome.counter_mismatches) == (0, 0), outcome
    assert "removed by rewinds" in outcome.notes and " 0 removed" not in outcome.notes, outcome.notes
