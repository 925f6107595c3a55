"""Who may call each RPC: the policy table, keyed by full method name.

The boundary's `Authorize` step (session_grpc.authorization) enforces it once for every
session.v1 call, before the servicer runs; servicers do no authorization. A method missing
from the table is refused for everyone (tests/test_policy.py checks that the table names
exactly the RPCs of the proto descriptors, so a new RPC without a policy fails the suite).

The kinds:
    owns_session(field)  the request names a session in `field`; a user may touch only their own.
                         Storage filters by the owner (authorization.owner_scope()), so another
                         user's session is missing (NOT_FOUND) without a query of its own.
    acts_for(field)      the request names a user in `field`; a user may name only themselves.
                         Left empty, the field becomes the caller (a user lists their own sessions).
                         With `every_user_with=other`: left empty while `other` is set, an admin
                         acts for every user (ListSessions of an app across its users); a user
                         still gets their own, a principal that is neither is ADMIN_REQUIRED.
    admin()              needs the sessions.admin scope.
    public()             anyone (authenticated in token mode).

`writes` marks the RPCs that change something: in token mode the caller's account standing
is checked on those (a suspended user can still read), unless `standing=False` says the write must
work whatever the account's standing: DeleteUserData, since a suspended or deleted account is
exactly the one an operator erases (suspend first, so no write races the erasure).

`app_state` names the request field that may carry a delta to an app's state (a
ScopedStateDelta's `app_state`): a request whose delta there changes something needs the
sessions.admin scope, whatever its kind allows otherwise (PERMISSION_DENIED, ADMIN_REQUIRED, and
nothing of it is stored). App state is shared by every user of the app, and apps are namespaces,
not an access boundary (any user may create a session in any app), so a user who could write it
could change what every other user's agent sees, in any app. Google ADK lets every append_event
write "app:" keys; its runners serve many users and so hold an admin token anyway.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from enum import Enum

from google.protobuf import descriptor as d

PACKAGE = "session.v1"


class Kind(Enum):
    OWNS_SESSION = "owns the session named by the field"
    ACTS_FOR = "acts for the user named by the field"
    ADMIN = "admin"
    PUBLIC = "public"


@dataclass(frozen=True)
class Policy:
    kind: Kind
    field: str = ""
    """Dotted path of the request field naming the session or the user ("memory.session_id")."""
    writes: bool = False
    app_state: str = ""
    """Dotted path of a request field holding an app-state delta (StateDelta); changing app state
    needs the admin scope."""
    every_user_with: str = ""
    """acts_for only: the request field that, set while `field` is empty, makes an admin's call
    act for every user ("" for none)."""
    standing: bool = True
    """writes only: whether the account standing check applies (False: DeleteUserData)."""


def owns_session(field: str, *, writes: bool = False, app_state: str = "") -> Policy:
    return Policy(Kind.OWNS_SESSION, field, writes, app_state)


def acts_for(field: str, *, writes: bool = False, every_user_with: str = "", standing: bool = True) -> Policy:
    return Policy(Kind.ACTS_FOR, field, writes, every_user_with=every_user_with, standing=standing)


def admin(*, writes: bool = False) -> Policy:
    return Policy(Kind.ADMIN, "", writes)


def public(*, writes: bool = False) -> Policy:
    return Policy(Kind.PUBLIC, "", writes)


_SESSIONS = f"/{PACKAGE}.SessionService/"
_MESSAGES = f"/{PACKAGE}.MessageService/"
_MEMORIES = f"/{PACKAGE}.MemoryService/"
_USAGE = f"/{PACKAGE}.UsageService/"
_RETENTION = f"/{PACKAGE}.RetentionService/"
_USER_DATA = f"/{PACKAGE}.UserDataService/"

POLICIES: dict[str, Policy] = {
    _SESSIONS + "CreateSession": acts_for("user_id", writes=True),
    _SESSIONS + "GetSession": owns_session("session_id"),
    _SESSIONS + "UpdateSession": owns_session("session.session_id", writes=True),
    _SESSIONS + "EndSession": owns_session("session_id", writes=True),
    _SESSIONS + "DeleteSession": owns_session("session_id", writes=True),
    _SESSIONS + "ListSessions": acts_for("user_id", every_user_with="app_name"),
    _SESSIONS + "GetSessionSummary": owns_session("session_id"),
    _SESSIONS + "GetServiceStats": admin(),
    _SESSIONS + "ExpireSessions": admin(writes=True),
    _SESSIONS + "ForkSession": owns_session("session_id", writes=True),
    _SESSIONS + "TruncateSession": owns_session("session_id", writes=True),
    _SESSIONS + "WatchSession": owns_session("session_id"),
    _SESSIONS + "WatchUserSessions": acts_for("user_id"),
    _SESSIONS + "UpdateState": owns_session("session_id", writes=True, app_state="state_delta.app_state"),
    _SESSIONS + "GetUserState": acts_for("user_id"),
    _SESSIONS + "GetAppState": public(),
    _MESSAGES + "AddMessage": owns_session("session_id", writes=True, app_state="state_delta.app_state"),
    _MESSAGES + "AddMessages": owns_session("session_id", writes=True),
    _MESSAGES + "ListMessages": owns_session("session_id"),
    _MESSAGES + "StreamMessages": owns_session("session_id"),
    # A user searches their own messages (an empty user_id becomes theirs); an admin's empty user_id
    # searches everyone's. The statement filters by the owner as well (owner_scope()).
    _MESSAGES + "SearchMessages": acts_for("user_id"),
    _MEMORIES + "CreateMemory": owns_session("session_id", writes=True),
    _MEMORIES + "GetMemory": owns_session("session_id"),
    _MEMORIES + "UpdateMemory": owns_session("memory.session_id", writes=True),
    _MEMORIES + "DeleteMemory": owns_session("session_id", writes=True),
    # A user reads their own usage (an empty user_id becomes theirs, and the statement is kept to it:
    # accounting.usage_query); an admin's empty user_id reads an app's or the whole service's.
    _USAGE + "GetUsage": acts_for("user_id"),
    # A user reads their own budget (an app's needs the admin scope: accounting.budget_of); only an
    # admin sets or removes one. Both writes are idempotent by nature (set to, remove if present).
    _USAGE + "GetBudget": acts_for("user_id"),
    _USAGE + "SetBudget": admin(writes=True),
    _USAGE + "DeleteBudget": admin(writes=True),
    # Retention policies decide what the prune job deletes across every user of an app: admin only,
    # reading included (a policy is operations, not something a user of the app acts on). Both
    # writes are idempotent by nature (set to, remove if present).
    _RETENTION + "GetRetentionPolicy": admin(),
    _RETENTION + "SetRetentionPolicy": admin(writes=True),
    _RETENTION + "DeleteRetentionPolicy": admin(writes=True),
    # A user erases themself (an empty user_id is the caller), an admin anyone; whatever the
    # account's standing (see `standing`). Idempotent by nature: a repeat removes nothing.
    _USER_DATA + "DeleteUserData": acts_for("user_id", writes=True, standing=False),
    # A user exports their own data (GDPR article 20; an empty user_id is the caller), an admin anyone's.
    _USER_DATA + "ExportUserData": acts_for("user_id"),
}


def service_methods() -> dict[str, d.MethodDescriptor]:
    """Every RPC of every session.v1 service in the generated descriptors, by full method name
    ("/session.v1.SessionService/GetSession"): what the policy table must cover."""
    from . import _proto

    package = importlib.import_module(f"{_proto.__name__}.{PACKAGE}")
    methods: dict[str, d.MethodDescriptor] = {}
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.endswith("_pb2"):
            continue
        descriptor = importlib.import_module(f"{package.__name__}.{module.name}").DESCRIPTOR
        if descriptor.package != PACKAGE:
            continue
        for service in descriptor.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method
    return methods
