"""The columns the storage statements select, and one mapper per record from a row of them.

Every statement is fixed SQL on the driver's connection: building and compiling an ORM statement
per call costs more than the database work of a small call, and asyncpg prepares each fixed
statement once per connection. Rows are read by column name, so a statement may select more
(a count, a flag) beside a record's columns without offsets to keep in step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from ..domain import records

SESSION_COLUMNS = (
    "id, user_id, status, title, conversation_data, metadata, message_count, total_tokens, total_cost, "
    "create_time, update_time, last_activity_time, end_time, version, app_name, last_event_time, "
    "forked_from_session_id, forked_at_sequence"
)
# event_time is NULL in the rows stored before event times existed: their event is their storing.
MESSAGE_COLUMNS = (
    "id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost, metadata, create_time, "
    "payload, payload_type, coalesce(event_time, create_time) AS event_time"
)
MEMORY_COLUMNS = (
    "session_id, user_id, conversation_summary, facts, preferences, metadata, create_time, update_time, version"
)

Row = Mapping[str, Any]

_STATUSES = {status.value: status for status in records.SessionStatus}
_ROLES = {role.value: role for role in records.Role}
_MESSAGE_TYPES = {kind.value: kind for kind in records.MessageType}


def owned(param: int, column: str = "user_id") -> str:
    """The predicate that keeps a statement to the sessions of the call's owner, `$param`
    (records.Owner: NULL for any). It always stands beside a key lookup (`id = $1`), so the
    plan is the key's: the owner is a filter on the one row found, not a second query."""
    return f"(${param}::text IS NULL OR {column} = ${param})"


_ETAG = re.compile(r'"([0-9a-f]{1,16})-([0-9]{1,18})"')


def etag_parts(etag: str) -> tuple[int | None, int]:
    """The version and creation microseconds an etag names (records.etag_of), for etag_matches:
    (None, 0) without one, and a version no row has when it is not an etag this service made."""
    if not etag:
        return None, 0
    match = _ETAG.fullmatch(etag)
    return (int(match[2]), int(match[1], 16)) if match else (-1, 0)


def etag_matches(version: int, micros: int) -> str:
    """The predicate that the row is still at the etag `$version` / `$micros` (etag_parts; NULL
    version: no etag given). The creation time is compared to the microsecond the etag carries."""
    return (
        f"(${version}::bigint IS NULL OR (version = ${version}"
        f" AND abs(extract(epoch FROM create_time) * 1000000 - ${micros}) < 2))"
    )


def session(row: Row) -> records.Session:
    """A Session from a row with SESSION_COLUMNS."""
    return records.Session(
        str(row["id"]), row["user_id"], _STATUSES[row["status"]], row["title"], row["conversation_data"],
        row["metadata"], row["message_count"], row["total_tokens"], row["total_cost"], row["create_time"],
        row["update_time"], row["last_activity_time"], row["end_time"], row["version"], row["app_name"],
        row["last_event_time"], _text(row["forked_from_session_id"]), row["forked_at_sequence"],
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def message(row: Row) -> records.Message:
    """A Message from a row with MESSAGE_COLUMNS."""
    return records.Message(
        str(row["id"]), str(row["session_id"]), row["user_id"], row["sequence"], _ROLES[row["role"]],
        _MESSAGE_TYPES[row["message_type"]], row["content"], row["tokens_used"], row["cost"], row["metadata"],
        row["create_time"], row["payload"] or b"", row["payload_type"] or "", row["event_time"],
    )


def memory(row: Row) -> records.Memory:
    """A Memory from a row with MEMORY_COLUMNS."""
    return records.Memory(
        str(row["session_id"]), row["user_id"], row["conversation_summary"], list(row["facts"]),
        row["preferences"], row["metadata"], row["create_time"], row["update_time"], row["version"],
    )


def jsonb(value: dict[str, Any]) -> str:
    """A JSON object as a jsonb parameter (the pool's connections encode jsonb from text)."""
    return json.dumps(value, separators=(",", ":")) if value else "{}"


async def fetch(conn: asyncpg.Connection, statement: str, *params: Any) -> Sequence[Row]:
    return await conn.fetch(statement, *params)


async def fetch_one(conn: asyncpg.Connection, statement: str, *params: Any) -> Row | None:
    return await conn.fetchrow(statement, *params)


async def fetch_planned_for_values(conn: asyncpg.Connection, statement: str, *params: Any) -> Sequence[Row]:
    """`statement` with a plan made for these parameter values (a custom plan, never a cached
    generic one): a freshly prepared statement each time. Without asyncpg's statement cache (behind
    pgbouncer in transaction mode, SESSION_DB_PGBOUNCER) asyncpg already parses an unnamed statement
    in the message that runs it, which PostgreSQL plans for its values too, and a named statement
    would be parsed on one server connection and run on another (so it is not used there)."""
    if getattr(conn, "_stmt_cache_enabled", True):  # asyncpg's own flag: statement_cache_size > 0
        prepared = await conn.prepare(statement)
        return await prepared.fetch(*params)
    return await conn.fetch(statement, *params)
