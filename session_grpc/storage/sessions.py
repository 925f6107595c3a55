"""Queries and transactions on sessions: fixed SQL on the driver's connection, each function
marked with how it runs (units.py)."""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import asyncpg

from ..domain import lifecycle
from ..domain.errors import Aborted, AlreadyExists, NotFound
from ..domain.records import (
    AppStats,
    NewSession,
    Page,
    Role,
    ServiceStats,
    Session,
    SessionPatch,
    SessionRef,
    SessionOrder,
    SessionStatus,
    SessionsQuery,
    SessionSummary,
)
from . import rows
from .rows import SESSION_COLUMNS, fetch, fetch_one, owned
from .units import statement

# With a request_id, a repeat finds the first session instead of inserting (per user). The insert
# yields to either unique key (the id, the user's request_id): a repeat of a first call falls to
# the second SELECT whatever id it names; no row at all means the id is taken (by another request
# or another user).
CREATE_SESSION = f"""
WITH inserted AS (
    INSERT INTO sessions (id, user_id, status, title, conversation_data, metadata, request_id, app_name)
    VALUES ($1, $2, 'active', $3, $4::jsonb, $5::jsonb, $6, $7)
    ON CONFLICT DO NOTHING
    RETURNING {SESSION_COLUMNS}
)
SELECT * FROM inserted
UNION ALL
SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $2 AND request_id = $6 AND NOT EXISTS (SELECT 1 FROM inserted)
"""
BY_REQUEST_ID = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND request_id = $2"


@statement
async def create_session(conn: asyncpg.Connection, new: NewSession) -> Session:
    """Insert an ACTIVE session with the client's id or a new one; with a request_id, a repeat
    returns the first one. AlreadyExists when the client's id is taken by any other session."""
    session_id = new.session_id or str(uuid.uuid4())
    row = await fetch_one(
        conn, CREATE_SESSION, session_id, new.user_id, new.title, rows.jsonb(new.conversation_data),
        rows.jsonb(new.metadata), new.request_id, new.app_name,
    )
    if row is None and new.request_id is not None:
        # A concurrent first call with this request_id committed after this statement's snapshot
        # was taken (the insert waited for it, then did nothing): a new statement sees it.
        row = await fetch_one(conn, BY_REQUEST_ID, new.user_id, new.request_id)
    if row is None:
        # Nothing inserted and no first call of this request: the id is another session's. (A
        # generated id cannot collide in practice; a client's can.)
        raise AlreadyExists("session", session_id)
    return rows.session(row)


GET_SESSION = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND {owned(2)}"
GET_SESSION_FOR_UPDATE = GET_SESSION + " FOR UPDATE"


@statement
async def get_session(conn: asyncpg.Connection, ref: SessionRef) -> Session:
    row = await fetch_one(conn, GET_SESSION, ref.session_id, ref.owner)
    if row is None:
        raise NotFound("session", ref.session_id)
    return rows.session(row)


# One statement applies a patch: the fields it names get their new value ($3, $5, $7 flag which),
# a status move only from a status that may make it ($11), end_time when it moves to ENDED, and
# only when the etag's version still matches ($9; its creation time, $10, to the microsecond).
# A patch that changes nothing updates nothing. When no row comes back, update_session reads the
# session once more to say why, in the order a locked read would have: missing, stale etag,
# forbidden move, nothing to change.
UPDATE_SESSION = f"""
UPDATE sessions SET
    title = CASE WHEN $3 THEN $4 ELSE title END,
    conversation_data = CASE WHEN $5 THEN $6::jsonb ELSE conversation_data END,
    metadata = CASE WHEN $7 THEN $8::jsonb ELSE metadata END,
    status = coalesce($12, status),
    end_time = CASE WHEN $12 = 'ended' AND status <> 'ended' THEN now() ELSE end_time END,
    version = version + 1,
    update_time = now()
WHERE id = $1 AND {owned(2)}
  AND {rows.etag_matches(9, 10)}
  AND ($12::text IS NULL OR status = $12 OR status = ANY($11::text[]))
  AND ($3 OR $5 OR $7 OR ($12::text IS NOT NULL AND status <> $12))
RETURNING {SESSION_COLUMNS}
"""
MAX_ROUNDS = 3
"""Tries of an update whose row a concurrent call changed between its UPDATE and the read after."""


