"""What a customer of this RustBill sees and pays: ProductService, InstanceService, BalanceService,
ApiKeyService, and CreateUpstreamInstance priced and debited from the balance (through the
running server; the ledger read straight from its database)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc
import pytest
from helpers import (
    SERVER_SPEC,
    TEST_PLUGINS,
    ServerProcess,
    create_interface,
    customer_stubs,
    md,
    place_order,
    query_db,
    raises_code,
    unique,
)

from rustbill.pb import balance_pb2, downstream_pb2, instance_pb2, order_pb2, product_pb2, product_service_pb2
from rustbill.pb import integration_pb2 as pb

SPEC = SERVER_SPEC
PRICE = Decimal("2.24")  # t_provider: 1.10 per core + 0.01 per GB of memory


def new_customer(server: ServerProcess, credit: str | None = None) -> tuple[str, str]:
    """A new customer (name, token), credited ``credit`` with the CLI."""
    name = unique("cust")
    server.cli("user", "create", name, "--role", "customer")
    if credit is not None:
        out = server.cli("balance", "credit", name, credit, "--note", "bank transfer 42").stdout
        assert f"credited {name} {Decimal(credit):.2f}" in out
    return name, server.token(name)


def user_id(server: ServerProcess, name: str) -> str:
    [(uid,)] = query_db(server.db_url, "SELECT id FROM users WHERE username = :n", n=name)
    return str(uuid.UUID(str(uid)))


def ledger(server: ServerProcess, name: str) -> list[tuple[str, Decimal, Decimal]]:
    """(kind, amount, balance_after) of a customer's ledger, oldest first."""
    rows = query_db(
        server.db_url,
        "SELECT t.kind, t.amount, t.balance_after FROM balance_transactions t JOIN users u ON u.id = t.customer_id "
        "WHERE u.username = :n ORDER BY t.id",
        n=name,
    )
    return [(k, Decimal(str(a)), Decimal(str(b))) for k, a, b in rows]


def stored_balance(server: ServerProcess, name: str) -> Decimal:
    rows = query_db(
        server.db_url, "SELECT b.balance FROM balances b JOIN users u ON u.id = b.customer_id WHERE u.username = :n",
        n=name,
    )  # fmt: skip
    return Decimal(str(rows[0][0])) if rows else Decimal(0)


def assert_balance_is_the_ledger(server: ServerProcess, name: str) -> Decimal:
    entries = ledger(server, name)
    total = sum((a for _, a, _ in entries), Decimal(0))
    assert stored_balance(server, name) == total
    running = Decimal(0)
    for _, amount, after in entries:
        running += amount
        assert after == running
    return total


order = place_order


@pytest.fixture(scope="module")
def provider(stub, admin_token: str):  # type: ignore[no-untyped-def]
    return create_interface(stub, admin_token, "t_provider", json.dumps({"regions": ["eu", "us-west"]}))


@pytest.fixture(scope="module")
def services(server: ServerProcess):  # type: ignore[no-untyped-def]
    return customer_stubs(server.channel())


# ---------------------------------------------------------------- balance and ledger


def test_credit_and_balance(server: ServerProcess, services, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    name, token = new_customer(server, "100")
    server.cli("balance", "credit", name, "0.10", "--note", "cents")
    bal = services["balance"].GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(token))
    assert (bal.customer_id, bal.balance, bal.credit_limit, bal.currency) == (
        user_id(server, name), "100.10", "0.00", "CNY",
    )  # fmt: skip
    listed = services["balance"].ListBalanceTransactions(
        balance_pb2.ListBalanceTransactionsRequest(), metadata=md(token)
    )
    assert [(t.kind, t.amount, t.balance_after, t.note) for t in listed.transactions] == [
        ("credit", "0.10", "100.10", "cents"),
        ("credit", "100.00", "100.00", "bank transfer 42"),
    ]
    assert listed.transactions[0].created_by.startswith("cli")
    assert (listed.meta.total, listed.meta.page, listed.meta.total_pages) == (2, 1, 1)
    # admins name the customer; customers cannot name another one
    _, other_token = new_customer(server)
    req = balance_pb2.GetBalanceRequest(customer_id=user_id(server, name))
    assert services["balance"].GetBalance(req, metadata=md(admin_token)).balance == "100.10"
    with raises_code(grpc.StatusCode.PERMISSION_DENIED, "only see their own"):
        services["balance"].GetBalance(req, metadata=md(other_token))
    assert services["balance"].GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(other_token)).balance == "0.00"
    assert assert_balance_is_the_ledger(server, name) == Decimal("100.10")


