"""MemoryService: create, get, update (mask, etag, allow_missing), delete; the summary's has_memory."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from google.protobuf import field_mask_pb2, struct_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb

from .helpers import expect_failure, new_session


def struct(**values) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def create(memories, session_id: str, **fields) -> pb.Memory:
    return (await memories.CreateMemory(pb.CreateMemoryRequest(session_id=session_id, **fields))).memory


async def get(memories, session_id: str) -> pb.Memory:
    return (await memories.GetMemory(pb.GetMemoryRequest(session_id=session_id))).memory


def update(memories, memory: pb.Memory, *paths: str, allow_missing: bool = False):
    request = pb.UpdateMemoryRequest(memory=memory, allow_missing=allow_missing)
    if paths:
        request.update_mask.CopyFrom(mask(*paths))
    return memories.UpdateMemory(request)


async def has_memory(sessions, session_id: str) -> bool:
    summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session_id))).summary
    return summary.has_memory


async def test_create_memory_returns_its_fields_etag_and_user_id_of_the_session(sessions, memories):
    session = await new_session(sessions, "alice")
    memory = await create(
        memories,
        session.session_id,
        conversation_summary="likes trains",
        facts=["lives in Lyon", "vegetarian"],
        preferences=struct(units="metric"),
        metadata=struct(source="import"),
    )
    assert memory.session_id == session.session_id
    assert memory.user_id == "alice"
    assert memory.conversation_summary == "likes trains"
    assert list(memory.facts) == ["lives in Lyon", "vegetarian"]
    assert dict(memory.preferences) == {"units": "metric"}
    assert dict(memory.metadata) == {"source": "import"}
    assert memory.etag
    assert memory.HasField("create_time") and memory.HasField("update_time")


async def test_get_memory_returns_what_create_stored(sessions, memories):
    session = await new_session(sessions, "alice")
    created = await create(memories, session.session_id, conversation_summary="s", facts=["a"])
    assert await get(memories, session.session_id) == created


async def test_create_memory_twice_is_already_exists_and_keeps_the_first(sessions, memories):
    session = await new_session(sessions, "alice")
    first = await create(memories, session.session_id, conversation_summary="first")
    failure = await expect_failure(
        memories.CreateMemory(pb.CreateMemoryRequest(session_id=session.session_id, conversation_summary="second"))
    )
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert failure.resource_type == "memory"
    assert await get(memories, session.session_id) == first


async def test_create_memory_for_missing_session_is_not_found_naming_session(memories, sql):
    failure = await expect_failure(memories.CreateMemory(pb.CreateMemoryRequest(session_id=str(uuid.uuid4()))))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0


async def test_get_missing_memory_of_existing_session_is_not_found_naming_memory(sessions, memories):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(memories.GetMemory(pb.GetMemoryRequest(session_id=session.session_id)))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "memory"


async def test_get_memory_of_missing_session_is_not_found_naming_session(memories):
    failure = await expect_failure(memories.GetMemory(pb.GetMemoryRequest(session_id=str(uuid.uuid4()))))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"


async def test_update_memory_changes_only_masked_fields_and_the_etag(sessions, memories):
    session = await new_session(sessions, "alice")
    created = await create(
        memories, session.session_id, conversation_summary="old", facts=["f1"], preferences=struct(a=1)
    )
    given = pb.Memory(
        session_id=session.session_id, conversation_summary="new", facts=["ignored"], metadata=struct(x="ignored")
    )
    updated = (await update(memories, given, "conversation_summary")).memory
    assert updated.conversation_summary == "new"
    assert list(updated.facts) == ["f1"]
    assert dict(updated.preferences) == {"a": 1}
    assert dict(updated.metadata) == {}
    assert updated.etag != created.etag
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()
    assert await get(memories, session.session_id) == updated


async def test_update_memory_with_mask_can_clear_a_field(sessions, memories):
    session = await new_session(sessions, "alice")
    await create(memories, session.session_id, facts=["a", "b"], conversation_summary="keep")
    updated = (await update(memories, pb.Memory(session_id=session.session_id), "facts")).memory
    assert list(updated.facts) == []
    assert updated.conversation_summary == "keep"


async def test_update_memory_without_mask_updates_the_fields_that_are_set(sessions, memories):
    session = await new_session(sessions, "alice")
    await create(memories, session.session_id, conversation_summary="keep", facts=["f"])
    updated = (
        await update(memories, pb.Memory(session_id=session.session_id, preferences=struct(tone="brief")))
    ).memory
    assert dict(updated.preferences) == {"tone": "brief"}
    assert (updated.conversation_summary, list(updated.facts)) == ("keep", ["f"])


async def test_update_memory_with_current_etag_succeeds_and_stale_etag_is_aborted(sessions, memories):
    session = await new_session(sessions, "alice")
    created = await create(memories, session.session_id, conversation_summary="v0")
    first = (
        await update(
            memories,
            pb.Memory(session_id=session.session_id, conversation_summary="v1", etag=created.etag),
            "conversation_summary",
        )
    ).memory
    failure = await expect_failure(
        update(
            memories,
            pb.Memory(session_id=session.session_id, conversation_summary="v2", etag=created.etag),
            "conversation_summary",
        )
    )
    assert failure.code == grpc.StatusCode.ABORTED
    assert failure.reason == "ETAG_MISMATCH"
    assert await get(memories, session.session_id) == first


async def test_update_missing_memory_without_allow_missing_is_not_found(sessions, memories, sql):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(
        update(memories, pb.Memory(session_id=session.session_id, conversation_summary="x"), "conversation_summary")
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "memory"
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0


async def test_update_missing_memory_with_allow_missing_creates_it_with_masked_fields(sessions, memories):
    session = await new_session(sessions, "bob")
    given = pb.Memory(session_id=session.session_id, conversation_summary="made", facts=["not masked"])
    made = (await update(memories, given, "conversation_summary", allow_missing=True)).memory
    assert made.conversation_summary == "made"
    assert list(made.facts) == []
    assert made.user_id == "bob"
    assert made.etag
    assert await get(memories, session.session_id) == made


async def test_update_memory_with_allow_missing_for_missing_session_is_not_found(memories, sql):
    failure = await expect_failure(
        update(memories, pb.Memory(session_id=str(uuid.uuid4()), conversation_summary="x"), allow_missing=True)
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0


async def test_update_memory_with_allow_missing_updates_an_existing_one(sessions, memories):
    session = await new_session(sessions, "alice")
    created = await create(memories, session.session_id, conversation_summary="old", facts=["keep"])
    updated = (
        await update(
            memories,
            pb.Memory(session_id=session.session_id, conversation_summary="new"),
            "conversation_summary",
            allow_missing=True,
        )
    ).memory
    assert (updated.conversation_summary, list(updated.facts)) == ("new", ["keep"])
    assert updated.create_time == created.create_time


async def test_update_memory_unknown_mask_path_is_invalid_argument_naming_update_mask(sessions, memories):
    session = await new_session(sessions, "alice")
    created = await create(memories, session.session_id, conversation_summary="s")
    failure = await expect_failure(
        update(memories, pb.Memory(session_id=session.session_id, user_id="mallory"), "user_id")
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in failure.field_violations
    assert await get(memories, session.session_id) == created


async def test_delete_memory_then_get_is_not_found(sessions, memories, sql):
    session = await new_session(sessions, "alice")
    await create(memories, session.session_id, conversation_summary="s")
    await memories.DeleteMemory(pb.DeleteMemoryRequest(session_id=session.session_id))
    failure = await expect_failure(memories.GetMemory(pb.GetMemoryRequest(session_id=session.session_id)))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "memory"
    assert await sql.fetchval("SELECT count(*) FROM memories") == 0
    assert (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session.session_id


async def test_delete_missing_memory_is_not_found(sessions, memories):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(memories.DeleteMemory(pb.DeleteMemoryRequest(session_id=session.session_id)))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "memory"
    failure = await expect_failure(memories.DeleteMemory(pb.DeleteMemoryRequest(session_id=str(uuid.uuid4()))))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"


async def test_memory_can_be_created_again_after_delete(sessions, memories):
    session = await new_session(sessions, "alice")
    await create(memories, session.session_id, conversation_summary="one")
    await memories.DeleteMemory(pb.DeleteMemoryRequest(session_id=session.session_id))
    again = await create(memories, session.session_id, conversation_summary="two")
    assert again.conversation_summary == "two"


async def test_session_summary_has_memory_follows_create_and_delete(sessions, memories):
    session = await new_session(sessions, "alice")
    assert await has_memory(sessions, session.session_id) is False
    await create(memories, session.session_id)
    assert await has_memory(sessions, session.session_id) is True
    await memories.DeleteMemory(pb.DeleteMemoryRequest(session_id=session.session_id))
    assert await has_memory(sessions, session.session_id) is False


async def test_memory_of_one_session_is_not_visible_from_another(sessions, memories):
    one = await new_session(sessions, "alice")
    two = await new_session(sessions, "alice")
    await create(memories, one.session_id, conversation_summary="one's")
    failure = await expect_failure(memories.GetMemory(pb.GetMemoryRequest(session_id=two.session_id)))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert await has_memory(sessions, two.session_id) is False


async def test_etag_of_a_deleted_memory_does_not_match_the_one_made_again(sessions, memories):
    session = await new_session(sessions, "alice")
    old = await create(memories, session.session_id, conversation_summary="first")
    await memories.DeleteMemory(pb.DeleteMemoryRequest(session_id=session.session_id))
    new = await create(memories, session.session_id, conversation_summary="second")
    assert new.etag != old.etag
    stale = pb.Memory(session_id=session.session_id, conversation_summary="third", etag=old.etag)
    failure = await expect_failure(update(memories, stale, "conversation_summary"))
    assert failure.code == grpc.StatusCode.ABORTED


async def test_concurrent_allow_missing_updates_create_one_memory_and_apply_every_update(sessions, memories, sql):
    session = await new_session(sessions)
    await asyncio.gather(
        *(
            memories.UpdateMemory(
                pb.UpdateMemoryRequest(
                    memory=pb.Memory(session_id=session.session_id, facts=[f"f{i}"]),
                    update_mask=mask("facts"),
                    allow_missing=True,
                )
            )
            for i in range(10)
        )
    )
    assert await sql.fetchval("SELECT count(*) FROM memories") == 1
    assert await sql.fetchval("SELECT version FROM memories") == 10  # created once, updated nine times


async def test_concurrent_memory_updates_with_one_etag_let_exactly_one_win(sessions, memories):
    session = await new_session(sessions)
    first = await create(memories, session.session_id)
    results = await asyncio.gather(
        *(
            memories.UpdateMemory(
                pb.UpdateMemoryRequest(
                    memory=pb.Memory(session_id=session.session_id, conversation_summary=f"s{i}", etag=first.etag),
                    update_mask=mask("conversation_summary"),
                )
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.UpdateMemoryResponse)]
    assert len(won) == 1
    assert all(r.code() == grpc.StatusCode.ABORTED for r in results if isinstance(r, grpc.aio.AioRpcError))
    current = (await memories.GetMemory(pb.GetMemoryRequest(session_id=session.session_id))).memory
    assert current.conversation_summary == won[0].memory.conversation_summary
