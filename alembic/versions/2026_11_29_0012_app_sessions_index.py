"""an admin lists an app's sessions across its users (ListSessions with app_name, no user_id)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 20:40:00

The listing walks (app_name, create_time DESC, id DESC) in keyset order and counts the app's
entries, the way ix_sessions_user_id_app_name_create_time serves one user's listing of an app.
Building it locks writes to sessions for as long as the build takes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sessions_app_name_create_time", "sessions", ["app_name", sa.text("create_time DESC"), sa.text("id DESC")]
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_app_name_create_time", table_name="sessions")
