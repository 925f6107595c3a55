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

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _as_in_0011() -> str:
    """feed_session_changed() as migration 0011 made it (read from that frozen file, not copied)."""
    spec = importlib.util.spec_from_file_location("change_feed_0011", Path(__file__).with_name("2026_11_29_0011_change_feed.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    functions: str = module.FUNCTIONS
    start = functions.index("CREATE FUNCTION feed_session_changed()")
    end = functions.index("END $$;", start) + len("END $$;")
    return functions[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")


_REWIND = """            -- A rewind (TruncateSession) also bumps the version; its snapshot carries the new etag.
            PERFORM feed_record(NEW.user_id, NEW.id, 'messages_removed', to_jsonb(NEW) - 'request_id');"""
_REWIND_WITH_FIRST_SEQUENCE = """            -- A rewind (TruncateSession) also bumps the version; its snapshot carries the new etag,
            -- and first_sequence the lowest sequence left (0: none), read after the rewind's delete.
            PERFORM feed_record(NEW.user_id, NEW.id, 'messages_removed', (to_jsonb(NEW) - 'request_id')
                || jsonb_build_object('first_sequence',
                       coalesce((SELECT min(m.sequence) FROM messages m WHERE m.session_id = NEW.id), 0)));"""


def upgrade() -> None:
    before = _as_in_0011()
    assert before.count(_REWIND) == 1
    op.execute(before.replace(_REWIND, _REWIND_WITH_FIRST_SEQUENCE))


def downgrade() -> None:
    op.execute(_as_in_0011())
