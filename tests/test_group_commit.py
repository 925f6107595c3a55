"""Group commit of AddMessage (storage/group_commit.py): calls that arrive while an append is in
flight are written together, and every rule still holds per call.

Most tests make a group deterministically: a plain connection holds the change-feed row lock of
a "blocker" user, so the first AddMessage (the leader, running alone, to the blocker's session)
waits in the database; the calls sent
meanwhile queue up on the server; releasing the lock lets the leader finish, and the queue is then
flushed as one group. session_grpc_append_group_size shows the groups that ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import grpc
import pytest

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.domain.records import MessageBody, MessageType, NewMessages, Role
from session_grpc.server import SessionServer
from session_grpc.storage import group_commit
from session_grpc.storage import messages as message_storage

from .helpers import add, expect_failure, failure, new_session, serving_with, set_status, statements_waiting_for_a_lock
from .test_statements import StatementCounter


@pytest.fixture
async def own(database_url: str) -> AsyncIterator[tuple[SessionServer, grpc.aio.Channel]]:
    """A server of the test's own (its group-size histogram counts this test's calls only)."""
    async with serving_with(database_url, group_commit=True, group_commit_max=64) as served:
        yield served


def group_sizes(server: SessionServer) -> tuple[float, float, float]:
    """(groups run, calls they wrote, groups of one) from session_grpc_append_group_size."""
    assert server.observability is not None
    registry = server.observability.registry
    count = registry.get_sample_value("session_grpc_append_group_size_count") or 0.0
    total = registry.get_sample_value("session_grpc_append_group_size_sum") or 0.0
    ones = registry.get_sample_value("session_grpc_append_group_size_bucket", {"le": "1.0"}) or 0.0
    return count, total, ones


def adds_in_flight(server: SessionServer) -> float:
    assert server.observability is not None
    return server.observability.registry.get_sample_value(
        "session_grpc_server_in_flight", {"grpc_service": "session.v1.MessageService", "grpc_method": "AddMessage"}
    ) or 0.0


async def until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def leader_held(server: SessionServer, messages, sessions, sql) -> AsyncIterator[None]:
    """The leader's append waits on a row lock for the block's duration; calls sent in the block
    queue up behind it, and flush as one group when the block ends."""
    blocker = await new_session(sessions, "blocker")
    await sql.execute("BEGIN")
    # The change feed's counter row of the blocker's user: every write of that user takes its lock
    # at the end of its statement (a session row lock the group's statement would skip).
    await sql.execute("SELECT 1 FROM user_feeds WHERE user_id = 'blocker' FOR UPDATE")
    leader = asyncio.ensure_future(add(messages, blocker.session_id, "leader"))
    try:

        async def waiting() -> bool:
            return await statements_waiting_for_a_lock(sql) >= 1

        await until(waiting)
        yield
    finally:
        await sql.execute("COMMIT")
        assert (await leader).sequence == 1


async def send_queued(server: SessionServer, calls) -> list[asyncio.Future]:
    """Start each call in turn, each once the server holds the one before (so arrival order is
    the list's order); return them unawaited."""
    started = []
    base = adds_in_flight(server)
    for n, call in enumerate(calls, 1):
        started.append(asyncio.ensure_future(call))

        async def arrived(n: int = n) -> bool:
            return adds_in_flight(server) >= base + n

        await until(arrived)
    return started


async def settled(futures) -> list:
    return await asyncio.gather(*futures, return_exceptions=True)


async def totals(sessions, session_id: str) -> tuple[int, int, Decimal]:
    session = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    return session.message_count, session.total_tokens, Decimal(session.total_cost)


async def test_48_concurrent_appends_over_6_sessions_are_gapless_per_session_with_exact_totals_and_group(own, sql):
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    made = [await new_session(sessions, f"user-{n % 3}") for n in range(6)]
    calls = [
        add(messages, made[n % 6].session_id, f"m{n}", tokens_used=n + 1, cost=f"0.0000{n % 10}1")
        for n in range(48)
    ]
    added = await asyncio.gather(*calls)
    for index, session in enumerate(made):
        mine = [(m, n) for n, m in enumerate(added) if m.session_id == session.session_id]
        assert sorted(m.sequence for m, _ in mine) == list(range(1, 9))
        tokens = sum(n + 1 for _, n in mine)
        cost = sum(Decimal(f"0.0000{n % 10}1") for _, n in mine)
        assert await totals(sessions, session.session_id) == (8, tokens, cost)
        stored = await sql.fetch(
            "SELECT sequence, content FROM messages WHERE session_id = $1 ORDER BY sequence", uuid.UUID(session.session_id)
        )
        assert [r["sequence"] for r in stored] == list(range(1, 9))
        assert {r["content"] for r in stored} == {f"m{n}" for n in range(index, 48, 6)}
    groups, written, ones = group_sizes(server)
    assert written == 48
    assert groups < 48 and groups - ones >= 1  # at least one group of more than one call formed


async def test_one_call_at_a_time_never_groups(own):
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    session = await new_session(sessions, "alice")
    for n in range(20):
        assert (await add(messages, session.session_id, f"m{n}")).sequence == n + 1
    assert group_sizes(server) == (20, 20, 20)


@pytest.mark.parametrize("request_ids", [False, True], ids=["plain", "with-request-ids"])
async def test_a_round_statement_is_planned_once_not_on_every_call(own, database_url, request_ids):
    """A round of one (a queued call alone in its round); PostgreSQL must keep its generic plan
    after the five custom ones (migration 0019), not plan the statement afresh every call (~0.6 ms
    of its CPU)."""
    _, channel = own
    sessions = rpc.SessionServiceStub(channel)
    made = [await new_session(sessions, f"user-{n}") for n in range(3)]
    body = MessageBody(role=Role.USER, message_type=MessageType.CHAT, content="hello")
    conn = await asyncpg.connect(database_url)  # prepared statements are per connection: a fresh one
    try:
        # The plans differ by the table's size: on a few rows any plan is cheap and the generic one wins.
        await conn.execute(
            "INSERT INTO sessions (id, user_id, status) SELECT gen_random_uuid(), 'filler-' || n, 'active' "
            "FROM generate_series(1, 20000) n"
        )
        for n in range(12):
            call = NewMessages(
                session_id=made[n % 3].session_id, owner=None, messages=[body],
                request_id=str(uuid.uuid4()) if request_ids else None,
            )
            assert len(await group_commit.append_round(conn, [call])) == 1
        rounds = await conn.fetch(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%WITH batch AS (%' AND statement NOT LIKE '%pg_prepared_statements%'"
        )
    finally:
        await conn.close()
    assert [(r["generic_plans"], r["custom_plans"]) for r in rounds] == [(7, 5)]
    for session in made:
        assert await totals(sessions, session.session_id) == (4, 0, Decimal(0))


async def test_a_lone_call_sends_the_single_append_statement_with_its_row_lock_taken_nowait(own):
    """Off at one call at a time: the leader sends what AddMessage sends without group commit, only
    with the session row locked NOWAIT first (one statement; with a request id, the once form)."""
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    session = await new_session(sessions, "alice")
    counter = StatementCounter(server)
    seen = []
    for request_id in (None, str(uuid.uuid4())):
        await asyncio.sleep(0.01)  # the driver reports statements from the event loop
        counter.statements.clear()
        await add(messages, session.session_id, "m", **({"request_id": request_id} if request_id else {}))
        await asyncio.sleep(0.01)
        seen.append(list(counter.statements))
    assert seen == [[message_storage.ADD_MESSAGES_UNLESS_LOCKED], [message_storage.ADD_MESSAGES_ONCE_UNLESS_LOCKED]]
    assert message_storage.ADD_MESSAGES_UNLESS_LOCKED.replace(message_storage._UNLESS_LOCKED, "") == (
        message_storage.ADD_MESSAGES
    )


async def test_a_lone_call_to_a_session_another_transaction_holds_waits_without_holding_up_the_others(own, sql):
    """The leader's session row is held: it is not refused and not lost, it waits the ordinary way
    (lock_not_available sends it there), and calls to other sessions meanwhile land."""
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    held, free = await new_session(sessions, "alice"), await new_session(sessions, "bob")
    await sql.execute("BEGIN")
    await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(held.session_id))
    try:
        waiting = asyncio.ensure_future(add(messages, held.session_id, "waits"))

        async def in_the_lock_queue() -> bool:
            return await statements_waiting_for_a_lock(sql) >= 1

        await until(in_the_lock_queue)
        async with asyncio.timeout(10):  # not queued behind the waiting call
            for n in range(5):
                assert (await add(messages, free.session_id, f"free {n}")).sequence == n + 1
        assert not waiting.done()
    finally:
        await sql.execute("COMMIT")
    assert (await waiting).sequence == 1


async def test_queued_calls_on_one_session_land_in_arrival_order_in_one_group(own, sql):
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    one, two = await new_session(sessions, "alice"), await new_session(sessions, "bob")
    async with leader_held(server, messages, sessions, sql):
        sent = await send_queued(server, [
            add(messages, (one if n % 3 else two).session_id, f"m{n}", tokens_used=1, cost="0.01") for n in range(12)
        ])
    added = await asyncio.gather(*sent)
    for session in (one, two):
        contents = [m.content for m in sorted(added, key=lambda m: m.sequence) if m.session_id == session.session_id]
        assert contents == [f"m{n}" for n in range(12) if (n % 3 != 0) == (session is one)]
    assert await totals(sessions, one.session_id) == (8, 8, Decimal("0.08"))
    assert await totals(sessions, two.session_id) == (4, 4, Decimal("0.04"))
    assert group_sizes(server) == (2, 13, 1)  # the leader alone, then the 12 queued calls as one group


async def test_two_calls_with_one_request_id_in_one_group_get_the_same_message(own, sql):
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    session, other = await new_session(sessions, "alice"), await new_session(sessions, "bob")
    request_id = str(uuid.uuid4())
    async with leader_held(server, messages, sessions, sql):
        sent = await send_queued(server, [
            add(messages, session.session_id, "first", tokens_used=5, cost="0.5", request_id=request_id),
            add(messages, other.session_id, "between"),
            add(messages, session.session_id, "again", tokens_used=5, cost="0.5", request_id=request_id),
            add(messages, session.session_id, "after"),
        ])
    first, _, again, after = await asyncio.gather(*sent)
    assert (again.message_id, again.sequence, again.content) == (first.message_id, 1, "first")
    assert after.sequence == 2
    assert await totals(sessions, session.session_id) == (2, 5, Decimal("0.5"))
    assert await sql.fetchval("SELECT count(*) FROM messages WHERE request_id = $1", uuid.UUID(request_id)) == 1
    assert group_sizes(server)[1] == 5


async def test_refused_calls_in_a_group_fail_alone_with_their_own_status_and_the_rest_land(own, sql):
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    usage = rpc.UsageServiceStub(channel)
    good = [await new_session(sessions, f"user-{n}") for n in range(6)]
    ended = await new_session(sessions, "carol")
    await set_status(sessions, ended.session_id, pb.SESSION_STATUS_ENDED)
    stale = await new_session(sessions, "dave")
    await add(messages, stale.session_id, "seen")
    await usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(user_id="ann", daily_tokens=100)))
    budgeted = await new_session(sessions, "ann")
    async with leader_held(server, messages, sessions, sql):
        sent = await send_queued(server, [
            add(messages, good[0].session_id, "g0", tokens_used=1, cost="0.1"),
            add(messages, ended.session_id, "to an ended session", tokens_used=7),
            add(messages, good[1].session_id, "g1", tokens_used=1, cost="0.1"),
            add(messages, stale.session_id, "stale", tokens_used=7, expected_last_sequence=0),
            add(messages, good[2].session_id, "g2", tokens_used=1, cost="0.1"),
            add(messages, budgeted.session_id, "over budget", tokens_used=101),
            add(messages, good[3].session_id, "g3", tokens_used=1, cost="0.1"),
            add(messages, str(uuid.uuid4()), "to no session"),
            add(messages, budgeted.session_id, "within budget", tokens_used=40),
            add(messages, good[4].session_id, "g4", tokens_used=1, cost="0.1"),
            add(messages, stale.session_id, "fresh", expected_last_sequence=1),
            add(messages, good[5].session_id, "g5", tokens_used=1, cost="0.1"),
        ])
    results = await settled(sent)
    codes = [failure(r).code if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK for r in results]
    assert codes == [
        grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OK, grpc.StatusCode.ABORTED,
        grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.OK,
    ]
    assert failure(results[3]).reason == "STALE_SESSION" and failure(results[5]).reason == "BUDGET_EXCEEDED"
    for session in good:
        assert await totals(sessions, session.session_id) == (1, 1, Decimal("0.1"))
    assert await totals(sessions, ended.session_id) == (0, 0, Decimal(0))
    assert await totals(sessions, stale.session_id) == (2, 0, Decimal(0))
    assert results[10].sequence == 2
    assert await totals(sessions, budgeted.session_id) == (1, 40, Decimal(0))
    # the leader, the good ones, the stale session's two, ann's
    assert await sql.fetchval("SELECT count(*) FROM messages") == 1 + 6 + 2 + 1
    assert group_sizes(server) == (3, 14, 2)  # "seen" and the leader alone, then the 12 as one group