def test_balance_cli_refuses_bad_amounts_and_admins(server: ServerProcess) -> None:
    name, _ = new_customer(server)
    res = server.cli("balance", "credit", name, "12.5x", check=False)
    assert res.returncode == 2 and "AMOUNT is not a decimal amount: '12.5x'" in res.stderr, res.stderr
    res = server.cli("balance", "credit", "admin", "5", check=False)
    assert res.returncode == 1 and "balances belong to customers" in res.stderr
    res = server.cli("balance", "debit", name, "1", check=False)
    assert res.returncode == 1 and "insufficient balance: 1.00 CNY needed, 0.00 CNY available" in res.stderr
    server.cli("balance", "limit", name, "5")
    server.cli("balance", "debit", name, "1", "--note", "fee")
    shown = server.cli("balance", "show", name).stdout
    assert f"{name}: -1.00 CNY (credit limit 5.00)" in shown and "fee" in shown
    assert ledger(server, name) == [("debit", Decimal(-1), Decimal(-1))]


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("12.5x", "not a decimal amount"),
        (12.5, "not float"),
        ("0.000000001", "more than 8 decimal places"),
        ("1e12", "too large"),
        ("NaN", "finite"),
    ],
)
def test_amounts_are_exact_and_bounded(amount: object, message: str) -> None:
    from rustbill.domain.ledger import parse_amount
    from rustbill.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=message):
        parse_amount(amount)
    assert parse_amount("0.10000000") == Decimal("0.1") and parse_amount(" 999999999999.99999999 ")


async def test_a_refund_cut_short_is_made_by_the_sweep(databases) -> None:  # type: ignore[no-untyped-def]
    """The process stopped between a failed order's removal and its refund: the debit has no
    instance row. The sweep gives it back exactly once, however often and from how many places it
    runs; a debit whose order still exists (opened, or outcome unknown) stands."""
    import asyncio

    from rustbill.db import Database, Instance, Plugin, PluginInterface, User
    from rustbill.domain.ledger import Ledger
    from rustbill.domain.paging import Page
    from rustbill.ids import new_id, utcnow

    db = Database(databases.new())
    await db.migrate()
    try:
        ledger = Ledger(db, currency="CNY")
        user = User(username=unique("sweep"), role="customer", is_active=True)
        plugin = Plugin(plugin_type="first_party_provider", plugin_id=unique("p").replace("-", "_"), content_hash="0")
        async with db.write() as s:
            s.add_all([user, plugin])
            await s.flush()
            iface = PluginInterface(plugin_def_id=plugin.id, plugin_type=plugin.plugin_type, plugin_id=plugin.plugin_id,
                                    display_name="x", config_json="{}", config_schema="{}")  # fmt: skip
            s.add(iface)
        await ledger.credit(user.id, Decimal("10"), note="", by="test")
        lost, kept = new_id(), new_id()
        async with db.write() as s:  # two orders debited; only `kept` still has its instance row
            await ledger.charge(s, user.id, Decimal("2.5"), instance_id=lost, note="lost")
            await ledger.charge(s, user.id, Decimal("1.25"), instance_id=kept, note="kept")
            s.add(Instance(id=kept, interface_id=iface.id, status="unknown", origin="created", customer_id=user.id,
                           created_at=utcnow(), updated_at=utcnow()))  # fmt: skip
        results = await asyncio.gather(*(ledger.refund_failed_orders() for _ in range(4)))
        assert sum(results) == 1
        assert await ledger.refund_failed_orders() == 0
        assert await ledger.refund_if_gone(lost, reason="again") is None
        assert (await ledger.balance(user.id)).balance == Decimal("8.75")  # 10 - 2.5 - 1.25 + 2.5
        rows, meta = await ledger.transactions(user.id, Page())
        assert [(t.kind, t.amount, t.instance_id) for t in rows] == [
            ("refund", Decimal("2.5"), lost), ("order", Decimal("-1.25"), kept), ("order", Decimal("-2.5"), lost),
            ("credit", Decimal("10"), None),
        ]  # fmt: skip
        assert meta.total == 4
    finally:
        await db.dispose()


