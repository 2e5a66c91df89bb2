"""RustBill resells RustBill, end to end: real server processes over TLS (a test CA made here).

A is the upstream, with a first-party provider (tests/plugins/t_provider.py) and a reseller
customer with credit and an API key; B has an interface of the shipped ``rustbill`` plugin pointing
at A; C resells B the same way (C → B → A). Everything is asked through each server's own RPCs; the
ledgers are also read straight from the databases.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from helpers import (
    SERVER_SPEC,
    SHIPPED_PLUGINS,
    TEST_PLUGINS,
    Databases,
    TlsServer,
    create_interface,
    customer_stubs,
    free_port,
    md,
    place_order,
    query_db,
    raises_code,
    retry_while_reconciled,
    unique,
)

from rustbill.pb import balance_pb2, downstream_pb2, instance_pb2, product_pb2, product_service_pb2
from rustbill.pb import integration_pb2 as pb

SPEC = SERVER_SPEC
A_PRICE = Decimal("2.24")  # t_provider: 1.10 per core + 0.01 per GB of memory
MARKUP_B, MARKUP_C = Decimal("17.5"), Decimal("10")
OPEN_PROVIDERS = json.dumps({"IntegrationService/ListProviders": "authenticated"})


def resale(price: Decimal, markup: Decimal) -> Decimal:
    return (price * (100 + markup) / 100).quantize(Decimal("0.01"), rounding=ROUND_UP)


B_PRICE = resale(A_PRICE, MARKUP_B)  # 2.632 -> 2.64 (rounded up)
C_PRICE = resale(B_PRICE, MARKUP_C)  # 2.904 -> 2.91


@dataclass
class Account:
    """A customer account on a server: name, id, token, API key."""

    name: str
    id: str
    token: str
    api_key: str


class Side:
    """One RustBill server of the chain and what its tests need of it."""

    def __init__(self, srv: TlsServer) -> None:
        self.srv = srv
        self.admin = srv.token()
        self.rpc = srv.stub()
        stubs = customer_stubs(srv.channel())
        self.products, self.instances = stubs["products"], stubs["instances"]
        self.balance, self.keys = stubs["balance"], stubs["keys"]

    def customer(self, credit: str | None = None) -> Account:
        """A new customer, with ``credit`` on the balance and an API key made through ApiKeyService."""
        name = unique("reseller")
        self.srv.cli("user", "create", name, "--role", "customer")
        if credit is not None:
            self.srv.cli("balance", "credit", name, credit, "--note", "prepaid")
        token = self.srv.token(name)
        me = self.balance.GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(token))
        key = self.keys.CreateApiKey(downstream_pb2.CreateApiKeyRequest(name="reselling"), metadata=md(token))
        return Account(name, me.customer_id, token, key.api_key)

    def resell(self, upstream: Side, account: Account, interface_id: str, markup: Decimal, **extra: Any) -> Any:
        """An interface of the ``rustbill`` plugin on this server, reselling ``interface_id`` of
        ``upstream`` as ``account``."""
        config = {
            "upstream_url": upstream.srv.http_url,
            "api_key": account.api_key,
            "interface_id": interface_id,
            "markup_percent": str(markup),
            "ca_cert": upstream.srv.ca_pem.decode(),
            **extra,
        }
        return create_interface(self.rpc, self.admin, "rustbill", json.dumps(config))

    def order(self, interface_id: str, token: str, key: str | None = None, spec: Any = SPEC) -> Any:
        return place_order(self.rpc, interface_id, token, key, spec, timeout=60)

    def ledger(self, account: Account) -> list[tuple[str, Decimal]]:
        rows = query_db(
            self.srv.db_url,
            "SELECT kind, amount FROM balance_transactions WHERE customer_id = :c ORDER BY id",
            c=self.db_id(account.id),
        )
        return [(k, Decimal(str(a))) for k, a in rows]

    def stored_balance(self, account: Account) -> Decimal:
        got = self.balance.GetBalance(balance_pb2.GetBalanceRequest(customer_id=account.id), metadata=md(self.admin))
        return Decimal(got.balance)

    def local_instances(self, interface_id: str) -> list[tuple[str, str, str | None]]:
        """(provider_instance_id, status, customer_id) of this server's instances at an interface."""
        rows = query_db(
            self.srv.db_url,
            "SELECT provider_instance_id, status, customer_id FROM instances WHERE interface_id = :i ORDER BY id",
            i=self.db_id(interface_id),
        )
        return [(p, s, str(uuid.UUID(str(c))) if c is not None else None) for p, s, c in rows]

    def db_id(self, value: str) -> object:
        return uuid.UUID(value).hex if self.srv.db_url.startswith("sqlite") else uuid.UUID(value)


