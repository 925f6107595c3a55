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


def export_of(request: pb.ExportUserDataRequest, limits: Limits = DEFAULT_LIMITS) -> str:
    """Whose data to export (Authorize has put the caller into an empty user_id and refused another
    user's to anyone but an admin)."""
    check = Violations(limits)
    user_id = check.user_id("user_id", request.user_id)
    check.raise_if_any()
    return user_id


RESPONSE_BYTES = 1 << 20
"""About how much of the export one ExportUserData response carries (clients receive at most 4 MiB
per message by default); a single line larger than this goes alone."""


def export_responses(lines: list[str]) -> list[pb.ExportUserDataResponse]:
    """A page of export lines as responses of about RESPONSE_BYTES each."""
    responses: list[pb.ExportUserDataResponse] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > RESPONSE_BYTES:
            responses.append(pb.ExportUserDataResponse(lines=chunk))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        responses.append(pb.ExportUserDataResponse(lines=chunk))
    return responses


def erased_to_proto(erased: Erased) -> pb.DeleteUserDataResponse:
    assert erased.erase_time is not None
    return pb.DeleteUserDataResponse(
        session_count=erased.sessions, message_count=erased.messages, memory_count=erased.memories,
        user_state_count=erased.user_states, budget_count=erased.budgets, change_count=erased.changes,
        other_counts=erased.other, erase_time=timestamp(erased.erase_time),
    )
