"""bank_transfer — pay by bank transfer: instructions with a reference per order, confirmed by an admin.

- ``create_payment`` answers the account details and a short reference derived from the order id
  (the same on every retry, with a check character so typos are caught) and records a *pending*
  transfer in the interface's state (``sdk.state()``).
- An operator who sees the money arrive confirms it: ``admin_confirm(reference, amount_received)``
  (the amount must match exactly). ``admin_list_pending`` / ``admin_list_confirmed`` /
  ``admin_cancel`` manage the list.
- The billing core learns of a confirmation by calling ``verify_notify`` with
  ``request.query.reference`` and the order it expects: ``paid`` is true only for a confirmed
  reference of that order and amount (the host records it once, as for every gateway).

State keys: ``pending:<REF>``, ``confirmed:<REF>`` (written once: the guard against confirming
twice), ``cancelled:<REF>``. See docs/builtin/bank_transfer.md.
"""

from __future__ import annotations

import hashlib
import html
import re
import string
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from rustbill import sdk

PLUGIN_TYPE = "gateway"

# Crockford base32: no I, L, O, U (read as 1, 1, 0 and nothing), so references survive being typed.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})
_BODY = 10  # 50 bits of the order id's hash
_PLACEHOLDERS = (
    "amount",
    "currency",
    "reference",
    "order_id",
    "subject",
    "account_name",
    "bank_name",
    "account_number",
    "iban",
    "swift",
    "branch",
)
DEFAULT_TEMPLATE = (
    "Please transfer {amount} {currency} to:\n"
    "Account holder: {account_name}\n"
    "Bank: {bank_name}\n"
    "Account number: {account_number}\n"
    "{iban_line}{swift_line}"
    "Reference: {reference}\n"
    "Write the reference in the transfer's remark (memo) field exactly as shown, so that we can match "
    "your payment to order {order_id}."
)


def version():
    return "1.0.0"


def config_schema():
    return {
        "type": "object",
        "title": "Bank transfer",
        "required": ["account_name", "bank_name", "account_number"],
        "additionalProperties": False,
        "properties": {
            "account_name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 140,
                "title": "Account holder",
                "description": "Name of the receiving account's holder, as the customer's bank must enter it.",
            },
            "bank_name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 140,
                "title": "Bank",
                "description": "Name of the receiving bank (and branch if customers need it).",
            },
            "account_number": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "title": "Account number",
                "description": "The receiving account number (or the IBAN if that is all customers need).",
            },
            "iban": {
                "type": "string",
                "pattern": r"^([A-Z]{2}[0-9]{2}[A-Z0-9 ]{10,36})?$",
                "default": "",
                "title": "IBAN",
                "description": "Optional IBAN (checked with its mod-97 check digits by the health check).",
            },
            "swift": {
                "type": "string",
                "pattern": r"^([A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?)?$",
                "default": "",
                "title": "SWIFT / BIC",
                "description": "Optional SWIFT/BIC code for international transfers (8 or 11 characters).",
            },
            "branch": {
                "type": "string",
                "maxLength": 140,
                "default": "",
                "title": "Branch",
                "description": "Optional branch name or code (开户支行).",
            },
            "currency": {
                "type": "string",
                "pattern": r"^[A-Z]{3}$",
                "default": "CNY",
                "title": "Currency",
                "description": "Currency of the account; orders in another currency are refused.",
            },
            "reference_prefix": {
                "type": "string",
                "pattern": r"^[A-Z0-9]{0,8}$",
                "default": "RB",
                "title": "Reference prefix",
                "description": "Put before every payment reference (capital letters and digits, up to 8).",
            },
            "instructions_template": {
                "type": "string",
                "maxLength": 4000,
                "default": "",
                "title": "Instructions template",
                "description": "Text shown to the customer; empty for the built-in English text. Placeholders: "
                + ", ".join("{" + p + "}" for p in _PLACEHOLDERS),
            },
        },
    }


# ---------------------------------------------------------------- helpers


def _cfg(config: dict[str, Any]) -> dict[str, Any]:
    c = {
        "iban": "",
        "swift": "",
        "branch": "",
        "currency": "CNY",
        "reference_prefix": "RB",
        "instructions_template": "",
        **config,
    }
    for k in ("account_name", "bank_name", "account_number", "iban", "swift", "branch"):
        c[k] = str(c.get(k) or "").strip()
    c["iban"] = c["iban"].replace(" ", "")
    return c


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_char(body: str) -> str:
    total = sum((i + 1) * _ALPHABET.index(ch) for i, ch in enumerate(body))
    return _ALPHABET[total % 31]


