"""`make bench-userdata`: export, import and erasure of one big user.

    python -m bench.userdata                      # 20 sessions x 5,000 messages (100,000)
    python -m bench.userdata --sessions 2 --messages 500   # a smoke test

An embedded PostgreSQL in a temporary folder, two databases migrated to head. The user's sessions
and messages (40 words each) are seeded with SQL; then, timed once each: the export through
storage/export.py (what ExportUserData and `session-grpc export` run) to a file, with the peak of
Python allocations during it (tracemalloc: the export must not hold the user in memory); the import
of that file into the second database (`session-grpc import`: one transaction); the erasure of the
user in the first (DeleteUserData). Record the load average with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import asyncpg

from session_grpc import embedded, testing
from session_grpc.domain.userdata import Erasure
from session_grpc.settings import Settings
from session_grpc.storage import erasure, export
from session_grpc.storage.database import Database, create_engine

USER = "bench-user"


def database(url: str) -> Database:
    settings = Settings.from_env(environ={**os.environ, "DATABASE_URL": url})
    return Database(create_engine(settings), 3600.0)


async def seed(url: str, sessions: int, messages: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        for _ in range(sessions):
            session_id = await conn.fetchval(
                "INSERT INTO sessions (id, user_id, status, app_name, message_count, total_tokens, total_cost) "
                "VALUES (gen_random_uuid(), $1, 'active', 'bench', $2::bigint, 10 * $2::bigint, 0.0001 * $2::bigint) "
                "RETURNING id", USER, messages)
            await conn.execute(
                "INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content, tokens_used, cost) "
                "SELECT gen_random_uuid(), $1, $2, g, 'user', 'chat', repeat('word ', 40), 10, 0.0001 "
                "FROM generate_series(1, $3::bigint) g", session_id, USER, messages)
    finally:
        await conn.close()


async def run(server_url: str, sessions: int, messages: int, folder: Path) -> None:
    source = await testing.create_database(server_url, "session_grpc_bench")
    target = await testing.create_database(server_url, "session_grpc_bench")
    first, second = database(source), database(target)
    try:
        await seed(source, sessions, messages)
        path = folder / "user.jsonl"
        tracemalloc.start()
        started = time.perf_counter()
        size = 0
        with path.open("w", encoding="utf-8", newline="\n") as out:
            async for page in export.export_user(first, USER):
                for line in page:
                    out.write(line + "\n")
                    size += len(line) + 1
        exported = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        started = time.perf_counter()
        done = await second.run(export.import_user, lambda: path.open(encoding="utf-8", newline="\n"))
        imported = time.perf_counter() - started
        started = time.perf_counter()
        erased = await first.run(erasure.erase_user, Erasure(USER, "service"))
        erase = time.perf_counter() - started
        print(f"{sessions} sessions x {messages} messages ({sessions * messages} messages), load {os.getloadavg()}")
        print(f"  export: {exported:.2f} s, {size / 1e6:.1f} MB, peak Python allocation {peak / 1e6:.1f} MB")
        print(f"  import: {imported:.2f} s ({done.counts})")
        print(f"  erase:  {erase:.2f} s ({erased.sessions} sessions, {erased.messages} messages)")
    finally:
        await first.close()
        await second.close()
        await testing.drop_database(server_url, source)
        await testing.drop_database(server_url, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5000, help="per session")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, embedded.postgres(Path(folder) / "pg") as url:
        asyncio.run(run(url, args.sessions, args.messages, Path(folder)))


if __name__ == "__main__":
    main()
