"""Metrics, per-call logs and optional tracing, kept out of the servicers.

`Observe` (a step of the RPC boundary, session_grpc.boundary) sees every call: it counts it by service, method and
status code, times it, tracks calls in flight, counts the messages, tokens and
cost that AddMessage added, and writes the per-call JSON log line. The database
pool is read at scrape time by `PoolCollector`, the account-service client's
counters (cache hits, misses, fail-open) by `AccountCollector`. `Observability`
owns the registry and the metrics HTTP server (SESSION_METRICS_PORT).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from .boundary import Call, Step

access_log = logging.getLogger("session_grpc.access")
log = logging.getLogger(__name__)

# Codes that mean the server (or what it depends on) failed, not the caller: always logged.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ADD_MESSAGE = "/session.v1.MessageService/AddMessage"
ADD_MESSAGES = "/session.v1.MessageService/AddMessages"


class Metrics:
    """The metric families, registered in a registry of their own (one per server)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_service", "grpc_method")
        self.handled = Counter(
            "session_grpc_server_handled", "Calls completed, by service, method and status code.",
            (*labels, "grpc_code"), registry=registry,
        )
        self.latency = Histogram(
            "session_grpc_server_handling_seconds", "Time from the call's arrival to its status, in seconds.",
            labels, buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.in_flight = Gauge(
            "session_grpc_server_in_flight", "Calls being handled right now.", labels, registry=registry
        )
        # Per app, never per user: apps are a handful of tenants, users are unbounded.
        self.messages = Counter(
            "session_grpc_messages_added", "Messages added by AddMessage, per app.", ("app_name",), registry=registry
        )
        self.tokens = Counter(
            "session_grpc_tokens_added", "Tokens (tokens_used) of the messages added, per app.", ("app_name",),
            registry=registry,
        )
        self.cost = Counter(
            "session_grpc_cost_added",
            "Cost of the messages added, per app (a float approximation; GetUsage has the exact sums).",
            ("app_name",),
            registry=registry,
        )
        self.append_group_size = Histogram(
            "session_grpc_append_group_size",
            "AddMessage calls written together by group commit (1: a call that ran alone).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry,
        )
        self.soft_budget = Counter(
            "session_grpc_budget_soft_exceeded",
            "Appends that passed a soft budget limit (stored anyway), per app of the session and limit.",
            ("app_name", "limit"), registry=registry,
        )
        self.pruned = Counter(
            "session_grpc_pruned_rows",
            "Rows the retention prune job removed, per app and rule (kind: closed_session_ttl counts sessions, "
            "message_ttl and max_messages_per_session count messages).",
            ("app_name", "kind"), registry=registry,
        )


class PoolCollector(Collector):
    """Database pool use, read from the SQLAlchemy pool at scrape time, as counts of connections.

    SQLAlchemy's own `overflow()` starts at minus the pool size and counts up as connections open,
    which reads as nonsense on a dashboard; every gauge here is a number of connections, never
    negative: in use + idle = open <= max.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool: Any = self.engine.pool
        if not all(hasattr(pool, read) for read in ("checkedout", "checkedin", "size")):
            return  # a pool without counts (NullPool): nothing to show
        in_use, idle, size = pool.checkedout(), pool.checkedin(), pool.size()
        # QueuePool keeps max_overflow only as this attribute; -1 means no limit.
        max_overflow = getattr(pool, "_max_overflow", 0)
        for name, doc, value in (
            ("session_grpc_db_pool_in_use", "Database connections in use by calls now.", in_use),
            ("session_grpc_db_pool_idle", "Open database connections waiting in the pool now.", idle),
            ("session_grpc_db_pool_open", "Open database connections now (in use + idle).", in_use + idle),
            ("session_grpc_db_pool_size", "Connections the pool keeps open once opened (SESSION_DB_POOL_SIZE).", size),
            (
                "session_grpc_db_pool_max",
                "Most connections the pool opens (SESSION_DB_POOL_SIZE + SESSION_DB_MAX_OVERFLOW); "
                "calls beyond it wait up to SESSION_DB_POOL_TIMEOUT.",
                math.inf if max_overflow < 0 else size + max_overflow,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=float(value))


class AccountCollector(Collector):
    """The account-service client's counters, read at scrape time (they live on the checker)."""

    def __init__(self, checker: Any) -> None:
        self.checker = checker

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = self.checker.counters
        for name, doc, value in (
            ("session_grpc_account_lookups", "Calls made to the account service (retries not counted).", counters.lookups),
            ("session_grpc_account_cache_hits", "User checks answered from the cache.", counters.cache_hits),
            ("session_grpc_account_cache_misses", "User checks that needed the account service.", counters.cache_misses),
            ("session_grpc_account_fail_open", "Users let through because the account service did not answer.", counters.fail_open),
        ):
            yield CounterMetricFamily(name, doc, value=float(value))
        cache = getattr(self.checker, "_cache", None)
        if cache is not None:
            yield GaugeMetricFamily("session_grpc_account_cache_entries", "Users in the account cache.", value=float(len(cache)))


class Observability:
    """The registry, its HTTP endpoint and the boundary step that feeds it."""

    def __init__(self, engine: AsyncEngine, *, access_log_enabled: bool) -> None:
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.registry.register(PoolCollector(engine))
        self.step = Observe(self.metrics, access_log_enabled=access_log_enabled)
        self._http: Any = None

    def watch_accounts(self, checker: Any) -> None:
        """Export the account checker's counters (when the server has an account service)."""
        if hasattr(checker, "counters"):
            self.registry.register(AccountCollector(checker))

    def start_http(self, host: str, port: int) -> int:
        """Serve /metrics on host:port; returns the bound port."""
        addr = host.strip("[]")
        self._http, _thread = start_http_server(port, addr=addr, registry=self.registry)
        bound = self._http.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _request_id(request: Any, context: grpc.aio.ServicerContext) -> str:
    value = getattr(request, "request_id", "") if request is not None else ""
    if value:
        return str(value)
    for key, item in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(item)
    return ""


class Observe(Step):
    """The boundary step that counts, times and logs every call (health and reflection too); it
    must be the first step, so that it sees the calls the others refuse."""

    def __init__(self, metrics: Metrics, *, access_log_enabled: bool) -> None:
        self.metrics = metrics
        self.access_log_enabled = access_log_enabled
        # Labelled children looked up once per method (and code), not on every call.
        self._children: dict[str, tuple[Any, Any]] = {}
        self._handled: dict[tuple[str, grpc.StatusCode], Any] = {}
        self._per_app: dict[str, tuple[Any, Any, Any]] = {}

    def applies(self, method: str) -> bool:
        return True

    def children(self, method: str) -> tuple[Any, Any]:
        found = self._children.get(method)
        if found is None:
            service, name = _split(method)
            found = (self.metrics.in_flight.labels(service, name), self.metrics.latency.labels(service, name))
            self._children[method] = found
        return found

    def handled(self, method: str, code: grpc.StatusCode) -> Any:
        found = self._handled.get((method, code))
        if found is None:
            found = self.metrics.handled.labels(*_split(method), code.name)
            self._handled[(method, code)] = found
        return found

    async def enter(self, call: Call) -> float:
        self.children(call.method)[0].inc()
        return time.perf_counter()

    def exit(self, call: Call, started: float, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        context = call.context
        code = context.code() if hasattr(context, "code") else None
        if not isinstance(code, grpc.StatusCode):
            if error is None:
                code = grpc.StatusCode.OK
            elif isinstance(error, (GeneratorExit, asyncio.CancelledError)):
                code = grpc.StatusCode.CANCELLED
            else:
                code = grpc.StatusCode.UNKNOWN
        in_flight, latency = self.children(call.method)
        in_flight.dec()
        self.handled(call.method, code).inc()
        latency.observe(elapsed)
        self.log_call(call, code, elapsed)

    def log_call(self, call: Call, code: grpc.StatusCode, elapsed: float) -> None:
        fault = code in SERVER_FAULTS
        level = logging.ERROR if fault else logging.INFO
        if not (fault or self.access_log_enabled) or not access_log.isEnabledFor(level):
            return
        context = call.context
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "level": logging.getLevelName(level),
            "event": "rpc",
            "method": call.method,
            "status": code.name,
            "duration_ms": round(elapsed * 1000, 3),
            "peer": context.peer(),
            "request_id": _request_id(call.request, context),
        }
        if code is not grpc.StatusCode.OK:
            line["message"] = context.details() or ""
        access_log.log(level, json.dumps(line, separators=(",", ":")))

    def watch_responses(self, method: str) -> bool:
        return method in (ADD_MESSAGE, ADD_MESSAGES)

    def response(self, call: Call, response: Any) -> None:
        """AddMessage's message, AddMessages' messages: count them, their tokens and their cost, under
        their session's app."""
        if call.method == ADD_MESSAGE:
            added = [response.message]
        else:
            added = list(response.messages)
        if not added:
            return
        app = response.app_name or "unknown"
        for passed in response.soft_limits_exceeded:
            self.metrics.soft_budget.labels(app, passed.rpartition("/")[2]).inc()
        messages, tokens, cost = self.per_app(app)
        for message in added:
            messages.inc()
            tokens.inc(max(0, message.tokens_used))
            try:
                # float() of the decimal string is the nearest double, as float(Decimal(...)) is
                cost.inc(float(message.cost or "0"))
            except ValueError:
                pass

    def per_app(self, app: str) -> tuple[Any, Any, Any]:
        """The app's messages, tokens and cost counters, looked up once per app."""
        found = self._per_app.get(app)
        if found is None:
            metrics = self.metrics
            found = (metrics.messages.labels(app), metrics.tokens.labels(app), metrics.cost.labels(app))
            self._per_app[app] = found
        return found


def configure_logging() -> None:
    """Per-call lines are JSON objects: print them as they are, one per line, not inside the text format."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.propagate = False


def tracing_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """OpenTelemetry's server interceptor when OTEL_* variables ask for traces; nothing otherwise.

    Needs the `tracing` extra (opentelemetry-sdk, opentelemetry-instrumentation-grpc). Traces are
    on when OTEL_TRACES_EXPORTER is set (to something other than "none") or an OTLP endpoint is,
    unless OTEL_SDK_DISABLED is true.
    """
    env = os.environ
    wanted = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() not in ("", "none") or any(
        env.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if not wanted or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.grpc import aio_server_interceptor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* is set but the tracing extra is not installed: pip install 'session-grpc[tracing]'")
        return []
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "session-grpc")})
        provider = TracerProvider(resource=resource)
        exporter_name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
        if exporter_name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-grpc; no traces exported")
            else:
                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    log.info("OpenTelemetry tracing on")
    return [aio_server_interceptor()]
