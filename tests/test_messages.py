"""MessageService: AddMessage (sequence, counters, exact money, idempotency, concurrency), ListMessages, StreamMessages."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from decimal import Decimal

import grpc
import pytest
from google.protobuf import struct_pb2

from session_grpc import paging
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.domain.records import MessagesQuery, SessionRef
from session_grpc.storage import messages as storage_messages

from .helpers import add, expect_failure, new_session, set_status, statements_waiting_for_a_lock


def struct(**values) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def get(sessions, session_id: str) -> pb.Session:
    return (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session


async def add_many(messages, session_id: str, count: int, chunk: int = 50, **fields) -> list[pb.Message]:
    """`count` messages, sent `chunk` at a time concurrently; contents are "m<i>"."""
    added: list[pb.Message] = []
    for start in range(0, count, chunk):
        added += await asyncio.gather(
            *(add(messages, session_id, f"m{i}", **fields) for i in range(start, min(start + chunk, count)))
        )
    return added


async def stream(messages, **fields) -> list[pb.Message]:
    return [response.message async for response in messages.StreamMessages(pb.StreamMessagesRequest(**fields))]


async def list_all(messages, session_id: str, page_size: int = 0) -> list[pb.ListMessagesResponse]:
    pages = []
    token = ""
    while True:
        page = await messages.ListMessages(
            pb.ListMessagesRequest(session_id=session_id, page_size=page_size, page_token=token)
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


# ---- AddMessage ------------------------------------------------------------------------------


async def test_add_message_returns_message_with_sequences_1_2_3(sessions, messages):
    session = await new_session(sessions, "alice")
    added = [await add(messages, session.session_id, f"m{i}") for i in range(3)]
    assert [m.sequence for m in added] == [1, 2, 3]
    assert [m.content for m in added] == ["m0", "m1", "m2"]
    assert len({m.message_id for m in added}) == 3
    for message in added:
        assert str(uuid.UUID(message.message_id)) == message.message_id
        assert message.session_id == session.session_id
        assert message.HasField("create_time")


async def test_add_message_copies_user_id_from_session(sessions, messages):
    session = await new_session(sessions, "carol")
    message = await add(messages, session.session_id)
    assert message.user_id == "carol"


async def test_add_message_stores_role_type_content_and_metadata(sessions, messages):
    session = await new_session(sessions, "alice")
    message = await add(
        messages,
        session.session_id,
        "call it",
        role=pb.ROLE_ASSISTANT,
        message_type=pb.MESSAGE_TYPE_TOOL_CALL,
        metadata=struct(tool="search", args={"q": "x"}),
    )
    assert (message.role, message.message_type, message.content) == (
        pb.ROLE_ASSISTANT,
        pb.MESSAGE_TYPE_TOOL_CALL,
        "call it",
    )
    assert dict(message.metadata) == {"tool": "search", "args": struct(q="x")}
    listed = (await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))).messages
    assert list(listed) == [message]


async def test_add_message_with_unspecified_message_type_becomes_chat(sessions, messages):
    session = await new_session(sessions, "alice")
    message = await add(messages, session.session_id, message_type=pb.MESSAGE_TYPE_UNSPECIFIED)
    assert message.message_type == pb.MESSAGE_TYPE_CHAT


async def test_add_message_stores_cost_and_tokens_exactly(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    message = await add(messages, session.session_id, tokens_used=1234, cost="0.00015")
    assert (message.tokens_used, message.cost) == (1234, "0.00015")
    row = await sql.fetchrow("SELECT tokens_used, cost FROM messages WHERE id = $1", uuid.UUID(message.message_id))
    assert (row["tokens_used"], row["cost"]) == (1234, Decimal("0.00015"))


async def test_add_message_with_empty_cost_costs_zero(sessions, messages):
    session = await new_session(sessions, "alice")
    message = await add(messages, session.session_id)
    assert Decimal(message.cost) == 0
    assert Decimal((await get(sessions, session.session_id)).total_cost) == 0


async def test_cost_with_18_fraction_digits_round_trips(sessions, messages):
    session = await new_session(sessions, "alice")
    message = await add(messages, session.session_id, cost="0.123456789012345678")
    assert message.cost == "0.123456789012345678"
    assert (await get(sessions, session.session_id)).total_cost == "0.123456789012345678"


async def test_cost_0_00015_round_trips_as_0_00015(sessions, messages):
    session = await new_session(sessions, "alice")
    added = await add(messages, session.session_id, cost="0.00015")
    listed = (await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))).messages[0]
    streamed = (await stream(messages, session_id=session.session_id))[0]
    assert added.cost == listed.cost == streamed.cost == "0.00015"
    assert (await get(sessions, session.session_id)).total_cost == "0.00015"


async def test_add_message_bumps_session_counters_and_last_activity_time(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, tokens_used=10, cost="0.25")
    last = await add(messages, session.session_id, tokens_used=5, cost="0.5")
    current = await get(sessions, session.session_id)
    assert current.message_count == 2
    assert current.total_tokens == 15
    assert Decimal(current.total_cost) == Decimal("0.75")
    assert current.last_activity_time.ToDatetime() > session.last_activity_time.ToDatetime()
    assert current.last_activity_time.ToDatetime() == last.create_time.ToDatetime()
    assert current.create_time == session.create_time


async def test_add_message_to_missing_session_is_not_found(sessions, messages, sql):
    failure = await expect_failure(add(messages, str(uuid.uuid4())))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0


@pytest.mark.parametrize(
    "status",
    [pb.SESSION_STATUS_COMPLETED, pb.SESSION_STATUS_ENDED, pb.SESSION_STATUS_ARCHIVED, pb.SESSION_STATUS_EXPIRED],
    ids=pb.SessionStatus.Name,
)
async def test_add_message_to_session_that_is_not_active_is_failed_precondition(sessions, messages, sql, status):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, tokens_used=3, cost="1")
    before = await set_status(sessions, session.session_id, status)
    failure = await expect_failure(add(messages, session.session_id, tokens_used=7, cost="2"))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "SESSION_NOT_ACTIVE"
    after = await get(sessions, session.session_id)
    assert (after.message_count, after.total_tokens, Decimal(after.total_cost)) == (1, 3, Decimal(1))
    assert after.last_activity_time == before.last_activity_time
    assert await sql.fetchval("SELECT count(*) FROM messages") == 1


async def test_add_message_to_session_ended_by_end_session_is_failed_precondition(sessions, messages):
    session = await new_session(sessions, "alice")
    await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))
    failure = await expect_failure(add(messages, session.session_id))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "SESSION_NOT_ACTIVE"


# ---- request_id idempotency --------------------------------------------------------------------


async def test_add_message_with_same_request_id_returns_first_message_and_counts_once(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    first = await add(messages, session.session_id, "first", tokens_used=10, cost="0.5", request_id=request_id)
    again = await add(messages, session.session_id, "retry", tokens_used=99, cost="9", request_id=request_id)
    assert again == first
    assert await sql.fetchval("SELECT count(*) FROM messages") == 1
    current = await get(sessions, session.session_id)
    assert (current.message_count, current.total_tokens, Decimal(current.total_cost)) == (1, 10, Decimal("0.5"))
    following = await add(messages, session.session_id, "next")
    assert following.sequence == 2


async def test_add_message_request_id_is_scoped_per_session(sessions, messages):
    request_id = str(uuid.uuid4())
    one = await new_session(sessions, "alice")
    two = await new_session(sessions, "alice")
    first = await add(messages, one.session_id, request_id=request_id)
    second = await add(messages, two.session_id, request_id=request_id)
    assert first.message_id != second.message_id
    assert second.session_id == two.session_id


async def test_concurrent_add_message_with_one_request_id_makes_one_row_counted_once(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    results = await asyncio.gather(
        *(
            add(messages, session.session_id, f"try {i}", tokens_used=4, cost="0.01", request_id=request_id)
            for i in range(20)
        )
    )
    assert len({m.message_id for m in results}) == 1
    assert {m.sequence for m in results} == {1}
    assert await sql.fetchval("SELECT count(*) FROM messages") == 1
    current = await get(sessions, session.session_id)
    assert (current.message_count, current.total_tokens, Decimal(current.total_cost)) == (1, 4, Decimal("0.01"))


async def test_request_id_race_decided_under_the_row_lock_answers_with_the_winner(sessions, messages, sql):
    """All calls take their snapshot before any of them commits (the session row is held), so
    every loser reaches the unique index, and must answer with the winner's message."""
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    lock = sql.transaction()
    await lock.start()
    await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session.session_id)
    calls = [
        asyncio.ensure_future(add(messages, session.session_id, f"try {i}", tokens_used=4, request_id=request_id))
        for i in range(8)
    ]
    await until_waiting_for_lock(sql, 8)
    await lock.rollback()
    results = await asyncio.gather(*calls)
    assert len({m.message_id for m in results}) == 1
    assert await sql.fetchval("SELECT count(*) FROM messages") == 1
    current = await get(sessions, session.session_id)
    assert (current.message_count, current.total_tokens) == (1, 4)


