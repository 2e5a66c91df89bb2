"""log_notifier — a minimal notifier that writes messages to the server log."""

from rustbill import sdk

PLUGIN_TYPE = "notifier"
log = sdk.logger(__name__)


def version():
    return "0.1.0"


def config_schema():
    return {
        "type": "object",
        "properties": {"prefix": {"type": "string", "title": "Prefix", "description": "Put before each message"}},
    }


def send(config, message):
    log.info("%s%s", config.get("prefix", ""), message.get("subject", ""))
    return {"delivered": True}
