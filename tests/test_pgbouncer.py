"""Behind pgbouncer in transaction pooling mode (SESSION_DB_PGBOUNCER=true): every RPC works,
concurrently, through a real pgbouncer with fewer server connections than the service's pool, so
consecutive statements of one service connection land on different server connections."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from session_grpc import localpg
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.localpg.bouncer import STATEMENT_TIMEOUT_MS, pgbouncer

from .conftest import test_settings
from .helpers import expect_failure, serving

pytestmark = pytest.mark.skipif(bool(localpg.missing("pgbouncer")), reason=localpg.missing("pgbouncer") or "")


@pytest.fixture(scope="module")
def bouncer(server_url):
    with pgbouncer(server_url, pool_mode="transaction", pool_size=2) as running:
        yield running


async def test_prepared_statements_break_behind_transaction_pooling_without_the_setting(server_url, database_url):
    """Why the setting exists: a statement asyncpg prepared (as its cache does) lives on the
    server connection that parsed it; when that one is busy with other clients' transactions,
    pgbouncer runs the next statement on another server connection, which does not know it."""
    with pgbouncer(server_url, pool_mode="transaction", pool_size=3) as own:
        url = own.url_for(database_url)
        first, *holders = [await asyncpg.connect(url) for _ in range(3)]
        try:
            prepared = await first.prepare("SELECT 1 + $1::int")
            assert await prepared.fetchval(1) == 2  # parsed and run on server connection X
            for holder in holders:  # the idle X is taken by one of them, the other gets Y
                await holder.execute("BEGIN")
            with pytest.raises(asyncpg.PostgresError, match="prepared statement .* does not exist"):
                await prepared.fetchval(1)  # on a new server connection Z
        finally:
            for conn in (first, *holders):
                await conn.close()


async def test_every_rpc_works_concurrently_behind_pgbouncer_in_transaction_mode(bouncer, database_url, sql):
    settings = test_settings(bouncer.url_for(database_url), db_pgbouncer=True, db_pool_size=8, db_pool_timeout=30.0)
    async with serving(settings) as (server, channel):
        sessions, messages, memories = (
            rpc.SessionServiceStub(channel), rpc.MessageServiceStub(channel), rpc.MemoryServiceStub(channel)
        )
        created = await asyncio.gather(*(
            sessions.CreateSession(pb.CreateSessionRequest(user_id="bounced", title=f"s{i}", request_id=str(uuid.uuid4())))
            for i in range(6)
        ))
        ids = [c.session.session_id for c in created]
        adds = [
            pb.AddMessageRequest(
                session_id=ids[i % 6], role=pb.ROLE_USER, content=f"m{i}", tokens_used=2, cost="0.5",
                request_id=str(uuid.uuid4()) if i % 2 else None,
            )
            for i in range(60)
        ]
        await asyncio.gather(*(messages.AddMessage(add) for add in adds))
        await asyncio.gather(*(messages.AddMessage(add) for add in adds if add.request_id))  # repeats: no rows
        for sid in ids:
            page = await messages.ListMessages(pb.ListMessagesRequest(session_id=sid, page_size=4))
            assert page.total_size == 10 and [m.sequence for m in page.messages] == [1, 2, 3, 4]
            streamed = [r.message.sequence async for r in messages.StreamMessages(pb.StreamMessagesRequest(session_id=sid))]
            assert streamed == list(range(1, 11))
            summary = (await sessions.GetSessionSummary(pb.GetSessionSummaryRequest(session_id=sid))).summary
            assert (summary.message_count, summary.total_tokens, summary.total_cost) == (10, 20, "5.0")
        # Search plans each query for its values (a fresh statement each time); behind pgbouncer it
        # does so without a named prepared statement (rows.fetch_planned_for_values). (This does not
        # catch a named one: pgbouncer mostly hands a client back the server connection it just had;
        # test_prepared_statements_break_... shows what happens when it does not.)
        searches = await asyncpg_gather(
            messages.SearchMessages(pb.SearchMessagesRequest(query=f"m{i}", user_id="bounced")) for i in range(20)
        )
        assert [len(found.results) for found in searches] == [1] * 20
        listed = await sessions.ListSessions(pb.ListSessionsRequest(user_id="bounced", page_size=4))
        rest = await sessions.ListSessions(
            pb.ListSessionsRequest(user_id="bounced", page_size=4, page_token=listed.next_page_token)
        )
        assert listed.total_size == 6 and len(listed.sessions) + len(rest.sessions) == 6
        first = created[0].session
        updated = await sessions.UpdateSession(pb.UpdateSessionRequest(
            session=pb.Session(session_id=first.session_id, title="renamed", etag=first.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        ))
        assert updated.session.title == "renamed"
        stale = await expect_failure(sessions.UpdateSession(pb.UpdateSessionRequest(
            session=pb.Session(session_id=first.session_id, title="again", etag=first.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )))
        assert stale.code == grpc.StatusCode.ABORTED
        await memories.CreateMemory(pb.CreateMemoryRequest(session_id=first.session_id, facts=["a"]))
        assert (await memories.GetMemory(pb.GetMemoryRequest(session_id=first.session_id))).memory.facts == ["a"]
        expire = pb.ExpireSessionsRequest()
        expire.idle_for.FromTimedelta(timedelta(hours=1))
        assert (await sessions.ExpireSessions(expire)).expired_count == 0  # the advisory lock is per transaction
        await sessions.EndSession(pb.EndSessionRequest(session_id=ids[1]))
        await sessions.DeleteSession(pb.DeleteSessionRequest(session_id=ids[2]))
        await server.check_health()
        assert await server.db.ping()
    assert await sql.fetchval("SELECT count(*) FROM messages WHERE user_id = 'bounced'") == 50  # 60 less the deleted 10
    assert await sql.fetchval("SELECT count(*) FROM sessions WHERE user_id = 'bounced'") == 5


async def asyncpg_gather(calls):
    return await asyncio.gather(*calls)


async def test_statement_timeout_comes_from_pgbouncer_not_the_startup_packet(bouncer, database_url):
    """pgbouncer refuses a statement_timeout startup parameter; the service sends none with the
    setting, and the pooler's connect_query sets it on every server connection."""
    url = bouncer.url_for(database_url)
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        await asyncpg.connect(url, server_settings={"statement_timeout": "1000"})
    settings = test_settings(url, db_pgbouncer=True)
    async with serving(settings) as (server, _):
        async with server.db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert await raw.fetchval("SHOW statement_timeout") == f"{STATEMENT_TIMEOUT_MS // 1000}s"
