"""Prometheus metrics of one process (``/metrics`` on the HTTP listener).

Each ``App`` has its own registry, so that several servers in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_requests = Counter(
            "rustbill_rpc_requests",
            "RPCs answered, by service, method, status code and edge (grpc, grpc-web, connect).",
            ["service", "method", "code", "edge"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "rustbill_rpc_duration_seconds",
            "Time to answer an RPC, by service, method and edge.",
            ["service", "method", "edge"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.plugin_calls = Counter(
            "rustbill_plugin_calls",
            "Plugin function calls, by plugin, function and outcome (ok, cancelled or a status code).",
            ["plugin", "function", "outcome"],
            registry=r,
        )
        self.plugin_seconds = Histogram(
            "rustbill_plugin_call_duration_seconds",
            "Time a plugin function call took, by plugin and function.",
            ["plugin", "function"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.interface_healthy = Gauge(
            "rustbill_interface_healthy",
            "1 when the interface's last health check passed, else 0 (enabled interfaces only).",
            ["interface_id", "interface", "plugin", "plugin_type"],
            registry=r,
        )
        self.login_failures = Counter(
            "rustbill_login_failures",
            "Failed sign-ins, by reason (wrong password, no such user, user disabled, rate limited, ...).",
            ["reason"],
            registry=r,
        )
        self.payment_notifications = Counter(
            "rustbill_payment_notifications",
            "Payment notifications received on /pay/notify, by result (paid, duplicate, refused, unknown).",
            ["result"],
            registry=r,
        )
        self.orders_reconciled = Counter(
            "rustbill_orders_reconciled",
            "Orders whose create_instance outcome was unknown, settled: by outcome (found: instance recorded; "
            "released: the provider had none; reopened: opened again by a keyed retry; error: find_instance "
            "failed, counted once per order) and by who (reconciler, retry, late_answer).",
            ["outcome", "by"],
            registry=r,
        )

    def order_settled(self, outcome: str, by: str) -> None:
        self.orders_reconciled.labels(outcome, by).inc()

    def rpc(self, service: str, method: str, code: str, edge: str, seconds: float) -> None:
        self.rpc_requests.labels(service, method, code, edge).inc()
        self.rpc_seconds.labels(service, method, edge).observe(seconds)

    def plugin_call(self, plugin: str, function: str, outcome: str, seconds: float) -> None:
        self.plugin_calls.labels(plugin, function, outcome).inc()
        self.plugin_seconds.labels(plugin, function).observe(seconds)

    def set_health(self, rows: list[tuple[str, str, str, str, bool]]) -> None:
        """Replace the health gauge with ``(interface_id, name, plugin, plugin_type, healthy)`` rows."""
        self.interface_healthy.clear()
        for iid, name, plugin, ptype, healthy in rows:
            self.interface_healthy.labels(iid, name, plugin, ptype).set(1 if healthy else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
