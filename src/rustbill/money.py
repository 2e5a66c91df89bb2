"""Money is Decimal, never float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["money_text", "to_money_text"]


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


def money_text(d: Decimal) -> str:
    """A stored amount with at least two decimals and no trailing zeros beyond them
    (``12.50000000`` → ``12.50``, ``0.12500000`` → ``0.125``, ``-3`` → ``-3.00``)."""
    d = d.normalize()
    exponent = d.as_tuple().exponent  # (a str only for NaN and infinity, which are no amounts)
    if isinstance(exponent, int) and exponent > -2:
        d = d.quantize(Decimal("0.01"))
    return format(d, "f")
