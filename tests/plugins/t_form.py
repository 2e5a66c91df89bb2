"""Test notifier whose config schema uses every kind of field the console's form generator knows:
strings, integers, numbers, booleans, enums, nested objects (with a secret inside), arrays of
strings and of enum values, a map, and a top-level secret."""

PLUGIN_TYPE = "notifier"


def config_schema():
    return {
        "type": "object",
        "title": "Form test",
        "required": ["name", "smtp"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "title": "Name", "description": "A name", "minLength": 2},
            "mode": {"enum": ["fast", "safe", "off"], "default": "safe", "title": "Mode", "description": "How"},
            "retries": {
                "type": "integer",
                "minimum": 0,
                "maximum": 5,
                "default": 2,
                "title": "Retries",
                "description": "Attempts",
            },
            "ratio": {"type": "number", "title": "Ratio", "description": "A number"},
            "verbose": {"type": "boolean", "default": True, "title": "Verbose", "description": "Say more"},
            "tags": {"type": "array", "items": {"type": "string"}, "title": "Tags", "description": "Labels"},
            "channels": {
                "type": "array",
                "items": {"enum": ["mail", "sms", "push"]},
                "default": ["mail"],
                "title": "Channels",
                "description": "Where",
            },
            "token": {"type": "string", "writeOnly": True, "title": "Token", "description": "Secret token"},
            "smtp": {
                "type": "object",
                "title": "SMTP server",
                "description": "Where mail goes",
                "required": ["host"],
                "properties": {
                    "host": {"type": "string", "title": "Host", "description": "Server name", "minLength": 1},
                    "port": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 65535,
                        "default": 587,
                        "title": "Port",
                        "description": "TCP port",
                    },
                    "password": {
                        "type": "string",
                        "format": "password",
                        "title": "Password",
                        "description": "SMTP password",
                    },
                },
            },
            "limits": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "title": "Limits",
                "description": "Name → number",
            },
        },
    }


def send(config, message):
    return {"ok": True}
