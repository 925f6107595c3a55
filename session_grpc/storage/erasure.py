"""DeleteUserData: erase everything stored of one user, in one transaction.

The tables this module knows are erased by name, child rows first, each counted; then every other
table of the schema that has a `user_id` or a `session_id` column is swept by the user (or their
sessions), found in the catalog at the time of the call. So a table added later (by a migration
that forgot this module) is erased too, and its rows are reported under its own name in `other`;
tests/test_erasure.py checks the outcome across every column of every table.

Order, and why:
1. Lock the user's sessions (FOR UPDATE): an append in flight finishes first (its row lock), one
   that comes later waits and then finds no session (NOT_FOUND). Writes of the user that create
   new sessions while the erasure runs may survive it: suspend the account first (DeleteUserData is
   not refused for a suspended account, so that order works).
2. The change feed as it was (session_changes), counted.
3. Memories, messages, then the sweep (request-id records of appends, rewinds and state updates,
   and any table added later), then the sessions. Deleting a session fires the feed trigger of
   migration 0011, which records SESSION_DELETED and notifies: that wakes the open watches of the
   user in every server process at commit (watching.py ends them: nothing of the user is left to
   read). The entries those triggers wrote are removed at the end, uncounted.
4. The user's state in every app, their budget (an app budget is not theirs and stays), and last
   their feed counter (user_feeds), which the triggers above bump.
5. The audit row (user_erasures): a SHA-256 of the user id, who asked, when, the counts.
"""

from __future__ import annotations

import json

import asyncpg

from ..domain.userdata import Erased, Erasure, subject_hash
from .rows import fetch, fetch_one
from .units import transaction

KNOWN = frozenset({
    "sessions", "messages", "memories", "user_states", "budgets", "session_changes", "user_feeds",
    "user_erasures", "app_states", "alembic_version",
})
"""Tables erased by name here (or holding nothing of a user: app state, the audit log itself)."""

STATEMENTS = {
    "lock": "SELECT id::text FROM sessions WHERE user_id = $1 ORDER BY id FOR UPDATE",
    "changes": """
        WITH d AS (DELETE FROM session_changes WHERE user_id = $1 OR session_id = ANY($2::uuid[]) RETURNING 1)
        SELECT count(*) FROM d""",
    "memories": """
        WITH d AS (DELETE FROM memories WHERE user_id = $1 OR session_id = ANY($2::uuid[]) RETURNING 1)
        SELECT count(*) FROM d""",
    "messages": """
        WITH d AS (DELETE FROM messages WHERE user_id = $1 OR session_id = ANY($2::uuid[]) RETURNING 1)
        SELECT count(*) FROM d""",
    "sessions": "WITH d AS (DELETE FROM sessions WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM d",
    "user_states": "WITH d AS (DELETE FROM user_states WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM d",
    "budgets": "WITH d AS (DELETE FROM budgets WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM d",
    "feed_left": "DELETE FROM session_changes WHERE user_id = $1",
    "feed_counter": "WITH d AS (DELETE FROM user_feeds WHERE user_id = $1 RETURNING 1) SELECT count(*) FROM d",
    "audit": """
        INSERT INTO user_erasures (subject_sha256, erased_by, counts) VALUES ($1, $2, $3::jsonb)
        RETURNING erase_time""",
    # Every table of the schema (partitioned parents, not their partitions) with a user_id or a
    # session_id column, and those columns' types.
    "catalog": """
        SELECT c.relname AS table_name,
               max(format_type(a.atttypid, a.atttypmod)) FILTER (WHERE a.attname = 'user_id') AS user_type,
               max(format_type(a.atttypid, a.atttypmod)) FILTER (WHERE a.attname = 'session_id') AS session_type
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND a.attname IN ('user_id', 'session_id')
        GROUP BY c.relname
        ORDER BY c.relname""",
}


def _sweep(table: str, user_type: str | None, session_type: str | None, user: str,
           sessions: list[str]) -> tuple[str, list[object]]:
    """The DELETE of one table found in the catalog (its rows of the user or of their sessions),
    and its parameters. Compared in the column's own type, so its indexes serve."""
    quoted = '"' + table.replace('"', '""') + '"'
    where: list[str] = []
    params: list[object] = []
    if user_type is not None:
        params.append(user)
        where.append(f"user_id = ${len(params)}::text::{user_type}")
    if session_type is not None:
        params.append(sessions)
        where.append(f"session_id = ANY(${len(params)}::text[]::{session_type}[])")
    sql = f"WITH d AS (DELETE FROM {quoted} WHERE {' OR '.join(where)} RETURNING 1) SELECT count(*) FROM d"
    return sql, params


async def _count(conn: asyncpg.Connection, name: str, *params: object) -> int:
    return int(await conn.fetchval(STATEMENTS[name], *params))


@transaction
async def erase_user(conn: asyncpg.Connection, erasure: Erasure) -> Erased:
    user = erasure.user_id
    sessions = [row["id"] for row in await fetch(conn, STATEMENTS["lock"], user)]
    changes = await _count(conn, "changes", user, sessions)
    memories = await _count(conn, "memories", user, sessions)
    messages = await _count(conn, "messages", user, sessions)
    other: dict[str, int] = {}
    for table in await fetch(conn, STATEMENTS["catalog"]):
        if table["table_name"] in KNOWN:
            continue
        sql, params = _sweep(table["table_name"], table["user_type"], table["session_type"], user, sessions)
        removed = int(await conn.fetchval(sql, *params))
        if removed:
            other[table["table_name"]] = removed
    erased_sessions = await _count(conn, "sessions", user)
    user_states = await _count(conn, "user_states", user)
    budgets = await _count(conn, "budgets", user)
    await conn.execute(STATEMENTS["feed_left"], user)
    if feed := await _count(conn, "feed_counter", user):
        other["user_feeds"] = feed
    erased = Erased(erased_sessions, messages, memories, user_states, budgets, changes, other)
    row = await fetch_one(
        conn, STATEMENTS["audit"], subject_hash(user), erasure.erased_by, json.dumps(erased.counts(), sort_keys=True)
    )
    assert row is not None
    return Erased(erased_sessions, messages, memories, user_states, budgets, changes, other, row["erase_time"])
