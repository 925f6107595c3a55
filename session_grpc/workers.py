"""`session-grpc serve --workers N`: N server processes sharing one port (SO_REUSEPORT).

One Python process runs its gRPC handlers on one core. On a machine with more
cores, N processes, each with its own event loop and database pool, use N of
them. The kernel spreads new connections over the processes listening on the
port (SO_REUSEPORT, which only workers set: a single server refuses a taken port, and the parent
checks the port is free before starting its workers); a client connection
stays with the process that accepted it, so it takes several client
connections (several clients, or channels) to use every worker.

The parent does once what must happen once (start the embedded database, apply
migrations, fix the port), then starts the workers with the "spawn" method:
fresh interpreters, so no gRPC object, thread or event loop crosses a fork. It
then only supervises: SIGTERM or SIGINT goes to every worker, and each drains as
a single server does; when a worker dies, the others are stopped too and the
exit status is 1, for the process manager to restart the whole.

Each worker keeps SESSION_DB_POOL_SIZE (+ overflow) connections: N times as many in all.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import threading
from dataclasses import replace

from . import embedded, migrations
from .binding import AddressInUse, ensure_free
from .settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, workers: int) -> int:
    """Run `workers` server processes until SIGTERM or SIGINT; 0 when they all stopped cleanly."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with embedded.database(settings) as settings:
        if settings.migrate_on_start:
            asyncio.run(migrations.upgrade(settings.sqlalchemy_url))
            settings = replace(settings, migrate_on_start=False)
        if settings.port == 0:
            settings = replace(settings, port=_free_port(settings.host))
        try:
            ensure_free(settings.host, settings.port)  # the workers share the port with each other only
        except AddressInUse as error:
            log.error("%s", error)
            return 1
        return _supervise(settings, workers)


def _supervise(settings: Settings, workers: int) -> int:
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    context = multiprocessing.get_context("spawn")
    processes = [
        # Metrics are per process: worker i serves them on SESSION_METRICS_PORT + i.
        context.Process(
            target=_worker, args=(replace(settings, metrics_port=settings.metrics_port + index)
                                  if settings.metrics_port else settings,),
            name=f"session-grpc-worker-{index}", daemon=False,
        )
        for index in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        log.info("%d workers serving on %s:%d (pids %s)", workers, settings.host, settings.port,
                 ", ".join(str(p.pid) for p in processes))
        while not stop.is_set() and all(p.is_alive() for p in processes):
            stop.wait(0.5)
        if not stop.is_set():
            log.error("a worker exited unexpectedly; stopping the others")
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join(settings.shutdown_drain_delay + settings.shutdown_grace + 5)
            if process.is_alive():
                process.kill()
                process.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # A worker still starting when the signal came has no handler yet and dies of the SIGTERM itself.
    clean = stop.is_set() and all(p.exitcode in (0, -signal.SIGTERM) for p in processes)
    return 0 if clean else 1


def _worker(settings: Settings) -> None:
    from .server import serve as serve_one  # imported here: in the fresh worker interpreter only

    serve_one(settings, share_port=True)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host.strip("[]"), 0))
        return int(probe.getsockname()[1])
