"""Stateless replicas: three `session-grpc serve` processes on one database behave as one service.

Counters stay exact under writes through all three, a retried request_id that lands on another
replica returns the first result, a page token from one replica opens on another (they share
SESSION_PAGE_TOKEN_SECRET), the expiry job runs on one replica at a time (an advisory lock),
and killing one replica under load loses nothing when clients retry on the others.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest

from reliability import replicas as scenario
from reliability.replicas import Replicas
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.storage.sessions import EXPIRY_LOCK

from .helpers import expect_failure, serving_with


@pytest.fixture
async def three(database_url):
    """Three replicas on the test database, each with a channel of its own."""
    async with Replicas(database_url, 3) as started:
        channels = [grpc.aio.insecure_channel(address) for address in started.addresses]
        try:
            yield started, channels
        finally:
            for channel in channels:
                await channel.close()


async def test_counters_are_exact_under_concurrent_writes_through_three_replicas(three, sql):
    _, channels = three
    session = (await rpc.SessionServiceStub(channels[0]).CreateSession(pb.CreateSessionRequest(user_id="u"))).session
    stubs = [rpc.MessageServiceStub(channel) for channel in channels]
    calls = 90
    answers = await asyncio.gather(*(
        stubs[i % 3].AddMessage(pb.AddMessageRequest(
            session_id=session.session_id, role=pb.ROLE_USER, content=f"m{i}", tokens_used=7, cost="0.0001",
        ))
        for i in range(calls)
    ))
    assert sorted(answer.message.sequence for answer in answers) == list(range(1, calls + 1))
    for stub in stubs:  # every replica reads the same totals
        listed = await stub.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, page_size=1))
        assert listed.total_size == calls
    summary = await rpc.SessionServiceStub(channels[2]).GetSessionSummary(
        pb.GetSessionSummaryRequest(session_id=session.session_id)
    )
    assert summary.summary.message_count == calls
    assert summary.summary.total_tokens == 7 * calls
    assert Decimal(summary.summary.total_cost) == Decimal("0.0001") * calls
    assert await sql.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", uuid.UUID(session.session_id)) == calls


async def test_a_request_id_retried_on_another_replica_returns_the_first_result(three, sql):
    _, channels = three
    sessions = [rpc.SessionServiceStub(channel) for channel in channels]
    messages = [rpc.MessageServiceStub(channel) for channel in channels]
    create = pb.CreateSessionRequest(user_id="u", title="once", request_id=str(uuid.uuid4()))
    first = (await sessions[0].CreateSession(create)).session
    again = (await sessions[1].CreateSession(create)).session
    assert again == first
    add = pb.AddMessageRequest(
        session_id=first.session_id, role=pb.ROLE_USER, content="hi", tokens_used=5, cost="0.01",
        request_id=str(uuid.uuid4()),
    )
    # Concurrent copies on all three replicas, then a late retry: one message, one count.
    copies = await asyncio.gather(*(stub.AddMessage(add) for stub in messages))
    late = await messages[2].AddMessage(add)
    assert {c.message.message_id for c in copies} == {late.message.message_id}
    session = (await sessions[2].GetSession(pb.GetSessionRequest(session_id=first.session_id))).session
    assert (session.message_count, session.total_tokens, session.total_cost) == (1, 5, "0.01")
    assert await sql.fetchval("SELECT count(*) FROM sessions WHERE user_id = 'u'") == 1


async def test_a_page_token_from_one_replica_opens_on_another_with_the_shared_secret(three, database_url):
    _, channels = three
    stubs = [rpc.SessionServiceStub(channel) for channel in channels]
    for i in range(5):
        await stubs[i % 3].CreateSession(pb.CreateSessionRequest(user_id="pager", title=f"s{i}"))
    seen, token, hops = [], "", 0
    while True:  # each page from the next replica
        page = await stubs[hops % 3].ListSessions(
            pb.ListSessionsRequest(user_id="pager", page_size=2, page_token=token)
        )
        seen += [s.title for s in page.sessions]
        token, hops = page.next_page_token, hops + 1
        if not token:
            break
    assert sorted(seen) == [f"s{i}" for i in range(5)] and hops == 3
    first = await stubs[0].ListSessions(pb.ListSessionsRequest(user_id="pager", page_size=2))
    # A replica with another secret refuses the token: the secret must be the same everywhere.
    async with serving_with(database_url, page_token_secret="another-secret-entirely") as (_, other):
        failure = await expect_failure(rpc.SessionServiceStub(other).ListSessions(
            pb.ListSessionsRequest(user_id="pager", page_size=2, page_token=first.next_page_token)
        ))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in failure.field_violations


async def _idle_sessions(sql: asyncpg.Connection, count: int) -> None:
    for _ in range(count):
        await sql.execute(
            """INSERT INTO sessions (id, user_id, status, last_activity_time)
               VALUES ($1, 'idle', 'active', now() - interval '2 hours')""",
            uuid.uuid4(),
        )


async def _active(sql: asyncpg.Connection) -> int:
    return await sql.fetchval("SELECT count(*) FROM sessions WHERE user_id = 'idle' AND status = 'active'")


async def test_the_expiry_job_runs_on_one_replica_at_a_time(database_url, sql):
    """While one holder has the expiry lock (here the test, standing in for a replica that is
    expiring) the three replicas' jobs skip their turns; once it is free one of them expires."""
    await _idle_sessions(sql, 6)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", EXPIRY_LOCK)
        env = {"SESSION_EXPIRY_INTERVAL": "200ms", "SESSION_EXPIRY_IDLE": "1h", "SESSION_LOG_LEVEL": "DEBUG"}
        async with Replicas(database_url, 3, env) as started:
            await asyncio.sleep(1.5)  # about seven turns of each replica
            assert await _active(sql) == 6
            skipped = [started.log(i).count("another replica is expiring") for i in range(3)]
            assert all(skipped), skipped
            await holder.execute("SELECT pg_advisory_unlock($1)", EXPIRY_LOCK)
            deadline = time.monotonic() + 10
            while await _active(sql) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await _active(sql) == 0
            expired = [line for i in range(3) for line in started.log(i).splitlines() if "expired 6 sessions" in line]
            assert len(expired) == 1, expired  # one replica did it all
    finally:
        await holder.close()


