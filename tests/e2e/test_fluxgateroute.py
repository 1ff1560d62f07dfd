"""FluxGateRoute through real workers: canaries by header, cookie and weight."""

from __future__ import annotations

import re
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


def test_fluxgateroute_request_headers_take_values_from_the_request(tmp_path, gateway_factory, echo_factory, port):
    app = echo_factory("app")
    docs = objects(port, {"app": [app.port]}, [])
    docs.append({
        "apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGateRoute",
        "metadata": {"name": "tpl", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/tenants"}}],
            "backendRefs": [{"name": "app", "port": 80}],
            "requestHeaders": [
                {"name": "X-Client", "value": "%{client_ip}"},
                {"name": "X-Tenant", "value": "tenant-%{path_segment:2}"},
                {"name": "X-Team", "value": "%{header:X-Team-Id}/%{header:X-Missing}"},
                {"name": "X-Trace", "value": "req=%{request_id}"},
                {"name": "X-Absent", "value": "%{header:X-Nope}"},
            ],
        }]},
    })
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, docs)
    gateway_factory(cfg)

    def sent(**headers) -> dict[str, list[str]]:
        status, _, body = request(port, "/tenants/acme/orders?x=1", headers=headers)
        assert status == 200
        out: dict[str, list[str]] = {}
        for k, v in echoed(body)["headers"]:
            out.setdefault(k.lower(), []).append(v)
        return out

    got = sent(**{"X-Team-Id": "blue", "X-Tenant": "forged"})
    assert got["x-client"] == ["127.0.0.1"]
    assert got["x-tenant"] == ["tenant-acme"]  # replaces what the client sent
    assert got["x-team"] == ["blue/"]  # an absent header fills in as nothing
    assert "x-absent" not in got  # a value that comes out empty is not sent
    (request_id,) = got["x-request-id"]  # made by the gateway and sent along
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", request_id) and got["x-trace"] == [f"req={request_id}"]
    assert sent()["x-request-id"] != [request_id]  # a new one per request
    got = sent(**{"X-Request-Id": "abc-123"})
    assert got["x-request-id"] == ["abc-123"] and got["x-trace"] == ["req=abc-123"]
