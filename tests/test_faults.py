"""Faults, for real: PostgreSQL crashes, shuts down or has its backends terminated under load and comes
back; the server gets SIGTERM under load."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from reliability.scenarios import database_outage, shutdown_under_load, terminated_backends
from session_grpc.testing import EmbeddedCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A PostgreSQL of this module's own: the test stops and starts it."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("fault-pg"))
    yield cluster
    cluster.close()


def assert_outage_survived(outcome) -> None:
    """Every call that failed during the fault failed UNAVAILABLE (never INTERNAL: a database
    failure of any shape is the database being unavailable), the clients' retries with their
    request_ids went through, and nothing acknowledged was lost or doubled."""
    assert outcome.acknowledged > 0
    assert outcome.failed, "the fault must have been felt"
    assert set(outcome.failed) == {"UNAVAILABLE"}, outcome.failed
    assert outcome.retried == sum(outcome.failed.values())
    assert (outcome.lost, outcome.duplicates, outcome.counter_mismatches) == (0, 0, 0)


async def test_database_crash_under_load_loses_no_acknowledged_write_and_recovers(cluster):
    outcome = await database_outage(cluster, writers=6, before=1.0, outage=2.0, after=2.0)
    assert_outage_survived(outcome)
    assert outcome.slowest_failure < 1.5
    assert outcome.not_serving_seen
    assert outcome.recovery_seconds is not None and outcome.recovery_seconds < 5


async def test_database_fast_shutdown_under_load_fails_calls_unavailable_never_internal(cluster):
    # A fast shutdown sends every backend's client a FATAL 57P01 first, idle pooled connections
    # included, and closes the connection a moment later; a call that takes such a connection in
    # between must end UNAVAILABLE, and the connection must not go back to the pool. Five short
    # shutdowns: one gives such a call about every other time on a 2-core machine.
    outcome = await database_outage(
        cluster, writers=8, before=0.5, outage=0.3, after=1.0, mode="fast", cycles=5, between=0.4
    )
    assert outcome.faults == 5
    assert_outage_survived(outcome)
    assert outcome.recovery_seconds is not None


async def test_terminating_every_backend_under_load_fails_calls_unavailable_never_internal(cluster):
    outcome = await terminated_backends(cluster, writers=8, before=1.0, rounds=4, interval=0.3, after=1.0)
    assert outcome.faults >= 4, "every round must have found backends of the service to terminate"
    assert_outage_survived(outcome)
    assert outcome.recovery_seconds is not None


async def test_sigterm_under_load_stores_every_acknowledged_write_and_exits_zero(server_url):
    outcome = await shutdown_under_load(server_url, writers=6, before=1.5)
    assert outcome.exit_code == 0
    assert outcome.acknowledged > 0
    assert outcome.failed["UNAVAILABLE"] > 0, "calls during the drain are refused with UNAVAILABLE"
    # grpc core cancels the calls still unstarted in its own queue when the listener closes
    # (grpc/grpc#41785): at most one per client here, and none of them ran (failed_but_stored).
    assert set(outcome.failed) <= {"UNAVAILABLE", "CANCELLED"}, outcome.failed
    assert outcome.failed["CANCELLED"] <= 6, outcome.failed
    assert outcome.failed_but_stored == 0
    assert (outcome.lost, outcome.duplicates, outcome.counter_mismatches) == (0, 0, 0)


async def test_a_scenario_drops_the_databases_it_made_even_when_it_fails(server_url, sql):
    """Test and chaos runs against a shared PostgreSQL leave no scratch database behind."""
    from reliability.scenarios import drops_its_databases, fresh_database

    made: list[str] = []

    @drops_its_databases
    async def scenario() -> None:
        made.append(await fresh_database(server_url))
        made.append(await fresh_database(server_url))
        raise RuntimeError("the scenario failed")

    with pytest.raises(RuntimeError):
        await scenario()
    names = [make_url(url).database for url in made]
    left = await sql.fetchval("SELECT count(*) FROM pg_database WHERE datname = ANY($1::text[])", names)
    assert len(names) == 2 and left == 0
