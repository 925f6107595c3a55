"""Queries on messages: each one SQL statement in autocommit (units.statement), one round trip."""

from __future__ import annotations

import base64
import re
from typing import Any
import uuid

import asyncpg

from ..domain import lifecycle
from ..domain.errors import Aborted, FailedPrecondition, NotFound
from ..domain.records import Message, MessagesQuery, NewMessage, NewMessages, Page
from . import rows, state
from ..domain.usage import Appended
from .rows import MESSAGE_COLUMNS, SESSION_COLUMNS, fetch, fetch_one, owned
from .units import statement

REQUEST_ID_INDEX = "uq_messages_session_id_request_id"
REQUEST_ID_PARTITION_INDEX = re.compile(r"messages_p\d+_session_id_request_id_idx")
LAST_SEQUENCE = 2**63 - 1

# One statement appends a batch of messages (AddMessages; AddMessage is a batch of one). The
# batch arrives as parallel arrays ($1 ids, $3 roles, $4 types, $5 contents, $6 tokens, $7 costs,
# $8 metadata as JSON text, $9 request ids, $14 payloads in base64, $15 their media types, $16
# event times), one element per message in sequence order, all text[]: asyncpg knows text[]
# without asking, while each other array type costs a connection three more round trips (a type
# introspection query) the first time it is used; the casts are exact.
# The UPDATE of the session row takes its row lock, so concurrent appends to one session queue up
# behind each other; it adds the batch's size and the sums of its tokens and costs, and the batch's
# messages take the sequences up to the new message_count, which keeps sequences gapless and
# counters exact. clock_timestamp(), not now(): now() is the transaction's start, taken before
# this row's lock was queued for, so a later sequence could get an earlier time. The messages'
# create_time is the session's new last_activity_time, so both follow sequence order. A
# conditional append ($10, expected_last_sequence; $11/$12, expected_etag's version and creation
# microseconds; NULL for none) is checked on the locked row in the same WHERE, so of concurrent
# appends that expect one count exactly one finds it. The last message's event time (NULL for
# none: then its create_time) becomes the session's last_event_time in the same SET, so the
# session always carries the event time of its highest sequence: the clock is read once (the
# sub-select) for both columns, and a concurrent append waiting for the lock re-evaluates the SET
# on the row it gets. Each message's event time is its own, or its create_time. Payloads and
# their media types are stored as given (bytea), never parsed.
_BATCH = """
    SELECT b.id::uuid, b.role, b.message_type, b.content, b.tokens_used::bigint, b.cost::numeric,
           b.metadata::jsonb, b.request_id::uuid, decode(b.payload, 'base64') AS payload, b.payload_type,
           b.event_time::timestamptz, b.n
    FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                $14::text[], $15::text[], $16::text[])
        WITH ORDINALITY AS b(id, role, message_type, content, tokens_used, cost, metadata, request_id, payload,
                             payload_type, event_time, n)
"""
_BUMP = f"""
    UPDATE sessions
    SET message_count = message_count + cardinality($1::text[]),
        total_tokens = total_tokens + (SELECT sum(tokens_used) FROM batch),
        total_cost = total_cost + (SELECT sum(cost) FROM batch),
        (last_activity_time, last_event_time) = (
            SELECT clock.t, coalesce((SELECT event_time FROM batch WHERE n = cardinality($1::text[])), clock.t)
            FROM (SELECT greatest(sessions.last_activity_time, clock_timestamp()) AS t) clock
        ),
        update_time = greatest(update_time, clock_timestamp())
        {{state}}
    WHERE id = $2 AND status = 'active' AND {owned(13)} AND ($10::bigint IS NULL OR message_count = $10)
      AND {rows.etag_matches(11, 12)} {{guard}} {{budget}}
    RETURNING id, user_id, app_name, message_count, last_activity_time
"""
# An append to a session whose user or app has a budget does not land in the one statement (two
# primary-key probes of budgets, empty for everyone else): it runs budgeted instead
# (storage/budgets.py: the budget rows locked, the limits checked, then the same statement without
# the probes, in one transaction).
_NO_BUDGET = """
      AND NOT EXISTS (SELECT 1 FROM budgets b WHERE b.user_id = sessions.user_id AND b.app_name = '')
      AND NOT EXISTS (SELECT 1 FROM budgets b WHERE b.user_id = '' AND b.app_name = sessions.app_name)
"""
_INSERT = f"""
    INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content,
                          tokens_used, cost, metadata, request_id, create_time, payload, payload_type, event_time)
    SELECT b.id, s.id, s.user_id, s.message_count - cardinality($1::text[]) + b.n, b.role, b.message_type,
           b.content, b.tokens_used, b.cost, b.metadata, b.request_id, s.last_activity_time, b.payload,
           b.payload_type, coalesce(b.event_time, s.last_activity_time)
    FROM bumped s CROSS JOIN batch b
    RETURNING {MESSAGE_COLUMNS}
"""
# Every answer row carries the session's app (the metrics count per app): the bumped row's, or for
# the repeat of an earlier append the session's (an app never changes).
_PLAIN = f"""
WITH batch AS ({_BATCH}), bumped AS ({{bump}}), inserted AS ({_INSERT})
SELECT inserted.*, (SELECT app_name FROM bumped) AS app_name FROM inserted
"""
# With a request_id, the same statement first looks for the messages that id already made (the
# batch's request ids, request_ids() below); when there are any, nothing is bumped or inserted and
# they are the answer (whatever the conditions say now: the repeat of an append that landed is not
# stale). When a rewind removed what it appended (rewound_requests), nothing is appended either:
# the retry must not undo the rewind.
_ONCE = f"""
WITH batch AS ({_BATCH}), earlier AS (
    SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $2 AND request_id = ANY($9::text[]::uuid[]) AND {owned(13)}
), rewound AS (
    SELECT 1 FROM rewound_requests WHERE session_id = $2 AND request_id = ANY($9::text[]::uuid[])
), bumped AS ({{bump}}),
inserted AS ({_INSERT}){{more}}
SELECT inserted.*, (SELECT app_name FROM bumped) AS app_name FROM inserted
UNION ALL SELECT earlier.*, (SELECT app_name FROM sessions WHERE id = $2) FROM earlier
"""
_GUARD = "AND NOT EXISTS (SELECT 1 FROM earlier) AND NOT EXISTS (SELECT 1 FROM rewound)"


