"""Usage ledger: the index GetUsage reads a user's usage from

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 21:00:00

- ix_messages_user_id_create_time: a user's messages by creation time, carrying what GetUsage adds
  up (role, tokens_used, cost) and the session (for an app filter) in the index itself, so a user's
  usage over a year is an index-only range scan of that user's entries, never a read of the
  messages' rows. The usage is read from the messages, not from a rollup kept beside them: it is
  exact by construction after every kind of write (appends, deletions, forks, truncations) and adds
  no hot row per user and day that concurrent appends would queue on. One more index entry per
  message (docs/performance.md measures what it costs AddMessage).
- ix_messages_create_time_brin: a BRIN index on creation time (a few pages for millions of rows,
  nearly free to keep up to date, since messages arrive in time order): the usage of an app or of
  the whole service over a range reads only the blocks of that range.

Building them locks writes to messages for as long as the builds take; on a big table build them
first by hand with CREATE INDEX CONCURRENTLY under the same names, and this upgrade's IF NOT EXISTS
skips them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_messages_user_id_create_time "
        "ON messages (user_id, create_time) INCLUDE (role, tokens_used, cost, session_id)"
    )
    op.execute("CREATE INDEX IF NOT EXISTS ix_messages_create_time_brin ON messages USING brin (create_time)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_messages_create_time_brin")
    op.execute("DROP INDEX IF EXISTS ix_messages_user_id_create_time")
