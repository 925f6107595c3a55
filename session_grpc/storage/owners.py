"""Who owns a session, for authorization (a session's user_id never changes)."""

from __future__ import annotations

from .tables import Executor, fetch_one

SESSION_OWNER = "SELECT user_id FROM sessions WHERE id = $1"


async def session_owner(db: Executor, session_id: str) -> str | None:
    row = await fetch_one(db, SESSION_OWNER, session_id)
    return None if row is None else row[0]
