"""translate(): classes, attachment, hostnames, backends, status."""

from __future__ import annotations

import pytest

from control.translate import translate
from control.translate.httproute import intersect

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"""


def _route(body: str, name: str = "web", namespace: str = "default") -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{body}
"""


def _parent(translation, route="web", namespace="default", index=0):
    return translation.status.find("HTTPRoute", namespace, route).parents[index]


def _cond(status, type_):
    cond = status.get(type_)
    return cond.status, cond.reason


@pytest.mark.parametrize("listener, route, expected", [
    (None, (), ("*",)),
    ("a.example.com", (), ("a.example.com",)),
    (None, ("a.example.com", "*.b.org"), ("a.example.com", "*.b.org")),
    ("a.example.com", ("a.example.com",), ("a.example.com",)),
    ("a.example.com", ("b.example.com",), ()),
    ("*.example.com", ("a.example.com",), ("a.example.com",)),
    ("*.example.com", ("a.b.example.com",), ("a.b.example.com",)),
    ("*.example.com", ("example.com",), ()),
    ("a.example.com", ("*.example.com",), ("a.example.com",)),
    ("example.com", ("*.example.com",), ()),
    ("*.example.com", ("*.b.example.com",), ("*.b.example.com",)),
    ("*.b.example.com", ("*.example.com",), ("*.b.example.com",)),
    ("*.example.com", ("*.example.org",), ()),
    ("*.example.com", ("x.example.org", "y.example.com", "y.example.com"), ("y.example.com",)),
])
def test_intersect_follows_gateway_api_hostname_matching(listener, route, expected):
    assert intersect(listener, route) == expected


def test_translate_is_a_pure_function(parse):
    objects = parse(GATEWAY + _route("  parentRefs: [{name: gw}]"))
    first, second = translate(objects), translate(objects)
    assert first.ir == second.ir and first.status == second.status


def test_translate_default_class_is_implied_only_in_file_mode(parse):
    objects = parse(GATEWAY + _route("  parentRefs: [{name: gw}]"))
    assert translate(objects).ir.listeners
    strict = translate(objects, default_class=None)
    assert not strict.ir.listeners and not strict.ir.routes
    assert strict.status.find("Gateway", "default", "gw") is None
    assert any("not handled by FluxGate" in note for note in strict.status.notes)


def test_translate_gatewayclass_object_decides_over_default_class(parse):
    objects = parse(GATEWAY + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: fluxgate}
spec: {controllerName: example.com/another-controller}
""")
    result = translate(objects)
    assert not result.ir.listeners
    assert result.status.find("GatewayClass", "", "fluxgate") is None


def test_translate_gatewayclass_with_parameters_is_not_accepted(parse):
    objects = parse(GATEWAY + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: fluxgate}
spec:
  controllerName: fluxgate.io/gateway-controller
  parametersRef: {group: example.com, kind: Config, name: x}
""")
    result = translate(objects)
    assert _cond(result.status.find("GatewayClass", "", "fluxgate"), "Accepted") == (
        "False", "InvalidParameters")
    assert _cond(result.status.find("Gateway", "default", "gw"), "Accepted") == ("False", "Pending")
    assert not result.ir.listeners


def test_translate_route_to_missing_gateway_is_no_matching_parent(parse):
    result = translate(parse(GATEWAY + _route("  parentRefs: [{name: nope}]")))
    assert _cond(_parent(result), "Accepted") == ("False", "NoMatchingParent")
    assert not result.ir.routes


def test_translate_counts_a_route_once_per_listener(parse):
    body = "  parentRefs: [{name: gw}, {name: gw, sectionName: http}, {name: gw, port: 80}]"
    result = translate(parse(GATEWAY + _route(body)))
    gw = result.status.find("Gateway", "default", "gw")
    assert gw.listeners[0].attached_routes == 1
    assert len(result.status.find("HTTPRoute", "default", "web").parents) == 3
    (listener,) = result.ir.listeners
    assert [a.route for a in listener.attachments] == ["HTTPRoute/default/web"]


