"""PluginRuntime: binds interfaces to loaded plugins and calls their functions safely.

- An interface's binding (its plugin and parsed config) is cached; it is evicted when the
  interface changes (``evict``) and rebuilt when its plugin file was reloaded.
- Plugin code runs in worker processes (``host.py``): a plugin that hangs, crashes, spins or eats
  memory costs only its own calls. Every call has a hard deadline (``plugins.call_timeout_seconds``,
  per function in ``plugins.timeouts``).
- Failures map, here and only here, to domain errors: a ``sdk.PluginError`` keeps its code and
  message; a deadline is DEADLINE_EXCEEDED; a connection failure UNAVAILABLE; a worker that ended
  UNAVAILABLE naming why; a limit RESOURCE_EXHAUSTED naming it; anything else INTERNAL naming
  plugin, function and exception (its traceback goes to the log); a missing function UNIMPLEMENTED.
- Every call is logged (interface, function, caller, duration, outcome) with secret config values
  masked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .. import errors
from ..calls import caller
from ..db import Database, PluginInterface
from ..ids import new_id
from ..vault import Vault, secret_paths, secret_values
from .contract import PROVIDER_TYPES, ShapeError
from .host import PluginFault, WorkerLimits
from .loader import LoadedPlugin
from .registry import PluginRegistry
from .state import StateStore

__all__ = ["Binding", "PluginRuntime"]

log = logging.getLogger("rustbill.plugin_calls")
T = TypeVar("T")


@dataclass(slots=True)
class Binding:
    """An interface bound to the plugin version it was loaded with."""

    interface_id: uuid.UUID
    display_name: str
    plugin_type: str
    enabled: bool
    plugin: LoadedPlugin
    config: dict[str, Any]
    secrets: tuple[str, ...]
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def plugin_id(self) -> str:
        return self.plugin.plugin_id

    def mask(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text


class PluginRuntime:
    def __init__(
        self,
        db: Database,
        registry: PluginRegistry,
        *,
        default_timeout: float = 30.0,
        timeouts: dict[str, float] | None = None,
        limits: WorkerLimits | None = None,
        vault: Vault | None = None,
    ) -> None:
        self._db = db
        # Opens the sealed secrets of stored configs (None: configs hold no sealed values).
        self.vault = vault
        # Called after every call with (plugin, function, outcome, seconds): the metrics.
        self.observer: Callable[[str, str, str, float], None] | None = None
        self._registry = registry
        self._default_timeout = default_timeout
        self._timeouts = dict(timeouts or {})
        self.state = StateStore(db)
        if limits is not None:
            registry.workers.limits = limits
        registry.workers.serve_state(self.state.handle)
        self._bindings: dict[uuid.UUID, Binding] = {}
        self._listeners: list[Callable[[uuid.UUID | None], None]] = []
        registry.subscribe(self._plugin_changed)

    # ---- cache ----

    def evict(self, interface_id: uuid.UUID) -> None:
        """Forget an interface's binding: the next call reads its config again."""
        self._bindings.pop(interface_id, None)
        for listener in self._listeners:
            listener(interface_id)

    def evict_all(self) -> None:
        self._bindings.clear()
        for listener in self._listeners:
            listener(None)

    def on_evict(self, listener: Callable[[uuid.UUID | None], None]) -> None:
        self._listeners.append(listener)

    def _plugin_changed(self, plugin_id: str) -> None:
        for iid in [iid for iid, b in self._bindings.items() if b.plugin_id == plugin_id]:
            self.evict(iid)

    def bind_row(self, row: PluginInterface) -> Binding:
        """The binding for a stored interface row (cached while config and plugin are unchanged)."""
        cached = self._bindings.get(row.id)
        plugin = self._registry.get(row.plugin_id)
        if plugin is None:
            self._bindings.pop(row.id, None)
            raise errors.PluginNotLoaded(
                row.plugin_id,
                f"plugin {row.plugin_id!r} of interface {row.display_name!r} is not loaded "
                "(its file is missing from the plugins folder or failed to load)",
            )
        if cached is not None and cached.plugin is plugin and cached.enabled == row.enabled:
            return cached
        try:
            config = json.loads(row.config_json) if row.config_json else {}
            schema = json.loads(row.config_schema) if row.config_schema else {}
        except ValueError:
            raise errors.Internal(f"stored config of interface {row.id} is not valid JSON") from None
        paths = secret_paths(schema) + secret_paths(plugin.config_schema)
        if self.vault is not None:
            config = self.vault.open(config, paths, what=f"interface {row.display_name!r} ({row.id})")
        binding = Binding(
            interface_id=row.id,
            display_name=row.display_name,
            plugin_type=row.plugin_type,
            enabled=row.enabled,
            plugin=plugin,
            config=config,
            secrets=secret_values(config, paths),
        )
        self._bindings[row.id] = binding
        return binding

    async def bind(self, interface_id: uuid.UUID, *, require_enabled: bool = True) -> Binding:
        binding = self._bindings.get(interface_id)
        if binding is None or self._registry.get(binding.plugin_id) is not binding.plugin:
            async with self._db.read() as s:
                row = await s.get(PluginInterface, interface_id)
            if row is None:
                raise errors.NotFound(f"interface {interface_id} not found")
            binding = self.bind_row(row)
        if require_enabled and not binding.enabled:
            raise errors.InterfaceDisabled(binding.display_name)
        return binding

    async def bind_provider(self, interface_id: uuid.UUID) -> Binding:
        binding = await self.bind(interface_id)
        if binding.plugin_type not in PROVIDER_TYPES:
            raise errors.FailedPrecondition(
                f"interface {binding.display_name!r} is a {binding.plugin_type}, not a provider"
            )
        return binding

    # ---- calls ----

    def timeout_for(self, function: str) -> float:
        if function in self._timeouts:
            return self._timeouts[function]
        if function.startswith("admin_") and "admin_*" in self._timeouts:
            return self._timeouts["admin_*"]
        return self._default_timeout

    def has(self, binding: Binding, function: str) -> bool:
        return binding.plugin.has(function)

    def trouble(self, binding: Binding) -> str | None:
        """Why calls of the binding's plugin fail fast now (suspended after crashes), or None."""
        return binding.plugin.host.trouble()

    @overload
    async def call(
        self,
        binding: Binding,
        function: str,
        *args: Any,
        check: Callable[[Any], T],
        config: dict[str, Any] | None = None,
        on_abandoned: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> T: ...

    @overload
    async def call(
        self,
        binding: Binding,
        function: str,
        *args: Any,
        check: None = None,
        config: dict[str, Any] | None = None,
        on_abandoned: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> Any: ...

    async def call(
        self,
        binding: Binding,
        function: str,
        *args: Any,
        check: Callable[[Any], T] | None = None,
        config: dict[str, Any] | None = None,
        on_abandoned: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> T | Any:
        """Call ``function(config, *args)`` of the binding's plugin in its worker process and check
        its result.

        With a ``check`` the result is what the checker returns (typed by it); without one it is the
        plugin's JSON as it came from the worker, which the caller still has to check.

        ``on_abandoned``: when the call ends (deadline, cancelled) while a ``def`` function's code
        still runs in its thread, it is given a future of that code's end: its raw result
        (unchecked) when it answers late, or an exception when it fails or its worker is killed at
        the deadline + grace."""
        plugin = binding.plugin
        if not plugin.has(function):
            raise errors.Unimplemented(f"plugin {binding.plugin_id!r} does not implement {function}")
        cfg = binding.config if config is None else config
        timeout = self.timeout_for(function)
        start = time.perf_counter()
        outcome = "ok"
        request_id = str(new_id())
        try:
            result = await plugin.host.call(
                function,
                cfg,
                list(args),
                seconds=timeout,
                interface_id=str(binding.interface_id),
                interface_name=binding.display_name,
                caller=caller.get(),
                request_id=request_id,
                on_abandoned=on_abandoned,
            )
            if check is not None:
                result = check(result)
            return result
        except BaseException as exc:
            err = self._map(binding, function, exc, timeout)
            if err is None:
                outcome = "cancelled"
                raise
            outcome = f"{err.code.name}: {err.message}"
            raise err from None
        finally:
            elapsed = time.perf_counter() - start
            log.info(
                "plugin call interface=%s name=%s plugin=%s function=%s caller=%s request_id=%s "
                "duration_ms=%.1f outcome=%s",
                binding.interface_id,
                _quoted(binding.display_name),
                binding.plugin_id,
                function,
                caller.get(),
                request_id,
                elapsed * 1000,
                outcome,
            )
            if self.observer is not None:
                self.observer(binding.plugin_id, function, outcome.split(":", 1)[0], elapsed)

    def _map(self, b: Binding, function: str, exc: BaseException, timeout: float) -> errors.RustBillError | None:
        where = f"plugin {b.plugin_id!r} {function}"
        if isinstance(exc, asyncio.CancelledError):
            return None
        if isinstance(exc, ShapeError):
            return errors.Internal(b.mask(f"plugin {b.plugin_id!r} returned a bad result from {function}: {exc}"))
        if isinstance(exc, errors.RustBillError):
            return exc
        if not isinstance(exc, PluginFault):
            return errors.Internal(f"{where} failed: {type(exc).__name__}")
        f = exc.info
        kind = f.get("kind")
        message = str(f.get("message", ""))
        if kind == "deadline":
            return errors.DeadlineExceeded(f"{where} did not finish within {timeout:g}s")
        if kind == "remote_timeout":
            # A request that was sent but not answered in time: it may have been acted upon.
            return errors.DeadlineExceeded(b.mask(f"{where}: the remote system did not answer in time: {message}"))
        if kind == "plugin":
            err = errors.error_for_code(str(f.get("code", "INTERNAL")), b.mask(f"{where}: {message}"))
            if isinstance(err, errors.Unavailable):
                # The plugin knows what happened; a plugin that does not know whether the remote
                # side acted raises DEADLINE_EXCEEDED.
                err.request_may_have_been_sent = False
            return err
        if kind == "unreachable":
            return errors.Unavailable(
                b.mask(f"{where}: cannot reach the remote system: {message}"),
                request_may_have_been_sent=bool(f.get("sent", True)),
            )
        if kind == "memory":
            limit = b.plugin.host.workers.limits.memory_limit_mb
            return errors.ResourceExhausted(
                f"{where} ran out of memory (plugins.memory_limit_mb = {limit}); its process is replaced"
            )
        if kind == "worker_lost":
            if f.get("status") == "RESOURCE_EXHAUSTED":
                return errors.ResourceExhausted(b.mask(f"{where}: {message}"))
            return errors.Unavailable(b.mask(f"{where}: {message}"), request_may_have_been_sent=True)
        if kind == "suspended":
            return errors.Unavailable(message, request_may_have_been_sent=False, retry_after=f.get("retry_after"))
        if kind == "start_failed":
            return errors.Unavailable(
                b.mask(f"plugin process for {b.plugin_id!r} cannot start: {message}"), request_may_have_been_sent=False
            )
        if kind == "bad_result":
            return errors.Internal(b.mask(f"plugin {b.plugin_id!r} returned a bad result from {function}: {message}"))
        if kind == "bad_argument":
            return errors.Internal(f"{where}: its arguments cannot be sent to the plugin process: {message}")
        if kind == "stopped":
            return errors.Internal(f"{where} stopped with {f.get('type', 'an exit')}")
        if kind == "cancelled":
            return errors.DeadlineExceeded(f"{where} was cancelled")
        # An exception of the plugin's: its author needs the file and line, so the traceback goes
        # to the server log (secrets masked), never into the reply.
        trace = str(f.get("traceback", "")).rstrip()
        if trace:
            log.warning("%s raised an exception (interface %s):\n%s", where, b.interface_id, b.mask(trace))
        return errors.Internal(b.mask(f"{where} failed: {f.get('type', 'Exception')}: {message}"))

    async def close(self) -> None:
        """Stop every plugin worker process."""
        await self._registry.close()


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
