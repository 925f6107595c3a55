"""Graceful shutdown: once draining, new calls are refused with UNAVAILABLE (safe to retry
elsewhere) while the calls already running finish; `wait_idle` tells when they have.

Health Watch and reflection streams stay open for as long as the client likes; they do not
hold up a shutdown and are not refused (health must be able to say NOT_SERVING): this step
applies to session.v1 methods only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .boundary import Call, Step
from .domain.errors import Unavailable


class Drain(Step):
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start_draining(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no counted call runs; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def enter(self, call: Call) -> None:
        if self.draining:
            raise Unavailable("the server is shutting down; retry", reason="SHUTTING_DOWN")
        self.in_flight += 1
        self._idle.clear()

    def exit(self, call: Call, state: Any, error: BaseException | None) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
