"""Budgets: set, read and delete them, and the budgeted append.

An append to a session without a budget is the one statement of storage/messages.py (its two
primary-key probes of budgets find nothing). One whose user or app has a budget runs here, in one
transaction: lock the budget rows (user's and app's, in key order, so two appends never wait on
each other crosswise), check the limits against what they say is used, append, add to what is
used, commit. Every budgeted append of a user (or an app) queues on that row lock, so the check and
the insert are serialized per budget: of 32 concurrent appends none can pass an enforced limit. The
lock is held for the append's statement and one UPDATE; sessions without a budget never take it.

What is used is kept in the budget row (what appends added since the period began), not read from
the messages: an app's month of messages is far too many to add up on every append, and spend is
spend (deleting or truncating messages gives nothing back; a fork's copies are not new use). A new
budget starts from the usage ledger's sums for the current day and month.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal

import asyncpg

from ..domain import budgets
from ..domain.errors import NotFound
from ..domain.records import NewMessages
from ..domain.usage import Appended
from . import messages
from .database import Database
from .rows import Row, fetch, fetch_one, owned
from .units import statement, transaction

log = logging.getLogger(__name__)

_COLUMNS = (
    "b.user_id, b.app_name, b.daily_tokens, b.monthly_tokens, b.daily_cost, b.monthly_cost, b.soft, b.day, "
    "b.day_tokens, b.day_cost, b.month, b.month_tokens, b.month_cost, b.update_time, "
    "(clock_timestamp() AT TIME ZONE 'UTC')::date AS today"
)
LOCK = f"""
SELECT {_COLUMNS} FROM sessions s
JOIN budgets b ON (b.user_id = s.user_id AND b.app_name = '') OR (b.user_id = '' AND b.app_name = s.app_name)
WHERE s.id = $1 AND {owned(2, "s.user_id")}
ORDER BY b.user_id, b.app_name
FOR UPDATE OF b
"""
# What is used starts over when the day (month) changes: the CASE reads the row's old period.
CHARGE = """
UPDATE budgets SET
    day_tokens = CASE WHEN day = $3 THEN day_tokens ELSE 0 END + $4,
    day_cost = CASE WHEN day = $3 THEN day_cost ELSE 0 END + $5,
    day = $3,
    month_tokens = CASE WHEN month = $6 THEN month_tokens ELSE 0 END + $4,
    month_cost = CASE WHEN month = $6 THEN month_cost ELSE 0 END + $5,
    month = $6
WHERE user_id = ANY($1::text[]) AND app_name = ANY($2::text[]) AND (user_id = '') <> (app_name = '')
"""
# A new budget starts from what the stored messages used today and this month (the ledger's index
# for a user; the app's sessions for an app); a replaced one keeps what it has used.
_TODAY = "(clock_timestamp() AT TIME ZONE 'UTC')::date"
_SET = """
WITH today AS (SELECT {today} AS day, date_trunc('month', {today})::date AS month),
used AS (
    SELECT coalesce(sum(m.tokens_used) FILTER (WHERE m.create_time >= t.day::timestamp AT TIME ZONE 'UTC'), 0) AS day_tokens,
           coalesce(sum(m.cost) FILTER (WHERE m.create_time >= t.day::timestamp AT TIME ZONE 'UTC'), 0) AS day_cost,
           coalesce(sum(m.tokens_used), 0) AS month_tokens, coalesce(sum(m.cost), 0) AS month_cost
    FROM today t LEFT JOIN messages m ON m.create_time >= t.month::timestamp AT TIME ZONE 'UTC' AND {whose}
)
INSERT INTO budgets AS b (user_id, app_name, daily_tokens, monthly_tokens, daily_cost, monthly_cost, soft,
                          day, day_tokens, day_cost, month, month_tokens, month_cost)
SELECT $1, $2, $3, $4, $5, $6, $7, t.day, u.day_tokens, u.day_cost, t.month, u.month_tokens, u.month_cost
FROM today t, used u
ON CONFLICT (user_id, app_name) DO UPDATE SET
    daily_tokens = excluded.daily_tokens, monthly_tokens = excluded.monthly_tokens,
    daily_cost = excluded.daily_cost, monthly_cost = excluded.monthly_cost, soft = excluded.soft,
    update_time = clock_timestamp()
