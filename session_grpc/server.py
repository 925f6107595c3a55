"""`build_server(settings)` makes a ready-to-start server; `serve(settings)` runs one until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import embedded, migrations, pruning, reflection
from .domain.retention import PruneReport
from ._proto.session.v1 import session_pb2, session_pb2_grpc
from .paging import PageTokens
from .servicers.memories import MemoryServicer
from .servicers.messages import MessageServicer
from .storage.group_commit import GroupCommit
from .servicers.sessions import SessionServicer
from .servicers.retention import RetentionServicer
from .servicers.usage import UsageServicer
from .servicers.userdata import UserDataServicer
from .settings import Settings, SettingsError, format_duration
from .domain.errors import DomainError
from .storage import search, sessions
from .storage.database import Database, create_engine
from .storage.routing import ReadRouting
from .consistency import ReadYourWrites
from .binding import AddressInUse, ensure_free, in_use_message
from .accounts import AccountCheck, AccountChecker, NoAccountCheck
from .auth import Authenticate, TokenVerifier
from .authorization import Authorize, CheckStanding
from .boundary import Boundary
from .deadlines import StartDeadline
from .draining import Drain
from .inflight import LimitInFlight
from .wire import RefuseMalformed
from .watching import FeedHub, WatcherCount, Watches, listen_url
from .observability import Observability, configure_logging, tracing_interceptors

log = logging.getLogger(__name__)

LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
SERVICE_NAMES = tuple(
    session_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("SessionService", "MessageService", "MemoryService", "UsageService", "RetentionService",
                 "UserDataService")
)


@dataclass
class SessionServer:
    """A built server: start() it, then stop() it; `port` is the bound port (useful with PORT=0)."""

    settings: Settings
    server: grpc.aio.Server
    db: Database
    health: health.aio.HealthServicer
    drain: Drain
    accounts: AccountCheck
    verifier: TokenVerifier | None
    port: int
    hub: FeedHub
    observability: Observability | None = None
    reads: ReadRouting | None = None
    """Where heavy reads run (the standby of SESSION_READ_DATABASE_URL, or the primary)."""
    metrics_port: int | None = None
    """The bound metrics port once started, when SESSION_METRICS_PORT is set."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _abandoned: set[asyncio.Future[bool]] = field(default_factory=set)

    async def start(self) -> None:
        await self.check_health()
        await self.check_search_configuration()
        self.hub.start()
        await self.server.start()
        if self.observability is not None and self.settings.metrics_port:
            self.metrics_port = self.observability.start_http(self.settings.metrics_host, self.settings.metrics_port)
        self._tasks.append(asyncio.create_task(self._every(self.settings.health_interval, self.check_health)))
        if self.settings.expiry_interval > 0:
            self._tasks.append(asyncio.create_task(self._every(self.settings.expiry_interval, self.expire_idle)))
        if self.settings.prune_interval > 0:
            self._tasks.append(asyncio.create_task(self._every(self.settings.prune_interval, self.prune)))
        log.info("serving %s on %s:%d", ", ".join(SERVICE_NAMES), self.settings.host, self.port)
        self._log_trust_settings()
        if self.settings.account is None:
            log.warning("account validation is OFF: SESSION_ACCOUNT_ADDRESS is not set, every user_id is accepted")
        else:
            log.info(
                "checking users with the account service at %s (fail-open %s)",
                self.settings.account.address, "on" if self.settings.account.fail_open else "off",
            )

    def _log_trust_settings(self) -> None:
        settings = self.settings
        if settings.auth_mode == "none":
            where = "loopback only" if settings.host in LOOPBACK else f"{settings.host} (set explicitly)"
            log.warning(
                "AUTHENTICATION IS OFF (SESSION_AUTH_MODE=none): every caller acts as an admin; listening on %s",
                where,
            )
            if settings.host not in LOOPBACK:
                log.warning("anyone who can reach %s:%d can read and change every session", settings.host, self.port)
        else:
            assert settings.auth is not None
            log.info("bearer tokens verified by the auth service at %s", settings.auth.address)
        log.info(
            "transport: %s",
            "mutual TLS" if settings.tls_client_ca else "TLS" if settings.tls_cert else "plaintext",
        )
        if settings.auth_mode == "token" and settings.tls_cert is None:
            log.warning(
                "PLAINTEXT (SESSION_ALLOW_PLAINTEXT=true): bearer tokens cross the network in the clear on %s:%d; "
                "only behind a proxy that terminates TLS, or on a laptop",
                settings.host, self.port,
            )

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING first; calls still served for SESSION_SHUTDOWN_DRAIN_DELAY, so load
        balancers and clients that watch health move away before anything is refused (grpc core
        fails calls it holds unstarted with CANCELLED when the listener closes, grpc/grpc#41785);
        then new calls refused with UNAVAILABLE, in-flight calls get up to `grace` seconds to
        finish, and the server and the pool close."""
        grace = self.settings.shutdown_grace if grace is None else grace
        await self.health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.settings.shutdown_drain_delay > 0:
            log.info(
                "health NOT_SERVING; still serving for %.1fs (SESSION_SHUTDOWN_DRAIN_DELAY) while clients move away",
                self.settings.shutdown_drain_delay,
            )
            await asyncio.sleep(self.settings.shutdown_drain_delay)
        started = asyncio.get_running_loop().time()
        self.drain.start_draining()
        await self.hub.close()  # open watches end now (UNAVAILABLE): their clients resume elsewhere
        if not await self.drain.wait_idle(grace):
            log.warning("%d calls still running after %.1fs; cancelling them", self.drain.in_flight, grace)
        left = max(0.0, grace - (asyncio.get_running_loop().time() - started))
        # Only health watches and reflection streams can be open now; they need no long goodbye.
        await self.server.stop(min(left, 1.0))
        await self.accounts.close()
        if self.verifier is not None:
            await self.verifier.close()
        if self.observability is not None:
            self.observability.stop_http()
        await self.db.close()
        if self.reads is not None:
            await self.reads.close()
        log.info("stopped")

    async def check_health(self) -> None:
        """SERVING while the database answers a query within the health interval (at least 1 s):
        a database that stops answering without closing its sockets (a network partition) would
        otherwise hold the ping, and health at SERVING, for as long as the partition lasts."""
        bound = max(1.0, self.settings.health_interval)
        ping = asyncio.ensure_future(self.db.ping())
        done, _ = await asyncio.wait({ping}, timeout=bound)
        if ping in done:
            serving = ping.result()
        else:  # cancelled, not awaited: closing a connection to a silent database can take long too
            ping.cancel()
            self._abandoned.add(ping)
            ping.add_done_callback(self._abandoned.discard)
            log.warning("database health check got no answer within %.1fs", bound)
            serving = False
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def check_search_configuration(self) -> None:
        """Refuse to serve search in another text search configuration than the stored vectors':
        a query parsed in `english` against vectors made in `simple` finds the wrong things
        silently. A database that does not answer yet, or is not migrated that far, is left to
        the health check and to the migration."""
        try:
            stored = await self.db.run(search.stored_configuration)
        except DomainError:
            log.warning("could not read the search configuration of the database; not checked")
            return
        wanted = self.settings.search_config
        if stored is not None and stored != wanted:
            raise SettingsError(
                f"SESSION_SEARCH_CONFIG is {wanted!r} but the database's messages are indexed in {stored!r}: "
                "set it to that, or change the database's first (README, Searching messages)"
            )

    async def expire_idle(self) -> None:
        idle = timedelta(seconds=self.settings.expiry_idle)
        count = await self.db.run(sessions.expire_sessions_if_free, idle)
        if count is None:
            log.debug("another replica is expiring sessions; skipping this turn")
        elif count:
            log.info("expired %d sessions idle for more than %s", count, format_duration(self.settings.expiry_idle))

    async def prune(self) -> PruneReport | None:
        """One pass of the retention policies (pruning.py); None when another replica's pass holds
        the lock. What it removed goes to session_grpc_pruned_rows_total and the log."""
        report = await pruning.prune(self.db, self.settings.prune_batch)
        if report is None:
            log.debug("another replica is pruning; skipping this turn")
            return None
        for (app, rule), count in sorted(report.removed.items()):
            if self.observability is not None:
                self.observability.metrics.pruned.labels(app, rule.value).inc(count)
            log.info("pruned %d rows of app %s under its %s", count, app, rule.value)
        return report

    @staticmethod
    async def _every(seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # noqa: BLE001 - a background job must outlive one failure
                log.warning("background job %s failed", job.__name__, exc_info=True)


@contextlib.asynccontextmanager
async def running(settings: Settings, grace: float = 0.0) -> AsyncIterator[SessionServer]:
    """A built and started server for the duration of the block (tests, tools, embedding)."""
    server = build_server(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=grace)


def build_server(settings: Settings, *, share_port: bool = False) -> SessionServer:
    """Everything wired and bound, not yet started. The database URL must be set. A port in use
    is AddressInUse; `share_port` (the workers of `serve --workers N`) binds with SO_REUSEPORT."""
    standby = settings.read_sqlalchemy_url
    db = Database(create_engine(settings), settings.default_deadline, track_commits=standby is not None)
    reads = ReadRouting(db, None if standby is None else Database(create_engine(settings, standby), settings.default_deadline))
    tokens = PageTokens(settings.page_token_secret)
    limits = settings.limits
    drain = Drain()
    observability = Observability(db.engine, access_log_enabled=settings.access_log)
    verifier = TokenVerifier(settings.auth) if settings.auth_mode == "token" and settings.auth else None
    authenticate = [Authenticate(verifier)] if verifier is not None else []
    accounts: AccountCheck = AccountChecker(settings.account) if settings.account else NoAccountCheck()
    standing = [CheckStanding(accounts)] if settings.account else []
    per_principal = settings.max_calls_per_principal
    limit = [LimitInFlight(per_principal)] if verifier is not None and per_principal > 0 else []
    boundary = Boundary(
        [
            observability.step, drain, *authenticate, RefuseMalformed(), StartDeadline(), Authorize(), *limit, *standing,
            ReadYourWrites(),
        ]
    )
    server = grpc.aio.server(
        interceptors=[*tracing_interceptors(), boundary],
        options=channel_options(settings, share_port),
    )
    observability.watch_accounts(accounts)
    hub = FeedHub(
        listen_url(settings),
        check_interval=max(1.0, settings.health_interval),
        connect_timeout=settings.db_connect_timeout,
    )
    watchers = WatcherCount(settings.max_watchers_per_principal if verifier is not None else 0)
    watches = Watches(db, hub, settings.watch_heartbeat, watchers)
    session_pb2_grpc.add_SessionServiceServicer_to_server(
        SessionServicer(db, tokens, limits, watches, reads=reads), server
    )
    session_pb2_grpc.add_MessageServiceServicer_to_server(
        MessageServicer(db, tokens, limits, settings.search_config, reads=reads, appends=GroupCommit(
            db, enabled=settings.group_commit, max_group=settings.group_commit_max,
            observe=observability.metrics.append_group_size.observe,
        )), server
    )
    session_pb2_grpc.add_MemoryServiceServicer_to_server(MemoryServicer(db, limits), server)
    session_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(db, limits), server)
    session_pb2_grpc.add_RetentionServiceServicer_to_server(RetentionServicer(db, limits), server)
    session_pb2_grpc.add_UserDataServiceServicer_to_server(UserDataServicer(db, limits), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    port = _bind(server, settings, share_port)
    return SessionServer(
        settings=settings, server=server, db=db, health=health_servicer, drain=drain, accounts=accounts, port=port,
        verifier=verifier, observability=observability, reads=reads, hub=hub,
    )


def _bind(server: grpc.aio.Server, settings: Settings, share_port: bool) -> int:
    if not share_port:
        ensure_free(settings.host, settings.port)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's "Failed to bind to address": taken since ensure_free looked
        raise AddressInUse(in_use_message(settings.host, settings.port)) from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from SESSION_TLS_CERT/KEY; with SESSION_TLS_CLIENT_CA, client certificates are required."""
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise SettingsError("TLS needs both SESSION_TLS_CERT and SESSION_TLS_KEY")
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_options(settings: Settings, share_port: bool = False) -> list[tuple[str, int]]:
    """Transport settings: the receive limit that admits every request within the size limits,
    keepalive / connection-age behaviour that suits running behind a load balancer, and
    SO_REUSEPORT only when the port is shared with sibling workers (binding.py)."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.max_receive_message_length", settings.limits.max_request_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # gRPC core's own backlog of calls not yet taken up by Python: past the soft limit it refuses
        # new calls at random (the client sees CANCELLED), past the hard one all. gRPC's 1000/3000
        # refused ~10 % of a 2,000-call burst that this server then serves in ~2 s.
        ("grpc.server.max_pending_requests", settings.max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", 3 * settings.max_pending_calls),
        ("grpc.keepalive_time_ms", ms(settings.keepalive_time)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients may ping as often as every 10 s without being told "too many pings".
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", int(share_port)),
    ]
    if settings.max_connection_age > 0:
        options.append(("grpc.max_connection_age_ms", ms(settings.max_connection_age)))
        options.append(("grpc.max_connection_age_grace_ms", ms(settings.max_connection_age_grace)))
    if settings.max_connections > 0:
        options.append(("grpc.max_allowed_incoming_connections", settings.max_connections))
    if settings.max_connection_idle > 0:
        options.append(("grpc.max_connection_idle_ms", ms(settings.max_connection_idle)))
    return options


async def _serve(settings: Settings, share_port: bool) -> None:
    if settings.migrate_on_start:
        await migrations.upgrade(settings.sqlalchemy_url)
    service = build_server(settings, share_port=share_port)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("signal received; draining for up to %.1fs", settings.shutdown_grace)
    await service.stop()


def serve(settings: Settings, share_port: bool = False) -> None:
    """Run until SIGTERM or SIGINT. Without DATABASE_URL, an embedded PostgreSQL is started first.
    A taken port ends the process with status 1 and says so (`share_port`: see build_server)."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    configure_logging()
    with embedded.database(settings) as settings:
        try:
            asyncio.run(_serve(settings, share_port))
        except AddressInUse as error:
            log.error("%s", error)
            raise SystemExit(1) from None
        except SettingsError as error:
            log.error("%s", error)
            raise SystemExit(2) from None
