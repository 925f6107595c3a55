"""messages partitioned by hash of session_id, when SESSION_MESSAGE_PARTITIONS says so

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29 23:30:00

With SESSION_MESSAGE_PARTITIONS=N (2 to 1024; 16 is what docs/scaling.md measured) when this
migration runs, `messages` becomes a table PARTITION BY HASH (session_id) with N partitions
(messages_p00 ...). Unset or 0 (the default) it does nothing: on the machine it was measured on,
partitions cost the hot reads PostgreSQL CPU (a plan made for each call) and give nothing until the
table is large (docs/scaling.md, "Partitioned messages": when to take the step, and how on a
database already past this revision). Every call about a session names its session_id, so each of
its statements reads or writes one partition (tests/test_distribution.py checks the plans).
Why by session and not by time: docs/scaling.md.

A unique index on a partitioned table must contain the partition key. Both uniqueness rules do:
(session_id, sequence) and (session_id, request_id). The primary key was `id` alone: it becomes
(session_id, id). Message ids are UUIDs the service makes (uuid4), not a sequence, and no table
refers to a message by its id, so nothing else changes; the per-session sequence lives on the
session row (message_count), which the migration does not touch.

The table is rebuilt, not altered (PostgreSQL cannot partition a table in place), by reading the
old one's definition from the catalog rather than restating it, so columns, checks, indexes,
foreign keys and triggers added by any earlier migration come along:

1. writes to messages are locked out (SHARE: reads go on) for the whole migration;
2. a partitioned table LIKE the old one (columns, defaults, checks) and its partitions;
3. the rows copied in batches of BATCH in (session_id, sequence) order, so each session's
   messages end up together in its partition; no index or trigger yet (the copy fires none: no
   change-feed entries, no search vectors parsed again);
4. the old table dropped (taking ACCESS EXCLUSIVE: reads wait from here), the new one renamed;
   then its indexes, primary key, foreign keys and triggers made again as the old table had them
   (on each partition, under the parent's name), and ANALYZE.

It runs in the migration's one transaction: a failure leaves the old table as it was. Its cost is
a full copy and an index build of messages, writes to messages waiting all along (docs/scaling.md
has the measured rate). downgrade() is the same rebuild into one plain table with the primary key
`id`, when messages is partitioned (else nothing).
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITIONS = 16
"""The partition count the documentation and the tests use: 16 keeps each partition under ~65
million rows at a billion messages (docs/scaling.md) while a statement over the table stays cheap
to plan. The count is fixed when the table is built (changing it is another rebuild)."""
BATCH = 50_000
"""Rows copied per INSERT ... SELECT."""


def partitions() -> int:
    """SESSION_MESSAGE_PARTITIONS when this migration runs: 0 (the default) keeps messages one table."""
    text = os.environ.get("SESSION_MESSAGE_PARTITIONS", "0").strip() or "0"
    if not text.isdigit() or int(text) == 1 or int(text) > 1024:
        raise RuntimeError(f"SESSION_MESSAGE_PARTITIONS must be 0 (no partitions) or 2 to 1024, not {text!r}")
    return int(text)


def upgrade() -> None:
    count = partitions()
    if count:
        _rebuild(partitions=count)


def downgrade() -> None:
    if _is_partitioned(op.get_bind()):
        _rebuild(partitions=0)


def _is_partitioned(conn: sa.Connection) -> bool:
    return conn.execute(sa.text("SELECT relkind = 'p' FROM pg_class WHERE oid = 'messages'::regclass")).scalar_one()


def _rebuild(*, partitions: int) -> None:
    partitioned = partitions > 0
    conn = op.get_bind()
    referring = conn.execute(sa.text(
        "SELECT conname, conrelid::regclass::text FROM pg_constraint "
        "WHERE confrelid = 'messages'::regclass AND contype = 'f'"
    )).all()
    if referring:  # a foreign key to messages(id) cannot hold once id alone is not unique
        raise RuntimeError(f"foreign keys refer to messages; this migration does not know how to keep them: {referring}")
    op.execute("LOCK TABLE messages IN SHARE MODE")
    definition = _definition(conn)

    if partitioned:
        op.execute(
            "CREATE TABLE messages_rebuilt (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY HASH (session_id)"
        )
        for n in range(partitions):
            op.execute(
                f"CREATE TABLE messages_p{n:02d} PARTITION OF messages_rebuilt "
                f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {n})"
            )
    else:
        op.execute(
            "CREATE TABLE messages_rebuilt (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING STORAGE INCLUDING COMMENTS)"
        )
    _copy(conn)

    # Sequences owned by a column of messages (none today: ids are UUIDs) would go with the old
    # table; they are handed to the new one and keep counting.
    owned = conn.execute(sa.text(
        "SELECT s.oid::regclass::text AS sequence, a.attname AS column FROM pg_depend d "
        "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.refobjid = 'messages'::regclass AND d.deptype IN ('a', 'i')"
    )).all()
    for sequence, _ in owned:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute("DROP TABLE messages")
    op.execute("ALTER TABLE messages_rebuilt RENAME TO messages")
    for sequence, column in owned:
        op.execute(f'ALTER SEQUENCE {sequence} OWNED BY messages."{column}"')

    key = "(session_id, id)" if partitioned else "(id)"
    op.execute(f"ALTER TABLE messages ADD CONSTRAINT pk_messages PRIMARY KEY {key}")
    for statement in definition["indexes"]:
        op.execute(statement)
    for name, constraint in definition["constraints"]:
        op.execute(f'ALTER TABLE messages ADD CONSTRAINT "{name}" {constraint}')
    for statement in definition["triggers"]:
        op.execute(statement)
    op.execute("ANALYZE messages")


def _definition(conn: sa.Connection) -> dict[str, list]:
    """What the old table has beyond its columns and checks (which LIKE copies): its indexes but
    the primary key's, its foreign keys and unique constraints, its own triggers; as statements
    that make them again on the new table once it is called messages."""
    indexes = conn.execute(sa.text(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = 'messages'::regclass AND NOT i.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) "
        "ORDER BY i.indexrelid::regclass::text"
    )).scalars().all()
    constraints = conn.execute(sa.text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'messages'::regclass AND contype IN ('f', 'u', 'x') ORDER BY conname"
    )).all()
    triggers = conn.execute(sa.text(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE tgrelid = 'messages'::regclass AND NOT tgisinternal ORDER BY tgname"
    )).scalars().all()
    # A partitioned table's index reads `ON ONLY public.messages`: made on the plain table as is.
    return {
        "indexes": [statement.replace(" ON ONLY ", " ON ") for statement in indexes],
        "constraints": [tuple(row) for row in constraints],
        "triggers": list(triggers),
    }


def _copy(conn: sa.Connection) -> None:
    """Every row of messages into messages_rebuilt, BATCH at a time in (session_id, sequence)
    order (the order of uq_messages_session_id_sequence, which each batch continues along)."""
    after: tuple[object, object] | None = None
    copied = 0
    while True:
        where = "" if after is None else "WHERE (session_id, sequence) > (:session_id, :sequence)"
        row = conn.execute(
            sa.text(
                f"""
                WITH moved AS (
                    INSERT INTO messages_rebuilt
                    SELECT * FROM messages {where} ORDER BY session_id, sequence LIMIT :batch
                    RETURNING session_id, sequence
                ), last AS (
                    SELECT session_id, sequence FROM moved ORDER BY session_id DESC, sequence DESC LIMIT 1
                )
                SELECT (SELECT count(*) FROM moved), last.session_id, last.sequence
                FROM (SELECT 1) one LEFT JOIN last ON true
                """
            ),
            {"batch": BATCH, **({} if after is None else {"session_id": after[0], "sequence": after[1]})},
        ).one()
        if row[0] == 0:
            break
        copied += row[0]
        after = (row[1], row[2])
    total = conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
    if copied != total:
        raise RuntimeError(f"copied {copied} of {total} messages")
