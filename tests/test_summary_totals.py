"""GetSessionSummary reads per-role totals kept with the session (session_role_totals, migration
0016), not an aggregate over the session's messages: the totals must equal a fresh aggregate over
the messages after every kind of write, and the summary must report them."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

import asyncpg
import grpc
from alembic.script import ScriptDirectory

from session_grpc import migrations
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.testing import database_url_for

from .helpers import add, expect_failure, new_session, serving_with

ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant", pb.ROLE_SYSTEM: "system", pb.ROLE_TOOL: "tool"}

FRESH = """
SELECT role, count(*) AS n, sum(tokens_used) AS tokens, sum(cost) AS cost
FROM messages WHERE session_id = $1 GROUP BY role
"""
KEPT = "SELECT role, message_count AS n, total_tokens AS tokens, total_cost AS cost FROM session_role_totals WHERE session_id = $1"


async def kept_and_fresh(sql: asyncpg.Connection, session_id: str) -> tuple[dict, dict]:
    kept = {r["role"]: (r["n"], r["tokens"], r["cost"]) for r in await sql.fetch(KEPT, session_id) if r["n"]}
    fresh = {r["role"]: (r["n"], r["tokens"], r["cost"]) for r in await sql.fetch(FRESH, session_id)}
    return kept, fresh


async def assert_exact(sessions, sql: asyncpg.Connection, session_id: str) -> dict[str, int]:
    """The kept totals equal the aggregate over the messages (count, tokens and cost per role), and
    the summary reports those counts, the session's totals and its first and last message times."""
    kept, fresh = await kept_and_fresh(sql, session_id)
    assert kept == fresh
    summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session_id))).summary
    counts = {ROLES[c.role]: c.message_count for c in summary.message_counts_by_role}
    assert counts == {role: n for role, (n, _, _) in fresh.items()}
    assert summary.message_count == sum(counts.values())
    assert summary.total_tokens == sum(tokens for _, tokens, _ in fresh.values())
    assert Decimal(summary.total_cost) == sum((cost for _, _, cost in fresh.values()), Decimal(0))
    times = await sql.fetchrow("SELECT min(create_time) AS first, max(create_time) AS last FROM messages WHERE session_id = $1", session_id)
    if times["first"] is None:
        assert not summary.HasField("first_message_time") and not summary.HasField("last_message_time")
    else:
        assert summary.first_message_time.ToDatetime(tzinfo=times["first"].tzinfo) == times["first"]
        assert summary.last_message_time.ToDatetime(tzinfo=times["last"].tzinfo) == times["last"]
    return counts


def message(role: int, tokens: int, cost: str, content: str = "m") -> pb.NewMessage:
    return pb.NewMessage(role=role, content=content, tokens_used=tokens, cost=cost)


async def test_role_totals_are_exact_after_appends_of_every_kind(sessions, messages, sql, channel):
    session = await new_session(sessions, "alice")
    sid = session.session_id
    await add(messages, sid, role=pb.ROLE_USER, tokens_used=12, cost="0.00015")
    await add(messages, sid, role=pb.ROLE_ASSISTANT, tokens_used=48, cost="0.0006")
    assert await assert_exact(sessions, sql, sid) == {"user": 1, "assistant": 1}
    # A batch of several roles in one statement
    await messages.AddMessages(pb.AddMessagesRequest(session_id=sid, messages=[
        message(pb.ROLE_ASSISTANT, 9, "0.0001"), message(pb.ROLE_TOOL, 0, "0"), message(pb.ROLE_TOOL, 3, "0.5"),
    ]))
    assert await assert_exact(sessions, sql, sid) == {"user": 1, "assistant": 2, "tool": 2}
    # With a request_id, twice: counted once
    once = str(uuid.uuid4())
    for _ in range(2):
        await add(messages, sid, role=pb.ROLE_SYSTEM, tokens_used=1, cost="0.1", request_id=once)
    assert await assert_exact(sessions, sql, sid) == {"user": 1, "assistant": 2, "tool": 2, "system": 1}
    # With a state delta (the with-state statement)
    await messages.AddMessage(pb.AddMessageRequest(
        session_id=sid, role=pb.ROLE_USER, content="s", tokens_used=2, cost="0.2",
        state_delta=pb.ScopedStateDelta(session_state=pb.StateDelta(delete=["nothing"])),
    ))
    # A refused append (stale condition) changes nothing
    stale = await expect_failure(messages.AddMessage(pb.AddMessageRequest(
        session_id=sid, role=pb.ROLE_USER, content="late", tokens_used=5, cost="5", expected_last_sequence=1,
    )))
    assert stale.code == grpc.StatusCode.ABORTED
    assert await assert_exact(sessions, sql, sid) == {"user": 2, "assistant": 2, "tool": 2, "system": 1}
    # A budgeted session's append runs another statement (storage/budgets.py): kept the same
    usage = rpc.UsageServiceStub(channel)
    await usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(user_id="alice", daily_tokens=1_000_000)))
    await add(messages, sid, role=pb.ROLE_TOOL, tokens_used=7, cost="0.07")
    await messages.AddMessages(pb.AddMessagesRequest(session_id=sid, messages=[
        message(pb.ROLE_USER, 1, "0.01"), message(pb.ROLE_ASSISTANT, 2, "0.02"),
    ]))
    assert await assert_exact(sessions, sql, sid) == {"user": 3, "assistant": 3, "tool": 3, "system": 1}


