"""ListMessages reads frameworks make: the last N messages (N=0 gives none), messages at or after a
time, both combined, all with keyset paging and tokens bound to the filter."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import timestamp_pb2

from session_grpc import paging
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.domain.errors import NotFound
from session_grpc.domain.records import MessagesQuery, SessionRef
from session_grpc.storage import messages as storage_messages

from .helpers import add, expect_failure, new_session

BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(when: datetime, nanos: int = 0) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    stamp.nanos += nanos
    return stamp


def time_of(sequence: int) -> datetime:
    """Message `sequence` was created `sequence` seconds and microseconds after BASE."""
    return BASE + timedelta(seconds=sequence, microseconds=sequence)


async def session_of(sessions, messages, sql, count: int) -> str:
    """A session of `count` messages "m1".."m<count>" whose create_times are time_of(sequence)."""
    session = await new_session(sessions)
    for i in range(1, count + 1):
        await add(messages, session.session_id, f"m{i}")
    await sql.execute(
        "UPDATE messages SET create_time = $2::timestamptz + sequence * interval '1.000001 second' "
        "WHERE session_id = $1",
        uuid.UUID(session.session_id), BASE,
    )
    return session.session_id


async def read(messages, session_id: str, **fields) -> list[int]:
    """Every page's messages' sequences, following next_page_token to the end."""
    sequences: list[int] = []
    token = ""
    while True:
        page = await messages.ListMessages(pb.ListMessagesRequest(session_id=session_id, page_token=token, **fields))
        sequences += [m.sequence for m in page.messages]
        token = page.next_page_token
        if not token:
            return sequences


async def test_recent_count_gives_the_last_n_messages_oldest_first(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 10)
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=sid, recent_count=3))
    assert [m.content for m in page.messages] == ["m8", "m9", "m10"]
    assert (page.next_page_token, page.total_size) == ("", 10)


async def test_recent_count_zero_gives_no_messages(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 4)
    page = await messages.ListMessages(pb.ListMessagesRequest(session_id=sid, recent_count=0))
    assert (list(page.messages), page.next_page_token, page.total_size) == ([], "", 4)


async def test_recent_count_past_the_session_gives_every_message(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 4)
    assert await read(messages, sid, recent_count=100) == [1, 2, 3, 4]


async def test_recent_count_pages_through_the_last_n_in_sequence_order(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 20)
    assert await read(messages, sid, recent_count=7, page_size=3) == list(range(14, 21))


async def test_start_time_includes_a_message_created_exactly_then(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 6)
    assert await read(messages, sid, start_time=at(time_of(4))) == [4, 5, 6]


async def test_start_time_one_microsecond_later_excludes_that_message(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 6)
    assert await read(messages, sid, start_time=at(time_of(4) + timedelta(microseconds=1))) == [5, 6]


async def test_start_time_nanoseconds_round_up_to_the_next_microsecond(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 6)
    just_before_4 = at(time_of(4) - timedelta(microseconds=1), nanos=1)
    assert await read(messages, sid, start_time=just_before_4) == [4, 5, 6]


async def test_start_time_after_the_last_message_gives_none_and_before_the_first_gives_all(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 3)
    assert await read(messages, sid, start_time=at(time_of(3) + timedelta(microseconds=1))) == []
    assert await read(messages, sid, start_time=at(BASE - timedelta(days=365))) == [1, 2, 3]


async def test_start_time_pages_by_sequence_in_both_orders(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 25)
    assert await read(messages, sid, start_time=at(time_of(9)), page_size=4) == list(range(9, 26))
    newest_first = await read(messages, sid, start_time=at(time_of(9)), page_size=4, order_by="sequence desc")
    assert newest_first == list(range(25, 8, -1))


async def test_recent_count_and_start_time_give_the_last_n_of_those_at_or_after_it(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 10)
    assert await read(messages, sid, start_time=at(time_of(5)), recent_count=3, page_size=2) == [8, 9, 10]
    # Fewer than N at or after the time: those.
    assert await read(messages, sid, start_time=at(time_of(9)), recent_count=5) == [9, 10]
    assert await read(messages, sid, start_time=at(time_of(5)), recent_count=0) == []


async def test_later_pages_of_recent_count_continue_through_messages_appended_meanwhile(sessions, messages, sql):
    sid = await session_of(sessions, messages, sql, 10)
    first = await messages.ListMessages(pb.ListMessagesRequest(session_id=sid, recent_count=4, page_size=2))
    assert [m.sequence for m in first.messages] == [7, 8]
    for i in range(6):  # more than recent_count: a recount would skip 9 and 10
        await add(messages, sid, f"late {i}")
    rest = await messages.ListMessages(
        pb.ListMessagesRequest(session_id=sid, recent_count=4, page_size=100, page_token=first.next_page_token)
    )
    assert [m.sequence for m in rest.messages] == list(range(9, 17))


@pytest.mark.parametrize(
    "other",
    [
        {"recent_count": 5},
        {},
        {"start_time": at(time_of(3))},
        {"start_time": at(time_of(2)), "recent_count": 4},
    ],
)
async def test_page_token_of_one_filter_is_invalid_argument_with_another(sessions, messages, sql, other):
    sid = await session_of(sessions, messages, sql, 10)
    page = await messages.ListMessages(
        pb.ListMessagesRequest(session_id=sid, start_time=at(time_of(2)), recent_count=6, page_size=2)
    )
    assert page.next_page_token
    failure = await expect_failure(
        messages.ListMessages(
            pb.ListMessagesRequest(session_id=sid, page_size=2, page_token=page.next_page_token, **other)
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in failure.field_violations


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"recent_count": -1}, "recent_count"),
        ({"recent_count": 3, "order_by": "sequence desc"}, "recent_count"),
        ({"start_time": timestamp_pb2.Timestamp(seconds=0, nanos=-1)}, "start_time"),
        ({"start_time": timestamp_pb2.Timestamp(seconds=0, nanos=1_000_000_000)}, "start_time"),
        ({"start_time": timestamp_pb2.Timestamp(seconds=-62135596801)}, "start_time"),
        ({"start_time": timestamp_pb2.Timestamp(seconds=253402300800)}, "start_time"),
    ],
)
async def test_bad_recent_count_or_start_time_is_invalid_argument_naming_it(sessions, messages, fields, field):
    session = await new_session(sessions)
    failure = await expect_failure(messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id, **fields)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.field_violations


async def test_filtered_listing_of_a_missing_session_is_not_found(messages):
    failure = await expect_failure(
        messages.ListMessages(
            pb.ListMessagesRequest(session_id=str(uuid.uuid4()), recent_count=0, start_time=at(BASE))
        )
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("start", "recent"), [(True, None), (False, 2), (True, 0)])
async def test_filtered_listing_of_another_users_session_is_not_found(service, sessions, messages, sql, start, recent):
    sid = await session_of(sessions, messages, sql, 3)
    query = MessagesQuery(
        SessionRef(sid, "someone-else"), 10, None, {}, paging.RESPONSE_BYTES,
        start_time=time_of(1) if start else None, recent_count=recent,
    )
    with pytest.raises(NotFound):
        await service.db.run(storage_messages.list_messages, query)
    own = await service.db.run(storage_messages.list_messages, replace(query, session=SessionRef(sid, "user-1")))
    assert own.total == 3


# event_time_start: ADK's after_timestamp, on the writer's event times, which need not follow the
# sequence. EVENT_ORDER gives messages 1..8 the event times BASE + these seconds (message 5 has none
# and goes by its create_time, time_of(5)); a message matches when its time is >= the filter.
EVENT_ORDER = {1: 50, 2: 10, 3: 40, 4: 20, 6: 60, 7: 5, 8: 30}


async def events_session(sessions, messages, sql) -> str:
    sid = await session_of(sessions, messages, sql, 8)
    for sequence, seconds in EVENT_ORDER.items():
        await sql.execute(
            "UPDATE messages SET event_time = $3 WHERE session_id = $1 AND sequence = $2",
            uuid.UUID(sid), sequence, BASE + timedelta(seconds=seconds),
        )
    await sql.execute("UPDATE messages SET event_time = NULL WHERE session_id = $1 AND sequence = 5", uuid.UUID(sid))
    return sid


def matching(seconds: float) -> list[int]:
    times = {**{s: BASE + timedelta(seconds=v) for s, v in EVENT_ORDER.items()}, 5: time_of(5)}
    return sorted(s for s, t in times.items() if t >= BASE + timedelta(seconds=seconds))


@pytest.mark.parametrize("page_size", [1, 2, 3, 100])
@pytest.mark.parametrize("seconds", [0, 5, 20, 30, 50, 60, 61])
async def test_event_time_start_keeps_the_messages_whose_event_time_is_at_or_after_it(
    sessions, messages, sql, seconds, page_size
):
    sid = await events_session(sessions, messages, sql)
    since = at(BASE + timedelta(seconds=seconds))
    assert await read(messages, sid, event_time_start=since, page_size=page_size) == matching(seconds)
    newest_first = await read(messages, sid, event_time_start=since, page_size=page_size, order_by="sequence desc")
    assert newest_first == matching(seconds)[::-1]


async def test_event_time_start_pages_end_without_an_empty_page(sessions, messages, sql):
    sid = await events_session(sessions, messages, sql)
    page = await messages.ListMessages(
        pb.ListMessagesRequest(session_id=sid, event_time_start=at(BASE + timedelta(seconds=30)), page_size=4)
    )
    assert [m.sequence for m in page.messages] == [1, 3, 6, 8] and not page.next_page_token
    assert page.total_size == 8


@pytest.mark.parametrize("recent", [0, 1, 2, 3, 10])
async def test_recent_count_with_event_time_start_gives_the_last_n_matching(sessions, messages, sql, recent):
    sid = await events_session(sessions, messages, sql)
    since = at(BASE + timedelta(seconds=20))
    expected = matching(20)[-recent:] if recent else []
    assert await read(messages, sid, event_time_start=since, recent_count=recent, page_size=1) == expected


async def test_event_time_start_combines_with_start_time(sessions, messages, sql):
    sid = await events_session(sessions, messages, sql)
    got = await read(messages, sid, event_time_start=at(BASE + timedelta(seconds=20)), start_time=at(time_of(4)))
    assert got == [s for s in matching(20) if s >= 4]
    assert await read(
        messages, sid, event_time_start=at(BASE + timedelta(seconds=20)), start_time=at(time_of(4)), recent_count=2
    ) == [s for s in matching(20) if s >= 4][-2:]


async def test_event_time_start_pages_within_the_byte_budget(service, sessions, messages, sql):
    sid = await events_session(sessions, messages, sql)
    query = MessagesQuery(
        SessionRef(sid, None), 10, None, {}, 1, event_time_start=BASE + timedelta(seconds=20)
    )
    first = await service.db.run(storage_messages.list_messages, query)
    assert [m.sequence for m in first.items] == [1] and first.more  # one message past a 1-byte budget


async def test_a_page_token_of_event_time_start_is_invalid_argument_without_it(sessions, messages, sql):
    sid = await events_session(sessions, messages, sql)
    page = await messages.ListMessages(
        pb.ListMessagesRequest(session_id=sid, event_time_start=at(BASE + timedelta(seconds=20)), page_size=2)
    )
    failure = await expect_failure(
        messages.ListMessages(pb.ListMessagesRequest(session_id=sid, page_size=2, page_token=page.next_page_token))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in failure.field_violations


async def test_a_bad_event_time_start_is_invalid_argument_naming_it(sessions, messages):
    session = await new_session(sessions)
    failure = await expect_failure(
        messages.ListMessages(
            pb.ListMessagesRequest(session_id=session.session_id, event_time_start=timestamp_pb2.Timestamp(nanos=-1))
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "event_time_start" in failure.field_violations
