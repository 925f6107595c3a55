"""Queries on messages: each one SQL statement in autocommit (units.statement), one round trip."""

from __future__ import annotations

import uuid

import asyncpg

from ..domain import lifecycle
from ..domain.errors import Aborted, NotFound
from ..domain.records import Message, MessagesQuery, NewMessage, Page, SessionRef
from . import rows
from .rows import MESSAGE_COLUMNS, fetch, fetch_one, owned
from .sessions import get_session
from .units import statement

REQUEST_ID_INDEX = "uq_messages_session_id_request_id"
LAST_SEQUENCE = 2**63 - 1

# The UPDATE of the session row takes its row lock, so concurrent appends to one
# session queue up behind each other; the new message_count is the message's
# sequence, which keeps sequences gapless and counters exact. clock_timestamp(), not
# now(): now() is the transaction's start, taken before this row's lock was queued
# for, so a later sequence could get an earlier time. The message's create_time is
# the session's new last_activity_time, so both follow sequence order. A conditional append
# ($10, expected_last_sequence; $11/$12, expected_etag's version and creation microseconds;
# NULL for none) is checked on the locked row in the same WHERE, so of concurrent appends that
# expect one count exactly one finds it. The message's event time ($15, NULL for none: then its
# create_time) becomes the session's last_event_time in the same SET, so the session always
# carries the event time of its highest sequence: the clock is read once (the sub-select) for both
# columns, and a concurrent append waiting for the lock re-evaluates the SET on the row it gets.
# The payload ($13) and its media type ($14) are stored as given (bytea), never parsed.
_BUMP = f"""
    UPDATE sessions
    SET message_count = message_count + 1,
        total_tokens = total_tokens + $3,
        total_cost = total_cost + $4,
        (last_activity_time, last_event_time) = (
            SELECT clock.t, coalesce($15::timestamptz, clock.t)
            FROM (SELECT greatest(sessions.last_activity_time, clock_timestamp()) AS t) clock
        ),
        update_time = greatest(update_time, clock_timestamp())
    WHERE id = $2 AND status = 'active' AND {owned(9)} AND ($10::bigint IS NULL OR message_count = $10)
      AND {rows.etag_matches(11, 12)} {{guard}}
    RETURNING id, user_id, message_count, last_activity_time, last_event_time
"""
_INSERT = f"""
    INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content,
                          tokens_used, cost, metadata, request_id, create_time, payload, payload_type, event_time)
    SELECT $1, id, user_id, message_count, $5, $6, $7, $3, $4, $8::jsonb, {{request_id}}, last_activity_time,
           $13::bytea, $14::text, last_event_time
    FROM bumped
    RETURNING {MESSAGE_COLUMNS}
"""
ADD_MESSAGE = f"WITH bumped AS ({_BUMP.format(guard='')}) {_INSERT.format(request_id='NULL')}"
# With a request_id ($16), the same statement first looks for the message that id already made;
# when there is one, nothing is bumped or inserted and that message is the answer (whatever
# its conditions say now: the repeat of an append that landed is not stale).
ADD_MESSAGE_ONCE = f"""
WITH earlier AS (
    SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $2 AND request_id = $16 AND {owned(9)}
), bumped AS ({_BUMP.format(guard='AND NOT EXISTS (SELECT 1 FROM earlier)')}),
inserted AS ({_INSERT.format(request_id='$16')})
SELECT * FROM inserted UNION ALL SELECT * FROM earlier
"""
BY_REQUEST_ID = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND request_id = $2"

# One page and the session's message count in one statement; no row at all means no session.
# The page is bounded in bytes as well as rows: of the first $3 messages only those that start
# within $5 bytes (content, metadata and payload, as the client gets them; the lengths of content
# and payload are read from their stored headers, not detoasted) are returned, so a page of 1,000
# messages of 256 KiB never reaches the server whole. The running sum sits beside the LIMIT, so
# the scan stops there.
_SIZE = "octet_length(content) + octet_length(metadata::text) + coalesce(octet_length(payload), 0)"
_PAGE_ROWS = f"""
LEFT JOIN LATERAL (
    SELECT * FROM (
        SELECT {MESSAGE_COLUMNS}, {_SIZE} AS size, sum({_SIZE}) OVER (ORDER BY sequence {{order}}) AS upto
        FROM messages
        WHERE session_id = s.id AND sequence {{op}} $2{{floor}} ORDER BY sequence {{order}} LIMIT $3
    ) page
    WHERE upto - size < $5
) m ON true
WHERE s.id = $1 AND {owned(4, "s.user_id")}
"""
_PAGE = "SELECT s.message_count, m.* FROM sessions s" + _PAGE_ROWS
PAGE_ASCENDING = _PAGE.format(op=">", order="ASC", floor="")
PAGE_DESCENDING = _PAGE.format(op="<", order="DESC", floor="")

