"""ListSessions filters and the last-activity order

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 20:30:00

- ix_sessions_user_id_last_activity_time: a user's sessions by last activity, newest first, the
  keyset order of ListSessions with order_by "last_activity_time desc" (as
  ix_sessions_user_id_create_time is for creation). Every AddMessage moves last_activity_time, so
  it is one more index entry written per message (docs/performance.md measures it).
- ix_sessions_metadata: GIN (jsonb_path_ops) for metadata_contains (metadata @> filter).
- ix_sessions_title_trgm: GIN trigram index for title_contains (ILIKE '%text%'), only where the
  pg_trgm extension is available (contrib; not in the embedded PostgreSQL): without it the filter
  still works, checked on the user's sessions as they are read.

Building them locks writes to sessions for as long as the builds take (seconds per million
sessions); on a big table build them first by hand with CREATE INDEX CONCURRENTLY under the same
names, and this upgrade's IF NOT EXISTS skips them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_sessions_user_id_last_activity_time "
        "ON sessions (user_id, last_activity_time DESC, id DESC)"
    )
    op.execute("CREATE INDEX IF NOT EXISTS ix_sessions_metadata ON sessions USING gin (metadata jsonb_path_ops)")
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).scalar() is None:
        return
    try:
        with bind.begin_nested():  # a role that may not create it leaves the rest of the upgrade intact
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError:
        return
    op.execute("CREATE INDEX IF NOT EXISTS ix_sessions_title_trgm ON sessions USING gin (title gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_sessions_title_trgm")
    op.execute("DROP INDEX IF EXISTS ix_sessions_metadata")
    op.execute("DROP INDEX IF EXISTS ix_sessions_user_id_last_activity_time")
