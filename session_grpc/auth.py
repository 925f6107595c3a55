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
from .singleflight import SingleFlight

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
    """SESSION_AUTH_CACHE_SIZE: tokens remembered (accepted and rejected)."""
    negative_ttl: float = 5.0
    """SESSION_AUTH_NEGATIVE_TTL: how long a rejected token is remembered as rejected."""


class AuthUnavailable(Exception):
    pass


class TokenVerifier:
    """VerifyToken through the auth service, cached by SHA-256 of the token: an accepted token
    until the earlier of its expiry and cache_ttl, a rejected one for negative_ttl (a flood of
    garbage tokens is not a flood on the auth service). Concurrent verifications of one uncached
    token share one call, run as its own task (a cancelled caller never decides the others')."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.calls = 0
        self._cache: OrderedDict[bytes, tuple[Principal | Unauthenticated, float]] = OrderedDict()
        self._in_flight: SingleFlight[bytes, Principal] = SingleFlight()
        self._channel = grpc.aio.insecure_channel(settings.address)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)

    async def close(self) -> None:
        await self._in_flight.close()
        await self._channel.close()

    async def verify(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.time():
            self._cache.move_to_end(key)
            if isinstance(cached[0], Unauthenticated):
                raise Unauthenticated(cached[0].message, reason=cached[0].reason)
            return cached[0]
        return await self._in_flight.run(key, lambda: self._verify_and_cache(key, token))

    async def _verify_and_cache(self, key: bytes, token: str) -> Principal:
        try:
            principal, until = await self._ask(token)
        except Unauthenticated as rejected:
            self._remember(key, rejected, time.time() + self.settings.negative_ttl)
            raise
        self._remember(key, principal, until)
        return principal

    def _remember(self, key: bytes, answer: Principal | Unauthenticated, until: float) -> None:
        self._cache[key] = (answer, until)
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.cache_size:
            self._cache.popitem(last=False)

    async def _ask(self, token: str) -> tuple[Principal, float]:
        """The principal of `token` and until when to trust it; Unauthenticated if rejected."""
        self.calls += 1
        try:
            answer = await self._stub.VerifyToken(
                auth_pb2.VerifyTokenRequest(token=token), timeout=self.settings.deadline
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(error.details() or "the token was rejected") from None
            raise AuthUnavailable(f"{error.code().name}: {error.details()}") from None
        now = time.time()
        # The Timestamp's own seconds: ToDatetime() is naive UTC, and .timestamp() on it reads it
        # as local time (a valid token looked expired east of UTC and lived on west of it).
        stamp = answer.expire_time
        expires = stamp.seconds + stamp.nanos / 1e9 if answer.HasField("expire_time") else now + self.settings.cache_ttl
        if expires <= now:
            raise Unauthenticated("the token has expired")
        principal = Principal(user_id=answer.user_id or None, admin=ADMIN_SCOPE in answer.scopes)
        if principal.user_id is None and not principal.admin:
            raise Unauthenticated("the token names no user and no admin scope")
        return principal, min(expires, now + self.settings.cache_ttl)


def bearer_token(metadata: Any) -> str:
    """The token of the one `authorization: Bearer <token>` header; Unauthenticated otherwise.
    Two authorization headers are refused rather than picked from: proxies and servers disagree
    on which one counts, and that disagreement is how a header gets smuggled past one of them."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise Unauthenticated("send 'authorization: Bearer <token>'")
    if len(values) > 1:
        raise Unauthenticated("send exactly one authorization header")
    value = values[0]
    if isinstance(value, str) and value[:7].lower() == "bearer " and value[7:].strip():
        return value[7:].strip()
    raise Unauthenticated("send 'authorization: Bearer <token>'")


class Authenticate(Step):
    """The boundary step that authenticates every session.v1 call and runs it as its principal;
    health and reflection stay open (load balancers and grpcurl need them)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def enter(self, call: Call) -> None:
        try:
            principal = await self.verifier.verify(bearer_token(call.context.invocation_metadata()))
        except AuthUnavailable as error:
            log.warning("auth service unavailable: %s", error)
            raise Unavailable("the auth service is unavailable; retry", reason="AUTH_SERVICE_UNAVAILABLE") from None
        _current.set(principal)
