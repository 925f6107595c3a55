"""Scoped state: a session's own state (conversation_data), the state of its (app, user) and of its
app, changed by deltas that the writing statement merges (`(state || set) - delete`), never read
into Python and written back, so concurrent deltas to different keys all land.

The SQL pieces here are shared with AddMessage (messages.py), which applies the same deltas in
the statement that appends. Locks are always taken in one order, session row, then user state,
then app state (the app upsert waits for the user upsert through an InitPlan), so two writes
through different sessions of one user cannot deadlock on each other's state rows.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ..domain.errors import FailedPrecondition, NotFound
from ..domain.records import AppState, ScopedStateDelta, SessionRef, SessionState, StateUpdate, UserState, UserStateRef
from . import rows
from .rows import SESSION_COLUMNS, fetch_one, owned
from .units import statement

TOO_LARGE = "SGS01"
"""The SQLSTATE state_within() raises (migration 0004), its detail the scope."""


def delta_params(delta: ScopedStateDelta) -> list[Any]:
    """The seven parameters of the delta SQL below: per scope (session, user, app) the keys to set
    (jsonb; NULL leaves the scope untouched) and the keys to delete (text[]), then the limit."""
    params: list[Any] = []
    for scope in (delta.session, delta.user, delta.app):
        params += [None, []] if scope is None else [rows.jsonb(scope.set), list(scope.delete)]
    return [*params, delta.max_bytes]


def session_state_sql(first: int) -> str:
    """SET clauses merging a session delta into conversation_data (a new version: a new etag);
    `first` is the delta's first parameter (delta_params' order)."""
    s, d, limit = first, first + 1, first + 6
    return (
        f"conversation_data = CASE WHEN ${s}::jsonb IS NULL THEN conversation_data ELSE "
        f"state_within((conversation_data || ${s}::jsonb) - ${d}::text[], ${limit}, 'session') END, "
        f"version = version + CASE WHEN ${s}::jsonb IS NULL THEN 0 ELSE 1 END"
    )


def scoped_state_ctes(first: int, source: str) -> str:
    """CTEs `user_changed` and `app_changed` upserting the user and app deltas for the rows of
    `source` (a CTE with app_name and user_id: the session written to). Each returns the state it
    left; the app's waits for the user's (lock order)."""
    us, ud, aps, apd, limit = first + 2, first + 3, first + 4, first + 5, first + 6
    return f"""
user_changed AS (
    INSERT INTO user_states AS u (app_name, user_id, state)
    SELECT app_name, user_id, state_within(${us}::jsonb, ${limit}, 'user') FROM {source}
    WHERE ${us}::jsonb IS NOT NULL
    ON CONFLICT (app_name, user_id) DO UPDATE
    SET state = state_within((u.state || ${us}::jsonb) - ${ud}::text[], ${limit}, 'user'), update_time = clock_timestamp()
    RETURNING u.state, u.update_time
), app_changed AS (
    INSERT INTO app_states AS a (app_name, state)
    SELECT app_name, state_within(${aps}::jsonb, ${limit}, 'app') FROM {source}
    WHERE ${aps}::jsonb IS NOT NULL AND (SELECT count(*) FROM user_changed) >= 0
    ON CONFLICT (app_name) DO UPDATE
    SET state = state_within((a.state || ${aps}::jsonb) - ${apd}::text[], ${limit}, 'app'), update_time = clock_timestamp()
    RETURNING a.state, a.update_time
)"""


def too_large(error: asyncpg.PostgresError, limit: int) -> FailedPrecondition | None:
    """The domain error for state_within's refusal, or None for any other database error."""
    if getattr(error, "sqlstate", None) != TOO_LARGE:
        return None
    scope = getattr(error, "detail", None) or "state"
    return FailedPrecondition(
        f"the {scope} state would be larger than {limit} bytes as JSON: delete keys to make room; nothing was stored",
        reason="STATE_TOO_LARGE",
        metadata={"scope": scope, "limitBytes": str(limit)},
    )


