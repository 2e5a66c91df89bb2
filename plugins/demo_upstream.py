"""demo_upstream — an upstream provider that resells a fixed catalogue with a markup.

A template for an upstream provider; reselling from another RustBill is ``plugins/rustbill.py``.
"""

from decimal import Decimal

PLUGIN_TYPE = "upstream_provider"


def version():
    return "0.1.0"


def config_schema():
    return {
        "type": "object",
        "properties": {
            "markup_percent": {"type": "string", "title": "Markup (%)", "description": "Added to upstream prices",
                               "pattern": r"^\d+(\.\d+)?$", "default": "10"},
            "api_key": {"type": "string", "title": "Upstream API key", "description": "Secret", "format": "password"},
        },
    }


def query_price(config, spec):
    base = Decimal("3.00") * spec["cpu_cores"] + Decimal("1.50") * spec["memory_gb"]
    markup = Decimal(config.get("markup_percent", "10")) / 100
    return {"amount": (base * (1 + markup)).quantize(Decimal("0.01")), "currency": "USD", "billing_cycle": "monthly"}


def get_upstream_balance(config):
    return {"balance": "100.00", "currency": "USD"}
