"""translate(gateways=...): a shard serves only the Gateways FLUXGATE_GATEWAYS names."""

from __future__ import annotations

from control.translate import translate

OBJECTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: team-a}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 8001, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: b, namespace: team-b}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 8002, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: a, namespace: team-a}, {name: b, namespace: team-b}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"""


def test_translate_gateways_default_serves_every_gateway_of_our_class(parse):
    result = translate(parse(OBJECTS))
    assert sorted(lst.gateway for lst in result.ir.listeners) == ["team-a/a", "team-b/b"]


def test_translate_gateways_keeps_only_the_named_ones(parse):
    result = translate(parse(OBJECTS), gateways=["team-b/b"])
    assert [lst.gateway for lst in result.ir.listeners] == ["team-b/b"]
    assert result.status.find("Gateway", "team-a", "a") is None
    assert "Gateway team-a/a ignored: not one of this shard's Gateways (FLUXGATE_GATEWAYS)" \
        in result.status.notes
    route = result.status.find("HTTPRoute", "default", "web")
    # Status for the parent this shard serves; the other one is another shard's to judge
    # (not "NoMatchingParent").
    assert [(p.parent_ref.name, p.get("Accepted").status) for p in route.parents] == [("b", "True")]


def test_translate_gateways_empty_list_serves_no_gateway(parse):
    result = translate(parse(OBJECTS), gateways=[])
    assert result.ir.listeners == () and result.ir.routes == ()
