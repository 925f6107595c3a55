"""Network partitions, for real but small: the database, the account service and the auth service
stop answering without closing their sockets (a black-holing proxy, reliability/blackhole.py), then
the path heals. `make chaos` runs the same scenarios larger (reliability/partition.py)."""

from __future__ import annotations

import pytest

from reliability.partition import database_partition, service_partition


async def test_a_database_partition_ends_calls_by_their_deadlines_turns_health_not_serving_and_heals(server_url):
    outcome = await database_partition(server_url, writers=4, before=0.5, partition=3.0, after=1.5, deadline=1.0)
    assert outcome.acknowledged > 0
    assert outcome.failed, "the partition must have been felt"
    # Neither HEALTH_STAYED_SERVING nor NO_DEADLINE_CALL_*: a call without a deadline ends too.
    assert set(outcome.failed) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}, outcome.failed
    assert outcome.not_serving_seen
    assert outcome.recovery_seconds is not None, "writes went through again after the heal, no restart"
    assert outcome.retried == sum(outcome.failed.values())
    assert (outcome.lost, outcome.duplicates, outcome.counter_mismatches) == (0, 0, 0)


@pytest.mark.parametrize("service", ["account", "auth"])
async def test_a_silent_account_or_auth_service_is_unavailable_by_its_deadline_and_heals(server_url, service):
    outcome = await service_partition(server_url, service=service, clients=4, before=0.5, partition=1.5, after=1.0)
    assert outcome.acknowledged > 0
    assert set(outcome.failed) == {"UNAVAILABLE"}, outcome.failed
    assert outcome.recovery_seconds is not None
    assert (outcome.lost, outcome.duplicates) == (0, 0)
