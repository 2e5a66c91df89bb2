"""Wiring: ``App`` builds every part from the settings and runs the gRPC server.

``App(settings).start()`` migrates the database, bootstraps the admin, scans the plugins folder,
binds the port and starts the background jobs; ``stop()`` drains in-flight RPCs (health goes
NOT_SERVING first) and closes everything. ``serve(settings)`` runs it until SIGTERM/SIGINT or
RestartServer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import select, text

from . import console, sdk
from .auth import AuthService, LoginLimiter
from .cluster import PgInvalidation
from .config import Settings
from .db import Database, PluginInterface, redact_url
from .domain import Catalog, Channels, HealthService, ProcessRegistry, Providers, Reconciler
from .domain.drift import DriftWatch
from .domain.ledger import Ledger
from .domain.orders import Orders
from .domain.shop import Shop
from .metrics import Metrics
from .plugins import PluginRegistry, PluginRuntime, PluginScanner
from .plugins.host import WorkerLimits, Workers
from .services.customer import ApiKeyServicer, BalanceServicer, InstanceServicer, ProductServicer
from .services.dispatch import Dispatcher
from .services.drift import DriftServicer
from .services.grpc_edge import grpc_handlers
from .services.http_edge import HttpEdge, build_app
from .services.identity import IdentityServicer
from .services.permissions import PERMISSIONS, SERVICES, with_overrides
from .services.servicer import IntegrationServicer
from .services.system import ServerFacts, SystemServicer
from .tls import TlsFiles, is_loopback
from .vault import Vault

__all__ = ["App", "serve"]

log = logging.getLogger("rustbill")
SERVICE_NAMES = tuple(svc.full_name for svc in SERVICES)


def _probe(listen: str, key: str) -> None:
    """SystemExit when ``listen`` (HOST:PORT) cannot be bound, with the system's reason: typically a
    port another process (another RustBill?) listens on. A name that does not resolve is left to
    the listener itself to report."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except (OSError, ValueError):
        return
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (as the listeners: a TIME_WAIT is no obstacle)
        try:
            sock.bind(address)
        except OSError as exc:
            hint = " (another RustBill, or another program, listens there: `ss -ltnp` shows which)"
            busy = exc.errno == errno.EADDRINUSE
            raise SystemExit(f"cannot listen on {listen} ({key}): {exc.strerror}{hint if busy else ''}") from None


