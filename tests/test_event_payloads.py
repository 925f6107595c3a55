"""Events that round-trip: a message's payload (bytes and a media type) comes back byte for byte from
every read, 64-bit integers and all; its event_time is kept to the microsecond; a session carries the
event time of its last message, exactly, under concurrent appends."""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import asyncpg
import grpc
import pytest
from alembic.script import ScriptDirectory
from google.protobuf import timestamp_pb2

from session_grpc import migrations, paging
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.domain.limits import Limits
from session_grpc.domain.records import MessagesQuery, SessionRef
from session_grpc.resources import timestamp
from session_grpc.storage import messages as storage_messages
from session_grpc.testing import database_url_for

from .helpers import add, expect_failure, new_session, serving_with

JSON = "application/json"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe"


def adk_like_event() -> bytes:
    """An event shaped like Google ADK's Event serialized as JSON (written here, not ADK's code):
    text, inline binary data (base64), a function call and its response, grounding, usage metadata
    with counts past 2^53, actions with a state delta, custom metadata. Keys in no sorted order and
    spacing kept as written: the bytes must come back, not an equivalent JSON."""
    return (
        '{"invocationId":"e-7f3a","author":"travel_agent","id":"9Qx2Lm",\n'
        ' "timestamp": 1764446400.123456,\n'
        ' "content":{"role":"model","parts":[{"text":"Lisbon \\u2600 in May"},'
        '{"inlineData":{"mimeType":"image/png","data":"' + base64.b64encode(PNG).decode() + '"}},'
        '{"functionCall":{"id":"call-1","name":"get_weather","args":{"city":"Lisbon","days":3}}},'
        '{"functionResponse":{"id":"call-1","name":"get_weather","response":{"temp_c":24.5,"ok":true}}}]},'
        '"groundingMetadata":{"webSearchQueries":["lisbon may weather"],"groundingChunks":[{"web":{"uri":"https://example.org/lisbon","title":"Lisbon"}}]},'
        '"usageMetadata":{"promptTokenCount":9007199254740993,"candidatesTokenCount":9223372036854775807,"totalTokenCount":-9223372036854775808},'
        '"actions":{"stateDelta":{"user:home":"Porto","temp:scratch":null,"trip_days":3},"transferToAgent":null,"escalate":false,'
        '"artifactDelta":{"map.png":1}},'
        '"customMetadata":{"b":1,"a":[1.0,1e400,0.1]},"partial":false,"turnComplete":true}'
    ).encode()


def ts(value: datetime, nanos_extra: int = 0) -> timestamp_pb2.Timestamp:
    message = timestamp(value)
    message.nanos += nanos_extra
    return message


