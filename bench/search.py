"""`make bench-search`: SearchMessages on 1,000,000 messages, what the stored tsvector costs
AddMessage, and ListSessions' filters and orders at 10,000 sessions for one user.

    python -m bench.search            # 1,000,000 messages (several minutes, most of it seeding)
    python -m bench.search --quick    # 20,000 messages: a smoke test

An embedded PostgreSQL in a temporary folder (it has no pg_trgm: title_contains is measured
without its trigram index, the worse case). The messages are seeded with COPY into the schema as it
was before search; that database is copied (CREATE DATABASE ... TEMPLATE) as the
"before" of the AddMessage comparison, and the original is upgraded to head, timed: the rewrite
that adds the generated column and the GIN build are what the migration costs on that much data.
The servers run as subprocesses; each figure is the median of 3 repetitions, the before/after
AddMessage repetitions interleaved so that load changes on a shared box touch both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import struct_pb2

from session_grpc import migrations, paging
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.storage import search as search_storage

from . import loadgen, procstat, report, seed
from .run import RESULTS, Bench, Config, Proc, database_server, request_for, start_process, wait_ready, with_database

COMMON = ["the", "to", "and", "a", "i", "you", "hotel", "is", "in", "for", "trip", "my", "of", "it", "flight",
          "we", "can", "room", "on", "with", "train", "be", "at", "this", "what", "book", "day", "price"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "do", "ri", "na", "po", "ze", "qui", "bar", "lin", "fo"]
RARE = "zanzibar"
"""In one message of every RARE_EVERY: the selective query."""
RARE_EVERY = 20_000
COMMON_QUERY = "hotel"


@dataclass(frozen=True)
class Size:
    users: int
    sessions_per_user: int
    messages_per_session: int
    list_sessions: int
    timed_count: int

    @property
    def messages(self) -> int:
        return self.users * self.sessions_per_user * self.messages_per_session


FULL = Size(users=1000, sessions_per_user=10, messages_per_session=100, list_sessions=10_000, timed_count=100)
QUICK = Size(users=50, sessions_per_user=4, messages_per_session=100, list_sessions=2_000, timed_count=10)


def vocabulary(rng: random.Random, size: int = 20_000) -> tuple[list[str], list[float]]:
    """Words and their cumulative Zipf weights (rank r has weight 1/r): the common words first."""
    words = list(COMMON)
    seen = set(words) | {RARE}
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    cumulative, total = [], 0.0
    for rank in range(1, size + 1):
        total += 1.0 / rank
        cumulative.append(total)
    return words, cumulative


def message_rows(size: Size, sessions: list[tuple[uuid.UUID, str]]) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(7)
    words, weights = vocabulary(rng)
    base = datetime.now(timezone.utc) - timedelta(days=30)
    index = 0
    for number, (session_id, user_id) in enumerate(sessions):
        start = base + timedelta(seconds=number * 200)
        for sequence in range(1, size.messages_per_session + 1):
            text = rng.choices(words, cum_weights=weights, k=rng.randint(8, 40))
            if index % RARE_EVERY == 7:
                text.insert(rng.randint(0, len(text)), RARE)
            role = "user" if sequence % 2 else "assistant"
            yield (uuid.uuid4(), session_id, user_id, sequence, role, "chat", " ".join(text).capitalize() + ".",
                   12, Decimal("0.00015"), "{}", start + timedelta(seconds=sequence))
            index += 1


async def seed_messages(url: str, size: Size) -> dict[str, Any]:
    """Sessions and messages by COPY, counters that match; returns what the queries need."""
    conn = await asyncpg.connect(url)
    try:
        sessions = [(uuid.uuid4(), f"user-{u:04d}") for u in range(size.users) for _ in range(size.sessions_per_user)]
        now = datetime.now(timezone.utc)
        n = size.messages_per_session
        await conn.copy_records_to_table(
            "sessions",
            records=[(sid, user, "active", "bench", n, 12 * n, Decimal("0.00015") * n, now, now, now)
                     for sid, user in sessions],
            columns=["id", "user_id", "status", "title", "message_count", "total_tokens", "total_cost",
                     "create_time", "update_time", "last_activity_time"],
        )
        began = time.monotonic()
        await conn.copy_records_to_table(
            "messages",
            records=message_rows(size, sessions),
            columns=["id", "session_id", "user_id", "sequence", "role", "message_type", "content", "tokens_used",
                     "cost", "metadata", "create_time"],
        )
        copied = time.monotonic() - began
        await seed.analyze(conn)
        rare_user = await conn.fetchval(
            "SELECT user_id FROM messages WHERE content LIKE $1 ORDER BY user_id LIMIT 1", f"%{RARE}%"
        )
        return {"copy_seconds": copied, "rare_user": rare_user, "common_user": "user-0042"}
    finally:
        await conn.close()


async def seed_list_user(url: str, count: int) -> None:
    """One user with `count` sessions: three channels in metadata, one title in 100 about Lisbon,
    one session in 5 ended, a rare metadata value on one in 1000, last activity out of creation order."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO sessions (id, user_id, status, title, metadata, create_time, update_time, last_activity_time)
            SELECT gen_random_uuid(), 'list-user', CASE WHEN g % 5 = 0 THEN 'ended' ELSE 'active' END,
                   'conversation ' || g || CASE WHEN g % 100 = 0 THEN ' about Lisbon' ELSE '' END,
                   jsonb_build_object('channel', (ARRAY['web', 'app', 'email'])[g % 3 + 1],
                                      'campaign', CASE WHEN g % 1000 = 0 THEN 'rare' ELSE 'none' END),
                   t, t, t + make_interval(secs => (g * 7919) % $1::int)
            FROM generate_series(1, $1::int) g, LATERAL (SELECT now() - make_interval(secs => $1::int - g) AS t) x
            """,
            count,
        )
        await seed.analyze(conn)
    finally:
        await conn.close()


async def sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """
            SELECT pg_relation_size('messages') AS messages_heap,
                   pg_total_relation_size('messages') AS messages_total,
                   coalesce(pg_relation_size(to_regclass('ix_messages_search_vector')), 0) AS search_index,
                   (SELECT count(*) FROM messages) AS messages
            """
        )
        return dict(row)
    finally:
        await conn.close()


async def matches(url: str, query: str, user_id: str | None) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM messages WHERE search_vector @@ websearch_to_tsquery('simple', $1)"
            " AND ($2::text IS NULL OR user_id = $2)",
            query, user_id,
        )
    finally:
        await conn.close()


async def explain(url: str, query: str, user_id: str | None) -> str:
    conn = await asyncpg.connect(url)
    try:
        prepared = await conn.prepare("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + search_storage.SEARCH)
        found = await prepared.fetch(query, "simple", 21, paging.RESPONSE_BYTES, None, user_id,
                                     None, None, None, None, None, None, None)
        return "\n".join(row[0] for row in found)
    finally:
        await conn.close()


async def search_cases(bench: Bench, proc: Proc, data: dict[str, Any], url: str) -> dict[str, Any]:
    plans: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
        stub = session_pb2_grpc.MessageServiceStub(channel)
        cases = [
            (f"selective '{RARE}', every user", RARE, None, bench.config.timed_count),
            (f"selective '{RARE}', user filter", RARE, data["rare_user"], bench.config.timed_count),
            (f"common '{COMMON_QUERY}', user filter", COMMON_QUERY, data["common_user"], bench.config.timed_count),
            (f"common '{COMMON_QUERY} room', user filter", f"{COMMON_QUERY} room", data["common_user"],
             bench.config.timed_count),
            (f"common '{COMMON_QUERY}', every user", COMMON_QUERY, None, 3),
        ]
        for label, query, user_id, count in cases:
            request = pb.SearchMessagesRequest(query=query, user_id=user_id or "", page_size=20)
            found = await matches(url, query, user_id)
            row = await bench.timed(
                "search_messages", "session-grpc", f"{label} ({found} matches)", proc.pid,
                lambda r=request: stub.SearchMessages(r, timeout=120), count=count,
            )
            row["matches"] = found
            plans[label] = await explain(url, query, user_id)
    return plans


async def add_message_cost(bench: Bench, before: Proc, after: Proc, messages: int) -> None:
    """AddMessage into the seeded database (1,000,000 messages) without and with the tsvector and
    its GIN index, repetitions interleaved (run.py's closed_interleaved)."""
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for name, p in (("before", before), ("after", after))}
    try:
        for concurrency in (1, 32):

            def adder(name: str, concurrency: int = concurrency):
                async def make_ops() -> list[loadgen.Operation]:
                    sessions = session_pb2_grpc.SessionServiceStub(channels[name])
                    replies = await asyncio.gather(*(
                        sessions.CreateSession(pb.CreateSessionRequest(user_id="bench-user", title="bench"))
                        for _ in range(concurrency)
                    ))
                    stub = session_pb2_grpc.MessageServiceStub(channels[name])
                    return [lambda r=request_for(reply.session.session_id): stub.AddMessage(r) for reply in replies]

                return make_ops

            await bench.closed_interleaved(
                "add_message", f"c={concurrency}, {messages:,} messages stored",
                [("without tsvector", before.pid, adder("before")), ("with tsvector+GIN", after.pid, adder("after"))],
            )
    finally:
        for channel in channels.values():
            await channel.close()


