"""Who owns a session, for authorization (a session's user_id never changes)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from .tables import SessionRow


async def session_owner(db: AsyncConnection, session_id: str) -> str | None:
    return await db.scalar(select(SessionRow.user_id).where(SessionRow.id == session_id))
