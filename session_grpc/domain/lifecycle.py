"""Which status moves a session may make."""

from __future__ import annotations

from .errors import FailedPrecondition
from .records import SessionStatus

S = SessionStatus

ALLOWED_MOVES: dict[SessionStatus, frozenset[SessionStatus]] = {
    S.ACTIVE: frozenset({S.COMPLETED, S.ENDED, S.EXPIRED, S.ARCHIVED}),
    S.COMPLETED: frozenset({S.ENDED, S.ARCHIVED}),
    S.EXPIRED: frozenset({S.ENDED, S.ARCHIVED}),
    S.ENDED: frozenset({S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}


def sources(target: SessionStatus) -> frozenset[SessionStatus]:
    """The statuses that may move to `target` (a statement can move only those)."""
    return frozenset(status for status, targets in ALLOWED_MOVES.items() if target in targets)


def check_move(current: SessionStatus, target: SessionStatus) -> None:
    """Raise FailedPrecondition unless `current -> target` is allowed; staying put is allowed."""
    if target != current and target not in ALLOWED_MOVES[current]:
        raise FailedPrecondition(
            f"a {current.value} session cannot become {target.value}",
            reason="INVALID_STATUS_TRANSITION",
        )


def check_accepts_messages(status: SessionStatus) -> None:
    if status is not S.ACTIVE:
        raise FailedPrecondition(
            f"messages can be added only to active sessions; this one is {status.value}",
            reason="SESSION_NOT_ACTIVE",
        )


def check_rewindable(status: SessionStatus) -> None:
    """A rewind rewrites the conversation, so it needs a session that still takes messages."""
    if status is not S.ACTIVE:
        raise FailedPrecondition(
            f"only active sessions can be rewound; this one is {status.value}",
            reason="SESSION_NOT_ACTIVE",
        )
