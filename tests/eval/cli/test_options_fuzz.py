"""Property-based tests of the shared option types: any text is either a valid value within its
bounds or an argparse error naming it (never another exception, never NaN, never a huge list)."""

from __future__ import annotations

import argparse
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from couplednoise.eval.cli.options import MAX_SEEDS, float_in, int_in, int_list, parse_seeds

texts = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[0-9,\- ]{1,30}", fullmatch=True),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "0x10", "1_000", "\U0001f3b2", "٣"]),
)


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_seeds_parse_to_distinct_bounded_ints_or_a_value_error(text):
    try:
        seeds = parse_seeds(text)
    except ValueError as error:
        assert str(error)
        return
    assert seeds and len(seeds) == len(set(seeds)) <= MAX_SEEDS
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_bounded_numbers_are_finite_and_in_range_or_an_argument_error(text):
    for parse, low, high in ((int_in(1, 1000), 1, 1000), (float_in(0.0, 100.0), 0.0, 100.0)):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as error:
            assert str(error)
            continue
        assert math.isfinite(value) and low <= value <= high
    try:
        values = int_list(2, 16)(text)
    except argparse.ArgumentTypeError:
        return
    assert values and len(set(values)) == len(values) and all(2 <= v <= 16 for v in values)
