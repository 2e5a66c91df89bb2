"""Who may call what: one permission table for every edge (native gRPC, gRPC-Web, Connect).

The table names methods; the full paths (``/rustbill.integration.IntegrationService/QueryPrice``)
are built from the proto descriptors, and building it fails when a service has a method without
an entry or an entry without a method, so that the table and the protos cannot drift apart. A
method that is not in the table is refused (default deny).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from google.protobuf.descriptor import ServiceDescriptor

from ..auth import Principal
from ..errors import PermissionDenied
from ..pb import (
    balance_pb2,
    downstream_pb2,
    drift_pb2,
    identity_pb2,
    instance_pb2,
    integration_pb2,
    product_service_pb2,
    system_pb2,
)

__all__ = ["ACCESS", "PERMISSIONS", "SERVICES", "Access", "authorize", "permission_table", "with_overrides"]


class Access(Enum):
    PUBLIC = "public"  # no credential needed
    AUTHENTICATED = "authenticated"  # any signed-in user
    ADMIN = "admin"


_A, _U, _P = Access.ADMIN, Access.AUTHENTICATED, Access.PUBLIC

# The services served on both edges, and per service the access of each method
# (IntegrationService: the spec's 权限 column).
SERVICES: tuple[ServiceDescriptor, ...] = (
    integration_pb2.DESCRIPTOR.services_by_name["IntegrationService"],
    identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    system_pb2.DESCRIPTOR.services_by_name["SystemService"],
    product_service_pb2.DESCRIPTOR.services_by_name["ProductService"],
    instance_pb2.DESCRIPTOR.services_by_name["InstanceService"],
    balance_pb2.DESCRIPTOR.services_by_name["BalanceService"],
    downstream_pb2.DESCRIPTOR.services_by_name["ApiKeyService"],
    drift_pb2.DESCRIPTOR.services_by_name["DriftService"],
)
ACCESS: dict[str, dict[str, Access]] = {
    "rustbill.integration.IntegrationService": {
        "ListProviders": _A, "ListGateways": _A, "ListNotifiers": _A, "ListPlugins": _A, "GetPlugin": _A,
        "ListPluginInterfaces": _A, "GetPluginInterface": _A, "CreatePluginInterface": _A,
        "UpdatePluginInterface": _A, "TogglePluginInterface": _A, "DeletePluginInterface": _A,
        "CheckPluginHealth": _A, "GetPluginAdminPage": _A, "CallPluginAction": _A, "RestartServer": _A,
        "SyncProducts": _U, "QueryPrice": _U, "CreateUpstreamInstance": _U,
        "GetInstanceStatus": _A, "SyncUpstreamInstances": _A, "ImportUpstreamInstance": _A, "GetUpstreamBalance": _A,
    },
    "rustbill.identity.IdentityService": {
        "Login": _P, "RefreshToken": _P, "GetMe": _U, "Logout": _P,
    },
    "rustbill.system.SystemService": {"GetServerInfo": _A},
    # A customer's own things (the servicers scope each call to its caller; admins see all).
    "rustbill.product.ProductService": {"ListProducts": _U, "GetProduct": _U},
    "rustbill.instance.InstanceService": {"ListInstances": _U, "GetInstance": _U},
    "rustbill.balance.BalanceService": {"GetBalance": _U, "ListBalanceTransactions": _U},
    "rustbill.downstream.ApiKeyService": {"CreateApiKey": _U, "ListApiKeys": _U, "RevokeApiKey": _U},
    # The drift watch's findings at the upstream interfaces (the console's Upstream page).
    "rustbill.integration.DriftService": {"ListDriftFindings": _A, "CheckDrift": _A, "AcknowledgeDriftFinding": _A},
}  # fmt: skip


def permission_table(
    services: tuple[ServiceDescriptor, ...] = SERVICES, access: Mapping[str, Mapping[str, Access]] = ACCESS
) -> dict[str, Access]:
    """``{"/<package>.<Service>/<Method>": Access}`` for every method of ``services``."""
    table: dict[str, Access] = {}
    for svc in services:
        given = dict(access.get(svc.full_name, {}))
        for m in svc.methods:
            if m.name not in given:
                raise RuntimeError(f"permission table: {svc.full_name}/{m.name} has no entry")
            table[f"/{svc.full_name}/{m.name}"] = given.pop(m.name)
        if given:
            raise RuntimeError(f"permission table: {svc.full_name} has no method {', '.join(sorted(given))}")
    return table


PERMISSIONS = permission_table()


def with_overrides(overrides: Mapping[str, str], table: Mapping[str, Access] = PERMISSIONS) -> dict[str, Access]:
    """``table`` with ``[auth.permissions]`` applied: ``{"IntegrationService/ListProviders":
    "authenticated"}`` (the service's short or full name). Raises ValueError naming an unknown
    method or access level."""
    out = dict(table)
    by_short = {f"/{p.rsplit('/', 2)[1].rsplit('.', 1)[-1]}/{p.rsplit('/', 1)[1]}": p for p in table}
    for name, level in overrides.items():
        key = "/" + name.strip("/")
        path = key if key in table else by_short.get(key)
        if path is None:
            raise ValueError(
                f"auth.permissions: unknown method {name!r} (write it as Service/Method, "
                "e.g. IntegrationService/ListProviders)"
            )
        try:
            out[path] = Access(level)
        except ValueError:
            raise ValueError(f"auth.permissions.{name}: {level!r} is not one of admin, authenticated, public") from None
    return out


def authorize(method: str, principal: Principal | None, table: Mapping[str, Access] = PERMISSIONS) -> None:
    """Raise PermissionDenied unless ``principal`` (None: no credential) may call ``method``.
    Callers authenticate first: a missing credential on a non-public method is their refusal."""
    access = table.get(method)
    if access is None:
        raise PermissionDenied(f"method {method} is not allowed")
    if access is Access.ADMIN and (principal is None or not principal.is_admin):
        raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} requires the admin role")
