"""The schema as SQLAlchemy models. Alembic owns the real schema; these mirror it (tests compare
the two). The queries are fixed SQL over the columns in rows.py.

No foreign key points at a users table: users live in the account service.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Boolean,
    Date,
    Identity,
    Index,
    MetaData,
    Numeric,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, INTERVAL, JSONB, TIMESTAMP, TSVECTOR, UUID
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
    app_name: Mapped[str] = mapped_column(Text, server_default=records.DEFAULT_APP)
    last_event_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    forked_from_session_id: Mapped[str | None] = mapped_column(UUID(as_uuid=False), nullable=True)
    forked_at_sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

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
            "ix_sessions_user_id_app_name_create_time",
            "user_id",
            "app_name",
            text("create_time DESC"),
            text("id DESC"),
        ),
        Index("ix_sessions_app_name_create_time", "app_name", text("create_time DESC"), text("id DESC")),
        Index(
            "ix_sessions_user_id_last_activity_time",
            "user_id",
            text("last_activity_time DESC"),
            text("id DESC"),
        ),
        Index("ix_sessions_metadata", "metadata", postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"}),
        Index(
            "ix_sessions_active_last_activity_time",
            "last_activity_time",
            postgresql_where=text("status = 'active'"),
        ),
        Index(
            "ix_sessions_app_name_update_time_closed",
            "app_name",
            "update_time",
            postgresql_where=text("status <> 'active'"),
        ),
        Index(
            "uq_sessions_user_id_request_id",
            "user_id",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )



class MessageRow(Base):
    """One table by default. With SESSION_MESSAGE_PARTITIONS set when migration 0017 runs it is
    partitioned by hash of session_id (messages_p00 ...) and its primary key is (session_id, id);
    the columns, the other indexes and both unique keys are the same (docs/scaling.md)."""

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
    payload: Mapped[bytes | None] = mapped_column(BYTEA, nullable=True)
    payload_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    event_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    search_vector: Mapped[Any] = mapped_column(TSVECTOR, nullable=True)
    """Written by the trigger messages_search_vector from content, in the configuration the migrations
    chose (SESSION_SEARCH_CONFIG), unless the insert brings one (a fork's copy)."""

    __table_args__ = (
        CheckConstraint(_one_of("role", records.Role), name="role"),
        CheckConstraint("(payload IS NULL) = (payload_type IS NULL)", name="payload"),
        Index("ix_messages_search_vector", "search_vector", postgresql_using="gin"),
        CheckConstraint(_one_of("message_type", records.MessageType), name="message_type"),
        CheckConstraint("sequence >= 1 AND tokens_used >= 0 AND cost >= 0", name="amounts"),
        Index("uq_messages_session_id_sequence", "session_id", "sequence", unique=True),
        Index("ix_messages_session_id_create_time", "session_id", "create_time", "sequence"),
        Index(
            "ix_messages_user_id_create_time",
            "user_id",
            "create_time",
            postgresql_include=["role", "tokens_used", "cost", "session_id"],
        ),
        Index("ix_messages_create_time_brin", "create_time", postgresql_using="brin"),
        Index(
            "uq_messages_session_id_request_id",
            "session_id",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )


class RoleTotalsRow(Base):
    """A session's messages of one role: their count and the sums of their tokens and cost. Kept by
    the trigger of migration 0016 on every insert of messages and by TruncateSession; read by
    GetSessionSummary."""

    __tablename__ = "session_role_totals"

    session_id: Mapped[str] = mapped_column(
        UUID(as_uuid=False), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(Text, primary_key=True)
    message_count: Mapped[int] = mapped_column(BigInteger)
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    total_cost: Mapped[Decimal] = mapped_column(Numeric)

    __table_args__ = (
        CheckConstraint(_one_of("role", records.Role), name="role"),
        CheckConstraint("message_count >= 0 AND total_tokens >= 0 AND total_cost >= 0", name="totals"),
    )


class RewindRow(Base):
    """A TruncateSession made with a request_id: what a retry of it answers instead of rewinding again."""

    __tablename__ = "session_rewinds"

    session_id: Mapped[str] = mapped_column(
        UUID(as_uuid=False), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(UUID(as_uuid=False), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    removed_count: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))


class RewoundRequestRow(Base):
    """The request id of a message a rewind removed: an append repeating it is refused."""

    __tablename__ = "rewound_requests"

    session_id: Mapped[str] = mapped_column(
        UUID(as_uuid=False), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(UUID(as_uuid=False), primary_key=True)


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


class BudgetRow(Base):
    __tablename__ = "budgets"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True, server_default="")
    app_name: Mapped[str] = mapped_column(Text, primary_key=True, server_default="")
    daily_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    daily_cost: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    monthly_cost: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    soft: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    day: Mapped[date] = mapped_column(Date)
    day_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    day_cost: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    month: Mapped[date] = mapped_column(Date)
    month_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    month_cost: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    update_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))

    __table_args__ = (
        CheckConstraint("(user_id = '') <> (app_name = '')", name="subject"),
        CheckConstraint(
            "coalesce(daily_tokens, 0) >= 0 AND coalesce(monthly_tokens, 0) >= 0"
            " AND coalesce(daily_cost, 0) >= 0 AND coalesce(monthly_cost, 0) >= 0",
            name="limits",
        ),
        CheckConstraint("day_tokens >= 0 AND day_cost >= 0 AND month_tokens >= 0 AND month_cost >= 0", name="used"),
    )


class RetentionPolicyRow(Base):
    """What the prune job removes of one app (storage/retention.py); NULL: that rule is unset."""

    __tablename__ = "retention_policies"

    app_name: Mapped[str] = mapped_column(Text, primary_key=True)
    closed_session_ttl: Mapped[timedelta | None] = mapped_column(INTERVAL, nullable=True)
    message_ttl: Mapped[timedelta | None] = mapped_column(INTERVAL, nullable=True)
    max_messages_per_session: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    update_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))

    __table_args__ = (
        CheckConstraint(
            "closed_session_ttl IS NOT NULL OR message_ttl IS NOT NULL OR max_messages_per_session IS NOT NULL",
            name="rules",
        ),
        CheckConstraint(
            "coalesce(closed_session_ttl, interval '1 second') > interval '0'"
            " AND coalesce(message_ttl, interval '1 second') > interval '0'"
            " AND coalesce(max_messages_per_session, 1) >= 1",
            name="values",
        ),
    )


