"""Paging, in one place: sealed page tokens, the keyset position each listing continues from, the
byte budget of a page, and the token for the next page (AIP-158).

A token is a keyset position sealed with an HMAC and bound to the query it came from: changed by
hand, or sent with other filters than the ones that produced it, it fails the seal. A token that
passes the seal is still read with suspicion (the secret may be the public default): a position
that is not one this service could have issued is INVALID_ARGUMENT like any other bad token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from .domain import records
from .domain.errors import InvalidArgument

T = TypeVar("T")  # an item of a listing
K = TypeVar("K")  # the key a listing continues from
P = TypeVar("P", bound=Message)  # an item's proto

_MAC_BYTES = 16
NOT_OURS = "is not a page token this service issued"

RESPONSE_BYTES = 4 * 1024 * 1024 - 64 * 1024
"""A list page stops short of page_size rather than pass gRPC's default 4 MiB client receive limit;
storage fetches no more than that (plus one message) for it."""
STREAM_BATCH_BYTES = 1024 * 1024
"""What one stream reads from the database at a time: a stream whose client stops reading holds
about this much (plus one message) until it resumes or ends. Also the most one batched
StreamMessages response carries (a single larger message goes out alone)."""

MAX_SEQUENCE = 2**63 - 1
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
"""Creation times a session of this service can have; a key outside them was not issued here."""


@dataclass(frozen=True)
class Listing(Generic[T, K]):
    """How one listing continues: its token kind, the position after an item, and that position
    read back from a token (raising TypeError or ValueError when it is not one)."""

    kind: str
    position: Callable[[T], list[Any]]
    key: Callable[[list[Any]], K]


def _session_key(position: list[Any]) -> records.SessionKey:
    time, session_id = position
    if not isinstance(time, str) or not isinstance(session_id, str):
        raise TypeError("a session key is [time, session_id]")
    when = datetime.fromisoformat(time)
    if when.tzinfo is None or not EARLIEST <= when < LATEST:
        raise ValueError("not a time of this service")
    if str(uuid.UUID(session_id)) != session_id:
        raise ValueError("not a session id")
    return records.SessionKey(when, session_id)


def _sequence(position: list[Any]) -> int:
    (sequence,) = position
    if type(sequence) is not int or not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError("not a message sequence")
    return sequence


def _search_key(position: list[Any]) -> records.SearchKey:
    rank, message_id = position
    if type(rank) is not float or not 0.0 <= rank <= 1e30 or not isinstance(message_id, str):
        raise ValueError("a search key is [rank, message_id]")
    if str(uuid.UUID(message_id)) != message_id:
        raise ValueError("not a message id")
    return records.SearchKey(rank, message_id)


SESSIONS: Listing[records.Session, records.SessionKey] = Listing(
    "sessions", lambda s: [s.create_time.isoformat(), s.session_id], _session_key
)
SESSIONS_BY_ACTIVITY: Listing[records.Session, records.SessionKey] = Listing(
    "sessions", lambda s: [s.last_activity_time.isoformat(), s.session_id], _session_key
)
"""Both orders are one token kind: the order is in the token's scope, so a token of one order fails
the other's seal."""
SESSION_LISTINGS = {
    records.SessionOrder.CREATE_TIME: SESSIONS,
    records.SessionOrder.LAST_ACTIVITY_TIME: SESSIONS_BY_ACTIVITY,
}
MESSAGES: Listing[records.Message, int] = Listing("messages", lambda m: [m.sequence], _sequence)
SEARCH: Listing[records.SearchHit, records.SearchKey] = Listing(
    "search", lambda hit: [hit.rank, hit.message.message_id], _search_key
)


class PageTokens:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def after(self, listing: Listing[Any, K], token: str, scope: dict[str, Any]) -> K | None:
        """The key a request's page_token continues from (None without a token)."""
        if not token:
            return None
        position = self.decode(token, listing.kind, scope)
        try:
            return listing.key(position)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgument.single("page_token", NOT_OURS) from None

    def fit(
        self, listing: Listing[T, Any], scope: dict[str, Any], page: records.Page[T], to_proto: Callable[[T], P]
    ) -> tuple[list[P], str]:
        """The page's leading items as protos within RESPONSE_BYTES, and the token for the rest
        ("" when nothing is left)."""
        protos = fit_page(page.items, to_proto)
        if len(protos) == len(page.items) and not page.more:
            return protos, ""
        return protos, self.encode(listing.kind, scope, listing.position(page.items[len(protos) - 1]))

    def encode(self, kind: str, query: dict[str, Any], position: list[Any]) -> str:
        return self.seal(kind, query, json.dumps(position, separators=(",", ":")).encode())

    def seal(self, kind: str, query: dict[str, Any], payload: bytes) -> str:
        return f"{_b64(payload)}.{_b64(self._mac(kind, query, payload))}"

    def decode(self, token: str, kind: str, query: dict[str, Any], field: str = "page_token") -> list[Any]:
        try:
            payload_part, mac_part = token.split(".")
            payload = _unb64(payload_part)
            mac = _unb64(mac_part)
        except (ValueError, binascii.Error):
            raise InvalidArgument.single(field, NOT_OURS) from None
        if not hmac.compare_digest(mac, self._mac(kind, query, payload)):
            raise InvalidArgument.single(field, "was altered or belongs to a different query")
        try:
            position = json.loads(payload)
        except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested past the parser
            raise InvalidArgument.single(field, NOT_OURS) from None
        if not isinstance(position, list):
            raise InvalidArgument.single(field, NOT_OURS)
        return position

    def _mac(self, kind: str, query: dict[str, Any], payload: bytes) -> bytes:
        scope = json.dumps([kind, query], sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, scope + b"\x00" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def fit_page(items: list[T], to_proto: Callable[[T], P], budget: int = RESPONSE_BYTES) -> list[P]:
    """The leading items, as protos, that fit in `budget` serialized bytes (always at least one)."""
    protos: list[P] = []
    size = 0
    for item in items:
        message = to_proto(item)
        size += message.ByteSize() + 16
        if protos and size > budget:
            break
        protos.append(message)
    return protos


def split_page(items: list[T], to_proto: Callable[[T], P], budget: int) -> list[list[P]]:
    """The items, as protos in their order, in consecutive runs that each fit_page fits in `budget`
    serialized bytes (an item larger than that is a run alone)."""
    runs: list[list[P]] = []
    start = 0
    while start < len(items):
        run = fit_page(items[start:], to_proto, budget)
        runs.append(run)
        start += len(run)
    return runs


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
