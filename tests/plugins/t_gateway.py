"""Test gateway."""

PLUGIN_TYPE = "gateway"


def config_schema():
    return {
        "type": "object",
        "required": ["api_url", "key"],
        "properties": {
            "api_url": {"type": "string", "pattern": "^https?://", "title": "API URL", "description": "base"},
            "key": {"type": "string", "format": "password", "minLength": 3, "title": "Key", "description": "secret"},
            "channels": {
                "type": "array",
                "items": {"enum": ["alipay", "wxpay", "qqpay"]},
                "title": "C",
                "description": "c",
            },
        },
    }


def health_check(config):
    return True


def create_payment(config, order):
    return {"url": f"{config['api_url']}/submit.php?out_trade_no={order['order_id']}"}


def verify_notify(config, request):
    return {"paid": True}
