"""What a signed-in customer sees: the products they can order and the instances they own.

The rule for every listing: a customer sees their own (or what is on offer), an admin sees all and
may name a customer. Another customer's instance is NOT_FOUND, never PERMISSION_DENIED, so that ids
cannot be probed.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import Select, or_, select, update

from ..auth import Principal
from ..db import Database, Instance, PluginInterface, Product
from ..errors import NotFound, PermissionDenied, RustBillError
from ..ids import utcnow
from .paging import Page, PageMeta, fetch_page
from .providers import Providers

__all__ = ["Shop", "customer_scope"]

log = logging.getLogger("rustbill.shop")


def customer_scope(principal: Principal, customer_id: uuid.UUID | None) -> uuid.UUID | None:
    """Whose data a listing is about: a customer's own (naming another customer is refused); for
    an admin the customer named, or None (everybody)."""
    if principal.is_admin:
        return customer_id
    if customer_id is not None and customer_id != principal.user_id:
        raise PermissionDenied("customers can only see their own")
    return principal.user_id


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Shop:
    def __init__(self, db: Database, providers: Providers) -> None:
        self._db = db
        self._providers = providers

    # ---- products ----

    def _products(self, principal: Principal) -> Select[Product]:
        q = select(Product)
        if not principal.is_admin:  # on offer: active, from an enabled interface
            q = q.join(PluginInterface, PluginInterface.id == Product.interface_id).where(
                Product.active.is_(True), PluginInterface.enabled.is_(True)
            )
        return q

    async def products(
        self,
        principal: Principal,
        page: Page,
        *,
        provider_id: uuid.UUID | None = None,
        region: str = "",
        is_active: bool | None = None,
        search: str = "",
        group_id: str = "",
    ) -> tuple[list[Product], PageMeta]:
        q = self._products(principal)
        if provider_id is not None:
            q = q.where(Product.interface_id == provider_id)
        if region:
            q = q.where(Product.specs["region"].as_string() == region)
        if is_active is not None and principal.is_admin:
            q = q.where(Product.active.is_(is_active))
        if search:
            pattern = _like(search)
            q = q.where(or_(Product.name.ilike(pattern, escape="\\"), Product.description.ilike(pattern, escape="\\")))
        if group_id:
            q = q.where(Product.group_id == group_id)
        async with self._db.read() as s:
            return await fetch_page(s, q.order_by(Product.id.desc()), page)

    async def product(self, principal: Principal, product_id: uuid.UUID) -> Product:
        async with self._db.read() as s:
            row = (await s.execute(self._products(principal).where(Product.id == product_id))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"product {product_id} not found")
        return row

    # ---- instances ----

    async def instances(
        self,
        principal: Principal,
        page: Page,
        *,
        customer_id: uuid.UUID | None = None,
        status: str = "",
        provider_id: uuid.UUID | None = None,
        order_id: str = "",
    ) -> tuple[list[Instance], PageMeta]:
        q = select(Instance)
        whose = customer_scope(principal, customer_id)
        if whose is not None:
            q = q.where(Instance.customer_id == whose)
        if status:
            q = q.where(Instance.status == status)
        if provider_id is not None:
            q = q.where(Instance.interface_id == provider_id)
        if order_id:
            q = q.where(Instance.idempotency_key == order_id)
        async with self._db.read() as s:
            return await fetch_page(s, q.order_by(Instance.id.desc()), page)

    async def instance(self, principal: Principal, instance_id: uuid.UUID) -> Instance:
        """One instance, with status and IP asked of its provider (and stored) when it answers."""
        async with self._db.read() as s:
            row = await s.get(Instance, instance_id)
        if row is None or not (principal.is_admin or row.customer_id == principal.user_id):
            raise NotFound(f"instance {instance_id} not found")
        if row.provider_instance_id is None:
            return row  # an order still being opened: nothing to ask yet
        try:
            live = await self._providers.instance_status(row.interface_id, row.provider_instance_id)
        except RustBillError as exc:
            log.info("instance %s: status not refreshed from its provider: %s", row.id, exc.message)
            return row
        if (live["status"], live["ip_address"]) != (row.status, row.ip_address):
            row.status, row.ip_address, row.updated_at = live["status"], live["ip_address"], utcnow()
            async with self._db.write() as s:
                await s.execute(
                    update(Instance)
                    .where(Instance.id == row.id)
                    .values(status=row.status, ip_address=row.ip_address, updated_at=row.updated_at)
                )
        return row
