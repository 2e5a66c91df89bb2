"""The built-in bank_transfer gateway plugin: instructions with a stable reference per order, pending
transfers kept in the interface's state, confirmation by an admin, and verify_notify answering paid
only for a confirmed reference of the expected order (once: the host refuses the replay).

In process through rustbill.domain.Channels / Providers on a real database, and through the running
server's RPCs — including the realistic split where the billing core (in process, on the server's
database) asks for payments and the admin confirms them through CallPluginAction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from helpers import (
    SHIPPED_PLUGINS,
    Databases,
    PluginHost,
    ServerProcess,
    create_interface,
    md,
    query_db,
    raises_code,
)
from sqlalchemy import func, select

from rustbill import errors
from rustbill.db import Database, PaymentNotification
from rustbill.pb import integration_pb2 as pb

PLUGIN = SHIPPED_PLUGINS / "bank_transfer.py"
ACCOUNT = {
    "account_name": "RustBill Hosting Ltd",
    "bank_name": "Example Bank, Shanghai Branch",
    "account_number": "6222 0210 0112 3456",
    "currency": "CNY",
}


class Host(PluginHost):
    """The billing core's side in process (see helpers.PluginHost)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, "bank_transfer", call_timeout=20)

    async def notify(self, iid: uuid.UUID, reference: str, o: dict[str, Any] | None) -> dict[str, Any]:
        order = None if o is None else {k: o[k] for k in ("order_id", "amount", "currency")}
        request = {"method": "GET", "query": {"reference": reference}, "order": order}
        return await self.channels.verify_notify(iid, request)

    async def paid_rows(self, iid: uuid.UUID) -> int:
        async with self.db.read() as s:
            q = select(func.count()).select_from(PaymentNotification).where(PaymentNotification.interface_id == iid)
            return int((await s.execute(q)).scalar_one())

    async def close(self) -> None:
        await super().close()  # (its workers, its temporary folder; the database is the test's)
        await self.db.dispose()


@pytest.fixture(scope="module")
def db_url(databases: Databases) -> str:
    """One database for this module's in-process tests (each test makes its own interfaces)."""
    return databases.new()


@pytest.fixture
async def host(db_url: str) -> AsyncIterator[Host]:
    db = Database(db_url)
    await db.migrate()
    h = Host(db)
    yield h
    await h.close()


def order(**kw: Any) -> dict[str, Any]:
    return {
        "order_id": str(uuid.uuid4()),
        "amount": "128.00",
        "currency": "CNY",
        "subject": "VPS 4C8G yearly",
        "channel": "bank",
        "notify_url": "",
        "return_url": "",
        "client_ip": "",
        **kw,
    }


# ---------------------------------------------------------------- in process


async def test_instructions_and_a_stable_reference(host: Host) -> None:
    iid = await host.interface({**ACCOUNT, "iban": "DE89 3704 0044 0532 0130 00", "swift": "DEUTDEFF"})
    o = order()
    pay = await host.channels.create_payment(iid, o)
    ref = pay["extra"]["reference"]
    assert ref.startswith("RB") and len(ref) == 13 and pay["trade_no"] == ref
    text = pay["instructions"]
    for needed in (
        "128.00 CNY",
        "RustBill Hosting Ltd",
        "Example Bank, Shanghai Branch",
        "6222 0210 0112 3456",
        "IBAN: DE89370400440532013000",
        "SWIFT/BIC: DEUTDEFF",
        f"Reference: {ref}",
        o["order_id"],
    ):
        assert needed in text
    assert pay["extra"]["status"] == "pending" and pay["extra"]["amount"] == "128.00" and pay["pay_url"] == ""

    again = await host.channels.create_payment(iid, o)  # the customer reloads the page
    assert again == pay
    other = await host.channels.create_payment(iid, order())
    assert other["extra"]["reference"] != ref
    listing = await host.action(iid, "admin_list_pending")
    assert listing["count"] == 2 and listing["totals"] == {"CNY": "256.00"}
    assert [r["reference"] for r in listing["pending"]] == [ref, other["extra"]["reference"]]
    assert listing["pending"][0]["order_id"] == o["order_id"] and listing["pending"][0]["amount"] == "128.00"


