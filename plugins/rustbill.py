"""rustbill — resell the servers of another RustBill (上游分销).

The upstream is another RustBill server on which this one has a customer account with a prepaid
balance. Every provider function is one or a few calls of the upstream's public API, made with
that customer's API key (``rbk_…``): the upstream prices, debits its ledger and opens the instance;
this plugin adds the markup and keeps the downstream's records in step. Steps for both sides:
docs/reselling.md.

Protocol: Connect with JSON bodies (``POST <upstream_url>/<package>.<Service>/<Method>``) to the
upstream's HTTP listener, over the host's shared ``sdk.http()`` client. Chosen over native gRPC
because a plugin is one file: no generated stubs to keep in step with the upstream's version
(unknown fields are simply not read), the host's HTTP client brings timeouts, pooling and the
mapping of connection errors, and every request can be replayed with curl. JSON amounts are
strings and are parsed as ``Decimal``, never float.

Money: a price is ``upstream price × (1 + markup_percent / 100)``, rounded **up** to
``price_decimals`` places (ROUND_UP), so the resale price is never below the upstream price plus
the markup. The balance is the upstream's, unchanged.

Orders: ``create_instance`` sends the host's ``request_id`` as the upstream's ``idempotency-key``,
so a retried order returns the instance of the first attempt and the upstream debits it once.
When an order ends without a clear answer, the upstream's own record under that key decides
(``find_instance``): an opened instance is returned, a missing one means the order failed, an order
still being opened upstream is reported as an unknown outcome (DEADLINE_EXCEEDED), which keeps the
host's reservation for a retry with the same ``request_id``.

Instance ids on this side are the upstream's instance ids (UUIDs of its InstanceService).
"""

from __future__ import annotations

import hashlib
import html
import json
import ssl
from decimal import ROUND_UP, Decimal

import httpx

from rustbill import sdk

PLUGIN_TYPE = "upstream_provider"

IDENTITY = "rustbill.identity.IdentityService"
INTEGRATION = "rustbill.integration.IntegrationService"
PRODUCTS = "rustbill.product.ProductService"
INSTANCES = "rustbill.instance.InstanceService"
BALANCE = "rustbill.balance.BalanceService"

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# An order waits for the upstream to open the instance; the host's own timeout for create_instance
# ([plugins] timeouts) is what limits it.
ORDER_TIMEOUT = httpx.Timeout(900.0, connect=5.0)
PAGE_SIZE = 200

# Connect error codes of the upstream -> the status this plugin answers with. A refused credential
# is the downstream operator's problem, not the caller's: never UNAUTHENTICATED/PERMISSION_DENIED.
_CODES = {
    "invalid_argument": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "already_exists": "ALREADY_EXISTS",
    "failed_precondition": "FAILED_PRECONDITION",
    "out_of_range": "INVALID_ARGUMENT",
    "resource_exhausted": "RESOURCE_EXHAUSTED",
    "unimplemented": "UNIMPLEMENTED",
    "deadline_exceeded": "DEADLINE_EXCEEDED",
    "unavailable": "UNAVAILABLE",
    "aborted": "ABORTED",
    "unauthenticated": "FAILED_PRECONDITION",
    "permission_denied": "FAILED_PRECONDITION",
    "canceled": "DEADLINE_EXCEEDED",
}


def version():
    return "1.0.0"


