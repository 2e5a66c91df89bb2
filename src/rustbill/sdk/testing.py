"""An in-process host for plugin authors' own tests (pytest or anything with asyncio).

``PluginHost`` loads one plugin file the way the server does (the scanner, the registry, the
runtime: same load checks, same timeouts, same error mapping, ``sdk.state()`` on a database), makes
interfaces from configs validated against the plugin's schema, and calls functions with the
contract's result checks. Without a database it makes a temporary SQLite one::

    from rustbill.sdk.testing import PluginHost

    async def test_price():
        async with PluginHost("plugins/my_cloud.py") as host:
            iid = await host.interface({"api_key": "test"})
            price = await host.call(iid, "query_price", host.sample_spec())
            assert price["amount"] == "9.99"

``HttpRecorder`` is a local HTTP server that records every request and answers with what the test
tells it to: point a plugin's URL setting at ``recorder.url``. ``host.notifier_messages(iid)`` are the
messages a notifier interface was given through ``send``. ``host.clock`` sets and advances what
``sdk.now()`` returns while the host is open.

Nothing here is mocked: the same code paths as in the server run; the plugin's code runs in a
worker process, as in the server.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ..plugins.contract import (
    CHECKERS,
    sample_config,
    sample_message,
    sample_notify_request,
    sample_order,
    sample_spec,
)

__all__ = ["FakeClock", "HttpRecorder", "PluginHost", "PluginLoadFailed", "RecordedRequest"]


class FakeClock:
    """What ``sdk.now()`` returns while installed: a fixed time that only ``set`` and ``advance``
    move. Calls of the plugin see it too (the host sends it with each call to the plugin's worker)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("give an aware datetime (e.g. tzinfo=UTC)")
        self._now = when

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """Move forward by ``seconds`` (and/or ``timedelta`` keywords: ``days=1``); the new time."""
        self._now += timedelta(seconds=seconds, **delta)
        return self._now


_schema: Path | None = None  # an empty SQLite database at the newest migration, made once per process


async def _new_schema(path: Path) -> None:
    """An empty SQLite database at ``path`` (unless there is one) at the newest migration: a copy of
    one migrated once per process (running every migration costs a fifth of a second a host)."""
    from ..db import Database

    global _schema
    if _schema is None:
        folder = Path(tempfile.mkdtemp(prefix="rustbill-schema-"))
        atexit.register(shutil.rmtree, folder, True)
        template = Database(f"sqlite:///{folder / 'schema.sqlite3'}")
        try:
            await template.migrate()
        finally:
            await template.dispose()
        _schema = folder / "schema.sqlite3"
    _copy_sqlite(_schema, path)


def _copy_sqlite(source: Path, dest: Path) -> None:
    import sqlite3

    if dest.exists():
        return
    src, dst = sqlite3.connect(source), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


class PluginLoadFailed(Exception):
    """The plugin file does not load; the message is the server's own (file and reason)."""


class PluginHost:
    """The billing core's side of one plugin file, in process.

    ``path``: the plugin file; it is copied into a plugins folder of the host's own, so that only it
    is loaded. ``db``: a ``rustbill.db.Database`` (migrated); None makes a temporary SQLite one.
    ``call_timeout`` and ``timeouts``: as ``[plugins] call_timeout_seconds`` and ``timeouts``.
    """

    sample_spec = staticmethod(sample_spec)
    sample_order = staticmethod(sample_order)
    sample_message = staticmethod(sample_message)
    sample_notify_request = staticmethod(sample_notify_request)

    def __init__(
        self,
        path: str | Path,
        *,
        db: Any = None,
        call_timeout: float = 30.0,
        timeouts: dict[str, float] | None = None,
    ) -> None:
        from ..domain import Channels, Providers
        from ..plugins import PluginRegistry, PluginRuntime

        self.source = Path(path)
        self.plugin_id = self.source.stem
        self._own_db = db is None
        self._tmp = Path(tempfile.mkdtemp(prefix="rustbill-host-"))
        self.folder = self._tmp / "plugins"
        self.folder.mkdir()
        if db is None:
            from ..db import Database

            db = Database(f"sqlite:///{self._tmp / 'host.sqlite3'}")
        self.db = db
        self.registry = PluginRegistry()
        self.runtime = PluginRuntime(db, self.registry, default_timeout=call_timeout, timeouts=timeouts)
        self.channels = Channels(db, self.runtime)
        self.providers = Providers(db, self.runtime)
        self._started = False
        self._sent: dict[uuid.UUID, list[dict[str, Any]]] = {}
        self.clock: FakeClock | None = None

    # ---- life cycle ----

    async def start(self) -> Self:
        """Load the plugin (raises ``PluginLoadFailed`` with the loader's message). Idempotent."""
        if self._started:
            return self
        from ..db import Database
        from ..plugins import PluginScanner

        if self._own_db:
            await _new_schema(self._tmp / "host.sqlite3")
            await self.db.migrate()
        shutil.copyfile(self.source, self.folder / self.source.name)
        # The scanner keeps the plugins table of its database in step with its folder (it retires the
        # rows of plugins not in it): on a database shared with a server it scans a private one.
        books = self.db if self._own_db else Database(f"sqlite:///{self._tmp / 'scanner.sqlite3'}")
        try:
            if books is not self.db:
                await _new_schema(self._tmp / "scanner.sqlite3")
                await books.migrate()
            report = await PluginScanner(books, self.registry, self.folder).scan()
        finally:
            if books is not self.db:
                await books.dispose()
        if self.registry.get(self.plugin_id) is None:
            reason = report.broken.get(self.plugin_id, f"{self.source.name}: not a plugin file")
            raise PluginLoadFailed(reason)
        self._started = True
        return self

    def fake_time(self, start: datetime | None = None) -> FakeClock:
        """Make ``sdk.now()`` return a fake time (``host.clock``) until ``close()``."""
        from .. import sdk

        self.clock = FakeClock(start)
        sdk._clock = self.clock
        self.registry.workers.clock = self.clock  # (plugin code runs in a worker: sent with each call)
        return self.clock

    async def close(self) -> None:
        from .. import sdk
        from . import aclose

        if self.clock is not None and sdk._clock is self.clock:
            sdk._clock = None
        await self.runtime.close()
        await aclose()
        if self._own_db:
            await self.db.dispose()
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def loaded(self) -> Any:
        """The loaded plugin (``plugin_type``, ``version``, ``config_schema``, ``has_admin_page``)."""
        plugin = self.registry.get(self.plugin_id)
        if plugin is None:
            raise RuntimeError("the plugin is not loaded: await host.start() first")
        return plugin

    def functions(self) -> list[str]:
        """The contract functions and admin_* actions the plugin defines."""
        return sorted(self.loaded.is_async)

    def sample_config(self) -> dict[str, Any]:
        """A config made from the plugin's schema (its ``examples``, defaults and types)."""
        return sample_config(self.loaded.config_schema)

    # ---- interfaces and calls ----

    async def interface(self, config: dict[str, Any] | None = None, *, name: str | None = None) -> uuid.UUID:
        """A new enabled interface of the plugin, as CreatePluginInterface makes it: the config
        (default: ``sample_config()``) is validated against the schema (``rustbill.errors.
        InvalidArgument`` naming the field otherwise)."""
        from sqlalchemy import select

        from ..db import Plugin, PluginInterface
        from ..domain import validate_config

        await self.start()
        plugin = self.loaded
        checked = validate_config(json.dumps(self.sample_config() if config is None else config), plugin.config_schema)
        async with self.db.write() as s:
            plugin_row = (await s.execute(select(Plugin.id).where(Plugin.plugin_id == self.plugin_id))).scalar()
            if plugin_row is None:  # a database of the caller's, which has not seen this plugin yet
                definition = Plugin(
                    plugin_type=plugin.plugin_type,
                    plugin_id=self.plugin_id,
                    content_hash=getattr(plugin, "content_hash", ""),
                    version=plugin.version,
                    has_admin_page=plugin.has_admin_page,
                )
                s.add(definition)
                await s.flush()
                plugin_row = definition.id
            row = PluginInterface(
                plugin_def_id=plugin_row,
                plugin_type=plugin.plugin_type,
                plugin_id=self.plugin_id,
                display_name=name or f"{self.plugin_id}-{uuid.uuid4().hex[:8]}",
                config_json=json.dumps(checked),
                config_schema=json.dumps(plugin.config_schema),
                plugin_version=plugin.version,
                has_admin_page=plugin.has_admin_page,
            )
            s.add(row)
        return row.id

    async def call(
        self, interface_id: uuid.UUID, function: str, *args: Any, check: Callable[[Any], Any] | None = None
    ) -> Any:
        """``function(config, *args)`` as the server calls it: its timeout, its error mapping
        (``rustbill.errors.RustBillError`` with the status the caller would get) and the contract's
        check of the result (a bad shape is ``errors.Internal`` naming what is wrong). Returns the
        result as the checker normalised it (admin_* actions: as returned); ``check`` replaces the
        contract's checker."""
        binding = await self.runtime.bind(interface_id)
        checker = check or CHECKERS.get(function)
        result = await self.runtime.call(binding, function, *args, check=checker)
        if function == "send":
            self._sent.setdefault(interface_id, []).append(args[0] if args else {})
        return result

    async def health(self, interface_id: uuid.UUID) -> str | None:
        """None when healthy, else the error (the check CheckPluginHealth makes)."""
        error: str | None = await self.call(interface_id, "health_check")
        return error

    async def action(self, interface_id: uuid.UUID, function: str, **args: Any) -> Any:
        """An ``admin_*`` action, as CallPluginAction runs it (arguments merged into the config)."""
        return json.loads(await self.providers.call_action(interface_id, function, json.dumps(args)))

    def notifier_messages(self, interface_id: uuid.UUID) -> list[dict[str, Any]]:
        """The messages given to ``send`` of a notifier interface through ``call``, in order."""
        return list(self._sent.get(interface_id, []))


# ---------------------------------------------------------------- a local HTTP peer


@dataclass
class RecordedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Answer:
    status: int = 200
    body: Any = ""
    headers: dict[str, str] = field(default_factory=dict)


class HttpRecorder:
    """A local HTTP server (127.0.0.1, a free port) that records each request and answers it.

    ``answer(status, body, headers)`` sets the answer of the following requests (default: 200 with
    an empty body; a dict or list body is sent as JSON); ``answer_with(fn)`` answers each request with
    ``fn(request) -> (status, body)``. Use it as a context manager, or ``start()``/``stop()``.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._answer = _Answer()
        self._fn: Callable[[RecordedRequest], tuple[int, Any]] | None = None
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = RecordedRequest(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                recorder.requests.append(req)
                if recorder._fn is not None:
                    status, body = recorder._fn(req)
                    answer = _Answer(status, body)
                else:
                    answer = recorder._answer
                data = answer.body
                headers = dict(answer.headers)
                if isinstance(data, (dict, list)):
                    data = json.dumps(data)
                    headers.setdefault("Content-Type", "application/json")
                raw = data.encode() if isinstance(data, str) else bytes(data)
                self.send_response(answer.status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, status: int = 200, body: Any = "", headers: dict[str, str] | None = None) -> None:
        self._fn = None
        self._answer = _Answer(status, body, dict(headers or {}))

    def answer_with(self, fn: Callable[[RecordedRequest], tuple[int, Any]]) -> None:
        self._fn = fn

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