def reference_for(prefix: str, order_id: str) -> str:
    """The payment reference of ``order_id``: prefix, 10 base32 characters of a hash of the order
    id (so it is stable on retry) and a check character."""
    n = int.from_bytes(hashlib.sha256(f"rustbill-bank-transfer:{order_id}".encode()).digest()[:8], "big")
    n >>= 64 - 5 * _BODY
    body = "".join(_ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(_BODY)))
    return f"{prefix}{body}{_check_char(body)}"


def _normalise(reference: Any) -> str:
    """A reference as an operator may type it (lower case, spaces, dashes, O for 0), canonical;
    InvalidArgument when it cannot be one of ours."""
    raw = re.sub(r"[\s\-_.]", "", str(reference or "")).upper()
    if not raw:
        raise sdk.InvalidArgument("reference is required")
    if len(raw) < _BODY + 1 or len(raw) > _BODY + 9:
        raise sdk.InvalidArgument(f"reference {raw[:40]!r} has the wrong length (prefix + 11 characters)")
    prefix, tail = raw[: -(_BODY + 1)], raw[-(_BODY + 1) :].translate(_CONFUSABLE)
    if any(ch not in _ALPHABET for ch in tail) or not re.fullmatch(r"[A-Z0-9]*", prefix):
        raise sdk.InvalidArgument(f"reference {raw!r} contains characters a reference never has")
    if _check_char(tail[:-1]) != tail[-1]:
        raise sdk.InvalidArgument(f"reference {raw!r} fails its check character: mistyped?")
    return prefix + tail


def _amount(value: Any, what: str) -> Decimal:
    if isinstance(value, (float, bool)):
        raise sdk.InvalidArgument(f'{what} must be a decimal string like "12.50", not {type(value).__name__}')
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise sdk.InvalidArgument(f"{what} is not a decimal amount: {str(value)[:40]!r}") from None
    if not d.is_finite() or d <= 0:
        raise sdk.InvalidArgument(f"{what} must be a positive amount")
    return d


def _template_problems(template: str) -> list[str]:
    problems = []
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return [f"instructions_template is not a valid template: {exc}"]
    for f in fields:
        if f not in _PLACEHOLDERS:
            problems.append(
                f"instructions_template uses unknown placeholder {{{f}}} (known: {', '.join(_PLACEHOLDERS)})"
            )
    return problems


def _iban_ok(iban: str) -> bool:
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _instructions(c: dict[str, Any], values: dict[str, str]) -> str:
    template = c["instructions_template"]
    problems = _template_problems(template) if template else []
    if problems:
        raise sdk.FailedPrecondition("; ".join(problems))
    data = {**{k: c.get(k, "") for k in _PLACEHOLDERS}, **values}
    if template:
        return template.format_map(data)
    return DEFAULT_TEMPLATE.format_map(
        {
            **data,
            "iban_line": f"IBAN: {c['iban']}\n" if c["iban"] else "",
            "swift_line": f"SWIFT/BIC: {c['swift']}\n" if c["swift"] else "",
        }
    )


def _payment(c: dict[str, Any], reference: str, rec: dict[str, Any], status: str) -> dict[str, Any]:
    values = {
        "amount": rec["amount"],
        "currency": rec["currency"],
        "reference": reference,
        "order_id": rec["order_id"],
        "subject": rec.get("subject", ""),
    }
    extra = {
        "reference": reference,
        "amount": rec["amount"],
        "currency": rec["currency"],
        "account_name": c["account_name"],
        "bank_name": c["bank_name"],
        "account_number": c["account_number"],
        "status": status,
    }
    for k in ("iban", "swift", "branch"):
        if c[k]:
            extra[k] = c[k]
    return {"instructions": _instructions(c, values), "trade_no": reference, "extra": extra}


# ---------------------------------------------------------------- contract


async def health_check(config):
    c = _cfg(config)
    problems = [f"{k} is empty" for k in ("account_name", "bank_name", "account_number") if not c[k]]
    if c["iban"] and not _iban_ok(c["iban"]):
        problems.append(f"iban {c['iban']} fails its check digits")
    if c["swift"] and not re.fullmatch(r"[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?", c["swift"]):
        problems.append(f"swift {c['swift']!r} is not an 8 or 11 character SWIFT/BIC code")
    if not re.fullmatch(r"[A-Z]{3}", str(c["currency"])):
        problems.append(f"currency {c['currency']!r} is not a 3-letter code")
    if not re.fullmatch(r"[A-Z0-9]{0,8}", str(c["reference_prefix"])):
        problems.append("reference_prefix must be up to 8 capital letters and digits")
    if c["instructions_template"]:
        problems += _template_problems(c["instructions_template"])
    if problems:
        return "; ".join(problems)
    await sdk.state().aget("pending:")  # the state storage answers
    return None