def start(tmp: Path, databases: Databases, ca: trustme.CA, plugins: list[Path], **env: str) -> TlsServer:
    srv = TlsServer(
        tmp,
        databases.new(),
        ca,
        plugins=plugins,
        env={"RUSTBILL_AUTH__PERMISSIONS": OPEN_PROVIDERS, "RUSTBILL_AUTH__CACHE_SECONDS": "0", **env},
    )
    return srv.start()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, databases: Databases, ca: trustme.CA) -> Any:
    srv = start(tmp_path_factory.mktemp("a"), databases, ca, [TEST_PLUGINS / "t_provider.py"])
    yield Side(srv)
    srv.stop()


@pytest.fixture(scope="module")
def b(tmp_path_factory: pytest.TempPathFactory, databases: Databases, ca: trustme.CA) -> Any:
    # create_instance times out after 3 s here: the lost-reply tests order from a slow upstream (and
    # B's reconciler, which settles such an order, looks every second instead of every 10)
    env = {"RUSTBILL_PLUGINS__TIMEOUTS": '{"create_instance": 3}', "RUSTBILL_PLUGINS__RECONCILE_INTERVAL_SECONDS": "1"}
    srv = start(tmp_path_factory.mktemp("b"), databases, ca, [SHIPPED_PLUGINS / "rustbill.py"], **env)
    yield Side(srv)
    srv.stop()


@pytest.fixture(scope="module")
def a_kvm(a: Side) -> Any:
    """A's first-party provider, with two products synced."""
    iface = create_interface(a.rpc, a.admin, "t_provider", json.dumps({"product_count": 2, "regions": ["eu", "us"]}))
    a.rpc.SyncProducts(product_pb2.SyncProductsRequest(interface_id=iface.id), metadata=md(a.admin))
    return iface


@pytest.fixture(scope="module")
def reseller(a: Side) -> Account:
    """B's customer account on A, with 100 CNY of credit."""
    return a.customer("100")


@pytest.fixture(scope="module")
def b_resells_a(a: Side, b: Side, a_kvm: Any, reseller: Account) -> Any:
    iface = b.resell(a, reseller, a_kvm.id, MARKUP_B)
    health = b.rpc.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(b.admin))
    assert health.is_healthy, health.error
    return iface


# ---------------------------------------------------------------- B resells A


def test_sync_products_with_the_markup(a: Side, b: Side, a_kvm: Any, b_resells_a: Any) -> None:
    upstream = a.products.ListProducts(
        product_service_pb2.ListProductsRequest(provider_id=a_kvm.id), metadata=md(a.admin)
    ).products
    synced = b.rpc.SyncProducts(product_pb2.SyncProductsRequest(interface_id=b_resells_a.id), metadata=md(b.admin))
    assert synced.created == 2
    got = {p.upstream_product_id: p for p in synced.products}
    assert set(got) == {p.id for p in upstream}
    for p in upstream:
        mine = got[p.id]
        assert mine.name == p.name and mine.currency == "CNY" and mine.provider_id == b_resells_a.id
        assert Decimal(mine.price) == resale(Decimal(p.price), MARKUP_B)
        assert {k: Decimal(v) for k, v in mine.billing_cycles.items()} == {
            k: resale(Decimal(v), MARKUP_B) for k, v in p.billing_cycles.items()
        }
    again = b.rpc.SyncProducts(product_pb2.SyncProductsRequest(interface_id=b_resells_a.id), metadata=md(b.admin))
    assert (again.created, again.unchanged) == (0, 2)


