"""One typed settings object, read once from the environment and passed in explicitly."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
    """Accept the usual postgresql:// (or postgres://) URL and name the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise SettingsError(f"DATABASE_URL must start with postgresql://, got {url.split(':', 1)[0]}://")


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
    health_interval: float = 5.0
    """SESSION_HEALTH_INTERVAL: how often health checks the database."""
    shutdown_grace: float = 10.0
    """SESSION_SHUTDOWN_GRACE: seconds in-flight calls get to finish on SIGTERM."""
    page_token_secret: str = "session-grpc-page-token"
    """SESSION_PAGE_TOKEN_SECRET: HMAC key that seals page tokens; same on every replica."""
    log_level: str = "INFO"
    """SESSION_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    metrics_port: int = 0
    """SESSION_METRICS_PORT: Prometheus metrics over HTTP on this port (at SESSION_HOST); 0 = off."""
    access_log: bool = False
    """SESSION_ACCESS_LOG: one JSON log line per call at INFO; failed calls are logged regardless."""
    db_connect_timeout: float = 1.0
    """SESSION_DB_CONNECT_TIMEOUT: how long opening a database connection may take before UNAVAILABLE."""
    default_deadline: float = 30.0
    """SESSION_DEFAULT_DEADLINE: bound on a call's database work when the client set no deadline."""
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

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is None:
            raise SettingsError("no database URL; start the embedded database first")
        return asyncpg_url(self.database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        try:
            return cls(
                port=int(env.get("PORT", "8203")),
                host=env.get("SESSION_HOST") or ("localhost" if _auth_mode(env) == "none" else "0.0.0.0"),
                database_url=env.get("DATABASE_URL") or None,
                embedded_data_dir=Path(env.get("SESSION_EMBEDDED_DATA_DIR", ".pgdata")),
                migrate_on_start=_bool(env.get("SESSION_MIGRATE_ON_START", "false"), "SESSION_MIGRATE_ON_START"),
                db_pool_size=int(env.get("SESSION_DB_POOL_SIZE", "20")),
                db_max_overflow=int(env.get("SESSION_DB_MAX_OVERFLOW", "0")),
                db_pool_timeout=parse_duration(env.get("SESSION_DB_POOL_TIMEOUT", "5s"), "SESSION_DB_POOL_TIMEOUT"),
                expiry_interval=parse_duration(env.get("SESSION_EXPIRY_INTERVAL", "5m"), "SESSION_EXPIRY_INTERVAL"),
                expiry_idle=parse_duration(env.get("SESSION_EXPIRY_IDLE", "24h"), "SESSION_EXPIRY_IDLE"),
                health_interval=parse_duration(env.get("SESSION_HEALTH_INTERVAL", "5s"), "SESSION_HEALTH_INTERVAL"),
                shutdown_grace=parse_duration(env.get("SESSION_SHUTDOWN_GRACE", "10s"), "SESSION_SHUTDOWN_GRACE"),
                page_token_secret=env.get("SESSION_PAGE_TOKEN_SECRET", cls.page_token_secret),
                log_level=env.get("SESSION_LOG_LEVEL", "INFO").upper(),
                metrics_port=int(env.get("SESSION_METRICS_PORT") or "0"),
                access_log=_bool(env.get("SESSION_ACCESS_LOG", "false"), "SESSION_ACCESS_LOG"),
                db_connect_timeout=_duration(env, "SESSION_DB_CONNECT_TIMEOUT", "1s"),
                default_deadline=_duration(env, "SESSION_DEFAULT_DEADLINE", "30s"),
                keepalive_time=_duration(env, "SESSION_KEEPALIVE_TIME", "60s"),
                keepalive_timeout=_duration(env, "SESSION_KEEPALIVE_TIMEOUT", "20s"),
                max_connection_age=_duration(env, "SESSION_MAX_CONNECTION_AGE", "0"),
                max_connection_age_grace=_duration(env, "SESSION_MAX_CONNECTION_AGE_GRACE", "30s"),
                max_connection_idle=_duration(env, "SESSION_MAX_CONNECTION_IDLE", "0"),
                limits=_limits(env),
                account=_account(env),
                auth_mode=_auth_mode(env),
                auth=_auth(env),
                tls_cert=_path(env, "SESSION_TLS_CERT"),
                tls_key=_path(env, "SESSION_TLS_KEY"),
                tls_client_ca=_path(env, "SESSION_TLS_CLIENT_CA"),
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc


def _duration(env: Mapping[str, str], name: str, default: str) -> float:
    return parse_duration(env.get(name, default), name)


LIMIT_VARIABLES = {
    "content_bytes": "SESSION_MAX_CONTENT_BYTES",
    "struct_bytes": "SESSION_MAX_STRUCT_BYTES",
    "struct_depth": "SESSION_MAX_STRUCT_DEPTH",
    "title_length": "SESSION_MAX_TITLE_LENGTH",
    "summary_length": "SESSION_MAX_SUMMARY_LENGTH",
    "facts": "SESSION_MAX_FACTS",
    "fact_length": "SESSION_MAX_FACT_LENGTH",
    "page_size": "SESSION_MAX_PAGE_SIZE",
}


def _limits(env: Mapping[str, str]) -> Limits:
    values = {}
    for name, variable in LIMIT_VARIABLES.items():
        if variable in env:
            values[name] = int(env[variable])
            if values[name] < 1:
                raise SettingsError(f"{variable} must be at least 1")
    return Limits(**values)


def _account(env: Mapping[str, str]) -> AccountSettings | None:
    address = env.get("SESSION_ACCOUNT_ADDRESS", "").strip()
    if not address:
        return None
    return AccountSettings(
        address=address,
        deadline=_duration(env, "SESSION_ACCOUNT_DEADLINE", "300ms"),
        retries=int(env.get("SESSION_ACCOUNT_RETRIES", "2")),
        positive_ttl=_duration(env, "SESSION_ACCOUNT_CACHE_TTL", "5m"),
        negative_ttl=_duration(env, "SESSION_ACCOUNT_NEGATIVE_TTL", "30s"),
        cache_size=int(env.get("SESSION_ACCOUNT_CACHE_SIZE", "10000")),
        fail_open=_bool(env.get("SESSION_ACCOUNT_FAIL_OPEN", "true"), "SESSION_ACCOUNT_FAIL_OPEN"),
    )


def _auth_mode(env: Mapping[str, str]) -> str:
    mode = env.get("SESSION_AUTH_MODE", "none").strip().lower()
    if mode not in ("none", "token"):
        raise SettingsError(f"SESSION_AUTH_MODE must be none or token, got {mode!r}")
    if mode == "token" and not env.get("SESSION_AUTH_ADDRESS", "").strip():
        raise SettingsError("SESSION_AUTH_MODE=token needs SESSION_AUTH_ADDRESS (the auth service)")
    return mode


def _auth(env: Mapping[str, str]) -> AuthSettings | None:
    address = env.get("SESSION_AUTH_ADDRESS", "").strip()
    if not address:
        return None
    return AuthSettings(
        address=address,
        deadline=_duration(env, "SESSION_AUTH_DEADLINE", "500ms"),
        cache_ttl=_duration(env, "SESSION_AUTH_CACHE_TTL", "60s"),
        cache_size=int(env.get("SESSION_AUTH_CACHE_SIZE", "10000")),
    )


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise SettingsError(f"{name}: {value} is not a readable file")
    return path


def _bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}: {text!r} is not true or false")

