"""FluxGateRoute through real workers: canaries by header, cookie and weight."""

from __future__ import annotations

from collections import Counter

from tests.e2e.gateway import echoed, objects, request, write_config


def test_fluxgateroute_canaries_by_header_cookie_and_weight(tmp_path, gateway_factory, echo_factory, port):
    stable, canary = echo_factory("stable"), echo_factory("canary")
    docs = objects(port, {"stable": [stable.port], "canary": [canary.port]}, [])
    docs.append({
        "apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGateRoute",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "stable", "port": 80}],
            "requestHeaders": [{"name": "X-Route", "value": "shop"}],
            "canary": {"backendRefs": [{"name": "canary", "port": 80}], "weight": 20,
                       "header": {"name": "x-canary", "value": "yes"},
                       "cookie": {"name": "beta", "value": "on"}},
        }]},
    })
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, docs)
    gateway_factory(cfg)

    def backend(**kw):
        status, _, body = request(port, "/", **kw)
        assert status == 200
        return echoed(body)

    assert backend(headers={"x-canary": "yes"})["backend"] == "canary"
    assert backend(headers={"Cookie": "theme=dark; beta=on"})["backend"] == "canary"
    assert backend(headers={"Cookie": "beta=off"})["backend"] in ("stable", "canary")  # weight only
    counts = Counter(backend()["backend"] for _ in range(300))
    assert 30 <= counts["canary"] <= 95, counts  # Binomial(300, 0.2): mean 60, sd ~7
    sent = {k.lower(): v for k, v in backend()["headers"]}
    assert sent["x-route"] == "shop"  # a plain requestHeaders value is served
