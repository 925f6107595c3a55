"""Group commit of AddMessage: the appends that arrive together land in one statement.

Leader and followers, no timer. An AddMessage that finds no append statement of this server in
flight (the leader) runs at once, alone, as without group commit: the single append statement of
storage/messages.py, which takes its session's row lock NOWAIT (a row another transaction holds
sends the call the ordinary, waiting way, so no queue waits behind one session's lock). At one call
at a time nothing waits and nothing more is sent or planned. Calls that arrive while a statement is
in flight queue up; when it returns, the queue is
flushed (at most `max_group` calls at a time) by a task of its own as one statement per *round*,
then each caller gets its own result. A round holds at most one call per session (the r-th queued
call of each session is in round r), so a group of calls on 30 sessions is one statement, and 3
calls on one session are 3 statements, in arrival order; each round is a statement in autocommit,
so its callers are answered once it has committed.

Every rule stays per call:
- sequences: each session's row is locked and bumped once per round, by one; rounds run one after
  the other, in arrival order, so a session's sequences stay gapless in the order its calls came;
- request_id: each call's earlier messages are looked up by (session, request id) as the single
  statement does; two calls with one request id on one session are in different rounds, so the
  second finds what the first stored and answers with it;
- refusals: a call whose row the statement does not bump (a missing, ended or foreign session, a
  stale expected_last_sequence or etag, a rewound request id, a session with a budget) stored
  nothing; one more statement reads why (messages._why_not_appended, as the single statement's
  refusal does) and reports it, or runs the call budgeted: the same two statements as ungrouped;
- anything that aborts the whole statement (a unique violation when a concurrent first call with
  the same request id won, say) leaves nothing of the round: its calls run one by one on the
  ordinary path (storage/budgets.append);
- a session row another transaction holds is skipped (SKIP LOCKED): that call waits for the lock
  on the ordinary path, so no group ever waits for one session's lock. While a call of a session
  is on the ordinary path, the later calls of that session go there too, concurrently, as calls
  do without group commit (the row lock orders them);
- deadlines: a call whose deadline passed while it was queued is not written (DEADLINE_EXCEEDED); a
  caller cancelled while queued is dropped from the queue; a caller cancelled while its round is in
  flight is not answered, and its message lands with the round or not at all;
- read-your-writes: each caller's commit position (consistency.py) is the one read after its round.

Only AddMessage without state deltas is grouped; AddMessages and appends with state deltas run on
the ordinary path, concurrently with the groups (which the session row lock orders, as ever).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .. import consistency, deadlines
from ..domain.errors import DeadlineExceeded, Unavailable
from ..domain.records import NewMessages
from ..domain.usage import Appended
from . import budgets, messages, rows
from .database import Database
from .messages import _NO_BUDGET
from .rows import MESSAGE_COLUMNS, fetch
from .units import statement

log = logging.getLogger(__name__)

# One message per call, the calls as parallel text[] arrays (as in storage/messages.py: asyncpg
# knows text[] without a type introspection round trip), one element per call, at most one call per
# session, read as rows through group_append_batch (migration 0019: its row estimate lets
# PostgreSQL keep one generic plan instead of planning every round afresh); g.k is the call's place
# in the round. `locked` takes the sessions' row locks in id
# order, so two groups (of two servers) never wait on each other crosswise. Each bumped row adds
# its call's one message and its tokens and cost, with the single statement's conditions, clock
# and budget probes read per call; the message takes the new message_count as its sequence.
# A call whose session row another transaction holds (skipped by SKIP LOCKED) answers with a row
# of NULL message columns and `skipped`; a call the statement refused answers with no row at all.
def _count_columns(columns: str) -> int:
    depth, count = 0, 1
    for char in columns:
        depth += {"(": 1, ")": -1}.get(char, 0)
        count += char == "," and depth == 0
    return count


_NO_MESSAGE = ", ".join(["NULL"] * _count_columns(MESSAGE_COLUMNS))
_GROUP_APPEND = f"""
WITH batch AS (
    SELECT g.k, g.id::uuid, g.session_id::uuid, g.role, g.message_type, g.content, g.tokens_used::bigint,
           g.cost::numeric, g.metadata::jsonb, g.request_id::uuid, decode(g.payload, 'base64') AS payload,
           g.payload_type, g.event_time::timestamptz, g.expected::bigint, g.etag_version::bigint,
           g.etag_micros::bigint, g.owner
    FROM group_append_batch($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                            $15::text[], $16::text[]) AS g
)<earlier>, locked AS (
    SELECT s.id FROM sessions s WHERE s.id IN (SELECT session_id FROM batch) ORDER BY s.id FOR NO KEY UPDATE SKIP LOCKED
), bumped AS (
    UPDATE sessions
    SET message_count = sessions.message_count + 1,
        total_tokens = sessions.total_tokens + g.tokens_used,
        total_cost = sessions.total_cost + g.cost,
        (last_activity_time, last_event_time) = (
            SELECT clock.t, coalesce(g.event_time, clock.t)
            FROM (SELECT greatest(sessions.last_activity_time, clock_timestamp()) AS t) clock
        ),
        update_time = greatest(sessions.update_time, clock_timestamp())
    FROM batch g
    WHERE sessions.id = g.session_id AND sessions.id IN (SELECT id FROM locked) AND sessions.status = 'active'
      AND (g.owner IS NULL OR sessions.user_id = g.owner)
      AND (g.expected IS NULL OR sessions.message_count = g.expected)
      AND (g.etag_version IS NULL OR (sessions.version = g.etag_version
           AND abs(extract(epoch FROM sessions.create_time) * 1000000 - g.etag_micros) < 2))
      <guard>{_NO_BUDGET}
    RETURNING sessions.id, sessions.user_id, sessions.app_name, sessions.message_count,
              sessions.last_activity_time, g.k
), inserted AS (
    INSERT INTO messages (id, session_id, user_id, sequence, role, message_type, content,
                          tokens_used, cost, metadata, request_id, create_time, payload, payload_type, event_time)
    SELECT g.id, s.id, s.user_id, s.message_count, g.role, g.message_type, g.content, g.tokens_used, g.cost,
           g.metadata, g.request_id, s.last_activity_time, g.payload, g.payload_type,
           coalesce(g.event_time, s.last_activity_time)
    FROM bumped s JOIN batch g ON g.k = s.k
    RETURNING {MESSAGE_COLUMNS}
)
SELECT inserted.*, bumped.k, bumped.app_name, false AS skipped
FROM inserted JOIN bumped ON bumped.id = inserted.session_id
UNION ALL<earlier answers>
SELECT {_NO_MESSAGE}, g.k, NULL, true FROM batch g
WHERE NOT EXISTS (SELECT 1 FROM locked l WHERE l.id = g.session_id)
  AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = g.session_id)