# Group commit's lone call (storage/group_commit.py) must not wait for a session row another
# transaction holds while later calls queue behind it: it takes the row lock first, NOWAIT (a held
# row raises lock_not_available at once, and the call goes the waiting way instead). The same
# statement otherwise, and the same cost: measured, 0.43 ms of backend CPU a call either way.
_UNLESS_LOCKED = "AND sessions.id IN (SELECT l.id FROM sessions l WHERE l.id = $2 FOR NO KEY UPDATE NOWAIT)"


def _statements(budget: str, lock: str = "") -> tuple[str, str, str]:
    """The plain, the once (request ids) and the with-state append, with `budget` (and `lock`) in
    the bump's WHERE."""
    plain = _PLAIN.format(bump=_BUMP.format(guard=lock, state="", budget=budget))
    once = _ONCE.format(bump=_BUMP.format(guard=f"{_GUARD} {lock}", state="", budget=budget), more="")
    # With state deltas ($17-$23, state.delta_params; the request ids may be NULL), the same statement
    # also merges them: the session's into the row it bumps, the user's and app's in upserts over that
    # row, so they land with the messages or not at all (a stale condition, a repeat, a state too large).
    with_state = _ONCE.format(
        bump=_BUMP.format(guard=_GUARD, state=", " + state.session_state_sql(17), budget=budget),
        more=", " + state.scoped_state_ctes(17, "bumped"),
    )
    return plain, once, with_state


# For sessions without a budget (the probes make a budgeted session's append land nothing):
ADD_MESSAGES = _statements(_NO_BUDGET)[0]
ADD_MESSAGES_ONCE = _statements(_NO_BUDGET)[1]
ADD_MESSAGES_WITH_STATE = _statements(_NO_BUDGET)[2]
ADD_MESSAGES_UNLESS_LOCKED = _statements(_NO_BUDGET, _UNLESS_LOCKED)[0]
ADD_MESSAGES_ONCE_UNLESS_LOCKED = _statements(_NO_BUDGET, _UNLESS_LOCKED)[1]
# For storage/budgets.py, which holds the budget rows' locks and has checked the limits:
ADD_MESSAGES_BUDGETED = _statements("")[0]
ADD_MESSAGES_ONCE_BUDGETED = _statements("")[1]
ADD_MESSAGES_WITH_STATE_BUDGETED = _statements("")[2]
BY_REQUEST_IDS = f"""
SELECT {MESSAGE_COLUMNS}, (SELECT app_name FROM sessions WHERE id = $1) AS app_name
FROM messages WHERE session_id = $1 AND request_id = ANY($2::text[]::uuid[])
"""


