"""Retention policies: per app, what the prune job removes

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29 23:30:00

- retention_policies: one row per app (app_name the key), each rule NULL when unset:
  closed_session_ttl (closed sessions, every status but ACTIVE, whose update_time, the close or any edit
  after it, is older are deleted with everything of them), message_ttl (messages older are deleted)
  and max_messages_per_session (only the newest N of a session are kept). storage/retention.py runs
  them; README, Retention.
- ix_sessions_app_name_update_time_closed: the closed sessions of an app by update_time, the order
  the closed_session_ttl rule deletes them in; active sessions (the many) are not in it, so it
  costs AddMessage nothing (an append only touches active sessions).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE retention_policies (
            app_name text NOT NULL,
            closed_session_ttl interval,
            message_ttl interval,
            max_messages_per_session bigint,
            create_time timestamptz NOT NULL DEFAULT now(),
            update_time timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_retention_policies PRIMARY KEY (app_name),
            CONSTRAINT ck_retention_policies_rules CHECK (
                closed_session_ttl IS NOT NULL OR message_ttl IS NOT NULL OR max_messages_per_session IS NOT NULL
            ),
            CONSTRAINT ck_retention_policies_values CHECK (
                coalesce(closed_session_ttl, interval '1 second') > interval '0'
                AND coalesce(message_ttl, interval '1 second') > interval '0'
                AND coalesce(max_messages_per_session, 1) >= 1
            )
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_sessions_app_name_update_time_closed ON sessions (app_name, update_time) "
        "WHERE status <> 'active'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_sessions_app_name_update_time_closed")
    op.execute("DROP TABLE retention_policies")