def test_translate_cross_namespace_backend_needs_a_reference_grant(parse):
    body = """  parentRefs: [{name: gw, namespace: default}]
  rules: [{backendRefs: [{name: web, namespace: default, port: 80}]}]"""
    gateway = GATEWAY.replace("listeners: [{name: http, port: 80, protocol: HTTP}]",
                              "listeners: [{name: http, port: 80, protocol: HTTP,"
                              " allowedRoutes: {namespaces: {from: All}}}]")
    objects = parse(gateway + _route(body, namespace="apps"))
    denied = translate(objects)
    assert _cond(_parent(denied, namespace="apps"), "ResolvedRefs") == ("False", "RefNotPermitted")
    assert denied.ir.routes[0].rules[0].backends[0].cluster == ""
    grant = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"""
    granted = translate(objects + parse(grant))
    assert _cond(_parent(granted, namespace="apps"), "ResolvedRefs") == ("True", "ResolvedRefs")
    assert granted.ir.routes[0].rules[0].backends[0].cluster == "default/web:80"


def test_translate_grant_for_another_service_does_not_permit(parse):
    body = """  parentRefs: [{name: gw, namespace: default}]
  rules: [{backendRefs: [{name: web, namespace: default, port: 80}]}]"""
    grant = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service, name: other}]
"""
    gateway = GATEWAY.replace("protocol: HTTP}", "protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}")
    result = translate(parse(gateway + _route(body, namespace="apps") + grant))
    assert _cond(_parent(result, namespace="apps"), "ResolvedRefs") == ("False", "RefNotPermitted")


def test_translate_matches_keep_first_header_and_query_of_a_name(parse):
    body = """  parentRefs: [{name: gw}]
  rules:
  - matches:
    - headers: [{name: X-A, value: "1"}, {name: x-a, value: "2"}, {name: X-B, value: "3"}]
      queryParams: [{name: q, value: "1"}, {name: Q, value: "2"}, {name: q, value: "3"}]
      method: POST
    timeouts: {request: 250ms}"""
    (rule,) = translate(parse(GATEWAY + _route(body))).ir.routes[0].rules
    (match,) = rule.matches
    assert [(h.name, h.value) for h in match.headers] == [("x-a", "1"), ("x-b", "3")]
    assert [(q.name, q.value) for q in match.query] == [("q", "1"), ("Q", "2")]
    assert match.method == "POST" and match.path.type == "PathPrefix" and match.path.value == "/"
    assert rule.timeout_ms == 250


def test_translate_service_port_protocol_must_be_tcp(parse):
    objects = parse(GATEWAY.replace("ports: [{port: 80}]", "ports: [{port: 80, protocol: UDP}]")
                    + _route("  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]"))
    assert _cond(_parent(translate(objects)), "ResolvedRefs") == ("False", "UnsupportedProtocol")


def test_translate_ir_has_only_clusters_of_served_rules(parse):
    body = "  parentRefs: [{name: nope}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]"
    assert translate(parse(GATEWAY + _route(body))).ir.clusters == ()


def test_translate_selector_uses_namespace_labels(parse):
    gateway = GATEWAY.replace(
        "protocol: HTTP}",
        "protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector:"
        " {matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}}}}",
    )
    namespaces = """
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
"""
    body = "  parentRefs: [{name: gw, namespace: default}]"
    result = translate(parse(gateway + namespaces + _route(body, namespace="prod")
                             + _route(body, namespace="dev") + _route(body, namespace="bare")))
    assert _cond(_parent(result, namespace="prod"), "Accepted") == ("False", "NotAllowedByListeners")
    assert _cond(_parent(result, namespace="dev"), "Accepted") == ("True", "Accepted")
    # No Namespace object: no labels, so NotIn matches.
    assert _cond(_parent(result, namespace="bare"), "Accepted") == ("True", "Accepted")
