"""Property-based fuzzing of every RPC: arbitrary request messages, built from the proto
descriptors, must only ever get documented status codes, and the server must stay SERVING.

Runs in a thread with a blocking channel so the server under test keeps its own event loop.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor as d
from google.protobuf import message_factory, timestamp_pb2
import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_grpc.domain.limits import DEFAULT_LIMITS
from session_grpc.policy import service_methods

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
}
"""RESOURCE_EXHAUSTED is not here: only a request past the transport limit may get it (an AddMessages
batch of several large messages can be; Fuzzer.call checks the size); for any other request it
would mean something went wrong (an error too big for the client's trailer limit, say)."""

ENDLESS = {"WatchSession", "WatchUserSessions"}
"""Streams that never end by themselves (the change feed): the fuzz reads their first response
(the cursor, or the error the request earns) and hangs up."""

INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
}

# Strings a careless or hostile client sends: NUL, SQL, huge, unicode edge cases, lookalikes.
NASTY = st.sampled_from(
    [
        "", " ", "\x00", "a\x00b", "'; DROP TABLE sessions; --", "' OR '1'='1", "%", "_", "\\", "\ufeff",
        "\U0001F600" * 3, "Ω≈ç√", "null", "NaN", "-1", "1e-5", "0.1", "99999999999999999999", "*",
        "ROLE_USER", "sequence desc", "title", "status,metadata", "x" * 5000,
    ]
)
# Any Unicode scalar value (protobuf strings cannot carry lone surrogates; bytes that are not
# UTF-8 at all are tests/test_wire.py's job).
UNICODE = st.characters(codec="utf-8")
STRINGS = st.one_of(NASTY, st.text(alphabet=UNICODE, max_size=200))

# What people type in a search box, websearch_to_tsquery's operators and tsquery's own syntax
# (which websearch_to_tsquery must take as plain text) included.
SEARCH_QUERIES = st.sampled_from(
    ['"hello world"', "hello -world", "tea or coffee", "hello", "!!!", "&|!():*", "a <-> b", "'", "-", '"',
     "or", "x:*", "-(", '"unclosed', "or or or", "東京", "\\x00", "a & !b"]
)

JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True), STRINGS
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(STRINGS, inner, max_size=4)),
    max_leaves=30,
)


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


# Payloads are bytes the server stores and never parses: JSON with integers past 2^53, anything
# that is not UTF-8, and sizes up to past the default limit (1 MiB).
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"\x00", b'{"n":9223372036854775807,"m":-9223372036854775808}', b"\xff\xfe" * 100]),
    st.integers(1, 3).map(lambda n: b"p" * (n * 600_000)),
)
MEDIA_TYPES = st.one_of(
    st.sampled_from(["application/json", "image/png", "application/json; charset=utf-8", "json", "a/b;", ""]),
    STRINGS,
)

STRUCTS = st.one_of(
    st.dictionaries(STRINGS, JSON, max_size=6),
    st.integers(1, 90).map(_deep),
    st.integers(1, 3).map(lambda n: {"big": "y" * (n * 40_000)}),
)
# A Struct inside a message of the request (an AddMessages entry's metadata) sits deeper, and
# protobuf refuses to copy a message nested past 100 levels: still past the server's depth limit (32).
NESTED_STRUCTS = st.one_of(
    st.dictionaries(STRINGS, JSON, max_size=6),
    st.integers(1, 40).map(_deep),
    st.integers(1, 3).map(lambda n: {"big": "y" * (n * 40_000)}),
)


@dataclass
class FuzzReport:
    calls: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)


