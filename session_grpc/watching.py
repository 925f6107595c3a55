"""The live side of the change feed: one LISTEN connection per process, fanned out to every
watcher in it, and the loop each WatchSession / WatchUserSessions call runs.

The database is the truth. A notification (`NOTIFY session_changes`, sent by the triggers of
migration 0011 at commit) only says "look": the watchers of the session and of its user it names
wake up and read the table by their cursor (storage/feed.py). Nothing is lost when a notification
is: every watcher also reads once per heartbeat interval, and after the listening connection is
(re)opened, every watcher reads again (changes may have committed while nobody listened).

The listening connection is one asyncpg connection of its own (not from the pool), reopened with
backoff after the database restarts or stops answering (a `SELECT 1` on it every
`check_interval` notices a silent partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace

import asyncpg

from . import auth, deadlines
from .domain.changes import Change, ChangeKind, FeedBatch, FeedQuery
from .domain.errors import NotFound, ResourceExhausted, Unavailable
from .inflight import subject
from .settings import Settings, asyncpg_url
from .singleflight import SingleFlight
from .storage import feed
from .storage.database import Database

log = logging.getLogger(__name__)

CHANNEL = "session_changes"
WATCHERS_REASON = "TOO_MANY_WATCHERS"
FIRST_RETRY = 0.1
LAST_RETRY = 5.0


def listen_url(settings: Settings) -> str | None:
    """Where the LISTEN connection goes (SESSION_LISTEN_DATABASE_URL, else DATABASE_URL unless that is
    a pgbouncer: None, no listening), as asyncpg.connect takes it."""
    if settings.listen_database_url is not None:
        url = asyncpg_url(settings.listen_database_url)
    elif settings.db_pgbouncer:
        return None
    else:
        url = settings.sqlalchemy_url
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class FeedHub:
    """Who watches what in this process, and the one connection that listens for all of them."""

    def __init__(self, dsn: str | None, *, check_interval: float, connect_timeout: float) -> None:
        self._dsn = dsn
        self._check_interval = check_interval
        self._connect_timeout = connect_timeout
        self._sessions: dict[str, set[asyncio.Event]] = {}
        self._users: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is open (tests wait for it)."""
        self.connections = 0
        """How many times the LISTEN connection was opened (1 + reconnects)."""
        self.wakeups = 0
        """Notifications received and reconnections so far: a read that begins after the n-th saw
        every change it announced (see Watches.read)."""

    def start(self) -> None:
        if self._dsn is None:
            log.warning(
                "change feed: not listening (DATABASE_URL is a pgbouncer and SESSION_LISTEN_DATABASE_URL is not set); "
                "watches see changes once per SESSION_WATCH_HEARTBEAT"
            )
            return
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        """Stop listening and wake every watcher, which then ends (UNAVAILABLE, SHUTTING_DOWN)."""
        self.closed = True
        self._wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def watchers(self) -> int:
        return sum(map(len, self._sessions.values())) + sum(map(len, self._users.values()))

    @contextlib.contextmanager
    def subscribe(self, *, session_id: str | None = None, user_id: str | None = None) -> Iterator[asyncio.Event]:
        """An event set whenever a change of the session (or of any session of the user) may have
        committed, or the hub closes."""
        table, key = (self._sessions, session_id) if session_id is not None else (self._users, user_id)
        assert key is not None
        wake = asyncio.Event()
        table.setdefault(key, set()).add(wake)
        try:
            yield wake
        finally:
            waiting = table[key]
            waiting.discard(wake)
            if not waiting:
                del table[key]

    def _notified(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self.wakeups += 1
        session_id, _, user_id = payload.partition(" ")
        for wake in self._sessions.get(session_id, ()):
            wake.set()
        for wake in self._users.get(user_id, ()):
            wake.set()

    def _wake_all(self) -> None:
        self.wakeups += 1
        for table in (self._sessions, self._users):
            for waiting in table.values():
                for wake in waiting:
                    wake.set()

    async def _listen(self) -> None:
        retry = FIRST_RETRY
        while not self.closed:
            try:
                await self._listen_once()
                retry = FIRST_RETRY
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure: reconnect after a pause
                log.warning("change feed listener: %s; reconnecting in %.1fs", error or type(error).__name__, retry)
            await asyncio.sleep(retry)
            retry = min(LAST_RETRY, retry * 2)

    async def _listen_once(self) -> None:
        assert self._dsn is not None
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(CHANNEL, self._notified)
            self.connections += 1
            self.listening.set()
            if self.connections > 1:
                log.info("change feed listener reconnected; every watcher reads again")
            self._wake_all()  # whatever committed while nobody listened
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._check_interval)
                    continue
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._check_interval)
            raise ConnectionError("the listening connection closed")
        finally:
            self.listening.clear()
            conn.terminate()


