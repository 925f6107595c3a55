"""Size limits on what a client may store. Each one is a setting (SESSION_MAX_*) and is enforced
with INVALID_ARGUMENT naming the field; the transport limit is derived so that every request
within these limits fits, and anything larger is RESOURCE_EXHAUSTED before it is parsed."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class Limits:
    content_bytes: int = 256 * KIB
    """A message's content, UTF-8 encoded."""
    struct_bytes: int = 64 * KIB
    """Each of metadata, conversation_data and preferences, protobuf-serialized."""
    struct_depth: int = 32
    """Nesting depth of those Structs (the object itself is level 1)."""
    title_length: int = 1000
    """A session title, in characters."""
    summary_length: int = 64 * KIB
    """A memory's conversation_summary, in characters."""
    facts: int = 500
    """Facts per memory."""
    fact_length: int = 2000
    """Characters per fact."""
    page_size: int = 1000
    """Largest page of ListSessions, ListMessages and StreamMessages."""

    @property
    def max_request_bytes(self) -> int:
        """The largest request these limits admit (UTF-8 takes up to 4 bytes a character), plus framing."""
        message = self.content_bytes + self.struct_bytes
        session = 4 * self.title_length + 2 * self.struct_bytes
        memory = 4 * self.summary_length + self.facts * (4 * self.fact_length + 8) + 2 * self.struct_bytes
        return max(message, session, memory) + 64 * KIB


DEFAULT_LIMITS = Limits()
