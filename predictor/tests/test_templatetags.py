"""The template filters of predictor/templatetags/ (digits.py)."""

import pytest
from django.template import Context, Template

from predictor.templatetags.digits import percent


@pytest.mark.parametrize(
    ("probability", "shown"),
    [
        (0.0, "0%"),
        (1.0, "100%"),
        (0.5, "50%"),
        (0.123, "12%"),
        (0.004, "<1%"),
        (0.0000001, "<1%"),
        (0.996, ">99%"),
        (0.9999999, ">99%"),
        (0.994, "99%"),
        (0.005, "1%"),
    ],
)
def test_percent_never_rounds_to_a_false_zero_or_hundred(probability, shown):
    assert percent(probability) == shown


def test_percent_rounds_halves_up_like_javascript():
    # Math.round(0.125 * 100) is 13 in the page's script; Python's round(12.5) would give 12.
    assert percent(0.125) == "13%"
    assert percent(0.625) == "63%"


def test_percent_shows_nothing_for_a_value_that_is_not_a_number():
    assert percent(None) == ""
    assert percent("high") == ""


def test_percent_output_is_escaped_in_a_template():
    html = Template("{% load digits %}{{ value|percent }}").render(Context({"value": 0.001}))
    assert html == "&lt;1%"
