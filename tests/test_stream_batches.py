"""StreamMessages with batched: one database page per response (within the stream's byte budget)
instead of one message per response; the same messages, in the same order, either way."""

from __future__ import annotations

import uuid

import grpc
import pytest

from session_grpc import paging
from session_grpc._proto.session.v1 import session_pb2 as pb

from .helpers import add, expect_failure, new_session

PAGE = 100  # the default page_size


async def fill(messages, session_id: str, count: int) -> None:
    """`count` messages "m1".."m<count>", appended 100 to a call."""
    for start in range(0, count, 100):
        entries = [
            pb.NewMessage(role=pb.ROLE_USER, content=f"m{i}", tokens_used=i)
            for i in range(start + 1, min(start + 100, count) + 1)
        ]
        await messages.AddMessages(pb.AddMessagesRequest(session_id=session_id, messages=entries))


async def responses(messages, **fields) -> list[pb.StreamMessagesResponse]:
    return [response async for response in messages.StreamMessages(pb.StreamMessagesRequest(**fields))]


def flat(batches: list[pb.StreamMessagesResponse]) -> list[pb.Message]:
    return [message for response in batches for message in response.messages]


@pytest.mark.parametrize("count", [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 7])
async def test_batched_and_unbatched_streams_return_the_same_messages_in_the_same_order(sessions, messages, count):
    session = await new_session(sessions, "alice")
    await fill(messages, session.session_id, count)
    single = await responses(messages, session_id=session.session_id)
    batched = await responses(messages, session_id=session.session_id, batched=True)
    assert all(r.HasField("message") and not r.messages for r in single)
    assert all(not r.HasField("message") and r.messages for r in batched)
    assert flat(batched) == [r.message for r in single]
    assert [m.sequence for m in flat(batched)] == list(range(1, count + 1))
    assert [m.content for m in flat(batched)] == [f"m{i}" for i in range(1, count + 1)]


@pytest.mark.parametrize(("count", "page_size", "sizes"), [
    (0, 0, []),
    (1, 0, [1]),
    (PAGE - 1, 0, [PAGE - 1]),
    (PAGE, 0, [PAGE]),
    (PAGE + 1, 0, [PAGE, 1]),
    (3 * PAGE + 7, 0, [PAGE, PAGE, PAGE, 7]),
    (20, 7, [7, 7, 6]),
    (3, 1, [1, 1, 1]),
])
async def test_each_batched_response_is_one_page(sessions, messages, count, page_size, sizes):
    session = await new_session(sessions, "alice")
    await fill(messages, session.session_id, count)
    batched = await responses(messages, session_id=session.session_id, page_size=page_size, batched=True)
    assert [len(r.messages) for r in batched] == sizes


async def test_a_batched_stream_is_not_one_message_per_response(sessions, messages):
    """Fails if the server ignored `batched`: 250 messages come in 3 responses, not 250."""
    session = await new_session(sessions, "alice")
    await fill(messages, session.session_id, 250)
    batched = await responses(messages, session_id=session.session_id, batched=True)
    assert len(batched) == 3
    assert len(flat(batched)) == 250


async def test_a_batched_stream_honours_after_sequence(sessions, messages):
    session = await new_session(sessions, "alice")
    await fill(messages, session.session_id, 25)
    batched = await responses(messages, session_id=session.session_id, after_sequence=6, page_size=10, batched=True)
    assert [len(r.messages) for r in batched] == [10, 9]
    assert [m.sequence for m in flat(batched)] == list(range(7, 26))
    assert await responses(messages, session_id=session.session_id, after_sequence=25, batched=True) == []
    assert await responses(messages, session_id=session.session_id, after_sequence=500, batched=True) == []


async def test_a_page_of_large_messages_is_split_over_responses_within_the_byte_budget(sessions, messages):
    session = await new_session(sessions, "alice")
    content = "x" * (256 * 1024 - 1)  # 256 KiB with the digit in front
    for i in range(10):
        await add(messages, session.session_id, f"{i}{content}")
    single = await responses(messages, session_id=session.session_id)
    batched = await responses(messages, session_id=session.session_id, batched=True)
    assert flat(batched) == [r.message for r in single]
    # A database page holds the rows that start within 1 MiB: 4 of these (4, 4 and 2 of the 10),
    # just over 1 MiB serialized, so each page goes out as 3 messages and then 1.
    assert [len(r.messages) for r in batched] == [3, 1, 3, 1, 2]
    for response in batched:
        assert response.ByteSize() <= paging.STREAM_BATCH_BYTES


async def test_a_message_larger_than_the_byte_budget_goes_out_alone(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, "before")
    huge = await add(
        messages, session.session_id, "y" * (256 * 1024), payload=b"\x01" * (1024 * 1024), payload_type="a/b"
    )
    await add(messages, session.session_id, "after")
    batched = await responses(messages, session_id=session.session_id, batched=True)
    assert [[m.sequence for m in r.messages] for r in batched] == [[1], [2], [3]]
    assert batched[1].messages[0] == huge
    assert batched[1].ByteSize() > paging.STREAM_BATCH_BYTES


async def test_a_batched_stream_of_a_missing_session_is_not_found(messages):
    failure = await expect_failure(responses(messages, session_id=str(uuid.uuid4()), batched=True))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"


async def test_a_batched_stream_checks_its_fields_like_an_unbatched_one(sessions, messages):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(
        responses(messages, session_id=session.session_id, after_sequence=-1, page_size=1001, batched=True)
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"after_sequence", "page_size"} <= set(failure.field_violations)
