"""The per-generation router: host and path lookup, weights, decode caching."""

from __future__ import annotations

from collections import Counter

from dataplane.router import Router
from shm.codec import TableEncoder
from tests.dataplane.tables import (
    Action, Cluster, Endpoint, HostEntry, PathExact, PathPrefix, PathRegex, VirtualHost,
    WeightedCluster, entry, table,
)

UP = Cluster("up", (Endpoint("127.0.0.1", 1),))


def _vh(name, entries, n_actions):
    return VirtualHost(name, tuple(entries), tuple(Action((WeightedCluster("up"),)) for _ in range(n_actions)))


def _source(router, host=b"x", path=b"/", method=b"GET", headers=(), query=b""):
    vh = router.vhost("l", host)
    cand = vh.match(method, path, list(headers), query) if vh else None
    return cand.source if cand else None


def test_router_exact_beats_prefix_and_prefixes_are_segment_aware():
    vh = _vh("v", [entry(PathExact("/a"), 0, "exact"), entry(PathPrefix("/a/b"), 1, "ab"),
                   entry(PathPrefix("/a"), 2, "a"), entry(PathPrefix("/"), 3, "root")], 4)
    r = Router(table([vh], [UP]))
    assert _source(r, path=b"/a") == "exact"
    assert _source(r, path=b"/a/") == "a"
    assert _source(r, path=b"/a/b") == "ab"
    assert _source(r, path=b"/a/b/c") == "ab"
    assert _source(r, path=b"/a/bc") == "a"
    assert _source(r, path=b"/ab") == "root"


def test_router_method_header_and_query_conditions_must_all_hold():
    from shm.schema import HeaderMatch, QueryMatch
    vh = _vh("v", [
        entry(PathPrefix("/"), 0, "both", method="POST", headers=(HeaderMatch("x-env", "canary"),)),
        entry(PathPrefix("/"), 1, "query", query=(QueryMatch("v", "2"),)),
        entry(PathPrefix("/"), 2, "regex-header", headers=(HeaderMatch("x-id", "[0-9]+", "RegularExpression"),)),
        entry(PathPrefix("/"), 3, "fallback"),
    ], 4)
    r = Router(table([vh], [UP]))
    assert _source(r, method=b"POST", headers=[(b"X-Env", b"canary")]) == "both"
    assert _source(r, method=b"GET", headers=[(b"X-Env", b"canary")]) == "fallback"
    assert _source(r, query=b"a=1&v=2") == "query"
    assert _source(r, query=b"v=2&v=3") == "query"  # first value wins
    assert _source(r, headers=[(b"x-id", b"123")]) == "regex-header"
    assert _source(r, headers=[(b"x-id", b"12a")]) == "fallback"


def test_router_regex_paths_match_the_whole_path():
    vh = _vh("v", [entry(PathRegex("/items/[0-9]+"), 0, "re"), entry(PathPrefix("/"), 1, "root")], 2)
    r = Router(table([vh], [UP]))
    assert _source(r, path=b"/items/42") == "re"
    assert _source(r, path=b"/items/42/x") == "root"


def test_router_hosts_exact_then_wildcard_then_default():
    vhs = [_vh("exact", [entry(PathPrefix("/"), 0, "exact")], 1),
           _vh("wild", [entry(PathPrefix("/"), 0, "wild")], 1),
           _vh("any", [entry(PathPrefix("/"), 0, "any")], 1)]
    r = Router(table(vhs, [UP], exact=[HostEntry("a.example.com", 0)],
                     wildcards=[HostEntry("*.example.com", 1)], default=2))
    assert _source(r, host=b"a.example.com") == "exact"
    assert _source(r, host=b"b.example.com") == "wild"
    assert _source(r, host=b"x.y.example.com") == "wild"
    assert _source(r, host=b"example.com") == "any"
    assert r.vhost("no-such-listener", b"a.example.com") is None


