"""webhook — a notifier that POSTs each message as JSON, signed the Standard Webhooks way.

- ``send``: POSTs ``{"type": event, "timestamp": ..., "id": ..., "data": {...}}`` to the configured
  URL with the headers ``webhook-id`` (the message's id: the receiver's idempotency key, the same on
  every retry), ``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, with the key decoded from the
  ``whsec_`` secret; two signatures while a previous secret is being rotated out).
- 2xx is delivered. 5xx, timeouts and connection failures are retried with exponential backoff
  (and jitter) up to ``max_attempts``, all within ``max_total_seconds``; then UNAVAILABLE (or
  DEADLINE_EXCEEDED when the last attempt was sent but not answered). 3xx and 4xx are never
  retried: FAILED_PRECONDITION naming the status (429: RESOURCE_EXHAUSTED).
- ``health_check``: a signed ``ping`` event (one attempt), so a wrong secret shows up as the
  receiver's 401; or, with ``health_check: options``, an unsigned OPTIONS request.
- ``admin_page`` (settings and the last deliveries) and ``admin_send_test`` (one signed test event).

Spec: Standard Webhooks v1.0.0 (https://www.standardwebhooks.com). See docs/builtin/webhook.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import hashlib
import hmac
import html
import json
import random
import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from rustbill import sdk

PLUGIN_TYPE = "notifier"

log = sdk.logger(__name__)

_SECRET_RE = r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$"  # 24 to 64 bytes, as the spec asks
_HEADER_NAME_RE = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"  # an HTTP token
_RESERVED_HEADERS = ("content-type", "content-length", "host", "authorization", "transfer-encoding", "connection")
_ID_RE = re.compile(r"^[\x21-\x2d\x2f-\x7e]{1,200}$")  # printable ASCII without "." or spaces
_RECENT = 20
USER_AGENT = "RustBill-Webhooks/1.0"


def version():
    return "1.0.0"


def config_schema():
    return {
        "type": "object",
        "title": "Webhook (Standard Webhooks)",
        "required": ["url", "secret"],
        "additionalProperties": False,
        "properties": {
            "url": {
                "type": "string",
                "pattern": r"^https?://[^\s/?#]+[^\s]*$",
                "maxLength": 2000,
                "examples": ["https://hooks.example.com/rustbill"],
                "title": "Endpoint URL",
                "description": "Where every message is POSTed (http:// or https://). Use https outside a "
                "trusted network. Not a secret: keep tokens out of it (use Authorization).",
            },
            "secret": {
                "type": "string",
                "format": "password",
                "pattern": _SECRET_RE,
                "examples": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
                "title": "Signing secret",
                "description": "The endpoint's Standard Webhooks secret: 'whsec_' followed by the base64 of "
                "24 to 64 random bytes (the receiver holds the same). Signs every request (HMAC-SHA256). Secret.",
            },
            "previous_secret": {
                "type": "string",
                "format": "password",
                "pattern": r"^(whsec_[A-Za-z0-9+/]{32,88}={0,2})?$",
                "default": "",
                "title": "Previous signing secret",
                "description": "While rotating the secret: the old one. Requests then carry two signatures "
                "(new and old) so the receiver can switch without losing messages. Empty otherwise. Secret.",
            },
            "authorization": {
                "type": "string",
                "format": "password",
                "maxLength": 4000,
                "pattern": r"^[^\r\n]*$",
                "default": "",
                "title": "Authorization header",
                "description": "Optional value of an Authorization header sent with every request, for "
                "receivers behind an API gateway (e.g. 'Bearer …'). Empty: none. Secret.",
            },
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": _HEADER_NAME_RE},
                "additionalProperties": {"type": "string", "maxLength": 1000, "pattern": r"^[^\r\n]*$"},
                "maxProperties": 20,
                "default": {},
                "title": "Extra headers",
                "description": "Further HTTP headers sent with every request (name → value). Not for secrets "
                "(they are shown on the admin page); webhook-*, Content-Type, Host and Authorization are "
                "set by the plugin.",
            },
            "timeout": {
                "type": "number",
                "minimum": 1,
                "maximum": 60,
                "default": 10,
                "title": "Timeout per attempt (seconds)",
                "description": "How long one attempt may take (connect, send, answer).",
            },
            "max_attempts": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10,
                "default": 3,
                "title": "Attempts",
                "description": "How many times a message is tried when the receiver answers 5xx, times out "
                "or cannot be reached (1 = no retry). 3xx and 4xx answers are never retried.",
            },
            "backoff_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": 60,
                "default": 1,
                "title": "First retry delay (seconds)",
                "description": "Wait before the second attempt; doubled before each further one (±10 % "
                "jitter). A longer Retry-After from the receiver is honoured.",
            },
            "max_total_seconds": {
                "type": "number",
                "minimum": 1,
                "maximum": 600,
                "default": 25,
                "title": "Time limit for all attempts (seconds)",
                "description": "All attempts and waits of one send together. Keep it below the server's "
                "plugin call timeout for send (plugins.call_timeout_seconds, 30 by default), or the server "
                "cuts the call off with DEADLINE_EXCEEDED.",
            },
            "health_check": {
                "enum": ["ping", "options"],
                "default": "ping",
                "title": "Health check",
                "description": "ping: POST a signed 'ping' event (checks URL, reachability and the secret); "
                "options: an unsigned OPTIONS request (any answer below 500 counts), for receivers that must "
                "not get pings.",
            },
        },
    }


# ---------------------------------------------------------------- configuration


def _cfg(config: dict[str, Any]) -> dict[str, Any]:
    c = {
        "previous_secret": "",
        "authorization": "",
        "headers": {},
        "timeout": 10,
        "max_attempts": 3,
        "backoff_seconds": 1,
        "max_total_seconds": 25,
        "health_check": "ping",
        **config,
    }
    url = str(c.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise sdk.FailedPrecondition("url must be an http:// or https:// URL")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise sdk.FailedPrecondition(f"url is not a valid URL: {exc}") from None
    if not parsed.host:
        raise sdk.FailedPrecondition("url has no host")
    c["url"] = url
    c["shown_url"] = shown_url(parsed)
    c["keys"] = [_key(c.get("secret"), "secret")]
    if c["previous_secret"]:
        c["keys"].append(_key(c["previous_secret"], "previous_secret"))
    for k in ("timeout", "backoff_seconds", "max_total_seconds"):
        c[k] = float(c[k])
    c["max_attempts"] = int(c["max_attempts"])
    headers = {}
    for name, value in dict(c["headers"] or {}).items():
        lowered = str(name).lower()
        if lowered.startswith("webhook-") or lowered in _RESERVED_HEADERS:
            raise sdk.FailedPrecondition(f"headers: {name!r} is set by the plugin and cannot be configured")
        if not re.fullmatch(_HEADER_NAME_RE, str(name)) or re.search(r"[\r\n]", str(value)):
            raise sdk.FailedPrecondition(f"headers: {name!r} is not a valid header")
        headers[str(name)] = str(value)
    c["headers"] = headers
    return c


def shown_url(url: httpx.URL) -> str:
    """The URL as it may be shown and logged: no user info, no query string."""
    port = f":{url.port}" if url.port else ""
    query = "?…" if url.query else ""
    return f"{url.scheme}://{url.host}{port}{url.path}{query}"


def _key(secret: Any, what: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the bytes its base64 part decodes to."""
    text = str(secret or "")
    if not text.startswith("whsec_"):
        raise sdk.FailedPrecondition(f"{what} must start with 'whsec_' (the Standard Webhooks secret format)")
    b64 = text.removeprefix("whsec_").rstrip("=")
    try:
        key = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise sdk.FailedPrecondition(f"{what} is not 'whsec_' followed by valid base64") from None
    if len(key) < 24:
        raise sdk.FailedPrecondition(f"{what} decodes to {len(key)} bytes; Standard Webhooks secrets have 24 to 64")
    return key