async def until_waiting_for_lock(sql, count: int) -> None:
    for _ in range(200):
        if await statements_waiting_for_a_lock(sql) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} statements waited for the lock")


async def test_retried_request_id_after_session_ended_returns_first_message(sessions, messages):
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    first = await add(messages, session.session_id, request_id=request_id)
    await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))
    again = await add(messages, session.session_id, request_id=request_id)
    assert again == first


async def test_new_request_id_after_session_ended_is_failed_precondition(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, request_id=str(uuid.uuid4()))
    await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))
    failure = await expect_failure(add(messages, session.session_id, request_id=str(uuid.uuid4())))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION


# ---- concurrency and exact totals ---------------------------------------------------------------


async def test_50_concurrent_add_message_keep_counters_exact_and_sequences_gapless(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    added = await asyncio.gather(
        *(add(messages, session.session_id, f"m{i}", tokens_used=i, cost="0.01") for i in range(50))
    )
    assert sorted(m.sequence for m in added) == list(range(1, 51))
    current = await get(sessions, session.session_id)
    assert current.message_count == 50
    assert current.total_tokens == sum(range(50))
    assert Decimal(current.total_cost) == Decimal("0.5")
    rows = await sql.fetch("SELECT sequence FROM messages ORDER BY sequence")
    assert [row["sequence"] for row in rows] == list(range(1, 51))


async def test_concurrent_messages_get_create_times_in_sequence_order_and_last_activity_is_the_latest(
    sessions, messages, sql
):
    # now() is the transaction's start, taken before the session row lock is queued for:
    # a later sequence could get an earlier time and move last_activity_time backwards.
    for _ in range(3):
        session = await new_session(sessions, "alice")
        await asyncio.gather(*(add(messages, session.session_id) for _ in range(40)))
        rows = await sql.fetch(
            "SELECT sequence, create_time FROM messages WHERE session_id = $1 ORDER BY sequence",
            uuid.UUID(session.session_id),
        )
        times = [row["create_time"] for row in rows]
        assert times == sorted(times)
        current = await get(sessions, session.session_id)
        summary = (
            await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session.session_id))
        ).summary
        assert current.last_activity_time.ToDatetime() == times[-1].replace(tzinfo=None)
        assert summary.last_message_time == current.last_activity_time
        await sql.execute(
            "TRUNCATE sessions, messages, memories, session_rewinds, rewound_requests, user_states, app_states, state_updates, "
            "session_role_totals"
        )


