"""Retention policies (set, read, delete) and the prune job's batches.

Each batch is one short unit of its own (a statement, or a transaction of a few), bounded to
`batch` rows, so the job never holds a lock for long: what it locks is the handful of session
rows it prunes in that batch, FOR ... SKIP LOCKED, so it never waits for a writer either; a session
busy at that instant is left for the next pass. session_grpc/pruning.py runs the batches of a pass
under the pass's advisory lock.

What stays true while messages are pruned (README, Retention):
- Pruning removes a session's oldest messages, never others: the messages before a bound, in
  sequence order (create_time follows sequence, so "older than the TTL" is such a prefix too). So
  a session's messages are always a gapless run ending at its last sequence.
- The session's totals stay FROZEN: message_count remains the last sequence (appends go on from
  it, gapless), total_tokens and total_cost keep counting what was written. A rewind below the
  first message left would need the amounts of messages that are gone, so TruncateSession refuses
  it (storage/history.py, PRUNED_BY_RETENTION).
- The session rows of a batch are locked (FOR NO KEY UPDATE: appends and rewinds of those
  sessions wait the batch out; new messages' foreign-key checks do not) before the bounds are
  read, so a concurrent append or rewind is either wholly before the batch or wholly after it.
- Pruned messages leave the change feed as a rewind's do: their MESSAGE_ADDED changes are
  dropped and one MESSAGES_REMOVED (the session as it is now) is recorded per session. A deleted
  session goes as DeleteSession's does (the sessions DELETE trigger: SESSION_DELETED).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from ..domain.errors import NotFound
from ..domain.retention import RetentionPolicy
from .rows import Row, fetch, fetch_one
from .units import statement, transaction

PRUNE_LOCK = 0x5E55_9E7E
"""The advisory lock key (transaction-scoped) a prune pass holds from start to end."""

_COLUMNS = "app_name, closed_session_ttl, message_ttl, max_messages_per_session, update_time"
SET = f"""
INSERT INTO retention_policies AS p (app_name, closed_session_ttl, message_ttl, max_messages_per_session)
VALUES ($1, $2, $3, $4)
ON CONFLICT (app_name) DO UPDATE SET
    closed_session_ttl = excluded.closed_session_ttl, message_ttl = excluded.message_ttl,
    max_messages_per_session = excluded.max_messages_per_session, update_time = clock_timestamp()