class App:
    """One RustBill IntegrationService process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database.from_settings(settings)
        self.auth = AuthService(self.db, settings)
        p = settings.plugins
        self.registry = PluginRegistry(
            Workers(
                WorkerLimits(
                    memory_limit_mb=p.memory_limit_mb,
                    max_threads=p.max_threads,
                    cpu_seconds_per_call=p.cpu_seconds_per_call,
                    idle_cpu_seconds=p.idle_cpu_seconds,
                    grace_seconds=p.kill_grace_seconds,
                    idle_seconds=p.worker_idle_seconds,
                    breaker_faults=p.breaker_faults,
                    breaker_window_seconds=p.breaker_window_seconds,
                    suspend_seconds=p.suspend_seconds,
                ),
                import_timeout=p.import_timeout_seconds,
            )
        )
        self.runtime = PluginRuntime(
            self.db, self.registry, default_timeout=p.call_timeout_seconds, timeouts=p.timeouts
        )
        self.scanner = PluginScanner(
            self.db, self.registry, settings.plugins.dir, import_timeout=settings.plugins.import_timeout_seconds
        )
        self.vault = Vault.from_settings(settings.secrets.key, settings.secrets.previous_keys, settings.data.dir)
        self.runtime.vault = self.vault
        self.metrics = Metrics()
        self.runtime.observer = self.metrics.plugin_call
        self.catalog = Catalog(self.db, self.registry, self.runtime, self.vault)
        self.processes = ProcessRegistry(self.db)
        self.providers = Providers(
            self.db,
            self.runtime,
            processes=self.processes,
            reconcile_interval=settings.plugins.reconcile_interval_seconds,
            release_after=settings.plugins.release_after_seconds,
        )
        self.providers.observer = self.metrics.order_settled
        self.reconciler = Reconciler(self.db, self.runtime, self.providers, self.processes)
        self.ledger = Ledger(self.db, currency=settings.billing.currency)
        self.orders = Orders(self.db, self.providers, self.ledger)
        self.shop = Shop(self.db, self.providers)
        self.channels = Channels(self.db, self.runtime, public_url=settings.http.public_url)
        self.drift = DriftWatch(
            self.db, self.runtime, self.providers, self.channels, notifiers=settings.drift.notifiers
        )
        self.health = HealthService(
            self.db, self.runtime, self.catalog, concurrency=settings.plugins.health_concurrency
        )
        a = settings.auth
        self.limiter = LoginLimiter(
            per_user=a.login_max_failures_per_user,
            per_address=a.login_max_failures_per_address,
            window_seconds=a.login_window_seconds,
        )
        self.server: aio.Server | None = None
        self.http: HttpEdge | None = None
        self.port: int | None = None
        self.http_port: int | None = None
        self._scanned = False
        self.restart_requested = asyncio.Event()
        self.stopped = asyncio.Event()
        self._health_servicer = health.aio.HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []
        self._invalidation: PgInvalidation | None = None
        self.tls: TlsFiles | None = None

    @property
    def public_url(self) -> str:
        """Where gateways reach the HTTP listener: ``http.public_url``, else the bound address."""
        h = self.settings.http
        if h.public_url or not h.listen:
            return h.public_url
        host = h.listen.rpartition(":")[0]
        scheme = "https" if self.settings.server.tls_cert else "http"
        return f"{scheme}://{host}:{self.http_port if self.http_port is not None else h.listen.rpartition(':')[2]}"

    def reload_tls(self) -> None:
        """SIGHUP: read the certificate and key again."""
        if self.tls is None:
            log.info("SIGHUP: no TLS certificate configured, nothing to reload")
        else:
            self.tls.reload("SIGHUP")

    def request_restart(self) -> None:
        """RestartServer: the reply goes out first; the restart starts right after."""
        asyncio.get_running_loop().call_soon(self.restart_requested.set)

    async def start(self) -> int:
        s = self.settings
        for listen, key in ((s.server.listen, "server.listen"), (s.http.listen, "http.listen")):
            _probe(listen, key)  # (before anything starts: a busy port is said at once, and plainly)
        await self.db.migrate()
        await self.processes.register()
        generated = await self.auth.bootstrap_admin()
        if generated is not None:
            # Printed once, on the first start only; it is not stored anywhere in clear.
            print(
                f"\n  First start: created admin user {s.bootstrap.admin_username!r} "
                f"with password: {generated}\n  Get a token with: rustbill token create --user "
                f"{s.bootstrap.admin_username}\n",
                file=sys.stderr,
                flush=True,
            )
        await self.auth.jwt_secret()
        await self.catalog.seal_stored_secrets()
        await self.scanner.scan()
        self._scanned = True

        if not self.db.is_sqlite:
            self._invalidation = PgInvalidation(self.db.url, self._remote_change)
            await self._invalidation.start()
            self.catalog.set_publisher(self._invalidation.publish)

        try:
            table = with_overrides(s.auth.permissions)
        except ValueError as exc:
            raise SystemExit(f"invalid configuration: {exc}") from None
        for path, access in sorted(table.items()):
            if access is not PERMISSIONS[path]:
                log.warning("permission of %s changed by auth.permissions: %s", path, access.value)
        dispatcher = Dispatcher(
            self.auth,
            {
                "rustbill.integration.IntegrationService": IntegrationServicer(
                    self.catalog, self.providers, self.orders, self.health, self.request_restart
                ),
                "rustbill.identity.IdentityService": IdentityServicer(
                    self.auth, self.limiter, self.metrics, s.auth.refresh_ttl_seconds
                ),
                "rustbill.system.SystemService": SystemServicer(self._server_info),
                "rustbill.product.ProductService": ProductServicer(self.shop),
                "rustbill.instance.InstanceService": InstanceServicer(self.shop),
                "rustbill.balance.BalanceService": BalanceServicer(self.ledger),
                "rustbill.downstream.ApiKeyService": ApiKeyServicer(self.auth),
                "rustbill.integration.DriftService": DriftServicer(self.drift),
            },
            self.metrics,
            table=table,
        )
        options = [("grpc.so_reuseport", 0)]
        self.server = aio.server(options=options, maximum_concurrent_rpcs=s.server.max_concurrent_rpcs)
        self.server.add_generic_rpc_handlers(grpc_handlers(dispatcher))
        health_pb2_grpc.add_HealthServicer_to_server(self._health_servicer, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        if s.server.tls_cert:
            self.tls = TlsFiles(Path(s.server.tls_cert), Path(s.server.tls_key))
        try:
            if self.tls is not None:
                self.port = self.server.add_secure_port(s.server.listen, self.tls.grpc_credentials())
            else:
                self.port = self.server.add_insecure_port(s.server.listen)
        except RuntimeError as exc:
            raise SystemExit(f"cannot listen on {s.server.listen}: {exc}") from None
        if s.http.listen:
            self.http = HttpEdge(
                build_app(
                    dispatcher=dispatcher,
                    channels=self.channels,
                    ready=self.not_ready,
                    health_rows=self._health_rows,
                    cors_origins=s.http.cors_origins,
                    public_https=s.http.public_url.startswith("https://"),
                    extra_routes=console.routes(),
                ),
                s.http.listen,
                ssl_context=self.tls.ssl_context(["http/1.1"]) if self.tls is not None else None,
            )
            self.http_port = await self.http.start()
            self.channels.public_url = self.public_url
        await self.server.start()
        await self._health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in SERVICE_NAMES:
            await self._health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

        self._tasks.append(asyncio.create_task(self.scanner.run(s.plugins.rescan_seconds), name="plugin-scanner"))
        self._tasks.append(asyncio.create_task(self.processes.run(), name="heartbeat"))
        if s.plugins.reconcile_interval_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self.reconciler.run(s.plugins.reconcile_interval_seconds), name="reconciler")
            )
        self._tasks.append(
            asyncio.create_task(self.orders.run_refund_sweep(s.billing.refund_sweep_seconds), name="refund-sweep")
        )
        if s.drift.interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self.drift.run(s.drift.interval_seconds), name="drift-watch"))
        if s.plugins.health_interval_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self.health.run(s.plugins.health_interval_seconds), name="health-checker")
            )
        if self.tls is not None:
            self._tasks.append(asyncio.create_task(self.tls.watch(s.server.tls_reload_seconds), name="tls-reload"))
        else:
            for what, listen in (("gRPC", s.server.listen), ("HTTP", s.http.listen)):
                if listen and not is_loopback(listen):
                    log.warning(
                        "%s listens on %s without TLS: Bearer tokens and API keys cross the network in clear. "
                        "Set server.tls_cert and server.tls_key, or keep it behind a TLS proxy",
                        what,
                        listen,
                    )
        host = s.server.listen.rpartition(":")[0]
        log.info(
            "RustBill IntegrationService listening on %s:%d%s database=%s plugins=%s (%d loaded)",
            host,
            self.port,
            " (TLS)" if self.tls is not None else "",
            redact_url(self.db.url),
            s.plugins.dir.resolve(),
            len(self.registry.ids()),
        )
        if self.http_port is not None:
            host = s.http.listen.rpartition(":")[0]
            scheme = "https" if self.tls is not None else "http"
            log.info("HTTP (gRPC-Web, Connect, /pay/notify, /metrics) on %s://%s:%d", scheme, host, self.http_port)
        return self.port

    def _server_info(self) -> ServerFacts:
        s = self.settings
        return {
            "database": "sqlite" if self.db.is_sqlite else "postgresql",
            "plugins_dir": str(s.plugins.dir.resolve()),
            "plugins_loaded": len(self.registry.ids()),
            "plugin_errors": dict(self.registry.load_errors),
            "public_url": self.public_url,
            "restart_mode": s.server.restart_mode,
        }

    async def not_ready(self) -> str | None:
        """Why this process should not get traffic yet (``/readyz``), or None."""
        if not self._scanned:
            return "plugins not scanned yet"
        try:
            async with self.db.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database unreachable: {type(exc).__name__}"
        return None

    async def _health_rows(self) -> list[tuple[str, str, str, str, bool]]:
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(
                        PluginInterface.id,
                        PluginInterface.display_name,
                        PluginInterface.plugin_id,
                        PluginInterface.plugin_type,
                        PluginInterface.is_healthy,
                    ).where(PluginInterface.enabled.is_(True))
                )
            ).all()
        return [(str(r[0]), r[1], r[2], r[3], bool(r[4])) for r in rows]

    def _remote_change(self, interface_id: Any) -> None:
        if interface_id is None:
            self.runtime.evict_all()
        else:
            self.runtime.evict(interface_id)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight calls finish within the grace period, close all."""
        grace = self.settings.server.grace_seconds if grace is None else grace
        await self._health_servicer.enter_graceful_shutdown()
        stopping = []
        if self.server is not None:
            stopping.append(self.server.stop(grace))
        if self.http is not None:
            stopping.append(self.http.stop(grace))
        await asyncio.gather(*stopping)
        await self.orders.drain(grace)  # an order whose caller went away still finishes
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await t
                except Exception:  # a background task that had crashed before it was cancelled
                    log.exception("background task %s had failed", t.get_name())
        await self.health.close()
        await self.providers.close()
        await self.processes.unregister()
        if self._invalidation is not None:
            await self._invalidation.close()
        await self.runtime.close()
        await sdk.aclose()
        await self.db.dispose()
        self.stopped.set()