async def test_expire_sessions_waits_for_a_running_expiry_then_expires(sessions, database_url, sql):
    await _idle_sessions(sql, 2)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", EXPIRY_LOCK)
        request = pb.ExpireSessionsRequest()
        request.idle_for.FromTimedelta(timedelta(hours=1))
        failure = await expect_failure(sessions.ExpireSessions(request, timeout=0.5))
        assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await _active(sql) == 2
        waiting = asyncio.ensure_future(sessions.ExpireSessions(request, timeout=10))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", EXPIRY_LOCK)
        assert (await waiting).expired_count == 2
    finally:
        await holder.close()


async def test_killing_one_replica_under_load_loses_nothing(server_url):
    outcome = await scenario.replica_killed(server_url, writers=6, before=1.0, after=1.5)
    assert outcome.acknowledged > 0 and outcome.faults == 1
    assert (outcome.lost, outcome.duplicates, outcome.counter_mismatches) == (0, 0, 0), outcome
    assert set(outcome.failed) <= {"UNAVAILABLE"}, outcome.failed


async def _changes(stream, count: int, timeout: float) -> list:
    """The next `count` responses of a watch that carry a change (heartbeats skipped)."""
    found = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            response = await stream.read()
            assert response is not grpc.aio.EOF, f"the watch ended after {len(found)} of {count} changes"
            if response.HasField("change"):
                found.append(response.change)
    return found


async def test_the_change_feed_delivers_writes_made_on_another_replica(database_url):
    """A watcher on replica 0 sees, live, what clients write through replicas 1 and 2: the
    notification (NOTIFY at commit) reaches every replica's listening connection, not only the
    writer's. The heartbeat (and the read each heartbeat makes) is set to 10 minutes, so a change
    that arrives within the test's timeout came by notification, not by a periodic read."""
    env = {"SESSION_WATCH_HEARTBEAT": "600s"}
    async with Replicas(database_url, 3, env) as started:
        channels = [grpc.aio.insecure_channel(address) for address in started.addresses]
        try:
            watcher = rpc.SessionServiceStub(channels[0])
            writers = [rpc.SessionServiceStub(channels[1]), rpc.SessionServiceStub(channels[2])]
            appenders = [rpc.MessageServiceStub(channels[1]), rpc.MessageServiceStub(channels[2])]
            session = (await writers[0].CreateSession(pb.CreateSessionRequest(user_id="far"))).session
            one = watcher.WatchSession(pb.WatchSessionRequest(session_id=session.session_id))
            user = watcher.WatchUserSessions(pb.WatchUserSessionsRequest(user_id="far"))
            # Each opens "now" and says where with a first response (a cursor, no change): after
            # it, the watch is registered with replica 0's listener.
            for stream in (one, user):
                async with asyncio.timeout(30):
                    hello = await stream.read()
                assert not hello.HasField("change") and hello.cursor > 0
            for n in range(4):  # alternating between the two other replicas
                await appenders[n % 2].AddMessage(pb.AddMessageRequest(
                    session_id=session.session_id, role=pb.ROLE_USER, content=f"m{n}", tokens_used=1,
                ))
            second = (await writers[1].CreateSession(pb.CreateSessionRequest(user_id="far", title="2nd"))).session
            got = await _changes(one, 4, timeout=60)
            assert [c.kind for c in got] == [pb.ChangeKind.CHANGE_KIND_MESSAGE_ADDED] * 4
            assert [c.message.content for c in got] == ["m0", "m1", "m2", "m3"]
            assert [c.message.sequence for c in got] == [1, 2, 3, 4]
            mine = await _changes(user, 5, timeout=60)
            assert [c.session_id for c in mine] == [session.session_id] * 4 + [second.session_id]
            assert mine[-1].kind == pb.ChangeKind.CHANGE_KIND_SESSION_CREATED and mine[-1].session.title == "2nd"
            ids = [c.change_id for c in mine]
            assert ids == sorted(ids) and len(set(ids)) == 5
            one.cancel()
            user.cancel()
        finally:
            for channel in channels:
                await channel.close()
