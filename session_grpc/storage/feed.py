"""Reading the change feed (session_changes, written by the triggers of migration 0011): one
statement per read, by cursor, in autocommit (units.statement).

Each read returns the changes after the cursor and the user's head (their last change id) from
one snapshot. Change ids of one user commit in order (the trigger's counter row is locked until
commit), so every change up to the head is in that snapshot: a read that was not cut short by
its limit may move the cursor to the head, past the ids of the user's other sessions, and a
later read can never find a change at or below it.
"""

from __future__ import annotations

import asyncpg

from ..domain.changes import Change, ChangeKind, FeedBatch, FeedQuery
from . import rows
from .rows import MEMORY_COLUMNS, MESSAGE_COLUMNS, SESSION_COLUMNS, fetch, owned
from .units import statement

LAST_CHANGE = 2**63 - 1

_SNAPSHOT_KINDS = "('session_created', 'session_updated', 'messages_removed')"


def _prefixed(table: str, columns: str, prefix: str) -> str:
    return ", ".join(f"{table}.{name} AS {prefix}{name}" for name in columns.split(", "))


# The changes and what each carries: the session or memory snapshot the trigger stored (read back
# through the table's row type, so each column has its type), and the message added (joined, not
# copied: messages never change). A message removed since has none: it is left out
# (MESSAGES_REMOVED says so). Plain typed columns only: no composite the driver would have to
# look up in the catalog on each new connection.
_COLUMNS = f"""
    c.change_id, c.session_id AS changed_session, c.kind, c.create_time AS change_time,
    c.payload -> 'changed' AS changed, (c.payload ->> 'first_sequence')::bigint AS first_sequence,
    {_prefixed("s", SESSION_COLUMNS, "s_")},
    {_prefixed("mem", MEMORY_COLUMNS, "mem_")}, m.*
"""
_JOIN = f"""
LEFT JOIN LATERAL jsonb_populate_record(NULL::sessions, c.payload) s ON c.kind IN {_SNAPSHOT_KINDS}
LEFT JOIN LATERAL jsonb_populate_record(NULL::memories, c.payload) mem ON c.kind = 'memory_changed'
LEFT JOIN LATERAL (
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE c.kind = 'message_added' AND session_id = c.session_id AND sequence = c.sequence
) m ON true
ORDER BY c.change_id
"""
# $1 session, $2 owner (NULL: any), $3 cursor (NULL: from the head), $4 limit. No row of a missing
# session but its changes (SESSION_DELETED) after the cursor; `found` says whether it is there.
SESSION_CHANGES = f"""
WITH s AS (SELECT user_id FROM sessions WHERE id = $1 AND {owned(2)}),
c AS (
    SELECT * FROM session_changes
    WHERE session_id = $1 AND change_id > coalesce($3, {LAST_CHANGE}) AND {owned(2)}
    ORDER BY change_id LIMIT $4
)
SELECT EXISTS (SELECT 1 FROM s) AS found,
       (SELECT change_count FROM user_feeds
        WHERE user_id = coalesce((SELECT user_id FROM s), (SELECT user_id FROM c LIMIT 1))) AS head,
       {_COLUMNS}
FROM (VALUES (1)) one LEFT JOIN c ON true {_JOIN}
"""
# $1 user, $2 cursor (NULL: from the head), $3 limit.
USER_CHANGES = f"""
WITH c AS (
    SELECT * FROM session_changes WHERE user_id = $1 AND change_id > coalesce($2, {LAST_CHANGE})
    ORDER BY change_id LIMIT $3
)
SELECT true AS found, (SELECT change_count FROM user_feeds WHERE user_id = $1) AS head, {_COLUMNS}
FROM (VALUES (1)) one LEFT JOIN c ON true {_JOIN}
"""


@statement
async def read_changes(conn: asyncpg.Connection, query: FeedQuery) -> FeedBatch:
    """The changes after the cursor, at most `limit`, and the cursor to go on from."""
    if query.session_id is not None:
        found = await fetch(conn, SESSION_CHANGES, query.session_id, query.owner, query.after, query.limit)
    else:
        found = await fetch(conn, USER_CHANGES, query.user_id, query.after, query.limit)
    first = found[0]
    listed = [row for row in found if row["change_id"] is not None]
    cursor = max(query.after or 0, listed[-1]["change_id"] if listed else 0)
    if len(listed) < query.limit:
        cursor = max(cursor, first["head"] or 0)
    changes = [change for change in map(_change, listed) if change is not None]
    erased = not listed and bool(query.after) and (first["head"] or 0) < (query.after or 0)
    return FeedBatch(changes, cursor, first["found"] or bool(listed), len(listed) >= query.limit, erased)


def _change(row: rows.Row) -> Change | None:
    kind = ChangeKind(row["kind"])
    if kind is ChangeKind.MESSAGE_ADDED and row["id"] is None:
        return None
    return Change(
        change_id=row["change_id"],
        session_id=str(row["changed_session"]),
        kind=kind,
        change_time=row["change_time"],
        session=rows.session(_part(row, "s_")) if row["s_id"] is not None else None,
        message=rows.message(row) if row["id"] is not None else None,
        memory=rows.memory(_part(row, "mem_")) if row["mem_session_id"] is not None else None,
        changed_fields=tuple(row["changed"] or ()),
        first_sequence=row["first_sequence"] or 0,
    )


def _part(row: rows.Row, prefix: str) -> dict[str, object]:
    return {key[len(prefix):]: value for key, value in row.items() if key.startswith(prefix)}
