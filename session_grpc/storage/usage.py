"""The usage ledger: GetUsage's totals, summed over the stored messages in one statement.

Nothing is kept beside the messages: a bucket's totals are computed from the messages that exist
when the statement runs, so they are exact after every kind of write (appends, deletions, forks,
truncations) without any write path having to adjust a rollup, and appends of one user never queue
on a shared per-user row. A user's usage reads ix_messages_user_id_create_time, which carries role,
tokens, cost and session in the index: an index-only range scan of that user's entries. An app's or
the service's usage (admin) reads the range through the BRIN index on create_time.

One fixed statement per shape (user or not, app or not, by role or not), so each is planned for
its own index rather than one generic plan for all.
"""

from __future__ import annotations

import asyncpg

from ..domain import usage
from ..domain.records import Role
from .rows import fetch
from .units import statement

_ROLES = {role.value: role for role in Role}


def _statement(user: bool, app: bool, by_role: bool) -> str:
    """$1 bucket, $2 start, $3 end, then the user ($4) when filtered by one, then the app."""
    where = ["m.create_time >= $2", "m.create_time < $3"]
    if user:
        where.append("m.user_id = $4")
    if app:
        owner = " AND s.user_id = $4" if user else ""
        where.append(f"m.session_id IN (SELECT s.id FROM sessions s WHERE s.app_name = ${5 if user else 4}{owner})")
    role = "m.role" if by_role else "NULL::text"
    return f"""
    SELECT date_trunc($1::text, m.create_time, 'UTC') AS bucket, {role} AS role,
           count(*) AS message_count, coalesce(sum(m.tokens_used), 0)::bigint AS total_tokens,
           coalesce(sum(m.cost), 0) AS total_cost
    FROM messages m
    WHERE {' AND '.join(where)}
    GROUP BY 1, 2 ORDER BY 1, 2
    """


STATEMENTS = {
    (user, app, by_role): _statement(user, app, by_role)
    for user in (False, True) for app in (False, True) for by_role in (False, True)
}


@statement
async def get_usage(conn: asyncpg.Connection, query: usage.UsageQuery) -> usage.Usage:
    sql = STATEMENTS[(query.user_id is not None, query.app_name is not None, query.by_role)]
    params: list[object] = [query.bucket.value, query.start_time, query.end_time]
    if query.user_id is not None:
        params.append(query.user_id)
    if query.app_name is not None:
        params.append(query.app_name)
    found = await fetch(conn, sql, *params)
    return usage.Usage([
        usage.UsageTotals(
            row["bucket"], None if row["role"] is None else _ROLES[row["role"]], row["message_count"],
            row["total_tokens"], row["total_cost"],
        )
        for row in found
    ])