@statement
async def update_session(conn: asyncpg.Connection, patch: SessionPatch) -> Session:
    ref = SessionRef(patch.session_id, patch.owner)
    fields = patch.fields
    status = patch.status if "status" in fields else None
    version, micros = rows.etag_parts(patch.etag)
    for _ in range(MAX_ROUNDS):
        row = await fetch_one(
            conn, UPDATE_SESSION, ref.session_id, ref.owner,
            "title" in fields, patch.title,
            "conversation_data" in fields, rows.jsonb(patch.conversation_data),
            "metadata" in fields, rows.jsonb(patch.metadata),
            version, micros,
            sorted(s.value for s in lifecycle.sources(status)) if status else [],
            None if status is None else status.value,
        )
        if row is not None:
            return rows.session(row)
        current = await get_session(conn, ref)
        if patch.etag and patch.etag != current.etag:
            raise Aborted(f"etag {patch.etag} is stale; the session is now at {current.etag}", reason="ETAG_MISMATCH")
        if status is not None:
            lifecycle.check_move(current.status, status)
        if not (fields & {"title", "conversation_data", "metadata"}) and status in (None, current.status):
            return current
        # The move is allowed now: a concurrent update changed the status in between. Again.
    raise Aborted("the session kept changing while it was being updated; retry", reason="CONCURRENT_UPDATE")


END_SESSION = f"""
UPDATE sessions SET status = 'ended', end_time = now(), version = version + 1, update_time = now()
WHERE id = $1 AND {owned(2)} AND status = ANY($3::text[])
RETURNING {SESSION_COLUMNS}
"""
ENDS_FROM = sorted(status.value for status in lifecycle.sources(SessionStatus.ENDED))


@statement
async def end_session(conn: asyncpg.Connection, ref: SessionRef) -> Session:
    """One statement ends a session that may end (the common case); when it did not, a second
    one finds out why: no such session, or one already ended or archived (returned unchanged)."""
    row = await fetch_one(conn, END_SESSION, ref.session_id, ref.owner, ENDS_FROM)
    if row is not None:
        return rows.session(row)
    current = await get_session(conn, ref)
    if current.status in (SessionStatus.ENDED, SessionStatus.ARCHIVED):
        return current
    lifecycle.check_move(current.status, SessionStatus.ENDED)
    # It may end, so it could not a moment ago: a concurrent update moved it in between.
    raise Aborted("the session changed while it was being ended; retry", reason="CONCURRENT_UPDATE")


DELETE_SESSION = f"DELETE FROM sessions WHERE id = $1 AND {owned(2)} RETURNING id"


@statement
async def delete_session(conn: asyncpg.Connection, ref: SessionRef) -> None:
    """Remove the session; its messages and memory go with it (ON DELETE CASCADE)."""
    if await fetch_one(conn, DELETE_SESSION, ref.session_id, ref.owner) is None:
        raise NotFound("session", ref.session_id)


# A page of sessions is bounded in bytes like a page of messages (messages.py), but sessions have
# no gapless key to tell whether more follow: the first $2 rows all come back, those that start
# past $3 bytes (title and JSON) without their large columns (`within` false), so the caller sees
# both the page and whether anything is left.
_SIZE = "octet_length(title) + octet_length(conversation_data::text) + octet_length(metadata::text)"
_WITHIN = f"sum({_SIZE}) OVER w - ({_SIZE}) < $3"
_LIGHT = "id, user_id, app_name, status, message_count, total_tokens, total_cost, create_time, update_time, last_activity_time, " \
    "end_time, version, last_event_time, forked_from_session_id, forked_at_sequence"


@dataclass(frozen=True)
class _Filters:
    """Which of a listing's filters are set: one fixed statement per combination, so each keeps a
    plan of its own (generic plans included) instead of one plan for `$n IS NULL OR ...`."""

    statuses: int
    """0: any status; 1: one (`status = $n`, which keeps the status index's order); 2: several."""
    app: bool
    create_start: bool
    create_end: bool
    update_start: bool
    update_end: bool
    metadata: bool
    title: bool
    order: SessionOrder
    keyset: bool
    every_user: bool = False
    """No user: an admin's listing of an app's sessions across its users ($1 is then NULL)."""

    @classmethod
    def of(cls, query: SessionsQuery) -> _Filters:
        statuses = 0 if query.statuses is None else min(len(query.statuses), 2)
        return cls(
            statuses, query.app_name is not None, query.create_time_start is not None,
            query.create_time_end is not None, query.update_time_start is not None,
            query.update_time_end is not None, query.metadata_contains is not None,
            query.title_contains is not None, query.order, query.after is not None, query.user_id is None,
        )

    def params(self, query: SessionsQuery) -> list[object]:
        """The parameters after $1 user, $2 limit and $3 byte budget, in the order of `sql`."""
        values: list[object] = []
        if query.statuses is not None:
            values.append(query.statuses[0].value if len(query.statuses) == 1 else [s.value for s in query.statuses])
        if query.app_name is not None:
            values.append(query.app_name)
        for when in (query.create_time_start, query.create_time_end, query.update_time_start, query.update_time_end):
            if when is not None:
                values.append(when)
        if query.metadata_contains is not None:
            values.append(rows.jsonb(query.metadata_contains))
        if query.title_contains is not None:
            values.append("%" + _LIKE_SPECIAL.sub(lambda special: "\\" + special[0], query.title_contains) + "%")
        if query.after is not None:
            values += [query.after.time, query.after.session_id]
        return values


