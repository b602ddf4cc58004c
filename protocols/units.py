"""Durations as people write them in configuration files: ``"60s"``, ``"200ms"``, ``1.5``.

Shared by scenario files (``simulations``) and daemon configuration (``node.toml``), so a
value copied from one to the other means the same thing.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["parse_duration"]

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DUR = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(us|ms|s|m|h)?\s*$")


def parse_duration(value: Any) -> float:
    """``"60s"`` -> 60.0, ``"200ms"`` -> 0.2, ``5`` -> 5.0 (seconds; ``ValueError`` else)."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"a finite duration was expected, not {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DUR.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"a duration such as '60s', '200ms' or 1.5 was expected, not {value!r}")
