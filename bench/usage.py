"""`make bench-usage`: GetUsage on 1,000,000 messages spread over a year, and what the usage
ledger's index costs AddMessage.

    python -m bench.usage            # 1,000,000 messages (several minutes, most of it seeding)
    python -m bench.usage --quick    # 20,000 messages: a smoke test

An embedded PostgreSQL in a temporary folder. The messages are seeded with COPY into the schema as
it was before the ledger (the revision before `usage_ledger`), spread evenly over the last 365 days:
most users have 1,000 messages, one ("heavy") has a tenth of all of them. That database is copied
(CREATE DATABASE ... TEMPLATE) as the "before" of the AddMessage comparison: the statement alone
(this tree's append statement without the budget probes, on the schema without the ledger's
indexes) always, end to end only when BENCH_BEFORE_ROOT names a checkout from before the ledger
(this tree's server cannot serve the older schema, so without it those rows are skipped, with a
note, rather than printed as failures); the original is upgraded to head, timed (the index builds on that much data). Each figure
is the median of 3 repetitions; the before/after AddMessage repetitions are interleaved so that load
changes on a shared box touch both alike. Record the load average with any figure.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
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
from google.protobuf import timestamp_pb2

from session_grpc import migrations
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc
from session_grpc.storage import usage as usage_storage

from . import loadgen, procstat, report, seed
from .run import RESULTS, Bench, Config, Proc, database_server, request_for, start_process, wait_ready, with_database
from .search import server_env

YEAR = timedelta(days=365)


@dataclass(frozen=True)
class Size:
    users: int
    messages_per_user: int
    heavy_messages: int
    sessions_per_user: int
    timed_count: int

    @property
    def messages(self) -> int:
        return self.users * self.messages_per_user + self.heavy_messages


FULL = Size(users=900, messages_per_user=1000, heavy_messages=100_000, sessions_per_user=10, timed_count=100)
QUICK = Size(users=18, messages_per_user=1000, heavy_messages=2000, sessions_per_user=10, timed_count=10)


def message_rows(sessions: list[tuple[uuid.UUID, str, int]], end: datetime) -> Iterator[tuple[Any, ...]]:
    """Each session's messages evenly over the year before `end`, alternating user and assistant,
    all of them in creation-time order (as a live service writes them: the BRIN index on
    create_time relies on that order), merged from one generator per session."""

    def one(session_id: uuid.UUID, user_id: str, count: int) -> Iterator[tuple[Any, ...]]:
        step = YEAR / count
        offset = timedelta(seconds=session_id.int % 86400)
        for sequence in range(1, count + 1):
            user = sequence % 2 == 1
            yield (uuid.uuid4(), session_id, user_id, sequence, "user" if user else "assistant", "chat",
                   "a message of the usage benchmark", 12 if user else 48,
                   Decimal("0.00015") if user else Decimal("0.0006"), "{}",
                   end - YEAR + offset * (count / 1000) + step * (sequence - 1))

    return heapq.merge(*(one(*session) for session in sessions), key=lambda row: row[10])


async def seed_messages(url: str, size: Size) -> float:
    conn = await asyncpg.connect(url)
    try:
        per_session = size.messages_per_user // size.sessions_per_user
        sessions = [(uuid.uuid4(), f"user-{u:04d}", per_session)
                    for u in range(size.users) for _ in range(size.sessions_per_user)]
        heavy_sessions = size.sessions_per_user * 10
        sessions += [(uuid.uuid4(), "heavy", size.heavy_messages // heavy_sessions) for _ in range(heavy_sessions)]
        now = datetime.now(timezone.utc)
        await conn.copy_records_to_table(
            "sessions",
            records=[(sid, user, "active", "bench", n, 30 * n, Decimal("0.000375") * n, now, now, now,
                      "app-a" if i % 2 else "app-b")
                     for i, (sid, user, n) in enumerate(sessions)],
            columns=["id", "user_id", "status", "title", "message_count", "total_tokens", "total_cost",
                     "create_time", "update_time", "last_activity_time", "app_name"],
        )
        began = time.monotonic()
        await conn.copy_records_to_table(
            "messages", records=message_rows(sessions, now),
            columns=["id", "session_id", "user_id", "sequence", "role", "message_type", "content", "tokens_used",
                     "cost", "metadata", "create_time"],
        )
        copied = time.monotonic() - began
        await seed.analyze(conn)
        return copied
    finally:
        await conn.close()


def ledger_revisions() -> tuple[str, str]:
    """(the revision before the usage ledger, the ledger's): other migrations may land around it."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    for revision in script.walk_revisions():
        if (revision.doc or "").startswith("Usage ledger"):
            assert isinstance(revision.down_revision, str)
            return revision.down_revision, revision.revision
    raise LookupError("no migration adds the usage ledger")


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def explain(url: str, user: str | None, app: str | None, bucket: str, start: datetime, end: datetime) -> str:
    conn = await asyncpg.connect(url)
    try:
        sql = usage_storage.STATEMENTS[(user is not None, app is not None, False)]
        params: list[Any] = [bucket, start, end] + ([user] if user else []) + ([app] if app else [])
        found = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *params)
        return "\n".join(row[0] for row in found)
    finally:
        await conn.close()