def config_schema():
    return {
        "type": "object",
        "required": ["upstream_url", "api_key", "interface_id"],
        "additionalProperties": False,
        "properties": {
            "upstream_url": {
                "type": "string", "pattern": r"^https?://[^\s/]+(/[^\s]*)?$", "title": "Upstream URL",
                "examples": ["https://billing.example.com"],
                "description": "The upstream RustBill's HTTP listener (its http.public_url), e.g. "
                               "https://billing.example.com. http:// only on a private network.",
            },
            "api_key": {
                "type": "string", "format": "password", "pattern": r"^rbk_\S+$", "title": "API key",
                "examples": ["rbk_example"],
                "description": "An API key of your customer account on the upstream (rbk_…): made there with "
                               "`rustbill apikey create --user NAME` or ApiKeyService/CreateApiKey.",
            },
            "interface_id": {
                "type": "string", "title": "Upstream provider interface",
                "pattern": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
                "examples": ["0193e4c2-7a51-7c3e-9a1b-2f0d6c8e4b17"],
                "description": "Id of the upstream's provider interface to resell (the upstream's operator "
                               "tells you; its products list it as provider_id).",
            },
            "markup_percent": {
                "type": "string", "pattern": r"^\d{1,4}(\.\d{1,4})?$", "default": "0", "title": "Markup (%)",
                "description": "Added to every upstream price, e.g. 20 for 20 %.",
            },
            "price_decimals": {
                "type": "integer", "minimum": 0, "maximum": 8, "default": 2, "title": "Price decimals",
                "description": "Resale prices are rounded up to this many decimal places (2: cents).",
            },
            "low_balance": {
                "type": "string", "pattern": r"^(\d{1,12}(\.\d{1,8})?)?$", "default": "", "title": "Low balance alert",
                "description": "The drift watch ([drift] interval_seconds) reports, once, when the balance on the "
                               "upstream falls below this amount. Empty: no alert.",
            },
            "ca_cert": {
                "type": "string", "default": "", "title": "Upstream CA certificate (PEM)",
                "description": "Only for an upstream whose certificate is not signed by a public CA: the PEM "
                               "of the CA to trust (instead of the system's).",
            },
        },
    }  # fmt: skip


# ---------------------------------------------------------------- talking to the upstream


class UpstreamError(sdk.PluginError):
    """The upstream answered with an error (``answered``), or something in between answered
    instead (a proxy's 502 page: ``answered`` is False)."""

    def __init__(self, message, code, *, connect_code="", answered=True):
        super().__init__(message, code)
        self.connect_code = connect_code
        self.answered = answered


_clients = {}  # CA PEM hash -> client trusting only that CA (rebuilt after a reload)


def _client(config):
    pem = (config.get("ca_cert") or "").strip()
    if not pem:
        return sdk.http()
    key = hashlib.sha256(pem.encode()).hexdigest()
    if key not in _clients:
        try:
            ctx = ssl.create_default_context(cadata=pem)
        except (ssl.SSLError, ValueError) as exc:
            raise sdk.FailedPrecondition(f"ca_cert is not a usable PEM certificate: {exc}") from None
        _clients[key] = httpx.AsyncClient(verify=ctx, timeout=TIMEOUT, follow_redirects=False)
    return _clients[key]


def _where(config):
    return config["upstream_url"].rstrip("/")


async def _call(config, service, method, body, *, headers=None, patience=TIMEOUT):
    """One RPC of the upstream; its reply as a dict (amounts as Decimal-safe strings)."""
    url = f"{_where(config)}/{service}/{method}"
    resp = await _client(config).post(
        url,
        content=json.dumps(body),
        timeout=patience,
        headers={
            "content-type": "application/json",
            "connect-protocol-version": "1",
            "authorization": f"Bearer {config['api_key']}",
            **(headers or {}),
        },
    )
    if resp.status_code == 200:
        return json.loads(resp.text or "{}", parse_float=Decimal)
    try:
        err = json.loads(resp.text)
        code, message = str(err["code"]), str(err.get("message", ""))
    except (ValueError, KeyError, TypeError):
        raise UpstreamError(
            f"upstream {_where(config)} answered {method} with HTTP {resp.status_code}, not a RustBill reply "
            "(is upstream_url the upstream's HTTP listener?)",
            "UNAVAILABLE",
            answered=False,
        ) from None
    if code == "unauthenticated":
        message = f"the upstream refused the API key: {message}"
    elif code == "permission_denied":
        message = f"the upstream does not allow this account {method}: {message}"
    raise UpstreamError(f"upstream {_where(config)}: {message}", _CODES.get(code, "INTERNAL"), connect_code=code)


async def _pages(config, service, method, body, items):
    """Every item of a paged listing (``items``: the repeated field's JSON name)."""
    out, page = [], 1
    while True:
        reply = await _call(config, service, method, {**body, "pagination": {"page": page, "page_size": PAGE_SIZE}})
        out.extend(reply.get(items, []))
        if page >= int(reply.get("meta", {}).get("totalPages", 0)):
            return out
        page += 1


def _spec(spec):
    return {
        "cpu_cores": spec["cpu_cores"], "memory_gb": spec["memory_gb"], "disk_gb": spec["disk_gb"],
        "bandwidth_mbps": spec["bandwidth_mbps"], "region": spec["region"], "os": spec["os"],
        "extra_specs": spec.get("extra_specs", {}),
    }  # fmt: skip


