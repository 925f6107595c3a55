"""Where heavy reads run: on the standby (SESSION_READ_DATABASE_URL) when it has replayed what
the call asked to see, else on the primary. Writes and conditional reads never come here."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import asyncpg

from ..consistency import read_position
from ..domain.errors import Unavailable
from .database import Database
from .replication import NotReplayed

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

STANDBY_RETRY_AFTER = 5.0
"""Seconds reads stay on the primary after the standby could not be reached, before trying it again."""


class ReadRouting:
    """`run(work, ...)` on the standby when the read position allows, else on the primary.

    A read without a position (request metadata session-read-after-lsn) takes the standby as it
    is; one with a position takes it only once it has replayed that far (checked on the
    connection the read runs on), else the primary. A standby that cannot be reached sends
    reads to the primary for STANDBY_RETRY_AFTER seconds. Without a standby everything runs on
    the primary.
    """

    def __init__(self, primary: Database, standby: Database | None = None) -> None:
        self.primary = primary
        self.standby = standby
        self._standby_down_until = 0.0
        self.served = {"standby": 0, "primary": 0}
        """Reads served by each (for tests and the curious; not a metric)."""

    async def run(
        self, work: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        position = read_position()
        if self.standby is not None and not position.on_primary and time.monotonic() >= self._standby_down_until:
            try:
                result = await self.standby.run_replayed(position.after, work, *args, **kwargs)
                self.served["standby"] += 1
                return result
            except NotReplayed:
                pass
            except Unavailable:
                log.warning("the standby is unavailable; reads go to the primary for %.0fs", STANDBY_RETRY_AFTER)
                self._standby_down_until = time.monotonic() + STANDBY_RETRY_AFTER
            position.on_primary = True
        self.served["primary"] += 1
        return await self.primary.run(work, *args, **kwargs)

    async def close(self) -> None:
        if self.standby is not None:
            await self.standby.close()
