"""full-text search over messages: a stored tsvector and its GIN index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:15:00

`search_vector` is a generated column, to_tsvector(<configuration>, content), so every way a
message is written indexes it without remembering to. (0010 makes it a plain column kept by a
trigger, so that a fork's copies keep their vectors instead of parsing their content again.) Its configuration is SESSION_SEARCH_CONFIG when this migration runs (default `simple`: split
on non-letters, lowercase, no stemming or stop words, so it works for every language); the server
refuses to start when its own SESSION_SEARCH_CONFIG differs from the database's. Changing it later
makes every message's vector again: see README, Searching messages.

Cost of the upgrade on a big table: adding a stored generated column rewrites `messages` under an
ACCESS EXCLUSIVE lock (reads and writes of messages wait), then the GIN index is built (writes
wait). bench measured both on 1,000,000 messages (docs/performance.md). Plan it in a quiet
window, or build the index beforehand by hand with CREATE INDEX CONCURRENTLY under the same
name, after adding the column (the upgrade's IF NOT EXISTS then skips what is there).
"""

import os
from collections.abc import Sequence

from alembic import op

from session_grpc.settings import search_config

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    config = search_config(os.environ.get("SESSION_SEARCH_CONFIG") or "simple")
    op.execute(
        "ALTER TABLE messages ADD COLUMN IF NOT EXISTS search_vector tsvector "
        f"GENERATED ALWAYS AS (to_tsvector('{config}'::regconfig, content)) STORED"
    )
    op.execute("CREATE INDEX IF NOT EXISTS ix_messages_search_vector ON messages USING gin (search_vector)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_messages_search_vector")
    op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector")
