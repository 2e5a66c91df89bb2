"""Test provider: every provider function, with behaviour chosen by the interface's config."""

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path

from rustbill import sdk

PLUGIN_TYPE = "first_party_provider"

_instances: dict[str, dict] = {}


def version():
    return "1.0.0"


def config_schema():
    return {
        "type": "object",
        "properties": {
            "base_price": {"type": "string", "pattern": r"^\d+(\.\d+)?$", "title": "Base", "description": "base"},
            "product_count": {"type": "integer", "minimum": 0, "title": "Products", "description": "n"},
            "price_bump": {"type": "string", "title": "Bump", "description": "added to product prices"},
            "sleep": {"type": "number", "minimum": 0, "title": "Sleep", "description": "async delay"},
            "healthy": {"type": "boolean", "title": "Healthy", "description": "health result"},
            "health_sleep": {"type": "number", "title": "Health sleep", "description": "seconds"},
            "fail_create": {"type": "boolean", "title": "Fail create", "description": "create fails"},
            "sleep_after_create": {
                "type": "number",
                "minimum": 0,
                "title": "Sleep after create",
                "description": "async delay after the instance is made (its answer is late)",
            },
            "store_dir": {
                "type": "string",
                "title": "Store",
                "description": "folder keeping the instances made "
                "(one file per request_id) and a log of create_instance calls, across server restarts",
            },
            "find": {
                "enum": ["store", "none", "fail", "hang"],
                "title": "find_instance",
                "description": "store: what was made; none: nothing; fail: UNAVAILABLE; hang: never answers",
            },
            "api_key": {"type": "string", "format": "password", "title": "Key", "description": "secret"},
            "regions": {"type": "array", "items": {"type": "string"}, "title": "Regions", "description": "r"},
        },
        "additionalProperties": False,
    }


async def health_check(config):
    await asyncio.sleep(config.get("health_sleep", 0))
    if config.get("healthy", True):
        return None
    raise sdk.Unavailable(f"upstream refused key {config.get('api_key', '')}")


def spec_template(config):
    fields = [{"key": "cpu_cores", "label": "CPU", "field_type": "Integer", "required": True, "min": 1, "max": 32}]
    if config.get("regions"):
        fields.append({"key": "region", "label": "Region", "field_type": "Region", "options": config["regions"]})
    return {"fields": fields, "groups": [{"key": "g", "label": "G", "field_keys": ["cpu_cores"]}]}


async def query_price(config, spec):
    await asyncio.sleep(config.get("sleep", 0))
    amount = Decimal(config.get("base_price", "1.10")) * spec["cpu_cores"] + Decimal("0.01") * spec["memory_gb"]
    return {"amount": amount, "currency": "CNY", "billing_cycle": "monthly"}


def sync_products(config):
    bump = Decimal(config.get("price_bump", "0"))
    return [
        {
            "id": f"p{i}",
            "name": f"Plan {i}",
            "description": f"plan number {i}",
            "price": Decimal("10.00") + i + bump,
            "currency": "CNY",
            "specs": {"cpu_cores": str(1 + i % 8)},
            "billing_cycles": {"monthly": Decimal("10.00") + i + bump},
        }
        for i in range(config.get("product_count", 3))
    ]


def _store(config):
    return Path(config["store_dir"]) if config.get("store_dir") else None


async def create_instance(config, spec):
    store = _store(config)
    if store is not None:
        with (store / "create_calls").open("a") as f:
            f.write(spec["request_id"] + "\n")
    await asyncio.sleep(config.get("sleep", 0))
    if config.get("fail_create"):
        raise sdk.PluginError("out of capacity in region", "RESOURCE_EXHAUSTED")
    iid = f"i-{spec['request_id'][-8:]}"
    _instances[iid] = {
        "instance_id": iid,
        "status": "running",
        "ip_address": "192.0.2.10",
        "created_at": "2026-01-01T00:00:00Z",
    }
    if store is not None:
        (store / f"{spec['request_id']}.json").write_text(json.dumps(_instances[iid]))
    await asyncio.sleep(config.get("sleep_after_create", 0))
    return _instances[iid]


async def find_instance(config, request_id):
    mode = config.get("find", "store")
    if mode == "fail":
        raise sdk.Unavailable("the provider's order lookup is down")
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "none":
        return None
    store = _store(config)
    if store is not None:
        path = store / f"{request_id}.json"
        return json.loads(path.read_text()) if path.exists() else None
    return _instances.get(f"i-{request_id[-8:]}")


def get_instance_status(config, instance_id):
    if instance_id.startswith("up-"):
        return {"status": "running", "ip_address": "198.51.100.7"}
    inst = _instances.get(instance_id)
    if inst is None:
        raise sdk.NotFound(f"instance {instance_id} does not exist")
    return {"status": inst["status"], "ip_address": inst["ip_address"]}


def sync_upstream_instances(config):
    return [
        {
            "instance_id": "up-1",
            "status": "running",
            "ip_address": "198.51.100.7",
            "created_at": "2026-01-01T00:00:00Z",
        },
        {"instance_id": "up-2", "status": "stopped", "ip_address": "", "created_at": "2026-01-02T00:00:00Z"},
    ]


def get_upstream_balance(config):
    return {"balance": Decimal("1234.56"), "currency": "CNY"}


def admin_page(config):
    return {"title": "Test provider", "html": f"<h1>base {config.get('base_price', '1.10')}</h1>"}


def admin_echo(config):
    return {"config": config, "decimal": Decimal("0.10")}


def admin_not_json(config):
    return {"obj": object()}


def admin_fail(config):
    raise sdk.NotFound("no such thing")


def admin_sleep_sync(config):
    time.sleep(float(config.get("seconds", 1)))
    return {"slept": config.get("seconds", 1)}


async def admin_sleep_async(config):
    await asyncio.sleep(float(config.get("seconds", 1)))
    return {"slept": config.get("seconds", 1)}


def admin_leak_secret(config):
    raise RuntimeError(f"failed with key {config.get('api_key')}")


def admin_state_put(config):
    st = sdk.state()
    st.set(config["key"], config["value"])
    return {"first": st.add("once:" + config["key"], True), "all": st.items()}


async def admin_state_get(config):
    st = sdk.state()
    return {"value": await st.aget(config["key"]), "once_again": await st.aadd("once:" + config["key"], True)}


async def admin_state_wrong(config):
    return sdk.state().get("x")


def admin_abort(config):
    raise sdk.PluginError("order changed meanwhile", "ABORTED")


def admin_own_timeout(config):
    raise TimeoutError("socket read timed out")
