"""sdk.ServerPricing and its schema pieces, in process: no server, no host. The kvm and incus suites
check the same rules through the server; these pin the arithmetic and the refusals one by one."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import jsonschema
import pytest

from rustbill import sdk

DEFAULTS: dict[str, Any] = {**sdk.PRICING_DEFAULTS, "images": {}, "default_os": ""}
PRICING = sdk.ServerPricing(DEFAULTS, unit="domain", cpu="vCPU", disk="root volume")
SPEC = {"cpu_cores": 2, "memory_gb": 4, "disk_gb": 20, "bandwidth_mbps": 10}
PRICED = {
    "price_base": "1.005",
    "images": {"debian": {"price_extra": "2"}, "win": {"price_extra": "20.50"}},
    "regions": {"hk": {"price_multiplier": "1.5", "price_extra": "3"}, "bj": {}},
    "billing_cycle": "quarterly",
    "billing_cycles": {"monthly": "1", "quarterly": "3", "yearly": "10"},
}


def refused(code: str, text: str, fn: Any, *args: Any) -> None:
    with pytest.raises(sdk.PluginError) as info:
        fn(*args)
    assert info.value.code == code and text in info.value.message, (info.value.code, info.value.message)


def test_the_monthly_price_adds_the_rules_then_applies_the_region() -> None:
    # 1.005 + 2*10 + 4*5 + 20*0.20 + 10*0 = 45.005; + image 2 = 47.005; *1.5 = 70.5075; + 3 = 73.5075
    spec = PRICING.check_spec(PRICED, {**SPEC, "os": "debian", "region": "hk"})
    assert PRICING.monthly(PRICED, spec) == Decimal("73.5075")
    # a region without rules changes nothing
    assert PRICING.monthly(PRICED, {**spec, "region": "bj"}) == Decimal("47.005")


def test_a_quote_is_for_the_configured_cycle_rounded_half_up_to_cents() -> None:
    quote = PRICING.quote(PRICED, {**SPEC, "os": "debian", "region": "hk"})
    assert quote == {"amount": Decimal("220.52"), "currency": "CNY", "billing_cycle": "quarterly"}
    assert isinstance(quote["amount"], Decimal)
    assert sdk.cycle_amount(Decimal("0.005"), Decimal("1")) == Decimal("0.01")
    assert sdk.cycle_amount(Decimal("0.0049"), Decimal("1")) == Decimal("0.00")


def test_the_defaults_price_a_spec_without_config() -> None:
    # 2*10.00 + 4*5.00 + 20*0.20 = 44.00, monthly, CNY
    assert PRICING.quote({}, SPEC) == {"amount": Decimal("44.00"), "currency": "CNY", "billing_cycle": "monthly"}


def test_check_spec_normalises_and_fills_the_default_os() -> None:
    spec = PRICING.check_spec(PRICED, {"cpu_cores": "2", "memory_gb": 1, "disk_gb": 5, "region": "bj"})
    assert spec == {"cpu_cores": 2, "memory_gb": 1, "disk_gb": 5, "bandwidth_mbps": 0, "region": "bj", "os": "debian"}
    assert PRICING.check_spec({**PRICED, "default_os": "win"}, {**SPEC, "region": "bj"})["os"] == "win"


@pytest.mark.parametrize(
    ("config", "spec", "text"),
    [
        ({}, {**SPEC, "cpu_cores": 33}, "cpu_cores must be between 1 and 32, got 33"),
        ({"min_disk_gb": 30}, SPEC, "disk_gb must be between 30 and 2000, got 20"),
        ({}, {**SPEC, "bandwidth_mbps": 1001}, "bandwidth_mbps must be between 0 and 1000"),
        ({}, {**SPEC, "memory_gb": 2.0}, "memory_gb must be an integer"),
        ({}, {**SPEC, "memory_gb": True}, "memory_gb must be an integer"),
        ({}, {**SPEC, "memory_gb": "four"}, "memory_gb must be an integer"),
        ({}, {**SPEC, "region": "hk"}, "this provider offers no region choice; got region 'hk'"),
        (PRICED, {**SPEC, "region": "us"}, "region must be one of hk, bj; got 'us'"),
        (PRICED, {**SPEC, "region": "hk", "os": "arch"}, "os must be one of debian, win; got 'arch'"),
        ({}, {**SPEC, "os": "debian"}, "this provider has no OS images"),
        ({}, ["not", "a", "dict"], "spec must be an object"),
    ],
)
def test_check_spec_refuses_what_the_provider_cannot_make(config: dict[str, Any], spec: Any, text: str) -> None:
    refused("INVALID_ARGUMENT", text, PRICING.check_spec, config, spec)


def test_configured_money_must_be_a_non_negative_decimal_string() -> None:
    refused("INVALID_ARGUMENT", "price_per_core must be a decimal string, not a float", PRICING.quote,
            {"price_per_core": 1.5}, SPEC)  # fmt: skip
    refused("INVALID_ARGUMENT", "price_base is not a decimal number: 'ten'", PRICING.quote, {"price_base": "ten"}, SPEC)
    refused("INVALID_ARGUMENT", "price_base must be a non-negative number", PRICING.quote, {"price_base": "-1"}, SPEC)
    refused("INVALID_ARGUMENT", "regions['hk'].price_multiplier must be a non-negative number", PRICING.quote,
            {"regions": {"hk": {"price_multiplier": "NaN"}}}, {**SPEC, "region": "hk"})  # fmt: skip
    assert sdk.non_negative_decimal("x", 3) == Decimal(3)


def test_a_billing_cycle_outside_the_multipliers_is_the_admins_mistake() -> None:
    refused("FAILED_PRECONDITION", "billing_cycle 'weekly' is not one of billing_cycles (monthly)", PRICING.quote,
            {"billing_cycle": "weekly"}, SPEC)  # fmt: skip
    # an empty map of cycles means monthly only
    assert PRICING.cycles({"billing_cycles": {}}) == ("monthly", {"monthly": Decimal(1)})


def test_products_price_every_plan_for_every_cycle() -> None:
    config = {**PRICED, "plans": [
        {"id": "s", "name": "Small", **SPEC, "region": "bj"},
        {"id": "f", "name": "Fixed", **SPEC, "region": "hk", "group_id": "g", "price": "9.999"},
    ]}  # fmt: skip
    small, fixed = PRICING.products(config)
    assert small["price"] == Decimal("141.02")  # 47.005 * 3
    assert small["billing_cycles"] == {"monthly": Decimal("47.01"), "quarterly": Decimal("141.02"),
                                       "yearly": Decimal("470.05")}  # fmt: skip
    assert small["group_id"] == "bj" and small["specs"]["os"] == "debian" and small["specs"]["cpu_cores"] == "2"
    assert fixed["price"] == Decimal("30.00") and fixed["group_id"] == "g"


def test_a_plan_outside_the_limits_fails_the_whole_sync() -> None:
    config = {"plans": [{"id": "huge", "name": "Huge", **SPEC, "cpu_cores": 64}]}
    refused("FAILED_PRECONDITION", "plan 'huge' does not fit this provider: cpu_cores must be between 1 and 32",
            PRICING.products, config)  # fmt: skip


def test_the_spec_template_follows_the_limits_images_and_regions() -> None:
    tpl = PRICING.spec_template({**PRICED, "max_cpu_cores": 8, "min_disk_gb": 20})
    fields = {f["key"]: f for f in tpl["fields"]}
    assert list(fields) == ["cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps", "os", "region"]
    assert (fields["cpu_cores"]["label"], fields["cpu_cores"]["max"]) == ("vCPUs", 8)
    assert (fields["disk_gb"]["min"], fields["disk_gb"]["default_value"]) == (20, "20")
    assert fields["os"]["options"] == ["debian", "win"] and fields["region"]["default_value"] == "hk"
    assert [g["key"] for g in tpl["groups"]] == ["compute", "storage", "network", "system"]
    bare = PRICING.spec_template({})
    assert [f["key"] for f in bare["fields"]] == ["cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps"]
    assert bare["groups"][2]["field_keys"] == ["bandwidth_mbps"]


def test_default_images_stand_in_for_an_empty_map() -> None:
    pricing = sdk.ServerPricing({**DEFAULTS, "images": {"debian-12": {}}}, unit="instance", cpu="CPU core", disk="x")
    assert pricing.images({"images": {}}) == {"debian-12": {}}
    assert pricing.check_spec({}, SPEC)["os"] == "debian-12"
    with pytest.raises(ValueError, match="defaults lack images, default_os"):
        sdk.ServerPricing(sdk.PRICING_DEFAULTS, unit="x", cpu="y", disk="z")


def test_the_schema_pieces_accept_what_the_rules_read() -> None:
    region = sdk.region_schema("A region.", price_multiplier=sdk.money_prop("Multiplier", "Times."))
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**PRICING.images_properties({"type": "object"}, "OS → image."), **PRICING.properties(region)},
    }
    jsonschema.Draft202012Validator.check_schema(schema)
    valid = jsonschema.Draft202012Validator(schema)
    valid.validate({**PRICED, "regions": {"hk": {"label": "Hong Kong", "price_multiplier": "1.5"}}, "plans": [
        {"id": "s", "name": "Small", "cpu_cores": 1, "memory_gb": 1, "disk_gb": 10, "price": ""}]})  # fmt: skip
    assert schema["properties"]["regions"]["description"].startswith("Region name → {label, price_multiplier}")
    assert schema["properties"]["max_cpu_cores"]["title"] == "Max vCPUs"
    for bad in ({"price_base": 1}, {"price_base": "1e3"}, {"regions": {"hk": {"target": "x"}}},
                {"billing_cycles": {"Weekly": "1"}}, {"plans": [{"id": "s"}]}):  # fmt: skip
        assert not valid.is_valid(bad), bad