# The same page of a filtered listing (start_time $6, recent_count $7; NULL for unset). Both
# filters are a lower bound on the sequence, since sequences are gapless from 1 and a message's
# create_time follows its sequence: the last N start at message_count - N + 1, and the messages
# at or after a time start at the first one ix_messages_session_id_create_time finds (none found:
# past the last message). The bound is its own lateral row (OFFSET 0 keeps the planner from
# inlining it, which would probe the time index again for every row returned), so the page stays a
# keyset range scan of uq_messages_session_id_sequence with both ends in its index condition.
_FROM = """
    CASE WHEN $6::timestamptz IS NULL THEN 1 ELSE coalesce(
        (SELECT f.sequence FROM messages f WHERE f.session_id = s.id AND f.create_time >= $6::timestamptz
         ORDER BY f.create_time, f.sequence LIMIT 1),
        s.message_count + 1) END
"""
_FILTERED = f"""
SELECT s.message_count, b.floor, m.* FROM sessions s
CROSS JOIN LATERAL (SELECT greatest(s.message_count - $7::bigint + 1, {_FROM}) AS floor OFFSET 0) b
""" + _PAGE_ROWS
FILTERED_ASCENDING = _FILTERED.format(op=">", order="ASC", floor=" AND sequence >= b.floor")
FILTERED_DESCENDING = _FILTERED.format(op="<", order="DESC", floor=" AND sequence >= b.floor")


@statement
async def add_message(conn: asyncpg.Connection, new: NewMessage) -> Message:
    """Append a message and add it to the session's counters, in one autocommit statement.

    With a request_id, a repeat returns the first result, even when the session
    has ended since. Two concurrent first calls with one request_id: the loser's
    insert hits the unique index after the winner commits, and it answers with
    the winner's message (a statement of its own; nothing of the failed one remains).
    With expected_last_sequence, a session whose message_count is another is ABORTED
    (STALE_SESSION, its count in the ErrorInfo metadata as lastSequence); with expected_etag,
    a session at another etag is ABORTED (ETAG_MISMATCH, its etag in the metadata as etag).
    """
    params = (
        str(uuid.uuid4()),
        new.session_id,
        new.tokens_used,
        new.cost,
        new.role.value,
        new.message_type.value,
        new.content,
        rows.jsonb(new.metadata),
        new.owner,
        new.expected_last_sequence,
        *rows.etag_parts(new.expected_etag),
        new.payload or None,
        new.payload_type or None,
        new.event_time,
    )
    if new.request_id is None:
        row = await fetch_one(conn, ADD_MESSAGE, *params)
    else:
        try:
            row = await fetch_one(conn, ADD_MESSAGE_ONCE, *params, new.request_id)
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name != REQUEST_ID_INDEX:
                raise
            row = await fetch_one(conn, BY_REQUEST_ID, new.session_id, new.request_id)
            assert row is not None
    if row is None:
        session = await get_session(conn, SessionRef(new.session_id, new.owner))
        lifecycle.check_accepts_messages(session.status)
        if new.expected_etag and new.expected_etag != session.etag:
            # version only grows, as message_count does: the second read sees why the first refused.
            raise Aborted(
                f"etag {new.expected_etag} is stale; the session is now at {session.etag}",
                reason="ETAG_MISMATCH",
                metadata={"etag": session.etag},
            )
        expected = new.expected_last_sequence
        if expected is not None and session.message_count != expected:
            raise Aborted(
                f"the session's last sequence is {session.message_count}, not {expected}: "
                "read the session's messages again, then retry expecting its new last sequence",
                reason="STALE_SESSION",
                metadata={"lastSequence": str(session.message_count)},
            )
        raise AssertionError(f"session {new.session_id} is active but took no message")
    return rows.message(row)


@statement
async def list_messages(conn: asyncpg.Connection, query: MessagesQuery) -> Page[Message]:
    """One page of a session's messages (at most page_size, and no more than byte_budget but one)
    and the session's message count; no row at all: the session is missing (or not the owner's)."""
    if query.descending:
        start = LAST_SEQUENCE if query.position is None else query.position
    else:
        start = query.position or 0
    session = query.session
    params = [session.session_id, start, query.page_size, session.owner, query.byte_budget]
    filtered = query.start_time is not None or query.recent_count is not None
    if filtered:
        sql = FILTERED_DESCENDING if query.descending else FILTERED_ASCENDING
        # recent_count counts from the end when the listing starts; a later page continues after
        # its token's position (so messages appended meanwhile are not skipped).
        params += [query.start_time, query.recent_count if query.position is None else None]
    else:
        sql = PAGE_DESCENDING if query.descending else PAGE_ASCENDING
    found = await fetch(conn, sql, *params)
    if not found:
        raise NotFound("session", session.session_id)
    messages = [rows.message(row) for row in found if row["id"] is not None]
    count = found[0]["message_count"]
    floor = found[0]["floor"] if filtered else 1
    # Sequences are gapless from 1 to the message count: whether more follow is in the last one.
    more = bool(messages) and (messages[-1].sequence > floor if query.descending else messages[-1].sequence < count)
    return Page(messages, more, count)
