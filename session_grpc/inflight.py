"""Calls in flight per principal, so that one client cannot starve the others (token mode).

A principal (a user, or a service token) may have at most `limit` calls running at once,
streams included while they are open. One more is refused before it runs with
RESOURCE_EXHAUSTED, ErrorInfo reason TOO_MANY_CALLS_IN_FLIGHT and a QuotaFailure naming the
principal: it did nothing, so any call, a write included, may be retried after a backoff (the
Python client does). In mode none every caller is the one operator, so there is no other
client to protect and the step is not installed.
"""

from __future__ import annotations

from typing import Any

from . import auth
from .auth import Principal
from .boundary import Call, Step
from .domain.errors import ResourceExhausted

REASON = "TOO_MANY_CALLS_IN_FLIGHT"


def subject(principal: Principal) -> str:
    return f"user:{principal.user_id}" if principal.user_id else "service"


class LimitInFlight(Step):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: dict[Principal, int] = {}

    async def enter(self, call: Call) -> Principal:
        principal = auth.current()
        running = self.running.get(principal, 0)
        if running >= self.limit:
            raise ResourceExhausted(
                f"{principal.describe()} already has {running} calls in flight; retry after a backoff",
                reason=REASON,
                subject=subject(principal),
                description=f"at most {self.limit} calls in flight per principal (SESSION_MAX_CALLS_PER_PRINCIPAL)",
            )
        self.running[principal] = running + 1
        return principal

    def exit(self, call: Call, principal: Any, error: BaseException | None) -> None:
        left = self.running[principal] - 1
        if left:
            self.running[principal] = left
        else:
            del self.running[principal]
