"""GetUsage: messages, tokens and exact cost per hour, day or month, summed over the stored messages,
for a user, an app or the whole service; exact after every kind of write; who may read what."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.storage import usage as usage_storage

from .helpers import add, expect_failure, new_session
from .test_auth import Stubs, dev, token_server  # noqa: F401 - dev is a fixture

UTC = timezone.utc
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


@pytest.fixture(scope="module")
def usage(channel: grpc.aio.Channel) -> rpc.UsageServiceStub:
    return rpc.UsageServiceStub(channel)


def request(bucket=pb.USAGE_BUCKET_DAY, start=YEAR_START, end=YEAR_START + timedelta(days=366), **fields):
    return pb.GetUsageRequest(bucket=bucket, start_time=ts(start), end_time=ts(end), **fields)


def as_rows(response: pb.GetUsageResponse) -> list[tuple[datetime, int, int, int, str]]:
    return [
        (b.start_time.ToDatetime(UTC), b.role, b.message_count, b.total_tokens, b.total_cost)
        for b in response.buckets
    ]


async def place(sql, message_id: str, when: datetime) -> None:
    """Move a message to a time of the test's choosing (the server stamps its own clock)."""
    await sql.execute("UPDATE messages SET create_time = $2 WHERE id = $1::uuid", message_id, when)