class BudgetApplies(Exception):
    """The session's user or app has a budget: the append must run budgeted (storage/budgets.py)."""


class SessionLocked(Exception):
    """add_messages_unless_locked found the session row held by another transaction: it wrote
    nothing, and the append must run the ordinary way (which waits for the lock)."""
# Why an append took nothing: the session (no row: missing, or not the owner's) and whether a
# rewind removed what the request ids ($3; NULL for none) appended before.
WHY_NOT_APPENDED = f"""
SELECT {SESSION_COLUMNS}, EXISTS (
    SELECT 1 FROM rewound_requests r WHERE r.session_id = $1 AND r.request_id = ANY($3::text[]::uuid[])
) AS rewound
FROM sessions WHERE id = $1 AND {owned(2)}
"""


def request_id_taken(error: asyncpg.UniqueViolationError) -> bool:
    """Whether the unique (session_id, request_id) index refused an insert. On the partitioned table
    (migration 0017) the index that reports it is the partition's, which PostgreSQL named after the
    partition when it made the parent's index there (messages_p07_session_id_request_id_idx)."""
    name = error.constraint_name or ""
    return name == REQUEST_ID_INDEX or REQUEST_ID_PARTITION_INDEX.fullmatch(name) is not None


def request_ids(request_id: str | None, size: int) -> list[str | None]:
    """The request id stored on each message of a batch: the batch's own on the first (so a batch of
    one stores what AddMessage stores), and one derived from it (UUIDv5) on each of the others, so
    the unique (session_id, request_id) index holds for all of them and finds them again."""
    if request_id is None:
        return [None] * size
    base = uuid.UUID(request_id)
    return [request_id, *(str(uuid.uuid5(base, str(n))) for n in range(1, size))]


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
        WHERE session_id = $1 AND sequence {{op}} $2{{floor}} ORDER BY sequence {{order}} LIMIT $3
    ) page
    WHERE upto - size < $5
) m ON true
WHERE s.id = $1 AND {owned(4, "s.user_id")}
"""
_PAGE = "SELECT s.message_count{first}, m.* FROM sessions s" + _PAGE_ROWS
# Newest first, a page is the last when it reaches the oldest message stored: sequence 1, unless
# retention pruned the oldest (messages left are then a gapless run ending at message_count; one
# probe of the sequence index finds where it starts).
_FIRST_STORED = ", (SELECT min(f.sequence) FROM messages f WHERE f.session_id = $1) AS first_stored"
PAGE_ASCENDING = _PAGE.format(op=">", order="ASC", floor="", first="")
PAGE_DESCENDING = _PAGE.format(op="<", order="DESC", floor="", first=_FIRST_STORED)

# The same page of a filtered listing (start_time $6, recent_count $7; NULL for unset). Both
# filters are a lower bound on the sequence, since sequences are gapless from 1 and a message's
# create_time follows its sequence: the last N start at message_count - N + 1, and the messages
# at or after a time start at the first one ix_messages_session_id_create_time finds (none found:
# past the last message). The bound is its own lateral row (OFFSET 0 keeps the planner from
# inlining it, which would probe the time index again for every row returned), so the page stays a
# keyset range scan of uq_messages_session_id_sequence with both ends in its index condition.
_FROM = """
    CASE WHEN $6::timestamptz IS NULL THEN 1 ELSE coalesce(
        (SELECT f.sequence FROM messages f WHERE f.session_id = $1 AND f.create_time >= $6::timestamptz
         ORDER BY f.create_time, f.sequence LIMIT 1),
        s.message_count + 1) END
