"""a rewind remembers the request ids of the messages it removed

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 21:00:00

An AddMessage or AddMessages retried with its request_id after a rewind removed what it appended
must not append it again (the rewind would be undone behind the user's back): TruncateSession keeps
the request ids of the messages it removes here, and an append repeating one of them is refused.
The rows go with their session.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rewound_requests",
        sa.Column("session_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("request_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_rewound_requests_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", "request_id", name="pk_rewound_requests"),
    )


def downgrade() -> None:
    op.drop_table("rewound_requests")
