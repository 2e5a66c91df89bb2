"""Fixtures: one shared server for most tests, fresh servers where a test needs its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SHIPPED_PLUGINS, TEST_PLUGINS, Databases, ServerProcess, unique


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    # Under pytest-xdist every worker is a session of its own (own shared server, own databases).
    dbs = Databases(tmp_path_factory.mktemp("db"), share_base="PYTEST_XDIST_WORKER" not in os.environ)
    yield dbs
    dbs.drop_all()


def _all_plugins() -> list[Path]:
    return sorted(SHIPPED_PLUGINS.glob("*.py")) + sorted(TEST_PLUGINS.glob("*.py"))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[ServerProcess]:
    """The shared server: shipped plugins plus the test plugins in tests/plugins."""
    srv = ServerProcess(
        tmp_path_factory.mktemp("server"),
        databases.new(),
        plugins=_all_plugins(),
        env={
            "RUSTBILL_PLUGINS__CALL_TIMEOUT_SECONDS": "10",
            "RUSTBILL_PLUGINS__TIMEOUTS": '{"query_price": 2, "admin_*": 2, "health_check": 2}',
        },
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path, databases: Databases) -> Iterator[ServerProcess]:
    """A server of the test's own: own database, own plugins folder (empty: add what you need)."""
    srv = ServerProcess(tmp_path, databases.new())
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def admin_token(server: ServerProcess) -> str:
    return server.token("admin")


@pytest.fixture(scope="session")
def customer(server: ServerProcess) -> str:
    name = unique("customer")
    server.cli("user", "create", name, "--role", "customer")
    return name


@pytest.fixture(scope="session")
def customer_token(server: ServerProcess, customer: str) -> str:
    return server.token(customer)


@pytest.fixture(scope="session")
def stub(server: ServerProcess):  # type: ignore[no-untyped-def]
    return server.stub()


# The test files that took longest on SQLite (pytest --durations, 2 workers, 2026-11-30), slowest
# first: under pytest-xdist (scripts/test) a file goes to one worker whole, in collection order, so
# these start first instead of keeping one worker busy while the others have finished.
SLOWEST_FILES_FIRST = (
    "test_console.py",
    "test_scanner.py",
    "test_reselling.py",
    "test_reconciler.py",
    "test_plugin_authoring.py",
    "test_isolation.py",
    "test_lifecycle.py",
    "test_customer_services.py",
    "test_provider_rpcs.py",
    "test_http_edge.py",
    "test_secrets.py",
    "test_plugin_contracts.py",
    "test_plugin_incus.py",
    "test_plugin_yipay.py",
    "test_auth.py",
    "test_config.py",
    "test_interfaces.py",
    "test_plugin_kvm.py",
    "test_plugin_webhook.py",
    "test_tls.py",
    "test_plugin_incus_lxd.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if "PYTEST_XDIST_WORKER" in os.environ:
        rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
