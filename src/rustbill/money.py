"""Money is Decimal, never float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["to_money_text"]


def to_money_text(value: Any, what: str = "amount") -> str:
    """``value`` (Decimal, int or decimal string) as a canonical decimal string.

    Raises ValueError naming ``what`` for floats (they lose cents), booleans, non-numbers and
    non-finite amounts.
    """
    if isinstance(value, (bool, float)):
        raise ValueError(f"{what} must be a Decimal or a decimal string, not {type(value).__name__} {value!r}")
    if isinstance(value, int):
        value = Decimal(value)
    elif isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{what} is not a decimal amount: {value[:40]!r}") from None
    if not isinstance(value, Decimal):
        raise ValueError(f"{what} must be a Decimal or a decimal string, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{what} must be a finite amount, got {value}")
    return format(value, "f")