def signature(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,<base64>`` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode("ascii") for k in keys
    )


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return format(o, "f")
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, (uuid.UUID,)):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def payload(message: dict[str, Any], event_time: str | None = None) -> bytes:
    """The request body: compact JSON, signed exactly as sent."""
    data = dict(message.get("data") or {})
    for k in ("subject", "text", "html"):
        if message.get(k):
            data[k] = str(message[k])
    if message.get("to"):
        data["to"] = [str(t) for t in message["to"]]
    body = {
        "type": str(message.get("event") or "notification"),
        "timestamp": event_time or _now_iso(),
        "id": str(message.get("id") or ""),
        "data": data,
    }
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise sdk.InvalidArgument(f"message data cannot be sent as JSON: {exc}") from None


def _msg_id(message: dict[str, Any]) -> str:
    msg_id = str(message.get("id") or "")
    if not msg_id:
        raise sdk.InvalidArgument("message id is empty: it becomes the webhook-id")
    if not _ID_RE.match(msg_id):
        raise sdk.InvalidArgument(
            f"message id {msg_id[:60]!r} cannot be a webhook-id: use 1-200 printable ASCII characters "
            "without '.' or spaces (the id is part of the signed content)"
        )
    return msg_id


# ---------------------------------------------------------------- one attempt


