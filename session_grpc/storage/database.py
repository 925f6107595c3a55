"""The engine, the transaction runner, and the translation of driver errors to domain errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import asyncpg
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from .. import consistency, deadlines
from ..domain.errors import Aborted, DeadlineExceeded, DomainError, Unavailable
from ..settings import Settings
from . import replication
from .units import Unit, unit_of

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
QUERY_CANCELED = "57014"  # statement_timeout, or a cancel request
MAX_TRANSIENT_ATTEMPTS = 3
CANCEL_WAIT = 1.0  # seconds to let a CancelRequest reach PostgreSQL before dropping the connection
PING_AFTER_IDLE = 1.0
"""Seconds a pooled connection may sit unused before it is checked (one ping) on its next checkout."""


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """A pool that checks connections before use (so it recovers after a database restart) and a
    server-side statement_timeout as the backstop behind the per-call deadline; on `url` (the
    standby's) instead of DATABASE_URL when given."""
    engine = create_async_engine(
        url or settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args=_connect_args(settings),
    )
    _ping_idle_connections(engine)
    _invalidate_unusable_connections(engine)
    return engine


def _connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments. Behind pgbouncer in transaction pooling mode (1.18 keeps no
    prepared statements) consecutive statements of one client connection may run on different
    server connections, so none may rely on a statement prepared earlier: asyncpg's statement
    cache is off (it then parses each statement again in the message that runs it: a second round
    trip per statement, see docs/performance.md), SQLAlchemy's too, and SQLAlchemy's named
    statements get names no two clients share. pgbouncer refuses startup parameters it does not
    know, statement_timeout among them: it is set in pgbouncer's connect_query instead (README)."""
    args: dict[str, Any] = {"timeout": settings.db_connect_timeout}
    if settings.db_pgbouncer:
        args.update(
            statement_cache_size=0,
            prepared_statement_cache_size=0,
            prepared_statement_name_func=lambda: f"__session_grpc_{uuid.uuid4().hex}__",
        )
    else:
        args["server_settings"] = {"statement_timeout": str(int(settings.default_deadline * 1000) + 1000)}
    return args


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """pool_pre_ping, but only for connections idle longer than PING_AFTER_IDLE; and no
    connection the driver already knows is closed is handed out at all.

    SQLAlchemy's pre-ping costs three round trips on asyncpg (BEGIN, ping, ROLLBACK) on every
    checkout, as much as the work of a call. A connection in steady use has just proved itself;
    one that sat idle (the database may have restarted since) is pinged, and a failed ping makes
    the pool replace it before the call sees it (SQLAlchemy's DisconnectionError protocol).

    Whether asyncpg has seen the connection close costs nothing to ask, so that is asked on
    every checkout: when PostgreSQL ends its backends (a shutdown, pg_terminate_backend) every
    pooled connection closes within milliseconds, and without this check each was still handed
    to one more call (which then failed UNAVAILABLE) before the pool dropped it.
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise exc.DisconnectionError("pooled connection was closed")
        returned = record.info.get("returned")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:  # noqa: BLE001 - any failure means a dead connection
            raise exc.DisconnectionError("pooled connection failed its ping") from error


def _invalidate_unusable_connections(engine: AsyncEngine) -> None:
    """Where SQLAlchemy executes statements itself (Database.ping, the health check), a connection
    that failed in a way that leaves asyncpg's protocol in an unknown state is dropped too, not
    returned to the pool (see _leaves_connection_unusable); SQLAlchemy by itself only drops
    connections asyncpg reports closed. Database.run's own path does the same in
    _as_sqlalchemy_error."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _mark(context: ExceptionContext) -> None:
        driver_error = _driver_cause(context.original_exception)
        if not context.is_disconnect and driver_error is not None and _leaves_connection_unusable(driver_error):
            context.is_disconnect = True


def _leaves_connection_unusable(error: BaseException) -> bool:
    """Whether an asyncpg connection must be dropped after `error` escaped work on it.

    An error PostgreSQL reported for a statement (a PostgresError below FATAL) arrives only once
    the server said ReadyForQuery: the protocol is idle again and the connection can be reused.
    Anything else leaves it in a state nobody knows: an InterfaceError or OSError is a broken
    or misused connection, and an InternalClientError is asyncpg's protocol state machine
    refusing to go on. The one seen in practice: when PostgreSQL ends a backend (fast shutdown,
    pg_terminate_backend, idle_session_timeout) it sends its client a FATAL ErrorResponse and
    closes the socket a moment later. asyncpg has no state for an ErrorResponse on an idle
    connection, so the message puts its protocol in "error consume" (state 2) while the
    connection still looks open; the next statement fails with "cannot switch to state 12;
    another operation (2) is in progress". Before this rule that error escaped untranslated
    (INTERNAL) and the connection went back to the pool.
    """
    import asyncpg

    if isinstance(error, asyncpg.PostgresError):
        return (getattr(error, "severity_en", None) or getattr(error, "severity", None) or "") in ("FATAL", "PANIC")
    return isinstance(error, (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, ConnectionError))


def _driver_cause(error: BaseException | None) -> BaseException | None:
    """The asyncpg exception behind a (possibly SQLAlchemy-wrapped) error, if there is one."""
    seen = 0
    while error is not None and seen < 5:
        if _is_driver_error(error):
            return error
        error = getattr(error, "orig", None) or error.__cause__
        seen += 1
    return None


def sqlstate(error: BaseException) -> str | None:
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def translate(error: Exception) -> DomainError | None:
    """The domain error a driver error stands for, or None when it is a bug of ours."""
    if isinstance(error, exc.TimeoutError):
        return Unavailable("no database connection became free in time")
    if isinstance(error, exc.DBAPIError):
        code = sqlstate(error) or ""
        if code == QUERY_CANCELED:
            return DeadlineExceeded("the database work ran out of time")
        if code in TRANSIENT_SQLSTATES:
            return Aborted("the transaction kept conflicting with concurrent ones; retry", reason="CONCURRENT_UPDATE")
        if error.connection_invalidated or code.startswith(("08", "53", "57P")) or not code:
            return Unavailable("the database is unavailable")
    if isinstance(error, (OSError, ConnectionError)):
        return Unavailable("the database is unavailable")
    return None


async def _cancel_statement(pooled: PoolProxiedConnection) -> None:
    """After a deadline cancelled a statement: make sure PostgreSQL cancelled it too, then drop
    the connection.

    In autocommit a statement still waiting (for a row lock, say) commits as soon as it can run,
    so merely closing our end is not enough: the server only notices once it has committed.
    asyncpg sends a CancelRequest for a cancelled query in a background task, but closing the
    connection cancels that task; so wait for it (briefly) before invalidating the connection.
    """
    driver = pooled.driver_connection
    pending = [task for task in getattr(driver, "_cancellations", ()) if not task.done()]
    if pending:
        await asyncio.shield(asyncio.wait(pending, timeout=CANCEL_WAIT))
    # Closed at once: SQLAlchemy's invalidate() first tries a graceful close that waits up to 2 s
    # for the server's goodbye, which a silent (partitioned) database never sends.
    if driver is not None:
        driver.terminate()
    await _invalidate(pooled)


async def _invalidate(pooled: PoolProxiedConnection) -> None:
    """Drop the connection instead of returning it to the pool (which then opens a new one)."""
    if pooled.is_valid:
        await asyncio.shield(greenlet_spawn(pooled.invalidate))


async def _as_sqlalchemy_error(pooled: PoolProxiedConnection, dialect: Any, error: Exception) -> Exception:
    """The exception SQLAlchemy would have raised for a driver error on this connection; the
    connection is invalidated when SQLAlchemy sees a disconnect or the error leaves it unusable
    (then the error says connection_invalidated, which translate() makes UNAVAILABLE)."""
    if isinstance(error, exc.SQLAlchemyError) or not _is_driver_error(error):
        return error
    adapted: Any = pooled.dbapi_connection
    try:
        adapted._handle_exception(error)  # raises the dialect's DBAPI-style error
    except Exception as translated:  # noqa: BLE001
        # `translated` is the DBAPI-style error the adapted connection raises; typeshed cannot know.
        invalid = dialect.is_disconnect(cast(Any, translated), adapted, None) or _leaves_connection_unusable(error)
        if invalid:
            await _invalidate(pooled)
        return exc.DBAPIError.instance(
            None, None, translated, dialect.loaded_dbapi.Error, connection_invalidated=invalid, dialect=dialect
        )
    return error


def _is_driver_error(error: BaseException) -> bool:
    import asyncpg

    return isinstance(
        error, (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, ConnectionError)
    )


UnitOfWork = Callable[[], contextlib.AbstractAsyncContextManager[Any]]
"""Database._driver or Database._transaction: a connection to run work on, in its way."""


class Database:
    """Runs storage functions the way each declares (storage/units.py), on the driver's connection."""

    def __init__(self, engine: AsyncEngine, default_deadline: float = 30.0, *, track_commits: bool = False) -> None:
        self.engine = engine
        self.default_deadline = default_deadline
        self.track_commits = track_commits
        """Record where each write call's commits reached in the WAL (consistency.py): on when
        reads may go to a standby (SESSION_READ_DATABASE_URL), since it costs a statement."""
        self._pool = engine.sync_engine.pool
        self._idle: Any = getattr(self._pool, "_pool", None)
        """QueuePool's queue of idle connections: a connection returned while it has room goes
        back without IO (a full one means an overflow connection, which the pool closes)."""
        self._dbapi_error = engine.dialect.loaded_dbapi.Error

    async def run(
        self, work: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`await work(connection, *args)` as `work` says it runs: one statement in autocommit
        (its own transaction, one round trip instead of BEGIN, statement, COMMIT), or a
        transaction committed when it returns.

        The connection is asyncpg's own, which skips SQLAlchemy's execution layer (about 0.1 ms
        of CPU per call). Serialization failures and deadlocks are retried a few times (a
        transaction whole); driver errors become domain errors (UNAVAILABLE, ABORTED), translated
        the way SQLAlchemy translates them, so translate() and the retry rules see the same
        exceptions. The whole of it, retries included, must end within the call's deadline (or
        the default bound): past that it is cancelled, rolled back, and reported as
        DEADLINE_EXCEEDED. A connection that failed or whose work was cancelled is invalidated
        rather than returned to the pool.
        """
        unit = self._transaction if unit_of(work) is Unit.TRANSACTION else self._driver
        result = await self._bounded(unit, work, args, kwargs)
        if self.track_commits:
            await self._record_commit_position()
        return result

    async def _record_commit_position(self) -> None:
        """When the current call writes, where its commits reached: pg_current_wal_lsn() read
        after them is at or past the end of their commit records. A failure to read it leaves
        the call without a position (its reads then go to the primary or wait for nothing)
        rather than failing a write that committed."""
        position = consistency.commit_position()
        if position is None:
            return
        try:
            position.lsn = await self._bounded(self._driver, replication.wal_position, (), {})
        except DomainError:
            log.warning("could not read the commit position of a write", exc_info=log.isEnabledFor(logging.DEBUG))

    async def run_replayed(
        self, lsn: str | None, work: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]], /,
        *args: P.args, **kwargs: P.kwargs,
    ) -> T:
        """run(), on a standby: with `lsn`, only once the standby has replayed the WAL up to it,
        checked on the connection the work then runs on (else replication.NotReplayed)."""
        if lsn is None:
            return await self.run(work, *args, **kwargs)

        async def checked(conn: asyncpg.Connection) -> T:
            if not await replication.replayed_past(conn, lsn):
                raise replication.NotReplayed(lsn)
            return await work(conn, *args, **kwargs)

        unit = self._transaction if unit_of(work) is Unit.TRANSACTION else self._driver
        return await self._bounded(unit, checked, (), {})

    async def _checkout(self) -> PoolProxiedConnection:
        """A connection from the engine's pool, as Engine.connect() takes one (the pool's checkout
        events run, driver errors become SQLAlchemy's), without the Connection object around it:
        the work runs on the driver's connection, so SQLAlchemy's execution layer, its
        per-connection isolation-level setting and the third greenlet it needs would be cost with
        no use (about 70 us of CPU per call)."""
        try:
            return await greenlet_spawn(self._pool.connect)
        except self._dbapi_error as error:
            dialect = self.engine.dialect
            await greenlet_spawn(Connection._handle_dbapi_exception_noconnection, error, dialect, self.engine.sync_engine)
            raise

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[asyncpg.Connection]:
        pooled = await self._checkout()
        try:
            yield pooled.driver_connection
        except Exception as error:
            translated = await _as_sqlalchemy_error(pooled, self.engine.dialect, error)
            if translated is error:
                raise
            raise translated from error
        except asyncio.CancelledError:
            await _cancel_statement(pooled)
            raise
        finally:
            if not pooled.is_valid:
                pass  # invalidated above, which returned it to the pool
            elif self._idle is not None and not self._idle.full():
                pooled.close()  # back into a queue with room: no IO, so no greenlet and nothing to shield
            else:  # the pool is full: an overflow connection, which the pool closes (IO)
                await asyncio.shield(greenlet_spawn(pooled.close))

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """BEGIN ... COMMIT on the driver's connection; ROLLBACK when the work raises. A cancelled
        transaction is not rolled back here: _driver cancels its statement and drops the
        connection, which ends the transaction in PostgreSQL."""
        async with self._driver() as conn:
            await conn.execute("BEGIN")
            try:
                yield conn
            except asyncio.CancelledError:
                raise
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def _bounded(self, unit: UnitOfWork, work: Callable[..., Awaitable[T]], args: Any, kwargs: Any) -> T:
        budget = deadlines.remaining(self.default_deadline)
        if budget <= 0:
            raise DeadlineExceeded("the call's deadline passed before its database work began")
        try:
            async with asyncio.timeout(budget):
                return await self._attempts(unit, work, args, kwargs)
        except TimeoutError:
            raise DeadlineExceeded(f"the database work did not finish within {budget:.3f}s") from None

    async def _attempts(self, unit: UnitOfWork, work: Callable[..., Awaitable[T]], args: Any, kwargs: Any) -> T:
        for attempt in range(1, MAX_TRANSIENT_ATTEMPTS + 1):
            try:
                async with unit() as target:
                    return await work(target, *args, **kwargs)
            except (exc.SQLAlchemyError, OSError) as error:
                if sqlstate(error) in TRANSIENT_SQLSTATES and attempt < MAX_TRANSIENT_ATTEMPTS:
                    log.info("retrying transaction after %s (attempt %d)", sqlstate(error), attempt)
                    continue
                domain = translate(error)
                if domain is None:
                    raise
                raise domain from error
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def advisory_lock(self, key: int) -> AsyncIterator[bool]:
        """Try the transaction-scoped advisory lock `key` on a connection of its own and hold it
        until the block ends (True), or yield False at once when another session holds it.

        The connection sits idle in a transaction that only holds the lock (no snapshot is kept
        between statements in READ COMMITTED, no transaction id is taken), so it holds back
        neither vacuum nor anyone but another holder of the key; the lock goes with the
        transaction when the block ends or the connection drops. Transaction-scoped rather than a
        session lock, so it also holds behind pgbouncer in transaction pooling mode, which keeps a
        client on one server connection only for the length of a transaction."""
        async with self._transaction() as conn:
            held = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key)
            yield bool(held)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "not serving"
            log.warning("database health check failed", exc_info=log.isEnabledFor(logging.DEBUG))
            return False

    async def close(self) -> None:
        await self.engine.dispose()
