"""sessions remember what they were forked from; rewinds remember their request_id

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 20:30:00

ForkSession writes the source session's id and the last sequence it copied on the fork. The id is
not a foreign key: a fork outlives its source, and its lineage still names where it came from.
Both columns are nullable without a default, so adding them touches only the catalog.

TruncateSession with a request_id leaves a row in session_rewinds (gone with its session), so a
retry finds that the rewind happened and removes nothing more, not even messages added since.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("forked_from_session_id", postgresql.UUID(as_uuid=False), nullable=True))
    op.add_column("sessions", sa.Column("forked_at_sequence", sa.BigInteger(), nullable=True))
    op.create_table(
        "session_rewinds",
        sa.Column("session_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("request_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("removed_count", sa.BigInteger(), nullable=False),
        sa.Column("create_time", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_session_rewinds_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", "request_id", name="pk_session_rewinds"),
    )


def downgrade() -> None:
    op.drop_table("session_rewinds")
    op.drop_column("sessions", "forked_at_sequence")
    op.drop_column("sessions", "forked_from_session_id")