async def test_concurrent_add_message_to_two_sessions_keeps_each_sequence_independent(sessions, messages, sql):
    one = await new_session(sessions, "alice")
    two = await new_session(sessions, "bob")
    await asyncio.gather(
        *(add(messages, one.session_id) for _ in range(20)), *(add(messages, two.session_id) for _ in range(15))
    )
    for session, count in ((one, 20), (two, 15)):
        rows = await sql.fetch(
            "SELECT sequence FROM messages WHERE session_id = $1 ORDER BY sequence", uuid.UUID(session.session_id)
        )
        assert [row["sequence"] for row in rows] == list(range(1, count + 1))
        assert (await get(sessions, session.session_id)).message_count == count


async def test_ten_costs_of_0_1_total_exactly_1(sessions, messages):
    session = await new_session(sessions, "alice")
    for _ in range(10):
        await add(messages, session.session_id, cost="0.1")
    total = (await get(sessions, session.session_id)).total_cost
    assert Decimal(total) == Decimal("1")
    assert "e" not in total.lower()


async def test_thousand_costs_of_0_000001_total_exactly_0_001(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 1000, cost="0.000001", tokens_used=1)
    current = await get(sessions, session.session_id)
    assert Decimal(current.total_cost) == Decimal("0.001")
    assert (current.message_count, current.total_tokens) == (1000, 1000)
    assert await sql.fetchval("SELECT sum(cost) FROM messages") == Decimal("0.001")


