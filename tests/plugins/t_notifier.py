"""Test notifier without a health_check (counts as healthy)."""

PLUGIN_TYPE = "notifier"


def send(config, message):
    return {"ok": True}
