"""message search vectors kept by a trigger, so copies keep theirs

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 21:15:00

0005 made `messages.search_vector` a generated column. A generated column cannot be written, so a
ForkSession that copies 10,000 messages parsed each one's content again (to_tsvector: about 80 %
of that fork's time, docs/performance.md). It becomes a plain column that a trigger fills: on
INSERT when the row comes without one (AddMessage, AddMessages), and on every UPDATE of content.
A copy brings its source's vector along. Changing the text search configuration then needs no
table rewrite either (README, Searching messages).

DROP EXPRESSION keeps the stored values and rewrites nothing; the configuration the trigger uses is
the one the column was generated in.
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENERATED = """
SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
WHERE d.adrelid = to_regclass('messages') AND a.attname = 'search_vector'
"""
FUNCTION = """
CREATE OR REPLACE FUNCTION messages_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' OR NEW.search_vector IS NULL THEN
        NEW.search_vector := to_tsvector('{config}'::regconfig, NEW.content);
    END IF;
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    expression = op.get_bind().execute(sa.text(GENERATED)).scalar() or ""
    match = re.search(r"to_tsvector\('([a-z0-9_.]+)'::regconfig", expression)
    if match is None:
        raise RuntimeError(f"messages.search_vector is not the column 0005 made: {expression!r}")
    op.execute("ALTER TABLE messages ALTER COLUMN search_vector DROP EXPRESSION")
    op.execute(FUNCTION.format(config=match[1]))
    op.execute(
        "CREATE TRIGGER messages_search_vector BEFORE INSERT OR UPDATE OF content ON messages "
        "FOR EACH ROW EXECUTE FUNCTION messages_search_vector()"
    )


def downgrade() -> None:
    source = op.get_bind().execute(
        sa.text("SELECT prosrc FROM pg_proc WHERE proname = 'messages_search_vector'")
    ).scalar() or ""
    match = re.search(r"to_tsvector\('([a-z0-9_.]+)'::regconfig", source)
    config = match[1] if match else "simple"
    op.execute("DROP TRIGGER IF EXISTS messages_search_vector ON messages")
    op.execute("DROP FUNCTION IF EXISTS messages_search_vector()")
    # Back to 0005's generated column: a rewrite of messages, and the index built again.
    op.execute("ALTER TABLE messages DROP COLUMN search_vector")
    op.execute(
        "ALTER TABLE messages ADD COLUMN search_vector tsvector "
        f"GENERATED ALWAYS AS (to_tsvector('{config}'::regconfig, content)) STORED"
    )
    op.execute("CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)")
