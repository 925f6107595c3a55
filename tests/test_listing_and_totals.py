"""ListSessions paging and filters, GetSessionSummary, GetServiceStats, ExpireSessions and the expiry loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from session_grpc import paging
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.domain.records import SessionsQuery
from session_grpc.storage import sessions as storage_sessions
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.server import build_server

from .conftest import test_settings
from .helpers import add, expect_failure, new_session, set_status

OLD = "UPDATE sessions SET last_activity_time = now() - interval '2 hours' WHERE id = $1"


async def get(sessions, session_id: str) -> pb.Session:
    return (await sessions.GetSession(pb.GetSessionRequest(session_id=session_id))).session


async def summary_of(sessions, session_id: str) -> pb.SessionSummary:
    return (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session_id))).summary


async def list_pages(sessions, **fields) -> list[pb.ListSessionsResponse]:
    pages = []
    token = ""
    while True:
        page = await sessions.ListSessions(pb.ListSessionsRequest(page_token=token, **fields))
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def make_old(sql, session_id: str) -> None:
    await sql.execute(OLD, uuid.UUID(session_id))


# ---- ListSessions ------------------------------------------------------------------------------


async def test_list_sessions_returns_newest_first(sessions):
    created = [await new_session(sessions, "alice", title=f"s{i}") for i in range(5)]
    listed = list((await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice"))).sessions)
    assert [s.session_id for s in listed] == [s.session_id for s in reversed(created)]
    times = [s.create_time.ToDatetime() for s in listed]
    assert times == sorted(times, reverse=True)
    assert listed == list(reversed(created))


async def test_list_sessions_returns_only_the_given_users_sessions(sessions):
    alice = {(await new_session(sessions, "alice")).session_id for _ in range(3)}
    await new_session(sessions, "bob")
    await new_session(sessions, "alice-2")
    page = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice"))
    assert {s.session_id for s in page.sessions} == alice
    assert all(s.user_id == "alice" for s in page.sessions)
    assert page.total_size == 3


async def test_list_sessions_of_unknown_user_is_empty(sessions):
    await new_session(sessions, "alice")
    page = await sessions.ListSessions(pb.ListSessionsRequest(user_id="nobody"))
    assert (list(page.sessions), page.next_page_token, page.total_size) == ([], "", 0)


async def test_list_sessions_status_filter_returns_only_that_status(sessions):
    active = await new_session(sessions, "alice")
    ended = await new_session(sessions, "alice")
    archived = await new_session(sessions, "alice")
    await sessions.EndSession(pb.EndSessionRequest(session_id=ended.session_id))
    await set_status(sessions, archived.session_id, pb.SESSION_STATUS_ARCHIVED)
    for status, expected in (
        (pb.SESSION_STATUS_ACTIVE, [active]),
        (pb.SESSION_STATUS_ENDED, [ended]),
        (pb.SESSION_STATUS_ARCHIVED, [archived]),
        (pb.SESSION_STATUS_EXPIRED, []),
    ):
        page = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", status=status))
        assert [s.session_id for s in page.sessions] == [s.session_id for s in expected]
        assert page.total_size == len(expected)
    everything = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice"))
    assert everything.total_size == 3


async def test_list_sessions_default_page_size_is_50(sessions):
    for _ in range(60):
        await new_session(sessions, "alice")
    first = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice"))
    assert len(first.sessions) == 50
    assert first.next_page_token
    second = await sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", page_token=first.next_page_token))
    assert len(second.sessions) == 10
    assert second.next_page_token == ""
    assert first.total_size == second.total_size == 60


async def test_list_sessions_paging_visits_every_session_once_with_total_on_every_page(sessions):
    created = {(await new_session(sessions, "alice")).session_id for _ in range(23)}
    await new_session(sessions, "bob")
    pages = await list_pages(sessions, user_id="alice", page_size=5)
    assert [len(p.sessions) for p in pages] == [5, 5, 5, 5, 3]
    assert all(p.total_size == 23 for p in pages)
    seen = [s.session_id for p in pages for s in p.sessions]
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == created
    times = [s.create_time.ToDatetime() for p in pages for s in p.sessions]
    assert times == sorted(times, reverse=True)


async def test_list_sessions_paging_with_identical_create_times_visits_every_session_once(sessions, sql):
    created = {(await new_session(sessions, "alice")).session_id for _ in range(7)}
    await sql.execute("UPDATE sessions SET create_time = '2030-01-01T00:00:00Z'")
    pages = await list_pages(sessions, user_id="alice", page_size=2)
    seen = [s.session_id for p in pages for s in p.sessions]
    assert sorted(seen) == sorted(created)
    assert seen == sorted(seen, reverse=True)  # ties broken by id, descending


async def test_list_sessions_paging_with_status_filter_visits_every_matching_session_once(sessions):
    ended = set()
    for i in range(9):
        session = await new_session(sessions, "alice")
        if i % 3 == 0:
            await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))
            ended.add(session.session_id)
    pages = await list_pages(sessions, user_id="alice", status=pb.SESSION_STATUS_ENDED, page_size=2)
    seen = [s.session_id for p in pages for s in p.sessions]
    assert sorted(seen) == sorted(ended)
    assert all(p.total_size == 3 for p in pages)


async def first_token(sessions, **fields) -> str:
    page = await sessions.ListSessions(pb.ListSessionsRequest(page_size=1, **fields))
    assert page.next_page_token
    return page.next_page_token


async def test_list_sessions_token_with_a_different_status_filter_is_invalid_argument(sessions):
    for _ in range(3):
        await new_session(sessions, "alice")
    token = await first_token(sessions, user_id="alice")
    failure = await expect_failure(
        sessions.ListSessions(
            pb.ListSessionsRequest(user_id="alice", status=pb.SESSION_STATUS_ACTIVE, page_size=1, page_token=token)
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in failure.field_violations


async def test_list_sessions_token_with_a_different_user_id_is_invalid_argument(sessions):
    for user in ("alice", "alice", "bob", "bob"):
        await new_session(sessions, user)
    token = await first_token(sessions, user_id="alice")
    failure = await expect_failure(
        sessions.ListSessions(pb.ListSessionsRequest(user_id="bob", page_size=1, page_token=token))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in failure.field_violations


async def test_list_sessions_tampered_token_is_invalid_argument(sessions):
    for _ in range(3):
        await new_session(sessions, "alice")
    token = await first_token(sessions, user_id="alice")
    tampered = ("B" if token[0] != "B" else "C") + token[1:]
    for bad in (tampered, "abc", token + "x", token.split(".")[0]):
        failure = await expect_failure(
            sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", page_size=1, page_token=bad))
        )
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "page_token" in failure.field_violations, bad


async def test_list_sessions_empty_user_id_is_invalid_argument_naming_user_id(sessions):
    failure = await expect_failure(sessions.ListSessions(pb.ListSessionsRequest(user_id="")))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in failure.field_violations


@pytest.mark.parametrize("page_size", [1001, -1])
async def test_list_sessions_page_size_out_of_range_is_invalid_argument_naming_page_size(sessions, page_size):
    failure = await expect_failure(sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", page_size=page_size)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in failure.field_violations


async def test_list_sessions_unknown_status_is_invalid_argument_naming_status(sessions):
    failure = await expect_failure(sessions.ListSessions(pb.ListSessionsRequest(user_id="alice", status=42)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "status" in failure.field_violations


# ---- GetSessionSummary -------------------------------------------------------------------------


async def test_session_summary_has_exact_totals_role_counts_and_message_times(sessions, messages):
    session = await new_session(sessions, "alice", title="Trip")
    first = await add(messages, session.session_id, role=pb.ROLE_USER, tokens_used=10, cost="0.1")
    await add(messages, session.session_id, role=pb.ROLE_ASSISTANT, tokens_used=20, cost="0.2")
    await add(messages, session.session_id, role=pb.ROLE_USER, tokens_used=5, cost="0.00015")
    last = await add(messages, session.session_id, role=pb.ROLE_TOOL, tokens_used=0, cost="0")
    summary = await summary_of(sessions, session.session_id)
    assert summary.session_id == session.session_id
    assert (summary.user_id, summary.title, summary.status) == ("alice", "Trip", pb.SESSION_STATUS_ACTIVE)
    assert (summary.message_count, summary.total_tokens) == (4, 35)
    assert Decimal(summary.total_cost) == Decimal("0.30015")
    assert {c.role: c.message_count for c in summary.message_counts_by_role} == {
        pb.ROLE_USER: 2,
        pb.ROLE_ASSISTANT: 1,
        pb.ROLE_TOOL: 1,
    }
    assert len(summary.message_counts_by_role) == 3
    assert summary.first_message_time == first.create_time
    assert summary.last_message_time == last.create_time
    assert summary.create_time == session.create_time
    assert summary.last_activity_time == last.create_time
    assert summary.has_memory is False


async def test_session_summary_without_messages_leaves_message_times_unset(sessions):
    session = await new_session(sessions, "alice")
    summary = await summary_of(sessions, session.session_id)
    assert (summary.message_count, summary.total_tokens, Decimal(summary.total_cost)) == (0, 0, Decimal(0))
    assert list(summary.message_counts_by_role) == []
    assert not summary.HasField("first_message_time")
    assert not summary.HasField("last_message_time")
    assert summary.last_activity_time == session.create_time


async def test_session_summary_reports_current_status(sessions):
    session = await new_session(sessions, "alice")
    await sessions.EndSession(pb.EndSessionRequest(session_id=session.session_id))
    assert (await summary_of(sessions, session.session_id)).status == pb.SESSION_STATUS_ENDED


async def test_session_summary_counts_only_its_own_messages(sessions, messages):
    one = await new_session(sessions, "alice")
    two = await new_session(sessions, "alice")
    await add(messages, one.session_id, role=pb.ROLE_SYSTEM, cost="1")
    await add(messages, two.session_id, role=pb.ROLE_USER, cost="2")
    summary = await summary_of(sessions, one.session_id)
    assert summary.message_count == 1
    assert Decimal(summary.total_cost) == 1
    assert [(c.role, c.message_count) for c in summary.message_counts_by_role] == [(pb.ROLE_SYSTEM, 1)]


async def test_session_summary_of_missing_session_is_not_found(sessions):
    failure = await expect_failure(
        sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=str(uuid.uuid4())))
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.resource_type == "session"


# ---- GetServiceStats ---------------------------------------------------------------------------


async def stats(sessions) -> pb.ServiceStats:
    return (await sessions.GetServiceStats(pb.GetServiceStatsRequest())).stats


async def test_service_stats_on_empty_database_are_zero(sessions):
    result = await stats(sessions)
    assert result.total_sessions == 0
    assert list(result.sessions_by_status) == []
    assert (result.total_messages, result.total_tokens, result.distinct_users) == (0, 0, 0)
    assert Decimal(result.total_cost) == 0
    assert result.average_messages_per_session == 0.0


async def test_service_stats_count_sessions_messages_tokens_cost_and_users(sessions, messages):
    a1 = await new_session(sessions, "alice")
    a2 = await new_session(sessions, "alice")
    b1 = await new_session(sessions, "bob")
    await new_session(sessions, "carol")
    for _ in range(3):
        await add(messages, a1.session_id, tokens_used=100, cost="0.1")
    await add(messages, a2.session_id, tokens_used=7, cost="0.00015")
    await add(messages, b1.session_id, tokens_used=1, cost="2")
    await sessions.EndSession(pb.EndSessionRequest(session_id=a2.session_id))
    await set_status(sessions, b1.session_id, pb.SESSION_STATUS_ARCHIVED)
    result = await stats(sessions)
    assert result.total_sessions == 4
    assert {c.status: c.session_count for c in result.sessions_by_status} == {
        pb.SESSION_STATUS_ACTIVE: 2,
        pb.SESSION_STATUS_ENDED: 1,
        pb.SESSION_STATUS_ARCHIVED: 1,
    }
    assert len(result.sessions_by_status) == 3
    assert result.total_messages == 5
    assert result.total_tokens == 308
    assert Decimal(result.total_cost) == Decimal("2.30015")
    assert result.distinct_users == 3
    assert result.average_messages_per_session == pytest.approx(5 / 4)


async def test_service_stats_forget_deleted_sessions(sessions, messages):
    keep = await new_session(sessions, "alice")
    gone = await new_session(sessions, "bob")
    await add(messages, keep.session_id, tokens_used=1, cost="1")
    await add(messages, gone.session_id, tokens_used=2, cost="2")
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=gone.session_id))
    result = await stats(sessions)
    assert (result.total_sessions, result.total_messages, result.total_tokens, result.distinct_users) == (1, 1, 1, 1)
    assert Decimal(result.total_cost) == 1


# ---- ExpireSessions ----------------------------------------------------------------------------


def expire(sessions, **duration):
    return sessions.ExpireSessions(pb.ExpireSessionsRequest(idle_for=duration_pb2.Duration(**duration)))


async def test_expire_sessions_expires_idle_active_sessions_and_counts_them(sessions, sql):
    old = [await new_session(sessions, "alice") for _ in range(2)]
    recent = await new_session(sessions, "alice")
    for session in old:
        await make_old(sql, session.session_id)
    response = await expire(sessions, seconds=3600)
    assert response.expired_count == 2
    for session in old:
        current = await get(sessions, session.session_id)
        assert current.status == pb.SESSION_STATUS_EXPIRED
        assert not current.HasField("end_time")
        assert current.etag != session.etag
    assert (await get(sessions, recent.session_id)).status == pb.SESSION_STATUS_ACTIVE
    assert (await expire(sessions, seconds=3600)).expired_count == 0


@pytest.mark.parametrize(
    "status",
    [pb.SESSION_STATUS_COMPLETED, pb.SESSION_STATUS_ENDED, pb.SESSION_STATUS_ARCHIVED],
    ids=pb.SessionStatus.Name,
)
async def test_expire_sessions_leaves_old_sessions_that_are_not_active_alone(sessions, sql, status):
    session = await new_session(sessions, "alice")
    before = await set_status(sessions, session.session_id, status)
    await make_old(sql, session.session_id)
    assert (await expire(sessions, seconds=60)).expired_count == 0
    after = await get(sessions, session.session_id)
    assert (after.status, after.etag) == (status, before.etag)


async def test_expire_sessions_keeps_sessions_active_within_idle_for(sessions, sql):
    session = await new_session(sessions, "alice")
    await make_old(sql, session.session_id)  # 2 hours idle
    assert (await expire(sessions, seconds=3 * 3600)).expired_count == 0
    assert (await get(sessions, session.session_id)).status == pb.SESSION_STATUS_ACTIVE


async def test_adding_a_message_keeps_a_session_from_expiring(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    await make_old(sql, session.session_id)
    await add(messages, session.session_id)
    assert (await expire(sessions, seconds=3600)).expired_count == 0
    assert (await get(sessions, session.session_id)).status == pb.SESSION_STATUS_ACTIVE


async def test_expired_session_accepts_no_messages(sessions, messages, sql):
    session = await new_session(sessions, "alice")
    await make_old(sql, session.session_id)
    await expire(sessions, seconds=60)
    failure = await expect_failure(add(messages, session.session_id))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "SESSION_NOT_ACTIVE"


@pytest.mark.parametrize(
    "duration",
    [None, {}, {"seconds": 0}, {"seconds": -5}, {"nanos": -1}, {"seconds": 315_576_000_000}],
    ids=["missing", "empty", "zero", "negative", "negative-nanos", "ten-thousand-years"],
)
async def test_expire_sessions_without_positive_idle_for_is_invalid_argument_naming_idle_for(
    sessions, sql, duration
):
    session = await new_session(sessions, "alice")
    await make_old(sql, session.session_id)
    request = pb.ExpireSessionsRequest()
    if duration is not None:
        request.idle_for.CopyFrom(duration_pb2.Duration(**duration))
    failure = await expect_failure(sessions.ExpireSessions(request))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "idle_for" in failure.field_violations
    assert (await get(sessions, session.session_id)).status == pb.SESSION_STATUS_ACTIVE


async def test_server_expiry_loop_expires_idle_sessions_by_itself(database_url, sessions, sql):
    old = await new_session(sessions, "alice")
    recent = await new_session(sessions, "alice")
    await make_old(sql, old.session_id)
    server = build_server(test_settings(database_url, expiry_interval=0.2, expiry_idle=3600))
    await server.start()
    try:
        deadline = time.monotonic() + 5
        while (await get(sessions, old.session_id)).status != pb.SESSION_STATUS_EXPIRED:
            assert time.monotonic() < deadline, "the expiry loop did not expire the idle session within 5s"
            await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            other = session_pb2_grpc.SessionServiceStub(channel)
            fetched = (await other.GetSession(pb.GetSessionRequest(session_id=old.session_id))).session
            assert fetched.status == pb.SESSION_STATUS_EXPIRED
    finally:
        await server.stop(grace=0)
    assert (await get(sessions, recent.session_id)).status == pb.SESSION_STATUS_ACTIVE


async def test_list_sessions_of_large_sessions_stops_short_of_4_mib_and_reads_only_its_budget(service, sessions):
    """40 sessions with 120 KB of JSON each (5 MB): a page of 1000 stops short of 4 MiB, its token
    continues, and storage reads no more than the page budget (plus one session)."""
    blob = struct_pb2.Struct()
    blob.update({"blob": "y" * 60_000})
    await asyncio.gather(*(new_session(sessions, "wide", conversation_data=blob, metadata=blob) for _ in range(40)))
    pages = await list_pages(sessions, user_id="wide", page_size=1000)
    assert len(pages) >= 2 and all(page.ByteSize() < 4 * 1024 * 1024 for page in pages)
    listed = [s.session_id for page in pages for s in page.sessions]
    assert len(listed) == len(set(listed)) == 40
    query = SessionsQuery("wide", None, None, 1000, None, {}, paging.RESPONSE_BYTES)
    page = await service.db.run(storage_sessions.list_sessions, query)
    assert len(page.items) <= paging.RESPONSE_BYTES // 120_000 + 1 and page.more and page.total == 40