# ---- ListMessages ------------------------------------------------------------------------------


async def test_list_messages_returns_them_in_sequence_order(sessions, messages):
    session = await new_session(sessions, "alice")
    added = [await add(messages, session.session_id, f"m{i}") for i in range(5)]
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))
    assert list(page.messages) == added
    assert page.next_page_token == ""
    assert page.total_size == 5


async def test_list_messages_default_page_size_is_100(sessions, messages):
    session = await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 101)
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))
    assert len(page.messages) == 100
    assert page.next_page_token
    rest = await messages.ListMessages(
        pb.ListMessagesRequest(session_id=session.session_id, page_token=page.next_page_token)
    )
    assert [m.sequence for m in rest.messages] == [101]
    assert rest.next_page_token == ""


async def test_list_messages_pages_250_as_100_100_50_with_total_on_every_page(sessions, messages):
    session = await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 250)
    pages = await list_all(messages, session.session_id, page_size=100)
    assert [len(p.messages) for p in pages] == [100, 100, 50]
    assert [p.total_size for p in pages] == [250, 250, 250]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    sequences = [m.sequence for p in pages for m in p.messages]
    assert sequences == list(range(1, 251))


async def test_list_messages_page_exactly_full_at_the_end_has_no_next_token(sessions, messages):
    session = await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 6)
    pages = await list_all(messages, session.session_id, page_size=3)
    assert [len(p.messages) for p in pages] == [3, 3]
    assert pages[-1].next_page_token == ""


async def test_list_messages_of_empty_session_is_empty(sessions, messages):
    session = await new_session(sessions, "alice")
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))
    assert (list(page.messages), page.next_page_token, page.total_size) == ([], "", 0)


@pytest.mark.parametrize("page_size", [1001, -1, 2**31 - 1, -(2**31)])
async def test_list_messages_page_size_out_of_range_is_invalid_argument_naming_page_size(
    sessions, messages, page_size
):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(
        messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, page_size=page_size))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in failure.field_violations


async def test_list_messages_page_size_1000_is_allowed(sessions, messages):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id)
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, page_size=1000))
    assert len(page.messages) == 1


def flipped(token: str, index: int) -> str:
    char = token[index]
    return token[:index] + ("B" if char != "B" else "C") + token[index + 1 :]


async def first_token(messages, session_id: str) -> str:
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session_id, page_size=2))
    assert page.next_page_token
    return page.next_page_token


async def test_list_messages_tampered_page_token_is_invalid_argument_naming_page_token(sessions, messages):
    session = await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 5)
    token = await first_token(messages, session.session_id)
    mac_start = token.index(".") + 1
    for bad in (flipped(token, 0), flipped(token, mac_start), flipped(token, mac_start + 5), "abc", "a.b.c", "é.é"):
        failure = await expect_failure(
            messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, page_size=2, page_token=bad))
        )
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "page_token" in failure.field_violations, bad


async def test_list_messages_page_token_of_another_session_is_invalid_argument_naming_page_token(
    sessions, messages
):
    one = await new_session(sessions, "alice")
    two = await new_session(sessions, "alice")
    await add_many(messages, one.session_id, 5)
    await add_many(messages, two.session_id, 5)
    token = await first_token(messages, one.session_id)
    failure = await expect_failure(
        messages.ListMessages(pb.ListMessagesRequest(session_id=two.session_id, page_size=2, page_token=token))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in failure.field_violations


async def test_list_messages_page_token_of_a_session_listing_is_invalid_argument(sessions, messages):
    session = await new_session(sessions, "alice")
    await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 3)
    listing = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", page_size=1))
    assert listing.next_page_token
    failure = await expect_failure(
        messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, page_token=listing.next_page_token))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in failure.field_violations


