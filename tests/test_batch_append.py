"""AddMessages: a batch of messages appended in one statement, all or none, with contiguous
sequences, each with its own tokens and cost, idempotent as a whole by request_id."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import grpc
import pytest

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.domain.limits import Limits
from session_grpc.storage import messages as storage

from .conftest import test_settings
from .helpers import add, expect_failure, new_session, serving, serving_with, set_status
from .test_statements import StatementCounter


def entry(content: str = "hi", role: int = pb.ROLE_USER, **fields) -> pb.NewMessage:
    return pb.NewMessage(role=role, content=content, **fields)


async def add_batch(messages, session_id: str, entries: list[pb.NewMessage], **fields) -> list[pb.Message]:
    response = await messages.AddMessages(pb.AddMessagesRequest(session_id=session_id, messages=entries, **fields))
    return list(response.messages)


async def stored(sql, session_id: str) -> list[tuple]:
    return [
        tuple(row) for row in await sql.fetch(
            "SELECT sequence, content, tokens_used, cost FROM messages WHERE session_id = $1 ORDER BY sequence",
            session_id,
        )
    ]


async def test_add_messages_appends_contiguous_sequences_in_order_each_with_its_own_tokens_and_cost(
    sessions, messages, sql
):
    session = await new_session(sessions)
    await add(messages, session.session_id, "before", tokens_used=1, cost="0.1")
    batch = [
        entry("user turn", tokens_used=12, cost="0.00015"),
        entry("tool call", pb.ROLE_ASSISTANT, message_type=pb.MESSAGE_TYPE_TOOL_CALL, tokens_used=30, cost="0.0004"),
        entry("tool result", pb.ROLE_TOOL, message_type=pb.MESSAGE_TYPE_TOOL_RESULT, tokens_used=0, cost=""),
        entry("reply", pb.ROLE_ASSISTANT, tokens_used=48, cost="0.0006"),
    ]
    added = await add_batch(messages, session.session_id, batch)
    assert [m.sequence for m in added] == [2, 3, 4, 5]
    assert [(m.content, m.role, m.tokens_used, m.cost) for m in added] == [
        ("user turn", pb.ROLE_USER, 12, "0.00015"),
        ("tool call", pb.ROLE_ASSISTANT, 30, "0.0004"),
        ("tool result", pb.ROLE_TOOL, 0, "0"),
        ("reply", pb.ROLE_ASSISTANT, 48, "0.0006"),
    ]
    assert added[1].message_type == pb.MESSAGE_TYPE_TOOL_CALL and added[0].message_type == pb.MESSAGE_TYPE_CHAT
    assert len({m.message_id for m in added}) == 4
    assert len({m.create_time.ToDatetime() for m in added}) == 1, "one statement, one time"
    assert await stored(sql, session.session_id) == [
        (1, "before", 1, Decimal("0.1")), (2, "user turn", 12, Decimal("0.00015")), (3, "tool call", 30, Decimal("0.0004")),
        (4, "tool result", 0, Decimal("0")), (5, "reply", 48, Decimal("0.0006")),
    ]
    now = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert (now.message_count, now.total_tokens, now.total_cost) == (5, 91, "0.10115")
    assert now.last_activity_time == added[-1].create_time
    after = await add(messages, session.session_id, "after")
    assert after.sequence == 6


async def test_add_messages_is_one_statement_for_a_batch_of_ten(database_url):
    """One database round trip, whatever the batch's size (and AddMessage sends the same statement,
    on the ordinary path: with group commit it sends the group's, tests/test_group_commit.py)."""
    async with serving(test_settings(database_url, health_interval=3600.0, group_commit=False)) as (server, channel):
        sessions, messages = session_pb2_grpc.SessionServiceStub(channel), session_pb2_grpc.MessageServiceStub(channel)
        session = await new_session(sessions)
        counter = StatementCounter(server)
        seen = []
        for call in (
            add_batch(messages, session.session_id, [entry(str(n)) for n in range(10)]),
            add_batch(messages, session.session_id, [entry(str(n)) for n in range(10)], request_id=str(uuid.uuid4())),
            add(messages, session.session_id),
        ):
            await asyncio.sleep(0.01)  # the driver reports statements from the event loop
            counter.statements.clear()
            await call
            await asyncio.sleep(0.01)
            seen.append(list(counter.statements))
    assert [len(statements) for statements in seen] == [1, 1, 1], seen
    assert seen[0] == [storage.ADD_MESSAGES] and seen[2] == [storage.ADD_MESSAGES], "one insert path for both RPCs"
    assert seen[1] == [storage.ADD_MESSAGES_ONCE]