async def create_payment(config, order):
    c = _cfg(config)
    order_id = str(order.get("order_id", "")).strip()
    if not order_id:
        raise sdk.InvalidArgument("order.order_id is required")
    amount = _amount(order.get("amount"), "order.amount")
    currency = str(order.get("currency") or c["currency"]).upper()
    if currency != c["currency"]:
        raise sdk.InvalidArgument(f"this account takes {c['currency']}; the order is in {currency}")
    reference = reference_for(c["reference_prefix"], order_id)
    st = sdk.state()
    done = await st.aget(f"confirmed:{reference}")
    if done is not None:
        if done["order_id"] != order_id:
            raise sdk.FailedPrecondition(f"reference {reference} already belongs to order {done['order_id']}")
        return _payment(c, reference, done, "confirmed")
    rec = {
        "order_id": order_id,
        "amount": format(amount, "f"),
        "currency": currency,
        "subject": str(order.get("subject") or "")[:200],
        "created_at": _now(),
    }
    if not await st.aadd(f"pending:{reference}", rec):
        old = await st.aget(f"pending:{reference}")
        if old is None:  # confirmed or cancelled in between: ask again
            raise sdk.PluginError(f"transfer {reference} changed meanwhile; try again", "ABORTED")
        if old["order_id"] != order_id:
            raise sdk.FailedPrecondition(f"reference {reference} already belongs to order {old['order_id']}")
        if Decimal(old["amount"]) != amount or old["currency"] != currency:
            raise sdk.FailedPrecondition(
                f"order {order_id} already awaits a transfer of {old['amount']} {old['currency']} "
                f"(reference {reference}); cancel it first to ask for {amount} {currency}"
            )
        rec = old
    return _payment(c, reference, rec, "pending")


async def verify_notify(config, request):
    query = {**(request.get("form") or {}), **(request.get("query") or {})}
    order = request.get("order")
    try:
        reference = _normalise(query.get("reference"))
    except sdk.PluginError as exc:
        return {"valid": False, "paid": False, "reply": "fail", "error": exc.message}
    st = sdk.state()
    rec = await st.aget(f"confirmed:{reference}")
    if rec is None:
        pending = await st.aget(f"pending:{reference}")
        why = "is not confirmed yet" if pending is not None else "is unknown"
        return {"valid": pending is not None, "paid": False, "reply": "fail", "error": f"transfer {reference} {why}"}
    fields = {"order_id": rec["order_id"], "trade_no": reference, "amount": rec["amount"]}
    if not order:
        return {"valid": True, "paid": False, "reply": "fail", "error": "no expected order was given", **fields}
    if str(order.get("order_id", "")) != rec["order_id"]:
        error = f"transfer {reference} is for order {rec['order_id']}, not {order.get('order_id')}"
    elif not _same_amount(order.get("amount"), rec["amount"]):
        error = f"transfer {reference} is for {rec['amount']} {rec['currency']}, the order is {order.get('amount')}"
    elif (order.get("currency") or rec["currency"]).upper() != rec["currency"]:
        error = f"transfer {reference} is in {rec['currency']}, the order in {order.get('currency')}"
    else:
        return {"valid": True, "paid": True, "reply": "success", "error": "", **fields}
    return {"valid": True, "paid": False, "reply": "fail", "error": error, **fields}


def _same_amount(given: Any, recorded: str) -> bool:
    try:
        return Decimal(str(given).strip()) == Decimal(recorded)
    except InvalidOperation:
        return False


# ---------------------------------------------------------------- admin


def _row(reference: str, rec: dict[str, Any]) -> dict[str, Any]:
    return {"reference": reference, **rec}


async def admin_list_pending(config):
    """Transfers customers were asked to make and nobody has confirmed yet, oldest first."""
    st = sdk.state()
    rows = []
    for key, rec in (await st.aitems("pending:")).items():
        reference = key.removeprefix("pending:")
        # a pending entry left by a create_payment racing a confirmation is not pending
        if await st.aget(f"confirmed:{reference}") is None:
            rows.append(_row(reference, rec))
    rows.sort(key=lambda r: r.get("created_at", ""))
    totals: dict[str, Decimal] = {}
    for r in rows:
        totals[r["currency"]] = totals.get(r["currency"], Decimal(0)) + Decimal(r["amount"])
    return {"count": len(rows), "totals": {k: format(v, "f") for k, v in totals.items()}, "pending": rows}


async def admin_list_confirmed(config):
    """Confirmed transfers, newest first (``limit``, default 50)."""
    try:
        limit = int(config.get("limit", 50))
    except (TypeError, ValueError):
        raise sdk.InvalidArgument("limit must be an integer") from None
    rows = [_row(k.removeprefix("confirmed:"), v) for k, v in (await sdk.state().aitems("confirmed:")).items()]
    rows.sort(key=lambda r: r.get("confirmed_at", ""), reverse=True)
    return {"count": len(rows), "confirmed": rows[: max(limit, 0)]}