async def test_a_call_whose_deadline_passes_while_queued_is_not_written(own, sql):
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    late, patient = await new_session(sessions, "alice"), await new_session(sessions, "bob")
    async with leader_held(server, messages, sessions, sql):
        request = pb.AddMessageRequest(session_id=late.session_id, role=pb.ROLE_USER, content="too late")
        sent = await send_queued(server, [
            messages.AddMessage(request, timeout=0.3),
            add(messages, patient.session_id, "in time"),
        ])
        await asyncio.sleep(0.6)
    expired, landed = await settled(sent)
    assert isinstance(expired, grpc.aio.AioRpcError) and expired.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert landed.sequence == 1
    await asyncio.sleep(0.2)  # nothing of it lands later either
    assert await totals(sessions, late.session_id) == (0, 0, Decimal(0))
    assert await sql.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", uuid.UUID(late.session_id)) == 0


async def test_a_group_whose_statement_aborts_runs_its_calls_one_by_one(own, sql, database_url):
    """A concurrent first call with the same request id commits while the group's statement runs:
    the statement hits the unique index and fails whole; each call then runs alone and lands (the
    repeat answering with the other call's message)."""
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    raced, calm = await new_session(sessions, "alice"), await new_session(sessions, "bob")
    request_id = str(uuid.uuid4())
    other = await asyncpg.connect(database_url)
    try:
        await other.execute("BEGIN")
        await other.execute(
            "INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost,"
            " request_id) VALUES (gen_random_uuid(), $1, 'alice', 1000, 'user', 'chat', 'theirs', 0, 0, $2)",
            uuid.UUID(raced.session_id), uuid.UUID(request_id),
        )
        async with leader_held(server, messages, sessions, sql):
            sent = await send_queued(server, [
                add(messages, raced.session_id, "mine", request_id=request_id),
                add(messages, calm.session_id, "calm", tokens_used=3),
            ])

        async def blocked() -> bool:  # the group's insert waits for the uncommitted duplicate
            return await statements_waiting_for_a_lock(sql) >= 1

        await until(blocked)
        await other.execute("COMMIT")
    finally:
        await other.close()
    mine, quiet = await settled(sent)
    assert (mine.content, mine.sequence) == ("theirs", 1000)
    assert quiet.sequence == 1
    assert await totals(sessions, calm.session_id) == (1, 3, Decimal(0))
    assert await totals(sessions, raced.session_id) == (0, 0, Decimal(0))  # the group's bump rolled back
    assert group_sizes(server)[1] == 3


