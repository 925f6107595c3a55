"""Closed-loop and open-loop load, and the statistics of one run."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# A caller: given its index, returns a coroutine factory doing one operation.
Operation = Callable[[], Awaitable[object]]


@dataclass
class RunStats:
    calls: int
    seconds: float
    latencies: list[float] = field(repr=False)
    errors: int = 0
    late: int = 0  # open loop: calls that could not even be sent on time (in-flight cap reached)

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index]

    def summary(self) -> dict[str, float]:
        return {
            "throughput": self.throughput,
            "p50_ms": self.percentile(50) * 1e3,
            "p90_ms": self.percentile(90) * 1e3,
            "p99_ms": self.percentile(99) * 1e3,
            "mean_ms": (statistics.fmean(self.latencies) * 1e3) if self.latencies else float("nan"),
            "calls": self.calls,
            "errors": self.errors,
            "late": self.late,
        }


async def closed_loop(
    operations: list[Operation],
    duration: float,
    warmup: float,
    on_measure_start: Callable[[], None] | None = None,
) -> RunStats:
    """len(operations) callers, each calling its operation back to back.

    Calls that finish during the warm-up are not counted; the measured window
    starts when the warm-up ends and lasts `duration` seconds.
    """
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop = False

    async def caller(op: Operation) -> None:
        nonlocal errors
        perf = time.perf_counter
        while not stop:
            started = perf()
            try:
                await op()
            except Exception:  # noqa: BLE001 - an error is counted, the load goes on
                if measuring:
                    errors += 1
                continue
            if measuring:
                latencies.append(perf() - started)

    tasks = [asyncio.create_task(caller(op)) for op in operations]
    await asyncio.sleep(warmup)
    if on_measure_start:
        on_measure_start()
    measuring = True
    began = time.perf_counter()
    await asyncio.sleep(duration)
    measuring = False
    elapsed = time.perf_counter() - began
    calls = len(latencies)
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return RunStats(calls=calls, seconds=elapsed, latencies=latencies, errors=errors)


async def open_loop(
    operation: Callable[[int], Awaitable[object]],
    rate: float,
    duration: float,
    max_in_flight: int = 512,
    on_measure_start: Callable[[], None] | None = None,
) -> RunStats:
    """Calls sent at a fixed rate whatever the server does (no coordinated omission).

    Each call's latency is measured from the time it was *meant* to be sent, so
    a server that falls behind shows the queueing delay it causes.
    """
    latencies: list[float] = []
    errors = 0
    late = 0
    in_flight: set[asyncio.Task[None]] = set()
    perf = time.perf_counter

    async def one(index: int, intended: float) -> None:
        nonlocal errors
        try:
            await operation(index)
        except Exception:  # noqa: BLE001
            errors += 1
            return
        latencies.append(perf() - intended)

    if on_measure_start:
        on_measure_start()
    start = perf()
    total = int(rate * duration)
    for index in range(total):
        intended = start + index / rate
        delay = intended - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            late += 1
            continue
        task = asyncio.create_task(one(index, intended))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight, return_exceptions=True)
    elapsed = perf() - start
    return RunStats(calls=len(latencies), seconds=elapsed, latencies=latencies, errors=errors, late=late)


async def timed_calls(operation: Operation, count: int) -> RunStats:
    """`count` calls one after another (for slow or large operations)."""
    latencies = []
    began = time.perf_counter()
    for _ in range(count):
        started = time.perf_counter()
        await operation()
        latencies.append(time.perf_counter() - started)
    return RunStats(calls=count, seconds=time.perf_counter() - began, latencies=latencies)


def median_and_spread(values: list[float]) -> dict[str, float]:
    """Median of the repetitions and their spread (min, max)."""
    clean = [v for v in values if v == v]  # drop NaN
    if not clean:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "reps": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean), "reps": len(clean)}
