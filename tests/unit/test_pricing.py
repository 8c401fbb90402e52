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
