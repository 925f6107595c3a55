"""Retention: per-app policies (closed_session_ttl, message_ttl, max_messages_per_session), the
prune job that applies them in small batches, one pass at a time (advisory lock), its dry run, its
metric, and what stays true under it: frozen totals, gapless sequences for new appends, rewinds and
forks of pruned sessions, and a prune under AddMessage load losing nothing it should keep."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from session_grpc import pruning
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.domain.retention import Rule
from session_grpc.storage.database import Database, create_engine
from session_grpc.testing import free_port

from .conftest import test_settings
from .helpers import add, expect_failure, new_session, serving_with, set_status
from .test_cli import run_cli
from .test_observability import scrape

DAY = 86400


@pytest.fixture(scope="module")
def retention(channel: grpc.aio.Channel) -> rpc.RetentionServiceStub:
    return rpc.RetentionServiceStub(channel)


@pytest.fixture(scope="module")
def usage(channel: grpc.aio.Channel) -> rpc.UsageServiceStub:
    return rpc.UsageServiceStub(channel)


def seconds_since_epoch(value: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=value)


def seconds(value: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=value)


async def set_policy(retention, app_name: str, **rules) -> pb.RetentionPolicy:
    request = pb.SetRetentionPolicyRequest(policy=pb.RetentionPolicy(app_name=app_name, **rules))
    return (await retention.SetRetentionPolicy(request)).policy


async def conversation(sessions, messages, n: int, *, user: str = "ann", app: str = "chat") -> str:
    """A session of `app` with n messages; message i used i tokens and costs 0.001 * i."""
    session = await new_session(sessions, user, app_name=app)
    for i in range(1, n + 1):
        await add(messages, session.session_id, f"m{i}", tokens_used=i, cost=f"{i / 1000:.3f}")
    return session.session_id


async def age_messages(sql, session_id: str, through: int, days: int = 2) -> None:
    """Make the messages up to `through` `days` older (their order by time stays their sequence order)."""
    await sql.execute(
        "UPDATE messages SET create_time = create_time - make_interval(days => $3) "
        "WHERE session_id = $1 AND sequence <= $2", session_id, through, days,
    )


async def age_session(sql, session_id: str, days: int = 2) -> None:
    await sql.execute("UPDATE sessions SET update_time = update_time - make_interval(days => $2) WHERE id = $1",
                      session_id, days)


async def sequences(sql, session_id: str) -> list[int]:
    return [r["sequence"] for r in await sql.fetch(
        "SELECT sequence FROM messages WHERE session_id = $1 ORDER BY sequence", session_id)]


async def totals(sql, session_id: str) -> tuple[int, int, str]:
    row = await sql.fetchrow("SELECT message_count, total_tokens, total_cost::text AS cost FROM sessions WHERE id = $1",
                             session_id)
    return row["message_count"], row["total_tokens"], row["cost"]


async def exists(sql, session_id: str) -> bool:
    return await sql.fetchval("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1)", session_id)


async def everything(sql) -> tuple[int, int, int]:
    return (await sql.fetchval("SELECT count(*) FROM sessions"), await sql.fetchval("SELECT count(*) FROM messages"),
            await sql.fetchval("SELECT count(*) FROM session_changes"))


# -- the policies ------------------------------------------------------------------------------


async def test_a_policy_is_set_read_replaced_and_deleted(retention):
    stored = await set_policy(retention, "chat", closed_session_ttl=seconds(30 * DAY), max_messages_per_session=100)
    assert stored.closed_session_ttl.seconds == 30 * DAY and stored.max_messages_per_session == 100
    assert not stored.HasField("message_ttl") and stored.HasField("update_time")
    found = (await retention.GetRetentionPolicy(pb.GetRetentionPolicyRequest(app_name="chat"))).policy
    assert found == stored
    replaced = await set_policy(retention, "chat", message_ttl=seconds(7 * DAY))  # replaces the whole policy
    assert replaced.message_ttl.seconds == 7 * DAY
    assert not replaced.HasField("closed_session_ttl") and not replaced.HasField("max_messages_per_session")
    assert (await retention.DeleteRetentionPolicy(pb.DeleteRetentionPolicyRequest(app_name="chat"))).deleted
    assert not (await retention.DeleteRetentionPolicy(pb.DeleteRetentionPolicyRequest(app_name="chat"))).deleted
    failure = await expect_failure(retention.GetRetentionPolicy(pb.GetRetentionPolicyRequest(app_name="chat")))
    assert failure.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (pb.RetentionPolicy(app_name="chat"), "policy"),
        (pb.RetentionPolicy(max_messages_per_session=5), "policy.app_name"),
        (pb.RetentionPolicy(app_name="chat", message_ttl=seconds(0)), "policy.message_ttl"),
        (pb.RetentionPolicy(app_name="chat", closed_session_ttl=seconds(-5)), "policy.closed_session_ttl"),
        (pb.RetentionPolicy(app_name="chat", max_messages_per_session=0), "policy.max_messages_per_session"),
        (pb.RetentionPolicy(app_name="no spaces", max_messages_per_session=5), "policy.app_name"),
    ],
)
async def test_a_policy_without_a_rule_or_with_a_bad_value_is_invalid(retention, policy, field):
    failure = await expect_failure(retention.SetRetentionPolicy(pb.SetRetentionPolicyRequest(policy=policy)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.field_violations


@pytest.mark.parametrize("app_name", ["", "no spaces", "x" * 300])
@pytest.mark.parametrize("method", ["GetRetentionPolicy", "DeleteRetentionPolicy"])
async def test_reading_or_deleting_a_policy_of_a_bad_app_name_is_invalid_naming_it(retention, method, app_name):
    request = getattr(pb, f"{method}Request")(app_name=app_name)
    failure = await expect_failure(getattr(retention, method)(request))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "app_name" in failure.field_violations


# -- what each rule removes, and nothing else ---------------------------------------------------


async def test_closed_session_ttl_deletes_old_closed_sessions_of_the_app_only(sessions, messages, retention, service, sql):
    await set_policy(retention, "chat", closed_session_ttl=seconds(DAY))
    doomed, kept = [], []
    for status in (pb.SESSION_STATUS_ENDED, pb.SESSION_STATUS_EXPIRED, pb.SESSION_STATUS_ARCHIVED,
                   pb.SESSION_STATUS_COMPLETED):
        old = await conversation(sessions, messages, 3)
        await set_status(sessions, old, status)
        await age_session(sql, old)
        doomed.append(old)
        recent = await conversation(sessions, messages, 3)
        await set_status(sessions, recent, status)
        kept.append(recent)
    idle = await conversation(sessions, messages, 3)  # ACTIVE, however old: never deleted by this rule
    await age_session(sql, idle, days=30)
    await age_messages(sql, idle, 3, days=30)
    other_app = await conversation(sessions, messages, 3, app="other")
    await set_status(sessions, other_app, pb.SESSION_STATUS_ENDED)
    await age_session(sql, other_app)
    kept += [idle, other_app]

    report = await service.prune()
    assert report is not None and report.removed == {("chat", Rule.CLOSED_SESSION_TTL): 4}
    for session_id in doomed:
        assert not await exists(sql, session_id)
        assert await sequences(sql, session_id) == []
        # As DeleteSession: the feed keeps only SESSION_DELETED of it.
        kinds = [r["kind"] for r in await sql.fetch("SELECT kind FROM session_changes WHERE session_id = $1", session_id)]
        assert kinds == ["session_deleted"]
    for session_id in kept:
        assert await exists(sql, session_id) and await sequences(sql, session_id) == [1, 2, 3]


async def test_message_ttl_deletes_the_old_messages_only_and_leaves_totals_frozen(
    sessions, messages, retention, usage, service, sql
):
    await set_policy(retention, "chat", message_ttl=seconds(DAY))
    active = await conversation(sessions, messages, 10)
    await age_messages(sql, active, 4)
    ended = await conversation(sessions, messages, 5)
    await age_messages(sql, ended, 5)
    await set_status(sessions, ended, pb.SESSION_STATUS_ENDED)
    fresh = await conversation(sessions, messages, 5)
    other_app = await conversation(sessions, messages, 5, app="other")
    await age_messages(sql, other_app, 5)
    before = {s: await totals(sql, s) for s in (active, ended)}

    report = await service.prune()
    assert report is not None and report.removed == {("chat", Rule.MESSAGE_TTL): 9}
    assert await sequences(sql, active) == list(range(5, 11))
    assert await sequences(sql, ended) == []
    assert await sequences(sql, fresh) == [1, 2, 3, 4, 5]
    assert await sequences(sql, other_app) == [1, 2, 3, 4, 5]
    # FROZEN: message_count remains the last sequence, tokens and cost count what was written.
    assert {s: await totals(sql, s) for s in (active, ended)} == before
    assert before[active] == (10, 55, "0.055")
    # New messages go on after the last sequence, gapless.
    assert (await add(messages, active, "next", tokens_used=11)).sequence == 11
    assert await sequences(sql, active) == list(range(5, 12))
    # The usage ledger sums what remains: the pruned messages have left it.
    now = datetime.now(timezone.utc)
    found = await usage.GetUsage(pb.GetUsageRequest(
        user_id="ann", bucket=pb.USAGE_BUCKET_MONTH,
        start_time=timestamp_pb2.Timestamp(seconds=int((now - timedelta(days=60)).timestamp())),
        end_time=timestamp_pb2.Timestamp(seconds=int((now + timedelta(days=1)).timestamp())),
    ))
    remaining = await sql.fetchrow("SELECT count(*) AS n, sum(tokens_used) AS t FROM messages WHERE user_id = 'ann'")
    assert (found.message_count, found.total_tokens) == (remaining["n"], remaining["t"])
    # The feed: the pruned messages' MESSAGE_ADDED are gone, one MESSAGES_REMOVED says so.
    changes = await sql.fetch("SELECT kind, sequence FROM session_changes WHERE session_id = $1 ORDER BY change_id",
                              active)
    assert [c["sequence"] for c in changes if c["kind"] == "message_added"] == list(range(5, 12))
    assert [c["kind"] for c in changes].count("messages_removed") == 1


async def test_max_messages_per_session_keeps_the_newest_n(sessions, messages, retention, service, sql):
    await set_policy(retention, "chat", max_messages_per_session=3)
    long = await conversation(sessions, messages, 10)
    short = await conversation(sessions, messages, 2)
    other_app = await conversation(sessions, messages, 10, app="other")
    report = await service.prune()
    assert report is not None and report.removed == {("chat", Rule.MAX_MESSAGES_PER_SESSION): 7}
    assert await sequences(sql, long) == [8, 9, 10]
    assert await sequences(sql, short) == [1, 2]
    assert await sequences(sql, other_app) == list(range(1, 11))
    assert await totals(sql, long) == (10, 55, "0.055")
    await add(messages, long, "eleven")
    again = await service.prune()
    assert again is not None and again.removed == {("chat", Rule.MAX_MESSAGES_PER_SESSION): 1}
    assert await sequences(sql, long) == [9, 10, 11]
    nothing = await service.prune()
    assert nothing is not None and nothing.removed == {}


async def test_a_pruned_session_lists_newest_first_without_an_empty_last_page(
    sessions, messages, retention, service, sql
):
    await set_policy(retention, "chat", max_messages_per_session=4)
    sid = await conversation(sessions, messages, 10)
    await service.prune()
    for request in (
        pb.ListMessagesRequest(session_id=sid, order_by="sequence desc", page_size=2),
        pb.ListMessagesRequest(session_id=sid, order_by="sequence desc", page_size=2, start_time=seconds_since_epoch(0)),
    ):
        pages, token = [], ""
        while True:
            request.page_token = token
            page = await messages.ListMessages(request)
            pages.append([m.sequence for m in page.messages])
            token = page.next_page_token
            if not token:
                break
        assert pages == [[10, 9], [8, 7]]


async def test_a_pass_works_in_batches_of_at_most_the_batch_size(sessions, messages, retention, service, sql):
    await set_policy(retention, "chat", max_messages_per_session=1, closed_session_ttl=seconds(DAY))
    ids = [await conversation(sessions, messages, 6) for _ in range(3)]
    closed = [await conversation(sessions, messages, 2) for _ in range(5)]
    for session_id in closed:
        await set_status(sessions, session_id, pb.SESSION_STATUS_ENDED)
        await age_session(sql, session_id)
    seen: list[int] = []

    async def between(report) -> None:
        seen.append(report.total)

    report = await pruning.prune(service.db, 4, between=between)
    assert report is not None
    assert report.removed == {("chat", Rule.CLOSED_SESSION_TTL): 5, ("chat", Rule.MAX_MESSAGES_PER_SESSION): 15}
    steps = [b - a for a, b in zip([0, *seen], seen)]
    assert max(steps) <= 4 and len(seen) == report.batches >= 6
    for session_id in ids:
        assert await sequences(sql, session_id) == [6]


async def test_a_message_both_rules_would_remove_counts_once_under_message_ttl(sessions, messages, retention, service, sql):
    await set_policy(retention, "chat", message_ttl=seconds(DAY), max_messages_per_session=4)
    session_id = await conversation(sessions, messages, 10)
    await age_messages(sql, session_id, 3)
    report = await service.prune()
    assert report is not None
    assert report.removed == {("chat", Rule.MESSAGE_TTL): 3, ("chat", Rule.MAX_MESSAGES_PER_SESSION): 3}
    assert await sequences(sql, session_id) == [7, 8, 9, 10]


# -- dry run and CLI --------------------------------------------------------------------------


async def _mixed(sessions, messages, retention, sql) -> None:
    await set_policy(retention, "chat", closed_session_ttl=seconds(DAY), message_ttl=seconds(DAY),
                     max_messages_per_session=5)
    await set_policy(retention, "support", max_messages_per_session=2)
    closed = await conversation(sessions, messages, 8)
    await age_messages(sql, closed, 8)
    await set_status(sessions, closed, pb.SESSION_STATUS_ENDED)
    await age_session(sql, closed)
    aged = await conversation(sessions, messages, 9)
    await age_messages(sql, aged, 2)
    await conversation(sessions, messages, 4)
    await conversation(sessions, messages, 6, app="support")
    await conversation(sessions, messages, 6, app="unruled")


async def test_a_dry_run_removes_nothing_and_reports_what_a_real_pass_then_removes(
    sessions, messages, retention, service, sql
):
    await _mixed(sessions, messages, retention, sql)
    before = await everything(sql)
    dry = await pruning.dry_run(service.db)
    assert await everything(sql) == before
    assert dry.removed == {
        ("chat", Rule.CLOSED_SESSION_TTL): 1, ("chat", Rule.MESSAGE_TTL): 2,
        ("chat", Rule.MAX_MESSAGES_PER_SESSION): 2, ("support", Rule.MAX_MESSAGES_PER_SESSION): 4,
    }
    real = await service.prune()
    assert real is not None and real.removed == dry.removed
    assert (await pruning.dry_run(service.db)).removed == {}


async def test_the_prune_command_dry_run_prints_per_app_and_rule_and_removes_nothing(
    sessions, messages, retention, sql, database_url
):
    await _mixed(sessions, messages, retention, sql)
    before = await everything(sql)
    code, output = await run_cli("prune", "--dry-run", database_url=database_url)
    assert code == 0, output
    assert "chat\tclosed_session_ttl\twould remove 1 sessions" in output
    assert "chat\tmessage_ttl\twould remove 2 messages" in output
    assert "support\tmax_messages_per_session\twould remove 4 messages" in output
    assert "would remove 9 rows in all" in output
    assert await everything(sql) == before
    code, output = await run_cli("prune", database_url=database_url, SESSION_PRUNE_BATCH="3")
    assert code == 0, output
    assert "support\tmax_messages_per_session\tremoved 4 messages" in output and "removed 9 rows in all" in output
    assert await sql.fetchval("SELECT count(*) FROM messages") == before[1] - 8 - 2 - 2 - 4


# -- the job, its metric and its lock ----------------------------------------------------------


async def test_the_server_prunes_by_itself_and_counts_rows_per_app_and_kind(database_url, sql):
    metrics_port = free_port()
    async with serving_with(database_url, prune_interval=0.2, metrics_port=metrics_port) as (server, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        await set_policy(rpc.RetentionServiceStub(channel), "chat", max_messages_per_session=2)
        session_id = await conversation(sessions, messages, 7)
        key = ("session_grpc_pruned_rows_total", (("app_name", "chat"), ("kind", "max_messages_per_session")))

        async def pruned_rows() -> float:
            return (await scrape(server.metrics_port)).get(key, 0.0)

        # Generous deadlines: on a loaded box a pass (every 0.2 s) can be seconds apart.
        for _ in range(600):
            if await sequences(sql, session_id) == [6, 7] and await pruned_rows() == 5:
                break
            await asyncio.sleep(0.1)
        assert await sequences(sql, session_id) == [6, 7]
        assert await pruned_rows() == 5  # 7 written, 2 kept: whichever passes removed them
        await add(messages, session_id)
        for _ in range(600):
            if await pruned_rows() == 6:
                break
            await asyncio.sleep(0.1)
        assert await pruned_rows() == 6 and await sequences(sql, session_id) == [7, 8]


async def test_only_one_of_two_concurrent_passes_prunes(sessions, messages, retention, service, database_url, sql):
    await set_policy(retention, "chat", max_messages_per_session=1)
    ids = [await conversation(sessions, messages, 4) for _ in range(3)]
    other = Database(create_engine(test_settings(database_url)))  # a second replica's pool
    paused, go_on = asyncio.Event(), asyncio.Event()

    async def between(report) -> None:
        paused.set()
        await go_on.wait()

    first = asyncio.create_task(pruning.prune(service.db, 2, between=between))
    try:
        await asyncio.wait_for(paused.wait(), 10)
        # While the first pass is between two batches (holding the lock), every other pruner skips.
        assert await pruning.prune(other, 2) is None
        async with serving_with(database_url) as (second_server, _):
            assert await second_server.prune() is None
        code, output = await run_cli("prune", database_url=database_url)
        assert code == 1 and "another prune pass is running" in output
        go_on.set()
        report = await asyncio.wait_for(first, 30)
    finally:
        go_on.set()
        await other.close()
    assert report is not None and report.removed == {("chat", Rule.MAX_MESSAGES_PER_SESSION): 9}
    for session_id in ids:
        assert await sequences(sql, session_id) == [4]
    again = await pruning.prune(service.db, 2)  # the lock went with the pass
    assert again is not None and again.removed == {}


# -- rewinds and forks of pruned sessions --------------------------------------------------------


async def test_a_rewind_before_the_first_message_left_is_refused_and_one_after_is_exact(
    sessions, messages, retention, service, sql
):
    await set_policy(retention, "chat", max_messages_per_session=4)
    session_id = await conversation(sessions, messages, 10)
    await service.prune()
    assert await sequences(sql, session_id) == [7, 8, 9, 10]
    failure = await expect_failure(sessions.TruncateSession(
        pb.TruncateSessionRequest(session_id=session_id, last_sequence=5)))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "PRUNED_BY_RETENTION"
    assert failure.error_metadata == {"firstSequence": "7"}
    assert await totals(sql, session_id) == (10, 55, "0.055")  # nothing changed
    rewound = await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=session_id, last_sequence=8))
    assert rewound.removed_message_count == 2
    assert await totals(sql, session_id) == (8, 55 - 9 - 10, "0.036")
    assert (await add(messages, session_id)).sequence == 9
    assert await sequences(sql, session_id) == [7, 8, 9]


async def test_a_fork_of_a_pruned_session_goes_on_after_the_last_sequence(sessions, messages, retention, service, sql):
    await set_policy(retention, "chat", max_messages_per_session=3)
    session_id = await conversation(sessions, messages, 6)
    await service.prune()
    fork = (await sessions.ForkSession(pb.ForkSessionRequest(session_id=session_id))).session
    assert fork.message_count == 6  # the last sequence, as the source's
    assert await sequences(sql, fork.session_id) == [4, 5, 6]
    assert await totals(sql, fork.session_id) == (6, 15, "0.015")  # the totals of what it copied
    assert (await add(messages, fork.session_id)).sequence == 7


async def test_a_prune_racing_rewinds_never_corrupts_the_counts(sessions, messages, retention, service, sql):
    await set_policy(retention, "chat", max_messages_per_session=5)
    rng = random.Random(13)
    for _ in range(12):
        session_id = await conversation(sessions, messages, 12)
        target = rng.randint(0, 11)
        prune = asyncio.ensure_future(pruning.prune(service.db, 2))
        rewind = asyncio.ensure_future(sessions.TruncateSession(
            pb.TruncateSessionRequest(session_id=session_id, last_sequence=target)))
        await asyncio.gather(prune, rewind, return_exceptions=True)
        if rewind.exception() is not None:
            assert failure_reason(rewind.exception()) == "PRUNED_BY_RETENTION"
        await pruning.prune(service.db, 2)
        count, tokens, _ = await totals(sql, session_id)
        left = await sequences(sql, session_id)
        # The messages left are a gapless run ending at the last sequence, at most the newest 5 (a
        # rewind after a first batch may leave fewer: the pruned prefix stays pruned); the totals are
        # those of every message written up to it (message i used i tokens).
        assert count == (target if rewind.exception() is None else 12)
        assert left == list(range(left[0], count + 1)) if left else True
        assert len(left) <= 5 and (not left or left[0] >= count - 4)
        assert tokens == count * (count + 1) // 2
        assert (await add(messages, session_id)).sequence == count + 1


async def test_an_erasure_racing_a_prune_of_the_same_user_both_finish_and_leave_nothing_of_the_user(
    channel, sessions, messages, retention, service, sql
):
    """DeleteUserData locks the user's sessions and removes their feed and feed counter; a prune
    batch locks sessions (SKIP LOCKED) and records MESSAGES_REMOVED in the same feed: whichever way
    the two interleave, neither fails and nothing of the user is left (a deadlock between them
    would be retried by the database layer or reach the caller; the count is printed)."""
    userdata = rpc.UserDataServiceStub(channel)
    await set_policy(retention, "chat", max_messages_per_session=5)
    deadlocks_before = await sql.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    bystander = await conversation(sessions, messages, 8, user="bystander")
    for race in range(12):
        who = f"erased-{race}"
        made = [await conversation(sessions, messages, 9, user=who) for _ in range(3)]
        prune = asyncio.ensure_future(pruning.prune(service.db, 2))
        erase = asyncio.ensure_future(userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=who)))
        if race % 2:
            prune, erase = erase, prune  # either one first
        await asyncio.gather(prune, erase)
        for session_id in made:
            assert not await exists(sql, session_id)
        assert await sql.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", who) == 0
        assert await sql.fetchval("SELECT count(*) FROM session_changes WHERE user_id = $1", who) == 0
    await pruning.prune(service.db, 100)
    assert await sequences(sql, bystander) == [4, 5, 6, 7, 8]
    deadlocks = await sql.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    print(f"deadlocks detected by PostgreSQL during the races: {deadlocks - deadlocks_before}")


def failure_reason(error: BaseException) -> str:
    from .helpers import failure

    assert isinstance(error, grpc.aio.AioRpcError)
    return failure(error).reason


# -- the key test: a prune under AddMessage load ------------------------------------------------


async def test_a_prune_under_add_message_load_loses_nothing_it_should_keep(sessions, messages, retention, service, sql):
    keep = 15
    per_writer = 40
    await set_policy(retention, "pruned", max_messages_per_session=keep)
    pruned = [(await new_session(sessions, "ann", app_name="pruned")).session_id for _ in range(4)]
    unruled = [(await new_session(sessions, "bob", app_name="free")).session_id for _ in range(4)]
    acknowledged: dict[str, list[tuple[int, str, int]]] = {s: [] for s in pruned + unruled}

    async def writer(session_id: str, offset: int) -> None:
        for i in range(per_writer):
            tokens = offset * 1000 + i
            message = await add(messages, session_id, f"w{offset}-{i}", tokens_used=tokens)
            acknowledged[session_id].append((message.sequence, message.message_id, tokens))

    writers = asyncio.gather(*(writer(s, w) for s in pruned + unruled for w in range(2)))
    passes = 0
    removed = 0
    while not writers.done():
        report = await pruning.prune(service.db, 7)
        assert report is not None
        removed += report.total
        passes += 1
        await asyncio.sleep(0.01)
    await writers
    final = await pruning.prune(service.db, 7)
    assert final is not None
    removed += final.total
    assert passes >= 2 and removed > 0

    written = 2 * per_writer
    for session_id in pruned + unruled:
        acked = sorted(acknowledged[session_id])
        assert [seq for seq, _, _ in acked] == list(range(1, written + 1))  # gapless, none lost or doubled
        stored = await sql.fetch("SELECT sequence, id::text AS id, tokens_used FROM messages WHERE session_id = $1 "
                                 "ORDER BY sequence", session_id)
        wanted = acked[-keep:] if session_id in pruned else acked
        assert [(r["sequence"], r["id"], r["tokens_used"]) for r in stored] == wanted
        assert await totals(sql, session_id) == (written, sum(t for _, _, t in acked), "0")
    assert removed == len(pruned) * (written - keep)


async def test_a_watcher_sees_the_pruned_messages_go_as_messages_removed(sessions, messages, retention, service):
    await set_policy(retention, "chat", max_messages_per_session=2)
    session_id = await conversation(sessions, messages, 5)
    await service.prune()
    seen: list[pb.SessionChange] = []
    call = sessions.WatchSession(pb.WatchSessionRequest(session_id=session_id, after_change_id=0))
    try:
        async with asyncio.timeout(20):
            async for response in call:
                if response.HasField("change"):
                    seen.append(response.change)
                if seen and seen[-1].kind == pb.CHANGE_KIND_MESSAGES_REMOVED:
                    break
    finally:
        call.cancel()
    kinds = [change.kind for change in seen]
    assert kinds == [pb.CHANGE_KIND_SESSION_CREATED, pb.CHANGE_KIND_MESSAGE_ADDED, pb.CHANGE_KIND_MESSAGE_ADDED,
                     pb.CHANGE_KIND_MESSAGES_REMOVED]
    assert [change.message.sequence for change in seen[1:3]] == [4, 5]  # the pruned ones' changes are gone
    assert seen[-1].session.message_count == 5  # frozen: the last sequence, not what is stored
    assert seen[-1].first_sequence == 4  # what is left: 4..5


async def test_messages_removed_says_where_the_messages_left_begin_after_prunes_and_rewinds(
    sessions, messages, retention, service
):
    """first_sequence..message_count is what is stored after each MESSAGES_REMOVED: a prune cuts the
    start, a rewind the end (after a prune too), and a rewind or a message_ttl prune that leaves
    nothing says 0."""
    await set_policy(retention, "chat", max_messages_per_session=3)
    session_id = await conversation(sessions, messages, 7)
    await service.prune()  # 5..7 left
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=session_id, last_sequence=6))  # 5..6
    for n in range(3):
        await add(messages, session_id, f"again {n}")  # 5..9
    await service.prune()  # 7..9
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=session_id, last_sequence=6))  # none
    other = await conversation(sessions, messages, 2)
    await sessions.TruncateSession(pb.TruncateSessionRequest(session_id=other, last_sequence=0))  # none
    async def removals(watched: str, count: int) -> list[tuple[int, int]]:
        """(first_sequence, message_count) of the session's first `count` MESSAGES_REMOVED."""
        found: list[tuple[int, int]] = []
        call = sessions.WatchSession(pb.WatchSessionRequest(session_id=watched, after_change_id=0))
        try:
            async with asyncio.timeout(20):
                async for response in call:
                    if response.change.kind == pb.CHANGE_KIND_MESSAGES_REMOVED:
                        found.append((response.change.first_sequence, response.change.session.message_count))
                    if len(found) == count:
                        return found
        finally:
            call.cancel()
        return found

    assert await removals(session_id, 4) == [(5, 7), (5, 6), (7, 9), (0, 6)]
    assert await removals(other, 1) == [(0, 0)]