async def usage_cases(bench: Bench, proc: Proc, url: str, users: int) -> dict[str, str]:
    plans: dict[str, str] = {}
    end = datetime.now(timezone.utc) + timedelta(hours=1)
    start = end - YEAR - timedelta(days=1)
    one = f"user-{min(42, users - 1):04d}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
        stub = session_pb2_grpc.UsageServiceStub(channel)
        cases = [
            (f"{one}: a year of days", one, "", pb.USAGE_BUCKET_DAY, False, None),
            (f"{one}: a year of days by role", one, "", pb.USAGE_BUCKET_DAY, True, None),
            (f"{one}: a year of hours", one, "", pb.USAGE_BUCKET_HOUR, False, None),
            (f"{one} in app-a: a year of days", one, "app-a", pb.USAGE_BUCKET_DAY, False, None),
            ("heavy: a year of days", "heavy", "", pb.USAGE_BUCKET_DAY, False, None),
            ("app-a (admin): a year of months", "", "app-a", pb.USAGE_BUCKET_MONTH, False, 3),
            ("service (admin): a year of months", "", "", pb.USAGE_BUCKET_MONTH, False, 3),
            ("service (admin): one day of hours", "", "", pb.USAGE_BUCKET_HOUR, False, None),
        ]
        for label, user, app, bucket, by_role, count in cases:
            window_start = end - timedelta(days=1) if label.endswith("one day of hours") else start
            request = pb.GetUsageRequest(user_id=user, app_name=app, bucket=bucket, by_role=by_role,
                                         start_time=_ts(window_start), end_time=_ts(end))
            answer = await stub.GetUsage(request, timeout=300)
            row = await bench.timed("get_usage", "session-grpc",
                                    f"{label} ({answer.message_count:,} messages, {len(answer.buckets)} buckets)",
                                    proc.pid, lambda r=request: stub.GetUsage(r, timeout=300), count=count)
            row["messages"] = answer.message_count
            names = {pb.USAGE_BUCKET_DAY: "day", pb.USAGE_BUCKET_HOUR: "hour", pb.USAGE_BUCKET_MONTH: "month"}
            plans[label] = await explain(url, user or None, app or None, names[bucket], window_start, end)
    return plans


async def add_message_cost(bench: Bench, before: Proc, after: Proc, messages: int) -> None:
    """AddMessage into the seeded database, without and with the ledger's indexes, interleaved."""
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for name, p in (("before", before), ("after", after))}
    try:
        for concurrency in (1, 32):

            def adder(name: str, concurrency: int = concurrency):
                async def make_ops() -> list[loadgen.Operation]:
                    sessions = session_pb2_grpc.SessionServiceStub(channels[name])
                    replies = await asyncio.gather(*(
                        sessions.CreateSession(pb.CreateSessionRequest(user_id=f"adder-{i % 4}", title="bench"))
                        for i in range(concurrency)
                    ))
                    stub = session_pb2_grpc.MessageServiceStub(channels[name])
                    return [lambda r=request_for(reply.session.session_id): stub.AddMessage(r) for reply in replies]

                return make_ops

            await bench.closed_interleaved(
                "add_message", f"c={concurrency}, {messages:,} messages stored",
                [("before the ledger", before.pid, adder("before")), ("with the ledger", after.pid, adder("after"))],
            )
    finally:
        for channel in channels.values():
            await channel.close()


