"""The change feed's records: what WatchSession and WatchUserSessions read and stream."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from .records import Memory, Message, Owner, Session


class ChangeKind(enum.StrEnum):
    """The `kind` column of session_changes (written by the triggers of migration 0011)."""

    SESSION_CREATED = "session_created"
    SESSION_UPDATED = "session_updated"
    MESSAGE_ADDED = "message_added"
    MESSAGES_REMOVED = "messages_removed"
    MEMORY_CHANGED = "memory_changed"
    MEMORY_DELETED = "memory_deleted"
    SESSION_DELETED = "session_deleted"


@dataclass(frozen=True)
class Change:
    change_id: int
    session_id: str
    kind: ChangeKind
    change_time: datetime
    session: Session | None = None
    message: Message | None = None
    memory: Memory | None = None
    changed_fields: tuple[str, ...] = ()
    first_sequence: int = 0
    """MESSAGES_REMOVED: the lowest sequence still stored after it (0: none, or recorded before
    migration 0020)."""


@dataclass(frozen=True)
class FeedQuery:
    """The changes after `after` (None: only what comes after the head read now) of one session
    (`session_id`) or of every session of one user (`user_id`), at most `limit` per read."""

    owner: Owner
    session_id: str | None = None
    user_id: str | None = None
    after: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class FeedBatch:
    """One read of the feed: the changes found, and the cursor to read on from.

    `cursor` is at least the last change's id; when the read was not cut short by the limit it is
    the user's head (their last change id, read in the same snapshot), since every change up to
    the head has committed and is in the snapshot (migration 0011 says why).
    `found` is False when the session (or, for a user, nothing) is there to watch: no session
    and no change of it after the cursor."""

    changes: list[Change] = field(default_factory=list)
    cursor: int = 0
    found: bool = True
    more: bool = False
    """The read stopped at its limit: more changes may follow at once."""
    erased: bool = False
    """The user's feed is behind the cursor: their data was erased (DeleteUserData removes the feed
    and its counter), so nothing the cursor pointed past exists any more."""
