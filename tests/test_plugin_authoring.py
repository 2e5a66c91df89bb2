"""A new plugin author's path: ``rustbill plugin new`` → ``rustbill plugin check`` → drop the file
into a running server → call it through the RPCs; the check names every contract violation; the
server refuses to enable a plugin whose config schema cannot configure an interface; and
``rustbill.sdk.testing`` hosts a plugin in an author's own test.

The CLI runs as a process of its own (as an author runs it; helpers.run_cli); the server is a real one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import ServerProcess, create_interface, md, raises_code, run_cli

from rustbill import errors, sdk
from rustbill.pb import integration_pb2 as pb
from rustbill.pb import order_pb2
from rustbill.sdk.testing import HttpRecorder, PluginHost, PluginLoadFailed

TYPES = ("first_party_provider", "upstream_provider", "gateway", "notifier")


def rustbill(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``rustbill ARGS`` (a process of its own, see helpers.run_cli)."""
    return run_cli(list(args), cwd=cwd, env={**os.environ, **(env or {})}, timeout=120)


def check_json(path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    res = rustbill("plugin", "check", str(path), "--json", *extra, cwd=path.parent, env=env)
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


def findings(report: dict[str, Any], plugin_id: str) -> dict[str, dict[str, Any]]:
    (plugin,) = [p for p in report["plugins"] if p["plugin_id"] == plugin_id]
    return {f["function"]: f for f in plugin["findings"]}


def wait_listed(srv: ServerProcess, token: str, plugin_id: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            listed = srv.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(token)).plugins
        except grpc.RpcError as exc:  # (seen once in CI: say whether the server is still running)
            assert srv.proc is not None
            tail = "".join(srv.log.splitlines(keepends=True)[-30:])
            raise AssertionError(
                f"ListPlugins failed: {exc}; server exit code {srv.proc.poll()}; log:\n{tail}"
            ) from exc
        for p in listed:
            if p.plugin_id == plugin_id:
                return p
        time.sleep(0.1)
    raise AssertionError(f"{plugin_id} never listed")


# ---------------------------------------------------------------- scaffold → check → server


def test_scaffold_of_each_type_checks_clean_and_works_in_a_running_server(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    fresh_server.start()
    stub, token = fresh_server.stub(), fresh_server.token()
    work = tmp_path / "mine"
    work.mkdir()
    for ptype in TYPES:
        name = f"my_{ptype}"
        started = time.monotonic()
        made = rustbill("plugin", "new", "--type", ptype, name, "--dir", str(work), cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        path = work / f"{name}.py"
        assert f"wrote {path}" in made.stdout

        code, report = check_json(path)
        assert code == 0, report
        outcomes = {fn: f["outcome"] for fn, f in findings(report, name).items()}
        # every contract function is there and honours the contract (no remote system to miss)
        assert set(outcomes.values()) <= {"ok", "skipped"}, outcomes
        assert outcomes["admin_summary"] == "skipped" and outcomes["admin_page"] == "ok"

        fresh_server.add_plugin(path)
        plugin = wait_listed(fresh_server, token, name)
        assert plugin.plugin_type == ptype and plugin.has_admin_page and plugin.load_error == ""
        schema = json.loads(plugin.config_schema)
        secret = [k for k, p in schema["properties"].items() if p.get("writeOnly")]
        assert secret, "the scaffold shows a secret field"
        config = {k: p["examples"][0] for k, p in schema["properties"].items() if p.get("examples")}
        iface = create_interface(stub, token, name, json.dumps(config))
        if ptype.endswith("provider"):
            price = stub.QueryPrice(
                pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=2, memory_gb=4, disk_gb=20), metadata=md(token)
            )
            assert (price.amount, price.currency, price.billing_cycle) == ("20.00", "USD", "monthly")
            spec = order_pb2.ServerSpec(cpu_cores=1, memory_gb=2, disk_gb=20)
            opened = stub.CreateUpstreamInstance(
                pb.UpstreamOrderRequest(interface_id=iface.id, server_spec=spec),
                metadata=[*md(token), ("idempotency-key", str(uuid.uuid4()))],
            )
            assert opened.provider_instance_id.startswith(f"{name}-") and opened.status == "running"
            status = stub.GetInstanceStatus(
                pb.InstanceStatusRequest(interface_id=iface.id, instance_id=opened.provider_instance_id),
                metadata=md(token),
            )
            assert status.status == "running"
        elapsed = time.monotonic() - started
        health = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(token))
        assert health.is_healthy
        page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(token))
        assert "rustbill.bind" in page.html_content and page.title
        action = stub.CallPluginAction(
            pb.CallPluginActionRequest(interface_id=iface.id, function="admin_summary", args_json="{}"),
            metadata=md(token),
        )
        assert json.loads(action.result_json)
        print(f"{ptype}: plugin new → a working call through the server in {elapsed:.1f}s")


