"""Read-your-writes with reads on a standby: commit positions out, read positions in.

With SESSION_READ_DATABASE_URL set, every successful write call answers with the WAL position
its commit reached on the primary, in the trailing metadata `session-commit-lsn`
(`pg_current_wal_lsn()` read after the commit: at or past the end of its commit record). A read
call that sends a position back in the request metadata `session-read-after-lsn` is served by
the standby only once the standby has replayed that far (`pg_last_wal_replay_lsn()`), else by
the primary. A read without one is served by the standby as it is (it may lag).

The `ReadYourWrites` boundary step keeps both in context variables for the call (each call
runs in a task of its own); Database.run records the commit position when the call writes
(storage/database.py) and ReadRouting consults the read position (storage/routing.py).
"""

from __future__ import annotations

import re
from contextvars import Context, ContextVar
from dataclasses import dataclass

from .boundary import Call, Step
from .domain.errors import InvalidArgument
from .policy import POLICIES

COMMIT_LSN = "session-commit-lsn"
"""Trailing metadata of a write call: the WAL position of its commit."""
READ_AFTER_LSN = "session-read-after-lsn"
"""Request metadata of a read call: serve a state at least this new."""

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


@dataclass
class CommitPosition:
    """Where the current write call's commit reached; filled in by Database.run."""

    lsn: str | None = None


@dataclass
class ReadPosition:
    """What the current read call asked for, and whether it already fell back to the primary
    (a stream that did stays there: the primary is never behind what the standby showed)."""

    after: str | None = None
    on_primary: bool = False


_commit: ContextVar[CommitPosition | None] = ContextVar("commit_position", default=None)
_read: ContextVar[ReadPosition | None] = ContextVar("read_position", default=None)


def commit_position() -> CommitPosition | None:
    """The holder of the current call's commit position when the call writes, else None."""
    return _commit.get()


def track_commit() -> CommitPosition:
    """Give the current task a commit-position holder of its own (storage/group_commit.py: the
    task that runs a group's statement, whose position then goes to each caller)."""
    position = CommitPosition()
    _commit.set(position)
    return position


def commit_position_in(context: Context) -> CommitPosition | None:
    """The commit-position holder of the call whose context this is (see commit_position)."""
    return context.get(_commit)


def read_position() -> ReadPosition:
    position = _read.get()
    return position if position is not None else ReadPosition()


def lsn_key(lsn: str) -> tuple[int, int]:
    """An LSN as numbers, for comparing ('0/16B3748' < '1/0')."""
    high, low = lsn.split("/")
    return int(high, 16), int(low, 16)


class ReadYourWrites(Step):
    """Writes (policy.writes) get a commit-position holder and answer with its LSN; every call's
    `session-read-after-lsn` is checked and kept for the read routing."""

    async def enter(self, call: Call) -> None:
        after = None
        for key, value in call.context.invocation_metadata() or ():
            if key == READ_AFTER_LSN:
                text = value.decode() if isinstance(value, bytes) else value
                if not _LSN.match(text):
                    raise InvalidArgument.single(
                        READ_AFTER_LSN, "must be a WAL position as session-commit-lsn gives it, like 0/16B3748"
                    )
                after = text if after is None or lsn_key(text) > lsn_key(after) else after
        _read.set(ReadPosition(after))
        policy = POLICIES.get(call.method)
        if policy is not None and policy.writes:
            _commit.set(CommitPosition())

    def exit(self, call: Call, state: object, error: BaseException | None) -> None:
        position = _commit.get()
        if position is not None and position.lsn is not None and error is None:
            call.context.set_trailing_metadata(((COMMIT_LSN, position.lsn),))
