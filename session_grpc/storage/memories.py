"""Queries and transactions on the memory record of a session."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ..domain.errors import Aborted, AlreadyExists, NotFound
from ..domain.records import Memory, MemoryPatch, NewMemory
from .sessions import get_session
from .tables import MemoryRow

PATCHABLE_FIELDS = frozenset({"conversation_summary", "facts", "preferences", "metadata"})


async def create_memory(db: AsyncSession, new: NewMemory) -> Memory:
    session = await get_session(db, new.session_id)
    row = await db.scalar(
        insert(MemoryRow)
        .values(
            session_id=session.session_id,
            user_id=session.user_id,
            conversation_summary=new.conversation_summary,
            facts=new.facts,
            preferences=new.preferences,
            metadata_=new.metadata,
        )
        .on_conflict_do_nothing(index_elements=[MemoryRow.session_id])
        .returning(MemoryRow)
    )
    if row is None:
        raise AlreadyExists("memory", new.session_id)
    return row.to_domain()


async def get_memory(db: AsyncSession, session_id: str, *, for_update: bool = False) -> Memory:
    query = select(MemoryRow).where(MemoryRow.session_id == session_id)
    if for_update:
        query = query.with_for_update()
    row = await db.scalar(query)
    if row is None:
        await get_session(db, session_id)  # NOT_FOUND names the session when that is what is missing
        raise NotFound("memory", session_id)
    return row.to_domain()


async def update_memory(db: AsyncSession, patch: MemoryPatch) -> Memory:
    session_id = patch.memory.session_id
    try:
        current = await get_memory(db, session_id, for_update=True)
    except NotFound as missing:
        if not (patch.allow_missing and missing.resource_type == "memory"):
            raise
        try:
            return await create_memory(db, _only(patch))
        except AlreadyExists:  # a concurrent call created it first: update that one
            current = await get_memory(db, session_id, for_update=True)
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
        **{name: getattr(given, name) for name in PATCHABLE_FIELDS & patch.fields},
    )


async def delete_memory(db: AsyncSession, session_id: str) -> None:
    deleted = await db.scalar(
        delete(MemoryRow).where(MemoryRow.session_id == session_id).returning(MemoryRow.session_id)
    )
    if deleted is None:
        await get_session(db, session_id)
        raise NotFound("memory", session_id)
