"""Queries and transactions on the memory record of a session: fixed SQL on the driver's
connection, each function marked with how it runs (units.py)."""

from __future__ import annotations

import asyncpg

from ..domain.errors import Aborted, AlreadyExists, NotFound
from ..domain.records import Memory, MemoryPatch, NewMemory, SessionRef
from . import rows
from .rows import MEMORY_COLUMNS, fetch_one, owned
from .sessions import MAX_ROUNDS
from .units import statement

PATCHABLE_FIELDS = frozenset({"conversation_summary", "facts", "preferences", "metadata"})


# The session (owned by the caller) and the memory inserted for it, in one statement: `found`
# says whether the session was found, the memory's columns are NULL when it already had one.
CREATE_MEMORY = f"""
WITH s AS (SELECT id, user_id FROM sessions WHERE id = $1 AND {owned(2)}),
inserted AS (
    INSERT INTO memories (session_id, user_id, conversation_summary, facts, preferences, metadata)
    SELECT id, user_id, $3, $4, $5::jsonb, $6::jsonb FROM s
    ON CONFLICT (session_id) DO NOTHING
    RETURNING {MEMORY_COLUMNS}
)
SELECT EXISTS (SELECT 1 FROM s) AS found, inserted.* FROM (VALUES (1)) one LEFT JOIN inserted ON true
"""


@statement
async def create_memory(conn: asyncpg.Connection, new: NewMemory) -> Memory:
    row = await fetch_one(
        conn, CREATE_MEMORY, new.session_id, new.owner, new.conversation_summary, new.facts,
        rows.jsonb(new.preferences), rows.jsonb(new.metadata),
    )
    assert row is not None
    if not row["found"]:
        raise NotFound("session", new.session_id)
    if row["session_id"] is None:
        raise AlreadyExists("memory", new.session_id)
    return rows.memory(row)


# The session (owned by the caller) and its memory, if any, in one statement: no row means no
# session, a row of NULL memory columns a session without a memory.
GET_MEMORY = f"""
SELECT s.id AS found, m.* FROM sessions s
LEFT JOIN LATERAL (SELECT {MEMORY_COLUMNS} FROM memories WHERE session_id = s.id) m ON true
WHERE s.id = $1 AND {owned(2, "s.user_id")}
"""
DELETE_MEMORY = f"""
WITH s AS (SELECT id FROM sessions WHERE id = $1 AND {owned(2)}),
deleted AS (DELETE FROM memories WHERE session_id = (SELECT id FROM s) RETURNING session_id)
SELECT EXISTS (SELECT 1 FROM s) AS found, EXISTS (SELECT 1 FROM deleted) AS deleted
"""


@statement
async def get_memory(conn: asyncpg.Connection, ref: SessionRef) -> Memory:
    """NOT_FOUND names the session when that is what is missing."""
    row = await fetch_one(conn, GET_MEMORY, ref.session_id, ref.owner)
    if row is None:
        raise NotFound("session", ref.session_id)
    if row["session_id"] is None:
        raise NotFound("memory", ref.session_id)
    return rows.memory(row)


# One statement applies a patch (the fields it names, $3/$5/$7/$9 flag which) while the etag still
# matches; when no row comes back, update_memory reads the memory to say why (or, with
# allow_missing, creates it).
UPDATE_MEMORY = f"""
UPDATE memories SET
    conversation_summary = CASE WHEN $3 THEN $4 ELSE conversation_summary END,
    facts = CASE WHEN $5 THEN $6::text[] ELSE facts END,
    preferences = CASE WHEN $7 THEN $8::jsonb ELSE preferences END,
    metadata = CASE WHEN $9 THEN $10::jsonb ELSE metadata END,
    version = version + 1,
    update_time = now()
WHERE session_id = $1 AND {owned(2)} AND {rows.etag_matches(11, 12)} AND ($3 OR $5 OR $7 OR $9)
RETURNING {MEMORY_COLUMNS}
"""


@statement
async def update_memory(conn: asyncpg.Connection, patch: MemoryPatch) -> Memory:
    given = patch.memory
    ref = SessionRef(given.session_id, given.owner)
    fields = PATCHABLE_FIELDS & patch.fields
    version, micros = rows.etag_parts(patch.etag)
    for _ in range(MAX_ROUNDS):  # again only when a concurrent call created or changed it in between
        row = await fetch_one(
            conn, UPDATE_MEMORY, ref.session_id, ref.owner,
            "conversation_summary" in fields, given.conversation_summary,
            "facts" in fields, given.facts,
            "preferences" in fields, rows.jsonb(given.preferences),
            "metadata" in fields, rows.jsonb(given.metadata),
            version, micros,
        )
        if row is not None:
            return rows.memory(row)
        try:
            current = await get_memory(conn, ref)
        except NotFound as missing:
            if not (patch.allow_missing and missing.resource_type == "memory"):
                raise
            try:
                return await create_memory(conn, _only(patch))
            except AlreadyExists:  # a concurrent call created it first: update that one
                continue
        if patch.etag and patch.etag != current.etag:
            raise Aborted(f"etag {patch.etag} is stale; the memory is now at {current.etag}", reason="ETAG_MISMATCH")
        if not fields:
            return current
        # It is there and at the etag now: a concurrent call created or changed it in between. Again.
    raise Aborted("the memory kept changing while it was being updated; retry", reason="CONCURRENT_UPDATE")


def _only(patch: MemoryPatch) -> NewMemory:
    """The memory to create for an allow_missing update: the masked fields, defaults elsewhere."""
    given = patch.memory
    return NewMemory(
        session_id=given.session_id,
        owner=given.owner,
        **{name: getattr(given, name) for name in PATCHABLE_FIELDS & patch.fields},
    )


@statement
async def delete_memory(conn: asyncpg.Connection, ref: SessionRef) -> None:
    """NOT_FOUND names the session when that is what is missing."""
    row = await fetch_one(conn, DELETE_MEMORY, ref.session_id, ref.owner)
    assert row is not None
    if not row["found"]:
        raise NotFound("session", ref.session_id)
    if not row["deleted"]:
        raise NotFound("memory", ref.session_id)