def _resale(config, amount):
    """Upstream price × (1 + markup %), rounded up to ``price_decimals`` places."""
    markup = sdk.decimal(config.get("markup_percent", "0"))
    places = Decimal(1).scaleb(-int(config.get("price_decimals", 2)))
    return (sdk.decimal(amount) * (100 + markup) / 100).quantize(places, rounding=ROUND_UP)


def _instance(item):
    return {
        "instance_id": item["id"],
        "status": item.get("status", ""),
        "ip_address": item.get("ipAddress", ""),
        "created_at": item.get("createdAt", ""),
    }


# ---------------------------------------------------------------- the provider contract


async def health_check(config):
    """Healthy when the upstream accepts the API key; otherwise the reason."""
    try:
        me = await _call(config, IDENTITY, "GetMe", {})
        await _call(config, BALANCE, "GetBalance", {})
    except sdk.PluginError as exc:
        return exc.message
    except httpx.HTTPError as exc:
        return f"cannot reach upstream {_where(config)}: {type(exc).__name__}: {exc}"
    if not me.get("user", {}).get("isActive", False):
        return f"the upstream account {me.get('user', {}).get('username', '?')!r} is disabled"
    return None


async def spec_template(config):
    """The upstream interface's order form, when the upstream lets customers list providers
    ([auth] permissions there: "IntegrationService/ListProviders" = "authenticated"); otherwise
    none, and the upstream checks each spec itself."""
    try:
        reply = await _call(config, INTEGRATION, "ListProviders", {})
    except UpstreamError as exc:
        if exc.connect_code == "permission_denied":
            return None
        raise
    for p in reply.get("providers", []):
        if p.get("interfaceId") == config["interface_id"]:
            t = p.get("specTemplate", {})
            fields = [
                {"key": f["key"], "label": f.get("label", ""), "field_type": f.get("fieldType", "String"),
                 "required": f.get("required", False), "display_order": f.get("displayOrder", i),
                 "options": f.get("options", []), "min": int(f.get("min", 0)), "max": int(f.get("max", 0)),
                 "default_value": f.get("defaultValue", "")}
                for i, f in enumerate(t.get("fields", []))
            ]  # fmt: skip
            groups = [
                {"key": g["key"], "label": g.get("label", ""), "field_keys": g.get("fieldKeys", []),
                 "display_order": g.get("displayOrder", i)}
                for i, g in enumerate(t.get("groups", []))
            ]  # fmt: skip
            return {"fields": fields, "groups": groups}
    raise sdk.FailedPrecondition(f"the upstream has no enabled provider interface {config['interface_id']}")


async def query_price(config, spec):
    quote = await _call(config, INTEGRATION, "QueryPrice", {"interface_id": config["interface_id"], **_spec(spec)})
    return {
        "amount": _resale(config, quote["amount"]),
        "currency": quote.get("currency", ""),
        "billing_cycle": quote.get("billingCycle", ""),
    }


async def sync_products(config):
    offered = await _pages(config, PRODUCTS, "ListProducts", {"provider_id": config["interface_id"]}, "products")
    return [
        {
            "id": p["id"],
            "name": p["name"],
            "description": p.get("description", ""),
            "price": _resale(config, p["price"]),
            "currency": p.get("currency", ""),
            "group_id": p.get("groupId", ""),
            "specs": p.get("specs", {}),
            "billing_cycles": {k: _resale(config, v) for k, v in p.get("billingCycles", {}).items()},
        }
        for p in offered
    ]