async def insert_cost(urls: dict[str, str], rows: int, reps: int = 5) -> dict[str, dict[str, float]]:
    """PostgreSQL's own time to insert `rows` messages of the walk-through's user content in one
    statement (rolled back), without and with the tsvector: to_tsvector plus the GIN insert, per
    message, free of the gRPC and Python noise around AddMessage. Repetitions interleaved."""
    conns = {name: await asyncpg.connect(url) for name, url in urls.items()}
    times: dict[str, list[float]] = {name: [] for name in urls}
    try:
        for _ in range(reps):
            for name, conn in conns.items():
                session_id = uuid.uuid4()
                tx = conn.transaction()
                await tx.start()
                try:
                    await conn.execute(
                        "INSERT INTO sessions (id, user_id, status) VALUES ($1, 'insert-cost', 'active')", session_id
                    )
                    began = time.perf_counter()
                    await conn.execute(
                        """
                        INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content,
                                              tokens_used, cost)
                        SELECT gen_random_uuid(), $1, 'insert-cost', g, 'user', 'chat', $2 || ' ' || g, 12, 0
                        FROM generate_series(1, $3::int) g
                        """,
                        session_id, seed.USER_CONTENT, rows,
                    )
                    times[name].append((time.perf_counter() - began) / rows * 1e6)
                finally:
                    await tx.rollback()
    finally:
        for conn in conns.values():
            await conn.close()
    return {name: loadgen.median_and_spread(values) for name, values in times.items()}


