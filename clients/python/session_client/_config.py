"""Small frozen dataclasses for what a client can be told: retries, TLS, channel options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RetryPolicy:
    """How calls that fail with UNAVAILABLE are retried (AIP-194), and calls the server refused
    before running them (RESOURCE_EXHAUSTED, reason TOO_MANY_CALLS_IN_FLIGHT).

    After UNAVAILABLE, reads are retried freely; CreateSession and AddMessage are retried because
    the client sends a request_id with them (it makes one when the caller gives none), so the
    server answers a repeat with the first result; other writes are not retried. A call refused
    for too many calls in flight did nothing, so every call is retried after it.
    """

    initial_backoff: float = 0.1
    """Seconds; the cap of the first wait. Each wait is uniform in [0, cap] (full jitter)."""
    max_backoff: float = 5.0
    """Seconds; the cap never grows beyond this."""
    multiplier: float = 2.0
    """The cap grows by this factor after every failed attempt."""
    max_attempts: int = 6
    """Attempts in all, the first included; 1 turns retrying off."""
    total_deadline: float | None = 30.0
    """Seconds for all attempts and waits together; each attempt's own timeout is cut to what is left."""

    @classmethod
    def disabled(cls) -> RetryPolicy:
        return cls(max_attempts=1)


@dataclass(frozen=True)
class TlsOptions:
    """Server authentication (and optionally client certificates) for a TLS channel.

    Leave everything unset to trust the system's roots. Values are PEM bytes or a path to a PEM file.
    """

    root_certificates: bytes | str | Path | None = None
    """CA bundle that signed the server's certificate; None: the system roots."""
    private_key: bytes | str | Path | None = None
    """Client key for mutual TLS (with certificate_chain)."""
    certificate_chain: bytes | str | Path | None = None
    """Client certificate chain for mutual TLS (with private_key)."""
    server_name_override: str | None = None
    """Check the server's certificate against this name instead of the target's host (tests only)."""

    def credentials(self) -> object:
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates),
            private_key=_pem(self.private_key),
            certificate_chain=_pem(self.certificate_chain),
        )


@dataclass(frozen=True)
class ChannelOptions:
    """grpc channel arguments the client sets. Keepalive values must respect the server's policy."""

    keepalive_time: float | None = 30.0
    """Seconds between keepalive pings on an idle connection; None: grpc's default (off)."""
    keepalive_timeout: float = 10.0
    """Seconds to wait for a ping's answer before the connection is dropped."""
    keepalive_without_calls: bool = False
    """Ping also when no call is in flight (the server must allow it)."""
    max_send_message_bytes: int = 16 * 1024 * 1024
    """Largest request the client sends."""
    max_receive_message_bytes: int = 64 * 1024 * 1024
    """Largest response the client accepts (a page of 1000 long messages is big)."""
    extra: tuple[tuple[str, object], ...] = ()
    """Any other grpc channel arguments, e.g. (("grpc.primary_user_agent", "my-app/1.0"),)."""

    def as_grpc_options(self, server_name_override: str | None = None) -> list[tuple[str, object]]:
        options: list[tuple[str, object]] = [
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.enable_retries", 0),  # the client's own retry policy is the only one
        ]
        if self.keepalive_time is not None:
            options += [
                ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
                ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
                ("grpc.keepalive_permit_without_calls", int(self.keepalive_without_calls)),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if server_name_override:
            options.append(("grpc.ssl_target_name_override", server_name_override))
        return options + list(self.extra)


def _pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()
