"""`make bench-partitions`: messages partitioned by hash of session_id against the plain table, in
one run on one embedded PostgreSQL.

    python -m bench.partitions            # the run (about 4 minutes on 2 cores)
    python -m bench.partitions --quick    # a smoke test
    python -m bench.partitions --explain  # EXPLAIN ANALYZE of the hot statements on the partitioned table

Three databases with the same rows: `flat` (migrated to the revision before the partitioning, as
the default schema is), `partitioned` (that one upgraded with SESSION_MESSAGE_PARTITIONS, 16 unless
--partitions says otherwise: the migration's copy is timed), and
`partitioned_generic` (the same, with `plan_cache_mode = force_generic_plan` set on the database).
A server on each; the workloads run against the three with their repetitions interleaved, so a
change in the shared box's load touches all alike. Per workload: calls/s, p50, and CPU per call of
the server and of PostgreSQL (all its processes), with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import timestamp_pb2

from session_grpc import migrations
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.storage import messages, sessions

from . import loadgen, procstat, seed
from .run import RESULTS, Bench, Config, Proc, database_server, server_env, start_process, wait_ready, with_database

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("flat", "partitioned", "partitioned_generic")


def partitioning_migration() -> Any:
    """The migration module that partitions messages (its revision and down_revision)."""
    (path,) = (ROOT / "alembic" / "versions").glob("*_partitioned_messages.py")
    spec = importlib.util.spec_from_file_location("partitioned_messages", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def seed_rows(url: str, sessions_count: int, per_session: int, users: int) -> None:
    """`sessions_count` sessions of `users` users, each with `per_session` messages (alternating
    roles, the bench's contents), written with SQL like bench/seed.py."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO sessions (id, user_id, status, title, message_count, total_tokens, total_cost,
                                  create_time, update_time, last_activity_time)
            SELECT gen_random_uuid(), 'user-' || (g % $2::int), 'active', 'conversation ' || g, $3::int,
                   $3::int * 30, $3::int * 0.000375, now() - interval '1 hour', now(), now()
            FROM generate_series(1, $1::int) g
            """,
            sessions_count, users, per_session,
        )
        await conn.execute(
            """
            INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content,
                                  tokens_used, cost, create_time)
            SELECT gen_random_uuid(), s.id, s.user_id, g,
                   CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END, 'chat',
                   CASE WHEN g % 2 = 1 THEN $2 ELSE $3 END,
                   CASE WHEN g % 2 = 1 THEN 12 ELSE 48 END,
                   CASE WHEN g % 2 = 1 THEN 0.00015 ELSE 0.0006 END,
                   now() - interval '1 hour' + make_interval(secs => g)
            FROM sessions s, generate_series(1, $1::int) g
            """,
            per_session, seed.USER_CONTENT, seed.ASSISTANT_CONTENT,
        )
        await seed.analyze(conn)
    finally:
        await conn.close()


async def build(url: str, cfg: argparse.Namespace) -> tuple[dict[str, str], dict[str, Any]]:
    """The three databases, seeded alike; what the migration took."""
    module = partitioning_migration()
    admin = await asyncpg.connect(url)
    urls = {name: with_database(url, f"bench_{name}") for name in TARGETS}
    facts: dict[str, Any] = {}
    try:
        for name in TARGETS:
            await admin.execute(f'DROP DATABASE IF EXISTS "bench_{name}" WITH (FORCE)')
        await admin.execute('CREATE DATABASE "bench_flat"')
        await migrations.upgrade(urls["flat"], module.down_revision)
        began = time.monotonic()
        await seed_rows(urls["flat"], cfg.sessions, cfg.per_session, cfg.users)
        facts["seed_seconds"] = time.monotonic() - began
        for name in TARGETS[1:]:
            await admin.execute(f'CREATE DATABASE "bench_{name}" TEMPLATE "bench_flat"')
        os.environ["SESSION_MESSAGE_PARTITIONS"] = str(cfg.partitions)  # read by the migration
        try:
            began = time.monotonic()
            await migrations.upgrade(urls["partitioned"], module.revision)
            facts["migration_seconds"] = time.monotonic() - began
            await migrations.upgrade(urls["partitioned_generic"], module.revision)
        finally:
            del os.environ["SESSION_MESSAGE_PARTITIONS"]
        await admin.execute('ALTER DATABASE "bench_partitioned_generic" SET plan_cache_mode = force_generic_plan')
        for name in TARGETS[1:]:
            conn = await asyncpg.connect(urls[name])
            await conn.execute("VACUUM ANALYZE messages")
            await conn.close()
        facts["messages"] = cfg.sessions * cfg.per_session
        facts["partitions"] = cfg.partitions
    finally:
        await admin.close()
    return urls, facts


async def seeded_ids(url: str, count: int) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id::text FROM sessions ORDER BY id LIMIT $1", count)
        return [row[0] for row in rows]
    finally:
        await conn.close()


async def workloads(bench: Bench, procs: dict[str, Proc], urls: dict[str, str], concurrency: int) -> None:
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") for name, proc in procs.items()}
    try:
        stubs = {name: (rpc.SessionServiceStub(c), rpc.MessageServiceStub(c), rpc.UsageServiceStub(c))
                 for name, c in channels.items()}
        # The same sessions in each database (their ids were copied with the rows).
        ids = await seeded_ids(urls["flat"], 2_000)

        def adder(name: str):
            async def make() -> list[loadgen.Operation]:
                replies = await asyncio.gather(*(
                    stubs[name][0].CreateSession(pb.CreateSessionRequest(user_id=f"writer-{i}", title="bench"))
                    for i in range(concurrency)
                ))
                return [
                    lambda r=pb.AddMessageRequest(session_id=reply.session.session_id, role=pb.ROLE_USER,
                                                  content=seed.USER_CONTENT, tokens_used=12, cost="0.00015"),
                       m=stubs[name][1]: m.AddMessage(r)
                    for reply in replies
                ]
            return make

        def op_over_ids(name: str, call):
            async def make() -> list[loadgen.Operation]:
                picks = random.Random(7)  # the same sessions, in the same order, for every target
                cycles = [itertools.cycle([ids[picks.randrange(len(ids))] for _ in range(64)])
                          for _ in range(concurrency)]
                return [lambda c=cycle: call(stubs[name], next(c)) for cycle in cycles]
            return make

        def latest(stub, session_id):
            return stub[1].ListMessages(pb.ListMessagesRequest(session_id=session_id, page_size=20,
                                                               order_by="sequence desc"))

        def recent(stub, session_id):
            return stub[1].ListMessages(pb.ListMessagesRequest(session_id=session_id, recent_count=10))

        def summary(stub, session_id):
            return stub[0].GetSessionSummary(pb.GetSessionSummaryRequest(session_id=session_id))

        since, until = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
        since.FromSeconds(int(time.time()) - 86_400)
        until.FromSeconds(int(time.time()) + 86_400)

        def usage_one(name: str):  # a user's usage (their ~sessions/users sessions): every partition
            async def make() -> list[loadgen.Operation]:
                request = pb.GetUsageRequest(user_id="user-1", bucket=pb.USAGE_BUCKET_DAY, start_time=since,
                                             end_time=until)
                return [lambda s=stubs[name][2]: s.GetUsage(request)]
            return make

        def search_one(name: str):  # a user's search: the sessions' messages, on every partition
            async def make() -> list[loadgen.Operation]:
                request = pb.SearchMessagesRequest(query="train porto", user_id="user-1", page_size=10)
                return [lambda s=stubs[name][1]: s.SearchMessages(request)]
            return make

        plan: list[tuple[str, str, Any]] = [
            ("add_message", f"c={concurrency}", adder),
            ("list_latest_20", f"c={concurrency}", lambda name: op_over_ids(name, latest)),
            ("list_recent_10", f"c={concurrency}", lambda name: op_over_ids(name, recent)),
            ("session_summary", f"c={concurrency}", lambda name: op_over_ids(name, summary)),
            ("usage_of_a_user", "c=1", usage_one),
            ("search_of_a_user", "c=1", search_one),
        ]
        for workload, variant, maker in plan:
            await bench.closed_interleaved(
                workload, variant, [(name, procs[name].pid, maker(name)) for name in TARGETS]
            )
    finally:
        for channel in channels.values():
            await channel.close()


def per_call_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | target | calls/s | p50 ms | server CPU ms/call | PostgreSQL CPU ms/call | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        rate = row["throughput"]["median"]
        cores = row.get("cpu_cores", {})
        server = cores.get("server", {}).get("median", float("nan")) / rate * 1000 if rate else float("nan")
        postgres = cores.get("postgres", {}).get("median", float("nan")) / rate * 1000 if rate else float("nan")
        lines.append(
            f"| {row['workload']} {row['variant']} | {row['target']} | {rate:,.0f} | {row['p50_ms']['median']:.2f} "
            f"| {server:.3f} | {postgres:.3f} | {row['errors']} |"
        )
    return "\n".join(lines)


def _literal(value: object) -> str:
    """`value` as an SQL literal for EXECUTE (the prepared statement's parameter types apply)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]"
    return "'" + str(value).replace("'", "''") + "'"


async def explain_plans(url: str) -> str:
    """EXPLAIN (ANALYZE) of the hot statements as storage issues them, on the partitioned table,
    with the generic plan a long-lived connection ends up with and the custom plan of the first
    executions."""
    conn = await asyncpg.connect(url)
    out = []
    try:
        session_id = await conn.fetchval("SELECT id FROM sessions ORDER BY message_count DESC, id LIMIT 1")
        owner = await conn.fetchval("SELECT user_id FROM sessions WHERE id = $1", session_id)
        add_args = ([str(uuid.uuid4())], session_id, ["user"], ["chat"], ["hello"], ["12"], ["0.00015"], ["{}"],
                    [str(uuid.uuid4())], None, None, 0, owner, [None], [None], [None])
        cases = [
            ("AddMessage with a request_id (rolled back)", messages.ADD_MESSAGES_ONCE, add_args),
            ("ListMessages latest 20", messages.PAGE_DESCENDING, (session_id, 2**63 - 1, 21, owner, 4 << 20)),
            ("ListMessages next page (StreamMessages reads these)", messages.PAGE_ASCENDING,
             (session_id, 10, 101, owner, 4 << 20)),
            ("ListMessages recent_count=10", messages.FILTERED_ASCENDING,
             (session_id, 0, 101, owner, 4 << 20, None, 10)),
            ("GetSessionSummary", sessions.SESSION_SUMMARY, (session_id, owner)),
        ]
        for mode in ("force_custom_plan", "force_generic_plan"):
            for title, sql, args in cases:
                # PREPARE + EXPLAIN EXECUTE, as a driver's prepared statement runs (EXPLAIN of a
                # statement with bound parameters would always plan for their values).
                await conn.execute(f"PREPARE hot AS {sql}")
                tx = conn.transaction()
                await tx.start()
                try:
                    await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
                    values = ", ".join(_literal(arg) for arg in args)
                    rows = await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) EXECUTE hot({values})")
                finally:
                    await tx.rollback()
                    await conn.execute("DEALLOCATE hot")
                plan = "\n".join(r[0] for r in rows)
                out.append(f"#### {title} ({mode.split('_')[1]} plan)\n\n```\n{plan}\n```\n")
    finally:
        await conn.close()
    return "\n".join(out)


