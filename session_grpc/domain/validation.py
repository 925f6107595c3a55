"""Checks on what a client sends. Each check adds a FieldViolation; `raise_if_any` reports them all at once."""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import FieldViolation, InvalidArgument
from .limits import DEFAULT_LIMITS, Limits

MAX_USER_ID_LENGTH = 255
MAX_TOKENS_PER_MESSAGE = 1_000_000_000
MAX_ETAG_LENGTH = 100
MAX_APP_NAME_LENGTH = 128
APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
APP_NAME_HINT = f"must be 1-{MAX_APP_NAME_LENGTH} characters of A-Z a-z 0-9 . _ - starting with a letter or digit"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
"""What uuid.UUID parses and prints back the same (ASCII hex only: a regex class, not str.isalnum)."""
MAX_MEDIA_TYPE_LENGTH = 255
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"  # RFC 9110's token
MEDIA_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*')
MEDIA_TYPE_HINT = (
    f'must be a media type like "application/json" (type/subtype, optionally "; name=value"), '
    f"at most {MAX_MEDIA_TYPE_LENGTH} characters"
)


def excerpt(value: str, length: int = 40) -> str:
    """A client's value, quoted and cut short, for an error message that must stay small."""
    return repr(value if len(value) <= length else value[:length] + "...")


class Violations:
    """Collects every problem of one request before reporting them together."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.items: list[FieldViolation] = []
        self.limits = limits

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def text(self, field: str, value: str, *, required: bool = False, max_length: int | None = None) -> str:
        if required and not value.strip():
            self.add(field, "is required")
        elif "\x00" in value:
            self.add(field, "must not contain NUL characters")
        elif max_length is not None and len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        return value

    def user_id(self, field: str, value: str) -> str:
        return self.text(field, value, required=True, max_length=MAX_USER_ID_LENGTH)

    def app_name(self, field: str, value: str) -> str:
        """An application name, or "" for none (the caller decides what none means). Narrower
        than a user_id: it names a tenant in URLs, metric labels and dashboards."""
        if value and (len(value) > MAX_APP_NAME_LENGTH or not APP_NAME.fullmatch(value)):
            self.add(field, APP_NAME_HINT)
        return value

    def uuid(self, field: str, value: str, *, required: bool = True) -> str | None:
        """The canonical lowercase form of a UUID, or None (empty and optional, or invalid)."""
        if not value:
            if required:
                self.add(field, "is required")
            return None
        if not _UUID.fullmatch(value):  # only the 8-4-4-4-12 form, any case
            self.add(field, "must be a UUID like 123e4567-e89b-12d3-a456-426614174000")
            return None
        return value.lower()

    def non_negative(self, field: str, value: int, maximum: int) -> int:
        if value < 0:
            self.add(field, "must not be negative")
        elif value > maximum:
            self.add(field, f"must be at most {maximum}")
        return value

    def content(self, field: str, value: str, *, required: bool = True) -> str:
        self.text(field, value, required=required)
        if len(value) > self.limits.content_bytes // 4 and len(value.encode("utf-8", "surrogatepass")) > self.limits.content_bytes:
            self.add(field, f"must be at most {self.limits.content_bytes} bytes (UTF-8)")
        return value

    def payload(self, field: str, type_field: str, value: bytes, media_type: str) -> tuple[bytes, str]:
        """A payload and its media type: bytes within the limit, never looked into; the type
        required with a payload and refused without one (so "" means none, on the way back too)."""
        if len(value) > self.limits.payload_bytes:
            self.add(field, f"must be at most {self.limits.payload_bytes} bytes")
        if not value:
            if media_type:
                self.add(type_field, f"is set only with a {field}")
        elif not media_type:
            self.add(type_field, f"is required with a {field}")
        elif len(media_type) > MAX_MEDIA_TYPE_LENGTH or not MEDIA_TYPE.fullmatch(media_type):
            self.add(type_field, MEDIA_TYPE_HINT)
        return value, media_type

    def page_size(self, field: str, value: int, default: int) -> int:
        if value < 0:
            self.add(field, "must not be negative")
            return default
        if value > self.limits.page_size:
            self.add(field, f"must be at most {self.limits.page_size}")
            return default
        return value or default

    def facts(self, field: str, facts: list[str]) -> list[str]:
        if len(facts) > self.limits.facts:
            self.add(field, f"must hold at most {self.limits.facts} facts")
        for index, fact in enumerate(facts):
            self.text(f"{field}[{index}]", fact, max_length=self.limits.fact_length)
        return facts

    def struct_size(self, field: str, serialized_bytes: int) -> bool:
        """Whether a Struct of that protobuf size is within the limit (adding a violation if not)."""
        if serialized_bytes > self.limits.struct_bytes:
            self.add(field, f"must be at most {self.limits.struct_bytes} bytes serialized")
            return False
        return True

    def delete_keys(self, field: str, keys: list[str], set_keys: Any) -> tuple[str, ...]:
        """The keys a StateDelta removes: no NUL, within struct_bytes in all, none also set."""
        size = 0
        for index, key in enumerate(keys):
            if "\x00" in key:
                self.add(f"{field}[{index}]", "must not contain NUL characters")
            elif key in set_keys:
                self.add(f"{field}[{index}]", f"{excerpt(key)} is also in set: a key is either set or deleted")
            size += len(key.encode("utf-8", "surrogatepass"))
        if size > self.limits.struct_bytes:
            self.add(field, f"must hold at most {self.limits.struct_bytes} bytes of keys (UTF-8)")
        return tuple(dict.fromkeys(keys))

    def json_object(self, field: str, value: dict[str, Any]) -> dict[str, Any]:
        problem = _json_problem(value, 1, self.limits.struct_depth)
        if problem:
            self.add(field, problem)
        return value


def _json_problem(value: Any, depth: int, max_depth: int) -> str | None:
    """Why PostgreSQL's JSONB would refuse `value`, or None."""
    if depth > max_depth:
        return f"must not nest deeper than {max_depth} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return "keys must not contain NUL characters"
            problem = _json_problem(item, depth + 1, max_depth)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _json_problem(item, depth + 1, max_depth)
            if problem:
                return problem
    elif isinstance(value, str):
        if "\x00" in value:
            return "strings must not contain NUL characters"
    elif isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    return None
