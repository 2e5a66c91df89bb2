"""Test provider without find_instance: the host cannot ask it what an order with an unknown
outcome did. Plain ``def``: a call the host stops waiting for goes on in its thread. Instances are
kept in files of ``store_dir`` (one per request_id), every create_instance call is logged there, and
a second call with the same request_id returns what the first one made."""

import json
import time
from pathlib import Path

from rustbill import sdk

PLUGIN_TYPE = "upstream_provider"


def config_schema():
    return {
        "type": "object",
        "properties": {
            "store_dir": {"type": "string", "title": "Store", "description": "instances and a call log"},
            "sleep": {"type": "number", "minimum": 0, "title": "Sleep", "description": "before making it"},
            "fail_first": {
                "type": "boolean",
                "title": "Fail first",
                "description": "the first call of a request_id ends with DEADLINE_EXCEEDED, "
                "after sleeping, having made nothing",
            },
        },
        "required": ["store_dir"],
        "additionalProperties": False,
    }


def create_instance(config, spec):
    store = Path(config["store_dir"])
    calls = store / "create_calls"
    with calls.open("a") as f:
        f.write(spec["request_id"] + "\n")
    time.sleep(config.get("sleep", 0))
    if config.get("fail_first") and calls.read_text().split().count(spec["request_id"]) == 1:
        raise sdk.DeadlineExceeded("the provider did not answer")
    path = store / f"{spec['request_id']}.json"
    if not path.exists():
        path.write_text(json.dumps({"instance_id": f"b-{spec['request_id'][-8:]}", "status": "running",
                                    "ip_address": "192.0.2.20"}))  # fmt: skip
    return json.loads(path.read_text())
