"""The plugin scanner, watched through a running server: files appear, change, vanish and
break while it runs (it rescans every 0.2 s in tests), and the server keeps answering."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from helpers import SHIPPED_PLUGINS, TEST_PLUGINS, ServerProcess, create_interface, md, raises_code

from rustbill.pb import integration_pb2 as pb

T = TypeVar("T")
WAIT = 10.0  # seconds a rescan may take to be seen (it runs every 0.2 s)


# ---------------------------------------------------------------- helpers


def wait_until(fn: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """Poll ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.05)


def put(srv: ServerProcess, name: str, source: str) -> Path:
    """Write a plugin file atomically (the scanner never sees half a file)."""
    dest = srv.plugins_dir / name
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(source)
    tmp.replace(dest)
    return dest


def listed(srv: ServerProcess, token: str) -> dict[str, Any]:
    plugins = srv.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(token), timeout=10).plugins
    return {p.plugin_id: p for p in plugins}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def price_req(iface_id: str) -> pb.QueryPriceRequest:
    return pb.QueryPriceRequest(interface_id=iface_id, cpu_cores=1, memory_gb=1, disk_gb=10, bandwidth_mbps=10)


def error_lines(srv: ServerProcess, start: int, *needles: str) -> list[str]:
    """ERROR log lines from ``start`` on that contain every needle."""
    lines = srv.log.splitlines(keepends=False)
    return [ln for ln in lines[start:] if " ERROR " in ln and all(n in ln for n in needles)]


def started(srv: ServerProcess) -> tuple[Any, str]:
    srv.start()
    return srv.stub(), srv.token()


def provider_source(version: str, amount: str, *, admin_page: bool = False, extra: str = "") -> str:
    src = f'''
PLUGIN_TYPE = "upstream_provider"


def version():
    return "{version}"


def config_schema():
    return {{"type": "object", "properties": {{"note": {{"type": "string"}}}}, "additionalProperties": False}}


def query_price(config, spec):
    return {{"amount": "{amount}", "currency": "USD", "billing_cycle": "monthly"}}
'''
    if admin_page:
        src += """

def admin_page(config):
    return {"title": "Hot", "html": "<p>hot</p>"}
"""
    return src + extra


# The broken files: (name, source, what the ERROR line must say about the file).
BROKEN: dict[str, tuple[str, str]] = {
    "syntax_error": (
        'PLUGIN_TYPE = "notifier"\n\ndef send(config, message)\n    return {"ok": True}\n',
        r"syntax error at line 3",
    ),
    "missing_type": (
        'def send(config, message):\n    return {"ok": True}\n',
        r"missing PLUGIN_TYPE",
    ),
    "unknown_type": (
        'PLUGIN_TYPE = "teleporter"\n\ndef send(config, message):\n    return {"ok": True}\n',
        r"unknown PLUGIN_TYPE 'teleporter'",
    ),
    "import_error": (
        'PLUGIN_TYPE = "notifier"\nraise RuntimeError("boom at import")\n',
        r"exception at import: RuntimeError: boom at import",
    ),
    "wrong_params": (
        'PLUGIN_TYPE = "first_party_provider"\n\n'
        "def query_price(config):\n"
        '    return {"amount": "1.00", "currency": "USD", "billing_cycle": "monthly"}\n',
        r"query_price must accept query_price\(config, spec\)",
    ),
}


def wait_for_error(srv: ServerProcess, filename: str, reason: str, start: int) -> str:
    """The ERROR line that names ``filename`` and ``reason``."""
    m = srv.wait_for_log(rf" ERROR .*{re.escape(filename)}.*{reason}", timeout=WAIT, start=start)
    return m.string


# ---------------------------------------------------------------- new and changed files


def test_new_file_appears_while_running(fresh_server: ServerProcess) -> None:
    stub, token = started(fresh_server)
    assert listed(fresh_server, token) == {}
    mark = fresh_server.log_mark()
    put(fresh_server, "hot_provider.py", provider_source("2.3.4", "1.00", admin_page=True))
    put(fresh_server, "plain_notifier.py", 'PLUGIN_TYPE = "notifier"\n\ndef send(config, message):\n    return {}\n')

    def both() -> dict[str, Any]:
        p = listed(fresh_server, token)
        return p if {"hot_provider", "plain_notifier"} <= p.keys() else {}

    plugins = wait_until(both, "both new plugins listed")
    hot, plain = plugins["hot_provider"], plugins["plain_notifier"]
    assert (hot.plugin_type, hot.version, hot.has_admin_page) == ("upstream_provider", "2.3.4", True)
    # No version(): 0.0.0; no admin_page(): no admin page.
    assert (plain.plugin_type, plain.version, plain.has_admin_page) == ("notifier", "0.0.0", False)
    assert hot.created_at and hot.updated_at
    fresh_server.wait_for_log(r"plugin hot_provider loaded \(upstream_provider, version 2\.3\.4\)", start=mark)
    # GetPlugin answers the same.
    got = stub.GetPlugin(pb.GetPluginRequest(id=hot.id), metadata=md(token)).plugin
    assert got == hot
    # And it can be used right away.
    iface = create_interface(stub, token, "hot_provider")
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "1.00"


