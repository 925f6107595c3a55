"""Requests that do not even parse (corrupt wire bytes, strings that are not UTF-8) are INVALID_ARGUMENT.

Left alone, grpcio answers those with UNKNOWN from inside its own deserialization. This
boundary step swaps in a deserializer that keeps the parse error, and reports it before the
method runs (after authentication: an unauthenticated caller learns nothing about parsing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .boundary import Call, Step
from .domain.errors import InvalidArgument


class MalformedRequest:
    def __init__(self, error: Exception) -> None:
        self.error = error


def _safe(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:  # noqa: BLE001 - whatever the parser says, it is the client's bytes
            return MalformedRequest(error)

    return parse


class RefuseMalformed(Step):
    def applies(self, method: str) -> bool:
        return True  # health checks too

    def deserializer(self, deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        return _safe(deserialize)

    async def enter(self, call: Call) -> None:
        if isinstance(call.request, MalformedRequest):
            raise InvalidArgument.single("(request)", f"the request message could not be parsed: {call.request.error}")