_LIKE_SPECIAL = re.compile(r"[\\%_]")


@functools.cache
def _list_sessions_sql(filters: _Filters) -> str:
    """The page and the total in one statement; a total of 0 still gives one row (of NULL columns).
    Parameters: $1 user, $2 limit, $3 byte budget, then each set filter's and the key (_Filters.params).

    Every variant starts from one of the (user_id, ...) indexes: a user's sessions in the listing's
    order (ix_sessions_user_id_create_time, ix_sessions_user_id_last_activity_time, or the status and
    app ones), the other filters checked on the way; the planner may add ix_sessions_metadata
    (jsonb_path_ops) or the title's trigram index when they are selective. The total counts the
    same rows without the key.

    Without a user (every_user: an app's sessions across its users; $1 is NULL, so every variant
    takes the same parameters) the app's ix_sessions_app_name_create_time serves the creation order
    the same way.
    """
    n = 4
    where = "$1::text IS NULL" if filters.every_user else "user_id = $1"

    def add(condition: str) -> None:
        nonlocal n, where
        where += " AND " + condition.replace("$n", f"${n}")
        n += 1

    if filters.statuses:
        add("status = $n" if filters.statuses == 1 else "status = ANY($n::text[])")
    if filters.app:
        add("app_name = $n")
    for present, condition in (
        (filters.create_start, "create_time >= $n"),
        (filters.create_end, "create_time < $n"),
        (filters.update_start, "update_time >= $n"),
        (filters.update_end, "update_time < $n"),
    ):
        if present:
            add(condition)
    if filters.metadata:
        add("metadata @> $n::jsonb")
    if filters.title:
        add("title ILIKE $n")
    order = filters.order.value
    after = f" AND ({order}, id) < (${n}::timestamptz, ${n + 1}::uuid)" if filters.keyset else ""
    return f"""
SELECT t.total, s.* FROM (SELECT count(*) AS total FROM sessions WHERE {where}) t
LEFT JOIN LATERAL (
    SELECT {_LIGHT}, {_WITHIN} AS within, CASE WHEN {_WITHIN} THEN title END AS title,
           CASE WHEN {_WITHIN} THEN conversation_data END AS conversation_data,
           CASE WHEN {_WITHIN} THEN metadata END AS metadata
    FROM sessions WHERE {where}{after}
    WINDOW w AS (ORDER BY {order} DESC, id DESC)
    ORDER BY {order} DESC, id DESC LIMIT $2
) s ON true
"""


LIST_SESSIONS = {
    (by_status, by_app, keyset): _list_sessions_sql(
        _Filters(int(by_status), by_app, False, False, False, False, False, False, SessionOrder.CREATE_TIME, keyset)
    )
    for by_status in (False, True)
    for by_app in (False, True)
    for keyset in (False, True)
}
"""The statements of the listings by status and app only (bench.explain and the plan tests read them)."""
LIST_APP_SESSIONS = {
    keyset: _list_sessions_sql(
        _Filters(0, True, False, False, False, False, False, False, SessionOrder.CREATE_TIME, keyset, every_user=True)
    )
    for keyset in (False, True)
}
"""The statements of an app's listing across its users, first and later pages (the plan test reads them)."""


@statement
async def list_sessions(conn: asyncpg.Connection, query: SessionsQuery) -> Page[Session]:
    """One page of a user's sessions (or, user_id None, of an app's across its users), filtered,
    newest first by creation or by last activity (at most page_size, and no more than byte_budget
    but one), and the exact total of the filter.

    Keyset pagination on the (user_id, [status | app_name,] <order> DESC, id DESC) indexes: a
    deep page costs what the first does. The total is a count over the user's index entries.
    """
    filters = _Filters.of(query)
    params: list[object] = [query.user_id, query.page_size + 1, query.byte_budget, *filters.params(query)]
    found = await fetch(conn, _list_sessions_sql(filters), *params)
    sessions = [rows.session(row) for row in found[: query.page_size] if row["within"]]
    return Page(sessions, len(found) > len(sessions) and found[0]["id"] is not None, found[0]["total"])


# The session, whether it has a memory, its first and last message times, and one row per role
# with messages (or one row of NULLs), in one statement: a summary is part of every chat turn. The
# per-role counts are read from session_role_totals (kept by a trigger on messages and the rewind, migration 0016),
# the times from the two ends of ix_messages_session_id_create_time: a few index probes, whatever
# the session's length.
SESSION_SUMMARY = f"""
SELECT s.*, EXISTS (SELECT 1 FROM memories WHERE session_id = s.id) AS has_memory,
       (SELECT create_time FROM messages WHERE session_id = $1 ORDER BY create_time, sequence LIMIT 1) AS first,
       (SELECT create_time FROM messages WHERE session_id = $1 ORDER BY create_time DESC, sequence DESC LIMIT 1)
           AS last,
       r.role, r.message_count AS n
FROM (SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND {owned(2)}) s
LEFT JOIN session_role_totals r ON r.session_id = s.id AND r.message_count > 0
"""


