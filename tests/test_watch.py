"""The live change feed (WatchSession, WatchUserSessions): order, resumption without gap or
duplicate, deletion, heartbeats, shutdown, the one listening connection, and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.testing import free_port

from .helpers import add, expect_failure, new_session, serving_with, set_status, wait_for_port

from . import test_standing_and_limits as token_mode

dev = token_mode.dev  # the development account and auth services, as a fixture here too
token_server = token_mode.token_server

SCRIPT = Path(sys.executable).with_name("session-grpc")

K = pb.ChangeKind


async def take(stream, count: int, timeout: float = 10.0) -> list[pb.WatchSessionResponse]:
    """The next `count` responses that carry a change (heartbeats skipped)."""
    found = []
    async with asyncio.timeout(timeout):
        async for response in stream:
            if response.HasField("change"):
                found.append(response)
                if len(found) == count:
                    return found
    raise AssertionError(f"the stream ended after {len(found)} of {count} changes")


async def first(stream, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        async for response in stream:
            return response
    raise AssertionError("the stream ended without a response")


def watch(sessions, session_id: str, after: int | None = None):
    request = pb.WatchSessionRequest(session_id=session_id)
    if after is not None:
        request.after_change_id = after
    return sessions.WatchSession(request)


async def test_watch_from_the_start_streams_every_change_in_commit_order(sessions, messages, memories):
    session = await new_session(sessions, title="t")
    await add(messages, session.session_id, "one")
    await add(messages, session.session_id, "two", role=pb.ROLE_ASSISTANT)
    await set_status(sessions, session.session_id, pb.SESSION_STATUS_COMPLETED)
    await memories.CreateMemory(pb.CreateMemoryRequest(session_id=session.session_id, facts=["a"]))
    await memories.UpdateMemory(pb.UpdateMemoryRequest(
        memory=pb.Memory(session_id=session.session_id, facts=["a", "b"]),
        update_mask=field_mask_pb2.FieldMask(paths=["facts"]),
    ))
    stream = watch(sessions, session.session_id, after=0)
    got = await take(stream, 6)
    stream.cancel()
    kinds = [r.change.kind for r in got]
    assert kinds == [
        K.CHANGE_KIND_SESSION_CREATED, K.CHANGE_KIND_MESSAGE_ADDED, K.CHANGE_KIND_MESSAGE_ADDED,
        K.CHANGE_KIND_SESSION_UPDATED, K.CHANGE_KIND_MEMORY_CHANGED, K.CHANGE_KIND_MEMORY_CHANGED,
    ]
    ids = [r.change.change_id for r in got]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert [r.cursor for r in got] == ids
    assert got[0].change.session.title == "t"
    assert [got[1].change.message.content, got[2].change.message.content] == ["one", "two"]
    assert [got[1].change.message.sequence, got[2].change.message.sequence] == [1, 2]
    assert got[3].change.session.status == pb.SESSION_STATUS_COMPLETED
    assert list(got[3].change.changed_fields) == ["status"]
    assert list(got[4].change.memory.facts) == ["a"]
    assert list(got[5].change.memory.facts) == ["a", "b"]


async def test_watch_without_a_cursor_starts_now_and_says_where(sessions, messages):
    session = await new_session(sessions)
    await add(messages, session.session_id, "before")
    stream = watch(sessions, session.session_id)
    hello = await first(stream)
    assert not hello.HasField("change") and hello.cursor > 0
    await add(messages, session.session_id, "after")
    (got,) = await take(stream, 1)
    stream.cancel()
    assert got.change.message.content == "after"
    assert got.change.change_id > hello.cursor


async def test_resuming_from_the_cursor_has_no_gap_and_no_duplicate(sessions, messages):
    """Writers keep appending while the watcher drops its stream again and again and resumes from
    the last cursor it got: every message arrives exactly once, in sequence order."""
    session = await new_session(sessions)
    total = 120

    async def write():
        for n in range(total):
            await add(messages, session.session_id, f"m{n}")

    writer = asyncio.create_task(write())
    seen: list[int] = []
    cursor = 0
    async with asyncio.timeout(60):
        while len(seen) < total:
            stream = watch(sessions, session.session_id, after=cursor)
            got = 0
            async for response in stream:
                cursor = response.cursor
                if response.HasField("change") and response.change.kind == K.CHANGE_KIND_MESSAGE_ADDED:
                    seen.append(response.change.message.sequence)
                    got += 1
                    if got == 7 or len(seen) == total:  # drop the stream mid-flight
                        break
            stream.cancel()
    await writer
    assert seen == list(range(1, total + 1)), seen


async def test_deleting_the_session_ends_its_watch_with_a_final_change(sessions, messages):
    session = await new_session(sessions)
    stream = watch(sessions, session.session_id)
    hello = await first(stream)
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=session.session_id))
    rest = [r async for r in stream]
    assert [r.change.kind for r in rest if r.HasField("change")] == [K.CHANGE_KIND_SESSION_DELETED]
    assert await stream.code() == grpc.StatusCode.OK
    # Resuming from before the deletion gets the deletion again; from after it, NOT_FOUND.
    again = [r async for r in watch(sessions, session.session_id, after=hello.cursor)]
    assert [r.change.kind for r in again] == [K.CHANGE_KIND_SESSION_DELETED]
    gone = await expect_failure(first(watch(sessions, session.session_id, after=rest[-1].cursor)))
    assert gone.code == grpc.StatusCode.NOT_FOUND


async def test_user_watch_sees_every_session_of_the_user_and_no_one_elses(sessions, messages):
    stream = sessions.WatchUserSessions(pb.WatchUserSessionsRequest(user_id="watcher"))
    await first(stream)
    mine = await new_session(sessions, user_id="watcher")
    other = await new_session(sessions, user_id="someone-else")
    await add(messages, other.session_id, "not mine")
    second = await new_session(sessions, user_id="watcher")
    await add(messages, mine.session_id, "one")
    await add(messages, second.session_id, "two")
    got = await take(stream, 4)
    stream.cancel()
    assert [(r.change.kind, r.change.session_id) for r in got] == [
        (K.CHANGE_KIND_SESSION_CREATED, mine.session_id),
        (K.CHANGE_KIND_SESSION_CREATED, second.session_id),
        (K.CHANGE_KIND_MESSAGE_ADDED, mine.session_id),
        (K.CHANGE_KIND_MESSAGE_ADDED, second.session_id),
    ]


async def test_bad_watch_requests_are_invalid_argument(sessions):
    bad = await expect_failure(first(sessions.WatchSession(pb.WatchSessionRequest(session_id="nope"))))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "session_id" in bad.field_violations
    session = await new_session(sessions)
    bad = await expect_failure(first(watch(sessions, session.session_id, after=-1)))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "after_change_id" in bad.field_violations
    bad = await expect_failure(first(sessions.WatchUserSessions(pb.WatchUserSessionsRequest())))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in bad.field_violations
    missing = await expect_failure(first(watch(sessions, "123e4567-e89b-12d3-a456-426614174000")))
    assert missing.code == grpc.StatusCode.NOT_FOUND and missing.resource_type == "session"


async def test_an_idle_watch_gets_heartbeats_with_its_cursor(database_url):
    async with serving_with(database_url, watch_heartbeat=0.2) as (_, channel):
        stub = session_pb2_grpc.SessionServiceStub(channel)
        session = await new_session(stub)
        stream = watch(stub, session.session_id, after=0)
        responses = []
        async with asyncio.timeout(10):
            async for response in stream:
                responses.append(response)
                if len(responses) == 4:
                    break
        stream.cancel()
    created, *beats = responses
    assert created.change.kind == K.CHANGE_KIND_SESSION_CREATED
    assert beats and all(not b.HasField("change") and b.cursor >= created.cursor for b in beats)


async def test_stopping_the_server_ends_open_watches_with_unavailable(database_url):
    async with serving_with(database_url) as (server, channel):
        stub = session_pb2_grpc.SessionServiceStub(channel)
        session = await new_session(stub)
        streams = [watch(stub, session.session_id) for _ in range(5)]
        for stream in streams:
            await first(stream)
        started = asyncio.get_running_loop().time()
        stopping = asyncio.create_task(server.stop(grace=10))
        codes = []
        for stream in streams:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for _ in stream:
                    pass
            codes.append(await stream.code())
        await stopping
        took = asyncio.get_running_loop().time() - started
    assert codes == [grpc.StatusCode.UNAVAILABLE] * 5
    assert took < 5, "watches ended at once, not after the grace period"


async def test_one_listening_connection_serves_every_watcher_of_a_process(database_url, sql):
    async def listening() -> int:
        await sql.execute("SELECT pg_stat_clear_snapshot()")
        return await sql.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )

    async with serving_with(database_url) as (server, channel):
        await asyncio.wait_for(server.hub.listening.wait(), 10)
        before = await listening()
        stub = session_pb2_grpc.SessionServiceStub(channel)
        targets = [await new_session(stub, user_id=f"many-{n % 3}") for n in range(10)]
        streams = [watch(stub, targets[n % 10].session_id) for n in range(40)]
        streams += [stub.WatchUserSessions(pb.WatchUserSessionsRequest(user_id=f"many-{n}")) for n in range(3)]
        for stream in streams:
            await first(stream)
        assert server.hub.watchers == 43
        assert await listening() == before
        writer = session_pb2_grpc.MessageServiceStub(channel)
        for target in targets:
            await add(writer, target.session_id, "to all")
        for stream in streams[:40]:
            (got,) = await take(stream, 1)
            assert got.change.message.content == "to all"
        for stream in streams[40:]:
            got = await take(stream, 3)  # every session of that user
            assert {r.change.kind for r in got} == {K.CHANGE_KIND_MESSAGE_ADDED}
        for stream in streams:
            stream.cancel()


async def test_the_listener_reconnects_by_itself_and_misses_nothing_meanwhile(database_url, sql, sessions, messages):
    async with serving_with(database_url, health_interval=0.2) as (server, channel):
        stub = session_pb2_grpc.SessionServiceStub(channel)
        session = await new_session(stub)
        stream = watch(stub, session.session_id)
        await first(stream)
        await asyncio.wait_for(server.hub.listening.wait(), 10)
        killed = await sql.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
        assert killed >= 1
        # Written (through another server) while the listener is down or reconnecting.
        await add(messages, session.session_id, "while nobody listened")
        (got,) = await take(stream, 1)
        assert got.change.message.content == "while nobody listened"
        async with asyncio.timeout(10):
            while server.hub.connections < 2:
                await asyncio.sleep(0.05)
        await add(messages, session.session_id, "after")
        (got,) = await take(stream, 1)
        assert got.change.message.content == "after"
        stream.cancel()


async def test_statements_that_write_many_rows_record_one_change_each_in_order(sql, sessions):
    """A batch insert of messages (one statement) and an expiry of many sessions each record a
    change per row, with consecutive ids per user: whatever write path comes next is covered."""
    session = await new_session(sessions, user_id="batch")
    await sql.execute(
        """WITH b AS (UPDATE sessions SET message_count = message_count + 3 WHERE id = $1 RETURNING id, user_id)
           INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost)
           SELECT gen_random_uuid(), id, user_id, n, 'user', 'chat', 'm' || n, 0, 0 FROM b, generate_series(1, 3) n""",
        session.session_id,
    )
    others = [await new_session(sessions, user_id="batch") for _ in range(2)]
    await sql.execute("UPDATE sessions SET last_activity_time = now() - interval '2 days'")
    await sessions.ExpireSessions(pb.ExpireSessionsRequest(idle_for={"seconds": 86400}))
    rows = await sql.fetch(
        "SELECT change_id, session_id::text, kind, sequence FROM session_changes WHERE user_id = 'batch' ORDER BY change_id"
    )
    assert [r["change_id"] for r in rows] == list(range(1, len(rows) + 1))
    assert [(r["kind"], r["sequence"]) for r in rows[1:4]] == [("message_added", n) for n in (1, 2, 3)]
    expired = [r["session_id"] for r in rows if r["kind"] == "session_updated"]
    assert sorted(expired) == sorted([session.session_id, *(o.session_id for o in others)])
    assert await sql.fetchval("SELECT change_count FROM user_feeds WHERE user_id = 'batch'") == len(rows)


async def test_a_message_added_through_one_server_process_reaches_a_watcher_on_another(database_url):
    """Two `session-grpc serve` processes on one database: a watch on the first sees what the
    second writes (the notification crosses processes through PostgreSQL)."""
    ports = [free_port(), free_port()]
    processes = []
    try:
        for port in ports:
            env = {
                **os.environ, "DATABASE_URL": database_url, "PORT": str(port), "SESSION_HOST": "127.0.0.1",
                "SESSION_EXPIRY_INTERVAL": "0", "SESSION_SHUTDOWN_GRACE": "2s",
            }
            processes.append(await asyncio.create_subprocess_exec(
                str(SCRIPT), "serve", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            ))
        for port in ports:
            await asyncio.to_thread(wait_for_port, port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as a, \
                grpc.aio.insecure_channel(f"127.0.0.1:{ports[1]}") as b:
            watcher = session_pb2_grpc.SessionServiceStub(a)
            session = await new_session(session_pb2_grpc.SessionServiceStub(b), user_id="across")
            stream = watch(watcher, session.session_id)
            user_stream = watcher.WatchUserSessions(pb.WatchUserSessionsRequest(user_id="across"))
            await first(stream)
            await first(user_stream)
            writer = session_pb2_grpc.MessageServiceStub(b)
            for n in range(5):
                await add(writer, session.session_id, f"from b {n}")
            got = await take(stream, 5)
            assert [r.change.message.content for r in got] == [f"from b {n}" for n in range(5)]
            got = await take(user_stream, 5)
            assert [r.change.message.sequence for r in got] == [1, 2, 3, 4, 5]
            stream.cancel()
            user_stream.cancel()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.wait_for(process.wait(), 30)
    assert [process.returncode for process in processes] == [0, 0]


async def test_open_watches_per_principal_are_limited_in_token_mode(database_url, dev):  # noqa: F811
    _, _, port = dev
    carol = (("authorization", "Bearer carol-token"),)
    dave = (("authorization", "Bearer dave-token"),)
    async with token_server(database_url, port, max_watchers_per_principal=2) as (_, channel):
        stub = session_pb2_grpc.SessionServiceStub(channel)
        open_ = [stub.WatchUserSessions(pb.WatchUserSessionsRequest(user_id="carol"), metadata=carol) for _ in range(2)]
        for stream in open_:
            await first(stream)
        third = await expect_failure(first(stub.WatchUserSessions(pb.WatchUserSessionsRequest(), metadata=carol)))
        assert third.code == grpc.StatusCode.RESOURCE_EXHAUSTED and third.reason == "TOO_MANY_WATCHERS"
        assert third.quota_subject == "user:carol"
        await first(stub.WatchUserSessions(pb.WatchUserSessionsRequest(), metadata=dave))  # others are served
        open_[0].cancel()
        async with asyncio.timeout(10):
            while True:  # the slot comes back once the server has seen the cancellation
                try:
                    await first(stub.WatchUserSessions(pb.WatchUserSessionsRequest(), metadata=carol))
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    await asyncio.sleep(0.05)
        open_[1].cancel()


def test_watch_settings_come_from_the_environment_and_refuse_nonsense():
    from session_grpc.settings import Settings, SettingsError

    settings = Settings.from_env({"SESSION_WATCH_HEARTBEAT": "250ms", "SESSION_MAX_WATCHERS_PER_PRINCIPAL": "3"})
    assert (settings.watch_heartbeat, settings.max_watchers_per_principal) == (0.25, 3)
    assert (Settings().watch_heartbeat, Settings().max_watchers_per_principal) == (15.0, 16)
    for bad in ({"SESSION_WATCH_HEARTBEAT": "0s"}, {"SESSION_MAX_WATCHERS_PER_PRINCIPAL": "-1"}):
        try:
            Settings.from_env(bad)
        except SettingsError:
            continue
        raise AssertionError(f"{bad} was accepted")


async def test_batch_appends_forks_and_rewinds_are_in_the_feed(sessions, messages):
    """The writes of ForkSession, TruncateSession and AddMessages record their changes too (the
    triggers see every write, whichever path makes it)."""
    source = await new_session(sessions, user_id="history")
    stream = sessions.WatchUserSessions(pb.WatchUserSessionsRequest(user_id="history"))
    await first(stream)
    await messages.AddMessages(pb.AddMessagesRequest(
        session_id=source.session_id,
        messages=[pb.NewMessage(role=pb.ROLE_USER, content=f"batch {n}") for n in range(3)],
    ))
    got = await take(stream, 3)
    assert [(r.change.kind, r.change.message.sequence) for r in got] == [
        (K.CHANGE_KIND_MESSAGE_ADDED, n) for n in (1, 2, 3)
    ]
    forked = await sessions.ForkSession(pb.ForkSessionRequest(session_id=source.session_id, last_sequence=2))
    got = await take(stream, 3)
    assert [(r.change.kind, r.change.session_id) for r in got] == [
        (K.CHANGE_KIND_SESSION_CREATED, forked.session.session_id),
        (K.CHANGE_KIND_MESSAGE_ADDED, forked.session.session_id),
        (K.CHANGE_KIND_MESSAGE_ADDED, forked.session.session_id),
    ]
    assert [r.change.message.content for r in got[1:]] == ["batch 0", "batch 1"]
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=source.session_id, last_sequence=1))
    (rewound,) = await take(stream, 1)
    stream.cancel()
    assert rewound.change.kind == K.CHANGE_KIND_MESSAGES_REMOVED
    assert rewound.change.session.message_count == 1
    assert rewound.change.first_sequence == 1  # what is left: 1..1
    # From the start, the rewound session's history leaves out the messages removed since.
    replay = watch(sessions, source.session_id, after=0)
    history = await take(replay, 3)
    replay.cancel()
    assert [(r.change.kind, r.change.message.sequence) for r in history] == [
        (K.CHANGE_KIND_SESSION_CREATED, 0), (K.CHANGE_KIND_MESSAGE_ADDED, 1), (K.CHANGE_KIND_MESSAGES_REMOVED, 0),
    ]



async def test_watchers_of_a_session_at_one_cursor_share_one_read(database_url):
    """Ten watchers woken by one notification make one read of the feed between them, not ten."""
    from session_grpc.storage import feed

    async with serving_with(database_url) as (server, channel):
        stub = session_pb2_grpc.SessionServiceStub(channel)
        session = await new_session(stub)
        streams = [watch(stub, session.session_id) for _ in range(10)]
        hellos = [await first(s) for s in streams]
        assert len({h.cursor for h in hellos}) == 1
        reads = 0
        run = server.db.run

        async def counting(work, *args, **kwargs):
            nonlocal reads
            reads += work is feed.read_changes
            return await run(work, *args, **kwargs)

        server.db.run = counting  # type: ignore[method-assign]
        await add(session_pb2_grpc.MessageServiceStub(channel), session.session_id, "once")
        for stream in streams:
            (got,) = await take(stream, 1)
            assert got.change.message.content == "once"
            stream.cancel()
    assert 1 <= reads <= 2, reads


async def test_behind_pgbouncer_the_feed_listens_on_the_listen_url_or_else_reads_each_heartbeat(database_url, messages):
    """LISTEN needs a session of its own, which pgbouncer's transaction pooling does not keep: with
    SESSION_DB_PGBOUNCER the hub listens only on SESSION_LISTEN_DATABASE_URL; without one, watches
    still get every change, once per heartbeat."""
    async with serving_with(database_url, db_pgbouncer=True, watch_heartbeat=0.3) as (server, channel):
        stub = session_pb2_grpc.SessionServiceStub(channel)
        session = await new_session(stub)
        stream = watch(stub, session.session_id)
        await first(stream)
        await add(messages, session.session_id, "polled")
        (got,) = await take(stream, 1)
        stream.cancel()
        assert got.change.message.content == "polled"
        assert server.hub.connections == 0 and not server.hub.listening.is_set()
    async with serving_with(database_url, db_pgbouncer=True, listen_database_url=database_url) as (server, _):
        await asyncio.wait_for(server.hub.listening.wait(), 10)
