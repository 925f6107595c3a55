"""`Draft`: one message of an `add_messages` batch, as the caller writes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Draft:
    """One message to append with `SessionClient.add_messages`: the fields `add_message` takes.

    role:         "user", "assistant", "system", "tool" (or pb.ROLE_*).
    content:      non-empty text.
    message_type: "chat" (the default), "tool_call", "tool_result", ... (or pb.MESSAGE_TYPE_*).
    tokens_used:  0..1_000_000_000.
    cost:         exact non-negative decimal (Decimal("0.00015") or "0.00015"); never a float.
    payload:      bytes stored as sent (needs payload_type, e.g. "application/json"); content may
                  then be empty.
    event_time:   when the event happened (aware datetime or seconds since the epoch); omitted,
                  the server's clock. The session's last_event_time becomes the last draft's.
    """

    role: int | str
    content: str
    message_type: int | str | None = None
    tokens_used: int = 0
    cost: Decimal | str | int | None = None
    metadata: Mapping[str, Any] | None = None
    payload: bytes | None = None
    payload_type: str = ""
    event_time: datetime | float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.cost, float):
            raise TypeError("cost must be a Decimal or a decimal string, not a float")
