"""The plugin contract, stated once: which functions each plugin type may define, with what
parameters, and what each must return. Plugins are checked against it when they are loaded
(signatures) and every result is checked when a function returns (shapes).

A plugin file declares ``PLUGIN_TYPE`` and defines plain module-level functions, ``def`` or
``async def``. See docs/plugins.md for the guide with examples.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypedDict

from jsonschema.exceptions import SchemaError, best_match
from jsonschema.validators import validator_for

from ..money import to_money_text

__all__ = [
    "CHECKERS",
    "COMMON_FUNCTIONS",
    "FUNCTIONS_BY_TYPE",
    "PLUGIN_TYPES",
    "PROVIDER_TYPES",
    "Price",
    "ProviderInstance",
    "ShapeError",
    "UpstreamBalance",
    "check_admin_page",
    "check_balance",
    "check_config_schema",
    "check_found_instance",
    "check_health_result",
    "check_instance",
    "check_instance_list",
    "check_json_result",
    "check_notify_result",
    "check_payment",
    "check_price",
    "check_products",
    "check_send_result",
    "check_spec_template",
    "check_version",
    "metadata_error",
    "metadata_problems",
    "money",
    "sample_config",
    "sample_message",
    "sample_notify_request",
    "sample_order",
    "sample_spec",
]

PLUGIN_TYPES = ("first_party_provider", "upstream_provider", "gateway", "notifier")
PROVIDER_TYPES = ("first_party_provider", "upstream_provider")

# name -> parameter names (after which the function is called positionally).
COMMON_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "version": (),
    "config_schema": (),
    "health_check": ("config",),
    "admin_page": ("config",),
}
PROVIDER_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "spec_template": ("config",),
    "sync_products": ("config",),
    "query_price": ("config", "spec"),
    "create_instance": ("config", "spec"),
    # Optional: the instance an order (its create_instance request_id) opened, or None if none.
    "find_instance": ("config", "request_id"),
    "get_instance_status": ("config", "instance_id"),
    "sync_upstream_instances": ("config",),
    "get_upstream_balance": ("config",),
}
FUNCTIONS_BY_TYPE: dict[str, dict[str, tuple[str, ...]]] = {
    "first_party_provider": {**COMMON_FUNCTIONS, **PROVIDER_FUNCTIONS},
    "upstream_provider": {**COMMON_FUNCTIONS, **PROVIDER_FUNCTIONS},
    "gateway": {**COMMON_FUNCTIONS, "create_payment": ("config", "order"), "verify_notify": ("config", "request")},
    "notifier": {**COMMON_FUNCTIONS, "send": ("config", "message")},
}
# admin_* actions take the config (with the action's arguments merged in).
ACTION_PARAMS: tuple[str, ...] = ("config",)


class ShapeError(Exception):
    """A plugin returned something of the wrong shape; the message says what was expected."""


def money(value: Any, what: str) -> str:
    """A money amount as a canonical decimal string. Floats are refused: they lose cents."""
    try:
        return to_money_text(value, what)
    except ValueError as exc:
        raise ShapeError(str(exc)) from None


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ShapeError(f"{what} must be a dict, not {type(value).__name__}")
    return value


def _text(m: Mapping[str, Any], key: str, what: str, *, required: bool = False, default: str = "") -> str:
    v = m.get(key)
    if v is None:
        if required:
            raise ShapeError(f"{what} has no {key!r}")
        return default
    if isinstance(v, (dict, list, tuple, set, bytes, float)):
        raise ShapeError(f"{what}[{key!r}] must be a string, not {type(v).__name__}")
    return str(v)


def _str_map(v: Any, what: str) -> dict[str, str]:
    if v is None:
        return {}
    m = _mapping(v, what)
    out: dict[str, str] = {}
    for k, item in m.items():
        if isinstance(item, (dict, list, float)):
            raise ShapeError(f"{what}[{k!r}] must be a string, not {type(item).__name__}")
        out[str(k)] = str(item)
    return out


def check_health_result(result: Any) -> str | None:
    """None when healthy, else the error. Healthy: None or True. Unhealthy: False, a message, or a
    dict ``{"healthy": False, "error": "..."}``."""
    if result is None or result is True:
        return None
    if result is False:
        return "health_check returned false"
    if isinstance(result, str):
        return result or "health_check returned an empty error"
    if isinstance(result, Mapping) and isinstance(result.get("healthy"), bool):
        return None if result["healthy"] else str(result.get("error") or "unhealthy")
    raise ShapeError(f"health_check must return None, a bool, a message or a dict, not {type(result).__name__}")


def check_admin_page(result: Any, default_title: str) -> tuple[str, str]:
    """``(html, title)`` from a string of HTML or ``{"html": ..., "title": ...}``."""
    if isinstance(result, str):
        return result, default_title
    m = _mapping(result, "admin_page result")
    html = m.get("html", m.get("html_content"))
    if not isinstance(html, str):
        raise ShapeError("admin_page must return HTML as a string or a dict with an 'html' string")
    return html, _text(m, "title", "admin_page result", default=default_title)


_INT64 = (-(2**63), 2**63 - 1)


def _order(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**32:
        raise ShapeError(f"{what}: 'display_order' must be an integer from 0 to 4294967295")
    return v


def _limit(text: str, n: int, what: str) -> str:
    if len(text) > n:
        raise ShapeError(f"{what} is longer than {n} characters")
    return text


# The field types RustBill's order form draws; anything else it shows as a plain text input.
FIELD_TYPES = ("Integer", "String", "Select", "Region", "OsOptions", "Boolean")
# Lowercase names of earlier versions of this contract, still accepted and normalised.
_OLD_FIELD_TYPES = {"number": "Integer", "text": "String", "boolean": "Boolean", "select": "Select"}
_SELECT_BY_KEY = {"region": "Region", "os": "OsOptions"}


def _field_type(f: Mapping[str, Any], key: str, what: str) -> str:
    """One of FIELD_TYPES; absent or empty is ``String``. The old lowercase names are translated
    (``select`` on the ``region``/``os`` key becomes ``Region``/``OsOptions``)."""
    name = _text(f, "field_type", what)
    if name in FIELD_TYPES:
        return name
    if not name:
        return "String"
    if name in _OLD_FIELD_TYPES:
        new = _OLD_FIELD_TYPES[name]
        return _SELECT_BY_KEY.get(key, new) if new == "Select" else new
    raise ShapeError(
        f"{what} ({key!r}): field_type {name!r} is not one of {', '.join(FIELD_TYPES)}"
        f" (or the older {', '.join(_OLD_FIELD_TYPES)})"
    )


def check_spec_template(result: Any) -> dict[str, Any]:
    """``{"fields": [...], "groups": [...]}`` normalised to the SpecField/SpecGroup keys, with
    ``field_type`` one of FIELD_TYPES."""
    if result is None:
        return {"fields": [], "groups": []}
    m = _mapping(result, "spec_template result")
    fields_in = m.get("fields", [])
    groups_in = m.get("groups", [])
    if not isinstance(fields_in, list) or not isinstance(groups_in, list):
        raise ShapeError("spec_template: 'fields' and 'groups' must be lists")
    fields = []
    for i, f in enumerate(fields_in):
        what = f"spec_template field {i}"
        f = _mapping(f, what)
        options = f.get("options", [])
        if not isinstance(options, list):
            raise ShapeError(f"{what}: 'options' must be a list")
        lo, hi = f.get("min", 0), f.get("max", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1] for v in (lo, hi)):
            raise ShapeError(f"{what}: 'min' and 'max' must be 64-bit integers")
        order = _order(f.get("display_order", i), what)
        key = _text(f, "key", what, required=True)
        fields.append(
            {
                "key": key,
                "label": _text(f, "label", what),
                "field_type": _field_type(f, key, what),
                "required": bool(f.get("required", False)),
                "display_order": order,
                "options": [str(o) for o in options],
                "min": lo,
                "max": hi,
                "default_value": _text(f, "default_value", what),
            }
        )
    groups = []
    for i, g in enumerate(groups_in):
        what = f"spec_template group {i}"
        g = _mapping(g, what)
        keys = g.get("field_keys", [])
        if not isinstance(keys, list):
            raise ShapeError(f"{what}: 'field_keys' must be a list")
        groups.append(
            {
                "key": _text(g, "key", what, required=True),
                "label": _text(g, "label", what),
                "field_keys": [str(k) for k in keys],
                "display_order": _order(g.get("display_order", i), what),
            }
        )
    return {"fields": fields, "groups": groups}


class Price(TypedDict):
    """What ``query_price`` answers, checked: the amount as a canonical decimal string."""

    amount: str
    currency: str
    billing_cycle: str


class UpstreamBalance(TypedDict):
    """What ``get_upstream_balance`` answers, checked."""

    balance: str
    currency: str


class ProviderInstance(TypedDict):
    """An instance as a provider reports it (create, find, status, sync), checked; ``instance_id``
    is "" only in a status answer, which is about an instance already named."""

    instance_id: str
    status: str
    ip_address: str
    created_at: str


def check_price(result: Any) -> Price:
    m = _mapping(result, "query_price result")
    if "amount" not in m:
        raise ShapeError("query_price result has no 'amount'")
    return {
        "amount": money(m["amount"], "query_price amount"),
        "currency": _text(m, "currency", "query_price result"),
        "billing_cycle": _text(m, "billing_cycle", "query_price result"),
    }


def check_balance(result: Any) -> UpstreamBalance:
    m = _mapping(result, "get_upstream_balance result")
    if "balance" not in m:
        raise ShapeError("get_upstream_balance result has no 'balance'")
    return {
        "balance": money(m["balance"], "get_upstream_balance balance"),
        "currency": _text(m, "currency", "get_upstream_balance result"),
    }


def check_instance(result: Any, what: str, *, need_id: bool) -> ProviderInstance:
    m = _mapping(result, f"{what} result")
    instance_id = m.get("instance_id", m.get("provider_instance_id"))
    if need_id and (instance_id is None or str(instance_id) == ""):
        raise ShapeError(f"{what} result has no 'instance_id'")
    return {
        "instance_id": _limit("" if instance_id is None else str(instance_id), 200, f"{what} instance_id"),
        "status": _limit(_text(m, "status", f"{what} result"), 64, f"{what} status"),
        "ip_address": _limit(_text(m, "ip_address", f"{what} result"), 64, f"{what} ip_address"),
        "created_at": _text(m, "created_at", f"{what} result"),
    }


def check_found_instance(result: Any) -> ProviderInstance | None:
    """``find_instance``: None (the provider has no instance for that request_id and will not
    open one), or the instance as ``create_instance`` returns it (a non-empty ``instance_id``)."""
    if result is None:
        return None
    return check_instance(result, "find_instance", need_id=True)


def check_instance_list(result: Any) -> list[ProviderInstance]:
    if not isinstance(result, list):
        raise ShapeError(f"sync_upstream_instances must return a list, not {type(result).__name__}")
    return [check_instance(r, f"sync_upstream_instances item {i}", need_id=True) for i, r in enumerate(result)]


def check_products(result: Any) -> list[dict[str, Any]]:
    """Each product: ``id`` (the provider's id), ``name``, ``price``; optional ``description``,
    ``currency``, ``group_id``, ``specs`` and ``billing_cycles`` (cycle -> amount)."""
    if not isinstance(result, list):
        raise ShapeError(f"sync_products must return a list, not {type(result).__name__}")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, p in enumerate(result):
        what = f"sync_products item {i}"
        m = _mapping(p, what)
        pid = _text(m, "id", what, required=True)
        if not pid:
            raise ShapeError(f"{what} has an empty 'id'")
        if pid in seen:
            raise ShapeError(f"sync_products returned product id {pid!r} twice")
        seen.add(pid)
        if "price" not in m:
            raise ShapeError(f"{what} has no 'price'")
        cycles = _mapping(m.get("billing_cycles") or {}, f"{what} billing_cycles")
        price = Decimal(money(m["price"], f"{what} price"))  # finite: money() refuses the rest
        exponent = price.as_tuple().exponent
        if (isinstance(exponent, int) and exponent < -8) or abs(price) >= Decimal(10) ** 12:
            raise ShapeError(f"{what} price {price} does not fit 12 digits and 8 decimals")
        out.append(
            {
                "upstream_product_id": _limit(pid, 200, f"{what} id"),
                "name": _limit(_text(m, "name", what, required=True), 500, f"{what} name"),
                "description": _text(m, "description", what),
                "price": price,
                "currency": _limit(_text(m, "currency", what), 8, f"{what} currency"),
                "group_id": _limit(_text(m, "group_id", what), 200, f"{what} group_id"),
                "specs": _str_map(m.get("specs"), f"{what} specs"),
                "billing_cycles": {str(k): money(v, f"{what} billing_cycles[{k!r}]") for k, v in cycles.items()},
            }
        )
    return out


def check_json_result(result: Any, function: str) -> str:
    """A JSON encoding of an action's result; Decimals become strings, floats must be finite."""

    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            return format(o, "f")
        if isinstance(o, (set, tuple)):
            return list(o)
        raise TypeError(type(o).__name__)

    try:
        return json.dumps(result, default=default, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{function} returned a value that is not JSON-serialisable ({exc})") from None


# ---- gateways and notifiers ----
#
# create_payment(config, order): order = {"order_id", "amount" (decimal string), "currency",
#   "subject", "channel" (e.g. "alipay"), "notify_url", "return_url", "client_ip"}
# verify_notify(config, request): request = {"method", "query": {..}, "form": {..}, "headers": {..},
#   "body": str, "order": {"order_id", "amount", "currency"} or None (the order the host expects)}
# send(config, message): message = {"id" (idempotency key), "event", "subject", "text", "html",
#   "to": [..], "data": {..}}


def check_payment(result: Any) -> dict[str, Any]:
    """``create_payment``: at least one of ``pay_url``, ``qrcode``, ``instructions``; optional
    ``trade_no`` (the gateway's id) and ``extra`` (a dict of strings for the UI)."""
    m = _mapping(result, "create_payment result")
    out = {
        "pay_url": _text(m, "pay_url", "create_payment result"),
        "qrcode": _text(m, "qrcode", "create_payment result"),
        "instructions": _text(m, "instructions", "create_payment result"),
        "trade_no": _text(m, "trade_no", "create_payment result"),
        "extra": _str_map(m.get("extra"), "create_payment extra"),
    }
    if not (out["pay_url"] or out["qrcode"] or out["instructions"]):
        raise ShapeError("create_payment must return a 'pay_url', a 'qrcode' or 'instructions'")
    return out


def check_notify_result(result: Any) -> dict[str, Any]:
    """``verify_notify``: ``valid`` (signature and merchant check out), ``paid`` (valid and the
    trade succeeded for the expected amount), ``order_id``, ``trade_no``, ``amount`` (decimal
    string), ``reply`` (the body to answer the gateway with, e.g. "success"), ``error`` (why not)."""
    m = _mapping(result, "verify_notify result")
    valid, paid = m.get("valid"), m.get("paid")
    if not isinstance(valid, bool) or not isinstance(paid, bool):
        raise ShapeError("verify_notify result needs booleans 'valid' and 'paid'")
    if paid and not valid:
        raise ShapeError("verify_notify result cannot be paid without being valid")
    amount = m.get("amount")
    return {
        "valid": valid,
        "paid": paid,
        "order_id": _text(m, "order_id", "verify_notify result"),
        "trade_no": _text(m, "trade_no", "verify_notify result"),
        "amount": money(amount, "verify_notify amount") if amount not in (None, "") else "",
        "reply": _text(m, "reply", "verify_notify result"),
        "error": _text(m, "error", "verify_notify result"),
    }


def check_send_result(result: Any) -> dict[str, Any]:
    """``send``: None (delivered) or ``{"delivered": bool, "id": str, "error": str}``."""
    if result is None:
        return {"delivered": True, "id": "", "error": ""}
    m = _mapping(result, "send result")
    delivered = m.get("delivered", True)
    if not isinstance(delivered, bool):
        raise ShapeError("send result 'delivered' must be a boolean")
    return {"delivered": delivered, "id": _text(m, "id", "send result"), "error": _text(m, "error", "send result")}


# ---- version() and config_schema(): the loader's rules, as result checkers ----

_SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]*)?$")


