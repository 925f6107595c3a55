"""sessions, messages and memories

Revision ID: 0001
Revises:
Create Date: 2026-11-24 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = postgresql.UUID(as_uuid=False)
TIMESTAMP = postgresql.TIMESTAMP(timezone=True)
EMPTY_OBJECT = sa.text("'{}'::jsonb")
NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", UUID, nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("conversation_data", postgresql.JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("metadata", postgresql.JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("message_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("total_cost", sa.Numeric(), server_default="0", nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("last_activity_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("end_time", TIMESTAMP, nullable=True),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("request_id", UUID, nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'completed', 'ended', 'archived', 'expired')", name="ck_sessions_status"
        ),
        sa.CheckConstraint(
            "message_count >= 0 AND total_tokens >= 0 AND total_cost >= 0", name="ck_sessions_totals"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index(
        "ix_sessions_user_id_create_time",
        "sessions",
        ["user_id", sa.text("create_time DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_sessions_user_id_status_create_time",
        "sessions",
        ["user_id", "status", sa.text("create_time DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_sessions_active_last_activity_time",
        "sessions",
        ["last_activity_time"],
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        "uq_sessions_user_id_request_id",
        "sessions",
        ["user_id", "request_id"],
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )

    op.create_table(
        "messages",
        sa.Column("id", UUID, nullable=False),
        sa.Column("session_id", UUID, nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("message_type", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tokens_used", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Numeric(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("request_id", UUID, nullable=True),
        sa.CheckConstraint("role IN ('user', 'assistant', 'system', 'tool')", name="ck_messages_role"),
        sa.CheckConstraint(
            "message_type IN ('chat', 'system', 'tool_call', 'tool_result', 'notification')",
            name="ck_messages_message_type",
        ),
        sa.CheckConstraint("sequence >= 1 AND tokens_used >= 0 AND cost >= 0", name="ck_messages_amounts"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_messages_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("uq_messages_session_id_sequence", "messages", ["session_id", "sequence"], unique=True)
    op.create_index(
        "uq_messages_session_id_request_id",
        "messages",
        ["session_id", "request_id"],
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )

    op.create_table(
        "memories",
        sa.Column("session_id", UUID, nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("conversation_summary", sa.Text(), server_default="", nullable=False),
        sa.Column("facts", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("preferences", postgresql.JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("metadata", postgresql.JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_memories_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", name="pk_memories"),
    )


def downgrade() -> None:
    op.drop_table("memories")
    op.drop_table("messages")
    op.drop_table("sessions")