async def test_create_payment_refusals(host: Host) -> None:
    iid = await host.interface(ACCOUNT)
    with pytest.raises(errors.InvalidArgument, match="this account takes CNY; the order is in EUR"):
        await host.channels.create_payment(iid, order(currency="EUR"))
    o = order()
    await host.channels.create_payment(iid, o)
    with pytest.raises(errors.FailedPrecondition, match=r"already awaits a transfer of 128\.00 CNY"):
        await host.channels.create_payment(iid, {**o, "amount": "99.00"})
    assert (await host.action(iid, "admin_list_pending"))["count"] == 1


async def test_custom_template(host: Host) -> None:
    template = "请转账 {amount} {currency} 至 {account_name}（{bank_name}，账号 {account_number}），附言 {reference}。"
    iid = await host.interface({**ACCOUNT, "instructions_template": template, "reference_prefix": "INV"})
    pay = await host.channels.create_payment(iid, order(amount="9.9"))
    ref = pay["extra"]["reference"]
    assert ref.startswith("INV")
    assert pay["instructions"] == (
        "请转账 9.9 CNY 至 RustBill Hosting Ltd（Example Bank, Shanghai Branch，"
        f"账号 6222 0210 0112 3456），附言 {ref}。"
    )


async def test_confirm_then_paid_exactly_once(host: Host) -> None:
    iid = await host.interface(ACCOUNT)
    o = order()
    ref = (await host.channels.create_payment(iid, o))["extra"]["reference"]

    before = await host.notify(iid, ref, o)
    assert not before["paid"] and before["valid"] and "is not confirmed yet" in before["error"]

    with pytest.raises(errors.InvalidArgument, match=r"amount received 120 does not match the 128\.00 CNY"):
        await host.action(iid, "admin_confirm", reference=ref, amount_received="120")
    assert (await host.action(iid, "admin_list_pending"))["count"] == 1  # nothing half-written

    typed = ref.lower()[:6] + "-" + ref.lower()[6:]  # as an operator may type it from a bank statement
    done = await host.action(iid, "admin_confirm", reference=typed, amount_received="128", note="stmt 2024-06-01 #17")
    assert done["reference"] == ref and done["amount_received"] == "128" and done["confirmed_at"].endswith("Z")
    assert (await host.action(iid, "admin_list_pending"))["count"] == 0
    confirmed = await host.action(iid, "admin_list_confirmed")
    assert [r["reference"] for r in confirmed["confirmed"]] == [ref]
    with pytest.raises(errors.FailedPrecondition, match=f"transfer {ref} was already confirmed"):
        await host.action(iid, "admin_confirm", reference=ref, amount_received="128.00")

    paid = await host.notify(iid, ref, o)
    assert paid["paid"] and paid["reply"] == "success" and paid["order_id"] == o["order_id"]
    assert paid["trade_no"] == ref and paid["amount"] == "128.00"
    replay = await host.notify(iid, ref, o)
    assert not replay["paid"] and replay["duplicate"] and replay["reply"] == "success"
    assert await host.paid_rows(iid) == 1

    # a retried create_payment for the paid order says so, and asks for nothing new
    again = await host.channels.create_payment(iid, o)
    assert again["extra"]["status"] == "confirmed" and again["extra"]["reference"] == ref
    assert (await host.action(iid, "admin_list_pending"))["count"] == 0