def test_query_price_is_the_upstream_price_with_the_markup(a: Side, b: Side, a_kvm: Any, b_resells_a: Any) -> None:
    req = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 50, "region": "eu", "os": "debian-12"}
    up = a.rpc.QueryPrice(pb.QueryPriceRequest(interface_id=a_kvm.id, **req), metadata=md(a.admin))
    down = b.rpc.QueryPrice(pb.QueryPriceRequest(interface_id=b_resells_a.id, **req), metadata=md(b.admin))
    assert Decimal(up.amount) == A_PRICE
    assert (down.amount, down.currency, down.billing_cycle) == (str(B_PRICE), "CNY", "monthly")
    # the upstream's order form reaches B (A lets customers list providers): its region options too
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "region must be one of eu, us"):
        b.rpc.QueryPrice(pb.QueryPriceRequest(interface_id=b_resells_a.id, **{**req, "region": "mars"}),
                         metadata=md(b.admin))  # fmt: skip


def test_an_order_opens_on_the_upstream_debits_both_and_is_recorded(
    a: Side, b: Side, a_kvm: Any, b_resells_a: Any, reseller: Account
) -> None:
    buyer = b.customer("10")  # B's own customer, paying B's price
    before = a.stored_balance(reseller)
    reply = b.order(b_resells_a.id, buyer.token, key="order-1")
    assert (reply.status, reply.ip_address) == ("running", "192.0.2.10")
    # on A: an instance of the reseller, at A's provider, debited at A's price
    at_a = a.instances.GetInstance(
        instance_pb2.GetInstanceRequest(id=reply.provider_instance_id), metadata=md(reseller.token)
    ).instance
    assert (at_a.customer_id, at_a.provider_id, at_a.status) == (reseller.id, a_kvm.id, "running")
    assert at_a.order_id == str(uuid.UUID(reply.instance_id))  # B's request_id is A's idempotency-key
    assert a.stored_balance(reseller) == before - A_PRICE
    assert a.ledger(reseller)[-1] == ("order", -A_PRICE)
    # on B: the local record, B's customer's, debited at B's price
    assert (reply.provider_instance_id, "running", buyer.id) in b.local_instances(b_resells_a.id)
    assert b.ledger(buyer) == [("credit", Decimal(10)), ("order", -B_PRICE)]
    # GetInstanceStatus and SyncUpstreamInstances on B read A
    st = b.rpc.GetInstanceStatus(
        pb.InstanceStatusRequest(interface_id=b_resells_a.id, instance_id=reply.provider_instance_id),
        metadata=md(b.admin),
    )
    assert (st.status, st.ip_address) == ("running", "192.0.2.10")
    listed = b.rpc.SyncUpstreamInstances(
        pb.SyncUpstreamInstancesRequest(interface_id=b_resells_a.id), metadata=md(b.admin)
    ).instances
    assert reply.provider_instance_id in {i.instance_id for i in listed}
    # B's customer sees it as theirs on B
    mine = b.instances.ListInstances(instance_pb2.ListInstancesRequest(), metadata=md(buyer.token)).instances
    assert [(i.id, i.provider_instance_id) for i in mine] == [(reply.instance_id, reply.provider_instance_id)]


