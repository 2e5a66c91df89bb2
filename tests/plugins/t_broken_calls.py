"""Test provider whose functions raise, return garbage or block."""

import time

PLUGIN_TYPE = "upstream_provider"


def version():
    return "0.2.0"


def query_price(config, spec):
    if spec["cpu_cores"] == 1:
        raise ValueError("price table is corrupt")
    if spec["cpu_cores"] == 2:
        return {"amount": 12.5, "currency": "USD"}  # a float: refused
    if spec["cpu_cores"] == 3:
        return ["not", "a", "dict"]
    if spec["cpu_cores"] == 4:
        raise ConnectionRefusedError("connection refused by upstream")
    if spec["cpu_cores"] == 5:
        time.sleep(30)  # blocks its thread; the call times out
    return {"amount": "1", "currency": "USD", "billing_cycle": "monthly"}


def get_upstream_balance(config):
    return {"balance": "NaN"}


def sync_products(config):
    return [{"id": "a", "name": "A", "price": "1"}, {"id": "a", "name": "A again", "price": "2"}]


def create_instance(config, spec):
    raise RuntimeError("upstream rejected the order")


def get_instance_status(config, instance_id):
    return None


def health_check(config):
    raise RuntimeError("cannot reach upstream")