class UserStateRow(Base):
    """The state of one user in one app (ADK's "user:" keys); a row appears with the first delta."""

    __tablename__ = "user_states"

    app_name: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    update_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))


class AppStateRow(Base):
    """The state of one app (ADK's "app:" keys); a row appears with the first delta."""

    __tablename__ = "app_states"

    app_name: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))
    update_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))


class StateUpdateRow(Base):
    """The request_id of an UpdateState that was applied, so a repeat applies nothing."""

    __tablename__ = "state_updates"

    session_id: Mapped[str] = mapped_column(
        UUID(as_uuid=False), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(UUID(as_uuid=False), primary_key=True)
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("now()"))


CHANGE_KINDS = (
    "session_created", "session_updated", "message_added", "messages_removed",
    "memory_changed", "memory_deleted", "session_deleted",
)


class UserFeedRow(Base):
    """A user's change counter: the last change id given to a change of any of their sessions."""

    __tablename__ = "user_feeds"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    change_count: Mapped[int] = mapped_column(BigInteger)


class SessionChangeRow(Base):
    """One change of a session, written by the triggers of migration 0011 (storage/feed.py reads it)."""

    __tablename__ = "session_changes"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    change_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    session_id: Mapped[str] = mapped_column(UUID(as_uuid=False))
    kind: Mapped[str] = mapped_column(Text)
    sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    create_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("clock_timestamp()"))

    __table_args__ = (
        CheckConstraint("kind IN (" + ", ".join(f"'{kind}'" for kind in CHANGE_KINDS) + ")", name="kind"),
        Index("ix_session_changes_session_id_change_id", "session_id", "change_id"),
    )


class UserErasureRow(Base):
    """The audit log of DeleteUserData (migration 0015): whom (a SHA-256 of the user id), who, when,
    how many rows of each kind; no content."""

    __tablename__ = "user_erasures"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    subject_sha256: Mapped[str] = mapped_column(Text)
    erased_by: Mapped[str] = mapped_column(Text)
    erase_time: Mapped[datetime] = mapped_column(Timestamp, server_default=text("clock_timestamp()"))
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB)

    __table_args__ = (
        CheckConstraint("subject_sha256 ~ '^[0-9a-f]{64}$'", name="subject"),
        Index("ix_user_erasures_subject_sha256", "subject_sha256"),
    )