def test_a_retried_order_is_one_instance_and_one_debit_on_both_sides(
    a: Side, b: Side, b_resells_a: Any, reseller: Account
) -> None:
    buyer = b.customer("10")
    a_before = len(a.ledger(reseller))
    first = b.order(b_resells_a.id, buyer.token, key="retry-me")
    again = b.order(b_resells_a.id, buyer.token, key="retry-me")
    assert (again.instance_id, again.provider_instance_id) == (first.instance_id, first.provider_instance_id)
    assert a.ledger(reseller)[a_before:] == [("order", -A_PRICE)]
    assert b.ledger(buyer) == [("credit", Decimal(10)), ("order", -B_PRICE)]
    at_a = a.instances.ListInstances(
        instance_pb2.ListInstancesRequest(order_id=first.instance_id), metadata=md(reseller.token)
    ).instances
    assert [i.id for i in at_a] == [first.provider_instance_id]


def test_a_lost_reply_is_recovered_by_asking_the_upstream(
    a: Side, b: Side, a_kvm: Any, reseller: Account, tmp_path: Path
) -> None:
    """B gives up on a slow order (its create_instance timeout is 3 s, A takes 5 s): B keeps the
    order as "unknown"; A opens and debits it anyway. ``find_instance`` finds it by the request id,
    and B's retry with the same key returns it (settling it, unless B's reconciler just did): one
    instance and one debit on A."""
    slow = create_interface(a.rpc, a.admin, "t_provider", '{"sleep": 5, "regions": ["eu"]}')
    iface = b.resell(a, reseller, slow.id, MARKUP_B)
    a_before = len(a.ledger(reseller))
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        b.order(iface.id, b.admin, key="lost-reply")
    assert [row[:2] for row in b.local_instances(iface.id)] == [(None, "unknown")]
    [(row_id,)] = query_db(b.srv.db_url, "SELECT id FROM instances WHERE idempotency_key = 'lost-reply'")
    request_id = str(uuid.UUID(str(row_id)))
    found = asyncio.run(_find_when_settled(a, reseller, slow.id, request_id))
    assert found is not None and found["status"] == "running"
    # (B's reconciler may be settling it right now: then the retry is told to wait a moment)
    done = retry_while_reconciled(lambda: b.order(iface.id, b.admin, key="lost-reply"))
    assert done.provider_instance_id == found["instance_id"]
    assert [row[:2] for row in b.local_instances(iface.id)] == [(found["instance_id"], "running")]
    assert a.ledger(reseller)[a_before:] == [("order", -A_PRICE)]


def test_a_lost_reply_is_settled_by_the_reconciler_without_a_retry(a: Side, b: Side, reseller: Account) -> None:
    """Nobody retries: B's reconciler asks A for the order by B's request id (the rustbill plugin's
    find_instance) and records A's instance; B's customer keeps one debit, A has one order."""
    slow = create_interface(a.rpc, a.admin, "t_provider", '{"sleep": 5, "regions": ["eu"]}')
    iface = b.resell(a, reseller, slow.id, MARKUP_B)
    buyer = b.customer("10")
    a_before = len(a.ledger(reseller))
    mark = b.srv.log_mark()
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        b.order(iface.id, buyer.token, key="nobody-retries")
    [(row_id,)] = query_db(b.srv.db_url, "SELECT id FROM instances WHERE idempotency_key = 'nobody-retries'")
    order_id = str(uuid.UUID(str(row_id)))
    found = b.srv.wait_for_log(rf"order {order_id} settled \(reconciler\): provider \S+ has instance (\S+)", 90, mark)
    at_a = found.group(1)
    assert b.local_instances(iface.id) == [(at_a, "running", buyer.id)]
    at_a_row = a.instances.GetInstance(instance_pb2.GetInstanceRequest(id=at_a), metadata=md(reseller.token)).instance
    assert at_a_row.order_id == order_id  # found by B's request id, A's idempotency-key
    assert b.ledger(buyer) == [("credit", Decimal(10)), ("order", -B_PRICE)]
    assert a.ledger(reseller)[a_before:] == [("order", -A_PRICE)]


