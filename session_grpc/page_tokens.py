"""Opaque page tokens: a keyset position sealed with an HMAC and bound to the query it came from.

A token changed by hand, or sent with a different filter than the one that
produced it, fails the seal and is INVALID_ARGUMENT (AIP-158).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from .domain.errors import InvalidArgument

_MAC_BYTES = 16


class PageTokens:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def encode(self, kind: str, query: dict[str, Any], position: list[Any]) -> str:
        payload = json.dumps(position, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(kind, query, payload))}"

    def decode(self, token: str, kind: str, query: dict[str, Any], field: str = "page_token") -> list[Any]:
        try:
            payload_part, mac_part = token.split(".")
            payload = _unb64(payload_part)
            mac = _unb64(mac_part)
        except (ValueError, binascii.Error):
            raise InvalidArgument.single(field, "is not a page token this service issued") from None
        if not hmac.compare_digest(mac, self._mac(kind, query, payload)):
            raise InvalidArgument.single(field, "was altered or belongs to a different query")
        position = json.loads(payload)
        if not isinstance(position, list):
            raise InvalidArgument.single(field, "is not a page token this service issued")
        return position

    def _mac(self, kind: str, query: dict[str, Any], payload: bytes) -> bytes:
        scope = json.dumps([kind, query], sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, scope + b"\x00" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
