"""Queries and transactions on sessions. Each function runs inside the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain import lifecycle
from ..domain.errors import Aborted, NotFound
from ..domain.records import (
    NewSession,
    Page,
    Role,
    ServiceStats,
    Session,
    SessionPatch,
    SessionRef,
    SessionStatus,
    SessionsQuery,
    SessionSummary,
)
from .tables import (
    SESSION_COLUMNS,
    SESSION_WIDTH,
    Executor,
    SessionRow,
    fetch,
    fetch_one,
    owned,
    session_from_row,
)


async def create_session(db: AsyncSession, new: NewSession) -> Session:
    """Insert an ACTIVE session; with a request_id, a repeat returns the first one."""
    row = await db.scalar(
        insert(SessionRow)
        .values(
            id=str(uuid.uuid4()),
            user_id=new.user_id,
            status=SessionStatus.ACTIVE.value,
            title=new.title,
            conversation_data=new.conversation_data,
            metadata_=new.metadata,
            request_id=new.request_id,
        )
        .on_conflict_do_nothing(
            index_elements=[SessionRow.user_id, SessionRow.request_id],
            index_where=SessionRow.request_id.is_not(None),
        )
        .returning(SessionRow)
    )
    if row is None:  # the request_id was seen before
        row = await db.scalar(
            select(SessionRow).where(SessionRow.user_id == new.user_id, SessionRow.request_id == new.request_id)
        )
        assert row is not None
    return row.to_domain()


GET_SESSION = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND {owned(2)}"
GET_SESSION_FOR_UPDATE = GET_SESSION + " FOR UPDATE"


async def get_session(db: Executor, ref: SessionRef, *, for_update: bool = False) -> Session:
    """One statement (run_driver can run it alone); FOR UPDATE only means something inside a transaction."""
    row = await fetch_one(db, GET_SESSION_FOR_UPDATE if for_update else GET_SESSION, ref.session_id, ref.owner)
    if row is None:
        raise NotFound("session", ref.session_id)
    return session_from_row(row)


async def update_session(db: AsyncSession, patch: SessionPatch) -> Session:
    current = await get_session(db, SessionRef(patch.session_id, patch.owner), for_update=True)
    if patch.etag and patch.etag != current.etag:
        raise Aborted(
            f"etag {patch.etag} is stale; the session is now at {current.etag}", reason="ETAG_MISMATCH"
        )
    values: dict[str, object] = {}
    if "title" in patch.fields:
        values["title"] = patch.title
    if "conversation_data" in patch.fields:
        values["conversation_data"] = patch.conversation_data
    if "metadata" in patch.fields:
        values["metadata_"] = patch.metadata
    if "status" in patch.fields and patch.status is not None and patch.status != current.status:
        lifecycle.check_move(current.status, patch.status)
        values.update(_status_values(patch.status))
    if not values:
        return current
    return await _apply(db, current.session_id, values)


async def end_session(db: AsyncSession, ref: SessionRef) -> Session:
    current = await get_session(db, ref, for_update=True)
    if current.status in (SessionStatus.ENDED, SessionStatus.ARCHIVED):
        return current
    lifecycle.check_move(current.status, SessionStatus.ENDED)
    return await _apply(db, ref.session_id, _status_values(SessionStatus.ENDED))


def _status_values(status: SessionStatus) -> dict[str, object]:
    values: dict[str, object] = {"status": status.value}
    if status is SessionStatus.ENDED:
        values["end_time"] = func.now()
    return values


async def _apply(db: AsyncSession, session_id: str, values: dict[str, object]) -> Session:
    row = await db.scalar(
        update(SessionRow)
        .where(SessionRow.id == session_id)
        .values(**values, version=SessionRow.version + 1, update_time=func.now())
        .returning(SessionRow)
        .execution_options(synchronize_session=False)
    )
    assert row is not None
    return row.to_domain()


DELETE_SESSION = f"DELETE FROM sessions WHERE id = $1 AND {owned(2)} RETURNING id"


async def delete_session(db: Executor, ref: SessionRef) -> None:
    """Remove the session; its messages and memory go with it (ON DELETE CASCADE). One statement."""
    if await fetch_one(db, DELETE_SESSION, ref.session_id, ref.owner) is None:
        raise NotFound("session", ref.session_id)


def _list_sessions_sql(by_status: bool, keyset: bool) -> str:
    """The page and the total in one statement; a total of 0 still gives one row (of NULL columns)."""
    status = " AND status = $3" if by_status else ""
    n = 4 if by_status else 3
    after = f" AND (create_time, id) < (${n}::timestamptz, ${n + 1}::uuid)" if keyset else ""
    return f"""