def test_import_an_instance_opened_on_the_upstream_directly(
    a: Side, b: Side, a_kvm: Any, b_resells_a: Any, reseller: Account
) -> None:
    direct = a.order(a_kvm.id, reseller.api_key, key="bought-on-a")  # the reseller's own order on A
    listed = b.rpc.SyncUpstreamInstances(
        pb.SyncUpstreamInstancesRequest(interface_id=b_resells_a.id), metadata=md(b.admin)
    ).instances
    assert direct.instance_id in {i.instance_id for i in listed}
    req = pb.ImportUpstreamInstanceRequest(interface_id=b_resells_a.id, instance_id=direct.instance_id)
    imported = b.rpc.ImportUpstreamInstance(req, metadata=md(b.admin))
    assert (imported.status, imported.ip_address) == ("running", "192.0.2.10")
    with raises_code(grpc.StatusCode.ALREADY_EXISTS, "already imported"):
        b.rpc.ImportUpstreamInstance(req, metadata=md(b.admin))
    with raises_code(grpc.StatusCode.NOT_FOUND):
        b.rpc.ImportUpstreamInstance(
            pb.ImportUpstreamInstanceRequest(interface_id=b_resells_a.id, instance_id=str(uuid.uuid4())),
            metadata=md(b.admin),
        )
    rows = query_db(b.srv.db_url, "SELECT origin FROM instances WHERE provider_instance_id = :p", p=direct.instance_id)
    assert rows == [("imported",)]


def test_upstream_balance_is_the_upstream_ledger(a: Side, b: Side, b_resells_a: Any, reseller: Account) -> None:
    got = b.rpc.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=b_resells_a.id), metadata=md(b.admin))
    ledger = sum((amount for _, amount in a.ledger(reseller)), Decimal(0))
    assert (Decimal(got.balance), got.currency) == (ledger, "CNY")
    assert Decimal(got.balance) == a.stored_balance(reseller) < Decimal(100)
    page = b.rpc.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=b_resells_a.id), metadata=md(b.admin))
    assert f"{got.balance} CNY" in page.html_content and "running" in page.html_content


# ---------------------------------------------------------------- failures


def test_upstream_down_is_unavailable_and_records_nothing(a: Side, b: Side, a_kvm: Any, reseller: Account) -> None:
    down = b.resell(a, reseller, a_kvm.id, MARKUP_B, upstream_url=f"https://127.0.0.1:{free_port()}")
    buyer = b.customer("10")
    with raises_code(grpc.StatusCode.UNAVAILABLE, "cannot reach the remote system"):
        b.order(down.id, buyer.token, key="while-down")
    assert b.local_instances(down.id) == []
    assert b.ledger(buyer) == [("credit", Decimal(10))]  # nothing was debited: the price could not be asked
    with raises_code(grpc.StatusCode.UNAVAILABLE):
        b.order(down.id, b.admin, key="while-down")  # an admin's (unpriced) order reaches create_instance
    assert b.local_instances(down.id) == []
    health = b.rpc.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=down.id), metadata=md(b.admin))
    assert not health.is_healthy and "cannot reach upstream https://127.0.0.1:" in health.error


def test_insufficient_upstream_balance_reaches_the_downstream_caller(a: Side, b: Side, a_kvm: Any) -> None:
    poor = a.customer("1.00")
    iface = b.resell(a, poor, a_kvm.id, MARKUP_B)
    buyer = b.customer("10")
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"insufficient balance: 2.24 CNY needed, 1.00 CNY"):
        b.order(iface.id, buyer.token, key="too-poor")
    assert b.local_instances(iface.id) == []
    assert b.ledger(buyer) == [("credit", Decimal(10)), ("order", -B_PRICE), ("refund", B_PRICE)]
    assert a.ledger(poor) == [("credit", Decimal(1))]
    assert not a.instances.ListInstances(instance_pb2.ListInstancesRequest(), metadata=md(poor.token)).instances