async def test_add_message_is_a_batch_of_one_sharing_the_request_id_space(sessions, messages, sql):
    session = await new_session(sessions)
    rid = str(uuid.uuid4())
    single = await add(messages, session.session_id, "once", request_id=rid)
    repeated = await add_batch(messages, session.session_id, [entry("once")], request_id=rid)
    assert [m.message_id for m in repeated] == [single.message_id]
    assert await sql.fetchval("SELECT count(*) FROM messages") == 1


async def test_add_messages_with_a_bad_entry_stores_nothing_and_names_the_entry(sessions, messages, sql):
    session = await new_session(sessions)
    batch = [entry("fine"), entry(""), entry("x", role=pb.ROLE_UNSPECIFIED), entry("y", cost="-1"),
             entry("z", tokens_used=-5), entry("w", message_type=77)]
    failure = await expect_failure(messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, messages=batch)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"messages[1].content", "messages[2].role", "messages[3].cost", "messages[4].tokens_used",
            "messages[5].message_type"} <= failure.field_violations.keys(), failure.field_violations
    assert "messages[0].content" not in failure.field_violations
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0
    assert await sql.fetchval("SELECT message_count FROM sessions") == 0


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"session_id": "nope"}, "session_id"),
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"expected_last_sequence": -1}, "expected_last_sequence"),
        ({"expected_etag": "e" * 500}, "expected_etag"),
    ],
)
async def test_add_messages_bad_request_fields_are_invalid_argument(sessions, messages, sql, fields, field):
    session = await new_session(sessions)
    request = pb.AddMessagesRequest(session_id=session.session_id, messages=[entry()])
    for name, value in fields.items():
        setattr(request, name, value)
    failure = await expect_failure(messages.AddMessages(request))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and field in failure.field_violations, failure
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0


async def test_add_messages_without_messages_is_invalid_argument(sessions, messages):
    session = await new_session(sessions)
    failure = await expect_failure(messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "messages" in failure.field_violations


async def test_add_messages_takes_at_most_session_max_batch_messages(database_url, sql):
    async with serving_with(database_url, limits=Limits(batch_messages=3)) as (_, channel):
        sessions, messages = session_pb2_grpc.SessionServiceStub(channel), session_pb2_grpc.MessageServiceStub(channel)
        session = await new_session(sessions)
        assert len(await add_batch(messages, session.session_id, [entry()] * 3)) == 3
        failure = await expect_failure(
            messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, messages=[entry()] * 4))
        )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 3" in failure.field_violations["messages"]
    assert await sql.fetchval("SELECT count(*) FROM messages") == 3


async def test_default_batch_limit_is_100(sessions, messages, sql):
    session = await new_session(sessions)
    assert len(await add_batch(messages, session.session_id, [entry(str(n)) for n in range(100)])) == 100
    failure = await expect_failure(
        messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, messages=[entry()] * 101))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert await sql.fetchval("SELECT count(*) FROM messages") == 100


def test_a_batch_limit_whose_answer_could_pass_4_mib_is_refused():
    """The answer carries every message of the batch back: it must fit a default client's 4 MiB."""
    assert Limits().largest_batch_response_bytes <= 4 * 1024 * 1024
    with pytest.raises(ValueError, match="SESSION_MAX_BATCH_MESSAGES"):
        Limits(batch_messages=1000)