async def admin_confirm(config):
    """An operator saw the transfer arrive: ``reference``, ``amount_received`` (must equal the
    amount asked for), optional ``note`` (e.g. the bank statement line)."""
    reference = _normalise(config.get("reference"))
    if config.get("amount_received") in (None, ""):
        raise sdk.InvalidArgument('amount_received is required (the amount that arrived, e.g. "12.50")')
    received = _amount(config.get("amount_received"), "amount_received")
    st = sdk.state()
    rec = await st.aget(f"pending:{reference}")
    if rec is None:
        done = await st.aget(f"confirmed:{reference}")
        if done is not None:
            raise sdk.FailedPrecondition(f"transfer {reference} was already confirmed at {done.get('confirmed_at')}")
        gone = await st.aget(f"cancelled:{reference}")
        if gone is not None:
            raise sdk.NotFound(f"transfer {reference} was cancelled at {gone.get('cancelled_at')}; nothing to confirm")
        raise sdk.NotFound(f"no pending transfer with reference {reference}")
    if received != Decimal(rec["amount"]):
        raise sdk.InvalidArgument(
            f"amount received {received} does not match the {rec['amount']} {rec['currency']} asked for "
            f"with reference {reference} (order {rec['order_id']}); nothing was confirmed"
        )
    confirmed = {
        **rec,
        "amount_received": format(received, "f"),
        "confirmed_at": _now(),
        "note": str(config.get("note") or "")[:500],
    }
    if not await st.aadd(f"confirmed:{reference}", confirmed):
        raise sdk.FailedPrecondition(f"transfer {reference} was already confirmed")
    await st.adelete(f"pending:{reference}")
    return _row(reference, confirmed)


async def admin_cancel(config):
    """Forget a pending transfer (the order was abandoned). A new payment request for the order
    asks for it again under the same reference."""
    reference = _normalise(config.get("reference"))
    st = sdk.state()
    rec = await st.aget(f"pending:{reference}")
    if rec is None:
        if await st.aget(f"confirmed:{reference}") is not None:
            raise sdk.FailedPrecondition(f"transfer {reference} is confirmed; it cannot be cancelled")
        raise sdk.NotFound(f"no pending transfer with reference {reference}")
    cancelled = {**rec, "cancelled_at": _now(), "reason": str(config.get("reason") or "")[:500]}
    await st.aset(f"cancelled:{reference}", cancelled)
    await st.adelete(f"pending:{reference}")
    return _row(reference, cancelled)


# The admin console shows the page in a sandboxed iframe; sdk.admin_bridge_script() lets it run
# this interface's admin_* actions (docs/plugins.md, "Admin pages and the console bridge").
_PAGE_SCRIPT = """<script>
rustbill.bind("confirm", "admin_confirm", function (f) {
  return {reference: f.elements.reference.value, amount_received: f.elements.amount.value, note: f.elements.note.value};
}, "confirm-out");
</script>"""


async def admin_page(config):
    c = _cfg(config)
    e = html.escape
    listing = await admin_list_pending(config)
    account = [
        ("Account holder", c["account_name"]),
        ("Bank", c["bank_name"] + (f" — {c['branch']}" if c["branch"] else "")),
        ("Account number", c["account_number"]),
        ("IBAN", c["iban"]),
        ("SWIFT/BIC", c["swift"]),
        ("Currency", c["currency"]),
    ]
    acc = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in account if v)
    rows = "".join(
        f"<tr><td><code>{e(r['reference'])}</code></td><td>{e(r['order_id'])}</td>"
        f"<td>{e(r['amount'])} {e(r['currency'])}</td><td>{e(r.get('subject', ''))}</td>"
        f"<td>{e(r.get('created_at', ''))}</td></tr>"
        for r in listing["pending"]
    )
    totals = ", ".join(f"{v} {k}" for k, v in listing["totals"].items()) or "nothing"
    parts = [
        f"<table>{acc}</table>",
        f"<h2>Pending transfers ({listing['count']}, expecting {e(totals)})</h2><table><tr><th>Reference</th>"
        f"<th>Order</th><th>Amount</th><th>Subject</th><th>Asked at</th></tr>{rows}</table>",
        '<h2>Confirm a transfer that arrived</h2><form id="confirm"><input name="reference" placeholder="Reference" '
        'required> <input name="amount" placeholder="Amount received" required> <input name="note" '
        'placeholder="Note (optional)"> <button type="submit">Confirm</button></form><pre id="confirm-out"></pre>',
    ]
    body = sdk.admin_html("Bank transfer", "Bank transfer", parts, sdk.admin_bridge_script() + _PAGE_SCRIPT)
    return {"title": "Bank transfer", "html": body}
