"""Queries and transactions on messages."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Numeric, Text, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain import lifecycle
from ..domain.records import Message, NewMessage, SessionStatus
from .database import sqlstate
from .sessions import get_session
from .tables import MessageRow, SessionRow

UNIQUE_VIOLATION = "23505"


async def add_message(db: AsyncSession, new: NewMessage) -> Message:
    """Append a message and add it to the session's counters, in one statement.

    The UPDATE of the session row takes its row lock, so concurrent appends to
    one session queue up behind each other; the new message_count is the
    message's sequence, which keeps sequences gapless and counters exact. The
    message's create_time is the session's new last_activity_time, so both follow
    sequence order.
    """
    if new.request_id is not None:
        earlier = await _by_request_id(db, new)
        if earlier is not None:
            return earlier
    bumped = (
        update(SessionRow)
        .where(SessionRow.id == new.session_id, SessionRow.status == SessionStatus.ACTIVE.value)
        .values(
            message_count=SessionRow.message_count + 1,
            total_tokens=SessionRow.total_tokens + new.tokens_used,
            total_cost=SessionRow.total_cost + literal(new.cost, Numeric),
            # clock_timestamp(), not now(): now() is the transaction's start, taken before this
            # row's lock was queued for, so a later sequence could get an earlier time.
            last_activity_time=func.greatest(SessionRow.last_activity_time, func.clock_timestamp()),
            update_time=func.greatest(SessionRow.update_time, func.clock_timestamp()),
        )
        .returning(SessionRow.id, SessionRow.user_id, SessionRow.message_count, SessionRow.last_activity_time)
        .cte("bumped")
    )
    statement = (
        insert(MessageRow)
        .from_select(
            [
                MessageRow.id,
                MessageRow.session_id,
                MessageRow.user_id,
                MessageRow.sequence,
                MessageRow.role,
                MessageRow.message_type,
                MessageRow.content,
                MessageRow.tokens_used,
                MessageRow.cost,
                MessageRow.metadata_,
                MessageRow.request_id,
                MessageRow.create_time,
            ],
            select(
                literal(str(uuid.uuid4()), UUID(as_uuid=False)),
                bumped.c.id,
                bumped.c.user_id,
                bumped.c.message_count,
                literal(new.role.value, Text),
                literal(new.message_type.value, Text),
                literal(new.content, Text),
                literal(new.tokens_used, BigInteger),
                literal(new.cost, Numeric),
                literal(new.metadata, JSONB),
                literal(new.request_id, UUID(as_uuid=False)),
                bumped.c.last_activity_time,
            ),
        )
        .returning(MessageRow)
    )
    if new.request_id is None:
        row = await db.scalar(statement)
    else:
        try:
            async with db.begin_nested():
                row = await db.scalar(statement)
        except IntegrityError as error:
            # A concurrent call with the same request_id committed first: answer as it did.
            if sqlstate(error) != UNIQUE_VIOLATION:
                raise
            earlier = await _by_request_id(db, new)
            assert earlier is not None
            return earlier
    if row is None:
        session = await get_session(db, new.session_id)
        lifecycle.check_accepts_messages(session.status)
        raise AssertionError(f"session {new.session_id} is active but took no message")
    return row.to_domain()


async def _by_request_id(db: AsyncSession, new: NewMessage) -> Message | None:
    row = await db.scalar(
        select(MessageRow).where(MessageRow.session_id == new.session_id, MessageRow.request_id == new.request_id)
    )
    return None if row is None else row.to_domain()


async def list_messages(
    db: AsyncSession, session_id: str, page_size: int, position: int | None, descending: bool = False
) -> tuple[list[Message], int | None, int]:
    """One page, the sequence the next page continues from (None on the last), and the message count."""
    session = await get_session(db, session_id)
    messages = await messages_page(db, session_id, position, page_size + 1, descending=descending)
    page = messages[:page_size]
    next_position = page[-1].sequence if len(messages) > page_size else None
    return page, next_position, session.message_count


async def messages_page(
    db: AsyncSession, session_id: str, position: int | None, limit: int, *, descending: bool = False
) -> list[Message]:
    """Up to `limit` messages after `position` in sequence order, or before it newest first."""
    query = select(MessageRow).where(MessageRow.session_id == session_id)
    if descending:
        if position is not None:
            query = query.where(MessageRow.sequence < position)
        query = query.order_by(MessageRow.sequence.desc())
    else:
        query = query.where(MessageRow.sequence > (position or 0)).order_by(MessageRow.sequence)
    rows = await db.scalars(query.limit(limit))
    return [row.to_domain() for row in rows]
