"""Rewriting where a conversation goes: ForkSession copies a session's history into a new one,
TruncateSession rewinds a session to an earlier message."""

from __future__ import annotations

import uuid

import asyncpg

from ..domain import lifecycle
from ..domain.errors import AlreadyExists, FailedPrecondition, NotFound
from ..domain.records import Fork, Rewind, Rewound, Session
from . import rows
from .messages import LAST_SEQUENCE
from .rows import SESSION_COLUMNS, fetch_one, owned
from .sessions import BY_REQUEST_ID, GET_SESSION_FOR_UPDATE
from .units import statement, transaction

# One statement, so the copied messages, their sums and the fork's totals all come from one
# snapshot of the source ($1, owned by $2), however long it is and whatever is appended meanwhile
# (no lock on the source: it is only read). The fork ($4; its request_id $5) takes the source's
# user, app, title, conversation_data and metadata, and totals summed over exactly the messages it
# copies (sequence <= $3; its message_count their last sequence, which is their count unless the
# retention policy pruned the source's oldest: new messages then go on after it, gapless): the same sequences, times, contents, payloads, event times and search
# vectors (copied, not parsed again: migration 0010), and as
# its last_event_time the event time of the last one copied. The source's memory comes along.
# Past $6 copied messages nothing is written. The insert yields to either unique key (the id, the
# user's request_id); a repeat of a request_id answers with the fork the first call made.
FORK_SESSION = f"""
WITH source AS (
    SELECT id, user_id, app_name, title, conversation_data, metadata FROM sessions WHERE id = $1 AND {owned(2)}
), copied AS (
    SELECT count(*) AS n, coalesce(max(sequence), 0) AS last, coalesce(sum(tokens_used), 0) AS tokens,
           coalesce(sum(cost), 0) AS cost
    FROM messages WHERE session_id = (SELECT id FROM source) AND sequence <= $3
), fork AS (
    INSERT INTO sessions (id, user_id, status, title, conversation_data, metadata, request_id, app_name,
                          message_count, total_tokens, total_cost, last_event_time, forked_from_session_id,
                          forked_at_sequence)
    SELECT $4, s.user_id, 'active', s.title, s.conversation_data, s.metadata, $5, s.app_name,
           c.last, c.tokens, c.cost,
           (SELECT coalesce(m.event_time, m.create_time) FROM messages m WHERE m.session_id = s.id AND m.sequence = c.last),
           s.id, c.last
    FROM source s CROSS JOIN copied c WHERE c.n <= $6
    ON CONFLICT DO NOTHING
    RETURNING {SESSION_COLUMNS}
), copied_messages AS (
    INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost,
                          metadata, create_time, payload, payload_type, event_time, search_vector)
    SELECT gen_random_uuid(), f.id, f.user_id, m.sequence, m.role, m.message_type, m.content, m.tokens_used, m.cost,
           m.metadata, m.create_time, m.payload, m.payload_type, m.event_time, m.search_vector
    FROM fork f JOIN messages m ON m.session_id = $1 AND m.sequence <= $3
), copied_memory AS (
    INSERT INTO memories (session_id, user_id, conversation_summary, facts, preferences, metadata)
    SELECT f.id, f.user_id, m.conversation_summary, m.facts, m.preferences, m.metadata
    FROM fork f JOIN memories m ON m.session_id = $1
), answer AS (
    SELECT * FROM fork
    UNION ALL
    SELECT {SESSION_COLUMNS} FROM sessions
    WHERE $5::uuid IS NOT NULL AND user_id = (SELECT user_id FROM source) AND request_id = $5
      AND NOT EXISTS (SELECT 1 FROM fork)
)
SELECT (SELECT user_id FROM source) AS source_user, (SELECT n FROM copied) AS copied, answer.*
FROM (VALUES (1)) one LEFT JOIN answer ON true
"""


@statement
async def fork_session(conn: asyncpg.Connection, fork: Fork, max_messages: int) -> Session:
    """Copy the source's first messages, state and memory into a new session; with a request_id,
    a repeat returns the first fork. NotFound without the source, FailedPrecondition (FORK_TOO_LONG)
    past max_messages, AlreadyExists when the client's id is another session's."""
    fork_id = fork.fork_session_id or str(uuid.uuid4())
    last = LAST_SEQUENCE if fork.last_sequence is None else fork.last_sequence
    source = fork.source
    row = await fetch_one(
        conn, FORK_SESSION, source.session_id, source.owner, last, fork_id, fork.request_id, max_messages
    )
    assert row is not None
    if row["source_user"] is None:
        raise NotFound("session", source.session_id)
    if row["id"] is not None:
        return rows.session(row)
    if fork.request_id is not None:
        # A concurrent first call with this request_id committed after this statement's snapshot
        # was taken (the insert waited for it, then did nothing): a new statement sees it.
        earlier = await fetch_one(conn, BY_REQUEST_ID, row["source_user"], fork.request_id)
        if earlier is not None:
            return rows.session(earlier)
    if row["copied"] > max_messages:
        raise FailedPrecondition(
            f"the fork would copy {row['copied']} messages, more than the {max_messages} a fork may hold "
            "(SESSION_MAX_FORK_MESSAGES): fork at an earlier sequence",
            reason="FORK_TOO_LONG",
            metadata={"messageCount": str(row["copied"]), "maxMessages": str(max_messages)},
        )
    raise AlreadyExists("session", fork_id)


