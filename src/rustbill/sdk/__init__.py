"""What plugin scripts import: ``from rustbill import sdk``.

- ``sdk.PluginError(message, code="FAILED_PRECONDITION")`` — raise it to answer the caller with
  that gRPC status and message (``sdk.NotFound``, ``sdk.InvalidArgument``, ``sdk.Unavailable`` …
  are shortcuts). Any other exception becomes INTERNAL (UNAVAILABLE for connection failures).
- ``sdk.http()`` (for ``async def``) and ``sdk.http_sync()`` (for ``def``) — shared HTTP clients
  with timeouts and a connection pool. Do not close them.
- ``sdk.logger(__name__)`` — a logger under ``rustbill.plugin``.
- ``sdk.decimal(value)`` / ``sdk.money(value)`` — money as ``Decimal`` / canonical string;
  floats are refused because they lose cents.
- ``sdk.state()`` — small JSON values kept per interface in the database, surviving reloads and
  restarts: ``get/set/add/delete/items`` in ``def`` functions, ``aget/aset/aadd/adelete/aitems``
  in ``async def`` functions. ``add`` inserts only when the key is absent (a once-only guard).
  ``sdk.record_recent(entry)`` / ``sdk.recent()`` keep the last few of something there (an admin
  page's "last sends").
- ``sdk.context()`` — the call in progress: interface, caller, ``request_id`` and ``remaining()``
  seconds before the server gives up on it (plan retries and remote timeouts with it).
- ``sdk.admin_bridge_script()`` — the ``<script>`` an ``admin_page`` includes to run its
  ``admin_*`` actions through the admin console: ``rustbill.call(function, args)`` → Promise.
- ``sdk.admin_html(title, heading, parts, scripts)`` / ``sdk.item_table(...)`` / ``sdk.item_list(...)`` /
  ``sdk.confirm_form(...)`` / ``sdk.action_form(...)`` / ``sdk.actions_note(...)`` / ``sdk.unreachable(...)``
  — the frame of an admin page, a table of items with per-status action buttons (bound by
  ``sdk.ITEM_LIST_JS``), a form that asks for an item's name before a destructive action (bound by
  ``sdk.ACTION_FORM_JS``), the note naming the page's actions, and the note of a host it cannot reach
  (``sdk/pages.py``).
- ``sdk.ServerPricing`` and the schema helpers (``sdk.prop``, ``sdk.money_prop``, ...) — price rules,
  plans, regions, OS images and spec limits of a provider that sells servers (``sdk/pricing.py``).
- ``sdk.Connections``, ``sdk.order_request_id``, ``sdk.find_request_id``, ``sdk.order_name``,
  ``sdk.instance_result`` and ``sdk.action_target`` — the connections a provider keeps, the request id
  of an order and the name of what it makes, one instance as the contract returns it, the target of
  an admin action (``sdk/hosts.py``).
- ``rustbill.sdk.virt`` (imported on its own: it imports libvirt-python) — a plugin over libvirt: the
  connection, libvirt errors as PluginErrors, what the host has (``sdk/virt.py``).
- ``sdk.now()`` — the current time (UTC, aware); ``rustbill.sdk.testing`` sets it in tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from ..money import to_money_text
from ..plugins.context import CallContext, current_call

__all__ = [
    "ACTION_FORM_JS",
    "DECIMAL_PATTERN",
    "DEFAULT_TIMEOUT",
    "ITEM_LIST_JS",
    "PRICING_DEFAULTS",
    "AlreadyExists",
    "CallContext",
    "Connections",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PluginError",
    "ServerPricing",
    "State",
    "Unavailable",
    "action_form",
    "action_target",
    "actions_note",
    "admin_bridge_script",
    "admin_html",
    "confirm_form",
    "context",
    "cycle_amount",
    "decimal",
    "find_request_id",
    "http",
    "http_sync",
    "instance_result",
    "item_list",
    "item_table",
    "logger",
    "map_prop",
    "money",
    "money_prop",
    "non_negative_decimal",
    "now",
    "object_schema",
    "order_name",
    "order_request_id",
    "prop",
    "recent",
    "record_recent",
    "region_schema",
    "setting",
    "spec_int",
    "state",
    "unreachable",
]

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

_CODES = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "ABORTED",
    "UNAUTHENTICATED",
}


class PluginError(Exception):
    """An error a plugin reports to the caller, with a gRPC status code name."""

    def __init__(self, message: str, code: str = "FAILED_PRECONDITION") -> None:
        code = code.upper()
        if code not in _CODES:
            raise ValueError(f"unknown status code {code!r}; use one of {sorted(_CODES)}")
        super().__init__(message)
        self.message = message
        self.code = code


def _shortcut(code: str) -> type[PluginError]:
    def __init__(self: PluginError, message: str) -> None:
        PluginError.__init__(self, message, code)

    return type(code.title().replace("_", ""), (PluginError,), {"__init__": __init__})


InvalidArgument = _shortcut("INVALID_ARGUMENT")
NotFound = _shortcut("NOT_FOUND")
AlreadyExists = _shortcut("ALREADY_EXISTS")
PermissionDenied = _shortcut("PERMISSION_DENIED")
FailedPrecondition = _shortcut("FAILED_PRECONDITION")
Unavailable = _shortcut("UNAVAILABLE")
DeadlineExceeded = _shortcut("DEADLINE_EXCEEDED")

_lock = threading.Lock()
_async_client: httpx.AsyncClient | None = None
_sync_client: httpx.Client | None = None


def http() -> httpx.AsyncClient:
    """The shared async HTTP client (10 s timeout, 5 s to connect). For ``async def`` plugins."""
    global _async_client
    with _lock:
        if _async_client is None or _async_client.is_closed:
            _async_client = httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, limits=_LIMITS, follow_redirects=False)
        return _async_client


def http_sync() -> httpx.Client:
    """The shared blocking HTTP client, safe to use from several threads. For ``def`` plugins."""
    global _sync_client
    with _lock:
        if _sync_client is None or _sync_client.is_closed:
            _sync_client = httpx.Client(timeout=DEFAULT_TIMEOUT, limits=_LIMITS, follow_redirects=False)
        return _sync_client


async def aclose() -> None:
    """Close the shared clients (the server calls this at shutdown)."""
    global _async_client, _sync_client
    with _lock:
        a, s = _async_client, _sync_client
        _async_client = _sync_client = None
    if a is not None:
        await a.aclose()
    if s is not None:
        s.close()


def logger(name: str) -> logging.Logger:
    """A logger for a plugin; records go to the server's log under ``rustbill.plugin``."""
    short = name.rsplit(".", 1)[-1]
    if short.startswith("rustbill_plugin_"):  # rustbill_plugin_<id>_<content hash>
        short = short.removeprefix("rustbill_plugin_").rsplit("_", 1)[0]
    return logging.getLogger(f"rustbill.plugin.{short}")


