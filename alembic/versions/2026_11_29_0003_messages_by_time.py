"""ListMessages reads a session's messages from a time on (start_time)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 19:00:00

A message's create_time follows its sequence within a session, so "at or after start_time" is the
session's tail from one sequence on. This index finds that sequence in one probe (the first entry
at or after the time); the page itself stays a keyset scan of uq_messages_session_id_sequence.
Building it locks writes to messages for as long as the build takes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_session_id_create_time", "messages", ["session_id", "create_time", "sequence"])


def downgrade() -> None:
    op.drop_index("ix_messages_session_id_create_time", table_name="messages")
