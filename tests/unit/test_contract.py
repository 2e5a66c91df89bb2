"""The plugin contract's result checkers, a ServerSpec's validation and the product sync plan, in
process: what a plugin may answer, what a caller may order, and what a sync writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from rustbill.domain.providers import ProductRecord, _plan, validate_spec
from rustbill.errors import InvalidArgument
from rustbill.plugins.contract import (
    ShapeError,
    check_balance,
    check_found_instance,
    check_health_result,
    check_instance,
    check_instance_list,
    check_json_result,
    check_notify_result,
    check_payment,
    check_price,
    check_products,
    check_send_result,
    check_version,
)

# ---------------------------------------------------------------- prices and balances


@pytest.mark.parametrize(
    ("amount", "canonical"),
    [("10.50", "10.50"), (Decimal("3.1"), "3.1"), (7, "7"), ("0", "0")],
)
def test_a_price_is_a_canonical_decimal_string(amount: Any, canonical: str) -> None:
    assert check_price({"amount": amount, "currency": "CNY", "billing_cycle": "monthly"}) == {
        "amount": canonical,
        "currency": "CNY",
        "billing_cycle": "monthly",
    }


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"amount": 10.5}, r"float"),
        ({"amount": "NaN"}, r"amount"),
        ({"amount": "ten"}, r"amount"),
        ({"currency": "CNY"}, r"no 'amount'"),
        (["10"], r"must be a dict, not list"),
        ({"amount": "1", "currency": {"x": 1}}, r"\['currency'\] must be a string, not dict"),
    ],
)
def test_a_bad_price_is_refused_with_what_is_wrong(result: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        check_price(result)


def test_a_balance_needs_a_decimal_balance() -> None:
    assert check_balance({"balance": "99.99", "currency": "USD"}) == {"balance": "99.99", "currency": "USD"}
    with pytest.raises(ShapeError, match="no 'balance'"):
        check_balance({"currency": "USD"})
    with pytest.raises(ShapeError, match="float"):
        check_balance({"balance": 1.1})


# ---------------------------------------------------------------- instances


def test_an_instance_takes_the_old_field_name_and_fills_the_rest() -> None:
    assert check_instance({"provider_instance_id": 42, "status": "running"}, "create_instance", need_id=True) == {
        "instance_id": "42",
        "status": "running",
        "ip_address": "",
        "created_at": "",
    }


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"status": "running"}, r"create_instance result has no 'instance_id'"),
        ({"instance_id": ""}, r"has no 'instance_id'"),
        ({"instance_id": "x" * 201}, r"instance_id is longer than 200 characters"),
        ({"instance_id": "a", "ip_address": "1" * 65}, r"ip_address is longer than 64 characters"),
    ],
)
def test_a_created_instance_needs_an_id_within_limits(result: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        check_instance(result, "create_instance", need_id=True)


def test_a_status_answer_may_leave_the_id_out() -> None:
    assert check_instance({"status": "stopped"}, "get_instance_status", need_id=False)["instance_id"] == ""


def test_find_instance_answers_none_or_an_instance_with_an_id() -> None:
    assert check_found_instance(None) is None
    assert check_found_instance({"instance_id": "vm-1"})["instance_id"] == "vm-1"
    with pytest.raises(ShapeError, match="find_instance result has no 'instance_id'"):
        check_found_instance({"status": "running"})


def test_an_instance_list_names_the_bad_item() -> None:
    assert len(check_instance_list([{"instance_id": "a"}, {"instance_id": "b"}])) == 2
    with pytest.raises(ShapeError, match="sync_upstream_instances item 1 result has no 'instance_id'"):
        check_instance_list([{"instance_id": "a"}, {}])
    with pytest.raises(ShapeError, match="must return a list, not dict"):
        check_instance_list({"instance_id": "a"})


# ---------------------------------------------------------------- products


def test_products_are_normalised() -> None:
    [p] = check_products(
        [{"id": 7, "name": "Small", "price": "5.00", "specs": {"cpu": 1}, "billing_cycles": {"yearly": "50"}}]
    )
    assert p == {
        "upstream_product_id": "7",
        "name": "Small",
        "description": "",
        "price": Decimal("5.00"),
        "currency": "",
        "group_id": "",
        "specs": {"cpu": "1"},
        "billing_cycles": {"yearly": "50"},
    }


@pytest.mark.parametrize(
    ("products", "message"),
    [
        ([{"id": "a", "name": "A", "price": "1"}, {"id": "a", "name": "B", "price": "2"}], r"id 'a' twice"),
        ([{"id": "", "name": "A", "price": "1"}], r"item 0 has an empty 'id'"),
        ([{"id": "a", "name": "A"}], r"item 0 has no 'price'"),
        ([{"id": "a", "price": "1"}], r"item 0 has no 'name'"),
        ([{"id": "a", "name": "A", "price": "1.000000001"}], r"does not fit 12 digits and 8 decimals"),
        ([{"id": "a", "name": "A", "price": "1e12"}], r"does not fit 12 digits"),
        ([{"id": "a", "name": "A", "price": "1", "billing_cycles": {"m": 1.5}}], r"billing_cycles\['m'\]"),
        ([{"id": "a", "name": "A", "price": "1", "specs": {"cpu": [1]}}], r"specs\['cpu'\] must be a string"),
    ],
)
def test_a_bad_product_is_refused_and_named(products: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        check_products(products)


# ---------------------------------------------------------------- health, actions, gateways, notifiers


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (None, None),
        (True, None),
        (False, "health_check returned false"),
        ("disk full", "disk full"),
        ("", "health_check returned an empty error"),
        ({"healthy": True, "version": "1"}, None),
        ({"healthy": False, "error": "no route"}, "no route"),
        ({"healthy": False}, "unhealthy"),
    ],
)
def test_health_results(result: Any, error: str | None) -> None:
    assert check_health_result(result) == error


def test_a_health_result_of_another_shape_is_refused() -> None:
    with pytest.raises(ShapeError, match="not int"):
        check_health_result(1)


def test_action_results_are_strict_json() -> None:
    assert check_json_result({"n": Decimal("1.10"), "s": (1, 2)}, "admin_x") == '{"n": "1.10", "s": [1, 2]}'
    with pytest.raises(ShapeError, match="admin_x returned a value that is not JSON-serialisable"):
        check_json_result({"n": float("nan")}, "admin_x")
    with pytest.raises(ShapeError, match="not JSON-serialisable"):
        check_json_result({"o": object()}, "admin_x")


def test_a_payment_needs_a_way_to_pay() -> None:
    assert check_payment({"pay_url": "https://pay/1", "extra": {"n": 1}})["extra"] == {"n": "1"}
    with pytest.raises(ShapeError, match="'pay_url', a 'qrcode' or 'instructions'"):
        check_payment({"trade_no": "1"})


def test_a_notification_answer_needs_valid_and_paid() -> None:
    ok = check_notify_result({"valid": True, "paid": True, "amount": "9.90", "reply": "success"})
    assert (ok["paid"], ok["amount"], ok["reply"]) == (True, "9.90", "success")
    with pytest.raises(ShapeError, match="booleans 'valid' and 'paid'"):
        check_notify_result({"paid": False})  # (what bank_memo once answered)
    with pytest.raises(ShapeError, match="cannot be paid without being valid"):
        check_notify_result({"valid": False, "paid": True})
    with pytest.raises(ShapeError, match="float"):
        check_notify_result({"valid": True, "paid": True, "amount": 9.9})


def test_send_results() -> None:
    assert check_send_result(None) == {"delivered": True, "id": "", "error": ""}
    assert check_send_result({"delivered": False, "error": "550"})["delivered"] is False
    with pytest.raises(ShapeError, match="'delivered' must be a boolean"):
        check_send_result({"delivered": "yes"})


@pytest.mark.parametrize("version", ["1.2.3", "0.1.0-beta.1", "2.0.0+build.5"])
def test_versions_are_semver(version: str) -> None:
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["1.2", "v1.2.3", 1, ""])
def test_other_versions_are_refused(version: Any) -> None:
    with pytest.raises(ShapeError, match="semver"):
        check_version(version)


# ---------------------------------------------------------------- a ServerSpec


def _spec(**changes: Any) -> dict[str, Any]:
    return {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 40, "bandwidth_mbps": 100, "region": "", "os": "",
            "extra_specs": {}, **changes}  # fmt: skip


TEMPLATE = {
    "fields": [
        {"key": "region", "required": True, "options": ["tokyo", "hk"], "min": 0, "max": 0},
        {"key": "cpu_cores", "required": True, "options": [], "min": 1, "max": 16},
        {"key": "ipv6", "required": False, "options": ["yes", "no"], "min": 0, "max": 0},
        {"key": "snapshots", "required": False, "options": [], "min": 0, "max": 10},
    ]
}


def test_a_plain_spec_within_limits_passes() -> None:
    validate_spec(_spec())
    validate_spec(_spec(region="tokyo", extra_specs={"ipv6": "yes", "snapshots": "3"}), TEMPLATE)


@pytest.mark.parametrize(
    ("spec", "template", "message"),
    [
        (_spec(cpu_cores=0), None, r"cpu_cores must be between 1 and 1024, got 0"),
        (_spec(bandwidth_mbps=-1), None, r"bandwidth_mbps must be between 0 and 1000000"),
        (_spec(os="x" * 201), None, r"os is longer than 200 characters"),
        (_spec(extra_specs={str(i): "" for i in range(65)}), None, r"more than 64 entries"),
        (_spec(extra_specs={"": "x"}), None, r"extra_specs entry '' is empty or too long"),
        (_spec(), TEMPLATE, r"region is required by this provider"),
        (_spec(region="paris"), TEMPLATE, r"region must be one of tokyo, hk; got 'paris'"),
        (_spec(region="hk", cpu_cores=32), TEMPLATE, r"cpu_cores must be between 1 and 16, got 32"),
        (_spec(region="hk", extra_specs={"ipv6": "maybe"}), TEMPLATE, r"ipv6 must be one of yes, no"),
        (_spec(region="hk", extra_specs={"snapshots": "many"}), TEMPLATE, r"snapshots must be a number"),
        (_spec(region="hk", extra_specs={"snapshots": "11"}), TEMPLATE, r"snapshots must be between 0 and 10"),
    ],
)
def test_a_bad_spec_names_its_field(spec: dict[str, Any], template: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_spec(spec, template)


# ---------------------------------------------------------------- the product sync plan

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
IFACE = uuid.uuid4()


def _offered(pid: str, price: str = "5.00", **changes: Any) -> dict[str, Any]:
    return {"upstream_product_id": pid, "name": pid.title(), "description": "", "price": Decimal(price),
            "currency": "CNY", "group_id": "", "specs": {}, "billing_cycles": {}, **changes}  # fmt: skip


def _stored(offered: dict[str, Any], *, active: bool = True) -> ProductRecord:
    then = datetime(2026, 1, 1, tzinfo=UTC)
    return ProductRecord(id=uuid.uuid4(), interface_id=IFACE, **offered, active=active, created_at=then,
                         updated_at=then)  # fmt: skip


def test_a_first_sync_inserts_everything() -> None:
    plan = _plan({}, [_offered("a"), _offered("b")], IFACE, NOW)
    assert [r["upstream_product_id"] for r in plan.inserts] == ["a", "b"]
    assert (plan.updates, plan.gone, plan.unchanged, plan.writes) == ([], [], 0, True)
    assert all(p.active and p.created_at == NOW for p in plan.result)


def test_an_unchanged_catalogue_writes_nothing() -> None:
    existing = {pid: _stored(_offered(pid)) for pid in ("a", "b")}
    plan = _plan(existing, [_offered("a"), _offered("b")], IFACE, NOW)
    assert (plan.writes, plan.unchanged) == (False, 2)
    assert [p.id for p in plan.result] == [existing["a"].id, existing["b"].id]


def test_changes_update_missing_products_are_deactivated_and_returning_ones_reactivated() -> None:
    existing = {
        "a": _stored(_offered("a")),
        "b": _stored(_offered("b")),
        "c": _stored(_offered("c"), active=False),
        "d": _stored(_offered("d"), active=False),
    }
    plan = _plan(existing, [_offered("a", "6.00"), _offered("c")], IFACE, NOW)
    assert [(u["id"], u["price"], u["active"]) for u in plan.updates] == [
        (existing["a"].id, Decimal("6.00"), True),
        (existing["c"].id, Decimal("5.00"), True),
    ]
    assert plan.gone == [existing["b"].id]  # (d was inactive already: not deactivated again)
    assert plan.inserts == [] and plan.unchanged == 0
    a = next(p for p in plan.result if p.upstream_product_id == "a")
    assert (a.id, a.price, a.updated_at, a.created_at) == (existing["a"].id, Decimal("6.00"), NOW,
                                                            existing["a"].created_at)  # fmt: skip