async def test_role_totals_are_exact_under_32_concurrent_appends_to_one_session(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    sid = session.session_id
    rng = random.Random(14)
    roles = [rng.choice(list(ROLES)) for _ in range(32 * 4)]

    async def writer(batch: list[int]) -> None:
        for index, role in enumerate(batch):
            if index % 2:
                await messages.AddMessages(pb.AddMessagesRequest(session_id=sid, messages=[
                    message(role, index, f"0.000{index}7"), message(pb.ROLE_TOOL, 1, "0.00001"),
                ]))
            else:
                await add(messages, sid, role=role, tokens_used=index, cost=f"0.00{index}3")

    await asyncio.gather(*(writer(roles[n::32]) for n in range(32)))
    counts = await assert_exact(sessions, sql, sid)
    assert sum(counts.values()) == 32 * 4 + 32 * 2


async def test_role_totals_are_exact_after_truncate_and_fork(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    sid = session.session_id
    for n in range(12):
        await add(messages, sid, role=list(ROLES)[n % 3], tokens_used=n, cost=f"0.0{n}1")
    fork = (await sessions.ForkSession(pb.ForkSessionRequest(session_id=sid, last_sequence=7))).session
    assert await assert_exact(sessions, sql, fork.session_id) == {"user": 3, "assistant": 2, "system": 2}
    assert await assert_exact(sessions, sql, sid) == {"user": 4, "assistant": 4, "system": 4}
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=sid, last_sequence=4))
    assert await assert_exact(sessions, sql, sid) == {"user": 2, "assistant": 1, "system": 1}
    # A rewind that leaves no message of a role drops the role from the summary
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=sid, last_sequence=1))
    assert await assert_exact(sessions, sql, sid) == {"user": 1}
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=sid, last_sequence=0))
    assert await assert_exact(sessions, sql, sid) == {}
    # and appends afterwards count again from there; the fork is untouched by all of it
    await add(messages, sid, role=pb.ROLE_ASSISTANT, tokens_used=4, cost="0.4")
    assert await assert_exact(sessions, sql, sid) == {"assistant": 1}
    assert await assert_exact(sessions, sql, fork.session_id) == {"user": 3, "assistant": 2, "system": 2}
    # A fork of everything, and appends to the fork
    whole = (await sessions.ForkSession(pb.ForkSessionRequest(session_id=fork.session_id))).session
    await add(messages, whole.session_id, role=pb.ROLE_TOOL, tokens_used=1, cost="0.01")
    assert await assert_exact(sessions, sql, whole.session_id) == {"user": 3, "assistant": 2, "system": 2, "tool": 1}


async def test_role_totals_of_a_truncate_racing_appends_are_exact(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    sid = session.session_id
    for n in range(10):
        await add(messages, sid, role=list(ROLES)[n % 4], tokens_used=n, cost="0.01")

    async def appender(n: int) -> None:
        for _ in range(5):
            await add(messages, sid, role=list(ROLES)[n % 4], tokens_used=n, cost="0.02")

    async def rewinder() -> None:
        for last in (8, 5, 3):
            await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=sid, last_sequence=last))
            await asyncio.sleep(0)

    await asyncio.gather(*(appender(n) for n in range(8)), rewinder())
    await assert_exact(sessions, sql, sid)


async def test_role_totals_go_with_their_session(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, role=pb.ROLE_USER)
    other = await new_session(sessions, "alice")
    await add(messages, other.session_id, role=pb.ROLE_TOOL)
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=session.session_id))
    assert await sql.fetchval("SELECT count(*) FROM session_role_totals WHERE session_id = $1", session.session_id) == 0
    assert await assert_exact(sessions, sql, other.session_id) == {"tool": 1}


