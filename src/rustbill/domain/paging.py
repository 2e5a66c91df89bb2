"""Pages of a listing, as RustBill's clients ask for them (``PageRequest``) and are told (``PageMeta``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select

__all__ = ["MAX_PAGE_SIZE", "Page", "PageMeta", "fetch_page"]

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class Page:
    """Page ``number`` (from 1) of ``size`` rows. 0 means the default for either."""

    number: int = 1
    size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def of(cls, number: int, size: int) -> Page:
        return cls(max(number, 1), min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE))


@dataclass(frozen=True, slots=True)
class PageMeta:
    total: int
    page: int
    page_size: int
    total_pages: int


async def fetch_page(session: Any, query: Select[Any], page: Page) -> tuple[list[Any], PageMeta]:
    """The rows of ``query`` (already ordered) on ``page``, and the listing's size."""
    total = (await session.execute(select(func.count()).select_from(query.order_by(None).subquery()))).scalar_one()
    rows = list((await session.execute(query.limit(page.size).offset((page.number - 1) * page.size))).scalars())
    return rows, PageMeta(total, page.number, page.size, -(-total // page.size))
