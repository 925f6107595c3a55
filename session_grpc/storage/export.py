"""ExportUserData and `session-grpc export` / `import`: a user's data as JSON Lines (the format is
docs/export-format.md; FORMAT and VERSION name it in the first line).

Export pages through the user's sessions (keyset: creation time, id) and each session's messages
(keyset: sequence), one statement per page, never holding the whole user in memory, like
StreamMessages. PostgreSQL writes each line (`jsonb_build_object(...)::text`): JSON values of
sessions, states and metadata go out exactly as stored (64-bit integers, decimals of any length),
costs as the stored NUMERIC's text, times in UTC to the microsecond, payloads in base64. The
output is a function of the stored rows alone (no export time, fixed orders), so an import into
another database exported again gives the same bytes. Export is not one snapshot: pages are read
one after another, so writes landing meanwhile may show in some pages and not others (suspend the
user for an exact copy).

Import runs in one transaction through this module: lines go to PostgreSQL in batches as JSON
(`jsonb_array_elements`), never re-encoded by Python, so what was exported is what is stored. It
restores the same ids, sequences, totals, versions and times; it refuses (ALREADY_EXISTS, nothing
written) when any session, message, memory, user state or budget it carries already exists.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg

from ..domain.errors import AlreadyExists, InvalidArgument
from .database import Database
from .units import statement, transaction

FORMAT = "session-grpc-user-data"
VERSION = 1
SESSION_PAGE = 100
MESSAGE_PAGE = 500
IMPORT_BATCH = 500


def _time(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


_SESSION = f"""jsonb_build_object(
    'type', 'session', 'id', s.id, 'app_name', s.app_name, 'title', s.title, 'status', s.status,
    'conversation_data', s.conversation_data, 'metadata', s.metadata, 'message_count', s.message_count,
    'total_tokens', s.total_tokens, 'total_cost', s.total_cost::text, 'create_time', {_time("s.create_time")},
    'update_time', {_time("s.update_time")}, 'last_activity_time', {_time("s.last_activity_time")},
    'end_time', {_time("s.end_time")}, 'last_event_time', {_time("s.last_event_time")}, 'version', s.version,
    'request_id', s.request_id, 'forked_from_session_id', s.forked_from_session_id,
    'forked_at_sequence', s.forked_at_sequence)::text"""
_MESSAGE = f"""jsonb_build_object(
    'type', 'message', 'id', m.id, 'session_id', m.session_id, 'sequence', m.sequence, 'role', m.role,
    'message_type', m.message_type, 'content', m.content, 'tokens_used', m.tokens_used, 'cost', m.cost::text,
    'metadata', m.metadata, 'create_time', {_time("m.create_time")}, 'request_id', m.request_id,
    'payload', translate(encode(m.payload, 'base64'), E'\\n', ''), 'payload_type', m.payload_type,
    'event_time', {_time("m.event_time")})::text"""

STATEMENTS = {
    "header": "SELECT jsonb_build_object('type', 'header', 'format', $2::text, 'version', $3::int, 'user_id', $1::text)::text",
    "user_states": f"""
        SELECT jsonb_build_object('type', 'user_state', 'app_name', app_name, 'state', state,
                                  'create_time', {_time("create_time")}, 'update_time', {_time("update_time")})::text AS line
        FROM user_states WHERE user_id = $1 ORDER BY app_name""",
    "budget": f"""
        SELECT jsonb_build_object('type', 'budget', 'daily_tokens', daily_tokens, 'monthly_tokens', monthly_tokens,
                                  'daily_cost', daily_cost::text, 'monthly_cost', monthly_cost::text, 'soft', soft,
                                  'day', day::text, 'day_tokens', day_tokens, 'day_cost', day_cost::text,
                                  'month', month::text, 'month_tokens', month_tokens, 'month_cost', month_cost::text,
                                  'create_time', {_time("create_time")}, 'update_time', {_time("update_time")})::text AS line
        FROM budgets WHERE user_id = $1 AND app_name = ''""",
    # $2, $3: the last session of the page before (NULL before the first page).
    "sessions": f"""
        SELECT s.id::text AS id, s.create_time, {_SESSION} AS line FROM sessions s
        WHERE s.user_id = $1 AND ($2::timestamptz IS NULL OR (s.create_time, s.id) > ($2::timestamptz, $3::uuid))
        ORDER BY s.create_time, s.id LIMIT $4""",
    # What hangs off the page's sessions besides messages: memory, rewinds, the request ids they removed,
    # applied UpdateState request ids.
    "extras": f"""
        SELECT x.session_id::text AS session_id, x.line FROM (
            SELECT session_id, 1 AS kind, '' AS k, jsonb_build_object(
                'type', 'memory', 'session_id', session_id, 'conversation_summary', conversation_summary,
                'facts', to_jsonb(facts), 'preferences', preferences, 'metadata', metadata,
                'create_time', {_time("create_time")}, 'update_time', {_time("update_time")}, 'version', version)::text AS line
            FROM memories WHERE session_id = ANY($1::uuid[])
            UNION ALL
            SELECT session_id, 2, request_id::text, jsonb_build_object(
                'type', 'session_rewind', 'session_id', session_id, 'request_id', request_id,
                'last_sequence', last_sequence, 'removed_count', removed_count,
                'create_time', {_time("create_time")})::text
            FROM session_rewinds WHERE session_id = ANY($1::uuid[])
            UNION ALL
            SELECT session_id, 3, request_id::text, jsonb_build_object(
                'type', 'rewound_request', 'session_id', session_id, 'request_id', request_id)::text
            FROM rewound_requests WHERE session_id = ANY($1::uuid[])
            UNION ALL
            SELECT session_id, 4, request_id::text, jsonb_build_object(
                'type', 'state_update', 'session_id', session_id, 'request_id', request_id,
                'create_time', {_time("create_time")})::text
            FROM state_updates WHERE session_id = ANY($1::uuid[])
        ) x ORDER BY x.session_id, x.kind, x.k""",
    "messages": f"""
        SELECT m.sequence, {_MESSAGE} AS line FROM messages m
        WHERE m.session_id = $1 AND m.sequence > $2 ORDER BY m.sequence LIMIT $3""",
    # Derived, for the reader (import skips it: usage is read from the messages): per app and UTC month.
    "usage": """
        SELECT jsonb_build_object('type', 'usage', 'app_name', s.app_name,
                                  'month', to_char(date_trunc('month', m.create_time AT TIME ZONE 'UTC'), 'YYYY-MM'),
                                  'message_count', count(*), 'total_tokens', sum(m.tokens_used),
                                  'total_cost', sum(m.cost)::text)::text AS line
        FROM messages m JOIN sessions s ON s.id = m.session_id
        WHERE m.user_id = $1 AND s.user_id = $1
        GROUP BY s.app_name, date_trunc('month', m.create_time AT TIME ZONE 'UTC')
        ORDER BY s.app_name, date_trunc('month', m.create_time AT TIME ZONE 'UTC')""",
    "end": "SELECT jsonb_build_object('type', 'end', 'record_count', $1::bigint)::text",
    # Import: one batch of one kind of record, $1 a JSON array of exported lines, $2 the user.
    "import_session": """
        INSERT INTO sessions (id, user_id, app_name, title, status, conversation_data, metadata, message_count,
                              total_tokens, total_cost, create_time, update_time, last_activity_time, end_time,
                              last_event_time, version, request_id, forked_from_session_id, forked_at_sequence)
        SELECT (r->>'id')::uuid, $2, r->>'app_name', r->>'title', r->>'status', r->'conversation_data', r->'metadata',
               (r->>'message_count')::bigint, (r->>'total_tokens')::bigint, (r->>'total_cost')::numeric,
               (r->>'create_time')::timestamptz, (r->>'update_time')::timestamptz,
               (r->>'last_activity_time')::timestamptz, (r->>'end_time')::timestamptz,
               (r->>'last_event_time')::timestamptz, (r->>'version')::bigint, (r->>'request_id')::uuid,
               (r->>'forked_from_session_id')::uuid, (r->>'forked_at_sequence')::bigint
        FROM jsonb_array_elements($1::jsonb) r""",
    "import_message": """
        INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost,
                              metadata, create_time, request_id, payload, payload_type, event_time)
        SELECT (r->>'id')::uuid, (r->>'session_id')::uuid, $2, (r->>'sequence')::bigint, r->>'role',
               r->>'message_type', r->>'content', (r->>'tokens_used')::bigint, (r->>'cost')::numeric, r->'metadata',
               (r->>'create_time')::timestamptz, (r->>'request_id')::uuid, decode(r->>'payload', 'base64'),
               r->>'payload_type', (r->>'event_time')::timestamptz
        FROM jsonb_array_elements($1::jsonb) r""",
    "import_memory": """
        INSERT INTO memories (session_id, user_id, conversation_summary, facts, preferences, metadata, create_time,
                              update_time, version)
        SELECT (r->>'session_id')::uuid, $2, r->>'conversation_summary',
               ARRAY(SELECT jsonb_array_elements_text(r->'facts')), r->'preferences', r->'metadata',
               (r->>'create_time')::timestamptz, (r->>'update_time')::timestamptz, (r->>'version')::bigint
        FROM jsonb_array_elements($1::jsonb) r""",
    "import_session_rewind": """
        INSERT INTO session_rewinds (session_id, request_id, last_sequence, removed_count, create_time)
        SELECT (r->>'session_id')::uuid, (r->>'request_id')::uuid, (r->>'last_sequence')::bigint,
               (r->>'removed_count')::bigint, (r->>'create_time')::timestamptz
        FROM jsonb_array_elements($1::jsonb) r WHERE $2::text IS NOT NULL""",
    "import_rewound_request": """
        INSERT INTO rewound_requests (session_id, request_id)
        SELECT (r->>'session_id')::uuid, (r->>'request_id')::uuid
        FROM jsonb_array_elements($1::jsonb) r WHERE $2::text IS NOT NULL""",
    "import_state_update": """
        INSERT INTO state_updates (session_id, request_id, create_time)
        SELECT (r->>'session_id')::uuid, (r->>'request_id')::uuid, (r->>'create_time')::timestamptz
        FROM jsonb_array_elements($1::jsonb) r WHERE $2::text IS NOT NULL""",
    "import_user_state": """
        INSERT INTO user_states (app_name, user_id, state, create_time, update_time)
        SELECT r->>'app_name', $2, r->'state', (r->>'create_time')::timestamptz, (r->>'update_time')::timestamptz
        FROM jsonb_array_elements($1::jsonb) r""",
    "import_budget": """
        INSERT INTO budgets (user_id, app_name, daily_tokens, monthly_tokens, daily_cost, monthly_cost, soft, day,
                             day_tokens, day_cost, month, month_tokens, month_cost, create_time, update_time)
        SELECT $2, '', (r->>'daily_tokens')::bigint, (r->>'monthly_tokens')::bigint, (r->>'daily_cost')::numeric,
               (r->>'monthly_cost')::numeric, (r->>'soft')::boolean, (r->>'day')::date, (r->>'day_tokens')::bigint,
               (r->>'day_cost')::numeric, (r->>'month')::date, (r->>'month_tokens')::bigint,
               (r->>'month_cost')::numeric, (r->>'create_time')::timestamptz, (r->>'update_time')::timestamptz
        FROM jsonb_array_elements($1::jsonb) r""",
}

IMPORTED = ("session", "message", "memory", "session_rewind", "rewound_request", "state_update", "user_state", "budget")
"""The record types import stores, each by STATEMENTS["import_<type>"]; "usage" is derived and skipped."""
_SESSION_BOUND = {"message", "memory", "session_rewind", "rewound_request", "state_update"}
_FIRST_SESSION = (None, "00000000-0000-0000-0000-000000000000")


# -- export -----------------------------------------------------------------------------------


@statement
async def _lines(conn: asyncpg.Connection, name: str, *params: object) -> list[str]:
    return [row["line"] for row in await conn.fetch(STATEMENTS[name], *params)]


@statement
async def _value(conn: asyncpg.Connection, name: str, *params: object) -> str:
    return str(await conn.fetchval(STATEMENTS[name], *params))


@statement
async def _session_page(conn: asyncpg.Connection, user_id: str, after: tuple[object, str], limit: int):
    return await conn.fetch(STATEMENTS["sessions"], user_id, after[0], after[1], limit)


@statement
async def _message_page(conn: asyncpg.Connection, session_id: str, after: int, limit: int):
    return await conn.fetch(STATEMENTS["messages"], session_id, after, limit)


@statement
async def _extras(conn: asyncpg.Connection, session_ids: list[str]):
    return await conn.fetch(STATEMENTS["extras"], session_ids)


async def export_user(db: Database, user_id: str) -> AsyncIterator[list[str]]:
    """The user's data as JSON Lines (without line ends), a page of lines at a time: a header, the
    user's state in each app, their budget, each session followed by what hangs off it and its
    messages, the usage per app and month, and an end line counting the records."""
    records = 0
    yield [await db.run(_value, "header", user_id, FORMAT, VERSION)]
    first = await db.run(_lines, "user_states", user_id) + await db.run(_lines, "budget", user_id)
    records += len(first)
    if first:
        yield first
    after: tuple[object, str] = _FIRST_SESSION
    while True:
        page = await db.run(_session_page, user_id, after, SESSION_PAGE)
        if not page:
            break
        after = (page[-1]["create_time"], page[-1]["id"])
        extras: dict[str, list[str]] = {}
        for row in await db.run(_extras, [row["id"] for row in page]):
            extras.setdefault(row["session_id"], []).append(row["line"])
        for session in page:
            lines = [session["line"], *extras.get(session["id"], [])]
            sequence = 0
            while True:
                messages = await db.run(_message_page, session["id"], sequence, MESSAGE_PAGE)
                lines.extend(row["line"] for row in messages)
                records += len(lines)
                yield lines
                lines = []
                if len(messages) < MESSAGE_PAGE:
                    break
                sequence = messages[-1]["sequence"]
        if len(page) < SESSION_PAGE:
            break
    usage = await db.run(_lines, "usage", user_id)
    records += len(usage)
    if usage:
        yield usage
    yield [await db.run(_value, "end", records)]


# -- import -----------------------------------------------------------------------------------


@dataclass
class Imported:
    """What an import stored: the user, and how many records of each type."""

    user_id: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def _bad(line_number: int, description: str) -> InvalidArgument:
    return InvalidArgument.single(f"line {line_number}", description)


def _parse(line_number: int, text: str) -> dict[str, object]:
    try:
        record = json.loads(text, parse_float=str, parse_int=str, parse_constant=str)
    except ValueError as error:
        raise _bad(line_number, f"not JSON: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise _bad(line_number, 'must be a JSON object with a "type"')
    return record


class _Batches:
    """Consecutive lines of one type, sent together."""

    def __init__(self, conn: asyncpg.Connection, user_id: str, imported: Imported) -> None:
        self.conn, self.user_id, self.imported = conn, user_id, imported
        self.kind = ""
        self.lines: list[str] = []
        self.first_line = 0

    async def add(self, kind: str, text: str, line_number: int) -> None:
        if kind != self.kind or len(self.lines) >= IMPORT_BATCH:
            await self.flush()
            self.kind, self.first_line = kind, line_number
        self.lines.append(text)

    async def flush(self) -> None:
        if not self.lines:
            return
        try:
            await self.conn.execute(STATEMENTS[f"import_{self.kind}"], "[" + ",".join(self.lines) + "]", self.user_id)
        except asyncpg.UniqueViolationError as error:
            raise AlreadyExists(self.kind, _conflict(error)) from None
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as error:
            last = self.first_line + len(self.lines) - 1
            raise _bad(self.first_line, f"a {self.kind} record in lines {self.first_line}-{last} "
                                        f"cannot be stored: {error}") from None
        self.imported.counts[self.kind] = self.imported.counts.get(self.kind, 0) + len(self.lines)
        self.lines = []


def _conflict(error: asyncpg.UniqueViolationError) -> str:
    detail = getattr(error, "detail", None) or str(error)
    return f"{detail} (import never overwrites: erase the user first, or import into another database)"


@transaction
async def import_user(conn: asyncpg.Connection, open_lines: Callable[[], Iterable[str]]) -> Imported:
    """Store an export (the lines `open_lines()` yields; called again if the transaction is
    retried) in one transaction: everything or, on any refusal, nothing."""
    imported = Imported()
    batches: _Batches | None = None
    sessions: set[str] = set()
    records = 0
    ended = False
    for number, text in _numbered(open_lines()):
        record = _parse(number, text)
        kind = record["type"]
        if number == 1:
            if kind != "header" or record.get("format") != FORMAT:
                raise _bad(1, f'must be the header: {{"type": "header", "format": "{FORMAT}", ...}}')
            if record.get("version") != str(VERSION):
                raise _bad(1, f"format version {record.get('version')} is not one this server reads ({VERSION})")
            user_id = record.get("user_id")
            if not isinstance(user_id, str) or not user_id or len(user_id) > 255 or "\x00" in user_id:
                raise _bad(1, "user_id must be 1-255 characters")
            imported.user_id = user_id
            batches = _Batches(conn, user_id, imported)
            continue
        if batches is None or ended:
            raise _bad(number, "records must come after the header and before the end line")
        if kind == "end":
            if record.get("record_count") != str(records):
                raise _bad(number, f"the end line counts {record.get('record_count')} records, the file has {records}")
            ended = True
            continue
        records += 1
        if kind == "usage":
            continue
        if kind not in IMPORTED:
            raise _bad(number, f"unknown record type {kind!r}")
        if kind == "session":
            sessions.add(str(record.get("id", "")).lower())
        elif kind in _SESSION_BOUND and str(record.get("session_id", "")).lower() not in sessions:
            raise _bad(number, f"a {kind} of a session not in the file before it")
        await batches.add(kind, text, number)
    if batches is None:
        raise _bad(1, "the file is empty")
    if not ended:
        raise _bad(records + 2, 'the file ends without its end line ({"type": "end", ...}): it was cut short')
    await batches.flush()
    return imported


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    number = 0
    for line in lines:
        text = line.rstrip("\r\n")
        number += 1
        if not text.strip():
            raise _bad(number, "empty line")
        yield number, text