def test_the_ledger_is_append_only(server: ServerProcess) -> None:
    name, _ = new_customer(server, "5")
    for sql in ("UPDATE balance_transactions SET note = 'x'", "DELETE FROM balance_transactions"):
        with pytest.raises(Exception, match="append-only"):
            query_db(server.db_url, sql)
    assert ledger(server, name) == [("credit", Decimal(5), Decimal(5))]


# ---------------------------------------------------------------- orders


def test_an_order_is_priced_debited_and_the_customers(server: ServerProcess, stub, services, provider) -> None:  # type: ignore[no-untyped-def]
    name, token = new_customer(server, "10")
    reply = order(stub, provider.id, token)
    assert reply.status == "running" and reply.provider_instance_id.startswith("i-")
    assert ledger(server, name) == [("credit", 10, 10), ("order", -PRICE, 10 - PRICE)]
    tx = services["balance"].ListBalanceTransactions(balance_pb2.ListBalanceTransactionsRequest(), metadata=md(token))
    assert tx.transactions[0].instance_id == reply.instance_id and "2.24 CNY monthly" in tx.transactions[0].note
    got = services["instances"].GetInstance(instance_pb2.GetInstanceRequest(id=reply.instance_id), metadata=md(token))
    i = got.instance
    assert (i.customer_id, i.provider_id, i.provider_instance_id, i.status, i.ip_address) == (
        user_id(server, name), provider.id, reply.provider_instance_id, "running", "192.0.2.10",
    )  # fmt: skip
    assert dict(i.server_spec) == {
        "cpu_cores": "2", "memory_gb": "4", "disk_gb": "50", "bandwidth_mbps": "0", "region": "eu", "os": "debian-12",
    }  # fmt: skip
    assert assert_balance_is_the_ledger(server, name) == 10 - PRICE


def test_insufficient_balance_opens_and_debits_nothing(server: ServerProcess, stub, provider) -> None:  # type: ignore[no-untyped-def]
    name, token = new_customer(server, "2.23")
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"insufficient balance: 2.24 CNY needed, 2.23 CNY available"):
        order(stub, provider.id, token, key="k-1")
    assert ledger(server, name) == [("credit", Decimal("2.23"), Decimal("2.23"))]
    rows = query_db(
        server.db_url, "SELECT count(*) FROM instances WHERE customer_id = :c", c=_db(server, user_id(server, name))
    )
    assert rows == [(0,)]
    server.cli("balance", "credit", name, "0.01")  # topped up: the same key now orders
    assert order(stub, provider.id, token, key="k-1").status == "running"
    assert [k for k, *_ in ledger(server, name)] == ["credit", "credit", "order"]
    assert assert_balance_is_the_ledger(server, name) == 0


def test_a_retried_order_is_one_instance_and_one_debit(server: ServerProcess, stub, provider) -> None:  # type: ignore[no-untyped-def]
    name, token = new_customer(server, "10")
    first = order(stub, provider.id, token, key="order-7")
    again = order(stub, provider.id, token, key="order-7")
    assert (again.instance_id, again.provider_instance_id) == (first.instance_id, first.provider_instance_id)
    assert [k for k, *_ in ledger(server, name)] == ["credit", "order"]
    server.cli("balance", "debit", name, str(10 - PRICE))  # nothing left: a retry still answers (no new debit)
    assert order(stub, provider.id, token, key="order-7").instance_id == first.instance_id