def decimal(value: Any) -> Decimal:
    """``value`` (Decimal, int or decimal string) as a Decimal; floats raise ValueError."""
    return Decimal(to_money_text(value))


def money(value: Any) -> str:
    """``value`` as a canonical decimal string ("12.50"); floats raise ValueError."""
    return to_money_text(value)


# The clock of sdk.now(): the real one, or a test's (rustbill.sdk.testing.PluginHost.clock).
_clock: Callable[[], datetime] | None = None


def now() -> datetime:
    """The current time in UTC (timezone-aware). Use it for times a plugin's tests need to control
    (expiry, "created_at"): ``rustbill.sdk.testing`` can set and advance it."""
    ctx = current_call.get()
    if ctx is not None and ctx.now is not None:  # (a test's fake time, sent with the call)
        return ctx.now
    return _clock() if _clock is not None else datetime.now(UTC)


class State:
    """The calling interface's persistent key/value state (JSON values, keys up to 200 chars).

    The server keeps it in its database; a plugin's worker process asks the server for it."""

    _TIMEOUT = 30.0

    def __init__(self) -> None:
        self._ctx = _current()

    async def _ask(self, op: str, **args: Any) -> Any:
        return await self._ctx.state_request(op, **args)

    def _sync(self, op: str, **args: Any) -> Any:
        import asyncio

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._ctx.loop:
            raise RuntimeError("in an async def plugin function use the awaitable methods (aget, aset, ...)")
        return asyncio.run_coroutine_threadsafe(self._ask(op, **args), self._ctx.loop).result(self._TIMEOUT)

    # async
    async def aget(self, key: str, default: Any = None) -> Any:
        return await self._ask("get", key=key, default=default)

    async def aset(self, key: str, value: Any) -> None:
        await self._ask("set", key=key, value=value)

    async def aadd(self, key: str, value: Any) -> bool:
        return bool(await self._ask("add", key=key, value=value))

    async def adelete(self, key: str) -> bool:
        return bool(await self._ask("delete", key=key))

    async def aitems(self, prefix: str = "") -> dict[str, Any]:
        return dict(await self._ask("items", prefix=prefix))

    # blocking (for def functions, which run in worker threads)
    def get(self, key: str, default: Any = None) -> Any:
        return self._sync("get", key=key, default=default)

    def set(self, key: str, value: Any) -> None:
        self._sync("set", key=key, value=value)

    def add(self, key: str, value: Any) -> bool:
        return bool(self._sync("add", key=key, value=value))

    def delete(self, key: str) -> bool:
        return bool(self._sync("delete", key=key))

    def items(self, prefix: str = "") -> dict[str, Any]:
        return dict(self._sync("items", prefix=prefix))


