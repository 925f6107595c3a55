"""One lookup per key at a time, shared by every caller that asks while it runs.

The lookup runs as a task of its own and each caller awaits it through `asyncio.shield`, so a
caller that is cancelled (its client went away, its deadline passed) stops waiting and nothing
more: the lookup runs on, the other callers get its real answer, and the owner's follow-up (the
cache) still happens. Were the lookup run inside the first caller, that caller's cancellation
would become every waiter's answer - for the account check, an "outage" that fail-open lets
through (issue 9, item 1).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """The result of `work()`, started now unless a run for `key` is already under way."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here: when every caller left, nobody else will

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel the lookups still running (the server is stopping)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