def test_router_weights_split_and_zero_weight_never_chosen():
    vh = VirtualHost("v", (entry(PathPrefix("/"), 0),), (Action((
        WeightedCluster("a", 3), WeightedCluster("b", 1), WeightedCluster("c", 0))),))
    clusters = [Cluster(n, (Endpoint("127.0.0.1", 1),)) for n in "abc"]
    r = Router(table([vh], clusters))
    action = r.vhost("l", b"x").match(b"GET", b"/", [], b"").action
    counts = Counter(action.choose().name for _ in range(4000))
    assert counts["c"] == 0
    assert 2700 <= counts["a"] <= 3300, counts  # 3000 expected, sd ~27


def test_router_unresolved_backends_choose_none_for_a_500():
    vh = VirtualHost("v", (entry(PathPrefix("/"), 0),), (Action((WeightedCluster("", 1),)),))
    r = Router(table([vh], []))
    assert r.vhost("l", b"x").match(b"GET", b"/", [], b"").action.choose() is None


def test_router_keeps_decoded_vhosts_across_generations_and_updates_clusters_in_place():
    enc = TableEncoder()
    vh = _vh("v", [entry(PathPrefix("/"), 0)], 1)
    r1 = Router(table([vh], [UP], encoder=enc, generation=1))
    first = r1.vhost("l", b"x")
    state = first.match(b"GET", b"/", [], b"").action.clusters[0]
    moved = Cluster("up", (Endpoint("127.0.0.1", 2), Endpoint("127.0.0.1", 3)))
    r2 = Router(table([vh], [moved], encoder=enc, generation=2), previous=r1)
    assert enc.reused == 1 and enc.encoded == 1  # the vhost's bytes were re-used
    assert r2.vhost("l", b"x") is first  # not decoded again
    assert {port for _, port in state.endpoints} == {2, 3}  # same object, new endpoints


def test_router_vhost_with_only_a_non_root_prefix_routes_and_404s():
    # Found by the explainer's property test: the catch-all shortcut assumed "/".
    vh = _vh("v", [entry(PathPrefix("/a"), 0, "a")], 1)
    r = Router(table([vh], [UP]))
    assert _source(r, path=b"/a/b") == "a"
    assert _source(r, path=b"/") is None


def _damaged(find: bytes):
    """An encoded one-host table with one byte of ``find`` changed after encoding."""
    from shm import codec
    from shm.schema import CompiledTable, Listener
    vh = VirtualHost("v", (entry(PathPrefix("/only-b"), 0, "b"),), (Action((WeightedCluster("up-b"),)),))
    data = bytearray(TableEncoder().encode(CompiledTable(
        listeners=(Listener("l", "127.0.0.1", 1, default_vhost=0),), vhosts=(vh,),
        clusters=(Cluster("up-b", (Endpoint("127.0.0.9", 1),)),)), 1))
    at = data.find(find)
    assert at >= 0
    data[at + 1] ^= 0x20
    return codec.decode_index(data)


def test_a_damaged_virtual_host_is_never_decoded_and_is_reported_once():
    reports = []
    r = Router(_damaged(b"/only-b"), on_damage=lambda kind, name: reports.append((kind, name)))
    vh = r.vhost("l", b"x")
    assert vh.damaged and vh.match(b"GET", b"/only-b", [], b"") is None
    assert r.vhost("l", b"y") is vh
    assert reports == [("virtual host", "v")]


def test_a_damaged_cluster_has_no_endpoints_and_is_decoded_anew_next_generation():
    reports = []
    damaged = _damaged(b"127.0.0.9")
    r = Router(damaged, on_damage=lambda kind, name: reports.append((kind, name)))
    state = r.cluster("up-b")
    assert len(state.endpoints) == 0
    assert reports == [("cluster", "up-b")]
    # The same cluster, intact, in the next generation: decoded, not kept empty.
    from shm import codec
    from shm.schema import CompiledTable, Listener
    vh = VirtualHost("v", (entry(PathPrefix("/only-b"), 0, "b"),), (Action((WeightedCluster("up-b"),)),))
    fresh = codec.decode_index(TableEncoder().encode(CompiledTable(
        listeners=(Listener("l", "127.0.0.1", 1, default_vhost=0),), vhosts=(vh,),
        clusters=(Cluster("up-b", (Endpoint("127.0.0.9", 1),)),)), 2))
    r2 = Router(fresh, previous=r)
    assert len(r2.cluster("up-b").endpoints) == 1
