"""Queries and transactions on the memory record of a session."""

from __future__ import annotations

import json

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.errors import Aborted, AlreadyExists, NotFound
from ..domain.records import Memory, MemoryPatch, NewMemory, SessionRef
from .sessions import get_session
from .tables import MEMORY_COLUMNS, Executor, MemoryRow, fetch_one, memory_from_row, owned

PATCHABLE_FIELDS = frozenset({"conversation_summary", "facts", "preferences", "metadata"})


# The session (owned by the caller) and the memory inserted for it, in one statement: the first
# column says whether the session was found, the rest are NULL when it already had a memory.
CREATE_MEMORY = f"""
WITH s AS (SELECT id, user_id FROM sessions WHERE id = $1 AND {owned(2)}),
inserted AS (
    INSERT INTO memories (session_id, user_id, conversation_summary, facts, preferences, metadata)
    SELECT id, user_id, $3, $4, $5::jsonb, $6::jsonb FROM s
    ON CONFLICT (session_id) DO NOTHING
    RETURNING {MEMORY_COLUMNS}
)
SELECT EXISTS (SELECT 1 FROM s), inserted.* FROM (VALUES (1)) one LEFT JOIN inserted ON true
"""


async def create_memory(db: Executor, new: NewMemory) -> Memory:
    row = await fetch_one(
        db, CREATE_MEMORY, new.session_id, new.owner, new.conversation_summary, new.facts,
        _json(new.preferences), _json(new.metadata),
    )
    assert row is not None
    if not row[0]:
        raise NotFound("session", new.session_id)
    if row[1] is None:
        raise AlreadyExists("memory", new.session_id)
    return memory_from_row(row, 1)


def _json(value: dict[str, object]) -> str:
    return json.dumps(value, separators=(",", ":"))


# The session (owned by the caller) and its memory, if any, in one statement: no row means no
# session, a row of NULL memory columns a session without a memory.
GET_MEMORY = f"""
SELECT s.id, m.* FROM sessions s
LEFT JOIN LATERAL (SELECT {MEMORY_COLUMNS} FROM memories WHERE session_id = s.id) m ON true
WHERE s.id = $1 AND {owned(2, "s.user_id")}
"""
DELETE_MEMORY = f"""
WITH s AS (SELECT id FROM sessions WHERE id = $1 AND {owned(2)}),
deleted AS (DELETE FROM memories WHERE session_id = (SELECT id FROM s) RETURNING session_id)
SELECT EXISTS (SELECT 1 FROM s), EXISTS (SELECT 1 FROM deleted)
"""


async def get_memory(db: Executor, ref: SessionRef) -> Memory:
    """The memory of a session, in one statement; NOT_FOUND names the session when that is what is missing."""
    row = await fetch_one(db, GET_MEMORY, ref.session_id, ref.owner)
    if row is None:
        raise NotFound("session", ref.session_id)
    if row[1] is None:
        raise NotFound("memory", ref.session_id)
    return memory_from_row(row, 1)


LOCKED_MEMORY = f"SELECT {MEMORY_COLUMNS} FROM memories WHERE session_id = $1 AND {owned(2)} FOR UPDATE"


async def _locked_memory(db: AsyncSession, ref: SessionRef) -> Memory:
    """The memory, its row locked for the rest of the transaction."""
    row = await fetch_one(db, LOCKED_MEMORY, ref.session_id, ref.owner)
    if row is None:
        await get_session(db, ref)  # NOT_FOUND names the session when that is what is missing
        raise NotFound("memory", ref.session_id)
    return memory_from_row(row)


async def update_memory(db: AsyncSession, patch: MemoryPatch) -> Memory:
    session_id = patch.memory.session_id
    ref = SessionRef(session_id, patch.memory.owner)
    try:
        current = await _locked_memory(db, ref)
    except NotFound as missing:
        if not (patch.allow_missing and missing.resource_type == "memory"):
            raise
        try:
            return await create_memory(db, _only(patch))
        except AlreadyExists:  # a concurrent call created it first: update that one
            current = await _locked_memory(db, ref)
    if patch.etag and patch.etag != current.etag:
        raise Aborted(f"etag {patch.etag} is stale; the memory is now at {current.etag}", reason="ETAG_MISMATCH")
    values: dict[str, object] = {}
    for name in PATCHABLE_FIELDS & patch.fields:
        values["metadata_" if name == "metadata" else name] = getattr(patch.memory, name)
    if not values:
        return current
    row = await db.scalar(
        update(MemoryRow)
        .where(MemoryRow.session_id == session_id)
        .values(**values, version=MemoryRow.version + 1, update_time=func.now())
        .returning(MemoryRow)
        .execution_options(synchronize_session=False)
    )
    assert row is not None
    return row.to_domain()


def _only(patch: MemoryPatch) -> NewMemory:
    """The memory to create for an allow_missing update: the masked fields, defaults elsewhere."""
    given = patch.memory
    return NewMemory(
        session_id=given.session_id,
        owner=given.owner,
        **{name: getattr(given, name) for name in PATCHABLE_FIELDS & patch.fields},
    )


async def delete_memory(db: Executor, ref: SessionRef) -> None:
    """One statement; NOT_FOUND names the session when that is what is missing."""
    row = await fetch_one(db, DELETE_MEMORY, ref.session_id, ref.owner)
    assert row is not None
    session_found, memory_deleted = row
    if not session_found:
        raise NotFound("session", ref.session_id)
    if not memory_deleted:
        raise NotFound("memory", ref.session_id)
