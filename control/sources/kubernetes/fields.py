"""Reading fields of raw API objects, which may hold anything.

An object from the API has passed its CRD's schema only as far as the CRD
says, and a hand-applied one may be malformed anywhere: a list where a map is
expected, a string for a list. What this source reads before the typed cache
(Secret references, an Ingress's class, a resourceVersion) is read with these
helpers, which must never raise: a missing or ill-typed field reads as None
(``dig``) or as an empty list (``as_list``), and the typed cache reports the
object's problems later.
"""

from __future__ import annotations

from typing import Any


def dig(raw: Any, *path: str) -> Any:
    """``raw[path[0]][path[1]]...``, or None where a step is missing or not a map."""
    for part in path:
        if not isinstance(raw, dict):
            return None
        raw = raw.get(part)
    return raw


def as_list(value: Any) -> list:
    """``value`` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []
