"""SessionService: create, get, update (mask, etag, status moves), end, delete."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb

from .helpers import add, expect_failure, new_session, set_status


def struct(**values) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def test_create_session_returns_active_session_with_server_uuid_and_zero_totals(sessions):
    session = await new_session(
        sessions, "alice", title="Trip", conversation_data=struct(step="plan"), metadata=struct(channel="web")
    )
    assert str(uuid.UUID(session.session_id)) == session.session_id
    assert session.user_id == "alice"
    assert session.status == pb.SESSION_STATUS_ACTIVE
    assert session.title == "Trip"
    assert dict(session.conversation_data) == {"step": "plan"}
    assert dict(session.metadata) == {"channel": "web"}
    assert (session.message_count, session.total_tokens, session.total_cost) == (0, 0, "0")
    assert session.create_time.ToDatetime() == session.last_activity_time.ToDatetime()
    assert not session.HasField("end_time")
    assert session.etag


async def test_get_session_returns_what_create_stored(sessions):
    created = await new_session(sessions, "alice", title="T", metadata=struct(a=1, nested={"b": [True, None]}))
    fetched = (await sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id))).session
    assert fetched == created


async def test_get_missing_session_is_not_found(sessions):
    failure = await expect_failure(sessions.GetSession(pb.GetSessionRequest(session_id=str(uuid.uuid4()))))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"


async def test_create_session_with_same_request_id_returns_first_session_without_second_row(sessions, sql):
    request_id = str(uuid.uuid4())
    first = await new_session(sessions, "alice", title="first", request_id=request_id)
    again = await new_session(sessions, "alice", title="ignored on retry", request_id=request_id)
    assert again == first
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_create_session_request_id_is_scoped_per_user(sessions):
    request_id = str(uuid.uuid4())
    alice = await new_session(sessions, "alice", request_id=request_id)
    bob = await new_session(sessions, "bob", request_id=request_id)
    assert alice.session_id != bob.session_id


async def test_concurrent_creates_with_one_request_id_make_one_session(sessions, sql):
    import asyncio

    request_id = str(uuid.uuid4())
    created = await asyncio.gather(*(new_session(sessions, "alice", request_id=request_id) for _ in range(20)))
    assert len({s.session_id for s in created}) == 1
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_update_session_changes_only_masked_fields_and_new_etag(sessions):
    session = await new_session(sessions, "alice", title="old", metadata=struct(keep="yes"))
    update = pb.Session(session_id=session.session_id, title="new", metadata=struct(dropped="no"))
    updated = (
        await sessions.UpdateSession(
            pb.UpdateSessionRequest(session=update, update_mask=field_mask_pb2.FieldMask(paths=["title"]))
        )
    ).session
    assert updated.title == "new"
    assert dict(updated.metadata) == {"keep": "yes"}
    assert updated.etag != session.etag
    assert updated.update_time.ToDatetime() > session.update_time.ToDatetime()


async def test_update_session_without_mask_updates_the_fields_that_are_set(sessions):
    session = await new_session(sessions, "alice", title="old", metadata=struct(keep="yes"))
    updated = (
        await sessions.UpdateSession(
            pb.UpdateSessionRequest(session=pb.Session(session_id=session.session_id, conversation_data=struct(x=1)))
        )
    ).session
    assert updated.title == "old"
    assert dict(updated.conversation_data) == {"x": 1}
    assert dict(updated.metadata) == {"keep": "yes"}


async def test_update_session_with_star_mask_replaces_all_mutable_fields(sessions):
    session = await new_session(sessions, "alice", title="old", metadata=struct(keep="yes"))
    updated = (
        await sessions.UpdateSession(
            pb.UpdateSessionRequest(
                session=pb.Session(session_id=session.session_id, status=pb.SESSION_STATUS_ACTIVE),
                update_mask=field_mask_pb2.FieldMask(paths=["*"]),
            )
        )
    ).session
    assert updated.title == ""
    assert dict(updated.metadata) == {}


async def test_update_session_with_current_etag_succeeds_and_stale_etag_is_aborted(sessions):
    session = await new_session(sessions, "alice")
    mask = field_mask_pb2.FieldMask(paths=["title"])
    first = await sessions.UpdateSession(
        pb.UpdateSessionRequest(
            session=pb.Session(session_id=session.session_id, title="one", etag=session.etag), update_mask=mask
        )
    )
    failure = await expect_failure(
        sessions.UpdateSession(
            pb.UpdateSessionRequest(
                session=pb.Session(session_id=session.session_id, title="two", etag=session.etag), update_mask=mask
            )
        )
    )
    assert failure.code == grpc.StatusCode.ABORTED
    assert failure.reason == "ETAG_MISMATCH"
    current = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert current.title == "one" and current.etag == first.session.etag


async def test_concurrent_updates_with_one_etag_let_exactly_one_win(sessions):
    session = await new_session(sessions, "alice")
    mask = field_mask_pb2.FieldMask(paths=["title"])
    results = await asyncio.gather(
        *(
            sessions.UpdateSession(
                pb.UpdateSessionRequest(
                    session=pb.Session(session_id=session.session_id, title=f"t{i}", etag=session.etag),
                    update_mask=mask,
                )
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.UpdateSessionResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 9
    assert all(r.code() == grpc.StatusCode.ABORTED for r in lost)
    current = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert current.title == won[0].session.title and current.etag == won[0].session.etag


async def test_a_forbidden_move_with_a_current_etag_is_failed_precondition_and_changes_nothing(sessions):
    session = await set_status(sessions, (await new_session(sessions, "alice")).session_id, pb.SESSION_STATUS_ARCHIVED)
    failure = await expect_failure(
        sessions.UpdateSession(
            pb.UpdateSessionRequest(
                session=pb.Session(
                    session_id=session.session_id, title="x", status=pb.SESSION_STATUS_ACTIVE, etag=session.etag
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["title", "status"]),
            )
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATUS_TRANSITION")
    current = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert (current.title, current.etag) == (session.title, session.etag)


async def test_etag_does_not_change_when_messages_are_added(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id)
    current = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert current.etag == session.etag
    assert current.message_count == 1


async def test_update_session_unknown_mask_path_is_invalid_argument_naming_update_mask(sessions):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(
        sessions.UpdateSession(
            pb.UpdateSessionRequest(
                session=pb.Session(session_id=session.session_id, message_count=99),
                update_mask=field_mask_pb2.FieldMask(paths=["message_count"]),
            )
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in failure.field_violations


async def test_update_missing_session_is_not_found(sessions):
    failure = await expect_failure(
        sessions.UpdateSession(pb.UpdateSessionRequest(session=pb.Session(session_id=str(uuid.uuid4()), title="x")))
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND


S = pb.SessionStatus
ALL_STATUSES = [S.SESSION_STATUS_ACTIVE, S.SESSION_STATUS_COMPLETED, S.SESSION_STATUS_ENDED,
                S.SESSION_STATUS_ARCHIVED, S.SESSION_STATUS_EXPIRED]
ALLOWED = {
    (S.SESSION_STATUS_ACTIVE, S.SESSION_STATUS_COMPLETED),
    (S.SESSION_STATUS_ACTIVE, S.SESSION_STATUS_ENDED),
    (S.SESSION_STATUS_ACTIVE, S.SESSION_STATUS_EXPIRED),
    (S.SESSION_STATUS_ACTIVE, S.SESSION_STATUS_ARCHIVED),
    (S.SESSION_STATUS_COMPLETED, S.SESSION_STATUS_ENDED),
    (S.SESSION_STATUS_COMPLETED, S.SESSION_STATUS_ARCHIVED),
    (S.SESSION_STATUS_EXPIRED, S.SESSION_STATUS_ENDED),
    (S.SESSION_STATUS_EXPIRED, S.SESSION_STATUS_ARCHIVED),
    (S.SESSION_STATUS_ENDED, S.SESSION_STATUS_ARCHIVED),
}
# How to reach each status from ACTIVE through allowed moves.
PATH_TO = {
    S.SESSION_STATUS_ACTIVE: [],
    S.SESSION_STATUS_COMPLETED: [S.SESSION_STATUS_COMPLETED],
    S.SESSION_STATUS_ENDED: [S.SESSION_STATUS_ENDED],
    S.SESSION_STATUS_ARCHIVED: [S.SESSION_STATUS_ARCHIVED],
    S.SESSION_STATUS_EXPIRED: [S.SESSION_STATUS_EXPIRED],
}


@pytest.mark.parametrize("source", ALL_STATUSES, ids=S.Name)
@pytest.mark.parametrize("target", ALL_STATUSES, ids=S.Name)
async def test_status_moves_follow_the_lifecycle_table(sessions, source, target):
    session = await new_session(sessions, "alice")
    for step in PATH_TO[source]:
        await set_status(sessions, session.session_id, step)
    if source == target or (source, target) in ALLOWED:
        moved = await set_status(sessions, session.session_id, target)
        assert moved.status == target
        assert moved.HasField("end_time") == (target == S.SESSION_STATUS_ENDED or source == S.SESSION_STATUS_ENDED)
    else:
        failure = await expect_failure(set_status(sessions, session.session_id, target))
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
        assert failure.reason == "INVALID_STATUS_TRANSITION"


async def test_update_to_unspecified_or_unknown_status_is_invalid_argument(sessions):
    session = await new_session(sessions, "alice")
    for bad in (0, 42, -1):
        failure = await expect_failure(set_status(sessions, session.session_id, bad))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "session.status" in failure.field_violations


async def test_end_session_sets_ended_and_end_time(sessions):
    session = await new_session(sessions, "alice")
    ended = (await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))).session
    assert ended.status == pb.SESSION_STATUS_ENDED
    assert ended.HasField("end_time")


@pytest.mark.parametrize("status", [S.SESSION_STATUS_ENDED, S.SESSION_STATUS_ARCHIVED], ids=S.Name)
async def test_end_session_already_ended_or_archived_returns_it_unchanged(sessions, status):
    session = await new_session(sessions, "alice")
    before = await set_status(sessions, session.session_id, status)
    after = (await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))).session
    assert after == before


@pytest.mark.parametrize("status", [S.SESSION_STATUS_COMPLETED, S.SESSION_STATUS_EXPIRED], ids=S.Name)
async def test_end_session_from_completed_or_expired_ends_it(sessions, status):
    session = await new_session(sessions, "alice")
    await set_status(sessions, session.session_id, status)
    ended = (await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))).session
    assert ended.status == pb.SESSION_STATUS_ENDED


async def test_end_missing_session_is_not_found(sessions):
    failure = await expect_failure(sessions.EndSession(pb.EndSessionRequest(session_id=str(uuid.uuid4()))))
    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_delete_session_removes_it_with_its_messages_and_memory(sessions, messages, memories, sql):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id)
    await memories.CreateMemory(pb.CreateMemoryRequest(session_id=session.session_id, conversation_summary="s"))
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=session.session_id))
    failure = await expect_failure(sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id)))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0


async def test_delete_missing_session_is_not_found(sessions):
    failure = await expect_failure(sessions.DeleteSession(pb.DeleteSessionRequest(session_id=str(uuid.uuid4()))))
    assert failure.code == grpc.StatusCode.NOT_FOUND
