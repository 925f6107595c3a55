"""Budgets: per user and per app limits on tokens and cost per UTC day and month

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 21:05:00

One row per budget: a user's (app_name '') or an app's (user_id ''), its limits (NULL: none),
whether they are soft, and what appends have used in the current day and month (day_*, month_*,
with the period they belong to; a row whose period has passed counts as 0 used). An append to a
session whose user or app has a budget takes this row's lock first (storage/budgets.py), so the
check against the limit and the insert are serialized per budget; sessions without a budget never
touch it beyond one primary-key probe in the append's statement.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE budgets (
            user_id text NOT NULL DEFAULT '',
            app_name text NOT NULL DEFAULT '',
            daily_tokens bigint,
            monthly_tokens bigint,
            daily_cost numeric,
            monthly_cost numeric,
            soft boolean NOT NULL DEFAULT false,
            day date NOT NULL,
            day_tokens bigint NOT NULL DEFAULT 0,
            day_cost numeric NOT NULL DEFAULT 0,
            month date NOT NULL,
            month_tokens bigint NOT NULL DEFAULT 0,
            month_cost numeric NOT NULL DEFAULT 0,
            create_time timestamptz NOT NULL DEFAULT now(),
            update_time timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_budgets PRIMARY KEY (user_id, app_name),
            CONSTRAINT ck_budgets_subject CHECK ((user_id = '') <> (app_name = '')),
            CONSTRAINT ck_budgets_limits CHECK (
                coalesce(daily_tokens, 0) >= 0 AND coalesce(monthly_tokens, 0) >= 0
                AND coalesce(daily_cost, 0) >= 0 AND coalesce(monthly_cost, 0) >= 0
            ),
            CONSTRAINT ck_budgets_used CHECK (day_tokens >= 0 AND day_cost >= 0 AND month_tokens >= 0 AND month_cost >= 0)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE budgets")
