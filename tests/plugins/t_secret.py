"""Test notifier with secrets at two depths; an admin action tells (as a fingerprint) what it got."""

import hashlib

PLUGIN_TYPE = "notifier"


def config_schema():
    return {
        "type": "object",
        "required": ["url", "token"],
        "properties": {
            "url": {"type": "string", "title": "URL", "description": "where"},
            "token": {"type": "string", "format": "password", "minLength": 3, "title": "Token", "description": "s"},
            "smtp": {
                "type": "object",
                "title": "SMTP",
                "description": "nested",
                "properties": {
                    "user": {"type": "string", "title": "User", "description": "u"},
                    "password": {"type": "string", "writeOnly": True, "title": "Password", "description": "p"},
                },
            },
        },
    }


def _fp(value):
    return hashlib.sha256(str(value).encode()).hexdigest()[:12] if value else ""


def admin_fingerprints(config):
    return {
        "token": _fp(config.get("token")),
        "smtp_password": _fp((config.get("smtp") or {}).get("password")),
        "url": config.get("url"),
    }


def send(config, message):
    return None