def test_a_revoked_api_key_turns_the_health_check_unhealthy(a: Side, b: Side, a_kvm: Any) -> None:
    account = a.customer("5")
    iface = b.resell(a, account, a_kvm.id, MARKUP_B)
    check = pb.CheckPluginHealthRequest(interface_id=iface.id)
    assert b.rpc.CheckPluginHealth(check, metadata=md(b.admin)).is_healthy
    [key] = a.keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(account.token)).keys
    a.keys.RevokeApiKey(downstream_pb2.RevokeApiKeyRequest(id=key.id), metadata=md(account.token))
    health = b.rpc.CheckPluginHealth(check, metadata=md(b.admin))
    assert not health.is_healthy
    assert health.error.endswith("the upstream refused the API key: API key revoked"), health.error
    assert account.api_key not in health.error
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "refused the API key: API key revoked"):
        b.rpc.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=iface.id), metadata=md(b.admin))


def test_an_expired_api_key_turns_the_health_check_unhealthy(a: Side, b: Side, a_kvm: Any) -> None:
    """A key made with expires_at works on B until then; after it, A refuses it and B's health
    check says so. A's ListApiKeys shows the expiry and that B used the key."""
    from datetime import UTC, datetime, timedelta

    account = a.customer("5")
    soon = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    key = a.keys.CreateApiKey(
        downstream_pb2.CreateApiKeyRequest(name="expiring", expires_at=soon.isoformat()), metadata=md(account.token)
    )
    iface = b.resell(a, Account(account.name, account.id, account.token, key.api_key), a_kvm.id, MARKUP_B)
    check = pb.CheckPluginHealthRequest(interface_id=iface.id)
    assert b.rpc.CheckPluginHealth(check, metadata=md(b.admin)).is_healthy
    listed = {k.id: k for k in a.keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(account.token)).keys}
    assert datetime.fromisoformat(listed[key.id].expires_at) == soon and listed[key.id].last_used_at
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
    health = b.rpc.CheckPluginHealth(check, metadata=md(b.admin))
    assert not health.is_healthy and "the upstream refused the API key: API key expired at" in health.error


# ---------------------------------------------------------------- C resells B resells A


def test_a_chain_of_three_opens_on_a(
    tmp_path_factory: pytest.TempPathFactory,
    databases: Databases,
    ca: trustme.CA,
    a: Side,
    b: Side,
    a_kvm: Any,
    b_resells_a: Any,
    reseller: Account,
) -> None:
    c = Side(start(tmp_path_factory.mktemp("c"), databases, ca, [SHIPPED_PLUGINS / "rustbill.py"]))
    try:
        c_at_b = b.customer("50")  # C's account on B
        c_resells_b = c.resell(b, c_at_b, b_resells_a.id, MARKUP_C)
        health = c.rpc.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=c_resells_b.id), metadata=md(c.admin))
        assert health.is_healthy, health.error
        price = c.rpc.QueryPrice(
            pb.QueryPriceRequest(interface_id=c_resells_b.id, cpu_cores=2, memory_gb=4, disk_gb=50, region="eu"),
            metadata=md(c.admin),
        )
        assert Decimal(price.amount) == C_PRICE
        synced = c.rpc.SyncProducts(product_pb2.SyncProductsRequest(interface_id=c_resells_b.id), metadata=md(c.admin))
        assert len(synced.products) == 2

        buyer = c.customer("10")
        a_before, b_before = len(a.ledger(reseller)), len(b.ledger(c_at_b))
        reply = c.order(c_resells_b.id, buyer.token, key="chain-1")
        assert reply.status == "running"
        # C's record points at B's instance, B's at A's, and A's provider opened it
        at_b = b.instances.GetInstance(
            instance_pb2.GetInstanceRequest(id=reply.provider_instance_id), metadata=md(c_at_b.token)
        ).instance
        assert (at_b.customer_id, at_b.provider_id, at_b.order_id) == (
            c_at_b.id, b_resells_a.id, str(uuid.UUID(reply.instance_id)),
        )  # fmt: skip
        at_a = a.instances.GetInstance(
            instance_pb2.GetInstanceRequest(id=at_b.provider_instance_id), metadata=md(reseller.token)
        ).instance
        assert (at_a.customer_id, at_a.provider_id, at_a.order_id) == (reseller.id, a_kvm.id, at_b.id)
        assert at_a.provider_instance_id.startswith("i-") and at_a.status == "running"
        # each link paid its upstream's price, once
        assert c.ledger(buyer) == [("credit", Decimal(10)), ("order", -C_PRICE)]
        assert b.ledger(c_at_b)[b_before:] == [("order", -B_PRICE)]
        assert a.ledger(reseller)[a_before:] == [("order", -A_PRICE)]
        again = c.order(c_resells_b.id, buyer.token, key="chain-1")
        assert again.provider_instance_id == reply.provider_instance_id
        assert len(a.ledger(reseller)) == a_before + 1 and len(b.ledger(c_at_b)) == b_before + 1
        st = c.rpc.GetInstanceStatus(
            pb.InstanceStatusRequest(interface_id=c_resells_b.id, instance_id=reply.provider_instance_id),
            metadata=md(c.admin),
        )
        assert (st.status, st.ip_address) == ("running", "192.0.2.10")
    finally:
        c.srv.stop()


