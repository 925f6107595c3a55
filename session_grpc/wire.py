"""Requests that do not even parse (corrupt wire bytes, strings that are not UTF-8) are INVALID_ARGUMENT.

Left alone, grpcio answers those with UNKNOWN from inside its own
deserialization. This interceptor swaps in a deserializer that keeps the
parse error, and a check that reports it before the method runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from .handlers import AroundInterceptor, wrap_handler


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


class MalformedRequestInterceptor(AroundInterceptor):
    @contextlib.asynccontextmanager
    async def around(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if isinstance(request, MalformedRequest):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the request message could not be parsed: {request.error}"
            )
        yield

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        return wrap_handler(handler, self.around, request_deserializer=_safe(handler.request_deserializer))
