"""sessions belong to an application (app_name)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 18:30:00

Every session that exists gets the default app, "default" (records.DEFAULT_APP): the column's
server default, which PostgreSQL 11+ stores in the catalog instead of rewriting the table, so the
upgrade does not hold the table's lock for a rewrite. The index serves ListSessions filtered by app
the way ix_sessions_user_id_create_time serves the unfiltered listing: keyset order within
(user_id, app_name). Building it locks writes to sessions for as long as the build takes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("app_name", sa.Text(), server_default="default", nullable=False))
    op.create_index(
        "ix_sessions_user_id_app_name_create_time",
        "sessions",
        ["user_id", "app_name", sa.text("create_time DESC"), sa.text("id DESC")],
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_user_id_app_name_create_time", table_name="sessions")
    op.drop_column("sessions", "app_name")
