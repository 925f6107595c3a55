"""Memory per call (issue 9 item 2): what one small request can make the server hold.

A session of 400 messages of 256 KiB (the largest content the default limits admit). Sixteen
StreamMessages calls, each on its own connection, whose client never reads, are held open while
ten ListMessages(page_size=1000) run at once; the server's peak RSS (its whole process tree) is
sampled throughout. Before the byte budget, one such ListMessages added ~108 MB and ten ~1 GB.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import grpc

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc

from . import procstat, seed

MESSAGES = 400
CONTENT_BYTES = 256 * 1024
LISTS = 10
STREAMS = 16
HOLD_SECONDS = 3.0
GOAL_MB = 300


async def big_pages(pid: int, port: int, database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        session_id = await seed.long_session(conn, "wide-user", MESSAGES, CONTENT_BYTES)
    finally:
        await conn.close()
    start = _rss(pid)
    peak = start
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, _rss(pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    # Each stream on a connection of its own (a local subchannel pool), so no stream's unread
    # data is held back by another's connection window.
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(STREAMS)
    ]
    streams = [
        session_pb2_grpc.MessageServiceStub(channel).StreamMessages(
            pb.StreamMessagesRequest(session_id=session_id, page_size=1000)
        )
        for channel in channels
    ]
    await asyncio.sleep(0.5)  # the streams start and fill whatever the server lets them
    began = time.perf_counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]) as ch:
        stub = session_pb2_grpc.MessageServiceStub(ch)
        answers = await asyncio.gather(
            *(stub.ListMessages(pb.ListMessagesRequest(session_id=session_id, page_size=1000)) for _ in range(LISTS)),
            return_exceptions=True,
        )
    lists_seconds = time.perf_counter() - began
    await asyncio.sleep(HOLD_SECONDS)
    for stream in streams:
        stream.cancel()
    for channel in channels:
        await channel.close()
    done = True
    await sampler
    pages = [a for a in answers if isinstance(a, pb.ListMessagesResponse)]
    failed = [a.code().name if isinstance(a, grpc.aio.AioRpcError) else repr(a) for a in answers if a not in pages]
    result = {
        "server_rss_start_mb": start / 2**20,
        "server_rss_peak_mb": peak / 2**20,
        "list_page_messages": len(pages[0].messages) if pages else 0,
        "list_page_mb": pages[0].ByteSize() / 2**20 if pages else 0.0,
        "lists_failed": failed,
        "lists_seconds": lists_seconds,
    }
    print(
        f"# memory: {LISTS} concurrent ListMessages(page_size=1000) + {STREAMS} non-reading streams on "
        f"{MESSAGES} x {CONTENT_BYTES // 1024} KiB messages: server RSS {result['server_rss_start_mb']:.0f} MB "
        f"-> peak {result['server_rss_peak_mb']:.0f} MB (goal < {GOAL_MB} MB: "
        f"{'met' if result['server_rss_peak_mb'] < GOAL_MB else 'NOT MET'}); a page held "
        f"{result['list_page_messages']} messages, {result['list_page_mb']:.1f} MB; ListMessages failed: "
        f"{', '.join(failed) or 'none'}; the lists took {lists_seconds:.1f} s",
        flush=True,
    )
    return result


def _rss(pid: int) -> int:
    return sum(procstat.rss_bytes(p) for p in procstat.tree(pid))
