"""Usage requests and answers, proto <-> domain (GetUsage; the budgets of session_grpc.budgets)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from google.protobuf import timestamp_pb2

from ._proto.session.v1 import session_pb2 as pb
from .authorization import owner_scope
from .domain import usage
from .domain.limits import DEFAULT_LIMITS, Limits
from .domain.money import format_decimal
from .domain.validation import Violations
from .resources import ROLE_TO_PROTO, timestamp

BUCKETS = {
    pb.USAGE_BUCKET_HOUR: usage.Bucket.HOUR,
    pb.USAGE_BUCKET_DAY: usage.Bucket.DAY,
    pb.USAGE_BUCKET_MONTH: usage.Bucket.MONTH,
}
BUCKET_HINT = "must be one of USAGE_BUCKET_HOUR, USAGE_BUCKET_DAY, USAGE_BUCKET_MONTH"
_BUCKET_SECONDS = {usage.Bucket.HOUR: 3600, usage.Bucket.DAY: 86400}


def _instant(check: Violations, field: str, given: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    """A required time, to the microsecond (the database's precision; finer fractions are cut)."""
    if not present:
        check.add(field, "is required")
        return None
    try:
        if not 0 <= given.nanos < 1_000_000_000:
            raise ValueError
        return datetime.fromtimestamp(given.seconds, timezone.utc).replace(microsecond=given.nanos // 1000)
    except (ValueError, OverflowError, OSError):
        check.add(field, "must be a time between 0001-01-01 and 9999-12-31 with nanos 0..999999999")
        return None


def bucket_count(bucket: usage.Bucket, start: datetime, end: datetime) -> int:
    """How many buckets [start, end) touches (a partial first or last one counts; end is exclusive)."""
    last = end - timedelta(microseconds=1)
    if bucket is usage.Bucket.MONTH:
        return (last.year - start.year) * 12 + last.month - start.month + 1
    width = _BUCKET_SECONDS[bucket]
    return int(last.timestamp() // width - start.timestamp() // width) + 1


def usage_query(request: pb.GetUsageRequest, limits: Limits = DEFAULT_LIMITS) -> usage.UsageQuery:
    """Whose usage, of which app, in which buckets. Authorize has put the caller into an empty
    user_id and refused another user's; a caller who is not an admin is kept to their own usage
    here as well (owner_scope(): "" for a service principal without the admin scope, which matches
    no message), so only an admin's empty user_id reads every user's."""
    check = Violations(limits)
    user_id = check.text("user_id", request.user_id, max_length=255) or None
    owner = owner_scope()
    if owner is not None:
        user_id = owner
    app_name = check.app_name("app_name", request.app_name) or None
    bucket = BUCKETS.get(request.bucket)
    if bucket is None:
        check.add("bucket", BUCKET_HINT)
    start = _instant(check, "start_time", request.start_time, request.HasField("start_time"))
    end = _instant(check, "end_time", request.end_time, request.HasField("end_time"))
    if start is not None and end is not None:
        if end <= start:
            check.add("end_time", "must be after start_time")
        elif bucket is not None and bucket_count(bucket, start, end) > limits.usage_buckets:
            check.add("end_time", f"the range spans more than {limits.usage_buckets} {bucket.value} buckets")
    check.raise_if_any()
    assert bucket is not None and start is not None and end is not None
    return usage.UsageQuery(user_id, app_name, bucket, start, end, request.by_role)


def usage_to_proto(found: usage.Usage) -> pb.GetUsageResponse:
    return pb.GetUsageResponse(
        buckets=[
            pb.UsageBucketTotals(
                start_time=timestamp(bucket.start_time),
                role=pb.ROLE_UNSPECIFIED if bucket.role is None else ROLE_TO_PROTO[bucket.role],
                message_count=bucket.message_count,
                total_tokens=bucket.total_tokens,
                total_cost=format_decimal(bucket.total_cost),
            )
            for bucket in found.buckets
        ],
        message_count=found.message_count,
        total_tokens=found.total_tokens,
        total_cost=format_decimal(found.total_cost),
    )