def _current() -> CallContext:
    ctx = current_call.get()
    if ctx is None:
        raise RuntimeError("sdk.state() and sdk.context() are only available inside a plugin call")
    return ctx


def state() -> State:
    """The persistent state of the interface this plugin call is for."""
    return State()


async def record_recent(entry: Mapping[str, Any], *, keep: int = 20, key: str = "recent") -> None:
    """Put ``entry``, stamped ``"at"`` (UTC, ISO 8601), first in a list kept in the interface's state,
    the newest ``keep`` of them: what an admin page shows as its last sends or deliveries. Best effort:
    never raises (outside a plugin call, or with the database busy, it is logged at DEBUG)."""
    try:
        st = state()
        earlier = await st.aget(key, [])
        stamped = {"at": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), **entry}
        await st.aset(key, [stamped, *(earlier if isinstance(earlier, list) else [])][:keep])
    except Exception as exc:
        logging.getLogger("rustbill.plugin").debug("could not record in %r: %s", key, exc)


async def recent(key: str = "recent") -> list[Any]:
    """The list ``record_recent`` keeps, newest first ([] when there is none, or outside a plugin call)."""
    try:
        found = await state().aget(key, [])
    except RuntimeError:
        return []
    return found if isinstance(found, list) else []


def context() -> CallContext:
    """The call in progress: ``interface_id``, ``interface_name``, ``plugin_id``, ``function``,
    ``request_id`` (this call's id, also in the server's log line), ``caller`` and
    ``remaining()`` — the seconds left before the server gives up on the call."""
    return _current()