def test_the_order_time_price_is_charged_unless_above_max_price(server: ServerProcess, stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    """A quote is not a reservation: an order is debited the provider's price when it is placed
    (the ledger shows it). A caller that sent ``max-price`` is refused a higher one, and nothing is
    opened or debited; a retry of a keyed order is not priced again."""
    iface = create_interface(stub, admin_token, "t_provider", "{}", unique("repriced"))
    name, token = new_customer(server, "20")
    quote = stub.QueryPrice(
        pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=2, memory_gb=4, disk_gb=50), metadata=md(token)
    )
    assert Decimal(quote.amount) == PRICE
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json=json.dumps({"base_price": "1.60"})),
        metadata=md(admin_token),
    )
    risen = Decimal("3.24")  # 1.60 per core now
    first = order(stub, iface.id, token, key="quoted-at-2.24")  # no max-price: the price of now
    tx = ledger(server, name)
    assert tx[-1][:2] == ("order", -risen)

    def priced(limit: str, key: str | None = None):  # type: ignore[no-untyped-def]
        meta = md(token) + [("max-price", limit)] + ([("idempotency-key", key)] if key else [])
        return stub.CreateUpstreamInstance(
            pb.UpstreamOrderRequest(interface_id=iface.id, server_spec=SPEC), metadata=meta
        )

    with raises_code(
        grpc.StatusCode.FAILED_PRECONDITION, r"the price is now 3.24 CNY monthly, above the max-price 2.24"
    ):
        priced(str(quote.amount))
    for bad, message in (
        ("cheap", "max-price"),
        ("-1", "max-price must not be negative"),
        ("1.123456789", "8 decimal"),
    ):
        with raises_code(grpc.StatusCode.INVALID_ARGUMENT, message):
            priced(bad)
    assert ledger(server, name) == tx  # nothing debited
    rows = query_db(
        server.db_url, "SELECT count(*) FROM instances WHERE customer_id = :c", c=_db(server, user_id(server, name))
    )
    assert rows == [(1,)]  # nothing opened
    assert priced("2.00", key="quoted-at-2.24").instance_id == first.instance_id  # a retry: not priced again
    assert priced("3.24").status == "running"  # at the limit: ordered
    assert [a for k, a, _ in ledger(server, name) if k == "order"] == [-risen, -risen]
    assert assert_balance_is_the_ledger(server, name) == 20 - 2 * risen


def test_a_failed_order_is_refunded(server: ServerProcess, stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    failing = create_interface(stub, admin_token, "t_provider", '{"fail_create": true}')
    name, token = new_customer(server, "5")
    with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of capacity"):
        order(stub, failing.id, token, key="x")
    assert ledger(server, name) == [
        ("credit", 5, 5), ("order", -PRICE, 5 - PRICE), ("refund", PRICE, Decimal(5)),
    ]  # fmt: skip
    assert query_db(
        server.db_url, "SELECT count(*) FROM instances WHERE interface_id = :i", i=_db(server, failing.id)
    ) == [(0,)]


def test_orders_in_another_currency_are_refused(server: ServerProcess, stub, admin_token: str) -> None:
    usd = create_interface(stub, admin_token, "demo_cloud", '{"currency": "USD"}')
    name, token = new_customer(server, "100")
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "prices in USD, but balances are kept in CNY"):
        order(stub, usd.id, token, spec=order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10, region="us-west"))
    assert [k for k, *_ in ledger(server, name)] == ["credit"]