# The session with the state of its (app, user) and of its app: GetSession with include_scoped_state.
_WITH_SCOPES = """
SELECT s.*, u.state AS user_state, u.update_time AS user_update_time,
       a.state AS app_state, a.update_time AS app_update_time
FROM ({sessions}) s
LEFT JOIN user_states u ON u.app_name = s.app_name AND u.user_id = s.user_id
LEFT JOIN app_states a ON a.app_name = s.app_name
"""
GET_SESSION_STATE = _WITH_SCOPES.format(sessions=f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND {owned(2)}")

# UpdateState: the session is locked first (lock order), its request_id recorded (a repeat finds it
# there and applies nothing), then the three deltas. The answer is what each change returned, or
# the row as it was for a scope left alone.
_QUALIFIED = ", ".join(f"s.{column}" for column in SESSION_COLUMNS.split(", "))
UPDATE_STATE = f"""
WITH target AS (
    SELECT id, app_name, user_id FROM sessions WHERE id = $1 AND {owned(2)} FOR UPDATE
), recorded AS (
    INSERT INTO state_updates (session_id, request_id) SELECT id, $3 FROM target WHERE $3::uuid IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING session_id
), applying AS (
    SELECT * FROM target WHERE $3::uuid IS NULL OR EXISTS (SELECT 1 FROM recorded)
), session_changed AS (
    UPDATE sessions s SET {session_state_sql(4)}, update_time = now()
    FROM applying WHERE s.id = applying.id AND $4::jsonb IS NOT NULL
    RETURNING {_QUALIFIED}
), {scoped_state_ctes(4, "applying")}
SELECT s.*, EXISTS (SELECT 1 FROM applying) AS applied,
       coalesce((SELECT state FROM user_changed), u.state) AS user_state,
       coalesce((SELECT update_time FROM user_changed), u.update_time) AS user_update_time,
       coalesce((SELECT state FROM app_changed), a.state) AS app_state,
       coalesce((SELECT update_time FROM app_changed), a.update_time) AS app_update_time
FROM (
    SELECT * FROM session_changed
    UNION ALL
    SELECT {SESSION_COLUMNS} FROM sessions WHERE id = (SELECT id FROM target) AND NOT EXISTS (SELECT 1 FROM session_changed)
) s
LEFT JOIN user_states u ON u.app_name = s.app_name AND u.user_id = s.user_id
LEFT JOIN app_states a ON a.app_name = s.app_name
"""


def session_state(row: rows.Row) -> SessionState:
    """A SessionState from a row with SESSION_COLUMNS and the four scoped-state columns."""
    session = rows.session(row)
    return SessionState(
        session,
        UserState(session.app_name, session.user_id, row["user_state"] or {}, row["user_update_time"]),
        AppState(session.app_name, row["app_state"] or {}, row["app_update_time"]),
    )


@statement
async def get_session_state(conn: asyncpg.Connection, ref: SessionRef) -> SessionState:
    row = await fetch_one(conn, GET_SESSION_STATE, ref.session_id, ref.owner)
    if row is None:
        raise NotFound("session", ref.session_id)
    return session_state(row)


@statement
async def update_state(conn: asyncpg.Connection, update: StateUpdate) -> SessionState:
    """Apply the deltas in one statement. A repeated request_id applies nothing and answers with
    the states read by a second statement: when its first call committed while this one waited on
    the request_id's key, this statement's snapshot is older than that commit."""
    ref = update.session
    try:
        row = await fetch_one(conn, UPDATE_STATE, ref.session_id, ref.owner, update.request_id, *delta_params(update.delta))
    except asyncpg.PostgresError as error:
        refused = too_large(error, update.delta.max_bytes)
        if refused is None:
            raise
        raise refused from None
    if row is None:
        raise NotFound("session", ref.session_id)
    if not row["applied"]:
        return await get_session_state(conn, ref)
    return session_state(row)


GET_USER_STATE = "SELECT state, update_time FROM user_states WHERE app_name = $1 AND user_id = $2"
GET_APP_STATE = "SELECT state, update_time FROM app_states WHERE app_name = $1"


@statement
async def get_user_state(conn: asyncpg.Connection, ref: UserStateRef) -> UserState:
    """The user's state in the app; empty when nothing was ever set (no row)."""
    row = await fetch_one(conn, GET_USER_STATE, ref.app_name, ref.user_id)
    return UserState(ref.app_name, ref.user_id, row["state"] if row else {}, row["update_time"] if row else None)


@statement
async def get_app_state(conn: asyncpg.Connection, app_name: str) -> AppState:
    """The app's state; empty when nothing was ever set (no row)."""
    row = await fetch_one(conn, GET_APP_STATE, app_name)
    return AppState(app_name, row["state"] if row else {}, row["update_time"] if row else None)
