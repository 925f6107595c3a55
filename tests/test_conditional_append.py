"""AddMessage with expected_last_sequence: append only to a session whose last sequence is the
one the caller saw, else ABORTED (STALE_SESSION) with the current one in ErrorInfo metadata."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import grpc
import pytest

from session_client import Aborted, SessionClient
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from .conftest import test_settings
from .helpers import add, expect_failure, new_session, serving, set_status
from .helpers import failure as failure_of
from .test_auth import bobs_session, dev, token_server  # noqa: F401 - dev is a fixture
from .test_statements import StatementCounter


async def totals(sessions, session_id: str) -> tuple[int, int, Decimal]:
    session = (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    return session.message_count, session.total_tokens, Decimal(session.total_cost)


async def test_append_expecting_the_current_last_sequence_lands(sessions, messages):
    session = await new_session(sessions, "alice")
    first = await add(messages, session.session_id, "a", expected_last_sequence=0)
    second = await add(messages, session.session_id, "b", expected_last_sequence=1)
    assert (first.sequence, second.sequence) == (1, 2)


@pytest.mark.parametrize("expected", [0, 1, 3], ids=["behind", "one-behind", "ahead"])
async def test_append_expecting_another_last_sequence_is_aborted_stale_session_and_writes_nothing(
    sessions, messages, sql, expected
):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, "a", tokens_used=3, cost="0.1")
    await add(messages, session.session_id, "b", tokens_used=4, cost="0.2")
    failure = await expect_failure(
        add(messages, session.session_id, "c", tokens_used=50, cost="9", expected_last_sequence=expected)
    )
    assert failure.code == grpc.StatusCode.ABORTED
    assert failure.reason == "STALE_SESSION"
    assert failure.error_metadata == {"lastSequence": "2"}
    assert await totals(sessions, session.session_id) == (2, 7, Decimal("0.3"))
    assert await sql.fetchval("SELECT count(*) FROM messages") == 2


async def test_16_concurrent_appends_expecting_one_sequence_exactly_one_lands(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, "seen", tokens_used=1, cost="0.01")
    results = await asyncio.gather(
        *(
            add(messages, session.session_id, f"turn {i}", tokens_used=10, cost="0.5", expected_last_sequence=1)
            for i in range(16)
        ),
        return_exceptions=True,
    )
    landed = [r for r in results if isinstance(r, pb.Message)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(landed) == 1 and len(refused) == 15, results
    assert landed[0].sequence == 2
    for error in refused:
        refusal = failure_of(error)
        assert (refusal.code, refusal.reason, refusal.error_metadata) == (
            grpc.StatusCode.ABORTED, "STALE_SESSION", {"lastSequence": "2"}
        )
    assert await totals(sessions, session.session_id) == (2, 11, Decimal("0.51"))
    rows = await sql.fetch("SELECT sequence, content FROM messages ORDER BY sequence")
    assert [(r["sequence"], r["content"]) for r in rows] == [(1, "seen"), (2, landed[0].content)]


async def test_repeat_of_a_conditional_append_that_landed_returns_it_after_the_sequence_moved_on(
    sessions, messages, sql
):
    """The request_id lookup comes before the condition: a retry of an append whose answer was
    lost is not stale, even though its own message (and others) moved the sequence on."""
    session = await new_session(sessions, "alice")
    request_id = str(uuid.uuid4())
    first = await add(messages, session.session_id, "mine", tokens_used=5, expected_last_sequence=0, request_id=request_id)
    await add(messages, session.session_id, "someone else's")
    again = await add(messages, session.session_id, "mine", tokens_used=5, expected_last_sequence=0, request_id=request_id)
    assert again == first
    assert (await totals(sessions, session.session_id))[:2] == (2, 5)
    fresh = await expect_failure(
        add(messages, session.session_id, "mine", expected_last_sequence=0, request_id=str(uuid.uuid4()))
    )
    assert (fresh.code, fresh.reason) == (grpc.StatusCode.ABORTED, "STALE_SESSION")
    assert await sql.fetchval("SELECT count(*) FROM messages") == 2


async def test_negative_expected_last_sequence_is_invalid_argument_naming_it(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(add(messages, session.session_id, expected_last_sequence=-1))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(failure.field_violations) == {"expected_last_sequence"}
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0


async def test_an_unset_expectation_is_no_condition_and_zero_is_one(sessions, messages):
    """proto3 `optional`: absent means any last sequence; 0 means a session without messages."""
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, "a")
    assert (await add(messages, session.session_id, "b")).sequence == 2
    failure = await expect_failure(add(messages, session.session_id, expected_last_sequence=0))
    assert failure.reason == "STALE_SESSION"


async def test_a_session_that_is_not_active_is_failed_precondition_whatever_the_expectation(sessions, messages):
    """Refetching would not help: the reason a client acts on is that the session takes no messages."""
    session = await new_session(sessions, "alice")
    await set_status(sessions, session.session_id, pb.SESSION_STATUS_COMPLETED)
    for expected in (0, 5):
        failure = await expect_failure(add(messages, session.session_id, expected_last_sequence=expected))
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_NOT_ACTIVE")


async def test_another_users_session_is_not_found_and_its_last_sequence_is_not_told(database_url, dev, sql):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        sid = await bobs_session(channel)
        stub = session_pb2_grpc.MessageServiceStub(channel)
        alice = (("authorization", "Bearer alice-token"),)
        for expected in (0, 7):
            request = pb.AddMessageRequest(session_id=sid, role=pb.ROLE_USER, content="x", expected_last_sequence=expected)
            failure = await expect_failure(stub.AddMessage(request, metadata=alice))
            assert (failure.code, failure.error_metadata) == (grpc.StatusCode.NOT_FOUND, {})
    assert await sql.fetchval("SELECT message_count FROM sessions WHERE id = $1", sid) == 0


# ---- through the Python client ---------------------------------------------------------------


async def test_client_conditional_append_raises_stale_session_once_and_says_the_last_sequence(service, sql):
    """The client never retries a stale append (the caller must refetch): one attempt, and
    `last_sequence` says where the session is now."""
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice")
        first = await client.add_message(session.session_id, "user", "hi", expected_last_sequence=0)
        assert first.sequence == 1
        with pytest.raises(Aborted) as caught:
            await client.add_message(session.session_id, "user", "again", expected_last_sequence=0)
        assert caught.value.reason == "STALE_SESSION"
        assert caught.value.attempts == 1
        assert caught.value.last_sequence == 1
        second = await client.add_message(
            session.session_id, "user", "again", expected_last_sequence=caught.value.last_sequence
        )
        assert second.sequence == 2
    assert await sql.fetchval("SELECT count(*) FROM messages") == 2


async def test_a_conditional_append_is_one_statement_and_only_a_refused_one_reads_once_more(database_url):
    """The condition rides in the appending statement: a landed conditional append costs what an
    unconditional one does (one statement); only a refused one reads the session to say why."""
    quiet = {"health_interval": 3600.0}  # no health check's SELECT 1 in between
    async with serving(test_settings(database_url, **quiet)) as (server, channel):
        sessions, messages = session_pb2_grpc.SessionServiceStub(channel), session_pb2_grpc.MessageServiceStub(channel)
        session = await new_session(sessions, "alice")
        counter = StatementCounter(server)
        counted = []
        for expected in (0, 0):
            await asyncio.sleep(0.01)  # the driver reports statements from the event loop
            counter.statements.clear()
            try:
                await add(messages, session.session_id, expected_last_sequence=expected, request_id=str(uuid.uuid4()))
            except grpc.aio.AioRpcError as error:
                assert failure_of(error).reason == "STALE_SESSION"
            await asyncio.sleep(0.01)
            counted.append(len(counter.statements))
    assert counted == [1, 2], counter.statements


# ---- expected_etag -------------------------------------------------------------------------------


async def test_append_expecting_the_current_etag_lands_and_leaves_the_etag_as_it_was(sessions, messages):
    """Messages do not change a session's etag, so one read etag guards a run of appends."""
    session = await new_session(sessions, "alice")
    await add(messages, session.session_id, "a", expected_etag=session.etag)
    second = await add(messages, session.session_id, "b", expected_etag=session.etag, expected_last_sequence=1)
    assert second.sequence == 2