REWIND_BY_REQUEST_ID = f"""
SELECT r.removed_count FROM session_rewinds r JOIN sessions s ON s.id = r.session_id
WHERE r.session_id = $1 AND r.request_id = $2 AND {owned(3, "s.user_id")}
"""
# Runs with the session's row locked (GET_SESSION_FOR_UPDATE, the lock AddMessage's UPDATE takes),
# in a statement of its own so its snapshot is taken after the lock was granted: it sees every
# append that landed before, and none can land until the rewind commits. It removes the messages
# after $2 and takes exactly their count, tokens and cost off the session's totals, and its
# last_event_time becomes that of the message now last (none left: NULL), and its per-role totals
# (session_role_totals, migration 0016) lose the same messages role by role (nothing
# removed: the session is left as it is, etag included; trim_scale: 0.010 - 0.010 is 0, not 0.000); with a request_id ($4) it records the
# rewind, so a retry answers without rewinding again. The request ids of the removed messages are
# kept (rewound_requests): an append retried with one of them is refused, not appended again.
TRUNCATE_SESSION = f"""
WITH removed AS (
    DELETE FROM messages WHERE session_id = $1 AND sequence > $2 AND {owned(3)}
    RETURNING role, tokens_used, cost, request_id
), by_role AS (
    UPDATE session_role_totals t
    SET message_count = t.message_count - r.n, total_tokens = t.total_tokens - r.tokens,
        total_cost = trim_scale(t.total_cost - r.cost)
    FROM (SELECT role, count(*) AS n, sum(tokens_used) AS tokens, sum(cost) AS cost FROM removed GROUP BY role) r
    WHERE t.session_id = $1 AND t.role = r.role
), forgotten AS (
    INSERT INTO rewound_requests (session_id, request_id)
    SELECT $1, request_id FROM removed WHERE request_id IS NOT NULL
    ON CONFLICT DO NOTHING
), gone AS (
    SELECT count(*) AS n, coalesce(sum(tokens_used), 0) AS tokens, coalesce(sum(cost), 0) AS cost FROM removed
), updated AS (
    UPDATE sessions s
    SET message_count = s.message_count - g.n, total_tokens = s.total_tokens - g.tokens,
        total_cost = trim_scale(s.total_cost - g.cost), version = s.version + 1,
        last_event_time = (
            SELECT coalesce(m.event_time, m.create_time) FROM messages m
            WHERE m.session_id = $1 AND m.sequence = s.message_count - g.n
        ),
        update_time = greatest(s.update_time, clock_timestamp())
    FROM gone g WHERE s.id = $1 AND {owned(3, "s.user_id")} AND g.n > 0
    RETURNING {", ".join(f"s.{column.strip()}" for column in SESSION_COLUMNS.split(","))}
), recorded AS (
    INSERT INTO session_rewinds (session_id, request_id, last_sequence, removed_count)
    SELECT $1, $4, $2, n FROM gone WHERE $4::uuid IS NOT NULL
)
SELECT (SELECT n FROM gone) AS removed, updated.* FROM (VALUES (1)) one LEFT JOIN updated ON true
"""


@transaction
async def truncate_session(conn: asyncpg.Connection, rewind: Rewind) -> Rewound:
    """Remove the session's messages after rewind.last_sequence, under its row lock. With a
    request_id, a repeat removes nothing and answers with the session as it is now and the first
    call's count (even when the session has ended since)."""
    ref = rewind.session
    locked = await fetch_one(conn, GET_SESSION_FOR_UPDATE, ref.session_id, ref.owner)
    if locked is None:
        raise NotFound("session", ref.session_id)
    session = rows.session(locked)
    if rewind.request_id is not None:
        earlier = await fetch_one(conn, REWIND_BY_REQUEST_ID, ref.session_id, rewind.request_id, ref.owner)
        if earlier is not None:
            return Rewound(session, earlier["removed_count"])
    lifecycle.check_rewindable(session.status)
    if rewind.last_sequence < session.message_count:
        await _check_not_pruned(conn, ref.session_id, rewind.last_sequence, session.message_count)
    row = await fetch_one(conn, TRUNCATE_SESSION, ref.session_id, rewind.last_sequence, ref.owner, rewind.request_id)
    assert row is not None
    return Rewound(session if row["id"] is None else rows.session(row), row["removed"])


FIRST_LEFT = "SELECT min(sequence) AS first FROM messages WHERE session_id = $1"


async def _check_not_pruned(conn: asyncpg.Connection, session_id: str, last_sequence: int, message_count: int) -> None:
    """A rewind to before the first message the retention policy left (storage/retention.py) is
    FAILED_PRECONDITION: the session's totals keep the pruned messages' amounts, and a rewind must
    take off exactly what it removes, which for messages that are gone nobody knows any more. Read
    under the session's row lock, which the prune job takes too: no prune runs in between."""
    row = await fetch_one(conn, FIRST_LEFT, session_id)
    first = message_count + 1 if row is None or row["first"] is None else row["first"]
    if last_sequence < first - 1:
        raise FailedPrecondition(
            f"the messages up to sequence {first - 1} were removed by the app's retention policy; the session "
            f"can be rewound to sequence {first - 1} at the earliest",
            reason="PRUNED_BY_RETENTION",
            metadata={"firstSequence": str(first)},
        )