def test_changed_file_updates_the_row(fresh_server: ServerProcess) -> None:
    put(fresh_server, "hot_provider.py", provider_source("1.0.0", "1.00"))
    stub, token = started(fresh_server)
    before = listed(fresh_server, token)["hot_provider"]
    assert (before.version, before.has_admin_page) == ("1.0.0", False)
    iface = create_interface(stub, token, "hot_provider", '{"note": "keep me"}')
    with raises_code(grpc.StatusCode.NOT_FOUND, "has no admin page"):
        stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(token))

    time.sleep(0.05)  # so that a new updated_at is measurably later
    mark = fresh_server.log_mark()
    put(fresh_server, "hot_provider.py", provider_source("1.1.0", "2.00", admin_page=True))

    def new_version() -> Any:
        p = listed(fresh_server, token)["hot_provider"]
        return p if p.version == "1.1.0" else None

    after = wait_until(new_version, "version 1.1.0 listed")
    assert after.has_admin_page is True
    assert after.id == before.id
    assert after.created_at == before.created_at
    assert ts(after.updated_at) > ts(before.updated_at)
    assert stub.GetPlugin(pb.GetPluginRequest(id=before.id), metadata=md(token)).plugin == after
    fresh_server.wait_for_log(r"plugin hot_provider reloaded \(version 1\.0\.0 → 1\.1\.0\)", start=mark)

    # The interface uses the new code and sees the new admin page; its config is untouched.
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "2.00"
    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(token))
    assert page.title == "Hot"
    info = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(token)).interface
    assert json.loads(info.config_json) == {"note": "keep me"}
    # It follows the plugin's schema and admin page; plugin_version stays the creation snapshot.
    assert info.has_admin_page and info.plugin_version == "1.0.0"


def test_interfaces_follow_a_new_config_schema(fresh_server: ServerProcess) -> None:
    put(fresh_server, "hot_provider.py", provider_source("1.0.0", "1.00"))
    stub, token = started(fresh_server)
    iface = create_interface(stub, token, "hot_provider", '{"note": "n"}')
    upd = pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json='{"note": "n", "zone": "eu"}')
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "'zone' was unexpected"):
        stub.UpdatePluginInterface(upd, metadata=md(token))
    v2 = provider_source("2.0.0", "1.00").replace(
        '{{"note": {{"type": "string"}}}}'.replace("{{", "{").replace("}}", "}"),
        '{"note": {"type": "string"}, "zone": {"type": "string"}}',
    )
    assert '"zone"' in v2
    put(fresh_server, "hot_provider.py", v2)
    wait_until(lambda: listed(fresh_server, token)["hot_provider"].version == "2.0.0" or None, "version 2.0.0")
    info = stub.UpdatePluginInterface(upd, metadata=md(token)).interface
    assert json.loads(info.config_json) == {"note": "n", "zone": "eu"}
    assert "zone" in json.loads(info.config_schema)["properties"]


# ---------------------------------------------------------------- vanished files


def test_vanished_unused_plugin_disappears(fresh_server: ServerProcess) -> None:
    fresh_server.add_plugin(TEST_PLUGINS / "t_notifier.py")
    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    stub, token = started(fresh_server)
    gone = listed(fresh_server, token)["t_notifier"]
    assert "t_provider" in listed(fresh_server, token)
    # An interface that existed once but was deleted does not make the plugin "used".
    once = create_interface(stub, token, "t_notifier")
    stub.DeletePluginInterface(pb.DeletePluginInterfaceRequest(interface_id=once.id), metadata=md(token))

    mark = fresh_server.log_mark()
    (fresh_server.plugins_dir / "t_notifier.py").unlink()
    wait_until(lambda: "t_notifier" not in listed(fresh_server, token), "t_notifier gone from ListPlugins")
    fresh_server.wait_for_log(r"plugin t_notifier: file vanished", start=mark)
    with raises_code(grpc.StatusCode.NOT_FOUND):
        stub.GetPlugin(pb.GetPluginRequest(id=gone.id), metadata=md(token))
    assert set(listed(fresh_server, token)) == {"t_provider"}