async def test_append_expecting_a_stale_etag_is_aborted_etag_mismatch_with_the_current_one_and_writes_nothing(
    sessions, messages, sql
):
    session = await new_session(sessions, "alice")
    changed = (await sessions.UpdateSession(
        pb.UpdateSessionRequest(session=pb.Session(session_id=session.session_id, title="renamed"))
    )).session
    for etag in (session.etag, "not-an-etag"):
        failure = await expect_failure(add(messages, session.session_id, "x", expected_etag=etag))
        assert (failure.code, failure.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
        assert failure.error_metadata == {"etag": changed.etag}
    assert await sql.fetchval("SELECT message_count FROM sessions") == 0
    assert await sql.fetchval("SELECT count(*) FROM messages") == 0


async def test_of_appends_racing_a_title_change_on_one_etag_only_those_before_it_land(sessions, messages, sql):
    """The etag is checked under the row lock like the sequence: an append that expected the old
    etag and ran after the update is refused, one that ran before it is stored."""
    session = await new_session(sessions, "alice")
    update = sessions.UpdateSession(
        pb.UpdateSessionRequest(session=pb.Session(session_id=session.session_id, title="t", etag=session.etag))
    )
    results = await asyncio.gather(
        update, *(add(messages, session.session_id, f"m{i}", expected_etag=session.etag) for i in range(8)),
        return_exceptions=True,
    )
    assert isinstance(results[0], pb.UpdateSessionResponse), results[0]
    after = results[0].session
    landed = [r for r in results[1:] if isinstance(r, pb.Message)]
    for error in results[1:]:
        if not isinstance(error, pb.Message):
            assert failure_of(error).reason == "ETAG_MISMATCH"
    # Every landed append ran before the update, so the update saw their count.
    assert after.message_count == len(landed)
    assert await sql.fetchval("SELECT message_count FROM sessions") == len(landed)
    assert sorted(m.sequence for m in landed) == list(range(1, len(landed) + 1))


async def test_an_overlong_expected_etag_is_invalid_argument_naming_it(sessions, messages):
    session = await new_session(sessions, "alice")
    failure = await expect_failure(add(messages, session.session_id, expected_etag="x" * 101))
    assert set(failure.field_violations) == {"expected_etag"}


async def test_client_conditional_append_on_a_stale_etag_raises_etag_mismatch_once(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice")
        changed = await client.update_session(session.session_id, title="renamed")
        with pytest.raises(Aborted) as caught:
            await client.add_message(session.session_id, "user", "hi", expected_etag=session.etag)
        assert (caught.value.reason, caught.value.attempts) == ("ETAG_MISMATCH", 1)
        assert caught.value.error_metadata["etag"] == changed.etag
        assert caught.value.last_sequence is None
        landed = await client.add_message(session.session_id, "user", "hi", expected_etag=changed.etag)
        assert landed.sequence == 1