def test_plugin_new_refuses_bad_names_types_and_existing_files(tmp_path: Path) -> None:
    bad_name = rustbill("plugin", "new", "--type", "gateway", "My-Pay", "--dir", str(tmp_path), cwd=tmp_path)
    assert bad_name.returncode == 2 and "'My-Pay' is not a plugin id" in bad_name.stderr
    bad_type = rustbill("plugin", "new", "--type", "provider", "pay", "--dir", str(tmp_path), cwd=tmp_path)
    assert bad_type.returncode == 2 and "unknown plugin type 'provider'" in bad_type.stderr
    assert rustbill("plugin", "new", "--type", "gateway", "pay", "--dir", str(tmp_path), cwd=tmp_path).returncode == 0
    again = rustbill("plugin", "new", "--type", "notifier", "pay", "--dir", str(tmp_path), cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr
    assert 'PLUGIN_TYPE = "gateway"' in (tmp_path / "pay.py").read_text()


# ---------------------------------------------------------------- the check names each violation

BAD_PROVIDER = """
PLUGIN_TYPE = "upstream_provider"

def version():
    return "1.0.0"

def health_check(config):
    return 42

def admin_page(config):
    return ["not html"]

def spec_template(config):
    return {"fields": [{"label": "no key"}]}

def sync_products(config):
    return [{"id": "a", "name": "A"}]

def query_price(config, spec):
    return {"amount": 9.99, "currency": "USD"}

def create_instance(config, spec):
    return {"status": "running"}

def find_instance(config, request_id):
    return {"status": "running"}

def get_instance_status(config, instance_id):
    return "running"

def sync_upstream_instances(config):
    return {"instance_id": "x"}

def get_upstream_balance(config):
    return {"currency": "USD"}
"""

BAD_GATEWAY = """
PLUGIN_TYPE = "gateway"

def create_payment(config, order):
    return {"trade_no": "t1"}

def verify_notify(config, request):
    return {"paid": False}
"""

BAD_NOTIFIER = """
PLUGIN_TYPE = "notifier"

def send(config, message):
    return {"delivered": "yes"}
"""

# function -> a piece of the violation the check must report for it
EXPECTED = {
    "bad_provider": {
        "health_check": "health_check must return None, a bool, a message or a dict, not int",
        "admin_page": "admin_page result must be a dict, not list",
        "spec_template": "spec_template field 0 has no 'key'",
        "sync_products": "sync_products item 0 has no 'price'",
        "query_price": "query_price amount",
        "create_instance": "create_instance result has no 'instance_id'",
        "find_instance": "find_instance result has no 'instance_id'",
        "get_instance_status": "get_instance_status result must be a dict, not str",
        "sync_upstream_instances": "sync_upstream_instances must return a list, not dict",
        "get_upstream_balance": "get_upstream_balance result has no 'balance'",
    },
    "bad_gateway": {
        "create_payment": "create_payment must return a 'pay_url', a 'qrcode' or 'instructions'",
        "verify_notify": "verify_notify result needs booleans 'valid' and 'paid'",
    },
    "bad_notifier": {"send": "send result 'delivered' must be a boolean"},
    "bad_version": {"load": "version() must return a semver string like '1.2.3', got '1.0'"},
    "bad_schema": {"load": "config_schema() is not a valid JSON Schema"},
    "bad_signature": {"load": "query_price must accept query_price(config, spec)"},
    "bad_required": {"config_schema": "bad_required.py: config_schema() requires 'token', not in its properties"},
    "bad_default": {"config_schema": "property 'port': default 'x' is not valid"},
    "Bad-Name": {"load": "Bad-Name.py: file name is not a valid plugin id"},
}


def test_check_names_one_violation_per_contract_function(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "bad_provider.py").write_text(BAD_PROVIDER)
    (folder / "bad_gateway.py").write_text(BAD_GATEWAY)
    (folder / "bad_notifier.py").write_text(BAD_NOTIFIER)
    (folder / "bad_version.py").write_text('PLUGIN_TYPE = "notifier"\n\ndef version():\n    return "1.0"\n')
    (folder / "bad_schema.py").write_text(
        'PLUGIN_TYPE = "notifier"\n\ndef config_schema():\n    return {"type": "objekt"}\n'
    )
    (folder / "bad_signature.py").write_text(
        'PLUGIN_TYPE = "upstream_provider"\n\ndef query_price(config):\n    pass\n'
    )
    (folder / "bad_required.py").write_text(
        'PLUGIN_TYPE = "notifier"\n\ndef config_schema():\n'
        '    return {"type": "object", "required": ["token"], "properties": {"url": {"type": "string"}}}\n'
    )
    (folder / "bad_default.py").write_text(
        'PLUGIN_TYPE = "notifier"\n\ndef config_schema():\n'
        '    return {"type": "object", "properties": {"port": {"type": "integer", "default": "x"}}}\n'
    )
    (folder / "Bad-Name.py").write_text('PLUGIN_TYPE = "notifier"\n')
    code, report = check_json(folder)
    assert code == 1 and report["ok"] is False
    for pid, expected in EXPECTED.items():
        got = findings(report, pid)
        for function, text in expected.items():
            assert got[function]["outcome"] == "violation", (pid, function, got[function])
            assert text in got[function]["detail"], (pid, function, got[function]["detail"])
    # what came back is shown with a bad shape
    assert findings(report, "bad_gateway")["verify_notify"]["got"] == "{'paid': False}"
    # the text form: one line per function, the violation named
    text = rustbill("plugin", "check", str(folder / "bad_gateway.py"), cwd=tmp_path)
    assert text.returncode == 1
    assert "VIOLATION   verify_notify" in text.stdout and "got {'paid': False}" in text.stdout
    assert text.stdout.rstrip().endswith("1 plugin(s), 2 violation(s)")


UNREACHABLE = """
import time

import httpx

from rustbill import sdk

PLUGIN_TYPE = "upstream_provider"

def config_schema():
    return {"type": "object", "required": ["url"], "properties": {
        "url": {"type": "string", "examples": ["http://127.0.0.1:9/"]},
        "key": {"type": "string", "writeOnly": True, "default": ""}}}

def query_price(config, spec):
    sdk.http_sync().get(config["url"])

def get_upstream_balance(config):
    raise sdk.NotFound("no account")

def sync_products(config):
    time.sleep(5)

def create_instance(config, spec):
    raise KeyError("boom")
"""


def test_unreachable_is_not_a_violation_but_a_slow_function_or_an_exception_is(tmp_path: Path) -> None:
    path = tmp_path / "far_away.py"
    path.write_text(UNREACHABLE)
    env = {"RUSTBILL_PLUGINS__TIMEOUTS": '{"sync_products": 0.5}'}
    code, report = check_json(path, env=env)
    got = findings(report, "far_away")
    assert got["query_price"]["outcome"] == "unreachable" and "UNAVAILABLE" in got["query_price"]["detail"]
    assert got["get_upstream_balance"]["outcome"] == "refused"
    assert got["sync_products"] == {
        "function": "sync_products", "outcome": "violation", "detail": "did not finish within the server's 0.5s",
        "got": "",
    }  # fmt: skip
    assert got["create_instance"]["outcome"] == "violation" and "KeyError: 'boom'" in got["create_instance"]["detail"]
    assert got["health_check"]["outcome"] == "absent"
    assert code == 1

    # the server's timeouts from its configuration file (before the command), the plugin's config after
    (tmp_path / "server.toml").write_text("[plugins]\ntimeouts = {sync_products = 0.3}\n")
    res = rustbill(
        "--config", "server.toml", "plugin", "check", str(path), "--json", "--config", '{"url": "http://127.0.0.1:9/"}',
        cwd=tmp_path,
    )  # fmt: skip
    slow = findings(json.loads(res.stdout), "far_away")["sync_products"]
    assert slow["detail"] == "did not finish within the server's 0.3s"

    # --config replaces the config made from the schema; the secret is used but never shown
    path.write_text(UNREACHABLE.replace("time.sleep(5)", "return []").replace('raise KeyError("boom")', "pass"))
    code, report = check_json(path, "--config", '{"url": "http://127.0.0.1:9/", "key": "s3cr3t-value"}')
    assert "s3cr3t-value" not in json.dumps(report)
    got = findings(report, "far_away")
    assert got["sync_products"]["outcome"] == "ok"
    assert got["create_instance"]["outcome"] == "violation"  # None is not an instance
    bad = rustbill("plugin", "check", str(path), "--config", "[1]", cwd=tmp_path)
    assert bad.returncode == 2 and "--config is neither a JSON object nor a readable JSON file" in bad.stderr


# ---------------------------------------------------------------- the server refuses to enable


def test_server_refuses_to_enable_a_plugin_whose_schema_is_unusable(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    fresh_server.start()
    stub, token = fresh_server.stub(), fresh_server.token()
    source = (
        'PLUGIN_TYPE = "notifier"\n\ndef config_schema():\n'
        '    return {"type": "object", "required": ["token"], "properties": {"url": {"type": "string"}}}\n\n'
        "def send(config, message):\n    return None\n"
    )
    path = tmp_path / "half_done.py"
    path.write_text(source)
    _, report = check_json(path)
    message = findings(report, "half_done")["config_schema"]["detail"]
    assert message == "half_done.py: config_schema() requires 'token', not in its properties"

    mark = fresh_server.log_mark()
    fresh_server.add_plugin(path)
    plugin = wait_listed(fresh_server, token, "half_done")
    assert plugin.load_error == message  # loaded (listed with its schema), but marked
    fresh_server.wait_for_log(
        re.escape(f"plugin half_done loaded, but no interface of it can be enabled: {message}"), start=mark
    )
    with raises_code(
        grpc.StatusCode.FAILED_PRECONDITION, re.escape(f"plugin 'half_done' cannot be enabled: {message}")
    ):
        create_interface(stub, token, "half_done", '{"token": "x"}')
    assert not [i for i in stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(), metadata=md(token)).interfaces
                if i.plugin_id == "half_done"]  # fmt: skip

    # fixed: it can be enabled, and the mark is gone
    fixed = tmp_path / "fixed" / "half_done.py"
    fixed.parent.mkdir()
    fixed.write_text(source.replace('"url": {"type": "string"}', '"token": {"type": "string", "writeOnly": True}'))
    fresh_server.add_plugin(fixed)
    deadline = time.monotonic() + 20
    while wait_listed(fresh_server, token, "half_done").load_error and time.monotonic() < deadline:
        time.sleep(0.1)
    iface = create_interface(stub, token, "half_done", '{"token": "x"}')
    assert iface.enabled


# ---------------------------------------------------------------- rustbill.sdk.testing


async def test_sdk_testing_hosts_a_scaffolded_notifier_against_a_local_http_server(tmp_path: Path) -> None:
    assert rustbill("plugin", "new", "--type", "notifier", "chat", "--dir", str(tmp_path), cwd=tmp_path).returncode == 0
    with HttpRecorder() as peer:
        async with PluginHost(tmp_path / "chat.py", call_timeout=5) as host:
            assert host.loaded.plugin_type == "notifier" and "send" in host.functions()
            iid = await host.interface({"url": peer.url + "/hook", "token": "t0ken-value"})
            assert await host.health(iid) is None
            message = host.sample_message(subject="Paid")
            assert await host.call(iid, "send", message) == {"delivered": True, "id": message["id"], "error": ""}
            (request,) = peer.requests
            assert (request.method, request.path) == ("POST", "/hook")
            assert request.headers["Authorization"] == "Bearer t0ken-value"
            assert request.json()["subject"] == "Paid"
            assert host.notifier_messages(iid) == [message]

            peer.answer(404)  # a definite refusal: an answer, not an error
            refused = await host.call(iid, "send", host.sample_message())
            assert refused["delivered"] is False and "404" in refused["error"]
            peer.answer(503)
            with pytest.raises(errors.Unavailable, match="answered 503"):
                await host.call(iid, "send", host.sample_message())
            assert (await host.action(iid, "admin_summary"))["to"] == peer.url + "/hook"
            with pytest.raises(errors.InvalidArgument, match=r"config_json\.url"):
                await host.interface({"url": "ftp://nope"})


async def test_sdk_testing_fake_time_and_a_scaffolded_provider(tmp_path: Path) -> None:
    assert (
        rustbill(
            "plugin", "new", "--type", "first_party_provider", "vm", "--dir", str(tmp_path), cwd=tmp_path
        ).returncode
        == 0
    )
    async with PluginHost(tmp_path / "vm.py") as host:
        clock = host.fake_time(datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))
        iid = await host.interface()  # the config made from the schema's examples
        first = await host.call(iid, "create_instance", host.sample_spec("order-1"))
        assert first["created_at"] == "2031-05-06T07:08:09+00:00"
        clock.advance(days=1)
        second = await host.call(iid, "create_instance", host.sample_spec("order-2"))
        assert second["created_at"] == "2031-05-07T07:08:09+00:00"
        # a retry of order-1 is the same instance; the state survives between calls
        assert await host.call(iid, "create_instance", host.sample_spec("order-1")) == first
        assert await host.call(iid, "find_instance", "order-1") == first
        assert await host.call(iid, "find_instance", "order-3") is None
        assert len(await host.call(iid, "sync_upstream_instances")) == 2
    assert sdk.now().year < 2031  # the real clock again


async def test_sdk_testing_reports_a_file_that_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text('PLUGIN_TYPE = "provider"\n')
    host = PluginHost(path)
    with pytest.raises(PluginLoadFailed, match=r"broken\.py: unknown PLUGIN_TYPE 'provider'"):
        await host.start()
    await host.close()