"""
_FILTERED = f"""
SELECT s.message_count, b.floor{{first}}, m.* FROM sessions s
CROSS JOIN LATERAL (SELECT greatest(s.message_count - $7::bigint + 1, {_FROM}) AS floor OFFSET 0) b
""" + _PAGE_ROWS
FILTERED_ASCENDING = _FILTERED.format(op=">", order="ASC", floor=" AND sequence >= b.floor", first="")
FILTERED_DESCENDING = _FILTERED.format(op="<", order="DESC", floor=" AND sequence >= b.floor", first=_FIRST_STORED)

# The same page with an event-time filter ($8; event_time_start), which is a filter of rows: event
# times are the writer's and need not follow the sequence. $6 bounds the sequence as above; the
# last $7 matching messages start at the $7-th matching one from the end, found walking the
# session's sequence index backwards from its last message ($7 = 0: past the last message; fewer
# match: from the start bound). Since matches are not gapless, the page reads one row past
# page_size ($3 + 1) and keeps, beyond the rows within the byte budget, the first one past it:
# whichever comes back past the page says that more follow.
_EVENT_TIME = "coalesce({m}event_time, {m}create_time) >= $8::timestamptz"
_EVENT_FILTERED = f"""
SELECT s.message_count, b.floor, m.* FROM sessions s
CROSS JOIN LATERAL (SELECT {_FROM} AS start OFFSET 0) a
CROSS JOIN LATERAL (SELECT CASE
    WHEN $7::bigint IS NULL THEN a.start
    WHEN $7::bigint = 0 THEN s.message_count + 1
    ELSE coalesce((
        SELECT r.sequence FROM messages r
        WHERE r.session_id = s.id AND r.sequence >= a.start AND {_EVENT_TIME.format(m='r.')}
        ORDER BY r.sequence DESC OFFSET $7::bigint - 1 LIMIT 1), a.start)
    END AS floor OFFSET 0) b
