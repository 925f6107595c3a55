"""Retention: per-app rules for what the prune job removes, and what a pass removed."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class Rule(enum.StrEnum):
    """The rule that removed a row: the metric's `kind` label and the CLI's column."""

    CLOSED_SESSION_TTL = "closed_session_ttl"
    """Closed sessions (every status but ACTIVE) last updated longer ago than the TTL, with all of them."""
    MESSAGE_TTL = "message_ttl"
    """Messages created longer ago than the TTL."""
    MAX_MESSAGES_PER_SESSION = "max_messages_per_session"
    """Messages older than the newest N of their session (a message old enough for message_ttl as
    well counts under message_ttl)."""


@dataclass(frozen=True)
class RetentionPolicy:
    app_name: str
    closed_session_ttl: timedelta | None = None
    message_ttl: timedelta | None = None
    max_messages_per_session: int | None = None
    update_time: datetime | None = None
    """When it was last set (read back from the database)."""

    @property
    def prunes_messages(self) -> bool:
        return self.message_ttl is not None or self.max_messages_per_session is not None


@dataclass
class PruneReport:
    """What one pass removed (or, dry, would remove): rows per (app, rule)."""

    dry_run: bool
    started: datetime | None = None
    """The database's clock when the pass began: every TTL counts back from it, in every batch."""
    removed: dict[tuple[str, Rule], int] = field(default_factory=dict)
    batches: int = 0

    def add(self, app_name: str, rule: Rule, count: int) -> None:
        if count:
            key = (app_name, rule)
            self.removed[key] = self.removed.get(key, 0) + count

    @property
    def total(self) -> int:
        return sum(self.removed.values())
