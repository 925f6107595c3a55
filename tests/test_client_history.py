"""The Python client's add_messages, fork_session and truncate_session: typed, idempotent (a
generated request_id), and their bad input refused before anything is sent."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from session_client import Draft, FailedPrecondition, InvalidArgument, RetryPolicy, SessionClient, Unavailable, pb
from session_grpc.testing import free_port


async def test_add_messages_appends_drafts_in_order_with_their_own_tokens_and_cost(service, sql):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice")
        added = await client.add_messages(session.session_id, [
            Draft("user", "Where in May?", tokens_used=12, cost=Decimal("0.00015")),
            Draft("assistant", "weather(Lisbon)", message_type="tool_call", tokens_used=9, cost="0.0001"),
            pb.NewMessage(role=pb.ROLE_TOOL, message_type=pb.MESSAGE_TYPE_TOOL_RESULT, content="sunny"),
        ])
        assert [(m.sequence, m.content, m.cost) for m in added] == [
            (1, "Where in May?", "0.00015"), (2, "weather(Lisbon)", "0.0001"), (3, "sunny", "0")
        ]
        assert added[1].message_type == pb.MESSAGE_TYPE_TOOL_CALL
        now = await client.get_session(session.session_id)
        assert (now.message_count, now.total_tokens, now.total_cost) == (3, 21, "0.00025")
        rid = str(uuid.uuid4())
        first = await client.add_messages(session.session_id, [Draft("user", "a"), Draft("user", "b")], request_id=rid)
        again = await client.add_messages(session.session_id, [Draft("user", "a"), Draft("user", "b")], request_id=rid)
        assert again == first
    ids = await sql.fetch("SELECT request_id FROM messages ORDER BY sequence")
    assert len(ids) == 5 and all(row["request_id"] is not None for row in ids), "a request_id is always sent"


async def test_a_bad_draft_is_refused_before_sending_naming_its_place():
    async with SessionClient(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.add_messages(str(uuid.uuid4()), [Draft("user", "ok"), Draft("boss", "no")])
    assert caught.value.attempts == 0
    assert "messages[1].role" in caught.value.violations
    with pytest.raises(TypeError):
        Draft("user", "x", cost=0.1)  # a float is refused at once


async def test_fork_and_truncate_through_the_client(service):
    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("alice", conversation_data={"step": 2})
        await client.add_messages(session.session_id, [Draft("user", str(n), tokens_used=n) for n in range(1, 6)])
        forked = await client.fork_session(session.session_id, last_sequence=2)
        assert (forked.forked_from_session_id, forked.forked_at_sequence, forked.message_count) == (
            session.session_id, 2, 2
        )
        assert forked.total_tokens == 3 and dict(forked.conversation_data) == {"step": 2}
        rid = str(uuid.uuid4())
        rewound = await client.truncate_session(session.session_id, 3, request_id=rid)
        assert (rewound.removed_message_count, rewound.session.message_count, rewound.session.total_tokens) == (2, 3, 6)
        await client.add_message(session.session_id, "user", "after")
        again = await client.truncate_session(session.session_id, 3, request_id=rid)
        assert (again.removed_message_count, again.session.message_count) == (2, 4), "a retry removes nothing more"
        await client.end_session(session.session_id)
        with pytest.raises(FailedPrecondition) as caught:
            await client.truncate_session(session.session_id, 0)
        assert caught.value.reason == "SESSION_NOT_ACTIVE"
        again_fork = await client.fork_session(session.session_id, request_id=rid)
        assert await client.fork_session(session.session_id, request_id=rid) == again_fork


async def test_fork_truncate_and_add_messages_are_retried_after_unavailable():
    """They always carry a request_id, so the client may repeat them."""
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, max_attempts=3, total_deadline=5)
    async with SessionClient(f"127.0.0.1:{free_port()}", retry=policy) as client:
        for call in (
            client.fork_session(str(uuid.uuid4())),
            client.truncate_session(str(uuid.uuid4()), 0),
            client.add_messages(str(uuid.uuid4()), [Draft("user", "x")]),
        ):
            with pytest.raises(Unavailable) as caught:
                await call
            assert caught.value.attempts == 3
