"""bank_memo — a minimal gateway: tells the customer where to send a bank transfer."""

PLUGIN_TYPE = "gateway"


def version():
    return "0.1.0"


def config_schema():
    return {
        "type": "object",
        "required": ["account_name", "iban"],
        "properties": {
            "account_name": {"type": "string", "title": "Account holder", "description": "Shown to customers",
                             "minLength": 1},
            "iban": {"type": "string", "title": "IBAN", "description": "Account number", "minLength": 5},
        },
    }


def create_payment(config, order):
    return {
        "instructions": f"Transfer {order['amount']} to {config['account_name']}, {config['iban']}, "
        f"reference {order['order_id']}",
    }


def verify_notify(config, request):
    return {"paid": False}
