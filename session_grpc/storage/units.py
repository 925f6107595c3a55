"""How a storage function runs, declared where it is written: Database.run reads the mark.

- `@statement`: the work is one SQL statement (or a retry of it that needs a fresh snapshot);
  it runs in autocommit, one round trip, no BEGIN/COMMIT.
- `@transaction`: several statements that must commit together (a read under a row lock, then
  a write); they run in one transaction, retried whole on a serialization failure or deadlock.

A function without a mark cannot be run (TypeError), so no call site chooses for it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Unit(enum.Enum):
    STATEMENT = "statement"
    TRANSACTION = "transaction"


_UNITS: dict[Callable[..., Any], Unit] = {}


def statement(work: F) -> F:
    _UNITS[work] = Unit.STATEMENT
    return work


def transaction(work: F) -> F:
    _UNITS[work] = Unit.TRANSACTION
    return work


def unit_of(work: Callable[..., Any]) -> Unit:
    unit = _UNITS.get(work)
    if unit is None:
        raise TypeError(f"{work.__qualname__} does not say how it runs (@statement or @transaction)")
    return unit