RETURNING {columns}
"""
SET_USER = _SET.format(today=_TODAY, columns=_COLUMNS, whose="m.user_id = $1::text AND $2::text = ''")
SET_APP = _SET.format(
    today=_TODAY, columns=_COLUMNS,
    whose="$1::text = '' AND m.session_id IN (SELECT id FROM sessions WHERE app_name = $2::text)",
)
GET = f"SELECT {_COLUMNS} FROM budgets b WHERE b.user_id = $1 AND b.app_name = $2"
DELETE = "DELETE FROM budgets WHERE user_id = $1 AND app_name = $2"


def budget(row: Row) -> budgets.Budget:
    return budgets.Budget(
        budgets.BudgetRef(row["user_id"], row["app_name"]),
        budgets.BudgetLimits(row["daily_tokens"], row["monthly_tokens"], row["daily_cost"], row["monthly_cost"],
                             row["soft"]),
        row["today"], row["day"], row["day_tokens"], row["day_cost"], row["month"], row["month_tokens"],
        row["month_cost"], row["update_time"],
    )


@statement
async def set_budget(conn: asyncpg.Connection, ref: budgets.BudgetRef, limits: budgets.BudgetLimits) -> budgets.Budget:
    row = await fetch_one(conn, SET_USER if ref.user_id else SET_APP, ref.user_id, ref.app_name, limits.daily_tokens, limits.monthly_tokens,
                          limits.daily_cost, limits.monthly_cost, limits.soft)
    assert row is not None
    return budget(row)


@statement
async def get_budget(conn: asyncpg.Connection, ref: budgets.BudgetRef) -> budgets.Budget:
    row = await fetch_one(conn, GET, ref.user_id, ref.app_name)
    if row is None:
        raise NotFound("budget", ref.subject)
    return budget(row)


@statement
async def delete_budget(conn: asyncpg.Connection, ref: budgets.BudgetRef) -> bool:
    return await conn.execute(DELETE, ref.user_id, ref.app_name) != "DELETE 0"


@transaction
async def add_budgeted(conn: asyncpg.Connection, new: NewMessages) -> Appended:
    """The append of a session whose user or app has a budget: RESOURCE_EXHAUSTED (nothing stored)
    when it would pass an enforced limit, stored and reported when it passes a soft one."""
    found = [budget(row) for row in await fetch(conn, LOCK, new.session_id, new.owner)]
    tokens = sum(body.tokens_used for body in new.messages)
    cost = sum((body.cost for body in new.messages), Decimal(0))
    if found and new.request_id is not None:
        earlier = await fetch(conn, messages.BY_REQUEST_IDS, new.session_id,
                              messages.request_ids(new.request_id, len(new.messages)))
        if earlier:  # the repeat of an append that landed (and was charged) then: its first answer
            return await messages.append(conn, new, budgeted=True)
    soft: list[str] = []
    for held in found:
        for limit in held.passed(tokens, cost):
            if not held.limits.soft:
                raise budgets.refuse(held, limit, tokens, cost)
            soft.append(budgets.named(held, limit))
    appended = await messages.append(conn, new, budgeted=True)
    if found:
        users = [held.ref.user_id for held in found]
        apps = [held.ref.app_name for held in found]
        today = found[0].today
        await conn.execute(CHARGE, users, apps, today, tokens, cost, today.replace(day=1))
    if soft:
        log.warning("soft budget passed by an append to session %s: %s", new.session_id, ", ".join(soft))
    return replace(appended, soft_limits_exceeded=soft)


async def append(db: Database, new: NewMessages) -> Appended:
    """AddMessage(s): the one statement for a session without a budget, the budgeted transaction
    for one with (the statement says so by raising BudgetApplies, having written nothing)."""
    try:
        return await db.run(messages.add_messages, new)
    except messages.BudgetApplies:
        return await db.run(add_budgeted, new)
