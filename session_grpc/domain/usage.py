"""The usage ledger's records: what GetUsage asks for and answers, and an append's extra facts.

Usage is read from the stored messages themselves (storage/usage.py): a bucket's totals are the
sum over the messages created in it, as stored at the time of the call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .records import Message, Role


class Bucket(enum.StrEnum):
    """A bucket width; the value is PostgreSQL's date_trunc field (buckets start on UTC boundaries)."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class UsageQuery:
    user_id: str | None
    """Only this user's messages; None for every user (an admin's usage of an app or the service)."""
    app_name: str | None
    """Only messages of this app's sessions; None for every app."""
    bucket: Bucket
    start_time: datetime
    """Messages created at or after this time (inclusive)."""
    end_time: datetime
    """... and before this one (exclusive)."""
    by_role: bool


@dataclass(frozen=True)
class UsageTotals:
    start_time: datetime
    """The bucket's start (a UTC boundary)."""
    role: Role | None
    """With by_role, the role counted; None otherwise."""
    message_count: int
    total_tokens: int
    total_cost: Decimal


@dataclass(frozen=True)
class Usage:
    buckets: list[UsageTotals]
    """The non-empty buckets, oldest first (by role within one)."""

    @property
    def message_count(self) -> int:
        return sum(bucket.message_count for bucket in self.buckets)

    @property
    def total_tokens(self) -> int:
        return sum(bucket.total_tokens for bucket in self.buckets)

    @property
    def total_cost(self) -> Decimal:
        return sum((bucket.total_cost for bucket in self.buckets), Decimal(0))


@dataclass(frozen=True)
class Appended:
    """What AddMessage or AddMessages stored (in sequence order), and the app of their session
    (the metrics count per app)."""

    messages: list[Message]
    app_name: str
    soft_limits_exceeded: list[str] = field(default_factory=list)
    """The soft budget limits this append passed ("user:alice/daily_tokens"); it was stored anyway."""