async def test_verify_notify_only_for_the_matching_order(host: Host) -> None:
    iid = await host.interface(ACCOUNT)
    o = order()
    ref = (await host.channels.create_payment(iid, o))["extra"]["reference"]
    await host.action(iid, "admin_confirm", reference=ref, amount_received="128.00")
    cases = [
        ({**o, "order_id": str(uuid.uuid4())}, "is for order"),
        ({**o, "amount": "1.28"}, "is for 128.00 CNY"),
        ({**o, "currency": "USD"}, "is in CNY"),
        (None, "no expected order"),
    ]
    for expected, error in cases:
        result = await host.notify(iid, ref, expected)
        assert not result["paid"] and result["reply"] == "fail" and error in result["error"]
    unknown = await host.notify(iid, "RB" + "0" * 10 + "0", o)
    assert not unknown["valid"] and "is unknown" in unknown["error"]
    typo = await host.notify(iid, ref[:-1] + ("0" if ref[-1] != "0" else "1"), o)
    assert not typo["valid"] and "check character" in typo["error"]
    missing = await host.channels.verify_notify(iid, {"method": "GET", "query": {}, "order": o})
    assert not missing["valid"] and "reference is required" in missing["error"]
    assert await host.paid_rows(iid) == 0
    assert (await host.notify(iid, ref, {**o, "amount": "128"}))["paid"]  # amounts compare as decimals


def _typo(ref: str) -> str:
    """One character of the reference's body mistyped (the check character always catches it)."""
    return ref[:5] + ("1" if ref[5] != "1" else "2") + ref[6:]


async def test_admin_errors_and_cancel(host: Host) -> None:
    iid = await host.interface(ACCOUNT)
    o = order()
    ref = (await host.channels.create_payment(iid, o))["extra"]["reference"]
    with pytest.raises(errors.NotFound, match="no pending transfer with reference RB0000000000"):
        await host.action(iid, "admin_confirm", reference="RB00000000000", amount_received="1")
    with pytest.raises(errors.InvalidArgument, match="fails its check character"):
        await host.action(iid, "admin_confirm", reference=_typo(ref), amount_received="128")
    with pytest.raises(errors.InvalidArgument, match="amount_received is required"):
        await host.action(iid, "admin_confirm", reference=ref)
    with pytest.raises(errors.InvalidArgument, match="amount_received must be a decimal string"):
        await host.action(iid, "admin_confirm", reference=ref, amount_received=128.0)
    with pytest.raises(errors.InvalidArgument, match="reference is required"):
        await host.action(iid, "admin_confirm", amount_received="128")

    cancelled = await host.action(iid, "admin_cancel", reference=ref, reason="customer gave up")
    assert cancelled["reference"] == ref and cancelled["reason"] == "customer gave up"
    with pytest.raises(errors.NotFound, match="was cancelled at"):
        await host.action(iid, "admin_confirm", reference=ref, amount_received="128")
    # the customer comes back: the same reference is asked for again and can be confirmed
    assert (await host.channels.create_payment(iid, o))["extra"]["reference"] == ref
    await host.action(iid, "admin_confirm", reference=ref, amount_received="128.00")
    with pytest.raises(errors.FailedPrecondition, match="is confirmed; it cannot be cancelled"):
        await host.action(iid, "admin_cancel", reference=ref)


async def test_two_admins_confirming_at_once_confirm_once(host: Host) -> None:
    iid = await host.interface(ACCOUNT)
    ref = (await host.channels.create_payment(iid, order()))["extra"]["reference"]
    results = await asyncio.gather(
        *(host.action(iid, "admin_confirm", reference=ref, amount_received="128.00") for _ in range(4)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, errors.RustBillError)]
    assert len(ok) == 1 and len(refused) == 3, results
    assert all("already confirmed" in e.message for e in refused)


async def test_health_check_validates_the_config(host: Host) -> None:
    assert await host.health(await host.interface(ACCOUNT)) is None
    assert await host.health(await host.interface({**ACCOUNT, "iban": "GB82WEST12345698765432"})) is None
    bad = await host.health(
        await host.interface(
            {**ACCOUNT, "account_number": "  ", "iban": "DE89370400440532013001", "instructions_template": "{amout}"}
        )
    )
    assert bad is not None
    assert "account_number is empty" in bad
    assert "iban DE89370400440532013001 fails its check digits" in bad
    assert "instructions_template uses unknown placeholder {amout}" in bad
    broken = await host.health(await host.interface({**ACCOUNT, "instructions_template": "{reference"}))
    assert broken is not None and "instructions_template is not a valid template" in broken