# ---------------------------------------------------------------- helpers


async def _find_when_settled(a: Side, account: Account, upstream_iface: str, request_id: str) -> Any:
    """The plugin's ``find_instance`` (what a reconciler calls), called in process: while A is still
    opening the order it says the outcome is not known yet; then it returns the instance. An order
    A has no record of is None (here also while A is still pricing it: t_provider sleeps in
    query_price too; a reconciler asks only about orders older than the upstream's timeouts)."""
    import time

    from rustbill import sdk
    from rustbill.plugins import load_plugin

    path = SHIPPED_PLUGINS / "rustbill.py"
    plugin = load_plugin(path, path.read_bytes(), "rustbill").module
    config = {
        "upstream_url": a.srv.http_url,
        "api_key": account.api_key,
        "interface_id": upstream_iface,
        "ca_cert": a.srv.ca_pem.decode(),
    }
    try:
        assert await plugin.find_instance(config, str(uuid.uuid4())) is None
        deadline = time.monotonic() + 20
        seen = set()
        while True:
            try:
                found = await plugin.find_instance(config, request_id)
                if found is not None:
                    assert "pending" in seen  # it was seen while A was opening it
                    return found
                seen.add("none")
            except sdk.PluginError as exc:
                assert exc.code == "DEADLINE_EXCEEDED" and "not known yet" in exc.message, exc.message
                seen.add("pending")
            assert time.monotonic() < deadline, "the upstream never settled the order"
            await asyncio.sleep(0.3)
    finally:
        for client in plugin._clients.values():
            await client.aclose()


# ---------------------------------------------------------------- drift


