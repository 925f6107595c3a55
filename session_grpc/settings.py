"""One typed settings object, read once from the environment and passed in explicitly."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .accounts import AccountSettings
from .auth import AuthSettings
from .domain.limits import Limits

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class SettingsError(ValueError):
    """A setting in the environment cannot be understood."""


def parse_duration(text: str, name: str = "duration") -> float:
    """Seconds from "300", "300s", "5m", "24h", "2d" or "250ms"."""
    match = _DURATION.match(text)
    if not match:
        raise SettingsError(f"{name}: {text!r} is not a duration like 30s, 5m, 24h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """A duration written the way the settings are typed: "24h", "90m", "30s", "250ms".

    The largest unit in which it is a whole number, hours at most (like Go's durations), so the
    default idle time prints as "24h" and never as "1 day, 0:00:00".
    """
    if seconds == 0:
        return "0s"
    milliseconds = round(seconds * 1000)
    if abs(seconds * 1000 - milliseconds) > 1e-6:
        return f"{seconds:g}s"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def asyncpg_url(url: str) -> str:
    """Accept the usual postgresql:// (or postgres://) URL and name the asyncpg driver. A URL
    with several hosts (`postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write`,
    what `pg_autoctl show uri` prints) becomes SQLAlchemy's spelling of it (`?host=h1:5432&host=...`)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + _hosts_as_query(url[len(prefix) :])
    raise SettingsError(f"DATABASE_URL must start with postgresql://, got {url.split(':', 1)[0]}://")


def _hosts_as_query(rest: str) -> str:
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return rest
    database, _, query = path.partition("?")
    listed = [host if ":" in host.rsplit("]", 1)[-1] else f"{host}:5432" for host in hosts.split(",")]
    extra = "&".join(f"host={host}" for host in listed)
    return f"{userinfo}{at}/{database}?{extra}" + (f"&{query}" if query else "")


@dataclass(frozen=True)
class Settings:
    """Every setting of the server. Field docs are the README's configuration table."""

    port: int = 8203
    """PORT: TCP port to listen on; 0 picks a free one."""
    host: str = "localhost"
    """SESSION_HOST: address to bind; loopback by default, 0.0.0.0 or [::] for all interfaces."""
    database_url: str | None = None
    """DATABASE_URL: postgresql://user@host:port/db; unset means an embedded PostgreSQL."""
    embedded_data_dir: Path = Path(".pgdata")
    """SESSION_EMBEDDED_DATA_DIR: where the embedded PostgreSQL keeps its data."""
    migrate_on_start: bool = False
    """SESSION_MIGRATE_ON_START: apply Alembic migrations before serving (make run does)."""
    db_pool_size: int = 20
    """SESSION_DB_POOL_SIZE: connections kept open to PostgreSQL (per worker process)."""
    db_max_overflow: int = 0
    """SESSION_DB_MAX_OVERFLOW: extra connections opened in bursts and closed after each use."""
    db_pool_timeout: float = 5.0
    """SESSION_DB_POOL_TIMEOUT: seconds to wait for a free connection before UNAVAILABLE."""
    expiry_interval: float = 300.0
    """SESSION_EXPIRY_INTERVAL: how often the server expires idle sessions; 0 turns it off."""
    expiry_idle: float = 86400.0
    """SESSION_EXPIRY_IDLE: idle time after which an ACTIVE session expires."""
    prune_interval: float = 600.0
    """SESSION_PRUNE_INTERVAL: how often the server applies the apps' retention policies (one replica at
    a time); 0 turns it off. Nothing is removed from an app without a policy."""
    prune_batch: int = 500
    """SESSION_PRUNE_BATCH: rows the prune job removes per batch, each batch a short transaction of its own."""
    health_interval: float = 5.0
    """SESSION_HEALTH_INTERVAL: how often health checks the database."""
    shutdown_grace: float = 10.0
    """SESSION_SHUTDOWN_GRACE: seconds in-flight calls get to finish on SIGTERM."""
    shutdown_drain_delay: float = 0.0
    """SESSION_SHUTDOWN_DRAIN_DELAY: on SIGTERM, time health says NOT_SERVING while calls are still
    served, so load balancers and clients move away before the server refuses and closes; 0 = none."""
    page_token_secret: str = "session-grpc-page-token"
    """SESSION_PAGE_TOKEN_SECRET: HMAC key that seals page tokens; same on every replica. This
    default is public: enough in mode none (every caller is an admin anyway), refused in token mode."""
    search_config: str = "simple"
    """SESSION_SEARCH_CONFIG: PostgreSQL text search configuration of SearchMessages (simple, english, ...);
    the migration that adds search stores message vectors in it, and the server refuses to start when
    the database's differs (see README, Searching messages)."""
    log_level: str = "INFO"
    """SESSION_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    metrics_port: int = 0
    """SESSION_METRICS_PORT: Prometheus metrics over HTTP on this port; 0 = off."""
    metrics_host: str = "127.0.0.1"
    """SESSION_METRICS_HOST: address the metrics endpoint binds; loopback unless set (it has no auth)."""
    access_log: bool = False
    """SESSION_ACCESS_LOG: one JSON log line per call at INFO; failed calls are logged regardless."""
    read_database_url: str | None = None
    """SESSION_READ_DATABASE_URL: a hot standby of DATABASE_URL; heavy reads go there (read-your-writes
    by commit position, see session_grpc/consistency.py); unset: everything on DATABASE_URL."""
    db_pgbouncer: bool = False
    """SESSION_DB_PGBOUNCER: DATABASE_URL is a pgbouncer in transaction (or statement) pooling mode:
    no prepared statements are kept and no statement_timeout is sent at connect (set it in pgbouncer)."""
    listen_database_url: str | None = None
    """SESSION_LISTEN_DATABASE_URL: PostgreSQL itself (the primary), for the change feed's one LISTEN
    connection; unset: DATABASE_URL, or with SESSION_DB_PGBOUNCER no listening at all (LISTEN needs
    a session of its own, which transaction pooling does not keep): watches then read once per
    SESSION_WATCH_HEARTBEAT."""
    db_connect_timeout: float = 1.0
    """SESSION_DB_CONNECT_TIMEOUT: how long opening a database connection may take before UNAVAILABLE."""
    default_deadline: float = 30.0
    """SESSION_DEFAULT_DEADLINE: bound on a call's database work when the client set no deadline."""
    group_commit: bool = True
    """SESSION_GROUP_COMMIT: AddMessage calls that arrive while an append is in flight are written
    together, one statement for many sessions (storage/group_commit.py); off: each alone."""
    group_commit_max: int = 64
    """SESSION_GROUP_COMMIT_MAX: the most AddMessage calls one group writes."""
    keepalive_time: float = 60.0
    """SESSION_KEEPALIVE_TIME: idle time before the server pings a client connection."""
    keepalive_timeout: float = 20.0
    """SESSION_KEEPALIVE_TIMEOUT: how long an unanswered ping keeps the connection open."""
    max_connection_age: float = 0.0
    """SESSION_MAX_CONNECTION_AGE: close connections older than this (GOAWAY) so load spreads; 0 = never."""
    max_connection_age_grace: float = 30.0
    """SESSION_MAX_CONNECTION_AGE_GRACE: time calls on an aged-out connection get to finish."""
    max_connection_idle: float = 0.0
    """SESSION_MAX_CONNECTION_IDLE: close connections with no calls for this long; 0 = never."""
    max_concurrent_streams: int = 1000
    """SESSION_MAX_CONCURRENT_STREAMS: calls at once on one client connection (HTTP/2); more wait in the client."""
    max_pending_calls: int = 5000
    """SESSION_MAX_PENDING_CALLS: calls received but not yet taken up, per process; past it gRPC refuses some (CANCELLED)."""
    max_connections: int = 1000
    """SESSION_MAX_CONNECTIONS: client connections at once, per process; more are closed on accept; 0 = no limit."""
    max_calls_per_principal: int = 64
    """SESSION_MAX_CALLS_PER_PRINCIPAL: calls in flight per principal (token mode); more are RESOURCE_EXHAUSTED."""
    watch_heartbeat: float = 15.0
    """SESSION_WATCH_HEARTBEAT: a watch with nothing to send sends a heartbeat this often (keeps proxies from closing it)."""
    max_watchers_per_principal: int = 16
    """SESSION_MAX_WATCHERS_PER_PRINCIPAL: open WatchSession/WatchUserSessions calls per principal (token mode); 0 = no limit."""
    limits: Limits = Limits()
    """SESSION_MAX_*: the request size limits, see session_grpc/domain/limits.py."""
    account: AccountSettings | None = None
    """SESSION_ACCOUNT_*: the account service to check users with; None turns the check off."""
    auth_mode: str = "none"
    """SESSION_AUTH_MODE: none (every caller is the trusted operator) or token (bearer tokens)."""
    auth: AuthSettings | None = None
    """SESSION_AUTH_*: the auth service that verifies tokens (required in token mode)."""
    tls_cert: Path | None = None
    """SESSION_TLS_CERT: PEM certificate chain; with SESSION_TLS_KEY, the server speaks TLS."""
    tls_key: Path | None = None
    """SESSION_TLS_KEY: PEM private key of that certificate."""
    tls_client_ca: Path | None = None
    """SESSION_TLS_CLIENT_CA: PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."""
    allow_plaintext: bool = False
    """SESSION_ALLOW_PLAINTEXT: let token mode serve without TLS (bearer tokens in the clear)."""

    def __post_init__(self) -> None:
        """Refuse trust settings that would silently expose tokens or let page tokens be forged."""
        if self.auth_mode not in ("none", "token"):
            raise SettingsError(f"SESSION_AUTH_MODE must be none or token, got {self.auth_mode!r}")
        if self.auth_mode != "token":
            return
        if self.auth is None:
            raise SettingsError("SESSION_AUTH_MODE=token needs SESSION_AUTH_ADDRESS (the auth service)")
        if self.page_token_secret == Settings.page_token_secret or len(self.page_token_secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"SESSION_AUTH_MODE=token needs SESSION_PAGE_TOKEN_SECRET: a secret of at least {MIN_SECRET_LENGTH} "
                "characters, the same on every replica (the built-in default is public, and anyone could forge "
                "page tokens with it); e.g. `openssl rand -hex 32`"
            )
        if self.tls_cert is None and not self.allow_plaintext:
            raise SettingsError(
                "SESSION_AUTH_MODE=token without TLS would send bearer tokens in the clear: set SESSION_TLS_CERT "
                "and SESSION_TLS_KEY, or SESSION_ALLOW_PLAINTEXT=true behind a proxy that terminates TLS "
                "(or on a laptop)"
            )

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is None:
            raise SettingsError("no database URL; start the embedded database first")
        return asyncpg_url(self.database_url)

    @property
    def read_sqlalchemy_url(self) -> str | None:
        return None if self.read_database_url is None else asyncpg_url(self.read_database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings named in `environ` (default os.environ); each unset or empty variable
        takes its field's default above, where every default is written (once)."""
        env = os.environ if environ is None else environ
        try:
            mode = _read(env, "SESSION_AUTH_MODE", cls.auth_mode, _auth_mode)
            return cls(
                port=_read(env, "PORT", cls.port, _int),
                host=_read(env, "SESSION_HOST", cls.host if mode == "none" else ALL_INTERFACES, _text),
                database_url=_read(env, "DATABASE_URL", cls.database_url, _text),
                embedded_data_dir=_read(env, "SESSION_EMBEDDED_DATA_DIR", cls.embedded_data_dir, _as_path),
                migrate_on_start=_read(env, "SESSION_MIGRATE_ON_START", cls.migrate_on_start, _bool),
                db_pool_size=_read(env, "SESSION_DB_POOL_SIZE", cls.db_pool_size, _int),
                db_max_overflow=_read(env, "SESSION_DB_MAX_OVERFLOW", cls.db_max_overflow, _int),
                db_pool_timeout=_read(env, "SESSION_DB_POOL_TIMEOUT", cls.db_pool_timeout, parse_duration),
                expiry_interval=_read(env, "SESSION_EXPIRY_INTERVAL", cls.expiry_interval, parse_duration),
                expiry_idle=_read(env, "SESSION_EXPIRY_IDLE", cls.expiry_idle, parse_duration),
                prune_interval=_read(env, "SESSION_PRUNE_INTERVAL", cls.prune_interval, parse_duration),
                prune_batch=_read(env, "SESSION_PRUNE_BATCH", cls.prune_batch, _positive),
                health_interval=_read(env, "SESSION_HEALTH_INTERVAL", cls.health_interval, parse_duration),
                shutdown_grace=_read(env, "SESSION_SHUTDOWN_GRACE", cls.shutdown_grace, parse_duration),
                shutdown_drain_delay=_read(
                    env, "SESSION_SHUTDOWN_DRAIN_DELAY", cls.shutdown_drain_delay, parse_duration
                ),
                page_token_secret=_read(env, "SESSION_PAGE_TOKEN_SECRET", cls.page_token_secret, _text),
                log_level=_read(env, "SESSION_LOG_LEVEL", cls.log_level, _log_level),
                search_config=_read(env, "SESSION_SEARCH_CONFIG", cls.search_config, search_config),
                metrics_port=_read(env, "SESSION_METRICS_PORT", cls.metrics_port, _int),
                metrics_host=_read(env, "SESSION_METRICS_HOST", cls.metrics_host, _text),
                access_log=_read(env, "SESSION_ACCESS_LOG", cls.access_log, _bool),
                read_database_url=_read(env, "SESSION_READ_DATABASE_URL", cls.read_database_url, _text),
                db_pgbouncer=_read(env, "SESSION_DB_PGBOUNCER", cls.db_pgbouncer, _bool),
                listen_database_url=_read(env, "SESSION_LISTEN_DATABASE_URL", cls.listen_database_url, _text),
                db_connect_timeout=_read(env, "SESSION_DB_CONNECT_TIMEOUT", cls.db_connect_timeout, parse_duration),
                default_deadline=_read(env, "SESSION_DEFAULT_DEADLINE", cls.default_deadline, parse_duration),
                group_commit=_read(env, "SESSION_GROUP_COMMIT", cls.group_commit, _bool),
                group_commit_max=_read(env, "SESSION_GROUP_COMMIT_MAX", cls.group_commit_max, _positive),
                keepalive_time=_read(env, "SESSION_KEEPALIVE_TIME", cls.keepalive_time, parse_duration),
                keepalive_timeout=_read(env, "SESSION_KEEPALIVE_TIMEOUT", cls.keepalive_timeout, parse_duration),
                max_connection_age=_read(env, "SESSION_MAX_CONNECTION_AGE", cls.max_connection_age, parse_duration),
                max_connection_age_grace=_read(
                    env, "SESSION_MAX_CONNECTION_AGE_GRACE", cls.max_connection_age_grace, parse_duration
                ),
                max_connection_idle=_read(env, "SESSION_MAX_CONNECTION_IDLE", cls.max_connection_idle, parse_duration),
                max_concurrent_streams=_read(env, "SESSION_MAX_CONCURRENT_STREAMS", cls.max_concurrent_streams, _positive),
                max_pending_calls=_read(env, "SESSION_MAX_PENDING_CALLS", cls.max_pending_calls, _positive),
                max_connections=_read(env, "SESSION_MAX_CONNECTIONS", cls.max_connections, _count),
                max_calls_per_principal=_read(
                    env, "SESSION_MAX_CALLS_PER_PRINCIPAL", cls.max_calls_per_principal, _count
                ),
                watch_heartbeat=_read(env, "SESSION_WATCH_HEARTBEAT", cls.watch_heartbeat, _positive_duration),
                max_watchers_per_principal=_read(
                    env, "SESSION_MAX_WATCHERS_PER_PRINCIPAL", cls.max_watchers_per_principal, _count
                ),
                limits=_limits(env),
                account=_account(env),
                auth_mode=mode,
                auth=_auth(env),
                tls_cert=_read(env, "SESSION_TLS_CERT", cls.tls_cert, _file),
                tls_key=_read(env, "SESSION_TLS_KEY", cls.tls_key, _file),
                tls_client_ca=_read(env, "SESSION_TLS_CLIENT_CA", cls.tls_client_ca, _file),
                allow_plaintext=_read(env, "SESSION_ALLOW_PLAINTEXT", cls.allow_plaintext, _bool),
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc


MIN_SECRET_LENGTH = 16
"""Shortest SESSION_PAGE_TOKEN_SECRET token mode accepts."""

ALL_INTERFACES = "0.0.0.0"
"""SESSION_HOST's default in token mode (mode none stays on loopback)."""

T = TypeVar("T")


def _read(env: Mapping[str, str], name: str, default: T, parse: Callable[[str, str], T]) -> T:
    """`name` from the environment through `parse`; `default` when unset or empty."""
    text = env.get(name, "").strip()
    return parse(text, name) if text else default


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name}: {text!r} is not a whole number") from None


def _count(text: str, name: str) -> int:
    """A limit: a whole number, 0 for none."""
    value = _int(text, name)
    if value < 0:
        raise SettingsError(f"{name} must be 0 (no limit) or more")
    return value


def _positive(text: str, name: str) -> int:
    value = _int(text, name)
    if value < 1:
        raise SettingsError(f"{name} must be at least 1")
    return value


def _positive_duration(text: str, name: str) -> float:
    value = parse_duration(text, name)
    if value <= 0:
        raise SettingsError(f"{name} must be longer than 0s")
    return value


def _text(text: str, name: str) -> str:
    return text


def _as_path(text: str, name: str) -> Path:
    return Path(text)


def _file(text: str, name: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise SettingsError(f"{name}: {text} is not a readable file")
    return path


SEARCH_CONFIG = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")


def search_config(text: str, name: str = "SESSION_SEARCH_CONFIG") -> str:
    """A text search configuration's name (optionally schema-qualified), lowercase; it is written
    into SQL by the migration, so nothing else passes."""
    if not SEARCH_CONFIG.fullmatch(text):
        raise SettingsError(f"{name} must name a text search configuration like simple or english, got {text!r}")
    return text


def _log_level(text: str, name: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"{name} must be DEBUG, INFO, WARNING or ERROR, got {text!r}")
    return level


LIMIT_VARIABLES = {
    "content_bytes": "SESSION_MAX_CONTENT_BYTES",
    "struct_bytes": "SESSION_MAX_STRUCT_BYTES",
    "struct_depth": "SESSION_MAX_STRUCT_DEPTH",
    "title_length": "SESSION_MAX_TITLE_LENGTH",
    "summary_length": "SESSION_MAX_SUMMARY_LENGTH",
    "facts": "SESSION_MAX_FACTS",
    "fact_length": "SESSION_MAX_FACT_LENGTH",
    "page_size": "SESSION_MAX_PAGE_SIZE",
    "search_query_length": "SESSION_MAX_SEARCH_QUERY_LENGTH",
    "search_page_size": "SESSION_MAX_SEARCH_PAGE_SIZE",
    "payload_bytes": "SESSION_MAX_PAYLOAD_BYTES",
    "usage_buckets": "SESSION_MAX_USAGE_BUCKETS",
    "batch_messages": "SESSION_MAX_BATCH_MESSAGES",
    "fork_messages": "SESSION_MAX_FORK_MESSAGES",
}


def _limits(env: Mapping[str, str]) -> Limits:
    values = {}
    for name, variable in LIMIT_VARIABLES.items():
        value = _read(env, variable, None, _int)
        if value is not None:
            if value < 1:
                raise SettingsError(f"{variable} must be at least 1")
            values[name] = value
    return Limits(**values)


def _account(env: Mapping[str, str]) -> AccountSettings | None:
    address = _read(env, "SESSION_ACCOUNT_ADDRESS", None, _text)
    if address is None:
        return None
    d = AccountSettings
    return AccountSettings(
        address=address,
        deadline=_read(env, "SESSION_ACCOUNT_DEADLINE", d.deadline, parse_duration),
        retries=_read(env, "SESSION_ACCOUNT_RETRIES", d.retries, _int),
        positive_ttl=_read(env, "SESSION_ACCOUNT_CACHE_TTL", d.positive_ttl, parse_duration),
        negative_ttl=_read(env, "SESSION_ACCOUNT_NEGATIVE_TTL", d.negative_ttl, parse_duration),
        cache_size=_read(env, "SESSION_ACCOUNT_CACHE_SIZE", d.cache_size, _int),
        fail_open=_read(env, "SESSION_ACCOUNT_FAIL_OPEN", d.fail_open, _bool),
    )


def _auth_mode(text: str, name: str) -> str:
    mode = text.lower()
    if mode not in ("none", "token"):
        raise SettingsError(f"{name} must be none or token, got {mode!r}")
    return mode


def _auth(env: Mapping[str, str]) -> AuthSettings | None:
    address = _read(env, "SESSION_AUTH_ADDRESS", None, _text)
    if address is None:
        return None
    d = AuthSettings
    return AuthSettings(
        address=address,
        deadline=_read(env, "SESSION_AUTH_DEADLINE", d.deadline, parse_duration),
        cache_ttl=_read(env, "SESSION_AUTH_CACHE_TTL", d.cache_ttl, parse_duration),
        cache_size=_read(env, "SESSION_AUTH_CACHE_SIZE", d.cache_size, _int),
        negative_ttl=_read(env, "SESSION_AUTH_NEGATIVE_TTL", d.negative_ttl, parse_duration),
    )


def _bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}: {text!r} is not true or false")