RETURNING {_COLUMNS}
"""
GET = f"SELECT {_COLUMNS} FROM retention_policies WHERE app_name = $1"
LIST = f"SELECT {_COLUMNS} FROM retention_policies ORDER BY app_name"
DELETE = "DELETE FROM retention_policies WHERE app_name = $1"
NOW = "SELECT clock_timestamp() AS now"


def policy(row: Row) -> RetentionPolicy:
    return RetentionPolicy(
        row["app_name"], row["closed_session_ttl"], row["message_ttl"], row["max_messages_per_session"],
        row["update_time"],
    )


@statement
async def set_policy(conn: asyncpg.Connection, given: RetentionPolicy) -> RetentionPolicy:
    row = await fetch_one(conn, SET, given.app_name, given.closed_session_ttl, given.message_ttl,
                          given.max_messages_per_session)
    assert row is not None
    return policy(row)


@statement
async def get_policy(conn: asyncpg.Connection, app_name: str) -> RetentionPolicy:
    row = await fetch_one(conn, GET, app_name)
    if row is None:
        raise NotFound("retention policy", app_name)
    return policy(row)


@statement
async def delete_policy(conn: asyncpg.Connection, app_name: str) -> bool:
    return await conn.execute(DELETE, app_name) != "DELETE 0"


@statement
async def list_policies(conn: asyncpg.Connection) -> list[RetentionPolicy]:
    return [policy(row) for row in await fetch(conn, LIST)]


@statement
async def database_now(conn: asyncpg.Connection) -> datetime:
    row = await fetch_one(conn, NOW)
    assert row is not None
    return row["now"]


# -- closed sessions --------------------------------------------------------------------------

# The oldest closed sessions of the app ($1) last updated before $2, up to $3 of them and no more
# than about $3 messages in all (the first always; each goes with its messages, memory and feed:
# ON DELETE CASCADE and the sessions DELETE trigger, as DeleteSession). Rows another transaction
# holds are skipped; the lock re-checks the WHERE on the row's newest version.
_CLOSED = "app_name = $1 AND status <> 'active' AND update_time < $2"
DELETE_CLOSED_SESSIONS = f"""
WITH candidates AS (
    SELECT id, message_count FROM sessions WHERE {_CLOSED}
    ORDER BY update_time LIMIT $3
    FOR UPDATE SKIP LOCKED
), doomed AS (
    SELECT id FROM (
        SELECT id, sum(message_count) OVER (ORDER BY id) - message_count AS before FROM candidates
    ) c
    WHERE before < $3
)
DELETE FROM sessions s USING doomed d WHERE s.id = d.id
RETURNING s.id
"""
COUNT_CLOSED_SESSIONS = f"SELECT count(*) AS n FROM sessions WHERE {_CLOSED}"


@statement
async def delete_closed_sessions(conn: asyncpg.Connection, app_name: str, cutoff: datetime, batch: int) -> int:
    """One batch of the closed_session_ttl rule: how many sessions it deleted (0: none left)."""
    return len(await fetch(conn, DELETE_CLOSED_SESSIONS, app_name, cutoff, batch))


@statement
async def count_closed_sessions(conn: asyncpg.Connection, app_name: str, cutoff: datetime) -> int:
    row = await fetch_one(conn, COUNT_CLOSED_SESSIONS, app_name, cutoff)
    assert row is not None
    return int(row["n"])


# -- messages ---------------------------------------------------------------------------------

# The bounds of one session ($s: its id and message_count): by_age, the last sequence created
# before the message TTL's cutoff (ix_messages_session_id_create_time, one probe; NULL: none or no
# TTL); by_count, the last sequence past the newest N (NULL: no limit). Everything at or below the
# greater of the two goes; what is at or below by_age counts under message_ttl.
def _bounds(session: str, count: str, cutoff: str, keep: str) -> str:
    return f"""
    SELECT (SELECT m.sequence FROM messages m WHERE m.session_id = {session} AND m.create_time < {cutoff}
            ORDER BY m.create_time DESC, m.sequence DESC LIMIT 1) AS by_age,
           {count} - {keep}::bigint AS by_count
    """


# A window of the app's sessions ($1), newest first by creation after the keyset ($5, $6), $4 of
# them (ix_sessions_app_name_create_time), each with whether its first message is due: older than
# the cutoff ($2) or past the newest $3. Reads only; the sessions due are locked next.
_WINDOW = """
SELECT w.id, w.create_time,
       f.sequence IS NOT NULL AND (f.create_time < $2 OR f.sequence <= w.message_count - $3::bigint) AS due
FROM (
    SELECT id, create_time, message_count FROM sessions
    WHERE app_name = $1 {after}
    ORDER BY create_time DESC, id DESC LIMIT $4
) w
LEFT JOIN LATERAL (
    SELECT m.sequence, m.create_time FROM messages m WHERE m.session_id = w.id ORDER BY m.sequence LIMIT 1
) f ON true
ORDER BY w.create_time DESC, w.id DESC
"""
FIRST_WINDOW = _WINDOW.format(after="AND $5::timestamptz IS NULL AND $6::uuid IS NULL")
NEXT_WINDOW = _WINDOW.format(after="AND (create_time, id) < ($5::timestamptz, $6::uuid)")
LOCK_SESSIONS = """
SELECT id, message_count FROM sessions WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
"""
# Under those locks: each session's prefix to remove, at most $5 rows in all (in session and
# sequence order, so a session cut short loses a prefix), deleted; its MESSAGE_ADDED changes
# dropped and one MESSAGES_REMOVED recorded per session touched (with first_sequence: what is left
# is the gapless run after the removed prefix, up to message_count).
DELETE_MESSAGES = f"""
WITH locked AS (
    SELECT l.id, b.by_age, b.by_count
    FROM unnest($1::uuid[], $2::bigint[]) AS l(id, message_count)
    CROSS JOIN LATERAL ({_bounds("l.id", "l.message_count", "$3", "$4")}) b
), doomed AS (
    SELECT m.session_id, m.sequence, m.sequence <= coalesce(l.by_age, 0) AS aged
    FROM locked l
    CROSS JOIN LATERAL (
        SELECT session_id, sequence FROM messages
        WHERE session_id = l.id AND sequence <= greatest(coalesce(l.by_age, 0), coalesce(l.by_count, 0))
        ORDER BY sequence LIMIT $5
    ) m
    ORDER BY m.session_id, m.sequence LIMIT $5
), removed AS (
    DELETE FROM messages m USING doomed d WHERE m.session_id = d.session_id AND m.sequence = d.sequence
    RETURNING m.session_id, m.sequence, d.aged
), touched AS (
    SELECT session_id, max(sequence) AS upto FROM removed GROUP BY session_id
), forgotten AS (
    DELETE FROM session_changes c USING touched t
    WHERE c.session_id = t.session_id AND c.kind = 'message_added' AND c.sequence <= t.upto
), recorded AS (
    SELECT feed_record(s.user_id, s.id, 'messages_removed', (to_jsonb(s) - 'request_id') || jsonb_build_object(
        'first_sequence', CASE WHEN t.upto >= s.message_count THEN 0 ELSE t.upto + 1 END))
    FROM sessions s JOIN touched t ON t.session_id = s.id
)
SELECT (SELECT count(*) FROM recorded) AS sessions,
       (SELECT count(*) FILTER (WHERE aged) FROM removed) AS aged,
       (SELECT count(*) FILTER (WHERE NOT aged) FROM removed) AS counted
