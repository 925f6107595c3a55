"""Checking users against the account service: a deadline-bound gRPC lookup, retried only on
UNAVAILABLE, behind a TTL cache with single flight, failing open (by setting) when the account
service is down.

Concurrent checks of one uncached user share one lookup, run as its own task (singleflight.py):
a caller cancelled while waiting never decides the others' answer, and the answer is cached anyway.

Answers and what CreateSession makes of them:
    ACTIVE                    -> proceed (cached for positive_ttl)
    NOT_FOUND or DELETED      -> FAILED_PRECONDITION, reason USER_NOT_FOUND (cached for negative_ttl)
    SUSPENDED                 -> PERMISSION_DENIED, reason USER_SUSPENDED (cached for negative_ttl)
    no answer in time, UNAVAILABLE or any other failure of the account service
                              -> fail_open: proceed, log a warning, count it; else UNAVAILABLE
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ._proto.account.v1 import account_pb2, account_pb2_grpc
from .domain.errors import FailedPrecondition, PermissionDenied, Unavailable
from .singleflight import SingleFlight

log = logging.getLogger(__name__)


class Standing(enum.Enum):
    ACTIVE = "active"
    UNKNOWN = "unknown"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class AccountSettings:
    address: str
    """SESSION_ACCOUNT_ADDRESS: host:port of the account service."""
    deadline: float = 0.3
    """SESSION_ACCOUNT_DEADLINE: time for one check, retries included."""
    retries: int = 2
    """SESSION_ACCOUNT_RETRIES: extra attempts after UNAVAILABLE, inside the deadline."""
    positive_ttl: float = 300.0
    """SESSION_ACCOUNT_CACHE_TTL: how long an ACTIVE answer is trusted."""
    negative_ttl: float = 30.0
    """SESSION_ACCOUNT_NEGATIVE_TTL: how long an unknown, deleted or suspended answer is trusted."""
    cache_size: int = 10_000
    """SESSION_ACCOUNT_CACHE_SIZE: users remembered; the least recently used go first."""
    fail_open: bool = True
    """SESSION_ACCOUNT_FAIL_OPEN: create sessions anyway when the account service is down."""


@dataclass
class AccountCounters:
    lookups: int = 0
    answered: int = 0
    """Lookups the account service answered (ACTIVE, unknown, deleted or suspended)."""
    cache_hits: int = 0
    cache_misses: int = 0
    fail_open: int = 0


class AccountCheck(Protocol):
    async def check(self, user_id: str) -> None: ...

    async def close(self) -> None: ...


class NoAccountCheck:
    """No account service configured: every user is taken as valid."""

    async def check(self, user_id: str) -> None:
        return None

    async def close(self) -> None:
        return None


class AccountOutage(Exception):
    """The account service gave no usable answer."""


class _Cache:
    """A bounded LRU map of user_id -> (standing, expiry)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[Standing, float]] = OrderedDict()

    def get(self, user_id: str) -> Standing | None:
        item = self._items.get(user_id)
        if item is None:
            return None
        standing, expires = item
        if expires <= time.monotonic():
            del self._items[user_id]
            return None
        self._items.move_to_end(user_id)
        return standing

    def put(self, user_id: str, standing: Standing, ttl: float) -> None:
        self._items[user_id] = (standing, time.monotonic() + ttl)
        self._items.move_to_end(user_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


class AccountChecker:
    def __init__(self, settings: AccountSettings) -> None:
        self.settings = settings
        self.counters = AccountCounters()
        self._cache = _Cache(settings.cache_size)
        self._in_flight: SingleFlight[str, Standing] = SingleFlight()
        self._channel = grpc.aio.insecure_channel(settings.address)
        self._stub = account_pb2_grpc.AccountServiceStub(self._channel)

    async def close(self) -> None:
        await self._in_flight.close()
        await self._channel.close()

    async def check(self, user_id: str) -> None:
        """Return if `user_id` may get a new session; raise the domain error otherwise."""
        standing = self._cache.get(user_id)
        if standing is None:
            self.counters.cache_misses += 1
            try:
                standing = await self._shared_lookup(user_id)
            except AccountOutage as outage:
                if not self.settings.fail_open:
                    raise Unavailable(
                        "the account service is unavailable", reason="ACCOUNT_SERVICE_UNAVAILABLE"
                    ) from None
                self.counters.fail_open += 1
                log.warning("account service unavailable (%s); letting user %r through (fail-open)", outage, user_id)
                return
        else:
            self.counters.cache_hits += 1
        if standing is Standing.UNKNOWN:
            raise FailedPrecondition(f"user {user_id!r} does not exist", reason="USER_NOT_FOUND")
        if standing is Standing.SUSPENDED:
            raise PermissionDenied(f"user {user_id!r} is suspended", reason="USER_SUSPENDED")

    async def _shared_lookup(self, user_id: str) -> Standing:
        """One RPC per user at a time, run as its own task: concurrent checks of the same uncached
        user wait for it, and a waiter's cancellation (the first one's included) never becomes the
        others' answer or keeps the answer out of the cache."""
        return await self._in_flight.run(user_id, lambda: self._lookup_and_cache(user_id))

    async def _lookup_and_cache(self, user_id: str) -> Standing:
        try:
            standing = await self._lookup(user_id)
        except AccountOutage:
            raise
        except Exception as error:  # noqa: BLE001 - any failure of the lookup is an outage
            raise AccountOutage(repr(error)) from None
        self.counters.answered += 1
        ttl = self.settings.positive_ttl if standing is Standing.ACTIVE else self.settings.negative_ttl
        self._cache.put(user_id, standing, ttl)
        return standing

    async def _lookup(self, user_id: str) -> Standing:
        deadline = time.monotonic() + self.settings.deadline
        self.counters.lookups += 1
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_unavailable),
                stop=stop_after_attempt(self.settings.retries + 1),
                wait=wait_random_exponential(multiplier=0.01, max=0.05),
                reraise=True,
            ):
                with attempt:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AccountOutage("no answer within the deadline")
                    response = await self._stub.GetAccount(
                        account_pb2.GetAccountRequest(user_id=user_id), timeout=left
                    )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return Standing.UNKNOWN
            raise AccountOutage(f"{error.code().name}: {error.details()}") from None
        status = response.account.status
        if status == account_pb2.ACCOUNT_STATUS_ACTIVE:
            return Standing.ACTIVE
        if status == account_pb2.ACCOUNT_STATUS_SUSPENDED:
            return Standing.SUSPENDED
        if status == account_pb2.ACCOUNT_STATUS_DELETED:
            return Standing.UNKNOWN
        raise AccountOutage(f"the account service answered status {status} for {user_id!r}")
