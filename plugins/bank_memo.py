"""bank_memo — a minimal gateway: tells the customer where to send a bank transfer.

Banks send no notifications, so ``verify_notify`` never reports a payment: it answers every
request as not valid (``reply: "fail"``) and says why. Confirm transfers by hand, or use the
built-in ``bank_transfer`` gateway, which keeps pending transfers and has admin confirmation.
"""

PLUGIN_TYPE = "gateway"


def version():
    return "0.1.1"


def config_schema():
    return {
        "type": "object",
        "required": ["account_name", "iban"],
        "properties": {
            "account_name": {
                "type": "string",
                "title": "Account holder",
                "description": "Shown to customers",
                "minLength": 1,
            },
            "iban": {"type": "string", "title": "IBAN", "description": "Account number", "minLength": 5},
        },
    }


def create_payment(config, order):
    return {
        "instructions": f"Transfer {order['amount']} to {config['account_name']}, {config['iban']}, "
        f"reference {order['order_id']}",
    }


def verify_notify(config, request):
    # The contract needs both booleans; "valid" is false because nothing here can be verified.
    return {
        "valid": False,
        "paid": False,
        "reply": "fail",
        "error": "bank_memo receives no payment notifications: confirm bank transfers by hand "
        "(or use the bank_transfer gateway)",
    }
