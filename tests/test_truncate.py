"""TruncateSession (rewind): the messages after a sequence go, the totals drop by exactly theirs,
the etag changes, a request_id makes it happen once, and an AddMessage racing it lands either
before it (and is removed) or after it (as the new last sequence + 1), never in between."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb

from .helpers import add, expect_failure, new_session, set_status


async def rewind(sessions, session_id: str, last_sequence: int, **fields) -> pb.TruncateSessionResponse:
    return await sessions.TruncateSession(
        pb.TruncateSessionRequest(session_id=session_id, last_sequence=last_sequence, **fields)
    )


async def filled(sessions, messages, count: int = 5) -> pb.Session:
    """A session with `count` messages; message n used n tokens and cost n/1000."""
    session = await new_session(sessions)
    for n in range(1, count + 1):
        await add(messages, session.session_id, f"m{n}", tokens_used=n, cost=f"0.00{n}")
    return session


async def assert_totals_are_the_sums_of_its_messages(sql, session_id: str) -> None:
    row = await sql.fetchrow(
        """SELECT s.message_count, s.total_tokens, s.total_cost, count(m.id) AS n,
                  coalesce(sum(m.tokens_used), 0) AS tokens, coalesce(sum(m.cost), 0) AS cost,
                  coalesce(max(m.sequence), 0) AS last
           FROM sessions s LEFT JOIN messages m ON m.session_id = s.id WHERE s.id = $1
           GROUP BY s.id""",
        session_id,
    )
    assert (row["message_count"], row["total_tokens"], row["total_cost"]) == (row["n"], row["tokens"], row["cost"]), row
    assert row["last"] == row["n"], "sequences stay gapless from 1"


async def test_truncate_removes_the_messages_after_the_sequence_and_their_totals_exactly(sessions, messages, sql):
    session = await filled(sessions, messages)
    response = await rewind(sessions, session.session_id, 2)
    assert response.removed_message_count == 3
    after = response.session
    assert (after.message_count, after.total_tokens, after.total_cost) == (2, 3, "0.003")
    contents = [r["content"] for r in await sql.fetch("SELECT content FROM messages ORDER BY sequence")]
    assert contents == ["m1", "m2"]
    await assert_totals_are_the_sums_of_its_messages(sql, session.session_id)
    assert (await add(messages, session.session_id, "next")).sequence == 3


async def test_truncate_changes_the_etag_so_an_append_conditional_on_the_old_one_is_refused(sessions, messages):
    session = await filled(sessions, messages, 3)
    before = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    after = (await rewind(sessions, session.session_id, 1)).session
    assert after.etag != before.etag
    stale = await expect_failure(
        messages.AddMessage(pb.AddMessageRequest(
            session_id=session.session_id, role=pb.ROLE_USER, content="x", expected_etag=before.etag
        ))
    )
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")


async def test_truncate_to_0_removes_every_message(sessions, messages, sql):
    session = await filled(sessions, messages, 4)
    response = await rewind(sessions, session.session_id, 0)
    assert response.removed_message_count == 4
    assert (response.session.message_count, response.session.total_tokens, response.session.total_cost) == (0, 0, "0")
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0


@pytest.mark.parametrize("last_sequence", [3, 4, 1000])
async def test_truncate_at_or_past_the_last_message_changes_nothing(sessions, messages, last_sequence):
    session = await filled(sessions, messages, 3)
    before = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    response = await rewind(sessions, session.session_id, last_sequence)
    assert response.removed_message_count == 0
    assert response.session == before, "nothing removed: etag and totals as they were"


async def test_truncate_without_last_sequence_is_invalid_argument_and_removes_nothing(sessions, messages, sql):
    """proto3 would read a forgotten field as 0 (remove everything): it must be set explicitly."""
    session = await filled(sessions, messages, 2)
    failure = await expect_failure(sessions.TruncateSession(pb.TruncateSessionRequest(session_id=session.session_id)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "last_sequence" in failure.field_violations
    assert await sql.fetchval("SELECT count(*) FROM messages") == 2


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"session_id": "nope", "last_sequence": 0}, "session_id"),
        ({"session_id": "", "last_sequence": 0}, "session_id"),
        ({"last_sequence": -1}, "last_sequence"),
        ({"last_sequence": 0, "request_id": "x"}, "request_id"),
    ],
)
async def test_truncate_bad_input_is_invalid_argument(sessions, messages, sql, fields, field):
    session = await filled(sessions, messages, 2)
    request = pb.TruncateSessionRequest(session_id=session.session_id)
    for name, value in fields.items():
        setattr(request, name, value)
    failure = await expect_failure(sessions.TruncateSession(request))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and field in failure.field_violations, failure
    assert await sql.fetchval("SELECT count(*) FROM messages") == 2


async def test_truncate_of_a_missing_session_is_not_found(sessions):
    failure = await expect_failure(rewind(sessions, str(uuid.uuid4()), 0))
    assert (failure.code, failure.resource_type) == (grpc.StatusCode.NOT_FOUND, "session")


@pytest.mark.parametrize("status", [pb.SESSION_STATUS_COMPLETED, pb.SESSION_STATUS_ENDED, pb.SESSION_STATUS_ARCHIVED])
async def test_truncate_of_a_session_that_is_not_active_is_failed_precondition(sessions, messages, sql, status):
    session = await filled(sessions, messages, 2)
    await set_status(sessions, session.session_id, status)
    failure = await expect_failure(rewind(sessions, session.session_id, 0))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_NOT_ACTIVE")
    assert await sql.fetchval("SELECT count(*) FROM messages") == 2


async def test_a_repeated_request_id_removes_nothing_more_not_even_messages_added_since(sessions, messages, sql):
    session = await filled(sessions, messages, 4)
    rid = str(uuid.uuid4())
    first = await rewind(sessions, session.session_id, 1, request_id=rid)
    assert first.removed_message_count == 3
    await add(messages, session.session_id, "after the rewind")
    again = await rewind(sessions, session.session_id, 1, request_id=rid)
    assert again.removed_message_count == 3, "the first call's count"
    assert again.session.message_count == 2, "the message added since is still there"
    assert [r["content"] for r in await sql.fetch("SELECT content FROM messages ORDER BY sequence")] == [
        "m1", "after the rewind"
    ]
    await set_status(sessions, session.session_id, pb.SESSION_STATUS_ENDED)
    ended = await rewind(sessions, session.session_id, 0, request_id=rid)
    assert ended.removed_message_count == 3 and ended.session.message_count == 2, "also after the session ended"
    other = await expect_failure(rewind(sessions, session.session_id, 0, request_id=str(uuid.uuid4())))
    assert other.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_concurrent_rewinds_with_one_request_id_rewind_once(sessions, messages, sql):
    session = await filled(sessions, messages, 6)
    rid = str(uuid.uuid4())
    results = await asyncio.gather(*(rewind(sessions, session.session_id, 2, request_id=rid) for _ in range(8)))
    assert {r.removed_message_count for r in results} == {4}
    assert await sql.fetchval("SELECT count(*) FROM session_rewinds") == 1
    await assert_totals_are_the_sums_of_its_messages(sql, session.session_id)


async def test_rewinds_racing_appends_leave_gapless_sequences_and_exact_totals(sessions, messages, sql):
    """Many appends and rewinds on one session at once. An append either lands before a rewind
    (and may be removed by it) or after it; so afterwards every surviving message is exactly where
    its append said it was, the count is what was appended minus what the rewinds say they removed,
    and the totals are the sums over the messages that are left."""
    session = await new_session(sessions)
    sid = session.session_id
    rng = random.Random(12)

    async def append(n: int) -> pb.Message:
        await asyncio.sleep(rng.random() * 0.05)
        return await add(messages, sid, f"a{n}", tokens_used=n, cost=f"0.0{n % 10}1")

    async def truncate(n: int) -> pb.TruncateSessionResponse:
        await asyncio.sleep(rng.random() * 0.05)
        return await rewind(sessions, sid, rng.randrange(0, 30))

    appends = [append(n) for n in range(200)]
    rewinds = [truncate(n) for n in range(25)]
    results = await asyncio.gather(*appends, *rewinds)
    added, rewound = results[:200], results[200:]
    removed = sum(r.removed_message_count for r in rewound)
    assert removed > 0, "the race should have removed something"
    left = await sql.fetch("SELECT id::text, sequence, content FROM messages WHERE session_id = $1 ORDER BY sequence", sid)
    assert [r["sequence"] for r in left] == list(range(1, len(left) + 1)), "gapless"
    assert len(left) == len(added) - removed, "every removed message was counted off, no more, no less"
    acknowledged = {m.message_id: (m.sequence, m.content) for m in added}
    for row in left:
        assert acknowledged[row["id"]] == (row["sequence"], row["content"]), "a survivor sits where its append put it"
    for response in rewound:
        assert response.session.message_count <= 30, "a rewind's answer holds nothing past its sequence"
    await assert_totals_are_the_sums_of_its_messages(sql, sid)
    total_tokens = await sql.fetchval("SELECT total_tokens FROM sessions WHERE id = $1", sid)
    assert total_tokens == sum(int(r["content"][1:]) for r in left)


async def test_an_append_waiting_behind_a_rewind_lands_right_after_it(sessions, messages, sql):
    """Hold the session's row lock the way a rewind does; an append queued behind it (and the
    rewind queued with it) decide their order by the lock alone."""
    session = await filled(sessions, messages, 5)
    sid = session.session_id
    async with sql.transaction():
        await sql.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", sid)
        truncating = asyncio.create_task(rewind(sessions, sid, 2))
        await asyncio.sleep(0.3)
        appending = asyncio.create_task(add(messages, sid, "queued"))
        await asyncio.sleep(0.3)
        assert not truncating.done() and not appending.done()
    truncated, appended = await truncating, await appending
    if appended.sequence == 3:  # the rewind went first, the append after it
        assert truncated.removed_message_count == 3
    else:  # the append went first and the rewind removed it
        assert appended.sequence == 6 and truncated.removed_message_count == 4
    await assert_totals_are_the_sums_of_its_messages(sql, sid)
    assert Decimal(truncated.session.total_cost) == Decimal("0.003")


async def test_after_a_rewind_the_last_event_time_is_the_remaining_last_messages(sessions, messages):
    session = await new_session(sessions)
    for n in range(1, 5):
        await add(messages, session.session_id, f"m{n}",
                  event_time=timestamp_pb2.Timestamp(seconds=1_800_000_000 - n * 100, nanos=n))
    after = (await rewind(sessions, session.session_id, 2)).session
    assert after.last_event_time == timestamp_pb2.Timestamp(seconds=1_800_000_000 - 200)
    emptied = (await rewind(sessions, session.session_id, 0)).session
    assert not emptied.HasField("last_event_time")


async def test_an_append_retried_after_a_rewind_removed_it_is_refused_not_appended_again(sessions, messages, sql):
    """The retry must not undo the rewind behind the user's back."""
    session = await filled(sessions, messages, 2)
    rid, batch_rid = str(uuid.uuid4()), str(uuid.uuid4())
    await add(messages, session.session_id, "removed later", request_id=rid)
    await messages.AddMessages(pb.AddMessagesRequest(
        session_id=session.session_id, request_id=batch_rid,
        messages=[pb.NewMessage(role=pb.ROLE_USER, content=c) for c in ("b1", "b2")],
    ))
    await rewind(sessions, session.session_id, 2)
    for call in (
        add(messages, session.session_id, "removed later", request_id=rid),
        messages.AddMessages(pb.AddMessagesRequest(
            session_id=session.session_id, request_id=batch_rid,
            messages=[pb.NewMessage(role=pb.ROLE_USER, content=c) for c in ("b1", "b2")],
        )),
    ):
        failure = await expect_failure(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_REWOUND")
    assert await sql.fetchval("SELECT count(*) FROM messages") == 2
    await assert_totals_are_the_sums_of_its_messages(sql, session.session_id)
    again = await add(messages, session.session_id, "removed later", request_id=str(uuid.uuid4()))
    assert again.sequence == 3, "a new request_id appends it anew"


async def test_a_batch_partly_removed_by_a_rewind_returns_what_is_left_of_it(sessions, messages):
    session = await new_session(sessions)
    rid = str(uuid.uuid4())
    entries = [pb.NewMessage(role=pb.ROLE_USER, content=c) for c in ("a", "b", "c")]
    first = await messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, request_id=rid, messages=entries))
    await rewind(sessions, session.session_id, 1)
    again = await messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, request_id=rid, messages=entries))
    assert list(again.messages) == [first.messages[0]]
    now = (await sessions.GetSession(pb.GetSessionRequest(session_id=session.session_id))).session
    assert now.message_count == 1
