"""Exact money: costs are decimal strings in the API and NUMERIC in the database, never floats."""

from __future__ import annotations

import re
from decimal import Decimal

MAX_INTEGER_DIGITS = 12
MAX_FRACTION_DIGITS = 18
# ASCII digits only, and fullmatch: "$" alone would let a trailing newline through.
_COST = re.compile(rf"[0-9]{{1,{MAX_INTEGER_DIGITS}}}(\.[0-9]{{1,{MAX_FRACTION_DIGITS}}})?")


def parse_cost(text: str) -> Decimal | None:
    """The Decimal a cost string names, or None when it is not a plain non-negative decimal.

    Accepts "0", "12", "0.00015"; rejects signs, exponents, NaN, spaces and
    more than 12 integer or 18 fraction digits. Empty means zero.
    """
    if text == "":
        return Decimal(0)
    if not _COST.fullmatch(text):
        return None
    return Decimal(text)


def format_decimal(value: Decimal) -> str:
    """Plain notation with the stored scale ("0.000150", never "1.5E-4")."""
    return format(value, "f")
