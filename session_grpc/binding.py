"""Refusing a port another process listens on.

grpcio sets SO_REUSEPORT on its listening sockets by default, so a second server started on a
taken port binds too and the kernel splits the connections between the two (issue 9, item 4:
half the calls went to an auth-off server). A single server therefore binds with
`grpc.so_reuseport` = 0, and first checks every address the host resolves to: for `localhost`
grpc binds what it can (::1 when 127.0.0.1 is taken) and reports success. Only
`serve --workers N` shares its port, among its own workers (the parent checks it once).
"""

from __future__ import annotations

import errno
import socket


class AddressInUse(RuntimeError):
    """The address the server was told to listen on is taken (or is not this machine's)."""


def in_use_message(host: str, port: int) -> str:
    return (
        f"cannot listen on {host}:{port}: the address is in use (is another session-grpc running there?); "
        "stop it or set PORT to a free port"
    )


def ensure_free(host: str, port: int) -> None:
    """Raise AddressInUse if something listens on `port` at any address `host` resolves to.
    Port 0 (any free port) is always free."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise AddressInUse(f"cannot listen on {host}:{port}: {error}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As grpc does: SO_REUSEADDR (a restart is not blocked by TIME_WAIT), no SO_REUSEPORT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise AddressInUse(in_use_message(host, port)) from None
                raise AddressInUse(f"cannot listen on {host}:{port}: {error.strerror}") from None