def to_datetime(message: timestamp_pb2.Timestamp) -> datetime:
    return datetime.fromtimestamp(message.seconds, timezone.utc) + timedelta(microseconds=message.nanos // 1000)


async def stream(messages, session_id: str, **fields) -> list[pb.Message]:
    request = pb.StreamMessagesRequest(session_id=session_id, **fields)
    return [r.message async for r in messages.StreamMessages(request)]


async def listed(messages, session_id: str, **fields) -> list[pb.Message]:
    return list((await messages.ListMessages(pb.ListMessagesRequest(session_id=session_id, **fields))).messages)


async def get(sessions, session_id: str) -> pb.Session:
    return (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session


# ---- the payload ------------------------------------------------------------------------------


async def test_a_payload_comes_back_byte_for_byte_from_every_read(sessions, messages, sql):
    session = await new_session(sessions)
    event = adk_like_event()
    added = await add(messages, session.session_id, "Lisbon in May", payload=event, payload_type=JSON)
    assert (added.payload, added.payload_type) == (event, JSON)
    # 64-bit integers, key order, spacing and the float written as 1e400: nothing re-encoded.
    assert b'"candidatesTokenCount":9223372036854775807' in added.payload
    assert b'"b":1,"a":[1.0,1e400,0.1]' in added.payload
    for found in (
        await listed(messages, session.session_id),
        await listed(messages, session.session_id, order_by="sequence desc"),
        await listed(messages, session.session_id, recent_count=1),
        await stream(messages, session.session_id),
    ):
        assert [(m.payload, m.payload_type) for m in found] == [(event, JSON)]
    stored = await sql.fetchrow("SELECT payload, payload_type FROM messages WHERE id = $1", added.message_id)
    assert (bytes(stored["payload"]), stored["payload_type"]) == (event, JSON)


async def test_a_payload_is_any_bytes_not_only_text(sessions, messages):
    """Binary payloads (not UTF-8, NUL bytes included) are stored as bytea and returned as sent."""
    session = await new_session(sessions)
    raw = bytes(range(256)) * 3
    added = await add(messages, session.session_id, "a picture", payload=raw, payload_type="image/png")
    assert (await listed(messages, session.session_id))[0].payload == raw == added.payload


async def test_the_media_type_is_stored_as_given(sessions, messages):
    session = await new_session(sessions)
    kind = 'Application/Vnd.Google.ADK.Event+JSON; charset=utf-8;v="1 beta"'
    await add(messages, session.session_id, "x", payload=b"{}", payload_type=kind)
    assert (await listed(messages, session.session_id))[0].payload_type == kind


async def test_a_message_without_a_payload_has_none(sessions, messages, sql):
    session = await new_session(sessions)
    added = await add(messages, session.session_id, "plain")
    assert (added.payload, added.payload_type) == (b"", "")
    assert await sql.fetchval("SELECT payload IS NULL AND payload_type IS NULL FROM messages") is True


async def test_a_message_with_a_payload_may_have_no_content(sessions, messages):
    """An event with only a function call or a state delta has no text: the payload is the message."""
    session = await new_session(sessions)
    added = await add(messages, session.session_id, "", payload=b'{"actions":{}}', payload_type=JSON)
    assert added.content == "" and added.sequence == 1


async def test_a_message_without_content_or_payload_is_invalid(sessions, messages):
    session = await new_session(sessions)
    failed = await expect_failure(add(messages, session.session_id, ""))
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and failed.field_violations == {"content": "is required"}


async def test_a_repeated_request_id_returns_the_first_payload(sessions, messages):
    session = await new_session(sessions)
    rid = "0d3c2b1a-0000-4000-8000-000000000001"
    first = await add(messages, session.session_id, "x", payload=b'{"n":1}', payload_type=JSON, request_id=rid)
    again = await add(messages, session.session_id, "x", payload=b'{"n":2}', payload_type=JSON, request_id=rid)
    assert again.message_id == first.message_id and again.payload == b'{"n":1}'


@pytest.mark.parametrize(
    "fields,violations",
    [
        ({"payload": b"{}"}, {"payload_type": "is required with a payload"}),
        ({"payload_type": JSON}, {"payload_type": "is set only with a payload"}),
        ({"payload": b"{}", "payload_type": "json"}, {"payload_type": "must be a media type"}),
        ({"payload": b"{}", "payload_type": "application/json;"}, {"payload_type": "must be a media type"}),
        ({"payload": b"{}", "payload_type": "application/json\x00"}, {"payload_type": "must be a media type"}),
        ({"payload": b"{}", "payload_type": "a/" + "b" * 254}, {"payload_type": "must be a media type"}),
    ],
)
async def test_bad_payload_types_are_invalid_argument(sessions, messages, fields, violations):
    session = await new_session(sessions)
    failed = await expect_failure(add(messages, session.session_id, "x", **fields))
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failed.field_violations.keys() == violations.keys()
    for field, start in violations.items():
        assert failed.field_violations[field].startswith(start)


async def test_a_payload_over_the_limit_is_invalid_argument_and_one_at_it_is_stored(database_url):
    async with serving_with(database_url, limits=Limits(payload_bytes=1000)) as (_, channel):
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        messages = session_pb2_grpc.MessageServiceStub(channel)
        session = await new_session(sessions)
        failed = await expect_failure(add(messages, session.session_id, "x", payload=b"x" * 1001, payload_type=JSON))
        assert failed.code is grpc.StatusCode.INVALID_ARGUMENT
        assert failed.field_violations == {"payload": "must be at most 1000 bytes"}
        added = await add(messages, session.session_id, "x", payload=b"y" * 1000, payload_type=JSON)
        assert added.payload == b"y" * 1000
        assert (await get(sessions, session.session_id)).message_count == 1


async def test_the_default_payload_limit_is_one_mib(sessions, messages):
    session = await new_session(sessions)
    failed = await expect_failure(
        add(messages, session.session_id, "x", payload=b"x" * (1024 * 1024 + 1), payload_type=JSON)
    )
    assert failed.field_violations == {"payload": "must be at most 1048576 bytes"}


async def test_a_page_counts_payload_bytes_against_its_budget(service, sessions, messages):
    """Storage reads a page's byte budget's worth (plus one message) counting payloads, not
    page_size rows: ten messages of 900 KiB payloads and no text are not fetched whole."""
    session = await new_session(sessions)
    big = 900 * 1024
    for i in range(10):
        await add(messages, session.session_id, "", payload=bytes([i]) * big, payload_type="application/octet-stream")
    query = MessagesQuery(SessionRef(session.session_id, None), 1000, None, {}, paging.STREAM_BATCH_BYTES)
    batch = await service.db.run(storage_messages.list_messages, query)
    assert len(batch.items) == paging.STREAM_BATCH_BYTES // big + 1 and batch.more
    page = await service.db.run(storage_messages.list_messages, replace(query, byte_budget=paging.RESPONSE_BYTES))
    assert len(page.items) == paging.RESPONSE_BYTES // big + 1 and page.more
    # Through the API: every page under a default client's 4 MiB, the token goes on, all come back.
    seen, token = [], ""
    while True:
        response = await messages.ListMessages(
            pb.ListMessagesRequest(session_id=session.session_id, page_size=1000, page_token=token)
        )
        assert response.ByteSize() < 4 * 1024 * 1024
        seen += [(m.sequence, m.payload[:1], len(m.payload)) for m in response.messages]
        token = response.next_page_token
        if not token:
            break
    assert seen == [(i + 1, bytes([i]), big) for i in range(10)]
    assert [m.payload[:1] for m in await stream(messages, session.session_id)] == [bytes([i]) for i in range(10)]


# ---- event_time -------------------------------------------------------------------------------


async def test_event_time_is_stored_and_returned_to_the_microsecond(sessions, messages, sql):
    session = await new_session(sessions)
    when = datetime(2026, 5, 1, 9, 30, 15, 123457, tzinfo=timezone.utc)
    added = await add(messages, session.session_id, "x", event_time=ts(when))
    assert to_datetime(added.event_time) == when and added.event_time.nanos == 123457000
    assert [m.event_time for m in await listed(messages, session.session_id)] == [added.event_time]
    assert [m.event_time for m in await stream(messages, session.session_id)] == [added.event_time]
    assert await sql.fetchval("SELECT event_time FROM messages") == when
    assert added.create_time != added.event_time  # the server's clock is elsewhere


@pytest.mark.parametrize(
    "nanos,micros",
    [(123456499, 123456), (123456501, 123457), (123456500, 123456), (123457500, 123458), (999999999, 1_000_000)],
)
async def test_event_time_rounds_nanos_to_the_nearest_microsecond_half_to_even(sessions, messages, nanos, micros):
    """As datetime.fromtimestamp rounds a float: a client converting ADK's float timestamps gets
    the datetime it would have made itself."""
    session = await new_session(sessions)
    added = await add(messages, session.session_id, "x", event_time=timestamp_pb2.Timestamp(seconds=1_764_446_400, nanos=nanos))
    expected = datetime.fromtimestamp(1_764_446_400, timezone.utc) + timedelta(microseconds=micros)
    assert to_datetime(added.event_time) == expected


async def test_a_float_timestamp_round_trips_like_datetime_fromtimestamp(sessions, messages):
    session = await new_session(sessions)
    for value in (1764446400.123456, 1764446400.1234565, 1.5, 1764446400.999999):
        seconds, fraction = divmod(value, 1)
        sent = timestamp_pb2.Timestamp(seconds=int(seconds), nanos=int(round(fraction * 1e9)))
        added = await add(messages, session.session_id, "x", event_time=sent)
        assert to_datetime(added.event_time) == datetime.fromtimestamp(value, timezone.utc)


async def test_without_event_time_it_is_the_create_time(sessions, messages):
    session = await new_session(sessions)
    added = await add(messages, session.session_id, "x")
    assert added.HasField("event_time") and added.event_time == added.create_time


async def test_messages_stored_before_event_times_read_their_create_time(sessions, messages, sql):
    session = await new_session(sessions)
    added = await add(messages, session.session_id, "x")
    await sql.execute("UPDATE messages SET event_time = NULL")  # as the migration leaves older rows
    assert (await listed(messages, session.session_id))[0].event_time == added.create_time


@pytest.mark.parametrize(
    "seconds,nanos",
    [(0, -1), (0, 1_000_000_000), (-62135596801, 0), (253402300800, 0), (253402300799, 999999999), (2**62, 0)],
)
async def test_event_times_outside_the_range_are_invalid_argument(sessions, messages, seconds, nanos):
    session = await new_session(sessions)
    failed = await expect_failure(
        add(messages, session.session_id, "x", event_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    )
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and list(failed.field_violations) == ["event_time"]


async def test_the_first_and_last_times_of_the_range_are_kept(sessions, messages):
    session = await new_session(sessions)
    for when in (datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)):
        added = await add(messages, session.session_id, "x", event_time=ts(when))
        assert to_datetime(added.event_time) == when


# ---- the session's last event time ------------------------------------------------------------


async def test_a_session_without_messages_has_no_last_event_time(sessions):
    session = await new_session(sessions)
    assert not session.HasField("last_event_time")
    assert not (await get(sessions, session.session_id)).HasField("last_event_time")


async def test_last_event_time_is_the_event_time_of_the_last_message(sessions, messages):
    session = await new_session(sessions)
    later = datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=timezone.utc)
    earlier = datetime(2026, 5, 1, 12, 0, 0, 999999, tzinfo=timezone.utc)
    await add(messages, session.session_id, "a", event_time=ts(later))
    assert (await get(sessions, session.session_id)).last_event_time == ts(later)
    # The highest sequence decides, even when its event happened earlier (ADK stamps the session
    # with the event it appended last).
    await add(messages, session.session_id, "b", event_time=ts(earlier))
    got = await get(sessions, session.session_id)
    assert got.last_event_time == ts(earlier)
    listed_sessions = (await sessions.ListSessions(pb.ListSessionsRequest(user_id=session.user_id))).sessions
    assert [s.last_event_time for s in listed_sessions] == [ts(earlier)]
    # A message without one: the server's clock, the same instant as that message's own event_time.
    third = await add(messages, session.session_id, "c")
    assert (await get(sessions, session.session_id)).last_event_time == third.event_time == third.create_time


async def test_last_event_time_is_exact_under_concurrent_appends(sessions, messages):
    """32 concurrent appends, half with their own event times (all distinct) and half without: the
    session ends with the event time of the message that got the last sequence, to the microsecond."""
    session = await new_session(sessions)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)

    async def append(i: int) -> pb.Message:
        fields = {"event_time": ts(base + timedelta(microseconds=i * 7919))} if i % 2 else {}
        return await add(messages, session.session_id, f"m{i}", **fields)

    for _ in range(3):
        added = await asyncio.gather(*(append(i) for i in range(32)))
        last = max(added, key=lambda m: m.sequence)
        got = await get(sessions, session.session_id)
        assert got.last_event_time == last.event_time
        for message in added:
            if int(message.content[1:]) % 2 == 0:
                assert message.event_time == message.create_time
    stored = await listed(messages, session.session_id, page_size=1000)
    assert [m.sequence for m in stored] == list(range(1, 97))
    assert got.last_event_time == stored[-1].event_time


