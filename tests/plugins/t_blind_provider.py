"""Test provider without find_instance: the host cannot ask it what an order with an unknown
outcome did. Instances are kept in files of ``store_dir`` (one per request_id), create_instance calls
are logged there, and a second call with the same request_id returns what the first one made."""

import asyncio
import json
from pathlib import Path

PLUGIN_TYPE = "upstream_provider"


def config_schema():
    return {
        "type": "object",
        "properties": {
            "store_dir": {"type": "string", "title": "Store", "description": "instances and a call log"},
            "sleep": {"type": "number", "minimum": 0, "title": "Sleep", "description": "before making it"},
            "sleep_after_create": {"type": "number", "minimum": 0, "title": "Sleep after",
                                   "description": "after making it"},
        },
        "required": ["store_dir"],
        "additionalProperties": False,
    }


async def create_instance(config, spec):
    store = Path(config["store_dir"])
    with (store / "create_calls").open("a") as f:
        f.write(spec["request_id"] + "\n")
    await asyncio.sleep(config.get("sleep", 0))
    path = store / f"{spec['request_id']}.json"
    if not path.exists():
        path.write_text(json.dumps({"instance_id": f"b-{spec['request_id'][-8:]}", "status": "running",
                                    "ip_address": "192.0.2.20"}))  # fmt: skip
    await asyncio.sleep(config.get("sleep_after_create", 0))
    return json.loads(path.read_text())