async def test_list_messages_of_missing_session_is_not_found(messages):
    failure = await expect_failure(messages.ListMessages(pb.ListMessagesRequest(session_id=str(uuid.uuid4()))))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"


# ---- StreamMessages ----------------------------------------------------------------------------


async def test_stream_messages_streams_all_in_order_across_page_boundaries(sessions, messages):
    session = await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 250)
    listed = [m for page in await list_all(messages, session.session_id, page_size=1000) for m in page.messages]
    streamed = await stream(messages, session_id=session.session_id, page_size=7)
    assert [m.sequence for m in streamed] == list(range(1, 251))
    assert streamed == listed


async def test_stream_messages_with_page_size_dividing_the_count_streams_each_once(sessions, messages):
    session = await new_session(sessions, "alice")
    await add_many(messages, session.session_id, 10)
    streamed = await stream(messages, session_id=session.session_id, page_size=5)
    assert [m.sequence for m in streamed] == list(range(1, 11))


async def test_stream_messages_after_sequence_skips_earlier_ones(sessions, messages):
    session = await new_session(sessions, "alice")
    added = [await add(messages, session.session_id, f"m{i}") for i in range(10)]
    streamed = await stream(messages, session_id=session.session_id, after_sequence=6, page_size=2)
    assert streamed == added[6:]
    assert await stream(messages, session_id=session.session_id, after_sequence=10) == []
    assert await stream(messages, session_id=session.session_id, after_sequence=500) == []


async def test_stream_messages_of_empty_session_streams_nothing(sessions, messages):
    session = await new_session(sessions, "alice")
    assert await stream(messages, session_id=session.session_id) == []


async def test_stream_messages_of_missing_session_is_not_found(messages):
    failure = await expect_failure(stream(messages, session_id=str(uuid.uuid4())))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"


async def test_stream_messages_negative_after_sequence_is_invalid_argument(sessions, messages):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(stream(messages, session_id=session.session_id, after_sequence=-1))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in failure.field_violations


@pytest.mark.parametrize("page_size", [1001, -1])
async def test_stream_messages_page_size_out_of_range_is_invalid_argument(sessions, messages, page_size):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(stream(messages, session_id=session.session_id, page_size=page_size))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in failure.field_violations


async def test_list_messages_newest_first_pages_back_through_history(sessions, messages):
    session = await new_session(sessions)
    await add_many(messages, session.session_id, 45)
    request = pb.ListMessagesRequest(session_id=session.session_id, page_size=20, order_by="sequence desc")
    seen: list[int] = []
    while True:
        page = await messages.ListMessages(request)
        assert page.total_size == 45
        seen.extend(m.sequence for m in page.messages)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen == list(range(45, 0, -1))


async def test_list_messages_first_page_newest_first_is_the_recent_history(sessions, messages):
    session = await new_session(sessions)
    await add_many(messages, session.session_id, 30)
    page = await messages.ListMessages(
        pb.ListMessagesRequest(session_id=session.session_id, page_size=5, order_by="SEQUENCE  DESC")
    )
    assert [m.sequence for m in page.messages] == [30, 29, 28, 27, 26]


async def test_list_messages_explicit_ascending_order_is_the_default_order(sessions, messages):
    session = await new_session(sessions)
    await add_many(messages, session.session_id, 3)
    for order in ("sequence", "sequence asc"):
        page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, order_by=order))
        assert [m.sequence for m in page.messages] == [1, 2, 3]


async def test_list_messages_unknown_order_by_is_invalid_argument(sessions, messages):
    session = await new_session(sessions)
    for order in ("create_time", "sequence up", "random()"):
        failure = await expect_failure(
            messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, order_by=order))
        )
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "order_by" in failure.field_violations


