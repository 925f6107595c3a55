"""Every resource the server accepts can be read back by a stock client: the largest memory,
session and message the size limits admit (in 4-byte characters) round-trip through stubs on a
channel with default options, whose receive limit is 4 MiB (Python, Go, grpcurl alike)."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.domain.limits import DEFAULT_LIMITS
from session_grpc.settings import Settings, SettingsError

from .helpers import add, new_session

WIDE = "\U0001f600"  # four bytes in UTF-8: the largest a character can be
LIMITS = DEFAULT_LIMITS


def largest_struct(size: int) -> struct_pb2.Struct:
    """A Struct that serializes to exactly `size` bytes or just under."""
    value = struct_pb2.Struct()
    value["k"] = "x" * size
    while value.ByteSize() > size:
        value["k"] = "x" * (len(value["k"]) - (value.ByteSize() - size))
    return value


async def test_the_largest_admissible_session_round_trips_through_a_default_client(sessions):
    title = WIDE * LIMITS.title_length
    data, metadata = largest_struct(LIMITS.struct_bytes), largest_struct(LIMITS.struct_bytes)
    app = "a" * 128
    created = await new_session(sessions, "big", title=title, conversation_data=data, metadata=metadata, app_name=app)
    got = (await sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id))).session
    assert (got.title, got.conversation_data, got.metadata, got.app_name) == (title, data, metadata, app)
    listed = (await sessions.ListSessions(pb.ListSessionsRequest(user_id="big"))).sessions
    assert [s.session_id for s in listed] == [created.session_id]


async def test_the_largest_admissible_message_round_trips_through_a_default_client(sessions, messages):
    session = await new_session(sessions, "big")
    content = WIDE * (LIMITS.content_bytes // 4)
    metadata = largest_struct(LIMITS.struct_bytes)
    payload = b"\xff" * LIMITS.payload_bytes
    await add(messages, session.session_id, content, metadata=metadata, payload=payload, payload_type="a/b")
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))
    assert [(m.content, m.metadata, m.payload) for m in page.messages] == [(content, metadata, payload)]
    assert page.ByteSize() > LIMITS.content_bytes + LIMITS.payload_bytes
    streamed = [m async for m in messages.StreamMessages(pb.StreamMessagesRequest(session_id=session.session_id))]
    assert [(m.message.content, m.message.payload) for m in streamed] == [(content, payload)]


async def test_the_largest_admissible_memory_round_trips_through_a_default_client(sessions, memories):
    session = await new_session(sessions, "big")
    memory = pb.Memory(
        session_id=session.session_id,
        conversation_summary=WIDE * LIMITS.summary_length,
        facts=[WIDE * LIMITS.fact_length] * LIMITS.facts,
        preferences=largest_struct(LIMITS.struct_bytes),
        metadata=largest_struct(LIMITS.struct_bytes),
    )
    mask = field_mask_pb2.FieldMask(paths=["conversation_summary", "facts", "preferences", "metadata"])
    await memories.UpdateMemory(pb.UpdateMemoryRequest(memory=memory, update_mask=mask, allow_missing=True))
    got = (await memories.GetMemory(pb.GetMemoryRequest(session_id=session.session_id))).memory
    assert got.ByteSize() > 2 * 1024 * 1024, "the test reads a memory as large as the limits allow"
    assert (got.conversation_summary, list(got.facts), got.preferences, got.metadata) == (
        memory.conversation_summary, list(memory.facts), memory.preferences, memory.metadata
    )


@pytest.mark.parametrize(
    "variable,value",
    [("SESSION_MAX_FACT_LENGTH", "2000"), ("SESSION_MAX_CONTENT_BYTES", "8388608"), ("SESSION_MAX_PAYLOAD_BYTES", "4194304")],
)
def test_limits_admitting_a_resource_a_default_client_cannot_receive_are_refused(variable, value):
    with pytest.raises(SettingsError, match="4 MiB"):
        Settings.from_env({variable: value})

