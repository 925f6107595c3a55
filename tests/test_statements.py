"""What each session-scoped call costs the database, counted statement by statement.

The owner of a session is part of every session-scoped statement (`... AND user_id = $owner`),
so token mode runs exactly the statements mode none runs: no ownership SELECT in front of each
call. The counter sees every statement the server sends, through SQLAlchemy (ORM and Core) and
on the driver's own connection (the hot paths' fixed SQL, BEGIN and COMMIT).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import event

from session_grpc.auth import AuthSettings
from session_grpc.policy import Kind
from session_grpc.server import SessionServer

from . import rpcs
from .conftest import test_settings
from .helpers import serving
from .test_auth import bobs_session, dev, fresh_target  # noqa: F401 - dev is a fixture

# Every session-scoped call is one statement when it does what it was asked (UpdateSession,
# EndSession and UpdateMemory read the row a second time only to say why they changed nothing,
# and UpdateMemory with allow_missing creates a missing memory with two more); StreamMessages is
# one per page (one page here). UpdateMemory is counted on a session that has a memory.
UPDATE_MEMORY = rpcs.MEMORIES + "UpdateMemory"
# TruncateSession is the one transaction: it locks the session row (as AddMessage's UPDATE does),
# then removes messages in a statement of its own, whose snapshot sees every append that landed
# before the lock (in one statement, an append committed while it waited would be missed).
# BEGIN, the lock, the rewind, COMMIT.
NOT_ONE_STATEMENT = {rpcs.SESSIONS + "TruncateSession": 4}



class StatementCounter:
    """The SQL statements one server sends to PostgreSQL, in order."""

    def __init__(self, server: SessionServer) -> None:
        self.statements: list[str] = []
        engine = server.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._executed)
        event.listen(engine.pool, "checkout", self._checked_out)

    def _executed(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)

    def _checked_out(self, dbapi_connection, record, proxy) -> None:
        # Statements sent on the driver's connection itself (prepared statements SQLAlchemy runs
        # are not logged here, so nothing is counted twice). A set: adding again is a no-op.
        dbapi_connection.driver_connection.add_query_logger(self._logged)

    def _logged(self, record) -> None:
        if record.query != ";":  # the pool's liveness ping of a connection idle for a while
            self.statements.append(record.query)


async def statements_per_call(server: SessionServer, channel, token: str | None) -> dict[str, list[str]]:
    """The statements of each session-scoped RPC, each called on a fresh session of bob's."""
    counter = StatementCounter(server)
    seen = {}
    for method in rpcs.methods(Kind.OWNS_SESSION):
        target = await bobs_session(channel, memory=True) if method == UPDATE_MEMORY else await fresh_target(channel, method)
        request = rpcs.request(method, target)
        await asyncio.sleep(0.01)  # the driver reports statements from the event loop
        counter.statements.clear()
        await rpcs.call(channel, method, request, token)
        await asyncio.sleep(0.01)
        seen[method] = list(counter.statements)
    return seen


def _numbers(seen: dict[str, list[str]]) -> dict[str, int]:
    return {method: len(statements) for method, statements in seen.items()}


async def test_token_mode_runs_the_statements_mode_none_runs_one_for_each_single_statement_call(
    database_url, dev  # noqa: F811 - the fixture imported above
):
    _, _, port = dev
    quiet = {"health_interval": 3600.0}  # no health check's SELECT 1 in between
    auth = AuthSettings(address=f"127.0.0.1:{port}")
    async with serving(test_settings(database_url, auth_mode="token", auth=auth, **quiet)) as (server, channel):
        token_mode = await statements_per_call(server, channel, "bob-token")
    async with serving(test_settings(database_url, **quiet)) as (server, channel):
        mode_none = await statements_per_call(server, channel, None)
    assert _numbers(token_mode) == _numbers(mode_none), token_mode
    assert _numbers(token_mode) == {method: NOT_ONE_STATEMENT.get(method, 1) for method in token_mode}, token_mode
