"""MESSAGES_REMOVED says which messages are left: first_sequence in the change's payload

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30 03:20:00

A MESSAGES_REMOVED change (a rewind, TruncateSession, or the retention prune job) carried only the
session's snapshot: after a rewind message_count says where the messages end, but after a prune
nothing said where they now begin. The change's payload gains first_sequence, the lowest sequence
still stored (0 when none is left), which WatchSession and WatchUserSessions send as
SessionChange.first_sequence: the messages left are first_sequence..message_count. The rewind's
trigger reads it with one probe of the (session_id, sequence) index after the rewind's delete; the
prune statement (storage/retention.py) computes it from the prefix it removed. Changes recorded
before this revision have none (0).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The function of migration 0011 with the messages_removed branch extended; the downgrade puts
# 0011's back (a migration's text is frozen once released, so both are written out here).
WITH_FIRST_SEQUENCE = r"""
CREATE OR REPLACE FUNCTION feed_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
            -- A rewind (TruncateSession) also bumps the version; its snapshot carries the new etag,
            -- and first_sequence the lowest sequence left (0: none), read after the rewind's delete.
            PERFORM feed_record(NEW.user_id, NEW.id, 'messages_removed', (to_jsonb(NEW) - 'request_id')
                || jsonb_build_object('first_sequence',
                       coalesce((SELECT min(m.sequence) FROM messages m WHERE m.session_id = NEW.id), 0)));
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
"""

AS_IN_0011 = r"""
CREATE OR REPLACE FUNCTION feed_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""


def upgrade() -> None:
    op.execute(WITH_FIRST_SEQUENCE)


def downgrade() -> None:
    op.execute(AS_IN_0011)
