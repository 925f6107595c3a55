"""User data requests and answers, proto <-> domain (DeleteUserData, ExportUserData)."""

from __future__ import annotations

from . import auth
from ._proto.session.v1 import session_pb2 as pb
from .domain.limits import DEFAULT_LIMITS, Limits
from .domain.userdata import Erased, Erasure, erased_by
from .domain.validation import Violations
from .resources import timestamp


def erasure_of(request: pb.DeleteUserDataRequest, limits: Limits = DEFAULT_LIMITS) -> Erasure:
    """Whom to erase, and who asks. Authorize has put the caller into an empty user_id and refused
    another user's to anyone but an admin; an operator's empty user_id is INVALID_ARGUMENT."""
    check = Violations(limits)
    user_id = check.user_id("user_id", request.user_id)
    check.raise_if_any()
    return Erasure(user_id, erased_by(auth.current().user_id, user_id))


def erased_to_proto(erased: Erased) -> pb.DeleteUserDataResponse:
    assert erased.erase_time is not None
    return pb.DeleteUserDataResponse(
        session_count=erased.sessions, message_count=erased.messages, memory_count=erased.memories,
        user_state_count=erased.user_states, budget_count=erased.budgets, change_count=erased.changes,
        other_counts=erased.other, erase_time=timestamp(erased.erase_time),
    )