"""
# What DELETE_MESSAGES would remove from every session of the app, now; sessions the closed
# rule ($5, its cutoff; NULL: no rule) deletes first are left out, as a real pass deletes them
# before it prunes messages.
COUNT_MESSAGES = f"""
SELECT coalesce(sum(x.aged), 0)::bigint AS aged, coalesce(sum(x.counted), 0)::bigint AS counted
FROM sessions s
CROSS JOIN LATERAL ({_bounds("s.id", "s.message_count", "$2", "$3")}) b
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE sequence <= coalesce(b.by_age, 0)) AS aged,
           count(*) FILTER (WHERE sequence > coalesce(b.by_age, 0)) AS counted
    FROM messages WHERE session_id = s.id AND sequence <= greatest(coalesce(b.by_age, 0), coalesce(b.by_count, 0))
) x
WHERE s.app_name = $1 AND NOT ($4::timestamptz IS NOT NULL AND s.status <> 'active' AND s.update_time < $4)
"""


@dataclass(frozen=True)
class Cursor:
    """Where the message rules' walk over an app's sessions goes on (newest first by creation)."""

    create_time: datetime
    session_id: str


@dataclass(frozen=True)
class MessageBatch:
    aged: int
    """Messages removed under message_ttl."""
    counted: int
    """Messages removed under max_messages_per_session."""
    full: bool
    """The batch removed as many rows as it may: the same window has more (go on from the same cursor)."""
    next: Cursor | None
    """Where the next window starts; None: the window was the app's last."""
    skipped: int = 0
    """Sessions due but held by another transaction at that instant (left for the next pass)."""


@transaction
async def prune_messages(
    conn: asyncpg.Connection, app_name: str, cutoff: datetime | None, keep: int | None, after: Cursor | None,
    batch: int,
) -> MessageBatch:
    """One batch of the message rules over a window of `batch` sessions of the app after `after`:
    the due ones locked (skipping any held), their prefixes deleted, at most `batch` rows."""
    window = await fetch(conn, FIRST_WINDOW if after is None else NEXT_WINDOW, app_name, cutoff, keep, batch,
                         None if after is None else after.create_time, None if after is None else after.session_id)
    following = Cursor(window[-1]["create_time"], str(window[-1]["id"])) if len(window) == batch else None
    due = [row["id"] for row in window if row["due"]]
    if not due:
        return MessageBatch(0, 0, False, following)
    locked = await fetch(conn, LOCK_SESSIONS, due)
    if not locked:
        return MessageBatch(0, 0, False, following, skipped=len(due))
    row = await fetch_one(conn, DELETE_MESSAGES, [r["id"] for r in locked], [r["message_count"] for r in locked],
                          cutoff, keep, batch)
    assert row is not None
    aged, counted = int(row["aged"]), int(row["counted"])
    return MessageBatch(aged, counted, aged + counted >= batch, following, skipped=len(due) - len(locked))


@statement
async def count_messages(
    conn: asyncpg.Connection, app_name: str, cutoff: datetime | None, keep: int | None,
    closed_cutoff: datetime | None,
) -> tuple[int, int]:
    """What the message rules would remove from the app now: (under message_ttl, under max_messages)."""
    row = await fetch_one(conn, COUNT_MESSAGES, app_name, cutoff, keep, closed_cutoff)
    assert row is not None
    return int(row["aged"]), int(row["counted"])


def cutoff_of(started: datetime, ttl: timedelta | None) -> datetime | None:
    return None if ttl is None else started - ttl
