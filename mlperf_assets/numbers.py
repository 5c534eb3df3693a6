"""Number coercion shared by the parsers, the store and the reports (pure, no imports beyond the standard library).

Logs and JSON files hold numbers in many shapes: JSON ints and floats, booleans (which are ints in Python and are
never numbers here), numeric strings (``'38.732'`` in ``accuracy.txt``, every value of a summary log), and values
no column can hold (``1e400`` parses as ``inf``; ``1180591620717411303424`` overflows a 64-bit integer). These
helpers are the one place those rules live:

* :func:`as_float` / :func:`as_int`: JSON numbers only (a string or a bool gives None).
* :func:`parse_float` / :func:`parse_int`: numbers or numeric strings.
* :func:`checked_int` / :func:`checked_float`: like the parse functions, but a value that is present and cannot be
  stored (not finite, outside the signed 64- or 32-bit range) raises :class:`NumberError` instead of overflowing
  later in the database. Callers turn it into a message naming the file and key.
"""

from __future__ import annotations

import math
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_BOUNDS = {64: (INT64_MIN, INT64_MAX), 32: (INT32_MIN, INT32_MAX)}


class NumberError(ValueError):
    """A value that is a number but cannot be stored (not finite, or outside the integer column's range)."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def as_float(v: Any) -> float | None:
    """A JSON number as float; None for None, booleans, strings, other types and integers beyond a double."""
    if not _is_number(v):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def as_int(v: Any) -> int | None:
    """A JSON number as int (floats truncated); None for non-numbers and for NaN/infinity."""
    if not _is_number(v):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return int(v)


def parse_float(v: Any) -> float | None:
    """A number or a numeric string (surrounding blanks allowed) as float; None otherwise."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v) if isinstance(v, (int, float)) else float(str(v).strip())
    except (ValueError, OverflowError):
        return None


def parse_int(v: Any) -> int | None:
    """Like :func:`parse_float`, truncated to int; None for NaN/infinity. Integer strings stay exact."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v.strip())
    n = parse_float(v)
    return None if n is None or not math.isfinite(n) else int(n)


def checked_float(v: Any) -> float | None:
    """:func:`parse_float`, but a present number that is NaN, infinite or beyond a double raises
    :class:`NumberError`."""
    if isinstance(v, int) and not isinstance(v, bool) and parse_float(v) is None:
        raise NumberError(f"{_show(v)} does not fit a 64-bit float")
    n = parse_float(v)
    if n is not None and not math.isfinite(n):
        raise NumberError(f"{_show(v)} is not a finite number")
    return n


def checked_int(v: Any, bits: int = 64) -> int | None:
    """:func:`parse_int` for a signed ``bits``-bit column: a present number that is not finite or does not fit
    raises :class:`NumberError`. None (and non-numeric values) give None."""
    if isinstance(v, int) and not isinstance(v, bool):
        n: int | None = v
    else:
        f = parse_float(v)
        if f is None:
            return None
        if not math.isfinite(f):
            raise NumberError(f"{_show(v)} is not a finite number")
        n = parse_int(v)
    lo, hi = _BOUNDS[bits]
    if n is not None and not lo <= n <= hi:
        raise NumberError(f"{_show(v)} does not fit a {bits}-bit integer (largest {hi})")
    return n


def fits(n: int | None, bits: int = 64) -> bool:
    """True when ``n`` is None or fits a signed ``bits``-bit integer."""
    if n is None:
        return True
    lo, hi = _BOUNDS[bits]
    return lo <= n <= hi


def _show(v: Any) -> str:
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
