"""What the calling principal may do (session_grpc.auth says who it is).

- A user acts only on sessions whose user_id is theirs. Another user's session looks exactly
  like a missing one (NOT_FOUND), so ids cannot be probed.
- Naming another user in CreateSession or ListSessions is PERMISSION_DENIED.
- GetServiceStats and ExpireSessions need the admin scope (sessions.admin).
- An admin (and the operator of mode none) may do everything.
"""

from __future__ import annotations

from . import auth
from .domain.errors import PermissionDenied
from .domain.validation import excerpt
from .storage.database import Database


def owner_scope() -> str | None:
    """The user whose sessions the current call may touch, or None when it may touch any (an admin,
    or the operator of mode none). Storage statements filter by it (`... AND user_id = $owner`), so a
    session of another user is missing to the caller (NOT_FOUND) without a separate ownership query.

    A service principal without the admin scope owns no session: it gets "", which no session's
    user_id equals (user ids are never empty)."""
    principal = auth.current()
    return None if principal.admin else (principal.user_id or "")


class Guard:
    def __init__(self, db: Database) -> None:
        self.db = db

    def acts_for(self, user_id: str) -> None:
        principal = auth.current()
        if not principal.admin and principal.user_id != user_id:
            raise PermissionDenied(
                f"{principal.describe()} may not act for user {excerpt(user_id)}", reason="OTHER_USER"
            )

    def admin(self) -> None:
        if not auth.current().admin:
            raise PermissionDenied(f"this call needs the {auth.ADMIN_SCOPE} scope", reason="ADMIN_REQUIRED")
