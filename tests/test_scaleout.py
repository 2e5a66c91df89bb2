"""Several server processes on one PostgreSQL database: a change made through one is seen by the
others (LISTEN/NOTIFY cache invalidation). SQLite deployments are single-process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TEST_PLUGINS, Databases, ServerProcess, create_interface, md

from rustbill.pb import common_pb2
from rustbill.pb import integration_pb2 as pb


@pytest.fixture
def pair(tmp_path: Path, databases: Databases) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    if not databases.is_pg:
        pytest.skip("scale-out needs PostgreSQL (set RUSTBILL_TEST_DATABASE_URL); SQLite is single-process")
    url = databases.new()
    a = ServerProcess(tmp_path / "a", url, plugins=[TEST_PLUGINS / "t_provider.py"])
    b = ServerProcess(tmp_path / "b", url, plugins=[TEST_PLUGINS / "t_provider.py"])
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def _eventually(check, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the other process did not see the change"
        time.sleep(0.1)


def test_changes_through_one_process_reach_the_other(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    token = a.token()
    sa, sb = a.stub(), b.stub()
    iface = create_interface(sa, token, "t_provider", json.dumps({"base_price": "1.00", "regions": ["x"]}))

    def b_providers() -> dict[str, pb.ProviderInfo]:
        return {p.interface_id: p for p in sb.ListProviders(common_pb2.EmptyRequest(), metadata=md(token)).providers}

    def b_price() -> str:
        req = pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=1, memory_gb=1, disk_gb=1, region="x")
        return sb.QueryPrice(req, metadata=md(token)).amount

    _eventually(lambda: iface.id in b_providers())
    assert b_price() == "1.01"  # b has now cached the binding and the listing

    sa.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(
            interface_id=iface.id, config_json=json.dumps({"base_price": "3.00", "regions": ["y"]})
        ),
        metadata=md(token),
    )
    _eventually(lambda: list(b_providers()[iface.id].spec_template.fields[1].options) == ["y"])
    req = pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=1, memory_gb=1, disk_gb=1, region="y")
    assert sb.QueryPrice(req, metadata=md(token)).amount == "3.01"

    sa.TogglePluginInterface(pb.TogglePluginInterfaceRequest(interface_id=iface.id, enable=False), metadata=md(token))
    _eventually(lambda: iface.id not in b_providers())

    sa.TogglePluginInterface(pb.TogglePluginInterfaceRequest(interface_id=iface.id, enable=True), metadata=md(token))
    sa.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(token))
    _eventually(lambda: iface.id in b_providers() and b_providers()[iface.id].is_healthy)