# ---------------------------------------------------------------- through the server


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"account_name": "A", "bank_name": "B"}, r"config_json\.account_number: is required"),
        ({**ACCOUNT, "account_name": ""}, r"config_json\.account_name: "),
        ({**ACCOUNT, "swift": "DEUT"}, r"config_json\.swift: "),
        ({**ACCOUNT, "currency": "yuan"}, r"config_json\.currency: "),
        ({**ACCOUNT, "reference_prefix": "rb-"}, r"config_json\.reference_prefix: "),
        ({**ACCOUNT, "acount": "x"}, r"'acount' was unexpected"),
    ],
)
def test_create_interface_validates_the_config(stub, admin_token: str, cfg: dict[str, Any], match: str) -> None:  # type: ignore[no-untyped-def]
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, match):
        create_interface(stub, admin_token, "bank_transfer", json.dumps(cfg))


def test_health_through_the_server(stub, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    good = create_interface(stub, admin_token, "bank_transfer", json.dumps(ACCOUNT))
    reply = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=good.id), metadata=md(admin_token))
    assert reply.is_healthy, reply.error
    bad = create_interface(
        stub, admin_token, "bank_transfer", json.dumps({**ACCOUNT, "iban": "DE00370400440532013000"})
    )
    reply = stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=bad.id), metadata=md(admin_token))
    assert not reply.is_healthy and reply.error == "iban DE00370400440532013000 fails its check digits"


def _action(stub, token: str, iface_id: str, function: str, **args: Any) -> Any:  # type: ignore[no-untyped-def]
    req = pb.CallPluginActionRequest(interface_id=iface_id, function=function, args_json=json.dumps(args))
    return json.loads(stub.CallPluginAction(req, metadata=md(token), timeout=30).result_json)


async def test_billing_core_asks_admin_confirms_through_the_server(
    server: ServerProcess, stub, admin_token: str
) -> None:  # type: ignore[no-untyped-def]
    iface = create_interface(stub, admin_token, "bank_transfer", json.dumps(ACCOUNT))
    iid = uuid.UUID(iface.id)
    # the billing core: in process, on the server's own database
    core = await Host(Database(server.db_url)).start()
    try:
        o = order(amount="45.60")
        ref = (await core.channels.create_payment(iid, o))["extra"]["reference"]

        pending = await asyncio.to_thread(_action, stub, admin_token, iface.id, "admin_list_pending")
        assert [(r["reference"], r["amount"]) for r in pending["pending"]] == [(ref, "45.60")]
        page = await asyncio.to_thread(
            stub.GetPluginAdminPage, pb.GetPluginAdminPageRequest(interface_id=iface.id), metadata=md(admin_token)
        )
        assert (
            ref in page.html_content
            and "45.60 CNY" in page.html_content
            and "RustBill Hosting Ltd" in page.html_content
        )
        assert 'id="confirm"' in page.html_content

        with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"amount received 45\.06 does not match"):
            await asyncio.to_thread(
                _action, stub, admin_token, iface.id, "admin_confirm", reference=ref, amount_received="45.06"
            )
        with raises_code(grpc.StatusCode.NOT_FOUND, "no pending transfer"):
            await asyncio.to_thread(
                _action, stub, admin_token, iface.id, "admin_confirm", reference="RB00000000000", amount_received="1"
            )
        assert not (await core.notify(iid, ref, o))["paid"]
        done = await asyncio.to_thread(
            _action, stub, admin_token, iface.id, "admin_confirm", reference=ref, amount_received="45.60"
        )
        assert done["reference"] == ref
        with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "already confirmed"):
            await asyncio.to_thread(
                _action, stub, admin_token, iface.id, "admin_confirm", reference=ref, amount_received="45.60"
            )

        assert (await core.notify(iid, ref, o))["paid"]
        assert (await core.notify(iid, ref, o))["duplicate"]
        rows = await asyncio.to_thread(
            query_db, server.db_url, "SELECT order_id, trade_no FROM payment_notifications WHERE trade_no = :t", t=ref
        )
        assert rows == [(o["order_id"], ref)]
    finally:
        await core.close()
