"""ForkSession: a new session with a copy of the source's first messages, its state and its memory,
lineage on the session, totals that are the exact sums over what it copied, in one statement."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.domain.limits import Limits
from session_grpc.storage import history

from .conftest import test_settings
from .helpers import add, expect_failure, new_session, serving, serving_with, set_status
from .test_statements import StatementCounter


def struct(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def fork(sessions, session_id: str, **fields) -> pb.Session:
    return (await sessions.ForkSession(pb.ForkSessionRequest(session_id=session_id, **fields))).session


async def source_with_history(sessions, messages, memories, count: int = 5) -> pb.Session:
    session = await new_session(
        sessions, "alice", app_name="travel", title="Trip", conversation_data=struct({"step": 3, "city": "Lisbon"}),
        metadata=struct({"channel": "web"}),
    )
    for n in range(1, count + 1):
        event = {"payload": f'{{"n":{n}}}'.encode(), "payload_type": "application/json"} if n % 2 else {}
        if n != 2:  # message 2 has no event time of its own: its create_time is its event time
            event["event_time"] = timestamp_pb2.Timestamp(seconds=1_700_000_000 + n, nanos=n * 1000)
        await add(messages, session.session_id, f"m{n}", role=pb.ROLE_USER if n % 2 else pb.ROLE_ASSISTANT,
                  tokens_used=n * 10, cost=f"0.000{n}5", metadata=struct({"n": n}), **event)
    await memories.CreateMemory(pb.CreateMemoryRequest(
        session_id=session.session_id, conversation_summary="planning", facts=["likes sun"],
        preferences=struct({"seat": "window"}),
    ))
    return session


async def message_rows(sql, session_id: str) -> list[tuple]:
    rows = await sql.fetch(
        """SELECT sequence, role, message_type, content, tokens_used, cost, metadata, create_time, user_id, payload,
                  payload_type, event_time
           FROM messages WHERE session_id = $1 ORDER BY sequence""",
        session_id,
    )
    return [tuple(row) for row in rows]


async def assert_totals_are_the_sums_of_its_messages(sql, session_id: str) -> None:
    row = await sql.fetchrow(
        """SELECT s.message_count, s.total_tokens, s.total_cost, count(m.id) AS n,
                  coalesce(sum(m.tokens_used), 0) AS tokens, coalesce(sum(m.cost), 0) AS cost
           FROM sessions s LEFT JOIN messages m ON m.session_id = s.id WHERE s.id = $1 GROUP BY s.id""",
        session_id,
    )
    assert (row["message_count"], row["total_tokens"], row["total_cost"]) == (row["n"], row["tokens"], row["cost"]), row


async def test_fork_copies_every_message_state_and_memory_into_a_new_active_session_with_its_lineage(
    sessions, messages, memories, sql
):
    source = await source_with_history(sessions, messages, memories)
    await set_status(sessions, source.session_id, pb.SESSION_STATUS_COMPLETED)
    source_now = (await sessions.GetSession(pb.GetSessionRequest(session_id=source.session_id))).session
    forked = await fork(sessions, source.session_id)
    assert forked.session_id != source.session_id
    assert (forked.forked_from_session_id, forked.forked_at_sequence) == (source.session_id, 5)
    assert forked.status == pb.SESSION_STATUS_ACTIVE, "a finished conversation can go on in its fork"
    assert (forked.user_id, forked.app_name, forked.title) == ("alice", "travel", "Trip")
    assert forked.conversation_data == source.conversation_data and forked.metadata == source.metadata
    assert (forked.message_count, forked.total_tokens, forked.total_cost) == (
        source_now.message_count, source_now.total_tokens, source_now.total_cost
    )
    assert await message_rows(sql, forked.session_id) == await message_rows(sql, source.session_id)
    memory = (await memories.GetMemory(pb.GetMemoryRequest(session_id=forked.session_id))).memory
    assert (memory.conversation_summary, list(memory.facts), dict(memory.preferences)) == (
        "planning", ["likes sun"], {"seat": "window"}
    )
    assert memory.user_id == "alice"
    assert (await sessions.GetSession(pb.GetSessionRequest(session_id=source.session_id))).session == source_now, \
        "the source is left as it was"


async def test_fork_at_a_sequence_copies_messages_up_to_it_and_totals_are_their_sums(sessions, messages, memories, sql):
    source = await source_with_history(sessions, messages, memories)
    forked = await fork(sessions, source.session_id, last_sequence=3)
    assert forked.forked_at_sequence == 3
    assert (forked.message_count, forked.total_tokens, Decimal(forked.total_cost)) == (
        3, 60, Decimal("0.00015") + Decimal("0.00025") + Decimal("0.00035")
    )
    assert await message_rows(sql, forked.session_id) == (await message_rows(sql, source.session_id))[:3]
    await assert_totals_are_the_sums_of_its_messages(sql, forked.session_id)
    following = await add(messages, forked.session_id, "another way")
    assert following.sequence == 4
    assert following.create_time.ToDatetime() >= (await message_rows(sql, source.session_id))[-1][7].replace(tzinfo=None)
    source_now = (await sessions.GetSession(pb.GetSessionRequest(session_id=source.session_id))).session
    assert source_now.message_count == 5, "the fork's messages are its own"


async def test_fork_at_0_copies_no_message_and_past_the_end_copies_all(sessions, messages, memories):
    source = await source_with_history(sessions, messages, memories, 3)
    empty = await fork(sessions, source.session_id, last_sequence=0)
    assert (empty.message_count, empty.total_tokens, empty.total_cost, empty.forked_at_sequence) == (0, 0, "0", 0)
    assert empty.forked_from_session_id == source.session_id
    whole = await fork(sessions, source.session_id, last_sequence=1000)
    assert (whole.message_count, whole.forked_at_sequence) == (3, 3)


async def test_a_session_created_normally_has_no_lineage(sessions):
    session = await new_session(sessions)
    assert (session.forked_from_session_id, session.forked_at_sequence) == ("", 0)


async def test_rewinding_or_deleting_the_fork_or_the_source_leaves_the_other_alone(sessions, messages, memories, sql):
    source = await source_with_history(sessions, messages, memories)
    forked = await fork(sessions, source.session_id)
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=forked.session_id, last_sequence=1))
    assert await sql.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", source.session_id) == 5
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=source.session_id))
    kept = (await sessions.GetSession(pb.GetSessionRequest(session_id=forked.session_id))).session
    assert (kept.message_count, kept.forked_from_session_id) == (1, source.session_id), "lineage outlives the source"
    await assert_totals_are_the_sums_of_its_messages(sql, forked.session_id)


async def test_fork_with_a_request_id_forks_once(sessions, messages, memories, sql):
    source = await source_with_history(sessions, messages, memories, 2)
    rid = str(uuid.uuid4())
    first = await fork(sessions, source.session_id, request_id=rid)
    await add(messages, source.session_id, "later")
    again = await fork(sessions, source.session_id, request_id=rid, last_sequence=1)
    assert again.session_id == first.session_id and again.message_count == 2
    results = await asyncio.gather(*(fork(sessions, source.session_id, request_id=str(uuid.uuid4())) for _ in range(3)))
    assert len({r.session_id for r in results}) == 3
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 5


async def test_concurrent_forks_with_one_request_id_make_one_fork(sessions, messages, memories, sql):
    source = await source_with_history(sessions, messages, memories, 3)
    rid = str(uuid.uuid4())
    results = await asyncio.gather(*(fork(sessions, source.session_id, request_id=rid) for _ in range(8)))
    assert len({r.session_id for r in results}) == 1
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 2
    assert await sql.fetchval("SELECT count(*) FROM messages") == 6
    assert await sql.fetchval("SELECT count(*) FROM memories") == 2


async def test_fork_under_a_client_chosen_id_and_already_exists_when_taken(sessions, messages, memories, sql):
    source = await source_with_history(sessions, messages, memories, 2)
    chosen = str(uuid.uuid4()).upper()
    forked = await fork(sessions, source.session_id, fork_session_id=chosen)
    assert forked.session_id == chosen.lower()
    taken = await expect_failure(sessions.ForkSession(
        pb.ForkSessionRequest(session_id=source.session_id, fork_session_id=source.session_id)
    ))
    assert (taken.code, taken.resource_name) == (grpc.StatusCode.ALREADY_EXISTS, source.session_id)
    assert await sql.fetchval("SELECT count(*) FROM messages") == 4


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"session_id": "nope"}, "session_id"),
        ({"session_id": ""}, "session_id"),
        ({"last_sequence": -1}, "last_sequence"),
        ({"request_id": "x"}, "request_id"),
        ({"fork_session_id": "not-a-uuid"}, "fork_session_id"),
    ],
)
async def test_fork_bad_input_is_invalid_argument_and_writes_nothing(sessions, messages, memories, sql, fields, field):
    source = await source_with_history(sessions, messages, memories, 1)
    request = pb.ForkSessionRequest(session_id=source.session_id)
    for name, value in fields.items():
        setattr(request, name, value)
    failure = await expect_failure(sessions.ForkSession(request))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and field in failure.field_violations, failure
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 1


async def test_fork_of_a_missing_session_is_not_found(sessions):
    failure = await expect_failure(sessions.ForkSession(pb.ForkSessionRequest(session_id=str(uuid.uuid4()))))
    assert (failure.code, failure.resource_type) == (grpc.StatusCode.NOT_FOUND, "session")


async def test_a_fork_past_session_max_fork_messages_is_failed_precondition_and_writes_nothing(database_url, sql):
    async with serving_with(database_url, limits=Limits(fork_messages=3)) as (_, channel):
        sessions, messages = session_pb2_grpc.SessionServiceStub(channel), session_pb2_grpc.MessageServiceStub(channel)
        source = await new_session(sessions)
        for _ in range(4):
            await add(messages, source.session_id)
        failure = await expect_failure(sessions.ForkSession(pb.ForkSessionRequest(session_id=source.session_id)))
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FORK_TOO_LONG")
        assert failure.error_metadata == {"messageCount": "4", "maxMessages": "3"}
        assert await sql.fetchval("SELECT count(*) FROM sessions") == 1
        at_3 = await fork(sessions, source.session_id, last_sequence=3)
        assert at_3.message_count == 3


async def test_forking_a_10000_message_session_is_one_statement_with_exact_totals(database_url, sql):
    async with serving(test_settings(database_url, health_interval=3600.0)) as (server, channel):
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        source = await new_session(sessions, "bulk")
        await sql.execute(
            """INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost,
                                     create_time)
               SELECT gen_random_uuid(), $1, 'bulk', n, 'user', 'chat', 'message ' || n, n % 97, (n % 13) * 0.000001,
                      now() + n * interval '1 microsecond'
               FROM generate_series(1, 10000) n""",
            source.session_id,
        )
        await sql.execute(
            """UPDATE sessions SET message_count = 10000, total_tokens = (SELECT sum(tokens_used) FROM messages),
                      total_cost = (SELECT sum(cost) FROM messages) WHERE id = $1""",
            source.session_id,
        )
        counter = StatementCounter(server)
        await asyncio.sleep(0.01)
        counter.statements.clear()
        forked = await fork(sessions, source.session_id, last_sequence=9999)
        await asyncio.sleep(0.01)
    assert counter.statements == [history.FORK_SESSION]
    assert (forked.message_count, forked.forked_at_sequence) == (9999, 9999)
    await assert_totals_are_the_sums_of_its_messages(sql, forked.session_id)
    expected = await sql.fetchrow(
        "SELECT sum(tokens_used) AS t, sum(cost) AS c FROM messages WHERE session_id = $1 AND sequence <= 9999",
        source.session_id,
    )
    assert (forked.total_tokens, Decimal(forked.total_cost)) == (expected["t"], expected["c"])


async def test_a_fork_taken_while_messages_are_appended_has_totals_equal_to_what_it_copied(
    sessions, messages, memories, sql
):
    source = await source_with_history(sessions, messages, memories, 1)
    sid = source.session_id

    async def appends() -> None:
        for n in range(60):
            await add(messages, sid, f"x{n}", tokens_used=n, cost="0.0001")

    async def forks() -> list[pb.Session]:
        made = []
        for _ in range(15):
            made.append(await fork(sessions, sid))
            await asyncio.sleep(0.005)
        return made

    _, made = await asyncio.gather(appends(), forks())
    for forked in made:
        await assert_totals_are_the_sums_of_its_messages(sql, forked.session_id)
        assert forked.forked_at_sequence == forked.message_count
        last = await sql.fetchval("SELECT max(sequence) FROM messages WHERE session_id = $1", forked.session_id)
        assert last == forked.message_count


async def test_the_fork_keeps_payloads_and_event_times_and_its_last_event_time_is_its_last_messages(
    sessions, messages, memories, sql
):
    source = await source_with_history(sessions, messages, memories)
    at_3 = await fork(sessions, source.session_id, last_sequence=3)
    at_2 = await fork(sessions, source.session_id, last_sequence=2)
    at_0 = await fork(sessions, source.session_id, last_sequence=0)
    copied = (await messages.ListMessages(pb.ListMessagesRequest(session_id=at_3.session_id))).messages
    original = (await messages.ListMessages(pb.ListMessagesRequest(session_id=source.session_id))).messages
    assert [(m.payload, m.payload_type, m.event_time) for m in copied] == [
        (m.payload, m.payload_type, m.event_time) for m in original[:3]
    ]
    assert copied[0].payload == b'{"n":1}' and copied[0].payload_type == "application/json"
    assert at_3.last_event_time == original[2].event_time == timestamp_pb2.Timestamp(seconds=1_700_000_003, nanos=3000)
    assert at_2.last_event_time == original[1].event_time == original[1].create_time
    assert not at_0.HasField("last_event_time"), "no messages, no last event"
