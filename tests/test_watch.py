"""The live change feed (WatchSession, WatchUserSessions): order, resumption without gap or
duplicate, deletion, heartbeats, shutdown, the one listening connection, and bad input."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from google.protobuf import field_mask_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from .helpers import add, expect_failure, new_session, serving_with, set_status

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
