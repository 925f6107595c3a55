"""How long the current call may still spend, for the database work it triggers.

The RPC boundary (the StartDeadline step) records the client's deadline here; the
transaction runner reads it, so servicers and storage functions never pass it
around. Calls without a deadline get the server's default bound.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from .boundary import Call, Step

_call_deadline: ContextVar[float | None] = ContextVar("call_deadline", default=None)


def start_call(time_remaining: float | None) -> None:
    """Record the deadline of the call running in this task (None: the client set none)."""
    _call_deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)


def deadline() -> float | None:
    """The current call's deadline on time.monotonic()'s clock (None: the client set none)."""
    return _call_deadline.get()


def remaining(default: float) -> float:
    """Seconds left for this call's work: the client's deadline, capped by `default`."""
    deadline = _call_deadline.get()
    if deadline is None:
        return default
    return min(default, deadline - time.monotonic())


class StartDeadline(Step):
    """The boundary step that records each session.v1 call's deadline."""

    async def enter(self, call: Call) -> None:
        start_call(call.context.time_remaining())
