"""The server answers: reflection lists the service, health is SERVING, and the start log line
names address, database and plugins folder."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import ServerProcess, md, raises_code, run_cli


def test_start_log_line_names_address_database_and_plugins(server: ServerProcess) -> None:
    m = server.wait_for_log(r"listening on 127\.0\.0\.1:\d+ database=(\S+) plugins=(\S+)")
    assert m.group(1).split(":")[0] in ("sqlite", "postgresql")
    assert m.group(2) == str(server.plugins_dir.resolve())


def test_health_is_serving_without_a_token(server: ServerProcess) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel())
    for service in ("", "rustbill.integration.IntegrationService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(server: ServerProcess) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel())
    replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in replies[0].list_services_response.service}
    assert "rustbill.integration.IntegrationService" in names
    assert "grpc.health.v1.Health" in names


def test_unknown_method_is_unimplemented_with_or_without_a_credential(server: ServerProcess) -> None:
    """Which methods exist is public (reflection answers without a credential), so an unknown one is
    UNIMPLEMENTED for everybody, as a request to an unknown path is 404 on the HTTP listener."""
    call = server.channel().unary_unary("/rustbill.integration.IntegrationService/NoSuchMethod")
    for metadata in (None, md("not-a-token"), md(server.token("admin"))):
        with raises_code(grpc.StatusCode.UNIMPLEMENTED, "Method not found"):
            call(b"", timeout=5, metadata=metadata)


def test_unknown_method_of_a_public_service_is_unimplemented(server: ServerProcess) -> None:
    call = server.channel().unary_unary("/grpc.health.v1.Health/NoSuchMethod")
    with raises_code(grpc.StatusCode.UNIMPLEMENTED):
        call(b"", timeout=5)


def test_a_second_server_on_a_busy_port_says_so_and_starts_nothing(server: ServerProcess, tmp_path: Path) -> None:
    """A newcomer runs ./scripts/serve twice: the second says the address is taken, at once."""
    env = {**server.env, "RUSTBILL_DATA__DIR": str(tmp_path / "data"),
           "RUSTBILL_DB__URL": f"sqlite:///{tmp_path / 'second.sqlite3'}"}  # fmt: skip
    for key, listen in (("server.listen", server.address), ("http.listen", f"127.0.0.1:{server.http_port}")):
        env_key = "RUSTBILL_SERVER__LISTEN" if key == "server.listen" else "RUSTBILL_HTTP__LISTEN"
        res = run_cli(["serve"], cwd=tmp_path, env={**env, env_key: listen}, timeout=60)
        assert res.returncode == 1, res.stderr
        assert f"cannot listen on {listen} ({key}): Address already in use (another RustBill" in res.stderr
        assert "loaded" not in res.stderr and "Traceback" not in res.stderr, res.stderr
