"""Ingress through real workers: hosts, paths, canaries, rewrite, defaultBackend."""

from __future__ import annotations

from collections import Counter

from tests.e2e.gateway import echoed, objects, request, write_config


def _ingress(name: str, rules: list, annotations: dict | None = None, default: str | None = None) -> dict:
    spec: dict = {"ingressClassName": "fluxgate", "rules": rules}
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    meta: dict = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def _rule(host: str, path: str, service: str, path_type: str = "Prefix") -> dict:
    return {"host": host, "http": {"paths": [{"path": path, "pathType": path_type, "backend": {
        "service": {"name": service, "port": {"number": 80}}}}]}}


def test_ingress_routes_canaries_rewrites_and_default_backend(tmp_path, gateway_factory, echo_factory, port):
    main, canary, heavy, fallback = (echo_factory(n) for n in ("main", "canary", "heavy", "fallback"))
    services = objects(1, {e.name: [e.port] for e in (main, canary, heavy, fallback)}, [])[1:]
    cfg = tmp_path / "ing.yaml"
    write_config(cfg, services + [
        _ingress("shop", [_rule("shop.example.com", "/", "main")], default="fallback"),
        _ingress("shop-header", [_rule("shop.example.com", "/", "canary")],
                 {"fluxgate.io/canary": "true", "fluxgate.io/canary-by-header": "x-canary",
                  "fluxgate.io/canary-by-header-value": "yes"}),
        _ingress("shop-weight", [_rule("shop.example.com", "/", "heavy")],
                 {"fluxgate.io/canary": "true", "fluxgate.io/canary-weight": "20"}),
        _ingress("api", [_rule("api.example.com", "/v1", "main")], {"fluxgate.io/rewrite-target": "/internal"}),
    ])
    gateway_factory(cfg, FLUXGATE_INGRESS_HTTP_PORT=str(port))

    # Two canaries on one host: by header, always; by weight, a share of the rest.
    assert echoed(request(port, "/", host="shop.example.com", headers={"x-canary": "yes"})[2])["backend"] == "canary"
    counts = Counter(echoed(request(port, "/", host="shop.example.com")[2])["backend"] for _ in range(300))
    assert set(counts) == {"main", "heavy"}
    assert 30 <= counts["heavy"] <= 95, counts  # Binomial(300, 0.2): mean 60, sd ~7
    # rewrite-target replaces the matched prefix.
    assert echoed(request(port, "/v1/users?id=1", host="api.example.com")[2])["url"] == "/internal/users?id=1"
    # Anything else falls to the defaultBackend.
    assert echoed(request(port, "/x", host="unknown.example.com")[2])["backend"] == "fallback"


def test_ingress_wildcard_covers_one_label_while_an_httproute_wildcard_covers_any(tmp_path, gateway_factory, echo_factory, port):
    from tests.e2e.gateway import route
    ing, gw = echo_factory("ing"), echo_factory("gw")
    docs = objects(port, {"ing": [ing.port], "gw": [gw.port]},
                   [route("wild", [{"backendRefs": [{"name": "gw", "port": 80}]}], hostnames=["*.foo.com"])])
    docs.append(_ingress("wild", [_rule("*.foo.com", "/", "ing")]))
    cfg = tmp_path / "ing.yaml"
    write_config(cfg, docs)
    gateway_factory(cfg, FLUXGATE_INGRESS_HTTP_PORT=str(port))  # one socket for both
    # One label: the Ingress (the more specific wildcard); deeper names: only the HTTPRoute covers them.
    assert echoed(request(port, host="a.foo.com")[2])["backend"] == "ing"
    assert echoed(request(port, host="a.b.foo.com")[2])["backend"] == "gw"