def test_admin_orders_are_not_charged(server: ServerProcess, stub, provider, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    before = query_db(server.db_url, "SELECT count(*) FROM balance_transactions WHERE kind = 'order'")
    order(stub, provider.id, admin_token)
    assert query_db(server.db_url, "SELECT count(*) FROM balance_transactions WHERE kind = 'order'") == before


def test_concurrent_orders_never_overspend(fresh_server: ServerProcess) -> None:
    """12 orders at once with money for 5 (on PostgreSQL: concurrent transactions; the balance row
    is the lock), and 6 at once with one idempotency-key: one instance, one debit."""
    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    fresh_server.env["RUSTBILL_PLUGINS__CALL_TIMEOUT_SECONDS"] = "20"
    fresh_server.start()
    stub = fresh_server.stub()
    iface = create_interface(stub, fresh_server.token(), "t_provider", '{"sleep": 0.2}')
    name, token = new_customer(fresh_server, str(PRICE * 5))

    def one(i: int) -> str:
        try:
            return order(stub, iface.id, token, key=f"o-{i}").instance_id
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()  # type: ignore[attr-defined]
            assert "insufficient balance" in exc.details()  # type: ignore[attr-defined]
            return ""

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    assert len([r for r in results if r]) == 5
    assert assert_balance_is_the_ledger(fresh_server, name) == 0
    assert [k for k, *_ in ledger(fresh_server, name)] == ["credit"] + ["order"] * 5

    name, token = new_customer(fresh_server, "100")

    def same(_: int) -> str:
        try:
            return order(stub, iface.id, token, key="same").instance_id
        except grpc.RpcError as exc:  # the others arrive while the first is being opened: retry later
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()  # type: ignore[attr-defined]
            assert "still being opened; retry in" in exc.details()  # type: ignore[attr-defined]
            return ""

    with ThreadPoolExecutor(6) as pool:
        ids = {r for r in pool.map(same, range(6)) if r}
    assert len(ids) == 1
    assert [k for k, *_ in ledger(fresh_server, name)] == ["credit", "order"]
    assert order(stub, iface.id, token, key="same").instance_id in ids


def test_an_order_without_an_answer_keeps_its_debit_and_a_retry_settles_it(fresh_server: ServerProcess) -> None:
    fresh_server.add_plugin(TEST_PLUGINS / "t_provider.py")
    fresh_server.env["RUSTBILL_PLUGINS__TIMEOUTS"] = '{"create_instance": 1}'
    fresh_server.start()
    stub, admin = fresh_server.stub(), fresh_server.token()
    iface = create_interface(stub, admin, "t_provider", '{"sleep": 3}')
    name, token = new_customer(fresh_server, "10")
    with raises_code(grpc.StatusCode.DEADLINE_EXCEEDED):
        order(stub, iface.id, token, key="slow")
    assert [k for k, *_ in ledger(fresh_server, name)] == ["credit", "order"]  # the instance may exist
    stub.UpdatePluginInterface(pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json="{}"),
                               metadata=md(admin))  # fmt: skip
    done = order(stub, iface.id, token, key="slow")
    assert done.status == "running"
    assert [k for k, *_ in ledger(fresh_server, name)] == ["credit", "order"]
    assert assert_balance_is_the_ledger(fresh_server, name) == 10 - PRICE


# ---------------------------------------------------------------- products and instances


def test_products_a_customer_sees(server: ServerProcess, stub, services, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    iface = create_interface(stub, admin_token, "t_provider", '{"product_count": 3}')
    sync = product_pb2.SyncProductsRequest(interface_id=iface.id)
    stub.SyncProducts(sync, metadata=md(admin_token))
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json='{"product_count": 2}'),
        metadata=md(admin_token),
    )
    stub.SyncProducts(sync, metadata=md(admin_token))  # p2 is no longer offered: inactive
    _, token = new_customer(server)
    ps = services["products"]
    req = product_service_pb2.ListProductsRequest(provider_id=iface.id)
    listed = ps.ListProducts(req, metadata=md(token))
    assert [(p.upstream_product_id, p.price, p.provider_id, p.active) for p in listed.products] == [
        ("p1", "11.00", iface.id, True), ("p0", "10.00", iface.id, True),
    ]  # fmt: skip
    assert listed.meta.total == 2
    every = ps.ListProducts(req, metadata=md(admin_token))
    assert [p.upstream_product_id for p in every.products] == ["p2", "p1", "p0"]
    inactive = product_service_pb2.ListProductsRequest(provider_id=iface.id, is_active=False)
    assert [p.upstream_product_id for p in ps.ListProducts(inactive, metadata=md(admin_token)).products] == ["p2"]
    assert len(ps.ListProducts(inactive, metadata=md(token)).products) == 2  # customers: active only
    gone = every.products[0].id
    assert ps.GetProduct(product_service_pb2.GetProductRequest(id=gone), metadata=md(admin_token)).product.name
    with raises_code(grpc.StatusCode.NOT_FOUND):
        ps.GetProduct(product_service_pb2.GetProductRequest(id=gone), metadata=md(token))
    got = ps.GetProduct(product_service_pb2.GetProductRequest(id=listed.products[0].id), metadata=md(token))
    assert got.product.name == "Plan 1"
    search = product_service_pb2.ListProductsRequest(provider_id=iface.id, search="NUMBER 0")
    assert [p.upstream_product_id for p in ps.ListProducts(search, metadata=md(token)).products] == ["p0"]
    page = product_service_pb2.ListProductsRequest(provider_id=iface.id)
    page.pagination.page, page.pagination.page_size = 2, 1
    paged = ps.ListProducts(page, metadata=md(token))
    assert [p.upstream_product_id for p in paged.products] == ["p0"]
    assert (paged.meta.total, paged.meta.page, paged.meta.page_size, paged.meta.total_pages) == (2, 2, 1, 2)
    # a disabled interface offers nothing
    stub.TogglePluginInterface(pb.TogglePluginInterfaceRequest(interface_id=iface.id, enable=False),
                               metadata=md(admin_token))  # fmt: skip
    assert not ps.ListProducts(req, metadata=md(token)).products


