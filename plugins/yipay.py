"""yipay — 易支付 / EPay gateway (彩虹易支付 and its clones), merchant protocol V1 (MD5 signature).

- ``create_payment``: in ``redirect`` mode builds the signed ``submit.php`` GET URL the customer's
  browser opens (no call to the gateway); in ``api`` mode calls ``mapi.php`` and returns its
  ``payurl`` / ``qrcode`` / ``urlscheme`` and ``trade_no``.
- ``verify_notify``: checks the asynchronous notification (a GET to ``notify_url``): signature,
  merchant id, ``trade_status == TRADE_SUCCESS``, order number and amount against the order the
  host expects; the reply body is ``success`` when it is accepted, ``fail`` otherwise. A correctly
  signed notification of another ``trade_status`` (``WAIT_BUYER_PAY``, ``TRADE_CLOSED`` …) is no
  payment: it is recorded (log and the interface's state) and answered ``success``, never paid, so
  that the gateway stops resending it. The host records each paid ``trade_no`` once, so a replayed
  notification never credits twice.
- ``health_check``, ``admin_page`` and the ``admin_*`` actions use ``api.php`` (``act=query``,
  ``act=order``, ``act=orders``).

Signature (the protocol's documentation): drop ``sign``, ``sign_type`` and empty values, sort by
name, join ``k=v`` with ``&`` without URL-encoding, append the merchant key, MD5, lowercase hex.
Some clones append ``&key=KEY`` or want upper-case hex: see ``sign_variant``.

Configuration names are the spec's (``api_url``, ``key``); the merchant id ``pid`` may be left out
when the interface is saved (the spec's own example has none), but nothing can be paid without it:
the health check then says to fill it in, and payments and notifications are refused.
See docs/builtin/yipay.md.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import httpx

from rustbill import sdk

PLUGIN_TYPE = "gateway"

SIGN_VARIANTS = ("plain", "plain_upper", "amp_key", "amp_key_upper")
DEVICES = ("pc", "mobile", "qq", "wechat", "alipay", "jump")
_CENT = Decimal("0.01")
_OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")
_NAME_MAX = 100

log = sdk.logger(__name__)


def version():
    return "1.1.0"


def config_schema():
    return {
        "type": "object",
        "title": "易支付 / EPay",
        "required": ["api_url", "key"],
        "additionalProperties": False,
        "properties": {
            "api_url": {
                "type": "string",
                "pattern": r"^https?://[^\s?#]+$",
                "examples": ["https://pay.example.com/"],
                "title": "Gateway URL",
                "description": "Base URL of the EPay gateway, e.g. https://pay.example.com/ — submit.php, "
                "mapi.php and api.php are under it.",
            },
            "pid": {
                "type": ["string", "integer"],
                "pattern": r"^([0-9A-Za-z_-]{1,32})?$",
                "minimum": 1,
                "examples": ["1001"],
                "title": "Merchant ID (pid)",
                "description": "The merchant id (商户ID) the gateway gave you. May be left empty when the "
                "interface is saved, but is needed for payments: until it is set the health check fails "
                "and payments and notifications are refused.",
            },
            "key": {
                "type": "string",
                "format": "password",
                "minLength": 1,
                "title": "Merchant key",
                "description": "The merchant key (商户密钥); signs requests and checks notifications. Secret.",
            },
            "sign_variant": {
                "enum": list(SIGN_VARIANTS),
                "default": "plain",
                "title": "Signature variant",
                "description": "plain: key appended directly, lowercase MD5 (the documented form, default); "
                "plain_upper: the same in upper case; amp_key: '&key=KEY' appended; amp_key_upper: both.",
            },
            "mode": {
                "enum": ["redirect", "api"],
                "default": "redirect",
                "title": "Payment mode",
                "description": "redirect: a signed submit.php URL for the customer's browser (page payment); "
                "api: server-side mapi.php call returning a pay URL, QR code or URL scheme.",
            },
            "channels": {
                "type": "array",
                "items": {"type": "string", "pattern": r"^[a-z0-9_]{1,32}$"},
                "uniqueItems": True,
                "minItems": 1,
                "default": ["alipay", "wxpay", "qqpay"],
                "title": "Allowed channels",
                "description": "Payment types (EPay 'type') customers may choose: alipay, wxpay, qqpay, ...",
            },
            "default_channel": {
                "type": "string",
                "pattern": r"^([a-z0-9_]{1,32})?$",
                "default": "",
                "title": "Default channel",
                "description": "Used when the order names no channel. Empty: in redirect mode the gateway's "
                "cashier lets the customer choose; api mode then requires a channel.",
            },
            "device": {
                "enum": list(DEVICES),
                "default": "pc",
                "title": "Device (api mode)",
                "description": "mapi.php 'device': pc, mobile, qq, wechat, alipay or jump.",
            },
            "sitename": {
                "type": "string",
                "maxLength": 64,
                "default": "",
                "title": "Site name",
                "description": "Optional 'sitename' shown on the gateway's cashier page.",
            },
            "currency": {
                "type": "string",
                "pattern": r"^[A-Z]{3}$",
                "default": "CNY",
                "title": "Currency",
                "description": "The currency the gateway settles in (EPay amounts are yuan); orders in "
                "another currency are refused.",
            },
            "notify_url": {
                "type": "string",
                "pattern": r"^(https?://\S+)?$",
                "default": "",
                "title": "Default notify URL",
                "description": "Where the gateway sends the asynchronous notification when the order gives none.",
            },
            "return_url": {
                "type": "string",
                "pattern": r"^(https?://\S+)?$",
                "default": "",
                "title": "Default return URL",
                "description": "Where the customer's browser returns after paying when the order gives none.",
            },
            "confirm_with_query": {
                "type": "boolean",
                "default": False,
                "title": "Confirm notifications with api.php",
                "description": "Before accepting a notification, also ask api.php (act=order) that the trade "
                "is paid for the same amount (one more request per payment).",
            },
            "timeout": {
                "type": "number",
                "minimum": 1,
                "maximum": 60,
                "default": 10,
                "title": "Timeout (seconds)",
                "description": "Time limit of each request to the gateway.",
            },
        },
    }


# ---------------------------------------------------------------- signing and config


def sign(params: dict[str, Any], key: str, variant: str = "plain") -> str:
    """The EPay V1 signature of ``params`` (see the module docstring)."""
    skip = ("sign", "sign_type")
    pairs = sorted((str(k), str(v)) for k, v in params.items() if k not in skip and v not in (None, ""))
    text = "&".join(f"{k}={v}" for k, v in pairs)
    text += f"&key={key}" if variant in ("amp_key", "amp_key_upper") else key
    digest = hashlib.md5(text.encode("utf-8")).hexdigest()
    return digest.upper() if variant.endswith("_upper") else digest


def _cfg(config: dict[str, Any]) -> dict[str, Any]:
    c = {
        "sign_variant": "plain",
        "mode": "redirect",
        "channels": ["alipay", "wxpay", "qqpay"],
        "default_channel": "",
        "device": "pc",
        "sitename": "",
        "currency": "CNY",
        "notify_url": "",
        "return_url": "",
        "confirm_with_query": False,
        "timeout": 10,
        **config,
    }
    c["pid"] = str(c.get("pid", "")).strip()
    c["base"] = str(c.get("api_url", "")).rstrip("/") + "/"
    c["timeout"] = float(c["timeout"])
    if c["sign_variant"] not in SIGN_VARIANTS:
        raise sdk.InvalidArgument(f"sign_variant must be one of {', '.join(SIGN_VARIANTS)}")
    return c


_NO_PID = (
    "the merchant id is not set: fill in pid (商户ID, the merchant id the gateway gave you together with "
    "the merchant key) in this interface's configuration"
)


def _need_pid(c: dict[str, Any]) -> None:
    """The merchant id is optional when the interface is saved (the spec's example has none), but
    every request to the gateway and every notification check needs it."""
    if not c["pid"]:
        raise sdk.FailedPrecondition(_NO_PID)


def _yuan(value: Any, what: str) -> Decimal:
    """An amount in yuan with at most two decimals (the gateway's precision)."""
    if isinstance(value, float):
        raise sdk.InvalidArgument(f"{what} must be a decimal string, not a float")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise sdk.InvalidArgument(f"{what} is not a decimal amount: {str(value)[:40]!r}") from None
    if not d.is_finite():
        raise sdk.InvalidArgument(f"{what} must be a finite amount")
    if d != d.quantize(_CENT):
        raise sdk.InvalidArgument(f"{what} {d} has more than two decimals; EPay amounts are yuan with two (fen)")
    return d.quantize(_CENT)


def _text_money(value: Any) -> str:
    """A money value from a gateway reply (string or JSON number parsed as Decimal) as "12.50"."""
    try:
        return str(Decimal(str(value)).quantize(_CENT, ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        return str(value)


# ---------------------------------------------------------------- HTTP


class _RedactKey(logging.Filter):
    """httpx logs every request URL at INFO; api.php takes the merchant key in the query string
    (as documented), so hide it there before the record is written anywhere."""

    rustbill_yipay_redactor = True

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                a.copy_set_param("key", "***") if isinstance(a, httpx.URL) and "key" in a.params else a
                for a in record.args
            )
        return True


_httpx_log = logging.getLogger("httpx")
if not any(getattr(f, "rustbill_yipay_redactor", False) for f in _httpx_log.filters):
    _httpx_log.addFilter(_RedactKey())


def _where(c: dict[str, Any], endpoint: str) -> str:
    return c["base"] + endpoint


async def _request(c: dict[str, Any], method: str, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
    """One request to the gateway; the JSON reply as a dict (numbers as Decimal). Failures become
    PluginErrors that say what is wrong, never with the key or the full query string."""
    url = _where(c, endpoint)
    timeout = httpx.Timeout(c["timeout"])
    try:
        if method == "GET":
            resp = await sdk.http().get(url, params=params, timeout=timeout)
        else:
            resp = await sdk.http().post(url, data=params, timeout=timeout)
    except httpx.TimeoutException:
        raise sdk.PluginError(
            f"the EPay gateway at {c['base']} did not answer {endpoint} within {c['timeout']:g}s", "DEADLINE_EXCEEDED"
        ) from None
    except httpx.TransportError as exc:
        raise sdk.Unavailable(
            f"cannot reach the EPay gateway at {c['base']}: {type(exc).__name__}: {str(exc) or 'connection failed'}"
        ) from None
    if resp.status_code == 404:
        raise sdk.FailedPrecondition(
            f"{url} answered HTTP 404: api_url does not look like the base URL of an EPay gateway"
        )
    if resp.status_code >= 500:
        raise sdk.Unavailable(f"the EPay gateway answered HTTP {resp.status_code} at {url}")
    if resp.is_redirect:
        raise sdk.FailedPrecondition(
            f"{url} redirects to {resp.headers.get('location', '?')[:200]}: set api_url to the gateway's real base URL"
        )
    if resp.status_code != 200:
        raise sdk.FailedPrecondition(f"{url} answered HTTP {resp.status_code}, expected 200 with JSON")
    text = resp.text.lstrip("\ufeff").strip()
    try:
        data = json.loads(text, parse_float=Decimal)
    except ValueError:
        snippet = re.sub(r"\s+", " ", text[:60])
        raise sdk.FailedPrecondition(
            f"{url} did not answer JSON (got {snippet!r}): api_url is not an EPay gateway, or the gateway failed"
        ) from None
    if not isinstance(data, dict) or "code" not in data:
        raise sdk.FailedPrecondition(f"{url} answered JSON without 'code': not an EPay gateway reply")
    return data


def _code(data: dict[str, Any]) -> int | None:
    try:
        return int(str(data.get("code")))
    except ValueError:
        return None


async def _api(c: dict[str, Any], act: str, **params: Any) -> dict[str, Any]:
    """``api.php?act=...&pid=&key=`` (GET, as documented)."""
    _need_pid(c)
    return await _request(c, "GET", "api.php", {"act": act, "pid": c["pid"], "key": c["key"], **params})


def _refused(c: dict[str, Any], data: dict[str, Any], what: str) -> sdk.PluginError:
    """A gateway reply with ``code != 1`` as an error with the gateway's own message."""
    msg = str(data.get("msg") or "no message")
    said = f"{what}: the gateway says {msg!r} (code {data.get('code')})"
    lowered = msg.lower()
    if "不存在" in msg or "not exist" in lowered or "not found" in lowered:
        return sdk.NotFound(said)
    if any(w in lowered for w in ("key", "pid", "sign", "签名", "密钥", "商户")):
        return sdk.PermissionDenied(f"{said}: pid {c['pid']} and this key are not accepted")
    return sdk.FailedPrecondition(said)


async def _merchant(c: dict[str, Any]) -> dict[str, Any]:
    data = await _api(c, "query")
    if _code(data) != 1:
        raise _refused(c, data, "merchant query")
    return {
        "pid": str(data.get("pid", c["pid"])),
        "active": str(data.get("active", "")),
        "balance": _text_money(data.get("money", "0")),
        "currency": c["currency"],
        "settle_type": str(data.get("type", "")),
        "settle_account": str(data.get("account", "")),
        "name": str(data.get("username", "")),
        "orders": str(data.get("orders", "")),
        "orders_today": str(data.get("order_today", "")),
        "orders_yesterday": str(data.get("order_lastday", "")),
    }  # the reply's "key" is deliberately dropped


def _order(data: dict[str, Any]) -> dict[str, Any]:
    status = str(data.get("status", ""))
    return {
        "trade_no": str(data.get("trade_no", "")),
        "out_trade_no": str(data.get("out_trade_no", "")),
        "api_trade_no": str(data.get("api_trade_no") or ""),
        "type": str(data.get("type", "")),
        "name": str(data.get("name", "")),
        "money": _text_money(data.get("money", "")),
        "status": "paid" if status == "1" else "unpaid" if status == "0" else status,
        "addtime": str(data.get("addtime") or ""),
        "endtime": str(data.get("endtime") or ""),
        "buyer": str(data.get("buyer") or ""),
        "param": str(data.get("param") or ""),
    }


# ---------------------------------------------------------------- health


async def health_check(config):
    c = _cfg(config)
    if not c["pid"]:
        return _NO_PID
    try:
        info = await _merchant(c)
    except sdk.PluginError as exc:
        if exc.code in ("PERMISSION_DENIED", "NOT_FOUND"):
            return f"{exc.message}; check pid and key"
        return exc.message
    if info["active"] == "0":
        return f"merchant {info['pid']} is disabled on the gateway (active=0): it cannot take payments"
    if info["pid"] != c["pid"]:
        return f"the gateway answered for merchant {info['pid']!r}, not {c['pid']!r}"
    return None


# ---------------------------------------------------------------- payments


def _payment_params(c: dict[str, Any], order: dict[str, Any]) -> dict[str, str]:
    _need_pid(c)
    out_trade_no = str(order.get("order_id", ""))
    if not _OUT_TRADE_NO.match(out_trade_no):
        raise sdk.InvalidArgument(
            f"order_id {out_trade_no[:80]!r} cannot be an EPay out_trade_no (1-64 of A-Z a-z 0-9 _ . -)"
        )
    money = _yuan(order.get("amount"), "order.amount")
    if money <= 0:
        raise sdk.InvalidArgument("order.amount must be positive")
    currency = str(order.get("currency") or c["currency"]).upper()
    if currency != c["currency"]:
        raise sdk.InvalidArgument(f"this gateway takes {c['currency']}; the order is in {currency}")
    channel = str(order.get("channel") or c["default_channel"])
    if channel and channel not in c["channels"]:
        raise sdk.InvalidArgument(
            f"channel {channel!r} is not enabled on this interface (allowed: {', '.join(c['channels'])})"
        )
    notify_url = str(order.get("notify_url") or c["notify_url"])
    if not notify_url.startswith(("http://", "https://")):
        raise sdk.InvalidArgument("order.notify_url (an http(s) URL) is required, or set notify_url in the config")
    name = str(order.get("subject") or "").strip() or f"Order {out_trade_no}"
    params = {
        "pid": c["pid"],
        "type": channel,
        "out_trade_no": out_trade_no,
        "notify_url": notify_url,
        "return_url": str(order.get("return_url") or c["return_url"]),
        "name": name[:_NAME_MAX],
        "money": str(money),
        "sitename": c["sitename"],
    }
    return {k: v for k, v in params.items() if v != ""}


def _signed(c: dict[str, Any], params: dict[str, str]) -> dict[str, str]:
    return {**params, "sign": sign(params, c["key"], c["sign_variant"]), "sign_type": "MD5"}


async def create_payment(config, order):
    c = _cfg(config)
    params = _payment_params(c, order)
    extra = {"out_trade_no": params["out_trade_no"], "money": params["money"], "mode": c["mode"]}
    if c["mode"] == "redirect":
        extra["type"] = params.get("type", "")
        return {"pay_url": c["base"] + "submit.php?" + urlencode(_signed(c, params)), "extra": extra}

    if "type" not in params:
        raise sdk.InvalidArgument("api mode needs a channel: give order.channel or set default_channel")
    client_ip = str(order.get("client_ip") or "").strip()
    if not client_ip:
        raise sdk.InvalidArgument("order.client_ip is required in api mode (mapi.php needs clientip)")
    params.update(clientip=client_ip, device=c["device"])
    data = await _request(c, "POST", "mapi.php", _signed(c, params))
    if _code(data) != 1:
        raise sdk.FailedPrecondition(
            f"the gateway refused the payment: {data.get('msg') or 'no message'!r} (code {data.get('code')})"
        )
    pay_url = str(data.get("payurl") or data.get("urlscheme") or "")
    qrcode = str(data.get("qrcode") or "")
    if not (pay_url or qrcode):
        raise sdk.FailedPrecondition("mapi.php answered code 1 without payurl, qrcode or urlscheme")
    extra["type"] = params["type"]
    if data.get("urlscheme"):
        extra["urlscheme"] = str(data["urlscheme"])
    return {"pay_url": pay_url, "qrcode": qrcode, "trade_no": str(data.get("trade_no") or ""), "extra": extra}


def _refuse(error: str, *, valid: bool = False, **fields: Any) -> dict[str, Any]:
    return {"valid": valid, "paid": False, "reply": "fail", "error": error, **fields}


_NOT_PAID_PREFIX = "not_paid:"
_NOT_PAID_SHOWN = 20


async def _not_a_payment(status: str, params: dict[str, str], fields: dict[str, Any]) -> dict[str, Any]:
    """A correctly signed notification whose trade did not succeed (WAIT_BUYER_PAY, TRADE_CLOSED …):
    recorded, never paid, and answered ``success`` — ``fail`` would make the gateway resend it for
    ever (the EPay merchant SDK's own sample answers ``success`` to every correctly signed one)."""
    shown = status[:32] or "(none)"
    ref = (fields["trade_no"] or fields["order_id"])[:64]
    log.info(
        "notification for order %r (trade %r) has trade_status %r: not a payment; acknowledged, nothing paid",
        fields["order_id"][:64], fields["trade_no"][:64], shown,
    )  # fmt: skip
    if ref:
        record = {
            "trade_no": fields["trade_no"][:64],
            "out_trade_no": fields["order_id"][:64],
            "trade_status": shown,
            "money": fields.get("amount", params.get("money", "")[:20]),
            "type": params.get("type", "")[:32],
            "received_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        await sdk.state().aset(_NOT_PAID_PREFIX + ref, record)  # one entry per trade: the latest state
    error = f"trade_status is {shown!r}, not TRADE_SUCCESS: not a payment (acknowledged so the gateway stops)"
    return {"valid": True, "paid": False, "reply": "success", "error": error, **fields}


async def verify_notify(config, request):
    c = _cfg(config)
    _need_pid(c)
    params = {str(k): str(v) for k, v in (request.get("query") or {}).items()}
    if "sign" not in params and request.get("form"):  # some clones POST the notification
        params = {str(k): str(v) for k, v in request["form"].items()}
    if not params.get("sign"):
        return _refuse("the notification has no sign parameter")
    sign_type = params.get("sign_type") or "MD5"
    if sign_type.upper() != "MD5":
        return _refuse(f"sign_type {sign_type[:20]!r} is not supported (MD5 only)")
    expected = sign(params, c["key"], c["sign_variant"])
    if not hmac.compare_digest(expected.lower(), params["sign"].lower()):
        return _refuse("the signature does not match (tampered notification, or wrong key / sign_variant)")
    if params.get("pid", "") != c["pid"]:
        return _refuse(f"the notification is for merchant {params.get('pid', '')[:32]!r}, not {c['pid']!r}")

    out_trade_no, trade_no = params.get("out_trade_no", ""), params.get("trade_no", "")
    fields: dict[str, Any] = {"order_id": out_trade_no, "trade_no": trade_no}
    money, money_error = Decimal(0), ""
    try:
        money = _yuan(params.get("money", ""), "money")
        fields["amount"] = str(money)
    except sdk.PluginError as exc:
        money_error = exc.message
    status = params.get("trade_status", "")
    if status != "TRADE_SUCCESS":
        # Signed by the gateway but not a payment: acknowledge it (before the checks that only a
        # payment must pass), so that the gateway does not resend it for ever.
        return await _not_a_payment(status, params, fields)
    if money_error:
        return _refuse(money_error, valid=True, **fields)
    if not trade_no or not out_trade_no:
        return _refuse("the notification has no trade_no or out_trade_no", valid=True, **fields)
    order = request.get("order")
    if not order:
        return _refuse("no expected order was given: cannot check the order number and amount", valid=True, **fields)
    if out_trade_no != str(order.get("order_id", "")):
        return _refuse(
            f"the notification is for order {out_trade_no!r}, not the expected {order.get('order_id')!r}",
            valid=True,
            **fields,
        )
    try:
        expected_amount = Decimal(str(order.get("amount", "")))
    except InvalidOperation:
        return _refuse("the expected order has no valid amount", valid=True, **fields)
    if money != expected_amount:
        return _refuse(
            f"amount {money} does not match the order's {expected_amount} {c['currency']}", valid=True, **fields
        )
    currency = str(order.get("currency") or c["currency"]).upper()
    if currency != c["currency"]:
        return _refuse(f"the order is in {currency}, this gateway settles {c['currency']}", valid=True, **fields)
    if c["confirm_with_query"]:
        data = await _api(c, "order", trade_no=trade_no)  # unreachable: raise, the gateway retries later
        if _code(data) != 1:
            return _refuse(f"api.php does not confirm trade {trade_no}: {data.get('msg')!r}", valid=True, **fields)
        got = _order(data)
        if got["status"] != "paid" or got["money"] != str(money) or got["out_trade_no"] != out_trade_no:
            return _refuse(
                f"api.php does not confirm trade {trade_no} (status {got['status']}, money {got['money']}, "
                f"out_trade_no {got['out_trade_no']})",
                valid=True,
                **fields,
            )
    return {"valid": True, "paid": True, "reply": "success", "error": "", **fields}


# ---------------------------------------------------------------- admin


async def admin_merchant_info(config):
    """The merchant account as the gateway reports it (api.php act=query), without the key."""
    return await _merchant(_cfg(config))


async def admin_query_order(config):
    """One order by ``trade_no`` (the gateway's) or ``out_trade_no`` (ours) — api.php act=order."""
    c = _cfg(config)
    trade_no = str(config.get("trade_no") or "").strip()
    out_trade_no = str(config.get("out_trade_no") or "").strip()
    if not (trade_no or out_trade_no):
        raise sdk.InvalidArgument("give trade_no or out_trade_no")
    data = await _api(c, "order", **({"trade_no": trade_no} if trade_no else {"out_trade_no": out_trade_no}))
    if _code(data) != 1:
        raise _refused(c, data, f"order {trade_no or out_trade_no}")
    return _order(data)


async def admin_recent_orders(config):
    """A page of the merchant's orders, newest first (api.php act=orders; ``limit`` 1-50, ``page``)."""
    c = _cfg(config)
    try:
        limit, page = int(config.get("limit", 20)), int(config.get("page", 1))
    except (TypeError, ValueError):
        raise sdk.InvalidArgument("limit and page must be integers") from None
    if not 1 <= limit <= 50:
        raise sdk.InvalidArgument("limit must be between 1 and 50 (the gateway's maximum)")
    if page < 1:
        raise sdk.InvalidArgument("page must be 1 or more")
    data = await _api(c, "orders", limit=limit, page=page)
    if _code(data) != 1:
        raise _refused(c, data, "order list")
    rows = data.get("data") or []
    if not isinstance(rows, list):
        raise sdk.FailedPrecondition("api.php act=orders answered 'data' that is not a list")
    return {"page": page, "limit": limit, "orders": [_order(r) for r in rows if isinstance(r, dict)]}


# The admin console shows the page in a sandboxed iframe; sdk.admin_bridge_script() lets it run
# this interface's admin_* actions (docs/plugins.md, "Admin pages and the console bridge").
_PAGE_SCRIPT = """<script>
rustbill.bind("lookup", "admin_query_order", function (f) {
  var args = {};
  args[f.elements.namedItem("field").value] = f.elements.namedItem("value").value.trim();
  return args;
}, "lookup-out");
rustbill.bind("recent", "admin_recent_orders", {limit: 20}, "recent-out");
</script>"""


async def admin_page(config):
    c = _cfg(config)
    e = html.escape
    rows = [
        ("Gateway", c["base"]),
        ("Merchant ID (pid)", c["pid"] or "(not set)"),
        ("Mode", c["mode"]),
        ("Signature", f"MD5 ({c['sign_variant']})"),
        ("Channels", ", ".join(c["channels"])),
    ]
    try:
        info = await _merchant(c)
    except sdk.PluginError as exc:
        status = f'<p class="error">Cannot read the merchant account: {e(exc.message)}</p>'
    else:
        state = {"1": "active", "0": "disabled"}.get(info["active"], info["active"] or "unknown")
        rows += [
            ("Account status", state),
            ("Balance", f"{info['balance']} {info['currency']}"),
            ("Merchant name", info["name"]),
            ("Settlement account", info["settle_account"]),
            (
                "Paid orders (total / today / yesterday)",
                f"{info['orders']} / {info['orders_today']} / {info['orders_yesterday']}",
            ),
        ]
        status = ""
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    not_paid = sorted(
        (v for v in (await sdk.state().aitems(_NOT_PAID_PREFIX)).values() if isinstance(v, dict)),
        key=lambda v: str(v.get("received_at", "")),
        reverse=True,
    )[:_NOT_PAID_SHOWN]
    if not_paid:
        cols = ("received_at", "out_trade_no", "trade_no", "trade_status", "money", "type")
        head = "".join(f"<th>{c}</th>" for c in cols)
        body_rows = "".join(
            "<tr>" + "".join(f"<td>{e(str(v.get(col, '')))}</td>" for col in cols) + "</tr>" for v in not_paid
        )
        not_paid_html = (
            "<h2>Notifications that were not payments</h2><p>Correctly signed, another trade_status than "
            f"TRADE_SUCCESS: acknowledged, nothing paid (latest {_NOT_PAID_SHOWN}, one per trade).</p>"
            f"<table><tr>{head}</tr>{body_rows}</table>"
        )
    else:
        not_paid_html = ""
    parts = [
        f"{status}<table>{table}</table>{not_paid_html}",
        '<h2>Look up an order</h2><form id="lookup"><select name="field"><option value="out_trade_no">Our order '
        'number (out_trade_no)</option><option value="trade_no">Gateway trade number (trade_no)</option></select> '
        '<input name="value" required size="40"> <button type="submit">Query</button></form>'
        '<pre id="lookup-out"></pre>',
        '<h2>Recent orders</h2><button id="recent" type="button">Load the last 20</button><pre id="recent-out"></pre>',
    ]
    body = sdk.admin_html("易支付 / EPay", "易支付 / EPay merchant", parts, sdk.admin_bridge_script() + _PAGE_SCRIPT)
    return {"title": "易支付 / EPay", "html": body}
