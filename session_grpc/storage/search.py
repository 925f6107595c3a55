"""Full-text search over messages: one statement per page, over the stored `search_vector`
(to_tsvector(<configuration>, content), kept by the trigger messages_search_vector) and its GIN index.

The statement is planned for the values of each call (a fresh prepared statement, so PostgreSQL
makes a custom plan): the planner then sees the parsed query and which filters are set, and the
unset ones fold away. A search narrowed to a user's (or named sessions') few messages reads them
one by one; any other goes through the GIN index (SCAN_LIMIT says why).
"""

from __future__ import annotations

import re

import asyncpg

from ..domain.records import MessageSearch, Page, SearchHit
from . import rows
from .rows import owned
from .units import statement

SNIPPET_OPTIONS = 'StartSel=<mark>, StopSel=</mark>, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" ... "'
_TSQUERY = "websearch_to_tsquery($2::regconfig, $1)"
_SIZE = "octet_length(m.content) + octet_length(m.metadata::text) + coalesce(octet_length(m.payload), 0)"
_LIGHT = (
    "m.id, m.session_id, m.user_id, m.sequence, m.role, m.message_type, m.tokens_used, m.cost, m.create_time, "
    "m.payload_type, coalesce(m.event_time, m.create_time) AS event_time"
)
"""The message's columns (rows.MESSAGE_COLUMNS) but its large ones: content, metadata, payload."""

SCAN_LIMIT = 5_000
"""Messages a narrowed search (a user, or named sessions) reads one by one rather than through the
GIN index: the planner estimates `a & b` of two common words as rare (it multiplies their
frequencies), and then intersects both words' whole posting lists once per session of the user
(159 ms for "hotel room" on 1,000,000 messages, against 5 ms reading the user's 1,000 messages)."""

# $1 query, $2 configuration, $3 limit (page_size + 1), $4 byte budget, $5 owner (NULL: any),
# $6 user, $7 app, $8 session ids, $9 roles, $10 start, $11 end, $12/$13 the key to continue after
# (rank, message id). Unset filters are NULL; a custom plan folds them away.
#
# Two ways to the matches, one taken at run time (a one-time filter on `narrow`): a search narrowed
# to a user or to sessions holding at most SCAN_LIMIT messages reads those sessions' messages and
# checks each vector (`(... @@ ...) IS TRUE` keeps the GIN index out of that branch); any other
# search goes through the GIN index, the planner choosing the joins. Ranking computes ts_rank for
# every match that passes the filters (there is no index on rank), then keeps the best $3. Only the
# page's rows get a snippet (ts_headline parses the content again), and only those within the
# byte budget: the rest come back without content, to say that more follow.
_NARROWED = "($5::text IS NOT NULL OR $6::text IS NOT NULL OR $8::uuid[] IS NOT NULL)"
_SESSION_FILTERS = f"""{owned(5, "s.user_id")}
      AND ($6::text IS NULL OR s.user_id = $6)
      AND ($7::text IS NULL OR s.app_name = $7)
      AND ($8::uuid[] IS NULL OR s.id = ANY($8::uuid[]))"""
_MESSAGE_FILTERS = """($9::text[] IS NULL OR m.role = ANY($9::text[]))
      AND ($10::timestamptz IS NULL OR m.create_time >= $10)
      AND ($11::timestamptz IS NULL OR m.create_time < $11)"""
SEARCH = f"""
WITH scope AS MATERIALIZED (
    SELECT s.id, s.message_count FROM sessions s WHERE {_NARROWED} AND {_SESSION_FILTERS}
), narrow AS (
    SELECT {_NARROWED} AND coalesce(sum(message_count), 0) <= {SCAN_LIMIT} AS yes FROM scope
), hits AS (
    SELECT m.id, m.session_id, ts_rank(m.search_vector, {_TSQUERY}) AS rank
    FROM scope s JOIN messages m ON m.session_id = s.id
    WHERE (SELECT yes FROM narrow) AND (m.search_vector @@ {_TSQUERY}) IS TRUE
      AND {_MESSAGE_FILTERS}
    UNION ALL
    SELECT m.id, m.session_id, ts_rank(m.search_vector, {_TSQUERY}) AS rank
    FROM messages m JOIN sessions s ON s.id = m.session_id
    WHERE NOT (SELECT yes FROM narrow) AND m.search_vector @@ {_TSQUERY}
      AND {_SESSION_FILTERS}
      AND {_MESSAGE_FILTERS}
), page AS (
    SELECT id, session_id, rank FROM hits
    WHERE $12::real IS NULL OR (rank, id) < ($12::real, $13::uuid)
    ORDER BY rank DESC, id DESC LIMIT $3
), sized AS (
    SELECT {_LIGHT}, m.content, m.metadata, m.payload, p.rank,
           sum({_SIZE}) OVER (ORDER BY p.rank DESC, p.id DESC) - ({_SIZE}) < $4 AS within
    FROM page p JOIN messages m ON m.session_id = p.session_id AND m.id = p.id
)
SELECT id, session_id, user_id, sequence, role, message_type, tokens_used, cost, create_time, payload_type,
       event_time, rank, within, CASE WHEN within THEN content END AS content,
       CASE WHEN within THEN metadata END AS metadata, CASE WHEN within THEN payload END AS payload,
       CASE WHEN within THEN ts_headline($2::regconfig, content, {_TSQUERY}, '{SNIPPET_OPTIONS}') END AS snippet
FROM sized ORDER BY rank DESC, id DESC
"""


@statement
async def search_messages(conn: asyncpg.Connection, search: MessageSearch) -> Page[SearchHit]:
    """One page of the messages matching a search, best first (at most page_size, and no more
    than byte_budget but one). No total: counting every match of a common word would cost what
    ranking them does, for a number nobody pages to the end of."""
    after = search.after
    found = await rows.fetch_planned_for_values(
        conn, SEARCH, search.query, search.config, search.page_size + 1, search.byte_budget, search.owner, search.user_id,
        search.app_name, search.session_ids, None if search.roles is None else [role.value for role in search.roles],
        search.start_time, search.end_time, None if after is None else after.rank,
        None if after is None else after.message_id,
    )
    hits = [
        SearchHit(rows.message(row), row["snippet"], row["rank"]) for row in found[: search.page_size] if row["within"]
    ]
    return Page(hits, len(found) > len(hits), 0)


_CONFIGURATION = re.compile(r"to_tsvector\('([^']+)'::regconfig")
STORED_CONFIGURATION = """
SELECT coalesce(
    (SELECT prosrc FROM pg_proc WHERE proname = 'messages_search_vector'),
    (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
     JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
     WHERE d.adrelid = to_regclass('messages') AND a.attname = 'search_vector'))
"""


@statement
async def stored_configuration(conn: asyncpg.Connection) -> str | None:
    """The text search configuration messages' vectors are made in: the trigger's (migration
    0010), or the generated column's before it (0005); None when the database has neither (not
    migrated that far)."""
    source = await conn.fetchval(STORED_CONFIGURATION)
    match = _CONFIGURATION.search(source or "")
    return match[1] if match else None
