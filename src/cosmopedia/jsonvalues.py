"""What counts as an integer and as a number in JSON the project reads (settings, request
bodies): booleans are neither (Python's True is an int), NaN and Infinity are not numbers
(they pass every bound). A leaf module."""

from __future__ import annotations

import math


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)