def test_drift_is_reported_once_through_the_notifiers(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases, ca: trustme.CA, a: Side
) -> None:
    """B2 watches A every second: a price change, a product A stopped offering, an instance bought
    on A directly, a balance below low_balance, and an instance A no longer knows are each logged
    and delivered once through B2's webhook notifier; lasting ones are not sent again while they
    last."""
    from peers.webhook_receiver import WebhookReceiver, new_secret

    secret = new_secret()
    receiver = WebhookReceiver(secret).start()
    env = {"RUSTBILL_DRIFT__INTERVAL_SECONDS": "1"}
    plugins = [SHIPPED_PLUGINS / "rustbill.py", SHIPPED_PLUGINS / "webhook.py"]
    b2 = Side(start(tmp_path_factory.mktemp("b2"), databases, ca, plugins, **env))
    try:
        create_interface(b2.rpc, b2.admin, "webhook", json.dumps({"url": receiver.url, "secret": secret}))
        config = {"product_count": 3, "regions": ["eu"]}
        up = create_interface(a.rpc, a.admin, "t_provider", json.dumps(config))
        a.rpc.SyncProducts(product_pb2.SyncProductsRequest(interface_id=up.id), metadata=md(a.admin))
        account = a.customer("100")
        iface = b2.resell(a, account, up.id, MARKUP_B, low_balance="99.00")

        def rounds(n: int) -> None:
            """Wait until B2 has synced this interface's products ``n`` more times."""
            mark = b2.srv.log_mark()
            for _ in range(n):
                m = b2.srv.wait_for_log(rf"interface={iface.id} .*function=sync_products .*outcome=ok", start=mark)
                mark = b2.srv.log.count("\n", 0, b2.srv.log.index(m.group(0))) + 1

        def sent() -> list[Any]:
            return [d.json for d in receiver.deliveries if d.json["type"] == "upstream.drift"]  # not pings

        rounds(2)  # the first sync reports nothing; all is as it should be
        assert sent() == []
        # A changes: prices up, p2 no longer offered; the reseller buys on A directly (balance < 99)
        a.rpc.UpdatePluginInterface(
            pb.UpdatePluginInterfaceRequest(
                interface_id=up.id, config_json=json.dumps({**config, "product_count": 2, "price_bump": "1"})
            ),
            metadata=md(a.admin),
        )
        a.rpc.SyncProducts(product_pb2.SyncProductsRequest(interface_id=up.id), metadata=md(a.admin))
        direct = a.order(up.id, account.api_key, key="bought-on-a")
        rounds(3)
        # (A changed in three steps: B2 may have seen them in one round or in several)
        assert all(m["data"]["interface_id"] == iface.id for m in sent())
        findings = [f for m in sent() for f in m["data"]["findings"]]
        assert sorted(f["kind"] for f in findings) == ["low_balance", "orphan", "price", "price", "removed"], findings
        text = "\n".join(m["data"]["text"] for m in sent())
        assert f"the price of 'Plan 0' changed from {resale(Decimal(10), MARKUP_B)} to " in text
        assert "'Plan 2' is no longer offered upstream: deactivated here (not deleted)" in text
        assert f"instance {direct.instance_id} (running, 192.0.2.10) exists upstream but not here" in text
        assert "the balance upstream is 97.76 CNY, below the 99.00 set as low_balance" in text
        assert b2.srv.log.count("drift at upstream") == 5
        inactive = b2.products.ListProducts(
            product_service_pb2.ListProductsRequest(provider_id=iface.id, is_active=False), metadata=md(b2.admin)
        ).products
        assert [p.name for p in inactive] == ["Plan 2"]  # deactivated, kept

        # taken in on B2: the orphan is resolved; then A forgets it: reported once as gone
        b2.rpc.ImportUpstreamInstance(
            pb.ImportUpstreamInstanceRequest(interface_id=iface.id, instance_id=direct.instance_id),
            metadata=md(b2.admin),
        )
        reported = len(sent())
        rounds(2)
        assert len(sent()) == reported
        _write_db(a.srv.db_url, "DELETE FROM instances WHERE id = :i", i=a.db_id(direct.instance_id))
        rounds(3)
        assert len(sent()) == reported + 1
        [gone] = sent()[-1]["data"]["findings"]
        assert gone == {
            "kind": "gone",
            "message": f"instance {direct.instance_id} is recorded here but the upstream no longer knows it",
        }
    finally:
        b2.srv.stop()
        receiver.stop()


def _write_db(db_url: str, sql: str, **params: Any) -> None:
    """Change a server's database behind its back (the upstream "forgetting" an instance)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from rustbill.config import async_db_url

    async def go() -> None:
        engine = create_async_engine(async_db_url(db_url))
        try:
            async with engine.begin() as conn:
                assert (await conn.execute(text(sql), params)).rowcount == 1  # type: ignore[attr-defined]
        finally:
            await engine.dispose()

    asyncio.run(go())
