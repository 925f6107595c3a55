"""The policy table: every RPC has exactly one authorization policy, and the boundary refuses
a method that has none, for every caller."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor as d

from session_grpc._proto.session.v1 import session_pb2 as pb
from session_grpc._proto.session.v1 import session_pb2_grpc as rpc
from session_grpc.policy import POLICIES, Kind, service_methods

from .conftest import test_settings
from .helpers import expect_failure, serving

GET_SESSION = "/session.v1.SessionService/GetSession"


def test_the_policy_table_names_exactly_the_rpcs_of_the_session_v1_services():
    methods = set(service_methods())
    assert GET_SESSION in methods
    assert methods - POLICIES.keys() == set(), "RPCs without an authorization policy"
    assert POLICIES.keys() - methods == set(), "policies for RPCs that do not exist"


def test_every_policy_field_names_a_string_field_of_the_request():
    methods = service_methods()
    for method, policy in POLICIES.items():
        if policy.kind in (Kind.ADMIN, Kind.PUBLIC):
            assert policy.field == "", method
            continue
        message = methods[method].input_type
        *parents, name = policy.field.split(".")
        for parent in parents:
            message = message.fields_by_name[parent].message_type
        field = message.fields_by_name.get(name)
        assert field is not None and field.type == d.FieldDescriptor.TYPE_STRING, (method, policy.field)
        expected = "session_id" if policy.kind is Kind.OWNS_SESSION else "user_id"
        assert name == expected, (method, policy.field)


def test_every_app_state_field_names_a_state_delta_of_the_request():
    """The boundary refuses app-state deltas without the admin scope by this field: a wrong path
    would let them through (or fail every call)."""
    methods = service_methods()
    named = [method for method, policy in POLICIES.items() if policy.app_state]
    assert {m.rsplit("/", 1)[1] for m in named} >= {"AddMessage", "UpdateState"}
    for method in named:
        message = methods[method].input_type
        *parents, name = POLICIES[method].app_state.split(".")
        for parent in parents:
            message = message.fields_by_name[parent].message_type
        assert message.fields_by_name[name].message_type.full_name == "session.v1.StateDelta", method


def test_every_rpc_that_changes_something_is_marked_as_a_write():
    """Reads are Get*, List*, Stream*, Search*, Watch*, Export*: everything else writes (the standing check depends on it)."""
    for method, policy in POLICIES.items():
        name = method.rsplit("/", 1)[1]
        assert policy.writes is not name.startswith(("Get", "List", "Stream", "Search", "Watch", "Export")), method


async def test_a_method_without_a_policy_is_refused_even_for_the_operator(database_url, monkeypatch):
    monkeypatch.delitem(POLICIES, GET_SESSION)
    async with serving(test_settings(database_url)) as (_, channel):
        stub = rpc.SessionServiceStub(channel)
        created = await stub.CreateSession(pb.CreateSessionRequest(user_id="u"))
        failure = await expect_failure(stub.GetSession(pb.GetSessionRequest(session_id=created.session.session_id)))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert failure.reason == "NO_POLICY"


@pytest.mark.parametrize("method", [GET_SESSION, "/session.v1.MessageService/AddMessage"])
def test_removing_a_policy_makes_the_table_test_fail(method, monkeypatch):
    monkeypatch.delitem(POLICIES, method)
    with pytest.raises(AssertionError, match="without an authorization policy"):
        test_the_policy_table_names_exactly_the_rpcs_of_the_session_v1_services()


def test_no_servicer_does_authorization():
    """Authorization is the boundary's (the policy table) and the storage statements' (the owner
    filter): servicer modules import neither auth nor authorization."""
    import ast
    from pathlib import Path

    import session_grpc.servicers as servicers

    for path in Path(servicers.__file__).parent.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        assert not {name.rsplit(".", 1)[-1] for name in imported} & {"auth", "authorization"}, path.name