LEFT JOIN LATERAL (
    SELECT * FROM (
        SELECT page.*, upto - size < $5 AS within,
               coalesce(lag(upto - size < $5) OVER (ORDER BY sequence {{order}}), true) AS reachable
        FROM (
            SELECT {MESSAGE_COLUMNS}, {_SIZE} AS size, sum({_SIZE}) OVER (ORDER BY sequence {{order}}) AS upto
            FROM messages
            WHERE session_id = s.id AND sequence {{op}} $2 AND sequence >= b.floor AND {_EVENT_TIME.format(m='')}
            ORDER BY sequence {{order}} LIMIT $3 + 1
        ) page
    ) q
    WHERE reachable
) m ON true
WHERE s.id = $1 AND {owned(4, "s.user_id")}
"""
EVENT_FILTERED_ASCENDING = _EVENT_FILTERED.format(op=">", order="ASC")
EVENT_FILTERED_DESCENDING = _EVENT_FILTERED.format(op="<", order="DESC")


@statement
async def add_message(conn: asyncpg.Connection, new: NewMessage) -> Appended:
    """AddMessage: add_messages with a batch of one."""
    return await add_messages(conn, new.as_batch())


@statement
async def add_messages(conn: asyncpg.Connection, new: NewMessages) -> Appended:
    """AddMessages for a session without a budget (BudgetApplies otherwise, having written nothing)."""
    return await append(conn, new, budgeted=False)


@statement
async def add_messages_unless_locked(conn: asyncpg.Connection, new: NewMessages) -> Appended:
    """add_messages without waiting for the session's row lock: SessionLocked when another
    transaction holds it (nothing written). No state deltas (that statement never runs here)."""
    assert not new.state_delta
    try:
        return await append(conn, new, budgeted=False, unless_locked=True)
    except asyncpg.LockNotAvailableError:
        raise SessionLocked(new.session_id) from None


async def append(conn: asyncpg.Connection, new: NewMessages, *, budgeted: bool, unless_locked: bool = False) -> Appended:
    """Append a batch of messages and add them to the session's counters, in one autocommit
    statement; the stored messages in sequence order.

    With a request_id, a repeat returns the first result, even when the session
    has ended since. Two concurrent first calls with one request_id: the loser's
    insert hits the unique index after the winner commits, and it answers with
    the winner's messages (a statement of its own; nothing of the failed one remains).
    With expected_last_sequence, a session whose message_count is another is ABORTED
    (STALE_SESSION, its count in the ErrorInfo metadata as lastSequence); with expected_etag,
    a session at another etag is ABORTED (ETAG_MISMATCH, its etag in the metadata as etag).
    """
    bodies = new.messages
    ids = request_ids(new.request_id, len(bodies))
    params = (
        [str(uuid.uuid4()) for _ in bodies],
        new.session_id,
        [body.role.value for body in bodies],
        [body.message_type.value for body in bodies],
        [body.content for body in bodies],
        [str(body.tokens_used) for body in bodies],
        [format(body.cost, "f") for body in bodies],
        [rows.jsonb(body.metadata) for body in bodies],
        ids,
        new.expected_last_sequence,
        *rows.etag_parts(new.expected_etag),
        new.owner,
        [base64.b64encode(body.payload).decode("ascii") if body.payload else None for body in bodies],
        [body.payload_type or None for body in bodies],
        [None if body.event_time is None else body.event_time.isoformat() for body in bodies],
    )
    plain, once, with_state = (
        (ADD_MESSAGES_BUDGETED, ADD_MESSAGES_ONCE_BUDGETED, ADD_MESSAGES_WITH_STATE_BUDGETED) if budgeted
        else (ADD_MESSAGES_UNLESS_LOCKED, ADD_MESSAGES_ONCE_UNLESS_LOCKED, ADD_MESSAGES_WITH_STATE) if unless_locked
        else (ADD_MESSAGES, ADD_MESSAGES_ONCE, ADD_MESSAGES_WITH_STATE)
    )
    if new.request_id is None and not new.state_delta:
        found = await fetch(conn, plain, *params)
    else:
        try:
            if new.state_delta:
                found = await fetch(conn, with_state, *params, *state.delta_params(new.state_delta))
            else:
                found = await fetch(conn, once, *params)
        except asyncpg.UniqueViolationError as error:
            if not request_id_taken(error):
                raise
            found = await fetch(conn, BY_REQUEST_IDS, new.session_id, ids)
            assert found
        except asyncpg.PostgresError as error:
            refused = state.too_large(error, new.state_delta.max_bytes)
            if refused is None:
                raise
            raise refused from None
    if not found:
        await _why_not_appended(conn, new, ids, budget_probed=not budgeted)
    added = sorted((rows.message(row) for row in found), key=lambda message: message.sequence)
    return Appended(added, found[0]["app_name"])


async def _why_not_appended(
    conn: asyncpg.Connection, new: NewMessages, ids: list[str | None], *, budget_probed: bool
) -> None:
    """Raise what kept an append from landing, read from the session after the fact (one statement).
    An ACTIVE session whose conditions hold was refused by the budget probes (`budget_probed`):
    BudgetApplies, found by that same read."""
    row = await fetch_one(conn, WHY_NOT_APPENDED, new.session_id, new.owner, ids)
    if row is None:
        raise NotFound("session", new.session_id)
    if row["rewound"]:
        raise FailedPrecondition(
            f"what request {new.request_id} appended was removed by a rewind (TruncateSession); it is not "
            "appended again: send it with a new request_id to append it anew",
            reason="REQUEST_REWOUND",
        )
    session = rows.session(row)
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
    if budget_probed:
        raise BudgetApplies(new.session_id)
    # Active, and the conditions hold: the session is newer than the append's statement (a
    # client-chosen id created, or deleted and created again, while it ran; its snapshot could not
    # see the row). To that statement it was missing: NOT_FOUND, as an append just before the
    # creation would have been.
    raise NotFound("session", new.session_id)


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
    if query.event_time_start is not None:
        return await _list_by_event_time(conn, query, params)
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
    if query.descending:
        floor = max(floor, found[0]["first_stored"] or 1)
    # The sequences stored are gapless (from 1, or from the first retention left) to the message
    # count: whether more follow is in the last one.
    more = bool(messages) and (messages[-1].sequence > floor if query.descending else messages[-1].sequence < count)
    return Page(messages, more, count)


async def _list_by_event_time(conn: asyncpg.Connection, query: MessagesQuery, params: list[Any]) -> Page[Message]:
    sql = EVENT_FILTERED_DESCENDING if query.descending else EVENT_FILTERED_ASCENDING
    recent = query.recent_count if query.position is None else None
    found = await fetch(conn, sql, *params, query.start_time, recent, query.event_time_start)
    if not found:
        raise NotFound("session", query.session.session_id)
    returned = [row for row in found if row["id"] is not None]
    kept = [row for row in returned if row["within"]][: query.page_size]
    return Page([rows.message(row) for row in kept], len(returned) > len(kept), found[0]["message_count"])
