"""DeleteUserData: a user erased leaves nothing of theirs in any column of any table (the catalog
is searched, so tables added later are covered), the counts are reported, a repeat removes nothing,
other users are untouched, only the user or an admin may erase (whatever the account's standing),
the audit row names the user by hash only, and open watches of the user end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import grpc
import pytest
from google.protobuf import timestamp_pb2

from session_grpc._proto.account.v1 import account_pb2
from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc

from . import test_standing_and_limits as standing
from .helpers import add, expect_failure, new_session
from .test_auth import dev, token_server  # noqa: F401 - dev is a fixture
from .userdata import populate, rows_holding

standing_dev = standing.dev


@pytest.fixture(scope="module")
def userdata(channel: grpc.aio.Channel) -> rpc.UserDataServiceStub:
    return rpc.UserDataServiceStub(channel)


def counts(response: pb.DeleteUserDataResponse) -> dict[str, int]:
    return {
        "sessions": response.session_count, "messages": response.message_count, "memories": response.memory_count,
        "user_states": response.user_state_count, "budgets": response.budget_count,
        "session_changes": response.change_count, **response.other_counts,
    }


def user() -> str:
    return f"erin-{uuid.uuid4().hex[:10]}"


async def test_erasure_leaves_nothing_of_the_user_in_any_column_of_any_table(channel, userdata, sql):
    erin = await populate(channel, user())
    olga = await populate(channel, user())
    before = await rows_holding(sql, erin.needles())
    # The search finds what is there: each kind of row of hers, so finding none afterwards means something.
    assert {name.split(".")[0] for name in before} >= {
        "sessions", "messages", "memories", "user_states", "session_changes", "user_feeds", "budgets",
        "state_updates", "session_rewinds", "rewound_requests",
    }, before
    olga_before = await rows_holding(sql, olga.needles())
    await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=erin.user_id))
    assert await rows_holding(sql, erin.needles()) == {}
    assert await rows_holding(sql, olga.needles()) == olga_before, "another user's rows are untouched"


async def test_erasure_reports_how_many_rows_of_each_kind_it_removed(channel, userdata, sql):
    erin = await populate(channel, user())
    changes = await sql.fetchval("SELECT count(*) FROM session_changes WHERE user_id = $1", erin.user_id)
    role_totals = await sql.fetchval(  # one per session and role it has had (migration 0016), found by the sweep
        "SELECT count(*) FROM session_role_totals t JOIN sessions s ON s.id = t.session_id WHERE s.user_id = $1",
        erin.user_id,
    )
    erased = await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=erin.user_id))
    # Two sessions and a fork of the first; 4 messages in each of the two, the first rewound to 2,
    # the fork a copy of 3; a memory each (the fork's copied); her state in two apps; her budget;
    # the rewind removed the batch (one request id per message of it).
    assert counts(erased) == {
        "sessions": 3, "messages": 2 + 4 + 3, "memories": 3, "user_states": 2, "budgets": 1,
        "session_changes": changes, "state_updates": 2, "session_rewinds": 1, "rewound_requests": 2,
        "user_feeds": 1, "session_role_totals": role_totals,
    }
    assert changes > 0 and role_totals > 0
    assert erased.HasField("erase_time")


async def test_a_repeated_erasure_removes_nothing_and_succeeds(channel, userdata, sql):
    erin = await populate(channel, user())
    await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=erin.user_id))
    again = await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=erin.user_id))
    assert set(counts(again).values()) == {0}
    assert dict(again.other_counts) == {}
    assert await sql.fetchval("SELECT count(*) FROM user_erasures") == 2, "each call is audited"
    never = await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id="never-stored-anything"))
    assert set(counts(never).values()) == {0}


async def test_the_audit_row_names_the_user_by_sha256_only_and_holds_no_content(channel, userdata, sql):
    erin = await populate(channel, user())
    erased = await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=erin.user_id))
    row = await sql.fetchrow("SELECT * FROM user_erasures")
    assert row["subject_sha256"] == hashlib.sha256(erin.user_id.encode()).hexdigest()
    assert row["erased_by"] == "service"  # mode none: the operator
    assert json.loads(row["counts"]) == counts(erased)
    assert row["erase_time"] == erased.erase_time.ToDatetime().replace(tzinfo=row["erase_time"].tzinfo)
    assert set(row.keys()) == {"id", "subject_sha256", "erased_by", "erase_time", "counts"}
    text = json.dumps({key: str(value) for key, value in row.items()})
    assert erin.user_id not in text and erin.marker not in text


async def test_usage_goes_with_the_messages_but_an_app_budget_keeps_what_was_spent(
    channel, sessions, messages, userdata, sql
):
    usage = rpc.UsageServiceStub(channel)
    await usage.SetBudget(pb.SetBudgetRequest(budget=pb.Budget(app_name="shared", daily_tokens=10**6)))
    kept, gone = user(), user()
    for who, tokens in ((kept, 5), (gone, 7)):
        session = await new_session(sessions, who, app_name="shared")
        await add(messages, session.session_id, tokens_used=tokens, cost="0.01")
    await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=gone))
    window = dict(bucket=pb.USAGE_BUCKET_MONTH, start_time=timestamp_pb2.Timestamp(seconds=0),
                  end_time=timestamp_pb2.Timestamp(seconds=4102444800))
    service = await usage.GetUsage(pb.GetUsageRequest(**window))
    assert (service.message_count, service.total_tokens, service.total_cost) == (1, 5, "0.01")
    app = await usage.GetBudget(pb.GetBudgetRequest(app_name="shared"))
    assert [u.used for u in app.usage] == ["12"], "spend is spend: the app's budget keeps it, anonymously"


# ---- who may erase --------------------------------------------------------------------------


async def test_a_user_erases_themself_but_another_user_is_permission_denied(database_url, dev, sql):  # noqa: F811
    _, _, port = dev
    async with token_server(database_url, port) as (_, channel):
        data = rpc.UserDataServiceStub(channel)
        sessions = rpc.SessionServiceStub(channel)
        bob, alice = (("authorization", "Bearer bob-token"),), (("authorization", "Bearer alice-token"),)
        await sessions.CreateSession(pb.CreateSessionRequest(user_id="bob"), metadata=bob)
        failure = await expect_failure(data.DeleteUserData(pb.DeleteUserDataRequest(user_id="bob"), metadata=alice))
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_USER")
        assert await sql.fetchval("SELECT count(*) FROM sessions WHERE user_id = 'bob'") == 1
        assert await sql.fetchval("SELECT count(*) FROM user_erasures") == 0
        erased = await data.DeleteUserData(pb.DeleteUserDataRequest(), metadata=bob)  # empty: the caller
        assert erased.session_count == 1
        assert await sql.fetchval("SELECT erased_by FROM user_erasures") == "self", "her id is not kept as the eraser"
        await sessions.CreateSession(pb.CreateSessionRequest(user_id="alice"), metadata=alice)
        admin = (("authorization", "Bearer admin-token"),)
        erased = await data.DeleteUserData(pb.DeleteUserDataRequest(user_id="alice"), metadata=admin)
        assert erased.session_count == 1


@pytest.mark.parametrize("status", [account_pb2.ACCOUNT_STATUS_SUSPENDED, account_pb2.ACCOUNT_STATUS_DELETED],
                         ids=["suspended", "deleted"])
async def test_a_suspended_or_deleted_account_can_still_be_erased(database_url, standing_dev, sql, status):
    accounts, _, port = standing_dev
    async with standing.token_server(database_url, port) as (_, channel):
        await standing.carols_session(channel)
        accounts.accounts["carol"].status = status
        data = rpc.UserDataServiceStub(channel)
        erased = await data.DeleteUserData(pb.DeleteUserDataRequest(), metadata=(("authorization", "Bearer carol-token"),))
    assert (erased.session_count, erased.message_count, erased.memory_count) == (1, 1, 1)
    assert await sql.fetchval("SELECT count(*) FROM sessions") == 0


async def test_an_empty_user_id_of_the_operator_is_invalid_argument(userdata):
    failure = await expect_failure(userdata.DeleteUserData(pb.DeleteUserDataRequest()))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("user_id", ["", "x" * 300, "bad\x00id"])
async def test_a_bad_user_id_is_invalid_argument_naming_it(userdata, user_id):
    failure = await expect_failure(userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=user_id)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in failure.field_violations


# ---- live watches ---------------------------------------------------------------------------


async def test_open_watches_of_an_erased_user_end_without_sending_anything_of_theirs(sessions, messages, userdata):
    who = user()
    session = await new_session(sessions, who)
    await add(messages, session.session_id, "before")
    by_session = sessions.WatchSession(pb.WatchSessionRequest(session_id=session.session_id))
    by_user = sessions.WatchUserSessions(pb.WatchUserSessionsRequest(user_id=who))
    for stream in (by_session, by_user):  # the first response (a heartbeat) says the watch is open
        async with asyncio.timeout(10):
            first = await stream.read()
        assert not first.HasField("change")
    await userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=who))
    for stream in (by_session, by_user):
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(10):
                while (response := await stream.read()) is not grpc.aio.EOF:
                    assert not response.HasField("change"), "nothing of the erased user is sent"
        assert ended.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_python_client_erases_a_user_and_a_repeat_reports_zeros(service):
    from session_client import SessionClient

    async with SessionClient(f"127.0.0.1:{service.port}") as client:
        session = await client.create_session("client-erased")
        await client.add_message(session.session_id, "user", "hi", tokens_used=4, cost="0.1")
        erased = await client.delete_user_data("client-erased")
        assert (erased.session_count, erased.message_count) == (1, 1)
        again = await client.delete_user_data("client-erased")
        assert (again.session_count, again.message_count) == (0, 0)


async def test_an_erasure_racing_the_users_appends_leaves_none_of_them_behind(sessions, messages, userdata, sql):
    who = user()
    targets = [(await new_session(sessions, who)).session_id for _ in range(4)]
    appends = [add(messages, targets[i % 4], f"racing {i}") for i in range(40)]
    results = await asyncio.gather(userdata.DeleteUserData(pb.DeleteUserDataRequest(user_id=who)), *appends,
                                   return_exceptions=True)
    erased, outcomes = results[0], results[1:]
    assert isinstance(erased, pb.DeleteUserDataResponse), erased
    refused = [o for o in outcomes if isinstance(o, Exception)]
    # An append either landed before the erasure locked the sessions (and was erased with them) or
    # came after and found no session.
    assert all(isinstance(o, grpc.aio.AioRpcError) and o.code() == grpc.StatusCode.NOT_FOUND for o in refused), refused
    assert erased.message_count == len(outcomes) - len(refused)
    assert await sql.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", who) == 0
    assert await sql.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", who) == 0
    assert await sql.fetchval("SELECT count(*) FROM session_changes WHERE user_id = $1", who) == 0
    assert await sql.fetchval("SELECT count(*) FROM user_feeds WHERE user_id = $1", who) == 0


# ---- on a database whose messages are hash-partitioned (SESSION_MESSAGE_PARTITIONS) ----------

from .test_partitioned_messages import partitioned_channel, partitioned_url, psql  # noqa: E402, F401 - fixtures


async def test_erasure_on_partitioned_messages_leaves_nothing_in_any_partition(partitioned_channel, psql):  # noqa: F811
    erin = await populate(partitioned_channel, user())
    before = await rows_holding(psql, erin.needles())
    assert any(name.startswith("messages_") and not name.startswith("messages.") for name in before), before
    data = rpc.UserDataServiceStub(partitioned_channel)
    erased = await data.DeleteUserData(pb.DeleteUserDataRequest(user_id=erin.user_id))
    assert erased.message_count == 2 + 4 + 3
    assert "messages" not in erased.other_counts and not any(k.startswith("messages_") for k in erased.other_counts)
    assert await rows_holding(psql, erin.needles()) == {}