class _Attempt:
    """What one POST came to."""

    def __init__(self) -> None:
        self.status = 0
        self.error = ""  # why it failed ("" when delivered)
        self.retry = False  # worth trying again
        self.sent = False  # the request may have reached the receiver (timeouts after connecting)
        self.retry_after: float | None = None
        self.code = "UNAVAILABLE"

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _snippet(resp: httpx.Response) -> str:
    try:
        text = resp.text
    except Exception:
        return ""
    text = re.sub(r"\s+", " ", text).strip()
    return f": {text[:160]!r}" if text else ""


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def _post(c: dict[str, Any], msg_id: str, body: bytes, limit: float) -> _Attempt:
    """One signed POST; ``limit`` seconds for all of it."""
    ts = int(time.time())
    extra = {k: v for k, v in c["headers"].items() if k.lower() != "user-agent"}
    agent = next((v for k, v in c["headers"].items() if k.lower() == "user-agent"), USER_AGENT)
    headers = {
        **extra,
        "content-type": "application/json",
        "user-agent": agent,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(c["keys"], msg_id, ts, body),
    }
    if c["authorization"]:
        headers["authorization"] = c["authorization"]
    a = _Attempt()
    where = c["shown_url"]
    try:
        resp = await sdk.http().post(c["url"], content=body, headers=headers, timeout=httpx.Timeout(limit))
    except httpx.ConnectTimeout:
        a.error, a.retry = f"no connection to {where} within {limit:.3g}s", True
        return a
    except httpx.TimeoutException:
        a.error, a.retry, a.sent = f"{where} did not answer within {limit:.3g}s", True, True
        return a
    except httpx.TransportError as exc:
        a.error, a.retry = f"cannot reach {where}: {type(exc).__name__}: {str(exc) or 'connection failed'}", True
        a.sent = not isinstance(exc, httpx.ConnectError)
        return a
    a.status = s = resp.status_code
    a.sent = True
    if a.ok:
        return a
    said = _snippet(resp)
    if s >= 500:
        a.error, a.retry, a.retry_after = f"{where} answered HTTP {s}{said}", True, _retry_after(resp)
    elif 300 <= s < 400:
        a.code = "FAILED_PRECONDITION"
        a.error = (
            f"{where} answered HTTP {s} (redirect to {resp.headers.get('location', '?')[:200]}); "
            "webhooks do not follow redirects: set url to the final address"
        )
    elif s in (401, 403):
        a.code = "FAILED_PRECONDITION"
        a.error = (
            f"{where} refused the webhook with HTTP {s}{said}: the receiver does not accept our signature "
            "or credentials (check that secret matches the receiver's, and authorization)"
        )
    elif s == 410:
        a.code = "FAILED_PRECONDITION"
        a.error = f"{where} answered HTTP 410 Gone: the receiver no longer wants these webhooks; disable this interface"
    elif s == 429:
        a.code = "RESOURCE_EXHAUSTED"
        after = _retry_after(resp)
        when = f"; it asks to wait {after:g}s" if after is not None else ""
        a.error = f"{where} answered HTTP 429 Too Many Requests{when}: send later, more slowly"
    elif s == 404:
        a.code = "FAILED_PRECONDITION"
        a.error = f"{where} answered HTTP 404{said}: no webhook endpoint at this url"
    else:
        a.code = "FAILED_PRECONDITION"
        a.error = f"{where} refused the webhook with HTTP {s}{said}"
    return a


