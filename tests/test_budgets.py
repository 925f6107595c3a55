"""Budgets: enforced limits refuse the append whole (RESOURCE_EXHAUSTED, QuotaFailure naming the
limit, nothing stored), soft ones report it; per user and per app, per UTC day and month; at most
the limit under 32 concurrent writers; no lock for users without a budget; who sets and reads."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date, datetime, timedelta, timezone

import grpc
import pytest

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc

from .helpers import add, expect_failure, new_session, serving_with
from .test_auth import Stubs, dev, token_server  # noqa: F401 - dev is a fixture
from .test_observability import scrape
from session_grpc.testing import free_port


@pytest.fixture(scope="module")
def usage(channel: grpc.aio.Channel) -> rpc.UsageServiceStub:
    return rpc.UsageServiceStub(channel)


async def set_budget(usage, **fields) -> pb.Budget:
    return (await usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(**fields)))).budget


def uses(response: pb.GetBudgetResponse) -> dict[str, tuple[str, str, str]]:
    return {u.limit: (u.limit_value, u.used, u.remaining) for u in response.usage}


async def stored(sql, user: str) -> tuple[int, int]:
    row = await sql.fetchrow("SELECT count(*) AS n, coalesce(sum(tokens_used), 0) AS t FROM messages WHERE user_id = $1",
                             user)
    return row["n"], row["t"]


async def test_an_append_past_an_enforced_limit_is_refused_whole_naming_the_limit(sessions, messages, usage, sql):
    await set_budget(usage, user_id="ann", daily_tokens=100)
    session = await new_session(sessions, "ann")
    for _ in range(3):
        await add(messages, session.session_id, tokens_used=30)
    failure = await expect_failure(add(messages, session.session_id, tokens_used=11))
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure.reason == "BUDGET_EXCEEDED"
    assert failure.quota_subject == "user:ann/daily_tokens"
    assert failure.error_metadata == {"budget": "user:ann", "limit": "daily_tokens"}
    assert await stored(sql, "ann") == (3, 90)  # nothing of the refused append
    summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session.session_id))).summary
    assert (summary.message_count, summary.total_tokens) == (3, 90)
    await add(messages, session.session_id, tokens_used=10)  # exactly up to the limit is allowed
    found = await usage.GetBudget(pb.GetBudgetRequest(user_id="ann"))
    assert uses(found) == {"daily_tokens": ("100", "100", "0")}
    today = datetime.now(timezone.utc).date()
    assert found.usage[0].period_start.ToDatetime(timezone.utc).date() == today


async def test_cost_limits_are_exact_decimals_and_monthly(sessions, messages, usage, sql):
    await set_budget(usage, user_id="ann", monthly_cost="0.3")
    session = await new_session(sessions, "ann")
    for _ in range(3):
        await add(messages, session.session_id, cost="0.1")  # 0.1 + 0.1 + 0.1 is exactly 0.3
    failure = await expect_failure(add(messages, session.session_id, cost="0.000000000000000001"))
    assert failure.quota_subject == "user:ann/monthly_cost"
    assert uses(await usage.GetBudget(pb.GetBudgetRequest(user_id="ann"))) == {"monthly_cost": ("0.3", "0.3", "0.0")}
    await add(messages, session.session_id, cost="0")  # a free message still fits


async def test_a_batch_past_the_limit_stores_none_of_its_messages(sessions, messages, usage, sql):
    await set_budget(usage, user_id="ann", daily_tokens=10)
    session = await new_session(sessions, "ann")
    batch = [pb.NewMessage(role=pb.ROLE_USER, content="x", tokens_used=4) for _ in range(3)]
    failure = await expect_failure(messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id,
                                                                              messages=batch)))
    assert failure.quota_subject == "user:ann/daily_tokens"
    assert await stored(sql, "ann") == (0, 0)
    added = await messages.AddMessages(pb.AddMessagesRequest(session_id=session.session_id, messages=batch[:2]))
    assert len(added.messages) == 2 and not added.over_budget


async def test_a_soft_limit_stores_and_reports_with_a_flag_a_metric_and_a_log_line(database_url, caplog):
    async with serving_with(database_url, metrics_port=free_port()) as (server, channel):
        sessions, messages = rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel)
        usage = rpc.UsageServiceStub(channel)
        await set_budget(usage, app_name="travel", daily_tokens=50, monthly_cost="1", soft=True)
        session = (await sessions.CreateSession(pb.CreateSessionRequest(user_id="ann", app_name="travel"))).session
        first = await messages.AddMessage(pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_USER,
                                                               content="a", tokens_used=40))
        assert not first.over_budget and list(first.soft_limits_exceeded) == []
        with caplog.at_level(logging.WARNING, logger="session_grpc.storage.budgets"):
            second = await messages.AddMessage(pb.AddMessageRequest(session_id=session.session_id, role=pb.ROLE_USER,
                                                                    content="b", tokens_used=40, cost="2"))
        assert second.over_budget
        assert list(second.soft_limits_exceeded) == ["app:travel/daily_tokens", "app:travel/monthly_cost"]
        assert second.message.sequence == 2  # stored all the same
        assert "app:travel/daily_tokens" in caplog.text
        samples = await scrape(server.metrics_port)
        key = ("session_grpc_budget_soft_exceeded_total", (("app_name", "travel"), ("limit", "daily_tokens")))
        assert samples[key] == 1
        found = await usage.GetBudget(pb.GetBudgetRequest(app_name="travel"))
        assert uses(found)["daily_tokens"] == ("50", "80", "0")


async def test_an_app_budget_counts_every_user_of_the_app_and_no_other_app(sessions, messages, usage, sql):
    await set_budget(usage, app_name="travel", daily_tokens=100)
    ann = await new_session(sessions, "ann", app_name="travel")
    bob = await new_session(sessions, "bob", app_name="travel")
    elsewhere = await new_session(sessions, "bob", app_name="chat")
    await add(messages, ann.session_id, tokens_used=60)
    failure = await expect_failure(add(messages, bob.session_id, tokens_used=41))
    assert failure.quota_subject == "app:travel/daily_tokens"
    await add(messages, elsewhere.session_id, tokens_used=1000)  # another app: no budget
    await add(messages, bob.session_id, tokens_used=40)


async def test_both_a_user_and_an_app_budget_apply_and_the_first_limit_passed_is_named(sessions, messages, usage):
    await set_budget(usage, app_name="travel", daily_tokens=1000)
    await set_budget(usage, user_id="ann", daily_cost="0.5")
    session = await new_session(sessions, "ann", app_name="travel")
    await add(messages, session.session_id, tokens_used=900, cost="0.4")
    failure = await expect_failure(add(messages, session.session_id, tokens_used=200, cost="0.01"))
    assert failure.quota_subject == "app:travel/daily_tokens"  # the app's row comes first (key order)
    failure = await expect_failure(add(messages, session.session_id, tokens_used=1, cost="0.2"))
    assert failure.quota_subject == "user:ann/daily_cost"


@pytest.mark.parametrize("with_app_budget", [False, True])
async def test_32_concurrent_writers_never_pass_an_enforced_limit(sessions, messages, usage, sql, with_app_budget):
    """Through the real server: 32 appends of 7 tokens at once, limit 100: exactly 14 land (the 15th
    would make 105), across sessions of the user, so only the budget row serializes them."""
    if with_app_budget:
        await set_budget(usage, app_name="busy", daily_tokens=10_000)  # both rows locked, in key order
    await set_budget(usage, user_id="ann", daily_tokens=100)
    targets = [await new_session(sessions, "ann", app_name="busy") for _ in range(8)]
    results = await asyncio.gather(
        *(add(messages, targets[i % 8].session_id, tokens_used=7) for i in range(32)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused), refused
    assert len(results) - len(refused) == 14
    assert await stored(sql, "ann") == (14, 98)
    found = uses(await usage.GetBudget(pb.GetBudgetRequest(user_id="ann")))
    assert found["daily_tokens"] == ("100", "98", "2")


async def test_an_append_without_a_budget_never_waits_for_a_budget_row(sessions, messages, usage, database_url):
    """Someone holds the lock of alice's and of app travel's budget rows; bob's appends in app chat
    go through at once (his statement only probes for budgets of his own)."""
    import asyncpg

    await set_budget(usage, user_id="alice", daily_tokens=10)
    await set_budget(usage, app_name="travel", daily_tokens=10)
    bob = await new_session(sessions, "bob", app_name="chat")
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT * FROM budgets FOR UPDATE")
            added = await asyncio.wait_for(add(messages, bob.session_id, tokens_used=5), timeout=10)
            assert added.sequence == 1
            alice = await new_session(sessions, "alice", app_name="chat")
            waiting = asyncio.ensure_future(add(messages, alice.session_id, tokens_used=1))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # a budgeted append does wait for the row
        assert (await waiting).sequence == 1
    finally:
        await holder.close()


async def test_a_repeated_request_id_returns_the_first_append_without_charging_it_twice(sessions, messages, usage):
    await set_budget(usage, user_id="ann", daily_tokens=10)
    session = await new_session(sessions, "ann")
    rid = str(uuid.uuid4())
    first = await add(messages, session.session_id, tokens_used=10, request_id=rid)
    again = await add(messages, session.session_id, tokens_used=10, request_id=rid)
    assert again.message_id == first.message_id
    assert uses(await usage.GetBudget(pb.GetBudgetRequest(user_id="ann")))["daily_tokens"] == ("10", "10", "0")


async def test_what_is_used_starts_over_in_a_new_day_and_month(sessions, messages, usage, sql):
    await set_budget(usage, user_id="ann", daily_tokens=10, monthly_tokens=25)
    session = await new_session(sessions, "ann")
    await add(messages, session.session_id, tokens_used=10)
    await sql.execute("UPDATE budgets SET day = day - 1")  # as if that was yesterday
    found = uses(await usage.GetBudget(pb.GetBudgetRequest(user_id="ann")))
    assert found == {"daily_tokens": ("10", "0", "10"), "monthly_tokens": ("25", "10", "15")}
    await add(messages, session.session_id, tokens_used=10)
    failure = await expect_failure(add(messages, session.session_id, tokens_used=6))
    assert failure.quota_subject == "user:ann/daily_tokens"
    await sql.execute("UPDATE budgets SET day = day - 40, month = (month - 40)::date")  # last month
    await add(messages, session.session_id, tokens_used=10)
    found = uses(await usage.GetBudget(pb.GetBudgetRequest(user_id="ann")))
    assert found == {"daily_tokens": ("10", "10", "0"), "monthly_tokens": ("25", "10", "15")}


async def test_a_new_budget_starts_from_todays_and_this_months_usage_and_a_replaced_one_keeps_it(
    sessions, messages, usage, sql
):
    session = await new_session(sessions, "ann", app_name="travel")
    await add(messages, session.session_id, tokens_used=30, cost="0.25")
    old = await add(messages, session.session_id, tokens_used=1000)
    await sql.execute("UPDATE messages SET create_time = create_time - interval '400 days' WHERE id = $1::uuid",
                      old.message_id)
    await set_budget(usage, user_id="ann", daily_tokens=100, daily_cost="1")
    found = uses(await usage.GetBudget(pb.GetBudgetRequest(user_id="ann")))
    assert found == {"daily_tokens": ("100", "30", "70"), "daily_cost": ("1", "0.25", "0.75")}
    await set_budget(usage, app_name="travel", monthly_tokens=500)
    assert uses(await usage.GetBudget(pb.GetBudgetRequest(app_name="travel"))) == {"monthly_tokens": ("500", "30", "470")}
    replaced = await set_budget(usage, user_id="ann", daily_tokens=40, soft=True)
    assert replaced.daily_tokens == 40 and not replaced.HasField("monthly_tokens") and replaced.daily_cost == ""
    assert uses(await usage.GetBudget(pb.GetBudgetRequest(user_id="ann"))) == {"daily_tokens": ("40", "30", "10")}


async def test_a_deleted_budget_limits_nothing_and_deleting_again_is_not_an_error(sessions, messages, usage):
    await set_budget(usage, user_id="ann", daily_tokens=1)
    session = await new_session(sessions, "ann")
    await expect_failure(add(messages, session.session_id, tokens_used=5))
    assert (await usage.DeleteBudget(pb.DeleteBudgetRequest(user_id="ann"))).deleted
    assert not (await usage.DeleteBudget(pb.DeleteBudgetRequest(user_id="ann"))).deleted
    await add(messages, session.session_id, tokens_used=5)
    failure = await expect_failure(usage.GetBudget(pb.GetBudgetRequest(user_id="ann")))
    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_a_user_reads_their_own_budget_and_only_an_admin_sets_one(database_url, dev):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        alice, admin = Stubs(channel, "alice-token"), Stubs(channel, "admin-token")
        await admin.usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(user_id="alice", daily_tokens=5)),
                                    metadata=admin.metadata)
        await admin.usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(app_name="travel", daily_tokens=5)),
                                    metadata=admin.metadata)
        mine = await alice.usage.GetBudget(pb.GetBudgetRequest(), metadata=alice.metadata)
        assert mine.budget.user_id == "alice" and mine.budget.daily_tokens == 5
        failure = await expect_failure(alice.usage.GetBudget(pb.GetBudgetRequest(user_id="bob"), metadata=alice.metadata))
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_USER")
        failure = await expect_failure(
            alice.usage.GetBudget(pb.GetBudgetRequest(app_name="travel"), metadata=alice.metadata))
        assert failure.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
        for call in (
            alice.usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(user_id="alice", daily_tokens=10**6)),
                                  metadata=alice.metadata),
            alice.usage.DeleteBudget(pb.DeleteBudgetRequest(user_id="alice"), metadata=alice.metadata),
        ):
            failure = await expect_failure(call)
            assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
        travel = await admin.usage.GetBudget(pb.GetBudgetRequest(app_name="travel", user_id=""), metadata=admin.metadata)
        assert travel.budget.app_name == "travel"


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        ({"user_id": "ann", "app_name": "travel", "daily_tokens": 1}, "budget.user_id"),
        ({"daily_tokens": 1}, "budget.user_id"),
        ({"user_id": "ann"}, "budget"),
        ({"user_id": "ann", "daily_tokens": -1}, "budget.daily_tokens"),
        ({"user_id": "ann", "monthly_tokens": 2**63 - 1}, "budget.monthly_tokens"),
        ({"user_id": "ann", "daily_cost": "-1"}, "budget.daily_cost"),
        ({"user_id": "ann", "monthly_cost": "1e3"}, "budget.monthly_cost"),
        ({"app_name": "no spaces", "daily_tokens": 1}, "budget.app_name"),
        ({"user_id": "a\x00b", "daily_tokens": 1}, "budget.user_id"),
    ],
)
async def test_bad_budgets_are_invalid_argument_naming_the_field(usage, budget, field):
    failure = await expect_failure(usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(**budget))))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in failure.field_violations, failure.field_violations


@pytest.mark.parametrize("fields", [{}, {"user_id": "ann", "app_name": "travel"}, {"app_name": "-x"}])
async def test_get_and_delete_need_exactly_one_of_user_and_app(usage, fields):
    for call in (usage.GetBudget(pb.GetBudgetRequest(**fields)), usage.DeleteBudget(pb.DeleteBudgetRequest(**fields))):
        failure = await expect_failure(call)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


def test_period_helpers_count_a_passed_period_as_nothing_used():
    from decimal import Decimal

    from session_grpc.domain import budgets

    b = budgets.Budget(
        budgets.BudgetRef("ann"), budgets.BudgetLimits(daily_tokens=10, monthly_cost=Decimal("1")),
        today=date(2026, 3, 1), day=date(2026, 2, 28), day_tokens=9, day_cost=Decimal("0.5"),
        month=date(2026, 2, 1), month_tokens=9, month_cost=Decimal("0.9"), update_time=datetime.now(timezone.utc),
    )
    assert b.used("daily_tokens") == 0 and b.used("monthly_cost") == 0
    assert b.passed(10, Decimal("1")) == [] and b.passed(11, Decimal("1.1")) == ["daily_tokens", "monthly_cost"]
    assert b.period_start("monthly_cost") == date(2026, 3, 1) - timedelta(days=0)
