"""The Citus plan (docs/scaling.md) distributes sessions, messages and memories by the session
(sessions.id, messages.session_id, memories.session_id), colocated. This checks every SQL
statement the storage modules hold, read from the modules themselves (so a statement added
tomorrow is checked too): each one a call of a session sends must name the distribution key, so
that Citus routes it to one shard; the statements that span shards by design (listing a user's
sessions, the service's stats, expiry) are named here with the reason, and docs/scaling.md lists
the same ones.

The check is textual (Citus is not installable here): a statement is single-shard when it names
the key with a parameter (`id = $n` on sessions, `session_id = $n` on messages or memories, or the
key column of an INSERT bound to a parameter) and every messages or memories table it reads is
tied to the key (`session_id = s.id`, `session_id = (SELECT id FROM s)`, `session_id = $n`) or
written from a CTE of the same statement.

The first step of the plan, messages partitioned by hash of session_id (migration 0017), is
checked for real at the end: EXPLAIN ANALYZE of each hot statement on the partitioned table reads
exactly the session's partition.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import CodeType
from typing import Any

import asyncpg
import pytest

import session_grpc.storage
from session_grpc.storage import feed, history
from session_grpc.storage import messages as message_sql
from session_grpc.storage import sessions as session_sql

from .test_partitioned_messages import MIGRATION, a_session, partitioned_channel, partitioned_url, psql

__all__ = ["a_session", "partitioned_channel", "partitioned_url", "psql"]  # fixtures of the pruning tests

PARTITIONS = MIGRATION.PARTITIONS

ROOT = Path(__file__).resolve().parents[1]

DISTRIBUTION_KEY = {
    "sessions": "id", "messages": "session_id", "memories": "session_id", "session_rewinds": "session_id",
    "state_updates": "session_id", "user_states": "user_id", "app_states": "app_name", "rewound_requests": "session_id",
    "session_changes": "session_id", "user_feeds": "user_id", "session_role_totals": "session_id",
}
"""Every table, with its distribution column (test_every_table_has_its_distribution_column checks
that no table is left out)."""

REFERENCE_TABLES = {"budgets", "retention_policies", "user_erasures"}
"""Tables the plan makes Citus reference tables (a copy on every node, docs/scaling.md): small, read
by the append on the session's shard (the budget probes), so a read of them never leaves it; not in
DISTRIBUTION_KEY, so the routing rule does not ask for their key. retention_policies: one row per
app, read by the prune job only."""

MULTI_SHARD = {
    "sessions.CREATE_SESSION": "a repeated request_id is found by (user_id, request_id); the plan derives the id "
    "of a session created with a request_id from them (UUIDv5), which makes it a lookup by id",
    "sessions.BY_REQUEST_ID": "the same lookup by (user_id, request_id), after a concurrent first create",
    "sessions.LIST_SESSIONS": "a user's sessions live on every shard: Citus runs the page on each and merges",
    "sessions.LIST_APP_SESSIONS": "an app's sessions across its users (an admin's listing) live on every shard: "
    "the same page on each, merged",
    "sessions.SERVICE_STATS": "totals over every session: one aggregate per shard, summed by the coordinator",
    "sessions.EXPIRE_SESSIONS": "maintenance over every shard, one at a time (advisory lock on the coordinator)",
    "sessions.EXPIRE_SESSIONS_IF_FREE": "the expiry job's form of the same",
    "search.SEARCH": "a search over a user's sessions or the service runs on every shard and merges by rank",
    "feed.SESSION_CHANGES": "the session's changes are on its shard, but the user's head (user_feeds, distributed "
    "by user) is read beside them",
    "feed.USER_CHANGES": "a user's changes are on the shards of their sessions: Citus reads each and merges by change id",
    "history.FORK_SESSION": "a fork is a new session, so (by its new id) another shard: the coordinator copies "
    "the messages across (forks are rare and bounded by SESSION_MAX_FORK_MESSAGES)",
    "messages.ADD_MESSAGES_WITH_STATE": "an append with user or app state deltas also writes those states, "
    "distributed by user_id and app_name: one distributed transaction over the session's shard and theirs",
    "state.UPDATE_STATE": "the same deltas without a message: the session's shard, the user's and the app's",
    "state.GET_SESSION_STATE": "the session joined to its user's and app's state rows, on their own shards",
    "usage.STATEMENTS": "a user's, an app's or the service's usage adds up messages of many sessions: one "
    "aggregate per shard, merged by the coordinator",
    "budgets.SET_USER": "a new budget starts from the user's messages of the day and month, on every shard",
    "budgets.SET_APP": "the same for an app's messages",
    "erasure.STATEMENTS": "DeleteUserData erases a user: their sessions are on every shard, their state and "
    "feed on the user's; one distributed transaction, rare (an admin or the user, once)",
    "export.STATEMENTS": "ExportUserData pages through a user's sessions (every shard, merged by creation time), "
    "then each session's messages on its shard; import writes them across shards in one transaction",
    "messages.ADD_MESSAGES_WITH_STATE_BUDGETED": "the state-delta append of a session with a budget: the same "
    "shards as messages.ADD_MESSAGES_WITH_STATE",
    "retention.DELETE_CLOSED_SESSIONS": "the prune job: an app's closed sessions on every shard, one pass at a "
    "time (advisory lock on the coordinator), in batches",
    "retention.COUNT_CLOSED_SESSIONS": "the prune dry run's count of the same, an aggregate per shard",
    "retention.FIRST_WINDOW": "the prune job walks an app's sessions (on every shard) by creation time, a window at "
    "a time, merged like an app's listing",
    "retention.NEXT_WINDOW": "the same walk after its keyset",
    "retention.LOCK_SESSIONS": "the window's due sessions, by id (id = ANY): each shard locks its own",
    "retention.DELETE_MESSAGES": "the prune batch over those sessions' messages (session_id joined to the locked "
    "ids), and one feed row per session: the shards of the batch's sessions and their users' feed counters",
    "retention.COUNT_MESSAGES": "the prune dry run: an aggregate per shard over the app's sessions",
    "group_commit.GROUP_APPEND": "group commit appends to the sessions of concurrent AddMessage calls in one "
    "statement: under Citus a multi-shard statement (turn SESSION_GROUP_COMMIT off, or group per shard)",
}
"""Statements that span shards by design, and why. Keyed by module.NAME (a dict of statements is
one entry)."""

_SQL = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\s")  # upper case: SQL, not a docstring
_TABLES = "|".join(DISTRIBUTION_KEY)
_PARAM_PIN = re.compile(r"(?<![\w.])(?:\w+\.)?(id|session_id|user_id|app_name)\s*=\s*\$\d+")
_REFERENCE = re.compile(
    rf"(?:\b(?:FROM|JOIN|UPDATE)|,)\s*({_TABLES})\b(?:\s+(?:AS\s+)?(?!WHERE|SET|ON|LEFT|JOIN|GROUP|ORDER|WINDOW|RETURNING|CROSS)(\w+))?",
    re.IGNORECASE,
)
_INSERT = re.compile(rf"\bINSERT\s+INTO\s+({_TABLES})(?:\s+AS\s+\w+)?\s*\(([^)]*)\)\s*(VALUES\s*\(([^)]*)\)|SELECT\b)", re.IGNORECASE)
_TIED = re.compile(r"(?:\w+\.)?session_id\s*=\s*(\$\d+|\w+\.id\b|\(SELECT id FROM \w+\))")


def statements() -> Iterator[tuple[str, str]]:
    """(name, SQL) of every statement in session_grpc.storage's modules: module-level strings,
    the values of module-level dicts of strings, and strings inside the modules' public functions;
    each under the module that assigns it (not one that imports it)."""
    for info in pkgutil.iter_modules(session_grpc.storage.__path__):
        module = importlib.import_module(f"session_grpc.storage.{info.name}")
        source = inspect.getsource(module)
        for name, value in vars(module).items():
            if name.startswith("_") or not re.search(rf"^{name}\s*=", source, re.MULTILINE):
                continue
            if isinstance(value, str) and _SQL.match(value):
                yield f"{info.name}.{name}", value
            elif isinstance(value, dict) and value and all(isinstance(v, str) and _SQL.match(v) for v in value.values()):
                for key, sql in value.items():
                    yield f"{info.name}.{name}[{key}]", sql
        for name, function in vars(module).items():  # private functions hold templates (their results are above)
            if inspect.isfunction(function) and function.__module__ == module.__name__ and not name.startswith("_"):
                for index, sql in enumerate(_inline(function.__code__)):
                    yield f"{info.name}.{name}:inline{index}", sql


def _inline(code: CodeType) -> Iterator[str]:
    for constant in code.co_consts:
        if isinstance(constant, str) and _SQL.match(constant):
            yield constant
        elif isinstance(constant, CodeType):
            yield from _inline(constant)


def touches_distributed_tables(sql: str) -> bool:
    return bool(_REFERENCE.search(sql) or _INSERT.search(sql))


def why_not_single_shard(sql: str) -> str | None:
    """None when the statement routes to one shard by the rules above; else what is missing."""
    ctes = set(re.findall(r"(?:\bWITH|,)\s*(\w+)\s+AS\s*(?:MATERIALIZED\s*)?\(", sql, re.IGNORECASE))
    pinned = bool(_PARAM_PIN.search(sql))
    for match in _INSERT.finditer(sql):
        table, columns, _, values = match.groups()
        names = [c.strip() for c in columns.split(",")]
        key = DISTRIBUTION_KEY[table]
        if values is not None:
            bound = [v.strip() for v in values.split(",")]
            if key in names and re.fullmatch(r"\$\d+", bound[names.index(key)] if names.index(key) < len(bound) else ""):
                pinned = True
            else:
                return f"INSERT INTO {table} without its {key} bound to a parameter"
        else:
            source = re.search(r"\bFROM\s+(\w+)", sql[match.end():], re.IGNORECASE)
            if source is None or source.group(1) not in ctes:
                return f"INSERT INTO {table} ... SELECT not fed from a CTE of the statement"
            if key != "session_id":  # the CTE's row is the session's; this table lives elsewhere
                return f"INSERT INTO {table}, distributed by {key}, from a session's row"
    if not pinned:
        return "no distribution key bound to a parameter"
    for match in _REFERENCE.finditer(sql):
        table, alias = match.group(1).lower(), match.group(2)
        scope = _scope(sql, match.end())
        if table == "sessions":  # its id bound to a parameter, or joined to another table's pinned session_id
            prefix = rf"(?:{alias}\.)?" if alias else ""
            own = rf"(?<![\w.]){prefix}id\s*=\s*(\$\d+|\w+\.session_id\b)"
            if not re.search(own, scope):
                return "sessions read without id bound to a parameter"
        elif DISTRIBUTION_KEY[table] != "session_id":  # user_states, app_states: their own key
            if not re.search(rf"(?<![\w.])(?:\w+\.)?{DISTRIBUTION_KEY[table]}\s*=\s*\$\d+", scope):
                return f"{table} read without its {DISTRIBUTION_KEY[table]} bound to a parameter"
        elif not _TIED.search(scope):
            return f"{table} read without session_id tied to the key"
    return None


def _scope(sql: str, start: int) -> str:
    """The text from `start` to the end of the (sub)query it is in: up to the parenthesis that
    closes the one it opened in, or the end."""
    depth = 0
    for index in range(start, len(sql)):
        if sql[index] == "(":
            depth += 1
        elif sql[index] == ")":
            depth -= 1
            if depth < 0:
                return sql[start:index]
    return sql[start:]


def test_every_table_has_its_distribution_column():
    from session_grpc.storage.tables import Base

    assert set(Base.metadata.tables) == set(DISTRIBUTION_KEY) | REFERENCE_TABLES, (
        "a new table needs its place in docs/scaling.md's plan")
    for table, column in DISTRIBUTION_KEY.items():
        assert column in Base.metadata.tables[table].columns


def test_the_storage_modules_hold_the_statements_the_service_runs():
    """The discovery itself: the hot statements are found where they are written."""
    names = {name.split("[")[0] for name, _ in statements()}
    assert {"messages.PAGE_ASCENDING", "sessions.GET_SESSION", "sessions.LIST_SESSIONS", "memories.CREATE_MEMORY"} <= names
    assert any(name.startswith("messages.ADD_MESSAGE") for name in names)


def test_every_statement_of_a_sessions_call_routes_to_one_shard_by_the_session():
    offending = {}
    for name, sql in statements():
        if not touches_distributed_tables(sql) or name.split("[")[0] in MULTI_SHARD:
            continue
        reason = why_not_single_shard(sql)
        if reason is not None:
            offending[name] = reason
    assert not offending, (
        "statements that would span Citus shards (docs/scaling.md): filter them on the session, or add them "
        f"to MULTI_SHARD with the reason and to docs/scaling.md's list: {offending}"
    )


def test_the_multi_shard_statements_exist_really_span_shards_and_are_the_ones_the_plan_lists():
    found = {}
    for name, sql in statements():
        found.setdefault(name.split("[")[0], []).append(sql)
    assert set(MULTI_SHARD) <= set(found), set(MULTI_SHARD) - set(found)
    for name in MULTI_SHARD:
        assert any(why_not_single_shard(sql) for sql in found[name]), f"{name} routes to one shard: drop it from MULTI_SHARD"
    plan = (ROOT / "docs" / "scaling.md").read_text()
    listed = set(re.findall(r"`(\w+\.[A-Z_]+)`", plan.split("<!-- multi-shard: begin -->")[1].split("<!-- multi-shard: end -->")[0]))
    assert listed == set(MULTI_SHARD)


def test_the_rule_tells_single_shard_from_multi_shard_statements():
    assert why_not_single_shard("SELECT * FROM sessions WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)") is None
    assert why_not_single_shard("SELECT * FROM sessions WHERE user_id = $1") is not None
    assert why_not_single_shard("SELECT s.*, m.* FROM sessions s JOIN messages m ON m.session_id = s.id WHERE s.id = $1") is None
    assert why_not_single_shard("SELECT * FROM sessions s, messages m WHERE s.id = $1 AND m.role = 'user'") is not None
    assert why_not_single_shard("INSERT INTO messages (id, session_id) VALUES ($1, $2)") is None
    assert why_not_single_shard("INSERT INTO messages (id, session_id) VALUES ($1, gen_random_uuid())") is not None
    assert why_not_single_shard("SELECT count(*) FROM messages WHERE request_id = $1") is not None


# ---- partition pruning on the real table ---------------------------------------------------------
# The plan's first step (docs/scaling.md) partitions messages by hash of session_id (migration
# 0017). The same rule, checked by PostgreSQL itself: each hot statement of a call about a session
# reads exactly that session's partition (EXPLAIN ANALYZE: no other partition's scan runs), in the
# custom plan of its first executions and in the generic plan a long-lived connection may settle on.


def _literal(value: object) -> str:
    """`value` as an SQL literal for EXECUTE (the prepared statement's parameter types apply)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]" if value else "'{}'"
    if isinstance(value, datetime):
        return _literal(value.isoformat())
    return "'" + str(value).replace("'", "''") + "'"


def _scans(node: dict[str, Any]) -> list[tuple[str, int]]:
    """(relation, loops) of every node of a JSON plan that reads a relation."""
    found = []
    if "Relation Name" in node:
        found.append((node["Relation Name"], node.get("Actual Loops", 0)))
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


async def _read(conn: asyncpg.Connection, sql: str, args: tuple, mode: str) -> set[str]:
    """The partitions of messages that `sql` read (a scan that ran at least once), executed as a
    prepared statement under plan_cache_mode `mode`, in a transaction rolled back."""
    name = f"p_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"PREPARE {name} AS {sql}")  # outside the transaction: PREPARE is not undone by a rollback
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            plan = json.loads(await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({', '.join(_literal(a) for a in args)})"
            ))
        finally:
            await tx.rollback()
    finally:
        await conn.execute(f"DEALLOCATE {name}")
    return {relation for relation, loops in _scans(plan[0]["Plan"]) if relation.startswith("messages_p") and loops > 0}


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_every_hot_statement_reads_only_the_sessions_partition(psql, a_session, mode):
    sql = psql
    session_id, owner = a_session.session_id, "pruned"
    (partition,) = {row[0] for row in await sql.fetch(
        "SELECT tableoid::regclass::text FROM messages WHERE session_id = $1", uuid.UUID(session_id)
    )}
    request_id = await sql.fetchval(
        "SELECT request_id::text FROM messages WHERE session_id = $1 AND request_id IS NOT NULL LIMIT 1",
        uuid.UUID(session_id),
    )
    one = [str(uuid.uuid4())]

    def append(request_ids: list[str | None]) -> tuple:
        return (one, session_id, ["user"], ["chat"], ["hi"], ["1"], ["0"], ["{}"], request_ids, None, None, 0, owner,
                [None], [None], [None])

    budget = 4 << 20
    reads = {
        "AddMessage with a request_id (looks for an earlier one)": (message_sql.ADD_MESSAGES_ONCE, append([str(uuid.uuid4())])),
        "AddMessage repeating a request_id": (message_sql.ADD_MESSAGES_ONCE, append([request_id])),
        "a request_id's earlier messages": (message_sql.BY_REQUEST_IDS, (session_id, [request_id])),
        "ListMessages latest page": (message_sql.PAGE_DESCENDING, (session_id, 2**63 - 1, 21, owner, budget)),
        "ListMessages / StreamMessages next page": (message_sql.PAGE_ASCENDING, (session_id, 10, 11, owner, budget)),
        "ListMessages recent_count": (message_sql.FILTERED_ASCENDING, (session_id, 0, 101, owner, budget, None, 5)),
        "ListMessages start_time": (message_sql.FILTERED_DESCENDING, (
            session_id, 2**63 - 1, 101, owner, budget, datetime.now(timezone.utc) - timedelta(hours=1), None)),
        "GetSessionSummary": (session_sql.SESSION_SUMMARY, (session_id, owner)),
        "TruncateSession": (history.TRUNCATE_SESSION, (session_id, 20, owner, None)),
        "WatchSession": (feed.SESSION_CHANGES, (session_id, owner, 0, 100)),
    }
    wrong = {}
    for title, (statement, args) in reads.items():
        read = await _read(sql, statement, args, mode)
        if read != {partition}:
            wrong[title] = read
    # The plain append reads no partition at all: its rows are routed to the session's.
    plain = await _read(sql, message_sql.ADD_MESSAGES, append([None]), mode)
    if plain:
        wrong["AddMessage"] = plain
    assert not wrong, f"expected only {partition} to be read: {wrong}"


async def test_the_rule_sees_a_statement_that_reads_every_partition(psql, a_session):
    sql = psql
    """The check above fails a statement that does not name its session (search by user)."""
    read = await _read(sql, "SELECT count(*) FROM messages WHERE user_id = $1", ("pruned",), "force_custom_plan")
    assert len(read) == PARTITIONS
