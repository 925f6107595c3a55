"""the change feed: every change of a session recorded, in commit order per user

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 20:15:00

WatchSession and WatchUserSessions read `session_changes` by cursor (`change_id`). A change id is
per user: `user_feeds.change_count` is bumped for every change of any of the user's sessions, in
the transaction that makes the change, and the row lock that bump takes is held until that
transaction commits. So a user's changes commit in change-id order: a snapshot that sees change N
sees every change before it, and a reader that resumes after the last id it saw can never skip
one that commits later (which a global bigserial allows: ids are taken in one order and committed
in another). A session's changes are a subsequence of its user's, so the same cursor serves both.

The changes are written by triggers, so no write path (today's or a later one) can forget its
change, and AddMessage stays one statement:
- messages INSERT (statement level, over the inserted rows): one MESSAGE_ADDED per message;
- sessions INSERT / DELETE: SESSION_CREATED / SESSION_DELETED (which also drops the session's
  earlier changes: their snapshots hold its title and data);
- sessions UPDATE when `version` changes (every change of title, status, conversation_data or
  metadata bumps it: the etag rule) or `message_count` drops (messages removed, TruncateSession):
  SESSION_UPDATED or MESSAGES_REMOVED with a snapshot of the row; the counters AddMessage bumps
  fire nothing;
- memories INSERT / UPDATE (version) / DELETE: MEMORY_CHANGED / MEMORY_DELETED.
Each also sends `NOTIFY session_changes, '<session_id> <user_id>'` (delivered at commit), which
only tells the listening servers to look.

The user's counter row is the last lock every writing statement takes (AFTER triggers run at
the end of the statement), so it adds no lock-order cycle. It serializes the commits of one
user's writes across all their sessions.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = (
    "session_created", "session_updated", "message_added", "messages_removed",
    "memory_changed", "memory_deleted", "session_deleted",
)

FUNCTIONS = r"""
CREATE FUNCTION feed_record(p_user text, p_session uuid, p_kind text, p_payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    next_id bigint;
BEGIN
    INSERT INTO user_feeds AS f (user_id, change_count) VALUES (p_user, 1)
    ON CONFLICT (user_id) DO UPDATE SET change_count = f.change_count + 1
    RETURNING f.change_count INTO next_id;
    INSERT INTO session_changes (user_id, change_id, session_id, kind, payload)
    VALUES (p_user, next_id, p_session, p_kind, p_payload);
    PERFORM pg_notify('session_changes', p_session::text || ' ' || p_user);
END $$;

CREATE FUNCTION feed_messages_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH counts AS (
        SELECT user_id, count(*) AS n FROM added GROUP BY user_id ORDER BY user_id
    ), bumped AS (
        INSERT INTO user_feeds AS f (user_id, change_count) SELECT user_id, n FROM counts
        ON CONFLICT (user_id) DO UPDATE SET change_count = f.change_count + EXCLUDED.change_count
        RETURNING f.user_id, f.change_count
    )
    INSERT INTO session_changes (user_id, change_id, session_id, kind, sequence)
    SELECT a.user_id,
           b.change_count - c.n + row_number() OVER (PARTITION BY a.user_id ORDER BY a.session_id, a.sequence),
           a.session_id, 'message_added', a.sequence
    FROM added a JOIN bumped b ON b.user_id = a.user_id JOIN counts c ON c.user_id = a.user_id;
    PERFORM pg_notify('session_changes', s.session_id::text || ' ' || s.user_id)
    FROM (SELECT DISTINCT session_id, user_id FROM added) s;
    RETURN NULL;
END $$;

CREATE FUNCTION feed_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text[] := '{}';
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM feed_record(NEW.user_id, NEW.id, 'session_created', to_jsonb(NEW) - 'request_id');
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM session_changes WHERE session_id = OLD.id;
        PERFORM feed_record(OLD.user_id, OLD.id, 'session_deleted', '{}'::jsonb);
    ELSE
        IF NEW.message_count < OLD.message_count THEN
            -- A rewind (TruncateSession) also bumps the version; its snapshot carries the new etag.
            PERFORM feed_record(NEW.user_id, NEW.id, 'messages_removed', to_jsonb(NEW) - 'request_id');
        ELSIF NEW.version IS DISTINCT FROM OLD.version THEN
            IF NEW.title IS DISTINCT FROM OLD.title THEN changed := changed || 'title'::text; END IF;
            IF NEW.status IS DISTINCT FROM OLD.status THEN changed := changed || 'status'::text; END IF;
            IF NEW.conversation_data IS DISTINCT FROM OLD.conversation_data THEN
                changed := changed || 'conversation_data'::text;
            END IF;
            IF NEW.metadata IS DISTINCT FROM OLD.metadata THEN changed := changed || 'metadata'::text; END IF;
            PERFORM feed_record(NEW.user_id, NEW.id, 'session_updated',
                                (to_jsonb(NEW) - 'request_id') || jsonb_build_object('changed', changed));
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION feed_memory_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- Not when the session itself is being deleted (the cascade): SESSION_DELETED says it all.
        IF EXISTS (SELECT 1 FROM sessions WHERE id = OLD.session_id) THEN
            PERFORM feed_record(OLD.user_id, OLD.session_id, 'memory_deleted', '{}'::jsonb);
        END IF;
    ELSE
        PERFORM feed_record(NEW.user_id, NEW.session_id, 'memory_changed', to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER feed_messages_added AFTER INSERT ON messages
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION feed_messages_added();
CREATE TRIGGER feed_session_created AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION feed_session_changed();
CREATE TRIGGER feed_session_updated AFTER UPDATE ON sessions
    FOR EACH ROW WHEN (NEW.version IS DISTINCT FROM OLD.version OR NEW.message_count < OLD.message_count)
    EXECUTE FUNCTION feed_session_changed();
CREATE TRIGGER feed_session_deleted AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION feed_session_changed();
CREATE TRIGGER feed_memory_created AFTER INSERT OR DELETE ON memories
    FOR EACH ROW EXECUTE FUNCTION feed_memory_changed();
CREATE TRIGGER feed_memory_updated AFTER UPDATE ON memories
    FOR EACH ROW WHEN (NEW.version IS DISTINCT FROM OLD.version) EXECUTE FUNCTION feed_memory_changed();
"""

DROP = """
DROP TRIGGER IF EXISTS feed_memory_updated ON memories;
DROP TRIGGER IF EXISTS feed_memory_created ON memories;
DROP TRIGGER IF EXISTS feed_session_deleted ON sessions;
DROP TRIGGER IF EXISTS feed_session_updated ON sessions;
DROP TRIGGER IF EXISTS feed_session_created ON sessions;
DROP TRIGGER IF EXISTS feed_messages_added ON messages;
DROP FUNCTION IF EXISTS feed_memory_changed();
DROP FUNCTION IF EXISTS feed_session_changed();
DROP FUNCTION IF EXISTS feed_messages_added();
DROP FUNCTION IF EXISTS feed_record(text, uuid, text, jsonb);
"""


def _statements(script: str) -> list[str]:
    """One statement at a time (asyncpg prepares each; a prepared statement holds one command).
    Functions end with "END $$;", every other statement with ";" at a line's end."""
    found, current = [], []
    for line in script.strip().splitlines():
        if not current and not line.strip():
            continue
        current.append(line)
        inside_function = current[0].startswith("CREATE FUNCTION")
        if (inside_function and line.startswith("END $$;")) or (not inside_function and line.endswith(";")):
            found.append("\n".join(current))
            current = []
    return found


def upgrade() -> None:
    op.create_table(
        "user_feeds",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("change_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_feeds"),
    )
    op.create_table(
        "session_changes",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.Column("session_id", UUID(as_uuid=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("payload", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("create_time", TIMESTAMP(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "change_id", name="pk_session_changes"),
        sa.CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")", name="ck_session_changes_kind"),
    )
    op.create_index("ix_session_changes_session_id_change_id", "session_changes", ["session_id", "change_id"])
    for statement in _statements(FUNCTIONS):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(DROP):
        op.execute(statement)
    op.drop_index("ix_session_changes_session_id_change_id", table_name="session_changes")
    op.drop_table("session_changes")
    op.drop_table("user_feeds")
