"""Auth: the permission table for all 22 RPCs, and credentials that must be refused."""

from __future__ import annotations

import json
import time

import grpc
import jwt
import pytest
from helpers import ServerProcess, md, raises_code, unique

from rustbill.pb import integration_pb2 as pb
from rustbill.services.permissions import PERMISSIONS, Access

SERVICE = "rustbill.integration.IntegrationService"
AUTHENTICATED = {"SyncProducts", "QueryPrice", "CreateUpstreamInstance"}
ALL_RPCS = [m.name for m in pb.DESCRIPTOR.services_by_name["IntegrationService"].methods]


def _raw_call(server: ServerProcess, method: str, metadata: list[tuple[str, str]] | None) -> grpc.RpcError | None:
    """Call ``method`` with an empty request (valid protobuf for every request type)."""
    call = server.channel().unary_unary(f"/{SERVICE}/{method}")
    try:
        call(b"", metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc
    return None


def test_permission_table_is_exactly_the_spec() -> None:
    integration = {k: v for k, v in PERMISSIONS.items() if k.startswith("/rustbill.integration.IntegrationService/")}
    assert len(integration) == 22
    table = {k.rsplit("/", 1)[1]: v for k, v in integration.items()}
    assert set(table) == set(ALL_RPCS)
    assert {k for k, v in table.items() if v is Access.AUTHENTICATED} == AUTHENTICATED
    assert not {k for k, v in table.items() if v is Access.PUBLIC}


def test_permission_table_refuses_a_method_without_entry_or_an_entry_without_method() -> None:
    from rustbill.services.permissions import ACCESS, SERVICES, permission_table

    missing = {name: dict(methods) for name, methods in ACCESS.items()}
    del missing["rustbill.integration.IntegrationService"]["QueryPrice"]
    with pytest.raises(RuntimeError, match="QueryPrice has no entry"):
        permission_table(SERVICES, missing)
    extra = {name: dict(methods) for name, methods in ACCESS.items()}
    extra["rustbill.identity.IdentityService"]["Logon"] = Access.PUBLIC
    with pytest.raises(RuntimeError, match="has no method Logon"):
        permission_table(SERVICES, extra)


@pytest.mark.parametrize("method", ALL_RPCS)
def test_no_token_is_unauthenticated(server: ServerProcess, method: str) -> None:
    err = _raw_call(server, method, None)
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, method


@pytest.mark.parametrize("method", sorted(set(ALL_RPCS) - AUTHENTICATED))
def test_customer_on_admin_rpc_is_permission_denied(server: ServerProcess, customer_token: str, method: str) -> None:
    err = _raw_call(server, method, md(customer_token))
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED, method
    assert "admin" in (err.details() or "")


@pytest.mark.parametrize("method", sorted(AUTHENTICATED))
def test_customer_passes_auth_on_authenticated_rpcs(server: ServerProcess, customer_token: str, method: str) -> None:
    # The empty request has no interface_id: the server must get past auth and refuse the argument.
    err = _raw_call(server, method, md(customer_token))
    assert err is not None
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.code(), err.details())
    assert "interface_id" in (err.details() or "")


def test_admin_passes_auth_everywhere(server: ServerProcess, admin_token: str) -> None:
    for method in ALL_RPCS:
        if method == "RestartServer":
            continue
        err = _raw_call(server, method, md(admin_token))
        if err is not None:
            assert err.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), method


@pytest.mark.parametrize(
    "value",
    ["Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", "Bearer rbk_deadbeef_nope", "bearer  "],
)
def test_malformed_credentials_are_unauthenticated(server: ServerProcess, value: str) -> None:
    with raises_code(grpc.StatusCode.UNAUTHENTICATED):
        server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=[("authorization", value)])


def test_forged_token_is_refused(server: ServerProcess, admin_token: str) -> None:
    claims = jwt.decode(admin_token, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-server-secret-but-long-enough-for-hs256", algorithm="HS256")
    with raises_code(grpc.StatusCode.UNAUTHENTICATED, "invalid token"):
        server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(forged))
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    with raises_code(grpc.StatusCode.UNAUTHENTICATED):
        server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(unsigned))


def test_expired_token_is_refused(server: ServerProcess) -> None:
    token = server.token("admin", ttl=5)
    server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(token))
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 1.2)
    with raises_code(grpc.StatusCode.UNAUTHENTICATED, "expired"):
        server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(token))