async def _run(settings: Settings) -> bool:
    """Serve until a signal (returns False) or RestartServer (returns True)."""
    app = App(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reload_tls)  # before start: a SIGHUP must never stop us
    await app.start()
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(app.restart_requested.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    restart = app.restart_requested.is_set() and not stop.is_set()
    log.info(
        "%s: draining in-flight calls (grace %.1fs)",
        "restarting" if restart else "stopping",
        settings.server.grace_seconds,
    )
    await app.stop()
    log.info("stopped" if not restart else "stopped; restarting")
    if restart and settings.server.restart_mode == "reexec":
        # Come back on the very ports we had, even if they were chosen by the OS (port 0).
        host = settings.server.listen.rpartition(":")[0]
        os.environ["RUSTBILL_SERVER__LISTEN"] = f"{host}:{app.port}"
        if app.http_port is not None:
            os.environ["RUSTBILL_HTTP__LISTEN"] = f"{settings.http.listen.rpartition(':')[0]}:{app.http_port}"
    return restart


def serve(settings: Settings) -> None:
    """Run the server in this process until stopped; re-exec it on RestartServer."""
    if settings.server.uvloop:
        try:
            import uvloop

            restart = uvloop.run(_run(settings))
        except ImportError:
            restart = asyncio.run(_run(settings))
    else:
        restart = asyncio.run(_run(settings))
    logging.shutdown()
    if restart:
        if settings.server.restart_mode == "reexec":
            sys.stderr.flush()
            sys.stdout.flush()
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        log.info("restart requested: exiting for the process manager to start us again")
