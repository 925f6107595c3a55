"""messages carry a payload (bytes as sent, with a media type) and their event's own time; sessions
the event time of their last message

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:30:00

New nullable columns without defaults are catalog-only changes: no rewrite of messages. Messages
stored before keep NULL event times and read as their create_time (rows.MESSAGE_COLUMNS), so the
largest table is not rewritten; sessions with messages get their last_event_time from
last_activity_time, which until now was exactly the create_time of their last message (one update
of the sessions table, which holds a row per conversation, not per message). The check that a
payload and its media type come together is added NOT VALID and validated afterwards, so the scan
of messages holds a lock that lets reads and writes go on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("payload", postgresql.BYTEA(), nullable=True))
    op.add_column("messages", sa.Column("payload_type", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("event_time", postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.add_column("sessions", sa.Column("last_event_time", postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.execute("UPDATE sessions SET last_event_time = last_activity_time WHERE message_count > 0")
    op.execute(
        "ALTER TABLE messages ADD CONSTRAINT ck_messages_payload "
        "CHECK ((payload IS NULL) = (payload_type IS NULL)) NOT VALID"
    )
    op.execute("ALTER TABLE messages VALIDATE CONSTRAINT ck_messages_payload")


def downgrade() -> None:
    op.execute("ALTER TABLE messages DROP CONSTRAINT ck_messages_payload")
    op.drop_column("sessions", "last_event_time")
    op.drop_column("messages", "event_time")
    op.drop_column("messages", "payload_type")
    op.drop_column("messages", "payload")