"""

_EARLIER = f"""
, earlier AS (
    SELECT e.*, g.k FROM batch g CROSS JOIN LATERAL (
        SELECT {MESSAGE_COLUMNS} FROM messages
        WHERE session_id = g.session_id AND request_id = g.request_id AND (g.owner IS NULL OR user_id = g.owner)
    ) e
), rewound AS (
    SELECT g.k FROM batch g JOIN rewound_requests r ON r.session_id = g.session_id AND r.request_id = g.request_id
)"""
# Two forms: with request ids (a round where some call has one), the earlier messages they made are
# looked up first; without (the common round), the statement reads no message at all (on the
# partitioned table a lookup by a session that is a row of the batch, not a parameter, is planned
# against every partition, which cost a lone AddMessage ~0.3 ms of PostgreSQL CPU).
GROUP_APPEND = {
    "once": _GROUP_APPEND.replace("<earlier>", _EARLIER)
    .replace("<guard>", "AND NOT EXISTS (SELECT 1 FROM earlier e WHERE e.k = g.k) "
             "AND NOT EXISTS (SELECT 1 FROM rewound r WHERE r.k = g.k)\n")
    .replace("<earlier answers>", "\nSELECT earlier.*, s.app_name, false FROM earlier JOIN sessions s ON s.id = earlier.session_id\nUNION ALL"),
    "plain": _GROUP_APPEND.replace("<earlier>", "").replace("<guard>", "").replace("<earlier answers>", ""),
}



def groupable(new: NewMessages) -> bool:
    """Whether an append may join a group: one message, no state deltas."""
    return len(new.messages) == 1 and not new.state_delta


@statement
async def append_round(conn: asyncpg.Connection, calls: list[NewMessages]) -> dict[int, Appended | str]:
    """One round of a group (at most one call per session, one message each) in one statement:
    what each call stored (or, for a repeat of its request id, stored before), by its index in
    `calls`, or SKIPPED; a call missing from the answer was refused and stored nothing."""
    params: list[list[str | None]] = [[] for _ in range(16)]
    for new in calls:
        body = new.messages[0]
        version, micros = rows.etag_parts(new.expected_etag)
        values = (
            str(uuid.uuid4()), new.session_id, body.role.value, body.message_type.value, body.content,
            str(body.tokens_used), format(body.cost, "f"), rows.jsonb(body.metadata), new.request_id,
            None if new.expected_last_sequence is None else str(new.expected_last_sequence),
            None if version is None else str(version), str(micros), new.owner,
            base64.b64encode(body.payload).decode("ascii") if body.payload else None, body.payload_type or None,
            None if body.event_time is None else body.event_time.isoformat(),
        )
        for column, value in zip(params, values, strict=True):
            column.append(value)
    sql = GROUP_APPEND["once" if any(new.request_id for new in calls) else "plain"]
    found = await fetch(conn, sql, *params)
    return {row["k"] - 1: SKIPPED if row["skipped"] else Appended([rows.message(row)], row["app_name"]) for row in found}


SKIPPED = "skipped"
"""append_round's answer for a call whose session row another transaction held."""


