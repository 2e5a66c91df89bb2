"""Bad input gets a clear status and loses nothing (issue "Hardening", items 1-5): undecodable
requests, deeply nested JSON, lone surrogates, NaN/Infinity/out-of-range numbers, huge values
echoed in messages."""

from __future__ import annotations

import json

import grpc
import pytest
from helpers import ServerProcess, but_health, create_interface, md, plugin_def_id, raises_code, unique

from rustbill.pb import integration_pb2 as pb
from rustbill.services.permissions import PERMISSIONS

RPCS = sorted(p for p in PERMISSIONS if not p.endswith(("/RestartServer", "/Login", "/RefreshToken", "/Logout")))


@pytest.mark.parametrize("path", RPCS)
def test_an_undecodable_request_is_invalid_argument_without_a_traceback(
    server: ServerProcess, admin_token: str, path: str
) -> None:
    call = server.channel().unary_unary(path, request_serializer=None, response_deserializer=None)
    mark = server.log_mark()
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"^request is not a valid rustbill\.\w+\.\w+$"):
        call(b"\x08", metadata=md(admin_token), timeout=30)
    assert "Traceback" not in "".join(server.log.splitlines(True)[mark:])


def test_invalid_utf8_in_a_string_field_is_invalid_argument(server: ServerProcess, admin_token: str) -> None:
    call = server.channel().unary_unary(
        "/rustbill.integration.IntegrationService/GetPlugin", request_serializer=None, response_deserializer=None
    )
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid rustbill.integration.GetPluginRequest"):
        call(bytes.fromhex("0a03fffefd"), metadata=md(admin_token), timeout=30)


BAD_JSON = [
    ("[" * 100_000, r"nested deeper than 64 levels"),
    ('{"a":' * 20_000 + "1" + "}" * 20_000, r"nested deeper than 64 levels"),
    ('{"api_url": "https://x\\ud800", "key": "abcdef"}', r"config_json\.api_url: text holds a lone surrogate"),
    ('{"api_url": "https://x", "key": "abcdef", "n": NaN}', r"NaN is not valid JSON"),
    ('{"api_url": "https://x", "key": "abcdef", "n": Infinity}', r"Infinity is not valid JSON"),
    ('{"api_url": "https://x", "key": "abcdef", "n": 1e400}', r"number 1e400 is out of range"),
]


@pytest.mark.parametrize(
    ("text", "match"), BAD_JSON, ids=["deep-array", "deep-object", "surrogate", "nan", "inf", "1e400"]
)
def test_bad_config_json_is_refused_and_nothing_is_written(stub, admin_token: str, text: str, match: str) -> None:  # type: ignore[no-untyped-def]
    name = unique("bad")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "config_json.*" + match.split("config_json")[-1]):
        stub.CreatePluginInterface(
            pb.CreatePluginInterfaceRequest(
                plugin_def_id=plugin_def_id(stub, admin_token, "t_gateway"), display_name=name, config_json=text
            ),
            metadata=md(admin_token),
        )
    listed = stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(), metadata=md(admin_token)).interfaces
    assert name not in {i.display_name for i in listed}
    iface = create_interface(stub, admin_token, "t_gateway", json.dumps({"api_url": "https://x", "key": "abcdef"}))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "config_json"):
        stub.UpdatePluginInterface(
            pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json=text), metadata=md(admin_token)
        )
    after = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(admin_token))
    assert but_health(after.interface) == but_health(iface)


@pytest.mark.parametrize(
    ("text", "match"), BAD_JSON[:2] + BAD_JSON[3:], ids=["deep-array", "deep-object", "nan", "inf", "1e400"]
)
def test_bad_args_json_is_refused(stub, admin_token: str, text: str, match: str) -> None:  # type: ignore[no-untyped-def]
    iface = create_interface(stub, admin_token, "demo_cloud", "{}")
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "args_json"):
        stub.CallPluginAction(
            pb.CallPluginActionRequest(interface_id=iface.id, function="admin_anything", args_json=text),
            metadata=md(admin_token),
        )


def test_huge_values_are_not_echoed_whole(stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"plugin_type must be one of .*\(1048576 characters\)") as info:
        stub.ListPlugins(pb.ListPluginsRequest(plugin_type="x" * (1 << 20)), metadata=md(admin_token))
    assert len(info["details"]) < 400
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"id is not a valid UUID") as info:
        stub.GetPlugin(pb.GetPluginRequest(id="y" * (1 << 20)), metadata=md(admin_token))
    assert len(info["details"]) < 400
