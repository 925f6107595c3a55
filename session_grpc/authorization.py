"""What the calling principal may do (session_grpc.auth says who it is), enforced once, at the
boundary, by the policy table (session_grpc.policy):

- A user acts only on sessions whose user_id is theirs. Storage statements filter by
  `owner_scope()`, so another user's session looks exactly like a missing one (NOT_FOUND) and
  ids cannot be probed.
- Naming another user in CreateSession or ListSessions is PERMISSION_DENIED (OTHER_USER); left
  empty, that user_id is the caller's own.
- ListSessions with an app_name and no user_id lists the app's sessions of every user: only for
  the admin scope (a user who leaves user_id empty still lists their own).
- GetServiceStats and ExpireSessions need the admin scope (sessions.admin), and so does a write
  that changes an app's state (a policy's `app_state` field; see session_grpc.policy for why).
- An admin (and the operator of mode none) may do everything.
- A method with no policy is refused for everyone (NO_POLICY), the operator included.
- In token mode, a user whose account is suspended (or deleted) may still read but not write:
  every RPC the table marks as a write checks the caller's standing with the account service
  (through the same cache as CreateSession's check of the user it names), except DeleteUserData
  (policy `standing=False`: a suspended or deleted account must stay erasable).
"""

from __future__ import annotations

import logging
from typing import Any

from . import auth
from .accounts import AccountCheck
from .boundary import Call, Step
from .domain.errors import NotFound, PermissionDenied
from .domain.validation import excerpt
from .policy import POLICIES, Kind, Policy

log = logging.getLogger(__name__)


def owner_scope() -> str | None:
    """The user whose sessions the current call may touch, or None when it may touch any (an admin,
    or the operator of mode none). Storage statements filter by it (`... AND user_id = $owner`), so a
    session of another user is missing to the caller (NOT_FOUND) without a separate ownership query.

    A service principal without the admin scope owns no session: it gets "", which no session's
    user_id equals (user ids are never empty)."""
    principal = auth.current()
    return None if principal.admin else (principal.user_id or "")


def _field(request: Any, path: str) -> tuple[Any, str]:
    """The message holding the field at dotted `path`, and the field's name in it."""
    *parents, name = path.split(".")
    for parent in parents:
        request = getattr(request, parent)
    return request, name


def _changes_state(request: Any, path: str) -> bool:
    """Whether the StateDelta at dotted `path` sets or deletes anything."""
    holder, name = _field(request, path)
    delta = getattr(holder, name)
    return bool(delta.set.fields) or bool(delta.delete)


class Authorize(Step):
    """The boundary step that applies the policy table; it costs no query (ownership of a session
    is the storage statements' filter)."""

    def __init__(self, policies: dict[str, Policy] | None = None) -> None:
        self.policies = POLICIES if policies is None else policies

    async def enter(self, call: Call) -> None:
        policy = self.policies.get(call.method)
        if policy is None:
            log.error("%s has no authorization policy (session_grpc/policy.py); refused", call.method)
            raise PermissionDenied(f"{call.method} has no authorization policy", reason="NO_POLICY")
        if policy.app_state and _changes_state(call.request, policy.app_state) and not auth.current().admin:
            raise PermissionDenied(
                f"changing an app's state needs the {auth.ADMIN_SCOPE} scope", reason="ADMIN_REQUIRED"
            )
        kind = policy.kind
        if kind is Kind.PUBLIC:
            return
        principal = auth.current()
        if kind is Kind.ADMIN:
            if not principal.admin:
                raise PermissionDenied(f"this call needs the {auth.ADMIN_SCOPE} scope", reason="ADMIN_REQUIRED")
        elif kind is Kind.ACTS_FOR:
            holder, name = _field(call.request, policy.field)
            user_id = getattr(holder, name)
            if not user_id and policy.every_user_with and getattr(call.request, policy.every_user_with):
                if principal.admin:
                    return  # every user's
                if not principal.user_id:
                    raise PermissionDenied(
                        f"acting for every user needs the {auth.ADMIN_SCOPE} scope", reason="ADMIN_REQUIRED"
                    )
            if not user_id and principal.user_id:
                setattr(holder, name, principal.user_id)  # the caller's own
            elif not principal.admin and user_id != principal.user_id:
                raise PermissionDenied(
                    f"{principal.describe()} may not act for user {excerpt(user_id)}", reason="OTHER_USER"
                )
        elif not principal.admin and not principal.user_id:
            # OWNS_SESSION for a service principal without the admin scope: it owns no session.
            holder, name = _field(call.request, policy.field)
            raise NotFound("session", getattr(holder, name))


class CheckStanding(Step):
    """The boundary step that checks account standing on every write, through the account
    service's cache: USER_SUSPENDED (PERMISSION_DENIED) or USER_NOT_FOUND (FAILED_PRECONDITION)
    refuse it. The account checked is the one the write is for: the user named by an acts_for
    policy's field (CreateSession: the new session's owner, in every auth mode; Authorize has
    already put the caller into an empty field), otherwise the caller. A principal without a
    user_id (the operator of mode none, an admin service) has no account of its own to check."""

    def __init__(self, accounts: AccountCheck, policies: dict[str, Policy] | None = None) -> None:
        self.accounts = accounts
        self.policies = POLICIES if policies is None else policies

    def applies(self, method: str) -> bool:
        policy = self.policies.get(method)
        return policy is not None and policy.writes and policy.standing

    async def enter(self, call: Call) -> None:
        policy = self.policies[call.method]
        if policy.kind is Kind.ACTS_FOR:
            holder, name = _field(call.request, policy.field)
            user_id = getattr(holder, name)
        else:
            user_id = auth.current().user_id
        if user_id:
            await self.accounts.check(user_id)

