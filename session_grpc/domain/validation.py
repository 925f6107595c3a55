"""Checks on what a client sends. Each check adds a FieldViolation; `raise_if_any` reports them all at once."""

from __future__ import annotations

import math
import uuid
from typing import Any

from .errors import FieldViolation, InvalidArgument

MAX_USER_ID_LENGTH = 255
MAX_TITLE_LENGTH = 1000
MAX_TOKENS_PER_MESSAGE = 1_000_000_000
MAX_JSON_DEPTH = 32
MAX_PAGE_SIZE = 1000


class Violations:
    """Collects every problem of one request before reporting them together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

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

    def uuid(self, field: str, value: str, *, required: bool = True) -> str | None:
        """The canonical lowercase form of a UUID, or None (empty and optional, or invalid)."""
        if not value:
            if required:
                self.add(field, "is required")
            return None
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            parsed = None
        if parsed is None or str(parsed) != value.lower():  # only the 8-4-4-4-12 form, any case
            self.add(field, "must be a UUID like 123e4567-e89b-12d3-a456-426614174000")
            return None
        return str(parsed)

    def non_negative(self, field: str, value: int, maximum: int) -> int:
        if value < 0:
            self.add(field, "must not be negative")
        elif value > maximum:
            self.add(field, f"must be at most {maximum}")
        return value

    def page_size(self, field: str, value: int, default: int) -> int:
        if value < 0:
            self.add(field, "must not be negative")
            return default
        if value > MAX_PAGE_SIZE:
            self.add(field, f"must be at most {MAX_PAGE_SIZE}")
            return default
        return value or default

    def json_object(self, field: str, value: dict[str, Any]) -> dict[str, Any]:
        problem = _json_problem(value, 1)
        if problem:
            self.add(field, problem)
        return value


def _json_problem(value: Any, depth: int) -> str | None:
    """Why PostgreSQL's JSONB would refuse `value`, or None."""
    if depth > MAX_JSON_DEPTH:
        return f"must not nest deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return "keys must not contain NUL characters"
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, str):
        if "\x00" in value:
            return "strings must not contain NUL characters"
    elif isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    return None