SELECT t.total, s.* FROM (SELECT count(*) AS total FROM sessions WHERE user_id = $1{status}) t
LEFT JOIN LATERAL (
    SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1{status}{after}
    ORDER BY create_time DESC, id DESC LIMIT $2
) s ON true
"""


LIST_SESSIONS = {(by_status, keyset): _list_sessions_sql(by_status, keyset) for by_status in (False, True)
                 for keyset in (False, True)}


async def list_sessions(db: Executor, query: SessionsQuery) -> Page[Session]:
    """One page of a user's sessions, newest first, and the total.

    Keyset pagination on the (user_id, [status,] create_time DESC, id DESC) indexes: a deep page
    costs what the first does. The total is a count over the user's index entries.
    """
    params: list[object] = [query.user_id, query.page_size + 1]
    if query.status is not None:
        params.append(query.status.value)
    if query.after is not None:
        params += [query.after.create_time, query.after.session_id]
    statement = LIST_SESSIONS[(query.status is not None, query.after is not None)]
    rows = await fetch(db, statement, *params)
    sessions = [session_from_row(row, 1) for row in rows if row[1] is not None]
    return Page(sessions[: query.page_size], len(sessions) > query.page_size, rows[0][0])


# The session, whether it has a memory, and one row per role with messages (or one row of NULLs),
# in one statement: a summary is part of every chat turn.
SESSION_SUMMARY = f"""
SELECT s.*, EXISTS (SELECT 1 FROM memories WHERE session_id = s.id), r.role, r.n, r.first, r.last
FROM (SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND {owned(2)}) s
LEFT JOIN LATERAL (
    SELECT role, count(*) AS n, min(create_time) AS first, max(create_time) AS last
    FROM messages WHERE session_id = s.id GROUP BY role
) r ON true
"""


async def session_summary(db: Executor, ref: SessionRef) -> SessionSummary:
    rows = await fetch(db, SESSION_SUMMARY, ref.session_id, ref.owner)
    if not rows:
        raise NotFound("session", ref.session_id)
    counts: dict[Role, int] = {}
    first: datetime | None = None
    last: datetime | None = None
    width = SESSION_WIDTH
    for row in rows:
        role, count, role_first, role_last = row[width + 1 : width + 5]
        if role is None:
            continue
        counts[Role(role)] = count
        first = role_first if first is None else min(first, role_first)
        last = role_last if last is None else max(last, role_last)
    return SessionSummary(
        session=session_from_row(rows[0]),
        message_counts_by_role=counts,
        has_memory=bool(rows[0][width]),
        first_message_time=first,
        last_message_time=last,
    )


async def service_stats(db: AsyncSession) -> ServiceStats:
    by_status = await db.execute(
        select(
            SessionRow.status,
            func.count(),
            func.coalesce(func.sum(SessionRow.message_count), 0),
            func.coalesce(func.sum(SessionRow.total_tokens), 0),
            func.coalesce(func.sum(SessionRow.total_cost), 0),
        ).group_by(SessionRow.status)
    )
    sessions_by_status: dict[SessionStatus, int] = {}
    messages = tokens = 0
    cost = Decimal(0)
    for status, count, status_messages, status_tokens, status_cost in by_status:
        sessions_by_status[SessionStatus(status)] = count
        messages += status_messages
        tokens += status_tokens
        cost += status_cost
    users = await db.scalar(select(func.count(func.distinct(SessionRow.user_id)))) or 0
    return ServiceStats(
        total_sessions=sum(sessions_by_status.values()),
        sessions_by_status=sessions_by_status,
        total_messages=int(messages),
        total_tokens=int(tokens),
        total_cost=cost,
        distinct_users=users,
    )


async def expire_sessions(db: AsyncSession, idle_for: timedelta) -> int:
    """Move ACTIVE sessions idle for longer than `idle_for` to EXPIRED; how many moved."""
    expired = await db.scalars(
        update(SessionRow)
        .where(
            SessionRow.status == SessionStatus.ACTIVE.value,
            SessionRow.last_activity_time < func.now() - idle_for,
        )
        .values(
            status=SessionStatus.EXPIRED.value,
            version=SessionRow.version + 1,
            update_time=func.now(),
        )
        .returning(SessionRow.id)
        .execution_options(synchronize_session=False)
    )
    return len(list(expired))