async def test_the_migration_gives_existing_sessions_and_messages_their_times(server_url):
    """Upgraded from the revision before payloads: a session with messages gets its last message's
    time as last_event_time, its messages read their create_time as event_time, and a session
    without messages stays without; rows appended by the old statement are shaped as it made them."""
    script = ScriptDirectory.from_config(migrations.alembic_config())
    (mine,) = [r for r in script.walk_revisions() if r.path.endswith("_message_payloads.py")]
    name = f"session_grpc_payloads_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url_for(server_url, name)
    try:
        await migrations.upgrade(url, mine.down_revision)
        conn = await asyncpg.connect(url)
        with_messages, without = str(uuid.uuid4()), str(uuid.uuid4())
        await conn.execute(
            "INSERT INTO sessions (id, user_id, status) VALUES ($1, 'u', 'active'), ($2, 'u', 'active')",
            with_messages, without,
        )
        for i in range(3):  # what AddMessage did before: the message's create_time is the session's activity
            await conn.execute(
                """WITH bumped AS (
                       UPDATE sessions SET message_count = message_count + 1,
                           last_activity_time = greatest(last_activity_time, clock_timestamp())
                       WHERE id = $1 RETURNING id, user_id, message_count, last_activity_time)
                   INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content,
                                         tokens_used, cost, create_time)
                   SELECT $2, id, user_id, message_count, 'user', 'chat', $3, 0, 0, last_activity_time FROM bumped""",
                with_messages, str(uuid.uuid4()), f"m{i}",
            )
        last_time = await conn.fetchval("SELECT max(create_time) FROM messages")
        await conn.close()
        await migrations.upgrade(url)
        async with serving_with(url) as (_, channel):
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            messages = session_pb2_grpc.MessageServiceStub(channel)
            assert to_datetime((await get(sessions, with_messages)).last_event_time) == last_time
            assert not (await get(sessions, without)).HasField("last_event_time")
            old = await listed(messages, with_messages)
            assert [m.event_time for m in old] == [m.create_time for m in old] and len(old) == 3
            assert all((m.payload, m.payload_type) == (b"", "") for m in old)
            added = await add(messages, with_messages, "new", payload=b"[1]", payload_type=JSON)
            assert (await get(sessions, with_messages)).last_event_time == added.event_time
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_the_payload_limit_is_a_setting():
    from session_grpc.settings import Settings, SettingsError

    assert Settings.from_env({}).limits.payload_bytes == 1024 * 1024
    assert Settings.from_env({"SESSION_MAX_PAYLOAD_BYTES": "2048"}).limits.payload_bytes == 2048
    with pytest.raises(SettingsError, match="SESSION_MAX_PAYLOAD_BYTES"):
        Settings.from_env({"SESSION_MAX_PAYLOAD_BYTES": "0"})
