"""Template filters for the model's numbers: {% load digits %}."""

import math

from django import template

register = template.Library()


@register.filter
def percent(probability) -> str:
    """Return a probability as a short percentage that never rounds to a false 0% or 100%, as main.js does."""
    try:
        value = float(probability)
        # Half up, as JavaScript's Math.round in formatPercent; Python's round() would go to the even neighbour.
        rounded = math.floor(value * 100 + 0.5)
    except (TypeError, ValueError, OverflowError):
        return ""
    if rounded == 0 and value > 0:
        return "<1%"
    if rounded == 100 and value < 1:
        return ">99%"
    return f"{rounded}%"
