"""Per-role totals kept with each session, so GetSessionSummary reads them instead of its messages

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29 23:30:00

session_role_totals holds, per session and role, the count of its messages of that role and the
sums of their tokens_used and cost. GetSessionSummary reads these rows (one per role, at most
four) instead of aggregating every message of the session, so a summary costs the same at 1 and at
50,000 messages.

They follow the session's own totals (message_count, total_tokens, total_cost): they change
exactly when those do, in the same statement.

- Added by a statement-level trigger after every INSERT into messages, in the statement (so the
  transaction) that inserts them, whoever runs it: AddMessage and AddMessages (whatever shape the
  append statement takes), a fork's copy, an import, the bench's seeding. One upsert per session
  and role of the statement's rows.
- Taken off by TruncateSession, in its own statement (storage/history.py), as it takes the removed
  messages off the session's totals.
- Gone with their session (ON DELETE CASCADE): DeleteSession, an erasure, a retention job deleting
  closed sessions.
- Not changed by a DELETE of messages that leaves the session's totals as they are (retention's
  pruning of old messages keeps the totals frozen, issue 13): no trigger on DELETE, so the per-role
  counts stay frozen with them and still add up to message_count.

tests/test_summary_totals.py compares them with a fresh aggregate over the messages after every
kind of write that keeps totals exact.

Locks: the upsert touches only the rows of the sessions whose messages the statement inserted, at
its end; every writer of messages holds the session row's lock by then (the append's UPDATE, the
fork's new row), so two writers of one session meet on the session row first and never wait for
each other's totals rows the other way round.

A role's row stays at 0 when a rewind removes its last message (the summary lists roles with
messages only).

The backfill runs after the trigger is created, in the migration's transaction: CREATE TRIGGER
takes a lock on messages that keeps writers out until the commit, so no message is counted twice
or missed. On a big table it reads every message once (one aggregate). A session whose old
messages were pruned before it (frozen totals) gets the counts of the messages it still has.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
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
    CREATE TRIGGER session_role_totals_added AFTER INSERT ON messages
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION session_role_totals_added()
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
    op.execute("DROP TRIGGER IF EXISTS session_role_totals_added ON messages")
    op.execute("DROP FUNCTION IF EXISTS session_role_totals_added()")
    op.execute("DROP TABLE session_role_totals")
