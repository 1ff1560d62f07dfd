"""KNOWN_GAPS: every hardening test that fails today because a feature is missing.

This is the data plane's to-do list for issue 4. conftest.py marks each
listed test ``xfail(strict=True)`` with its feature as the reason, so:
* a listed test that starts passing fails the run (XPASS strict): delete
  its line here in the commit that closes the gap;
* a listed id that names no test fails the run too (no stale entries).

Ids are ``<module>::<test name>``; corpus cases are
``test_corpus::test_corpus_case[<valid|invalid>/<file stem>]``.
"""

from __future__ import annotations

KNOWN_GAPS: dict[str, list[str]] = {}


def reasons() -> dict[str, str]:
    """test id -> "gap: <feature>"."""
    out: dict[str, str] = {}
    for feature, ids in KNOWN_GAPS.items():
        for test_id in ids:
            if test_id in out:
                raise ValueError(f"{test_id} is listed twice in KNOWN_GAPS")
            out[test_id] = f"gap: {feature}"
    return out