def test_customers_see_only_their_own_instances(
    server: ServerProcess, stub, services, provider, admin_token: str
) -> None:  # type: ignore[no-untyped-def]
    _, a_token = new_customer(server, "10")
    b, b_token = new_customer(server, "10")
    mine = order(stub, provider.id, a_token, key="a-1")
    theirs = order(stub, provider.id, b_token, key="b-1")
    inst = services["instances"]
    listed = inst.ListInstances(instance_pb2.ListInstancesRequest(), metadata=md(a_token)).instances
    assert [i.id for i in listed] == [mine.instance_id] and listed[0].order_id == "a-1"
    with raises_code(grpc.StatusCode.NOT_FOUND):
        inst.GetInstance(instance_pb2.GetInstanceRequest(id=theirs.instance_id), metadata=md(a_token))
    with raises_code(grpc.StatusCode.PERMISSION_DENIED):
        inst.ListInstances(instance_pb2.ListInstancesRequest(customer_id=user_id(server, b)), metadata=md(a_token))
    by_order = inst.ListInstances(instance_pb2.ListInstancesRequest(order_id="b-1"), metadata=md(a_token))
    assert not by_order.instances  # keys are per customer
    assert [i.id for i in inst.ListInstances(instance_pb2.ListInstancesRequest(order_id="b-1"),
                                             metadata=md(b_token)).instances] == [theirs.instance_id]  # fmt: skip
    admin_view = inst.ListInstances(
        instance_pb2.ListInstancesRequest(customer_id=user_id(server, b), provider_id=provider.id),
        metadata=md(admin_token),
    )
    assert [i.id for i in admin_view.instances] == [theirs.instance_id]
    assert inst.GetInstance(instance_pb2.GetInstanceRequest(id=mine.instance_id), metadata=md(admin_token)).instance.id


# ---------------------------------------------------------------- API keys


def test_api_keys_of_their_owner(server: ServerProcess, services, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    a, a_token = new_customer(server)
    _, b_token = new_customer(server)
    keys = services["keys"]
    made = keys.CreateApiKey(downstream_pb2.CreateApiKeyRequest(name="reseller"), metadata=md(a_token))
    assert made.api_key.startswith(f"rbk_{made.key_prefix}_") and uuid.UUID(made.id)
    me = services["balance"].GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(made.api_key))
    assert me.customer_id == user_id(server, a)  # the key works as a Bearer credential
    listed = keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(a_token)).keys
    assert [(k.id, k.name, k.enabled, k.key_prefix) for k in listed] == [(made.id, "reseller", True, made.key_prefix)]
    assert not keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(b_token)).keys
    with raises_code(grpc.StatusCode.NOT_FOUND):
        keys.RevokeApiKey(downstream_pb2.RevokeApiKeyRequest(id=made.id), metadata=md(b_token))
    with raises_code(grpc.StatusCode.PERMISSION_DENIED):
        keys.CreateApiKey(downstream_pb2.CreateApiKeyRequest(customer_id=user_id(server, a)), metadata=md(b_token))
    for_a = keys.CreateApiKey(downstream_pb2.CreateApiKeyRequest(customer_id=user_id(server, a), name="by admin"),
                              metadata=md(admin_token))  # fmt: skip
    keys.RevokeApiKey(downstream_pb2.RevokeApiKeyRequest(id=made.id), metadata=md(a_token))
    listed = keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(a_token)).keys
    assert [(k.name, k.enabled) for k in listed] == [("by admin", True), ("reseller", False)]
    import time

    time.sleep(0.6)  # RUSTBILL_AUTH__CACHE_SECONDS=0.5 in the test servers
    with raises_code(grpc.StatusCode.UNAUTHENTICATED, "API key revoked"):
        services["balance"].GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(made.api_key))
    assert services["balance"].GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(for_a.api_key)).balance


def _db(server: ServerProcess, value: str) -> object:
    # SQLAlchemy's Uuid type stores 32 hex digits on SQLite and a native uuid on PostgreSQL.
    return uuid.UUID(value).hex if server.db_url.startswith("sqlite") else uuid.UUID(value)


def test_api_key_last_use_and_expiry(server: ServerProcess, services, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    """last_used_at is the first use of a minute (not rewritten on every call); a key made with
    expires_at works until then and is refused after, even from the credential cache."""
    import time
    from datetime import UTC, datetime, timedelta

    name, token = new_customer(server)
    keys, balance = services["keys"], services["balance"]
    made = keys.CreateApiKey(downstream_pb2.CreateApiKeyRequest(name="plain"), metadata=md(token))
    [fresh] = keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(token)).keys
    assert fresh.last_used_at == "" and fresh.expires_at == ""  # never used, never expires
    before = datetime.now(UTC) - timedelta(seconds=1)
    balance.GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(made.api_key))
    [used] = keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(token)).keys
    first_use = datetime.fromisoformat(used.last_used_at)
    assert before <= first_use <= datetime.now(UTC) + timedelta(seconds=1)
    time.sleep(0.6)  # past the credential cache (0.5 s): the key is verified against the database again
    for _ in range(5):
        balance.GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(made.api_key))
    [again] = keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(token)).keys
    assert again.last_used_at == used.last_used_at  # within the minute: not written again

    soon = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    short = keys.CreateApiKey(
        downstream_pb2.CreateApiKeyRequest(name="short", expires_at=soon.isoformat().replace("+00:00", "Z")),
        metadata=md(token),
    )
    listed = {k.name: k for k in keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(token)).keys}
    assert datetime.fromisoformat(listed["short"].expires_at) == soon
    while datetime.now(UTC) < soon - timedelta(seconds=1):  # works (and is cached) until its expiry
        balance.GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(short.api_key))
        time.sleep(0.1)
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    with raises_code(grpc.StatusCode.UNAUTHENTICATED, "API key expired"):
        balance.GetBalance(balance_pb2.GetBalanceRequest(), metadata=md(short.api_key))

    for bad, message in (
        ("2020-01-01T00:00:00Z", "expires_at must be in the future"),
        ("tomorrow", "expires_at is not an RFC 3339 time"),
        ("2030-01-01T00:00:00", "expires_at must name its UTC offset"),
    ):
        with raises_code(grpc.StatusCode.INVALID_ARGUMENT, message):
            keys.CreateApiKey(downstream_pb2.CreateApiKeyRequest(name="bad", expires_at=bad), metadata=md(token))
    assert len(keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(token)).keys) == 2  # none made
    out = server.cli("apikey", "create", "--user", name, "--name", "cli", "--expires-in-days", "2").stdout.strip()
    assert out.startswith("rbk_")
    listed = {k.name: k for k in keys.ListApiKeys(downstream_pb2.ListApiKeysRequest(), metadata=md(token)).keys}
    left = datetime.fromisoformat(listed["cli"].expires_at) - datetime.now(UTC)
    assert timedelta(days=2) - timedelta(minutes=5) < left <= timedelta(days=2)