async def create_instance(config, spec):
    request_id = spec["request_id"]
    try:
        r = await _call(
            config,
            INTEGRATION,
            "CreateUpstreamInstance",
            {"interface_id": config["interface_id"], "server_spec": _spec(spec)},
            headers={"idempotency-key": request_id},
            patience=ORDER_TIMEOUT,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise  # nothing reached the upstream: the host reports UNAVAILABLE and forgets the order
    except httpx.HTTPError as exc:  # sent, no answer: the upstream may have opened it
        raise sdk.DeadlineExceeded(
            f"no answer from upstream {_where(config)} to order {request_id} ({type(exc).__name__}); outcome "
            "unknown: retry with the same idempotency-key"
        ) from None
    except UpstreamError as exc:
        if not exc.answered:
            raise sdk.DeadlineExceeded(f"outcome unknown: {exc.message}") from None
        # The upstream answered with an error; its own record under our key says what became of it.
        try:
            found = await find_instance(config, request_id)
        except (sdk.PluginError, httpx.HTTPError):
            raise sdk.DeadlineExceeded(
                f"{exc.message}; and whether upstream order {request_id} exists cannot be asked now: outcome unknown"
            ) from None
        if found is None:
            raise  # nothing was opened or debited upstream: the error is final
        return found
    if not r.get("instanceId"):
        raise sdk.FailedPrecondition("the upstream did not say the instance's id (upgrade the upstream RustBill)")
    return {"instance_id": r["instanceId"], "status": r.get("status", ""), "ip_address": r.get("ipAddress", "")}


async def find_instance(config, request_id):
    """The instance ordered under ``request_id`` (the upstream's idempotency-key), or None when the
    upstream has no such order. An order the upstream is still opening (or whose outcome it does not
    know itself) raises DEADLINE_EXCEEDED: ask again later."""
    reply = await _call(
        config, INSTANCES, "ListInstances", {"provider_id": config["interface_id"], "order_id": request_id}
    )
    found = reply.get("instances", [])
    if not found:
        return None
    item = found[0]
    if not item.get("providerInstanceId"):
        raise sdk.DeadlineExceeded(
            f"upstream order {request_id} is {item.get('status', '?')!r} there (instance {item['id']}): outcome "
            "not known yet"
        )
    return _instance(item)


async def get_instance_status(config, instance_id):
    try:
        reply = await _call(config, INSTANCES, "GetInstance", {"id": instance_id})
    except UpstreamError as exc:
        if exc.connect_code in ("not_found", "invalid_argument"):
            return None  # the host answers NOT_FOUND
        raise
    item = reply.get("instance", {})
    if item.get("providerId") != config["interface_id"]:
        return None  # another of our upstream instances, not resold through this interface
    return _instance(item)


async def sync_upstream_instances(config):
    items = await _pages(config, INSTANCES, "ListInstances", {"provider_id": config["interface_id"]}, "instances")
    return [_instance(i) for i in items if i.get("providerInstanceId")]  # orders still being opened: not yet


async def get_upstream_balance(config):
    b = await _call(config, BALANCE, "GetBalance", {})
    return {"balance": sdk.decimal(b.get("balance", "0")), "currency": b.get("currency", "")}


# ---------------------------------------------------------------- admin page


async def admin_page(config):
    e = html.escape
    try:
        bal = await get_upstream_balance(config)
        instances = await sync_upstream_instances(config)
        ledger = await _call(config, BALANCE, "ListBalanceTransactions", {"pagination": {"page_size": 10}})
    except (sdk.PluginError, httpx.HTTPError) as exc:
        why = exc.message if isinstance(exc, sdk.PluginError) else f"{type(exc).__name__}: {exc}"
        return {"title": "Upstream RustBill", "html": f"<p>The upstream cannot be read: {e(why)}</p>"}
    rows = "".join(
        f"<tr><td>{e(i['instance_id'])}</td><td>{e(i['status'])}</td><td>{e(i['ip_address'])}</td>"
        f"<td>{e(i['created_at'])}</td></tr>"
        for i in instances
    )
    entries = "".join(
        f"<tr><td>{e(t.get('createdAt', ''))}</td><td>{e(t.get('kind', ''))}</td><td>{e(t.get('amount', ''))}</td>"
        f"<td>{e(t.get('balanceAfter', ''))}</td><td>{e(t.get('note', ''))}</td></tr>"
        for t in ledger.get("transactions", [])
    )
    return {
        "title": "Upstream RustBill",
        "html": (
            f"<h2>{e(_where(config))}</h2>"
            f"<p>Balance: <strong>{e(sdk.money(bal['balance']))} {e(bal['currency'])}</strong></p>"
            f"<h3>Instances ({len(instances)})</h3><table><tr><th>Instance</th><th>Status</th><th>IP</th>"
            f"<th>Created</th></tr>{rows}</table>"
            "<h3>Latest ledger entries</h3><table><tr><th>When</th><th>Kind</th><th>Amount</th><th>Balance</th>"
            f"<th>Note</th></tr>{entries}</table>"
        ),
    }