class WatcherCount:
    """Open watches per principal (token mode): past `limit`, RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[auth.Principal, int] = {}

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        principal = auth.current()
        count = self.open.get(principal, 0)
        if self.limit and count >= self.limit:
            raise ResourceExhausted(
                f"{principal.describe()} already has {count} watches open; close one, or retry after a backoff",
                reason=WATCHERS_REASON,
                subject=subject(principal),
                description=f"at most {self.limit} open watches per principal (SESSION_MAX_WATCHERS_PER_PRINCIPAL)",
            )
        self.open[principal] = count + 1
        try:
            yield
        finally:
            left = self.open[principal] - 1
            if left:
                self.open[principal] = left
            else:
                del self.open[principal]


@dataclass(frozen=True)
class Event:
    """What a watch sends: a change, or (change None) a heartbeat; `cursor` is where to resume."""

    change: Change | None
    cursor: int


class Watches:
    """The loop of a watch: read by cursor, send, wait for a wake-up or the heartbeat, again."""

    def __init__(self, db: Database, hub: FeedHub, heartbeat: float, counter: WatcherCount) -> None:
        self.db = db
        self.hub = hub
        self.heartbeat = heartbeat
        self.counter = counter
        self._reads: SingleFlight[tuple[FeedQuery, int], FeedBatch] = SingleFlight()

    async def read(self, query: FeedQuery) -> FeedBatch:
        """The feed after the query's cursor; one statement shared by every watcher asking the
        same (the ten watchers of a session, woken by one notification, make one read, not ten).

        A watcher only joins a read that began after every wake-up the hub had seen when the
        watcher asked: the read it joins was sent after the notification that woke it, so its
        snapshot holds the change that notification announced. The read runs with the server's
        default bound, not the deadline of whichever watcher started it.
        """

        async def work() -> FeedBatch:
            deadlines.start_call(None)  # this task's own context: no caller's deadline
            return await self.db.run(feed.read_changes, query)

        return await self._reads.run((query, self.hub.wakeups), work)

    async def watch(self, query: FeedQuery) -> AsyncIterator[Event]:
        """Every change after the query's cursor, then each as it commits; a heartbeat after every
        `heartbeat` seconds without one. Ends after a watched session's SESSION_DELETED; ends with
        NOT_FOUND once the user's data is erased (DeleteUserData)."""
        with self.counter.one(), self.hub.subscribe(session_id=query.session_id, user_id=query.user_id) as wake:
            first = due = True
            while True:
                if self.hub.closed:
                    raise Unavailable("the server is shutting down; resume elsewhere with the cursor", reason="SHUTTING_DOWN")
                wake.clear()
                batch = await self.read(query)
                if (first or batch.erased) and not batch.found:
                    raise NotFound("session", query.session_id or "")
                if batch.erased:
                    # DeleteUserData removed the user's feed: nothing is left to send, and change
                    # ids start over, so this cursor can no longer say what is new.
                    raise NotFound("change feed of user", query.user_id or "")
                for change in batch.changes:
                    yield Event(change, change.change_id)
                    if change.kind is ChangeKind.SESSION_DELETED and query.session_id is not None:
                        return
                if due and not batch.changes:
                    # The first one says where "now" is; later ones keep idle connections open.
                    yield Event(None, batch.cursor)
                first = due = False
                query = replace(query, after=batch.cursor)
                if batch.more:
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), self.heartbeat)
                except TimeoutError:
                    due = True
