"""Graceful shutdown: once draining, new calls are refused with UNAVAILABLE (safe to retry
elsewhere) while the calls already running finish; `wait_idle` tells when they have."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from .handlers import AroundInterceptor, wrap_handler

# Health Watch and reflection streams stay open for as long as the client likes; they do not
# hold up a shutdown and are not refused (health must be able to say NOT_SERVING).
COUNTED_PREFIX = "/session.v1."


class DrainInterceptor(AroundInterceptor):
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start_draining(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no counted call runs; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    @contextlib.asynccontextmanager
    async def around(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    def applies(self, method: str) -> bool:
        return method.startswith(COUNTED_PREFIX)

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return _refusing(handler) if self.draining else wrap_handler(handler, self.around)


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    # Status set and returned, not context.abort(): grpcio cancels aborted calls still finishing
    # when the server stops (grpc/grpc#37239), and the client would see CANCELLED.
    context.set_code(grpc.StatusCode.UNAVAILABLE)
    context.set_details("the server is shutting down; retry")


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=_refuse)
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=_refuse)
    return handler
