"""Test gateway: pays whatever its (unsigned) notification says — the host must still check."""

PLUGIN_TYPE = "gateway"


def config_schema():
    return {
        "type": "object",
        "required": ["api_url", "key"],
        "properties": {
            "api_url": {
                "type": "string",
                "pattern": "^https?://",
                "examples": ["https://pay.example.com/"],
                "title": "API URL",
                "description": "base",
            },
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
    return {"pay_url": f"{config['api_url']}/submit.php?out_trade_no={order['order_id']}"}


def verify_notify(config, request):
    q = request["query"]
    return {
        "valid": True,
        "paid": q.get("trade_status") == "TRADE_SUCCESS",
        "order_id": q.get("out_trade_no", ""),
        "trade_no": q.get("trade_no", ""),
        "amount": q.get("money", ""),
        "reply": "success",
    }
