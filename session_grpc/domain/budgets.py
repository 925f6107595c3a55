"""Budgets: limits on the tokens and cost a user, or an app's users together, add per UTC day and
month, enforced (a write past one is refused) or soft (it is stored and reported)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from .errors import ResourceExhausted

LIMITS = ("daily_tokens", "monthly_tokens", "daily_cost", "monthly_cost")


@dataclass(frozen=True)
class BudgetRef:
    """Whose budget: exactly one of user_id and app_name is non-empty."""

    user_id: str = ""
    app_name: str = ""

    @property
    def subject(self) -> str:
        """How QuotaFailure, metrics and logs name it: "user:alice", "app:travel"."""
        return f"user:{self.user_id}" if self.user_id else f"app:{self.app_name}"


@dataclass(frozen=True)
class BudgetLimits:
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    daily_cost: Decimal | None = None
    monthly_cost: Decimal | None = None
    soft: bool = False


@dataclass(frozen=True)
class Budget:
    ref: BudgetRef
    limits: BudgetLimits
    today: date
    """The current UTC day, read from the database's clock with the row."""
    day: date
    day_tokens: int
    day_cost: Decimal
    month: date
    month_tokens: int
    month_cost: Decimal
    update_time: datetime

    def used(self, limit: str) -> Decimal:
        """What is used of `limit` in the current period: nothing when the stored period has passed."""
        daily = limit.startswith("daily")
        current = self.day == self.today if daily else self.month == self.today.replace(day=1)
        if not current:
            return Decimal(0)
        tokens = limit.endswith("tokens")
        value = (self.day_tokens if tokens else self.day_cost) if daily else (self.month_tokens if tokens else self.month_cost)
        return Decimal(value)

    def limit(self, limit: str) -> Decimal | None:
        value = getattr(self.limits, limit)
        return None if value is None else Decimal(value)

    def period_start(self, limit: str) -> date:
        return self.today if limit.startswith("daily") else self.today.replace(day=1)

    def passed(self, tokens: int, cost: Decimal) -> list[str]:
        """The limits that adding `tokens` and `cost` would take past their value."""
        over = []
        for name in LIMITS:
            value = self.limit(name)
            if value is None:
                continue
            add = Decimal(tokens) if name.endswith("tokens") else cost
            if self.used(name) + add > value:
                over.append(name)
        return over


@dataclass(frozen=True)
class Charge:
    """What a budgeted append reports: the soft limits it passed ("user:alice/daily_tokens")."""

    soft_limits_exceeded: list[str]


def named(budget: Budget, limit: str) -> str:
    """A limit of a budget as QuotaFailure, soft_limits_exceeded and metrics name it."""
    return f"{budget.ref.subject}/{limit}"


def refuse(budget: Budget, limit: str, tokens: int, cost: Decimal) -> ResourceExhausted:
    """RESOURCE_EXHAUSTED (BUDGET_EXCEEDED) for a write that would pass an enforced limit; the
    QuotaFailure's subject names the budget and the limit ("user:alice/daily_tokens")."""
    add = tokens if limit.endswith("tokens") else cost
    value = budget.limit(limit)
    error = ResourceExhausted(
        f"{budget.ref.subject} would pass its {limit} budget of {value} (used {budget.used(limit)}, "
        f"this write {add}); nothing was stored",
        reason="BUDGET_EXCEEDED",
        subject=named(budget, limit),
        description=f"{limit}: limit {value}, used {budget.used(limit)}, this write {add}",
    )
    error.metadata.update(budget=budget.ref.subject, limit=limit)
    return error
