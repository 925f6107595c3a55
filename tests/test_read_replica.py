"""Reads on a hot standby (SESSION_READ_DATABASE_URL) with read-your-writes, against a real
streaming-replication standby (pg_basebackup -R) whose replay the tests pause
(pg_wal_replay_pause) to tell which database served each read."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import grpc
import pytest

from session_grpc import localpg, testing
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.consistency import COMMIT_LSN, READ_AFTER_LSN
from session_grpc.localpg.standby import primary_and_standby

from .conftest import test_settings
from .helpers import expect_failure, serving

pytestmark = pytest.mark.skipif(bool(localpg.missing("pg_basebackup")), reason=localpg.missing("pg_basebackup") or "")


async def replayed(standby: asyncpg.Connection, lsn: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await standby.fetchval("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)", lsn):
        assert time.monotonic() < deadline, f"standby did not replay up to {lsn}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def replication():
    with primary_and_standby() as pair:
        yield pair


@pytest.fixture(scope="module")
async def urls(replication):
    """The service's database on the primary, and the same database on the standby once replayed."""
    primary_url = await testing.create_database(replication.primary.url, "session_grpc_rr")
    standby_url = testing.database_url_for(replication.standby.url, primary_url.rsplit("/", 1)[1])
    primary = await asyncpg.connect(primary_url)
    lsn = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    await primary.close()
    admin = await asyncpg.connect(replication.standby.url)
    await replayed(admin, lsn)
    await admin.close()
    yield primary_url, standby_url


@pytest.fixture
async def standby(urls):
    """A connection to the standby's copy of the database; replay resumed afterwards whatever the test did."""
    conn = await asyncpg.connect(urls[1])
    yield conn
    await conn.execute("SELECT pg_wal_replay_resume()")
    await conn.close()


@pytest.fixture
async def served(urls):
    primary_url, standby_url = urls
    async with serving(test_settings(primary_url, read_database_url=standby_url, db_pool_size=4)) as (server, channel):
        yield server, rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)


async def add(messages, session_id: str, content: str) -> tuple[pb.Message, str]:
    """AddMessage; the message and its commit position (trailing metadata)."""
    call = messages.AddMessage(pb.AddMessageRequest(session_id=session_id, role=pb.ROLE_USER, content=content))
    response = await call
    trailers = dict(await call.trailing_metadata())
    return response.message, trailers[COMMIT_LSN]


def after(lsn: str) -> tuple[tuple[str, str], ...]:
    return ((READ_AFTER_LSN, lsn),)


async def contents(messages, session_id: str, metadata=()) -> list[str]:
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=metadata)
    return [m.content for m in page.messages]


async def test_heavy_reads_go_to_the_standby_and_conditional_reads_to_the_primary(served, standby):
    server, sessions, messages = served
    session = (await sessions.CreateSession(pb.CreateSessionRequest(user_id="rr-1"))).session
    _, lsn = await add(messages, session.session_id, "before")
    await replayed(standby, lsn)
    await standby.execute("SELECT pg_wal_replay_pause()")
    _, later = await add(messages, session.session_id, "while paused")
    # Listing, streaming, listing sessions and the stats read the paused standby: the second message is not there.
    assert await contents(messages, session.session_id) == ["before"]
    streamed = [r.message.content async for r in messages.StreamMessages(pb.StreamMessagesRequest(session_id=session.session_id))]
    assert streamed == ["before"]
    listed = await sessions.ListSessions(pb.ListSessionsRequest(user_id="rr-1"))
    assert [s.message_count for s in listed.sessions] == [1]
    found = await messages.SearchMessages(pb.SearchMessagesRequest(query="paused", user_id="rr-1"))
    assert list(found.results) == []  # "while paused" is not on the standby yet
    stats = (await sessions.GetServiceStats(pb.GetServiceStatsRequest())).stats
    # GetSession and GetSessionSummary (what a conditional write is based on) read the primary.
    assert (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session.message_count == 2
    summary = await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session.session_id))
    assert summary.summary.message_count == 2
    await standby.execute("SELECT pg_wal_replay_resume()")
    await replayed(standby, later)
    assert await contents(messages, session.session_id) == ["before", "while paused"]
    found = await messages.SearchMessages(pb.SearchMessagesRequest(query="paused", user_id="rr-1"))
    assert [r.message.content for r in found.results] == ["while paused"]
    assert (await sessions.GetServiceStats(pb.GetServiceStatsRequest())).stats.total_messages == stats.total_messages + 1
    assert server.reads is not None and server.reads.served["standby"] >= 5