async def expected_from_messages(sql, trunc: str, user_id: str | None = None, app: str | None = None,
                                 by_role: bool = False) -> list[tuple[datetime, int, int, int, str]]:
    """The same totals computed independently: every message read whole, added up in Python."""
    found = await sql.fetch(
        "SELECT m.create_time, m.role, m.tokens_used, m.cost, m.user_id, s.app_name FROM messages m "
        "JOIN sessions s ON s.id = m.session_id"
    )
    sums: dict[tuple[datetime, str | None], list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for row in found:
        if (user_id and row["user_id"] != user_id) or (app and row["app_name"] != app):
            continue
        t = row["create_time"].astimezone(UTC)
        start = {"hour": t.replace(minute=0, second=0, microsecond=0),
                 "day": t.replace(hour=0, minute=0, second=0, microsecond=0),
                 "month": t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)}[trunc]
        entry = sums[(start, row["role"] if by_role else None)]
        entry[0] += 1
        entry[1] += row["tokens_used"]
        entry[2] += row["cost"]
    roles = {"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "system": pb.ROLE_SYSTEM, "tool": pb.ROLE_TOOL}
    return [
        (start, roles[role] if role else pb.ROLE_UNSPECIFIED, n, tokens, str(cost))
        for (start, role), (n, tokens, cost) in sorted(sums.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]


async def spread(sessions, messages, sql, user="ann", app="default", days=(0, 0, 1, 40, 200), cost="0.1"):
    """Messages of `user` in `app` on the given days of 2026 (at 10:xx UTC), alternating roles."""
    session = await new_session(sessions, user, app_name=app)
    for i, day in enumerate(days):
        role = pb.ROLE_USER if i % 2 == 0 else pb.ROLE_ASSISTANT
        message = await add(messages, session.session_id, f"m{i}", role=role, tokens_used=10 + i, cost=cost)
        await place(sql, message.message_id, YEAR_START + timedelta(days=day, hours=10, minutes=i))
    return session


async def test_daily_usage_is_the_exact_sum_over_the_users_messages(sessions, messages, usage, sql):
    await spread(sessions, messages, sql, "ann", days=[0] * 10 + [1, 40, 200], cost="0.1")
    await spread(sessions, messages, sql, "bob", days=(0, 3))
    found = await usage.GetUsage(request(user_id="ann"))
    assert as_rows(found) == await expected_from_messages(sql, "day", "ann")
    first = found.buckets[0]
    # Ten messages of 0.1 are exactly 1.0, never 0.9999999: NUMERIC, summed by PostgreSQL.
    assert (first.start_time.ToDatetime(UTC), first.message_count, first.total_cost) == (YEAR_START, 10, "1.0")
    assert [b.start_time.ToDatetime(UTC).date().isoformat() for b in found.buckets] == [
        "2026-01-01", "2026-01-02", "2026-02-10", "2026-07-20"]
    assert (found.message_count, found.total_tokens, found.total_cost) == (13, sum(range(10, 23)), "1.3")


@pytest.mark.parametrize(("bucket", "trunc"), [(pb.USAGE_BUCKET_HOUR, "hour"), (pb.USAGE_BUCKET_MONTH, "month")])
async def test_hourly_and_monthly_buckets_start_on_utc_boundaries(sessions, messages, usage, sql, bucket, trunc):
    await spread(sessions, messages, sql, "ann", days=(0, 0, 1, 31, 59, 200))
    found = await usage.GetUsage(request(bucket=bucket, user_id="ann"))
    assert as_rows(found) == await expected_from_messages(sql, trunc, "ann")
    for b in found.buckets:
        start = b.start_time.ToDatetime(UTC)
        assert (start.minute, start.second) == (0, 0)
        if trunc == "month":
            assert (start.day, start.hour) == (1, 0)


async def test_by_role_splits_each_bucket_by_role(sessions, messages, usage, sql):
    await spread(sessions, messages, sql, "ann", days=(0, 0, 0, 5))
    found = await usage.GetUsage(request(user_id="ann", by_role=True))
    assert as_rows(found) == await expected_from_messages(sql, "day", "ann", by_role=True)
    assert [(b.role, b.message_count) for b in found.buckets] == [
        (pb.ROLE_ASSISTANT, 1), (pb.ROLE_USER, 2), (pb.ROLE_ASSISTANT, 1)]
    plain = await usage.GetUsage(request(user_id="ann"))
    assert {b.role for b in plain.buckets} == {pb.ROLE_UNSPECIFIED}


async def test_the_range_includes_its_start_and_excludes_its_end(sessions, messages, usage, sql):
    session = await new_session(sessions, "ann")
    edge = YEAR_START + timedelta(days=10)
    for offset in (-1, 0, 1):
        message = await add(messages, session.session_id, tokens_used=1)
        await place(sql, message.message_id, edge + timedelta(microseconds=offset))
    starting = await usage.GetUsage(request(user_id="ann", start=edge))
    assert starting.message_count == 2
    ending = await usage.GetUsage(request(user_id="ann", end=edge))
    assert ending.message_count == 1
    # A bucket cut by the start counts only the messages from the start on.
    assert (await usage.GetUsage(request(user_id="ann", start=edge + timedelta(microseconds=1)))).message_count == 1


async def test_usage_of_an_app_and_of_the_whole_service(sessions, messages, usage, sql):
    await spread(sessions, messages, sql, "ann", app="travel", days=(0, 1))
    await spread(sessions, messages, sql, "ann", app="chat", days=(0, 2, 2))
    await spread(sessions, messages, sql, "bob", app="travel", days=(1, 3))
    # Mode none: the operator is an admin; an empty user_id is every user's.
    for app in ("travel", "chat"):
        found = await usage.GetUsage(request(app_name=app))
        assert as_rows(found) == await expected_from_messages(sql, "day", app=app)
    ann_travel = await usage.GetUsage(request(user_id="ann", app_name="travel"))
    assert as_rows(ann_travel) == await expected_from_messages(sql, "day", "ann", "travel")
    assert ann_travel.message_count == 2
    everything = await usage.GetUsage(request(bucket=pb.USAGE_BUCKET_MONTH))
    assert as_rows(everything) == await expected_from_messages(sql, "month")
    assert everything.message_count == 7
    assert (await usage.GetUsage(request(app_name="nobody"))).buckets == []


async def test_usage_is_exact_right_after_concurrent_writes(sessions, messages, usage):
    session = await new_session(sessions, "ann")
    other = await new_session(sessions, "ann", app_name="chat")
    now = datetime.now(UTC)
    window = dict(start=now - timedelta(hours=1), end=now + timedelta(hours=1), user_id="ann")
    await asyncio.gather(*(
        add(messages, sid, tokens_used=3, cost="0.000000000000000001")
        for i in range(32) for sid in [session.session_id if i % 2 else other.session_id]
    ))
    found = await usage.GetUsage(request(bucket=pb.USAGE_BUCKET_HOUR, **window))
    assert (found.message_count, found.total_tokens, found.total_cost) == (32, 96, "0.000000000000000032")


async def test_usage_follows_deletion_fork_truncation_and_batches(sessions, messages, usage, sql):
    now = datetime.now(UTC)
    window = dict(start=now - timedelta(hours=1), end=now + timedelta(hours=1), user_id="ann")

    async def totals() -> tuple[int, int, str]:
        found = await usage.GetUsage(request(bucket=pb.USAGE_BUCKET_DAY, **window))
        return found.message_count, found.total_tokens, found.total_cost

    async def from_messages() -> tuple[int, int, str]:
        row = await sql.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(tokens_used), 0) AS t, coalesce(sum(cost), 0) AS c "
            "FROM messages WHERE user_id = 'ann'"
        )
        return row["n"], row["t"], str(row["c"])

    source = await new_session(sessions, "ann")
    for _ in range(6):
        await add(messages, source.session_id, tokens_used=10, cost="0.25")
    assert await totals() == (6, 60, "1.50") == await from_messages()
    await messages.AddMessages(pb.AddMessagesRequest(session_id=source.session_id, messages=[
        pb.NewMessage(role=pb.ROLE_USER, content="b", tokens_used=1, cost="0.01") for _ in range(3)
    ]))
    assert await totals() == (9, 63, "1.53") == await from_messages()
    forked = (await sessions.ForkSession(pb.ForkSessionRequest(session_id=source.session_id, last_sequence=4))).session
    assert await totals() == (13, 103, "2.53") == await from_messages()  # the fork's copies are stored messages
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=source.session_id, last_sequence=2))
    assert await totals() == (6, 60, "1.50") == await from_messages()
    await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=forked.session_id))
    assert await totals() == (2, 20, "0.50") == await from_messages()