async def statement_cost(before_url: str, after_url: str, rounds: int) -> dict[str, Any]:
    """AddMessage's own statement, database time only, interleaved on one connection per database:
    before = without the ledger's indexes and without the budget probes (ADD_MESSAGES_BUDGETED, the
    statement as it was but for the app it returns); after = the indexes and the probes
    (ADD_MESSAGES). Each round appends one message to each of 20 sessions per database."""
    from session_grpc.storage import messages as message_storage

    timings: dict[str, list[float]] = {"before": [], "after": []}
    conns = {"before": await asyncpg.connect(before_url), "after": await asyncpg.connect(after_url)}
    sql = {"before": message_storage.ADD_MESSAGES_BUDGETED, "after": message_storage.ADD_MESSAGES}
    try:
        targets: dict[str, list[str]] = {}
        for name, conn in conns.items():
            targets[name] = [str(await conn.fetchval(
                "INSERT INTO sessions (id, user_id, status, app_name) VALUES (gen_random_uuid(), $1, 'active', 'app-a') "
                "RETURNING id", f"stmt-{i % 4}")) for i in range(20)]
        for round_ in range(rounds):
            for name in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                conn = conns[name]
                for session_id in targets[name]:
                    params = ([str(uuid.uuid4())], session_id, ["user"], ["chat"], ["hello"], ["12"], ["0.00015"], ["{}"],
                              [None], None, None, 0, None, [None], [None], [None])
                    began = time.perf_counter()
                    await conn.fetch(sql[name], *params)
                    timings[name].append((time.perf_counter() - began) * 1000)
    finally:
        for conn in conns.values():
            await conn.close()

    def stats(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"p50": ordered[len(ordered) // 2], "p90": ordered[int(len(ordered) * 0.9)], "n": len(ordered)}

    found = {name: stats(values) for name, values in timings.items()}
    found["ratio_p50"] = found["after"]["p50"] / found["before"]["p50"]
    return found


async def sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """
            SELECT pg_total_relation_size('messages') AS messages_total,
                   coalesce(pg_relation_size(to_regclass('ix_messages_user_id_create_time')), 0) AS user_index,
                   coalesce(pg_relation_size(to_regclass('ix_messages_create_time_brin')), 0) AS brin_index,
                   (SELECT count(*) FROM messages) AS messages
            """
        )
        return dict(row)
    finally:
        await conn.close()


def _start_before(url: str) -> Proc:
    """The "before" server: the code of the checkout BENCH_BEFORE_ROOT names."""
    previous = os.environ.get("BENCH_SERVER_ROOT")
    os.environ["BENCH_SERVER_ROOT"] = os.environ["BENCH_BEFORE_ROOT"]
    try:
        return start_process("usage-before", ["-m", "session_grpc", "serve"], server_env(url))
    finally:
        if previous is None:
            os.environ.pop("BENCH_SERVER_ROOT", None)
        else:
            os.environ["BENCH_SERVER_ROOT"] = previous


async def run(size: Size, out: Path, only: set[str]) -> dict[str, Any]:
    began = time.monotonic()
    load_before = os.getloadavg()
    result: dict[str, Any] = {"size": vars(size), "load_average_before": load_before,
                              "before_code": os.environ.get("BENCH_BEFORE_ROOT") or "nobody (end to end skipped)"}
    with database_server() as (url, data_dir):
        admin = await asyncpg.connect(url)
        try:
            await admin.execute('CREATE DATABASE "usage_bench"')
        finally:
            await admin.close()
        main_url = with_database(url, "usage_bench")
        before_ledger, adds_ledger = ledger_revisions()
        await migrations.upgrade(main_url, before_ledger)
        print(f"# seeding {size.messages:,} messages by COPY", flush=True)
        result["copy_seconds"] = await seed_messages(main_url, size)
        admin = await asyncpg.connect(url)
        try:
            await admin.execute('CREATE DATABASE "usage_before" TEMPLATE "usage_bench"')
        finally:
            await admin.close()
        before_url = with_database(url, "usage_before")
        began_upgrade = time.monotonic()
        await migrations.upgrade(main_url, adds_ledger)
        result["upgrade_ledger_seconds"] = time.monotonic() - began_upgrade
        await migrations.upgrade(main_url)
        conn = await asyncpg.connect(main_url)
        try:
            await seed.analyze(conn)
        finally:
            await conn.close()
        result["sizes"] = await sizes(main_url)
        print(f"# copy {result['copy_seconds']:.0f}s, ledger indexes built in {result['upgrade_ledger_seconds']:.1f}s; "
              f"sizes {result['sizes']}", flush=True)
        bench = Bench(Config(timed_count=size.timed_count, duration=3.0, warmup=0.6, reps=5), main_url,
                      procstat.postmaster_pid(data_dir))
        print(f"# {report.machine()} load average {os.getloadavg()[0]:.2f}", flush=True)
        print(report.header(), flush=True)
        end_to_end = (not only or "add" in only) and bool(os.environ.get("BENCH_BEFORE_ROOT"))
        if (not only or "add" in only) and not end_to_end:
            result["notes"] = ["AddMessage end to end before/after the ledger skipped: it needs BENCH_BEFORE_ROOT="
                               "<a checkout from before the ledger> (this tree's server refuses the older schema)"]
            print(f"# {result['notes'][0]}", flush=True)
        procs = [start_process("usage-after", ["-m", "session_grpc", "serve"], server_env(main_url))]
        if end_to_end:
            procs.append(_start_before(before_url))
        try:
            for proc in procs:
                await wait_ready(proc, health=True)
            if not only or "usage" in only:
                result["plans"] = await usage_cases(bench, procs[0], main_url, size.users)
            if end_to_end:
                await add_message_cost(bench, procs[1], procs[0], size.messages)
            if not only or "statement" in only:
                result["statement"] = await statement_cost(before_url, main_url, rounds=100 if size is FULL else 10)
                print(f"# AddMessage statement, database time: {result['statement']}", flush=True)
        finally:
            for proc in procs:
                proc.stop()
    name = "usage-quick" if size is QUICK else "usage"
    return report.finish(result, bench.results, out=out, name=name, began=began, load_before=load_before,
                         markdown=markdown)


def markdown(result: dict[str, Any]) -> str:
    def cell(stat: dict[str, float]) -> str:
        return f"{stat['median']:.2f} ({stat['min']:.2f}-{stat['max']:.2f})"

    mib = 2**20
    sizes_ = result["sizes"]
    lines = [
        f"Run {result['created']} on {result['machine']}; load average {result['load_average_before'][0]:.2f} "
        f"before, {result['load_average_after'][0]:.2f} after; wall {result['wall_seconds']:.0f} s; "
        f"AddMessage 'before' served by {result['before_code']}.",
        *[f"Note: {note}." for note in result.get("notes", [])],
        "",
        f"- {sizes_['messages']:,} messages seeded by COPY in {result['copy_seconds']:.0f} s; the ledger's "
        f"indexes built in {result['upgrade_ledger_seconds']:.1f} s: ix_messages_user_id_create_time "
        f"{sizes_['user_index'] / mib:.0f} MiB, BRIN {sizes_['brin_index'] / 1024:.0f} KiB; messages with "
        f"indexes and TOAST {sizes_['messages_total'] / mib:.0f} MiB.",
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
    if "statement" in result:
        st = result["statement"]
        lines += ["", f"AddMessage's statement alone (database time, interleaved, {st['before']['n']} each): p50 "
                  f"{st['before']['p50']:.3f} ms before, {st['after']['p50']:.3f} ms after (x {st['ratio_p50']:.3f}); "
                  f"p90 {st['before']['p90']:.3f} / {st['after']['p90']:.3f} ms."]
    for label, plan in result.get("plans", {}).items():
        lines += ["", f"#### {label}", "", "```", plan, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.usage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 messages: a smoke test")
    parser.add_argument("--only", default="", help="comma list among usage,add,statement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)  # the servers' logs
    asyncio.run(run(QUICK if args.quick else FULL, args.out, set(filter(None, args.only.split(",")))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
