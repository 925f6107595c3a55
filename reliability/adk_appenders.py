"""Concurrent ADK appenders on one session (issue 11, item 9), for any ADK session service.

`appenders` concurrent callers append `rounds` events each to ONE ADK session, each event with a
state delta to its own keys: a session key "k<i>" and a user key "user:k<i>", both set to the
round. A caller does what an ADK agent loop does: read the session (num_recent_events=0: its
state and revision only), append; when the service says the session is stale, read it again
and retry (counted as a refusal, never as a failure), up to give_up_after times in a row (then
the event counts as given up: starved, never acknowledged). Then it checks what the service stored:

- lost: an event the service acknowledged that is not stored;
- duplicates: an event stored more than once;
- failed but stored: an event whose append raised (other than a stale refusal) yet is stored;
- out of order: a caller's events not stored in the order it appended them;
- lost deltas: a caller's session or user key that does not hold its last acknowledged round.

Runs in the ADK virtualenv (google-adk + session_client[adk]; SQLAlchemy and asyncpg for the
peer), with no import of the server: `make chaos` runs it as a script and reads the JSON it
prints; tests/adk/test_concurrent_appenders.py imports it.

    python reliability/adk_appenders.py --target HOST:PORT --peer-url postgresql://... [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

APP = "chaos"


@dataclass
class Result:
    service: str
    appenders: int
    rounds: int
    attempted: int = 0
    acknowledged: int = 0
    stale_refusals: int = 0
    gave_up: int = 0
    """Events whose caller gave up after give_up_after refusals or errors in a row (never acknowledged)."""
    errors: Counter[str] = field(default_factory=Counter)
    stored: int = 0
    lost: int = 0
    duplicates: int = 0
    failed_but_stored: int = 0
    out_of_order: int = 0
    lost_deltas: int = 0
    seconds: float = 0.0

    @property
    def broken(self) -> int:
        return self.lost + self.duplicates + self.failed_but_stored + self.out_of_order + self.lost_deltas


async def run(service: Any, name: str, appenders: int = 16, rounds: int = 5, give_up_after: int = 200) -> Result:
    from google.adk.errors import StaleSessionError
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions
    from google.adk.sessions.base_session_service import GetSessionConfig

    result = Result(name, appenders, rounds)
    user = f"appender-{uuid.uuid4().hex[:8]}"
    session = await service.create_session(app_name=APP, user_id=user)
    acknowledged: dict[str, tuple[int, int]] = {}
    failed: set[str] = set()
    last_round: dict[int, int] = {}
    head = GetSessionConfig(num_recent_events=0)
    started = time.monotonic()

    async def appender(index: int) -> None:
        for round_ in range(rounds):
            tag = f"a{index}-r{round_}"
            for _ in range(give_up_after):
                current = await service.get_session(app_name=APP, user_id=user, session_id=session.id, config=head)
                event = Event(
                    invocation_id=tag,
                    author="user",
                    actions=EventActions(state_delta={f"k{index}": round_, f"user:k{index}": round_}),
                )
                result.attempted += 1
                try:
                    await service.append_event(current, event)
                except StaleSessionError:
                    result.stale_refusals += 1
                    await asyncio.sleep(random.uniform(0, 0.005))
                    continue
                except Exception as error:  # noqa: BLE001 - whatever the service raises is what we report
                    result.errors[type(error).__name__] += 1
                    failed.add(tag)
                    await asyncio.sleep(random.uniform(0, 0.005))
                    continue
                acknowledged[tag] = (index, round_)
                failed.discard(tag)
                last_round[index] = round_
                break
            else:
                result.gave_up += 1

    await asyncio.gather(*(appender(i) for i in range(appenders)))
    result.seconds = time.monotonic() - started
    result.acknowledged = len(acknowledged)
    stored = await service.get_session(app_name=APP, user_id=user, session_id=session.id)
    tags = [event.invocation_id for event in stored.events]
    result.stored = len(tags)
    counts = Counter(tags)
    result.duplicates = sum(count - 1 for count in counts.values() if count > 1)
    result.lost = sum(1 for tag in acknowledged if tag not in counts)
    result.failed_but_stored = sum(1 for tag in failed if tag in counts and tag not in acknowledged)
    for index in range(appenders):
        mine = [int(tag.split("-r")[1]) for tag in dict.fromkeys(tags) if tag.startswith(f"a{index}-r")]
        result.out_of_order += sum(1 for a, b in zip(mine, mine[1:]) if b < a)
    user_state = await service.get_user_state(app_name=APP, user_id=user)
    for index, round_ in last_round.items():
        result.lost_deltas += stored.state.get(f"k{index}") != round_
        result.lost_deltas += stored.state.get(f"user:k{index}") != round_
        result.lost_deltas += user_state.get(f"k{index}") != round_
    return result


async def both(target: str, peer_url: str | None, appenders: int, rounds: int) -> list[Result]:
    import logging

    from session_client.adk import SessionGrpcService

    logging.getLogger("google_adk").setLevel(logging.CRITICAL)
    results = []
    async with SessionGrpcService(target) as ours:
        results.append(await run(ours, "session-grpc (session_client.adk)", appenders, rounds))
    if peer_url:
        from google.adk.sessions.database_session_service import DatabaseSessionService

        peer = DatabaseSessionService(db_url=peer_url.replace("postgresql://", "postgresql+asyncpg://", 1))
        try:
            results.append(await run(peer, "ADK DatabaseSessionService (PostgreSQL)", appenders, rounds))
        finally:
            await peer.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--peer-url")
    parser.add_argument("--appenders", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(both(args.target, args.peer_url, args.appenders, args.rounds))
    print(json.dumps([{**asdict(r), "errors": dict(r.errors)} for r in results]))


if __name__ == "__main__":
    main()
