"""The explainer and the router are one matcher: explain() must pick what match() picks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.match import PathIndex, explain
from shm.schema import HeaderMatch, Match, PathExact, PathPrefix, PathRegex, QueryMatch, RouteEntry, VirtualHost

SEGMENTS = ["a", "b", "api", "v1"]
paths = st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=3).map(lambda xs: "/" + "/".join(xs))


@st.composite
def entries(draw):
    out = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["exact", "prefix", "regex"]))
        value = draw(paths)
        path = {"exact": PathExact(value), "prefix": PathPrefix(value.rstrip("/") or "/"),
                "regex": PathRegex(value + ".*")}[kind]
        headers = tuple(HeaderMatch("x-env", v) for v in draw(st.lists(st.sampled_from(["a", "b"]), max_size=1)))
        query = tuple(QueryMatch("v", v) for v in draw(st.lists(st.sampled_from(["1", "2"]), max_size=1)))
        method = draw(st.sampled_from(["", "GET", "POST"]))
        out.append(RouteEntry(Match(path, method=method, headers=headers, query=query), 0, f"r#{i}"))
    return tuple(out)


@settings(max_examples=300, deadline=None)
@given(entries(), paths, st.sampled_from([b"GET", b"POST"]),
       st.sampled_from([[], [(b"X-Env", b"a")], [(b"x-env", b"b")]]), st.sampled_from([b"", b"v=1", b"v=2&v=1"]))
def test_match_explain_picks_the_same_entry_as_the_router(ents, path, method, headers, query):
    index = PathIndex(VirtualHost("v", ents, ()), lambda e: e.source)
    routed = index.match(method, path.encode(), headers, query)
    explained, passed_over = explain(index, method, path.encode(), headers, query)
    assert (routed.source if routed else None) == (explained.source if explained else None)
    # Everything passed over ranks above the winner and says why.
    for cand, why in passed_over:
        assert why and (explained is None or cand.rank < explained.rank)


def test_match_explain_says_which_condition_failed():
    ents = (
        RouteEntry(Match(PathPrefix("/api"), headers=(HeaderMatch("x-env", "canary"),)), 0, "canary"),
        RouteEntry(Match(PathPrefix("/api"), method="POST"), 0, "post-only"),
        RouteEntry(Match(PathPrefix("/")), 0, "fallback"),
    )
    index = PathIndex(VirtualHost("v", ents, ()), lambda e: e)
    winner, passed_over = explain(index, b"GET", b"/api/x", [(b"X-Env", b"prod")], b"")
    assert winner.source == "fallback"
    assert [(c.source, why) for c, why in passed_over] == [
        ("canary", "header x-env must be 'canary'"), ("post-only", "method must be POST")]