async def _deliver(c: dict[str, Any], message: dict[str, Any], *, attempts: int | None = None) -> dict[str, Any]:
    """POST with retries; the outcome dict (never raises for the receiver's answers)."""
    msg_id = _msg_id(message)
    body = payload(message)
    max_attempts = attempts or c["max_attempts"]
    budget = c["max_total_seconds"]
    start = time.monotonic()
    n = 0
    stopped = ""
    while True:
        remaining = budget - (time.monotonic() - start)
        n += 1
        last = await _post(c, msg_id, body, min(c["timeout"], remaining))
        if last.ok or not last.retry or n >= max_attempts:
            break
        wait = c["backoff_seconds"] * (2 ** (n - 1)) * random.uniform(0.9, 1.1)
        if last.retry_after is not None:
            wait = max(wait, last.retry_after)
        remaining = budget - (time.monotonic() - start)
        if remaining - wait < 1:  # no time left for a meaningful attempt
            stopped = f"; stopped to stay within max_total_seconds={budget:g}"
            break
        await asyncio.sleep(wait)
    return {
        "id": msg_id,
        "type": str(message.get("event") or "notification"),
        "delivered": last.ok,
        "status": last.status,
        "attempts": n,
        "duration_ms": round((time.monotonic() - start) * 1000),
        "error": last.error + stopped if not last.ok else "",
        "code": "" if last.ok else last.code,
        "retryable": last.retry,
        "sent": last.sent,
    }


def _raise(outcome: dict[str, Any]) -> None:
    if outcome["delivered"]:
        return
    n = outcome["attempts"]
    tries = f"after {n} attempt{'s' if n != 1 else ''}"
    if not outcome["retryable"]:
        raise sdk.PluginError(f"webhook {outcome['id']} not delivered: {outcome['error']}", outcome["code"])
    msg = f"webhook {outcome['id']} not delivered {tries}: last error: {outcome['error']}"
    if outcome["sent"] and outcome["status"] == 0:
        # sent, never answered: it may have been processed; resending with the same webhook-id is safe
        raise sdk.DeadlineExceeded(msg + " (the receiver may have got it; the same webhook-id makes a resend safe)")
    raise sdk.Unavailable(msg)


async def _record(outcome: dict[str, Any], kind: str) -> None:
    """Keep the last deliveries in the interface's state (best effort: never fails a send)."""
    keys = ("id", "type", "delivered", "status", "attempts", "duration_ms", "error")
    await sdk.record_recent({"kind": kind, **{k: outcome[k] for k in keys}}, keep=_RECENT)


# ---------------------------------------------------------------- contract


async def send(config, message):
    c = _cfg(config)
    outcome = await _deliver(c, message)
    await _record(outcome, "send")
    _raise(outcome)
    return {"delivered": True, "id": outcome["id"]}


async def health_check(config):
    try:
        c = _cfg(config)
    except sdk.PluginError as exc:
        return exc.message
    timeout = c["timeout"]
    if c["health_check"] == "options":
        try:
            resp = await sdk.http().request(
                "OPTIONS", c["url"], headers={"user-agent": USER_AGENT}, timeout=httpx.Timeout(timeout)
            )
        except httpx.TimeoutException:
            return f"{c['shown_url']} did not answer OPTIONS within {timeout:g}s"
        except httpx.TransportError as exc:
            return f"cannot reach {c['shown_url']}: {type(exc).__name__}: {str(exc) or 'connection failed'}"
        if resp.status_code >= 500:
            return f"{c['shown_url']} answered OPTIONS with HTTP {resp.status_code}"
        return None
    ping = {"id": f"ping_{uuid.uuid4().hex}", "event": "ping", "data": {"message": "RustBill health check"}}
    outcome = await _deliver(c, ping, attempts=1)
    if outcome["delivered"]:
        return None
    return f"ping not delivered: {outcome['error']}"


