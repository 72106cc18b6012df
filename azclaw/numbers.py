"""Reading numbers from JSON that anyone may have written (a server's reply,
a journal line, a checkpoint edited by hand): one rule each, never raising.

* ``whole``: a whole number (ints, and floats that are whole numbers or
  not; booleans, NaN, infinities and absurd sizes read as 0);
* ``number``: a finite number of any kind, else 0.0;
* ``count``: a token count or size a server reports: an int from 0 up to
  ``MAX_COUNT``, else 0; ``positive`` the same above 0, else None.
"""

from __future__ import annotations

import math

MAX_COUNT = 2 ** 31  # a token count at or above this is not a count
_HUGE = 1e18


def whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return int(value) if abs(value) < _HUGE else 0


def number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    value = float(value) if abs(value) < _HUGE else 0.0
    return value if math.isfinite(value) else 0.0


def count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNT else 0


def positive(value: object) -> int | None:
    return count(value) or None