async def test_a_user_reads_only_their_own_usage_and_an_admin_reads_any(database_url, dev):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice, bob, admin = Stubs(channel, "alice-token"), Stubs(channel, "bob-token"), Stubs(channel, "admin-token")
        for stubs, tokens in ((alice, 5), (bob, 7)):
            s = (await stubs.sessions.CreateSession(pb.CreateSessionRequest(app_name="travel"), metadata=stubs.metadata))
            await stubs.messages.AddMessage(
                pb.AddMessageRequest(session_id=s.session.session_id, role=pb.ROLE_USER, content="x", tokens_used=tokens),
                metadata=stubs.metadata,
            )
        now = datetime.now(UTC)
        window = request(pb.USAGE_BUCKET_DAY, now - timedelta(days=1), now + timedelta(days=1))

        async def tokens(stubs: Stubs, **fields) -> int:
            asked = pb.GetUsageRequest()
            asked.CopyFrom(window)
            for name, value in fields.items():
                setattr(asked, name, value)
            return (await stubs.usage.GetUsage(asked, metadata=stubs.metadata)).total_tokens

        assert await tokens(alice) == 5  # an empty user_id is the caller's own, not the service's
        assert await tokens(alice, user_id="alice") == 5
        assert await tokens(alice, app_name="travel") == 5  # the app's usage, kept to her own
        failure = await expect_failure(alice.usage.GetUsage(
            pb.GetUsageRequest(user_id="bob", bucket=pb.USAGE_BUCKET_DAY, start_time=window.start_time,
                               end_time=window.end_time),
            metadata=alice.metadata,
        ))
        assert failure.code == grpc.StatusCode.PERMISSION_DENIED and failure.reason == "OTHER_USER"
        assert await tokens(admin) == 12
        assert await tokens(admin, app_name="travel") == 12
        assert await tokens(admin, user_id="bob") == 7


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"bucket": pb.USAGE_BUCKET_UNSPECIFIED}, "bucket"),
        ({"bucket": 42}, "bucket"),
        ({"start": None}, "start_time"),
        ({"end": None}, "end_time"),
        ({"end": YEAR_START}, "end_time"),
        ({"end": YEAR_START - timedelta(days=1)}, "end_time"),
        ({"bucket": pb.USAGE_BUCKET_HOUR, "end": YEAR_START + timedelta(hours=10_001)}, "end_time"),
        ({"bucket": pb.USAGE_BUCKET_DAY, "end": YEAR_START + timedelta(days=10_001)}, "end_time"),
        ({"app_name": "no spaces"}, "app_name"),
        ({"user_id": "x" * 256}, "user_id"),
        ({"user_id": "a\x00b"}, "user_id"),
    ],
)
async def test_bad_usage_requests_are_invalid_argument_naming_the_field(usage, fields, field):
    asked = pb.GetUsageRequest(bucket=fields.pop("bucket", pb.USAGE_BUCKET_DAY), **{
        k: v for k, v in fields.items() if k not in ("start", "end")})
    start = fields.get("start", YEAR_START)
    end = fields.get("end", YEAR_START + timedelta(days=30))
    if start is not None:
        asked.start_time.CopyFrom(ts(start))
    if end is not None:
        asked.end_time.CopyFrom(ts(end))
    failure = await expect_failure(usage.GetUsage(asked))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.field_violations


