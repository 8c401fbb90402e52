"""Pricing strategies: how an order's lines become the amount charged. Integer minor units."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

BP = 10_000  # basis points in a whole


def _apply_bp(amount: int, rate_bp: int) -> int:
    """``amount * rate_bp / 10000`` rounded half up, in exact integer arithmetic."""
    return (amount * rate_bp + BP // 2) // BP


@dataclass(frozen=True, slots=True)
class PricedLine:
    unit_price: int
    quantity: int

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Quote:
    """What an order costs: ``total = subtotal - discount + tax``."""

    subtotal: int
    discount: int
    tax: int
    total: int


class PricingStrategy(Protocol):
    @property
    def name(self) -> str:
        """The strategy's configuration name."""
        ...

    def quote(self, lines: Sequence[PricedLine]) -> Quote:
        """Price the given lines."""
        ...


def _subtotal(lines: Sequence[PricedLine]) -> int:
    return sum(line.total for line in lines)


@dataclass(frozen=True, slots=True)
class StandardPricing:
    """The sum of the lines, nothing added or taken away."""

    name: str = "standard"

    def quote(self, lines: Sequence[PricedLine]) -> Quote:
        """Price the given lines."""
        subtotal = _subtotal(lines)
        return Quote(subtotal=subtotal, discount=0, tax=0, total=subtotal)


@dataclass(frozen=True, slots=True)
class TaxedPricing:
    """The sum of the lines plus a tax rate (basis points)."""

    tax_rate_bp: int
    name: str = "taxed"

    def quote(self, lines: Sequence[PricedLine]) -> Quote:
        """Price the given lines."""
        subtotal = _subtotal(lines)
        tax = _apply_bp(subtotal, self.tax_rate_bp)
        return Quote(subtotal=subtotal, discount=0, tax=tax, total=subtotal + tax)


@dataclass(frozen=True, slots=True)
class ThresholdDiscountPricing:
    """A percentage off when the subtotal reaches a threshold."""

    threshold: int
    discount_rate_bp: int
    name: str = "discount"

    def quote(self, lines: Sequence[PricedLine]) -> Quote:
        """Price the given lines."""
        subtotal = _subtotal(lines)
        discount = _apply_bp(subtotal, self.discount_rate_bp) if subtotal >= self.threshold else 0
        return Quote(subtotal=subtotal, discount=discount, tax=0, total=subtotal - discount)


def make_strategy(
    name: str, *, tax_rate_bp: int = 0, threshold: int = 0, discount_rate_bp: int = 0
) -> PricingStrategy:
    """Build the strategy configured by ``name``."""
    if name == "standard":
        return StandardPricing()
    if name == "taxed":
        return TaxedPricing(tax_rate_bp=tax_rate_bp)
    if name == "discount":
        return ThresholdDiscountPricing(threshold=threshold, discount_rate_bp=discount_rate_bp)
    raise ValueError(f"unknown pricing strategy {name!r}")
