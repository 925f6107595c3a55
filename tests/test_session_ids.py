"""Client-chosen session ids at creation (AIP-133): CreateSessionRequest.session_id.

Ids are UUIDs (the column is uuid); a taken id is ALREADY_EXISTS whoever owns it, a repeated
request_id still returns the first session, and a deleted session's id is free again at once."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb

from .helpers import expect_failure, new_session


async def test_create_session_with_client_id_stores_it_under_that_id(sessions):
    chosen = str(uuid.uuid4())
    created = await new_session(sessions, "alice", session_id=chosen, title="mine")
    assert created.session_id == chosen
    fetched = (await sessions.GetSession(pb.GetSessionRequest(session_id=chosen))).session
    assert fetched == created


async def test_create_session_with_upper_case_client_id_returns_it_lowercase(sessions):
    chosen = str(uuid.uuid4())
    created = await new_session(sessions, "alice", session_id=chosen.upper())
    assert created.session_id == chosen


async def test_create_session_with_taken_id_is_already_exists_naming_the_id(sessions, sql):
    chosen = str(uuid.uuid4())
    await new_session(sessions, "alice", session_id=chosen, title="first")
    failure = await expect_failure(sessions.CreateSession(pb.CreateSessionRequest(user_id="alice", session_id=chosen)))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert (failure.reason, failure.resource_type, failure.resource_name) == ("ALREADY_EXISTS", "session", chosen)
    assert await sql.fetchval("SELECT title FROM sessions WHERE id = $1", chosen) == "first"
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_create_session_with_another_users_id_is_already_exists_without_revealing_the_owner(sessions, sql):
    chosen = str(uuid.uuid4())
    await new_session(sessions, "alice", session_id=chosen, title="alice's secret")
    failure = await expect_failure(sessions.CreateSession(pb.CreateSessionRequest(user_id="bob", session_id=chosen)))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert "alice" not in failure.message and "secret" not in failure.message
    assert await sql.fetchval("SELECT user_id FROM sessions WHERE id = $1", chosen) == "alice"


async def test_concurrent_creates_with_one_client_id_make_exactly_one_session(sessions, sql):
    chosen = str(uuid.uuid4())
    calls = [
        sessions.CreateSession(pb.CreateSessionRequest(user_id=f"user-{i}", session_id=chosen, title=f"t{i}"))
        for i in range(20)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    won = [r.session for r in results if isinstance(r, pb.CreateSessionResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 19
    assert {error.code() for error in lost} == {grpc.StatusCode.ALREADY_EXISTS}
    stored = await sql.fetch("SELECT user_id, title FROM sessions")
    assert [(r["user_id"], r["title"]) for r in stored] == [(won[0].user_id, won[0].title)]


async def test_repeated_request_id_with_client_id_returns_first_session_not_already_exists(sessions, sql):
    chosen, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    first = await new_session(sessions, "alice", session_id=chosen, request_id=request_id, title="first")
    again = await new_session(sessions, "alice", session_id=chosen, request_id=request_id, title="retry")
    assert again == first
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_repeated_request_id_naming_another_id_returns_first_session(sessions, sql):
    chosen, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    first = await new_session(sessions, "alice", session_id=chosen, request_id=request_id)
    again = await new_session(sessions, "alice", session_id=str(uuid.uuid4()), request_id=request_id)
    assert again == first
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_concurrent_retries_of_one_request_with_client_id_all_return_it(sessions, sql):
    chosen, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    created = await asyncio.gather(
        *(new_session(sessions, "alice", session_id=chosen, request_id=request_id) for _ in range(20))
    )
    assert {s.session_id for s in created} == {chosen}
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_new_request_id_with_taken_client_id_is_already_exists(sessions):
    chosen = str(uuid.uuid4())
    await new_session(sessions, "alice", session_id=chosen, request_id=str(uuid.uuid4()))
    failure = await expect_failure(
        sessions.CreateSession(pb.CreateSessionRequest(user_id="alice", session_id=chosen, request_id=str(uuid.uuid4())))
    )
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS


async def test_create_session_with_non_uuid_id_is_invalid_argument(sessions, sql):
    for bad in ("my-session", "123e4567e89b12d3a456426614174000", "{123e4567-e89b-12d3-a456-426614174000}", " "):
        failure = await expect_failure(sessions.CreateSession(pb.CreateSessionRequest(user_id="alice", session_id=bad)))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "session_id" in failure.field_violations, bad
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 0


async def test_deleted_sessions_id_can_be_used_again_at_once(sessions, messages, sql):
    chosen = str(uuid.uuid4())
    old = await new_session(sessions, "alice", session_id=chosen, title="old")
    await messages.AddMessage(pb.AddMessageRequest(session_id=chosen, role=pb.ROLE_USER, content="hi"))
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=chosen))
    reborn = await new_session(sessions, "bob", session_id=chosen, title="new")
    assert (reborn.session_id, reborn.user_id, reborn.title, reborn.message_count) == (chosen, "bob", "new", 0)
    assert reborn.create_time.ToDatetime() >= old.create_time.ToDatetime()
    listed = await messages.ListMessages(pb.ListMessagesRequest(session_id=chosen))
    assert list(listed.messages) == []


async def test_appends_racing_the_creation_of_their_session_land_or_are_not_found_never_internal(sessions, messages):
    """With client-chosen ids an append can run while its session is being created: a statement
    that began before the creation committed cannot see the session, and the session read right
    after can. That append is NOT_FOUND (as one just before the creation), never INTERNAL; every
    append that landed is counted once."""
    for _ in range(10):
        chosen = str(uuid.uuid4())
        appends = [
            messages.AddMessage(pb.AddMessageRequest(session_id=chosen, role=pb.ROLE_USER, content=f"m{i}"))
            for i in range(20)
        ]
        create = sessions.CreateSession(pb.CreateSessionRequest(user_id="alice", session_id=chosen))
        outcomes = await asyncio.gather(*appends[:10], create, *appends[10:], return_exceptions=True)
        codes = [grpc.StatusCode.OK if not isinstance(o, grpc.aio.AioRpcError) else o.code() for o in outcomes]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, codes
        landed = sorted(o.message.sequence for o in outcomes if isinstance(o, pb.AddMessageResponse))
        count = (await sessions.GetSession(pb.GetSessionRequest(session_id=chosen))).session.message_count
        assert landed == list(range(1, count + 1))