async def admin_send_test(config):
    """Send one signed test event (type ``test``, one attempt) and return the outcome.
    Optional argument ``text``."""
    c = _cfg(config)
    text = str(config.get("text") or "This is a test event from RustBill.")[:1000]
    msg = {
        "id": f"test_{uuid.uuid4().hex}",
        "event": "test",
        "subject": "RustBill test event",
        "text": text,
        "data": {"test": True},
    }
    outcome = await _deliver(c, msg, attempts=1)
    await _record(outcome, "test")
    _raise(outcome)
    return {k: outcome[k] for k in ("delivered", "id", "status", "attempts", "duration_ms")} | {"url": c["shown_url"]}


async def admin_recent(config):
    """The last deliveries recorded for this interface, newest first."""
    return {"recent": await sdk.recent()}


# The admin console shows the page in a sandboxed iframe; sdk.admin_bridge_script() lets it run
# this interface's admin_* actions (docs/plugins.md, "Admin pages and the console bridge").
_PAGE_SCRIPT = """<script>rustbill.bind("send-test", "admin_send_test", {}, "test-out");</script>"""


async def admin_page(config):
    e = html.escape
    try:
        c = _cfg(config)
        problem = ""
    except sdk.PluginError as exc:
        c = {**config, "shown_url": str(config.get("url", "")), "keys": []}
        problem = f'<p class="error">Configuration problem: {e(exc.message)}</p>'
    rows = [
        ("Endpoint", c.get("shown_url", "")),
        (
            "Signature",
            "Standard Webhooks v1 (HMAC-SHA256)" + (", rotating: 2 secrets" if c.get("previous_secret") else ""),
        ),
        ("Authorization header", "set" if c.get("authorization") else "none"),
        ("Extra headers", ", ".join(f"{k}: {v}" for k, v in (c.get("headers") or {}).items()) or "none"),
        ("Timeout per attempt", f"{float(c.get('timeout', 10)):g} s"),
        ("Attempts", str(c.get("max_attempts", 3))),
        ("First retry delay", f"{float(c.get('backoff_seconds', 1)):g} s, doubling"),
        ("Time limit for all attempts", f"{float(c.get('max_total_seconds', 25)):g} s"),
        ("Health check", str(c.get("health_check", "ping"))),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    recent = (await admin_recent(config))["recent"]
    lines = "".join(
        f"<tr><td>{e(str(r.get('at', '')))}</td><td>{e(str(r.get('kind', '')))}</td><td><code>{e(str(r.get('id', '')))}"
        f"</code></td><td>{e(str(r.get('type', '')))}</td>"
        f'<td class="{"ok" if r.get("delivered") else "error"}">{"delivered" if r.get("delivered") else "failed"}</td>'
        f"<td>{e(str(r.get('status') or '—'))}</td><td>{e(str(r.get('attempts', '')))}</td>"
        f"<td>{e(str(r.get('duration_ms', '')))} ms</td><td>{e(str(r.get('error', '')))}</td></tr>"
        for r in recent
        if isinstance(r, dict)
    )
    deliveries = (
        "<table><tr><th>When (UTC)</th><th>Kind</th><th>webhook-id</th><th>Type</th><th>Outcome</th>"
        f"<th>HTTP</th><th>Attempts</th><th>Time</th><th>Error</th></tr>{lines}</table>"
        if lines
        else "<p>No deliveries recorded yet.</p>"
    )
    parts = [
        f"{problem}<table>{table}</table>",
        "<h2>Send a test event</h2><p>POSTs one signed event of type <code>test</code> (a single attempt) and "
        'shows what the receiver answered.</p><button id="send-test" type="button">Send test event</button>'
        '<pre id="test-out"></pre>',
        f"<h2>Last deliveries</h2><p>The last {_RECENT} sends and tests of this interface, kept in the "
        f"interface's state (best effort).</p>{deliveries}",
    ]
    body = sdk.admin_html("Webhook", "Webhook", parts, sdk.admin_bridge_script() + _PAGE_SCRIPT)
    return {"title": "Webhook", "html": body}