def check_version(result: Any) -> str:
    if not isinstance(result, str) or not _SEMVER_RE.match(result):
        raise ShapeError(f"version() must return a semver string like '1.2.3', got {result!r}")
    return result


def check_config_schema(result: Any) -> dict[str, Any]:
    """A JSON-serialisable dict that is a valid JSON Schema."""
    if not isinstance(result, dict):
        raise ShapeError(f"config_schema() must return a dict, not {type(result).__name__}")
    try:
        validator_for(result).check_schema(result)
        json.dumps(result)
    except SchemaError as exc:
        raise ShapeError(f"config_schema() is not a valid JSON Schema: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"config_schema() is not JSON-serialisable: {exc}") from None
    return result


# function -> the checker the host applies to its raw result (rustbill.domain does the same).
CHECKERS: dict[str, Callable[[Any], Any]] = {
    "version": check_version,
    "config_schema": check_config_schema,
    "health_check": check_health_result,
    "admin_page": lambda r: check_admin_page(r, "admin page"),
    "spec_template": check_spec_template,
    "sync_products": check_products,
    "query_price": check_price,
    "create_instance": lambda r: check_instance(r, "create_instance", need_id=True),
    "find_instance": check_found_instance,
    "get_instance_status": lambda r: None if r is None else check_instance(r, "get_instance_status", need_id=False),
    "sync_upstream_instances": check_instance_list,
    "get_upstream_balance": check_balance,
    "create_payment": check_payment,
    "verify_notify": check_notify_result,
    "send": check_send_result,
}


# ---- metadata the host refuses to enable an interface for ----
#
# The loader refuses a file outright (it does not load) for a missing or unknown PLUGIN_TYPE, a bad
# version(), a config_schema() that is not a JSON Schema and contract functions with the wrong
# parameters. A schema that is a valid JSON Schema can still be unusable as an interface's config:
# those plugins load (so that ListPlugins shows them and why), but no interface of them is enabled.


def metadata_problems(config_schema: Mapping[str, Any]) -> list[str]:
    """Why a loaded plugin's config schema cannot configure an interface; empty when it can."""
    problems: list[str] = []
    kind = config_schema.get("type", "object")
    if kind != "object":
        problems.append(f'config_schema() must describe a JSON object ("type": "object"), not {kind!r}')
        return problems
    props = config_schema.get("properties") or {}
    required = config_schema.get("required") or []
    undeclared = [k for k in required if isinstance(props, Mapping) and props and k not in props]
    if undeclared:
        problems.append(f"config_schema() requires {', '.join(map(repr, undeclared))}, not in its properties")
    for key, prop in props.items() if isinstance(props, Mapping) else ():
        if not isinstance(prop, Mapping):
            continue
        examples = prop.get("examples")
        candidates = [("default", prop["default"])] if "default" in prop else []
        candidates += [("example", v) for v in examples] if isinstance(examples, list) else []
        for word, value in candidates:
            error = best_match(validator_for(prop)(prop).iter_errors(value))
            if error is not None:
                problems.append(f"config_schema() property {key!r}: {word} {value!r} is not valid: {error.message}")
                break
    return problems


def metadata_error(where: str, config_schema: Mapping[str, Any]) -> str:
    """``metadata_problems`` as one message naming the file (``where``), or "" when there are none:
    what ``plugin check`` reports and the server shows in ListPlugins and its log."""
    problems = metadata_problems(config_schema)
    return f"{where}: {'; '.join(problems)}" if problems else ""


# ---- sample arguments, as the host passes them (plugin check, rustbill.sdk.testing) ----

SAMPLE_SPEC: dict[str, Any] = {
    "cpu_cores": 2,
    "memory_gb": 4,
    "disk_gb": 20,
    "bandwidth_mbps": 100,
    "region": "",
    "os": "",
    "extra_specs": {},
}


def sample_spec(request_id: str | None = None) -> dict[str, Any]:
    """A ServerSpec as query_price gets it, or with ``request_id`` as create_instance gets it."""
    spec = dict(SAMPLE_SPEC, extra_specs={})
    if request_id is not None:
        spec["request_id"] = request_id
    return spec


def sample_order(**changes: Any) -> dict[str, str]:
    order = {
        "order_id": f"RB{uuid.uuid4().hex[:20]}",
        "amount": "12.50",
        "currency": "CNY",
        "subject": "VPS 2C4G monthly",
        "channel": "alipay",
        "notify_url": "http://127.0.0.1:9/notify",
        "return_url": "https://shop.example.com/orders/return",
        "client_ip": "203.0.113.7",
    }
    return {**order, **changes}


def sample_notify_request(order: Mapping[str, str] | None, query: Mapping[str, str] | None = None) -> dict[str, Any]:
    expected = None if order is None else {k: order[k] for k in ("order_id", "amount", "currency")}
    return {"method": "GET", "query": dict(query or {}), "form": {}, "headers": {}, "body": "", "order": expected}


def sample_message(**changes: Any) -> dict[str, Any]:
    message = {
        "id": f"msg_{uuid.uuid4().hex}",
        "event": "invoice.paid",
        "subject": "Invoice 2024-0042 paid",
        "text": "Thank you, 12.50 CNY received.",
        "html": "<p>Thank you, <b>12.50 CNY</b> received.</p>",
        "to": ["alice@example.net"],
        "data": {"invoice": "2024-0042", "amount": Decimal("12.50")},
    }
    return {**message, **changes}


_BY_TYPE: dict[str, Any] = {"string": "example", "integer": 1, "number": 1, "boolean": False, "array": [], "object": {}}


def sample_config(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A config for ``schema``: every property's first ``examples`` value; for the other required
    properties their ``default``, else their first ``enum`` value, else a value of their type.
    Other optional properties are left out (the plugin's own defaults apply)."""
    props = schema.get("properties") or {}
    config: dict[str, Any] = {
        k: p["examples"][0] for k, p in props.items() if isinstance(p, Mapping) and p.get("examples")
    }
    for key in schema.get("required") or []:
        prop = props.get(key) or {}
        if key in config:
            continue
        if "default" in prop:
            config[key] = prop["default"]
        elif prop.get("enum"):
            config[key] = prop["enum"][0]
        elif prop.get("type") == "object" or "properties" in prop:
            config[key] = sample_config(prop)
        else:
            kind = prop.get("type", "string")
            value = _BY_TYPE.get(kind[0] if isinstance(kind, list) else kind, "example")
            if kind in ("integer", "number") and "minimum" in prop:
                value = prop["minimum"]
            config[key] = value
    return config