def test_vanished_used_plugin_keeps_row_and_interface(fresh_server: ServerProcess) -> None:
    src = fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    stub, token = started(fresh_server)
    config = {"base_price": "3.00", "regions": ["eu", "us"], "api_key": "sk-test-123456"}
    iface = create_interface(stub, token, "t_provider", json.dumps(config))
    before_iface = stub.GetPluginInterface(
        pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(token)
    ).interface
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "3.01"
    row = listed(fresh_server, token)["t_provider"]

    mark = fresh_server.log_mark()
    saved = src.read_bytes()
    src.unlink()
    fresh_server.wait_for_log(r"plugin t_provider: file vanished", timeout=WAIT, start=mark)

    # The row is kept, and GetPlugin still answers.
    assert stub.GetPlugin(pb.GetPluginRequest(id=row.id), metadata=md(token)).plugin.plugin_id == "t_provider"
    assert listed(fresh_server, token)["t_provider"].id == row.id
    # The interface and its configuration are intact.
    info = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(token)).interface
    assert info.plugin_def_id == row.id
    assert info.display_name == before_iface.display_name
    assert json.loads(info.config_json) == json.loads(before_iface.config_json)
    assert json.loads(info.config_json)["base_price"] == "3.00"
    # A provider call says the plugin is not loaded.
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"not loaded"):
        stub.QueryPrice(price_req(iface.id), metadata=md(token))
    # No new interface can be made of it meanwhile.
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"not loaded"):
        create_interface(stub, token, "t_provider")
    # Its health says why (unhealthy, not an error of the health check)
    health = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(token))
    assert not health.is_healthy and health.error == (
        f"plugin 't_provider' of interface {iface.display_name!r} is not loaded "
        "(its file is missing from the plugins folder or failed to load)"
    )
    # The server keeps answering other calls.
    assert stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(), metadata=md(token)).interfaces

    # Putting the file back makes the call work again.
    tmp = src.with_suffix(".tmp")
    tmp.write_bytes(saved)
    tmp.replace(src)

    def works() -> bool:
        try:
            return stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "3.01"
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()  # type: ignore[attr-defined]
            return False

    wait_until(works, "QueryPrice works again after the file came back")
    assert listed(fresh_server, token)["t_provider"].id == row.id


# ---------------------------------------------------------------- broken files


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_file_is_logged_and_skipped(fresh_server: ServerProcess, kind: str) -> None:
    source, reason = BROKEN[kind]
    # One broken from the start...
    put(fresh_server, f"{kind}_a.py", source)
    fresh_server.add_plugin(TEST_PLUGINS / "t_notifier.py")
    stub, token = started(fresh_server)
    line = wait_for_error(fresh_server, f"{kind}_a.py", reason, 0)
    assert "Traceback" not in line
    assert set(listed(fresh_server, token)) == {"t_notifier"}

    # ...and one dropped in while the server runs.
    mark = fresh_server.log_mark()
    put(fresh_server, f"{kind}_b.py", source)
    wait_for_error(fresh_server, f"{kind}_b.py", reason, mark)
    # A good file dropped in afterwards shows that the scanner went on past the broken ones.
    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    wait_until(lambda: "t_provider" in listed(fresh_server, token), "t_provider listed after the broken files")
    time.sleep(1.0)  # several more rescans
    assert set(listed(fresh_server, token)) == {"t_notifier", "t_provider"}
    # Each broken content is reported once, not at every rescan.
    assert len(error_lines(fresh_server, 0, f"{kind}_a.py")) == 1, fresh_server.log
    assert len(error_lines(fresh_server, 0, f"{kind}_b.py")) == 1, fresh_server.log
    # The server keeps answering, and the good plugins work.
    iface = create_interface(stub, token, "t_provider")
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "1.11"
    assert fresh_server.proc is not None and fresh_server.proc.poll() is None


def test_badly_named_file_is_logged_once_and_skipped(fresh_server: ServerProcess) -> None:
    # A good plugin under a name that is not a plugin id: skipped, reported once (not at every rescan).
    put(fresh_server, "Bad-Name.py", 'PLUGIN_TYPE = "notifier"\n\ndef send(config, message):\n    return {}\n')
    fresh_server.add_plugin(TEST_PLUGINS / "t_notifier.py")
    _stub, token = started(fresh_server)
    wait_for_error(fresh_server, "Bad-Name.py", r"not a valid plugin id", 0)
    mark = fresh_server.log_mark()
    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    wait_until(lambda: "t_provider" in listed(fresh_server, token), "t_provider listed")
    time.sleep(1.0)  # several more rescans
    assert set(listed(fresh_server, token)) == {"t_notifier", "t_provider"}
    assert error_lines(fresh_server, mark, "Bad-Name.py") == [], "reported again at a later rescan"
    assert len(error_lines(fresh_server, 0, "Bad-Name.py")) == 1


