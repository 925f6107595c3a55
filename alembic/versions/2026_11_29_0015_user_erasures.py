"""user_erasures: the audit log of DeleteUserData

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 23:30:00

One row per DeleteUserData call (a repeat, which removes nothing, too): who erased (`erased_by`:
"self" when the user erased themself, else the caller: "user:<id>" of an admin user, "service" of
a service principal or the operator), whom (`subject_sha256`: the hex SHA-256 of the user id,
never the id), when, and how many rows of each kind went (`counts`). No content.

Why a hash and not the id: the row outlives the erasure, and a row naming the user would be
personal data kept about them after they asked to have it removed. The hash still answers the
operator's question "was user X erased, when, by whom?" (hash X and look it up) without the table
listing who was erased. It is pseudonymous, not anonymous: whoever can guess a user id can confirm
it, which is the point of the lookup.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE user_erasures (
            id bigint GENERATED ALWAYS AS IDENTITY,
            subject_sha256 text NOT NULL,
            erased_by text NOT NULL,
            erase_time timestamptz NOT NULL DEFAULT clock_timestamp(),
            counts jsonb NOT NULL,
            CONSTRAINT pk_user_erasures PRIMARY KEY (id),
            CONSTRAINT ck_user_erasures_subject CHECK (subject_sha256 ~ '^[0-9a-f]{64}$')
        )
        """
    )
    op.execute("CREATE INDEX ix_user_erasures_subject_sha256 ON user_erasures (subject_sha256)")


def downgrade() -> None:
    op.execute("DROP TABLE user_erasures")
