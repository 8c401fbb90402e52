"""Pricing: exact integer minor units, half-up rounding, each strategy's own rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderflow.domain.pricing import (
    PricedLine,
    StandardPricing,
    TaxedPricing,
    ThresholdDiscountPricing,
    make_strategy,
)

lines_st = st.lists(
    st.builds(PricedLine, st.integers(0, 10**9), st.integers(1, 1000)), min_size=1, max_size=50
)


def test_standard_is_the_sum_of_lines() -> None:
    quote = StandardPricing().quote([PricedLine(1250, 2), PricedLine(99, 3)])
    assert (quote.subtotal, quote.total) == (2797, 2797)


def test_tax_rounds_half_up_in_minor_units() -> None:
    quote = TaxedPricing(tax_rate_bp=2000).quote([PricedLine(1, 3)])  # 20 % of 3 = 0.6
    assert (quote.tax, quote.total) == (1, 4)


def test_discount_applies_only_at_or_over_the_threshold() -> None:
    pricing = ThresholdDiscountPricing(threshold=10000, discount_rate_bp=1000)
    assert pricing.quote([PricedLine(9999, 1)]).discount == 0
    assert pricing.quote([PricedLine(10000, 1)]).discount == 1000


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pricing"):
        make_strategy("bogus")


@given(
    lines_st,
    st.sampled_from(["standard", "taxed", "discount"]),
    st.integers(0, 10000),
    st.integers(0, 10**7),
)
def test_every_quote_is_exact_and_consistent(
    lines: list[PricedLine], name: str, rate: int, threshold: int
) -> None:
    quote = make_strategy(name, tax_rate_bp=rate, threshold=threshold, discount_rate_bp=rate).quote(
        lines
    )
    assert quote.subtotal == sum(li.unit_price * li.quantity for li in lines)
    assert quote.total == quote.subtotal - quote.discount + quote.tax
    assert 0 <= quote.discount <= quote.subtotal
    assert quote.tax >= 0
    assert all(isinstance(v, int) for v in (quote.subtotal, quote.discount, quote.tax))


@given(lines_st, st.integers(0, 10000))
def test_tax_never_exceeds_rate_by_more_than_half_a_unit(
    lines: list[PricedLine], rate: int
) -> None:
    quote = TaxedPricing(tax_rate_bp=rate).quote(lines)
    exact = quote.subtotal * rate / 10000
    assert abs(quote.tax - exact) <= 0.5


def test_half_a_minor_unit_rounds_up_and_less_rounds_down() -> None:
    taxed = TaxedPricing(tax_rate_bp=5000)  # 50 %
    assert taxed.quote([PricedLine(1, 1)]).tax == 1  # 0.5 -> 1
    assert TaxedPricing(tax_rate_bp=4999).quote([PricedLine(1, 1)]).tax == 0  # 0.4999 -> 0
    assert TaxedPricing(tax_rate_bp=2500).quote([PricedLine(3, 1)]).tax == 1  # 0.75 -> 1
    assert TaxedPricing(tax_rate_bp=2500).quote([PricedLine(1, 1)]).tax == 0  # 0.25 -> 0


def test_tax_is_taken_on_the_subtotal_not_line_by_line() -> None:
    # 20 % of each 1-unit line is 0.2 (0 each, line by line); of the 3-unit subtotal, 0.6 -> 1.
    quote = TaxedPricing(tax_rate_bp=2000).quote([PricedLine(1, 1)] * 3)
    assert (quote.subtotal, quote.tax, quote.total) == (3, 1, 4)


def test_a_discount_is_rounded_like_tax_and_never_adds_tax() -> None:
    pricing = ThresholdDiscountPricing(threshold=0, discount_rate_bp=1500)  # 15 %
    quote = pricing.quote([PricedLine(333, 1)])  # 49.95 -> 50
    assert (quote.discount, quote.tax, quote.total) == (50, 0, 283)


def test_the_threshold_counts_quantities_not_lines() -> None:
    pricing = ThresholdDiscountPricing(threshold=10000, discount_rate_bp=1000)
    assert pricing.quote([PricedLine(2500, 4)]).discount == 1000  # one line of 4 x 25.00


def test_each_strategy_takes_its_own_settings_by_name() -> None:
    lines = [PricedLine(10000, 1)]
    taxed = make_strategy("taxed", tax_rate_bp=2000, threshold=1, discount_rate_bp=5000)
    assert (taxed.name, taxed.quote(lines).total) == ("taxed", 12000)  # no discount taken
    discount = make_strategy("discount", tax_rate_bp=2000, threshold=1, discount_rate_bp=5000)
    assert (discount.name, discount.quote(lines).total) == ("discount", 5000)  # no tax added
    standard = make_strategy("standard", tax_rate_bp=2000, threshold=1, discount_rate_bp=5000)
    assert (standard.name, standard.quote(lines).total) == ("standard", 10000)


def test_no_lines_cost_nothing_in_every_strategy() -> None:
    for name in ("standard", "taxed", "discount"):
        quote = make_strategy(name, tax_rate_bp=2000, discount_rate_bp=1000).quote([])
        assert (quote.subtotal, quote.discount, quote.tax, quote.total) == (0, 0, 0, 0), name
