"""demo_cloud — a small first-party provider that prices servers from rules in its config.

It opens no real servers: instances live in the memory of its worker process. Use it to try the
provider RPCs end to end, and as a template for a real provider plugin (see docs/plugins.md).
"""

import html
from decimal import Decimal

from rustbill import sdk

PLUGIN_TYPE = "first_party_provider"

_instances: dict[str, dict] = {}


def version():
    return "1.0.0"


def config_schema():
    return {
        "type": "object",
        "title": "Demo cloud",
        "properties": {
            "currency": {"type": "string", "title": "Currency", "description": "ISO 4217 code", "default": "USD"},
            "per_core": {"type": "string", "title": "Price per core", "description": "Monthly, decimal string",
                         "pattern": r"^\d+(\.\d+)?$", "default": "2.00"},
            "per_gb_memory": {"type": "string", "title": "Price per GB of memory", "description": "Monthly",
                              "pattern": r"^\d+(\.\d+)?$", "default": "1.00"},
            "per_gb_disk": {"type": "string", "title": "Price per GB of disk", "description": "Monthly",
                            "pattern": r"^\d+(\.\d+)?$", "default": "0.05"},
            "regions": {"type": "array", "items": {"type": "string"}, "title": "Regions",
                        "description": "Regions offered", "default": ["us-west", "eu-central"]},
        },
        "additionalProperties": False,
    }


def health_check(config):
    return None


def spec_template(config):
    return {
        "fields": [
            {"key": "cpu_cores", "label": "CPU cores", "field_type": "Integer", "required": True, "min": 1, "max": 64},
            {"key": "memory_gb", "label": "Memory (GB)", "field_type": "Integer", "required": True, "min": 1,
             "max": 256},
            {"key": "disk_gb", "label": "Disk (GB)", "field_type": "Integer", "required": True, "min": 10,
             "max": 2000},
            {"key": "region", "label": "Region", "field_type": "Region",
             "options": config.get("regions", ["us-west", "eu-central"])},
        ],
        "groups": [{"key": "compute", "label": "Compute", "field_keys": ["cpu_cores", "memory_gb", "disk_gb"]}],
    }


def _price(config, spec):
    return (
        Decimal(config.get("per_core", "2.00")) * spec["cpu_cores"]
        + Decimal(config.get("per_gb_memory", "1.00")) * spec["memory_gb"]
        + Decimal(config.get("per_gb_disk", "0.05")) * spec["disk_gb"]
    ).quantize(Decimal("0.01"))


def query_price(config, spec):
    return {"amount": _price(config, spec), "currency": config.get("currency", "USD"), "billing_cycle": "monthly"}


def sync_products(config):
    plans = [("small", 1, 2, 20), ("medium", 2, 4, 50), ("large", 4, 8, 100)]
    return [
        {
            "id": name,
            "name": f"Demo {name}",
            "price": _price(config, {"cpu_cores": c, "memory_gb": m, "disk_gb": d}),
            "currency": config.get("currency", "USD"),
            "specs": {"cpu_cores": str(c), "memory_gb": str(m), "disk_gb": str(d)},
            "billing_cycles": {"monthly": _price(config, {"cpu_cores": c, "memory_gb": m, "disk_gb": d})},
        }
        for name, c, m, d in plans
    ]


def create_instance(config, spec):
    iid = f"demo-{spec['request_id'][-12:]}"
    _instances[iid] = {"instance_id": iid, "status": "running", "ip_address": f"10.0.0.{len(_instances) + 2}"}
    return _instances[iid]


def find_instance(config, request_id):
    """The instance an order (its request_id) opened, or None: the host asks this to settle an order
    whose create_instance ended without an answer."""
    return _instances.get(f"demo-{request_id[-12:]}")


def get_instance_status(config, instance_id):
    inst = _instances.get(instance_id)
    if inst is None:
        raise sdk.NotFound(f"no instance {instance_id}")
    return inst


def sync_upstream_instances(config):
    return list(_instances.values())


def get_upstream_balance(config):
    return {"balance": "0.00", "currency": config.get("currency", "USD")}


def admin_page(config):
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(i['instance_id'])}</td><td>{e(i['status'])}</td><td>{e(i['ip_address'] or '')}</td></tr>"
        for i in _instances.values()
    )
    table = (
        f"<table><tr><th>Instance</th><th>Status</th><th>IP address</th></tr>{rows}</table>"
        if rows
        else "<p>No instances yet: an order placed on this interface (CreateUpstreamInstance) opens one.</p>"
    )
    note = "<p>Instances of this demo live in its worker process only: they are gone when it restarts.</p>"
    return {"title": "Demo cloud", "html": sdk.admin_html("Demo cloud", "Demo cloud", [note, table], "")}


def admin_list_instances(config):
    return list(_instances.values())
