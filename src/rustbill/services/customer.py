"""The services a signed-in customer uses (any edge: see dispatch): ProductService,
InstanceService, BalanceService and ApiKeyService. Thin: who may see what is decided in the
domain (``domain.shop.customer_scope``)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ..auth import AuthService, Principal
from ..domain.ledger import Ledger
from ..domain.paging import Page
from ..domain.shop import Shop, customer_scope
from ..ids import parse_rfc3339, parse_uuid
from ..pb import balance_pb2, common_pb2, downstream_pb2, instance_pb2, product_service_pb2
from . import convert
from .dispatch import Call

__all__ = ["ApiKeyServicer", "BalanceServicer", "InstanceServicer", "ProductServicer"]

audit = logging.getLogger("rustbill.audit")


def _who(call: Call) -> Principal:
    assert call.principal is not None  # every method here needs a credential (permissions table)
    return call.principal


def _uuid_or_none(value: str, field: str) -> uuid.UUID | None:
    return parse_uuid(value, field) if value else None


def _whose(call: Call, customer_id: str) -> uuid.UUID:
    """The customer a balance or key call is about: the caller, or (admins) the one named."""
    p = _who(call)
    return customer_scope(p, _uuid_or_none(customer_id, "customer_id")) or p.user_id


def _page(msg: Any) -> Page:
    return Page.of(msg.page, msg.page_size)


class ProductServicer:
    def __init__(self, shop: Shop) -> None:
        self._shop = shop

    async def ListProducts(
        self, request: product_service_pb2.ListProductsRequest, call: Call
    ) -> product_service_pb2.ListProductsResponse:
        rows, meta = await self._shop.products(
            _who(call),
            _page(request.pagination),
            provider_id=_uuid_or_none(request.provider_id, "provider_id"),
            region=request.region,
            is_active=request.is_active if request.HasField("is_active") else None,
            search=request.search[:200],
            group_id=request.group_id,
        )
        return product_service_pb2.ListProductsResponse(
            products=[convert.product_info(p) for p in rows], meta=convert.page_meta(meta)
        )

    async def GetProduct(
        self, request: product_service_pb2.GetProductRequest, call: Call
    ) -> product_service_pb2.GetProductResponse:
        row = await self._shop.product(_who(call), parse_uuid(request.id, "id"))
        return product_service_pb2.GetProductResponse(product=convert.product_info(row))


class InstanceServicer:
    def __init__(self, shop: Shop) -> None:
        self._shop = shop

    async def ListInstances(
        self, request: instance_pb2.ListInstancesRequest, call: Call
    ) -> instance_pb2.ListInstancesResponse:
        rows, meta = await self._shop.instances(
            _who(call),
            _page(request.pagination),
            customer_id=_uuid_or_none(request.customer_id, "customer_id"),
            status=request.status,
            provider_id=_uuid_or_none(request.provider_id, "provider_id"),
            order_id=request.order_id,
        )
        return instance_pb2.ListInstancesResponse(
            instances=[convert.instance_info(i) for i in rows], meta=convert.page_meta(meta)
        )

    async def GetInstance(
        self, request: instance_pb2.GetInstanceRequest, call: Call
    ) -> instance_pb2.GetInstanceResponse:
        row = await self._shop.instance(_who(call), parse_uuid(request.id, "id"))
        return instance_pb2.GetInstanceResponse(instance=convert.instance_info(row))


class BalanceServicer:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def GetBalance(self, request: balance_pb2.GetBalanceRequest, call: Call) -> balance_pb2.GetBalanceResponse:
        return convert.balance(await self._ledger.balance(_whose(call, request.customer_id)))

    async def ListBalanceTransactions(
        self, request: balance_pb2.ListBalanceTransactionsRequest, call: Call
    ) -> balance_pb2.ListBalanceTransactionsResponse:
        rows, meta = await self._ledger.transactions(_whose(call, request.customer_id), _page(request.pagination))
        return balance_pb2.ListBalanceTransactionsResponse(
            transactions=[convert.balance_transaction(t) for t in rows], meta=convert.page_meta(meta)
        )


class ApiKeyServicer:
    def __init__(self, auth: AuthService) -> None:
        self._auth = auth

    async def CreateApiKey(
        self, request: downstream_pb2.CreateApiKeyRequest, call: Call
    ) -> downstream_pb2.CreateApiKeyResponse:
        owner = _whose(call, request.customer_id)
        expires = parse_rfc3339(request.expires_at, "expires_at") if request.expires_at else None
        key, row = await self._auth.issue_api_key(owner, request.name, expires_at=expires)
        audit.info("API key %s created for user %s by %s", row.key_prefix, owner, _who(call).username)
        return downstream_pb2.CreateApiKeyResponse(api_key=key, key_prefix=row.key_prefix, id=str(row.id))

    async def ListApiKeys(
        self, request: downstream_pb2.ListApiKeysRequest, call: Call
    ) -> downstream_pb2.ListApiKeysResponse:
        rows = await self._auth.api_keys(_whose(call, request.customer_id))
        return downstream_pb2.ListApiKeysResponse(keys=[convert.api_key_info(k) for k in rows])

    async def RevokeApiKey(self, request: downstream_pb2.RevokeApiKeyRequest, call: Call) -> common_pb2.EmptyResponse:
        p = _who(call)
        row = await self._auth.revoke_api_key_id(parse_uuid(request.id, "id"), owner=None if p.is_admin else p.user_id)
        audit.info("API key %s revoked by %s", row.key_prefix, p.username)
        return common_pb2.EmptyResponse()
