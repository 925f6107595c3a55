"""The schema as SQLAlchemy models. Alembic owns the real schema; these mirror it for queries.

No foreign key points at a users table: users live in the account service.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..domain import records

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = TIMESTAMP(timezone=True)


def _one_of(column: str, enum: type[enum.StrEnum]) -> str:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return f"{column} IN ({values})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(UUID(as_uuid=False), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, server_default="")
    conversation_data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))
    message_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_cost: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    update_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    last_activity_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    end_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    version: Mapped[int] = mapped_column(BigInteger, server_default="1")
    request_id: Mapped[str | None] = mapped_column(UUID(as_uuid=False), nullable=True)

    __table_args__ = (
        CheckConstraint(_one_of("status", records.SessionStatus), name="status"),
        CheckConstraint("message_count >= 0 AND total_tokens >= 0 AND total_cost >= 0", name="totals"),
        Index("ix_sessions_user_id_create_time", "user_id", text("create_time DESC"), text("id DESC")),
        Index(
            "ix_sessions_user_id_status_create_time",
            "user_id",
            "status",
            text("create_time DESC"),
            text("id DESC"),
        ),
        Index(
            "ix_sessions_active_last_activity_time",
            "last_activity_time",
            postgresql_where=text("status = 'active'"),
        ),
        Index(
            "uq_sessions_user_id_request_id",
            "user_id",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )

    def to_domain(self) -> records.Session:
        return records.Session(
            session_id=self.id,
            user_id=self.user_id,
            status=records.SessionStatus(self.status),
            title=self.title,
            conversation_data=self.conversation_data,
            metadata=self.metadata_,
            message_count=self.message_count,
            total_tokens=self.total_tokens,
            total_cost=self.total_cost,
            create_time=self.create_time,
            update_time=self.update_time,
            last_activity_time=self.last_activity_time,
            end_time=self.end_time,
            version=self.version,
        )


class MessageRow(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(UUID(as_uuid=False), primary_key=True)
    session_id: Mapped[str] = mapped_column(UUID(as_uuid=False), ForeignKey("sessions.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(Text)
    sequence: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(Text)
    message_type: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    tokens_used: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[Decimal] = mapped_column(Numeric)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    request_id: Mapped[str | None] = mapped_column(UUID(as_uuid=False), nullable=True)

    __table_args__ = (
        CheckConstraint(_one_of("role", records.Role), name="role"),
        CheckConstraint(_one_of("message_type", records.MessageType), name="message_type"),
        CheckConstraint("sequence >= 1 AND tokens_used >= 0 AND cost >= 0", name="amounts"),
        Index("uq_messages_session_id_sequence", "session_id", "sequence", unique=True),
        Index(
            "uq_messages_session_id_request_id",
            "session_id",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )


class MemoryRow(Base):
    __tablename__ = "memories"

    session_id: Mapped[str] = mapped_column(
        UUID(as_uuid=False), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(Text)
    conversation_summary: Mapped[str] = mapped_column(Text, server_default="")
    facts: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    preferences: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    update_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    version: Mapped[int] = mapped_column(BigInteger, server_default="1")

    def to_domain(self) -> records.Memory:
        return records.Memory(
            session_id=self.session_id,
            user_id=self.user_id,
            conversation_summary=self.conversation_summary,
            facts=list(self.facts),
            preferences=self.preferences,
            metadata=self.metadata_,
            create_time=self.create_time,
            update_time=self.update_time,
            version=self.version,
        )


# ---- the hot paths: plain SQL on the driver, rows straight to records --------------------------------
# Building and compiling an ORM statement per call costs more than the database work of a
# small call, so the per-call queries are fixed SQL strings (asyncpg prepares each once per
# connection) over the columns below, read by position.

SESSION_COLUMNS = (
    "id, user_id, status, title, conversation_data, metadata, message_count, total_tokens, total_cost, "
    "create_time, update_time, last_activity_time, end_time, version"
)
MESSAGE_COLUMNS = (
    "id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost, metadata, create_time"
)
MEMORY_COLUMNS = (
    "session_id, user_id, conversation_summary, facts, preferences, metadata, create_time, update_time, version"
)
SESSION_WIDTH = 14


def owned(param: int, column: str = "user_id") -> str:
    """The predicate that keeps a statement to the sessions of the call's owner, `$param`
    (records.Owner: NULL for any). It always stands beside a key lookup (`id = $1`), so the
    plan is the key's: the owner is a filter on the one row found, not a second query."""
    return f"(${param}::text IS NULL OR {column} = ${param})"

_STATUSES = {status.value: status for status in records.SessionStatus}
_ROLES = {role.value: role for role in records.Role}
_MESSAGE_TYPES = {kind.value: kind for kind in records.MessageType}


def session_from_row(row: Sequence[Any], offset: int = 0) -> records.Session:
    """A Session from SESSION_COLUMNS, in order, starting at `offset`."""
    o = offset
    return records.Session(
        str(row[o]), row[o + 1], _STATUSES[row[o + 2]], row[o + 3], row[o + 4], row[o + 5], row[o + 6],
        row[o + 7], row[o + 8], row[o + 9], row[o + 10], row[o + 11], row[o + 12], row[o + 13],
    )


def message_from_row(row: Sequence[Any], offset: int = 0) -> records.Message:
    """A Message from MESSAGE_COLUMNS, in order, starting at `offset`."""
    o = offset
    return records.Message(
        str(row[o]), str(row[o + 1]), row[o + 2], row[o + 3], _ROLES[row[o + 4]], _MESSAGE_TYPES[row[o + 5]],
        row[o + 6], row[o + 7], row[o + 8], row[o + 9], row[o + 10],
    )


def memory_from_row(row: Sequence[Any], offset: int = 0) -> records.Memory:
    """A Memory from MEMORY_COLUMNS, in order, starting at `offset`."""
    o = offset
    return records.Memory(
        str(row[o]), row[o + 1], row[o + 2], list(row[o + 3]), row[o + 4], row[o + 5], row[o + 6], row[o + 7],
        row[o + 8],
    )


Executor = AsyncSession | asyncpg.Connection
"""What a hot-path storage function runs on: the driver's connection (Database.run_driver) or an
ORM session inside a Database.run transaction."""


async def fetch(db: Executor, statement: str, *params: Any) -> Sequence[Sequence[Any]]:
    """The rows of one statement, on whichever of the two `db` is."""
    if isinstance(db, asyncpg.Connection):
        return await db.fetch(statement, *params)
    return (await (await db.connection()).exec_driver_sql(statement, params)).all()


async def fetch_one(db: Executor, statement: str, *params: Any) -> Sequence[Any] | None:
    rows = await fetch(db, statement, *params)
    return rows[0] if rows else None