async def test_a_read_carrying_a_commit_position_sees_that_write(served, standby, urls):
    server, sessions, messages = served
    session = (await sessions.CreateSession(pb.CreateSessionRequest(user_id="rr-2"))).session
    await standby.execute("SELECT pg_wal_replay_pause()")
    _, lsn = await add(messages, session.session_id, "mine")
    # The standby has not replayed it: a read carrying the position is served by the primary.
    assert await contents(messages, session.session_id) == []
    before = dict(server.reads.served)
    assert await contents(messages, session.session_id, after(lsn)) == ["mine"]
    streamed = [
        r.message.content
        async for r in messages.StreamMessages(pb.StreamMessagesRequest(session_id=session.session_id), metadata=after(lsn))
    ]
    assert streamed == ["mine"]
    assert server.reads.served["primary"] == before["primary"] + 2
    # Once the standby has replayed past it, the standby serves it: a row written on the primary
    # behind the service's back after that (while replay is paused again) is not in the answer.
    await standby.execute("SELECT pg_wal_replay_resume()")
    await replayed(standby, lsn)
    await standby.execute("SELECT pg_wal_replay_pause()")
    primary = await asyncpg.connect(urls[0])
    try:
        await primary.execute("UPDATE messages SET content = 'changed on the primary' WHERE session_id = $1",
                              uuid.UUID(session.session_id))
    finally:
        await primary.close()
    assert await contents(messages, session.session_id, after(lsn)) == ["mine"]
    assert await contents(messages, session.session_id) == ["mine"]


async def test_every_write_answers_with_its_commit_position_and_positions_grow(served):
    _, sessions, messages = served
    call = sessions.CreateSession(pb.CreateSessionRequest(user_id="rr-3"))
    session = (await call).session
    created = dict(await call.trailing_metadata())[COMMIT_LSN]
    _, added = await add(messages, session.session_id, "x")
    end = sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))
    await end
    ended = dict(await end.trailing_metadata())[COMMIT_LSN]

    def key(lsn: str) -> tuple[int, int]:
        high, low = lsn.split("/")
        return int(high, 16), int(low, 16)

    assert key(created) < key(added) < key(ended)
    # Reads and failed writes carry none.
    get = sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))
    await get
    assert COMMIT_LSN not in dict(await get.trailing_metadata())
    failed = messages.AddMessage(pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_USER, content="late"))
    with pytest.raises(grpc.aio.AioRpcError):
        await failed
    assert COMMIT_LSN not in dict(await failed.trailing_metadata())


async def test_a_malformed_read_position_is_invalid_argument(served):
    _, _, messages = served
    failure = await expect_failure(
        messages.ListMessages(pb.ListMessagesRequest(session_id=str(uuid.uuid4())), metadata=after("not-an-lsn"))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and READ_AFTER_LSN in failure.field_violations


async def test_reads_go_to_the_primary_while_the_standby_is_unreachable(urls):
    primary_url, _ = urls
    nowhere = f"postgresql://postgres@127.0.0.1:{testing.free_port()}/nothing"
    settings = test_settings(primary_url, read_database_url=nowhere, db_pool_size=2)
    async with serving(settings) as (server, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        session = (await sessions.CreateSession(pb.CreateSessionRequest(user_id="rr-4"))).session
        await add(messages, session.session_id, "here")
        for _ in range(3):
            assert await contents(messages, session.session_id) == ["here"]
        assert server.reads is not None and server.reads.served == {"standby": 0, "primary": 3}


async def test_without_a_standby_writes_carry_no_position(sessions):
    call = sessions.CreateSession(pb.CreateSessionRequest(user_id="rr-5"))
    await call
    assert COMMIT_LSN not in dict(await call.trailing_metadata())


async def test_the_python_client_reads_its_own_writes_from_a_lagging_standby(served, standby, urls):
    from session_client import SessionClient

    server, _, _ = served
    async with SessionClient(f"127.0.0.1:{server.port}") as client, SessionClient(
        f"127.0.0.1:{server.port}", read_your_writes=False
    ) as other:
        session = await client.create_session("rr-6")
        await standby.execute("SELECT pg_wal_replay_pause()")
        await client.add_message(session.session_id, "user", "written while the standby lags")
        assert client.commit_lsn is not None
        mine = [m.content async for m in client.stream_messages(session.session_id)]
        assert mine == ["written while the standby lags"]
        assert (await client.list_messages_page(session.session_id)).total_size == 1
        # A client that does not carry positions reads the lagging standby.
        assert (await other.list_messages_page(session.session_id)).total_size == 0


async def test_grouped_appends_each_answer_with_a_commit_position_past_their_own_commit(served, standby):
    """32 concurrent AddMessages (group commit gathers them): each answers with a position, and a
    standby that has replayed up to a call's position has that call's message."""
    server, sessions, messages = served
    made = [(await sessions.CreateSession(pb.CreateSessionRequest(user_id="rr-g"))).session for _ in range(8)]
    added = await asyncio.gather(*(add(messages, made[n % 8].session_id, f"g{n}") for n in range(32)))
    registry = server.observability.registry
    groups = registry.get_sample_value("session_grpc_append_group_size_count")
    assert groups is not None and groups < 32 + 8  # some calls were written together
    for message, lsn in added:
        await replayed(standby, lsn)
        assert await standby.fetchval("SELECT count(*) FROM messages WHERE id = $1", uuid.UUID(message.message_id)) == 1