async def test_a_range_of_exactly_the_bucket_limit_is_accepted(usage):
    hours = await usage.GetUsage(request(bucket=pb.USAGE_BUCKET_HOUR, end=YEAR_START + timedelta(hours=10_000)))
    assert hours.buckets == []
    failure = await expect_failure(usage.GetUsage(request(
        bucket=pb.USAGE_BUCKET_HOUR, end=YEAR_START + timedelta(hours=10_000, microseconds=1))))
    assert "end_time" in failure.field_violations
    # Months of 2026 and 2027 are 24 buckets; the limit counts months, not days.
    months = await usage.GetUsage(request(bucket=pb.USAGE_BUCKET_MONTH, end=YEAR_START.replace(year=2028)))
    assert months.buckets == []
    bad = timestamp_pb2.Timestamp(seconds=0, nanos=-1)
    failure = await expect_failure(usage.GetUsage(pb.GetUsageRequest(
        bucket=pb.USAGE_BUCKET_DAY, start_time=bad, end_time=ts(YEAR_START))))
    assert "start_time" in failure.field_violations


async def test_a_users_usage_is_an_index_only_scan_of_their_entries(sessions, messages, sql):
    """The statement reads ix_messages_user_id_create_time (role, tokens, cost and session are in the
    index), not the messages' rows, and the planner picks it even on a small table."""
    session = await new_session(sessions, "ann")
    for _ in range(3):
        await add(messages, session.session_id, tokens_used=1)
    await sql.execute("VACUUM ANALYZE messages")
    await sql.execute("SET enable_seqscan = off")
    try:
        for app in (False, True):
            sql_text = usage_storage.STATEMENTS[(True, app, True)]
            params = ["day", YEAR_START, YEAR_START + timedelta(days=400), "ann"] + (["default"] if app else [])
            plan = "\n".join(r[0] for r in await sql.fetch("EXPLAIN " + sql_text, *params))
            assert "Index Only Scan using ix_messages_user_id_create_time" in plan, plan
    finally:
        await sql.execute("RESET enable_seqscan")