async def test_page_token_of_one_order_is_invalid_with_the_other(sessions, messages):
    session = await new_session(sessions)
    await add_many(messages, session.session_id, 5)
    page = await messages.ListMessages(
        pb.ListMessagesRequest(session_id=session.session_id, page_size=2, order_by="sequence desc")
    )
    failure = await expect_failure(
        messages.ListMessages(
            pb.ListMessagesRequest(session_id=session.session_id, page_size=2, page_token=page.next_page_token)
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in failure.field_violations


# ---- large messages: pages and streams bounded in bytes ------------------------------------------

LARGE = 200 * 1024


async def add_large(messages, session_id: str, count: int) -> None:
    for start in range(0, count, 10):
        await asyncio.gather(
            *(add(messages, session_id, f"{i:04d}" + "x" * (LARGE - 4)) for i in range(start, min(start + 10, count)))
        )


async def test_list_messages_of_large_messages_stops_short_of_4_mib_and_its_token_continues(sessions, messages):
    session = await new_session(sessions)
    await add_large(messages, session.session_id, 40)  # 8 MB: two default receive limits
    for order in ("", "sequence desc"):
        seen, token, pages = [], "", 0
        while True:
            page = await messages.ListMessages(
                pb.ListMessagesRequest(session_id=session.session_id, page_size=1000, page_token=token, order_by=order)
            )
            assert page.ByteSize() < 4 * 1024 * 1024 and page.total_size == 40
            seen += [m.sequence for m in page.messages]
            pages, token = pages + 1, page.next_page_token
            if not token:
                break
        assert seen == sorted(range(1, 41), reverse=bool(order)) and pages >= 2


async def test_a_page_reads_no_more_than_its_byte_budget_from_the_database(service, sessions, messages):
    """ListMessages(page_size=1000) on a session of large messages: storage fetches the page
    budget's worth (plus one message), not page_size rows, so one small request cannot make the
    server hold hundreds of MB."""
    session = await new_session(sessions)
    await add_large(messages, session.session_id, 40)
    query = MessagesQuery(SessionRef(session.session_id, None), 1000, None, {}, paging.RESPONSE_BYTES)
    page = await service.db.run(storage_messages.list_messages, query)
    assert paging.RESPONSE_BYTES <= sum(len(m.content) for m in page.items) < paging.RESPONSE_BYTES + LARGE
    assert page.more and page.total == 40
    batch = await service.db.run(storage_messages.list_messages, replace(query, byte_budget=paging.STREAM_BATCH_BYTES))
    assert len(batch.items) == paging.STREAM_BATCH_BYTES // LARGE + 1 and batch.more


async def test_stream_messages_of_large_messages_streams_each_once_in_order(sessions, messages):
    session = await new_session(sessions)
    await add_large(messages, session.session_id, 30)
    streamed = await stream(messages, session_id=session.session_id, page_size=1000)
    assert [m.sequence for m in streamed] == list(range(1, 31))
    assert sorted(m.content[:4] for m in streamed) == [f"{i:04d}" for i in range(30)]


@pytest.mark.parametrize("metadata", [{}, {"model": "m1", "n": 2}])
@pytest.mark.parametrize("event_offset", [None, 0, 90])
def test_message_to_proto_writes_every_field_as_it_is_stored(metadata, event_offset):
    """The conversion shares the create time with an equal event time and an empty metadata Struct
    between messages; the bytes are those of converting each field on its own."""
    from datetime import datetime, timedelta, timezone

    from session_grpc import resources
    from session_grpc.domain import records

    created = datetime(2026, 5, 1, 9, 30, 0, 123456, tzinfo=timezone.utc)
    event = None if event_offset is None else created + timedelta(seconds=event_offset)
    record = records.Message(
        str(uuid.uuid4()), str(uuid.uuid4()), "alice", 7, records.Role.ASSISTANT, records.MessageType.TOOL_CALL,
        "hi", 12, Decimal("0.00015"), metadata, created, b"\x01", "a/b", event,
    )
    expected = pb.Message(
        message_id=record.message_id, session_id=record.session_id, user_id="alice", sequence=7,
        role=pb.ROLE_ASSISTANT, message_type=pb.MESSAGE_TYPE_TOOL_CALL, content="hi", tokens_used=12, cost="0.00015",
        metadata=struct(**metadata), payload=b"\x01", payload_type="a/b",
    )
    expected.create_time.FromDatetime(created)
    expected.event_time.FromDatetime(event or created)
    first = resources.message_to_proto(record)
    assert first.SerializeToString() == expected.SerializeToString()
    first.metadata["changed"] = True  # each message owns its Struct: the next conversion is unchanged
    assert resources.message_to_proto(record).SerializeToString() == expected.SerializeToString()