async def test_the_summary_does_not_read_the_sessions_messages_per_role(sessions, messages, sql):
    """The summary's counts come from session_role_totals, not from an aggregate over the messages:
    a count changed behind the triggers' back is what it reports."""
    session = await new_session(sessions, "alice")
    sid = session.session_id
    await add(messages, sid, role=pb.ROLE_USER)
    await sql.execute("UPDATE session_role_totals SET message_count = 41 WHERE session_id = $1 AND role = 'user'", sid)
    summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=sid))).summary
    assert [(c.role, c.message_count) for c in summary.message_counts_by_role] == [(pb.ROLE_USER, 41)]


async def test_plain_sql_inserts_of_messages_are_counted(sessions, messages, sql):
    """The trigger keeps the totals for any INSERT into messages, not only the service's own (the
    bench's seeding, an import)."""
    session = await new_session(sessions, "alice")
    sid = session.session_id
    for n in range(6):
        await add(messages, sid, role=list(ROLES)[n % 2], tokens_used=n, cost="0.5")
    await sql.execute(
        """INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost)
           SELECT gen_random_uuid(), $1, 'alice', 6 + g, 'system', 'chat', 'x', g, 0.25 FROM generate_series(1, 3) g""",
        sid,
    )
    kept, fresh = await kept_and_fresh(sql, sid)
    assert kept == fresh and kept["system"] == (3, 6, Decimal("0.75"))


async def test_a_delete_of_messages_that_keeps_the_session_totals_keeps_the_role_totals(sessions, messages, sql):
    """The per-role totals follow the session's: a DELETE of messages that leaves the session's
    totals as they are (retention's pruning keeps them frozen) leaves the per-role ones too, so
    they still add up to the session's message count, tokens and cost."""
    session = await new_session(sessions, "alice")
    sid = session.session_id
    for n in range(6):
        await add(messages, sid, role=list(ROLES)[n % 2], tokens_used=n, cost="0.5")
    await sql.execute("DELETE FROM messages WHERE session_id = $1 AND sequence <= 3", sid)
    summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=sid))).summary
    assert summary.message_count == 6
    assert {ROLES[c.role]: c.message_count for c in summary.message_counts_by_role} == {"user": 3, "assistant": 3}
    kept = await sql.fetchrow(
        "SELECT sum(message_count) AS n, sum(total_tokens) AS tokens, sum(total_cost) AS cost "
        "FROM session_role_totals WHERE session_id = $1", sid,
    )
    assert (kept["n"], kept["tokens"], kept["cost"]) == (6, 15, Decimal("3.0"))


async def test_the_migration_counts_the_messages_that_were_there_before(server_url):
    """Upgraded from the revision before the totals: existing sessions get their per-role totals
    from their messages; the downgrade drops the table and its triggers."""
    script = ScriptDirectory.from_config(migrations.alembic_config())
    (mine,) = [r for r in script.walk_revisions() if r.path.endswith("_session_role_totals.py")]
    name = f"session_grpc_role_totals_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url_for(server_url, name)
    try:
        await migrations.upgrade(url, mine.down_revision)
        conn = await asyncpg.connect(url)
        try:
            sid, empty = str(uuid.uuid4()), str(uuid.uuid4())
            await conn.execute(
                "INSERT INTO sessions (id, user_id, status) VALUES ($1, 'u', 'active'), ($2, 'u', 'active')", sid, empty
            )
            await conn.execute(
                """INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost)
                   SELECT gen_random_uuid(), $1, 'u', g, CASE WHEN g % 3 = 0 THEN 'tool' ELSE 'user' END, 'chat', 'x',
                          g, g * 0.001
                   FROM generate_series(1, 10) g""",
                sid,
            )
            await migrations.upgrade(url)
            kept, fresh = await kept_and_fresh(conn, sid)
            assert kept == fresh == {"user": (7, 37, Decimal("0.037")), "tool": (3, 18, Decimal("0.018"))}
            assert await conn.fetchval("SELECT count(*) FROM session_role_totals WHERE session_id = $1", empty) == 0
            async with serving_with(url) as (_, channel):
                sessions = rpc.SessionServiceStub(channel)
                summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=sid))).summary
                assert {c.role: c.message_count for c in summary.message_counts_by_role} == {pb.ROLE_USER: 7, pb.ROLE_TOOL: 3}
            await migrations.downgrade(url, mine.down_revision)
            assert await conn.fetchval("SELECT to_regclass('session_role_totals')") is None
            assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'session_role_totals_added'") == 0
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