async def list_cases(bench: Bench, proc: Proc, count: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        web = struct_pb2.Struct()
        web.update({"channel": "web"})
        rare = struct_pb2.Struct()
        rare.update({"campaign": "rare"})
        variants: list[tuple[str, dict[str, Any]]] = [
            ("by creation", {}),
            ("by last activity", {"order_by": "last_activity_time desc"}),
            ("active, channel web", {"statuses": [pb.SESSION_STATUS_ACTIVE], "metadata_contains": web}),
            ("by last activity, active+completed, channel web", {
                "order_by": "last_activity_time desc",
                "statuses": [pb.SESSION_STATUS_ACTIVE, pb.SESSION_STATUS_COMPLETED], "metadata_contains": web,
            }),
            ("title contains 'lisbon' (no pg_trgm)", {"title_contains": "lisbon"}),
            ("rare metadata value", {"metadata_contains": rare}),
            ("created in the last hour", {"create_time_start": _ago(3600)}),
        ]
        for label, fields in variants:
            first = pb.ListSessionsRequest(user_id="list-user", page_size=50, **fields)
            page = await stub.ListSessions(first)
            total = page.total_size
            row = await bench.timed("list_sessions", "session-grpc", f"{label}: first page of {total}", proc.pid,
                                    lambda r=first: stub.ListSessions(r))
            row["total"] = total
            depth, token = 50, page.next_page_token
            while token and depth + 1000 <= int(total * 0.9):
                page = await stub.ListSessions(pb.ListSessionsRequest(user_id="list-user", page_size=1000,
                                                                      page_token=token, **fields))
                token, depth = page.next_page_token, depth + 1000
            if token and depth > 50:
                deep = pb.ListSessionsRequest(user_id="list-user", page_size=50, page_token=token, **fields)
                await bench.timed("list_sessions", "session-grpc", f"{label}: page at {depth} of {total}", proc.pid,
                                  lambda r=deep: stub.ListSessions(r))


def _ago(seconds: int) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(timezone.utc) - timedelta(seconds=seconds))
    return stamp


