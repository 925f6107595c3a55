"""Usage and budget requests and answers, proto <-> domain (GetUsage, GetBudget, SetBudget, DeleteBudget)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from google.protobuf import timestamp_pb2

from ._proto.session.v1 import session_pb2 as pb
from .authorization import owner_scope
from .domain import budgets, usage
from .domain.errors import PermissionDenied
from .domain.limits import DEFAULT_LIMITS, Limits
from .domain.money import format_decimal, parse_cost
from .domain.validation import Violations
from .requests import COST_HINT
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


# -- budgets ----------------------------------------------------------------------------------

MAX_TOKENS_LIMIT = 2**62
"""A token limit beyond any sum of int64 token counts a day could hold."""


def budget_ref(check: Violations, user_id: str, app_name: str, prefix: str = "") -> budgets.BudgetRef:
    """Exactly one of a user and an app."""
    user = check.text(prefix + "user_id", user_id, max_length=255)
    app = check.app_name(prefix + "app_name", app_name)
    if bool(user) == bool(app):
        check.add(prefix + "user_id", "exactly one of user_id and app_name must be set")
    return budgets.BudgetRef(user, app)


def budget_of(request: pb.GetBudgetRequest | pb.DeleteBudgetRequest, limits: Limits = DEFAULT_LIMITS) -> budgets.BudgetRef:
    """Whose budget. Authorize has put the caller into an empty user_id (GetBudget) and refused
    another user's; a caller who is not an admin may read only their own user's budget, not an app's."""
    check = Violations(limits)
    ref = budget_ref(check, request.user_id, request.app_name)
    owner = owner_scope()
    if owner is not None and ref.user_id != owner:
        check.raise_if_any()
        raise PermissionDenied("an app's budget needs the admin scope", reason="ADMIN_REQUIRED")
    check.raise_if_any()
    return ref


def budget_to_set(request: pb.SetBudgetRequest, limits: Limits = DEFAULT_LIMITS) -> tuple[budgets.BudgetRef, budgets.BudgetLimits]:
    check = Violations(limits)
    given = request.budget
    ref = budget_ref(check, given.user_id, given.app_name, "budget.")
    values: dict[str, object] = {}
    for name in ("daily_tokens", "monthly_tokens"):
        if given.HasField(name):
            value = getattr(given, name)
            if not 0 <= value <= MAX_TOKENS_LIMIT:
                check.add(f"budget.{name}", f"must be between 0 and {MAX_TOKENS_LIMIT}")
            values[name] = value
    for name in ("daily_cost", "monthly_cost"):
        text = getattr(given, name)
        if text:
            cost = parse_cost(text)
            if cost is None:
                check.add(f"budget.{name}", COST_HINT)
            values[name] = cost
    if not values:
        check.add("budget", "set at least one of daily_tokens, monthly_tokens, daily_cost, monthly_cost")
    check.raise_if_any()
    return ref, budgets.BudgetLimits(soft=given.soft, **values)  # type: ignore[arg-type]


def budget_to_proto(budget: budgets.Budget) -> pb.Budget:
    limits = budget.limits
    message = pb.Budget(
        user_id=budget.ref.user_id, app_name=budget.ref.app_name, soft=limits.soft,
        daily_cost="" if limits.daily_cost is None else format_decimal(limits.daily_cost),
        monthly_cost="" if limits.monthly_cost is None else format_decimal(limits.monthly_cost),
        update_time=timestamp(budget.update_time),
    )
    if limits.daily_tokens is not None:
        message.daily_tokens = limits.daily_tokens
    if limits.monthly_tokens is not None:
        message.monthly_tokens = limits.monthly_tokens
    return message


def budget_use_to_proto(budget: budgets.Budget) -> pb.GetBudgetResponse:
    usage_ = []
    for name in budgets.LIMITS:
        value = budget.limit(name)
        if value is None:
            continue
        used = budget.used(name)
        start = budget.period_start(name)
        usage_.append(pb.BudgetLimitUse(
            limit=name, limit_value=format_decimal(value), used=format_decimal(used),
            remaining=format_decimal(max(value - used, Decimal(0))),
            period_start=timestamp(datetime(start.year, start.month, start.day, tzinfo=timezone.utc)),
        ))
    return pb.GetBudgetResponse(budget=budget_to_proto(budget), usage=usage_)