def test_revoked_tokens_are_refused(server: ServerProcess) -> None:
    name = unique("revokee")
    server.cli("user", "create", name, "--role", "admin")
    token = server.token(name)
    server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(token))
    server.cli("token", "revoke", "--user", name)
    time.sleep(0.8)  # the server trusts a verified credential for auth.cache_seconds (0.5 in tests)
    with raises_code(grpc.StatusCode.UNAUTHENTICATED, "revoked"):
        server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(token))
    time.sleep(1.1)  # tokens minted after the revocation work
    server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(server.token(name)))


def test_disabled_user_is_refused(server: ServerProcess) -> None:
    name = unique("disabled")
    server.cli("user", "create", name, "--role", "admin")
    token = server.token(name)
    server.cli("user", "disable", name)
    time.sleep(0.8)
    with raises_code(grpc.StatusCode.UNAUTHENTICATED):
        server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(token))


def test_api_keys_work_and_can_be_revoked(server: ServerProcess) -> None:
    name = unique("keyed")
    server.cli("user", "create", name, "--role", "customer")
    key = server.cli("apikey", "create", "--user", name).stdout.strip()
    assert key.startswith("rbk_") and "\n" not in key
    # a customer's key passes auth on QueryPrice and is refused on admin RPCs
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT):
        server.stub().QueryPrice(pb.QueryPriceRequest(), metadata=md(key))
    with raises_code(grpc.StatusCode.PERMISSION_DENIED):
        server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(key))
    server.cli("apikey", "revoke", key.split("_")[1])
    time.sleep(0.8)
    with raises_code(grpc.StatusCode.UNAUTHENTICATED, "revoked"):
        server.stub().QueryPrice(pb.QueryPriceRequest(), metadata=md(key))


def test_token_create_prints_only_the_token(server: ServerProcess) -> None:
    out = server.cli("token", "create", "--user", "admin").stdout
    assert out.count("\n") == 1 and out.count(".") == 2  # header.payload.signature


def test_cli_errors_are_one_line_not_tracebacks(server: ServerProcess) -> None:
    res = server.cli("token", "create", "--user", "nobody-" + unique(), check=False)
    assert res.returncode == 1 and "not found" in res.stderr and "Traceback" not in res.stderr
    res = server.cli("user", "create", "x" + unique(), "--role", "root", check=False)
    assert res.returncode == 1 and "role must be one of" in res.stderr
    res = server.cli("user", "create", "admin", "--role", "admin", check=False)
    assert res.returncode == 1 and "already exists" in res.stderr


def test_permissions_can_be_opened_in_the_config(tmp_path, databases) -> None:  # type: ignore[no-untyped-def]
    from helpers import SHIPPED_PLUGINS, ServerProcess

    from rustbill.pb import common_pb2, integration_pb2

    srv = ServerProcess(
        tmp_path,
        databases.new(),
        plugins=[SHIPPED_PLUGINS / "demo_cloud.py"],
        env={
            "RUSTBILL_AUTH__PERMISSIONS": json.dumps(
                {
                    "IntegrationService/ListProviders": "authenticated",
                    "rustbill.integration.IntegrationService/ListGateways": "public",
                }
            )
        },
    )
    try:
        srv.start()
        srv.cli("user", "create", "shopper", "--role", "customer")
        stub = srv.stub()
        customer = md(srv.token("shopper"))
        stub.ListProviders(common_pb2.EmptyRequest(), metadata=customer)  # opened to customers
        stub.ListGateways(common_pb2.EmptyRequest())  # opened to anyone
        with raises_code(grpc.StatusCode.UNAUTHENTICATED):
            stub.ListProviders(common_pb2.EmptyRequest())
        with raises_code(grpc.StatusCode.PERMISSION_DENIED):
            stub.ListPlugins(integration_pb2.ListPluginsRequest(), metadata=customer)
        assert (
            "permission of /rustbill.integration.IntegrationService/ListGateways changed by auth.permissions: public"
            in srv.log
        )
    finally:
        srv.stop()


def test_an_unknown_method_in_the_permissions_is_a_config_error(tmp_path, databases) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from helpers import ServerProcess

    srv = ServerProcess(
        tmp_path, databases.new(), env={"RUSTBILL_AUTH__PERMISSIONS": '{"IntegrationService/ListProvider": "public"}'}
    )
    res = subprocess.run(
        [sys.executable, "-m", "rustbill", "serve"],
        cwd=tmp_path,
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "auth.permissions: unknown method 'IntegrationService/ListProvider'" in res.stderr
    assert "Traceback" not in res.stderr