class Fuzzer:
    def __init__(self, address: str, known_ids: list[str]) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
        self.known_ids = known_ids
        self.report = FuzzReport()
        self.methods: list[tuple[str, d.MethodDescriptor]] = sorted(service_methods().items())

    def close(self) -> None:
        self.channel.close()

    # ---- strategies -------------------------------------------------------------------------

    def ids(self) -> st.SearchStrategy[str]:
        return st.one_of(
            st.sampled_from(self.known_ids) if self.known_ids else st.just(str(uuid.uuid4())),
            st.uuids().map(str),
            st.uuids().map(lambda u: u.hex),
            st.uuids().map(lambda u: str(u).upper()),
            STRINGS,
        )

    def value(self, fd: d.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if fd.message_type is not None:
            return self.message(fd.message_type, depth + 1)
        if fd.type == d.FieldDescriptor.TYPE_ENUM:
            return st.integers(-3, 12)
        if fd.type == d.FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if fd.type in INT_RANGES:
            low, high = INT_RANGES[fd.type]
            return st.one_of(st.integers(-3, 60), st.integers(low, high), st.sampled_from([low, high]))
        if fd.type in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
            return st.floats(allow_nan=True)
        if fd.type == d.FieldDescriptor.TYPE_BYTES:
            return PAYLOADS
        if fd.name == "payload_type":
            return MEDIA_TYPES
        if fd.name.endswith("_id") and fd.name != "user_id":
            return self.ids()
        if fd.name == "user_id":
            return st.one_of(st.just("fuzz-user"), STRINGS)
        if fd.name == "app_name":
            return st.one_of(st.just("fuzz-app"), st.just(""), STRINGS)
        if fd.name == "cost":
            return st.one_of(st.decimals(min_value=0, max_value=10**6, places=6).map(str), STRINGS)
        if fd.name == "order_by":
            return st.one_of(st.sampled_from(["sequence desc", "create_time desc", "last_activity_time desc"]), STRINGS)
        if fd.name == "query":
            return st.one_of(SEARCH_QUERIES, STRINGS)
        return STRINGS

    def message(self, descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
        cls = message_factory.GetMessageClass(descriptor)
        name = descriptor.full_name
        if name == "google.protobuf.Struct":
            return (STRUCTS if depth <= 1 else NESTED_STRUCTS).map(lambda v: _struct(cls, v))
        if name == "google.protobuf.FieldMask":
            paths = st.lists(st.one_of(st.sampled_from(["title", "status", "metadata", "conversation_data",
                                                        "facts", "preferences", "conversation_summary", "*",
                                                        "message_count", "session.title"]), STRINGS), max_size=4)
            return paths.map(lambda p: cls(paths=p))
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            return st.builds(lambda s, n: cls(seconds=s, nanos=n),
                             st.integers(-(2**40), 2**40), st.integers(-(10**9), 10**9))
        if depth > 3:
            return st.just(cls())
        if name == "session.v1.GetUsageRequest":
            return st.one_of(self._fields(descriptor, cls, depth), self._usage_windows(cls))
        return self._fields(descriptor, cls, depth)

    def _usage_windows(self, cls: Any) -> st.SearchStrategy[Any]:
        """GetUsage requests that pass validation often enough to reach the statements: ranges of up
        to about 14 months in 2026 (over and under the bucket limit for hours), any bucket or role split."""
        start = st.integers(1_767_225_600, 1_767_225_600 + 365 * 86400)
        return st.builds(
            lambda s, span, bucket, by_role, user, app: _build(cls, {
                "start_time": timestamp_pb2.Timestamp(seconds=s),
                "end_time": timestamp_pb2.Timestamp(seconds=s + span), "bucket": bucket,
                "by_role": by_role, "user_id": user, "app_name": app,
            }),
            start, st.integers(-3600, 430 * 86400), st.integers(0, 4), st.booleans(),
            st.one_of(st.just(""), st.just("fuzz-user"), STRINGS), st.sampled_from(["", "default", "travel", "x y"]),
        )

    def _fields(self, descriptor: d.Descriptor, cls: Any, depth: int) -> st.SearchStrategy[Any]:
        fields = {}
        for fd in descriptor.fields:
            if fd.is_repeated:
                fields[fd.name] = st.lists(self.value(fd, depth), max_size=4)
            else:
                fields[fd.name] = self.value(fd, depth)
        return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))

    # ---- the property -----------------------------------------------------------------------

    def call(self, path: str, method: d.MethodDescriptor, request: Any) -> None:
        response_cls = message_factory.GetMessageClass(method.output_type)
        self.report.calls[path] += 1
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                                   response_deserializer=response_cls.FromString)
                call = stream(request, timeout=30)
                if path.rsplit("/", 1)[1] in ENDLESS:
                    next(call, None)  # its first response (or its error), then hang up
                    call.cancel()
                else:
                    for _ in call:
                        pass
                code = grpc.StatusCode.OK
            else:
                unary = self.channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                                 response_deserializer=response_cls.FromString)
                response = unary(request, timeout=30)
                code = grpc.StatusCode.OK
                self._check_echo(path, request, response)
        except grpc.RpcError as error:
            code = error.code()
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _over_budget(error):
                # A budget the fuzzer itself set (SetBudget) refused an append: documented, not a fault.
                self.report.codes["RESOURCE_EXHAUSTED (budget)"] += 1
                return
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.report.exhausted.append(f"{path}: {error.details()} ({request.ByteSize()} bytes)")
        self.report.codes[code.name] += 1
        past_limit = code is grpc.StatusCode.RESOURCE_EXHAUSTED and request.ByteSize() > DEFAULT_LIMITS.max_request_bytes
        if code not in ALLOWED and not past_limit:
            self.report.violations.append(f"{path} -> {code.name} for {request!r:.300}")

    def _check_echo(self, path: str, request: Any, response: Any) -> None:
        """What was accepted is stored and returned verbatim, SQL-looking text included
        (a repeated request_id rightly returns the first call's result instead)."""
        if getattr(request, "request_id", ""):
            return
        if path.endswith("/CreateSession") and response.session.title != request.title:
            self.report.violations.append(f"title changed: {request.title!r} -> {response.session.title!r}")
        if path.endswith("/AddMessage") and response.message.content != request.content:
            self.report.violations.append("content changed on the way through AddMessage")
        if path.endswith("/AddMessage") and (response.message.payload, response.message.payload_type) != (
            request.payload, request.payload_type
        ):
            self.report.violations.append("payload changed on the way through AddMessage")
        if path.endswith("/AddMessages") and [m.content for m in response.messages] != [
            m.content for m in request.messages
        ]:
            self.report.violations.append("contents changed (or reordered) on the way through AddMessages")
        if path.endswith("/UpdateState"):
            self._check_state_echo(request.state_delta, response)

    def _check_state_echo(self, delta: Any, response: Any) -> None:
        """Every key an accepted UpdateState set is in the state it returns, with the value sent
        (deltas are merged by the database: nothing may be lost or changed on the way)."""
        scopes = (
            ("session", delta.session_state, response.session.conversation_data),
            ("user", delta.user_state, response.user_state.state),
            ("app", delta.app_state, response.app_state.state),
        )
        for scope, sent, state in scopes:
            for key, value in sent.set.fields.items():
                if key not in state.fields or state.fields[key] != value:
                    self.report.violations.append(f"{scope} state key {key!r:.40} lost or changed by UpdateState")
            for key in sent.delete:
                if key in state.fields:
                    self.report.violations.append(f"{scope} state key {key!r:.40} not deleted by UpdateState")

    def run(self, examples: int, seed: int | None = None) -> FuzzReport:
        """`examples` random requests shared out evenly over all RPCs (each gets its share, so none
        is left out whatever the draw); the same ones every run unless a seed is given."""
        share = -(-examples // len(self.methods))
        for path, method in self.methods:
            self._run_one(path, method, share, seed)
        return self.report

    def _run_one(self, path: str, method: d.MethodDescriptor, examples: int, seed: int | None) -> None:
        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(self.message(method.input_type))
        def property_(request: Any) -> None:
            self.call(path, method, request)

        if seed is not None:
            property_ = hypothesis.seed(seed)(property_)
        property_()


def _over_budget(error: grpc.RpcError) -> bool:
    """Whether a RESOURCE_EXHAUSTED carries the ErrorInfo reason of a budget's enforced limit."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.reason == "BUDGET_EXCEEDED":
            return True
    return False


def _struct(cls: Any, value: dict[str, Any]) -> Any:
    message = cls()
    message.update(value)
    return message


def _build(cls: Any, values: dict[str, Any]) -> Any:
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, list) and value and hasattr(value[0], "SerializeToString"):
            # Not extend(): upb copies messages into a repeated field by parsing them, which refuses
            # a Struct nested deeper than its parse limit; the server must see those too.
            for item in value:
                getattr(message, name).add().CopyFrom(item)
        elif isinstance(value, list):
            getattr(message, name).extend(value)
        elif hasattr(value, "SerializeToString"):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message