async def main(cfg: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    with database_server() as (url, data_dir):
        urls, facts = await build(url, cfg)
        print(f"# {facts['messages']:,} messages in {cfg.sessions:,} sessions of {cfg.users} users, "
              f"{facts['partitions']} partitions; seeded in {facts['seed_seconds']:.1f}s, "
              f"migration (copy, indexes, triggers, ANALYZE) in {facts['migration_seconds']:.1f}s", flush=True)
        if cfg.explain:
            print(await explain_plans(urls["partitioned"]))
            return
        config = Config.quick_mode() if cfg.quick else Config(reps=cfg.reps, duration=cfg.duration)
        bench = Bench(config, urls["flat"], procstat.postmaster_pid(data_dir))
        procs: dict[str, Proc] = {}
        try:
            for name in TARGETS:
                procs[name] = start_process(f"session-grpc-{name}", ["-m", "session_grpc", "serve"],
                                            server_env(urls[name]))
            for proc in procs.values():
                await wait_ready(proc, health=True)
            print(f"# load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
            await workloads(bench, procs, urls, cfg.concurrency)
            load_after = os.getloadavg()
            print(f"# load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}", flush=True)
            print(per_call_table(bench.results))
        finally:
            for proc in procs.values():
                proc.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--per-session", type=int, default=25)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=partitioning_migration().PARTITIONS)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    cfg = parser.parse_args(argv)
    if cfg.quick:
        cfg.sessions, cfg.per_session = 500, 10
    return cfg


if __name__ == "__main__":
    asyncio.run(main(parse()))