def search_revisions() -> tuple[str, str]:
    """(the revision before search, the one that adds it): other migrations may land around it."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    for revision in script.walk_revisions():
        if (revision.doc or "").startswith("full-text search over messages"):
            assert isinstance(revision.down_revision, str)
            return revision.down_revision, revision.revision
    raise LookupError("no migration adds message search")


def server_env(url: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "PORT": "{port}", "SESSION_HOST": "127.0.0.1", "SESSION_EXPIRY_INTERVAL": "0",
            "SESSION_LOG_LEVEL": "WARNING", "SESSION_DB_POOL_SIZE": "20"}


async def run(size: Size, out: Path, only: set[str]) -> dict[str, Any]:
    began = time.monotonic()
    load_before = os.getloadavg()
    result: dict[str, Any] = {"size": vars(size), "load_average_before": load_before}
    with database_server() as (url, data_dir):
        admin = await asyncpg.connect(url)
        try:
            await admin.execute('CREATE DATABASE "search_bench"')
        finally:
            await admin.close()
        main_url = with_database(url, "search_bench")
        before_search, adds_search = search_revisions()
        await migrations.upgrade(main_url, before_search)
        print(f"# seeding {size.messages} messages by COPY", flush=True)
        data = await seed_messages(main_url, size)
        result["copy_seconds"] = data["copy_seconds"]
        result["sizes_before"] = await sizes(main_url)
        admin = await asyncpg.connect(url)
        try:
            await admin.execute('CREATE DATABASE "search_before" TEMPLATE "search_bench"')
        finally:
            await admin.close()
        before_url = with_database(url, "search_before")
        began_upgrade = time.monotonic()
        await migrations.upgrade(main_url, adds_search)
        result["upgrade_search_seconds"] = time.monotonic() - began_upgrade
        began_upgrade = time.monotonic()
        await migrations.upgrade(main_url)
        result["upgrade_head_seconds"] = time.monotonic() - began_upgrade
        # The "before": every migration but search's. The server reads the columns later migrations
        # add (a fork's lineage, say), so the copy goes to head and loses search's column and index
        # again (search's own downgrade; dropping a column touches only the catalog).
        await migrations.upgrade(before_url)
        conn = await asyncpg.connect(before_url)
        try:
            await conn.execute("DROP TRIGGER IF EXISTS messages_search_vector ON messages")
            await conn.execute("DROP INDEX IF EXISTS ix_messages_search_vector")
            await conn.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search_vector")
        finally:
            await conn.close()
        conn = await asyncpg.connect(main_url)
        try:
            await seed.analyze(conn)
        finally:
            await conn.close()
        result["sizes_after"] = await sizes(main_url)
        print(f"# copy {data['copy_seconds']:.0f}s, upgrade adding search {result['upgrade_search_seconds']:.1f}s "
              f"(column rewrite + GIN), to head {result['upgrade_head_seconds']:.1f}s; "
              f"sizes {result['sizes_after']}", flush=True)
        await seed_list_user(main_url, size.list_sessions)
        bench = Bench(Config(timed_count=size.timed_count, duration=2.5, warmup=0.6), main_url,
                      procstat.postmaster_pid(data_dir))
        print(f"# {report.machine()} load average {os.getloadavg()[0]:.2f}", flush=True)
        print(report.header(), flush=True)
        procs = [start_process("search-after", ["-m", "session_grpc", "serve"], server_env(main_url))]
        procs.append(start_process("search-before", ["-m", "session_grpc", "serve"], server_env(before_url)))
        try:
            for proc in procs:
                await wait_ready(proc, health=True)
            if not only or "search" in only:
                result["plans"] = await search_cases(bench, procs[0], data, main_url)
            if not only or "list" in only:
                await list_cases(bench, procs[0], size.list_sessions)
            if not only or "add" in only:
                result["insert_us_per_message"] = await insert_cost(
                    {"without tsvector": before_url, "with tsvector+GIN": main_url}, 20_000
                )
                print(f"# insert, microseconds per message: {result['insert_us_per_message']}", flush=True)
                await add_message_cost(bench, procs[1], procs[0], size.messages)
        finally:
            for proc in procs:
                proc.stop()
    name = "search-quick" if size is QUICK else "search"
    return report.finish(result, bench.results, out=out, name=name, began=began, load_before=load_before,
                         markdown=markdown)


def markdown(result: dict[str, Any]) -> str:
    def cell(stat: dict[str, float]) -> str:
        return f"{stat['median']:.2f} ({stat['min']:.2f}-{stat['max']:.2f})"

    mib = 2**20
    before, after = result["sizes_before"], result["sizes_after"]
    lines = [
        f"Run {result['created']} on {result['machine']}; load average {result['load_average_before'][0]:.2f} "
        f"before, {result['load_average_after'][0]:.2f} after; wall {result['wall_seconds']:.0f} s.",
        "",
        f"- {after['messages']:,} messages seeded by COPY in {result['copy_seconds']:.0f} s.",
        f"- The upgrade that adds search (the generated column: a rewrite of messages, then the GIN build): "
        f"{result['upgrade_search_seconds']:.1f} s; from there to head: {result['upgrade_head_seconds']:.1f} s.",
        f"- messages heap {before['messages_heap'] / mib:.0f} MiB before, {after['messages_heap'] / mib:.0f} MiB "
        f"after (the stored vectors); ix_messages_search_vector {after['search_index'] / mib:.0f} MiB; "
        f"messages with indexes and TOAST {before['messages_total'] / mib:.0f} -> {after['messages_total'] / mib:.0f} MiB.",
        "",
        *(
            f"- PostgreSQL inserting 20,000 messages of {len(seed.USER_CONTENT)} characters in one statement, "
            f"{name}: {cell(stat)} microseconds per message."
            for name, stat in result.get("insert_us_per_message", {}).items()
        ),
        "",
        "| workload | server | variant | throughput | p50 ms | p99 ms | server cores | PostgreSQL cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        cores = row.get("cpu_cores", {})
        lines.append(
            f"| {row['workload']} | {row['target']} | {row['variant']} | {cell(row['throughput'])} {row['unit']} | "
            f"{cell(row['p50_ms'])} | {cell(row['p99_ms'])} | "
            f"{cell(cores['server']) if 'server' in cores else '-'} | {cell(cores['postgres'])} |"
        )
    for label, plan in result.get("plans", {}).items():
        lines += ["", f"#### {label}", "", "```", plan, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 messages: a smoke test")
    parser.add_argument("--only", default="", help="comma list among search,list,add")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)  # the servers' logs
    asyncio.run(run(QUICK if args.quick else FULL, args.out, set(filter(None, args.only.split(",")))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