async def test_add_messages_to_a_session_that_is_not_active_stores_nothing(sessions, messages, sql):
    session = await new_session(sessions)
    await set_status(sessions, session.session_id, pb.SESSION_STATUS_COMPLETED)
    failure = await expect_failure(
        messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, messages=[entry(), entry()]))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_NOT_ACTIVE")
    missing = await expect_failure(
        messages.AddMessages(pb.AddMessagesRequest(session_id=str(uuid.uuid4()), messages=[entry()]))
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0


async def test_add_messages_conditions_hold_for_the_batch_as_a_whole(sessions, messages, sql):
    session = await new_session(sessions)
    await add(messages, session.session_id)
    stale = await expect_failure(messages.AddMessages(
        pb.AddMessagesRequest(session_id=session.session_id, messages=[entry(), entry()], expected_last_sequence=0)
    ))
    assert (stale.code, stale.reason, stale.error_metadata) == (
        grpc.StatusCode.ABORTED, "STALE_SESSION", {"lastSequence": "1"}
    )
    etag = await expect_failure(messages.AddMessages(
        pb.AddMessagesRequest(session_id=session.session_id, messages=[entry()], expected_etag='"1-99"')
    ))
    assert (etag.code, etag.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    landed = await add_batch(
        messages, session.session_id, [entry(), entry()], expected_last_sequence=1, expected_etag=session.etag
    )
    assert [m.sequence for m in landed] == [2, 3]
    assert await sql.fetchval("SELECT count(*) FROM messages") == 3


async def test_add_messages_repeated_request_id_returns_the_first_batch_and_counts_once(sessions, messages, sql):
    session = await new_session(sessions)
    rid = str(uuid.uuid4())
    first = await add_batch(messages, session.session_id, [entry("a", tokens_used=1, cost="0.5"), entry("b")], request_id=rid)
    await add(messages, session.session_id, "between")
    await set_status(sessions, session.session_id, pb.SESSION_STATUS_ENDED)
    again = await add_batch(messages, session.session_id, [entry("other"), entry("batch"), entry("!")], request_id=rid)
    assert again == first, "the first call's messages, even after the session ended"
    row = await sql.fetchrow("SELECT message_count, total_tokens, total_cost FROM sessions")
    assert tuple(row) == (3, 1, Decimal("0.5"))


async def test_concurrent_add_messages_with_one_request_id_store_one_batch(sessions, messages, sql):
    session = await new_session(sessions)
    rid = str(uuid.uuid4())
    results = await asyncio.gather(*(
        add_batch(messages, session.session_id, [entry("a"), entry("b"), entry("c")], request_id=rid) for _ in range(10)
    ))
    assert all(result == results[0] for result in results)
    assert [m.sequence for m in results[0]] == [1, 2, 3]
    assert await sql.fetchval("SELECT count(*) FROM messages") == 3
    assert await sql.fetchval("SELECT message_count FROM sessions") == 3


async def test_concurrent_batches_and_single_appends_never_interleave_and_keep_totals_exact(sessions, messages, sql):
    session = await new_session(sessions)
    sid = session.session_id
    calls = []
    for n in range(20):
        calls.append(add_batch(messages, sid, [entry(f"b{n}-{i}", tokens_used=i + 1, cost="0.001") for i in range(5)]))
        calls.append(add(messages, sid, f"s{n}", tokens_used=7, cost="0.01"))
    results = await asyncio.gather(*calls)
    for result in results[::2]:
        sequences = [m.sequence for m in result]
        assert sequences == list(range(sequences[0], sequences[0] + 5)), "a batch's sequences are contiguous"
    rows = await sql.fetch("SELECT sequence, tokens_used, cost FROM messages WHERE session_id = $1 ORDER BY sequence", sid)
    assert [row["sequence"] for row in rows] == list(range(1, 121))
    totals = await sql.fetchrow("SELECT message_count, total_tokens, total_cost FROM sessions WHERE id = $1", sid)
    assert tuple(totals) == (120, sum(r["tokens_used"] for r in rows), sum(r["cost"] for r in rows))
    assert tuple(totals) == (120, 20 * 15 + 20 * 7, Decimal("0.3"))


def test_the_batch_and_fork_limits_are_settings():
    from session_grpc.settings import Settings

    limits = Settings.from_env({"SESSION_MAX_BATCH_MESSAGES": "7", "SESSION_MAX_FORK_MESSAGES": "9"}).limits
    assert (limits.batch_messages, limits.fork_messages) == (7, 9)
    assert (Settings.from_env({}).limits.batch_messages, Settings.from_env({}).limits.fork_messages) == (100, 100_000)
    with pytest.raises(ValueError, match="SESSION_MAX_BATCH_MESSAGES"):
        Settings.from_env({"SESSION_MAX_BATCH_MESSAGES": "5000"})


async def test_each_message_of_a_batch_keeps_its_payload_and_event_time_and_the_session_takes_the_last(
    sessions, messages
):
    from google.protobuf import timestamp_pb2

    session = await new_session(sessions)
    early = timestamp_pb2.Timestamp(seconds=1_600_000_000, nanos=123_456_000)
    late = timestamp_pb2.Timestamp(seconds=1_500_000_000, nanos=7_000)
    added = await add_batch(messages, session.session_id, [
        entry("", payload=b'{"big":9223372036854775807}', payload_type="application/json", event_time=early),
        entry("no event time"),
        entry("last", event_time=late),
    ])
    assert (added[0].payload, added[0].payload_type, added[0].content) == (
        b'{"big":9223372036854775807}', "application/json", ""
    )
    assert added[0].event_time == early and added[2].event_time == late
    assert added[1].event_time == added[1].create_time
    now = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert now.last_event_time == late, "the highest sequence's event time, though an earlier one is later"
    listed = (await messages.ListMessages(pb.ListMessagesRequest(session_id=session.session_id))).messages
    assert list(listed) == added


async def test_a_bad_payload_of_a_batch_entry_is_named_and_nothing_is_stored(sessions, messages, sql):
    from google.protobuf import timestamp_pb2

    session = await new_session(sessions)
    batch = [entry("x", payload=b"{}"), entry("y", payload_type="application/json"),
             entry("z", event_time=timestamp_pb2.Timestamp(seconds=-10**13))]
    failure = await expect_failure(messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, messages=batch)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"messages[0].payload_type", "messages[1].payload_type", "messages[2].event_time"} <= failure.field_violations.keys()
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0