@pytest.mark.parametrize("kind", ["syntax_error", "import_error", "wrong_params"])
def test_broken_new_version_keeps_the_last_good_one(fresh_server: ServerProcess, kind: str) -> None:
    put(fresh_server, "hot_provider.py", provider_source("1.0.0", "1.00"))
    stub, token = started(fresh_server)
    iface = create_interface(stub, token, "hot_provider")
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "1.00"
    before = listed(fresh_server, token)["hot_provider"]

    broken = {
        "syntax_error": provider_source("2.0.0", "2.00") + "\ndef oops(:\n    pass\n",
        "import_error": provider_source("2.0.0", "2.00") + '\nraise RuntimeError("boom at import")\n',
        "wrong_params": provider_source("2.0.0", "2.00").replace(
            "def query_price(config, spec):", "def query_price(config):"
        ),
    }[kind]
    reason = {
        "syntax_error": r"syntax error at line \d+",
        "import_error": r"exception at import: RuntimeError: boom at import",
        "wrong_params": r"query_price must accept query_price\(config, spec\)",
    }[kind]
    mark = fresh_server.log_mark()
    put(fresh_server, "hot_provider.py", broken)
    line = wait_for_error(fresh_server, "hot_provider.py", reason, mark)
    assert "previous version stays in use" in line

    # The last good version stays in use.
    time.sleep(0.6)  # a few more rescans
    now = listed(fresh_server, token)["hot_provider"]
    assert (now.version, now.updated_at) == ("1.0.0", before.updated_at)
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "1.00"
    assert len(error_lines(fresh_server, mark, "hot_provider.py")) == 1

    # Fixing the file loads the new version.
    put(fresh_server, "hot_provider.py", provider_source("2.0.0", "2.00"))
    wait_until(lambda: listed(fresh_server, token)["hot_provider"].version == "2.0.0", "version 2.0.0 listed")
    assert stub.QueryPrice(price_req(iface.id), metadata=md(token)).amount == "2.00"
    assert listed(fresh_server, token)["hot_provider"].id == before.id


# ---------------------------------------------------------------- removed while stopped


def test_plugins_removed_while_stopped(fresh_server: ServerProcess) -> None:
    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    fresh_server.add_plugin(TEST_PLUGINS / "t_notifier.py")
    stub, token = started(fresh_server)
    config = {"base_price": "4.00"}
    iface = create_interface(stub, token, "t_provider", json.dumps(config))
    rows = listed(fresh_server, token)
    assert {"t_provider", "t_notifier"} <= rows.keys()
    assert fresh_server.stop() == 0

    (fresh_server.plugins_dir / "t_provider.py").unlink()
    (fresh_server.plugins_dir / "t_notifier.py").unlink()

    # The same folder and database, a new process.
    again = ServerProcess(fresh_server.workdir, fresh_server.db_url)
    again.env = dict(fresh_server.env)
    try:
        again.start()
        stub2, token2 = again.stub(), again.token()
        now = listed(again, token2)
        # The unused plugin's row is gone; the used one is kept, with its interface.
        assert "t_notifier" not in now
        assert now["t_provider"].id == rows["t_provider"].id
        got = stub2.GetPlugin(pb.GetPluginRequest(id=rows["t_provider"].id), metadata=md(token2)).plugin
        assert got.plugin_id == "t_provider"
        info = stub2.GetPluginInterface(
            pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(token2)
        ).interface
        assert json.loads(info.config_json) == config
        with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"not loaded"):
            stub2.QueryPrice(price_req(iface.id), metadata=md(token2))
        # Bringing the file back makes the kept interface usable again.
        again.add_plugin(TEST_PLUGINS / "t_provider.py")

        def works() -> bool:
            try:
                return stub2.QueryPrice(price_req(iface.id), metadata=md(token2)).amount == "4.01"
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()  # type: ignore[attr-defined]
                return False

        wait_until(works, "QueryPrice works after the file came back")
    finally:
        again.stop()


def test_a_new_plugin_is_never_listed_half_loaded(fresh_server: ServerProcess) -> None:
    """A plugin file dropped into a running server's folder is listed with its schema from the first
    listing that shows it (seen in CI: listed while its row was written, with config_schema "")."""
    fresh_server.start()
    stub, token = fresh_server.stub(), fresh_server.token()
    schemas: list[str] = []
    stop = threading.Event()

    def list_again_and_again() -> None:
        while not stop.is_set():
            listed = stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(token)).plugins
            schemas.extend(p.config_schema for p in listed)

    listers = [threading.Thread(target=list_again_and_again) for _ in range(3)]
    for t in listers:
        t.start()
    try:
        names = ("demo_cloud", "webhook", "email", "yipay", "bank_transfer", "log_notifier")
        for name in names:
            fresh_server.add_plugin(SHIPPED_PLUGINS / f"{name}.py")
        deadline = time.monotonic() + 20
        while len(stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(token)).plugins) < len(names):
            assert time.monotonic() < deadline, "the plugins were never all listed"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in listers:
            t.join()
    assert schemas and all(json.loads(s) for s in schemas), f"{schemas.count('')} listings without a schema"
