"""Who is calling: bearer tokens verified by the auth service, cached by digest, and the
principal each call runs as.

Modes (SESSION_AUTH_MODE):
    none   every call runs as the trusted local operator (an admin); for `make run` and tests.
    token  every call but health and reflection needs `authorization: Bearer <token>`; the auth
           service verifies it. A missing or rejected token is UNAUTHENTICATED; an auth service
           that cannot answer is UNAVAILABLE (this check never fails open).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from ._proto.auth.v1 import auth_pb2, auth_pb2_grpc
from .boundary import Call, Step
from .domain.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

ADMIN_SCOPE = "sessions.admin"


@dataclass(frozen=True)
class Principal:
    """A user (user_id set) or a service; `admin` may act on every session."""

    user_id: str | None
    admin: bool

    def describe(self) -> str:
        return f"user {self.user_id!r}" if self.user_id else "service"


OPERATOR = Principal(user_id=None, admin=True)
_current: ContextVar[Principal] = ContextVar("principal", default=OPERATOR)


def current() -> Principal:
    """The principal of the call running in this task (OPERATOR in mode none)."""
    return _current.get()


@dataclass(frozen=True)
class AuthSettings:
    address: str
    """SESSION_AUTH_ADDRESS: host:port of the auth service (required in token mode)."""
    deadline: float = 0.5
    """SESSION_AUTH_DEADLINE: time to verify one token."""
    cache_ttl: float = 60.0
    """SESSION_AUTH_CACHE_TTL: longest a verified token is trusted (never past its expire_time)."""
    cache_size: int = 10_000
    """SESSION_AUTH_CACHE_SIZE: tokens remembered."""


class AuthUnavailable(Exception):
    pass


class TokenVerifier:
    """VerifyToken through the auth service, cached by SHA-256 of the token until the earlier of
    the token's expiry and cache_ttl. Rejections are not cached (a retry asks again)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.calls = 0
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._channel = grpc.aio.insecure_channel(settings.address)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def verify(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(key)
        now = time.time()
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(key)
            return cached[0]
        self.calls += 1
        try:
            answer = await self._stub.VerifyToken(
                auth_pb2.VerifyTokenRequest(token=token), timeout=self.settings.deadline
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(error.details() or "the token was rejected") from None
            raise AuthUnavailable(f"{error.code().name}: {error.details()}") from None
        expires = answer.expire_time.ToDatetime().timestamp() if answer.HasField("expire_time") else now + self.settings.cache_ttl
        if expires <= now:
            raise Unauthenticated("the token has expired")
        principal = Principal(user_id=answer.user_id or None, admin=ADMIN_SCOPE in answer.scopes)
        if principal.user_id is None and not principal.admin:
            raise Unauthenticated("the token names no user and no admin scope")
        self._cache[key] = (principal, min(expires, now + self.settings.cache_ttl))
        while len(self._cache) > self.settings.cache_size:
            self._cache.popitem(last=False)
        return principal


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip() or None
    return None


class Authenticate(Step):
    """The boundary step that authenticates every session.v1 call and runs it as its principal;
    health and reflection stay open (load balancers and grpcurl need them)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def enter(self, call: Call) -> None:
        token = bearer_token(call.context.invocation_metadata())
        if token is None:
            raise Unauthenticated("send 'authorization: Bearer <token>'")
        try:
            principal = await self.verifier.verify(token)
        except AuthUnavailable as error:
            log.warning("auth service unavailable: %s", error)
            raise Unavailable("the auth service is unavailable; retry", reason="AUTH_SERVICE_UNAVAILABLE") from None
        _current.set(principal)