@statement
async def session_summary(conn: asyncpg.Connection, ref: SessionRef) -> SessionSummary:
    found = await fetch(conn, SESSION_SUMMARY, ref.session_id, ref.owner)
    if not found:
        raise NotFound("session", ref.session_id)
    counts = {Role(row["role"]): row["n"] for row in found if row["role"] is not None}
    return SessionSummary(
        session=rows.session(found[0]),
        message_counts_by_role=counts,
        has_memory=found[0]["has_memory"],
        first_message_time=found[0]["first"],
        last_message_time=found[0]["last"],
    )


# One scan, one snapshot: a row per status (by_app 0) and a row per app (by_app 1), so the
# per-app totals add up to the service's even while messages are being added.
SERVICE_STATS = """
SELECT GROUPING(app_name) = 0 AS by_app, status, app_name, count(*) AS sessions,
       coalesce(sum(message_count), 0) AS messages, coalesce(sum(total_tokens), 0) AS tokens,
       coalesce(sum(total_cost), 0) AS cost, count(DISTINCT user_id) AS app_users,
       (SELECT count(DISTINCT user_id) FROM sessions) AS users
FROM sessions GROUP BY GROUPING SETS ((status), (app_name))
ORDER BY app_name
"""


@statement
async def service_stats(conn: asyncpg.Connection) -> ServiceStats:
    found = await fetch(conn, SERVICE_STATS)
    by_status = [row for row in found if not row["by_app"]]
    sessions_by_status = {SessionStatus(row["status"]): row["sessions"] for row in by_status}
    return ServiceStats(
        total_sessions=sum(sessions_by_status.values()),
        sessions_by_status=sessions_by_status,
        total_messages=int(sum(row["messages"] for row in by_status)),
        total_tokens=int(sum(row["tokens"] for row in by_status)),
        total_cost=sum((row["cost"] for row in by_status), Decimal(0)),
        distinct_users=found[0]["users"] if found else 0,
        apps=[
            AppStats(row["app_name"], row["sessions"], int(row["messages"]), int(row["tokens"]), row["cost"],
                     row["app_users"])
            for row in found if row["by_app"]
        ],
    )


EXPIRY_LOCK = 0x5E55_E7E1
"""The advisory lock key (transaction-scoped) that lets one replica at a time expire sessions."""

# The whole expiry is one statement under a transaction-scoped advisory lock: with several
# replicas (or workers) each running the expiry job, one does the work and the others find the
# lock held and skip their turn, instead of all of them scanning the same rows and queueing on
# their row locks. (Concurrent expiries would still be correct without it: the UPDATE re-checks
# status = 'active' on each row it waits for.) Transaction-scoped, so it is released at commit
# and works behind pgbouncer in transaction pooling mode, where a session lock would stay on a
# server connection other clients then use.
_EXPIRE = """
    UPDATE sessions SET status = 'expired', version = version + 1, update_time = now()
    FROM lock WHERE lock.held AND status = 'active' AND last_activity_time < now() - $1::interval
    RETURNING 1
"""
EXPIRE_SESSIONS = f"""
WITH lock AS MATERIALIZED (SELECT true AS held FROM pg_advisory_xact_lock($2)),
expired AS ({_EXPIRE})
SELECT true AS held, (SELECT count(*) FROM expired) AS expired
"""
EXPIRE_SESSIONS_IF_FREE = f"""
WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($2) AS held),
expired AS ({_EXPIRE})
SELECT (SELECT held FROM lock) AS held, (SELECT count(*) FROM expired) AS expired
"""


@statement
async def expire_sessions(conn: asyncpg.Connection, idle_for: timedelta) -> int:
    """Move ACTIVE sessions idle for longer than `idle_for` to EXPIRED; how many moved. Waits
    (within the call's deadline) while another replica is expiring (ExpireSessions asked for it)."""
    row = await fetch_one(conn, EXPIRE_SESSIONS, idle_for, EXPIRY_LOCK)
    assert row is not None
    return int(row["expired"])


@statement
async def expire_sessions_if_free(conn: asyncpg.Connection, idle_for: timedelta) -> int | None:
    """The expiry job's turn: expire_sessions, or None at once when another replica is expiring."""
    row = await fetch_one(conn, EXPIRE_SESSIONS_IF_FREE, idle_for, EXPIRY_LOCK)
    assert row is not None
    return int(row["expired"]) if row["held"] else None
