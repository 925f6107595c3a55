"""Retention policy requests and answers, proto <-> domain (Get/Set/DeleteRetentionPolicy)."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import duration_pb2

from ._proto.session.v1 import session_pb2 as pb
from .domain.limits import DEFAULT_LIMITS, Limits
from .domain.retention import RetentionPolicy
from .domain.validation import Violations
from .resources import timestamp

MAX_TTL_SECONDS = 100 * 365 * 86400
MAX_KEPT_MESSAGES = 2**62


def app_of(request: pb.GetRetentionPolicyRequest | pb.DeleteRetentionPolicyRequest,
           limits: Limits = DEFAULT_LIMITS) -> str:
    check = Violations(limits)
    app = check.app_name("app_name", request.app_name)
    if not app:
        check.add("app_name", "is required")
    check.raise_if_any()
    return app


def _ttl(check: Violations, field: str, given: pb.RetentionPolicy) -> timedelta | None:
    if not given.HasField(field):
        return None
    duration: duration_pb2.Duration = getattr(given, field)
    if duration.seconds < 1 or duration.nanos < 0 or duration.nanos >= 1_000_000_000:
        check.add(f"policy.{field}", "must be at least 1s (unset: no such rule)")
        return None
    if duration.seconds > MAX_TTL_SECONDS:
        check.add(f"policy.{field}", "must be at most 100 years")
        return None
    return duration.ToTimedelta()


def policy_to_set(request: pb.SetRetentionPolicyRequest, limits: Limits = DEFAULT_LIMITS) -> RetentionPolicy:
    check = Violations(limits)
    given = request.policy
    app = check.app_name("policy.app_name", given.app_name)
    if not app:
        check.add("policy.app_name", "is required")
    closed = _ttl(check, "closed_session_ttl", given)
    aged = _ttl(check, "message_ttl", given)
    keep = None
    if given.HasField("max_messages_per_session"):
        keep = given.max_messages_per_session
        if not 1 <= keep <= MAX_KEPT_MESSAGES:
            check.add("policy.max_messages_per_session", f"must be between 1 and {MAX_KEPT_MESSAGES}")
    if not (given.HasField("closed_session_ttl") or given.HasField("message_ttl")
            or given.HasField("max_messages_per_session")):
        check.add("policy", "set at least one of closed_session_ttl, message_ttl, max_messages_per_session")
    check.raise_if_any()
    return RetentionPolicy(app, closed, aged, keep)


def _duration(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def policy_to_proto(policy: RetentionPolicy) -> pb.RetentionPolicy:
    message = pb.RetentionPolicy(app_name=policy.app_name)
    if policy.closed_session_ttl is not None:
        message.closed_session_ttl.CopyFrom(_duration(policy.closed_session_ttl))
    if policy.message_ttl is not None:
        message.message_ttl.CopyFrom(_duration(policy.message_ttl))
    if policy.max_messages_per_session is not None:
        message.max_messages_per_session = policy.max_messages_per_session
    if policy.update_time is not None:
        message.update_time.CopyFrom(timestamp(policy.update_time))
    return message