# The page side of the admin console's bridge (docs/plugins.md, "Admin pages and the console
# bridge"). The console shows an admin page in a sandboxed iframe with an opaque origin and no
# network access; the page reaches its interface's admin_* actions only by posting
#   {type: "rustbill:action", id, function, args}
# to its parent, which answers
#   {type: "rustbill:result", id, ok: true, result} or {type: "rustbill:result", id, ok: false,
#   error: {code, message}}.
_ADMIN_BRIDGE_JS = """(function () {
  "use strict";
  if (window.rustbill && window.rustbill.call) return;
  var seq = 0, pending = {}, TIMEOUT_MS = 100000;
  function fail(code, message) { var e = new Error(message); e.code = code; return e; }
  window.addEventListener("message", function (ev) {
    var m = ev.data;
    if (ev.source !== window.parent || !m || m.type !== "rustbill:result") return;
    if (!Object.prototype.hasOwnProperty.call(pending, m.id)) return;
    var p = pending[m.id];
    delete pending[m.id];
    clearTimeout(p.timer);
    if (m.ok) p.resolve(m.result);
    else p.reject(fail((m.error && m.error.code) || "unknown", (m.error && m.error.message) || "the action failed"));
  });
  function call(fn, args) {
    return new Promise(function (resolve, reject) {
      if (window.parent === window) {
        reject(fail("unavailable", "this page is not shown in the RustBill admin console"));
        return;
      }
      var id = "rb-" + (++seq);
      pending[id] = {resolve: resolve, reject: reject, timer: setTimeout(function () {
        delete pending[id];
        reject(fail("deadline_exceeded", "no answer from the admin console"));
      }, TIMEOUT_MS)};
      window.parent.postMessage({type: "rustbill:action", id: id, function: fn, args: args || {}}, "*");
    });
  }
  function el(target) { return typeof target === "string" ? document.getElementById(target) : target; }
  function show(target, value) {
    var out = el(target);
    if (out) out.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }
  function run(fn, args, target) {
    var out = el(target);
    if (out) { out.textContent = "\u2026"; out.setAttribute("data-state", "busy"); }
    return call(fn, args).then(function (result) {
      if (out) { show(out, result); out.setAttribute("data-state", "ok"); }
      return result;
    }, function (err) {
      if (out) {
        out.textContent = "Error (" + err.code + "): " + err.message;
        out.setAttribute("data-state", "error");
      }
      return undefined;
    });
  }
  function bind(element, fn, args, target) {
    var node = el(element), isForm = node && node.tagName === "FORM";
    if (!node) return;
    node.addEventListener(isForm ? "submit" : "click", function (ev) {
      if (isForm) ev.preventDefault();
      var control = isForm ? node.querySelector("[type=submit]") : node;
      var a = typeof args === "function" ? args(node) : args;
      if (a === false) return;
      if (control) control.disabled = true;
      run(typeof fn === "function" ? fn(node) : fn, a, target).then(function () {
        if (control) control.disabled = false;
      });
    });
  }
  window.rustbill = {call: call, run: run, bind: bind, show: show};
})();"""


def admin_bridge_script() -> str:
    """The ``<script>`` element an ``admin_page`` includes (before its own scripts) to run its
    interface's ``admin_*`` actions through the admin console. It defines ``window.rustbill``:

    - ``rustbill.call(function, args)`` → a Promise of the action's result (parsed JSON), rejected
      with an ``Error`` that has ``code`` (``"invalid_argument"``, ``"permission_denied"`` …) and
      ``message``;
    - ``rustbill.run(function, args, target)`` — calls, and shows the result (or the error) as text
      in ``target`` (an element or its id); resolves to the result, or undefined after an error;
    - ``rustbill.bind(element, function, args, target)`` — runs the action when ``element`` (a
      form: on submit; anything else: on click) is used; ``function`` and ``args`` may be
      functions of the element (``args`` returning ``false``: do not run), and the element (a
      form's submit button) is disabled while the action runs;
    - ``rustbill.show(target, value)`` — shows a value as text (JSON for objects).
    """
    return f"<script>{_ADMIN_BRIDGE_JS}</script>"


# Last, because these modules raise the errors defined above.
from .hosts import (  # noqa: E402
    Connections,
    action_target,
    find_request_id,
    instance_result,
    order_name,
    order_request_id,
)
from .pages import (  # noqa: E402
    ACTION_FORM_JS,
    ITEM_LIST_JS,
    action_form,
    actions_note,
    admin_html,
    confirm_form,
    item_list,
    item_table,
    unreachable,
)
from .pricing import (  # noqa: E402
    DECIMAL_PATTERN,
    PRICING_DEFAULTS,
    ServerPricing,
    cycle_amount,
    map_prop,
    money_prop,
    non_negative_decimal,
    object_schema,
    prop,
    region_schema,
    setting,
    spec_int,
)
