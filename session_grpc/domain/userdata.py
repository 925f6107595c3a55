"""A user's data as a whole: what an erasure removed (DeleteUserData) and who asked.

The audit row keeps the erased user as the SHA-256 of their id, never the id (see migration 0015
for why), and the caller as `erased_by`: "self" when users erase themselves (their id would
otherwise survive their own erasure in the audit log), "user:<id>" for an admin user, "service"
for a service principal or the operator of mode none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

SELF = "self"


def subject_hash(user_id: str) -> str:
    """The hex SHA-256 of a user id (UTF-8): how the audit log names an erased user."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def erased_by(caller_user_id: str | None, erased_user_id: str) -> str:
    if caller_user_id is None:
        return "service"
    if caller_user_id == erased_user_id:
        return SELF
    return f"user:{caller_user_id}"


@dataclass(frozen=True)
class Erasure:
    """Whom to erase and who asked."""

    user_id: str
    erased_by: str


@dataclass(frozen=True)
class Erased:
    """How many rows of each kind an erasure removed, and when it committed."""

    sessions: int = 0
    messages: int = 0
    memories: int = 0
    user_states: int = 0
    budgets: int = 0
    changes: int = 0
    other: dict[str, int] = field(default_factory=dict)
    """Rows of every other table, by table name (only tables that had some)."""
    erase_time: datetime | None = None

    def counts(self) -> dict[str, int]:
        """Every count by table name, for the audit row."""
        return {
            "sessions": self.sessions, "messages": self.messages, "memories": self.memories,
            "user_states": self.user_states, "budgets": self.budgets, "session_changes": self.changes,
            **self.other,
        }
