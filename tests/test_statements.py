"""What each session-scoped call costs the database, counted statement by statement.

The owner of a session is part of every session-scoped statement (`... AND user_id = $owner`),
so token mode runs exactly the statements mode none runs: no ownership SELECT in front of each
call. The counter sees every statement the server sends, through SQLAlchemy (ORM and Core) and
on the driver's own connection (the hot paths' fixed SQL, BEGIN and COMMIT).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc.server import SessionServer

from .conftest import test_settings
from .helpers import serving
from .test_auth import Stubs, bobs_session, dev, session_calls, token_server  # noqa: F401 - dev is a fixture

# Statements per call that a single SQL statement cannot do today (a read under a row lock, then
# a write, in one transaction): BEGIN, the statements, COMMIT. Every other session-scoped call is
# one statement; StreamMessages one per page (a page here).
TRANSACTIONS = {"UpdateSession": 4, "EndSession": 4, "CreateMemory": 4, "UpdateMemory": 4}


class StatementCounter:
    """The SQL statements one server sends to PostgreSQL, in order."""

    def __init__(self, server: SessionServer) -> None:
        self.statements: list[str] = []
        engine = server.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._executed)
        event.listen(engine.pool, "checkout", self._checked_out)

    def _executed(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        self.statements.append(statement)

    def _checked_out(self, dbapi_connection, record, proxy) -> None:  # type: ignore[no-untyped-def]
        # Statements sent on the driver's connection itself (prepared statements SQLAlchemy runs
        # are not logged here, so nothing is counted twice). A set: adding again is a no-op.
        dbapi_connection.driver_connection.add_query_logger(self._logged)

    def _logged(self, record) -> None:  # type: ignore[no-untyped-def]
        self.statements.append(record.query)

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements.clear()
        seen: list[str] = []
        yield seen
        seen.extend(self.statements)


async def statements_per_call(server: SessionServer, stubs: Stubs, sid: str) -> dict[str, list[str]]:
    counter = StatementCounter(server)
    counts = {}
    for name, call in session_calls(stubs, sid).items():
        if name in ("EndSession", "DeleteSession"):
            continue  # run last, below: they end the session the others need
        with counter.counting() as seen:
            await call()
            await asyncio.sleep(0.01)  # the driver reports statements from the event loop
        counts[name] = seen
    for name in ("EndSession", "DeleteSession"):
        with counter.counting() as seen:
            await session_calls(stubs, sid)[name]()
            await asyncio.sleep(0.01)
        counts[name] = seen
    return counts


def _numbers(counts: dict[str, list[str]]) -> dict[str, int]:
    return {name: len(statements) for name, statements in counts.items()}


async def test_token_mode_runs_the_statements_mode_none_runs_one_for_each_single_statement_call(
    database_url, dev  # noqa: F811 - the fixture imported above
):
    _, _, port = dev
    async with token_server(database_url, port) as (server, channel):
        bob = Stubs(channel, "bob-token")
        token_mode = await statements_per_call(server, bob, await bobs_session(channel))
    async with serving(test_settings(database_url)) as (server, channel):
        anyone = Stubs(channel, None)
        sid = (await anyone.sessions.CreateSession(pb.CreateSessionRequest(user_id="bob"))).session.session_id
        mode_none = await statements_per_call(server, anyone, sid)
    assert _numbers(token_mode) == _numbers(mode_none), token_mode
    expected = {name: TRANSACTIONS.get(name, 1) for name in token_mode}
    assert _numbers(token_mode) == expected, token_mode
