"""A TCP proxy that can black-hole traffic, for network-partition scenarios on loopback.

`cut()` makes it behave like a partition: every socket stays open, nothing moves in either
direction, and new connections are accepted but never connected on (a client waits for an answer
that does not come, as it would for SYNs that vanish). Nothing is dropped: `heal()` delivers
what waited, as TCP retransmission does when a partition ends within its timeouts - closes
included, so a connection the server gave up on during the partition closes on the far side only
after the heal.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class BlackHoleProxy:
    def __init__(self, upstream: tuple[str, int] | str) -> None:
        """`upstream`: (host, port), or the path of a Unix socket."""
        self.upstream = upstream
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._open.wait()
            if isinstance(self.upstream, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # close(): ending quietly (asyncio's stream callback would log a cancelled handler)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await source.read(65536)
                await self._open.wait()  # held while cut: the sender's buffers fill, nothing is lost
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.close()


def postgres_upstream(url: str) -> tuple[str, int] | str:
    """Where the PostgreSQL of `url` listens: (host, port), or its Unix socket path (?host=/dir)."""
    parts = urlsplit(url)
    port = parts.port or 5432
    socket_dir = parse_qs(parts.query).get("host", [None])[0]
    if socket_dir and socket_dir.startswith("/"):
        return f"{socket_dir}/.s.PGSQL.{port}"
    return (parts.hostname or "127.0.0.1", port)


def through(url: str, proxy_port: int) -> str:
    """`url` with its host and port replaced by the proxy's on 127.0.0.1 (query host dropped)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    auth = user if parts.password in (None, "") else f"{user}:{parts.password}"
    query = "&".join(f"{k}={v[0]}" for k, v in parse_qs(parts.query).items() if k != "host")
    return urlunsplit((parts.scheme, f"{auth}@127.0.0.1:{proxy_port}", parts.path, query, ""))
