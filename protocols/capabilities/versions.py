"""Capability version specs (small and documented on purpose).

Versions are dotted non-negative integers: ``"1"``, ``"1.2"``, ``"1.2.3"``;
missing parts count as 0. A spec is one of:

* ``"*"`` or ``""``: any version;
* ``"1.2"`` (or ``"=1.2"``): exactly that version (``1.2`` equals ``1.2.0``);
* ``"^1.2"``: same major, at least 1.2 (``^0.3`` means ``>=0.3,<0.4``, as in Cargo);
* comparisons ``>=``, ``>``, ``<=``, ``<``, ``==``, ``!=`` joined by commas, all of
  which must hold: ``">=1.2,<2"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from protocols.errors import LocalProtocolError

__all__ = ["matches", "parse_version"]

Version = tuple[int, int, int]

_OPS: dict[str, Callable[[Version, Version], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
}


def parse_version(text: str) -> Version:
    """``"1.2"`` → ``(1, 2, 0)``; raises ``LocalProtocolError`` if not a version."""
    parts = text.strip().split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise LocalProtocolError(f"bad version {text!r}", code="bad-version")
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    return (nums[0], nums[1], nums[2])


def _caret(base: Version, version: Version) -> bool:
    if version < base:
        return False
    if base[0] > 0:
        return version[0] == base[0]
    if base[1] > 0:
        return version[:2] == base[:2]
    return version == base


def _clause(clause: str, version: Version) -> bool:
    clause = clause.strip()
    if clause in ("", "*"):
        return True
    if clause.startswith("^"):
        return _caret(parse_version(clause[1:]), version)
    for op in (">=", "<=", "==", "!=", ">", "<", "="):
        if clause.startswith(op):
            return _OPS[op](version, parse_version(clause[len(op) :]))
    return version == parse_version(clause)


@functools.lru_cache(maxsize=4096)
def matches(spec: str, version: str) -> bool:
    """Whether ``version`` satisfies ``spec``. A record's version that does not
    parse matches only ``"*"``; a spec that does not parse raises."""
    clauses = [c for c in spec.split(",")]
    for clause in clauses:
        _clause(clause, (0, 0, 0))  # validate the spec even if the version is odd
    try:
        parsed = parse_version(version)
    except LocalProtocolError:
        return all(c.strip() in ("", "*") for c in clauses)
    return all(_clause(c, parsed) for c in clauses)
