"""Per-role totals kept with each session, so GetSessionSummary reads them instead of its messages

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 23:30:00

session_role_totals holds, per session and role, the count of its messages of that role and the
sums of their tokens_used and cost. GetSessionSummary reads these rows (one per role, at most
four) instead of aggregating every message of the session, so a summary costs the same at 1 and at
50,000 messages.

They are kept by two statement-level triggers on messages, in the statement (so the transaction)
that changes the messages, whoever runs it: after an INSERT (AddMessage and AddMessages, a fork's
copy, an import, the bench's seeding) the inserted rows are added, per session and role, in one
upsert; after a DELETE (TruncateSession, a session's cascade, any pruning or erasure of messages)
the deleted ones are taken off. A trigger, not a CTE in each writer: every statement that writes
messages, today's and tomorrow's, keeps the totals exact without knowing about them, which the
test (tests/test_summary_totals.py) checks after every kind of write against a fresh aggregate
over the messages.

Locks: the upsert touches only the rows of the sessions whose messages the statement changed, at
its end; every writer of messages takes (or already holds) the session row's lock earlier in that
statement or transaction (the append's UPDATE, the rewind's SELECT ... FOR UPDATE, the cascade's
DELETE of the session), so two writers of one session meet on the session row first and never
wait for each other's totals rows the other way round. A writer that deletes messages without the
session's lock must not take it later in the same transaction (it would then wait on an append
holding the session and waiting on its totals rows).

A role's row stays at 0 when its last message goes (the summary lists roles with messages only);
the rows go with their session (ON DELETE CASCADE).

The backfill runs after the triggers are created, in the migration's transaction: CREATE TRIGGER
takes a lock on messages that keeps writers out until the commit, so no message is counted twice
or missed. On a big table it reads every message once (one aggregate).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("user", "assistant", "system", "tool")

UPGRADE = [
    f"""
    CREATE TABLE session_role_totals (
        session_id uuid NOT NULL,
        role text NOT NULL,
        message_count bigint NOT NULL,
        total_tokens bigint NOT NULL,
        total_cost numeric NOT NULL,
        CONSTRAINT pk_session_role_totals PRIMARY KEY (session_id, role),
        CONSTRAINT fk_session_role_totals_session_id_sessions FOREIGN KEY (session_id)
            REFERENCES sessions (id) ON DELETE CASCADE,
        CONSTRAINT ck_session_role_totals_role CHECK (role IN ({", ".join(f"'{role}'" for role in ROLES)})),
        CONSTRAINT ck_session_role_totals_totals CHECK (message_count >= 0 AND total_tokens >= 0 AND total_cost >= 0)
    )
    """,
    """
    CREATE FUNCTION session_role_totals_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO session_role_totals AS t (session_id, role, message_count, total_tokens, total_cost)
        SELECT session_id, role, count(*), sum(tokens_used), sum(cost) FROM added
        GROUP BY session_id, role ORDER BY session_id, role
        ON CONFLICT (session_id, role) DO UPDATE SET
            message_count = t.message_count + EXCLUDED.message_count,
            total_tokens = t.total_tokens + EXCLUDED.total_tokens,
            total_cost = t.total_cost + EXCLUDED.total_cost;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION session_role_totals_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE session_role_totals t SET
            message_count = t.message_count - r.n,
            total_tokens = t.total_tokens - r.tokens,
            total_cost = trim_scale(t.total_cost - r.cost)
        FROM (
            SELECT session_id, role, count(*) AS n, sum(tokens_used) AS tokens, sum(cost) AS cost
            FROM removed GROUP BY session_id, role ORDER BY session_id, role
        ) r
        WHERE t.session_id = r.session_id AND t.role = r.role;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER session_role_totals_added AFTER INSERT ON messages
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION session_role_totals_added()
    """,
    """
    CREATE TRIGGER session_role_totals_removed AFTER DELETE ON messages
        REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION session_role_totals_removed()
    """,
    """
    INSERT INTO session_role_totals (session_id, role, message_count, total_tokens, total_cost)
    SELECT session_id, role, count(*), sum(tokens_used), sum(cost) FROM messages GROUP BY session_id, role
    """,
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS session_role_totals_removed ON messages")
    op.execute("DROP TRIGGER IF EXISTS session_role_totals_added ON messages")
    op.execute("DROP FUNCTION IF EXISTS session_role_totals_removed()")
    op.execute("DROP FUNCTION IF EXISTS session_role_totals_added()")
    op.execute("DROP TABLE session_role_totals")