@statement
async def explain_refusal(conn: asyncpg.Connection, new: NewMessages) -> None:
    """Raise what kept a call of a group from landing, as the single statement's refusal does
    (messages._why_not_appended; one statement): BudgetApplies when the budget probes refused it."""
    await messages._why_not_appended(conn, new, messages.request_ids(new.request_id, 1), budget_probed=True)


@dataclass
class _Queued:
    new: NewMessages
    deadline: float | None
    """The caller's deadline (time.monotonic()); None: the server's default bound."""
    context: contextvars.Context
    """The caller's context (its deadline and commit position), for running it on the ordinary path."""
    future: asyncio.Future[Appended] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit:
    """The AddMessage appends of one server process, gathered as the module docstring says."""

    def __init__(
        self, db: Database, *, enabled: bool = True, max_group: int = 64,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.enabled = enabled
        self.max_group = max(1, max_group)
        self.observe = observe or (lambda size: None)
        """Called with the size of every group statement (1 for a call that ran alone)."""
        self._queue: list[_Queued] = []
        self._busy = False
        self._flusher: asyncio.Task[None] | None = None
        self._ordinary: dict[str, int] = {}
        """Per session, how many of its calls are on the ordinary path now: the later calls of that
        session go there too (a group would only skip or refuse them), until none is left."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def append(self, new: NewMessages) -> Appended:
        """AddMessage(s), as storage/budgets.append, grouped with concurrent ones when it may be."""
        if not self.enabled or not groupable(new):
            return await budgets.append(self.db, new)
        if new.session_id not in self._ordinary and not self._busy:
            # The leader: alone, so the single append statement at once, in the caller's own task
            # (its deadline and commit position), taking its session's row lock NOWAIT; a refusal
            # is raised as without group commit. A held row or a budget send it the ordinary way.
            self._busy = True
            self.observe(1)
            try:
                return await self.db.run(messages.add_messages_unless_locked, new)
            except messages.SessionLocked:
                budgeted = False
            except messages.BudgetApplies:
                budgeted = True
            finally:
                self._release()
            queued = _Queued(new, deadlines.deadline(), contextvars.copy_context())
            self._follow(queued, budgeted=budgeted)
            return await queued.future
        queued = _Queued(new, deadlines.deadline(), contextvars.copy_context())
        if new.session_id in self._ordinary:
            self._follow(queued)
        else:
            self._queue.append(queued)
        return await queued.future  # cancelled with the caller: then dropped from the queue

    def _release(self) -> None:
        """The statement in flight returned: flush what queued meanwhile, or be idle."""
        if self._queue:
            # A context of its own: no caller's deadline or commit position applies to the group.
            self._flusher = asyncio.get_running_loop().create_task(self._drain(), context=contextvars.Context())
        else:
            self._busy = False

    async def _drain(self) -> None:
        try:
            while self._queue:
                group = self._take()
                if not group:
                    continue
                try:
                    await self._run_group(group)
                except Exception:  # noqa: BLE001 - never leave a caller waiting: the ordinary path takes them
                    log.exception("group commit failed; its unanswered calls run one by one")
                    for queued in group:
                        if not queued.future.done():
                            self._follow(queued)
        finally:
            self._busy = False
            self._flusher = None

    def _take(self) -> list[_Queued]:
        """The next group: the oldest queued calls that are still waiting and within their deadline."""
        group: list[_Queued] = []
        now = time.monotonic()
        while self._queue and len(group) < self.max_group:
            queued = self._queue.pop(0)
            if queued.future.done():  # the caller was cancelled while it waited
                continue
            if queued.deadline is not None and queued.deadline <= now:
                queued.future.set_exception(DeadlineExceeded("the call's deadline passed while it waited for its group"))
                continue
            group.append(queued)
        return group

    async def _run_group(self, group: list[_Queued]) -> None:
        self.observe(len(group))
        rounds: list[list[_Queued]] = []
        seen: dict[str, int] = {}
        for queued in group:
            place = seen.get(queued.new.session_id, 0)
            seen[queued.new.session_id] = place + 1
            if place == len(rounds):
                rounds.append([])
            rounds[place].append(queued)
        for members in rounds:
            await self._run_round(members)

    async def _run_round(self, members: list[_Queued]) -> None:
        live: list[_Queued] = []
        for queued in members:
            if queued.future.done():
                continue
            if queued.new.session_id in self._ordinary:  # an earlier call of its session went there
                self._follow(queued)
            else:
                live.append(queued)
        if not live:
            return
        ends = [queued.deadline for queued in live]
        deadlines.start_call(None if None in ends else max(e for e in ends if e is not None) - time.monotonic())
        position = consistency.track_commit() if self.db.track_commits else None
        try:
            found = await self.db.run(append_round, [queued.new for queued in live])
        except (Unavailable, DeadlineExceeded) as error:
            for queued in live:
                _settle(queued, error=error)
            return
        except Exception:  # noqa: BLE001 - the whole statement failed: each call on its own instead
            log.info("a group append statement failed; its %d calls run one by one", len(live), exc_info=True)
            for queued in live:
                self._follow(queued)
            return
        for index, queued in enumerate(live):
            appended = found.get(index)
            if not isinstance(appended, Appended):  # stored nothing: refused (the ordinary path says why) or skipped
                self._follow(queued, refused=appended is None)
                continue
            if position is not None:
                caller = consistency.commit_position_in(queued.context)
                if caller is not None:
                    caller.lsn = position.lsn
            _settle(queued, result=appended)

    def _follow(self, queued: _Queued, *, refused: bool = False, budgeted: bool = False) -> None:
        """Send a call to the ordinary path, in its caller's context (deadline, commit position), not
        awaited, so a call that waits there (for a row lock, a budget's lock) holds up no group. A
        refused call is explained (one statement) and, if the budget probes refused it, run
        budgeted; a call known to be `budgeted` runs budgeted; any other runs whole
        (storage/budgets.append). Calls of one session on the ordinary path run concurrently, as
        calls without group commit do: the session row lock orders them."""
        session_id = queued.new.session_id
        self._ordinary[session_id] = self._ordinary.get(session_id, 0) + 1
        task = asyncio.get_running_loop().create_task(
            self._ordinary_path(queued, refused, budgeted), context=queued.context
        )
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            left = self._ordinary[session_id] - 1
            if left:
                self._ordinary[session_id] = left
            else:
                del self._ordinary[session_id]

        task.add_done_callback(done)

    async def _ordinary_path(self, queued: _Queued, refused: bool, budgeted: bool) -> None:
        if queued.future.done():
            return
        try:
            if budgeted:
                result = await self.db.run(budgets.add_budgeted, queued.new)
            elif refused:
                try:
                    await self.db.run(explain_refusal, queued.new)
                    raise AssertionError("explain_refusal returned")
                except messages.BudgetApplies:
                    result = await self.db.run(budgets.add_budgeted, queued.new)
            else:
                result = await budgets.append(self.db, queued.new)
        except Exception as error:  # noqa: BLE001 - the caller's own error, handed to it
            _settle(queued, error=error)
        else:
            _settle(queued, result=result)


def _settle(queued: _Queued, *, result: Any = None, error: BaseException | None = None) -> None:
    if queued.future.done():
        return
    if error is not None:
        queued.future.set_exception(error)
    else:
        queued.future.set_result(result)
