"""The prune job: one pass applies every app's retention policy (storage/retention.py has the SQL).

A pass runs under the advisory lock retention.PRUNE_LOCK, held from its start to its end on a
connection of its own (Database.advisory_lock), so of several replicas (or workers, or a
`session-grpc prune` run beside them) one prunes at a time and the others skip their turn. The
lock is held for the whole pass, not per batch: two pruners interleaving batches would each walk
the same sessions, double the load, and make a dry run's counts mean nothing. The batches
themselves run on the pool's connections, each its own short unit (statement or transaction) of
at most `batch` rows, so no lock on the data is held longer than a batch.

Every TTL counts back from one instant, the database's clock when the pass began: a dry run
reports exactly what a real pass started at the same moment would remove.

The order within an app: closed sessions first (with their messages), then the message rules
over the sessions left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .domain.retention import PruneReport, Rule
from .storage import retention
from .storage.database import Database

BetweenBatches = Callable[[PruneReport], Awaitable[None]]


async def prune(db: Database, batch: int, *, between: BetweenBatches | None = None) -> PruneReport | None:
    """One pass over every policy; None when another pass holds the lock (nothing done)."""
    async with db.advisory_lock(retention.PRUNE_LOCK) as held:
        if not held:
            return None
        return await _pass(db, batch, between)


async def dry_run(db: Database) -> PruneReport:
    """What a pass starting now would remove, per app and rule; removes nothing, takes no lock."""
    started = await db.run(retention.database_now)
    report = PruneReport(dry_run=True, started=started)
    for policy in await db.run(retention.list_policies):
        closed = retention.cutoff_of(started, policy.closed_session_ttl)
        if closed is not None:
            report.add(policy.app_name, Rule.CLOSED_SESSION_TTL,
                       await db.run(retention.count_closed_sessions, policy.app_name, closed))
        if policy.prunes_messages:
            aged, counted = await db.run(
                retention.count_messages, policy.app_name, retention.cutoff_of(started, policy.message_ttl),
                policy.max_messages_per_session, closed,
            )
            report.add(policy.app_name, Rule.MESSAGE_TTL, aged)
            report.add(policy.app_name, Rule.MAX_MESSAGES_PER_SESSION, counted)
    return report


async def _pass(db: Database, batch: int, between: BetweenBatches | None) -> PruneReport:
    started = await db.run(retention.database_now)
    report = PruneReport(dry_run=False, started=started)

    async def done_one() -> None:
        report.batches += 1
        if between is not None:
            await between(report)

    for policy in await db.run(retention.list_policies):
        app = policy.app_name
        closed = retention.cutoff_of(started, policy.closed_session_ttl)
        if closed is not None:
            while True:
                removed = await db.run(retention.delete_closed_sessions, app, closed, batch)
                report.add(app, Rule.CLOSED_SESSION_TTL, removed)
                await done_one()
                if not removed:
                    break
        if policy.prunes_messages:
            cutoff = retention.cutoff_of(started, policy.message_ttl)
            cursor: retention.Cursor | None = None
            while True:
                step = await db.run(retention.prune_messages, app, cutoff, policy.max_messages_per_session,
                                    cursor, batch)
                report.add(app, Rule.MESSAGE_TTL, step.aged)
                report.add(app, Rule.MAX_MESSAGES_PER_SESSION, step.counted)
                await done_one()
                if step.full:
                    continue  # the same window again: it has more to remove
                if step.next is None:
                    break
                cursor = step.next
    return report
