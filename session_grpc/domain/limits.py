"""Size limits on what a client may store. Each one is a setting (SESSION_MAX_*) and is enforced
with INVALID_ARGUMENT naming the field; the transport limit is derived so that every request
within these limits fits, and anything larger is RESOURCE_EXHAUSTED before it is parsed.

Whatever the server accepts it must be able to give back: the largest memory, session and message
these limits admit (in 4-byte characters) must fit the 4 MiB that stock gRPC clients (Python, Go,
grpcurl) receive by default, or a client stores a memory it can never read. Limits that break
this are refused at start-up. (500 facts of 2,000 characters made a 4.26 MB memory; a fact is now
at most 1,000 characters.)"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

DEFAULT_CLIENT_RECEIVE_BYTES = 4 * MIB
"""The receive limit of gRPC clients left at their defaults: every resource must fit in it."""

MESSAGE_ENVELOPE_BYTES = 2 * KIB
"""What the server adds to each message of a batch in its answer beyond what the request carried:
message_id, session_id, user_id (up to 255 characters of 4 bytes), sequence, create_time, tags."""

RESOURCE_OVERHEAD_BYTES = 8 * KIB
"""Room for everything around the limited fields: ids, user_id (255 characters), app_name (128
ASCII characters), timestamps,
counters, cost, etag, field tags and lengths, the response that wraps the resource."""

STATE_PROTO_FACTOR = 6
"""How much larger than its JSON text a state can be as a protobuf Struct. States changed by deltas
(a session's conversation_data, user and app state) are limited by the JSON text the database
merges (struct_bytes), the one size a statement can measure; the worst case is a list of one-digit
numbers: 2 bytes of JSON each, 11 bytes of Struct (a tag, a length, a double). 5.5, rounded up."""


@dataclass(frozen=True)
class Limits:
    content_bytes: int = 256 * KIB
    """A message's content, UTF-8 encoded."""
    struct_bytes: int = 64 * KIB
    """Each of metadata, conversation_data and preferences, protobuf-serialized; also each
    StateDelta's `set` (serialized) and `delete` (the keys' UTF-8 bytes), and the JSON text of a
    state a delta produces (session, user or app state)."""
    struct_depth: int = 32
    """Nesting depth of those Structs (the object itself is level 1)."""
    title_length: int = 1000
    """A session title, in characters."""
    summary_length: int = 64 * KIB
    """A memory's conversation_summary, in characters."""
    facts: int = 500
    """Facts per memory."""
    fact_length: int = 1000
    """Characters per fact."""
    page_size: int = 1000
    """Largest page of ListSessions, ListMessages and StreamMessages."""
    search_query_length: int = 256
    """A SearchMessages query, in characters."""
    search_page_size: int = 100
    """Largest page of SearchMessages (each result's snippet is made by parsing its content)."""
    payload_bytes: int = MIB
    """A message's payload (AddMessageRequest.payload), bytes as sent."""
    batch_messages: int = 100
    """Messages in one AddMessages call. The batch as a whole must also fit the request size limit
    (max_request_bytes), so a batch of large messages may hold fewer."""
    fork_messages: int = 100_000
    """Messages one ForkSession may copy: the fork is one statement, and this bounds its work."""

    def __post_init__(self) -> None:
        if self.largest_resource_bytes > DEFAULT_CLIENT_RECEIVE_BYTES:
            raise ValueError(
                f"these size limits admit a resource of {self.largest_resource_bytes} bytes (memory "
                f"{self.largest_memory_bytes}, session with its user and app state {self.largest_session_with_state_bytes}, message "
                f"{self.largest_message_bytes}), over the 4 MiB ({DEFAULT_CLIENT_RECEIVE_BYTES} bytes) a default "
                "gRPC client receives: it could be stored and never read back; lower SESSION_MAX_*"
            )
        if self.largest_batch_response_bytes > DEFAULT_CLIENT_RECEIVE_BYTES:
            raise ValueError(
                f"these size limits admit an AddMessages answer of {self.largest_batch_response_bytes} bytes (a "
                f"request of {self.max_request_bytes} bytes and {self.batch_messages} messages), over the 4 MiB "
                f"({DEFAULT_CLIENT_RECEIVE_BYTES} bytes) a default gRPC client receives; lower "
                "SESSION_MAX_BATCH_MESSAGES or SESSION_MAX_*"
            )

    @property
    def largest_message_bytes(self) -> int:
        """The largest Message these limits admit, serialized (content and payload are counted in bytes)."""
        return self.content_bytes + self.struct_bytes + self.payload_bytes + RESOURCE_OVERHEAD_BYTES

    @property
    def largest_state_bytes(self) -> int:
        """The largest state a delta can leave (struct_bytes of JSON text), as a protobuf Struct."""
        return STATE_PROTO_FACTOR * self.struct_bytes

    @property
    def largest_session_bytes(self) -> int:
        """The largest Session, serialized (UTF-8 takes up to 4 bytes a character); deltas can grow
        its conversation_data to the largest state."""
        return 4 * self.title_length + self.struct_bytes + self.largest_state_bytes + RESOURCE_OVERHEAD_BYTES

    @property
    def largest_session_with_state_bytes(self) -> int:
        """GetSession with include_scoped_state (and UpdateState): the session, its user's state
        and its app's state."""
        return self.largest_session_bytes + 2 * self.largest_state_bytes

    @property
    def largest_state_delta_bytes(self) -> int:
        """One StateDelta a request may carry: `set` and `delete` of struct_bytes each."""
        return 2 * self.struct_bytes + RESOURCE_OVERHEAD_BYTES

    @property
    def largest_add_message_bytes(self) -> int:
        """The largest AddMessage request: a message and a delta for each of the three scopes."""
        return self.largest_message_bytes + 3 * self.largest_state_delta_bytes

    @property
    def largest_memory_bytes(self) -> int:
        """The largest Memory, serialized: each fact adds a tag and a length of up to 4 bytes."""
        facts = self.facts * (4 * self.fact_length + 5)
        return 4 * self.summary_length + facts + 2 * self.struct_bytes + RESOURCE_OVERHEAD_BYTES

    @property
    def largest_resource_bytes(self) -> int:
        return max(self.largest_message_bytes, self.largest_session_with_state_bytes, self.largest_memory_bytes)

    @property
    def largest_batch_response_bytes(self) -> int:
        """The largest AddMessages answer: what its request carried (the transport limit bounds the
        batch as a whole) plus what the server adds to each message."""
        return self.max_request_bytes + self.batch_messages * MESSAGE_ENVELOPE_BYTES

    @property
    def max_request_bytes(self) -> int:
        """The largest request these limits admit, plus framing (a request carries one resource,
        or a message with state deltas)."""
        return max(self.largest_resource_bytes, self.largest_add_message_bytes) + 64 * KIB


DEFAULT_LIMITS = Limits()