async def test_a_call_waiting_for_a_locked_session_holds_up_no_other_call(own, sql):
    """Another transaction holds one session's row: the group statement skips that row, and the
    call waits for it alone on the ordinary path, with the later calls of that session after it,
    while calls to other sessions land meanwhile."""
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    held, free = await new_session(sessions, "alice"), await new_session(sessions, "bob")
    await sql.execute("BEGIN")
    try:
        await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", uuid.UUID(held.session_id))
        waiting = [asyncio.ensure_future(add(messages, held.session_id, f"held {n}")) for n in range(3)]
        landed = await asyncio.wait_for(
            asyncio.gather(*(add(messages, free.session_id, f"free {n}") for n in range(20))), 10
        )
        assert sorted(m.sequence for m in landed) == list(range(1, 21))
        assert not any(call.done() for call in waiting)
    finally:
        await sql.execute("COMMIT")
    after = await asyncio.gather(*waiting)
    assert sorted(m.sequence for m in after) == [1, 2, 3]


async def test_with_group_commit_off_appends_never_group(database_url):
    async with serving_with(database_url, group_commit=False) as (server, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        made = [await new_session(sessions, "alice") for _ in range(4)]
        added = await asyncio.gather(*(add(messages, made[n % 4].session_id, f"m{n}") for n in range(32)))
        assert sorted(m.sequence for m in added) == sorted(list(range(1, 9)) * 4)
        assert group_sizes(server) == (0, 0, 0)


async def test_failures_stay_per_call_under_32_concurrent_callers(own):
    """Without arranging anything: 32 callers at once, a quarter to an ended session."""
    server, channel = own
    sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
    live = [await new_session(sessions, "alice") for _ in range(4)]
    ended = await new_session(sessions, "alice")
    await set_status(sessions, ended.session_id, pb.SESSION_STATUS_ENDED)
    calls = [add(messages, (ended if n % 4 == 0 else live[n % 4]).session_id, f"m{n}", tokens_used=2) for n in range(32)]
    results = await settled(calls)
    for n, result in enumerate(results):
        if n % 4 == 0:
            assert failure(result).code == grpc.StatusCode.FAILED_PRECONDITION
        else:
            assert isinstance(result, pb.Message)
    for session in live[1:]:
        assert await totals(sessions, session.session_id) == (8, 16, Decimal(0))
    assert (await expect_failure(add(messages, ended.session_id))).code == grpc.StatusCode.FAILED_PRECONDITION
