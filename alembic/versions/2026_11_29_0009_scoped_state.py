"""state per (app, user) and per app, changed by deltas merged in SQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 20:10:00

Besides a session's own state (sessions.conversation_data), Google ADK keeps state per user of an
app ("user:" keys) and per app ("app:" keys). Neither belongs to one session, so each is a table
keyed by its scope, without a foreign key (apps and users are not tables here). A delta is merged
by the statement that writes it (`(state || set) - delete` in an upsert), so concurrent deltas to
different keys never lose each other.

state_within(state, max_bytes, scope) is the limit of a merged state: it returns the state, or
raises SQLSTATE SGS01 (detail: the scope) when its JSON text is longer than max_bytes. It runs on
the row version the write locks, so the check is exact under concurrency, and raising aborts the
whole statement (the message an AddMessage carried included).

state_updates remembers the request_id of each UpdateState per session (idempotent retries); its
rows go with the session.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = postgresql.UUID(as_uuid=False)
TIMESTAMP = postgresql.TIMESTAMP(timezone=True)
EMPTY_OBJECT = sa.text("'{}'::jsonb")
NOW = sa.text("now()")

STATE_WITHIN = """
CREATE FUNCTION state_within(state jsonb, max_bytes integer, scope text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF octet_length(state::text) > max_bytes THEN
        RAISE EXCEPTION USING ERRCODE = 'SGS01', MESSAGE = 'state too large', DETAIL = scope;
    END IF;
    RETURN state;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "user_states",
        sa.Column("app_name", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("state", postgresql.JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("app_name", "user_id", name="pk_user_states"),
    )
    op.create_table(
        "app_states",
        sa.Column("app_name", sa.Text(), nullable=False),
        sa.Column("state", postgresql.JSONB(), server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("app_name", name="pk_app_states"),
    )
    op.create_table(
        "state_updates",
        sa.Column("session_id", UUID, nullable=False),
        sa.Column("request_id", UUID, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_state_updates_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", "request_id", name="pk_state_updates"),
    )
    op.execute(STATE_WITHIN)


def downgrade() -> None:
    op.execute("DROP FUNCTION state_within(jsonb, integer, text)")
    op.drop_table("state_updates")
    op.drop_table("app_states")
    op.drop_table("user_states")
